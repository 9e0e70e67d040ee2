"""CPT 77090: de-identified export of DXA images for TBS analysis elsewhere.

:func:`export_package` turns DICOM files (or folders of them) into a *package*: a
folder of de-identified DICOM files named ``IMG00001.dcm``, ``IMG00002.dcm``, ...
(names never derive from DICOM attributes), optional sanitised ROI files
``IMG00001.roi.json``, a ``manifest.json`` and ``manifest.csv``. A *mapping file*
(original paths and UIDs -> new ones, and the secret key of the UID hash) is written
apart from the package, by default as ``<package>.mapping.json`` beside it; it is never
written inside the package.

De-identification (see ``docs/export_sr_calibration.md``) follows the DICOM PS3.15
Annex E Basic Application Level Confidentiality Profile with the *Retain Patient
Characteristics* option, in three layers:

1. the Annex E action table, applied by ``dicom-anonymizer`` (module
   ``dicomanonymizer``; its newest bundled table), with two overrides: the patient
   characteristics that TBS interpretation needs (PatientAge, PatientSex,
   PatientSize, PatientWeight) are kept (option "Retain Patient Characteristics"),
   and UIDs (action U) are remapped with a keyed hash (HMAC-SHA256, root ``2.25``),
   so that one source UID always gets the same new UID within a run and across runs
   that share the mapping file;
2. an allow-list: a new data set is built from :data:`ALLOWED_KEYWORDS` only (pixel
   data and the image attributes TBS needs, non-identifying equipment attributes,
   the retained patient characteristics and the remapped UIDs), the Type 2
   identifying attributes are present but empty, dates and times are removed, every
   sequence, private and unknown attribute is dropped, and the file meta
   information is rebuilt;
3. value checks on what the allow-list kept: coded attributes keep only values
   from their defined terms (:data:`BODY_PART_TERMS`, :data:`IMAGE_TYPE_TERMS`,
   PatientOrientation letters, ...), and a safety net removes any remaining text
   value that contains a PHI token of the *source* data set
   (:func:`collect_phi_tokens`: name parts, IDs, institution, staff, dates...); the
   manifest names the attributes removed this way (never their values).

Objects at risk of burned-in identifying text are not exported; they are listed in
the manifest with the reason: non-image objects (SR, presentation states, PDFs...),
colour images (report screenshots), images flagged ``BurnedInAnnotation = YES`` or
``RecognizableVisualFeatures = YES``, and anything the TBS loader cannot read as a
2-D grayscale projection image.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import datetime as _dt
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from tbscore._version import __version__
from tbscore.batch.discover import ROI_SUFFIXES, roi_stem
from tbscore.errors import InputError, MissingPixelSpacingError, TBSError

__all__ = [
    "ExportError",
    "ExportItem",
    "ExportReport",
    "UIDMapper",
    "ALLOWED_KEYWORDS",
    "RETAINED_PATIENT_CHARACTERISTICS",
    "EMPTIED_TYPE2_KEYWORDS",
    "BODY_PART_TERMS",
    "IMAGE_TYPE_TERMS",
    "PHI_SOURCE_KEYWORDS",
    "EXPORT_FORMAT",
    "MAPPING_FORMAT",
    "MANIFEST_COLUMNS",
    "export_package",
    "deidentify_dataset",
    "collect_phi_tokens",
    "exclusion_reason",
    "default_mapping_path",
    "register_cli",
]

EXPORT_FORMAT = "tbscore-export/1"
MAPPING_FORMAT = "tbscore-export-mapping/1"

#: Patient characteristics kept under the Annex E "Retain Patient Characteristics
#: Option" (TBS interpretation needs age, sex and BMI).
RETAINED_PATIENT_CHARACTERISTICS: tuple[str, ...] = (
    "PatientAge",
    "PatientSex",
    "PatientSize",
    "PatientWeight",
)

#: Identifying Type 2 attributes: present in the export (IOD conformance) but empty
#: (Annex E action Z). PatientID is replaced by a keyed pseudonym (action D).
EMPTIED_TYPE2_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientBirthDate",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)

#: UIDs kept, remapped by :class:`UIDMapper` (SOPClassUID is kept as is).
_REMAPPED_UIDS: tuple[str, ...] = (
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
)

#: Non-identifying attributes copied unchanged: the pixel data and the attributes
#: that describe it, the spacing attributes TBS reads, modality / SOP class and the
#: equipment manufacturer and model.
_IMAGE_KEYWORDS: tuple[str, ...] = (
    "SpecificCharacterSet",
    "ImageType",
    "SOPClassUID",
    "Modality",
    "ConversionType",
    "Manufacturer",
    "ManufacturerModelName",
    "BodyPartExamined",
    "Laterality",
    "ImageLaterality",
    "PatientOrientation",
    "SeriesNumber",
    "InstanceNumber",
    "BurnedInAnnotation",
    "RecognizableVisualFeatures",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelAspectRatio",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "NominalScannedPixelSpacing",
    "PixelSpacingCalibrationType",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "PixelPaddingValue",
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "PresentationLUTShape",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "PixelData",
)

#: Every attribute that may appear in an exported file (besides the de-identification
#: attributes that the export adds itself).
ALLOWED_KEYWORDS: tuple[str, ...] = (
    _IMAGE_KEYWORDS
    + RETAINED_PATIENT_CHARACTERISTICS
    + EMPTIED_TYPE2_KEYWORDS
    + ("PatientID",)
    + _REMAPPED_UIDS
)

#: BodyPartExamined values kept (others are removed): the defined terms of PS3.16
#: Annex L (Table L-1, CID 4031 Common Anatomic Regions) for the sites measured by
#: DXA (spine, hip and femur, forearm, hand, heel, whole body).
BODY_PART_TERMS: frozenset[str] = frozenset(
    {
        "LSPINE",
        "LSSPINE",
        "TLSPINE",
        "TSPINE",
        "SSPINE",
        "SPINE",
        "HIP",
        "PELVIS",
        "FEMUR",
        "ABDOMEN",
        "ABDOMENPELVIS",
        "WHOLEBODY",
        "FOREARM",
        "WRIST",
        "HAND",
        "CALCANEUS",
    }
)

#: ImageType values 3 and later that are kept (others are emptied): defined terms of
#: PS3.3 (C.7.6.1.1.2 and the image IODs) that describe how an image was made.
#: Values 1 and 2 must be ORIGINAL/DERIVED and PRIMARY/SECONDARY, or ImageType is
#: removed.
IMAGE_TYPE_TERMS: frozenset[str] = frozenset(
    {
        "AXIAL",
        "LOCALIZER",
        "PROJECTION IMAGE",
        "REFORMATTED",
        "RESAMPLED",
        "SUBTRACTION",
        "MIXED",
        "MPR",
        "MIP",
        "OTHER",
        "NONE",
    }
)

_IMAGE_TYPE_1 = frozenset({"ORIGINAL", "DERIVED"})
_IMAGE_TYPE_2 = frozenset({"PRIMARY", "SECONDARY"})
_ORIENTATION = re.compile(r"[APRLHF]{1,3}")
_CHARSET = re.compile(r"(ISO_IR \d{1,3}|ISO 2022 IR \d{1,3}|GB18030|GBK)?")

#: Single-valued coded attributes and their enumerated / defined terms: a value
#: outside the list removes the attribute. (Modality is checked by the TBS loader.)
_CODED_TERMS: dict[str, frozenset[str]] = {
    "ConversionType": frozenset({"DV", "DI", "DF", "WSD", "SD", "SI", "DRW", "SYN"}),
    "BodyPartExamined": BODY_PART_TERMS,
    "Laterality": frozenset({"R", "L"}),
    "ImageLaterality": frozenset({"R", "L", "U", "B"}),
    "BurnedInAnnotation": frozenset({"YES", "NO"}),
    "RecognizableVisualFeatures": frozenset({"YES", "NO"}),
    "PhotometricInterpretation": frozenset({"MONOCHROME1", "MONOCHROME2"}),
    "PixelSpacingCalibrationType": frozenset({"GEOMETRY", "FIDUCIAL"}),
    "VOILUTFunction": frozenset({"LINEAR", "LINEAR_EXACT", "SIGMOID"}),
    "PresentationLUTShape": frozenset({"IDENTITY", "INVERSE"}),
    "LossyImageCompression": frozenset({"00", "01"}),
    "LossyImageCompressionMethod": frozenset(
        {
            "ISO_10918_1",
            "ISO_14495_1",
            "ISO_15444_1",
            "ISO_15444_15",
            "ISO_13818_2",
            "ISO_14496_10",
            "ISO_23008_2",
            "ISO_18181_1",
        }
    ),
    "PatientSex": frozenset({"M", "F", "O"}),
}

#: Attributes whose values are checked against a vocabulary (so they cannot carry
#: free text) and are therefore not searched for PHI tokens.
_VALIDATED_KEYWORDS: frozenset[str] = frozenset(
    set(_CODED_TERMS) | {"ImageType", "PatientOrientation", "SpecificCharacterSet"}
)

#: Source attributes whose values are PHI tokens (:func:`collect_phi_tokens`), at any
#: depth of the source data set. Every person name (VR PN) and every date (DA, and
#: the date part of DT) of the source is a token too.
PHI_SOURCE_KEYWORDS: frozenset[str] = frozenset(
    {
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "MedicalRecordLocator",
        "AccessionNumber",
        "StudyID",
        "AdmissionID",
        "RequestedProcedureID",
        "ScheduledProcedureStepID",
        "PerformedProcedureStepID",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "PerformedStationName",
        "ScheduledStationName",
        "PerformedLocation",
        "DeviceSerialNumber",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "ResponsibleOrganization",
    }
)

#: Attributes blanked (kept, empty) rather than removed by the PHI safety net:
#: Type 2 in the image IODs.
_BLANK_WHEN_SCRUBBED: frozenset[str] = frozenset({"Manufacturer", "Modality"})

#: Value representations searched by the PHI safety net (text; numbers, ages and UIDs
#: are not text).
_TEXT_VRS = frozenset(
    {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT", "DA", "DT", "TM"}
)

#: Attributes the export writes itself (fixed texts, the keyed pseudonym), not searched.
_OWN_KEYWORDS: frozenset[str] = frozenset(
    {
        "PatientID",
        "PatientIdentityRemoved",
        "LongitudinalTemporalInformationModified",
        "DeidentificationMethod",
        "DeidentificationMethodCodeSequence",
    }
)

_MIN_TOKEN = 3

#: Columns of ``manifest.csv``.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "item",
    "status",
    "reason",
    "file",
    "sop_instance_uid",
    "file_sha256",
    "pixel_sha256",
    "modality",
    "sop_class_uid",
    "rows",
    "columns",
    "row_mm",
    "col_mm",
    "spacing_source",
    "photometric",
    "bits_stored",
    "roi_file",
    "roi_sha256",
    "duplicate_of",
    "invalid_removed",
    "phi_scrubbed",
)

#: Exclusion reasons kept in exported ROI files (anything else becomes "other").
_ROI_REASONS = frozenset(
    {
        "fracture",
        "implant",
        "implants",
        "artifact",
        "artefact",
        "noise",
        "obesity",
        "movement",
        "degenerative disease",
        "fusion",
        "insufficient scan area",
        "osteophyte",
        "osteophytes",
        "other",
        "excluded by user",
    }
)

_COLOUR = {
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
    "YBR_PARTIAL_420",
    "YBR_PARTIAL_422",
    "PALETTE COLOR",
}

_AGE_CAP = 90  # HIPAA Safe Harbor: ages over 89 are reported as 90


class ExportError(TBSError):
    """An export cannot be done (bad output or mapping location, missing dependency)."""

    code = "export_error"


# --------------------------------------------------------------------------- UIDs


class UIDMapper:
    """Consistent UID remapping by a keyed hash.

    ``new = "2.25." + int(HMAC-SHA256(key, old)[:16 bytes])``: the same source UID
    always gets the same new UID for a given key, without a table lookup; the key is
    kept in the mapping file (apart from the package), so a later export with the
    same mapping file reuses it. Without the key the new UIDs cannot be linked back.

    Parameters
    ----------
    key : bytes, optional
        Secret key (32 random bytes by default).
    """

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key if key is not None else secrets.token_bytes(32)
        if len(self.key) < 16:
            raise ExportError("the UID key must have at least 16 bytes")
        self.mapping: dict[str, str] = {}

    def _digest(self, domain: str, value: str) -> bytes:
        return hmac.new(self.key, f"{domain}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, old: str) -> str:
        """New UID for ``old`` (empty stays empty)."""
        old = str(old).strip()
        if not old:
            return ""
        new = "2.25." + str(int.from_bytes(self._digest("uid", old)[:16], "big"))
        self.mapping[old] = new
        return new

    def pseudonym(self, patient_id: str) -> str:
        """Keyed pseudonym ``TBS-XXXXXXXXXXXX`` for a patient ID (empty stays empty)."""
        patient_id = str(patient_id).strip()
        if not patient_id:
            return ""
        return "TBS-" + self._digest("patient", patient_id).hex()[:12].upper()


# --------------------------------------------------------------------------- checks


def exclusion_reason(ds: Dataset) -> str | None:
    """Why ``ds`` must not be exported (burned-in-text risk), or ``None``.

    Parameters
    ----------
    ds : pydicom Dataset

    Returns
    -------
    str or None
        ``"non-image object (...)"``, ``"burned-in annotation (BurnedInAnnotation=YES)"``,
        ``"recognizable visual features (RecognizableVisualFeatures=YES)"`` or
        ``"colour image (...)"``; ``None`` when the object may be exported (it still
        has to pass the TBS loader).
    """
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        modality = str(ds.get("Modality", "") or "unknown modality")
        sop = ds.get("SOPClassUID")
        sop_name = getattr(sop, "name", None) or (str(sop) if sop else "unknown SOP class")
        return f"non-image object ({modality}, {sop_name})"
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        return "burned-in annotation (BurnedInAnnotation=YES)"
    if str(ds.get("RecognizableVisualFeatures", "")).strip().upper() == "YES":
        return "recognizable visual features (RecognizableVisualFeatures=YES)"
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1 or photometric in _COLOUR:
        return (
            f"colour image ({photometric or '?'}, {samples} samples per pixel): "
            "likely a screenshot with burned-in text"
        )
    return None


def _parse_age(age: str) -> float | None:
    """Years from a DICOM AS value (``065Y``, ``006M``, ``010W``, ``003D``)."""
    factors = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
    unit = age[-1:].upper()
    if unit not in factors or not age[:-1].isdigit():
        return None
    return int(age[:-1]) * factors[unit]


#: Fixed manifest texts for loader errors (their messages may quote attribute values).
_LOADER_REASONS: dict[str, str] = {
    "not_an_image": "non-image object",
    "unsupported_image": "not a 2-D grayscale projection image (modality, colour, "
    "multi-frame or size)",
    "compressed_no_decoder": "compressed pixel data and no decoder installed",
    "dicom_read_error": "pixel data or header cannot be read",
}


def _public_reason(exc: InputError) -> str:
    return f"{exc.code}: {_LOADER_REASONS.get(exc.code, 'not loadable as a DXA image')}"


def _age_string(age_years: float | None, cap: int | None) -> str | None:
    if age_years is None or age_years < 0:
        return None
    years = int(age_years)
    if cap is not None:
        years = min(years, cap)
    return f"{years:03d}Y"


# --------------------------------------------------------------------------- value checks


def _values(element: Any) -> list[str]:
    """The values of a data element as strings (``[]`` when empty)."""
    value = element.value
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple | pydicom.multival.MultiValue):
        return [str(v) for v in value]
    return [str(value)]


def _walk(ds: Dataset) -> Iterable[Any]:
    """Every data element of ``ds``, sequence items included (depth first).

    Elements that pydicom cannot decode are passed over.
    """
    for tag in list(ds.keys()):
        try:
            element = ds[tag]
            items = list(element.value or []) if element.VR == "SQ" else []
        except Exception:
            continue
        yield element
        for item in items:
            if isinstance(item, Dataset):
                yield from _walk(item)


def _add_token(tokens: set[str], value: str) -> None:
    value = value.strip().casefold()
    if len(value) >= _MIN_TOKEN:
        tokens.add(value)


def collect_phi_tokens(ds: Dataset) -> frozenset[str]:
    """PHI tokens of a source data set, for the safety net of :func:`deidentify_dataset`.

    Collected at any depth (sequence items included):

    * every person name (VR PN: PatientName, OtherPatientNames, PatientBirthName,
      PatientMotherBirthName, ReferringPhysicianName, PerformingPhysicianName,
      OperatorsName, RequestingPhysician...): the whole name and each part (split at
      ``=``, ``^`` and blanks);
    * the values of :data:`PHI_SOURCE_KEYWORDS` (patient IDs and issuers, accession
      number, study ID, institution name, address and department, station names,
      device serial number, patient address and telephone...), whole;
    * every date (VR DA, and the ``YYYYMMDD`` part of a DT): birth date, study,
      series, acquisition and content dates, in ``YYYYMMDD`` form.

    Parameters
    ----------
    ds : pydicom Dataset
        The *source* data set (before de-identification).

    Returns
    -------
    frozenset of str
        Case-folded tokens of at least 3 characters.
    """
    tokens: set[str] = set()
    for element in _walk(ds):
        if element.VR == "SQ" or element.tag.is_private:
            continue
        try:
            values = _values(element)
        except Exception:  # an undecodable value: nothing to collect
            continue
        if element.VR == "PN":
            for value in values:
                _add_token(tokens, value)
                for group in value.split("="):
                    for part in group.split("^"):
                        _add_token(tokens, part)
                        for word in part.split():
                            _add_token(tokens, word)
        elif element.VR in ("DA", "DT"):
            for value in values:
                digits = value.strip()[:8]
                if len(digits) == 8 and digits.isdigit():
                    tokens.add(digits)
        elif element.keyword in PHI_SOURCE_KEYWORDS:
            for value in values:
                _add_token(tokens, value)
    return frozenset(tokens)


def _validate_coded(out: Dataset) -> list[str]:
    """Drop coded values outside their vocabularies; the keywords changed or removed."""
    changed: list[str] = []
    for keyword, terms in _CODED_TERMS.items():
        if keyword not in out:
            continue
        values = _values(out[keyword])
        if not values:
            continue
        clean = [v.strip().upper() for v in values]
        if len(clean) != 1 or clean[0] not in terms:
            del out[keyword]
            changed.append(keyword)
        elif clean[0] != values[0]:
            setattr(out, keyword, clean[0])
    if "PatientOrientation" in out:
        values = [v.strip().upper() for v in _values(out["PatientOrientation"])]
        if not all(not v or _ORIENTATION.fullmatch(v) for v in values):
            del out.PatientOrientation
            changed.append("PatientOrientation")
    if "SpecificCharacterSet" in out:
        values = _values(out["SpecificCharacterSet"])
        if not all(_CHARSET.fullmatch(v.strip()) for v in values):
            del out.SpecificCharacterSet
            changed.append("SpecificCharacterSet")
    if "ImageType" in out:
        original = [v.strip() for v in _values(out["ImageType"])]
        values = [v.upper() for v in original]
        if values and (
            values[0] not in _IMAGE_TYPE_1 or (len(values) > 1 and values[1] not in _IMAGE_TYPE_2)
        ):
            del out.ImageType
            changed.append("ImageType")
        elif values:
            # values 3+ outside the vocabulary are emptied (later positions keep their
            # meaning); trailing empty values are dropped
            kept = values[:2] + [v if v in IMAGE_TYPE_TERMS else "" for v in values[2:]]
            while len(kept) > 2 and not kept[-1]:
                kept.pop()
            if any(v and v not in IMAGE_TYPE_TERMS for v in values[2:]):
                changed.append("ImageType")
            if kept != original:
                out.ImageType = kept if len(kept) > 1 else kept[0]
    return changed


def _contains_token(text: str, tokens: frozenset[str]) -> bool:
    low = text.casefold()
    return any(t in low for t in tokens)


def _scrub_phi(ds: Dataset, tokens: frozenset[str], *, top: bool = True) -> list[str]:
    """Blank or remove text elements that contain a PHI token; the keywords hit."""
    hit: list[str] = []
    for element in list(ds):
        keyword = element.keyword or str(element.tag)
        if top and (keyword in _OWN_KEYWORDS or keyword in _VALIDATED_KEYWORDS):
            continue
        if element.VR == "SQ":
            for item in element.value or []:
                hit += _scrub_phi(item, tokens, top=False)
            continue
        if element.VR not in _TEXT_VRS:
            continue
        try:
            found = any(_contains_token(v, tokens) for v in _values(element))
        except Exception:  # undecodable text cannot be checked: not kept
            found = True
        if not found:
            continue
        hit.append(keyword)
        if top and keyword in _BLANK_WHEN_SCRUBBED:
            element.value = ""
        else:
            del ds[element.tag]
    return hit


# --------------------------------------------------------------------------- de-id


def _anonymizer_rules(uids: UIDMapper) -> tuple[Callable[[], dict], str]:
    """Annex E action table of dicom-anonymizer with the tbscore overrides."""
    try:
        from dicomanonymizer import simpledicomanonymizer as sda
    except ImportError as exc:
        raise ExportError(
            "export needs dicom-anonymizer (Annex E action table): pip install 'tbscore[export]'"
        ) from exc
    version = "default"
    base: dict | None = None
    for candidate in ("dicomfields_2026c", "dicomfields_2024b", "dicomfields_2023"):
        try:
            base = sda.initialize_actions(candidate)
        except (ValueError, ModuleNotFoundError, AttributeError):
            continue
        version = candidate
        break
    if base is None:  # pragma: no cover - older dicom-anonymizer
        base = sda.initialize_actions()

    def remap_uid(dataset: Dataset, tag: Any) -> None:
        element = dataset.get(tag)
        if element is None or element.VR != "UI":
            return
        if element.VM > 1:
            element.value = [uids.uid(v) for v in element.value]
        elif element.value:
            element.value = uids.uid(element.value)

    def keep(dataset: Dataset, tag: Any) -> None:
        return None

    rules = {
        tag: (remap_uid if action is sda.replace_UID else action) for tag, action in base.items()
    }
    for keyword in RETAINED_PATIENT_CHARACTERISTICS:
        tag = pydicom.datadict.tag_for_keyword(keyword)
        rules[(tag >> 16, tag & 0xFFFF)] = keep

    def gen() -> dict:
        return dict(rules)

    return gen, version


def _anonymizer_version() -> str:
    try:
        from importlib.metadata import version

        return version("dicom-anonymizer")
    except Exception:  # pragma: no cover
        return "unknown"


def deidentify_dataset(
    ds: Dataset,
    uids: UIDMapper,
    *,
    age_years: float | None = None,
    age_cap: int | None = _AGE_CAP,
) -> Dataset:
    """Return a de-identified copy of ``ds`` (``ds`` itself is not changed).

    Parameters
    ----------
    ds : pydicom Dataset
        The source image.
    uids : UIDMapper
        UID remapping and patient pseudonyms.
    age_years : float, optional
        Age at the study, used for PatientAge when ``ds`` has none (e.g. computed
        from the birth date and study date, which are removed).
    age_cap : int or None
        Ages above it are written as it (HIPAA Safe Harbor aggregates ages over 89;
        default 90). ``None`` keeps the age.

    Returns
    -------
    pydicom Dataset
        A new data set holding only :data:`ALLOWED_KEYWORDS` (with the Annex E
        actions applied) and the de-identification attributes, with a new file meta
        header. Coded values outside their vocabularies are removed, and text values
        containing a PHI token of ``ds`` (:func:`collect_phi_tokens`) are blanked
        (Manufacturer, Modality) or removed.

    Raises
    ------
    ExportError
        dicom-anonymizer is not installed, or the action table fails on ``ds``.
    """
    return _deidentify(ds, uids, age_years=age_years, age_cap=age_cap)[0]


def _deidentify(
    ds: Dataset,
    uids: UIDMapper,
    *,
    age_years: float | None,
    age_cap: int | None,
) -> tuple[Dataset, list[str], list[str]]:
    """:func:`deidentify_dataset`, and the keywords removed by the value checks and
    by the PHI safety net."""
    gen, _table = _anonymizer_rules(uids)
    from dicomanonymizer import simpledicomanonymizer as sda

    work = copy.deepcopy(ds)
    # Layer 1: the Annex E action table (dicom-anonymizer prints lookup misses).
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            sda.anonymize_dataset(work, None, delete_private_tags=True, base_rules_gen=gen)
    except Exception as exc:  # an element the table cannot handle: do not export
        raise ExportError(
            f"de-identification failed ({type(exc).__name__}: {exc})",
            str(getattr(ds, "filename", None) or "<dataset>"),
        ) from exc
    finally:
        sda.dictionary.clear()  # its own random UID cache: not used in the output

    # Layer 2: allow-list.
    out = Dataset()
    for keyword in _IMAGE_KEYWORDS + RETAINED_PATIENT_CHARACTERISTICS + _REMAPPED_UIDS:
        if keyword in work:
            element = work[keyword]
            if element.VR == "SQ" or element.tag.is_private:
                continue
            out.add(copy.deepcopy(element))
    for keyword in _REMAPPED_UIDS:  # the table remapped them; make sure of it
        original = ds.get(keyword)
        if original:
            setattr(out, keyword, uids.uid(str(original)))
    if not out.get("SOPClassUID"):
        out.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    if not out.get("SOPInstanceUID"):  # derived from the pixels: stable across runs
        pixels = ds.get("PixelData") or b""
        out.SOPInstanceUID = uids.uid("no-sop-instance-uid:" + hashlib.sha256(pixels).hexdigest())
    for keyword in EMPTIED_TYPE2_KEYWORDS:
        setattr(out, keyword, "")
    out.PatientID = uids.pseudonym(str(ds.get("PatientID", "") or ""))
    age = str(ds.get("PatientAge", "") or "").strip()
    if age:
        parsed = _parse_age(age)
        out.PatientAge = _age_string(parsed, age_cap) if parsed is not None else ""
        if parsed is not None and parsed < 1:  # keep months / weeks / days as given
            out.PatientAge = age
    elif age_years is not None:
        out.PatientAge = _age_string(age_years, age_cap) or ""
    if "PatientAge" in out and not out.PatientAge:
        del out.PatientAge

    # Layer 3: coded values from their vocabularies; then the safety net over every
    # remaining text element (sequences included; the attributes added below are
    # fixed texts and the keyed pseudonym).
    invalid = _validate_coded(out)
    scrubbed = _scrub_phi(out, collect_phi_tokens(ds))

    out.PatientIdentityRemoved = "YES"
    out.LongitudinalTemporalInformationModified = "REMOVED"
    out.DeidentificationMethod = [
        f"tbscore {__version__} export (CPT 77090)",
        "DICOM PS3.15 Annex E Basic Profile",
        "Retain Patient Characteristics Option",
        "allow-list; dates removed; UIDs HMAC-SHA256 2.25",
        "coded values checked; source PHI tokens scrubbed",
    ]
    codes = []
    for value, meaning in (
        ("113100", "Basic Application Confidentiality Profile"),
        ("113108", "Retain Patient Characteristics Option"),
    ):
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        codes.append(item)
    out.DeidentificationMethodCodeSequence = codes

    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    meta.TransferSyntaxUID = ts or ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"TBSCORE_{__version__}"[:16]
    out.file_meta = meta
    return out, invalid, scrubbed


# --------------------------------------------------------------------------- package


@dataclass(frozen=True)
class ExportItem:
    """One input object of an export and what became of it.

    Attributes
    ----------
    item : str
        Item id within the package (``"i00001"``...), also used in the mapping file.
    status : str
        ``"included"`` or ``"excluded"``.
    reason : str
        Why it was excluded (empty when included).
    file : str
        Package file name (``IMG00001.dcm``), empty when excluded.
    sop_instance_uid, file_sha256, pixel_sha256 : str
        New SOP Instance UID, SHA-256 of the exported file, SHA-256 of the decoded
        pixel data (equal to the original's, see :attr:`tbscore.io.DXAImage.pixel_sha256`).
    roi_file, roi_sha256 : str
        Exported ROI file (``IMG00001.roi.json`` or ``.roi.npy``) and its SHA-256;
        empty when there is none.
    duplicate_of : str
        Earlier package file with the same pixel data.
    invalid_removed : str
        Keywords (``;``-separated) of coded attributes removed or changed because a
        value was outside its vocabulary (BodyPartExamined, PatientOrientation,
        ImageType...).
    phi_scrubbed : str
        Keywords (``;``-separated) of text attributes blanked or removed because they
        contained a PHI token of the source (never the values).
    """

    item: str
    status: str
    reason: str = ""
    file: str = ""
    sop_instance_uid: str = ""
    file_sha256: str = ""
    pixel_sha256: str = ""
    modality: str = ""
    sop_class_uid: str = ""
    rows: int | None = None
    columns: int | None = None
    row_mm: float | None = None
    col_mm: float | None = None
    spacing_source: str = ""
    photometric: str = ""
    bits_stored: int | None = None
    roi_file: str = ""
    roi_sha256: str = ""
    duplicate_of: str = ""
    invalid_removed: str = ""
    phi_scrubbed: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExportReport:
    """Result of :func:`export_package`.

    Attributes
    ----------
    package : Path
    mapping_path : Path
    items : tuple of ExportItem
    manifest : dict
        The content of ``manifest.json``.
    skipped_non_dicom : int
        Files that are not DICOM (not exported, not listed individually).
    """

    package: Path
    mapping_path: Path
    items: tuple[ExportItem, ...]
    manifest: dict = field(default_factory=dict)
    skipped_non_dicom: int = 0

    @property
    def included(self) -> tuple[ExportItem, ...]:
        return tuple(i for i in self.items if i.status == "included")

    @property
    def excluded(self) -> tuple[ExportItem, ...]:
        return tuple(i for i in self.items if i.status == "excluded")


def default_mapping_path(package: str | Path) -> Path:
    """``<package>.mapping.json`` beside the package folder.

    A package given as ``.``, ``..`` or ``dir/..`` is resolved first (``-o .`` in
    ``/data/pkg`` -> ``/data/pkg.mapping.json``).

    Raises
    ------
    ExportError
        The package is the file-system root: no folder beside it to hold the mapping.
    """
    package = Path(package)
    if package.name in ("", ".."):
        package = package.resolve()
    if not package.name:
        raise ExportError(
            "cannot name the mapping file after this output folder; give a mapping path "
            "(--mapping) outside the package",
            str(package),
        )
    return package.with_name(package.name + ".mapping.json")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _collect(inputs: Iterable[str | Path], exclude_dirs: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    seen: set[Path] = set()
    for entry in inputs:
        p = Path(entry)
        if p.is_dir():
            candidates = sorted(q for q in p.rglob("*") if q.is_file())
        elif p.is_file():
            candidates = [p]
        else:
            raise ExportError("input does not exist", str(p))
        for q in candidates:
            r = q.resolve()
            if r in seen or any(_inside(q, d) for d in exclude_dirs):
                continue
            seen.add(r)
            files.append(q)
    return files


def _read_dicom(path: Path) -> Dataset | None:
    """The data set, or None when the file is not DICOM."""
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass
    except Exception:
        return None
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception:
        return None
    if not any(k in ds for k in ("SOPClassUID", "PixelData", "Modality", "StudyInstanceUID")):
        return None
    return ds


def _roi_sibling(path: Path) -> Path | None:
    """The ROI side-car of a DICOM file, found as ``tbscore batch`` finds it.

    ``STEM + suffix`` beside the file, for each suffix of
    :data:`tbscore.batch.discover.ROI_SUFFIXES` in turn, with ``STEM`` from
    :func:`tbscore.batch.discover.roi_stem` (only DICOM extensions are removed:
    ``1.2.840.1`` -> ``1.2.840.1.roi.json``).
    """
    stem = roi_stem(path)
    for suffix in ROI_SUFFIXES:
        candidate = path.with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def _is_roi_file(path: Path) -> bool:
    """A ROI side-car by its name (never an input, as in ``tbscore batch``)."""
    name = path.name.lower()
    return any(name.endswith(s) for s in ROI_SUFFIXES)


def _sanitised_label_image(path: Path, shape: tuple[int, int]) -> Any:
    """A label image side-car (``.roi.npy`` / ``.roi.png``) as a bare uint8 array.

    Only the label values are kept (0..4, validated by
    :func:`tbscore.roi.read_rois`): no PNG text chunks, no NumPy object data.
    """
    import numpy as np

    from tbscore.roi import read_rois

    rois = read_rois(path, shape, (1.0, 1.0))  # validates values 0..4 and the shape
    labels = np.zeros(rois.image_shape, np.uint8)
    for roi in rois:
        labels[np.asarray(roi.mask, bool)] = int(roi.label[1:])
    return labels


def _sanitised_roi(
    path: Path, shape: tuple[int, int], spacing: tuple[float, float] | None, new_name: str
) -> dict[str, Any]:
    """A ``tbscore-roi/1`` document with only geometry, labels and coded reasons."""
    from tbscore.roi import rois_from_dict

    data = json.loads(path.read_text(encoding="utf-8"))
    rois_from_dict(data, shape, spacing or (1.0, 1.0), source=str(path))  # validate
    out: dict[str, Any] = {
        "format": "tbscore-roi/1",
        "units": data.get("units", "px"),
        "image_shape": [int(shape[0]), int(shape[1])],
        "source": f"tbscore export ({new_name})",
        "vertebrae": [],
    }
    if data.get("pixel_spacing_mm") is not None:
        out["pixel_spacing_mm"] = [float(v) for v in data["pixel_spacing_mm"]]
    for item in data["vertebrae"]:
        v: dict[str, Any] = {"label": str(item["label"])}
        if "polygon" in item:
            v["polygon"] = [[float(a), float(b)] for a, b in item["polygon"]]
        else:
            v["box"] = [float(x) if not float(x).is_integer() else int(x) for x in item["box"]]
        if item.get("excluded"):
            reason = str(item.get("exclusion_reason") or "").strip().lower()
            v["excluded"] = True
            v["exclusion_reason"] = reason if reason in _ROI_REASONS else "other"
        out["vertebrae"].append(v)
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_mapping(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read the mapping file ({exc})", str(path)) from exc
    if not isinstance(data, dict) or data.get("format") != MAPPING_FORMAT:
        raise ExportError(f"not a {MAPPING_FORMAT} mapping file", str(path))
    return data


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write the mapping file atomically, mode 0600.

    The JSON goes to a temporary file (mode 0600) in the same folder, which then
    replaces ``path`` (``os.replace``): a failure leaves the old mapping as it was,
    and the final file is 0600 whatever the mode of the one it replaces.

    Raises
    ------
    ExportError
        The file cannot be written (the old mapping, if any, is unchanged).
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump(data, fh, indent=1)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise ExportError(
            f"cannot write the mapping file ({type(exc).__name__}: {exc.strerror or exc}); "
            "an existing mapping file is unchanged",
            str(path),
        ) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def export_package(
    inputs: Sequence[str | Path] | str | Path,
    outdir: str | Path,
    *,
    mapping_path: str | Path | None = None,
    include_rois: bool = True,
    age_cap: int | None = _AGE_CAP,
) -> ExportReport:
    """De-identify DICOM images into a package for TBS analysis elsewhere (CPT 77090).

    Parameters
    ----------
    inputs : path or sequence of paths
        DICOM files and folders (searched recursively). Files that are not DICOM are
        skipped and counted.
    outdir : str or Path
        The package folder; it must not exist or be empty.
    mapping_path : str or Path, optional
        Mapping file (original -> new, and the UID key). Default
        ``<outdir>.mapping.json`` beside the package. If the file exists, its key is
        reused (same source UID -> same new UID as in the earlier export) and the new
        run is appended. It must not lie inside the package.
    include_rois : bool
        Export a sanitised copy of the ROI side-car of each image, found as
        ``tbscore batch`` finds it (``STEM.roi.json``, ``.roi.npy`` or ``.roi.png``
        beside the file, ``STEM`` = file name without a DICOM extension), as
        ``IMG#####.roi.json`` (geometry only) or ``IMG#####.roi.npy`` (label values
        only).
    age_cap : int or None
        Ages above it are written as it (default 90); ``None`` keeps them.

    Returns
    -------
    ExportReport

    Raises
    ------
    ExportError
        Non-empty output folder, mapping file inside the package or not writable (an
        existing one is left unchanged), missing input, dicom-anonymizer not
        installed, or an internal check failing (pixel data changed).
    """
    from tbscore.billing import schedule_info, service_code
    from tbscore.io.load import load_dicom

    package = Path(outdir)
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    if package.exists() and (not package.is_dir() or any(package.iterdir())):
        raise ExportError("output folder exists and is not empty", str(package))
    mpath = Path(mapping_path) if mapping_path is not None else default_mapping_path(package)
    if _inside(mpath, package):
        raise ExportError(
            "the mapping file links the package to the patients and must be kept apart "
            "from it; choose a path outside the package folder",
            str(mpath),
        )
    previous = _load_mapping(mpath)
    key = bytes.fromhex(previous["key"]) if previous else None
    uids = UIDMapper(key)
    _gen, table_version = _anonymizer_rules(uids)  # fail early if not installed
    files = _collect(inputs, [package])
    files = [f for f in files if f.resolve() != mpath.resolve()]
    package.mkdir(parents=True, exist_ok=True)

    items: list[ExportItem] = []
    private_items: list[dict[str, Any]] = []
    patients: dict[str, str] = {}
    skipped = 0
    by_pixels: dict[str, str] = {}
    n_img = 0
    for path in files:
        if _is_roi_file(path):  # side-cars are not inputs (as in tbscore batch)
            continue
        ds = _read_dicom(path)
        if ds is None:
            skipped += 1
            continue
        item_id = f"i{len(items) + 1:05d}"
        orig_sop = str(ds.get("SOPInstanceUID", "") or "")
        private = {
            "item": item_id,
            "source_path": str(path.resolve()),
            "original_sop_instance_uid": orig_sop,
            "original_file_sha256": _sha256_file(path),
        }
        reason = exclusion_reason(ds)
        image = None
        spacing_source = ""
        if reason is None:
            try:
                try:
                    image = load_dicom(ds)
                    spacing_source = image.spacing_source
                except MissingPixelSpacingError:
                    image = load_dicom(ds, spacing=(1.0, 1.0))
                    spacing_source = "none"
            except InputError as exc:
                # the manifest gets a fixed text; the detail goes to the mapping file
                reason = _public_reason(exc)
                private["detail"] = f"{exc.code}: {exc.reason}"
        if reason is not None or image is None:
            items.append(
                ExportItem(
                    item=item_id,
                    status="excluded",
                    reason=reason or "",
                    modality=str(ds.get("Modality", "") or ""),
                )
            )
            private_items.append({**private, "status": "excluded", "reason": reason})
            continue
        n_img += 1
        name = f"IMG{n_img:05d}.dcm"
        out_path = package / name
        try:
            new, invalid, scrubbed = _deidentify(
                ds, uids, age_years=image.metadata.age_years, age_cap=age_cap
            )
            new.save_as(out_path, enforce_file_format=True)
            check = load_dicom(out_path, spacing=(1.0, 1.0))
        except (
            ExportError,
            InputError,
            ValueError,
            TypeError,
            AttributeError,
            KeyError,
            OSError,
        ) as exc:
            out_path.unlink(missing_ok=True)
            n_img -= 1
            reason = f"cannot be exported ({type(exc).__name__})"
            private["detail"] = f"{type(exc).__name__}: {exc}"
            items.append(
                ExportItem(
                    item=item_id,
                    status="excluded",
                    reason=reason,
                    modality=str(ds.get("Modality", "") or ""),
                )
            )
            private_items.append({**private, "status": "excluded", "reason": reason})
            continue
        if check.pixel_sha256 != image.pixel_sha256 or (
            spacing_source != "none" and check.spacing_mm != image.spacing_mm
        ):
            out_path.unlink()
            raise ExportError(
                "pixel data or spacing changed during export (internal error)", str(path)
            )
        roi_name = ""
        roi_sha = ""
        roi_src = _roi_sibling(path) if include_rois else None
        if roi_src is not None:
            try:
                if roi_src.name.lower().endswith(".roi.json"):
                    doc = _sanitised_roi(
                        roi_src,
                        image.shape,
                        None if spacing_source == "none" else image.spacing_mm,
                        name,
                    )
                    roi_name = name[:-4] + ".roi.json"
                    (package / roi_name).write_text(
                        json.dumps(doc, indent=1) + "\n", encoding="utf-8"
                    )
                else:  # label image: re-written as a bare array
                    import numpy as np

                    labels = _sanitised_label_image(roi_src, image.shape)
                    roi_name = name[:-4] + ".roi.npy"
                    np.save(package / roi_name, labels, allow_pickle=False)
            except (TBSError, ValueError, KeyError, TypeError, OSError) as exc:
                if roi_name:
                    (package / roi_name).unlink(missing_ok=True)
                roi_name = ""
                private["roi_error"] = f"{type(exc).__name__}: {exc}"
            else:
                roi_sha = _sha256_file(package / roi_name)
                private["source_roi_path"] = str(roi_src.resolve())
        pid = str(ds.get("PatientID", "") or "")
        if pid:
            patients[pid] = str(new.PatientID)
        dup = by_pixels.setdefault(image.pixel_sha256, name)
        spacing = None if spacing_source == "none" else image.spacing_mm
        items.append(
            ExportItem(
                item=item_id,
                status="included",
                file=name,
                sop_instance_uid=str(new.SOPInstanceUID),
                file_sha256=_sha256_file(out_path),
                pixel_sha256=image.pixel_sha256,
                modality=str(new.get("Modality", "") or ""),
                sop_class_uid=str(new.SOPClassUID),
                rows=image.shape[0],
                columns=image.shape[1],
                row_mm=None if spacing is None else spacing[0],
                col_mm=None if spacing is None else spacing[1],
                spacing_source=spacing_source,
                photometric=str(new.get("PhotometricInterpretation", "") or ""),
                bits_stored=int(new.BitsStored) if "BitsStored" in new else None,
                roi_file=roi_name,
                roi_sha256=roi_sha,
                duplicate_of="" if dup == name else dup,
                invalid_removed=";".join(dict.fromkeys(invalid)),
                phi_scrubbed=";".join(dict.fromkeys(scrubbed)),
            )
        )
        private_items.append(
            {
                **private,
                "status": "included",
                "file": name,
                "new_sop_instance_uid": str(new.SOPInstanceUID),
            }
        )

    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    cpt = service_code("export")
    manifest: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "created": now,
        "tbscore_version": __version__,
        "service": {
            "name": "export",
            "cpt_code": cpt.code,
            "descriptor": cpt.descriptor,
            "component": cpt.component,
            "cpt": cpt.to_dict(),
            "schedule": schedule_info(),
        },
        "deidentification": {
            "profile": "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile",
            "options": ["Retain Patient Characteristics Option"],
            "engine": f"dicom-anonymizer {_anonymizer_version()} (action table "
            f"{table_version}) + tbscore allow-list, value checks and PHI-token safety net",
            "retained_patient_characteristics": list(RETAINED_PATIENT_CHARACTERISTICS),
            "age_cap_years": age_cap,
            "emptied": list(EMPTIED_TYPE2_KEYWORDS),
            "patient_id": "keyed pseudonym (HMAC-SHA256)",
            "dates": "removed (LongitudinalTemporalInformationModified = REMOVED)",
            "uids": "remapped: 2.25.<HMAC-SHA256(key, uid)>; key kept in the mapping file",
            "private_tags": "removed",
            "sequences": "removed",
            "allowed_attributes": list(ALLOWED_KEYWORDS),
            "coded_values": "kept only from their vocabularies, else removed "
            "(item invalid_removed): BodyPartExamined (PS3.16 Annex L DXA sites), "
            "PatientOrientation ([APRLHF]{1,3} per value), ImageType (values 1-2 "
            "ORIGINAL/DERIVED, PRIMARY/SECONDARY; values 3+ from a short list of defined "
            "terms, others emptied), and the enumerated image attributes",
            "body_part_terms": sorted(BODY_PART_TERMS),
            "image_type_terms": sorted(IMAGE_TYPE_TERMS),
            "phi_safety_net": "every remaining text value containing a PHI token of the "
            "source (person-name parts, IDs, accession number, institution, staff, station, "
            "dates as YYYYMMDD; at least 3 characters, case-insensitive) is blanked or "
            "removed (item phi_scrubbed: keywords only); PHI not present in the source's "
            "identifying attributes is not caught",
            "burned_in_text": "excluded: non-image objects, colour images, "
            "BurnedInAnnotation=YES, RecognizableVisualFeatures=YES; "
            "pixel data of included images is not inspected (no OCR)",
            "file_names": "sequential (IMG#####.dcm), never derived from DICOM attributes",
        },
        "counts": {
            "included": sum(i.status == "included" for i in items),
            "excluded": sum(i.status == "excluded" for i in items),
            "skipped_non_dicom": skipped,
        },
        "items": [i.to_dict() for i in items],
    }
    (package / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for i in items:
        writer.writerow({k: ("" if v is None else v) for k, v in i.to_dict().items()})
    (package / "manifest.csv").write_text(buf.getvalue(), encoding="utf-8")

    mapping = previous or {
        "format": MAPPING_FORMAT,
        "warning": "links de-identified packages to patients: keep apart from the package, "
        "share with nobody who receives the package",
        "key": uids.key.hex(),
        "uids": {},
        "patients": {},
        "runs": [],
    }
    mapping["uids"].update(uids.mapping)
    mapping["patients"].update(patients)
    mapping["runs"].append(
        {
            "created": now,
            "package": str(package.resolve()),
            "tbscore_version": __version__,
            "items": private_items,
            "skipped_non_dicom": skipped,
        }
    )
    _write_private(mpath, mapping)
    return ExportReport(
        package=package,
        mapping_path=mpath,
        items=tuple(items),
        manifest=manifest,
        skipped_non_dicom=skipped,
    )


# --------------------------------------------------------------------------- CLI


def cmd_export(args: Any) -> int:
    """``tbscore export``: run :func:`export_package` and print a summary."""
    report = export_package(
        args.inputs,
        args.output,
        mapping_path=args.mapping,
        include_rois=not args.no_roi,
        age_cap=None if args.no_age_cap else _AGE_CAP,
    )
    m = report.manifest
    print(f"tbscore {__version__}  CPT {m['service']['cpt_code']} ({m['service']['descriptor']})")
    print(
        f"package  {report.package}  ({m['counts']['included']} included, "
        f"{m['counts']['excluded']} excluded, {m['counts']['skipped_non_dicom']} "
        "non-DICOM skipped)"
    )
    for i in report.excluded:
        print(f"excluded {i.item}: {i.reason}")
    print(f"mapping  {report.mapping_path}  (identifying: keep apart from the package)")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add the ``export`` sub-command."""
    p = subparsers.add_parser(
        "export",
        help="CPT 77090: de-identified package of DICOM images for analysis elsewhere",
        description="De-identify DICOM images (PS3.15 Annex E Basic Profile, Retain Patient "
        "Characteristics option) into a package with manifest.json/.csv. "
        "The mapping file is written beside the package, never inside.",
    )
    p.add_argument("inputs", nargs="+", metavar="DIR", help="DICOM files or folders")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="PACKAGE",
        help="package folder (must not exist or be empty)",
    )
    p.add_argument(
        "--mapping",
        metavar="MAPPING.json",
        help="mapping file (default: PACKAGE.mapping.json beside the package); "
        "an existing one is extended and its UID key reused",
    )
    p.add_argument(
        "--no-roi",
        action="store_true",
        help="do not export NAME.roi.json files found beside NAME.dcm",
    )
    p.add_argument(
        "--no-age-cap", action="store_true", help="keep ages over 89 instead of writing 090Y"
    )
    p.set_defaults(func=cmd_export)
