"""The numpy building blocks of the detector's speed rewrite (issue 14) give exactly
the values of the library calls they replace.

Each is a property test against the reference: ``scipy.ndimage.map_coordinates``
(bilinear, ``mode="constant"``, NaN outside; same weights and order of operations, equal
to the last bit at almost every point), ``np.gradient`` with a coordinate array,
``np.median`` and the median absolute deviation of the row / column differences, the
Theil-Sen slope (exact equality). Together they keep the detected ROIs identical to the
reference implementation (``tests/test_detect_reference.py``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from tbscore.core import detect as d
from tbscore.errors import DetectionError

seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=seeds,
    ny=st.integers(2, 40),
    nx=st.integers(2, 40),
    angle=st.floats(-60, 60),
    spacing=st.sampled_from([(1.0, 1.0), (0.5, 0.5), (1.05, 0.6), (0.2, 0.2)]),
    margin=st.floats(-5.0, 15.0),
)
def test_grid_bilinear_equals_map_coordinates(seed, ny, nx, angle, spacing, margin):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(ny, nx))
    extent = (ny - 1) * spacing[0], (nx - 1) * spacing[1]
    # a rotated grid, partly outside the image when margin > 0
    u = np.arange(-extent[0] / 2 - margin, extent[0] / 2 + margin + 0.25, 0.5)
    v = np.arange(-extent[1] / 2 - margin, extent[1] / 2 + margin + 0.25, 0.5)
    centre = (extent[0] / 2 + rng.uniform(-1, 1), extent[1] / 2 + rng.uniform(-1, 1))
    rr, cc = d._grid_coords(centre, angle, u, v, spacing)
    ref = ndi.map_coordinates(img, [rr, cc], order=1, mode="constant", cval=np.nan)
    for grid in (True, False):
        got = d._bilinear(img, rr, cc, grid=grid)
        assert np.array_equal(np.isnan(got), np.isnan(ref))
        # same weights and order of operations; scipy's compiled loop may round the
        # last bit differently at a few points
        assert np.allclose(got, ref, rtol=4e-16, atol=4e-16, equal_nan=True)
        inside = np.isfinite(ref)
        if inside.sum() >= 50 and min(ny, nx) >= 8:  # to the last bit at most points
            assert np.mean(got[inside] == ref[inside]) > 0.5


def test_bilinear_edges_and_outside():
    img = np.arange(12.0).reshape(3, 4) ** 1.5
    rr = np.array([0.0, 2.0, 2.0, 0.0, -1e-12, 2.0 + 1e-12, 1.5, np.nan, 1.0])
    cc = np.array([0.0, 3.0, 0.0, 3.0, 1.0, 1.0, 3.0 + 1e-9, 1.0, 2.5])
    ref = ndi.map_coordinates(img, [rr, cc], order=1, mode="constant", cval=np.nan)
    got = d._bilinear(img, rr, cc)
    assert np.allclose(got, ref, rtol=4e-16, atol=0, equal_nan=True)
    assert np.isnan(got[4:8]).all() and np.isfinite(got[:4]).all()


@settings(max_examples=60, deadline=None)
@given(seed=seeds, rows=st.integers(1, 6), n=st.integers(3, 60), start=st.floats(-30, 30))
def test_gradient_equals_numpy(seed, rows, n, start):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(rows, n))
    for x in (np.arange(start, start + 0.5 * n - 0.25, 0.5)[:n], np.sort(rng.uniform(0, 9, n))):
        if x.size != n or np.any(np.diff(x) == 0):
            continue
        assert np.array_equal(d._gradient(f, x), np.gradient(f, x, axis=1), equal_nan=True)


@settings(max_examples=80, deadline=None)
@given(seed=seeds, n=st.integers(1, 400), levels=st.sampled_from([0, 3, 50]))
def test_medians_equal_numpy(seed, n, levels):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    if levels:  # many ties, as in quantised images
        x = np.round(x * levels) / levels
    assert d._median_inplace(x.copy()) == float(np.median(x))
    assert d._nanmedian(x) == float(np.median(x))
    with_nan = np.concatenate([x, [np.nan, np.inf]])
    assert d._nanmedian(with_nan) == float(np.median(x))


@settings(max_examples=40, deadline=None)
@given(
    seed=seeds,
    ny=st.integers(2, 50),
    nx=st.integers(2, 50),
    levels=st.sampled_from([0, 2, 255]),
)
def test_noise_sd_equals_mad_of_differences(seed, ny, nx, levels):
    rng = np.random.default_rng(seed)
    norm = rng.normal(size=(ny, nx)).cumsum(axis=1) * 0.05
    if levels:
        norm = np.round(norm * levels) / levels
    diffs = np.concatenate([np.diff(norm, axis=0).ravel(), np.diff(norm, axis=1).ravel()])
    mad = float(np.median(np.abs(diffs - np.median(diffs))))
    assert d._noise_sd(norm) == max(1.4826 * mad / math.sqrt(2.0), 1e-6)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(2, 7))
def test_median_slope_equals_theil_sen(seed, n):
    rng = np.random.default_rng(seed)
    x = np.round(rng.uniform(-10, 10, n), 1)
    y = rng.normal(size=n)
    y[rng.random(n) < 0.2] = np.nan
    ok = np.isfinite(x) & np.isfinite(y)
    i, j = np.triu_indices(int(ok.sum()), 1)
    xs, ys = x[ok], y[ok]
    dx = xs[j] - xs[i]
    keep = np.abs(dx) > 1e-9
    want = float(np.median((ys[j] - ys[i])[keep] / dx[keep])) if keep.any() else None
    assert d._median_slope(x, y) == want


def test_single_row_or_column_image_is_refused():
    # a 120 mm field in one row of pixels passed the field-of-view check and failed
    # with a numpy LinAlgError in the axis fit
    rng = np.random.default_rng(0)
    for shape, spacing in (((1, 60), (120.0, 1.0)), ((130, 1), (1.0, 50.0))):
        with pytest.raises(DetectionError, match="at least 2 rows and 2 columns"):
            d.detect(rng.random(shape), spacing)
