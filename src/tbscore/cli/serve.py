"""``tbscore serve``: the DICOM node (receive, score, send the SR back)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "cmd_serve"]

_EPILOG = """\
Each DXA image received (Secondary Capture, DX, CR) is acknowledged once it is safely
in the spool, scored by a worker process (automatic L1-L4 ROIs) and its DICOM SR sent
to every --forward destination; failed sends are retried with capped backoff
(tbscore queue list|retry|purge). Options override the keys of --config serve.toml.
See docs/network.md.
"""

#: option -> NodeConfig field, for options given on the command line only
_FIELDS = (
    "spool ae_title bind port forward allow_aet accept workers job_timeout max_pixels "
    "min_free_mb retry_base retry_cap reconcile reconcile_every reconcile_days "
    "connect_timeout acse_timeout dimse_timeout network_timeout settings calibration report_pdf"
).split()


def node_config(args: argparse.Namespace) -> Any:
    """The :class:`~tbscore.net.node.NodeConfig` of ``--config`` plus the options."""
    from tbscore.net.node import NodeConfig, load_config, parse_duration

    values: dict[str, Any] = load_config(args.config) if args.config else {}
    for name in _FIELDS:
        v = getattr(args, name, None)
        if v is not None and v != []:
            values[name] = v
    for name in ("reconcile_every",):
        if name in values:
            values[name] = parse_duration(values[name])
    if "spool" not in values:
        from tbscore.errors import NetError

        raise NetError("--spool DIR is required (or spool = ... in --config)")
    return NodeConfig(**values)


def cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from tbscore.net.node import Node

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s tbscore %(levelname)s %(message)s",
    )
    node = Node(node_config(args))
    done = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    node.start()
    cfg = node.config
    print(
        f"tbscore serve: listening on {cfg.ae_title}@{cfg.bind}:{cfg.port} "
        f"({cfg.workers} worker(s) warm, spool {cfg.spool}, forward "
        f"{', '.join(cfg.forward) or 'none'})",
        flush=True,
    )
    while not done.wait(1.0):
        pass
    node.stop()
    print("tbscore serve: stopped", flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tbscore serve``."""
    p = subparsers.add_parser(
        "serve",
        help="DICOM node: receive DXA images, score them, send the SR to the PACS",
        description="DICOM Storage SCP that scores received DXA images and forwards the "
        "results (DICOM SR) to PACS destinations (CPT 77091 over the network).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="serve.toml", help="node settings file (TOML)")
    p.add_argument("--spool", metavar="DIR", help="spool folder (record, images, results)")
    p.add_argument("--ae-title", dest="ae_title", metavar="AET", help="our AE title (TBS)")
    p.add_argument("--bind", metavar="ADDR", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (11112)")
    p.add_argument(
        "--forward",
        action="append",
        metavar="AET@HOST:PORT",
        help="send each result there (repeatable)",
    )
    p.add_argument(
        "--allow-aet",
        dest="allow_aet",
        action="append",
        metavar="AET",
        help="accept associations only from these calling AE titles (repeatable)",
    )
    p.add_argument(
        "--accept",
        choices=("dxa", "study", "all"),
        help="dxa: DXA image classes only (default); study: also the rest of a "
        "densitometer's study (colour SC, PDF, SR), stored unscored; all: every class",
    )
    p.add_argument("--workers", type=int, help="scoring worker processes (2)")
    p.add_argument(
        "--job-timeout", dest="job_timeout", type=float, metavar="S", help="per-image limit (60 s)"
    )
    p.add_argument(
        "--max-pixels", dest="max_pixels", type=int, metavar="N", help="largest image (4000000)"
    )
    p.add_argument(
        "--min-free-mb",
        dest="min_free_mb",
        type=float,
        metavar="MB",
        help="refuse images (status 0xA700) below this free space in the spool (200)",
    )
    p.add_argument(
        "--retry-base", dest="retry_base", type=float, metavar="S", help="first retry delay (5 s)"
    )
    p.add_argument(
        "--retry-cap", dest="retry_cap", type=float, metavar="S", help="longest retry delay (600 s)"
    )
    p.add_argument(
        "--reconcile", metavar="AET@HOST:PORT", help="catch-up pull of missed DXA images from"
    )
    p.add_argument(
        "--reconcile-every", dest="reconcile_every", metavar="DURATION", help="e.g. 1h (default)"
    )
    p.add_argument(
        "--reconcile-days", dest="reconcile_days", type=int, help="days back to look (1)"
    )
    for name, default in (
        ("connect", 10),
        ("acse", 30),
        ("dimse", 60),
        ("network", 60),
    ):
        p.add_argument(
            f"--{name}-timeout",
            dest=f"{name}_timeout",
            type=float,
            metavar="S",
            help=f"{name} timeout of every association ({default} s)",
        )
    p.add_argument("--settings", metavar="FILE", help="computation settings file")
    p.add_argument("--calibration", metavar="calib.json", help="calibration to apply")
    p.add_argument(
        "--report-pdf",
        dest="report_pdf",
        action="store_true",
        default=None,
        help="also send the 77089 report (interpretation from the image's age and sex) as "
        "DICOM Encapsulated PDF in the image's study (needs tbscore[pdf])",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log each event")
    p.set_defaults(func=cmd_serve)
