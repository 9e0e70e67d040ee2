"""One rule per concern (issue 13): the DICOM sniff and the BMI warning.

* One DICOM sniff (:mod:`tbscore.io.sniff`): the loader, ``tbscore batch`` (which inputs
  are DICOM) and ``tbscore export`` (which files are packaged) give the same answer
  on every kind of file, including the ones where their three copies disagreed.
* One BMI rule (:func:`tbscore.clinical.risk.bmi_warning`): ``calc`` and the
  interpretation word it the same way; the report shows one BMI warning.
"""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

import tbscore
from conftest import SAMPLE_DIR, make_dataset
from tbscore.batch.discover import is_dicom as batch_is_dicom
from tbscore.clinical import risk
from tbscore.clinical.interpret import interpret_result, report_warnings
from tbscore.errors import DicomReadError
from tbscore.export.package import _read_dicom as export_read
from tbscore.io.load import inspect_dicom, load_dicom
from tbscore.io.sniff import head_is_dicom, is_dicom, read_dicom
from tbscore.render.report import build_report


def _pixels(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(1000, 50, (128, 64)), 0, 4000).astype(np.uint16)


def _bare(ds: Dataset, *, meta: bool) -> bytes:
    """A data set written without the 128-byte preamble (with or without file meta)."""
    buf = io.BytesIO()
    if meta:
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()[132:]
    pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True)
    return buf.getvalue()


@pytest.fixture
def files(tmp_path):
    """name -> (path, is DICOM by the rule)."""
    full = make_dataset(_pixels())
    out = {}

    def put(name, data, expect):
        path = tmp_path / name
        path.write_bytes(data)
        out[name] = (path, expect)

    buf = io.BytesIO()
    full.save_as(buf, enforce_file_format=True)
    put("part10.dcm", buf.getvalue(), True)
    put("bare_meta.txt", _bare(make_dataset(_pixels()), meta=True), True)  # starts (0002,..)
    no_meta = make_dataset(_pixels())
    no_meta.file_meta = pydicom.dataset.FileMetaDataset()
    put("bare_dataset", _bare(no_meta, meta=False), True)  # starts (0008,..)
    # no preamble, first element (0010,0010): the loader used to accept it (forced parse
    # found PixelData) while batch said "not DICOM"; now none of them does
    patient_first = Dataset()
    patient_first.PatientName = "X"
    patient_first.Rows, patient_first.Columns = 2, 2
    patient_first.BitsAllocated = 16
    patient_first.PixelData = b"\0" * 8
    put("patient_first.dcm", _bare(patient_first, meta=False), False)
    put("text.dcm", b"hello, not a DICOM file\n" * 20, False)
    put("junk.bin", bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)), False)
    put("group8_garbage.dcm", b"\x08\x00" + b"\x01" * 300, False)
    put("empty.dcm", b"", False)
    return out


def test_loader_batch_and_export_agree_on_what_is_dicom(files):
    for name, (path, expect) in files.items():
        assert is_dicom(path) is expect, name
        assert batch_is_dicom(path) is expect, name
        assert is_dicom(path.read_bytes()) is expect, name
        assert head_is_dicom(path, path.read_bytes()[:132]) is expect, name
        assert (export_read(path) is not None) is expect, name
        if expect:
            assert "PixelData" in read_dicom(path)
            assert "PixelData" not in read_dicom(path, stop_before_pixels=True)
        else:
            for read in (read_dicom, load_dicom, inspect_dicom):
                with pytest.raises(DicomReadError, match="not a DICOM file") as err:
                    read(path)
                assert err.value.source == str(path)


def test_dicom_files_without_preamble_still_load(files):
    part10 = load_dicom(files["part10.dcm"][0])
    got = load_dicom(files["bare_meta.txt"][0])
    assert got.shape == part10.shape and got.spacing_mm == (1.0, 1.0)
    assert np.array_equal(got.pixels, part10.pixels)


def test_missing_and_folder_are_read_errors(tmp_path):
    with pytest.raises(DicomReadError, match="does not exist"):
        read_dicom(tmp_path / "nope.dcm")
    with pytest.raises(DicomReadError, match="not a regular file"):
        read_dicom(tmp_path)
    assert not is_dicom(tmp_path / "nope.dcm")


# --------------------------------------------------------------------------- BMI rule
@pytest.mark.parametrize("bmi", [14.9, 15.0, 37.0, 37.01, None])
def test_bmi_warning_range(bmi):
    text = risk.bmi_warning(bmi)
    lo, hi = risk.BMI_RELIABLE_RANGE
    assert (text is not None) is (bmi is not None and not lo <= bmi <= hi)
    if text is not None:
        assert f"{bmi:g} kg/m²" in text and "Looker 2016" in text


def _result_with_bmi(bmi_header: float):
    ds = pydicom.dcmread(SAMPLE_DIR / "phantom_a_square.dcm")
    ds.PatientSize, ds.PatientWeight = "1.0", str(bmi_header)  # BMI = PatientWeight
    return tbscore.calc(ds, SAMPLE_DIR / "phantom_a_square.roi.json")


def test_calc_words_the_bmi_warning_like_the_interpretation():
    result = _result_with_bmi(41.0)
    assert result.metadata["bmi"] == 41.0
    assert risk.bmi_warning(41.0) in result.warnings
    interp = interpret_result(result)  # BMI from the header: same value, same text
    assert risk.bmi_warning(41.0) in interp.warnings
    assert sum("BMI" in w for w in report_warnings(result, interp)) == 1
    assert not [w for w in _result_with_bmi(25.0).warnings if "BMI" in w]


def test_report_shows_one_bmi_warning_about_the_bmi_used():
    result = _result_with_bmi(41.0)
    # entered BMI also out of range: only the interpretation's (the BMI it used)
    interp = interpret_result(result, bmi=45.0)
    shown = build_report(result, interp).warnings
    assert [w for w in shown if "BMI" in w] == [risk.bmi_warning(45.0)]
    # entered BMI in range: the header's warning stays (as before)
    interp = interpret_result(result, bmi=25.0)
    shown = build_report(result, interp).warnings
    assert [w for w in shown if "BMI" in w] == [risk.bmi_warning(41.0)]
    # no interpretation: the result's warning
    assert [w for w in build_report(result, None).warnings if "BMI" in w] == [
        risk.bmi_warning(41.0)
    ]
    # a warning that only starts with "BMI" is no longer taken for the BMI rule's
    other = replace(result, warnings=(*result.warnings, "BMI-like note from elsewhere"))
    shown = build_report(other, interpret_result(other, bmi=45.0)).warnings
    assert "BMI-like note from elsewhere" in shown


# ------------------------------------------------------------- typed errors (issue 13)
def test_kernels_and_path_format_raise_tbs_errors():
    from tbscore.core.estimators import fit_slope
    from tbscore.core.variogram import variogram
    from tbscore.errors import ComputationError, SettingsError, TBSError
    from tbscore.io.paths import format_path

    image = np.zeros((8, 8))
    with pytest.raises(ComputationError, match="shape") as err:
        variogram(image, np.ones((4, 4), bool), [(0, 1)])
    assert isinstance(err.value, TBSError) and isinstance(err.value, ValueError)
    with pytest.raises(ComputationError, match="two"):
        fit_slope("ols", np.array([1.0]), np.array([1.0]))
    with pytest.raises(SettingsError, match="path format"):
        format_path("/x/y.dcm", "sideways")
