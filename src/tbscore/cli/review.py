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
    if not args.dirs:
        raise ReviewError("give at least one folder or batch output to review")
    for src in args.dirs:
        if not Path(src).exists():
            raise ReviewError("does not exist", src)
    lsc, lsc_source = _lsc(args)

    import logging

    from werkzeug.serving import run_simple

    from tbscore.review.app import create_app
    from tbscore.review.audit import Database
    from tbscore.review.station import Station

    db_path = Path(args.db)
    work = Path(args.work) if args.work else db_path.with_name(db_path.stem + "-signed")
    station = Station(
        args.dirs,
        Database(db_path),
        work,
        time_zone=args.tz,
        lsc=lsc,
        lsc_source=lsc_source,
        include_phi_pdf=not args.no_phi,
    )
    # on loopback, answer only requests addressed to loopback (no DNS rebinding)
    trusted = [args.host, "localhost", "127.0.0.1", "[::1]"] if is_loopback(args.host) else None
    app = create_app(
        station,
        users=users,
        local_user=args.physician,
        organisation=args.organisation,
        trusted_hosts=trusted,
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING if args.quiet_requests else logging.INFO)
    sys.stdout.write(
        f"tbscore review: {len(station.studies)} studies; http://{args.host}:{args.port}/ "
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
        "tbscore batch outputs), a study page with the image, editable ROIs re-scored on "
        "every change, values, variograms, clinical inputs (BMD/T-score from a vendor DXA "
        "SR when present), priors with the change call against the site LSC, and signing "
        "(PDF, VERIFIED SR, Encapsulated PDF) with an append-only audit trail.",
    )
    p.add_argument("dirs", nargs="*", metavar="DIR", help="folder, DICOM file or batch CSV/Parquet")
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
    p.set_defaults(func=cmd_review)
