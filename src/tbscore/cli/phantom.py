"""``tbscore phantom``: write the synthetic sample set."""

from __future__ import annotations

import argparse

from tbscore.cli.exit import EXIT_OK


def cmd_phantom(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tbscore.errors import OutputError
    from tbscore.io.paths import prepare_output_dir
    from tbscore.sim.phantom import write_sample_set

    out = Path(args.outdir)
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise OutputError(
            "folder is not empty; its sample files would be overwritten (use --force)",
            str(out),
        )
    prepare_output_dir(out)

    paths = write_sample_set(args.outdir, seed=args.seed)
    for p in paths:
        print(p)
    return EXIT_OK


def register(sub) -> None:
    """Add ``phantom``."""
    p = sub.add_parser(
        "phantom", help="write the synthetic phantom sample set (DICOM + ROI + truth)"
    )
    p.add_argument("outdir", help="folder to write into (created; refused if not empty)")
    p.add_argument(
        "--force", action="store_true", help="write into a non-empty folder (overwrites)"
    )
    p.add_argument("--seed", type=int, default=20261123, help="random seed (default %(default)s)")
    p.set_defaults(func=cmd_phantom)
