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
import subprocess
import sys
import warnings
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from scipy import ndimage as ndi

from tbscore.core import detect as d
from tbscore.core import detect_kernels as k
from tbscore.errors import DetectionError

# The helpers of detect_kernels are register_jitable (compiled into the kernels that call
# them, no dispatcher of their own): the tests call their compiled form through these.


@njit
def _sample_grid(img, cy, cx, angle, u, v, sy, sx):
    return k._sample_grid(img, cy, cx, angle, u, v, sy, sx)


@njit
def _median_select(x):
    return k._median_select(x)


@njit
def _nth(a, n, kk):
    return k._nth(a, n, kk)


@njit
def _pairwise(a, start, n, stride):
    return k._pairwise(a, start, n, stride)


@njit
def _band_profiles(sub, lo, hi, first, axis):
    return k._band_profiles(sub, lo, hi, first, axis)


@njit
def _arange(start, stop, step):
    return k._arange(start, stop, step)


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
    # the compiled grid sampler (refinement, scoring): _bilinear's values to the last
    # bit, on grids inside the image's cells (no border tests) and crossing its border
    compiled = _sample_grid(img, centre[0], centre[1], angle, u, v, *spacing)
    assert np.array_equal(compiled, d._bilinear(img, rr, cc, grid=True), equal_nan=True)


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


# --------------------------------------------------------------------------- compiled
# The numba kernels of tbscore.core.detect_kernels (issue 14, h14h) against the numpy /
# scipy code they replace (kept in tbscore.core.detect as the ``_reference`` versions):
# exact equality throughout.


@cache
def _phantom_fine(seed: int, spacing: tuple[float, float], tilt: float):
    """(fine image, spacing, bodies) of a phantom, as ``locate_vertebrae`` sees it."""
    from tbscore.sim.phantom import synthetic_spine

    shape = (int(round(240 / spacing[0])), int(round(180 / spacing[1])))
    image, _ = synthetic_spine(0.5, rng=seed, shape=shape, spacing_mm=spacing, tilt_deg=tilt)
    arr, sp = d._check_input(image, spacing, "t")
    norm = d._normalise(arr, "t")
    fine = d.ndi.gaussian_filter(norm, (d._FINE_SMOOTH_MM / sp[0], d._FINE_SMOOTH_MM / sp[1]))
    bodies = d.locate_vertebrae(image, spacing).bodies
    return fine, sp, arr.shape, bodies


_PHANTOMS = st.tuples(
    st.integers(1, 3),
    st.sampled_from([(1.0, 1.0), (1.05, 0.6), (0.5, 0.5)]),
    st.sampled_from([0.0, 12.0, -12.0]),
)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    case=_PHANTOMS,
    which=st.integers(0, 9),
    dy=st.floats(-8, 8),
    dx=st.floats(-8, 8),
    dangle=st.floats(-10, 10),
    fu=st.floats(0.6, 1.5),
    hw=st.floats(8.0, 30.0),
    n_iter=st.integers(1, 3),
)
def test_refine_body_kernel_equals_reference(case, which, dy, dx, dangle, fu, hw, n_iter):
    # bodies near the border (partly outside the image) included: the phantoms' top and
    # bottom bodies, moved by up to 8 mm
    fine, sp, _shape, bodies = _phantom_fine(*case)
    b = bodies[which % len(bodies)]
    centre = (b.center_mm[0] + dy, b.center_mm[1] + dx)
    args = (fine, sp, centre, b.angle_deg + dangle, b.half_size_mm[0] * fu, hw)
    assert d._refine_body(*args, n_iter=n_iter) == d._refine_body_reference(*args, n_iter=n_iter)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    case=_PHANTOMS,
    which=st.integers(0, 9),
    dy=st.floats(-40, 40),
    dangle=st.floats(-30, 30),
    fu=st.floats(0.3, 1.5),
    fw=st.floats(0.3, 1.5),
    noise=st.floats(1e-4, 1.0),
)
def test_score_body_kernel_equals_reference(case, which, dy, dangle, fu, fw, noise):
    fine, sp, shape, bodies = _phantom_fine(*case)
    b = bodies[which % len(bodies)]
    args = (fine, sp, shape, (b.center_mm[0] + dy, b.center_mm[1]), b.angle_deg + dangle)
    hu, hw = b.half_size_mm[0] * fu, b.half_size_mm[1] * fw
    got = d._score_body(*args, hu, hw, noise)
    want = d._score_body_reference(*args, hu, hw, noise)
    assert got == want


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=seeds, ny=st.integers(2, 120), nx=st.integers(2, 130), flat=st.booleans())
def test_spine_path_kernel_equals_reference(seed, ny, nx, flat):
    rng = np.random.default_rng(seed)
    iso = rng.normal(size=(ny, nx))
    if flat:  # ties everywhere: the first of equal maxima, as np.argmax
        iso = np.round(iso)
    iso = ndi.gaussian_filter(iso, 2.0)
    assert np.array_equal(d._spine_path(iso), d._spine_path_reference(iso))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    seed=seeds,
    n=st.integers(1, 60000),
    levels=st.sampled_from([0, 1, 3, 50, 1000]),
    tail=st.sampled_from([1.0, 3.0]),
)
def test_selection_median_equals_numpy(seed, n, levels, tail):
    rng = np.random.default_rng(seed)
    x = rng.standard_t(tail, size=n) if tail < 2 else rng.normal(size=n) ** 3
    if levels:  # quantised: long runs of equal values at the bracket
        x = np.round(x * levels) / levels
    assert _median_select(x) == float(np.median(x))
    assert _median_select(np.abs(x - np.median(x))) == float(np.median(np.abs(x - np.median(x))))


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    seed=seeds,
    n=st.integers(1, 3000),
    kind=st.sampled_from(["normal", "ties", "sorted", "reversed", "organ", "equal", "two"]),
    frac=st.floats(0.0, 1.0),
)
def test_nth_is_the_sorted_value(seed, n, kind, frac):
    """detect_kernels._nth (Hoare's FIND, median-of-three pivot, insertion sort of small
    ranges, heap-sort fallback) returns np.sort(x)[k] and leaves a[:k] <= a[k] <= a[k+1:]
    for random, tied, sorted, reversed, organ-pipe and constant values."""
    rng = np.random.default_rng(seed)
    x = {
        "normal": lambda: rng.normal(size=n),
        "ties": lambda: np.round(rng.normal(size=n) * 3) / 3,
        "sorted": lambda: np.sort(rng.normal(size=n)),
        "reversed": lambda: np.sort(rng.normal(size=n))[::-1].copy(),
        "organ": lambda: np.concatenate([np.arange(n // 2), np.arange(n - n // 2)[::-1]]) * 1.0,
        "equal": lambda: np.full(n, 0.25),
        "two": lambda: rng.integers(0, 2, n) * 1.0,
    }[kind]()
    k_ = min(int(frac * n), n - 1)
    a = x.copy()
    assert _nth(a, n, k_) == np.sort(x)[k_]
    assert np.array_equal(np.sort(a), np.sort(x))  # a permutation of x
    assert (a[:k_] <= a[k_]).all() and (a[k_ + 1 :] >= a[k_]).all()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=seeds, n=st.integers(0, 700), stride=st.integers(1, 4), scale=st.floats(-6, 6))
def test_pairwise_sum_is_numpys(seed, n, stride, scale):
    a = np.random.default_rng(seed).normal(size=n * stride + 1) * 10.0**scale
    assert 0.0 + _pairwise(a, 1, n, stride) == a[1::stride][:n].sum()
    rows = a[1 : 1 + (n // 3) * 3].reshape(-1, 3) if n >= 3 else None
    if rows is not None and rows.shape[0] >= 1:  # along rows (axis 1): the same sum
        assert np.array_equal(
            _band_profiles(rows, np.array([0]), np.array([3]), 0, 1)[0], rows.sum(axis=1) / 3
        )


@settings(max_examples=60, deadline=None, derandomize=True)
@given(start=st.floats(-80, 80), length=st.floats(0, 100), step=st.sampled_from([0.5, 1.0, 0.3]))
def test_arange_is_numpys(start, length, step):
    want = np.arange(start, start + length, step)
    assert np.array_equal(_arange(start, start + length, step), want)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=seeds,
    ny=st.integers(1, 30),
    nx=st.integers(1, 30),
    step=st.sampled_from([1.0, 0.5, 1.3]),
    straight=st.booleans(),
)
def test_line_sampling_equals_map_coordinates(seed, ny, nx, step, straight):
    """sample_lines / resample_grid give scipy's order-1 values to the last bit (its
    weights 1 - f and 1 - (1 - f)), NaN outside, in the kept columns."""
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(ny, nx)) * 10.0 ** rng.uniform(-3, 3)
    n, m = int(rng.integers(1, 15)), int(rng.integers(1, 15))
    by, bx = rng.uniform(-3, ny * step + 2, n), rng.uniform(-3, nx * step + 2, n)
    dy, dx = rng.normal(size=n), rng.normal(size=n)
    if straight:  # whole pixels and the last row / column, as in the straight frames
        by, bx, dy, dx = np.round(by), np.round(bx), np.zeros(n), np.ones(n)
    v = np.round(rng.uniform(-5, 5, m) * 2) / 2
    keep = rng.random(m) < 0.8
    got = k.sample_lines(img, by, dy, bx, dx, v, keep, step)
    yy = by[:, None] + v[None, :] * dy[:, None]
    xx = bx[:, None] + v[None, :] * dx[:, None]
    want = np.full(yy.shape, np.nan)
    want[:, keep] = ndi.map_coordinates(
        img, [yy[:, keep] / step, xx[:, keep] / step], order=1, mode="constant", cval=np.nan
    )
    assert np.array_equal(got, want, equal_nan=True)
    rr = np.arange(int(rng.integers(1, 30))) * 0.7 / 0.65
    cc = np.arange(int(rng.integers(1, 30))) / 0.6
    rr, cc = rr[rr <= ny - 1], cc[cc <= nx - 1]
    if rr.size and cc.size:
        want = ndi.map_coordinates(
            img, np.broadcast_arrays(rr[:, None], cc[None, :]), order=1, mode="nearest"
        )
        assert np.array_equal(k.resample_grid(img, rr, cc), want)


def test_warm_up_loads_every_detection_specialisation():
    """After ``warm_up_kernels`` a detection compiles (or loads) nothing new, so the
    batch fork server's workers have every kernel."""
    from numba.core.registry import CPUDispatcher

    from tbscore.core import raster
    from tbscore.sim.phantom import synthetic_spine

    def count():
        return {
            (mod.__name__, name): len(f.signatures)
            for mod in (k, raster)
            for name, f in vars(mod).items()
            if isinstance(f, CPUDispatcher)
        }

    d.warm_up_kernels()
    before = count()
    for spacing in ((1.0, 1.0), (1.05, 0.6)):
        shape = (int(240 / spacing[0]), int(180 / spacing[1]))
        image, _ = synthetic_spine(0.5, rng=1, shape=shape, spacing_mm=spacing)
        d.detect(image, spacing)
    assert count() == before


def test_import_loads_no_kernel():
    """Importing the detector compiles or loads no kernel: only the entry points are
    loaded, on first use (h14o; eager signatures on helpers were each loaded from the
    cache at import, although the kernels calling them carry their code)."""
    code = (
        "from numba.core.registry import CPUDispatcher\n"
        "from tbscore.core import detect, detect_kernels as k, raster\n"
        "print(sum(len(f.signatures) for m in (k, raster) for f in vars(m).values()"
        " if isinstance(f, CPUDispatcher)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=seeds,
    ny=st.integers(2, 60),
    nx=st.integers(2, 60),
    sy=st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 1 / 1.05, 1 / 0.6, 3.3, 20.0]),
    sx=st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 1 / 0.6, 5.0]),
)
def test_gaussian_equals_scipy(seed, ny, nx, sy, sx):
    """detect._gaussian (compiled, scipy's symmetric correlate1d loop and reflect
    border) gives gaussian_filter's values to the last bit (scipy itself where an axis
    is not longer than the kernel's radius)."""
    img = np.random.default_rng(seed).normal(size=(ny, nx))
    assert np.array_equal(d._gaussian(img, (sy, sx)), ndi.gaussian_filter(img, (sy, sx)))
    near = ndi.gaussian_filter(img, (sy, sx), mode="nearest")
    assert np.array_equal(d._gaussian(img, (sy, sx), mode="nearest"), near)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    seed=seeds,
    ny=st.integers(2, 90),
    nx=st.integers(1, 30),
    sigma=st.sampled_from([0.5, 1.0, 3.3, 8.0, 20.0]),
)
def test_gaussian_rows_nearest_equals_gaussian_filter1d(seed, ny, nx, sigma):
    """``_gaussian(img, (s, 0.0), mode="nearest")`` (the spine response's smoothing) is
    ``gaussian_filter1d(img, s, axis=0, mode="nearest")`` to the last bit."""
    img = np.random.default_rng(seed).normal(size=(ny, nx)) * 10.0 ** (seed % 7 - 3)
    ref = ndi.gaussian_filter1d(img, sigma, axis=0, mode="nearest")
    assert np.array_equal(d._gaussian(img, (sigma, 0.0), mode="nearest"), ref)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    seed=seeds,
    n=st.integers(1, 3000),
    levels=st.sampled_from([0, 3, 50]),
    q=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=4)
    | st.sampled_from([[1.0, 99.0], [5, 95], [0, 100], [50]]),
)
def test_percentiles_equal_numpy(seed, n, levels, q):
    """detect._percentiles (compiled selections and numpy's lerp) gives np.percentile's
    values to the last bit, ties (few gray levels) included."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n) * 10.0 ** (seed % 9 - 4)
    if levels:
        x = np.round(x * levels) / levels
    assert np.array_equal(d._percentiles(x, q), np.percentile(x, q))
    img = x[: (n // 2) * 2].reshape(-1, 2) if n > 1 else x.reshape(1, 1)
    assert np.array_equal(d._percentiles(img, q), np.percentile(img, q))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    f=st.lists(
        st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False), min_size=2, max_size=80
    )
)
def test_gradient_list_equals_numpy(f):
    """detect._gradient_list (the endplate search's Python gradient) is np.gradient."""
    assert d._gradient_list(f) == np.gradient(np.asarray(f)).tolist()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=seeds,
    n=st.integers(3, 8),
    ny=st.integers(5, 60),
    nx=st.integers(5, 60),
    on_grid=st.booleans(),
)
def test_poly_box_holds_the_mask(seed, n, ny, nx, on_grid):
    """detect._poly_box (the overlap check's box) holds every pixel polygon_mask sets,
    vertices on pixel centres included."""
    from tbscore.core.raster import polygon_mask

    rng = np.random.default_rng(seed)
    poly = rng.uniform(-5.0, 1.1 * max(ny, nx), size=(n, 2))
    if on_grid:
        poly = np.round(poly)
    mask = polygon_mask((ny, nx), poly)
    rs, cs = d._poly_box(poly, (ny, nx))
    inside = np.zeros_like(mask)
    inside[rs, cs] = True
    assert not np.any(mask & ~inside)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(seed=seeds, n_roi=st.integers(1, 5), ny=st.integers(5, 50), nx=st.integers(5, 50))
def test_sharing_equals_reference(seed, n_roi, ny, nx):
    """detect._sharing (pairwise, inside the polygons' boxes: the ROI overlap check) names
    the same masks as the whole-image pass of _sharing_reference; stacked boxes of
    random heights, so that neighbours touch, overlap or not."""
    from tbscore.core.raster import polygon_mask

    rng = np.random.default_rng(seed)
    masks, boxes = [], []
    for i in range(n_roi):
        top = i * ny / n_roi + rng.uniform(-3.0, 3.0)
        bottom = top + ny / n_roi * rng.uniform(0.5, 1.6)
        left, right = rng.uniform(-2.0, nx / 2), rng.uniform(nx / 2, nx + 2.0)
        poly = np.array([[top, left], [top, right], [bottom, right], [bottom, left]])
        if rng.random() < 0.5:
            poly = np.round(poly * 2) / 2  # edges and vertices on pixel centres
        poly = d._clip_polygon(poly, (ny, nx))
        mask = polygon_mask((ny, nx), poly) if len(poly) >= 3 else np.zeros((ny, nx), bool)
        masks.append(mask)
        boxes.append(d._poly_box(poly, (ny, nx)))
    assert d._sharing(masks, boxes) == d._sharing_reference(masks)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    xs=st.lists(
        st.one_of(
            st.floats(-1e6, 1e6, allow_nan=False),
            st.sampled_from([0.0, -0.0, 0.5, 1.0, 1e-300]),
        ),
        min_size=1,
        max_size=7,
    )
)
def test_few_value_helpers_equal_numpy(xs):
    """detect's Python-float mean, product, median and clip of a few values are numpy's
    (``repr`` equal, so also the sign of a zero)."""
    assert repr(d._mean_few(xs)) == repr(float(np.mean(xs)))
    assert repr(d._prod_few(xs)) == repr(float(np.prod(xs)))
    assert d._median_few(list(xs)) == float(np.median(xs))
    for x in xs:
        assert repr(d._clip01(x)) == repr(float(np.clip(x, 0.0, 1.0)))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    seed=seeds,
    n=st.integers(3, 24),
    ny=st.integers(5, 60),
    nx=st.integers(5, 60),
    spread=st.floats(0.1, 1.5),
)
def test_clip_polygon_shortcut_equals_sutherland_hodgman(seed, n, ny, nx, spread):
    """detect._clip_polygon returns the clip's polygon (repr-equal) whether the polygon
    lies inside the image (shortcut), touches its border or crosses it."""
    rng = np.random.default_rng(seed)
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    centre = (rng.uniform(0, ny), rng.uniform(0, nx))
    poly = np.round(
        np.column_stack(
            [centre[0] + spread * ny * np.cos(ang), centre[1] + spread * nx * np.sin(ang)]
        ),
        3,
    )
    if rng.random() < 0.2:  # a vertex exactly on the border
        poly[0, 0] = -0.5
    got = d._clip_polygon(poly, (ny, nx))
    want = d._clip_polygon_sh(poly, (ny, nx))
    assert got.shape == want.shape and repr(got.tolist()) == repr(want.tolist())


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    seed=seeds,
    sizes=st.lists(st.integers(0, 24), min_size=1, max_size=6),
    nc=st.integers(2, 30),
    axis=st.sampled_from([0, 1]),
    holes=st.booleans(),
    offset=st.integers(0, 3),
)
def test_band_profiles_kernel_equals_numpy(seed, sizes, nc, axis, holes, offset):
    """detect_kernels._band_profiles gives detect._band_profiles' means to the last bit:
    adjacent bands (np.add.reduceat; bands of up to 8 rows summed row by row), gaps
    between bands, empty bands, and NaN holes. At least two columns across the bands
    (the refinement's patches have ~140): numpy reduces a single column as one
    contiguous run instead."""
    rng = np.random.default_rng(seed)
    lo = offset + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    hi = lo + np.array(sizes, dtype=np.int64)
    if rng.random() < 0.3:  # not adjacent: a gap after the first band
        lo[1:] += 1
        hi[1:] += 1
    m = int(hi.max()) - offset + int(rng.integers(0, 3))
    shape = (max(m, 1), nc) if axis == 0 else (nc, max(m, 1))
    sub = rng.normal(size=shape) * 10.0 ** rng.integers(-3, 4)
    if holes:
        sub[rng.random(shape) < 0.1] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        want = d._band_profiles(sub, lo, hi, offset, axis)
    got = _band_profiles(np.ascontiguousarray(sub), lo, hi, offset, axis)
    assert np.array_equal(got, want, equal_nan=True)


# -- h14r: find_peaks without scipy.signal --------------------------------------------------
_SIGNAL = st.one_of(
    # plateaus and ties: a few integer levels
    st.lists(st.integers(0, 4), max_size=120).map(lambda v: np.array(v, dtype=np.float64)),
    # smooth-ish profiles as the detector's (a random walk)
    st.lists(st.floats(-1, 1), max_size=300).map(lambda v: np.cumsum(np.array(v, dtype=float))),
)


@settings(max_examples=400, deadline=None)
@given(
    _SIGNAL,
    st.floats(0.0, 3.0),
    st.one_of(st.none(), st.floats(1.0, 12.0)),
    st.one_of(st.none(), st.tuples(st.floats(0.0, 6.0), st.floats(0.0, 40.0))),
)
def test_find_peaks_matches_scipy(x, prominence, distance, width):
    """detect.find_peaks (two compiled calls around numpy's argsort) gives
    scipy.signal.find_peaks' peaks and every property, bit for bit, dtypes included."""
    got = d.find_peaks(x, prominence=prominence, distance=distance, width=width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's warning on zero prominences or widths
        want = d._find_peaks_reference(x, prominence=prominence, distance=distance, width=width)
    assert got[0].dtype == want[0].dtype and np.array_equal(got[0], want[0])
    assert sorted(got[1]) == sorted(want[1])
    for key, value in want[1].items():
        assert got[1][key].dtype == value.dtype, key
        assert got[1][key].tobytes() == value.tobytes(), key


def test_detector_does_not_import_scipy_signal():
    """Importing the detector leaves scipy.signal out (its import is ~0.47 CPU-s)."""
    code = "import sys, tbscore.core.detect; assert 'scipy.signal' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
