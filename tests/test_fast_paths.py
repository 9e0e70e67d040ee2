"""The fast paths of issue 14 (h14g) against plain references: the compiled OLS fit,
input checks and nugget-fit closing steps, the full-rectangle covariance sum (numpy
code they replaced, kept here so the tests can fail), the loader's header reads and
single file read, and the ROI finiteness check."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tbscore.core.estimators import (
    _check,
    _nugget_finish,
    _nugget_solve,
    _ols,
    _r2,
    fit_nugget_model,
    nugget_model,
)
from tbscore.errors import ComputationError
from test_uncertainty import _brute_covariance_np


def _ols_reference(d, v):
    x = np.log(d)
    y = np.log(v)
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    w = (x - xm) / sxx
    slope = float(w @ y)
    intercept = float(ym - slope * xm)
    resid = y - (intercept + slope * x)
    ss_res = float(np.sum(resid**2))
    se = math.sqrt(ss_res / (v.size - 2) / sxx) if v.size > 2 else math.nan
    return slope, intercept, _r2(y, intercept + slope * x), se, w / v


def _check_reference(d, v):
    d = np.asarray(d, dtype=float)
    v = np.asarray(v, dtype=float)
    if v.size < 2 or d.size != v.size:
        return "need at least two"
    if np.any(~np.isfinite(v)) or np.any(v <= 0):
        return "variogram values must be positive"
    if np.any(~np.isfinite(d)) or np.any(d <= 0):
        return "lag distances must be positive"
    if np.ptp(np.log(d)) <= 0:
        return "all lag distances are equal"
    return None


def _finish_reference(a, d, vs):
    c_arr, n_arr, ss = _nugget_solve(np.array([a]), d, vs)
    c, n = float(c_arr[0]), float(n_arr[0])
    if not (np.isfinite(ss[0]) and c > 0):
        return c, n, math.inf, None, None
    ld = np.log(d)
    tex = c * np.exp(a * ld)
    m = tex + n
    J = np.column_stack([tex / m, tex * ld / m, 1.0 / m])
    free = np.array([True, 1e-4 < a < 2.0 - 1e-4, n > 1e-9])
    grad = np.zeros(vs.size)
    if free[1]:
        grad = np.linalg.pinv(J[:, free])[1]
    return c, n, float(ss[0]), _r2(np.log(vs), np.log(m)), grad


_points = st.lists(st.floats(0.2, 12.0), min_size=2, max_size=24)


@settings(max_examples=300, deadline=None)
@given(_points, st.floats(0.05, 1.95), st.lists(st.floats(0.5, 2.0), min_size=24, max_size=24))
def test_compiled_ols_equals_numpy(d, a, noise):
    d = np.asarray(d)
    assume(np.ptp(np.log(d)) > 1e-3)
    v = d**a * np.asarray(noise[: d.size])
    got = _ols(d, v)
    slope, intercept, r2, se, grad = _ols_reference(d, v)
    assert got.slope == pytest.approx(slope, rel=1e-12, abs=1e-12)
    assert got.intercept == pytest.approx(intercept, rel=1e-12, abs=1e-12)
    assert got.r2 == pytest.approx(r2, rel=1e-10, abs=1e-12)
    if math.isnan(se):
        assert math.isnan(got.slope_se)
    else:
        assert got.slope_se == pytest.approx(se, rel=1e-9, abs=1e-13)
    np.testing.assert_allclose(got.gradient, grad, rtol=1e-12, atol=1e-12 * np.abs(grad).max())
    assert got.n == d.size and got.nugget == 0.0 and got.estimator == "ols"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1.0, 5.0)),
        min_size=0,
        max_size=6,
    ),
    st.lists(
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1.0, 5.0)),
        min_size=0,
        max_size=6,
    ),
    st.booleans(),
)
def test_compiled_checks_give_the_numpy_verdicts(d, v, same):
    if same and d:
        d = [d[0]] * len(d)  # all distances equal
    want = _check_reference(d, v)
    with np.errstate(all="ignore"):
        if want is None:
            _check(d, v)
        else:
            with pytest.raises(ComputationError, match=want):
                _check(d, v)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(0.3, 12.0), min_size=3, max_size=12, unique=True),
    st.lists(st.integers(1, 2), min_size=12, max_size=12),
    st.floats(0.05, 1.95),
    st.floats(0.0, 10.0),
    st.lists(st.floats(0.7, 1.4), min_size=24, max_size=24),
    st.floats(1e-6, 2.0 - 1e-6),
)
def test_compiled_nugget_finish_equals_numpy(d, reps, a0, n0, noise, a):
    """c, n, the residual sum, R^2 and the gradient at an exponent, as the numpy steps
    (the 1-point _nugget_solve, the Jacobian, pinv of its free columns, _r2) give them."""
    d = np.sort(np.asarray(d))
    assume(np.diff(d).min() > 0.05)
    d = np.repeat(d, reps[: d.size])
    v = (d**a0 + n0) * np.asarray(noise[: d.size])
    vs = v / v.min()
    w, p = 1.0 / vs**2, d**a
    s11, s12, s22 = np.sum(w * p * p), np.sum(w * p), np.sum(w)
    # a well-posed 2 x 2 solve for (c, n): rounding is not amplified past 1e-10
    assume((s11 * s22 - s12 * s12) / (s11 * s22) > 1e-6)
    c, n, ss, r2, J = _nugget_finish(a, d, vs)
    grad = np.linalg.pinv(J)[1] if 1e-4 < a < 2.0 - 1e-4 and J.shape[1] else np.zeros(d.size)
    c0, n0_, ss0, r20, grad0 = _finish_reference(a, d, vs)
    assume(abs(c0) > 1e-9)  # the sign of c not decided by rounding
    assert c == pytest.approx(c0, rel=1e-9)
    assert n == pytest.approx(n0_, rel=1e-9, abs=1e-9 * abs(c0))
    if r20 is None:
        assert not (math.isfinite(ss) and c > 0)
        return
    assert ss == pytest.approx(ss0, rel=1e-8, abs=1e-14)
    assert r2 == pytest.approx(r20, rel=1e-9, abs=1e-11)
    np.testing.assert_allclose(grad, grad0, rtol=1e-8, atol=1e-10 * np.abs(grad0).max())


def test_nugget_fit_on_a_plain_power_law():
    """The whole fit still recovers an exact model (the kernels are wired right)."""
    d = np.array([1.0, 1.0, 1.5, 2.0, 2.0, 3.0, 4.0])
    v = 3.0 * d**1.2 + 0.5
    fit = fit_nugget_model(d, v)
    assert fit.slope == pytest.approx(1.2, abs=1e-6)
    assert fit.nugget == pytest.approx(0.5, rel=1e-4)
    assert math.exp(fit.intercept) == pytest.approx(3.0, rel=1e-5)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.3, 12.0), min_size=1, max_size=12, unique=True),
    st.lists(st.integers(1, 2), min_size=12, max_size=12),
    st.floats(0.05, 1.95),
    st.floats(0.0, 10.0),
    st.lists(st.floats(0.2, 3.0), min_size=24, max_size=24),
)
def test_nugget_model_is_the_fit_without_its_gradient(d, reps, a0, n0, noise):
    """nugget_model gives fit_nugget_model's (intercept, slope, nugget) bit for bit, and
    raises where it raises (too few lags, a variogram that does not rise)."""
    d = np.repeat(np.sort(np.asarray(d)), reps[: len(d)])
    v = (d**a0 + n0) * np.asarray(noise[: d.size])
    try:
        fit = fit_nugget_model(d, v)
    except ValueError as exc:
        with pytest.raises(type(exc), match=str(exc)[:40].replace("(", ".").replace(")", ".")):
            nugget_model(d, v)
        return
    assert nugget_model(d, v) == (fit.intercept, fit.slope, fit.nugget)


# -- the full-rectangle covariance sum (half the displacement grid, by symmetry) -----


# The definition, 2 / (N_i N_j) sum over pair starts x, y of C_ij(x - y)^2: the
# reference of tests/test_uncertainty.py (one definition for both files).
_brute_covariance = _brute_covariance_np


_LAGS = [
    (0, 1),
    (1, 0),
    (1, 1),
    (1, -1),
    (0, 2),
    (2, 0),
    (2, -1),
    (-1, 2),
    (0, 3),
    (3, 1),
    (2, 2),
    (2, -2),
    (2, 1),
    (-1, -2),
    (0, -2),
]  # mirror pairs ((a, b) and (a, -b) or (-a, b)) and lags without a mirror


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(1, 12),
    st.integers(0, 3),
    st.integers(0, 3),
    st.lists(st.sampled_from(_LAGS), min_size=1, max_size=9, unique=True),
    st.sampled_from([(1.0, 1.0), (0.5, 0.7), (1.05, 0.6)]),
    st.floats(0.1, 10.0),
    st.floats(0.1, 1.9),
    st.floats(0.0, 5.0),
)
def test_full_box_covariance_equals_the_definition(nr, nc, top, left, lags, spacing, c, a, n):
    """The closed-form path of a full box (inside a larger all-False frame, as an ROI
    mask of a whole image is) equals the pixel double sum and the row-run path, lags
    longer than the box (no pairs) included."""
    from tbscore.core.uncertainty import variogram_covariance

    box = np.ones((nr, nc), bool)
    frame = np.zeros((nr + top + 2, nc + left + 1), bool)
    frame[top : top + nr, left : left + nc] = True
    lags = np.array(lags)
    want = _brute_covariance(box, lags, spacing, c, a, n)
    tol = {"rtol": 1e-10, "atol": 1e-12 * np.abs(want).max(initial=0.0)}
    got = variogram_covariance(frame, lags, spacing, c, a, n)  # the closed-form path
    np.testing.assert_allclose(got, want, **tol)
    runs = variogram_covariance(frame, lags, spacing, c, a, n, method="runs")
    np.testing.assert_allclose(got, runs, **tol)


# -- calc: non-finite gray levels inside an ROI, looked for in the ROI's box only -------


@pytest.mark.parametrize(("where", "refused"), [((30, 20), True), ((5, 5), False)])
def test_non_finite_pixels_inside_an_roi_only_are_refused(where, refused):
    import tbscore
    from tbscore.errors import InputError

    rng = np.random.default_rng(0)
    img = 1000 + np.cumsum(np.cumsum(rng.normal(size=(96, 64)), 0), 1)
    img[where] = np.nan
    roi = {
        "format": "tbscore-roi/1",
        "units": "px",
        "vertebrae": [
            {"label": "L1", "box": [25, 10, 45, 50]},
            {"label": "L2", "polygon": [[50, 10], [50, 50], [70, 50], [70, 10]]},
        ],
    }
    if refused:
        with pytest.raises(InputError, match="1 pixel.s. of the L1 ROI are NaN or infinite"):
            tbscore.calc(img, roi, spacing=(1.0, 1.0))
        img[where] = 1000.0
        img[60, 30] = np.inf  # inside the polygon
        with pytest.raises(InputError, match="of the L2 ROI are NaN or infinite"):
            tbscore.calc(img, roi, spacing=(1.0, 1.0))
    else:
        assert tbscore.calc(img, roi, spacing=(1.0, 1.0)).vertebrae[0].status == "ok"


# -- the loader: header values and the single read of the file --------------------------

SAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "sample_dicom"


def _dicom_files():
    from pathlib import Path

    import pydicom

    charset = Path(pydicom.__file__).parent / "data" / "charset_files"  # bundled, no download
    return sorted(SAMPLES.glob("*.dcm")) + sorted(charset.glob("*.dcm"))


def test_header_values_equal_dataset_get():
    """_Values.get gives ds.get's value for every keyword the loader reads (and any other
    top-level one), on the samples and pydicom's bundled character-set files, and leaves
    the data set as it was."""
    import warnings

    from pydicom.datadict import keyword_for_tag

    from tbscore.io.load import _text, _Values
    from tbscore.io.sniff import read_dicom

    files = _dicom_files()
    assert len(files) >= 4
    for f in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = read_dicom(f)
            fresh = read_dicom(f)
        keywords = [keyword_for_tag(t) for t in ds.keys()]
        keywords = [k for k in keywords if k] + ["PatientAge", "ReasonForStudy", "Rows"]
        values = _Values(ds)
        texts = _Values(read_dicom(f))
        for k in keywords:
            want = fresh.get(k)
            assert texts.text(k) == _text(fresh, k), (f.name, k)
            got = values.get(k)
            assert type(got) is type(want) and got == want, (f.name, k)
            assert (k in values) == (k in fresh)
        assert values.get("NumberOfFrames", 7) == fresh.get("NumberOfFrames", 7)


_TEXT_KEYWORDS = {  # keyword: VR, one of each text VR the loader reads, and PN
    "Modality": "CS",
    "SOPInstanceUID": "UI",
    "StudyDate": "DA",
    "StudyTime": "TM",
    "PatientAge": "AS",
    "AccessionNumber": "SH",
    "Manufacturer": "LO",
    "PatientName": "PN",
    "StationAETitle": "AE",
    "AcquisitionDateTime": "DT",
}


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(_TEXT_KEYWORDS)),
    st.binary(max_size=12)
    | st.text(" \x00\\\x1bAZaz09._-^=\t\xe9", max_size=12).map(lambda t: t.encode("latin-1")),
    st.sampled_from(["ISO_IR 100", "ISO_IR 192", None, "ISO 2022 IR 87", "ISO_IR 144"]),
)
def test_loader_text_is_the_pydicom_text(keyword, raw, charset):
    """_Values.text (values converted by pydicom's convert_value straight from the raw
    element): the loader's text rule (str(ds.get(k)).strip(), None when empty) on raw
    values of any bytes, for each character set kind, as the full pydicom path has it."""
    import warnings

    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement

    from tbscore.io.load import _text, _Values
    from tbscore.io.sniff import read_dicom

    def dataset():
        ds = read_dicom(SAMPLES / "phantom_a_square.dcm", stop_before_pixels=True)
        if charset is None:
            del ds.SpecificCharacterSet
        else:
            ds.SpecificCharacterSet = charset
        ds._read_charset = ds._character_set  # as read from a file with that set
        tag = tag_for_keyword(keyword)
        ds._dict[tag] = RawDataElement(tag, _TEXT_KEYWORDS[keyword], len(raw), raw, 0, False, True)
        return ds

    assert _Values(dataset())._charset == dataset()._character_set
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            want = _text(dataset(), keyword)
        except Exception as exc:  # pydicom refuses the bytes: so must the loader
            with pytest.raises(type(exc)):
                _Values(dataset()).text(keyword)
            return
        assert _Values(dataset()).text(keyword) == want


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(
        [("Rows", "US"), ("PixelData", "OW"), ("PixelData", "OB"), ("PatientWeight", "DS")]
        + [("PixelSpacing", "DS"), ("PatientName", "PN"), ("SeriesNumber", "IS")]
        + [("SOPClassUID", "UI"), ("Manufacturer", "LO"), ("StationAETitle", "AE")]
    ),
    st.binary(max_size=6) | st.sampled_from([b"0.5\\0.25", b" 12 ", b"1e3", b"A^B=C", b"x\x00"]),
    st.booleans(),
)
def test_raw_number_and_bytes_shortcut_gives_dataset_get(element, raw, undefined_length):
    """_Values.get of a raw value converted by pydicom's convert_value directly: ds.get's
    value and type (US one value, several, none; OB/OW bytes; DS, IS, PN, UI, LO, AE of
    any bytes; an undefined length left to pydicom)."""
    import warnings

    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement

    from tbscore.io.load import _Values
    from tbscore.io.sniff import read_dicom

    keyword, vr = element
    length = 0xFFFFFFFF if undefined_length and vr in ("OB", "OW") else len(raw)

    def dataset():
        ds = read_dicom(SAMPLES / "phantom_a_square.dcm", stop_before_pixels=True)
        tag = tag_for_keyword(keyword)
        ds._dict[tag] = RawDataElement(tag, vr, length, raw, 0, False, True)
        return ds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            want = dataset().get(keyword)
        except Exception as exc:
            with pytest.raises(type(exc)):
                _Values(dataset()).get(keyword)
            return
        got = _Values(dataset()).get(keyword)
    assert type(got) is type(want) and got == want


def test_single_read_gives_the_path_read_dataset(tmp_path):
    """read_dicom_bytes: the data set pydicom reads from the path (same elements, file
    name and time stamp), and the file's bytes; the rule's errors unchanged."""
    import pydicom

    from tbscore.errors import DicomReadError
    from tbscore.io.sniff import read_dicom, read_dicom_bytes

    for f in sorted(SAMPLES.glob("*.dcm")):
        ds, data = read_dicom_bytes(f)
        ref = pydicom.dcmread(f)
        assert data == f.read_bytes()
        assert ds == ref and ds.file_meta == ref.file_meta and ds.preamble == ref.preamble
        assert ds.filename == ref.filename == str(f) and ds.timestamp == ref.timestamp
        assert ds.buffer is None
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(f.read_bytes()[132:])  # no preamble: the content decides
    assert read_dicom_bytes(bare)[0].SOPInstanceUID == read_dicom(bare).SOPInstanceUID
    for name, content in (("short.dcm", b"DICM"), ("text.dcm", b"hello" * 40)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DicomReadError) as a:
            read_dicom(tmp_path / name)
        with pytest.raises(DicomReadError) as b:
            read_dicom_bytes(tmp_path / name)
        assert str(a.value) == str(b.value)
    for missing in (tmp_path / "missing.dcm", tmp_path):
        with pytest.raises(DicomReadError) as a:
            read_dicom(missing)
        with pytest.raises(DicomReadError) as b:
            read_dicom_bytes(missing)
        assert str(a.value) == str(b.value)


# -- batch rows: the text rule of normalize_row, and the cached settings digest --------


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=12), st.integers(), st.floats(allow_nan=True), st.none()))
def test_row_text_rule_unchanged(value):
    """normalize_row's text cells: control characters to spaces, then csv_safe (the
    printable-text shortcut gives the same cell)."""
    import re

    from tbscore.batch.output import _text
    from tbscore.io.tabular import csv_safe

    want = "" if value is None else csv_safe(re.sub(r"[\x00-\x1f\x7f]", " ", str(value)))
    assert _text(value) == want


def test_settings_digest_cached_per_instance_and_unchanged():
    import dataclasses
    import pickle

    from tbscore.core.settings import Settings, _digest

    for kw in ({}, {"min_r2": 0}, {"min_r2": 0.0}, {"estimator": "nugget"}, {"roi_inset_mm": 1}):
        s = Settings(**kw)
        assert s.digest() == _digest(s) == s.digest()  # cached value = computed value
        assert s == Settings(**kw) and hash(s) == hash(Settings(**kw))
        assert "_digest" not in s.to_dict() and "_digest" not in repr(s)
        assert pickle.loads(pickle.dumps(s)).digest() == s.digest()
        assert dataclasses.replace(s, min_lags=5).digest() == _digest(Settings(**kw, min_lags=5))
    # 0 and 0.0 are equal settings but different digests (json writes 0 / 0.0)
    assert Settings(min_r2=0).digest() != Settings(min_r2=0.0).digest()


_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=4)
)
_json_tree = st.recursive(
    _json_leaf,
    lambda kids: (
        st.lists(kids, max_size=5)
        | st.tuples(kids, kids)
        | st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6)
        | st.lists(st.integers(-(2**70), 2**70), max_size=6)
        | st.dictionaries(st.text(max_size=4), kids, max_size=4)
    ),
    max_leaves=30,
)


def _json_safe_reference(obj):
    """json_safe before its list fast path: element by element."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe_reference(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe_reference(v) for v in obj]
    return obj


@settings(max_examples=300, deadline=None)
@given(_json_tree)
def test_json_safe_list_shortcut_unchanged(obj):
    from tbscore.core.result import json_safe

    got, want = json_safe(obj), _json_safe_reference(obj)
    assert repr(got) == repr(want)  # repr: nan-free, types and nesting compared exactly


# -- ROI documents: the spacing check and the overlap check in each ROI's box -----------


@pytest.mark.parametrize(
    ("declared", "ok"),
    [
        ([1.0, 0.8], True),
        ([1.0009, 0.8], True),
        ([1.0011, 0.8], False),
        ([0.8, 1.0], False),
    ],
)
def test_roi_document_spacing_check(declared, ok):
    from tbscore.core.roi import rois_from_dict
    from tbscore.errors import ROIError

    doc = {"pixel_spacing_mm": declared, "vertebrae": [{"label": "L1", "box": [2, 2, 10, 10]}]}
    if ok:
        assert rois_from_dict(doc, (20, 20), (1.0, 0.8)).rois[0].box == (2, 2, 10, 10)
        assert bool(np.allclose(declared, (1.0, 0.8), rtol=1e-3))  # the rule it replaces
    else:
        assert not np.allclose(declared, (1.0, 0.8), rtol=1e-3)
        with pytest.raises(ROIError, match="declares pixel spacing"):
            rois_from_dict(doc, (20, 20), (1.0, 0.8))


@pytest.mark.parametrize(
    ("second", "overlap"),
    [
        ({"box": [9, 2, 14, 10]}, True),  # one row shared with L1's box
        ({"box": [10, 2, 14, 10]}, False),  # touching, no shared pixel
        ({"polygon": [[9, 5], [9, 8], [13, 8], [13, 5]]}, True),
        ({"polygon": [[11, 5], [11, 8], [13, 8], [13, 5]]}, False),
    ],
)
def test_roi_overlap_check(second, overlap):
    from tbscore.core.roi import rois_from_dict
    from tbscore.errors import ROIError

    doc = {"vertebrae": [{"label": "L1", "box": [2, 2, 10, 10]}, {"label": "L2", **second}]}
    if overlap:
        with pytest.raises(ROIError, match="overlap"):
            rois_from_dict(doc, (20, 20), (1.0, 1.0))
    else:
        assert len(rois_from_dict(doc, (20, 20), (1.0, 1.0)).rois) == 2


_ROW_VALUE = st.one_of(
    st.none(),
    st.text(max_size=10),
    st.sampled_from(["=1+1", "+x", "-2", "@a", "'=b", "1e3", "2.5", " 7", "nan", "inf"]),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_normalize_row_idempotent(data):
    """normalize_row of its own output is that output (so the journal writes the
    runner's normalised rows as they are, ``append(normalized=True)``), and the journal
    line is the same either way."""
    from tbscore.batch.output import COLUMNS, FLOAT_COLUMNS, INT_COLUMNS, _csv_line, normalize_row

    row = {}
    for col in data.draw(st.lists(st.sampled_from(COLUMNS), max_size=12, unique=True)):
        value = data.draw(_ROW_VALUE)
        if col in FLOAT_COLUMNS | INT_COLUMNS and isinstance(value, str):
            value = None  # the converters' input for numbers: numbers or nothing
        if col in INT_COLUMNS and isinstance(value, float):
            value = None if not math.isfinite(value) else int(value)
        row[col] = value
    once = normalize_row(row)
    twice = normalize_row(once)
    assert twice == once and list(twice) == list(once)
    assert _csv_line(twice[c] for c in COLUMNS) == _csv_line(once[c] for c in COLUMNS)


# -- h14n: the compiled box finiteness check and the distinct-distance rule -------------


def _box_is_finite_reference(image, box):
    r0, c0, r1, c1 = box
    return bool(np.isfinite(image[r0:r1, c0:c1]).all())


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(1, 12),
    st.tuples(st.integers(-2, 13), st.integers(-2, 13), st.integers(-2, 14), st.integers(-2, 14)),
    st.lists(
        st.tuples(
            st.integers(0, 11), st.integers(0, 11), st.sampled_from([np.nan, np.inf, -np.inf])
        ),
        max_size=3,
    ),
    st.sampled_from(["c", "f", "slice", "f32"]),
)
def test_box_is_finite_equals_numpy(nr, nc, box, bad, layout):
    from tbscore.core.variogram import box_is_finite

    img = np.arange(nr * nc, dtype=np.float64).reshape(nr, nc) - 7.5
    for r, c, x in bad:
        if r < nr and c < nc:
            img[r, c] = x
    if layout == "f":
        img = np.asfortranarray(img)
    elif layout == "slice":
        img = np.pad(img, 1)[1:-1, 1:-1]  # a non-contiguous view
    elif layout == "f32":
        img = img.astype(np.float32)
    r0, c0, r1, c1 = box
    assume(r0 >= 0 and c0 >= 0)  # an ROI's box is never negative
    assert box_is_finite(img, box) == _box_is_finite_reference(img, box)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(1e-6, 1e3),
            st.integers(1, 400).map(lambda k: math.sqrt(k) * 0.1),
            st.integers(-3000, 3000).map(lambda k: (k + 0.5) / 1e9 + 1.0),
        ),
        min_size=1,
        max_size=24,
    )
)
def test_distinct_distance_rule_equals_numpy_round(d):
    from tbscore.core.tbs import _distinct_distances

    rounded = np.round(np.array(d), 9)
    assert _distinct_distances(d) == bool(rounded.min() != rounded.max())
