"""The Flask application of the reading station (``tbscore review``).

:func:`create_app` is the only place Flask is imported. Rules kept here:

* **login**: with a users file (:mod:`tbscore.review.users`) every page but the login
  page needs a logged-in session (signed cookie, ``HttpOnly``, ``SameSite=Strict``);
  the name logged in is the name that signs. Without one (loopback only, enforced by
  the command) the station is single-user and signs as ``local_user``;
* **CSRF**: every POST carries the session's token (form field ``csrf_token`` or
  header ``X-CSRF-Token``); a POST without it, or with another, is refused (400);
* **no PHI in logs**: URLs carry study keys (hashes), never names or IDs; the request
  log of the server prints only method, URL and status;
* **typed errors only**: a :class:`~tbscore.errors.TBSError` is answered with its reason
  (400, or 409 for a signed study); any other exception inside a request (a bug, a
  hand-edited ``result.json``) with an "internal error" page (500) that names only the
  error class, and one log line (logger ``tbscore.review``) with the error class and the
  endpoint: no traceback, no message, no path, no PHI — unless the station was started
  with ``log_details`` (``tbscore review --log-phi``), which logs the full traceback.
"""

from __future__ import annotations

import hmac
import io
import logging
import secrets
from typing import Any

from tbscore.errors import AlreadySignedError, ReviewError, TBSError

__all__ = ["create_app"]

_log = logging.getLogger("tbscore.review")

_OPEN_ENDPOINTS = {"login", "static"}


def _image_png(station: Any, key: str) -> bytes:
    """The study image as 8-bit grey PNG (display range of the overlay; W/L in the browser)."""
    import numpy as np
    from matplotlib.image import imsave

    from tbscore.api import as_image
    from tbscore.render.overlay import _display_range

    image = as_image(station.study(key).image)
    lo, hi = _display_range(image.pixels)
    scaled = np.clip((image.pixels.astype(float) - lo) / max(hi - lo, 1e-12), 0, 1)
    buf = io.BytesIO()
    imsave(buf, (scaled * 255).astype(np.uint8), cmap="gray", vmin=0, vmax=255, format="png")
    return buf.getvalue()


def _variogram_png(result: Any) -> bytes:
    from tbscore.render.figures import _png, variogram_figure

    return _png(variogram_figure(result, width_in=6.0), dpi=80)


def _trend_svg(priors: list[dict], current: float | None, date: str) -> str | None:
    """A small inline SVG of L1–L4 over the study dates (priors and this study)."""
    pts = [(p["study_date"], p["l1_l4"]) for p in priors if p.get("l1_l4") is not None]
    if current is not None:
        pts.append((date or "current", current))
    if len(pts) < 2:
        return None
    w, h, m = 320, 120, 28
    vals = [v for _, v in pts]
    lo, hi = min(vals), max(vals)
    span = max(hi - lo, 0.02)
    lo -= span * 0.15
    hi += span * 0.15
    xs = [m + i * (w - 2 * m) / (len(pts) - 1) for i in range(len(pts))]
    ys = [h - m - (v - lo) / (hi - lo) * (h - 2 * m) for v in vals]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'class="trend" role="img" aria-label="L1-L4 trend">',
        f'<polyline points="{line}" fill="none" stroke="#2060a0" stroke-width="2"/>',
    ]
    for (d, v), x, y in zip(pts, xs, ys, strict=True):
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#2060a0"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{y - 7:.1f}" font-size="10" text-anchor="middle">{v:.3f}</text>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{h - 8}" font-size="10" '
            f'text-anchor="middle">{str(d)[:4]}-{str(d)[4:6]}-{str(d)[6:8]}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _detail_text(detail: dict) -> str:
    """Audit details for display: ``key value`` pairs, numbers with 3 decimals."""
    parts = []
    detail = dict(detail)
    if "l1_l4_before" in detail or "l1_l4_after" in detail:  # one "L1–L4 a → b" entry
        before, after = detail.pop("l1_l4_before", None), detail.pop("l1_l4_after", None)
        fmt = [f"{x:.3f}" if isinstance(x, float) else "–" for x in (before, after)]
        parts.append(f"L1–L4 {fmt[0]} → {fmt[1]}")
    for k, v in sorted(detail.items()):
        if isinstance(v, float):
            v = f"{v:.3f}"
        elif isinstance(v, list):
            v = ", ".join(f"{x:.3f}" if isinstance(x, float) else str(x) for x in v)
        parts.append(f"{k.replace('_', ' ')}: {v}")
    return "; ".join(parts)


def create_app(
    station: Any,
    *,
    users: dict[str, dict] | None = None,
    local_user: str = "local user",
    organisation: str | None = None,
    secret_key: bytes | None = None,
    trusted_hosts: list[str] | None = None,
    log_details: bool = False,
) -> Any:
    """The Flask app of a station.

    Parameters
    ----------
    station : Station
    users : dict, optional
        Accounts (:func:`tbscore.review.users.load_users`); given, login is required.
    local_user : str
        Who signs when there are no accounts (loopback single-user mode).
    organisation : str, optional
        Default organisation of signatures.
    secret_key : bytes, optional
        Session signing key (default: random per start; sessions end with the server).
    trusted_hosts : list of str, optional
        Host header values answered (others get 400): on loopback the command passes
        the loopback names, so a page of another site cannot reach the station through
        a DNS name rebound to 127.0.0.1.
    log_details : bool
        Log the traceback of an unexpected (non-TBSError) exception; its message and
        paths may carry PHI, so only when the site asks for it (``--log-phi``). Off:
        one line with the error class and the endpoint.
    """
    from flask import (
        Flask,
        Response,
        abort,
        g,
        jsonify,
        redirect,
        render_template,
        request,
        session,
        url_for,
    )

    from tbscore.review.users import check_password

    app = Flask("tbscore.review", root_path=__file__.rsplit("/", 1)[0])
    app.config.update(
        SECRET_KEY=secret_key or secrets.token_bytes(32),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        MAX_CONTENT_LENGTH=1 << 20,
        TRUSTED_HOSTS=trusted_hosts,
    )
    require_login = users is not None

    def csrf_token() -> str:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        return session["csrf"]

    def user() -> str:
        return session.get("user") if require_login else local_user

    def org() -> str | None:
        if require_login and users is not None:
            return (users.get(user()) or {}).get("organisation") or organisation
        return organisation

    app.jinja_env.globals.update(csrf_token=csrf_token, login_required=require_login)
    app.jinja_env.filters["detail"] = _detail_text

    @app.before_request
    def _guard() -> Any:
        if require_login and request.endpoint not in _OPEN_ENDPOINTS and not session.get("user"):
            if request.method == "GET" and not request.path.startswith("/api/"):
                return redirect(url_for("login"))
            return Response("login required\n", status=401, mimetype="text/plain")
        if request.method == "POST":
            sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
            good = session.get("csrf") or ""
            if not good or not hmac.compare_digest(str(sent), str(good)):
                return Response("CSRF token missing or wrong\n", status=400, mimetype="text/plain")
        g.user = user()
        return None

    @app.after_request
    def _headers(resp: Any) -> Any:
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
        )
        return resp

    @app.errorhandler(TBSError)
    def _tbs_error(exc: TBSError) -> Any:
        status = 409 if isinstance(exc, AlreadySignedError) else 400
        if request.path.startswith("/api/"):
            return jsonify({"error": exc.reason, "code": exc.code}), status
        return render_template("error.html", message=exc.reason), status

    @app.errorhandler(Exception)
    def _internal_error(exc: Exception) -> Any:
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):  # 404, 405, 413 ...: Flask's own answer
            return exc
        kind = type(exc).__name__
        if log_details:
            _log.error("internal error %s in %s", kind, request.endpoint, exc_info=exc)
        else:
            _log.error("internal error %s in %s", kind, request.endpoint)
        reason = (
            f"internal error ({kind}): the station could not complete this request; "
            "the operator's log names the error class"
        )
        if request.path.startswith("/api/"):
            return jsonify({"error": reason, "code": "internal_error"}), 500
        return render_template("error.html", title="Internal error", message=reason), 500

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if not require_login:
            return redirect(url_for("worklist"))
        error = None
        if request.method == "POST":
            name = str(request.form.get("user") or "")
            if users is not None and check_password(
                users, name, str(request.form.get("password") or "")
            ):
                session.clear()
                session["user"] = name
                session["csrf"] = secrets.token_urlsafe(32)
                station.db.log(name, "-", "login")
                return redirect(url_for("worklist"))
            error = "unknown user or wrong password"
        return render_template("login.html", error=error), (401 if error else 200)

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("login" if require_login else "worklist"))

    @app.get("/")
    def worklist() -> Any:
        return render_template("worklist.html", rows=station.worklist(), user=g.user)

    def _study(key: str) -> Any:
        try:
            return station.study(key)
        except ReviewError:
            abort(404)

    @app.get("/study/<key>")
    def study(key: str) -> Any:
        st = _study(key)
        view = station.view(key)
        rec = station.record(key)
        priors = station.priors(key)
        result = station.score(key)
        dxa = station.dxa_values(key)
        return render_template(
            "study.html",
            st=st,
            view=view,
            rec=rec,
            priors=priors,
            user=g.user,
            inputs=station.inputs(key),
            dxa=dxa,
            meta=result.metadata or {},
            trend=_trend_svg(priors, view["l1_l4"], st.header.get("StudyDate", "")),
            lsc=station.lsc,
            files=station.signed_files(key),
            trail=station.db.trail(key),
            draft=station.db.state(key).get("draft") or {},
        )

    @app.get("/study/<key>/image.png")
    def image_png(key: str) -> Any:
        _study(key)
        return Response(_image_png(station, key), mimetype="image/png")

    @app.get("/study/<key>/variogram.png")
    def variogram_png(key: str) -> Any:
        _study(key)
        return Response(_variogram_png(station.score(key)), mimetype="image/png")

    def _view_json(key: str) -> Any:
        """The study's values, with the priors and audit sections re-rendered."""
        view = station.view(key)
        priors = station.priors(key)
        view["priors_html"] = render_template(
            "_priors.html",
            priors=priors,
            lsc=station.lsc,
            trend=_trend_svg(priors, view["l1_l4"], station.study(key).header.get("StudyDate", "")),
        )
        view["audit_html"] = render_template("_audit.html", trail=station.db.trail(key))
        return jsonify(view)

    @app.get("/api/study/<key>")
    def api_view(key: str) -> Any:
        _study(key)
        return _view_json(key)

    def _json() -> dict:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise ReviewError("expected a JSON object")
        return data

    @app.post("/api/study/<key>/roi")
    def api_roi(key: str) -> Any:
        _study(key)
        data = _json()
        station.set_geometry(key, g.user, str(data.get("label")), data)
        return _view_json(key)

    @app.post("/api/study/<key>/exclude")
    def api_exclude(key: str) -> Any:
        _study(key)
        data = _json()
        station.exclude(key, g.user, str(data.get("label")), str(data.get("reason") or ""))
        return _view_json(key)

    @app.post("/api/study/<key>/restore")
    def api_restore(key: str) -> Any:
        _study(key)
        data = _json()
        station.restore(key, g.user, str(data.get("label")))
        return _view_json(key)

    @app.post("/study/<key>/inputs")
    def inputs(key: str) -> Any:
        _study(key)
        station.set_inputs(key, g.user, request.form)
        return redirect(url_for("study", key=key) + "#inputs")

    @app.post("/study/<key>/sign")
    def sign(key: str) -> Any:
        _study(key)
        station.sign(
            key,
            g.user,
            str(request.form.get("impression") or "").strip(),
            str(request.form.get("recommendation") or "").strip(),
            organisation=org(),
        )
        return redirect(url_for("study", key=key) + "#signoff")

    @app.post("/study/<key>/addendum")
    def addendum(key: str) -> Any:
        _study(key)
        station.addendum(
            key, g.user, str(request.form.get("addendum") or "").strip(), organisation=org()
        )
        return redirect(url_for("study", key=key) + "#signoff")

    @app.get("/study/<key>/files/<name>")
    def signed_file(key: str, name: str) -> Any:
        from flask import send_file

        _study(key)
        if name not in station.signed_files(key):
            abort(404)
        kind = "application/pdf" if name.endswith(".pdf") else "application/dicom"
        return send_file(station.folder(key) / name, mimetype=kind, as_attachment=True)

    return app
