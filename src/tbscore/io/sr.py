"""DICOM Structured Report (TID 1500 Measurement Report) of a TBS result.

:func:`write_sr` writes a :class:`tbscore.core.result.TBSResult` as an Enhanced SR
document (SOP class 1.2.840.10008.5.1.4.1.1.88.22) holding a TID 1500 "Imaging
Measurement Report" built with `highdicom <https://highdicom.readthedocs.io>`_.
:func:`read_sr` reads the values back.

Content tree
------------
One TID 1501 measurement group per vertebra (L1..L4) and one for the L1–L4 value:

* tracking identifier: ``"L1"`` .. ``"L4"``, or ``"L1-L4 [L1 L2 L3 L4]"`` (the
  vertebrae that contributed), with a tracking UID;
* finding site: SNOMED CT ``66794005`` L1 vertebra, ``14293000`` L2, ``36470004`` L3,
  ``11994002`` L4, ``122496007`` lumbar spine for the L1–L4 value (codes as listed
  in pydicom's SNOMED CT code dictionary);
* method ``(TBS-VARIOGRAM, 99TBSCORE)`` and algorithm identification (TID 4019:
  name ``tbscore``, version, parameters ``settings_digest=…``, ``lag_range_mm=…``,
  ``calibration=…``);
* source image: the analysed image (SOP Class / Instance UID of ``source``);
* measurement (TID 300) ``(TBS, 99TBSCORE, "Trabecular bone score (tbscore raw
  index)")``, UCUM unit ``1`` (dimensionless); the L1–L4 measurement carries
  derivation ``(373098007, SCT, "Mean")``; with a calibration, a second measurement
  ``(TBS-CAL, 99TBSCORE)`` holds the calibrated value; the raw measurement carries
  its 95 % interval (``value -/+ 1.96 se``; for ``"nugget"`` the asymmetric profile
  interval per vertebra) as TID 310 measurement properties: SNOMED
  CT ``371886008`` "+, range of upper measurement uncertainty" = ``high - value`` and
  ``371885007`` "-, range of lower measurement uncertainty" = ``value - low``
  (algorithm parameter ``uncertainty=...`` names the interval);
* qualitative evaluation ``(TBS-STATUS, 99TBSCORE)`` = ``OK`` / ``EXCLUDED`` /
  ``INVALID`` / ``NOT-REPORTED``.

There is no standard (DCM, LOINC or SNOMED CT) concept for the trabecular bone
score, so the measurement names use the private coding scheme ``99TBSCORE``,
declared in the Coding Scheme Identification Sequence (0008,0110) of the document.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from tbscore._version import __version__
from tbscore.core.constants import LABELS, PROFILE_INTERVAL_ESTIMATORS
from tbscore.errors import SRError
from tbscore.io.atomic import atomic_file

if TYPE_CHECKING:
    from tbscore.core.result import TBSResult

__all__ = [
    "SRError",
    "CODING_SCHEME",
    "PRIVATE_CODES",
    "write_sr",
    "read_sr",
    "SRVerification",
    "SIGNOFF_CODES",
    "read_sr_verification",
    "sr_uids",
]

#: Private coding scheme designator of the tbscore concepts.
CODING_SCHEME = "99TBSCORE"

#: Private code values: ``code value -> code meaning``.
PRIVATE_CODES: dict[str, str] = {
    "TBS": "Trabecular bone score (tbscore raw index)",
    "TBS-CAL": "Trabecular bone score, calibrated",
    "TBS-VARIOGRAM": "Log-log variogram slope near the origin",
    "TBS-STATUS": "TBS vertebra status",
    "OK": "Value computed",
    "EXCLUDED": "Excluded by the user",
    "INVALID": "No value could be computed",
    "NOT-REPORTED": "Not reported (too few valid vertebrae)",
}

_LABELS = LABELS
_STATUS_CODE = {"ok": "OK", "excluded": "EXCLUDED", "invalid": "INVALID"}
_L14_RE = re.compile(r"^L1-L4(?: \[([L1-4 ]*)\])?$")


def _hd():
    try:
        import highdicom as hd
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise SRError("DICOM SR needs highdicom: pip install 'tbscore[sr]'") from exc
    return hd


def _code(value: str):
    from pydicom.sr.coding import Code

    return Code(value, CODING_SCHEME, PRIVATE_CODES[value])


def _finding_site_codes() -> dict[str, Any]:
    from pydicom.sr.codedict import codes

    return {
        "L1": codes.SCT.L1Vertebra,
        "L2": codes.SCT.L2Vertebra,
        "L3": codes.SCT.L3Vertebra,
        "L4": codes.SCT.L4Vertebra,
        "L1-L4": codes.SCT.LumbarSpine,
    }


def _read_source(source: str | Path | Dataset) -> Dataset:
    if isinstance(source, Dataset):
        return source
    import pydicom

    try:
        return pydicom.dcmread(source, stop_before_pixels=True)
    except Exception as exc:
        raise SRError(
            f"cannot read the source image ({type(exc).__name__}: {exc})", str(source)
        ) from exc


#: Type 2 attributes of the Patient and General Study modules that highdicom copies
#: from the source into the SR: present but empty in the SR when the source lacks them.
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def _with_type2(ds: Dataset) -> Dataset:
    """``ds``, or a copy with missing :data:`_TYPE2_COPIED` attributes added empty."""
    missing = [k for k in _TYPE2_COPIED if k not in ds]
    if not missing:
        return ds
    import copy

    out = copy.deepcopy(ds)
    for keyword in missing:
        setattr(out, keyword, "")
    return out


#: Build the document around a one-reference stand-in of the content tree (see
#: :func:`_document`); False: hand highdicom the whole tree (the tests compare both).
_STUB_CONTENT = True


def _stub_content(root: Dataset) -> Dataset | None:
    """The root container of ``root`` with only its first image reference as content.

    Every measurement group of a tbscore report references the same single source
    image, so this stand-in yields the same evidence sequences as the whole tree.
    None if the tree references no image (then highdicom gets the whole tree).
    """
    found = None
    stack = [root]
    while stack and found is None:
        for it in stack.pop().get("ContentSequence", []):
            if it.get("ValueType") == "IMAGE":
                found = it
                break
            stack.append(it)
    if found is None:
        return None
    stub = Dataset()
    for elem in root:
        if elem.keyword != "ContentSequence":
            stub.add(elem)
    ref = Dataset()
    for elem in found:
        if elem.keyword not in ("ContentSequence", "RelationshipType"):
            ref.add(elem)  # shared, never modified
    ref.RelationshipType = "CONTAINS"  # a new element
    stub.ContentSequence = [ref]
    return stub


def _document(hd, source: Dataset, content: Dataset, **kwargs: Any) -> Dataset:
    """The Enhanced SR document of ``content`` (a TID 1500 root container).

    highdicom's ``EnhancedSR`` deep-copies and re-parses the whole content tree and
    searches it for referenced instances, which costs most of an SR write; built
    around :func:`_stub_content` (the same evidence: one referenced image) and then
    given the real tree, it gives the same document (``tests/test_sr.py`` compares the
    bytes of both ways) at a fraction of the cost.
    """
    evidence = [_with_type2(source)]
    stub = _stub_content(content) if _STUB_CONTENT else None
    if stub is None:
        return hd.sr.EnhancedSR(evidence=evidence, content=content, **kwargs)
    sr = hd.sr.EnhancedSR(evidence=evidence, content=stub, **kwargs)
    for elem in content:
        sr[elem.tag] = elem
    return sr


class _Unsupported(Exception):
    """An element the lean encoder leaves to pydicom (the whole file then is)."""


def _encode_items(items: Any, encodings: list[str]) -> bytes:
    """Explicit VR little-endian encoding of sequence items, as pydicom writes them.

    pydicom's ``write_dataset`` spends most of an SR write on per-element overhead
    (a buffer, charset lookup, ambiguous-VR pass and exception context per element);
    this loop calls the same per-VR value writers (``pydicom.filewriter.writers``)
    directly. Items get explicit lengths and sequences explicit lengths, as pydicom
    writes new data sets. Anything else (raw or ambiguous-VR elements, a nested
    character set, undefined-length items) raises :class:`_Unsupported`.
    """
    import io
    import struct

    from pydicom.filebase import DicomIO
    from pydicom.filewriter import writers
    from pydicom.valuerep import CUSTOMIZABLE_CHARSET_VR, EXPLICIT_VR_LENGTH_32

    out = bytearray()
    bio = io.BytesIO()  # one value buffer, reused
    buf = DicomIO(bio)
    buf.is_little_endian = True
    buf.is_implicit_VR = False
    pack_tag = struct.Struct("<HH").pack
    pack_us = struct.Struct("<H").pack
    pack_ul = struct.Struct("<L").pack

    def encode(ds: Dataset) -> None:
        if "SpecificCharacterSet" in ds or getattr(ds, "is_undefined_length_sequence_item", False):
            raise _Unsupported
        d = ds._dict
        for tag in sorted(d):
            if tag & 0xFFFF == 0 and tag >> 16 > 6:
                continue
            elem = d[tag]
            if elem.is_raw or len(elem.VR or "") != 2 or elem.is_buffered:
                raise _Unsupported
            vr = elem.VR
            if vr == "SQ":
                if elem.is_undefined_length:
                    raise _Unsupported
                start = len(out)
                out.extend(pack_tag(tag >> 16, tag & 0xFFFF) + b"SQ\0\0\0\0\0\0")
                for item in elem.value:
                    out.extend(b"\xfe\xff\x00\xe0\0\0\0\0")
                    item_start = len(out)
                    encode(item)
                    out[item_start - 4 : item_start] = pack_ul(len(out) - item_start)
                out[start + 8 : start + 12] = pack_ul(len(out) - start - 12)
                continue
            if elem.is_undefined_length or vr not in writers:
                raise _Unsupported
            bio.seek(0)
            bio.truncate()
            if not elem.is_empty:
                fn, param = writers[vr]
                if vr in CUSTOMIZABLE_CHARSET_VR:
                    fn(buf, elem, encodings=encodings)
                elif param is not None:
                    fn(buf, elem, param)
                else:
                    fn(buf, elem)
            value = bio.getvalue()
            if vr in EXPLICIT_VR_LENGTH_32:
                out.extend(pack_tag(tag >> 16, tag & 0xFFFF) + vr.encode() + b"\0\0")
                out.extend(pack_ul(len(value)))
            else:
                if len(value) > 0xFFFF:
                    raise _Unsupported
                out.extend(pack_tag(tag >> 16, tag & 0xFFFF) + vr.encode() + pack_us(len(value)))
            out.extend(value)

    for item in items:
        out.extend(b"\xfe\xff\x00\xe0\0\0\0\0")
        item_start = len(out)
        encode(item)
        out[item_start - 4 : item_start] = pack_ul(len(out) - item_start)
    return bytes(out)


def _save(sr: Dataset, fp: Any) -> None:
    """``sr.save_as(fp, enforce_file_format=True)``, the content tree pre-encoded.

    The Content Sequence (most of an SR's elements) is encoded by
    :func:`_encode_items` and handed to pydicom as a raw element, which it writes
    verbatim; the bytes are those of pydicom's own encoding (``tests/test_sr.py``).
    Falls back to plain pydicom for anything :func:`_encode_items` does not handle.
    """
    from pydicom.charset import convert_encodings
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag(0x0040, 0xA730)  # ContentSequence
    elem = sr.get_item(tag) if _FAST_ENCODE else None
    if elem is None or elem.is_raw or sr.get("TransferSyntaxUID") or not sr.file_meta:
        sr.save_as(fp, enforce_file_format=True)
        return
    ts = sr.file_meta.get("TransferSyntaxUID")
    if ts != "1.2.840.10008.1.2.1":  # explicit VR little endian only
        sr.save_as(fp, enforce_file_format=True)
        return
    charset = sr.get("SpecificCharacterSet", "ISO_IR 6")
    try:
        value = _encode_items(elem.value, convert_encodings(charset))
    except _Unsupported:
        sr.save_as(fp, enforce_file_format=True)
        return
    raw = RawDataElement(tag, "SQ", len(value), value, 0, False, True)
    sr[tag] = raw  # type: ignore[assignment]
    sr.set_original_encoding(False, True, sr._character_set)
    try:
        sr.save_as(fp, enforce_file_format=True)
    finally:
        sr[tag] = elem
        sr.set_original_encoding(None, None, None)


#: Encode the content tree with :func:`_encode_items` (False: pydicom writes it all;
#: the tests compare the bytes of both).
_FAST_ENCODE = True


def _calibration_key(result: TBSResult) -> str:
    calib = result.calibration or None
    if not calib:
        return "calibration=none"
    return f"calibration={calib.get('name', '')}|{calib.get('a')!r}|{calib.get('b')!r}"


def sr_uids(result: TBSResult, source_sop_instance_uid: str) -> dict[str, str]:
    """Deterministic Series and SOP Instance UIDs of the SR of ``result``.

    Derived (``pydicom.uid.generate_uid(entropy_srcs=...)``, a SHA-512 of the sources
    under the pydicom root) from the source image's SOP Instance UID, the settings
    digest, the calibration (name, a, b) and the tbscore version, so rescoring the same
    image with the same settings replaces the SR in the same series instead of adding
    a new series. The SOP Instance UID also covers the reported content (labels,
    statuses, raw and calibrated values in full precision), so a changed result (other
    ROIs, exclusions) gets a new instance.

    Returns
    -------
    dict
        ``{"series_instance_uid", "sop_instance_uid"}``.
    """
    from pydicom.uid import generate_uid

    version = str(result.tbscore_version or __version__)
    base = [
        "tbscore-sr/1",
        str(source_sop_instance_uid),
        f"settings={result.settings.digest()}",
        _calibration_key(result),
        f"version={version}",
    ]
    content = [
        f"{v.label}|{v.status}|{v.value!r}|{getattr(v, 'calibrated_value', None)!r}"
        for v in result.vertebrae
    ]
    content.append(
        f"L1-L4|{' '.join(result.l1_l4_labels)}|{result.l1_l4!r}|"
        f"{getattr(result, 'l1_l4_calibrated', None)!r}"
    )
    return {
        "series_instance_uid": str(generate_uid(entropy_srcs=[*base, "series"])),
        "sop_instance_uid": str(generate_uid(entropy_srcs=[*base, *content, "instance"])),
    }


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def write_sr(
    result: Any,
    source: str | Path | Dataset,
    path: str | Path,
    *,
    series_number: int = 900,
    instance_number: int = 1,
    manufacturer: str = "tbscore",
    institution_name: str | None = None,
    sop_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    verification: SRVerification | None = None,
    content_datetime: Any = None,
) -> Path:
    """Write a TBS result as a DICOM Enhanced SR (TID 1500 Measurement Report).

    Parameters
    ----------
    result : tbscore.core.result.TBSResult
        The result to encode (raw values, and calibrated values when a calibration
        was applied).
    source : str, Path or pydicom Dataset
        The analysed DICOM image. Patient and study attributes of the SR are taken
        from it, and every measurement group references it (SOP Class / Instance UID).
    path : str or Path
        Output file (parent folders are created).
    series_number, instance_number : int
        Series and Instance Number of the SR document.
    manufacturer : str
        Manufacturer of the SR document and of the device observer.
    institution_name : str, optional
        Institution creating the SR.
    sop_instance_uid, series_instance_uid : str, optional
    verification : SRVerification, optional
        A physician-signed report: the SR is FINAL and VERIFIED with the Verifying
        Observer Sequence, and carries the category and adjusted FRAX
        (:func:`_interpretation_group`).
        UIDs of the SR document; by default derived deterministically by
        :func:`sr_uids` (same inputs, same UIDs; a changed result, a new instance UID).
    content_datetime : datetime.datetime, optional
        Content, instance creation and contribution date/time of the document
        (default: now). With a
        fixed value, the same inputs give a byte-identical file.

    The file is written atomically (a temporary file in the same folder, fsynced and
    renamed): a failure never leaves a partial SR under ``path``.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    SRError
        highdicom is missing, the source is unreadable or not an image, or the
        result was computed on a different image (its SOP Instance UID differs).
    """
    hd = _hd()
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    ds = _read_source(source)
    name = (
        str(source)
        if not isinstance(source, Dataset)
        else str(getattr(ds, "filename", None) or "<dataset>")
    )
    src_uid = str(ds.get("SOPInstanceUID", "") or "")
    res_uid = (result.input or {}).get("sop_instance_uid")
    if res_uid and src_uid and str(res_uid) != src_uid:
        raise SRError(
            f"the result was computed on SOP Instance {res_uid}, not on this source "
            f"({src_uid}); refusing to attach it to another image",
            name,
        )
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not ds.get(keyword):
            raise SRError(f"source has no {keyword}; an SR must reference a DICOM image", name)

    uids = sr_uids(result, src_uid)
    if verification is not None:
        # a signed report is another document than the unsigned SR of the same result
        # (and each signature another one): its instance UID covers the sign-off too
        from pydicom.uid import generate_uid

        uids["sop_instance_uid"] = str(
            generate_uid(entropy_srcs=[uids["sop_instance_uid"], "verified", repr(verification)])
        )
    if sop_instance_uid:
        uids["sop_instance_uid"] = str(sop_instance_uid)
    if series_instance_uid:
        uids["series_instance_uid"] = str(series_instance_uid)
    sites = _finding_site_codes()
    unit = codes.UCUM.NoUnits
    digest = result.settings.digest()
    params = [
        f"settings_digest={digest}",
        f"lag_range_mm={result.lag_range_mm[0]:g}-{result.lag_range_mm[1]:g}",
        f"method={result.method}",
        (
            "uncertainty=95% interval (profile interval of the exponent per vertebra, "
            "L1-L4 value -/+ 1.96 se, raw index)"
            if result.settings.estimator in PROFILE_INTERVAL_ESTIMATORS
            else "uncertainty=95% interval (value -/+ 1.96 se, raw index)"
        ),
    ]
    calib = result.calibration or None
    if calib:
        params.append(f"calibration={calib.get('name', '')}")
        params.append(f"calibration_a={calib.get('a')}")
        params.append(f"calibration_b={calib.get('b')}")
    algorithm = hd.sr.AlgorithmIdentification(
        name="tbscore", version=str(result.tbscore_version or __version__), parameters=params
    )
    try:
        source_image = hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)
    except (ValueError, AttributeError) as exc:
        raise SRError(f"source is not a valid image reference ({exc})", name) from exc
    method = _code("TBS-VARIOGRAM")

    def group(
        tracking: str,
        site_key: str,
        value: float | None,
        cal: float | None,
        status: str,
        derivation=None,
        ci95=None,
    ):
        measurements = []
        if value is not None:
            properties = None
            lo, hi = (_finite(x) for x in (ci95 or (None, None)))
            if lo is not None and hi is not None and lo <= value <= hi:
                # TID 310: the 95 % interval as the ranges of upper / lower uncertainty
                properties = hd.sr.MeasurementProperties(
                    upper_measurement_uncertainty=float(hi) - float(value),
                    lower_measurement_uncertainty=float(value) - float(lo),
                )
            measurements.append(
                hd.sr.Measurement(
                    name=_code("TBS"),
                    value=float(value),
                    unit=unit,
                    derivation=derivation,
                    properties=properties,
                    algorithm_id=algorithm,
                )
            )
            if cal is not None:
                measurements.append(
                    hd.sr.Measurement(
                        name=_code("TBS-CAL"),
                        value=float(cal),
                        unit=unit,
                        derivation=derivation,
                        algorithm_id=algorithm,
                    )
                )
        tracking_uid = generate_uid(entropy_srcs=[uids["sop_instance_uid"], tracking])
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=tracking),
            method=method,
            algorithm_id=algorithm,
            finding_sites=[hd.sr.FindingSite(anatomic_location=sites[site_key])],
            measurements=measurements or None,
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(_code("TBS-STATUS"), _code(status))
            ],
            source_images=[source_image],
        )

    groups = []
    for v in result.vertebrae:
        if v.label not in _LABELS:
            continue
        value = _finite(v.value) if v.status == "ok" else None
        if v.status == "ok":
            status = "OK" if value is not None else "INVALID"
        else:
            status = _STATUS_CODE.get(v.status, "INVALID")
        groups.append(
            group(
                v.label,
                v.label,
                value,
                _finite(v.calibrated_value),
                status,
                ci95=getattr(v, "ci95", None),
            )
        )
    l14 = _finite(result.l1_l4)
    groups.append(
        group(
            f"L1-L4 [{' '.join(result.l1_l4_labels)}]",
            "L1-L4",
            l14,
            _finite(result.l1_l4_calibrated),
            "OK" if l14 is not None else "NOT-REPORTED",
            derivation=codes.SCT.Mean,
            ci95=getattr(result, "l1_l4_ci95", None),
        )
    )
    if verification is not None:
        try:
            groups.append(
                _interpretation_group(
                    hd,
                    verification,
                    method,
                    algorithm,
                    source_image,
                    generate_uid(entropy_srcs=[uids["sop_instance_uid"], "Interpretation"]),
                )
            )
        except (ValueError, TypeError) as exc:
            raise SRError(f"cannot encode the interpretation ({exc})", name) from exc

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["tbscore", str(result.tbscore_version)]),
            name="tbscore",
            manufacturer_name=manufacturer,
            model_name="tbscore",
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.DualEnergyXRayAbsorptiometry,
        imaging_measurements=groups,
    )
    try:
        sr = _document(
            hd,
            ds,
            report[0],
            series_instance_uid=uids["series_instance_uid"],
            series_number=series_number,
            sop_instance_uid=uids["sop_instance_uid"],
            instance_number=instance_number,
            manufacturer=manufacturer,
            institution_name=institution_name,
            is_complete=True,
            **_verification_kwargs(verification),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise SRError(f"cannot build the SR document ({exc})", name) from exc
    if verification is not None:
        _set_verification_time(sr, verification)
    scheme = Dataset()
    scheme.CodingSchemeDesignator = CODING_SCHEME
    scheme.CodingSchemeName = "tbscore private codes"
    scheme.CodingSchemeResponsibleOrganization = "tbscore project"
    sr.CodingSchemeIdentificationSequence = [scheme]
    sr.SeriesDescription = "tbscore TBS measurement report"
    sr.SoftwareVersions = str(result.tbscore_version or __version__)
    if content_datetime is not None:
        from pydicom.valuerep import DA, DT, TM

        for prefix in ("Content", "InstanceCreation"):
            setattr(sr, f"{prefix}Date", DA(content_datetime.date()))
            setattr(sr, f"{prefix}Time", TM(content_datetime.time()))
        for item in sr.get("ContributingEquipmentSequence", []):  # added by highdicom
            if "ContributionDateTime" in item:
                item.ContributionDateTime = DT(content_datetime)
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(out) as tmp:
            _save(sr, tmp)
    except OSError as exc:
        raise SRError(f"cannot write the SR ({exc.strerror or exc})", str(out)) from exc
    return out


def _text_items(seq: Any) -> dict[str, str]:
    """Algorithm name / version / parameters found (recursively) below ``seq``."""
    found: dict[str, Any] = {"parameters": []}
    names = {"111001": "name", "111003": "version", "111002": "parameters"}
    for item in seq or []:
        if item.get("ValueType") == "TEXT" and "ConceptNameCodeSequence" in item:
            code = item.ConceptNameCodeSequence[0]
            key = names.get(str(code.CodeValue)) if code.CodingSchemeDesignator == "DCM" else None
            if key == "parameters":
                found["parameters"].append(str(item.TextValue))
            elif key is not None:
                found[key] = str(item.TextValue)
        if "ContentSequence" in item:
            sub = _text_items(item.ContentSequence)
            found["parameters"] += [
                p for p in sub.pop("parameters") if p not in found["parameters"]
            ]
            for k, v in sub.items():
                found.setdefault(k, v)
    return found


#: SNOMED CT codes of the TID 310 uncertainty ranges (upper, lower)
_UNCERTAINTY = ("371886008", "371885007")


def _interval(measurement: Any, value: float) -> tuple[float, float] | None:
    """The 95 % interval of a TID 300 measurement from its TID 310 uncertainty ranges."""
    found: dict[str, float] = {}
    root = measurement[0]  # the NUM content item of the TID 300 template
    for item in root.get("ContentSequence", []):
        if item.get("ValueType") != "NUM" or item.get("RelationshipType") != "HAS PROPERTIES":
            continue
        code = item.ConceptNameCodeSequence[0]
        if code.CodingSchemeDesignator == "SCT" and str(code.CodeValue) in _UNCERTAINTY:
            mv = item.MeasuredValueSequence[0]
            x = mv.get("FloatingPointValue", None)
            found[str(code.CodeValue)] = float(x if x is not None else mv.NumericValue)
    if len(found) != 2:
        return None
    return value - found[_UNCERTAINTY[1]], value + found[_UNCERTAINTY[0]]


def read_sr(path: str | Path) -> dict[str, Any]:
    """Read the values of an SR written by :func:`write_sr`.

    Parameters
    ----------
    path : str or Path
        The SR file.

    Returns
    -------
    dict
        ``sop_instance_uid``, ``sop_class_uid``, ``series_instance_uid``,
        ``study_instance_uid``, ``referenced_images`` (list of
        ``{"sop_class_uid", "sop_instance_uid"}``), ``algorithm`` (``name``,
        ``version``, ``parameters`` as a ``{key: value}`` dict), ``vertebrae``
        (``{label: {"value", "calibrated_value", "ci95", "status", "finding_site"}}``),
        ``l1_l4``, ``l1_l4_calibrated``, ``l1_l4_labels``, ``l1_l4_ci95``; ``ci95``
        is the 95 % interval ``(low, high)`` of the raw value, or None.

    Raises
    ------
    SRError
        Unreadable file, or not a TID 1500 measurement report.
    """
    hd = _hd()
    try:
        sr = hd.sr.srread(path)
        report = hd.sr.MeasurementReport.from_sequence([sr], copy=True)
    except Exception as exc:
        raise SRError(
            f"not a readable TID 1500 measurement report ({type(exc).__name__}: {exc})", str(path)
        ) from exc
    tbs = _code("TBS")
    tbs_cal = _code("TBS-CAL")
    status_name = _code("TBS-STATUS")
    out: dict[str, Any] = {
        "sop_instance_uid": str(sr.SOPInstanceUID),
        "sop_class_uid": str(sr.SOPClassUID),
        "series_instance_uid": str(sr.SeriesInstanceUID),
        "study_instance_uid": str(sr.StudyInstanceUID),
        "referenced_images": [],
        "algorithm": {},
        "vertebrae": {},
        "l1_l4": None,
        "l1_l4_calibrated": None,
        "l1_l4_labels": [],
        "l1_l4_ci95": None,
    }
    refs: list[dict[str, str]] = []
    algo: dict[str, Any] = {}
    for g in report.get_image_measurement_groups():
        ident = g.tracking_identifier or ""
        value = cal = ci95 = None
        for m in g.get_measurements(name=tbs):
            value = float(m.value)
            ci95 = _interval(m, value)
        for m in g.get_measurements(name=tbs_cal):
            cal = float(m.value)
        status = None
        for q in g.get_qualitative_evaluations(name=status_name):
            status = str(q.value.value).lower()
        sites = [
            str(s.value.value) if hasattr(s.value, "value") else str(s.value)
            for s in g.finding_sites
        ]
        for img in g.source_images:
            ref = img.referenced_sop_class_uid, img.referenced_sop_instance_uid
            entry = {"sop_class_uid": str(ref[0]), "sop_instance_uid": str(ref[1])}
            if entry not in refs:
                refs.append(entry)
        if not algo:
            algo = _text_items(g[0].ContentSequence)
        m14 = _L14_RE.match(ident)
        if m14:
            out["l1_l4"] = value
            out["l1_l4_calibrated"] = cal
            out["l1_l4_labels"] = (m14.group(1) or "").split()
            out["l1_l4_ci95"] = ci95
        elif ident in _LABELS:
            out["vertebrae"][ident] = {
                "value": value,
                "calibrated_value": cal,
                "ci95": ci95,
                "status": status,
                "finding_site": sites[0] if sites else None,
            }
    params: dict[str, str] = {}
    for p in algo.get("parameters", []):
        key, _, val = p.partition("=")
        params[key] = val
    out["algorithm"] = {
        "name": algo.get("name"),
        "version": algo.get("version"),
        "parameters": params,
    }
    out["referenced_images"] = refs
    return out


# --------------------------------------------------------------------------------------
# signed reports (CPT 77092 sign-off): verification and interpretation content
# --------------------------------------------------------------------------------------

#: Private codes of the interpretation group of a signed report.
SIGNOFF_CODES: dict[str, str] = {
    "TBS-CATEGORY": "TBS fracture-risk category",
    "TBS-CAT-BASIS": "Value the TBS category was assigned from",
    "FRAX-MOF-TBS": "TBS-adjusted FRAX 10-year major osteoporotic fracture risk",
    "FRAX-HIP-TBS": "TBS-adjusted FRAX 10-year hip fracture risk",
}


@dataclass(frozen=True)
class SRVerification:
    """What a physician-signed report adds to the SR.

    Attributes
    ----------
    observer_name : str
        Verifying physician as a DICOM PN (``FAMILY^GIVEN``).
    organisation : str
        Verifying organisation.
    time : datetime
        Timezone-aware signing time (VerificationDateTime, with its UTC offset).
    category_code, category_label : str, optional
        Fracture-risk category (e.g. ``"partially_degraded"``, ``"Partially degraded"``).
    category_basis : str, optional
        ``"raw"`` or ``"calibrated"``.
    frax_mof_adjusted, frax_hip_adjusted : float, optional
        TBS-adjusted FRAX probabilities (%), when computed.
    final : bool
        PreliminaryFlag FINAL.
    """

    observer_name: str
    organisation: str
    time: datetime
    category_code: str | None = None
    category_label: str | None = None
    category_basis: str | None = None
    frax_mof_adjusted: float | None = None
    frax_hip_adjusted: float | None = None
    final: bool = True


def _signoff_code(value: str, meaning: str | None = None):
    from pydicom.sr.coding import Code

    return Code(value, CODING_SCHEME, meaning or SIGNOFF_CODES[value])


def _category_code_value(code: str) -> str:
    """Category code as a DICOM code value (SH, at most 16 characters)."""
    return code.upper().replace("PARTIALLY_", "PART-").replace("_", "-")[:16]


def _interpretation_group(hd, v: SRVerification, method, algorithm, source_image, uid: str):
    """TID 1501 group ``Interpretation``: category (qualitative) and adjusted FRAX (%).

    ``uid`` is its tracking UID (derived from the document's, so a signed SR too is
    the same bytes for the same inputs).
    """
    from pydicom.sr.codedict import codes

    evaluations = []
    if v.category_code:
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                _signoff_code("TBS-CATEGORY"),
                _signoff_code(
                    _category_code_value(v.category_code), v.category_label or v.category_code
                ),
            )
        )
    if v.category_basis:
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                _signoff_code("TBS-CAT-BASIS"),
                _signoff_code(v.category_basis.upper()[:16], f"{v.category_basis} value"),
            )
        )
    measurements = [
        hd.sr.Measurement(
            name=_signoff_code(key),
            value=float(val),
            unit=codes.UCUM.Percent,
            algorithm_id=algorithm,
        )
        for key, val in (
            ("FRAX-MOF-TBS", v.frax_mof_adjusted),
            ("FRAX-HIP-TBS", v.frax_hip_adjusted),
        )
        if _finite(val) is not None
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier="Interpretation"),
        method=method,
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.LumbarSpine)],
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
        source_images=[source_image],
    )


def _verification_kwargs(v: SRVerification | None) -> dict[str, Any]:
    if v is None:
        return {"is_final": False, "is_verified": False}
    return {
        "is_final": bool(v.final),
        "is_verified": True,
        "verifying_observer_name": v.observer_name,
        "verifying_organization": v.organisation,
    }


def _set_verification_time(sr: Dataset, v: SRVerification) -> None:
    """VerificationDateTime = the signing time with its UTC offset (highdicom uses now)."""
    if v.time.tzinfo is None:
        raise SRError("verification time must be timezone-aware")
    sr.VerifyingObserverSequence[0].VerificationDateTime = v.time.strftime("%Y%m%d%H%M%S%z")


def read_sr_verification(path: str | Path) -> dict[str, Any]:
    """Verification and interpretation content of an SR written with ``verification``.

    Returns
    -------
    dict
        ``completion``, ``verification``, ``preliminary`` flags; ``observer``
        (``name``, ``organisation``, ``datetime``) or None; ``category`` (code value)
        and ``frax_mof_adjusted`` / ``frax_hip_adjusted`` (%) or None.

    Raises
    ------
    SRError
        Unreadable file, or not a TID 1500 measurement report.
    """
    hd = _hd()
    try:
        sr = hd.sr.srread(path)
        report = hd.sr.MeasurementReport.from_sequence([sr], copy=True)
    except Exception as exc:
        raise SRError(
            f"not a readable TID 1500 measurement report ({type(exc).__name__}: {exc})", str(path)
        ) from exc
    obs = None
    if sr.get("VerifyingObserverSequence"):
        item = sr.VerifyingObserverSequence[0]
        obs = {
            "name": str(item.VerifyingObserverName),
            "organisation": str(item.VerifyingOrganization),
            "datetime": str(item.VerificationDateTime),
        }
    out: dict[str, Any] = {
        "completion": str(sr.get("CompletionFlag", "")),
        "verification": str(sr.get("VerificationFlag", "")),
        "preliminary": str(sr.get("PreliminaryFlag", "")),
        "observer": obs,
        "category": None,
        "frax_mof_adjusted": None,
        "frax_hip_adjusted": None,
    }
    for g in report.get_image_measurement_groups():
        if (g.tracking_identifier or "") != "Interpretation":
            continue
        for q in g.get_qualitative_evaluations(name=_signoff_code("TBS-CATEGORY")):
            out["category"] = str(q.value.value)
        for key, field_name in (
            ("FRAX-MOF-TBS", "frax_mof_adjusted"),
            ("FRAX-HIP-TBS", "frax_hip_adjusted"),
        ):
            for m in g.get_measurements(name=_signoff_code(key)):
                out[field_name] = float(m.value)
    return out
