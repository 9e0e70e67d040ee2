"""Slope, lag selection, invariances and the L1-L4 rule."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tbscore
from tbscore.core.result import TBSResult
from tbscore.core.roi import VertebraROI, VertebraROIs
from tbscore.core.settings import Settings
from tbscore.core.tbs import combine_l1_l4, fit_loglog, select_lags, vertebra_tbs
from tbscore.errors import ROIError, SettingsError


def _boxes(shape=(200, 120)):
    return {
        "format": "tbscore-roi/1",
        "units": "px",
        "vertebrae": [
            {"label": f"L{i + 1}", "box": [10 + 45 * i, 20, 50 + 45 * i, 100]} for i in range(4)
        ],
    }


def _texture(shape=(200, 120), seed=0):
    rng = np.random.default_rng(seed)
    return (
        np.cumsum(np.cumsum(rng.normal(size=shape), axis=0), axis=1) * 0.1
        + rng.normal(size=shape) * 3
    )


def test_select_lags_square():
    lags, d = select_lags((1.0, 1.0), 0.5, 3.0)
    expected = {
        (1, 0): 1,
        (2, 0): 2,
        (3, 0): 3,
        (0, 1): 1,
        (0, 2): 2,
        (0, 3): 3,
        (1, 1): math.sqrt(2),
        (2, 2): 2 * math.sqrt(2),
        (1, -1): math.sqrt(2),
        (2, -2): 2 * math.sqrt(2),
    }
    got = {tuple(map(int, lag)): dist for lag, dist in zip(lags, d, strict=True)}
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v)
    assert np.all(np.diff(d) >= 0)


def test_select_lags_non_square_uses_physical_distance():
    lags, d = select_lags((1.05, 0.60), 0.5, 2.0, ("vertical", "horizontal"))
    got = {tuple(map(int, lag)) for lag in lags}
    assert got == {(1, 0), (0, 1), (0, 2), (0, 3)}  # 1.05; 0.6, 1.2, 1.8 mm
    assert d.max() <= 2.0


def test_fit_loglog_exact_power_law():
    d = np.array([1.0, 1.5, 2.0, 3.0])
    fit = fit_loglog(d, 7.0 * d**1.3)
    assert fit.slope == pytest.approx(1.3, abs=1e-12)
    assert fit.intercept == pytest.approx(math.log(7.0))
    assert fit.r2 == pytest.approx(1.0)
    from tbscore.errors import ComputationError

    with pytest.raises(ComputationError):
        fit_loglog(d, -d)
    with pytest.raises(ComputationError):
        fit_loglog([1.0, 1.0], [1.0, 2.0])


@settings(max_examples=30, deadline=None)
@given(st.floats(0.01, 1e4).filter(lambda a: a > 0) | st.floats(-1e4, -0.01), st.floats(-1e5, 1e5))
def test_gray_level_affine_maps_leave_the_slope_unchanged(a, b):
    img = _texture()
    r1 = tbscore.calc(img, _boxes(), spacing=(1.0, 1.0))
    r2 = tbscore.calc(a * img + b, _boxes(), spacing=(1.0, 1.0))
    for v1, v2 in zip(r1.vertebrae, r2.vertebrae, strict=True):
        assert v1.value == pytest.approx(v2.value, abs=1e-9)


def test_rotation_by_90_degrees_with_swapped_spacing_gives_the_same_value():
    img = _texture(seed=3)
    spacing = (1.05, 0.6)
    r1 = tbscore.calc(img, _boxes(), spacing=spacing, settings={"lag_max_mm": 3.5})
    rot = np.rot90(img)  # (row, col) -> (n_cols - 1 - col, row)
    boxes = _boxes()
    n_cols = img.shape[1]
    for item in boxes["vertebrae"]:
        r0, c0, r1_, c1 = item["box"]
        item["box"] = [n_cols - c1, r0, n_cols - c0, r1_]
    r2 = tbscore.calc(rot, boxes, spacing=spacing[::-1], settings={"lag_max_mm": 3.5})
    for v1, v2 in zip(r1.vertebrae, r2.vertebrae, strict=True):
        assert v1.n_pixels == v2.n_pixels
        assert v1.value == pytest.approx(v2.value, abs=1e-10)
    assert r1.l1_l4 == pytest.approx(r2.l1_l4, abs=1e-10)


def test_l1_l4_needs_two_valid_vertebrae_and_exclusions_are_reported():
    img = _texture(seed=5)
    full = tbscore.calc(img, _boxes(), spacing=(1.0, 1.0))
    assert full.status == "ok" and full.l1_l4_labels == ("L1", "L2", "L3", "L4")
    assert full.l1_l4 == pytest.approx(np.mean([v.value for v in full.vertebrae]))
    two = tbscore.calc(img, _boxes(), spacing=(1.0, 1.0), exclude=["L1:fracture", "L2:implant"])
    assert two.l1_l4 == pytest.approx(
        np.mean([full.vertebra("L3").value, full.vertebra("L4").value])
    )
    assert two.vertebra("L1").status == "excluded" and two.vertebra("L1").reason == "fracture"
    one = tbscore.calc(img, _boxes(), spacing=(1.0, 1.0), exclude={"L1": "a", "L2": "b", "L3": "c"})
    assert one.l1_l4 is None and one.status == "incomplete"
    assert "needs at least 2" in one.l1_l4_reason
    with pytest.raises(ROIError):
        tbscore.calc(img, _boxes(), spacing=(1.0, 1.0), exclude=["T12"])


def test_small_roi_and_flat_roi_are_invalid_with_reason():
    img = _texture()
    mask = np.zeros(img.shape, bool)
    mask[10:15, 10:15] = True
    r = vertebra_tbs(img, VertebraROI("L1", mask), (1.0, 1.0), Settings())
    assert r.status == "invalid" and "pixels" in r.reason
    flat = np.ones((60, 60))
    m = np.ones((60, 60), bool)
    r = vertebra_tbs(flat, VertebraROI("L2", m), (1.0, 1.0), Settings())
    assert r.status == "invalid" and "variation" in r.reason
    # with a lag range too large for the ROI, lags lack pairs
    r = vertebra_tbs(
        img,
        VertebraROI("L3", np.ones(img.shape, bool)),
        (1.0, 1.0),
        Settings(lag_min_mm=500.0, lag_max_mm=600.0),
    )
    assert r.status == "invalid" and "lags" in r.reason


def test_combine_rule():
    from tbscore.core.result import VertebraResult

    vs = (
        VertebraResult("L1", "ok", 1.2),
        VertebraResult("L2", "invalid", None, "x"),
        VertebraResult("L3", "ok", 1.4),
        VertebraResult("L4", "excluded", None, "y"),
    )
    value, labels, reason = combine_l1_l4(vs, 2)
    assert value == pytest.approx(1.3) and labels == ("L1", "L3") and reason is None
    value, labels, reason = combine_l1_l4(vs, 3)
    assert value is None and "needs at least 3" in reason


def test_result_round_trips_through_json(tmp_path):
    r = tbscore.calc(_texture(), _boxes(), spacing=(1.0, 1.0), exclude=["L4:artefact"])
    path = tmp_path / "r.json"
    r.to_json(path)
    back = TBSResult.from_json(path)
    assert back == r
    assert back.to_dict() == r.to_dict()
    d = r.to_dict()
    assert d["cpt_code"] == "77091" and d["tbscore_version"] == tbscore.__version__
    assert d["lag_range_mm"] == [0.5, 3.0] and d["pixel_spacing_mm"] == [1.0, 1.0]
    assert d["input"]["pixel_sha256"] and d["settings_digest"] == Settings().digest()
    assert "<table>" in r._repr_html_()
    row = r.csv_row()
    assert row["l4_status"] == "excluded" and row["l4_reason"] == "artefact"


def test_settings_validation_and_files(tmp_path):
    with pytest.raises(SettingsError, match="unknown setting"):
        Settings.from_dict({"lag_max": 3})
    with pytest.raises(SettingsError, match="larger than"):
        Settings(lag_min_mm=4.0, lag_max_mm=3.0)
    with pytest.raises(SettingsError, match="direction"):
        Settings(directions=("sideways",))
    for n in (0, 1, 5):  # the L1-L4 value needs >= 2 valid vertebrae, and there are 4
        with pytest.raises(SettingsError, match="min_valid_vertebrae"):
            Settings(min_valid_vertebrae=n)
    toml = tmp_path / "s.toml"
    toml.write_text("[tbs]\nlag_min_mm = 1\nlag_max_mm = 4.0\n")
    s = tbscore.load_settings(toml)
    assert s.lag_min_mm == 1.0 and s.lag_max_mm == 4.0
    yml = tmp_path / "s.yaml"
    yml.write_text("lag_max_mm: 2.5\ndirections: [vertical, horizontal]\n")
    assert tbscore.load_settings(yml).directions == ("vertical", "horizontal")
    bad = tmp_path / "bad.toml"
    bad.write_text("lag_max_mm = 'x'\n")
    with pytest.raises(SettingsError, match=str(bad.name)):
        tbscore.load_settings(bad)
    assert Settings().digest() == Settings(parallel=True).digest()
    assert Settings().digest() != Settings(lag_max_mm=4.0).digest()


def test_vertebra_rois_container():
    m = np.zeros((10, 10), bool)
    m[2:5, 2:5] = True
    rois = VertebraROIs((VertebraROI("L1", m),), (10, 10))
    assert rois["L1"].n_pixels == 9 and rois.labels == ("L1",)
    assert rois.label_image().max() == 1


def test_vertebra_is_computed_on_its_box_and_a_box_must_hold_its_mask():
    """A vertebra's result is the same computed on its bounding box as on the whole
    image (a frame of other gray levels around it changes nothing), and an ROI whose
    given box does not hold all of its mask is refused, not cropped silently."""
    rng = np.random.default_rng(3)
    tex = np.cumsum(np.cumsum(rng.normal(size=(40, 50)), 0), 1)
    small = vertebra_tbs(tex, VertebraROI("L1", np.ones((40, 50), bool)), (1.0, 1.0), Settings())
    assert small.status == "ok" and small.se is not None
    image = rng.normal(size=(90, 120)) * 1e3
    image[20:60, 30:80] = tex
    mask = np.zeros(image.shape, bool)
    mask[20:60, 30:80] = True
    for box in (None, (20, 30, 60, 80)):
        got = vertebra_tbs(image, VertebraROI("L1", mask, box=box), (1.0, 1.0), Settings())
        assert got == small
    with pytest.raises(ROIError, match="outside its box"):
        vertebra_tbs(image, VertebraROI("L1", mask, box=(20, 30, 50, 80)), (1.0, 1.0), Settings())


def test_vertebra_reads_the_image_in_place_as_the_variogram_of_its_crop():
    """vertebra_tbs reads the image in place from the ROI's box corner: its variogram is
    variogram() of the cropped image and mask bit for bit (float64 C and Fortran
    order, uint16, a holed mask, a box reaching past the image, some lags without
    enough pairs), and its value that of the crop alone."""
    from tbscore.core.variogram import variogram
    from tbscore.sim.phantom import fbm_surface

    base = fbm_surface(90, 0.6, 14)[:70] * 400 + 3000
    mask = np.zeros(base.shape, bool)
    mask[10:52, 25:80] = True
    holed = mask.copy()
    holed[20:24, 40:47] = False
    cfg = Settings(min_pairs_per_lag=2150)  # the longest lags fall below it
    lags, dists = select_lags((1.0, 1.0), cfg.lag_min_mm, cfg.lag_max_mm, cfg.directions)
    cases = [
        (base, mask, None),
        (np.asfortranarray(base), mask, None),
        (np.rint(base).astype(np.uint16), mask, None),
        (base, holed, None),
        (base, mask, (10, 25, 52, 200)),  # past the image's right edge: clipped
    ]
    for image, m, box in cases:
        got = vertebra_tbs(image, VertebraROI("L1", m, box=box), (1.0, 1.0), cfg, (lags, dists))
        v, counts = variogram(image[10:52, 25:80], m[10:52, 25:80], lags)
        usable = counts >= cfg.min_pairs_per_lag
        assert 0 < usable.sum() < usable.size
        assert got.variogram == v[usable].tolist()
        assert got.pair_counts == counts[usable].tolist()
        assert got.lags == lags[usable].tolist()
        crop = vertebra_tbs(
            np.ascontiguousarray(image[10:52, 25:80]),
            VertebraROI("L1", np.ascontiguousarray(m[10:52, 25:80])),
            (1.0, 1.0),
            cfg,
            (lags, dists),
        )
        assert got.status == crop.status == "ok"
        assert (got.value, got.se, got.ci95) == (crop.value, crop.se, crop.ci95)
