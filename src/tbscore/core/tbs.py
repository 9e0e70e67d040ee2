"""The TBS value: slope of the log–log experimental variogram near the origin.

For each vertebral ROI, the variogram ``V(k)`` (:mod:`tbscore.core.variogram`) is computed
at every lag vector whose physical length lies in the settings' lag range (mm), and the
index is the ordinary-least-squares slope of ``log V`` against ``log |k|_mm``. The
L1–L4 value is the mean of the valid, non-excluded vertebrae, reported only when at
least ``settings.min_valid_vertebrae`` are valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tbscore.core.result import VertebraResult
from tbscore.core.roi import VertebraROI, VertebraROIs
from tbscore.core.settings import DIRECTIONS, Settings
from tbscore.core.variogram import variogram_sums
from tbscore.errors import ComputationError

__all__ = ["select_lags", "fit_loglog", "LogLogFit", "vertebra_tbs", "combine_l1_l4", "METHOD"]

#: Name and version of the method, recorded with every result.
METHOD = "tbscore variogram-slope v1 (OLS of ln V on ln lag, lags in mm)"

_TOL = 1e-9


def select_lags(
    spacing_mm: tuple[float, float],
    lag_min_mm: float,
    lag_max_mm: float,
    directions: tuple[str, ...] = tuple(DIRECTIONS),
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

    Returns
    -------
    lags : ndarray of int64, shape (n, 2)
        ``(d_row, d_col)`` in pixels, whole multiples of each direction step.
    distances_mm : ndarray of float64, shape (n,)
        Their lengths in mm, sorted ascending.
    """
    sr, sc = float(spacing_mm[0]), float(spacing_mm[1])
    lags, dists = [], []
    for name in directions:
        ur, uc = DIRECTIONS[name]
        step = math.hypot(ur * sr, uc * sc)
        m = 1
        while m * step <= lag_max_mm * (1 + _TOL):
            if m * step >= lag_min_mm * (1 - _TOL):
                lags.append((m * ur, m * uc))
                dists.append(m * step)
            m += 1
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
    x = np.log(np.asarray(distances_mm, dtype=float))
    v = np.asarray(values, dtype=float)
    if v.size < 2 or x.size != v.size:
        raise ComputationError("need at least two (distance, value) points")
    if np.any(~np.isfinite(v)) or np.any(v <= 0):
        raise ComputationError("variogram values must be positive and finite")
    y = np.log(v)
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    if sxx <= 0:
        raise ComputationError("all lag distances are equal: the slope is undefined")
    slope = float(np.sum((x - xm) * (y - ym)) / sxx)
    intercept = float(ym - slope * xm)
    resid = y - (intercept + slope * x)
    ss_res = float(np.sum(resid**2))
    ss_tot = float(np.sum((y - ym) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    se = math.sqrt(ss_res / (v.size - 2) / sxx) if v.size > 2 else math.nan
    return LogLogFit(slope, intercept, r2, se, int(v.size))


def vertebra_tbs(
    image: np.ndarray,
    roi: VertebraROI,
    spacing_mm: tuple[float, float],
    settings: Settings,
    lags: tuple[np.ndarray, np.ndarray] | None = None,
) -> VertebraResult:
    """TBS of one vertebra, with fit diagnostics or the reason it has no value.

    Parameters
    ----------
    image : ndarray, shape (rows, cols)
        Gray levels.
    roi : VertebraROI
    spacing_mm : (float, float)
    settings : Settings
    lags : (lags, distances_mm), optional
        Precomputed :func:`select_lags` output.
    """
    base = dict(label=roi.label, n_pixels=roi.n_pixels, roi_confidence=roi.confidence)
    if roi.excluded:
        return VertebraResult(status="excluded", reason=roi.exclusion_reason or "excluded", **base)
    if roi.n_pixels < settings.min_roi_pixels:
        return VertebraResult(
            status="invalid",
            reason=f"ROI has {roi.n_pixels} pixels (< min_roi_pixels {settings.min_roi_pixels})",
            **base,
        )
    lag_vecs, dists = (
        lags
        if lags is not None
        else select_lags(spacing_mm, settings.lag_min_mm, settings.lag_max_mm, settings.directions)
    )
    sums, counts = variogram_sums(image, roi.mask, lag_vecs, parallel=settings.parallel)
    usable = counts >= settings.min_pairs_per_lag
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    diag = dict(
        lags=lag_vecs[usable].tolist(),
        lag_distances_mm=dists[usable].tolist(),
        variogram=v[usable].tolist(),
        pair_counts=counts[usable].tolist(),
        n_pairs=int(counts[usable].sum()),
        n_lags=int(usable.sum()),
    )
    if usable.sum() < settings.min_lags or np.unique(np.round(dists[usable], 9)).size < 2:
        return VertebraResult(
            status="invalid",
            reason=(
                f"only {int(usable.sum())} lags with >= {settings.min_pairs_per_lag} pairs "
                f"in {settings.lag_min_mm}-{settings.lag_max_mm} mm (need {settings.min_lags} "
                "at two or more distances)"
            ),
            **base,
            **diag,
        )
    if np.any(v[usable] <= 0):
        return VertebraResult(
            status="invalid", reason="zero gray-level variation in the ROI", **base, **diag
        )
    fit = fit_loglog(dists[usable], v[usable])
    if fit.r2 < settings.min_r2:
        return VertebraResult(
            status="invalid",
            reason=f"log-log fit R^2 {fit.r2:.3f} < min_r2 {settings.min_r2}",
            r2=fit.r2,
            slope_se=fit.slope_se,
            intercept=fit.intercept,
            **base,
            **diag,
        )
    return VertebraResult(
        status="ok",
        value=fit.slope,
        r2=fit.r2,
        slope_se=fit.slope_se,
        intercept=fit.intercept,
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


def compute_vertebrae(
    image: np.ndarray, rois: VertebraROIs, spacing_mm: tuple[float, float], settings: Settings
) -> tuple[VertebraResult, ...]:
    """Per-vertebra results for all ROIs (lags selected once)."""
    lags = select_lags(spacing_mm, settings.lag_min_mm, settings.lag_max_mm, settings.directions)
    return tuple(vertebra_tbs(image, roi, spacing_mm, settings, lags) for roi in rois)
