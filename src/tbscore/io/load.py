"""Load a lumbar-spine DXA image from DICOM.

The loader turns a DICOM file (or an in-memory :class:`pydicom.dataset.Dataset`) into a
:class:`DXAImage`: a 2-D float64 array in which higher values mean more attenuation
(MONOCHROME2 convention, rescale applied), the pixel spacing in mm with where it came
from, the metadata a report needs, and hashes that identify the input.

Every failure raises a subclass of :class:`tbscore.errors.InputError` naming the file
and the reason; no pydicom or numpy exception escapes.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from tbscore.core.constants import COLOUR_PHOTOMETRICS
from tbscore.core.result import PHI_METADATA_KEYS
from tbscore.errors import (
    ColourImageError,
    CompressedPixelDataError,
    DicomReadError,
    InputError,
    MissingPixelSpacingError,
    NotAnImageError,
    UnsupportedImageError,
)
from tbscore.io.sniff import read_dicom, read_dicom_bytes

__all__ = [
    "DXAImage",
    "DicomMetadata",
    "load_dicom",
    "SPACING_TAGS",
    "ACCEPTED_MODALITIES",
    "DXA_SPACING_RANGE_MM",
    "spacing_in_dxa_range",
]

#: Physically possible DXA pixel spacings (mm, inclusive). A file spacing outside is
#: refused; a user-supplied one (``--spacing``) is used with a warning on the result.
DXA_SPACING_RANGE_MM: tuple[float, float] = (0.05, 5.0)


def spacing_in_dxa_range(spacing_mm: tuple[float, float]) -> bool:
    """Whether both spacings lie in :data:`DXA_SPACING_RANGE_MM`."""
    lo, hi = DXA_SPACING_RANGE_MM
    return all(lo <= float(v) <= hi for v in spacing_mm)


#: Spacing attributes tried in order (DICOM keyword, tag).
SPACING_TAGS: tuple[str, ...] = (
    "PixelSpacing",  # (0028,0030)
    "ImagerPixelSpacing",  # (0018,1164)
    "NominalScannedPixelSpacing",  # (0018,2010)
)

#: Modalities accepted by default: DXA (BMD) and the projection / secondary-capture
#: modalities under which DXA exports are seen.
#: ``SC`` is not a DICOM defined term but is written by some secondary-capture exporters.
ACCEPTED_MODALITIES: frozenset[str] = frozenset({"BMD", "OT", "CR", "DX", "RG", "SC"})

_COLOUR = COLOUR_PHOTOMETRICS


#: Identifying metadata left out when PHI is not to be written (``include_phi=False``).
PHI_KEYS: tuple[str, ...] = PHI_METADATA_KEYS


@dataclass(frozen=True)
class DicomMetadata:
    """Metadata kept from the DICOM header.

    Patient identifiers (``patient_name``, ``patient_id``, ``birth_date``) are kept for
    reports; they are never written by :mod:`tbscore.export` packages.

    Attributes
    ----------
    age_years : float or None
        From PatientAge, else from PatientBirthDate and StudyDate.
    sex : str or None
        ``"F"``, ``"M"`` or ``"O"``.
    height_m, weight_kg : float or None
        PatientSize (m) and PatientWeight (kg).
    bmi : float or None
        Body-mass index in kg/m^2 computed from height and weight.
    """

    patient_name: str | None = None
    patient_id: str | None = None
    birth_date: str | None = None
    age_years: float | None = None
    sex: str | None = None
    height_m: float | None = None
    weight_kg: float | None = None
    bmi: float | None = None
    manufacturer: str | None = None
    model: str | None = None
    software_versions: str | None = None
    modality: str | None = None
    study_date: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    transfer_syntax_uid: str | None = None
    photometric: str | None = None
    bits_stored: int | None = None
    # study context for the signed report (CPT 77092); identifying ones are PHI_KEYS
    study_time: str | None = None
    accession_number: str | None = None
    referring_physician: str | None = None
    study_description: str | None = None
    requested_procedure: str | None = None
    reason_for_request: str | None = None
    institution_name: str | None = None
    station_name: str | None = None
    device_serial_number: str | None = None
    operators_name: str | None = None
    patient_orientation: str | None = None

    def to_dict(self, *, include_phi: bool = True) -> dict[str, Any]:
        """Return the metadata as a JSON-safe dict (identifiers dropped if asked)."""
        d = dict(self.__dict__)
        if not include_phi:
            for key in PHI_KEYS:
                d.pop(key, None)
        return d


@dataclass(frozen=True)
class DXAImage:
    """A loaded DXA image.

    Attributes
    ----------
    pixels : ndarray of float64, shape (rows, cols)
        Gray levels after RescaleSlope/Intercept, MONOCHROME1 inverted so that higher
        values mean more attenuation.
    spacing_mm : tuple of float
        ``(row_mm, col_mm)``: centre-to-centre distance of adjacent rows and columns.
    spacing_source : str
        The DICOM attribute the spacing came from, or ``"user"``.
    metadata : DicomMetadata
    source : str
        File path, or ``"<dataset>"`` for an in-memory dataset.
    pixel_sha256 : str
        SHA-256 of the decoded stored pixel values (shape and dtype included); equal
        for copies of one image saved with new UIDs.
    file_sha256 : str or None
        SHA-256 of the file bytes.
    header : pydicom.Dataset or None
        The data set the image was read from (its Pixel Data dropped when this loader
        read the file itself), kept so that later stages (the SR writer, batch) use it
        instead of reading the file again; None for an array.
    pixel_transform : tuple or None
        ``(inverted, bits, slope, intercept)``: the arguments the loader passed to
        :func:`gray_levels` with the stored pixels of ``pixel_sha256``, which with them
        decide ``pixels`` (the batch's duplicate key hashes these instead of the gray
        levels); None for an image made from an array.
    """

    pixels: np.ndarray
    spacing_mm: tuple[float, float]
    spacing_source: str
    metadata: DicomMetadata = field(default_factory=DicomMetadata)
    source: str = "<dataset>"
    pixel_sha256: str = ""
    file_sha256: str | None = None
    header: Any = field(default=None, repr=False, compare=False)
    pixel_transform: tuple[bool, int | None, float, float] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))


_TAGS: dict[str, int] = {}  # keyword -> tag number, filled on first use

#: VRs whose raw value :meth:`_Values.get` converts with pydicom's ``convert_value``
#: directly (not SQ, UN or the ambiguous ones; US / SS only as one value, which the
#: LUT descriptor fix-up of a value list never touches: ``convert_raw_data_element``
#: for the rest).
_PLAIN_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC"}
    | {"UI", "UL", "UR", "UT", "FL", "FD", "SL", "OB", "OW", "OF", "OD", "OL"}
)


@functools.cache
def _pydicom_config() -> tuple[Any, Any]:
    """pydicom's ``config`` and ``hooks`` modules, imported once (their settings are
    read afresh by :func:`_default_hooks` for every data set)."""
    from pydicom import config, hooks

    return config, hooks


def _default_hooks() -> bool:
    """pydicom's raw-element hooks are its own and no element callback is set."""
    config, hooks = _pydicom_config()
    h = hooks.hooks
    return (
        config.data_element_callback is None
        and not h.raw_element_kwargs
        and h.raw_element_vr is hooks.raw_element_vr
        and h.raw_element_value is hooks.raw_element_value
    )


class _Values:
    """The values of a data set's top-level elements by keyword, as ``ds.get`` gives
    them, for the loader's reads of ~40 header attributes.

    A value still in raw form (as read from the file, never accessed) is converted by
    pydicom's own converter (:func:`pydicom.dataelem.convert_raw_data_element`, with the
    character set the file was read with), as ``Dataset.__getitem__`` would do, but
    without that method's per-access bookkeeping (nested look-ups, the converted
    element stored back): about half the cost of the header reads of a scan. The data
    set itself is not changed; sequences, ambiguous VRs, deferred values and data sets
    not read from a file take ``Dataset.get`` itself.

    The elements are taken once, when made (``Dataset.keys`` and ``Dataset.values``,
    as pydicom holds them: raw or converted), by plain tag numbers (a look-up by
    pydicom's ``BaseTag`` compares in Python): the data set as it was then.
    """

    __slots__ = ("_ds", "_raw", "_charset", "_cache", "_own_hooks", "_ts", "_conv")

    def __init__(self, ds: Dataset) -> None:
        self._ds = ds
        self._raw: dict[int, Any] = dict(zip(map(int, ds.keys()), ds.values(), strict=True))
        self._charset = ds.original_character_set
        self._cache: dict[str, Any] = {}
        self._own_hooks = _default_hooks()  # asked once per data set
        self._ts: Any = _MISSING
        self._conv = _pydicom_converters()  # looked up once per data set, not per value

    @staticmethod
    def _tag(keyword: str) -> int:
        tag = _TAGS.get(keyword)
        if tag is None:
            from pydicom.datadict import tag_for_keyword

            number = tag_for_keyword(keyword)
            if number is None:
                raise KeyError(keyword)
            tag = _TAGS[keyword] = int(number)
        return tag

    @property
    def dataset(self) -> Dataset:
        """The data set read."""
        return self._ds

    @property
    def transfer_syntax(self) -> Any:
        """The file meta's TransferSyntaxUID (a pydicom ``UID``), or None; asked once."""
        ts = self._ts
        if ts is _MISSING:
            meta = getattr(self._ds, "file_meta", None)
            ts = self._ts = getattr(meta, "TransferSyntaxUID", None)
        return ts

    def __contains__(self, keyword: str) -> bool:
        return self._tag(keyword) in self._raw

    def get(self, keyword: str, default: Any = None) -> Any:
        value = self._cache.get(keyword, _MISSING)
        if value is not _MISSING:
            return default if value is _ABSENT else value
        tag = _TAGS.get(keyword) or self._tag(keyword)
        elem = self._raw.get(tag)
        if elem is None:
            self._cache[keyword] = _ABSENT  # the next ask of an absent keyword is one look-up
            return default
        value = self._cache[keyword] = self._value(tag, elem)
        return value

    def text(self, keyword: str) -> str | None:
        """``str(ds.get(keyword)).strip()``, ``None`` for an absent or empty value (the
        loader's text rule, :func:`_text`); the value converted by pydicom, as
        :meth:`get` has it."""
        value = self.get(keyword)
        if value is None or value == "":
            return None
        return str(value).strip() or None

    def _value(self, tag: int, elem: Any) -> Any:
        """The value of the element ``elem`` (tag ``tag``) as ``ds.get`` gives it."""
        raw_type, convert_raw, convert_value, ambiguous, sq = self._conv
        if isinstance(elem, raw_type):
            if not self._charset or (elem.value is None and elem.length != 0):
                return self._ds[tag].value  # not read from a file, or a deferred value
            vr = elem.VR
            if (
                type(elem.value) is bytes
                and (vr in _PLAIN_VRS or (vr in ("US", "SS") and elem.length == 2))
                and self._own_hooks
            ):
                # what convert_raw_data_element gives for an explicit VR of these with
                # pydicom's own hooks: its value converter's value (the element object
                # it wraps it in and the hooks' VR look-up are not needed)
                try:
                    return convert_value(vr, elem, self._charset)
                except Exception:
                    pass  # pydicom's own path below decides (its error or its UN rule)
            elem = convert_raw(elem, encoding=self._charset, ds=self._ds)
        if elem.VR == sq or elem.VR in ambiguous:
            return self._ds[tag].value  # pydicom's own fix-ups on the data set
        return elem.value


#: Markers of :meth:`_Values.get`'s cache: not looked up yet / looked up and absent.
_MISSING = object()
_ABSENT = object()


@functools.cache
def _pydicom_converters() -> tuple[Any, ...]:
    """pydicom's raw-element class, its converters and VR constants, imported once
    (``RawDataElement``, ``convert_raw_data_element``, ``values.convert_value``,
    ``AMBIGUOUS_VR``, ``VR.SQ``)."""
    from pydicom.dataelem import RawDataElement, convert_raw_data_element
    from pydicom.valuerep import AMBIGUOUS_VR, VR
    from pydicom.values import convert_value

    return RawDataElement, convert_raw_data_element, convert_value, AMBIGUOUS_VR, VR.SQ


def _values(ds: Dataset | _Values) -> _Values:
    return ds if isinstance(ds, _Values) else _Values(ds)


def _software_versions(ds: Dataset | _Values) -> str | None:
    """SoftwareVersions (LO, multi-valued) as one text, values joined by ``\\``."""
    value = ds.get("SoftwareVersions")
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value.strip() or None
    try:
        return "\\".join(str(v).strip() for v in value) or None
    except TypeError:
        return str(value).strip() or None


def _text(ds: Dataset | _Values, keyword: str) -> str | None:
    if isinstance(ds, _Values):
        return ds.text(keyword)
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value).strip() or None


def _float(ds: Dataset | _Values, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _parse_age(age: str | None) -> float | None:
    """Parse a DICOM AS value ('065Y', '006M', '010W', '003D') into years."""
    if not age or len(age) < 2:
        return None
    unit = age[-1].upper()
    factors = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
    if unit not in factors:
        return None
    try:
        n = int(age[:-1])
    except ValueError:
        return None
    return n * factors[unit]


def _age_from_dates(birth: str | None, study: str | None) -> float | None:
    try:
        b = _dt.datetime.strptime(birth or "", "%Y%m%d").date()
        s = _dt.datetime.strptime(study or "", "%Y%m%d").date()
    except ValueError:
        return None
    years = (s - b).days / 365.25
    return years if years >= 0 else None


def _metadata(ds: Dataset | _Values) -> DicomMetadata:
    ds = _values(ds)
    age = _parse_age(_text(ds, "PatientAge"))
    study_date = _text(ds, "StudyDate") or _text(ds, "AcquisitionDate") or _text(ds, "ContentDate")
    if age is None:
        age = _age_from_dates(_text(ds, "PatientBirthDate"), study_date)
    height = _float(ds, "PatientSize")
    weight = _float(ds, "PatientWeight")
    bmi = weight / height**2 if height and weight else None
    sex = _text(ds, "PatientSex")
    sex = sex.upper()[:1] if sex and sex.upper()[:1] in "FMO" else None
    ts = ds.transfer_syntax
    bits = ds.get("BitsStored")
    return DicomMetadata(
        patient_name=_text(ds, "PatientName"),
        patient_id=_text(ds, "PatientID"),
        birth_date=_text(ds, "PatientBirthDate"),
        age_years=None if age is None else round(age, 2),
        sex=sex,
        height_m=height,
        weight_kg=weight,
        bmi=None if bmi is None else round(bmi, 2),
        manufacturer=_text(ds, "Manufacturer"),
        model=_text(ds, "ManufacturerModelName"),
        software_versions=_software_versions(ds),
        modality=_text(ds, "Modality"),
        study_date=study_date,
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        transfer_syntax_uid=None if ts is None else str(ts),
        photometric=_text(ds, "PhotometricInterpretation"),
        bits_stored=None if bits is None else int(bits),
        **_study_context(ds),
    )


def _request_text(ds: Dataset | _Values, keyword: str) -> str | None:
    """``keyword`` from the image, else from its first Request Attributes item."""
    value = _text(ds, keyword)
    if value is None:
        for item in ds.get("RequestAttributesSequence") or []:
            value = _text(item, keyword)
            if value:
                break
    return value


def _orientation(ds: Dataset | _Values) -> str | None:
    """PatientOrientation (0020,0020) as ``"ROW\\COLUMN"`` (e.g. ``"L\\F"``), or None."""
    value = ds.get("PatientOrientation")
    if value is None or value == "":
        return None
    parts = [str(v).strip() for v in (value if not isinstance(value, str) else [value])]
    return "\\".join(p for p in parts if p) or None


def _study_context(ds: Dataset | _Values) -> dict[str, str | None]:
    """Study, order and equipment attributes shown in a signed report."""
    return {
        "study_time": _text(ds, "StudyTime"),
        "accession_number": _text(ds, "AccessionNumber"),
        "referring_physician": _text(ds, "ReferringPhysicianName"),
        "study_description": _text(ds, "StudyDescription"),
        "requested_procedure": _request_text(ds, "RequestedProcedureDescription"),
        "reason_for_request": _request_text(ds, "ReasonForTheRequestedProcedure")
        or _text(ds, "ReasonForStudy"),
        "institution_name": _text(ds, "InstitutionName"),
        "station_name": _text(ds, "StationName"),
        "device_serial_number": _text(ds, "DeviceSerialNumber"),
        "operators_name": _text(ds, "OperatorsName"),
        "patient_orientation": _orientation(ds),
    }


def _spacing(
    ds: Dataset | _Values, user: tuple[float, float] | None, source: str, override: bool
) -> tuple[tuple[float, float], str]:
    if user is not None:
        user = _check_spacing(user, source, "user-supplied spacing")
        if override:
            return user, "user"
    for keyword in SPACING_TAGS:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        try:
            values = [float(v) for v in value]
        except (TypeError, ValueError) as exc:
            raise InputError(f"{keyword} is not numeric: {value!r}", source) from exc
        checked = _check_spacing(values, source, keyword)
        if not spacing_in_dxa_range(checked):
            lo, hi = DXA_SPACING_RANGE_MM
            raise InputError(
                f"{keyword} {checked[0]:g} x {checked[1]:g} mm is outside the physically "
                f"possible DXA range {lo:g}-{hi:g} mm; if it is really right, give it with "
                "--spacing ROW_MM COL_MM --override-spacing (used with a warning)",
                source,
            )
        return checked, keyword
    if user is not None:
        return user, "user"
    ratio = ds.get("PixelAspectRatio")
    hint = f" (PixelAspectRatio {list(ratio)} gives the shape only)" if ratio else ""
    raise MissingPixelSpacingError(
        "no pixel spacing in the file (PixelSpacing, ImagerPixelSpacing and "
        f"NominalScannedPixelSpacing are absent){hint}; supply it, e.g. --spacing ROW_MM COL_MM",
        source,
    )


def _check_spacing(values: Any, source: str, what: str) -> tuple[float, float]:
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} is not numeric: {values!r}", source) from exc
    if len(vals) != 2 or not all(math.isfinite(v) and 0 < v < 100 for v in vals):
        raise InputError(
            f"{what} must be two positive values in mm (row, col), got {values!r}", source
        )
    return (vals[0], vals[1])


#: Native (uncompressed) little-endian transfer syntaxes read by :func:`_native_pixels`.
_NATIVE_LE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})


def _native_pixels(ds: _Values, ts: Any) -> np.ndarray | None:
    """The stored values of a plain native little-endian single-frame grayscale image
    read straight from the Pixel Data bytes, or None when pydicom must decode it.

    Gives what pydicom's ``pixel_array`` gives for these images (same dtype; bits above
    BitsStored cleared, or sign-extended when PixelRepresentation is 1) without its
    per-call set-up; anything else (compressed, big-endian, 1-bit, multi-frame, colour,
    short or float pixel data) goes to pydicom.
    """
    if ts is None or str(ts) not in _NATIVE_LE:
        return None
    try:
        rows, cols = int(ds.get("Rows")), int(ds.get("Columns"))
        alloc, stored = int(ds.get("BitsAllocated")), int(ds.get("BitsStored"))
        signed = int(ds.get("PixelRepresentation"))
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        data = ds.get("PixelData")
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if (
        alloc not in (8, 16, 32)
        or not 0 < stored <= alloc
        or signed not in (0, 1)
        or samples != 1
        or frames != 1
        or not isinstance(data, bytes)
        or rows < 1
        or cols < 1
        or len(data) < rows * cols * (alloc // 8)
    ):
        return None
    arr = np.frombuffer(data, dtype=f"<{'iu'[signed == 0]}{alloc // 8}", count=rows * cols)
    arr = arr.reshape(rows, cols)
    if stored < alloc:
        shift = alloc - stored
        if signed:  # sign-extend from bit stored - 1, as pydicom does
            arr = (arr << shift) >> shift
        else:  # clear the unused high bits, as pydicom does
            arr = arr & arr.dtype.type((1 << stored) - 1)
    return arr


def _decode(values: _Values, source: str) -> np.ndarray:
    ds = values.dataset
    ts = values.transfer_syntax
    fast = _native_pixels(values, ts)
    if fast is not None:
        return fast
    try:
        arr = ds.pixel_array
    except Exception as exc:
        msg = str(exc)
        if ts is not None and ts.is_compressed:
            raise CompressedPixelDataError(
                f"pixel data compressed with {ts.name} ({ts}) and no installed decoder could "
                f"read it ({type(exc).__name__}: {msg.splitlines()[0] if msg else ''}); "
                "install the decoders with: pip install 'tbscore[jpeg]'",
                source,
            ) from exc
        raise DicomReadError(
            f"pixel data cannot be decoded ({type(exc).__name__}: "
            f"{msg.splitlines()[0] if msg else ''}); the file may be truncated",
            source,
        ) from exc
    return np.asarray(arr)


#: Stored-value kinds and sizes the compiled pass takes (the others: numpy's steps).
_GRAY_KERNEL_KINDS = frozenset({"u1", "u2", "u4", "i1", "i2", "i4"})


def gray_levels(
    stored: np.ndarray, inverted: bool, bits: int | None, slope: float, intercept: float
) -> np.ndarray:
    """The gray levels of stored pixel values: a new float64 array.

    ``float64(x)``, inverted for MONOCHROME1 (``inverted``) on the stored-value range
    (``2**bits - 1 - x`` for unsigned values, ``bits`` = BitsStored; ``-x`` for signed
    or float ones, ``bits`` None), then ``* slope + intercept`` (RescaleSlope and
    RescaleIntercept, dimensionless and in gray levels) unless they are 1 and 0. Each
    step rounded as numpy rounds it: the same values, bit for bit, as
    :func:`gray_levels_reference`. A 2-D image of 8-32 bit integers takes one
    compiled pass (:func:`tbscore.core.pixels.gray_levels_into`), anything else
    numpy's steps (:func:`_gray_levels_numpy`).
    """
    if stored.ndim != 2 or f"{stored.dtype.kind}{stored.dtype.itemsize}" not in _GRAY_KERNEL_KINDS:
        return _gray_levels_numpy(stored, inverted, bits, slope, intercept)
    from tbscore.core.pixels import gray_levels_into

    invert, top = 0, 0.0
    if inverted:
        invert, top = (1, 2.0**bits - 1.0) if bits is not None else (2, 0.0)
    rescale = slope != 1.0 or intercept != 0.0
    out = np.empty(stored.shape)
    gray_levels_into(stored, invert, top, float(slope), float(intercept), rescale, out)
    return out


def _gray_levels_numpy(
    stored: np.ndarray, inverted: bool, bits: int | None, slope: float, intercept: float
) -> np.ndarray:
    """:func:`gray_levels` in numpy's steps (the loader's code before the compiled
    pass; for other shapes and dtypes, and the property test's second reference).

    ``float64(x)``, inverted for MONOCHROME1 (``inverted``) on the stored-value range
    (``2**bits - 1 - x`` for unsigned values, ``bits`` = BitsStored; ``-x`` for signed
    or float ones, ``bits`` None), then ``* slope + intercept`` (RescaleSlope and
    RescaleIntercept, dimensionless and in gray levels) unless they are 1 and 0. Each
    step rounded as numpy rounds it, in as few passes over the pixels as that allows:
    the same values, bit for bit, as :func:`gray_levels_reference`.
    """
    if inverted:
        if bits is not None:
            pixels = np.subtract(2.0**bits - 1.0, stored, dtype=np.float64)
        else:
            pixels = np.negative(stored, dtype=np.float64)
    if slope != 1.0 or intercept != 0.0:
        if inverted:
            pixels *= slope
        else:  # the cast and the product in one pass
            pixels = np.multiply(stored, slope, dtype=np.float64)
        pixels += intercept  # also when 0: -0.0 + 0.0 is +0.0
    elif not inverted:
        pixels = stored.astype(np.float64)
    return pixels


def gray_levels_reference(
    stored: np.ndarray, inverted: bool, bits: int | None, slope: float, intercept: float
) -> np.ndarray:
    """:func:`gray_levels` step by step (cast, invert, scale, shift; the loader's
    former code), the reference of its property test."""
    pixels = stored.astype(np.float64)
    if inverted:
        if bits is not None:
            np.subtract(2.0**bits - 1.0, pixels, out=pixels)
        else:
            np.negative(pixels, out=pixels)
    if slope != 1.0 or intercept != 0.0:
        pixels *= slope
        pixels += intercept
    return pixels


def load_dicom(
    source: str | Path | Dataset,
    *,
    spacing: tuple[float, float] | None = None,
    override_spacing: bool = False,
    allow_modalities: frozenset[str] | None = None,
) -> DXAImage:
    """Load a 2-D grayscale DXA image from a DICOM file or data set.

    Parameters
    ----------
    source : str, Path or pydicom Dataset
        The DICOM file, or an in-memory data set.
    spacing : (float, float), optional
        Pixel spacing ``(row_mm, col_mm)`` in mm, used when the file has none (or
        always, with ``override_spacing=True``).
    override_spacing : bool
        Use ``spacing`` even when the file has a spacing attribute.
    allow_modalities : frozenset of str, optional
        Accepted Modality values (default :data:`ACCEPTED_MODALITIES`; files with no
        Modality are accepted). A set containing ``"*"`` accepts every modality.

    Returns
    -------
    DXAImage

    Raises
    ------
    tbscore.errors.InputError
        A subclass naming the file and the reason: not DICOM / truncated
        (:class:`DicomReadError`), no pixel data (:class:`NotAnImageError`), colour
        (:class:`ColourImageError`, a kind of :class:`UnsupportedImageError`),
        multi-frame, 3-D or non-projection modality (:class:`UnsupportedImageError`),
        compressed without decoder (:class:`CompressedPixelDataError`), no spacing
        (:class:`MissingPixelSpacingError`).
    """
    file_sha = None
    if isinstance(source, Dataset):
        ds = source
        name = str(getattr(ds, "filename", None) or "<dataset>")
    else:
        path = source if isinstance(source, Path) else Path(source)
        name = str(path)
        ds, data = read_dicom_bytes(path)  # the one DICOM rule, one read of the file
        file_sha = hashlib.sha256(data).hexdigest()
        del data
    try:
        image = _load(ds, name, file_sha, spacing, override_spacing, allow_modalities)
    except InputError:
        raise
    except Exception as exc:  # last resort: never a bare traceback
        raise DicomReadError(f"unexpected error ({type(exc).__name__}: {exc})", name) from exc
    if not isinstance(source, Dataset) and 0x7FE00010 in ds:  # PixelData, by its tag
        del ds.PixelData  # decoded into image.pixels; the header stays for the SR writer
    return image


def check_header(
    ds: Dataset | _Values,
    name: str,
    spacing: tuple[float, float] | None = None,
    override_spacing: bool = False,
    allow_modalities: frozenset[str] | None = None,
    *,
    pixels_read: bool = True,
) -> tuple[tuple[float, float], str]:
    """The loader's checks that need only the header; returns the pixel spacing (mm)
    and its source.

    ``pixels_read=False`` for a header read with ``stop_before_pixels`` (then the
    presence of pixel data is judged from Rows/Columns). Raises the same typed errors
    as :func:`load_dicom` (``NotAnImageError``, ``UnsupportedImageError``,
    ``ColourImageError``, ``MissingPixelSpacingError``, ``InputError``).
    """
    ds = _values(ds)
    if pixels_read:
        has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    else:
        has_pixels = "Rows" in ds and "Columns" in ds
    if not has_pixels:
        what = _text(ds, "Modality") or "unknown modality"
        sop = ds.get("SOPClassUID")
        sop_name = getattr(sop, "name", None) or (str(sop) if sop else "unknown SOP class")
        raise NotAnImageError(f"no pixel data ({what}, {sop_name})", name)
    modality = _text(ds, "Modality")
    allowed = ACCEPTED_MODALITIES if allow_modalities is None else allow_modalities
    if modality is not None and "*" not in allowed and modality.upper() not in allowed:
        raise UnsupportedImageError(
            f"modality {modality} is not a projection DXA image "
            f"(accepted: {', '.join(sorted(allowed))})",
            name,
        )
    photometric = (_text(ds, "PhotometricInterpretation") or "MONOCHROME2").upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1 or photometric in _COLOUR:
        raise ColourImageError(
            f"colour image ({photometric}, {samples} samples per pixel): likely a report "
            "screenshot, not a DXA image",
            name,
        )
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedImageError(f"unsupported PhotometricInterpretation {photometric}", name)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnsupportedImageError(
            f"multi-frame image ({frames} frames); expected one 2-D image", name
        )
    return _spacing(ds, spacing, name, override_spacing)


def inspect_dicom(
    path: str | Path,
    *,
    spacing: tuple[float, float] | None = None,
    override_spacing: bool = False,
    allow_modalities: frozenset[str] | None = None,
) -> tuple[DicomMetadata, tuple[float, float], str]:
    """Check a DICOM file from its header only (pixel data not read or decoded).

    Returns
    -------
    (DicomMetadata, spacing_mm, spacing_source)

    Raises
    ------
    TBSError
        What :func:`load_dicom` would raise before decoding the pixels.
    """
    path = Path(path)
    source = str(path)
    ds = _Values(read_dicom(path, stop_before_pixels=True))  # the one DICOM rule
    spacing_mm, spacing_source = check_header(
        ds, source, spacing, override_spacing, allow_modalities, pixels_read=False
    )
    return _metadata(ds), spacing_mm, spacing_source


def _load(
    ds: Dataset,
    name: str,
    file_sha: str | None,
    spacing: tuple[float, float] | None,
    override_spacing: bool,
    allow_modalities: frozenset[str] | None,
) -> DXAImage:
    header = ds
    ds = _Values(header)  # the header values read once, for all the steps below
    spacing_mm, spacing_source = check_header(ds, name, spacing, override_spacing, allow_modalities)
    photometric = (_text(ds, "PhotometricInterpretation") or "MONOCHROME2").upper()
    stored = _decode(ds, name)
    if stored.ndim != 2:
        raise UnsupportedImageError(f"pixel array has {stored.ndim} dimensions, expected 2", name)
    if min(stored.shape) < 8:
        raise UnsupportedImageError(f"image too small ({stored.shape[0]}x{stored.shape[1]})", name)
    digest = hashlib.sha256(f"{stored.dtype.str}{stored.shape}".encode())
    digest.update(np.ascontiguousarray(stored).data)  # the bytes in place, no copy
    pixel_sha = digest.hexdigest()
    inverted = photometric == "MONOCHROME1"
    bits = None
    if inverted and stored.dtype.kind == "u":  # np.unsignedinteger
        bits = int(ds.get("BitsStored", stored.dtype.itemsize * 8))
    raw_slope = ds.get("RescaleSlope")
    slope = 1.0 if raw_slope is None or raw_slope == "" else float(raw_slope)
    if slope == 0 or not math.isfinite(slope):
        raise UnsupportedImageError(
            f"RescaleSlope is {raw_slope}: the gray levels would be meaningless", name
        )
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    transform = (inverted, bits, slope, intercept)
    pixels = gray_levels(stored, *transform)
    # integers (< 2**64) times a finite slope below 1e280 plus a finite intercept below
    # 1e300 stay finite: the pass over the pixels is needed only for other data
    bounded = (
        stored.dtype.kind in "iu"  # np.integer: signed or unsigned
        and abs(slope) < 1e280
        and math.isfinite(intercept)
        and abs(intercept) < 1e300
    )
    if not bounded and not np.all(np.isfinite(pixels)):
        raise UnsupportedImageError("pixel data contains non-finite values", name)
    return DXAImage(
        pixels=pixels,
        spacing_mm=spacing_mm,
        spacing_source=spacing_source,
        metadata=_metadata(ds),
        source=name,
        pixel_sha256=pixel_sha,
        file_sha256=file_sha,
        header=header,
        pixel_transform=transform,
    )
