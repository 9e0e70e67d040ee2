"""Automatic L1-L4 vertebral ROIs from a lumbar-spine DXA image.

The detector works in millimetres (any, also non-square, pixel spacing) and on gray
levels normalised by robust percentiles (any scale, offset and bit depth). Steps (see
docs/detection.md):

1. **Spine axis.** On a 1 mm isotropic, smoothed copy of the image a lateral matched
   filter (a 30 mm bright core between darker flanks 24-44 mm either side) scores
   every pixel as a possible spine centre; dynamic programming finds the best
   top-to-bottom path (at most 45 degrees from vertical), smoothed (25 mm) into the
   axis.
2. **Straightening.** The image is resampled along the axis (arc length ``s``) and
   across it, so tilted and laterally curved spines become straight.
3. **Discs.** The mean gray level of the central 20 mm along ``s`` dips at every
   disc space; dips of at least 25 % of the profile's range split the column into
   vertebral bodies (shorter-than-a-body pieces are merged, twice-too-long ones split
   at their deepest inner dip).
4. **Outline.** Each body is refined in its own rotated frame (0.5 mm samples): the
   lateral edges are the median, over five bands of rows, of the strongest gradient,
   the endplates likewise over five bands of columns (sub-sample); the Theil-Sen slope
   of the endplates corrects the body's rotation; three iterations. The outline is a
   rounded rectangle (3 mm corners).
5. **Labels.** In a straight frame aligned with the two lowest bodies, the iliac
   crests are the top of a sustained jump of the gray level 55-100 mm lateral to the
   spine, on either side; with both, their mean level. L4 is the lowest body whose
   upper endplate lies at least 10 mm above the crests; the three above it are L3,
   L2, L1. Without visible crests the four lowest complete bodies are taken (with a
   warning and 0.6 times the confidence).
5b. **Label cross-checks.** The last rib-bearing vertebra (rib ridges 52-75 mm lateral
   to the axis: L1 must be the body below it), L5 above the sacrum (exactly one body
   below L4) and the body heights (L4 not much shorter than L1) check the crest-based
   labels; when the rib and the L5/sacrum cues agree on the same other labelling the
   labels move to it (warned); a move or a disagreeing cue caps the overall confidence
   at :data:`DISAGREE_CONFIDENCE` (below the warning threshold) and the warning names
   the cues; a note says when no rib is in view and the field starts at T11/T12 (T12
   cannot then be told from a sixth lumbar-type vertebra).
6. **Confidence.** Per body, the product of: edge agreement (how well a threshold
   halfway between body and surroundings reproduces the outline), contrast-to-noise
   ratio, plausible size and shape, not cut by the image border, and consistency with
   its neighbours (size, rotation, disc gap, lateral offset). Overall: the mean over
   L1-L4 times the labelling factor.

Detection fails explicitly: :class:`tbscore.errors.DetectionError` with the reason when
the image cannot hold a lumbar spine, when fewer than four plausible bodies are found,
when L1-L4 are not all above the crests, or when the overall confidence is below
``min_confidence`` (:data:`MIN_CONFIDENCE`). A vertebra below
:data:`MIN_VERTEBRA_CONFIDENCE` is returned *excluded*, with the reason and a
warning, so the L1-L4 value keeps the >= 2-valid rule; fewer than two plausible
vertebrae raise.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage as ndi

from tbscore.core import detect_kernels as _k
from tbscore.core.constants import (  # defaults shared with Settings
    DEFAULT_ROI_INSET_MM,
    MIN_CONFIDENCE,
    MIN_VERTEBRA_CONFIDENCE,
)
from tbscore.core.raster import polygon_mask
from tbscore.core.roi import (
    LABELS,
    VertebraROI,
    VertebraROIs,
    rounded_rect_distance,
    rounded_rect_outline,
)
from tbscore.errors import DetectionError, SettingsError

__all__ = [
    "detect",
    "locate_vertebrae",
    "body_polygon",
    "DetectedBody",
    "SpineDetection",
    "MIN_CONFIDENCE",
    "MIN_VERTEBRA_CONFIDENCE",
    "WARN_CONFIDENCE",
    "DISAGREE_CONFIDENCE",
    "DEFAULT_ROI_INSET_MM",
]

#: Below this (overall or per vertebra) a warning asks to check the ROIs.
WARN_CONFIDENCE = 0.6

_GRID_MM = 1.0  # isotropic working grid (axis, discs, crests)
_SMOOTH_MM = 1.5  # smoothing of the working grid
_FINE_SMOOTH_MM = 1.0  # smoothing of the image used for the outlines
_PATCH_STEP_MM = 0.5  # sampling step of the per-body frames
_CORNER_MM = 3.0  # corner radius of the outline
_CORE_HALF_MM = 15  # matched filter: bright core +-15 mm ...
_FLANK_MM = (24, 44)  # ... between darker flanks 24-44 mm either side
_BAND_HALF_MM = 10.0  # half-width of the band whose mean gives the axial profile
_CREST_BAND_MM = (55.0, 100.0)  # lateral band searched for the iliac crests
_CREST_ABOVE_MM = 10.0  # L4: lowest body whose top endplate is this far above the crests
_CREST_MISMATCH_MM = 30.0  # crests further apart: use the higher one
_MIN_FOV_MM = (120.0, 50.0)  # smallest field of view (rows, cols) that can hold L1-L4
# Plausible body height, width (mm) and width / height: (fully plausible range),
# (range outside which the plausibility is 0).
_HEIGHT_MM = ((15.0, 45.0), (10.0, 60.0))
_WIDTH_MM = ((25.0, 70.0), (17.0, 90.0))
_RATIO = ((0.9, 2.6), (0.6, 3.4))


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DetectedBody:
    """One vertebral body found along the spine.

    Attributes
    ----------
    center_mm : (float, float)
        Centre ``(y_mm, x_mm)`` in image mm coordinates (pixel ``(r, c)`` is at
        ``(r * row_mm, c * col_mm)``).
    angle_deg : float
        Rotation of the body's cranio-caudal axis from the image rows, degrees;
        positive turns the lower end towards higher column indices.
    half_size_mm : (float, float)
        Half height (along the spine) and half width (across), mm.
    corner_radius_mm : float
        Corner radius of the rounded-rectangle outline, mm.
    confidence : float
        In [0, 1]; the product of the terms in ``scores``.
    scores : dict
        ``agreement`` (edge agreement, 0.5 = chance, 1 = perfect), ``cnr``
        (body-minus-surroundings contrast over the fine-scale noise), and the
        factors ``q_agreement``, ``q_cnr``, ``q_size``, ``q_truncated``,
        ``q_consistency`` whose product is ``confidence``.
    truncated : bool
        The body touches the image border (its outline is not fully visible).
    label : str or None
        ``"L1"`` .. ``"L4"`` when labelled.
    """

    center_mm: tuple[float, float]
    angle_deg: float
    half_size_mm: tuple[float, float]
    corner_radius_mm: float
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)
    truncated: bool = False
    label: str | None = None


@dataclass(frozen=True)
class SpineDetection:
    """Everything :func:`locate_vertebrae` found.

    Attributes
    ----------
    bodies : tuple of DetectedBody
        All bodies along the spine, cranial to caudal (labelled ones carry a label).
    axis_mm : ndarray, shape (n, 2)
        The spine axis, ``(y_mm, x_mm)`` points 1 mm apart, cranial to caudal.
    crest_mm : (float, float) or None
        Where the crest level crosses the spine: a point ``(y_mm, x_mm)`` on the line
        through the two lowest bodies, at the level of the iliac crests (None when
        no crest was found).
    confidence : float
        Overall confidence in [0, 1] (mean of the L1-L4 confidences times the
        labelling factor).
    warnings : tuple of str
    """

    bodies: tuple[DetectedBody, ...]
    axis_mm: np.ndarray
    crest_mm: tuple[float, float] | None
    confidence: float
    warnings: tuple[str, ...] = ()

    def labelled(self) -> dict[str, DetectedBody]:
        """The labelled bodies, ``{"L1": body, ...}``."""
        return {b.label: b for b in self.bodies if b.label is not None}


# --------------------------------------------------------------------------- helpers


def _check_input(
    image: np.ndarray, spacing: Sequence[float], source: str
) -> tuple[np.ndarray, tuple[float, float]]:
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise DetectionError(f"image must be 2-D, got shape {arr.shape}", source)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise DetectionError(f"image must be numeric, got dtype {arr.dtype}", source)
    if min(arr.shape) < 2:
        raise DetectionError(
            f"image of {arr.shape[0]} x {arr.shape[1]} pixels cannot hold a spine "
            "(need at least 2 rows and 2 columns)",
            source,
        )
    integer = np.issubdtype(arr.dtype, np.integer)
    arr = np.asarray(arr, dtype=np.float64)  # read only below: no copy of a float64 image
    if not integer and not np.isfinite(arr).all():  # integers are always finite
        raise DetectionError("image has non-finite pixel values", source)
    try:
        sy, sx = (float(s) for s in spacing)
    except (TypeError, ValueError) as exc:
        raise DetectionError(f"pixel spacing must be (row_mm, col_mm), got {spacing!r}") from exc
    if not (math.isfinite(sy) and math.isfinite(sx) and sy > 0 and sx > 0):
        raise DetectionError(f"pixel spacing must be positive, got {spacing!r}", source)
    fov = (arr.shape[0] * sy, arr.shape[1] * sx)
    if fov[0] < _MIN_FOV_MM[0] or fov[1] < _MIN_FOV_MM[1]:
        raise DetectionError(
            f"field of view {fov[0]:.0f} x {fov[1]:.0f} mm is too small to hold L1-L4 "
            f"(need at least {_MIN_FOV_MM[0]:.0f} mm along the spine and "
            f"{_MIN_FOV_MM[1]:.0f} mm across); is this a lumbar-spine DXA image?",
            source,
        )
    return arr, (sy, sx)


def _normalise(arr: np.ndarray, source: str) -> np.ndarray:
    """Map the 1st..99th percentiles to 0..1 (robust to scale, offset and bit depth)."""
    lo, hi = _percentiles(arr, (1.0, 99.0))
    if not hi - lo > 1e-9 * max(1.0, abs(hi), abs(lo)):
        lo, hi = float(arr.min()), float(arr.max())
        if not hi - lo > 1e-9 * max(1.0, abs(hi), abs(lo)):
            raise DetectionError("image has no contrast (uniform gray level): no spine", source)
    out = np.subtract(arr, lo)
    out /= hi - lo  # (arr - lo) / (hi - lo), in place
    return out


def _percentiles(x: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """``np.percentile(x, q)`` of finite values ``x`` (any shape; ``q`` in percent),
    exactly: two compiled selections a percentile
    (:func:`tbscore.core.detect_kernels.percentiles`) instead of numpy's partition of a copy."""
    flat = np.ascontiguousarray(x, dtype=np.float64).ravel()
    return _k.percentiles(flat, np.true_divide(np.asarray(q, dtype=np.float64), 100))


def _resample_iso(norm: np.ndarray, spacing: tuple[float, float], step: float) -> np.ndarray:
    """Resample to an isotropic ``step`` mm grid; iso pixel ``(i, j)`` is at ``(i, j) * step``."""
    sy, sx = spacing
    sigma = (max(0.0, (step / sy - 1.0) / 2.0), max(0.0, (step / sx - 1.0) / 2.0))
    src = _gaussian(norm, sigma) if max(sigma) > 0 else norm
    if sy == step and sx == step:  # the grid itself (what the interpolation returns)
        return np.array(src, dtype=np.float64, order="C")
    ny = int(math.floor((norm.shape[0] - 1) * sy / step)) + 1
    nx = int(math.floor((norm.shape[1] - 1) * sx / step)) + 1
    rr = (np.arange(ny) * step / sy)[:, None]
    cc = (np.arange(nx) * step / sx)[None, :]
    if np.all(rr == np.floor(rr)) and np.all(cc == np.floor(cc)):
        # every grid point is a pixel (e.g. 0.5 mm pixels): the interpolation returns it
        return src[rr.astype(np.intp)[:, 0]][:, cc.astype(np.intp)[0]]
    if rr[-1, 0] <= norm.shape[0] - 1 and cc[0, -1] <= norm.shape[1] - 1:
        # inside the image (always, up to rounding): the compiled loop, scipy's values
        return _k.resample_grid(np.ascontiguousarray(src, dtype=np.float64), rr[:, 0], cc[0])
    coords = np.broadcast_arrays(rr, cc)
    return ndi.map_coordinates(src, coords, order=1, mode="nearest")


def _gaussian(img: np.ndarray, sigma: Sequence[float], mode: str = "reflect") -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(img, sigma, mode=mode)`` of a 2-D float image,
    ``mode`` ``"reflect"`` or ``"nearest"`` (the same values,
    :func:`tbscore.core.detect_kernels.gaussian_2d`; scipy where an axis is not longer
    than its kernel's radius). A zero ``sigma`` leaves its axis alone, so
    ``(s, 0.0)`` is ``gaussian_filter1d(img, s, axis=0, mode=mode)``."""
    if getattr(getattr(ndi, "_filters", None), "_gaussian_kernel1d", None) is None:
        return ndi.gaussian_filter(img, sigma, mode=mode)  # scipy's weights moved: scipy
    weights = []
    for n, sg in zip(img.shape, sigma, strict=True):
        if not sg > 1e-15:  # scipy skips such axes
            weights.append(np.empty(0))
            continue
        radius = int(4.0 * float(sg) + 0.5)  # truncate=4.0, as gaussian_filter1d
        if n <= radius:
            return ndi.gaussian_filter(img, sigma, mode=mode)
        weights.append(_gaussian_weights(float(sg), radius))
    img = np.ascontiguousarray(img, dtype=np.float64)
    return _k.gaussian_2d(img, weights[0], weights[1], mode == "nearest")


@functools.lru_cache(maxsize=64)
def _gaussian_weights(sigma: float, radius: int) -> np.ndarray:
    """scipy's ``gaussian_filter1d`` weights for ``sigma`` (pixels) and ``radius``, in
    correlation order; cached (a detection asks for the same few sigmas). Not marked
    read-only (numba would compile the kernel again for read-only arrays); nothing
    writes them."""
    return np.ascontiguousarray(ndi._filters._gaussian_kernel1d(sigma, 0, radius)[::-1])


def _median_inplace(x: np.ndarray) -> float:
    """``np.median`` of a finite 1-D array, exactly (``x`` is reordered, not copied).

    One ``partition`` around the upper middle; for an even size the lower middle is
    the largest value below it (a partition around two ranks costs several times one).
    """
    n = x.size
    h = n // 2
    x.partition(h)
    if n % 2:
        return float(x[h])
    return float((x[:h].max() + x[h]) / 2)


def _kth_of_sorted_pair(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """The ``k``-th smallest (0-based) of the union of the ascending arrays ``a``, ``b``
    (binary search over how many of the ``k + 1`` smallest come from ``a``)."""
    lo, hi = max(0, k + 1 - b.size), min(k + 1, a.size)
    while lo < hi:
        i = (lo + hi) // 2
        j = k + 1 - i
        if j > 0 and i < a.size and b[j - 1] > a[i]:
            lo = i + 1
        else:
            hi = i
    j = k + 1 - lo
    return float(max(a[lo - 1] if lo > 0 else -math.inf, b[j - 1] if j > 0 else -math.inf))


def _noise_sd(norm: np.ndarray) -> float:
    """Robust fine-scale noise level (normalised units): the median absolute deviation
    of all row and column differences over sqrt(2), as a normal sd (at least 1e-6).

    Two compiled selections (:func:`tbscore.core.detect_kernels.diff_mad`); the same
    value as :func:`_noise_sd_reference`.
    """
    return _noise_from_mad(_k.diff_mad(norm))


def _noise_from_mad(mad: float) -> float:
    return max(1.4826 * float(mad) / math.sqrt(2.0), 1e-6)


def _noise_sd_reference(norm: np.ndarray) -> float:
    """Robust fine-scale noise level (normalised units) from row/column differences.

    The median absolute deviation of all row and column differences, exactly as
    ``np.median(np.abs(d - np.median(d)))``: the differences are sorted once; their
    absolute deviations from the median are then two ascending runs (below and above
    it), whose middle values a binary search finds.
    """
    ny, nx = norm.shape
    k = (ny - 1) * nx
    d = np.empty(k + ny * (nx - 1))
    np.subtract(norm[1:], norm[:-1], out=d[:k].reshape(ny - 1, nx))
    np.subtract(norm[:, 1:], norm[:, :-1], out=d[k:].reshape(ny, nx - 1))
    d.sort()
    n = d.size
    h = n // 2
    med = float(d[h]) if n % 2 else float((d[h - 1] + d[h]) / 2)
    p = int(np.searchsorted(d, med, "left"))
    below = med - d[:p][::-1]  # |d - med| of the values below the median, ascending
    above = d[p:] - med  # and of the others, ascending
    if n % 2:
        mad = _kth_of_sorted_pair(below, above, h)
    else:
        mad = (_kth_of_sorted_pair(below, above, h - 1) + _kth_of_sorted_pair(below, above, h)) / 2
    return _noise_from_mad(mad)


def _clip01(x: float) -> float:
    """``float(np.clip(x, 0.0, 1.0))`` of a float (NaN stays NaN), without numpy's call."""
    return min(max(float(x), 0.0), 1.0)


def _mean_few(xs: Sequence[float]) -> float:
    """``float(np.mean(xs))`` of fewer than 8 floats: numpy's sum of so few values is
    ``0.0 + x0 + x1 + ...`` in order (its pairwise sum starts blocks at 8), then the
    division by the count."""
    if len(xs) >= 8:
        return float(np.mean(xs))
    total = 0.0
    for x in xs:
        total += x
    return total / len(xs)


def _prod_few(xs: Sequence[float]) -> float:
    """``float(np.prod(xs))`` of a few floats: numpy multiplies them in order."""
    total = 1.0
    for x in xs:
        total *= x
    return total


def _ramp(x: float, good: tuple[float, float], bad: tuple[float, float]) -> float:
    """1 for ``good[0] <= x <= good[1]``, falling linearly to 0 at ``bad[0]`` / ``bad[1]``."""
    if x < good[0]:
        return _clip01((x - bad[0]) / (good[0] - bad[0]))
    if x > good[1]:
        return _clip01((bad[1] - x) / (bad[1] - good[1]))
    return 1.0


def _nanmean(a: np.ndarray, axis: int, min_count: int = 1) -> np.ndarray:
    """Mean of the finite values along ``axis``; NaN where fewer than ``min_count``."""
    ok = np.isfinite(a)
    n = ok.sum(axis=axis)
    total = np.where(ok, a, 0.0).sum(axis=axis)
    return np.where(n >= max(min_count, 1), total / np.maximum(n, 1), np.nan)


def _nanmedian(a: np.ndarray) -> float:
    """Median of the finite values (NaN when there are none); exactly ``np.median``."""
    a = np.asarray(a, dtype=float)
    if a.size <= 32:  # a few band edges: sorting in Python beats numpy's call overhead
        vals = [x for x in a.ravel().tolist() if math.isfinite(x)]
        return _median_few(vals) if vals else math.nan
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else math.nan


def _median_few(vals: list[float]) -> float:
    """``float(np.median(vals))`` of a few finite floats (at least one), sorted in Python."""
    vals = sorted(vals)
    n = len(vals)
    h = n // 2
    return vals[h] if n % 2 else (vals[h - 1] + vals[h]) / 2


# --------------------------------------------------------------------------- axis


_SIDE_STEP_PENALTY = 0.01  # spine path: cost of a step sideways (per row)


def _spine_response(iso: np.ndarray) -> np.ndarray:
    """The lateral matched filter: how much every pixel looks like the spine centre
    (-inf where the core and part of both flanks do not lie in the image)."""
    core = ndi.uniform_filter1d(iso, 2 * _CORE_HALF_MM + 1, axis=1, mode="nearest")
    f0, f1 = _FLANK_MM
    width = f1 - f0 + 1
    mid = (f0 + f1) // 2
    flank = ndi.uniform_filter1d(iso, width, axis=1, mode="nearest")
    n = iso.shape[1]
    # the flank means mid columns left and right of each column, the border column
    # beyond the image (np.pad(flank, mid, mode="edge") shifted both ways), then
    # core - 0.5 * (left + right) in place
    side = np.empty_like(flank)
    right = np.empty_like(flank)
    k = min(mid, n)
    side[:, k:] = flank[:, : n - k]
    side[:, :k] = flank[:, :1]
    right[:, : n - k] = flank[:, k:]
    right[:, n - k :] = flank[:, n - 1 :]
    side += right
    side *= 0.5
    response = np.subtract(core, side, out=side)
    response = _gaussian(response, (8.0, 0.0), mode="nearest")
    # Keep the centre where the core and at least part of both flanks lie in the image.
    margin = min(f0, max(n // 2 - 1, 0))
    response[:, :margin] = -np.inf
    response[:, n - margin :] = -np.inf
    return response


def _spine_path(iso: np.ndarray) -> np.ndarray:
    """Column (iso pixels) of the spine centre in every row, by dynamic programming
    (compiled: :func:`tbscore.core.detect_kernels.spine_dp`)."""
    return _k.spine_dp(_spine_response(iso), _SIDE_STEP_PENALTY)


def _spine_path_reference(iso: np.ndarray) -> np.ndarray:
    """:func:`_spine_path` in numpy (the oracle of the kernel's property test)."""
    response = _spine_response(iso)
    n = iso.shape[1]
    # Forward pass: score[i, j] = response[i, j] + the best of score[i - 1, j - 1 .. j + 1]
    # (a step sideways costs ``penalty``); the choices are recovered on the way back.
    penalty = _SIDE_STEP_PENALTY
    nr = iso.shape[0]
    padded = np.full((nr, n + 2), -np.inf)  # one -inf column either side
    score = padded[:, 1:-1]
    score[0] = response[0]
    best = np.empty(n)
    for i in range(1, nr):
        np.maximum(padded[i - 1, :-2], padded[i - 1, 2:], out=best)
        best -= penalty  # == max(left - penalty, right - penalty): rounding is monotone
        np.maximum(best, score[i - 1], out=best)
        np.add(best, response[i], out=score[i])
    path = np.empty(nr, dtype=float)
    j = int(np.argmax(score[-1]))
    for i in range(nr - 1, -1, -1):
        path[i] = j
        if i == 0:
            break
        prev = score[i - 1]
        left = prev[j - 1] - penalty if j > 0 else -math.inf
        here = prev[j]
        right = prev[j + 1] - penalty if j < n - 1 else -math.inf
        # the first of equal maxima, as np.argmax over (left, here, right)
        if not (left >= here and left >= right):
            j += 0 if here >= right else 1
        else:
            j -= 1
    return path


@dataclass(frozen=True)
class _Axis:
    """The spine axis sampled every 1 mm of arc length (working-grid mm)."""

    points: np.ndarray  # (n, 2) (y, x) mm
    tangents: np.ndarray  # (n, 2) unit (ty, tx), pointing caudally
    normals: np.ndarray  # (n, 2) unit, pointing to higher columns when vertical

    def at(self, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point, tangent and normal at arc length ``s`` (mm, linear interpolation)."""
        n = len(self.points)
        s = min(max(float(s), 0.0), n - 1.0)  # np.clip(s, 0, n - 1)
        i = min(int(s), n - 2)
        f = s - i
        p = (1 - f) * self.points[i] + f * self.points[i + 1]
        t = (1 - f) * self.tangents[i] + f * self.tangents[i + 1]
        t = t / np.hypot(*t)
        return p, t, np.array([-t[1], t[0]])


def _make_axis(path_x: np.ndarray, step: float) -> _Axis:
    """Smooth the dynamic-programming path (Gaussian, 25 mm, ends extended linearly)
    and resample it every 1 mm of arc length."""
    x = path_x * step
    n = len(x)
    sigma = 25.0 / step
    pad = int(3 * sigma)
    k = max(min(int(40.0 / step), n // 2), 2)
    idx = np.arange(n)
    head = np.polyfit(idx[:k], x[:k], 1)
    tail = np.polyfit(idx[-k:], x[-k:], 1)
    ext = np.concatenate(
        [np.polyval(head, np.arange(-pad, 0)), x, np.polyval(tail, np.arange(n, n + pad))]
    )
    x = ndi.gaussian_filter1d(ext, sigma, mode="nearest")[pad : pad + n]
    y = idx * step
    ds = np.hypot(np.diff(y), np.diff(x))
    s = np.concatenate([[0.0], np.cumsum(ds)])
    grid = np.arange(0.0, s[-1] + 1e-9, 1.0)
    pts = np.column_stack([np.interp(grid, s, y), np.interp(grid, s, x)])
    tan = np.gradient(pts, axis=0)
    tan /= np.hypot(tan[:, 0], tan[:, 1])[:, None]
    nor = np.column_stack([-tan[:, 1], tan[:, 0]])
    return _Axis(pts, tan, nor)


def _line_frame(
    iso: np.ndarray,
    origin: np.ndarray,
    tangent: np.ndarray,
    step: float,
    half_mm: float,
    lateral: tuple[float, float] = (0.0, math.inf),
) -> tuple[np.ndarray, float]:
    """Working grid resampled in a straight frame through ``origin`` along ``tangent``.

    Returns ``(S, s0)``: ``S[k, j]`` is the image at ``origin + (s0 + k) t + v_j n``
    (1 mm steps, ``v_j`` from ``-half_mm`` to ``half_mm``, NaN outside), covering the
    whole image along ``t``. Only the columns with ``lateral[0] <= |v_j| <= lateral[1]``
    are sampled (the others are NaN).
    """
    t = tangent / np.hypot(*tangent)
    nrm = np.array([-t[1], t[0]])
    h, w = (np.array(iso.shape) - 1) * step
    corners = np.array([[0, 0], [0, w], [h, 0], [h, w]]) - origin
    proj = corners @ t
    s0 = math.floor(proj.min())
    s = np.arange(s0, math.ceil(proj.max()) + 1, 1.0)
    v = np.arange(-half_mm, half_mm + 0.5, 1.0)
    keep = (np.abs(v) >= lateral[0]) & (np.abs(v) <= lateral[1])
    # the points origin + s t + v n, as (origin + s t) + v n
    by, bx = origin[0] + s * t[0], origin[1] + s * t[1]
    dy, dx = np.full(s.size, nrm[0]), np.full(s.size, nrm[1])
    return _k.sample_lines(iso, by, dy, bx, dx, v, keep, float(step)), float(s0)


def _straighten(iso: np.ndarray, axis: _Axis, step: float, half_mm: float, keep=None) -> np.ndarray:
    """``S[s, j]``: working grid sampled at ``axis(s) + v_j * normal(s)``, ``v_j`` from
    ``-half_mm`` to ``half_mm`` (1 mm steps); NaN outside the image, and in the columns
    where ``keep(|v_j|)`` (a boolean function of the distance from the axis, mm) is
    false (default: all columns are sampled)."""
    v = np.arange(-half_mm, half_mm + 0.5, 1.0)
    cols = np.ones(v.size, dtype=bool) if keep is None else keep(np.abs(v))
    p, n = np.ascontiguousarray(axis.points.T), np.ascontiguousarray(axis.normals.T)
    return _k.sample_lines(iso, p[0], n[0], p[1], n[1], v, cols, float(step))


def _straight_columns(dist: np.ndarray) -> np.ndarray:
    """The columns of the straightened image that detection reads: the central band
    (axial profile) and the rib band."""
    return (dist <= int(_BAND_HALF_MM)) | ((dist >= _RIB_BAND_MM[0]) & (dist <= _RIB_BAND_MM[1]))


# --------------------------------------------------------------------------- peaks


def find_peaks(
    x: np.ndarray,
    *,
    prominence: float,
    distance: float | None = None,
    width: tuple[float, float] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``scipy.signal.find_peaks(x, prominence=..., distance=..., width=...)`` for the
    conditions the detector uses, compiled (:func:`tbscore.core.detect_kernels.
    local_maxima`, :func:`~tbscore.core.detect_kernels.select_peaks`): the same peaks
    and properties, bit for bit (:func:`_find_peaks_reference`, the property test), and
    no import of ``scipy.signal`` (about 0.47 CPU-s, most of a process's first
    detection).

    Parameters
    ----------
    x : ndarray, 1-D
        The signal (as float64; the detector's are finite, and 4,000 random signals
        with NaN samples gave scipy's results too, though the tests pin finite ones).
    prominence : float
        Smallest prominence kept (in the units of ``x``).
    distance : float, optional
        Smallest distance between peaks (samples, >= 1); the higher peak wins.
    width : (float, float), optional
        Widths (samples, at half the prominence) kept.

    Returns
    -------
    peaks : ndarray of intp
    properties : dict
        ``prominences``, ``left_bases``, ``right_bases``; with ``width`` also
        ``widths``, ``width_heights``, ``left_ips``, ``right_ips`` (scipy's keys).
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError("`x` must be a 1-D array")
    if distance is not None and distance < 1:
        raise ValueError("`distance` must be greater or equal to 1")
    peaks = _k.local_maxima(x)
    # numpy's argsort (scipy's order for equal heights), between the compiled steps
    order = np.argsort(x[peaks]) if distance is not None else np.empty(0, dtype=np.intp)
    wmin, wmax = (math.inf, math.inf) if width is None else (float(width[0]), float(width[1]))
    out = _k.select_peaks(
        x, peaks, order, float(distance or 0.0), float(prominence), wmin, wmax, 0.5
    )
    props = dict(zip(("prominences", "left_bases", "right_bases"), out[1:4], strict=True))
    if width is not None:
        keys = ("widths", "width_heights", "left_ips", "right_ips")
        props.update(zip(keys, out[4:], strict=True))
    return out[0], props


def _find_peaks_reference(
    x: np.ndarray,
    *,
    prominence: float,
    distance: float | None = None,
    width: tuple[float, float] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`find_peaks` by ``scipy.signal.find_peaks`` (the detector's former call),
    the reference of its property test."""
    from scipy.signal import find_peaks as scipy_find_peaks

    return scipy_find_peaks(x, prominence=prominence, distance=distance, width=width)


# --------------------------------------------------------------------------- bodies


def _split_bodies(profile: np.ndarray) -> list[tuple[int, int, bool, bool]]:
    """Segments ``(start, stop, open_top, open_bottom)`` between disc minima."""
    valid = np.flatnonzero(np.isfinite(profile))
    if valid.size < 30:
        return []
    a, b = int(valid[0]), int(valid[-1]) + 1
    p = profile[a:b].copy()
    p[~np.isfinite(p)] = _nanmedian(p)
    lo, hi = _percentiles(p, (5.0, 95.0))
    if hi - lo <= 0:
        return []
    minima, props = find_peaks(-p, prominence=0.25 * (hi - lo), distance=10)
    prom = list(props["prominences"])
    minima = list(minima)
    # Merge segments shorter than a body (texture dips) across the shallower minimum.
    while len(minima) > 1:
        gaps = np.diff(minima)
        k = int(np.argmin(gaps))
        if gaps[k] >= _HEIGHT_MM[0][0]:
            break
        drop = k if prom[k] < prom[k + 1] else k + 1
        del minima[drop], prom[drop]
    # Split segments much longer than the typical one (a shallow, narrowed disc) at
    # their deepest inner minimum.
    if len(minima) >= 3:
        typical = _median_few([float(minima[i + 1] - minima[i]) for i in range(len(minima) - 1)])
        weak, weak_props = find_peaks(-p, prominence=0.08 * (hi - lo), distance=10)
        for i in range(len(minima) - 1, 0, -1):
            a0, a1 = minima[i - 1], minima[i]
            if a1 - a0 > 1.6 * typical:
                inner = [
                    (pr, m)
                    for m, pr in zip(weak, weak_props["prominences"], strict=True)
                    if a0 + 0.3 * typical < m < a1 - 0.3 * typical
                ]
                if inner:
                    pr, m = max(inner)
                    minima.insert(i, int(m))
                    prom.insert(i, float(pr))
    bounds = [0, *minima, len(p)]
    out = []
    for i in range(len(bounds) - 1):
        s0, s1 = bounds[i], bounds[i + 1]
        if s1 - s0 < 8:
            continue
        out.append((a + s0, a + s1, i == 0, i == len(bounds) - 2))
    return out


def _gradient_list(f: list[float]) -> list[float]:
    """``np.gradient(f).tolist()`` of at least two finite floats (unit spacing, first-order
    ends): the same formulas, so the same values."""
    n = len(f)
    return (
        [f[1] - f[0]]
        + [(f[i + 1] - f[i - 1]) / 2.0 for i in range(1, n - 1)]
        + [f[n - 1] - f[n - 2]]
    )


def _edges_in_segment(
    profile: np.ndarray, seg: tuple[int, int, bool, bool]
) -> tuple[float, float] | None:
    """Top and bottom endplate (arc length, mm) of one segment: strongest rise / fall."""
    s0, s1, open_top, open_bottom = seg
    # a few dozen values: Python floats, the same arithmetic as the numpy calls
    # (np.where, np.gradient, max / argmax) without their per-call overhead
    vals = profile[s0:s1].tolist()
    n_finite = sum(1 for x in vals if math.isfinite(x))
    if n_finite < 8:
        return None
    if n_finite < len(vals):
        fill = float(_nanmedian(profile[s0:s1]))
        vals = [x if math.isfinite(x) else fill for x in vals]
    g = _gradient_list(vals)
    mid = len(vals) // 2
    peak = max(abs(x) for x in g)
    head, tail = g[:mid], g[mid:]
    i_top = max(range(mid), key=head.__getitem__)  # the first of equal maxima (argmax)
    i_bot = min(range(len(tail)), key=tail.__getitem__)
    top = 0.0 if open_top and head[i_top] < 0.25 * peak else float(i_top)
    bottom = (
        float(len(vals) - 1) if open_bottom and tail[i_bot] > -0.25 * peak else float(mid + i_bot)
    )
    if bottom - top < _HEIGHT_MM[0][0] * 0.6:
        return None
    return s0 + top, s0 + bottom


def _frame_coords(center, angle_deg, u, v, spacing):
    """Pixel coordinates of the local body frame ``(u, v)`` (mm) around ``center``."""
    a = math.radians(angle_deg)
    y = center[0] + u * math.cos(a) - v * math.sin(a)
    x = center[1] + u * math.sin(a) + v * math.cos(a)
    return y / spacing[0], x / spacing[1]


def _grid_coords(center, angle_deg, u, v, spacing):
    """:func:`_frame_coords` of the grid ``u`` x ``v`` (1-D, mm): two ``(len(u), len(v))``
    arrays of pixel coordinates."""
    a = math.radians(angle_deg)
    ca, sa = math.cos(a), math.sin(a)
    y = (center[0] + u * ca)[:, None] - (v * sa)[None, :]
    x = (center[1] + u * sa)[:, None] + (v * ca)[None, :]
    y /= spacing[0]
    x /= spacing[1]
    return y, x


def _corners_within(rr: np.ndarray, cc: np.ndarray, lo: float, hi_r: float, hi_c: float) -> bool:
    """Whether every point of the grids ``rr``, ``cc`` (from :func:`_grid_coords`) lies in
    ``[lo, hi_r) x [lo, hi_c)``. Each grid is a rounded affine map of the grid indices,
    monotone along both axes, so its extremes are at its four corners."""
    cr = (rr[0, 0], rr[0, -1], rr[-1, 0], rr[-1, -1])
    cq = (cc[0, 0], cc[0, -1], cc[-1, 0], cc[-1, -1])
    return min(cr) >= lo and max(cr) < hi_r and min(cq) >= lo and max(cq) < hi_c


def _bilinear(img: np.ndarray, rr: np.ndarray, cc: np.ndarray, grid: bool = False) -> np.ndarray:
    """``img`` at pixel coordinates ``(rr, cc)``, bilinear, NaN outside ``[0, n - 1]``.

    The values of ``scipy.ndimage.map_coordinates(img, [rr, cc], order=1,
    mode="constant", cval=nan)`` (same weights, same order of the products and sums;
    equal to the last bit at almost every point, within 4e-16 everywhere), in a few
    whole-array numpy operations (``img`` at least 2 x 2, C-contiguous float64).
    ``grid``: ``rr``, ``cc`` come from :func:`_grid_coords` (then a field wholly inside
    the image skips the border handling).
    """
    ny, nx = img.shape
    f = img.ravel()
    if rr.size and grid and _corners_within(rr, cc, 0.0, ny - 1.0, nx - 1.0):
        r0 = np.floor(rr)
        c0 = np.floor(cc)
        wr1 = rr - r0
        wc1 = cc - c0
        r0 *= nx
        r0 += c0
        i = r0.astype(np.intp)
        out_of = None
    else:
        with np.errstate(invalid="ignore"):
            out_of = (rr < 0) | (rr > ny - 1) | (cc < 0) | (cc > nx - 1) | np.isnan(rr + cc)
        r0 = np.floor(rr)
        c0 = np.floor(cc)
        wr1 = rr - r0
        wc1 = cc - c0
        # The last row / column: start one cell earlier with weight 1 on the far corner.
        last_r = r0 >= ny - 1
        last_c = c0 >= nx - 1
        wr1[last_r] = 1.0
        wc1[last_c] = 1.0
        r0[last_r] -= 1.0
        c0[last_c] -= 1.0
        i = r0 * nx + c0
        i[out_of] = 0.0
        i = i.astype(np.intp)
    wr0 = 1.0 - wr1
    wc0 = 1.0 - wc1
    out = f[i]
    out *= wr0
    out *= wc0
    t = f[1:][i]
    t *= wr0
    t *= wc1
    out += t
    t = f[nx:][i]
    t *= wr1
    t *= wc0
    out += t
    t = f[nx + 1 :][i]
    t *= wr1
    t *= wc1
    out += t
    if out_of is not None:
        out[out_of] = np.nan
    return out


def _sample_frame(fine, center, angle_deg, u, v, spacing) -> np.ndarray:
    rr, cc = _grid_coords(center, angle_deg, u, v, spacing)
    return _bilinear(fine, rr, cc, grid=True)


def _median_slope(x: np.ndarray, y: np.ndarray) -> float | None:
    """Theil-Sen slope (median of pairwise slopes) of finite points, or None."""
    pts = [
        (a, b)
        for a, b in zip(x.tolist(), y.tolist(), strict=True)
        if math.isfinite(a) and math.isfinite(b)
    ]
    slopes = sorted(
        (pts[j][1] - pts[i][1]) / (pts[j][0] - pts[i][0])
        for i in range(len(pts))
        for j in range(i + 1, len(pts))
        if abs(pts[j][0] - pts[i][0]) > 1e-9
    )
    n = len(slopes)
    if not n:
        return None
    h = n // 2
    return slopes[h] if n % 2 else (slopes[h - 1] + slopes[h]) / 2


#: Start of the five bands across a body, in half sizes from its centre (each 0.24 wide).
_BAND_F0 = np.linspace(-0.6, 0.36, 5)


def _bands(
    across: np.ndarray, centre: float, half: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index ranges ``[lo[b], hi[b])`` of the sorted coordinates ``across`` in each of
    the five bands ``centre + [f0, f0 + 0.24] * half`` (both ends included), and the
    band centres."""
    lo = np.searchsorted(across, centre + _BAND_F0 * half, "left")
    hi = np.searchsorted(across, centre + (_BAND_F0 + 0.24) * half, "right")
    return lo, np.maximum(hi, lo), centre + (_BAND_F0 + 0.12) * half


def _band_profiles(sub: np.ndarray, lo, hi, first: int, axis: int) -> np.ndarray:
    """Mean profiles (finite values) of the bands ``[lo[b], hi[b])`` of ``sub``, whose
    index 0 along ``axis`` is band index ``first``; one band per row of the result."""
    finite = bool(np.isfinite(sub).all())
    if finite and axis == 0 and lo[0] == first and hi[-1] == first + len(sub):
        n = hi - lo
        if (n > 0).all() and (lo[1:] == hi[:-1]).all():  # adjacent bands: one call
            return np.add.reduceat(sub, lo - first, axis=0) / n[:, None]
    profs = []
    for a, b in zip((lo - first).tolist(), (hi - first).tolist(), strict=True):
        band = sub[a:b] if axis == 0 else sub[:, a:b]
        if finite and b > a:
            profs.append(band.sum(axis=axis) / (b - a))
        else:
            profs.append(_nanmean(band, axis))
    return np.array(profs)


_OFFSETS3 = np.array([-1, 0, 1])


def _edge_windows(along: np.ndarray, rise, fall):
    """Index windows ``[a, b)`` of ``along`` (sorted) in the mm windows ``rise`` and
    ``fall``, and the index ranges of ``along`` the edge search reads for each: the
    window and two samples either side (the profile points its gradients and their
    neighbours use), clipped to ``along``; overlapping ranges are merged."""
    n = along.size
    starts = np.searchsorted(along, (rise[0], fall[0]), "left").tolist()
    stops = np.searchsorted(along, (rise[1], fall[1]), "right").tolist()
    windows = list(zip(starts, stops, strict=True))
    ranges = [(max(a - 2, 0), min(b + 2, n)) for a, b in windows]
    if ranges[1][0] <= ranges[0][1]:
        ranges = [(min(ranges[0][0], ranges[1][0]), max(ranges[0][1], ranges[1][1]))]
    return windows, ranges


def _edge_pair(along, windows, blocks):
    """Positions (mm) of the strongest rising gradient in ``windows[0]`` and of the
    strongest falling one in ``windows[1]`` (index windows ``[a, b)`` of the sorted
    ``along``), for each band, to a sub-sample by a parabola through the peak; NaN where a
    band has fewer than three finite gradients in the window. ``blocks`` holds, per
    window, ``(first, grad)``: the gradients of the band profiles (one band per row) at
    ``along[first : first + grad.shape[1]]``, covering the window and two samples either
    side. Returns ``(rising, falling)``, one value per band.

    One arg-max (arg-min) over each window's columns for all bands; the parabola and the
    interpolation into ``along`` (the arithmetic of ``np.interp``) are done on the peaks
    in plain Python floats, which give the same IEEE results as numpy.
    """
    n = along.size
    xs = along.tolist()
    result = []
    for (a, b), (first, grad), rising in zip(windows, blocks, (True, False), strict=True):
        nb, ncol = grad.shape
        if b - a < 3:
            result.append(np.full(nb, np.nan))
            continue
        win = grad[:, a - first : b - first]
        if np.isfinite(win).all():
            ok = [True] * nb
            idx = a + (np.argmax(win, axis=1) if rising else np.argmin(win, axis=1))
        else:
            fin = np.isfinite(win)
            ok = (np.count_nonzero(fin, axis=1) >= 3).tolist()
            idx = a + (
                np.argmax(np.where(fin, win, -np.inf), axis=1)
                if rising
                else np.argmin(np.where(fin, win, np.inf), axis=1)
            )
        cols = np.minimum(np.maximum(idx[:, None] - first + _OFFSETS3, 0), ncol - 1)
        near = grad[np.arange(nb)[:, None], cols].tolist()
        out = []
        for i, (pa, pb, pc), good in zip(idx.tolist(), near, ok, strict=True):
            if not good:
                out.append(math.nan)
                continue
            if not rising:  # a falling edge is a rising edge of -grad (negation is exact)
                pa, pb, pc = -pa, -pb, -pc
            pos = float(i)
            if 0 < i < n - 1:
                den = pa - 2 * pb + pc
                if math.isfinite(den) and abs(den) > 1e-12:
                    pos = i + min(max(0.5 * (pa - pc) / den, -0.5), 0.5)
            # np.interp(pos, arange(n), along)
            j = math.floor(pos)
            if j >= n - 1:
                out.append(xs[-1])
            elif j < 0:
                out.append(xs[0])
            elif j == pos:
                out.append(xs[j])
            else:
                slope = (xs[j + 1] - xs[j]) / ((j + 1.0) - j)
                out.append(slope * (pos - j) + xs[j])
        result.append(np.array(out))
    return result[0], result[1]


def _block_gradients(profs, along, windows, ranges):
    """Per window, ``(first, gradient)`` of the profile columns ``profs`` sampled at the
    concatenated ``ranges`` of ``along`` (each range's gradient as ``np.gradient`` of
    the whole profile gives it there, the spacing judged uniform or not over all of
    ``along``)."""
    dx = along[1:] - along[:-1]
    uniform = bool((dx == dx[0]).all())
    grads, k = [], 0
    for first, stop in ranges:
        m = stop - first
        grads.append((first, _gradient(profs[:, k : k + m], along[first:stop], uniform)))
        k += m
    if len(grads) == 1:
        grads = grads * len(windows)
    return grads


def _gradient(f: np.ndarray, x: np.ndarray, uniform: bool | None = None) -> np.ndarray:
    """``np.gradient(f, x, axis=1)`` of a 2-D ``f`` (same formulas, same values), without
    its per-call overhead. ``uniform``: use the formula for evenly spaced ``x`` (what
    ``np.gradient`` picks when all steps are equal); ``None`` decides from ``x``."""
    dx = x[1:] - x[:-1]
    out = np.empty_like(f)
    if (dx == dx[0]).all() if uniform is None else uniform:
        d = dx[0]
        out[:, 1:-1] = (f[:, 2:] - f[:, :-2]) / (2.0 * d)
        d0 = dn = d
    else:
        dx1, dx2 = dx[:-1], dx[1:]
        a = -(dx2) / (dx1 * (dx1 + dx2))
        b = (dx2 - dx1) / (dx1 * dx2)
        c = dx1 / (dx2 * (dx1 + dx2))
        out[:, 1:-1] = a * f[:, :-2] + b * f[:, 1:-1] + c * f[:, 2:]
        d0, dn = dx[0], dx[-1]
    out[:, 0] = (f[:, 1] - f[:, 0]) / d0
    out[:, -1] = (f[:, -1] - f[:, -2]) / dn
    return out


_STEP_HALF = _PATCH_STEP_MM / 2
#: Columns of the lateral-edge patches (mm across the body frame).
_V_LATERAL = np.arange(-45.0, 45.0 + _STEP_HALF, _PATCH_STEP_MM)
#: The lateral-edge search windows (left edge rising, right edge falling), the index
#: ranges of _V_LATERAL they read, and those columns (the only ones sampled).
_V_WINDOWS, _V_RANGES = _edge_windows(_V_LATERAL, (-40.0, -7.0), (7.0, 40.0))
_V_SEARCHED = np.concatenate([_V_LATERAL[a:b] for a, b in _V_RANGES])


#: Start, end and centre of the five bands (half sizes), and the lateral-edge windows
#: and read ranges of _V_LATERAL, as the compiled refinement takes them.
_BAND_F = (_BAND_F0, _BAND_F0 + 0.24, _BAND_F0 + 0.12)
_V_WIN = np.array(
    [*_V_WINDOWS[0], *_V_WINDOWS[1], len(_V_RANGES), *[i for r in _V_RANGES for i in r]]
    + [0, 0] * (2 - len(_V_RANGES)),
    dtype=np.int64,
)


def _refine_body(fine, spacing, center, angle, hu, hw, n_iter: int = 3):
    """Refine centre, angle and half sizes of one body in its own rotated frame; None
    when an edge is not found.

    :func:`_refine_body_reference` (which documents the method) in one compiled call
    (:func:`tbscore.core.detect_kernels.refine_body`), the same numbers.
    """
    ok, cy, cx, angle, hu, hw = _k.refine_body(
        fine, float(spacing[0]), float(spacing[1]), float(center[0]), float(center[1]),
        float(angle), float(hu), float(hw), n_iter, _V_LATERAL, _V_SEARCHED, _V_WIN, *_BAND_F,
    )  # fmt: skip
    if not ok:
        return None
    return (cy, cx), angle, hu, hw


def _refine_body_reference(fine, spacing, center, angle, hu, hw, n_iter: int = 3):
    """Refine centre, angle and half sizes of one body in its own rotated frame.

    The lateral edges are the medians of the strongest gradients in five bands of
    rows, the endplates the medians over five bands of columns (a texture patch or a
    transverse process disturbs one or two bands, not the median); the Theil-Sen
    slope of the endplates corrects the rotation (at most 8 degrees per iteration,
    20 degrees from the axis in all).

    Only the rows (columns) of the patch that fall in a band are sampled (the same
    points as a whole patch, fewer of them).
    """
    step = _PATCH_STEP_MM
    angle0 = angle
    v = _V_LATERAL
    for _ in range(n_iter):
        u = np.arange(-hu - 12.0, hu + 12.0 + _STEP_HALF, step)
        # one set of band profiles and one gradient serve both edges of a direction
        lo, hi, _mid = _bands(u, 0.0, hu)
        r0, r1 = int(lo.min()), int(hi.max())
        rows = _sample_frame(fine, center, angle, u[r0:r1], _V_SEARCHED, spacing)
        blocks = _block_gradients(_band_profiles(rows, lo, hi, r0, 0), v, _V_WINDOWS, _V_RANGES)
        lefts, rights = _edge_pair(v, _V_WINDOWS, blocks)
        left, right = _nanmedian(lefts), _nanmedian(rights)
        if not (math.isfinite(left) and math.isfinite(right)):
            return None
        vc, new_hw = 0.5 * (left + right), 0.5 * (right - left)
        lo, hi, mid = _bands(v, vc, new_hw)
        c0, c1 = int(lo.min()), int(hi.max())
        windows, ranges = _edge_windows(
            u, (-hu - 7.0, min(-hu + 7.0, -3.0)), (max(hu - 7.0, 3.0), hu + 7.0)
        )
        u_read = np.concatenate([u[a:b] for a, b in ranges])
        cols = _sample_frame(fine, center, angle, u_read, v[c0:c1], spacing)
        blocks = _block_gradients(_band_profiles(cols, lo, hi, c0, 1), u, windows, ranges)
        tops, bottoms = _edge_pair(u, windows, blocks)
        top, bottom = _nanmedian(tops), _nanmedian(bottoms)
        if not (math.isfinite(top) and math.isfinite(bottom)):
            return None
        slopes = [m for m in (_median_slope(mid, tops), _median_slope(mid, bottoms)) if m]
        delta = -math.degrees(math.atan(sum(slopes) / len(slopes))) if slopes else 0.0
        delta = min(max(delta, -8.0), 8.0)
        uc = 0.5 * (top + bottom)
        hu = 0.5 * (bottom - top)
        hw = new_hw
        cy, cx = _frame_coords(center, angle, uc, vc, (1.0, 1.0))
        center = (float(cy), float(cx))
        angle = min(max(angle + delta, angle0 - 20.0), angle0 + 20.0)
    return center, angle, hu, hw


def _score_body(fine, spacing, shape_px, center, angle, hu, hw, noise):
    """Edge agreement, contrast-to-noise and border contact of one body outline:
    :func:`_score_body_reference` (which documents them) in one compiled call
    (:func:`tbscore.core.detect_kernels.score_body`), the same numbers."""
    enough, m_in, m_out, agree, truncated = _k.score_body(
        fine, float(spacing[0]), float(spacing[1]), float(shape_px[0]), float(shape_px[1]),
        float(center[0]), float(center[1]), float(angle), float(hu), float(hw), _CORNER_MM,
    )  # fmt: skip
    if not enough:
        return 0.5, 0.0, bool(truncated)
    return float(agree), float((m_in - m_out) / noise), bool(truncated)


def _score_body_reference(fine, spacing, shape_mm, center, angle, hu, hw, noise):
    """Edge agreement, contrast-to-noise and border contact of one body outline."""
    step = _PATCH_STEP_MM
    u = np.arange(-hu - 6.0, hu + 6.0 + _STEP_HALF, step)
    v = np.arange(-hw - 6.0, hw + 6.0 + _STEP_HALF, step)
    rr, cc = _grid_coords(center, angle, u, v, spacing)
    patch = _bilinear(fine, rr, cc, grid=True)
    sd = rounded_rect_distance(u[:, None], v[None, :], hu, hw, _CORNER_MM)
    finite = np.isfinite(patch)
    inside = (sd <= -1.5) & finite
    ring = (sd >= 1.5) & (sd <= 5.0) & finite
    # Border contact: the outline, grown by 1.5 mm, reaches beyond the image: the body
    # is cut.
    if _corners_within(rr, cc, -0.5, shape_mm[0] - 0.5, shape_mm[1] - 0.5):
        truncated = False  # the whole patch lies in the image
    else:
        out = (rr < -0.5) | (cc < -0.5) | (rr > shape_mm[0] - 0.5) | (cc > shape_mm[1] - 0.5)
        truncated = bool(np.any(out & (sd <= 1.5)))
    p_in = patch[inside]
    p_ring = patch[ring]
    if p_in.size < 20 or p_ring.size < 20:
        return 0.5, 0.0, truncated
    m_in = _median_inplace(p_in)  # reorders p_in, p_ring: only counts are taken below
    m_out = _median_inplace(p_ring)
    thr = 0.5 * (m_in + m_out)
    agree = 0.5 * (np.mean(p_in > thr) + np.mean(p_ring < thr))
    if m_in <= m_out:
        agree = 1.0 - agree
    return float(agree), float((m_in - m_out) / noise), truncated


def _crest_level(straight: np.ndarray, s_min: float, contrast: float) -> list[tuple[float, float]]:
    """Iliac-crest candidates ``(s, strength)``, one per side where found.

    In a band 55-100 mm lateral to the axis, the 90th percentile of the gray levels
    across the band jumps where the iliac wing begins (the wing's upper cortical
    edge). The strongest jump over 4 mm below ``s_min`` must exceed 15 % of the
    spine's contrast and be sustained (the band stays brighter over the next 15 mm
    than over the 15 mm above). The crest is the top of that jump: walking up from
    it, the first level where the band is within 25 % of the jump of its level above.
    Returns the strength as the jump over the spine's contrast.
    """
    half = (straight.shape[1] - 1) // 2
    v = np.arange(straight.shape[1]) - half
    found = []
    for sign in (-1, 1):
        band = (sign * v >= _CREST_BAND_MM[0]) & (sign * v <= _CREST_BAND_MM[1])
        vals = straight[:, band]
        ok = np.sum(np.isfinite(vals), axis=1) >= 5
        if np.count_nonzero(ok) < 30:
            continue
        srt = np.sort(vals, axis=1)  # NaN sort last
        n_ok = np.isfinite(vals).sum(axis=1)
        at = np.clip(np.round(0.9 * (n_ok - 1)).astype(int), 0, vals.shape[1] - 1)
        top = np.where(ok, srt[np.arange(len(vals)), at], np.nan)  # 90th percentile
        n = len(top)
        jump = np.full(n, np.nan)
        jump[2:-2] = top[4:] - top[:-4]
        jump[: int(s_min)] = np.nan
        w = 15
        for _ in range(3):  # strongest jump that is sustained
            if not np.any(np.isfinite(jump)):
                break
            k = int(np.nanargmax(jump))
            if not jump[k] > 0.15 * contrast:
                break
            base = _nanmedian(top[max(k - 3 - w, 0) : max(k - 3, 1)])
            level = _nanmedian(top[k + 3 : k + 3 + w])
            if np.isfinite(base) and np.isfinite(level) and level - base > 0.3 * jump[k]:
                onset = k
                while (
                    onset > 0
                    and np.isfinite(top[onset - 1])
                    and top[onset - 1] > base + 0.25 * (level - base)
                ):
                    onset -= 1
                found.append((float(onset), float(jump[k] / contrast)))
                break
            jump[max(k - 5, 0) : k + 6] = np.nan
    return found


_FACTORS = ("q_agreement", "q_cnr", "q_size", "q_truncated", "q_consistency")

_RIB_BAND_MM = (52.0, 75.0)  # lateral band searched for the lowest ribs
_RIB_DROP_MM = (-4.0, 22.0)  # rib crossing of the band: this far below its body's centre
_RIB_MIN = 0.07  # rib ridge: prominence over the spine's contrast (one side; 2x alone)
#: Confidence of a labelling whose cues disagree (below WARN_CONFIDENCE).
DISAGREE_CONFIDENCE = 0.55


def _rib_ridges(straight: np.ndarray, contrast: float) -> list[tuple[float, float]]:
    """Rib candidates ``(s, prominence / contrast)`` on both sides of the axis.

    In a band 52-75 mm lateral to the axis (beyond the transverse processes), the mean
    gray level along the axis shows a rib as a narrow ridge (4-35 mm) over its
    surroundings (the level minus its 61 mm running median): the lowest ribs run
    laterally and caudally from the transverse processes of T11 and T12.
    """
    half = (straight.shape[1] - 1) // 2
    v = np.arange(straight.shape[1]) - half
    out = []
    for sign in (-1, 1):
        band = (sign * v >= _RIB_BAND_MM[0]) & (sign * v <= _RIB_BAND_MM[1])
        prof = _nanmean(straight[:, band], 1, min_count=10)
        ok = np.isfinite(prof)
        if np.count_nonzero(ok) < 40:
            continue
        idx = np.arange(len(prof))
        filled = np.interp(idx, idx[ok], prof[ok])
        hp = filled - ndi.median_filter(filled, size=61, mode="nearest")
        hp[~ok] = np.nan
        peaks, props = find_peaks(
            np.nan_to_num(hp, nan=0.0), prominence=_RIB_MIN * contrast, width=(4, 35)
        )
        for k, prom in zip(peaks, props["prominences"], strict=True):
            out.append((float(k), float(sign * prom / contrast)))
    return out


def _label_cues(
    bodies: list[DetectedBody],
    s_centre: list[float],
    idx: list[int],
    ribs: list[tuple[float, float]],
    profile: np.ndarray,
    crest_in_l4: bool = False,
) -> tuple[list[str], list[str], dict[str, int]]:
    """Independent checks of a crest-based labelling ``idx`` (the bodies L1-L4).

    Returns the disagreeing cues and the notes (a cue that cannot be checked where
    the labels are ambiguous), as sentences, and the shift each disagreeing
    positional cue implies (``"ribs"``, ``"sacrum"``: how many bodies down, negative
    up, the labels would have to move for that cue to agree).

    * **Last rib-bearing vertebra.** Rib ridges (:func:`_rib_ridges`) are assigned to the
      body whose centre lies 4 mm below to 22 mm above them; a body bears ribs when a
      ridge is found on both sides, or one twice the threshold. The last rib-bearing body
      is T12, so L1 must be the body right below it.
    * **L5 and the sacrum.** Below L4 lies exactly one lumbar body (L5) above the
      sacrum: two or more complete bodies below L4 mean the labels are high (or six
      lumbar-type vertebrae); none, although the image reaches 45 mm below L4 along the
      spine, or none while the crests cross "L4" above its lower endplate (``crest_in_l4``),
      means L4 may be L5.
    * **Height progression.** Lumbar bodies grow caudally: an L4 more than 15 % shorter
      than L1 does not fit L1-L4.
    """
    cues: list[str] = []
    shifts: dict[str, int] = {}
    bearing: dict[int, list[float]] = {}
    for s_r, prom in ribs:
        near = [i for i, c in enumerate(s_centre) if _RIB_DROP_MM[0] <= s_r - c <= _RIB_DROP_MM[1]]
        if near:
            i = min(near, key=lambda j: abs(s_r - s_centre[j] - 9.0))
            bearing.setdefault(i, []).append(prom)
    rib_bodies = [
        i
        for i, proms in bearing.items()
        if (any(p < 0 for p in proms) and any(p > 0 for p in proms))
        or max(abs(p) for p in proms) >= 2 * _RIB_MIN
    ]
    last_rib = max(rib_bodies) if rib_bodies else None
    l1, l4 = idx[0], idx[-1]
    if last_rib is not None and last_rib != l1 - 1:
        shifts["ribs"] = last_rib + 1 - l1
        where = (
            "L1 itself"
            if last_rib == l1
            else f"the body {abs(last_rib - (l1 - 1))} level(s) "
            + ("below" if last_rib > l1 - 1 else "above")
            + " T12"
        )
        cues.append(
            f"last rib-bearing vertebra: ribs end at {where} by the crest-based labels "
            "(L1 should be the first rib-free body)"
        )
    below = [i for i in range(l4 + 1, len(bodies)) if not bodies[i].truncated]
    valid = np.flatnonzero(np.isfinite(profile))
    reach = float(valid[-1]) - (s_centre[l4] + bodies[l4].half_size_mm[0]) if len(valid) else 0.0
    if len(below) >= 2:
        # the lowest complete body is L5, the one above it L4
        shifts["sacrum"] = below[-1] - 1 - l4
        cues.append(
            f"L5/sacrum: {len(below)} complete bodies below L4 (expected only L5 above the "
            "sacrum): labels may be one level high, or six lumbar-type vertebrae"
        )
    elif l4 == len(bodies) - 1 and reach >= 45.0:
        shifts["sacrum"] = -1
        cues.append(
            f"L5/sacrum: no body below L4 although the image reaches {reach:.0f} mm below it: "
            "L4 may be L5"
        )
    elif l4 == len(bodies) - 1 and crest_in_l4:
        shifts["sacrum"] = -1
        cues.append(
            "L5/sacrum: the iliac crests cross L4 above its lower endplate and no body is "
            "seen below it, as they cross L5 when the crests are low: L4 may be L5"
        )
    h1, h4 = bodies[l1].half_size_mm[0], bodies[l4].half_size_mm[0]
    if h4 < 0.85 * h1:
        cues.append(
            f"body height progression: L4 ({2 * h4:.0f} mm) is shorter than L1 "
            f"({2 * h1:.0f} mm); lumbar bodies grow caudally"
        )
    notes: list[str] = []
    top_gap = s_centre[0] - bodies[0].half_size_mm[0] - float(valid[0]) if len(valid) else 0.0
    if last_rib is None and 1 <= l1 <= 2 and top_gap <= 10.0:
        notes.append(
            f"no ribs seen and the field starts {max(top_gap, 0.0):.0f} mm above the "
            f"{l1} bod{'y' if l1 == 1 else 'ies'} above L1: the labels rest on the iliac "
            "crests alone (T12 cannot be told from a sixth lumbar-type vertebra); check "
            "the labels"
        )
    return cues, notes, shifts


def _consistency(bodies: list[DetectedBody], i: int, idx: list[int]) -> float:
    """How well body ``i`` fits the column: height and width against the median of
    L1-L4, and, against each neighbour, the angle difference, the disc gap and the
    lateral offset."""
    b = bodies[i]
    med_h = _median_few([bodies[k].half_size_mm[0] for k in idx])
    med_w = _median_few([bodies[k].half_size_mm[1] for k in idx])
    q = _ramp(b.half_size_mm[0] / med_h, (0.7, 1.4), (0.35, 2.1))
    q *= _ramp(b.half_size_mm[1] / med_w, (0.8, 1.25), (0.4, 1.9))
    pair = []
    for j in (i - 1, i + 1):
        if not 0 <= j < len(bodies):
            continue
        o = bodies[j]
        a = math.radians(0.5 * (b.angle_deg + o.angle_deg))
        t = np.array([math.cos(a), math.sin(a)])
        d = np.asarray(o.center_mm) - np.asarray(b.center_mm)
        along, across = float(d @ t), float(d @ np.array([-t[1], t[0]]))
        gap = abs(along) - b.half_size_mm[0] - o.half_size_mm[0]
        pair.append(
            _ramp(abs(b.angle_deg - o.angle_deg), (0.0, 15.0), (-1.0, 30.0))
            * _ramp(gap, (1.0, 18.0), (-3.0, 30.0))
            * _ramp(abs(across) / min(b.half_size_mm[1], o.half_size_mm[1]), (0.0, 0.5), (-1, 1.0))
        )
    return float(q * (min(pair) if pair else 1.0))


# --------------------------------------------------------------------------- main


def locate_vertebrae(
    image: np.ndarray,
    spacing: Sequence[float],
    *,
    source: str = "image",
) -> SpineDetection:
    """Find the spine axis, the vertebral bodies along it, and label L1-L4.

    Parameters
    ----------
    image : (rows, cols) array_like
        Lumbar-spine DXA image, bone bright (any dtype, scale and offset; MONOCHROME1
        files must already be inverted, as :func:`tbscore.io.load.load_dicom` does).
        Rows run cranio-caudally (head at row 0), as in every AP DXA spine image.
    spacing : (float, float)
        Pixel spacing ``(row_mm, col_mm)``.
    source : str
        Name used in errors and warnings.

    Returns
    -------
    SpineDetection
        Bodies with centres and sizes in mm; L1-L4 labelled.

    Raises
    ------
    DetectionError
        The image cannot hold a lumbar spine (not 2-D, too small a field of view,
        uniform), fewer than four vertebral bodies are found, or fewer than four lie
        above the iliac crests.
    """
    arr, spacing = _check_input(image, spacing, source)
    norm = _normalise(arr, source)
    step = _GRID_MM
    iso = _resample_iso(norm, spacing, step)
    iso = _gaussian(iso, (_SMOOTH_MM / step, _SMOOTH_MM / step))
    fine = _gaussian(norm, (_FINE_SMOOTH_MM / spacing[0], _FINE_SMOOTH_MM / spacing[1]))
    noise = _noise_sd(norm)
    shape_px = arr.shape
    warnings: list[str] = []

    axis = _make_axis(_spine_path(iso), step)
    straight = _straighten(iso, axis, step, _CREST_BAND_MM[1], _straight_columns)
    half = (straight.shape[1] - 1) // 2
    centre_band = straight[:, half - int(_BAND_HALF_MM) : half + int(_BAND_HALF_MM) + 1]
    profile = _nanmean(centre_band, 1, min_count=int(_BAND_HALF_MM))
    segments = _split_bodies(profile)

    bodies: list[DetectedBody] = []
    for seg in segments:
        edges = _edges_in_segment(profile, seg)
        if edges is None:
            continue
        top, bottom = edges
        p, t, _ = axis.at(0.5 * (top + bottom))
        angle = math.degrees(math.atan2(t[1], t[0]))
        refined = _refine_body(fine, spacing, (p[0], p[1]), angle, 0.5 * (bottom - top), 20.0)
        if refined is None:
            continue
        center, angle, hu, hw = refined
        if not (hu > 3.0 and hw > 5.0):
            continue
        agree, cnr, truncated = _score_body(fine, spacing, shape_px, center, angle, hu, hw, noise)
        # No disc between the body and the end of the image, and its endplate at the
        # end: the body may continue beyond the border.
        valid = np.flatnonzero(np.isfinite(profile))
        truncated = bool(
            truncated or (seg[2] and top - valid[0] < 4.0) or (seg[3] and valid[-1] - bottom < 4.0)
        )
        q_size = _ramp(2 * hu, *_HEIGHT_MM) * _ramp(2 * hw, *_WIDTH_MM) * _ramp(hw / hu, *_RATIO)
        scores = {
            "agreement": round(agree, 4),
            "cnr": round(cnr, 3),
            "q_agreement": _clip01((agree - 0.75) / 0.2),
            "q_cnr": _clip01((cnr - 1.5) / 2.5),
            "q_size": q_size,
            "q_truncated": 0.5 if truncated else 1.0,
        }
        bodies.append(
            DetectedBody(
                (float(center[0]), float(center[1])),
                float(angle),
                (float(hu), float(hw)),
                _CORNER_MM,
                0.0,
                scores,
                truncated,
            )
        )
    # Drop duplicates (two segments refined onto the same body).
    unique: list[DetectedBody] = []
    for b in bodies:
        if unique and math.dist(b.center_mm, unique[-1].center_mm) < 0.6 * b.half_size_mm[0]:
            if b.scores["q_agreement"] <= unique[-1].scores["q_agreement"]:
                continue
            unique.pop()
        unique.append(b)
    bodies = unique
    if len(bodies) < 4:
        raise DetectionError(
            f"found {len(bodies)} vertebral-body candidate(s) along the spine axis, need at "
            "least 4 (L1-L4): no lumbar spine in the image, or the spine is cropped",
            source,
        )

    # Order along the axis (nearest axis point).
    s_axis = [
        float(np.argmin(np.hypot(*(axis.points - np.asarray(b.center_mm)).T))) for b in bodies
    ]
    bodies = [bodies[i] for i in np.argsort(s_axis)]

    # Iliac crests, in a straight frame aligned with the lowest two bodies, below the
    # centre of the third body from the top (a crest higher up leaves too few bodies
    # above it for L1-L4, which is reported).
    low = [b for b in bodies if not b.truncated][-2:] or bodies[-2:]
    a = math.radians(_mean_few([b.angle_deg for b in low]))
    t_low = np.array([math.cos(a), math.sin(a)])
    origin = np.array([_mean_few([b.center_mm[k] for b in low]) for k in (0, 1)])
    frame, s0 = _line_frame(iso, origin, t_low, step, _CREST_BAND_MM[1], _CREST_BAND_MM)
    s_of = [float((np.asarray(b.center_mm) - origin) @ t_low) for b in bodies]
    s_top = [s - b.half_size_mm[0] for s, b in zip(s_of, bodies, strict=True)]
    finite = profile[np.isfinite(profile)]
    p5, p95 = _percentiles(finite, (5.0, 95.0))
    contrast = float(p95 - p5)
    crests = _crest_level(frame, max(s_of[2] - s0, 0.0), max(contrast, 1e-6))
    crests = [(c + s0, strength) for c, strength in crests]
    crest_s = None
    if len(crests) == 2 and abs(crests[0][0] - crests[1][0]) > _CREST_MISMATCH_MM:
        warnings.append(
            f"iliac crests at very different levels ({abs(crests[0][0] - crests[1][0]):.0f} mm "
            "apart along the spine): pelvic obliquity or a wing cut by the image edge? "
            "used the higher one; check the labels"
        )
        # The higher crest: a wing cut by the image edge can only look lower.
        crests = [min(crests)]
    if crests:
        # Both crests: the intercristal line crosses the spine at their mean level.
        crest_s = _mean_few([c[0] for c in crests])
    label_factor = 1.0
    if crest_s is not None:
        above = [i for i, s in enumerate(s_top) if s <= crest_s - _CREST_ABOVE_MM]
        if len(above) < 4:
            raise DetectionError(
                f"only {len(above)} vertebral bod(y/ies) above the iliac crests, need 4 "
                "(L1-L4): the image is cropped above L1, or L1-L4 are not all visible",
                source,
            )
        l4 = above[-1]
    else:
        complete = [i for i, b in enumerate(bodies) if not b.truncated]
        if len(complete) < 4:
            raise DetectionError(
                "iliac crests not found and fewer than 4 complete vertebral bodies: cannot "
                "label L1-L4",
                source,
            )
        l4 = complete[-1]
        label_factor = 0.6
        warnings.append(
            "iliac crests not found: labelled the four lowest complete vertebral bodies "
            "L1-L4 (assumes the scan ends in L5 or at the L4-L5 disc); check the labels"
        )
    if l4 < 3:
        raise DetectionError(
            f"only {l4 + 1} vertebral bod(y/ies) at or above L4: L1 is outside the image",
            source,
        )
    # Independent cues: the last rib-bearing vertebra, L5 above the sacrum, the body
    # heights. When the rib and the L5/sacrum cues agree on the same other labelling,
    # the labels move to it (with a warning, below the warning threshold); when a cue
    # disagrees otherwise the labels stay, the confidence drops below the warning
    # threshold and the warning names the cue.
    ribs = _rib_ridges(straight, max(contrast, 1e-6))
    s_centre = sorted(s_axis)

    def crest_in(l4: int) -> bool:
        return crest_s is not None and crest_s < s_of[l4] + bodies[l4].half_size_mm[0]

    idx = list(range(l4 - 3, l4 + 1))
    cues, notes, shifts = _label_cues(bodies, s_centre, idx, ribs, profile, crest_in(l4))
    moved = None
    shift = shifts.get("ribs")
    if shift and shifts.get("sacrum") == shift and 0 <= idx[0] + shift <= len(bodies) - 4:
        moved = (shift, cues)
        idx = [i + shift for i in idx]
        cues, notes, _ = _label_cues(bodies, s_centre, idx, ribs, profile, crest_in(idx[-1]))
    out = list(bodies)
    for lab, i in zip(LABELS, idx, strict=True):
        b = bodies[i]
        scores = dict(b.scores, q_consistency=_consistency(bodies, i, idx))
        conf = _prod_few([scores[k] for k in _FACTORS])
        out[i] = replace(b, label=lab, confidence=round(conf, 4), scores=scores)
        if b.truncated:
            warnings.append(f"{lab} touches the image border (may be cut): check its ROI")
    for i, b in enumerate(out):
        if b.label is None:
            conf = _prod_few([b.scores[k] for k in _FACTORS[:-1]])
            out[i] = replace(b, confidence=round(conf, 4))
    overall = _mean_few([out[i].confidence for i in idx]) * label_factor
    warnings.extend(notes)
    if moved is not None:
        n, why = moved
        overall = min(overall, DISAGREE_CONFIDENCE)
        warnings.append(
            f"labels moved {abs(n)} level(s) {'down' if n > 0 else 'up'} from the "
            + ("iliac-crest labelling" if label_factor == 1.0 else "four lowest complete bodies")
            + ": the last rib-bearing vertebra and the L5/sacrum cue agree on it ("
            + "; ".join(why)
            + "); check the labels"
        )
    if cues:
        overall = min(overall, DISAGREE_CONFIDENCE)
        warnings.append(
            "labels uncertain: independent cues disagree with the "
            + ("moved" if moved is not None else "iliac-crest")
            + " labelling ("
            + "; ".join(cues)
            + "); check the labels"
        )
    crest_pt = None
    if crest_s is not None:
        p = origin + crest_s * t_low
        crest_pt = (float(p[0]), float(p[1]))
    return SpineDetection(
        tuple(out), axis.points.copy(), crest_pt, round(overall, 4), tuple(warnings)
    )


def warm_up_kernels() -> None:
    """Load (or, with a cold numba cache, compile) the detector's compiled kernels in
    this process, on a tiny image, with the argument types detection passes (so the
    cached specialisations are the ones a detection uses). Used by
    :func:`tbscore.batch.worker.warm_up`, so that forked batch workers have them."""
    rng = np.random.default_rng(0)
    img = np.ascontiguousarray(rng.random((48, 40)))
    _noise_sd(img)
    _percentiles(img, (1.0, 99.0))
    _gaussian(img, (1.0, 1.5))
    _gaussian(img, (8.0, 0.0), mode="nearest")
    _spine_path(img)
    _resample_iso(img, (0.7, 0.7), _GRID_MM)
    _line_frame(img, np.array([20.0, 20.0]), np.array([1.0, 0.0]), _GRID_MM, 10.0, (2.0, 8.0))
    axis = _make_axis(np.full(img.shape[0], 20.0), _GRID_MM)
    _straighten(img, axis, _GRID_MM, 10.0, _straight_columns)
    _refine_body(img, (1.0, 1.0), (24.0, 20.0), 0.0, 8.0, 12.0, n_iter=1)
    _score_body(img, (1.0, 1.0), img.shape, (24.0, 20.0), 0.0, 8.0, 12.0, 0.1)
    polygon_mask(img.shape, np.array([[5.0, 5.0], [5.0, 30.0], [40.0, 30.0], [40.0, 5.0]]))
    find_peaks(img[:, 3], prominence=0.1, distance=2, width=(1, 10))


def body_polygon(
    body: DetectedBody,
    spacing: Sequence[float],
    *,
    inset_mm: float = 0.0,
    per_corner: int = 4,
) -> np.ndarray:
    """Outline of a detected body as ``(row, col)`` pixel vertices.

    Parameters
    ----------
    body : DetectedBody
    spacing : (float, float)
        Pixel spacing ``(row_mm, col_mm)``.
    inset_mm : float
        Shrink the outline by this distance (mm): a rounded rectangle with half sizes
        and corner radius reduced by ``inset_mm`` (the exact inward offset).
    per_corner : int
        Segments per rounded corner.

    Returns
    -------
    ndarray, shape (n, 2)
        Vertices, rounded to 1e-3 pixel (so that a ROI file reproduces the mask).
    """
    hu = body.half_size_mm[0] - inset_mm
    hv = body.half_size_mm[1] - inset_mm
    if hu <= 0 or hv <= 0:
        raise SettingsError(f"inset {inset_mm} mm leaves nothing of the body")
    r = max(min(body.corner_radius_mm - inset_mm, hu, hv), 0.0)
    uv = rounded_rect_outline(hu, hv, r, per_corner)
    rr, cc = _frame_coords(body.center_mm, body.angle_deg, uv[:, 0], uv[:, 1], spacing)
    return np.round(np.column_stack([rr, cc]), 3)


def _poly_box(poly: np.ndarray, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns (pixel index slices) holding every pixel centre of the polygon
    ``poly`` (``(row, col)`` vertices), with a margin beyond the 1e-12 on-vertex
    tolerance of :func:`tbscore.core.raster.polygon_mask`; empty for < 3 vertices."""
    if len(poly) < 3:
        return slice(0, 0), slice(0, 0)
    lo = np.floor(poly.min(axis=0) - 1e-6)
    hi = np.ceil(poly.max(axis=0) + 1e-6)
    r0, c0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    r1, c1 = min(int(hi[0]) + 1, shape[0]), min(int(hi[1]) + 1, shape[1])
    return slice(r0, max(r1, r0)), slice(c0, max(c1, c0))


def _sharing(masks: list[np.ndarray], boxes: list[tuple[slice, slice]]) -> list[bool]:
    """Which masks share a pixel with another one (:func:`_sharing_reference`'s answer):
    pairwise, only where their boxes (:func:`_poly_box`, nothing set outside) meet,
    instead of whole-image passes."""
    hit = [False] * len(masks)
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            (ri, ci), (rj, cj) = boxes[i], boxes[j]
            rs = slice(max(ri.start, rj.start), min(ri.stop, rj.stop))
            cs = slice(max(ci.start, cj.start), min(ci.stop, cj.stop))
            if rs.start >= rs.stop or cs.start >= cs.stop:
                continue
            if np.any(masks[i][rs, cs] & masks[j][rs, cs]):
                hit[i] = hit[j] = True
    return hit


def _sharing_reference(masks: list[np.ndarray]) -> list[bool]:
    """The pixels in two or more masks, then the masks holding one of them."""
    covered = np.zeros(masks[0].shape, dtype=bool)
    shared = np.zeros(masks[0].shape, dtype=bool)
    for m in masks:
        shared |= covered & m
        covered |= m
    return [bool(np.any(shared[m])) for m in masks]


def _clip_polygon(poly: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Clip a convex polygon to the image rectangle ``[-0.5, n - 0.5]``: the polygon itself
    (rounded to 1e-3 px) when every vertex lies inside, which is what the clip
    (:func:`_clip_polygon_sh`) returns then, without its Python loops."""
    rr, cc = poly[:, 0], poly[:, 1]
    if (
        len(poly)
        and rr.min() >= -0.5
        and rr.max() <= shape[0] - 0.5
        and cc.min() >= -0.5
        and cc.max() <= shape[1] - 0.5
    ):  # every vertex inside every limit: each pass below keeps the points as they are
        return np.round(np.array(poly, dtype=float).reshape(-1, 2), 3)
    return _clip_polygon_sh(poly, shape)


def _clip_polygon_sh(poly: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Clip a convex polygon to the image rectangle ``[-0.5, n - 0.5]`` (Sutherland-Hodgman)."""
    lims = ((0, -0.5, 1), (0, shape[0] - 0.5, -1), (1, -0.5, 1), (1, shape[1] - 0.5, -1))
    pts = [tuple(p) for p in poly]
    for ax, lim, sign in lims:
        if not pts:
            break
        new = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            cin = sign * (cur[ax] - lim) >= 0
            pin = sign * (prev[ax] - lim) >= 0
            if cin != pin:
                f = (lim - prev[ax]) / (cur[ax] - prev[ax])
                q = [prev[0] + f * (cur[0] - prev[0]), prev[1] + f * (cur[1] - prev[1])]
                q[ax] = lim
                new.append(tuple(q))
            if cin:
                new.append(cur)
        pts = new
    return np.round(np.array(pts, dtype=float).reshape(-1, 2), 3)


def _locate_confident(
    arr: np.ndarray, spacing: Sequence[float], source: str, min_confidence: float
) -> SpineDetection:
    """:func:`locate_vertebrae`, raising :class:`DetectionError` below ``min_confidence``."""
    found = locate_vertebrae(arr, spacing, source=source)
    if found.confidence < min_confidence:
        labelled = found.labelled()
        detail = ", ".join(
            f"{lab} {labelled[lab].confidence:.2f} (edge agreement "
            f"{labelled[lab].scores['agreement']:.2f}, CNR {labelled[lab].scores['cnr']:.1f})"
            for lab in LABELS
        )
        raise DetectionError(
            f"no plausible lumbar spine: detection confidence {found.confidence:.2f} < "
            f"{min_confidence:.2f} ({detail}); supply an ROI file (--roi)",
            source,
        )
    return found


def detect(
    image: np.ndarray,
    spacing: Sequence[float],
    *,
    source: str = "image",
    expected: Sequence[str] = LABELS,
    roi_inset_mm: float = DEFAULT_ROI_INSET_MM,
    min_confidence: float = MIN_CONFIDENCE,
    allow_inverted: bool = True,
    min_vertebra_confidence: float = MIN_VERTEBRA_CONFIDENCE,
) -> VertebraROIs:
    """Detect the L1-L4 vertebral ROIs of a lumbar-spine DXA image.

    Parameters
    ----------
    image : (rows, cols) array_like
        The image, bone bright (8-bit, 16-bit or float; any scale and offset).
        Rows run cranio-caudally (head at row 0).
    spacing : (float, float)
        Pixel spacing ``(row_mm, col_mm)``; non-square spacing is honoured.
    source : str
        Name of the input, used in errors and warnings.
    expected : sequence of str
        Labels to return (a subset of ``L1``..``L4``); all four are always located.
    roi_inset_mm : float
        The ROI is the detected body outline shrunk by this distance (mm), which keeps
        the cortical rim and the endplates (and detection errors up to about this
        size) out of the texture ROI. ``0`` gives the whole body outline.
    min_confidence : float
        Raise :class:`DetectionError` below this overall confidence
        (:data:`MIN_CONFIDENCE`).
    allow_inverted : bool
        When no spine is found, try the inverted image (bone dark): the TBS slope does
        not depend on the polarity, so the ROIs are returned with a warning.
    min_vertebra_confidence : float
        A vertebra below this confidence is returned excluded, with the reason
        (:data:`MIN_VERTEBRA_CONFIDENCE`).

    The four detection parameters are also :class:`tbscore.core.settings.Settings`
    fields (same names and defaults, in the settings digest); ``tbscore.calc`` passes
    them from there.

    Returns
    -------
    VertebraROIs
        One polygon ROI per expected label (``source="detected"``), each with its
        confidence; a vertebra whose confidence is below
        ``min_vertebra_confidence`` is marked excluded with the reason. The
        overall confidence and any warnings (low confidence, labels inferred without
        iliac crests, bodies cut by the border) are attached.

    Raises
    ------
    DetectionError
        No spine / fewer than four plausible vertebrae, L1-L4 not all in the image,
        overall confidence below ``min_confidence``, or fewer than two vertebrae
        plausible enough to score.

    Examples
    --------
    >>> from tbscore.sim.phantom import synthetic_spine
    >>> img, truth = synthetic_spine(0.6, shape=(260, 200), rng=1)
    >>> rois = detect(img, (1.0, 1.0))
    >>> rois.labels
    ('L1', 'L2', 'L3', 'L4')
    """
    want = []
    for lab in expected:
        if not isinstance(lab, str) or lab.upper() not in LABELS:
            raise SettingsError(f"expected labels must be among {LABELS}, got {lab!r}")
        want.append(lab.upper())
    if not want:
        raise SettingsError("expected must name at least one of L1..L4")
    if roi_inset_mm < 0:
        raise SettingsError(f"roi_inset_mm must be >= 0, got {roi_inset_mm}")
    arr = np.asarray(image)
    try:
        found = _locate_confident(arr, spacing, source, min_confidence)
        inverted = False
    except DetectionError as err:
        if not allow_inverted or arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise
        try:
            found = _locate_confident(-arr.astype(np.float64), spacing, source, min_confidence)
        except DetectionError:
            raise err from None
        inverted = True
    sy, sx = (float(s) for s in spacing)
    warnings = list(found.warnings)
    if inverted:
        warnings.insert(
            0,
            "bone appears dark: the spine was found in the inverted image (MONOCHROME1 "
            "shown uninverted, or a negative export?); the ROIs are valid and the TBS "
            "slope does not depend on the polarity, but check the image",
        )
    shape = (int(arr.shape[0]), int(arr.shape[1]))
    labelled = found.labelled()
    plausible = [lab for lab in LABELS if labelled[lab].confidence >= min_vertebra_confidence]
    if len(plausible) < 2:
        raise DetectionError(
            f"only {len(plausible)} of L1-L4 detected with confidence >= "
            f"{min_vertebra_confidence} (need 2 for an L1-L4 value); supply an ROI file",
            source,
        )
    rois = []
    inset = {lab: float(roi_inset_mm) for lab in want}
    for _ in range(8):
        rois = []
        boxes = []
        for lab in want:
            body = labelled[lab]
            inset_lab = min(inset[lab], 0.8 * min(body.half_size_mm))
            poly = _clip_polygon(body_polygon(body, (sy, sx), inset_mm=inset_lab), shape)
            mask = polygon_mask(shape, poly) if len(poly) >= 3 else np.zeros(shape, bool)
            box = _poly_box(poly, shape)
            if not mask[box].any():  # the mask is False outside its polygon's box
                raise DetectionError(f"{lab} ROI covers no pixel of the image", source)
            excluded = body.confidence < min_vertebra_confidence
            reason = (
                f"automatic detection: confidence {body.confidence:.2f} < {min_vertebra_confidence}"
                if excluded
                else None
            )
            rois.append(VertebraROI(lab, mask, poly, None, excluded, reason, body.confidence))
            boxes.append(box)
        hit = _sharing([r.mask for r in rois], boxes)
        if not any(hit):
            break
        overlapping = [r.label for r, h in zip(rois, hit, strict=True) if h]
        for lab in overlapping:
            inset[lab] += 0.5
    else:
        raise DetectionError("detected vertebral ROIs overlap", source)
    if any(inset[lab] > roi_inset_mm for lab in want):
        warnings.append("neighbouring outlines overlapped: some ROIs shrunk by 0.5-4 mm")
    for lab in want:
        conf = labelled[lab].confidence
        if conf < min_vertebra_confidence:
            warnings.append(
                f"{lab} excluded: detection confidence {conf:.2f} < {min_vertebra_confidence} "
                "(fracture, implant, overlap or a missed outline?)"
            )
        elif conf < WARN_CONFIDENCE:
            warnings.append(f"{lab}: low detection confidence {conf:.2f}; check its ROI")
    if found.confidence < WARN_CONFIDENCE:
        warnings.append(
            f"low overall detection confidence {found.confidence:.2f}: check the ROIs on the "
            "overlay (tbscore calc FILE --overlay out.png) or supply an ROI file"
        )
    return VertebraROIs(
        tuple(rois),
        shape,
        "detected",
        found.confidence,
        tuple(warnings),
        spacing_mm=(float(spacing[0]), float(spacing[1])),
    )
