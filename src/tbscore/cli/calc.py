"""``tbscore calc``: CPT 77091 technical calculation."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from tbscore.cli.common import (
    add_path_format_arg,
    add_settings_args,
    path_format_from_args,
    settings_from_args,
)
from tbscore.cli.exit import EXIT_INCOMPLETE, EXIT_OK


def _summary(result) -> str:
    from tbscore.core.result import format_snr, format_value_ci

    lines = [
        f"tbscore {result.tbscore_version}  CPT {result.cpt_code} (technical calculation)",
        f"input    {result.input['source']}",
        f"spacing  {result.pixel_spacing_mm[0]:.4g} x {result.pixel_spacing_mm[1]:.4g} mm "
        f"({result.spacing_source}); lags {result.lag_range_mm[0]:g}-"
        f"{result.lag_range_mm[1]:g} mm; ROIs: {result.roi_source}",
        f"estimator {result.settings.estimator}; 95 % CI from the analytic variance of the "
        "variogram; SNR = texture-to-noise ratio",
        "vertebra  TBS(raw) (95 % CI)           SNR       status    R2     lags  pixels  reason",
    ]
    for v in result.vertebrae:
        val = format_value_ci(v.value, v.ci95, dash="-") if v.value is not None else "-"
        r2 = "  -  " if v.r2 is None else f"{v.r2:.3f}"
        snr = format_snr(v.snr, v.value is not None) or "-"
        lines.append(
            f"{v.label:<9} {val:<27}  {snr:<9} {v.status:<9} {r2}  {v.n_lags:4d}  "
            f"{v.n_pixels:6d}  {v.reason or ''}"
        )
    l14 = format_value_ci(result.l1_l4, result.l1_l4_ci95, dash="-")
    lines.append(
        f"L1-L4     {l14}   ({', '.join(result.l1_l4_labels)})"
        + (f"  {result.l1_l4_reason}" if result.l1_l4_reason else "")
    )
    if result.calibration is not None:
        cal = "n/a" if result.l1_l4_calibrated is None else f"{result.l1_l4_calibrated:.3f}"
        lines.append(f"L1-L4 calibrated {cal}  (calibration: {result.calibration.get('name')})")
    for w in result.warnings:
        lines.append(f"warning: {w}")
    lines.append(
        "Raw tbscore index: not interchangeable with TBS iNsight values unless calibrated."
    )
    return "\n".join(lines) + "\n"


def _csv_text(rows: list[dict]) -> str:
    from tbscore.core.result import CSV_COLUMNS
    from tbscore.io.tabular import write_csv

    buf = io.StringIO()
    write_csv(buf, CSV_COLUMNS, rows, extrasaction="ignore")
    return buf.getvalue()


def figure_suffixes() -> tuple[str, ...]:
    """File suffixes matplotlib can write (``--overlay``, ``--plot``)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(f".{k}" for k in FigureCanvasBase.get_supported_filetypes())


def audited(command: str, path: str, settings, run):
    """Run ``run()``, which returns ``(image, rois, result)``, and log one audit line
    for ``path`` (:func:`tbscore.log.audit`), also when it raises a
    :class:`tbscore.errors.TBSError`."""
    from tbscore.errors import TBSError
    from tbscore.log import audit, file_sha256_or_none

    try:
        out = run()
    except TBSError as exc:
        audit(
            input_sha256=file_sha256_or_none(path),
            outcome=f"error:{exc.code}",
            settings_digest=settings.digest(),
            command=command,
        )
        raise
    result = out[-1]
    audit(
        input_sha256=result.input.get("file_sha256") or file_sha256_or_none(path),
        outcome=result.status,
        value=result.l1_l4,
        settings_digest=result.settings.digest(),
        command=command,
    )
    return out


def cmd_calc(args: argparse.Namespace) -> int:
    from tbscore.api import as_image, calc, resolve_rois
    from tbscore.core.roi import apply_exclusions
    from tbscore.io.paths import prepare_output

    settings = settings_from_args(args)  # validated before any file is read
    # every output path is checked (and its folder created) before anything is computed
    for out, suffixes, what in (
        (args.output, None, "output"),
        (args.save_roi, (".json",), "ROI file"),
        (args.overlay, figure_suffixes(), "overlay"),
        (args.sr, None, "SR file"),
    ):
        if out:
            prepare_output(out, suffixes=suffixes, what=what)

    def run():
        image = as_image(
            args.file,
            spacing=tuple(args.spacing) if args.spacing else None,
            override_spacing=args.override_spacing,
        )
        # ROIs resolved (or detected) once, shared by the result, --save-roi and --overlay.
        rois = apply_exclusions(resolve_rois(args.roi, image, settings), args.exclude)
        result = calc(
            image,
            rois,
            settings=settings,
            calibration=args.calibration,
            path_format=path_format_from_args(args),
        )
        return image, rois, result

    image, rois, result = audited("calc", args.file, settings, run)
    if args.sr:
        from tbscore.io.sr import write_sr

        # the header the loader kept: the input is not read a second time
        header = getattr(image, "header", None)
        write_sr(result, header if header is not None else args.file, args.sr)
        sys.stderr.write(f"written {args.sr}\n")
    fmt = "json" if args.json else "csv" if args.csv else None
    if fmt is None and args.output:
        fmt = {".json": "json", ".csv": "csv"}.get(Path(args.output).suffix.lower(), "json")
    text = (
        result.to_json()
        if fmt == "json"
        else _csv_text([result.csv_row()])
        if fmt == "csv"
        else _summary(result)
    )
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        sys.stdout.write(_summary(result))
        sys.stdout.write(f"written {args.output}\n")
    else:
        sys.stdout.write(text)
    if args.save_roi:
        from tbscore.core.roi import write_roi_json

        write_roi_json(rois, args.save_roi, image.spacing_mm, units=args.roi_units)
    if args.overlay:
        from tbscore.render.overlay import save_overlay

        save_overlay(image, rois, args.overlay, result=result)
    return EXIT_OK if result.l1_l4 is not None else EXIT_INCOMPLETE


def register(sub) -> None:
    """Add ``calc``."""
    p = sub.add_parser(
        "calc",
        help="CPT 77091: technical calculation (TBS per vertebra + L1-L4)",
        description="Compute the raw tbscore index (CPT 77091, technical calculation) of "
        "each vertebra L1-L4 and their mean from one lumbar-spine DXA DICOM image, with "
        "ROIs from --roi or automatic detection. Raw values are not interchangeable with "
        "TBS iNsight values unless calibrated.",
    )
    p.add_argument("file", help="DICOM file")
    p.add_argument(
        "--roi",
        help="ROI file (tbscore-roi/1 JSON, .npy/.png label image); default: automatic detection",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON result")
    fmt.add_argument("--csv", action="store_true", help="CSV row")
    p.add_argument("-o", "--output", help="write the result to this file")
    p.add_argument(
        "--exclude",
        action="append",
        metavar="LABEL[:REASON]",
        help="exclude a vertebra, e.g. --exclude L2:fracture (repeatable)",
    )
    p.add_argument(
        "--save-roi", metavar="ROI.json", help="write the ROIs used as tbscore-roi/1 JSON"
    )
    p.add_argument(
        "--roi-units",
        choices=("px", "mm"),
        default="px",
        help="coordinates of --save-roi: pixels (default) or mm",
    )
    p.add_argument("--overlay", metavar="PNG", help="write the image with the ROIs drawn")
    p.add_argument("--sr", metavar="OUT.dcm", help="write a DICOM SR (TID 1500) of the result")
    p.add_argument(
        "--calibration",
        metavar="CALIB.json",
        help="apply a calibration (tbscore calibrate); calibrated values beside raw ones",
    )
    add_settings_args(p)
    add_path_format_arg(p)
    p.set_defaults(func=cmd_calc)
