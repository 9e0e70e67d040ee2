"""``tbscore review``: the reading station (CPT 77092), a local web application.

Binds 127.0.0.1 by default. Any other ``--host`` needs ``--users FILE`` (accounts with
hashed passwords; login and sessions); ``--add-user NAME`` adds an account to that
file (password asked twice on the terminal, or one line on standard input) and exits.
Flask is imported only when the server starts (docs/reading.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from tbscore.errors import ReviewError


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ``::1``) or ``localhost``."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def _password() -> str:
    import getpass

    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise ReviewError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def _lsc(args: argparse.Namespace) -> tuple[float | None, str | None]:
    import json

    if args.precision and args.lsc is not None:
        raise ReviewError("give --precision or --lsc, not both")
    if args.precision:
        from tbscore.clinical.precision import Precision
        from tbscore.errors import PrecisionError

        try:
            prec = Precision.from_dict(json.loads(Path(args.precision).read_text("utf-8")))
        except (OSError, ValueError, PrecisionError) as exc:
            raise ReviewError(f"unreadable precision file ({exc})", args.precision) from exc
        return prec.lsc, (
            f"site precision: {prec.n_patients} patients, {prec.dof} degrees of freedom, "
            f"RMS-SD {prec.rms_sd:.3f}"
        )
    if args.lsc is not None:
        if not args.lsc > 0:
            raise ReviewError(f"--lsc must be positive, got {args.lsc}")
        return float(args.lsc), "entered"
    return None, None


def node_items(spool: str | Path) -> tuple[list[dict[str, Any]], int]:
    """What a ``tbscore serve`` node received, as plain data for the station.

    Reads the node's record read-only (:func:`tbscore.net.ledger.read_record`; this
    command is the one place that knows both the node and the station, which must not
    import each other). Returns the items (one per received image still in the spool:
    ``image``, ``origin`` ``"node"``, ``status``, ``reason``, ``l1_l4``, ``sr``,
    ``result_json``, ``result_files``) and the number of unscored study companions
    (``--accept study``: PDFs, screenshots), which are not studies and are not listed.

    Statuses: ``scored`` (the node's result: its SR and result JSON), ``needs review``
    (scored without an L1–L4 value, or without its PDF report), ``error`` (set aside
    by the node, with its reason; never scored), ``waiting`` (received, not scored yet).

    Raises
    ------
    NetError
        Not a readable node record.
    """
    from tbscore.net.ledger import read_record
    from tbscore.net.spool import LEDGER_NAME, result_json_beside

    root = Path(spool).resolve()
    incoming, results = root / "incoming", root / "results"
    items: list[dict[str, Any]] = []
    companions = 0

    def inside(path: str, folder: Path) -> Path | None:
        # the record names files the node wrote; still, nothing outside the spool
        if not path:
            return None
        p = Path(path).resolve()
        return p if p.is_relative_to(folder) and p.is_file() else None

    for row in read_record(root / LEDGER_NAME):
        image = inside(row.get("path") or "", incoming)
        if image is None:
            continue  # purged (tbscore queue purge) or gone
        state, code, reason = row.get("state"), row.get("code"), row.get("reason") or ""
        if state == "stored":
            companions += 1
            continue
        if state == "set_aside":
            status = "error"
            reason = f"set aside by the node ({code}): {reason}" if code else reason
        elif state == "scored":
            status = "needs review" if code else "scored"
            reason = f"scored by the node: {reason or code}" if code else "scored by the node"
        else:
            status, reason = "waiting", "received by the node, not scored yet"
        sr = inside(row.get("sr_path") or "", results)
        items.append(
            {
                "image": image,
                "origin": "node",
                "status": status,
                "reason": reason if len(reason) <= 200 else reason[:199] + "…",
                "l1_l4": row.get("l1_l4") if state == "scored" else None,
                "sr": sr,
                "result_json": None if sr is None else inside(str(result_json_beside(sr)), results),
                "result_files": [f for f in (inside(p, results) for p in row["result_files"]) if f],
            }
        )
    return items, companions


def cmd_review(args: argparse.Namespace) -> int:
    """``tbscore review``: serve the reading station until interrupted."""
    from tbscore.cli.exit import EXIT_OK

    if args.add_user:
        from tbscore.review.users import add_user

        if not args.users:
            raise ReviewError("--add-user needs --users FILE")
        path = add_user(args.users, args.add_user, _password(), organisation=args.organisation)
        sys.stdout.write(f"account {args.add_user!r} written to {path}\n")
        return EXIT_OK
    users = None
    if args.users:
        from tbscore.review.users import load_users

        users = load_users(args.users)
        if not users:
            raise ReviewError("users file has no account (add one with --add-user)", args.users)
    elif not is_loopback(args.host):
        raise ReviewError(
            f"--host {args.host} is reachable from other machines: give --users FILE "
            "(accounts with hashed passwords; create with --add-user NAME)"
        )
    from tbscore.net.spool import is_spool

    spools = list(args.node_spool or [])
    for src in args.node_spool or []:
        if not is_spool(src):
            raise ReviewError("not a tbscore serve spool (no ledger.sqlite, incoming/)", src)
    sources = []
    for src in args.dirs:
        if not Path(src).exists():
            raise ReviewError("does not exist", src)
        (spools if is_spool(src) else sources).append(src)  # a spool given as DIR
    if not sources and not spools:
        raise ReviewError("give at least one folder, batch output or --node-spool to review")

    def from_node() -> list[dict[str, Any]]:
        return [item for spool in spools for item in node_items(spool)[0]]

    companions = sum(node_items(spool)[1] for spool in spools)
    lsc, lsc_source = _lsc(args)

    import logging

    from werkzeug.serving import run_simple

    from tbscore.review.app import create_app
    from tbscore.review.audit import Database
    from tbscore.review.station import Station

    db_path = Path(args.db)
    work = Path(args.work) if args.work else db_path.with_name(db_path.stem + "-signed")
    station = Station(
        sources,
        Database(db_path),
        work,
        time_zone=args.tz,
        lsc=lsc,
        lsc_source=lsc_source,
        include_phi_pdf=not args.no_phi,
        node_items=from_node if spools else None,
    )
    # on loopback, answer only requests addressed to loopback (no DNS rebinding)
    trusted = [args.host, "localhost", "127.0.0.1", "[::1]"] if is_loopback(args.host) else None
    app = create_app(
        station,
        users=users,
        local_user=args.physician,
        organisation=args.organisation,
        trusted_hosts=trusted,
        log_details=args.log_phi,
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING if args.quiet_requests else logging.INFO)
    sys.stdout.write(
        f"tbscore review: {len(station.studies)} studies"
        + (f" ({companions} unscored node companions not listed)" if companions else "")
        + f"; http://{args.host}:{args.port}/ "
        f"({'login required' if users else 'single user: ' + args.physician}); Ctrl-C stops\n"
    )
    sys.stdout.flush()
    run_simple(args.host, args.port, app, threaded=True, use_reloader=False)
    return EXIT_OK


def register(sub: Any) -> None:
    """Add the ``review`` sub-command."""
    p = sub.add_parser(
        "review",
        help="CPT 77092 reading station: review and edit ROIs, compare priors, sign (web app)",
        description="Serve the reading station: a worklist of studies (DICOM folders, "
        "tbscore batch outputs, what a tbscore serve node received), a study page with "
        "the image, editable ROIs re-scored on every change, values, variograms, clinical "
        "inputs (BMD/T-score from a vendor DXA "
        "SR when present), priors with the change call against the site LSC, and signing "
        "(PDF, VERIFIED SR, Encapsulated PDF) with an append-only audit trail.",
    )
    p.add_argument("dirs", nargs="*", metavar="DIR", help="folder, DICOM file or batch CSV/Parquet")
    p.add_argument(
        "--node-spool",
        action="append",
        metavar="SPOOL",
        help="list what a tbscore serve node received (its --spool folder; repeatable; "
        "a spool given as DIR is recognised too)",
    )
    p.add_argument("--db", default="tbscore-review.sqlite", help="audit/state database (sqlite)")
    p.add_argument("--work", help="signed results and files (default DB-signed/ beside --db)")
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--users", metavar="FILE", help="accounts (required for a non-loopback host)")
    p.add_argument("--add-user", metavar="NAME", help="add an account to --users FILE and exit")
    p.add_argument(
        "--physician",
        default=os.environ.get("USER") or "local user",
        help="who signs in single-user (loopback, no --users) mode (default $USER)",
    )
    p.add_argument("--organisation", help="organisation of signatures")
    p.add_argument(
        "--tz", default=os.environ.get("TBSCORE_TZ", "UTC"), help="site time zone (IANA name)"
    )
    p.add_argument("--precision", metavar="PRECISION.json", help="site precision (LSC)")
    p.add_argument("--lsc", type=float, help="site least significant change (raw index)")
    p.add_argument("--no-phi", action="store_true", help="leave identifiers out of reports")
    p.add_argument("--quiet-requests", action="store_true", help="do not log requests")
    p.add_argument(
        "--log-phi",
        action="store_true",
        help="log the traceback of an internal error (may carry paths and PHI; "
        "default: the error class only)",
    )
    p.set_defaults(func=cmd_review)
