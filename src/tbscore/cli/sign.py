"""``tbscore sign``: physician-signed interpretation report (CPT 77092).

The sign-off record is kept next to the result (``case.json`` → ``case.signoff.json``,
:mod:`tbscore.io.signoff`). Signing a result whose record is signed is refused; an
``--addendum`` appends a signature (its own physician and time) and writes the amended
report to new files. Signed files are never overwritten and are made read-only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from tbscore.clinical.risk import DEFAULT_THRESHOLD_SET
from tbscore.errors import SignOffError

#: Environment variable with the site's IANA time zone (default of ``--tz``).
TZ_ENV = "TBSCORE_TZ"


def _inputs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Clinical inputs of a first signature (stored in the record)."""
    inputs: dict[str, Any] = {
        "age": args.age,
        "sex": args.sex,
        "bmi": args.bmi,
        "frax_mof": args.frax_mof,
        "frax_hip": args.frax_hip,
        "threshold_set": args.threshold_set or DEFAULT_THRESHOLD_SET,
        "use_metadata": not args.no_dicom_defaults,
        "bone_density": None,
        "calibration": None,
        "priors": [],
        "lsc": None,
        "lsc_source": None,
        "raw_category": args.raw_category,
    }
    if args.bmd is not None or args.t_score is not None:
        inputs["bone_density"] = {
            "bmd_g_cm2": args.bmd,
            "t_score": args.t_score,
            "source": "entered",
        }
    if args.calibration:
        from tbscore.io.calibration import load_calibration

        inputs["calibration"] = load_calibration(args.calibration).to_dict()
    if args.precision and args.lsc is not None:
        raise SignOffError("give --precision or --lsc, not both")
    if args.precision:
        from tbscore.clinical.precision import Precision
        from tbscore.errors import PrecisionError

        try:
            data = json.loads(Path(args.precision).read_text(encoding="utf-8"))
            prec = Precision.from_dict(data)
        except (OSError, ValueError) as exc:
            raise SignOffError(f"unreadable precision file ({exc})", args.precision) from exc
        except PrecisionError as exc:
            raise SignOffError(exc.reason, args.precision) from exc
        inputs["lsc"] = prec.lsc
        inputs["lsc_source"] = (
            f"site precision: {prec.n_patients} patients, {prec.dof} degrees of freedom, "
            f"RMS-SD {prec.rms_sd:.3f}"
        )
    elif args.lsc is not None:
        if not args.lsc > 0:
            raise SignOffError(f"--lsc must be positive, got {args.lsc}")
        inputs["lsc"] = float(args.lsc)
        inputs["lsc_source"] = "entered"
    return inputs


_CLINICAL_DESTS = (
    "age",
    "sex",
    "bmi",
    "frax_mof",
    "frax_hip",
    "bmd",
    "t_score",
    "calibration",
    "precision",
    "lsc",
    "prior",
    "impression",
    "recommendation",
)


def _priors(args: argparse.Namespace, result: Any) -> list[dict]:
    from tbscore.cli.report import _read_result
    from tbscore.render.report import prior_summary

    pid = (result.metadata or {}).get("patient_id")
    out = []
    for path in args.prior or []:
        prior = _read_result(path)
        ppid = (prior.metadata or {}).get("patient_id")
        if pid and ppid and ppid != pid:
            raise SignOffError("prior scan is of another patient (PatientID differs)", path)
        out.append(prior_summary(prior))
    return out


def _dxa_sr_values(args: argparse.Namespace, result: Any) -> dict | None:
    """BMD (g/cm²) and T-score of L1–L4 from a vendor DXA SR of the same study beside
    the image (``--image``, else the result's input file), as the reading station
    reads them (:mod:`tbscore.io.dxa_sr`). Only used when neither ``--bmd`` nor
    ``--t-score`` is given: entered values win."""
    from tbscore.io.dxa_sr import find_dxa_sr, read_dxa_sr

    image = Path(args.image) if args.image else None
    if image is None:
        source = (result.input or {}).get("source")
        image = Path(str(source)) if source else None
    if image is None or not image.parent.is_dir():
        return None
    study_uid = (result.metadata or {}).get("study_instance_uid")
    if not study_uid and args.image:
        from tbscore.io.sniff import read_dicom

        study_uid = str(getattr(read_dicom(image, stop_before_pixels=True), "StudyInstanceUID", ""))
    try:
        sr = find_dxa_sr(image.parent, study_uid or None)
    except OSError:
        return None
    values = None if sr is None else read_dxa_sr(sr)
    if values is None:
        return None
    return {k: values[k] for k in ("bmd_g_cm2", "t_score", "source")}


def _check_addendum_args(args: argparse.Namespace) -> None:
    """An addendum keeps the signed inputs: clinical arguments are refused."""
    given = [d for d in _CLINICAL_DESTS if getattr(args, d, None) not in (None, [])]
    if given:
        raise SignOffError(
            "an addendum keeps the signed impression and inputs; state changes in the "
            f"addendum text (remove --{given[0].replace('_', '-')})"
        )


def cmd_sign(args: argparse.Namespace) -> int:
    """``tbscore sign``: sign (or amend) an interpretation report."""
    from tbscore.cli.exit import EXIT_OK
    from tbscore.cli.report import _read_result
    from tbscore.signing import REPORT_SUFFIXES, sign_result

    for out in args.output:
        if Path(out).suffix.lower() not in REPORT_SUFFIXES:
            raise SignOffError("signed report file must end in .html or .pdf", out)
    result = _read_result(args.result)
    inputs = None
    if args.addendum is not None:
        _check_addendum_args(args)
    else:
        if not args.impression:
            raise SignOffError("--impression is required to sign a report")
        inputs = _inputs_from_args(args)
        inputs["priors"] = _priors(args, result)
        if inputs["bone_density"] is None and not args.no_dxa_sr:
            inputs["bone_density"] = _dxa_sr_values(args, result)
    done = sign_result(
        result,
        args.result,
        physician=args.physician,
        outputs=args.output,
        impression=args.impression,
        recommendation=args.recommendation or "",
        addendum=args.addendum,
        inputs=inputs,
        time_zone=args.tz,
        organisation=args.organisation,
        record_file=args.record,
        image=args.image,
        roi=args.roi,
        sr=args.sr,
        pdf_dicom=args.pdf_dicom,
        include_phi=not args.no_phi,
    )
    record = done.record
    last = record.signatures[-1]
    lines = [
        f"status   {record.status} ({len(record.signatures)} signature(s))",
        f"signed   {last.physician}, {last.display_time()}",
    ]
    lines += [f"warning: {w}" for w in done.warnings]
    lines += [f"written {p}" for p in [*done.written, done.record_path]]
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def register(sub: Any) -> None:
    """Add the ``sign`` sub-command."""
    from tbscore.cli.report import _clinical_args

    p = sub.add_parser(
        "sign",
        help="CPT 77092: sign an interpretation report (final), or add an addendum",
        description="Sign the interpretation of a tbscore result as the interpreting "
        "physician: writes the final report (HTML/PDF), optionally a VERIFIED DICOM SR and a "
        "DICOM Encapsulated PDF, and keeps the sign-off record next to the result. A signed "
        "report is immutable: later changes are an --addendum with its own signature.",
    )
    p.add_argument("result", help="result JSON (tbscore-result/1)")
    p.add_argument("--physician", required=True, help="interpreting physician (who signs)")
    p.add_argument("--organisation", help="the physician's organisation")
    p.add_argument("--impression", help="impression (required for the first signature)")
    p.add_argument("--recommendation", help="recommendation")
    p.add_argument("--addendum", metavar="TEXT", help="add an addendum to a signed report")
    p.add_argument(
        "--tz",
        default=os.environ.get(TZ_ENV, "UTC"),
        help=f"site time zone, IANA name (default ${TZ_ENV} or UTC)",
    )
    p.add_argument("--record", help="sign-off record (default RESULT.signoff.json beside it)")
    p.add_argument("--image", help="the analysed DICOM (overlay; needed for --sr, --pdf-dicom)")
    p.add_argument("--roi", help="the ROI file used (with --image, for the overlay)")
    p.add_argument("--calibration", metavar="CAL.json", help="calibration to apply")
    g = p.add_argument_group("bone density and follow-up")
    g.add_argument("--bmd", type=float, metavar="G_CM2", help="L1-L4 BMD (g/cm^2)")
    g.add_argument("--t-score", type=float, help="L1-L4 T-score")
    g.add_argument(
        "--no-dxa-sr",
        action="store_true",
        help="do not read BMD/T-score from a vendor DXA SR of the study beside the image "
        "(read by default when neither --bmd nor --t-score is given)",
    )
    g.add_argument(
        "--prior", action="append", metavar="RESULT.json", help="prior scan result (repeatable)"
    )
    g.add_argument("--precision", metavar="PRECISION.json", help="site precision (LSC)")
    g.add_argument("--lsc", type=float, help="site least significant change (raw index)")
    p.add_argument(
        "--raw-category",
        choices=("muted", "hidden", "shown"),
        default="muted",
        help="category from a raw or weakly calibrated index: muted with the reason "
        "(default), hidden, or shown (site allows raw values)",
    )
    _clinical_args(p)
    p.set_defaults(threshold_set=None)
    p.add_argument(
        "-o",
        "--output",
        action="append",
        required=True,
        metavar="REPORT",
        help="signed report: .html or .pdf (repeatable; never overwritten)",
    )
    p.add_argument("--sr", metavar="SR.dcm", help="also write a VERIFIED DICOM SR")
    p.add_argument("--pdf-dicom", metavar="REPORT.dcm", help="also write a DICOM Encapsulated PDF")
    p.add_argument("--no-phi", action="store_true", help="leave identifiers out of the report")
    p.set_defaults(func=cmd_sign)
