"""The TBS value: slope of the log–log experimental variogram near the origin.

For each vertebral ROI, the variogram ``V(k)`` (:mod:`tbscore.core.variogram`) is computed
at every lag vector whose physical length lies in the settings' lag range (mm), and the
index is the slope of ``log V`` against ``log |k|_mm``: by ordinary least squares
(``settings.estimator = "ols"``, the default) or by a noise-aware estimator
(:mod:`tbscore.core.estimators`, dispatched in :func:`fit_vertebra`). Every value
carries a standard error, a 95 % interval and a texture-to-noise ratio
(:mod:`tbscore.core.uncertainty`). The L1–L4 value is the mean of the valid,
non-excluded vertebrae, reported only when at least ``settings.min_valid_vertebrae``
are valid.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from tbscore.core.estimators import SlopeFit, fit_slope, method_string
from tbscore.core.result import VertebraResult
from tbscore.core.roi import VertebraROI, VertebraROIs
from tbscore.core.settings import DIRECTIONS, Settings
from tbscore.core.uncertainty import SNR_WARN, Z95, slope_uncertainty
from tbscore.core.variogram import _check as check_image_mask
from tbscore.core.variogram import _sums, as_lags
from tbscore.errors import ComputationError, ROIError

__all__ = [
    "select_lags",
    "fit_loglog",
    "LogLogFit",
    "fit_vertebra",
    "vertebra_tbs",
    "combine_l1_l4",
    "combine_l1_l4_ci95",
    "uncertainty_warnings",
    "method_string",
    "METHOD",
    "MAX_LAGS",
    "PLAUSIBLE_MIN_R2",
    "implausible_fit",
]

#: Name and version of the default (OLS) method, recorded with every result; other
#: estimators record :func:`tbscore.core.estimators.method_string`.
METHOD = method_string("ols")

_TOL = 1e-9

#: A log-log fit explaining less than this share of the variance is no texture slope.
PLAUSIBLE_MIN_R2 = 0.1

#: Most lags :func:`select_lags` returns (a lag costs one pass over the ROI pixels).
MAX_LAGS = 10_000


def select_lags(
    spacing_mm: tuple[float, float],
    lag_min_mm: float,
    lag_max_mm: float,
    directions: tuple[str, ...] = tuple(DIRECTIONS),
    *,
    extent_px: tuple[int, int] | None = None,
    max_lags: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Lag vectors whose physical length lies in ``[lag_min_mm, lag_max_mm]``.

    Parameters
    ----------
    spacing_mm : (float, float)
        ``(row_mm, col_mm)``; non-square spacing is honoured per axis.
    lag_min_mm, lag_max_mm : float
        Inclusive lag range in mm.
    directions : tuple of str
        Names from :data:`tbscore.core.settings.DIRECTIONS`.
    extent_px : (int, int), optional
        ``(rows, cols)`` of the region the lags are used on (the ROIs' bounding box):
        lags at least this long have no pixel pair inside it and are not returned.
    max_lags : int, optional
        Refuse a lag set larger than this (default :data:`MAX_LAGS`).

    Returns
    -------
    lags : ndarray of int64, shape (n, 2)
        ``(d_row, d_col)`` in pixels, whole multiples of each direction step.
    distances_mm : ndarray of float64, shape (n,)
        Their lengths in mm, sorted ascending.

    Raises
    ------
    tbscore.errors.ComputationError
        More than ``max_lags`` lags (a spacing far below the lag range, e.g. 1e-9 mm);
        counted before any lag is built, so this never loops or allocates.
    """
    sr, sc = float(spacing_mm[0]), float(spacing_mm[1])
    cap = MAX_LAGS if max_lags is None else int(max_lags)
    if not (math.isfinite(sr) and math.isfinite(sc) and sr > 0 and sc > 0):
        raise ComputationError(f"pixel spacing must be positive and finite, got {spacing_mm!r}")
    hi_mm, lo_mm = lag_max_mm * (1 + _TOL), lag_min_mm * (1 - _TOL)
    ranges = []
    for name in directions:
        ur, uc = DIRECTIONS[name]
        step = math.hypot(ur * sr, uc * sc)
        # multiples m with lo_mm <= m * step <= hi_mm (one spare on each side: the exact
        # comparisons below decide), and shorter than the extent along each axis
        m0 = max(1, math.floor(lo_mm / step))
        m1 = math.floor(hi_mm / step) + 1 if math.isfinite(hi_mm / step) else math.inf
        if extent_px is not None:
            for u, n in ((ur, extent_px[0]), (uc, extent_px[1])):
                if u:
                    m1 = min(m1, math.ceil(int(n) / abs(u)) - 1)
        ranges.append((ur, uc, step, m0, m1))
    total = sum(max(0, m1 - m0 + 1) for *_, m0, m1 in ranges)
    if total > cap:
        raise ComputationError(
            f"lag range {lag_min_mm:g}-{lag_max_mm:g} mm at pixel spacing {sr:g} x {sc:g} mm "
            f"gives {total:.3g} lags (more than {cap}); check the spacing and the lag range"
        )
    lags, dists = [], []
    for ur, uc, step, m0, m1 in ranges:
        for m in range(m0, int(m1) + 1):
            if lo_mm <= m * step <= hi_mm:
                lags.append((m * ur, m * uc))
                dists.append(m * step)
    order = np.argsort(dists, kind="stable")
    return (
        np.asarray(lags, dtype=np.int64).reshape(-1, 2)[order],
        np.asarray(dists, dtype=np.float64)[order],
    )


@dataclass(frozen=True)
class LogLogFit:
    """OLS fit ``ln V = intercept + slope * ln d``.

    Attributes
    ----------
    slope : float
        The index (dimensionless).
    intercept : float
        ``ln V`` at 1 mm (V in gray level squared).
    r2 : float
        Coefficient of determination of the log–log fit.
    slope_se : float
        Standard error of the slope (nan with only two points).
    n : int
        Points used.
    """

    slope: float
    intercept: float
    r2: float
    slope_se: float
    n: int


def fit_loglog(distances_mm: np.ndarray, values: np.ndarray) -> LogLogFit:
    """Fit a line to ``(ln distance, ln value)`` by ordinary least squares.

    Raises
    ------
    tbscore.errors.ComputationError
        Fewer than two points, non-positive values, or all distances equal.
    """
    try:
        fit = fit_slope("ols", distances_mm, values)
    except ValueError as exc:
        raise ComputationError(str(exc)) from None
    return LogLogFit(fit.slope, fit.intercept, fit.r2, fit.slope_se, fit.n)


def fit_vertebra(settings: Settings, distances_mm: np.ndarray, values: np.ndarray) -> SlopeFit:
    """The one place the slope estimator is chosen: ``settings.estimator``."""
    return fit_slope(settings.estimator, distances_mm, values)


def implausible_fit(fit: LogLogFit | SlopeFit) -> str | None:
    """Why a fit cannot be a TBS value, or ``None``: the one plausibility rule.

    A DXA texture variogram grows with the lag, so a slope <= 0 is not a texture index
    (e.g. Rows and Columns swapped, so that the image is sheared noise), and a fit with
    R^2 below :data:`PLAUSIBLE_MIN_R2` explains almost nothing. Such vertebrae are
    ``invalid`` (no value) in ``calc``, ``batch`` and ``score`` alike.
    """
    problems = []
    if not fit.slope > 0:
        problems.append(f"slope {fit.slope:.3f} <= 0")
    if not fit.r2 >= PLAUSIBLE_MIN_R2:
        problems.append(f"R^2 {fit.r2:.3f} < {PLAUSIBLE_MIN_R2}")
    if not problems:
        return None
    return (
        f"implausible log-log fit ({', '.join(problems)}): not a bone texture; check the "
        "image (Rows/Columns, pixel spacing) and the ROI"
    )


def _round9(x: float) -> float:
    """``np.round(x, 9)`` of one float64 as numpy computes it, ``rint(x * 1e9) / 1e9``
    (Python's ``round`` of a float rounds half to even, like ``rint``; the integer is
    exact in float64 for lengths below ~9e6 mm), up to the sign of a zero result
    (``0.0`` for ``-0.0``: equal in every comparison)."""
    return round(x * 1e9) / 1e9


def _distinct_distances(distances_mm: list[float]) -> bool:
    """Whether the lag lengths (mm) take two or more values after rounding to 9
    decimals (``np.round(d, 9)``: min < max; equal lengths of two directions are one
    distance). ``distances_mm`` is non-empty and finite. The rounding is monotonic, so
    the rounded values differ somewhere exactly when those of the shortest and the
    longest length differ."""
    return _round9(min(distances_mm)) != _round9(max(distances_mm))


def vertebra_tbs(
    image: np.ndarray,
    roi: VertebraROI,
    spacing_mm: tuple[float, float],
    settings: Settings,
    lags: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    box: tuple[int, int, int, int] | None = None,
    finite: bool = False,
) -> VertebraResult:
    """TBS of one vertebra, with fit diagnostics or the reason it has no value.

    Everything is computed on the ROI's bounding box (``roi.bbox()``: the mask is False
    outside it, so no pixel pair is lost), not on the whole image.

    Parameters
    ----------
    image : ndarray, shape (rows, cols)
        Gray levels.
    roi : VertebraROI
    spacing_mm : (float, float)
    settings : Settings
    lags : (lags, distances_mm), optional
        Precomputed :func:`select_lags` output.
    box : (row0, col0, row1, col1), optional
        ``roi.bbox()``, when the caller has it already.
    finite : bool
        The caller has checked that the gray levels inside the ROI are finite
        (:func:`tbscore.api.calc`): the kernel does not check them again.
    """
    image, full_mask = check_image_mask(image, roi.mask)  # before cropping both alike
    r0, c0, r1, c1 = roi.bbox() if box is None else box
    nr, nc = full_mask.shape
    if not (0 <= r0 <= r1 <= nr and 0 <= c0 <= c1 <= nc):
        # the rows and columns that slicing takes (a box beyond the image is clipped),
        # so that the kernel, which reads the image in place from (r0, c0), stays in it
        r0, r1, _ = slice(r0, r1).indices(nr)
        c0, c1, _ = slice(c0, c1).indices(nc)
    mask = full_mask[r0:r1, c0:c1]
    n_pixels = int(np.count_nonzero(mask))
    if roi.box is not None and n_pixels != roi.n_pixels:  # a box given with the mask
        raise ROIError(f"{roi.label} mask has pixels outside its box {roi.box}")
    base = dict(label=roi.label, n_pixels=n_pixels, roi_confidence=roi.confidence)
    if roi.excluded:
        return VertebraResult(status="excluded", reason=roi.exclusion_reason or "excluded", **base)
    if n_pixels < settings.min_roi_pixels:
        return VertebraResult(
            status="invalid",
            reason=f"ROI has {n_pixels} pixels (< min_roi_pixels {settings.min_roi_pixels})",
            **base,
        )
    if lags is None:
        lags = select_lags(
            spacing_mm, settings.lag_min_mm, settings.lag_max_mm, settings.directions
        )
    lag_arr, dists = as_lags(lags[0]), lags[1]
    # the image read in place from the box's corner (image and mask validated above)
    solid = n_pixels == mask.size
    sums, counts = _sums(
        image, mask, lag_arr, settings.parallel, r0, c0, solid=solid, finite=finite
    )
    cu_list = counts.tolist()
    if cu_list and min(cu_list) >= settings.min_pairs_per_lag:
        # every lag usable (the common case): no selection; counts >= 1, so V = sums /
        # counts is what variogram() computes at every lag
        lu, du, vu = lag_arr, dists, sums / counts
    else:
        usable = counts >= settings.min_pairs_per_lag
        # the usable lags' vectors, lengths, values and counts, selected once
        lu, du = lag_arr[usable], dists[usable]
        vu = sums[usable] / counts[usable]  # counts >= min_pairs_per_lag >= 1
        cu_list = counts[usable].tolist()
    d_list, v_list = du.tolist(), vu.tolist()  # the lists of the result, read below too
    lags_list = lu.tolist()
    diag = dict(
        lags=lags_list,
        lag_distances_mm=d_list,
        variogram=v_list,
        pair_counts=cu_list,
        n_pairs=sum(cu_list),
        n_lags=len(d_list),
    )
    if len(d_list) < settings.min_lags or not d_list or not _distinct_distances(d_list):
        return VertebraResult(
            status="invalid",
            reason=(
                f"only {len(d_list)} lags with >= {settings.min_pairs_per_lag} pairs "
                f"in {settings.lag_min_mm}-{settings.lag_max_mm} mm (need {settings.min_lags} "
                "at two or more distances)"
            ),
            **base,
            **diag,
        )
    if any(map((0.0).__ge__, v_list)):  # np.any(vu <= 0) on the list (nan is not <= 0)
        return VertebraResult(
            status="invalid", reason="zero gray-level variation in the ROI", **base, **diag
        )
    try:
        fit = fit_vertebra(settings, du, vu)
    except ValueError as exc:
        return VertebraResult(
            status="invalid", reason=f"{settings.estimator} estimator: {exc}", **base, **diag
        )
    implausible = implausible_fit(fit)
    if implausible is not None or fit.r2 < settings.min_r2:
        return VertebraResult(
            status="invalid",
            reason=implausible or f"log-log fit R^2 {fit.r2:.3f} < min_r2 {settings.min_r2}",
            r2=fit.r2,
            slope_se=fit.slope_se if math.isfinite(fit.slope_se) else None,
            intercept=fit.intercept,
            **base,
            **diag,
        )
    # a solid mask is its own box, all True: the covariance needs no search for it
    unc = slope_uncertainty(fit, mask, lu, du, vu, spacing_mm, full=True if solid else None)
    return VertebraResult(
        status="ok",
        value=fit.slope,
        r2=fit.r2,
        slope_se=fit.slope_se if math.isfinite(fit.slope_se) else None,
        intercept=fit.intercept,
        se=unc.se if math.isfinite(unc.se) else None,
        ci95=unc.ci95,
        snr=unc.snr if math.isfinite(unc.snr) else None,  # None: no noise detected
        **base,
        **diag,
    )


def combine_l1_l4(
    vertebrae: tuple[VertebraResult, ...], min_valid: int
) -> tuple[float | None, tuple[str, ...], str | None]:
    """Mean of the valid vertebrae, or ``None`` with the reason.

    Returns
    -------
    value : float or None
    labels : tuple of str
        The vertebrae that contributed.
    reason : str or None
        Why there is no value.
    """
    valid = [v for v in vertebrae if v.status == "ok" and v.value is not None]
    labels = tuple(v.label for v in valid)
    if len(valid) < min_valid:
        return (
            None,
            labels,
            (
                f"{len(valid)} valid vertebra(e) ({', '.join(labels) or 'none'}); "
                f"the L1-L4 value needs at least {min_valid}"
            ),
        )
    return float(np.mean([v.value for v in valid])), labels, None


def combine_l1_l4_ci95(
    vertebrae: tuple[VertebraResult, ...],
    labels: tuple[str, ...],
    mean: float | None = None,
) -> tuple[float | None, tuple[float, float] | None]:
    """Standard error and 95 % interval of the L1–L4 mean.

    The vertebrae are disjoint regions; their errors are treated as independent, so
    ``se = sqrt(sum se_i^2) / m`` over the ``m`` contributing vertebrae.

    Parameters
    ----------
    vertebrae : tuple of VertebraResult
    labels : tuple of str
        The contributing vertebrae (:func:`combine_l1_l4`).
    mean : float, optional
        Their mean, :func:`combine_l1_l4`'s value for these ``labels``, when the caller
        has it (else computed here, the same way).

    Returns
    -------
    se : float or None
    ci95 : (float, float) or None
        ``None`` when there is no L1–L4 value or a contributing ``se`` is missing.
    """
    used = [v for v in vertebrae if v.label in labels and v.value is not None]
    if not used or any(v.se is None or not math.isfinite(v.se) for v in used):
        return None, None
    if mean is None:
        mean = float(np.mean([v.value for v in used]))
    se = math.sqrt(sum(v.se**2 for v in used)) / len(used)
    return se, (mean - Z95 * se, mean + Z95 * se)


def uncertainty_warnings(vertebrae: tuple[VertebraResult, ...], estimator: str) -> list[str]:
    """Warnings for vertebrae whose texture-to-noise ratio is below :data:`SNR_WARN`."""
    low = [v for v in vertebrae if v.snr is not None and v.snr < SNR_WARN]
    if not low:
        return []
    which = ", ".join(f"{v.label} {v.snr:.2g}" for v in low)
    effect = (
        "the OLS index is lowered by noise by more than ~15 % and its 95 % CI is about that "
        "lowered value, not the noise-free texture slope; consider estimator='nugget'"
        if estimator == "ols"
        else "the noise-aware estimate keeps its coverage but its interval is wide"
    )
    return [f"texture-to-noise ratio below {SNR_WARN:g} ({which}): {effect}"]


@functools.lru_cache(maxsize=64)
def _scan_lags(
    spacing_mm: tuple[float, float],
    lag_min_mm: float,
    lag_max_mm: float,
    directions: tuple[str, ...],
    extent_px: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`select_lags` of a scan, kept for the next scan of the same geometry (a
    batch of one device repeats it); callers copy the arrays (:func:`compute_vertebrae`)."""
    return select_lags(spacing_mm, lag_min_mm, lag_max_mm, directions, extent_px=extent_px)


def compute_vertebrae(
    image: np.ndarray,
    rois: VertebraROIs,
    spacing_mm: tuple[float, float],
    settings: Settings,
    *,
    finite: bool = False,
) -> tuple[VertebraResult, ...]:
    """Per-vertebra results for all ROIs (lags selected once, no longer than the ROIs;
    each ROI's bounding box found once). ``finite``: the caller has checked the gray
    levels inside the ROIs (:func:`tbscore.api.calc`), which the kernel then does not
    check again."""
    bboxes = [r.bbox() for r in rois]
    boxes = [b for b, r in zip(bboxes, rois, strict=True) if not r.excluded]
    boxes = boxes or [(0, 0, *image.shape[:2])]
    extent = (max(b[2] - b[0] for b in boxes), max(b[3] - b[1] for b in boxes))
    key = (float(spacing_mm[0]), float(spacing_mm[1]))
    lags = tuple(  # copies: the cached arrays stay as select_lags made them
        a.copy()
        for a in _scan_lags(
            key, settings.lag_min_mm, settings.lag_max_mm, tuple(settings.directions), extent
        )
    )
    return tuple(
        vertebra_tbs(image, roi, spacing_mm, settings, lags, box=b, finite=finite)
        for roi, b in zip(rois, bboxes, strict=True)
    )
