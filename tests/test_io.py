"""DICOM loader: conversions, spacing, metadata, and typed errors for bad input."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbscore.errors import (
    CompressedPixelDataError,
    DicomReadError,
    InputError,
    MissingPixelSpacingError,
    NotAnImageError,
    TBSError,
    UnsupportedImageError,
)
from tbscore.io import load_dicom


def _ramp(dtype=np.uint16):
    return (np.arange(64 * 48).reshape(64, 48) % 1000).astype(dtype)


def test_monochrome2_and_rescale(dicom_file):
    path = dicom_file(_ramp(), RescaleSlope="2", RescaleIntercept="-5")
    img = load_dicom(path)
    np.testing.assert_array_equal(img.pixels, _ramp().astype(float) * 2 - 5)
    assert img.spacing_mm == (1.0, 1.0) and img.spacing_source == "PixelSpacing"
    assert img.pixels.dtype == np.float64 and img.source == str(path)
    assert len(img.file_sha256) == 64 and len(img.pixel_sha256) == 64


def test_monochrome1_is_inverted_so_bone_is_bright(dicom_file):
    raw = _ramp(np.uint8)
    img = load_dicom(dicom_file(raw, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(img.pixels, 255.0 - raw)


def test_pixel_hash_ignores_uids_but_file_hash_does_not(dicom_file):
    a = load_dicom(dicom_file(_ramp(), name="a.dcm"))
    b = load_dicom(dicom_file(_ramp(), name="b.dcm"))
    assert a.pixel_sha256 == b.pixel_sha256 and a.file_sha256 != b.file_sha256


@pytest.mark.parametrize(
    "tag", ["PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"]
)
def test_spacing_sources_and_non_square(dicom_file, tag):
    img = load_dicom(dicom_file(_ramp(), spacing=(1.05, 0.6), spacing_tag=tag))
    assert img.spacing_mm == (1.05, 0.6) and img.spacing_source == tag


def test_spacing_precedence(dicom_file):
    ds_path = dicom_file(_ramp(), spacing=(0.5, 0.5))
    ds = pydicom.dcmread(ds_path)
    ds.ImagerPixelSpacing = ["0.9", "0.9"]
    assert load_dicom(ds).spacing_mm == (0.5, 0.5)


def test_missing_spacing_needs_user_value(dicom_file):
    path = dicom_file(_ramp(), spacing=None, PixelAspectRatio=["105", "60"])
    with pytest.raises(MissingPixelSpacingError) as err:
        load_dicom(path)
    assert str(path) in str(err.value) and "PixelAspectRatio" in str(err.value)
    img = load_dicom(path, spacing=(1.05, 0.6))
    assert img.spacing_mm == (1.05, 0.6) and img.spacing_source == "user"
    other = dicom_file(_ramp(), name="o.dcm", spacing=(1.0, 1.0))
    assert load_dicom(other, spacing=(2.0, 2.0)).spacing_mm == (1.0, 1.0)
    assert load_dicom(other, spacing=(2.0, 2.0), override_spacing=True).spacing_mm == (2.0, 2.0)
    with pytest.raises(InputError, match="positive"):
        load_dicom(path, spacing=(0.0, 1.0))


def test_metadata(dicom_file):
    path = dicom_file(
        _ramp(),
        PatientAge="065Y",
        PatientSex="F",
        PatientSize="1.6",
        PatientWeight="64",
        Manufacturer="ACME",
        ManufacturerModelName="X1",
        StudyDate="20260102",
    )
    m = load_dicom(path).metadata
    assert m.age_years == 65 and m.sex == "F" and m.bmi == pytest.approx(25.0)
    assert m.manufacturer == "ACME" and m.model == "X1" and m.study_date == "20260102"
    assert m.sop_instance_uid and m.patient_name == "TEST^PATIENT"
    assert "patient_name" not in m.to_dict(include_phi=False)
    path2 = dicom_file(_ramp(), name="b.dcm", PatientBirthDate="19600101", StudyDate="20250101")
    assert load_dicom(path2).metadata.age_years == pytest.approx(65.0, abs=0.01)


def test_rgb_screenshot_is_rejected(dicom_file):
    rgb = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(UnsupportedImageError, match="colour"):
        load_dicom(dicom_file(rgb, photometric="RGB", modality="OT"))


def test_multiframe_is_rejected(dicom_file):
    path = dicom_file(np.zeros((64, 32), np.uint8), NumberOfFrames=2, Rows=32)
    with pytest.raises(UnsupportedImageError, match="multi-frame"):
        load_dicom(path)


def test_ct_is_rejected_with_reason(dicom_file):
    with pytest.raises(UnsupportedImageError, match="modality CT"):
        load_dicom(dicom_file(_ramp(), modality="CT"))
    for modality in ("BMD", "OT", "CR", "DX", "RG", "SC"):  # DXA exports
        assert load_dicom(dicom_file(_ramp(), modality=modality)).pixels.shape == _ramp().shape


def test_non_image_and_non_dicom_and_truncated(dicom_file, tmp_path):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Modality = "SR"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    with pytest.raises(NotAnImageError, match="no pixel data"):
        load_dicom(ds)
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a DICOM file\n" * 20)
    with pytest.raises(DicomReadError, match="not a DICOM"):
        load_dicom(text)
    with pytest.raises(DicomReadError, match="does not exist"):
        load_dicom(tmp_path / "missing.dcm")
    good = dicom_file(_ramp())
    data = good.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 2000])
    with pytest.raises(DicomReadError) as err:
        load_dicom(cut)
    assert str(cut) in str(err.value)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(DicomReadError):
        load_dicom(empty)


def test_compressed_without_decoder_names_the_extra(monkeypatch):
    """With every decoder plugin hidden, compressed pixel data gives a typed error naming
    the optional extra (and the file), not pydicom's exception."""
    from pydicom.data import get_testdata_file
    from pydicom.pixels.decoders.base import get_decoder

    path = get_testdata_file("JPEG2000.dcm", download=False)
    if path is None:
        pytest.skip("no bundled JPEG 2000 file")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    monkeypatch.setattr(decoder, "_available", {})  # as if pillow/openjpeg were missing
    with pytest.raises(CompressedPixelDataError) as err:
        load_dicom(path, allow_modalities={"*"})
    assert "tbscore[jpeg]" in str(err.value) and str(path) in str(err.value)
    assert "JPEG 2000" in str(err.value)
    monkeypatch.undo()  # the same file decodes once a decoder is available again
    if get_decoder(ds.file_meta.TransferSyntaxUID).is_available:
        assert load_dicom(path, allow_modalities={"*"}, spacing=(1.0, 1.0)).pixels.ndim == 2


def _corpus() -> list[Path]:
    root = Path(pydicom.__file__).parent / "data" / "test_files"
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".json", ".txt", ".gz", ".bz2", ".zip")
    )


@pytest.mark.parametrize("modalities", [None, frozenset({"*"})], ids=["default", "any-modality"])
def test_every_bundled_pydicom_file_loads_or_raises_a_tbscore_error(modalities):
    files = _corpus()
    assert len(files) > 50
    outcomes = {"loaded": 0, "error": 0}
    for path in files:
        try:
            img = load_dicom(path, spacing=(1.0, 1.0), allow_modalities=modalities)
        except TBSError as exc:
            assert exc.source == str(path) and exc.reason
            outcomes["error"] += 1
        else:
            assert img.pixels.ndim == 2 and np.all(np.isfinite(img.pixels))
            outcomes["loaded"] += 1
    assert outcomes["loaded"] > 0 and outcomes["error"] > 0


_SAMPLE_A = Path(__file__).resolve().parents[1] / "sample_dicom" / "phantom_a_square.dcm"


@pytest.mark.parametrize("alloc", [8, 16, 32])
@pytest.mark.parametrize("signed", [0, 1])
@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
def test_native_pixel_read_equals_pydicom(alloc, signed, ts):
    """The loader's direct read of native pixel data gives pydicom's pixel_array (values
    and dtype), with unused high bits cleared or sign-extended as pydicom does."""
    from tbscore.io.load import _native_pixels

    rng = np.random.default_rng(alloc + signed)
    ds = pydicom.dcmread(_SAMPLE_A)
    ds.file_meta.TransferSyntaxUID = ts
    for stored in sorted({1, alloc // 2 + 1, alloc - 1, alloc}):
        raw = rng.integers(0, 2**alloc, (7, 9), dtype=np.uint64).astype(f"<u{alloc // 8}")
        ds.Rows, ds.Columns = raw.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = alloc, stored, stored - 1
        ds.PixelRepresentation = signed
        ds.PixelData = raw.tobytes() + (b"\0" if raw.nbytes % 2 else b"")
        want = ds.pixel_array
        got = _native_pixels(ds, ds.file_meta.TransferSyntaxUID)
        assert got is not None and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    ds.PixelData = ds.PixelData[:-4]  # short pixel data: left to pydicom (its error)
    assert _native_pixels(ds, ds.file_meta.TransferSyntaxUID) is None


@settings(deadline=None)  # the first example of each dtype compiles (or loads) the pass
@given(
    kind=st.sampled_from(["u1", "u2", "u4", "i1", "i2", "i4", "f4", "f8"]),
    seed=st.integers(0, 2**32 - 1),
    inverted=st.booleans(),
    slope=st.one_of(st.just(1.0), st.floats(-1e3, 1e3, allow_nan=False).filter(bool)),
    intercept=st.one_of(st.just(0.0), st.just(-0.0), st.floats(-1e4, 1e4, allow_nan=False)),
    bits=st.integers(1, 16),
    layout=st.sampled_from(["c", "fortran", "strided"]),
    special=st.booleans(),
)
def test_gray_levels_match_the_stepwise_reference(
    kind, seed, inverted, slope, intercept, bits, layout, special
):
    """The loader's compiled cast / inversion / rescale pass gives the step-by-step
    values and those of its former numpy steps bit for bit (signed zeros, nan and inf
    included: the result key hashes these bytes), on C, Fortran and strided views."""
    from tbscore.io.load import _gray_levels_numpy, gray_levels, gray_levels_reference

    rng = np.random.default_rng(seed)
    dtype = np.dtype(kind)
    if dtype.kind == "f":
        stored = rng.normal(0, 100, (9, 7)).astype(dtype)
        stored[0, 0] = 0.0
    else:
        info = np.iinfo(dtype)
        stored = rng.integers(info.min, info.max, (9, 7), endpoint=True).astype(dtype)
        stored[0, 0] = 0
    if special and dtype.kind == "f":
        stored[1, :4] = [np.nan, np.inf, -np.inf, -0.0]
    if layout == "fortran":
        stored = np.asfortranarray(stored)
    elif layout == "strided":
        stored = stored[::2, 1::3]
    b = bits if dtype.kind == "u" else None
    got = gray_levels(stored, inverted, b, slope, intercept)
    want = gray_levels_reference(stored, inverted, b, slope, intercept)
    assert got.dtype == want.dtype == np.float64
    assert got.tobytes() == want.tobytes()
    assert got.tobytes() == _gray_levels_numpy(stored, inverted, b, slope, intercept).tobytes()
    assert not np.shares_memory(got, stored)
