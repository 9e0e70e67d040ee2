"""Kernel tests: numba kernel vs numpy reference, exact small cases, mask edges."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tbscore.core.variogram import as_lags, variogram, variogram_sums, variogram_sums_reference

DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64]


@st.composite
def images_masks_lags(draw):
    rows = draw(st.integers(1, 40))
    cols = draw(st.integers(1, 40))
    dtype = draw(st.sampled_from(DTYPES))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        elems = st.integers(int(info.min), int(info.max))
    else:
        elems = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
    image = draw(hnp.arrays(dtype, (rows, cols), elements=elems))
    mask = draw(hnp.arrays(np.bool_, (rows, cols)))
    lags = draw(
        st.lists(st.tuples(st.integers(-45, 45), st.integers(-45, 45)), min_size=1, max_size=12)
    )
    return image, mask, lags


@settings(max_examples=300, deadline=None)
@given(images_masks_lags(), st.booleans())
def test_numba_matches_reference(case, parallel):
    image, mask, lags = case
    s1, c1 = variogram_sums(image, mask, lags, parallel=parallel)
    s2, c2 = variogram_sums_reference(image, mask, lags)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_allclose(s1, s2, rtol=1e-12, atol=0)


@settings(max_examples=100, deadline=None)
@given(images_masks_lags())
def test_lag_sign_symmetry(case):
    """k and -k describe the same unordered pairs."""
    image, mask, lags = case
    s1, c1 = variogram_sums(image, mask, lags)
    s2, c2 = variogram_sums(image, mask, [(-a, -b) for a, b in lags])
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_allclose(s1, s2, rtol=1e-12)


def test_hand_computed_case():
    img = np.array([[0, 1, 3], [6, 10, 15]], dtype=np.uint8)
    mask = np.ones_like(img, dtype=bool)
    sums, counts = variogram_sums(img, mask, [(0, 1), (1, 0), (1, 1), (1, -1), (0, 2)])
    # (0,1): 1+4+16+25; (1,0): 36+81+144; (1,1): 100+196; (1,-1): 25+49; (0,2): 9+81
    np.testing.assert_array_equal(sums, [46, 261, 296, 74, 90])
    np.testing.assert_array_equal(counts, [4, 3, 2, 2, 2])


def test_pairs_straddling_the_mask_edge_are_never_counted():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(30, 30))
    mask = np.zeros((30, 30), dtype=bool)
    mask[5:15, 5:20] = True
    # Wildly different values just outside the ROI must not change anything.
    img_out = img.copy()
    img_out[~mask] = 1e9
    lags = [(0, 1), (1, 0), (1, 1), (1, -1), (3, 0), (0, 4)]
    s1, c1 = variogram_sums(img, mask, lags)
    s2, c2 = variogram_sums(img_out, mask, lags)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_allclose(s1, s2, rtol=1e-12)
    # pair counts of a 10x15 rectangle: (rows - dr) * (cols - |dc|)
    np.testing.assert_array_equal(c1, [10 * 14, 9 * 15, 9 * 14, 9 * 14, 7 * 15, 10 * 11])


def test_nan_outside_mask_is_ignored_and_inside_is_an_error():
    img = np.arange(25.0).reshape(5, 5)
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    img[0, 0] = np.nan
    v, c = variogram(img, mask, [(0, 1)])
    assert c[0] == 6 and v[0] == 1.0
    img[2, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        variogram_sums(img, mask, [(0, 1)])


def test_empty_mask_and_large_lags_give_zero_pairs():
    img = np.ones((10, 10))
    s, c = variogram_sums(img, np.zeros((10, 10), bool), [(1, 0)])
    assert c[0] == 0 and s[0] == 0
    s, c = variogram_sums(img, np.ones((10, 10), bool), [(10, 0), (0, -11)])
    assert list(c) == [0, 0]


def test_lag_validation():
    with pytest.raises(ValueError):
        as_lags([(1.5, 0)])
    with pytest.raises(ValueError):
        as_lags([1, 2, 3])
    with pytest.raises(ValueError, match="shape"):
        variogram_sums(np.ones((4, 4)), np.ones((4, 5), bool), [(1, 0)])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
def test_roi_in_a_large_image_matches_reference(dtype, order):
    """A fragmented ROI inside a scan larger than the kernel's crop threshold (the mask
    is cropped to its box first), gray levels read in place or converted, any layout."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 250, size=(600, 520)).astype(dtype)
    rr, cc = np.mgrid[:600, :520]
    mask = ((rr - 300) / 90.0) ** 2 + ((cc - 200) / 60.0) ** 2 <= 1
    mask[300:330] &= rng.random((30, 520)) > 0.3  # a band of many short runs per row
    if img.dtype.kind == "f":
        img[~mask] = np.nan  # never read
    img = np.asarray(img, order=order)
    lags = [(1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, -3), (-2, 2), (0, 200)]
    s1, c1 = variogram_sums(img, mask, lags)
    s2, c2 = variogram_sums_reference(img, mask, lags)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_allclose(s1, s2, rtol=1e-12, atol=0)
    assert c1[-1] == 0 and c1[0] > 10_000


@pytest.mark.parametrize("dtype", [np.uint16, np.float64, np.int32])
@pytest.mark.parametrize("shape", [(37, 23), (700, 400)])
def test_rectangular_roi_matches_reference(dtype, shape):
    """A box ROI (the kernel's solid path: one span per row, no runs), in a small image
    and in one above the crop threshold, with non-finite values only outside it."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 4000, size=shape).astype(dtype)
    mask = np.zeros(shape, bool)
    mask[5:31, 3:20] = True
    if img.dtype.kind == "f":
        img[~mask] = np.inf
    lags = [(1, 0), (0, 1), (1, -1), (-2, -2), (3, 0), (0, 16), (0, 17), (26, 0)]
    s1, c1 = variogram_sums(img, mask, lags)
    s2, c2 = variogram_sums_reference(img, mask, lags)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_allclose(s1, s2, rtol=1e-12, atol=0)
    assert list(c1[-3:]) == [26 * 1, 0, 0]
    full = np.ones((9, 7), bool)
    s1, c1 = variogram_sums(img[5:14, 3:10], full, lags[:4])
    s2, c2 = variogram_sums_reference(img[5:14, 3:10], full, lags[:4])
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_allclose(s1, s2, rtol=1e-12, atol=0)
    if img.dtype.kind == "f":
        img[10, 10] = np.nan
        with pytest.raises(ValueError, match="non-finite"):
            variogram_sums(img, mask, lags)
