"""Command-line interface: ``tbscore calc | phantom | interpret | score | ...``.

argparse lives here only. Each sub-command is a module of this package with a
``register(subparsers)`` function; heavy libraries are imported inside the command
functions, so ``tbscore --help`` stays fast.

Exit codes: 0 success; 1 a result without an L1–L4 value (or, for batch commands, at
least one failed input); 2 an error (bad input, ROI, settings), printed as
``tbscore: error: <file>: <reason>``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from tbscore._version import __version__
from tbscore.cli.common import add_log_args
from tbscore.cli.exit import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_OK
from tbscore.errors import TBSError

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_INCOMPLETE", "EXIT_ERROR", "COMMANDS"]

#: Sub-command modules, in the order of ``tbscore --help``.
COMMANDS: tuple[str, ...] = (
    "tbscore.cli.calc",  # calc (77091)
    "tbscore.cli.phantom",  # phantom
    "tbscore.cli.report",  # interpret (77092), score (77089)
    "tbscore.cli.billing",  # billing
    "tbscore.cli.batch",  # batch
    "tbscore.cli.export",  # export (77090)
    "tbscore.cli.calibrate",  # calibrate
    "tbscore.cli.summarize",  # summarize (cohort report)
    "tbscore.cli.sign",  # sign (77092 sign-off)
    "tbscore.cli.precision",  # precision (ISCD LSC)
    "tbscore.cli.review",  # review (77092 reading station)
    "tbscore.cli.serve",  # serve (DICOM node)
    "tbscore.cli.echo",  # echo
    "tbscore.cli.send",  # send
    "tbscore.cli.pull",  # pull
    "tbscore.cli.queue",  # queue
)


def build_parser() -> argparse.ArgumentParser:
    """The ``tbscore`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="tbscore",
        description="Open Trabecular Bone Score engine. Values are not interchangeable with "
        "TBS iNsight unless calibrated.",
    )
    parser.add_argument("--version", action="version", version=f"tbscore {__version__}")
    add_log_args(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tbscore`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers: list = []
    try:
        if args.log_file:
            from tbscore.io.paths import prepare_output

            prepare_output(args.log_file, what="log file")
        from tbscore.log import configure_cli_logging

        handlers = configure_cli_logging(args.verbose, args.quiet, args.log_file)
        return int(args.func(args))
    except TBSError as exc:
        print(f"tbscore: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    finally:
        from tbscore.log import logger

        for h in handlers:
            logger.removeHandler(h)
            h.close()
        if handlers:
            logger.setLevel(logging.NOTSET)
