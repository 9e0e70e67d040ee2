"""Compiled loops of the L1-L4 detector (:mod:`tbscore.core.detect`), issue 14.

Each kernel computes *the same numbers* as the numpy code it replaces, which stays in
:mod:`tbscore.core.detect` as the ``_reference`` version and is the oracle of the
property tests (``tests/test_detect_kernels.py``): same formulas, same order of the
floating-point operations, including numpy's own summation orders

* ``a.sum(axis=1)`` along a row: ``0 + pairwise(row)`` (:func:`_pairwise`, numpy's
  eight-accumulator pairwise sum);
* ``a.sum(axis=0)`` over the rows of a C-contiguous array: row by row;
* ``np.add.reduceat(a, idx, axis=0)``: the first row plus the pairwise sum of the
  others, per column;
* ``np.arange(start, stop, step)`` for floats: ``start + i * delta`` with
  ``delta = (start + step) - start`` (:func:`_arange`).

The entry points (the functions :mod:`tbscore.core.detect` calls) are compiled with
``cache=True`` (a one-time compile per machine, loaded from the cache afterwards;
:func:`tbscore.batch.worker.warm_up` loads them into the batch fork server) and
``nogil``; the helpers are compiled into them (see the note below).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numba.extending import register_jitable

_PW_BLOCK = 128  # numpy's PW_BLOCKSIZE

# Plain loops throughout: numba compiles whole-array expressions, boolean indexing and
# its own np.sort / np.median much more slowly (the one-time compile of a cold cache).

# Only the entry points (the functions :mod:`tbscore.core.detect` calls) are numba
# dispatchers cached on disk with a CPython wrapper (h14o). The helpers they call are
# lazy dispatchers without a CPython wrapper or an eager signature (``_shared``):
# compiled into their callers on a cold cache, never loaded on a warm one (h14l's 16
# explicit signatures were loaded at import although their callers carry their code).
# The helpers called with a constant argument (``0``, ``True``: ``_pairwise``,
# ``_band_profiles``, ``_gradient``, ``_scipy_linear``; ``_insertion_sort``, whose
# count numba's type inference passes as the literal 0 first) are ``register_jitable``
# instead, which types a constant as a plain integer / boolean first (one
# specialisation, not a literal one as well, as h14l's signatures ensured); numba
# compiles those once per caller's flags, and ``_shared`` has register_jitable's flags.
# The tests reach a helper through a small ``njit`` wrapper.
_shared = njit(cache=True, no_cpython_wrapper=True)  # register_jitable's flags


@register_jitable  # a counter from 0 may reach it typed as the literal 0 first
def _insertion_sort(a, n):
    """Sort ``a[:n]`` in place (a few values)."""
    for i in range(1, n):
        v = a[i]
        j = i - 1
        while j >= 0 and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v


@_shared
def _heap_sort(a, n):
    """Sort ``a[:n]`` in place (no NaN), O(n log n): heap construction, then the
    maximum moved to the end; one sift-down loop for both phases."""
    start = n // 2
    end = n
    while end > 1:
        if start > 0:  # building the heap
            start -= 1
        else:  # the root (maximum) to the end, the last leaf to the root
            end -= 1
            a[0], a[end] = a[end], a[0]
        root = start
        while True:
            child = 2 * root + 1
            if child >= end:
                break
            if child + 1 < end and a[child + 1] > a[child]:
                child += 1
            if a[root] >= a[child]:
                break
            a[root], a[child] = a[child], a[root]
            root = child


@_shared
def _nth(a, n, k):
    """The ``k``-th smallest (0-based) of ``a[:n]`` (no NaN), reordering ``a[:n]`` so
    that ``a[:k] <= a[k] <= a[k + 1 : n]`` (Hoare's FIND with a median-of-three pivot
    value; ranges of up to 16 values are sorted; after 64 rounds the range left is
    heap-sorted, so the worst case stays O(n log n)). Comparisons and swaps only: the
    value is that of a sort."""
    lo = 0
    hi = n - 1
    rounds = 0
    while hi - lo >= 16:
        rounds += 1
        if rounds > 64:
            sub = a[lo : hi + 1]
            _heap_sort(sub, hi + 1 - lo)
            return a[k]
        x = a[lo]
        y = a[(lo + hi) // 2]
        z = a[hi]
        # the median of the three values: a pivot value present in a[lo : hi + 1]
        if x > y:
            x, y = y, x
        if y > z:
            y = z
        pivot = y if y > x else x
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while pivot < a[j]:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        # a[lo : j + 1] <= pivot <= a[i : hi + 1], a[j + 1 : i] == pivot
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return a[k]
    for p in range(lo + 1, hi + 1):  # insertion sort of the last range
        v = a[p]
        q = p - 1
        while q >= lo and a[q] > v:
            a[q + 1] = a[q]
            q -= 1
        a[q + 1] = v
    return a[k]


@_shared
def _pairwise_block(a, start, n, stride):
    """numpy's ``pairwise_sum_DOUBLE`` of ``a[start + k * stride]``, ``k < n <= 128``."""
    if n < 8:
        res = 0.0
        for k in range(n):
            res += a[start + k * stride]
        return res
    r0 = a[start]
    r1 = a[start + stride]
    r2 = a[start + 2 * stride]
    r3 = a[start + 3 * stride]
    r4 = a[start + 4 * stride]
    r5 = a[start + 5 * stride]
    r6 = a[start + 6 * stride]
    r7 = a[start + 7 * stride]
    i = 8
    end = n - n % 8
    while i < end:
        p = start + i * stride
        r0 += a[p]
        r1 += a[p + stride]
        r2 += a[p + 2 * stride]
        r3 += a[p + 3 * stride]
        r4 += a[p + 4 * stride]
        r5 += a[p + 5 * stride]
        r6 += a[p + 6 * stride]
        r7 += a[p + 7 * stride]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[start + i * stride]
        i += 1
    return res


@register_jitable
def _pairwise(a, start, n, stride):
    """numpy's ``pairwise_sum_DOUBLE`` of ``a[start + k * stride]``, ``k < n``: blocks of
    at most 128 (``PW_BLOCKSIZE``) as above; a longer run is split at
    ``n2 = n // 2 - (n // 2) % 8`` and its halves added. The recursion runs on an
    explicit stack (numba's cache does not reload recursive functions safely)."""
    if n <= _PW_BLOCK:  # before the stack's allocations (most calls)
        return _pairwise_block(a, start, n, stride)
    depth = 64
    st_start = np.empty(depth, np.int64)
    st_n = np.empty(depth, np.int64)
    st_state = np.empty(depth, np.int64)  # 0: not expanded, 1: left half summed
    st_left = np.empty(depth)
    top = 0
    st_start[0], st_n[0], st_state[0] = start, n, 0
    result = 0.0
    while top >= 0:
        s0, m = st_start[top], st_n[top]
        if m <= _PW_BLOCK:
            val = _pairwise_block(a, s0, m, stride)
            top -= 1
            # hand the value to the parent
            while top >= 0:
                if st_state[top] == 1:  # this was the left half: now the right one
                    st_left[top] = val
                    st_state[top] = 2
                    m2 = st_n[top] // 2
                    m2 -= m2 % 8
                    top += 1
                    st_start[top] = st_start[top - 1] + m2 * stride
                    st_n[top] = st_n[top - 1] - m2
                    st_state[top] = 0
                    break
                val = st_left[top] + val  # both halves done
                top -= 1
            else:
                result = val
            continue
        m2 = m // 2
        m2 -= m2 % 8
        st_state[top] = 1
        top += 1
        st_start[top], st_n[top], st_state[top] = s0, m2, 0
    return result


@_shared
def _arange(start, stop, step):
    """``np.arange(start, stop, step)`` for floats, to the last bit."""
    n = int(math.ceil((stop - start) / step))
    if n <= 0:
        return np.empty(0)
    out = np.empty(n)
    out[0] = start
    if n > 1:
        out[1] = start + step
        delta = out[1] - out[0]
        for i in range(2, n):
            out[i] = start + i * delta
    return out


@_shared
def _search_left(a, x):
    """``np.searchsorted(a, x, "left")`` of a sorted, NaN-free ``a``."""
    lo, hi = 0, a.size
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_shared
def _search_right(a, x):
    """``np.searchsorted(a, x, "right")``."""
    lo, hi = 0, a.size
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_shared
def _bands(across, centre, half, f0, f1, fm):
    """``detect._bands``: band index ranges ``[lo, hi)`` and band centres."""
    nb = f0.size
    lo = np.empty(nb, np.int64)
    hi = np.empty(nb, np.int64)
    mid = np.empty(nb)
    for b in range(nb):
        lo[b] = _search_left(across, centre + f0[b] * half)
        hi[b] = max(_search_right(across, centre + f1[b] * half), lo[b])
        mid[b] = centre + fm[b] * half
    return lo, hi, mid


@_shared
def _grid_point(cy, cx, ca, sa, u, v, sy, sx):
    """Pixel coordinates ``(r, c)`` of the point ``(u, v)`` (mm) of the body frame around
    ``(cy, cx)`` turned by the angle of cosine ``ca`` and sine ``sa``
    (``detect._grid_coords``'s arithmetic)."""
    return (cy + u * ca - v * sa) / sy, (cx + u * sa + v * ca) / sx


@_shared
def _bilinear_cell(f, nx, k, wr1, wc1):
    """The bilinear value in the cell whose top-left pixel is ``f[k]``, at the fractions
    ``wr1`` (down) and ``wc1`` (right): ``detect._bilinear``'s products and sums."""
    wr0 = 1.0 - wr1
    wc0 = 1.0 - wc1
    acc = f[k] * wr0 * wc0
    acc += f[k + 1] * wr0 * wc1
    acc += f[k + nx] * wr1 * wc0
    acc += f[k + nx + 1] * wr1 * wc1
    return acc


@_shared
def _bilinear_at(f, ny, nx, r, c):
    """``detect._bilinear`` at one point ``(r, c)`` of the image ``f`` (raveled
    ``ny`` x ``nx``): NaN outside ``[0, n - 1]``; at the last row / column the cell
    one earlier with weight 1 on the far corner."""
    ymax = ny - 1.0
    xmax = nx - 1.0
    if not (r >= 0.0 and r <= ymax and c >= 0.0 and c <= xmax):
        return np.nan
    r0 = math.floor(r)
    c0 = math.floor(c)
    wr1 = r - r0
    wc1 = c - c0
    if r0 >= ymax:
        wr1 = 1.0
        r0 -= 1.0
    if c0 >= xmax:
        wc1 = 1.0
        c0 -= 1.0
    return _bilinear_cell(f, nx, int(r0 * nx + c0), wr1, wc1)


@_shared
def _grid_in_cells(cy, cx, ca, sa, u, v, sy, sx, ymax, xmax):
    """Whether every point of the grid ``u`` x ``v`` (:func:`_grid_point`) lies in
    ``[0, ymax) x [0, xmax)``, where :func:`_bilinear_at` needs no border handling.
    The coordinates are a rounded affine map of the grid indices, monotone along both
    axes (each rounding is), so their extremes are at the four corners."""
    nu, nv = u.size, v.size
    if nu == 0 or nv == 0:
        return True
    for i, j in ((0, 0), (0, nv - 1), (nu - 1, 0), (nu - 1, nv - 1)):
        r, c = _grid_point(cy, cx, ca, sa, u[i], v[j], sy, sx)
        if not (r >= 0.0 and r < ymax and c >= 0.0 and c < xmax):
            return False
    return True


@_shared
def _sample_grid(img, cy, cx, angle_deg, u, v, sy, sx):
    """``detect._bilinear(img, *detect._grid_coords(...), grid=True)``: the bilinear
    samples (NaN outside) of the rotated grid ``u`` x ``v`` (mm) around ``(cy, cx)``;
    a grid inside the image's cells skips the border tests (the same values)."""
    ny, nx = img.shape
    f = img.ravel()
    a = angle_deg * (math.pi / 180.0)
    ca = math.cos(a)
    sa = math.sin(a)
    nu, nv = u.size, v.size
    out = np.empty((nu, nv))
    if _grid_in_cells(cy, cx, ca, sa, u, v, sy, sx, ny - 1.0, nx - 1.0):
        for i in range(nu):
            for j in range(nv):
                r, c = _grid_point(cy, cx, ca, sa, u[i], v[j], sy, sx)
                r0 = math.floor(r)
                c0 = math.floor(c)
                out[i, j] = _bilinear_cell(f, nx, int(r0 * nx + c0), r - r0, c - c0)
        return out
    for i in range(nu):
        for j in range(nv):
            r, c = _grid_point(cy, cx, ca, sa, u[i], v[j], sy, sx)
            out[i, j] = _bilinear_at(f, ny, nx, r, c)
    return out


@register_jitable
def _band_profiles(sub, lo, hi, first, axis):
    """``detect._band_profiles(sub, lo, hi, first, axis)``: the mean over the rows
    (``axis`` 0; ``np.add.reduceat`` for adjacent bands: the first row plus the pairwise
    sum of the others) or the columns (``axis`` 1; numpy's pairwise sum along a row) of
    each band, finite values only, one band per row of the result. One kernel for both
    directions (one compile)."""
    nb = lo.size
    m, nc = sub.shape
    finite = True
    for i in range(m):
        for j in range(nc):
            if not math.isfinite(sub[i, j]):
                finite = False
    flat = sub.ravel()
    if axis == 0:
        out = np.empty((nb, nc))
        adjacent = finite and lo[0] == first and hi[nb - 1] == first + m
        for b in range(nb):
            if hi[b] - lo[b] <= 0 or (b > 0 and lo[b] != hi[b - 1]):
                adjacent = False
        acc = np.empty(nc)
        for b in range(nb):
            a0 = lo[b] - first
            b0 = hi[b] - first
            if adjacent and b0 - a0 - 1 < 8:
                # np.add.reduceat of a band of at most 8 rows: the first row plus the sum
                # of the others, which numpy's pairwise sum adds in order from 0.0 below
                # 8 values; row by row for all columns at once
                for j in range(nc):
                    acc[j] = 0.0
                for i in range(a0 + 1, b0):
                    for j in range(nc):
                        acc[j] += sub[i, j]
                for j in range(nc):
                    out[b, j] = (sub[a0, j] + acc[j]) / (b0 - a0)
                continue
            for j in range(nc):
                if adjacent:  # np.add.reduceat
                    s = sub[a0, j] + _pairwise(flat, (a0 + 1) * nc + j, b0 - a0 - 1, nc)
                    out[b, j] = s / (b0 - a0)
                    continue
                s = 0.0
                cnt = 0
                for i in range(a0, b0):
                    x = sub[i, j]
                    if math.isfinite(x):
                        s += x
                        cnt += 1
                if finite and b0 > a0:
                    out[b, j] = s / (b0 - a0)
                elif cnt >= 1:
                    out[b, j] = s / cnt
                else:
                    out[b, j] = np.nan
        return out
    out = np.empty((nb, m))
    buf = np.empty(nc)
    for b in range(nb):
        a0 = lo[b] - first
        b0 = hi[b] - first
        w = b0 - a0
        for i in range(m):
            if finite and w > 0:
                out[b, i] = (0.0 + _pairwise(flat, i * nc + a0, w, 1)) / w
                continue
            cnt = 0
            for j in range(w):
                x = sub[i, a0 + j]
                if math.isfinite(x):
                    buf[j] = x
                    cnt += 1
                else:
                    buf[j] = 0.0
            if cnt >= 1:
                out[b, i] = (0.0 + _pairwise(buf, 0, w, 1)) / cnt
            else:
                out[b, i] = np.nan
    return out


@register_jitable
def _gradient(fa, x, col, first, stop, uniform):
    """``detect._gradient(f, x[first:stop], uniform)`` (``np.gradient`` along axis 1) of
    the columns ``f = fa[:, col : col + stop - first]``."""
    nb = fa.shape[0]
    m = stop - first
    f = fa[:, col : col + m]
    out = np.empty((nb, m))
    if uniform:
        d = x[first + 1] - x[first]
        for b in range(nb):
            for k in range(1, m - 1):
                out[b, k] = (f[b, k + 1] - f[b, k - 1]) / (2.0 * d)
        d0 = d
        dn = d
    else:
        for k in range(1, m - 1):
            dx1 = x[first + k] - x[first + k - 1]
            dx2 = x[first + k + 1] - x[first + k]
            ca = -(dx2) / (dx1 * (dx1 + dx2))
            cb = (dx2 - dx1) / (dx1 * dx2)
            cc = dx1 / (dx2 * (dx1 + dx2))
            for b in range(nb):
                out[b, k] = ca * f[b, k - 1] + cb * f[b, k] + cc * f[b, k + 1]
        d0 = x[first + 1] - x[first]
        dn = x[first + m - 1] - x[first + m - 2]
    for b in range(nb):
        out[b, 0] = (f[b, 1] - f[b, 0]) / d0
        out[b, m - 1] = (f[b, m - 1] - f[b, m - 2]) / dn
    return out


@_shared
def _edges(along, wa, wb, first, grad, sign):
    """One half of ``detect._edge_pair``: per band (row of ``grad``, the gradients at
    ``along[first:]``), the sub-sample position (mm) of the strongest rising (``sign``
    1.0) or falling (``sign`` -1.0) gradient in the index window ``[wa, wb)``; NaN with
    fewer than three finite ones."""
    nb, ncol = grad.shape
    n = along.size
    out = np.empty(nb)
    if wb - wa < 3:
        for b in range(nb):
            out[b] = np.nan
        return out
    for b in range(nb):
        cnt = 0
        best = -np.inf
        bi = 0
        for k in range(wa - first, wb - first):
            g = grad[b, k]
            if math.isfinite(g):
                cnt += 1
                val = sign * g
            else:
                val = -np.inf
            if k == wa - first or val > best:
                best = val
                bi = k - (wa - first)
        if cnt < 3:
            out[b] = np.nan
            continue
        i = wa + bi
        c = i - first
        pa = grad[b, min(max(c - 1, 0), ncol - 1)] * sign
        pb = grad[b, min(max(c, 0), ncol - 1)] * sign
        pc = grad[b, min(max(c + 1, 0), ncol - 1)] * sign
        pos = float(i)
        if 0 < i < n - 1:
            den = pa - 2 * pb + pc
            if math.isfinite(den) and abs(den) > 1e-12:
                pos = i + min(max(0.5 * (pa - pc) / den, -0.5), 0.5)
        j = math.floor(pos)
        if j >= n - 1:
            out[b] = along[n - 1]
        elif j < 0:
            out[b] = along[0]
        elif j == pos:
            out[b] = along[j]
        else:
            slope = (along[j + 1] - along[j]) / ((j + 1.0) - j)
            out[b] = slope * (pos - j) + along[j]
    return out


@_shared
def _edge_pair(profs, along, wa0, wb0, wa1, wb1, nr, ra0, rb0, ra1, rb1):
    """``detect._block_gradients`` then ``detect._edge_pair``: the rising edges in
    window 0 and the falling ones in window 1, per band of ``profs`` (its columns are
    ``along`` at the concatenated read ranges)."""
    d = along[1] - along[0]
    uniform = True
    for k in range(1, along.size - 1):
        if along[k + 1] - along[k] != d:
            uniform = False
    m0 = rb0 - ra0
    g0 = _gradient(profs, along, 0, ra0, rb0, uniform)
    g1 = g0
    first1 = ra0
    if nr == 2:
        g1 = _gradient(profs, along, m0, ra1, rb1, uniform)
        first1 = ra1
    return _edges(along, wa0, wb0, ra0, g0, 1.0), _edges(along, wa1, wb1, first1, g1, -1.0)


@_shared
def _nanmedian(x):
    """``detect._nanmedian`` of a few values: median of the finite ones (NaN if none)."""
    vals = np.empty(x.size)
    n = 0
    for i in range(x.size):
        if math.isfinite(x[i]):
            vals[n] = x[i]
            n += 1
    _insertion_sort(vals, n)
    if n == 0:
        return np.nan
    h = n // 2
    if n % 2:
        return vals[h]
    return (vals[h - 1] + vals[h]) / 2


@_shared
def _median_slope(x, y):
    """``detect._median_slope``: Theil-Sen slope of the finite points; NaN for None."""
    n = x.size
    xs = np.empty(n)
    ys = np.empty(n)
    k = 0
    for i in range(n):
        if math.isfinite(x[i]) and math.isfinite(y[i]):
            xs[k] = x[i]
            ys[k] = y[i]
            k += 1
    slopes = np.empty(max(k * (k - 1) // 2, 1))
    m = 0
    for i in range(k):
        for j in range(i + 1, k):
            if abs(xs[j] - xs[i]) > 1e-9:
                slopes[m] = (ys[j] - ys[i]) / (xs[j] - xs[i])
                m += 1
    if m == 0:
        return np.nan
    s = slopes
    _insertion_sort(s, m)
    h = m // 2
    if m % 2:
        return s[h]
    return (s[h - 1] + s[h]) / 2


@_shared
def _span(lo, hi):
    """``(lo.min(), hi.max())``: the index range the bands ``[lo[b], hi[b])`` cover."""
    a = lo[0]
    b = hi[0]
    for i in range(1, lo.size):
        a = min(a, lo[i])
        b = max(b, hi[i])
    return a, b


@njit(cache=True, nogil=True)
def refine_body(fine, sy, sx, cy, cx, angle, hu, hw, n_iter, v, v_searched, vwin, f0, f1, fm):
    """``detect._refine_body_reference`` in one compiled call.

    ``v``: the lateral-edge patch columns (``detect._V_LATERAL``), ``v_searched`` the
    columns it reads (``detect._V_SEARCHED``), ``vwin`` the windows and read ranges of
    ``detect._edge_windows`` over ``v`` (``wa0, wb0, wa1, wb1, nranges, ra0, rb0, ra1,
    rb1``); ``f0``, ``f1``, ``fm``: start, end and centre of the five bands in half
    sizes. Returns ``(ok, cy, cx, angle, hu, hw)``; ``ok`` False where the reference
    returns None.
    """
    step = 0.5
    angle0 = angle
    for _ in range(n_iter):
        u = _arange(-hu - 12.0, hu + 12.0 + step / 2, step)
        lo, hi, _mid = _bands(u, 0.0, hu, f0, f1, fm)
        r0, r1 = _span(lo, hi)
        rows = _sample_grid(fine, cy, cx, angle, u[r0:r1], v_searched, sy, sx)
        profs = _band_profiles(rows, lo, hi, r0, 0)
        lefts, rights = _edge_pair(
            profs,
            v,
            vwin[0],
            vwin[1],
            vwin[2],
            vwin[3],
            vwin[4],
            vwin[5],
            vwin[6],
            vwin[7],
            vwin[8],
        )
        left = _nanmedian(lefts)
        right = _nanmedian(rights)
        if not (math.isfinite(left) and math.isfinite(right)):
            return False, cy, cx, angle, hu, hw
        vc = 0.5 * (left + right)
        new_hw = 0.5 * (right - left)
        lo, hi, mid = _bands(v, vc, new_hw, f0, f1, fm)
        c0, c1 = _span(lo, hi)
        # detect._edge_windows(u, (-hu - 7, min(-hu + 7, -3)), (max(hu - 7, 3), hu + 7)):
        # the index windows, the read ranges (two samples either side, merged when they
        # meet) and the sampled rows u_read (the ranges concatenated)
        n = u.size
        wa0 = _search_left(u, -hu - 7.0)
        wb0 = _search_right(u, min(-hu + 7.0, -3.0))
        wa1 = _search_left(u, max(hu - 7.0, 3.0))
        wb1 = _search_right(u, hu + 7.0)
        ra0, rb0 = max(wa0 - 2, 0), min(wb0 + 2, n)
        ra1, rb1 = max(wa1 - 2, 0), min(wb1 + 2, n)
        nr = 2
        if ra1 <= rb0:
            nr = 1
            ra0, rb0, ra1, rb1 = min(ra0, ra1), max(rb0, rb1), 0, 0
        n0 = rb0 - ra0
        n1 = rb1 - ra1
        u_read = np.empty(n0 + n1)
        for i in range(n0):
            u_read[i] = u[ra0 + i]
        for i in range(n1):
            u_read[n0 + i] = u[ra1 + i]
        cols = _sample_grid(fine, cy, cx, angle, u_read, v[c0:c1], sy, sx)
        profs = _band_profiles(cols, lo, hi, c0, 1)
        tops, bottoms = _edge_pair(profs, u, wa0, wb0, wa1, wb1, nr, ra0, rb0, ra1, rb1)
        top = _nanmedian(tops)
        bottom = _nanmedian(bottoms)
        if not (math.isfinite(top) and math.isfinite(bottom)):
            return False, cy, cx, angle, hu, hw
        # the reference keeps the slopes that are not None and not 0.0 ("if m")
        total = 0.0
        count = 0
        for m in (_median_slope(mid, tops), _median_slope(mid, bottoms)):
            if math.isfinite(m) and m != 0.0:
                total += m
                count += 1
        delta = 0.0
        if count:
            delta = -(math.atan(total / count) * (180.0 / math.pi))
        delta = min(max(delta, -8.0), 8.0)
        uc = 0.5 * (top + bottom)
        hu = 0.5 * (bottom - top)
        hw = new_hw
        a = angle * (math.pi / 180.0)
        ncy = cy + uc * math.cos(a) - vc * math.sin(a)
        ncx = cx + uc * math.sin(a) + vc * math.cos(a)
        cy, cx = ncy, ncx
        angle = min(max(angle + delta, angle0 - 20.0), angle0 + 20.0)
    return True, cy, cx, angle, hu, hw


@njit(cache=True, nogil=True)
def score_body(fine, sy, sx, rows_px, cols_px, cy, cx, angle, hu, hw, corner):
    """``detect._score_body_reference`` without the noise division: returns
    ``(enough, m_in, m_out, agree, truncated)``; ``enough`` False where the reference
    returns ``(0.5, 0.0, truncated)`` (fewer than 20 pixels inside or in the ring)."""
    step = 0.5
    u = _arange(-hu - 6.0, hu + 6.0 + step / 2, step)
    v = _arange(-hw - 6.0, hw + 6.0 + step / 2, step)
    ny, nx = fine.shape
    f = fine.ravel()
    ang = angle * (math.pi / 180.0)
    ca = math.cos(ang)
    sa = math.sin(ang)
    nu, nv = u.size, v.size
    r = min(corner, hu, hw)
    p_in = np.empty(nu * nv)
    p_ring = np.empty(nu * nv)
    n_in = 0
    n_ring = 0
    lo_r, hi_r, hi_c = -0.5, rows_px - 0.5, cols_px - 0.5
    # the reference's shortcut: a patch whose four corners lie in the image is not cut
    # (the grid is a monotone affine map of its indices)
    inside = True
    for i, j in ((0, 0), (0, nv - 1), (nu - 1, 0), (nu - 1, nv - 1)):
        ri, ci = _grid_point(cy, cx, ca, sa, u[i], v[j], sy, sx)
        if not (ri >= lo_r and ri < hi_r and ci >= lo_r and ci < hi_c):
            inside = False
    truncated = False
    check = not inside
    cells = _grid_in_cells(cy, cx, ca, sa, u, v, sy, sx, ny - 1.0, nx - 1.0)
    for i in range(nu):
        qu = abs(u[i]) - (hu - r)
        for j in range(nv):
            qv = abs(v[j]) - (hw - r)
            # the rounded-box distance hypot(max(qu, 0), max(qv, 0)) + min(max(qu, qv), 0)
            # - r; hypot only in the corners: hypot(x, 0) is |x| exactly (C99 F.9.4.3),
            # so off them the sum is the positive one, or 0.0 + max(qu, qv)
            if qu > 0.0 and qv > 0.0:
                sd = math.hypot(qu, qv) + 0.0 - r
            elif qu > 0.0:
                sd = qu + 0.0 - r
            elif qv > 0.0:
                sd = qv + 0.0 - r
            else:
                sd = 0.0 + max(qu, qv) - r
            use_in = sd <= -1.5
            use_ring = sd >= 1.5 and sd <= 5.0
            if not (use_in or use_ring or (check and not truncated and sd <= 1.5)):
                continue  # a point no measure reads: not sampled
            ri, ci = _grid_point(cy, cx, ca, sa, u[i], v[j], sy, sx)
            if check and not truncated and sd <= 1.5:
                if ri < lo_r or ci < lo_r or ri > hi_r or ci > hi_c:
                    truncated = True
            if not (use_in or use_ring):
                continue
            if cells:
                r0 = math.floor(ri)
                c0 = math.floor(ci)
                p = _bilinear_cell(f, nx, int(r0 * nx + c0), ri - r0, ci - c0)
            else:
                p = _bilinear_at(f, ny, nx, ri, ci)
            if not math.isfinite(p):
                continue
            if use_in:
                p_in[n_in] = p
                n_in += 1
            else:
                p_ring[n_ring] = p
                n_ring += 1
    if n_in < 20 or n_ring < 20:
        return False, 0.0, 0.0, 0.5, truncated
    a = p_in[:n_in]
    b = p_ring[:n_ring]
    m_in = _median_select(a)
    m_out = _median_select(b)
    thr = 0.5 * (m_in + m_out)
    above = 0
    for k in range(n_in):
        if a[k] > thr:
            above += 1
    below = 0
    for k in range(n_ring):
        if b[k] < thr:
            below += 1
    agree = 0.5 * (above / n_in + below / n_ring)
    if m_in <= m_out:
        agree = 1.0 - agree
    return True, m_in, m_out, agree, truncated


@njit(cache=True, nogil=True)
def spine_dp(response, penalty):
    """``detect._spine_path_reference``'s dynamic programme on the filter response:
    the column of the best top-to-bottom path in every row (a step sideways costs
    ``penalty``)."""
    nr, n = response.shape
    score = np.empty((nr, n))
    for j in range(n):
        score[0, j] = response[0, j]
    for i in range(1, nr):
        for j in range(n):
            left = score[i - 1, j - 1] if j > 0 else -np.inf
            right = score[i - 1, j + 1] if j < n - 1 else -np.inf
            best = max(left, right) - penalty
            here = score[i - 1, j]
            if here > best:
                best = here
            score[i, j] = best + response[i, j]
    path = np.empty(nr)
    j = 0
    top = score[nr - 1, 0]
    for k in range(1, n):
        if score[nr - 1, k] > top:
            top = score[nr - 1, k]
            j = k
    for i in range(nr - 1, -1, -1):
        path[i] = j
        if i == 0:
            break
        left = score[i - 1, j - 1] - penalty if j > 0 else -np.inf
        here = score[i - 1, j]
        right = score[i - 1, j + 1] - penalty if j < n - 1 else -np.inf
        if not (left >= here and left >= right):
            j += 0 if here >= right else 1
        else:
            j -= 1
    return path


_SELECT_SAMPLE = 1024  # largest sample of the selection's window estimate
_SELECT_SORT = 512  # fewer values are sorted


@_shared
def _select_pair(x, k):
    """The ``k``-th and ``(k + 1)``-th smallest (0-based; the second clipped to the last)
    of the finite values ``x``, exactly; ``x`` is not modified.

    A scattered sample of ``x`` (sorted) brackets the rank: its values ``lo <= hi`` a few
    standard deviations of the sample rank either side of ``k``. One pass counts the
    values below ``lo``, equal to ``lo``, equal to ``hi`` and gathers those strictly
    between; a rank among the ties at ``lo`` or ``hi`` is that value, one between is
    selected among the gathered values (repeated; :func:`_nth` once few are left); a
    rank outside the bracket (rare) widens it, then falls back to :func:`_nth` of all.
    Comparisons only, so the values are those of a sort."""
    r0 = k
    r1 = min(k + 1, x.size - 1)
    v0 = 0.0
    v1 = 0.0
    todo0 = True
    todo1 = True
    cand = x
    spread = 1
    while True:
        n = cand.size
        big = n > _SELECT_SORT
        lo = 0.0
        hi = 0.0
        below = 0
        eq_lo = 0
        between = 0
        top = 0
        if big:
            # a scattered sample (multiplicative hashing of the positions: a regular
            # stride aliases with the image rows), at most n / 8 values
            m = min(_SELECT_SAMPLE, n // 8)
            sample = np.empty(m)
            for i in range(m):
                sample[i] = cand[(i * 2654435761 + 7) % n]
            pos = (r0 if todo0 else r1) * m // n
            d = spread * (int(4.0 * math.sqrt(m * 0.25)) + 2)
            # the sample's order statistics pos - d and pos + d (the second selection
            # runs on the first's reordering: still the value of a sort)
            lo = _nth(sample, m, max(pos - d, 0))
            hi = _nth(sample, m, min(pos + d, m - 1))
            eq_hi = 0
            for i in range(n):  # branch-free counts (the order of the values is random)
                v = cand[i]
                below += v < lo
                eq_lo += v == lo
                between += (v > lo) & (v < hi)
                eq_hi += (v == hi) & (v != lo)
            top = below + eq_lo + between + eq_hi  # ranks below this lie in [.., hi]
            if (todo0 and (r0 < below or r0 >= top)) or (todo1 and (r1 < below or r1 >= top)):
                if spread < 16:  # outside the bracket (rare): a wider one
                    spread *= 4
                    continue
                big = False  # then a selection among all
        if not big:  # a selection in a copy of the few values left
            buf = np.empty(n)
            for i in range(n):
                buf[i] = cand[i]
            if todo0:
                v0 = _nth(buf, n, r0)
                if todo1:  # r1 is r0 or r0 + 1: the smallest of those after r0
                    v1 = v0
                    if r1 > r0:
                        v1 = buf[r1]
                        for i in range(r1 + 1, n):
                            v1 = min(v1, buf[i])
            elif todo1:
                v1 = _nth(buf, n, r1)
            return v0, v1
        inner = False
        if todo0:
            if r0 < below + eq_lo:
                v0, todo0 = lo, False
            elif r0 >= below + eq_lo + between:
                v0, todo0 = hi, False
            else:
                r0 -= below + eq_lo
                inner = True
        if todo1:
            if r1 < below + eq_lo:
                v1, todo1 = lo, False
            elif r1 >= below + eq_lo + between:
                v1, todo1 = hi, False
            else:
                r1 -= below + eq_lo
                inner = True
        if not inner:
            return v0, v1
        # gather those strictly between, in order, without a branch (every value is
        # written, the position moves on for those kept: a random keep / drop branch
        # mispredicts and cost ~4x this whole loop)
        out = np.empty(between + 1)
        j = 0
        for i in range(n):
            v = cand[i]
            out[j] = v
            j += (v > lo) & (v < hi)
        cand = out[:between]


@_shared
def _median_select(x):
    """``np.median`` of a finite 1-D array, by :func:`_select_pair`."""
    n = x.size
    h = n // 2
    if n % 2:
        return _select_pair(x, h)[0]
    a, b = _select_pair(x, h - 1)
    return (a + b) / 2


@njit(cache=True, nogil=True)
def percentiles(x, q):
    """``np.percentile(x, q * 100)`` (``method="linear"``) of a finite 1-D array, exactly:
    the ranks ``floor((n - 1) q)`` and the next by :func:`_select_pair`, then numpy's
    ``_lerp`` (``a + (b - a) g``, or ``b - (b - a)(1 - g)`` for ``g >= 0.5``); ``q``:
    fractions in [0, 1], as numpy's ``q / 100``."""
    n = x.size
    out = np.empty(q.size)
    for i in range(q.size):
        v = (n - 1) * q[i]
        f = math.floor(v)
        end = v >= n - 1 or v < 0.0  # the last value, or the first one
        r = n - 1 if v >= n - 1 else (0 if v < 0.0 else int(f))
        a, b = _select_pair(x, r)
        if end:
            out[i] = a
            continue
        g = v - f
        d = b - a
        out[i] = b - d * (1.0 - g) if g >= 0.5 else a + d * g
    return out


@njit(cache=True, nogil=True)
def diff_mad(norm):
    """Median absolute deviation of all row and column differences of ``norm``:
    ``np.median(np.abs(d - np.median(d)))``, exactly (bucket selections, no sort)."""
    ny, nx = norm.shape
    d = np.empty((ny - 1) * nx + ny * (nx - 1))
    k = 0
    for i in range(ny - 1):
        for j in range(nx):
            d[k] = norm[i + 1, j] - norm[i, j]
            k += 1
    for i in range(ny):
        for j in range(nx - 1):
            d[k] = norm[i, j + 1] - norm[i, j]
            k += 1
    med = _median_select(d)
    for k in range(d.size):
        d[k] = abs(d[k] - med)
    return _median_select(d)


@register_jitable
def _scipy_linear(f, ny, nx, r, c, nearest):
    """``scipy.ndimage.map_coordinates(img, [[r], [c]], order=1)`` at one point, to the
    last bit: weights ``1 - frac`` and ``1 - (1 - frac)`` (scipy's
    ``get_spline_interpolation_weights``), the four products ``(f * w_row) * w_col``
    summed from 0 in scipy's order, the neighbour beyond the last row / column mirrored
    (weight 0). Outside ``[0, n - 1]``: NaN (``mode="constant"``, ``cval=nan``) or the
    border pixel (``nearest``)."""
    if nearest:
        if r < 0.0:
            r = 0.0
        elif r > ny - 1.0:
            r = ny - 1.0
        if c < 0.0:
            c = 0.0
        elif c > nx - 1.0:
            c = nx - 1.0
    elif not (r >= 0.0 and r <= ny - 1.0 and c >= 0.0 and c <= nx - 1.0):
        return np.nan
    fr = math.floor(r)
    fc = math.floor(c)
    r0 = int(fr)
    c0 = int(fc)
    wr0 = 1.0 - (r - fr)
    wr1 = 1.0 - wr0
    wc0 = 1.0 - (c - fc)
    wc1 = 1.0 - wc0
    r1 = r0 + 1
    if r1 >= ny:
        r1 = ny - 2 if ny > 1 else 0
    c1 = c0 + 1
    if c1 >= nx:
        c1 = nx - 2 if nx > 1 else 0
    t = 0.0
    t += f[r0 * nx + c0] * wr0 * wc0
    t += f[r0 * nx + c1] * wr0 * wc1
    t += f[r1 * nx + c0] * wr1 * wc0
    t += f[r1 * nx + c1] * wr1 * wc1
    return t


@njit(cache=True, nogil=True)
def sample_lines(img, base_y, dir_y, base_x, dir_x, v, keep, step):
    """``S[i, j]``: ``img`` (bilinear, NaN outside) at the mm point
    ``(base_y[i] + v[j] * dir_y[i], base_x[i] + v[j] * dir_x[i])`` of the working grid
    (``step`` mm pixels), in the columns ``keep`` (NaN in the others): the values of
    ``detect._sample_columns`` (``map_coordinates(order=1, mode="constant",
    cval=nan)`` of the same coordinates)."""
    ny, nx = img.shape
    f = img.ravel()
    n, m = base_y.size, v.size
    out = np.empty((n, m))
    for i in range(n):
        for j in range(m):
            if keep[j]:
                r = (base_y[i] + v[j] * dir_y[i]) / step
                c = (base_x[i] + v[j] * dir_x[i]) / step
                out[i, j] = _scipy_linear(f, ny, nx, r, c, False)
            else:
                out[i, j] = np.nan
    return out


@njit(cache=True, nogil=True)
def resample_grid(img, rr, cc):
    """``map_coordinates(img, np.broadcast_arrays(rr[:, None], cc[None, :]), order=1,
    mode="nearest")``, to the last bit."""
    ny, nx = img.shape
    f = img.ravel()
    out = np.empty((rr.size, cc.size))
    for i in range(rr.size):
        for j in range(cc.size):
            out[i, j] = _scipy_linear(f, ny, nx, rr[i], cc[j], True)
    return out


@_shared
def _border(k, n, nearest):
    """scipy.ndimage's index beyond the border: ``mode="nearest"`` (``a a | a b c d |
    d d``) or ``mode="reflect"`` (``d c b a | a b c d | d c b a``), for
    ``-n <= k < 2 n``."""
    if nearest:
        return min(max(k, 0), n - 1)
    if k < 0:
        return -k - 1
    if k >= n:
        return 2 * n - 1 - k
    return k


@njit(cache=True, nogil=True)
def gaussian_2d(img, w0, w1, nearest):
    """``scipy.ndimage.gaussian_filter(img, sigma, mode=...)`` (``mode="nearest"`` when
    ``nearest``, else ``"reflect"``), to the last bit: ``correlate1d`` with the symmetric
    weights ``w0`` along the rows (axis 0; empty: no filtering) and then ``w1`` along the
    columns, each output the centre tap times its weight plus, from the outermost pair
    inwards, ``(left + right) * weight`` (scipy's symmetric loop). Every axis filtered
    must be longer than the kernel's radius."""
    ny, nx = img.shape
    out = np.empty((ny, nx))
    s0 = w0.size // 2
    s1 = w1.size // 2
    tmp = np.empty(nx)  # one row of the first pass at a time (no image-sized buffer)
    ext = np.empty(nx + 2 * s1)
    for i in range(ny):
        row = tmp if w1.size else out[i]
        if w0.size:
            src = img[i]
            wc = w0[s0]
            for j in range(nx):
                row[j] = src[j] * wc
            for t in range(s0, 0, -1):
                ra = img[_border(i - t, ny, nearest)]
                rb = img[_border(i + t, ny, nearest)]
                w = w0[s0 - t]
                for j in range(nx):
                    row[j] += (ra[j] + rb[j]) * w
        else:
            for j in range(nx):
                row[j] = img[i, j]
        if not w1.size:
            continue
        for k in range(nx + 2 * s1):
            ext[k] = row[_border(k - s1, nx, nearest)]
        orow = out[i]
        wc = w1[s1]
        for j in range(nx):
            orow[j] = ext[j + s1] * wc
        for t in range(s1, 0, -1):
            w = w1[s1 - t]
            lo = ext[s1 - t : s1 - t + nx]
            hi = ext[s1 + t : s1 + t + nx]
            for j in range(nx):
                orow[j] += (lo[j] + hi[j]) * w
    return out


# --------------------------------------------------------------------------- peaks
# ``scipy.signal.find_peaks`` with the conditions the detector uses (distance,
# prominence, width), in two compiled calls around numpy's ``argsort`` (h14r): the
# same peaks and properties, the same floating-point operations, and no import of
# ``scipy.signal`` (about 0.47 CPU-s per process, most of a detection's start).


@njit(cache=True, nogil=True)
def local_maxima(x):
    """Indices of the local maxima of ``x`` (float64, 1-D): runs of equal samples with
    a smaller sample on both sides, each at its middle (rounded down); the first and
    last samples are never maxima. ``scipy.signal.find_peaks``' candidates.

    This and :func:`select_peaks` follow SciPy's own algorithm
    (``scipy/signal/_peak_finding_utils.pyx``: ``_local_maxima_1d``, ``_select_by_peak_
    distance``, ``_peak_prominences``, ``_peak_widths``; SciPy, BSD-3-Clause, Copyright
    (c) 2001-2002 Enthought, Inc. and 2003 onwards SciPy Developers), written again in
    numba so that detection needs no ``scipy.signal`` import (~0.47 CPU-s a process);
    :func:`tbscore.core.detect._find_peaks_reference` calls SciPy itself for the
    property test."""
    n = x.shape[0]
    out = np.empty(max(n // 2, 1), dtype=np.intp)
    m = 0
    i = 1
    while i < n - 1:
        if x[i - 1] < x[i]:
            ahead = i + 1
            while ahead < n - 1 and x[ahead] == x[i]:
                ahead += 1
            if x[ahead] < x[i]:
                out[m] = (i + ahead - 1) // 2
                m += 1
                i = ahead
        i += 1
    return out[:m].copy()


@njit(cache=True, nogil=True)
def select_peaks(x, peaks, order, distance, min_prominence, min_width, max_width, rel_height):
    """The conditions of ``scipy.signal.find_peaks`` on the maxima ``peaks``, in its order.

    ``distance`` (samples, ``<= 0``: no condition; rounded up): peaks in decreasing
    height (``order``: ``np.argsort(x[peaks])``, numpy's order for equal heights)
    remove the lower ones closer than it; then each peak's prominence and bases over
    the whole signal, kept when ``>= min_prominence``; then, when ``min_width`` is
    finite, the widths at ``rel_height`` of the prominence, kept within
    ``[min_width, max_width]``. Returns ``(peaks, prominences, left_bases,
    right_bases, widths, width_heights, left_ips, right_ips)`` (the four width arrays
    empty without a width condition).
    """
    n_peaks = peaks.shape[0]
    keep = np.ones(n_peaks, dtype=np.bool_)
    if distance > 0:
        spacing = int(math.ceil(distance))
        for rank in range(n_peaks - 1, -1, -1):
            j = order[rank]
            if not keep[j]:
                continue
            k = j - 1
            while k >= 0 and peaks[j] - peaks[k] < spacing:
                keep[k] = False
                k -= 1
            k = j + 1
            while k < n_peaks and peaks[k] - peaks[j] < spacing:
                keep[k] = False
                k += 1
    n = x.shape[0]
    cand = np.empty(n_peaks, dtype=np.intp)
    prom = np.empty(n_peaks)
    left = np.empty(n_peaks, dtype=np.intp)
    right = np.empty(n_peaks, dtype=np.intp)
    m = 0  # the peaks kept so far, compacted in place
    for q in range(n_peaks):
        if not keep[q]:
            continue
        peak = peaks[q]
        top = x[peak]
        i = peak
        lb = peak
        low_left = top
        while i >= 0 and x[i] <= top:
            if x[i] < low_left:
                low_left = x[i]
                lb = i
            i -= 1
        i = peak
        rb = peak
        low_right = top
        while i <= n - 1 and x[i] <= top:
            if x[i] < low_right:
                low_right = x[i]
                rb = i
            i += 1
        value = top - max(low_left, low_right)
        if min_prominence <= value:
            cand[m] = peak
            prom[m] = value
            left[m] = lb
            right[m] = rb
            m += 1
    widths = np.empty(m)
    heights = np.empty(m)
    lips = np.empty(m)
    rips = np.empty(m)
    if not math.isfinite(min_width):
        return cand[:m], prom[:m], left[:m], right[:m], widths[:0], heights[:0], lips[:0], rips[:0]
    w = 0
    for p in range(m):
        peak = cand[p]
        height = x[peak] - prom[p] * rel_height
        i = peak
        while left[p] < i and height < x[i]:
            i -= 1
        lip = float(i)
        if x[i] < height:
            lip += (height - x[i]) / (x[i + 1] - x[i])
        i = peak
        while i < right[p] and height < x[i]:
            i += 1
        rip = float(i)
        if x[i] < height:
            rip -= (height - x[i]) / (x[i - 1] - x[i])
        width = rip - lip
        if min_width <= width and width <= max_width:
            cand[w] = peak
            prom[w] = prom[p]
            left[w] = left[p]
            right[w] = right[p]
            widths[w] = width
            heights[w] = height
            lips[w] = lip
            rips[w] = rip
            w += 1
    return cand[:w], prom[:w], left[:w], right[:w], widths[:w], heights[:w], lips[:w], rips[:w]
