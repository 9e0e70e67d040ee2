"""Standard error and 95 % interval of the slope: analytic variance of the variogram.

Model
-----
The gray levels inside an ROI are treated as a Gaussian intrinsic random field whose
variogram (in the TBS convention, ``V = 2 gamma``) is the fitted noise-aware model

    ``V(h) = c |h|_mm^a + n``  for ``h != 0``,  ``V(0) = 0``

(:func:`tbscore.core.estimators.fit_nugget_model`: a power-law texture plus white noise
of variance ``n / 2``). For such a field the covariance of the squared increments is
``Cov(D_i(x)^2, D_j(y)^2) = 2 C_ij(x - y)^2`` with

    ``C_ij(h) = gamma(h + k_i) + gamma(h - k_j) - gamma(h + k_i - k_j) - gamma(h)``,

so the covariance of the experimental variogram at lags ``k_i, k_j`` is exactly

    ``Cov(V_i, V_j) = 2 / (N_i N_j) * sum_h A_ij(h) C_ij(h)^2``,

where ``A_ij(h)`` counts the pairs (start pixel of a lag-``k_i`` pair, start pixel of a
lag-``k_j`` pair) that are ``h`` apart inside the mask: the cross-correlation of the two
pair-start masks (in closed form for a full rectangle; from the masks' row runs, each
pair of runs adding a trapezoid, when they have few runs, as detected convex or rounded
ROIs do; by FFT otherwise). The sum runs over every
displacement in the ROI, so the long-range correlation of fBm increments is included.
The slope's variance follows by the delta method, ``se^2 = g' Cov(V) g`` with ``g`` the
estimator's gradient (:class:`tbscore.core.estimators.SlopeFit`), and the interval is
``slope +/- 1.959964 se`` for ``"ols"`` and ``"increment"``.

For ``"nugget"`` the interval is a profile interval of the exponent instead
(:func:`profile_interval`): the generalised least-squares misfit
``S(a) = min_{c >= 0, n >= 0} (V - c d^a - n)' Cov(V)^-1 (V - c d^a - n)``, with the same
covariance, and ``{a : S(a) - min S <= 1.959964^2}`` (the chi-square(1) 95 % level). The
delta method linearises the fit at the estimate and does not see the ``n >= 0`` bound;
where the bound is active (a weak nugget pinned at 0, the slope OLS-like and low) the
misfit rises slowly above the estimate, as ``n`` can grow with ``a``, and the interval
extends there. It is asymmetric and always contains the value.

Validated for coverage on exact fBm (``tests/test_uncertainty.py``; docs/method.md).
Assumptions: Gaussian texture (non-Gaussian textures add a fourth-cumulant term), the
power law holding over
the whole ROI (a texture whose variogram saturates at long distances has less
long-range correlation, so the interval is then conservative), and, for ``"ols"``, no
noise: with noise the interval is about the OLS slope's expectation, which noise
lowers; ``snr`` says when that matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from tbscore.core.constants import PROFILE_INTERVAL_ESTIMATORS
from tbscore.core.estimators import SlopeFit, nugget_model
from tbscore.errors import ComputationError

__all__ = [
    "Uncertainty",
    "profile_interval",
    "slope_uncertainty",
    "variogram_covariance",
    "Z95",
    "SNR_WARN",
]

#: Two-sided 95 % normal quantile.
Z95 = 1.959963984540054
#: Below this texture-to-noise ratio the OLS slope is biased by more than ~15 %.
SNR_WARN = 3.0
#: Exponents at which the ``"nugget"`` profile misfit is evaluated: (0, 2] in steps of
#: 0.0025 (the interval's ends are then interpolated between two grid points).
PROFILE_GRID = np.linspace(0.0, 2.0, 801)[1:]


@dataclass(frozen=True)
class Uncertainty:
    """Uncertainty of one slope.

    Attributes
    ----------
    se : float
        Standard error (dimensionless, same units as the index).
    ci95 : (float, float) or None
        ``slope -/+ 1.96 se`` (``"ols"``, ``"increment"``; None when ``se`` is undefined,
        nan); for ``"nugget"`` the profile interval (:func:`profile_interval`), asymmetric,
        containing the value (None when it cannot be computed).
    snr : float
        Texture-to-noise ratio ``c d_min^a / n`` of the fitted noise model: texture
        variogram at the shortest lag over the white-noise variogram ``2 sigma^2``
        (``inf`` when no noise is detected).
    model : dict
        The covariance model ``{"c", "a", "n"}`` (``c`` and ``n`` in gray level squared,
        ``c`` at 1 mm).
    """

    se: float
    ci95: tuple[float, float] | None
    snr: float
    model: dict


def _pair_starts(mask: np.ndarray, lag: tuple[int, int]) -> np.ndarray:
    """Pixels ``x`` with ``x`` and ``x + lag`` both in ``mask``."""
    nr, nc = mask.shape
    dr, dc = int(lag[0]), int(lag[1])
    out = np.zeros_like(mask)
    if abs(dr) >= nr or abs(dc) >= nc:
        return out
    a = (slice(max(0, -dr), nr - max(0, dr)), slice(max(0, -dc), nc - max(0, dc)))
    b = (slice(max(0, dr), nr - max(0, -dr)), slice(max(0, dc), nc - max(0, -dc)))
    out[a] = mask[a] & mask[b]
    return out


@njit(cache=True, nogil=True, fastmath=True)
def _sum_sep(G, pad_r, pad_c, ki, kj, orow, ocol, nr, nc):  # pragma: no cover - compiled
    # sum_h orow[hr] * ocol[hc] * C(h)^2: pair-start sets that are full rectangles,
    # whose overlap counts factor into a row part and a column part.
    # The summand is even about s / 2, s = kj - ki: C(s - h) = C(h) (G is even) and the
    # overlap trapezoids of rectangles [max(0, -k), n - max(0, k)) are centred on s / 2
    # too. So the rows with 2 hr < s_r are summed twice, the middle row (2 hr = s_r)
    # once, the rest not at all: half the work of the full grid, the same sum.
    total = 0.0
    m = 2 * nc - 1
    oa = pad_c - (nc - 1) + ki[1]
    ob = pad_c - (nc - 1) - kj[1]
    oc = pad_c - (nc - 1) + ki[1] - kj[1]
    od = pad_c - (nc - 1)
    sr = kj[0] - ki[0]
    for ir in range(2 * nr - 1):
        side = 2 * (ir - (nr - 1)) - sr  # < 0: below the middle row, 0: the middle row
        if side > 0:
            break
        wr = orow[ir]
        if wr == 0.0:
            continue
        r0 = ir - (nr - 1) + pad_r
        # row slices indexed from 0: no negative-index checks, so the loop vectorises
        ga = G[r0 + ki[0], oa : oa + m]
        gb = G[r0 - kj[0], ob : ob + m]
        gc = G[r0 + ki[0] - kj[0], oc : oc + m]
        gd = G[r0, od : od + m]
        row = 0.0
        for ic in range(m):
            cc = ga[ic] + gb[ic] - gc[ic] - gd[ic]
            row += ocol[ic] * cc * cc
        total += (2.0 * wr if side < 0 else wr) * row
    return total


@njit(cache=True, nogil=True, fastmath=True)
def _sum_general(G, pad_r, pad_c, ki, kj, A, nr, nc):  # pragma: no cover - compiled
    total = 0.0
    for ir in range(2 * nr - 1):
        r0 = ir - (nr - 1) + pad_r
        m = 2 * nc - 1
        oa = pad_c - (nc - 1) + ki[1]
        ob = pad_c - (nc - 1) - kj[1]
        oc = pad_c - (nc - 1) + ki[1] - kj[1]
        od = pad_c - (nc - 1)
        ga = G[r0 + ki[0], oa : oa + m]
        gb = G[r0 - kj[0], ob : ob + m]
        gc = G[r0 + ki[0] - kj[0], oc : oc + m]
        gd = G[r0, od : od + m]
        w = A[ir]
        row = 0.0
        for ic in range(m):
            cc = ga[ic] + gb[ic] - gc[ic] - gd[ic]
            row += w[ic] * cc * cc
        total += row
    return total


@njit(cache=True, nogil=True)
def _semivariogram_grid(hr, hc, sr, sc, c, a, n):  # pragma: no cover - compiled
    # G[i, j] = gamma(h) = (c |h|^a + n) / 2 at h = ((i - hr) sr, (j - hc) sc) mm, 0 at
    # h = 0; |h| is symmetric in both signs, so one quadrant is computed and mirrored.
    G = np.empty((2 * hr + 1, 2 * hc + 1))
    ha = 0.5 * a
    square = sr == sc
    for i in range(hr + 1):
        y2 = (i * sr) ** 2
        for j in range(hc + 1):
            if square and j < i and i <= hc and j <= hr:
                g = G[hr + j, hc + i]  # square pixels: gamma(i, j) = gamma(j, i)
            else:
                # |h|^a as (|h|^2)^(a/2): one pow, no hypot (same value to ~1 ulp; |h|
                # is at most a few hundred mm, far from overflow)
                g = 0.5 * (c * (y2 + (j * sc) ** 2) ** ha + n)
            G[hr + i, hc + j] = g
            G[hr - i, hc + j] = g
            G[hr + i, hc - j] = g
            G[hr - i, hc - j] = g
    G[hr, hc] = 0.0
    return G


@njit(cache=True, nogil=True)
def _overlap_into(out, lo_i, hi_i, lo_j, hi_j, n):  # pragma: no cover - compiled
    # #{x in [lo_i, hi_i), y in [lo_j, hi_j): x - y = h} for h = -(n-1) .. n-1
    for m in range(2 * n - 1):
        h = m - (n - 1)
        v = min(hi_i, hi_j + h) - max(lo_i, lo_j + h)
        out[m] = float(v) if v > 0 else 0.0


@njit(cache=True, nogil=True)
def _box_pairs(lags, nr, nc):  # pragma: no cover - compiled
    # The pair-start sets of a full nr x nc rectangle ROI, one per lag: the rectangles
    # [max(0, -k), n - max(0, k)) per axis as iv[i] = (row lo, row hi, col lo, col hi),
    # their pixel counts, and each lag's mirror. The box and G are symmetric under the
    # column reflection (a, b) -> (a, -b), and V(k) = V(-k): Cov(V_i, V_j) =
    # Cov(V_mi, V_mj) for the mirror lags mi, mj (the diagonal and antidiagonal lags
    # swap, axis lags map to themselves; -1: no mirror in the set), so a pair whose
    # mirror pair is done is copied (about a third of the pairs at four directions).
    k = lags.shape[0]
    iv = np.empty((k, 4), np.int64)
    counts = np.empty(k)
    for i in range(k):
        lr, lc = lags[i, 0], lags[i, 1]
        iv[i, 0] = max(0, -lr)
        iv[i, 1] = nr - max(0, lr)
        iv[i, 2] = max(0, -lc)
        iv[i, 3] = nc - max(0, lc)
        counts[i] = float(max(iv[i, 1] - iv[i, 0], 0) * max(iv[i, 3] - iv[i, 2], 0))
    mirror = np.full(k, -1, np.int64)
    for i in range(k):
        a, b = lags[i, 0], -lags[i, 1]
        for j in range(k):
            if (lags[j, 0] == a and lags[j, 1] == b) or (lags[j, 0] == -a and lags[j, 1] == -b):
                mirror[i] = j
                break
    return iv, counts, mirror


@njit(cache=True, nogil=True)
def _cov_rect_reference(G, pad_r, pad_c, lags, nr, nc):  # pragma: no cover - compiled
    # the closed-form box path before _lag_diff (four G loads per cell): the reference
    # that tests/test_uncertainty.py compares _cov_rect with
    # every (i, j) pair of a full nr x nc rectangle ROI (_box_pairs), overlaps closed
    # form, then _sum_sep
    k = lags.shape[0]
    iv, counts, mirror = _box_pairs(lags, nr, nc)
    done = np.zeros((k, k), np.bool_)
    cov = np.zeros((k, k))
    orow = np.empty(2 * nr - 1)
    ocol = np.empty(2 * nc - 1)
    for i in range(k):
        if counts[i] <= 0.0:
            continue
        for j in range(i, k):
            if counts[j] <= 0.0 or done[i, j]:
                continue
            _overlap_into(orow, iv[i, 0], iv[i, 1], iv[j, 0], iv[j, 1], nr)
            _overlap_into(ocol, iv[i, 2], iv[i, 3], iv[j, 2], iv[j, 3], nc)
            s = _sum_sep(G, pad_r, pad_c, lags[i], lags[j], orow, ocol, nr, nc)
            cov[i, j] = 2.0 * s / (counts[i] * counts[j])
            cov[j, i] = cov[i, j]
            mi, mj = mirror[i], mirror[j]
            if mi >= 0 and mj >= 0:
                cov[mi, mj] = cov[mj, mi] = cov[i, j]
                done[mi, mj] = done[mj, mi] = True
    return cov


@njit(cache=True, nogil=True)
def _mask_box(mask):  # pragma: no cover - compiled
    # mask: a bool mask viewed as uint8 (0 / 1)
    # (first row, last row + 1, first col, last col + 1) of the True pixels, (0,0,0,0)
    # when there are none, and whether the box is all True (what mask.any per axis,
    # flatnonzero and .all() of the crop told, in one compiled call)
    nr, nc = mask.shape
    r0, r1, c0, c1 = nr, 0, nc, 0
    for r in range(nr):
        on = 0
        for q in range(nc):  # no branch: the empty rows' test vectorises
            on |= mask[r, q]
        if on == 0:
            continue
        first = 0
        while mask[r, first] == 0:
            first += 1
        last = first
        for q in range(nc - 1, first, -1):
            if mask[r, q] != 0:
                last = q
                break
        r0 = min(r0, r)
        r1 = r + 1
        c0 = min(c0, first)
        c1 = max(c1, last + 1)
    if r1 == 0:
        return 0, 0, 0, 0, False
    for r in range(r0, r1):
        for q in range(c0, c1):
            if mask[r, q] == 0:
                return r0, r1, c0, c1, False
    return r0, r1, c0, c1, True


@njit(cache=True, nogil=True)
def _cov_runs_reference(G, pad_r, pad_c, lags, runs, roff, counts, nr, nc, cov):  # pragma: no cover
    # the row-run path before _lag_diff (an A grid per pair, prefix sums along rows):
    # the reference that tests/test_uncertainty.py compares _cov_runs with
    # Every (i, j) pair of a general ROI from the row runs of its pair-start sets.
    # The cross-correlation of two runs [a, b) (row r of S_i) and [c, d) (row r' of
    # S_j) at column displacement t is the trapezoid max(0, min(b, d + t) - max(a, c + t))
    # = g(t - (a - d)) - g(t - (b - d)) - g(t - (a - c)) + g(t - (b - c)), g(u) =
    # max(u, 0): four unit impulses whose double running sum is the exact count, on
    # row r - r' of the displacement grid. A_ij is thus built exactly, in integers, at
    # a cost of 4 T_i T_j + O(grid) for T runs, then summed as the FFT path sums it.
    k = lags.shape[0]
    mr, mc = 2 * nr - 1, 2 * nc - 1
    S2 = np.empty((mr, mc + 2))
    A = np.empty((mr, mc))
    for i in range(k):
        if counts[i] <= 0.0:
            continue
        for j in range(i, k):
            if counts[j] <= 0.0:
                continue
            S2[:] = 0.0
            for p in range(roff[i], roff[i + 1]):
                r, a, b = runs[p, 0], runs[p, 1], runs[p, 2]
                for q in range(roff[j], roff[j + 1]):
                    row = r - runs[q, 0] + nr - 1
                    c, d = runs[q, 1], runs[q, 2]
                    S2[row, a - d + nc] += 1.0
                    S2[row, b - d + nc] -= 1.0
                    S2[row, a - c + nc] -= 1.0
                    S2[row, b - c + nc] += 1.0
            for row in range(mr):
                s1 = 0.0
                s2 = 0.0
                for m in range(mc):
                    s1 += S2[row, m]
                    s2 += s1
                    A[row, m] = s2
            s = _sum_general(G, pad_r, pad_c, lags[i], lags[j], A, nr, nc)
            cov[i, j] = 2.0 * s / (counts[i] * counts[j])
            cov[j, i] = cov[i, j]
    return cov


# -- the fast paths: one lag difference grid per lag, shared by all its pairs ---------
#
# C_ij(h) = gamma(h + k_i) + gamma(h - k_j) - gamma(h + k_i - k_j) - gamma(h)
#         = D_i(h) - D_i(h - k_j),   D_i(x) = gamma(x + k_i) - gamma(x),
# so D_i is built once per lag i (one pass over the grid) and every pair (i, j) reads
# two values per displacement instead of four (and takes the difference of the two
# close values first, which loses less to rounding than the four-term sum).


@njit(cache=True, nogil=True)
def _lag_diff(G, pad_r, pad_c, ki0, ki1, qr, qc, out, nrow):  # pragma: no cover - compiled
    # out = D_i on displacements x in [-qr, qr] x [-qc, qc]: out[qr + xr, qc + xc] =
    # G(x + k_i) - G(x), G centred at (pad_r, pad_c); needs qr + |ki0| <= pad_r and
    # qc + |ki1| <= pad_c. Only out's first nrow rows (xr < nrow - qr) are written: the
    # ones the caller reads (2 qr + 1: all). Called with G transposed (and the axes'
    # arguments swapped) it gives D_i transposed.
    m = 2 * qc + 1
    for u in range(nrow):
        gr = pad_r - qr + u
        ga = G[gr + ki0, pad_c - qc + ki1 : pad_c - qc + ki1 + m]
        gd = G[gr, pad_c - qc : pad_c - qc + m]
        o = out[u]
        for v in range(m):
            o[v] = ga[v] - gd[v]


@njit(cache=True, nogil=True, fastmath=True)
def _sum_sep_d(D, qr, qc, kj0, s_r, oa, ob, orow, wcol, n, nr):  # pragma: no cover
    # _sum_sep with C_ij(h) = D_i(h) - D_i(h - k_j) (D from _lag_diff, not transposed):
    # sum over the rows with 2 hr <= s_r (s = k_j - k_i; the summand is even about
    # s / 2), the rows below the middle twice; along a row, the n columns from D's
    # columns oa (for h) and ob (for h - k_j) with the column weights wcol (the column
    # overlaps, or their folded form: _fold_columns)
    total = 0.0
    for ir in range(2 * nr - 1):
        side = 2 * (ir - (nr - 1)) - s_r
        if side > 0:
            break
        wr = orow[ir]
        if wr == 0.0:
            continue
        r = ir - (nr - 1) + qr
        da = D[r, oa : oa + n]
        db = D[r - kj0, ob : ob + n]
        row = 0.0
        for ic in range(n):
            cc = da[ic] - db[ic]
            row += wcol[ic] * cc * cc
        total += (2.0 * wr if side < 0 else wr) * row
    return total


@njit(cache=True, nogil=True)
def _fold_columns(ocol, s_c, wcol):  # pragma: no cover - compiled
    # Column weights of a pair whose summand is even about s_c / 2 along the columns
    # (index t / 2, t = s_c + m - 1 for m = len(ocol) columns): the columns below the
    # middle weighted twice, the middle once, the rest dropped; returns how many of
    # wcol's leading columns to sum
    m = ocol.shape[0]
    t = s_c + m - 1
    n_lo = min(max((t + 1) // 2, 0), m)  # columns with 2 index < t
    for ic in range(n_lo):
        wcol[ic] = 2.0 * ocol[ic]
    if t % 2 == 0 and 0 <= t // 2 < m:
        wcol[t // 2] = ocol[t // 2]
        return t // 2 + 1
    return n_lo


@njit(cache=True, nogil=True)
def _cov_rect(G, pad_r, pad_c, lags, nr, nc):  # pragma: no cover - compiled
    # _cov_rect_reference (same pairs, same mirror copies) with one _lag_diff grid per
    # lag i, built only when a pair (i, j) is left to sum
    k = lags.shape[0]
    iv, counts, mirror = _box_pairs(lags, nr, nc)
    mr, mc = 0, 0
    for i in range(k):
        mr = max(mr, abs(lags[i, 0]))
        mc = max(mc, abs(lags[i, 1]))
    # Both lags on an axis ((a, 0) or (0, b)): with s = k_j - k_i, reflecting the
    # columns about s_c / 2 maps C_ij to +-C_ij (G is even along each axis), and the
    # column overlaps are centred on s_c / 2 as well, so the columns fold in two too.
    on_axis = np.empty(k, np.bool_)
    for i in range(k):
        on_axis[i] = lags[i, 0] == 0 or lags[i, 1] == 0
    qr, qc = nr - 1 + mr, nc - 1 + mc
    D = np.empty((2 * qr + 1, 2 * qc + 1))
    # _sum_sep_d reads D's rows mr .. qr + mr only (rows with 2 hr <= s_r, s_r <= 2 mr,
    # and those kj0 rows lower): the rows past them are never built (~40 % of D)
    nrow = qr + mr + 1
    done = np.zeros((k, k), np.bool_)
    cov = np.zeros((k, k))
    orow = np.empty(2 * nr - 1)
    ocol = np.empty(2 * nc - 1)
    wcol = np.empty(2 * nc - 1)
    for i in range(k):
        if counts[i] <= 0.0:
            continue
        built = False
        for j in range(i, k):
            if counts[j] <= 0.0 or done[i, j]:
                continue
            if not built:
                _lag_diff(G, pad_r, pad_c, lags[i, 0], lags[i, 1], qr, qc, D, nrow)
                built = True
            _overlap_into(orow, iv[i, 0], iv[i, 1], iv[j, 0], iv[j, 1], nr)
            _overlap_into(ocol, iv[i, 2], iv[i, 3], iv[j, 2], iv[j, 3], nc)
            if on_axis[i] and on_axis[j]:
                n = _fold_columns(ocol, lags[j, 1] - lags[i, 1], wcol)
                w = wcol
            else:
                n, w = 2 * nc - 1, ocol
            oa = qc - (nc - 1)
            s = _sum_sep_d(
                D, qr, qc, lags[j, 0], lags[j, 0] - lags[i, 0], oa, oa - lags[j, 1], orow, w, n, nr
            )
            cov[i, j] = 2.0 * s / (counts[i] * counts[j])
            cov[j, i] = cov[i, j]
            mi, mj = mirror[i], mirror[j]
            if mi >= 0 and mj >= 0:
                cov[mi, mj] = cov[mj, mi] = cov[i, j]
                done[mi, mj] = done[mj, mi] = True
    return cov


@njit(cache=True, nogil=True, fastmath=True)
def _runs_pair_sum(S2T, DT, qr, qc, kj0, kj1, nr, nc, s1, s2, same):  # pragma: no cover
    # sum_h A_ij(h) C_ij(h)^2 from the impulses S2T (transposed: S2T[column index,
    # row displacement]) and DT = D_i transposed, column by column: the two running
    # sums that turn the impulses into A (exact, small integers) advance for all row
    # displacements at once, in vector loops (along a row they are a serial chain),
    # and the impulses read are cleared for the next pair. same (i = j): A_ii and
    # C_ii are even in h, so the columns left of the middle (t = 0) count twice, the
    # middle once and the rest are not summed.
    mr, mc = 2 * nr - 1, 2 * nc - 1
    s1[:] = 0.0
    s2[:] = 0.0
    oa = qr - (nr - 1)
    ob = oa - kj0
    total = 0.0
    for m in range(nc if same else mc):
        x = m - (nc - 1) + qc
        imp = S2T[m]
        for r in range(mr):
            s1[r] += imp[r]
        for r in range(mr):
            s2[r] += s1[r]
        imp[:] = 0.0
        da = DT[x, oa : oa + mr]
        db = DT[x - kj1, ob : ob + mr]
        col = 0.0
        for r in range(mr):
            cc = da[r] - db[r]
            col += s2[r] * cc * cc
        total += 2.0 * col if same and m < nc - 1 else col
    S2T[nc if same else mc :] = 0.0  # impulses past the last column summed: cleared
    return total


@njit(cache=True, nogil=True)
def _cov_runs(G, pad_r, pad_c, lags, runs, roff, counts, nr, nc, cov):  # pragma: no cover
    # _cov_runs_reference with the impulses stored transposed, A never stored (its two
    # running sums fused into _runs_pair_sum) and one _lag_diff grid per lag i
    k = lags.shape[0]
    mr, mc = 2 * nr - 1, 2 * nc - 1
    lr, lc = 0, 0
    for i in range(k):
        lr = max(lr, abs(lags[i, 0]))
        lc = max(lc, abs(lags[i, 1]))
    qr, qc = nr - 1 + lr, nc - 1 + lc
    GT = np.ascontiguousarray(G.T)
    DT = np.empty((2 * qc + 1, 2 * qr + 1))
    flat = np.zeros((mc + 2) * mr)  # the impulses, written through flat indices
    S2T = flat.reshape((mc + 2, mr))
    s1 = np.empty(mr)
    s2 = np.empty(mr)
    # flat index of the impulse at (column a - d + nc, row r - r' + nr - 1) is
    # base(a, r) - off(d, r'), base(a, r) = (a + nc) mr + r + nr - 1, off(d, r') = d mr + r'
    nrun = runs.shape[0]
    off_end = np.empty(nrun, np.int64)
    off_start = np.empty(nrun, np.int64)
    for q in range(nrun):
        off_end[q] = runs[q, 2] * mr + runs[q, 0]
        off_start[q] = runs[q, 1] * mr + runs[q, 0]
    for i in range(k):
        if counts[i] <= 0.0:
            continue
        built = False
        for j in range(i, k):
            if counts[j] <= 0.0:
                continue
            if not built:
                _lag_diff(GT, pad_c, pad_r, lags[i, 1], lags[i, 0], qc, qr, DT, 2 * qc + 1)
                built = True
            for p in range(roff[i], roff[i + 1]):
                r, a, b = runs[p, 0], runs[p, 1], runs[p, 2]
                base_a = (a + nc) * mr + r + nr - 1
                base_b = (b + nc) * mr + r + nr - 1
                for q in range(roff[j], roff[j + 1]):
                    oe, os = off_end[q], off_start[q]
                    flat[base_a - oe] += 1.0
                    flat[base_b - oe] -= 1.0
                    flat[base_a - os] -= 1.0
                    flat[base_b - os] += 1.0
            s = _runs_pair_sum(S2T, DT, qr, qc, lags[j, 0], lags[j, 1], nr, nc, s1, s2, i == j)
            cov[i, j] = 2.0 * s / (counts[i] * counts[j])
            cov[j, i] = cov[i, j]
    return cov


@njit(cache=True, nogil=True)
def _lag_runs(mask, lags):  # pragma: no cover - compiled
    # Row runs (row, first col, last col + 1) of every lag's pair-start set
    # (x and x + lag both in the mask), concatenated, with offsets and pixel counts.
    nr, nc = mask.shape
    k = lags.shape[0]
    roff = np.zeros(k + 1, np.int64)
    counts = np.zeros(k)
    for fill in range(2):
        if fill:
            runs = np.empty((roff[k], 3), np.int64)
        t = 0
        for i in range(k):
            dr, dc = lags[i, 0], lags[i, 1]
            npx = 0
            for r in range(max(0, -dr), min(nr, nr - dr)):
                inside = False
                for q in range(max(0, -dc), min(nc, nc - dc) + 1):
                    on = q < min(nc, nc - dc) and mask[r, q] and mask[r + dr, q + dc]
                    if on and not inside:
                        if fill:
                            runs[t, 0] = r
                            runs[t, 1] = q
                        inside = True
                    elif inside and not on:
                        if fill:
                            runs[t, 2] = q
                        t += 1
                        inside = False
                    if on:
                        npx += 1
            counts[i] = npx
            if not fill:
                roff[i + 1] = t
    return runs, roff, counts


#: Run path chosen while sum over pairs of T_i T_j <= RUNS_PER_CELL * pairs * grid cells
#: (T: runs of a pair-start set; grid: the (2 rows - 1)(2 cols - 1) displacements): below
#: it four impulses per run pair cost less than one FFT cross-correlation per pair (the
#: two cost the same at a ratio of ~3-6 on 30 x 45 to 120 x 160 random masks, 10 and 20
#: lags: ``benchmarks/bench_covariance.py``; detected rounded ROIs are at ~0.2-0.5).
RUNS_PER_CELL = 2.5


def variogram_covariance(
    mask: np.ndarray,
    lags: np.ndarray,
    spacing_mm: tuple[float, float],
    c: float,
    a: float,
    n: float,
    *,
    method: str = "auto",
    full: bool | None = None,
) -> np.ndarray:
    """Covariance of the experimental variogram under the model ``V = c d^a + n``.

    Parameters
    ----------
    mask : ndarray of bool, shape (rows, cols)
        The ROI.
    lags : ndarray of int, shape (k, 2)
        Lag vectors ``(d_row, d_col)`` (pixels).
    spacing_mm : (float, float)
        ``(row_mm, col_mm)``.
    c : float
        Texture variogram at 1 mm (gray level squared).
    a : float
        Exponent, in (0, 2].
    n : float
        Nugget (gray level squared), ``>= 0``.
    method : {"auto", "runs", "fft"}
        How the pair-start cross-correlations ``A_ij`` are counted; all three give the
        same exact quantity. ``"auto"``: closed form for a full rectangle, else row runs
        when the masks have few runs (:data:`RUNS_PER_CELL`), else FFT. ``"runs"`` and
        ``"fft"`` force one path (for tests and benchmarks).
    full : bool, optional
        ``True``: the caller knows that every pixel of ``mask`` is set (a solid box
        ROI cropped to its box), so the mask's box is not searched for. ``None``:
        found here.

    Returns
    -------
    ndarray, shape (k, k)
        ``Cov(V_i, V_j)`` (gray level to the fourth).
    """
    mask = np.asarray(mask, dtype=bool)
    if not (full is True and mask.ndim == 2 and mask.size):  # else: its own box
        r0, r1, c0, c1, full = _mask_box(mask.view(np.uint8))
        if r1 == 0:
            raise ComputationError("the ROI mask is empty: no variogram covariance")
        mask = mask[r0:r1, c0:c1]
    if method not in ("auto", "runs", "fft"):
        raise ValueError(f"unknown method {method!r}")
    lags = np.asarray(lags, dtype=np.int64).reshape(-1, 2)
    nr, nc = mask.shape
    k = lags.shape[0]
    # twice the longest lag component per axis (a Python max over the few lags costs
    # less than np.abs(lags).max(axis=0) and its reduction machinery; map, not a
    # generator: no Python frame per lag)
    lag_rows, lag_cols = lags.T.tolist()
    pr = 2 * max(map(abs, lag_rows), default=0)
    pc = 2 * max(map(abs, lag_cols), default=0)
    pad_r, pad_c = nr - 1 + pr, nc - 1 + pc
    G = _semivariogram_grid(pad_r, pad_c, float(spacing_mm[0]), float(spacing_mm[1]), c, a, n)
    if method == "auto" and full:
        # Full rectangle: pair-start sets are rectangles, counts and overlaps are closed
        # form, and every pair is summed in one compiled call.
        return _cov_rect(G, pad_r, pad_c, lags, nr, nc)
    cov = np.zeros((k, k))
    runs, roff, counts = _lag_runs(np.ascontiguousarray(mask), lags)  # one specialisation
    t = np.diff(roff).astype(float)
    live = counts > 0
    npairs = live.sum() * (live.sum() + 1) / 2
    run_cost = (np.sum(t[live]) ** 2 + np.sum(t[live] ** 2)) / 2
    cheap = run_cost <= RUNS_PER_CELL * npairs * (2 * nr - 1) * (2 * nc - 1)
    if method == "runs" or (method == "auto" and cheap):
        # Few runs (convex or rounded ROIs, rectangles less corners or small holes):
        # exact overlaps from the runs, all pairs in one compiled call.
        return _cov_runs(G, pad_r, pad_c, lags, runs, roff, counts, nr, nc, cov)
    import scipy.fft as sfft  # only many-run masks need it (a worker on boxes never does)

    starts = [_pair_starts(mask, tuple(lag)) for lag in lags]
    shape = (sfft.next_fast_len(2 * nr - 1), sfft.next_fast_len(2 * nc - 1))
    spectra = [sfft.rfft2(s.astype(float), shape) for s in starts]
    pairs = [(i, j) for i in range(k) for j in range(i, k) if counts[i] > 0 and counts[j] > 0]
    spectra = np.stack(spectra)
    chunk = max(1, int(2e7 // (shape[0] * shape[1])))  # bound the batch to ~160 MB
    for start in range(0, len(pairs), chunk):
        batch = pairs[start : start + chunk]
        ii = np.array([p[0] for p in batch])
        jj = np.array([p[1] for p in batch])
        A = sfft.irfft2(spectra[ii] * np.conj(spectra[jj]), shape, axes=(-2, -1))
        # index m of the cross-correlation is the displacement m - (n - 1), circularly
        A = np.roll(A, (nr - 1, nc - 1), axis=(1, 2))[:, : 2 * nr - 1, : 2 * nc - 1]
        A = np.rint(A)
        for t, (i, j) in enumerate(batch):
            s = _sum_general(G, pad_r, pad_c, lags[i], lags[j], A[t], nr, nc)
            cov[i, j] = cov[j, i] = 2.0 * s / (counts[i] * counts[j])
    return cov


def _profile_misfit(
    a: np.ndarray, distances_mm: np.ndarray, values: np.ndarray, cov: np.ndarray
) -> np.ndarray:
    """``S(a) = min_{c >= 0, n >= 0} r' Cov^+ r``, ``r = V - c d^a - n``, for each ``a``.

    ``Cov^+`` is the pseudo-inverse (eigenvalues below 1e-9 of the largest dropped: a
    combination of the ``V`` that the model says is exact carries no weight). ``c`` and
    ``n`` are closed form: both free where both come out ``>= 0``, else the better of
    ``n = 0`` and ``c = 0`` (a non-negative least-squares problem in two unknowns).
    ``inf`` where undefined.
    """
    scale = float(np.max(values))
    lam, u = np.linalg.eigh(np.asarray(cov, dtype=float) / scale**2)
    keep = lam > 1e-9 * lam.max() if lam.size and lam.max() > 0 else np.zeros(lam.size, bool)
    wh = (u[:, keep] / np.sqrt(lam[keep])).T  # whitening: wh' wh = Cov^+
    y = wh @ (np.asarray(values, dtype=float) / scale)
    o = wh.sum(axis=1)
    p = np.exp(np.multiply.outer(a, np.log(distances_mm))) @ wh.T  # (A, rank)
    spp, spo, spy = (p * p).sum(-1), p @ o, p @ y
    soo, soy, syy = float(o @ o), float(o @ y), float(y @ y)
    with np.errstate(divide="ignore", invalid="ignore"):
        det = spp * soo - spo * spo
        c = (spy * soo - soy * spo) / det
        n = (spp * soy - spo * spy) / det
        both = syy - c * spy - n * soy
        c_only = syy - np.maximum(spy, 0.0) ** 2 / spp  # n = 0, c >= 0
    n_only = syy - max(soy, 0.0) ** 2 / soo if soo > 0 else syy  # c = 0, n >= 0
    s = np.where((c >= 0) & (n >= 0) & (det > 0), both, np.minimum(c_only, n_only))
    return np.where(np.isfinite(s), s, np.inf)


def profile_interval(
    distances_mm: np.ndarray,
    values: np.ndarray,
    cov: np.ndarray,
    value: float,
) -> tuple[float, float] | None:
    """95 % profile interval of the exponent ``a`` of ``V = c d^a + n`` (``"nugget"``).

    ``{a in (0, 2] : S(a) - min S <= Z95^2}`` with ``S`` the generalised least-squares
    misfit of the model under the variogram's covariance, ``c >= 0`` and ``n >= 0``
    profiled out (:func:`_profile_misfit`), evaluated on :data:`PROFILE_GRID` with the
    ends interpolated linearly between grid points; the hull of the set when it is not
    one piece, widened to contain ``value`` (the least-squares estimate, which weights
    the lags differently, can lie just outside it).

    Parameters
    ----------
    distances_mm : ndarray, shape (k,)
        Lag lengths (mm).
    values : ndarray, shape (k,)
        Experimental variogram (gray level squared).
    cov : ndarray, shape (k, k)
        Its covariance (gray level to the fourth; :func:`variogram_covariance` at the
        fitted model).
    value : float
        The reported exponent (dimensionless).

    Returns
    -------
    (float, float) or None
        ``(lo, hi)`` (dimensionless), None when the misfit is undefined everywhere.
    """
    grid = PROFILE_GRID
    s = _profile_misfit(grid, np.asarray(distances_mm, float), np.asarray(values, float), cov)
    if not np.isfinite(s).any():
        return None
    excess = s - s.min() - Z95 * Z95  # <= 0 inside
    inside = np.flatnonzero(excess <= 0)
    i, j = int(inside[0]), int(inside[-1])

    def cross(k: int, out: int) -> float:  # where excess crosses 0 between k and out
        e0, e1 = excess[k], excess[out]
        t = -e0 / (e1 - e0) if np.isfinite(e1) and e1 > e0 else 0.0
        return float(grid[k] + t * (grid[out] - grid[k]))

    lo = cross(i, i - 1) if i > 0 else 0.0  # the set reaches the grid's first point
    hi = cross(j, j + 1) if j < grid.size - 1 else float(grid[-1])
    return min(lo, float(value)), max(hi, float(value))


def slope_uncertainty(
    fit: SlopeFit,
    mask: np.ndarray,
    lags: np.ndarray,
    distances_mm: np.ndarray,
    values: np.ndarray,
    spacing_mm: tuple[float, float],
    *,
    full: bool | None = None,
) -> Uncertainty:
    """Standard error, 95 % interval and texture-to-noise ratio of a fitted slope.

    Parameters
    ----------
    fit : SlopeFit
        The estimator's fit (its ``gradient`` is used).
    mask : ndarray of bool
        The ROI.
    lags, distances_mm, values : ndarray
        The usable lags (pixels), their lengths (mm) and ``V`` (gray level squared),
        as given to the estimator.
    spacing_mm : (float, float)
    full : bool, optional
        ``True`` when every pixel of ``mask`` is set (:func:`variogram_covariance`).

    Returns
    -------
    Uncertainty
    """
    try:
        # the noise model's parameters; its gradient only when it is the estimator
        ln_c, a, n = (
            (fit.intercept, fit.slope, fit.nugget)
            if fit.estimator == "nugget"
            else nugget_model(distances_mm, values)
        )
        c, n = math.exp(ln_c), max(n, 0.0)
    except ValueError:
        # No noise model fits (fewer than three lags, or V does not rise with the lag):
        # the estimator's own power law, without noise, when it is one.
        if not (0.0 < fit.slope <= 2.0 and math.isfinite(fit.intercept)):
            return Uncertainty(math.nan, None, math.nan, {})
        c, a, n = math.exp(fit.intercept), fit.slope, 0.0
    # the shortest lag (Python's min of the lengths: np.min's value for finite ones, as
    # they are wherever a noise model fitted, n > 0)
    snr = c * min(np.asarray(distances_mm, float).ravel().tolist()) ** a / n if n > 0 else math.inf
    cov = variogram_covariance(mask, lags, spacing_mm, c, a, n, full=full)
    g = np.asarray(fit.gradient, dtype=float)
    var = float(g @ cov @ g)
    se = math.sqrt(var) if var > 0 and math.isfinite(var) else math.nan
    if fit.estimator in PROFILE_INTERVAL_ESTIMATORS:
        ci = profile_interval(distances_mm, values, cov, fit.slope)
    else:
        ci = (fit.slope - Z95 * se, fit.slope + Z95 * se) if math.isfinite(se) else None
    return Uncertainty(se=se, ci95=ci, snr=snr, model={"c": c, "a": a, "n": n})
