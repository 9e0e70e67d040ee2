"""``tbscore interpret`` (77092), ``tbscore score`` (77089) and ``tbscore billing``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tbscore._version import __version__
from tbscore.clinical import risk
from tbscore.clinical.interpret import (
    REPORT_SERVICES,
    ReportError,
    interpret_result,
    reported_tbs,
)
from tbscore.clinical.risk import DEFAULT_THRESHOLD_SET
from tbscore.core.result import TBSResult
from tbscore.errors import InputError, ResultFormatError

if TYPE_CHECKING:  # the renderer (matplotlib, jinja2) is imported by the commands only
    from tbscore.render.report import Report

# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def _clinical_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("clinical inputs (default: from the DICOM header)")
    g.add_argument("--age", type=float, help="age in years")
    g.add_argument("--sex", help="F or M (female / male); other values are refused")
    g.add_argument("--bmi", type=float, help="body-mass index, kg/m^2")
    g.add_argument(
        "--frax-mof",
        type=float,
        metavar="PERCENT",
        help="FRAX 10-year major osteoporotic fracture probability (%%)",
    )
    g.add_argument(
        "--frax-hip",
        type=float,
        metavar="PERCENT",
        help="FRAX 10-year hip fracture probability (%%)",
    )
    g.add_argument(
        "--threshold-set",
        default=DEFAULT_THRESHOLD_SET,
        choices=sorted(risk.THRESHOLD_SETS),
        help=f"category cut-offs (default {DEFAULT_THRESHOLD_SET})",
    )
    g.add_argument(
        "--no-dicom-defaults",
        action="store_true",
        help="do not take age, sex and BMI from the DICOM header",
    )


def _calibration_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--calibration",
        metavar="CAL.json",
        help=f"calibration to a reference TBS scale (tbscore calibrate) {what}; the "
        "calibrated value is then the one interpreted",
    )


def _output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--output",
        action="append",
        required=True,
        metavar="REPORT",
        help="report file: .html, .pdf or .json (repeatable)",
    )
    p.add_argument(
        "--no-phi",
        action="store_true",
        help="leave patient name, ID and birth date out of the report (and show input "
        "paths as file names only: implies --format-path basename)",
    )
    from tbscore.cli.common import add_path_format_arg

    add_path_format_arg(p)


def _interpretation_from_args(result: TBSResult, args: argparse.Namespace):
    if reported_tbs(result)[0] is None:
        return None
    return interpret_result(
        result,
        age=args.age,
        sex=args.sex,
        bmi=args.bmi,
        frax_mof=args.frax_mof,
        frax_hip=args.frax_hip,
        threshold_set=args.threshold_set,
        use_metadata=not args.no_dicom_defaults,
    )


def _print_summary(report: Report, paths: list[Path]) -> None:
    l14 = report.l1_l4
    lines = [f"tbscore {__version__}  CPT {report.cpt_code} ({REPORT_SERVICES[report.service]})"]
    if l14["available"]:
        lines.append(
            f"L1-L4    {l14['value']} ({l14['labels']})"
            + (f"; calibrated {l14['calibrated']}" if l14["calibrated"] else "")
        )
    else:
        lines.append(f"L1-L4    n/a: {l14['reason']}")
    if report.category is not None:
        c = report.category
        lines.append(f"category {c['label']} ({c['rule']}; {c['set_title']})")
    for row in (report.frax or {}).get("rows", []):
        lines.append(
            f"FRAX     {row['outcome']}: {row['input']}% -> {row['adjusted']}% (TBS-adjusted)"
        )
    lines.extend(f"warning: {w}" for w in report.warnings)
    lines.extend(f"written {p}" for p in paths)
    sys.stdout.write("\n".join(lines) + "\n")


def _check_outputs(outputs: list[str], *others: tuple[str | None, tuple[str, ...] | None]) -> None:
    """Check every output path (report names by suffix, then ``(path, suffixes)``
    pairs) and create missing folders, before anything is computed or written."""
    from tbscore.io.paths import prepare_output

    for out in outputs:
        if Path(out).suffix.lower() not in (".html", ".htm", ".pdf", ".json"):
            raise ReportError("report file must end in .html, .pdf or .json", out)
        prepare_output(out, what="report")
    for out, suffixes in others:
        if out:
            prepare_output(out, suffixes=suffixes)


def _write_all(report: Report, outputs: list[str]) -> list[Path]:
    from tbscore.render.report import write_report

    return [write_report(report, out) for out in outputs]


def _read_result(path: str) -> TBSResult:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except FileNotFoundError:
        raise ReportError("result file does not exist", path) from None
    except OSError as exc:
        raise ReportError(f"cannot read the result file ({exc.strerror})", path) from exc
    if head[128:132] == b"DICM":
        raise ReportError(
            "this is a DICOM image, not a tbscore result JSON; use `tbscore score` to "
            "compute and report it",
            path,
        )
    try:
        return TBSResult.from_json(Path(path))
    except ResultFormatError as exc:  # unreadable, not JSON, or not a result document
        raise ReportError(f"not a readable tbscore result ({exc.reason})", path) from exc
    except (InputError, ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"not a readable tbscore result ({exc})", path) from exc


def cmd_interpret(args: argparse.Namespace) -> int:
    """``tbscore interpret``: CPT 77092 report of a result computed elsewhere."""
    from tbscore.cli.common import path_format_from_args
    from tbscore.cli.exit import EXIT_INCOMPLETE, EXIT_OK
    from tbscore.io.paths import result_with_path_format
    from tbscore.render.report import build_report

    _check_outputs(args.output)
    result = result_with_path_format(_read_result(args.result), path_format_from_args(args))
    if args.calibration:
        from tbscore.core.calibration import apply_calibration
        from tbscore.io.calibration import load_calibration

        result = apply_calibration(result, load_calibration(args.calibration))
    image = rois = None
    if args.image:
        from tbscore.api import as_image, resolve_rois

        if not args.roi:
            raise ReportError("--image needs --roi (the ROIs the result was computed with)")
        row_mm, col_mm = result.pixel_spacing_mm
        spacing = (float(row_mm), float(col_mm))
        image = as_image(args.image, spacing=spacing)
        rois = resolve_rois(args.roi, image)
    interp = _interpretation_from_args(result, args)
    report = build_report(
        result, interp, image=image, rois=rois, service="interpret", include_phi=not args.no_phi
    )
    _print_summary(report, _write_all(report, args.output))
    return EXIT_OK if result.l1_l4 is not None else EXIT_INCOMPLETE


def cmd_score(args: argparse.Namespace) -> int:
    """``tbscore score``: CPT 77089, calculation with interpretation and report."""
    from tbscore.api import as_image, calc, resolve_rois
    from tbscore.cli.calc import audited
    from tbscore.cli.common import path_format_from_args, settings_from_args
    from tbscore.cli.exit import EXIT_INCOMPLETE, EXIT_OK
    from tbscore.core.roi import apply_exclusions
    from tbscore.render.report import build_report

    settings = settings_from_args(args)
    # nothing (result JSON, SR) is written for a bad report name or an unwritable path
    _check_outputs(args.output, (args.result_json, (".json",)), (args.sr, None))

    def run():
        image = as_image(
            args.file,
            spacing=tuple(args.spacing) if args.spacing else None,
            override_spacing=args.override_spacing,
        )
        rois = apply_exclusions(resolve_rois(args.roi, image, settings), args.exclude)
        result = calc(
            image,
            rois,
            settings=settings,
            calibration=args.calibration,
            path_format=path_format_from_args(args),
        )
        return image, rois, result

    image, rois, result = audited("score", args.file, settings, run)
    if args.result_json:
        result.to_json(args.result_json, include_phi=not args.no_phi)
    if args.sr:
        from tbscore.io.sr import write_sr

        write_sr(result, args.file, args.sr)
    interp = _interpretation_from_args(result, args)
    report = build_report(
        result, interp, image=image, rois=rois, service="score", include_phi=not args.no_phi
    )
    paths = _write_all(report, args.output)
    paths += [Path(p) for p in (args.result_json, args.sr) if p]
    _print_summary(report, paths)
    return EXIT_OK if result.l1_l4 is not None else EXIT_INCOMPLETE


def _add_interpret(sub: Any) -> None:
    p = sub.add_parser(
        "interpret",
        help="CPT 77092: interpretation and report of a result computed elsewhere",
        description="Fracture-risk interpretation and report (CPT 77092) of a tbscore "
        "result JSON (from 'tbscore calc --json').",
    )
    p.add_argument("result", help="result JSON (tbscore-result/1)")
    p.add_argument("--image", help="the DICOM the result was computed from (for the overlay)")
    p.add_argument("--roi", help="the ROI file used (with --image)")
    _calibration_arg(p, "to apply to the result")
    _clinical_args(p)
    _output_args(p)
    p.set_defaults(func=cmd_interpret)


def _add_score(sub: Any) -> None:
    from tbscore.cli.common import add_settings_args

    p = sub.add_parser(
        "score",
        help="CPT 77089: calculation with interpretation and report (complete service)",
        description="Compute TBS (as 'calc') and write the interpretation report "
        "(CPT 77089, global).",
    )
    p.add_argument("file", help="DICOM file")
    p.add_argument(
        "--roi",
        help="ROI file (tbscore-roi/1 JSON, .npy/.png label image); default: automatic detection",
    )
    p.add_argument(
        "--exclude",
        action="append",
        metavar="LABEL[:REASON]",
        help="exclude a vertebra, e.g. --exclude L2:fracture (repeatable)",
    )
    p.add_argument(
        "--result-json",
        metavar="RESULT.json",
        help="also write the technical result (tbscore-result/1)",
    )
    p.add_argument("--sr", metavar="OUT.dcm", help="also write a DICOM SR (TID 1500) of the result")
    _calibration_arg(p, "to apply")
    _clinical_args(p)
    _output_args(p)
    add_settings_args(p)
    p.set_defaults(func=cmd_score)


def register(sub: Any) -> None:
    """Add the ``interpret`` and ``score`` sub-commands."""
    _add_interpret(sub)
    _add_score(sub)
