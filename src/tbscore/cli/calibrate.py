"""``tbscore calibrate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tbscore.core.constants import CALIBRATION_METHODS as METHODS

# --------------------------------------------------------------------------- CLI


def cmd_calibrate(args: Any) -> int:
    """``tbscore calibrate``: fit, write the JSON (and plot / per-row table)."""
    from tbscore.calibrate import calibrate_pairs
    from tbscore.cli.calc import figure_suffixes
    from tbscore.cli.common import settings_from_args
    from tbscore.io.calibration import save_calibration
    from tbscore.io.paths import prepare_output
    from tbscore.io.tabular import write_csv
    from tbscore.render.calibration import bland_altman_figure

    settings = settings_from_args(args)
    if args.group_by:
        return _cmd_groups(args)
    prepare_output(args.output, suffixes=(".json",), what="calibration file")
    if args.plot:
        prepare_output(args.plot, suffixes=figure_suffixes(), what="plot")
    if args.pairs_out:
        prepare_output(args.pairs_out, suffixes=(".csv",), what="pairs table")
    cal, records = calibrate_pairs(
        args.pairs,
        method=args.method,
        error_ratio=args.error_ratio,
        level=args.level,
        ci=args.ci,
        n_boot=args.n_boot,
        seed=args.seed,
        name=args.name or Path(args.output).stem,
        settings=settings,
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


def _cmd_groups(args: Any) -> int:
    """``tbscore calibrate --group-by``: one calibration per scanner group + a map."""
    import re

    from tbscore.calibrate import calibrate_groups
    from tbscore.cli.common import settings_from_args
    from tbscore.io.calibration import save_calibration
    from tbscore.io.calibration_map import save_calibration_map

    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        from tbscore.core.calibration import CalibrationError

        raise CalibrationError(
            "with --group-by, -o is a folder that must be new or empty", str(out)
        )
    group_by = [g.strip() for g in args.group_by.split(",") if g.strip()]
    fits = calibrate_groups(
        args.pairs,
        group_by,
        method=args.method,
        error_ratio=args.error_ratio,
        level=args.level,
        ci=args.ci,
        n_boot=args.n_boot,
        seed=args.seed,
        name=args.name,
        settings=settings_from_args(args),
        roi_dir=args.roi_dir,
        spacing=tuple(args.spacing) if args.spacing else None,
        override_spacing=args.override_spacing,
    )
    out.mkdir(parents=True, exist_ok=True)
    rules = []
    for group, cal, records in fits:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(group.values())).strip("_") or "group"
        save_calibration(cal, out / f"{stem}.json")
        print(cal.summary(), end="")
        for r in records:
            if r["status"] != "ok":
                print(f"left out row {r['row']} ({stem}): {r['error']}")
        rules.append({"name": stem, **group, "calibration": f"{stem}.json"})
    save_calibration_map(rules, out / "calibration-map.toml", strict=True)
    print(
        f"written {len(fits)} calibration(s) and {out / 'calibration-map.toml'} "
        "(strict; use with tbscore batch --calibration-map)"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add the ``calibrate`` sub-command."""
    import argparse

    from tbscore.cli.common import add_settings_args as add_settings

    p = subparsers.add_parser(
        "calibrate",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="fit a linear map reference = a + b*tbscore from paired data",
        description="Fit reference = a + b * tbscore from a CSV with columns 'reference' and "
        "'path' (DICOM, relative to the CSV; optional 'roi') or 'tbscore'.",
    )
    p.add_argument("pairs", metavar="pairs.csv", help="paired values (see above)")
    p.add_argument(
        "--group-by",
        metavar="COLS",
        help="fit one calibration per scanner group, e.g. manufacturer,model (pairs-file "
        "columns among manufacturer, model, software); -o is then a folder that gets one "
        "JSON per group and calibration-map.toml",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="calib.json",
        help="calibration file to write (a folder with --group-by)",
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default="deming",
        help="regression: deming (errors in both) or ols (reference on tbscore)",
    )
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
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (--ci bootstrap)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--name", help="calibration name (default: output file stem)")
    p.add_argument("--plot", metavar="PNG", help="write the fit and Bland-Altman plot")
    p.add_argument("--roi-dir", metavar="DIR", help="folder of NAME.roi.json files")
    p.add_argument("--pairs-out", metavar="CSV", help="write the per-row tbscore values (no paths)")
    add_settings(p)
    p.set_defaults(func=cmd_calibrate)
