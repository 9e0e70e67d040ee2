"""``tbscore sign``: physician-signed interpretation report (CPT 77092).

The sign-off record is kept next to the result (``case.json`` → ``case.signoff.json``,
:mod:`tbscore.io.signoff`). Signing a result whose record is signed is refused; an
``--addendum`` appends a signature (its own physician and time) and writes the amended
report to new files. Signed files are never overwritten and are made read-only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from tbscore.clinical.risk import DEFAULT_THRESHOLD_SET
from tbscore.errors import AlreadySignedError, SignOffError

#: Environment variable with the site's IANA time zone (default of ``--tz``).
TZ_ENV = "TBSCORE_TZ"

_REPORT_SUFFIXES = (".html", ".htm", ".pdf")


def _pn(name: str) -> str:
    """A free-text name (``"Jane Roe"``) as a DICOM PN (``"Roe^Jane"``); PN kept as is."""
    name = " ".join(name.split())
    if "^" in name:
        return name
    parts = name.split(" ")
    return parts[-1] if len(parts) == 1 else f"{parts[-1]}^{' '.join(parts[:-1])}"


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


def _addendum(args: argparse.Namespace, digest: str, existing: Any, when: Any) -> Any:
    """The record with ``--addendum`` appended (clinical arguments are refused)."""
    from tbscore.clinical.signoff import add_addendum

    given = [d for d in _CLINICAL_DESTS if getattr(args, d, None) not in (None, [])]
    if given:
        raise SignOffError(
            "an addendum keeps the signed impression and inputs; state changes in the "
            f"addendum text (remove --{given[0].replace('_', '-')})"
        )
    if existing is None:
        raise SignOffError("the report is not signed yet: sign it before an addendum")
    return add_addendum(
        existing,
        digest,
        physician=args.physician,
        text=args.addendum,
        when=when,
        time_zone=args.tz,
        organisation=args.organisation,
    )


def cmd_sign(args: argparse.Namespace) -> int:
    """``tbscore sign``: sign (or amend) an interpretation report."""
    from tbscore.cli.exit import EXIT_OK
    from tbscore.cli.report import _read_result
    from tbscore.clinical.interpret import interpret_result, reported_tbs
    from tbscore.clinical.signoff import SignOff, result_digest, sign, signing_time, verify
    from tbscore.core.calibration import apply_calibration
    from tbscore.io.signoff import check_new, read_record, record_path, write_once, write_record
    from tbscore.render.report import build_report, render_html, render_pdf

    for out in args.output:
        if Path(out).suffix.lower() not in _REPORT_SUFFIXES:
            raise SignOffError("signed report file must end in .html or .pdf", out)
    check_new(*args.output, args.sr, args.pdf_dicom)
    if (args.sr or args.pdf_dicom) and not args.image:
        raise SignOffError("--sr and --pdf-dicom need --image (the analysed DICOM image)")

    result = _read_result(args.result)
    digest = result_digest(result.to_dict())
    rpath = Path(args.record) if args.record else record_path(args.result)
    data = read_record(rpath)
    existing = None
    if data is not None:
        try:
            existing = SignOff.from_dict(data)
            verify(existing)
        except SignOffError as exc:
            raise SignOffError(exc.reason, str(rpath)) from exc
        if existing.result_sha256 != digest:
            raise SignOffError(
                "the sign-off record is for another result (SHA-256 differs)", str(rpath)
            )

    when = signing_time(args.tz)
    if args.addendum is not None:
        record = _addendum(args, digest, existing, when)
    else:
        if not args.impression:
            raise SignOffError("--impression is required to sign a report")
        if existing is not None and existing.signed:
            first = existing.signatures[0]
            raise AlreadySignedError(
                f"already signed by {first.physician} at {first.signed_at}; a signed report "
                "is immutable: use --addendum TEXT",
                str(args.result),
            )
        inputs = _inputs_from_args(args)
        inputs["priors"] = _priors(args, result)
        record = sign(
            digest,
            physician=args.physician,
            impression=args.impression,
            recommendation=args.recommendation or "",
            when=when,
            time_zone=args.tz,
            organisation=args.organisation,
            inputs=inputs,
            existing=existing,
        )
    inputs = record.inputs
    if inputs.get("calibration"):
        result = apply_calibration(result, inputs["calibration"])
    interp = None
    if reported_tbs(result)[0] is not None:
        interp = interpret_result(
            result,
            age=inputs.get("age"),
            sex=inputs.get("sex"),
            bmi=inputs.get("bmi"),
            frax_mof=inputs.get("frax_mof"),
            frax_hip=inputs.get("frax_hip"),
            threshold_set=inputs.get("threshold_set") or DEFAULT_THRESHOLD_SET,
            use_metadata=bool(inputs.get("use_metadata", True)),
        )
    image = rois = None
    if args.image:
        from tbscore.api import as_image, resolve_rois

        row_mm, col_mm = result.pixel_spacing_mm
        image = as_image(args.image, spacing=(float(row_mm), float(col_mm)))
        if args.roi:
            rois = resolve_rois(args.roi, image)
    report = build_report(
        result,
        interp,
        image=image,
        rois=rois,
        service="interpret",
        include_phi=not args.no_phi,
        signoff=record,
        time_zone=args.tz,
        bone_density=inputs.get("bone_density"),
        priors=inputs.get("priors") or [],
        lsc=inputs.get("lsc"),
        lsc_source=inputs.get("lsc_source"),
        raw_category=inputs.get("raw_category") or "muted",
    )
    # everything is rendered in memory first: a failure leaves no partial signed output
    files: dict[str, bytes] = {}
    pdf_bytes: bytes | None = None
    for out in args.output:
        if Path(out).suffix.lower() == ".pdf":
            pdf_bytes = pdf_bytes or render_pdf(report)
            files[out] = pdf_bytes
        else:
            files[out] = render_html(report).encode("utf-8")
    last = record.signatures[-1]
    if args.sr:
        files[args.sr] = _signed_sr_bytes(args, result, interp, last)
    if args.pdf_dicom:
        import pydicom

        from tbscore.io.pdf_dicom import encapsulated_pdf

        pdf_bytes = pdf_bytes or render_pdf(report)
        src = pydicom.dcmread(args.image, stop_before_pixels=True)
        ds = encapsulated_pdf(
            pdf_bytes,
            src,
            title=f"Trabecular Bone Score report ({record.status})",
            when=last.time,
        )
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        files[args.pdf_dicom] = buf.getvalue()
    written = [write_once(path, data) for path, data in files.items()]
    write_record(rpath, record.to_dict())
    lines = [
        f"status   {record.status} ({len(record.signatures)} signature(s))",
        f"signed   {last.physician}, {last.display_time()}",
    ]
    lines += [f"warning: {w}" for w in report.warnings]
    lines += [f"written {p}" for p in [*written, rpath]]
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def _signed_sr_bytes(args, result, interp, last) -> bytes:
    """The VERIFIED SR of the signed report, as file bytes."""
    import tempfile

    from tbscore.io.sr import SRVerification, write_sr

    frax = None if interp is None else interp.frax
    verification = SRVerification(
        observer_name=_pn(last.physician),
        organisation=last.organisation or "unknown organisation",
        time=last.time,
        category_code=None if interp is None else interp.category.code,
        category_label=None if interp is None else interp.category.label,
        category_basis=None if interp is None else _basis(result),
        frax_mof_adjusted=None if frax is None else frax.adjusted_mof,
        frax_hip_adjusted=None if frax is None else frax.adjusted_hip,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = write_sr(result, args.image, Path(tmp) / "sr.dcm", verification=verification)
        return path.read_bytes()


def _basis(result) -> str:
    from tbscore.clinical.interpret import reported_tbs

    return reported_tbs(result)[1]


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
