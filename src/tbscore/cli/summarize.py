"""``tbscore summarize``: the cohort QC report of a batch output."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from tbscore.cli.exit import EXIT_OK


def _lsc(args: argparse.Namespace) -> float | None:
    from tbscore.errors import InputError

    if args.lsc is not None and args.precision:
        raise InputError("give --lsc or --precision, not both")
    if args.lsc is not None:
        if not (math.isfinite(args.lsc) and args.lsc > 0):
            raise InputError(f"--lsc must be a positive number (TBS units), got {args.lsc}")
        return float(args.lsc)
    if args.precision:
        try:
            data = json.loads(Path(args.precision).read_text(encoding="utf-8"))
            value = float(data["lsc"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f"cannot read an 'lsc' value from the precision file ({exc})", args.precision
            ) from None
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"precision file lsc must be positive, got {value}", args.precision)
        return value
    return None


def cmd_summarize(args: argparse.Namespace) -> int:
    """Write the cohort report."""
    from tbscore.cohort import summarize
    from tbscore.errors import InputError

    out = Path(args.output)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError("the cohort report is HTML: -o must end in .html", str(out))
    if not out.parent.exists():
        raise InputError("output folder does not exist", str(out))
    report = summarize(args.results, lsc=_lsc(args), thumbnails=args.thumbnails)
    report.to_html(out)
    st = report.tables["status"]
    counts = ", ".join(f"{s} {n}" for s, n in zip(st["status"], st["n"], strict=True))
    sys.stdout.write(f"tbscore summarize: {counts}\n")
    for note in report.notes:
        sys.stdout.write(f"note: {note}\n")
    sys.stdout.write(f"written {out}\n")
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``summarize``."""
    p = sub.add_parser(
        "summarize",
        help="cohort QC report (HTML) of a batch output",
        description="Counts by status and reason, distributions, values against age/sex/BMI, "
        "per-scanner and per-site box plots, detection confidence, inputs that need review "
        "(with overlay thumbnails), outliers, provenance and longitudinal change, as one "
        "self-contained HTML page. See docs/cohort.md.",
    )
    p.add_argument("results", help="tbscore batch output: .csv, .parquet or .jsonl")
    p.add_argument("-o", "--output", required=True, metavar="cohort.html")
    p.add_argument("--lsc", type=float, help="least significant change (TBS units)")
    p.add_argument(
        "--precision",
        metavar="PRECISION.json",
        help="precision file with an 'lsc' value (tbscore precision)",
    )
    p.add_argument(
        "--thumbnails",
        type=int,
        default=12,
        help="overlay thumbnails of inputs needing review (default 12)",
    )
    p.set_defaults(func=cmd_summarize)
