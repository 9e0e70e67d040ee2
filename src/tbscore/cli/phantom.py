"""``tbscore phantom``: write the synthetic sample set."""

from __future__ import annotations

import argparse

from tbscore.cli.exit import EXIT_OK


def cmd_phantom(args: argparse.Namespace) -> int:
    from tbscore.sim.phantom import write_sample_set

    paths = write_sample_set(args.outdir, seed=args.seed)
    for p in paths:
        print(p)
    return EXIT_OK


def register(sub) -> None:
    """Add ``phantom``."""
    p = sub.add_parser(
        "phantom", help="write the synthetic phantom sample set (DICOM + ROI + truth)"
    )
    p.add_argument("outdir", nargs="?", default="sample_dicom")
    p.add_argument("--seed", type=int, default=20261123)
    p.set_defaults(func=cmd_phantom)
