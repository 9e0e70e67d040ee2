"""Slope estimators of the log–log variogram (pure numpy / scipy).

Every estimator takes the experimental variogram ``V`` (gray level squared) at lag
vectors of lengths ``d`` (mm) and returns the exponent ``a`` of ``V(d) ~ d^a`` (the
index; ``2H`` for a fractional Brownian surface) together with the gradient
``d a / d V_k``, which :mod:`tbscore.core.uncertainty` turns into a standard error by the
delta method.

``"ols"``
    The published definition (Pothuaud et al. 2008): ordinary least squares of ``ln V``
    on ``ln d``. Unbiased on noiseless fBm; white noise (a nugget) flattens it.
``"nugget"``
    Least squares, in log space, of ``V(d) = c d^a + n`` with ``a`` in (0, 2) and
    ``n >= 0`` (the nugget: ``n = 2 sigma^2`` for white noise of SD ``sigma``).
``"increment"``
    Noise-cancelling increments: the differences of the direction-averaged variogram
    between consecutive distinct distances, ``V(d_{j+1}) - V(d_j) = c (d_{j+1}^a -
    d_j^a)``, fitted by least squares (``c`` profiled out); any constant nugget cancels.
    With three distances ``k, 2k, 4k`` it is exactly
    ``log2((V(4k) - V(2k)) / (V(2k) - V(k)))``.

The bias/spread trade-off of the three is measured in docs/method.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from tbscore.core.constants import ESTIMATORS  # noqa: E402 - the one list
from tbscore.errors import ComputationError  # noqa: E402 - after the kernels note

__all__ = [
    "ESTIMATORS",
    "SlopeFit",
    "fit_slope",
    "fit_nugget_model",
    "nugget_model",
    "method_string",
]

#: Estimator names accepted by ``Settings(estimator=...)``.

_A_LO, _A_HI = 1e-6, 2.0 - 1e-6
_METHODS = {
    "ols": "OLS of ln V on ln lag",
    "nugget": "least squares of ln V = ln(c*lag^a + n), n >= 0",
    "increment": "noise-cancelling increments V(d_j+1) - V(d_j) = c*(d_j+1^a - d_j^a)",
}


def method_string(estimator: str = "ols") -> str:
    """The method recorded with every result (unchanged for ``"ols"``)."""
    return f"tbscore variogram-slope v1 ({_METHODS[estimator]}, lags in mm)"


@dataclass(frozen=True)
class SlopeFit:
    """A fitted slope and what the delta method needs.

    Attributes
    ----------
    slope : float
        The index ``a`` (dimensionless).
    intercept : float
        ``ln c``: log of the texture part of ``V`` at 1 mm (gray level squared).
    nugget : float
        ``n`` (gray level squared); 0 for ``"ols"``, the fitted constant otherwise.
    r2 : float
        Coefficient of determination in log space (``ln V`` against the fitted model).
    slope_se : float
        OLS residual standard error of the slope (``"ols"`` only, nan otherwise and
        with two points); the model-based ``se`` is in :mod:`tbscore.core.uncertainty`.
    n : int
        Lags used.
    gradient : ndarray, shape (n,)
        ``d slope / d V_k`` (1 / gray level squared), per lag in input order.
    estimator : str
    """

    slope: float
    intercept: float
    nugget: float
    r2: float
    slope_se: float
    n: int
    gradient: np.ndarray
    estimator: str


_CHECK_ERRORS = (
    None,
    "need at least two (distance, value) points",
    "variogram values must be positive and finite",
    "lag distances must be positive and finite",
    "all lag distances are equal: the slope is undefined",
)


@njit(cache=True, nogil=True)
def _check_code(d, v):  # pragma: no cover - compiled
    # the index in _CHECK_ERRORS of the first failed check (0: valid), in one pass
    # instead of ~10 numpy calls on arrays of 10-20 values
    if v.shape[0] < 2 or d.shape[0] != v.shape[0]:
        return 1
    for x in v:
        if not (math.isfinite(x) and x > 0):
            return 2
    for x in d:
        if not (math.isfinite(x) and x > 0):
            return 3
    lo = hi = math.log(d[0])
    for x in d:
        lx = math.log(x)
        lo = min(lo, lx)
        hi = max(hi, lx)
    return 4 if hi - lo <= 0 else 0


def _check(distances_mm: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(distances_mm, dtype=float)
    v = np.asarray(values, dtype=float)
    # (1-D arrays as they are: a reshape view per call costs more than the check)
    code = _check_code(d if d.ndim == 1 else d.reshape(-1), v if v.ndim == 1 else v.reshape(-1))
    if code:
        raise ComputationError(_CHECK_ERRORS[code])
    return d, v


def _r2(y: np.ndarray, fitted: np.ndarray) -> float:
    ss_res = float(np.sum((y - fitted) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0


@njit(cache=True, nogil=True)
def _ols_kernel(x, y):  # pragma: no cover - compiled
    # OLS of y on x: slope, intercept, R^2, slope SE (nan for two points) and the
    # weights w with slope = w . y, in one compiled call (what ~25 numpy calls did)
    k = x.shape[0]
    xm = 0.0
    ym = 0.0
    for q in range(k):
        xm += x[q]
        ym += y[q]
    xm /= k
    ym /= k
    sxx = 0.0
    for q in range(k):
        sxx += (x[q] - xm) ** 2
    w = (x - xm) / sxx
    slope = 0.0
    for q in range(k):
        slope += w[q] * y[q]
    intercept = ym - slope * xm
    ss_res = 0.0
    ss_tot = 0.0
    for q in range(k):
        ss_res += (y[q] - (intercept + slope * x[q])) ** 2
        ss_tot += (y[q] - ym) ** 2
    se = math.sqrt(ss_res / (k - 2) / sxx) if k > 2 else np.nan
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return slope, intercept, r2, se, w


def _ols(d: np.ndarray, v: np.ndarray) -> SlopeFit:
    slope, intercept, r2, se, w = _ols_kernel(np.log(d), np.log(v))
    return SlopeFit(slope, intercept, 0.0, r2, se, v.size, w / v, "ols")


def _grid_argmin(f, lo: float = _A_LO, hi: float = _A_HI) -> float:
    """Minimiser of a smooth 1-D function ``f`` (vectorised over an array of ``a``).

    A 201-point grid, two local 41-point refinements and a final parabolic step:
    about 1e-8 in ``a`` for the smooth objectives here, with no per-point Python call.
    """
    grid = np.linspace(lo, hi, 201)
    for _ in range(3):
        vals = f(grid)
        i = int(np.nanargmin(vals))
        step = grid[1] - grid[0]
        if _ == 2:
            break
        grid = np.linspace(max(lo, grid[i] - step), min(hi, grid[i] + step), 41)
    a = float(grid[i])
    if 0 < i < grid.size - 1:
        y0, y1, y2 = vals[i - 1], vals[i], vals[i + 1]
        den = y0 - 2.0 * y1 + y2
        if np.isfinite(den) and den > 0:
            a = float(np.clip(a + 0.5 * step * (y0 - y2) / den, lo, hi))
    return a


def _nugget_solve(a: np.ndarray, d: np.ndarray, v: np.ndarray):
    """For each exponent in ``a``: ``(c, n)`` minimising ``sum ((V - c d^a - n) / V)^2``
    with ``n >= 0``, and that weighted residual sum (inf where ``c <= 0``)."""
    w = 1.0 / v**2
    p = np.exp(np.multiply.outer(a, np.log(d)))  # (A, K)
    s11 = (w * p * p).sum(-1)
    s12 = (w * p).sum(-1)
    s22 = w.sum()
    b1 = (w * v * p).sum(-1)
    b2 = (w * v).sum()
    det = s11 * s22 - s12 * s12
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (b1 * s22 - b2 * s12) / det
        n = (s11 * b2 - s12 * b1) / det
        neg = ~(n >= 0)
        c = np.where(neg, b1 / s11, c)
        n = np.where(neg, 0.0, n)
    resid = v - c[..., None] * p - n[..., None]
    ss = (w * resid * resid).sum(-1)
    return c, n, np.where(c > 0, ss, np.inf)


@njit(cache=True, nogil=True, error_model="numpy")
def _nugget_solve_at(p, w, v, s22, b2):  # pragma: no cover - compiled
    # c, n (closed form, n >= 0 else n = 0) and the weighted residual sum of squares at
    # one exponent, given p = d^a, w = 1/v^2, s22 = sum w, b2 = sum w v: the one solve
    # that the profile search (_nugget_ss) and the fit's last step (_nugget_finish) share
    k = p.shape[0]
    s11 = 0.0
    s12 = 0.0
    b1 = 0.0
    for q in range(k):
        s11 += w[q] * p[q] * p[q]
        s12 += w[q] * p[q]
        b1 += w[q] * v[q] * p[q]
    det = s11 * s22 - s12 * s12
    c = (b1 * s22 - b2 * s12) / det
    n = (s11 * b2 - s12 * b1) / det
    if not (n >= 0):
        c = b1 / s11
        n = 0.0
    ss = 0.0
    for q in range(k):
        r = v[q] - c * p[q] - n
        ss += w[q] * r * r
    return c, n, ss


@njit(cache=True, nogil=True, error_model="numpy")
def _nugget_ss(a, d, v):  # pragma: no cover - compiled
    # _nugget_solve(a, d, v)[2] in one compiled pass (the profile search's objective:
    # ~20 numpy calls on (A, K) arrays per grid became the largest cost of a scan)
    k = d.shape[0]
    ld = np.log(d)
    w = 1.0 / (v * v)
    s22 = 0.0
    b2 = 0.0
    for q in range(k):
        s22 += w[q]
        b2 += w[q] * v[q]
    # equal distances (a lag and its mirror; both axes on square pixels) share d^a: one
    # exp per distinct distance, copied to the others (the same values, half the exps
    # on the default lags at square pixels)
    first = np.empty(k, np.int64)
    for q in range(k):
        first[q] = q
        for r in range(q):
            if ld[r] == ld[q]:
                first[q] = first[r]
                break
    out = np.empty(a.shape[0])
    p = np.empty(k)  # d^a, computed once per exponent for both passes
    for i in range(a.shape[0]):
        for q in range(k):
            p[q] = math.exp(a[i] * ld[q]) if first[q] == q else p[first[q]]
        c, _, ss = _nugget_solve_at(p, w, v, s22, b2)
        out[i] = ss if c > 0 else np.inf
    return out


@njit(cache=True, nogil=True)
def _linspace_into(lo, hi, n):  # pragma: no cover - compiled
    # np.linspace(lo, hi, n) element for element: i * step + lo, the last exactly hi
    out = np.empty(n)
    step = (hi - lo) / (n - 1)
    for i in range(n):
        out[i] = i * step + lo
    out[n - 1] = hi
    return out


@njit(cache=True, nogil=True)
def _first_min(vals):  # pragma: no cover - compiled
    # np.nanargmin: the first smallest value ignoring nan; -1 when all are nan
    idx = -1
    best = 0.0
    for i in range(vals.shape[0]):
        x = vals[i]
        if x == x and (idx < 0 or x < best):
            idx = i
            best = x
    return idx


@njit(cache=True, nogil=True, error_model="numpy")
def _nugget_argmin(d, v, lo, hi):  # pragma: no cover - compiled
    # _grid_argmin(lambda aa: _nugget_ss(aa, d, v), lo, hi) in one compiled call, the
    # same grids and steps; nan when a grid is all nan (np.nanargmin would raise)
    grid = _linspace_into(lo, hi, 201)
    vals = np.empty(0)
    i = 0
    step = 0.0
    for it in range(3):
        vals = _nugget_ss(grid, d, v)
        i = _first_min(vals)
        if i < 0:
            return np.nan
        step = grid[1] - grid[0]
        if it == 2:
            break
        grid = _linspace_into(max(lo, grid[i] - step), min(hi, grid[i] + step), 41)
    a = grid[i]
    if 0 < i < grid.shape[0] - 1:
        y0, y1, y2 = vals[i - 1], vals[i], vals[i + 1]
        den = y0 - 2.0 * y1 + y2
        if np.isfinite(den) and den > 0:
            a = min(max(a + 0.5 * step * (y0 - y2) / den, lo), hi)
    return a


@njit(cache=True, nogil=True, error_model="numpy")
def _nugget_finish(a, d, v):  # pragma: no cover - compiled
    # What fit_nugget_model did with numpy after the profile search, in one call:
    #   c, n, ss = _nugget_solve(np.array([a]), d, v)   (at the one exponent a)
    #   tex = c d^a; m = tex + n; J = [tex / m, tex ln d / m, 1 / m] = d ln m / d(ln c, a, n)
    #   free = [True, 1e-4 < a < 2 - 1e-4, n > 1e-9]  (parameters at a bound held fixed)
    #   r2 = _r2(ln v, ln m)
    # and returns J[:, free] for the caller's np.linalg.pinv (kept in numpy, in plain
    # sight, as before). c, n, ss as _nugget_ss has them; the rest only when ss is
    # finite and c > 0 (else J has no columns).
    k = d.shape[0]
    ld = np.log(d)
    w = 1.0 / (v * v)
    s22 = 0.0
    b2 = 0.0
    for q in range(k):
        s22 += w[q]
        b2 += w[q] * v[q]
    p = np.exp(a * ld)
    c, n, ss = _nugget_solve_at(p, w, v, s22, b2)
    if not (math.isfinite(ss) and c > 0):
        return c, n, np.inf, np.nan, np.empty((k, 0))
    tex = c * p
    m = tex + n
    free_a = 1e-4 < a < 2.0 - 1e-4
    ncol = 1 + int(free_a) + int(n > 1e-9)
    J = np.empty((k, ncol))
    for q in range(k):
        J[q, 0] = tex[q] / m[q]
        col = 1
        if free_a:
            J[q, 1] = tex[q] * ld[q] / m[q]
            col = 2
        if ncol > col:
            J[q, col] = 1.0 / m[q]
    y = np.log(v)
    ym = 0.0
    for q in range(k):
        ym += y[q]
    ym /= k
    ss_res = 0.0
    ss_tot = 0.0
    for q in range(k):
        ss_res += (y[q] - math.log(m[q])) ** 2
        ss_tot += (y[q] - ym) ** 2
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return c, n, ss, r2, J


def fit_nugget_model(distances_mm: np.ndarray, values: np.ndarray) -> SlopeFit:
    """Least-squares fit of ``V = c d^a + n``, ``a`` in (0, 2), ``n >= 0``.

    The residuals are relative, ``(V - c d^a - n) / V`` (to first order the log-space
    residuals of the OLS fit); ``c`` and ``n`` are solved in closed form for each ``a``
    and ``a`` by a vectorised profile search (no iterative solver: about 0.3 ms).

    Parameters
    ----------
    distances_mm : ndarray, shape (k,)
        Lag lengths (mm).
    values : ndarray, shape (k,)
        Experimental variogram (gray level squared), positive.

    Returns
    -------
    SlopeFit
        ``nugget`` is ``n`` (gray level squared); ``gradient`` is the Gauss–Newton
        derivative of ``a`` with respect to ``V`` (parameters at a bound held fixed).
    """
    d, v = _check(distances_mm, values)
    a, c, n, r2, J, scale = _nugget_solution(d, v)
    if 1e-4 < a < 2.0 - 1e-4:  # the row of a (ln c is always free), as before
        grad_lnv = np.linalg.pinv(J)[1]
    else:
        grad_lnv = np.zeros(v.size)
    return SlopeFit(
        slope=a,
        intercept=float(math.log(c * scale)),
        nugget=n * scale,
        r2=r2,
        slope_se=math.nan,
        n=int(v.size),
        gradient=grad_lnv / v,
        estimator="nugget",
    )


def nugget_model(distances_mm: np.ndarray, values: np.ndarray) -> tuple[float, float, float]:
    """The parameters of :func:`fit_nugget_model`, without its gradient.

    What :func:`tbscore.core.uncertainty.slope_uncertainty` needs of the noise model
    when the estimator is not ``"nugget"`` (the covariance model and the
    texture-to-noise ratio; the gradient there is the estimator's own): the same
    numbers, raising the same errors, without the pseudo-inverse of the Jacobian.

    Parameters
    ----------
    distances_mm : ndarray, shape (k,)
        Lag lengths (mm).
    values : ndarray, shape (k,)
        Experimental variogram (gray level squared), positive.

    Returns
    -------
    intercept : float
        ``ln c`` (``c``: gray level squared at 1 mm), ``fit_nugget_model(...).intercept``.
    slope : float
        ``a`` (dimensionless), ``.slope``.
    nugget : float
        ``n`` (gray level squared), ``.nugget``.

    Raises
    ------
    tbscore.errors.ComputationError
        As :func:`fit_nugget_model`.
        Also where :func:`fit_nugget_model` raises numpy's ``LinAlgError`` (a
        ``ValueError`` too): a non-finite Jacobian, whose SVD does not converge.
    """
    d, v = _check(distances_mm, values)
    a, c, n, _, J, scale = _nugget_solution(d, v)
    # a nan or +-inf entry of J (the entries are bounded: J.sum() is finite exactly
    # when they all are): where fit_nugget_model's pseudo-inverse of J would fail
    # (LinAlgError, a ValueError too), this fails alike
    if 1e-4 < a < 2.0 - 1e-4 and not all(map(math.isfinite, J.ravel().tolist())):
        raise ComputationError("the nugget model's Jacobian is not finite")
    return float(math.log(c * scale)), a, n * scale


def _nugget_solution(
    d: np.ndarray, v: np.ndarray
) -> tuple[float, float, float, float, np.ndarray, float]:
    """The nugget fit of checked ``d``, ``v`` (:func:`_check`) up to its Jacobian.

    Returns ``(a, c, n, r2, J, scale)``: the exponent, ``c`` and ``n`` of the values
    divided by ``scale = min(v)``, R^2, and the free columns of ``d ln m / d(ln c, a,
    n)`` (:func:`_nugget_finish`). Raises ComputationError when no model fits.
    """
    if v.size < 3:
        raise ComputationError("the nugget model needs at least three lags")
    scale = min(v.tolist())  # = float(v.min()) (v is finite), without the reduction
    vs = v / scale
    a = float(_nugget_argmin(d, vs, _A_LO, _A_HI))  # = _grid_argmin of _nugget_ss
    if not math.isfinite(a):
        raise ComputationError("the nugget model's objective is undefined (all nan)")
    c, n, ss, r2, J = _nugget_finish(a, d, vs)  # = the numpy steps in its comments
    if not (math.isfinite(ss) and c > 0):  # ss: a float (numba returns Python floats)
        raise ComputationError("the variogram does not rise with the lag: no power law fits it")
    return a, c, n, r2, J, scale


def _distinct(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct distances and the averaging matrix ``M`` (distinct x lags)."""
    key = np.round(d, 9)
    uniq, inv = np.unique(key, return_inverse=True)
    M = np.zeros((uniq.size, d.size))
    M[inv, np.arange(d.size)] = 1.0
    M /= M.sum(axis=1, keepdims=True)
    return M @ d, M


def _increment(d: np.ndarray, v: np.ndarray) -> SlopeFit:
    dist, M = _distinct(d)
    if dist.size < 3:
        raise ComputationError(
            "the increment estimator needs at least three distinct lag distances"
        )
    scale = float(v.max())
    vbar = M @ (v / scale)
    y = np.diff(vbar)  # increments between consecutive distances
    ld = np.log(dist)

    def g_of(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.exp(np.multiply.outer(a, ld))
        return np.diff(p, axis=-1), np.diff(p * ld, axis=-1)  # g(a) and dg/da

    def objective(a: np.ndarray) -> np.ndarray:  # S(a) = y.y - (g.y)^2 / g.g
        g, _ = g_of(a)
        return -((g @ y) ** 2) / (g * g).sum(-1)

    def dq_da(a: float) -> float:
        g, gp = g_of(np.array([a]))
        g, gp = g[0], gp[0]
        u, up, vv, vp = g @ y, gp @ y, g @ g, 2.0 * (g @ gp)
        return 2.0 * u * up / vv - u * u * vp / vv**2

    a = _grid_argmin(objective)
    g, gp = (x[0] for x in g_of(np.array([a])))
    c = float(g @ y / (g @ g))
    # Implicit derivative of the maximiser of Q = (g.y)^2 / g.g:
    # da/dy = -(d2Q/da dy) / (d2Q/da2).
    # At a bound of a (or with c <= 0) the exponent is held fixed: no derivative, and
    # none is computed (at a = 0, g = 0 and dq_da would divide 0 by 0).
    at_bound = not (1e-4 < a < 2.0 - 1e-4) or c <= 0
    if not at_bound:
        h = 1e-5
        lo, hi = max(a - h, 0.0), min(a + h, 2.0)
        d2a = (dq_da(hi) - dq_da(lo)) / (hi - lo)
        at_bound = not d2a < 0
    if at_bound:
        da_dy = np.zeros_like(y)
    else:
        u, up, vv, vp = g @ y, gp @ y, g @ g, 2.0 * (g @ gp)
        d2ay = 2.0 * (g * up + u * gp) / vv - 2.0 * u * g * vp / vv**2
        da_dy = -d2ay / d2a
    D = np.diff(np.eye(dist.size), axis=0)  # y = D @ vbar
    grad = (da_dy @ D @ M) / scale
    fitted = c * np.exp(a * ld)
    nug = float(np.mean(vbar - fitted))
    model = fitted + nug
    r2 = _r2(np.log(vbar), np.log(model)) if np.all(model > 0) else 0.0
    return SlopeFit(
        slope=a,
        intercept=float(math.log(c * scale)) if c > 0 else -math.inf,
        nugget=nug * scale,
        r2=r2,
        slope_se=math.nan,
        n=int(v.size),
        gradient=grad,
        estimator="increment",
    )


def fit_slope(estimator: str, distances_mm: np.ndarray, values: np.ndarray) -> SlopeFit:
    """Fit the variogram exponent with the named estimator.

    Parameters
    ----------
    estimator : {"ols", "nugget", "increment"}
    distances_mm : ndarray, shape (k,)
        Lag lengths (mm).
    values : ndarray, shape (k,)
        Experimental variogram at those lags (gray level squared), positive.

    Returns
    -------
    SlopeFit

    Raises
    ------
    ComputationError
        Unknown estimator, too few points or distances, non-positive values.
    """
    d, v = _check(distances_mm, values)
    if estimator == "ols":
        return _ols(d, v)
    if estimator == "nugget":
        return fit_nugget_model(d, v)
    if estimator == "increment":
        return _increment(d, v)
    raise ComputationError(f"unknown estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")
