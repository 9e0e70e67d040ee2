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
import hashlib
import hmac
import io
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from tbscore._version import __version__
from tbscore.core.constants import COLOUR_PHOTOMETRICS
from tbscore.errors import ExportError, InputError

__all__ = [
    "ExportError",
    "UIDMapper",
    "ALLOWED_KEYWORDS",
    "RETAINED_PATIENT_CHARACTERISTICS",
    "EMPTIED_TYPE2_KEYWORDS",
    "EMPTIED_SEQUENCES",
    "MODALITY_TERMS",
    "RESCALE_TYPE_TERMS",
    "BODY_PART_TERMS",
    "IMAGE_TYPE_TERMS",
    "PHI_SOURCE_KEYWORDS",
    "EXPORT_FORMAT",
    "MAPPING_FORMAT",
    "MANIFEST_COLUMNS",
    "deidentify_dataset",
    "collect_phi_tokens",
    "exclusion_reason",
    "public_modality",
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
    "PixelSpacingCalibrationDescription",
    "PresentationIntentType",
    "PixelIntensityRelationship",
    "PixelIntensityRelationshipSign",
    "DetectorType",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "PixelPaddingValue",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "PresentationLUTShape",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "PixelData",
)

#: Type 2 sequences of the image IODs (DX: Acquisition Context, General Anatomy
#: Required macro): written with no items when the source has them, so that the
#: export stays conformant; their items (codes, free text) are never copied.
EMPTIED_SEQUENCES: tuple[str, ...] = ("AcquisitionContextSequence", "AnatomicRegionSequence")

#: Every attribute that may appear in an exported file (besides the de-identification
#: attributes that the export adds itself).
ALLOWED_KEYWORDS: tuple[str, ...] = (
    _IMAGE_KEYWORDS
    + RETAINED_PATIENT_CHARACTERISTICS
    + EMPTIED_TYPE2_KEYWORDS
    + EMPTIED_SEQUENCES
    + ("PatientID",)
    + _REMAPPED_UIDS
)

#: Modality defined terms (PS3.3 C.7.3.1.1.1, and the retired SC still written by
#: some DXA scanners): the only Modality texts that reach a manifest; anything else
#: is reported as ``"other"`` (a Modality may hold free text such as a name).
MODALITY_TERMS: frozenset[str] = frozenset(
    {
        "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CR", "CT", "CTPROTOCOL", "DG", "DOC",
        "DX", "ECG", "EPS", "ES", "FID", "GM", "HC", "HD", "IO", "IOL", "IVOCT", "IVUS",
        "KER", "KO", "LEN", "LS", "M3D", "MG", "MR", "NM", "OAM", "OCT", "OP", "OPM",
        "OPT", "OPTBSV", "OPTENF", "OPV", "OSS", "OT", "PLAN", "PR", "PT", "PX", "REG",
        "RESP", "RF", "RG", "RTDOSE", "RTIMAGE", "RTINTENT", "RTPLAN", "RTRAD",
        "RTRECORD", "RTSEGANN", "RTSTRUCT", "RWV", "SC", "SEG", "SM", "SMR", "SR",
        "SRF", "STAIN", "TEXTUREMAP", "TG", "US", "VA", "XA", "XC",
    }
)  # fmt: skip

#: RescaleType defined terms (PS3.3 C.11.1.1.2); another value is replaced by
#: ``"US"`` (unspecified), which is always true, so the Modality LUT stays complete.
RESCALE_TYPE_TERMS: frozenset[str] = frozenset(
    {"OD", "HU", "US", "MGML", "Z_EFF", "ED", "EDW", "HU_MOD", "PCT"}
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

_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
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
    "PresentationIntentType": frozenset({"FOR PRESENTATION", "FOR PROCESSING"}),
    "PixelIntensityRelationship": frozenset({"LIN", "LOG", "DISP"}),
    "DetectorType": frozenset({"DIRECT", "SCINTILLATOR", "STORAGE", "FILM"}),
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
    set(_CODED_TERMS)
    | {
        "ImageType",
        "PatientOrientation",
        "SpecificCharacterSet",
        "RescaleType",
        "PixelIntensityRelationshipSign",
        "SOPClassUID",
    }
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

#: Attributes blanked (kept, empty) rather than removed by the value checks and the
#: PHI safety net: Type 1 or 2 in the image IODs, so that the export stays conformant.
_BLANK_WHEN_SCRUBBED: frozenset[str] = frozenset(
    {"Manufacturer", "Modality", "SeriesNumber", "InstanceNumber", "PatientOrientation"}
)

#: Value representations searched by substring (text). Every other VR (numbers IS, DS,
#: US, SS, UL, SL, FL, FD, ages AS, UIDs UI...) is compared as a whole value: a
#: number equal to a token (``12345`` for the PatientID ``0012345``) is removed too.
_TEXT_VRS = frozenset(
    {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT", "DA", "DT", "TM"}
)

#: Attributes fixed by the pixel data themselves (encoding, geometry, stored-to-real
#: value map), not searched by the safety net: they cannot be changed without
#: changing the image, and the export checks that the decoded pixels and the spacing
#: are unchanged. A coincidence (512 rows, PatientID ``512``) leaks nothing.
_PIXEL_KEYWORDS: frozenset[str] = frozenset(
    {
        "SamplesPerPixel",
        "PlanarConfiguration",
        "NumberOfFrames",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PixelPaddingValue",
        "PixelSpacing",
        "ImagerPixelSpacing",
        "NominalScannedPixelSpacing",
        "PixelAspectRatio",
        "RescaleSlope",
        "RescaleIntercept",
        "PixelData",
    }
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
    | set(_REMAPPED_UIDS)
)

_MIN_TOKEN = 3
#: Digit runs of identifiers at least this long are tokens too (``778899`` of
#: ``MRN-778899``), so an ID copied into a number attribute is caught.
_MIN_DIGIT_RUN = 5

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

_COLOUR = COLOUR_PHOTOMETRICS

_AGE_CAP = 90  # HIPAA Safe Harbor: ages over 89 are reported as 90


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
        ``"non-image object (MODALITY, SOP class name)"``,
        ``"burned-in annotation (BurnedInAnnotation=YES)"``,
        ``"recognizable visual features (RecognizableVisualFeatures=YES)"`` or
        ``"colour image (...)"``; ``None`` when the object may be exported (it still
        has to pass the TBS loader). The texts are fixed phrases: the modality is a
        defined term or ``other`` (:func:`public_modality`), the SOP class a name from
        the DICOM standard or ``unknown SOP class``, the photometric interpretation
        one of its defined terms or ``other``; no attribute value of ``ds`` is echoed.
    """
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        modality = public_modality(ds) or "no modality"
        return f"non-image object ({modality}, {_public_sop_class(ds)})"
    if _text(ds, "BurnedInAnnotation").upper() == "YES":
        return "burned-in annotation (BurnedInAnnotation=YES)"
    if _text(ds, "RecognizableVisualFeatures").upper() == "YES":
        return "recognizable visual features (RecognizableVisualFeatures=YES)"
    photometric = _text(ds, "PhotometricInterpretation").upper()
    try:
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        samples = 0
    if samples != 1 or photometric in _COLOUR:
        shown = photometric if photometric in _COLOUR | _MONOCHROME else "other"
        return (
            f"colour image ({shown}, {samples} samples per pixel): "
            "likely a screenshot with burned-in text"
        )
    return None


_MONOCHROME = frozenset({"MONOCHROME1", "MONOCHROME2"})


def _text(ds: Dataset, keyword: str) -> str:
    """``ds.keyword`` as stripped text; ``""`` when absent or undecodable."""
    try:
        return str(ds.get(keyword, "") or "").strip()
    except Exception:
        return ""


def public_modality(ds: Dataset) -> str:
    """The Modality of ``ds`` as a manifest may show it.

    Parameters
    ----------
    ds : pydicom Dataset

    Returns
    -------
    str
        The value when it is one of :data:`MODALITY_TERMS`, ``""`` when absent,
        ``"other"`` for any other text (which may be free text, e.g. a name).
    """
    value = _text(ds, "Modality").upper()
    if not value:
        return ""
    return value if value in MODALITY_TERMS else "other"


def _public_sop_class(ds: Dataset) -> str:
    """Standard name of the SOP class of ``ds`` or ``"unknown SOP class"``."""
    uid = _text(ds, "SOPClassUID")
    info = pydicom.uid.UID_dictionary.get(uid)
    return str(info[0]) if info else "unknown SOP class"


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
      device serial number, patient address and telephone...), whole, without
      separators (``MRN778899`` for ``MRN-778899``), and each run of at least 5
      digits (``778899``);
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
                _add_token(tokens, re.sub(r"[\W_]+", "", value))  # MRN-778899 -> MRN778899
                for run in re.findall(r"\d+", value):
                    if len(run) >= _MIN_DIGIT_RUN:
                        tokens.add(run)
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
            out.PatientOrientation = ""  # Type 2: present, empty
            changed.append("PatientOrientation")
    sop_class = str(out.get("SOPClassUID", "") or "").strip()
    info = pydicom.uid.UID_dictionary.get(sop_class)
    if not info or info[1] != "SOP Class":  # a private UID may carry any digits
        out.SOPClassUID = _SECONDARY_CAPTURE
        changed.append("SOPClassUID")
    if "RescaleType" in out:
        values = [v.strip().upper() for v in _values(out["RescaleType"])]
        if len(values) != 1 or values[0] not in RESCALE_TYPE_TERMS:
            out.RescaleType = "US"  # unspecified: Type 1C with RescaleSlope
            changed.append("RescaleType")
    if "PixelIntensityRelationshipSign" in out:
        if _values(out["PixelIntensityRelationshipSign"]) not in (["1"], ["-1"]):
            del out.PixelIntensityRelationshipSign
            changed.append("PixelIntensityRelationshipSign")
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


def _equals_token(value: str, tokens: frozenset[str]) -> bool:
    """A non-text value equal to a token, as text or as a number (``12345.0``,
    ``012345`` and ``12345`` are one number)."""
    low = value.strip().casefold()
    if low in tokens:
        return True
    try:
        number = float(low)
    except ValueError:
        return False
    return any(t.isdigit() and float(t) == number for t in tokens)


def _scrub_phi(ds: Dataset, tokens: frozenset[str], *, top: bool = True) -> list[str]:
    """Blank or remove elements whose values hold a PHI token; the keywords hit.

    Every VR is searched: text VRs (:data:`_TEXT_VRS`) by substring, others (numbers,
    ages, UIDs...) by whole value. Not searched: the export's own attributes, values
    checked against a vocabulary and the pixel attributes (:data:`_PIXEL_KEYWORDS`).
    """
    hit: list[str] = []
    for element in list(ds):
        keyword = element.keyword or str(element.tag)
        if top and (
            keyword in _OWN_KEYWORDS or keyword in _VALIDATED_KEYWORDS or keyword in _PIXEL_KEYWORDS
        ):
            continue
        if element.VR == "SQ":
            for item in element.value or []:
                hit += _scrub_phi(item, tokens, top=False)
            continue
        match = _contains_token if element.VR in _TEXT_VRS else _equals_token
        try:
            found = any(match(v, tokens) for v in _values(element))
        except Exception:  # an undecodable value cannot be checked: not kept
            found = True
        if not found:
            continue
        hit.append(keyword)
        if top and keyword in _BLANK_WHEN_SCRUBBED:
            element.value = ""
        else:
            del ds[element.tag]
    return hit


def _cid4031() -> dict[tuple[str, str], str]:
    """CID 4031 (Common Anatomic Regions) as ``{(scheme, value): meaning}``; legacy
    SNOMED-RT (``SRT``) codes of pydicom's mapping lead to the same SCT entries."""
    from pydicom.sr._snomed_dict import mapping
    from pydicom.sr.codedict import codes

    table: dict[tuple[str, str], str] = {}
    for name in codes.cid4031.dir():
        code = getattr(codes.cid4031, name)
        table[(code.scheme_designator, code.value)] = code.meaning
    for srt, sct in mapping.get("SRT", {}).items():
        if ("SCT", sct) in table:
            table[("SRT", srt)] = table[("SCT", sct)]
    return table


def _anatomic_region(ds: Dataset) -> Dataset | None:
    """The anatomic region code of ``ds`` when it is a CID 4031 code, rebuilt from the
    standard (code value, scheme and the standard's meaning: no text of ``ds``);
    ``None`` otherwise (then the sequence is written empty)."""
    try:
        item = ds.AnatomicRegionSequence[0]
        key = (str(item.CodingSchemeDesignator).strip(), str(item.CodeValue).strip())
    except Exception:
        return None
    meaning = _cid4031().get(key)
    if meaning is None:
        return None
    out = Dataset()
    out.CodeValue = key[1]
    out.CodingSchemeDesignator = key[0]
    out.CodeMeaning = meaning
    return out


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
        out.SOPClassUID = _SECONDARY_CAPTURE
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
    # PixelSpacingCalibrationDescription is Type 1C with PixelSpacingCalibrationType
    # (and only allowed with it): one is not kept without the other
    pair = ("PixelSpacingCalibrationType", "PixelSpacingCalibrationDescription")
    if sum(bool(out.get(k)) for k in pair) == 1:
        for keyword in pair:
            if keyword in out:
                del out[keyword]
                invalid.append(keyword)
    for keyword in EMPTIED_SEQUENCES:
        if keyword in ds:
            setattr(out, keyword, [])
    region = _anatomic_region(ds)
    if region is not None:
        out.AnatomicRegionSequence = [region]

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
