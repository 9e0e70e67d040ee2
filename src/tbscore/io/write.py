"""Write 2-D grayscale images as DICOM Secondary Capture files.

Used for the bundled phantom images and for exports. Only pydicom is needed; the file
is an uncompressed Part-10 file (Explicit VR Little Endian) of SOP class Secondary
Capture Image Storage.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

__all__ = ["write_secondary_capture", "SECONDARY_CAPTURE_SOP_CLASS", "SPACING_TAG_CHOICES"]

#: Secondary Capture Image Storage.
SECONDARY_CAPTURE_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"

#: Values accepted for ``spacing_tag``.
SPACING_TAG_CHOICES = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing", None)

_PATIENT_KEYS = {
    "name": "PatientName",
    "id": "PatientID",
    "sex": "PatientSex",
    "age": "PatientAge",
    "birth_date": "PatientBirthDate",
    "height_m": "PatientSize",
    "weight_kg": "PatientWeight",
}


def _ds(x: float) -> str:
    return format_number_as_ds(float(x))


def _to_stored(
    pixels: np.ndarray, bits: int, value_range: tuple[float, float] | None
) -> tuple[np.ndarray, float | None, float | None]:
    """Return (values in [0, 2**bits - 1], rescale slope, rescale intercept)."""
    maxval = 2**bits - 1
    dtype = np.uint8 if bits == 8 else np.uint16
    if pixels.dtype == np.bool_ or np.issubdtype(pixels.dtype, np.integer):
        if value_range is None:
            if pixels.size and (pixels.min() < 0 or pixels.max() > maxval):
                raise ValueError(
                    f"integer pixel values span [{pixels.min()}, {pixels.max()}], outside the "
                    f"{bits}-bit range [0, {maxval}]; pass floats or value_range to rescale"
                )
            return pixels.astype(dtype), None, None
        pixels = pixels.astype(np.float64)
    if not np.issubdtype(pixels.dtype, np.floating):
        raise ValueError(f"unsupported pixel dtype {pixels.dtype}")
    pixels = pixels.astype(np.float64)
    if not np.all(np.isfinite(pixels)):
        raise ValueError("pixel data contains non-finite values")
    lo, hi = value_range if value_range is not None else (float(pixels.min()), float(pixels.max()))
    if not hi > lo:
        hi = lo + 1.0
    scaled = np.clip(np.rint((pixels - lo) * (maxval / (hi - lo))), 0, maxval)
    return scaled.astype(dtype), (hi - lo) / maxval, lo


def write_secondary_capture(
    path: str | Path,
    pixels: np.ndarray,
    spacing_mm: Sequence[float] | None,
    *,
    photometric: str = "MONOCHROME2",
    bits: int = 16,
    modality: str = "BMD",
    patient: Mapping[str, Any] | None = None,
    study_date: str | _dt.date | None = None,
    study_time: str | None = None,
    series_description: str | None = None,
    manufacturer: str = "tbscore phantom",
    extra: Mapping[str, Any] | None = None,
    spacing_tag: str | None = "PixelSpacing",
    value_range: tuple[float, float] | None = None,
    uid_entropy: str | None = None,
) -> Path:
    """Write a 2-D grayscale image as a DICOM Secondary Capture Part-10 file.

    Parameters
    ----------
    path : str or Path
        Output file. Parent folders are created.
    pixels : (rows, cols) ndarray
        Image in display convention: higher values mean brighter (more attenuation
        for DXA). How values become stored values:

        * integer or bool arrays whose values lie in ``[0, 2**bits - 1]`` are written
          as given (``ValueError`` if out of range, unless ``value_range`` is set);
        * float arrays are mapped linearly so that ``[min, max]`` (or ``value_range``,
          with clipping) spans the full range ``[0, 2**bits - 1]``, then rounded.
          RescaleSlope / RescaleIntercept are written so that a reader recovers the
          original values to within one quantisation step.
    spacing_mm : (row_mm, col_mm) or None
        Distance between the centres of adjacent rows and adjacent columns, in mm
        (DICOM PixelSpacing order). Ignored when ``spacing_tag`` is None.
    photometric : {"MONOCHROME2", "MONOCHROME1"}
        For MONOCHROME1 the stored values are inverted (``2**bits - 1 - value``) so
        that a reader which inverts MONOCHROME1 gets ``pixels`` back.
    bits : {8, 16}
        Bits allocated and stored (unsigned).
    modality : str
        Modality (0008,0060); ``"BMD"`` for DXA.
    patient : mapping, optional
        Keys ``name``, ``id``, ``sex``, ``age`` (DICOM AS, e.g. ``"065Y"``),
        ``birth_date`` (``YYYYMMDD``), ``height_m`` (m), ``weight_kg`` (kg); written to
        PatientName, PatientID, PatientSex, PatientAge, PatientBirthDate, PatientSize,
        PatientWeight.
    study_date : str (``YYYYMMDD``) or date, optional
        Study / series / content date; today when omitted.
    study_time : str (``HHMMSS``), optional
        Study / series / content time; now when omitted.
    series_description : str, optional
        Series Description (0008,103E).
    manufacturer : str
        Manufacturer (0008,0070).
    extra : mapping, optional
        Further attributes as ``{keyword: value}``, set last (they override).
    spacing_tag : {"PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing", None}
        Attribute that carries ``spacing_mm``; None writes no spacing at all.
    value_range : (lo, hi), optional
        Fixed input range mapped to ``[0, 2**bits - 1]`` (values outside are clipped).
    uid_entropy : str, optional
        When given, the Study, Series and SOP Instance UIDs are derived from it
        (``generate_uid(entropy_srcs=...)``), so that the same call writes the same
        file; otherwise they are random.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"pixels must be 2-D, got shape {pixels.shape}")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    photometric = photometric.upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric}")
    if spacing_tag not in SPACING_TAG_CHOICES:
        raise ValueError(f"spacing_tag must be one of {SPACING_TAG_CHOICES}, got {spacing_tag!r}")
    if spacing_tag is not None:
        if spacing_mm is None or len(spacing_mm) != 2 or min(spacing_mm) <= 0:
            raise ValueError(f"spacing_mm must be two positive numbers, got {spacing_mm}")

    values, slope, intercept = _to_stored(pixels, bits, value_range)
    maxval = 2**bits - 1
    stored = (maxval - values).astype(values.dtype) if photometric == "MONOCHROME1" else values

    if study_date is None:
        study_date = _dt.date.today()
    date = study_date.strftime("%Y%m%d") if isinstance(study_date, _dt.date) else str(study_date)
    now = study_time if study_time is not None else _dt.datetime.now().strftime("%H%M%S")

    def new_uid(role: str) -> str:
        return generate_uid(entropy_srcs=None if uid_entropy is None else [uid_entropy, role])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE_SOP_CLASS
    sop_uid = new_uid("sop")
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = SECONDARY_CAPTURE_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.ConversionType = "SYN" if manufacturer.startswith("tbscore") else "WSD"
    ds.Manufacturer = manufacturer
    ds.ReferringPhysicianName = ""
    if series_description is not None:
        ds.SeriesDescription = series_description
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    for key, value in (patient or {}).items():
        if key not in _PATIENT_KEYS:
            raise ValueError(f"unknown patient key {key!r}; expected {sorted(_PATIENT_KEYS)}")
        if key in ("height_m", "weight_kg"):
            value = _ds(value)
        setattr(ds, _PATIENT_KEYS[key], value)
    ds.StudyInstanceUID = new_uid("study")
    ds.SeriesInstanceUID = new_uid("series")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.BodyPartExamined = "LSPINE"

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(n) for n in stored.shape)
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if spacing_tag is not None:
        setattr(ds, spacing_tag, [_ds(spacing_mm[0]), _ds(spacing_mm[1])])
    if slope is not None:
        ds.RescaleSlope = _ds(slope)
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleType = "US"
    data = np.ascontiguousarray(stored.astype(stored.dtype.newbyteorder("<"))).tobytes()
    ds.PixelData = data + b"\x00" if len(data) % 2 else data

    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)

    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
