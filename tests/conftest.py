"""Shared fixtures: small DICOM files built with pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "sample_dicom"


def make_dataset(
    pixels: np.ndarray,
    *,
    spacing: tuple[float, float] | None = (1.0, 1.0),
    spacing_tag: str = "PixelSpacing",
    photometric: str = "MONOCHROME2",
    modality: str = "BMD",
    **attrs,
) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = "TEST^PATIENT"
    ds.PatientID = "ID123"
    arr = np.asarray(pixels)
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 1 if arr.ndim == 2 else arr.shape[2]
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = arr.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if np.issubdtype(arr.dtype, np.signedinteger) else 0
    if arr.ndim == 3:
        ds.PlanarConfiguration = 0
    if spacing is not None:
        setattr(ds, spacing_tag, [f"{spacing[0]:g}", f"{spacing[1]:g}"])
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    return ds


@pytest.fixture
def dicom_file(tmp_path):
    """Factory: write a DICOM file and return its path."""

    def _make(pixels, name="img.dcm", **kw):
        ds = make_dataset(pixels, **kw)
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=True)
        return path

    return _make


#: Set by ``.ci/run``: a test that needs an external tool (dciodvfy, Orthanc, Chromium,
#: pdffonts, ...) fails instead of skipping when the tool is missing.
REQUIRE_TOOLS_ENV = "TBSCORE_REQUIRE_TOOLS"


def require_tool(*names: str) -> str:
    """Path of the first of ``names`` found on PATH; skip the test if none is found,
    or fail it when ``TBSCORE_REQUIRE_TOOLS=1`` (CI installs every tool)."""
    import os
    import shutil

    for name in names:
        path = shutil.which(name)
        if path:
            return path
    msg = f"external tool not found: {' or '.join(names)}"
    if os.environ.get(REQUIRE_TOOLS_ENV) == "1":
        pytest.fail(msg + f" ({REQUIRE_TOOLS_ENV}=1: CI must install it)")
    pytest.skip(msg)
