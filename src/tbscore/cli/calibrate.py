"""``tbscore calibrate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tbscore.calibrate import calibrate_pairs
from tbscore.core.calibration import METHODS
from tbscore.io.calibration import save_calibration
from tbscore.io.tabular import write_csv
from tbscore.render.calibration import bland_altman_figure

# --------------------------------------------------------------------------- CLI


def cmd_calibrate(args: Any) -> int:
    """``tbscore calibrate``: fit, write the JSON (and plot / per-row table)."""
    from tbscore.cli.common import settings_from_args

    cal, records = calibrate_pairs(
        args.pairs,
        method=args.method,
        error_ratio=args.error_ratio,
        level=args.level,
        ci=args.ci,
        n_boot=args.n_boot,
        seed=args.seed,
        name=args.name or Path(args.output).stem,
        settings=settings_from_args(args),
        roi_dir=args.roi_dir,
        spacing=tuple(args.spacing) if args.spacing else None,
        override_spacing=args.override_spacing,
    )
    save_calibration(cal, args.output)
    print(cal.summary(), end="")
    for r in records:
        if r["status"] != "ok":
            print(f"left out row {r['row']}: {r['error']}")
    if args.plot:
        ok = [r for r in records if r["status"] == "ok"]
        fig = bland_altman_figure(cal, [r["tbscore"] for r in ok], [r["reference"] for r in ok])
        fig.savefig(args.plot, dpi=120)
        print(f"written {args.plot}")
    if args.pairs_out:
        with open(args.pairs_out, "w", newline="", encoding="utf-8") as fh:
            write_csv(fh, ["row", "tbscore", "reference", "status", "error"], records)
        print(f"written {args.pairs_out}")
    print(f"written {args.output}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``calibrate`` sub-command."""
    from tbscore.cli.common import add_settings_args as add_settings

    p = subparsers.add_parser(
        "calibrate",
        help="fit a linear map reference = a + b*tbscore from paired data",
        description="Fit reference = a + b * tbscore from a CSV with columns 'reference' and "
        "'path' (DICOM, relative to the CSV; optional 'roi') or 'tbscore'.",
    )
    p.add_argument("pairs", metavar="pairs.csv")
    p.add_argument("-o", "--output", required=True, metavar="calib.json")
    p.add_argument("--method", choices=METHODS, default="deming")
    p.add_argument(
        "--lambda",
        dest="error_ratio",
        type=float,
        default=1.0,
        help="Deming error-variance ratio var(reference err)/var(tbscore err)",
    )
    p.add_argument(
        "--ci",
        choices=("jackknife", "bootstrap"),
        default="jackknife",
        help="Deming confidence intervals (OLS: t intervals)",
    )
    p.add_argument("--level", type=float, default=0.95, help="confidence level")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--name", help="calibration name (default: output file stem)")
    p.add_argument("--plot", metavar="PNG", help="write the fit and Bland-Altman plot")
    p.add_argument("--roi-dir", metavar="DIR", help="folder of NAME.roi.json files")
    p.add_argument("--pairs-out", metavar="CSV", help="write the per-row tbscore values (no paths)")
    add_settings(p)
    p.set_defaults(func=cmd_calibrate)
