"""ROI files: formats, units, validation, round trip."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tbscore.core.roi import (
    apply_exclusions,
    read_rois,
    rois_from_dict,
    rois_from_label_image,
    write_roi_json,
)
from tbscore.errors import ROIError

SHAPE, SPACING = (120, 80), (1.05, 0.6)


def _doc(**extra):
    d = {
        "format": "tbscore-roi/1",
        "units": "px",
        "vertebrae": [
            {"label": "L2", "box": [10, 10, 40, 60]},
            {"label": "L1", "polygon": [[50, 10], [50, 60], [90, 62], [90, 8]]},
        ],
    }
    d.update(extra)
    return d


def test_boxes_polygons_sorted_and_masks():
    rois = rois_from_dict(_doc(), SHAPE, SPACING)
    assert rois.labels == ("L1", "L2")
    assert rois["L2"].n_pixels == 30 * 50 and rois["L2"].box == (10, 10, 40, 60)
    assert 40 * 50 < rois["L1"].n_pixels < 41 * 55


def test_mm_units_use_per_axis_spacing():
    doc = {
        "format": "tbscore-roi/1",
        "units": "mm",
        "vertebrae": [{"label": "L3", "box": [10 * 1.05, 10 * 0.6, 40 * 1.05, 60 * 0.6]}],
    }
    assert rois_from_dict(doc, SHAPE, SPACING)["L3"].box == (10, 10, 40, 60)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other/1"}, "unsupported ROI format"),
        ({"units": "cm"}, "units"),
        ({"image_shape": [10, 10]}, "shape"),
        ({"pixel_spacing_mm": [1.0, 1.0]}, "spacing"),
        ({"vertebrae": []}, "non-empty"),
        ({"vertebrae": [{"label": "T12", "box": [0, 0, 5, 5]}]}, "label"),
        ({"vertebrae": [{"label": "L1", "box": [0, 0, 500, 5]}]}, "outside"),
        ({"vertebrae": [{"label": "L1", "box": [5, 5, 5, 9]}]}, "empty"),
        ({"vertebrae": [{"label": "L1"}]}, "polygon"),
        ({"image_shape": 5}, "image_shape"),
        ({"vertebrae": [{"label": "L1", "box": [0, 0, 9, 9], "confidence": "x"}]}, "confidence"),
        ({"vertebrae": [{"label": "L1", "box": [0, 0, 9, 9], "confidence": 1.5}]}, "confidence"),
        (
            {"vertebrae": [{"label": "L1", "box": [0, 0, 9, 9], "exclusion_reason": 3}]},
            "exclusion_reason",
        ),
        (
            {
                "vertebrae": [
                    {"label": "L1", "box": [0, 0, 9, 9]},
                    {"label": "L1", "box": [20, 0, 29, 9]},
                ]
            },
            "duplicate",
        ),
        (
            {
                "vertebrae": [
                    {"label": "L1", "box": [0, 0, 9, 9]},
                    {"label": "L2", "box": [5, 0, 15, 9]},
                ]
            },
            "overlap",
        ),
    ],
)
def test_invalid_documents_raise_roi_error(change, message):
    with pytest.raises(ROIError, match=message):
        rois_from_dict(_doc(**change), SHAPE, SPACING)


def test_json_round_trip_and_exclusions(tmp_path):
    rois = apply_exclusions(rois_from_dict(_doc(), SHAPE, SPACING), ["L2:fracture"])
    for units in ("px", "mm"):
        path = write_roi_json(rois, tmp_path / f"r_{units}.json", SPACING, units=units)
        back = read_rois(path, SHAPE, SPACING)
        assert back.labels == rois.labels
        for a, b in zip(rois, back, strict=True):
            np.testing.assert_array_equal(a.mask, b.mask)
        assert back["L2"].excluded and back["L2"].exclusion_reason == "fracture"
        assert json.loads(path.read_text())["units"] == units


def test_label_images(tmp_path):
    lab = np.zeros(SHAPE, np.uint8)
    lab[10:30, 10:50] = 1
    lab[40:60, 10:50] = 3
    np.save(tmp_path / "lab.npy", lab)
    rois = read_rois(tmp_path / "lab.npy", SHAPE, SPACING)
    assert rois.labels == ("L1", "L3") and rois["L3"].n_pixels == 800
    # a label-image ROI written as JSON (traced outline) gives back the same mask
    back = read_rois(write_roi_json(rois, tmp_path / "lab.json", SPACING), SHAPE, SPACING)
    for a, b in zip(rois, back, strict=True):
        np.testing.assert_array_equal(a.mask, b.mask)
    with pytest.raises(ROIError, match="0..4"):
        rois_from_label_image(np.full(SHAPE, 7))
    with pytest.raises(ROIError, match="no vertebra"):
        rois_from_label_image(np.zeros(SHAPE))
    with pytest.raises(ROIError, match="does not exist"):
        read_rois(tmp_path / "nope.json", SHAPE, SPACING)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ROIError, match="cannot read"):
        read_rois(tmp_path / "bad.json", SHAPE, SPACING)


def test_geometry_in_mm():
    """Every ROI has its outline and bounding box in mm as well as in pixels."""
    rois = rois_from_dict(_doc(), SHAPE, SPACING)
    assert rois.spacing_mm == SPACING
    box = rois["L2"]
    assert box.bbox() == (10, 10, 40, 60)
    assert box.bbox_mm(SPACING) == pytest.approx((10 * 1.05, 10 * 0.6, 40 * 1.05, 60 * 0.6))
    poly = rois["L1"]
    np.testing.assert_allclose(poly.outline_mm(SPACING), poly.outline() * np.array(SPACING))
    r0, c0, r1, c1 = poly.bbox()
    rows, cols = np.nonzero(poly.mask)
    assert (r0, c0, r1, c1) == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
    mm = rois.to_dict(units="mm")
    assert mm["units"] == "mm" and mm["pixel_spacing_mm"] == list(SPACING)
    back = rois_from_dict(mm, SHAPE, SPACING)
    for a, b in zip(rois, back, strict=True):
        np.testing.assert_array_equal(a.mask, b.mask)
    labels = rois_from_label_image(rois.label_image())
    with pytest.raises(ROIError, match="spacing"):
        labels.to_dict(units="mm")  # a label image carries no spacing
    assert labels.to_dict(units="mm", spacing_mm=SPACING)["units"] == "mm"


def test_nan_pixels_in_an_roi_are_refused():
    import tbscore
    from tbscore.errors import InputError

    rng = np.random.default_rng(0)  # a Brownian sheet: white noise is an implausible texture
    image = 100 + np.cumsum(np.cumsum(rng.normal(0, 1, SHAPE), 0), 1)
    rois = rois_from_dict(_doc(), SHAPE, SPACING)
    image[0, 0] = np.nan  # outside every ROI: fine
    assert tbscore.calc(image, rois, spacing=SPACING).l1_l4 is not None
    image[20, 20] = np.nan  # inside L2
    with pytest.raises(InputError, match="L2 ROI are NaN"):
        tbscore.calc(image, rois, spacing=SPACING)
    assert tbscore.calc(image, rois, spacing=SPACING, exclude=["L2"]).l1_l4 is None


@pytest.mark.parametrize("half,radius", [((12.0, 20.0), 4.0), ((5.0, 5.0), 5.0), ((8.0, 3.0), 0.0)])
def test_rounded_rect_outline_lies_on_the_zero_of_its_distance(half, radius):
    from tbscore.core.roi import rounded_rect_distance, rounded_rect_outline

    uv = rounded_rect_outline(*half, radius, per_corner=5)
    assert uv.shape == ((4 * 6, 2) if radius > 0 else (4, 2))
    d = rounded_rect_distance(uv[:, 0], uv[:, 1], *half, radius)
    np.testing.assert_allclose(d, 0.0, atol=1e-12)
    assert rounded_rect_distance(np.array(0.0), np.array(0.0), *half, radius) == -min(half)


def test_polygon_mask_is_skimages_polygon2mask():
    """tbscore.core.raster.polygon_mask: skimage's polygon2mask pixel for pixel (random
    and convex polygons, vertices on half pixels and rounded to 1e-3 px as ROI files
    store them, partly outside the image)."""
    from skimage.draw import polygon2mask

    from tbscore.core.raster import polygon_mask

    rng = np.random.default_rng(0)
    for t in range(600):
        shape = tuple(int(x) for x in rng.integers(1, 40, 2))
        n = int(rng.integers(3, 25))
        if t % 3 == 0:
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = rng.uniform(2, 15)
            poly = np.column_stack(
                [shape[0] / 2 + rad * np.sin(ang), shape[1] / 2 + rad * np.cos(ang)]
            )
        else:
            poly = rng.uniform(-5, 45, (n, 2))
        if t % 2:
            poly = np.round(poly * 2) / 2  # pixel centres on edges and at vertices
        elif t % 5 == 0:
            poly = np.round(poly, 3)
        assert np.array_equal(polygon_mask(shape, poly), polygon2mask(shape, poly)), t


def _box_corners_numpy(value, label, scale, source):
    """The box rule as it was written with arrays (the reference of the plain path)."""
    from tbscore.core.roi import _points

    arr = _points(value, f"{label} box", source)
    if arr.shape != (4,):
        raise ROIError(f"{label} box must be [row0, col0, row1, col1]", source)
    b = arr * np.concatenate([np.asarray(scale), np.asarray(scale)])
    return tuple(int(round(v)) for v in b)


_coord = st.one_of(
    st.integers(-(2**60), 2**60),
    st.floats(-1e6, 1e6, allow_nan=False),
)


@given(
    box=st.lists(_coord, min_size=3, max_size=5),
    spacing=st.tuples(
        st.floats(0.05, 5.0),
        st.floats(0.05, 5.0),
    ),
    mm=st.booleans(),
)
def test_box_corners_match_the_array_rule(box, spacing, mm):
    """The plain-float box path gives the corners (or the error) of the numpy path."""
    from tbscore.core.roi import _box_corners

    scale = (1.0 / spacing[0], 1.0 / spacing[1]) if mm else (1.0, 1.0)
    outcomes = []
    for fn in (_box_corners, _box_corners_numpy):
        try:
            outcomes.append(fn(box, "L1", scale, "x"))
        except (ROIError, OverflowError) as exc:
            outcomes.append(type(exc).__name__ + str(exc))
    assert outcomes[0] == outcomes[1]
