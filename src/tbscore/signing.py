"""The one signing path of a 77092 report: record, report files, VERIFIED SR, Encapsulated PDF.

``tbscore sign`` (:mod:`tbscore.cli.sign`) and the reading station
(:mod:`tbscore.review`) both call :func:`sign_result`; neither writes signed files by
itself. The sign-off record (:mod:`tbscore.clinical.signoff`) is kept beside the result
(``case.json`` -> ``case.signoff.json``, :mod:`tbscore.io.signoff`); signed files are
rendered in memory first, then written once and made read-only.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tbscore.clinical.risk import DEFAULT_THRESHOLD_SET
from tbscore.errors import AlreadySignedError, SignOffError

__all__ = ["SignedOutput", "sign_result", "pn", "REPORT_SUFFIXES"]

#: Suffixes of signed report files.
REPORT_SUFFIXES = (".html", ".htm", ".pdf")


@dataclass(frozen=True)
class SignedOutput:
    """What :func:`sign_result` did.

    Attributes
    ----------
    record : SignOff
        The sign-off record now on disk.
    record_path : Path
    written : tuple of Path
        The signed files written (read-only).
    warnings : tuple of str
        The report's warnings.
    """

    record: Any
    record_path: Path
    written: tuple[Path, ...]
    warnings: tuple[str, ...]


def pn(name: str) -> str:
    """A free-text name (``"Jane Roe"``) as a DICOM PN (``"Roe^Jane"``); PN kept as is."""
    name = " ".join(name.split())
    if "^" in name:
        return name
    parts = name.split(" ")
    return parts[-1] if len(parts) == 1 else f"{parts[-1]}^{' '.join(parts[:-1])}"


def _basis(result: Any) -> str:
    from tbscore.clinical.interpret import reported_tbs

    return reported_tbs(result)[1]


def _signed_sr_bytes(result: Any, image: str | Path, interp: Any, last: Any) -> bytes:
    """The VERIFIED SR of the signed report, as file bytes."""
    from tbscore.io.sr import SRVerification, write_sr

    frax = None if interp is None else interp.frax
    verification = SRVerification(
        observer_name=pn(last.physician),
        organisation=last.organisation or "unknown organisation",
        time=last.time,
        category_code=None if interp is None else interp.category.code,
        category_label=None if interp is None else interp.category.label,
        category_basis=None if interp is None else _basis(result),
        frax_mof_adjusted=None if frax is None else frax.adjusted_mof,
        frax_hip_adjusted=None if frax is None else frax.adjusted_hip,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = write_sr(result, image, Path(tmp) / "sr.dcm", verification=verification)
        return path.read_bytes()


def sign_result(
    result: Any,
    result_path: str | Path,
    *,
    physician: str,
    outputs: list[str | Path],
    impression: str | None = None,
    recommendation: str = "",
    addendum: str | None = None,
    inputs: dict[str, Any] | None = None,
    time_zone: str = "UTC",
    organisation: str | None = None,
    record_file: str | Path | None = None,
    image: str | Path | None = None,
    roi: Any = None,
    sr: str | Path | None = None,
    pdf_dicom: str | Path | None = None,
    include_phi: bool = True,
) -> SignedOutput:
    """Sign (or amend with an addendum) the interpretation of a result.

    Parameters
    ----------
    result : TBSResult
        The result read from ``result_path`` (the record binds its SHA-256).
    result_path : path
        The result JSON; the record defaults to ``<stem>.signoff.json`` beside it.
    physician : str
        Who signs.
    outputs : list of path
        Signed report files, ``.html`` or ``.pdf`` (never overwritten).
    impression, recommendation : str
        Required impression (first signature) and recommendation.
    addendum : str, optional
        Text of an addendum to a signed record (then ``impression`` and ``inputs`` must
        be None: the signed ones are kept).
    inputs : dict, optional
        Clinical inputs of a first signature (``age``, ``sex``, ``bmi``, ``frax_mof``,
        ``frax_hip``, ``threshold_set``, ``use_metadata``, ``bone_density``,
        ``calibration``, ``priors``, ``lsc``, ``lsc_source``, ``raw_category``).
    time_zone : str
        The site's IANA time zone (signature times are shown in it).
    organisation : str, optional
    record_file : path, optional
        The sign-off record (default beside the result).
    image, roi : optional
        The analysed DICOM (overlay; needed for ``sr`` and ``pdf_dicom``) and the ROIs
        used (anything :func:`tbscore.api.resolve_rois` takes).
    sr, pdf_dicom : path, optional
        Also write a VERIFIED DICOM SR, a DICOM Encapsulated PDF.
    include_phi : bool
        Show patient identifiers in the report.

    Raises
    ------
    SignOffError
        Bad output names, existing files, a record of another result, no impression.
    AlreadySignedError
        A first signature asked of a signed record.
    """
    from tbscore.api import as_image, resolve_rois
    from tbscore.clinical.interpret import interpret_result, reported_tbs
    from tbscore.clinical.signoff import (
        SignOff,
        add_addendum,
        result_digest,
        sign,
        signing_time,
        verify,
    )
    from tbscore.core.calibration import apply_calibration
    from tbscore.io.signoff import check_new, read_record, record_path, write_once, write_record
    from tbscore.render.report import build_report, render_html, render_pdf

    for out in outputs:
        if Path(out).suffix.lower() not in REPORT_SUFFIXES:
            raise SignOffError("signed report file must end in .html or .pdf", str(out))
    check_new(*outputs, sr, pdf_dicom)
    if (sr or pdf_dicom) and not image:
        raise SignOffError("--sr and --pdf-dicom need --image (the analysed DICOM image)")

    digest = result_digest(result.to_dict())
    rpath = Path(record_file) if record_file else record_path(result_path)
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

    when = signing_time(time_zone)
    if addendum is not None:
        if existing is None:
            raise SignOffError("the report is not signed yet: sign it before an addendum")
        record = add_addendum(
            existing,
            digest,
            physician=physician,
            text=addendum,
            when=when,
            time_zone=time_zone,
            organisation=organisation,
        )
    else:
        if not impression:
            raise SignOffError("--impression is required to sign a report")
        if existing is not None and existing.signed:
            first = existing.signatures[0]
            raise AlreadySignedError(
                f"already signed by {first.physician} at {first.signed_at}; a signed report "
                "is immutable: use --addendum TEXT",
                str(result_path),
            )
        record = sign(
            digest,
            physician=physician,
            impression=impression,
            recommendation=recommendation or "",
            when=when,
            time_zone=time_zone,
            organisation=organisation,
            inputs=dict(inputs or {}),
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
    dxa = rois = None
    if image:
        row_mm, col_mm = result.pixel_spacing_mm
        dxa = as_image(image, spacing=(float(row_mm), float(col_mm)))
        if roi is not None:
            rois = resolve_rois(roi, dxa)
    report = build_report(
        result,
        interp,
        image=dxa,
        rois=rois,
        service="interpret",
        include_phi=include_phi,
        signoff=record,
        time_zone=time_zone,
        bone_density=inputs.get("bone_density"),
        priors=inputs.get("priors") or [],
        lsc=inputs.get("lsc"),
        lsc_source=inputs.get("lsc_source"),
        raw_category=inputs.get("raw_category") or "muted",
    )
    # everything is rendered in memory first: a failure leaves no partial signed output
    files: dict[str | Path, bytes] = {}
    pdf_bytes: bytes | None = None
    for out in outputs:
        if Path(out).suffix.lower() == ".pdf":
            pdf_bytes = pdf_bytes or render_pdf(report)
            files[out] = pdf_bytes
        else:
            files[out] = render_html(report).encode("utf-8")
    last = record.signatures[-1]
    if sr:
        assert image is not None
        files[sr] = _signed_sr_bytes(result, image, interp, last)
    if pdf_dicom:
        from tbscore.io.pdf_dicom import encapsulated_pdf
        from tbscore.io.sniff import read_dicom

        pdf_bytes = pdf_bytes or render_pdf(report)
        src = read_dicom(image, stop_before_pixels=True)
        ds = encapsulated_pdf(
            pdf_bytes,
            src,
            title=f"Trabecular Bone Score report ({record.status})",
            when=last.time,
        )
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        files[pdf_dicom] = buf.getvalue()
    written = tuple(write_once(path, blob) for path, blob in files.items())
    write_record(rpath, record.to_dict())
    return SignedOutput(
        record=record, record_path=rpath, written=written, warnings=tuple(report.warnings)
    )
