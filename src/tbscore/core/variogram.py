"""Experimental variogram of gray levels inside a mask.

For a lag vector ``k = (dr, dc)`` (pixels) the experimental variogram is

    V(k) = mean over x of (I(x) - I(x + k))**2

over all pixel pairs ``(x, x + k)`` with *both* pixels inside the mask (and the
image). Each unordered pair is counted once. Note that this is the "variogram"
of the TBS literature (Pothuaud et al. 2008), i.e. twice the geostatistical
semivariogram; the factor does not change a log–log slope.

Two implementations return the same ``(sums, counts)``:

* :func:`variogram_sums` — numba kernel over the mask's row runs, compiled once and
  cached on disk, compensated (Neumaier) summation, optionally multi-threaded over lags;
* :func:`variogram_sums_reference` — plain numpy, one vectorised pass per lag.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from tbscore.errors import ComputationError

__all__ = ["variogram_sums", "variogram_sums_reference", "variogram", "crop_to_mask", "as_lags"]


def as_lags(lags: object) -> np.ndarray:
    """Validate lag vectors and return them as a C-contiguous ``(n, 2)`` int64 array."""
    if (
        type(lags) is np.ndarray
        and lags.dtype == np.int64
        and lags.ndim == 2
        and lags.shape[1] == 2
        and lags.flags.c_contiguous
    ):
        return lags  # already that array (select_lags makes them so): nothing to convert
    arr = np.asarray(lags)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr.reshape(1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ComputationError(f"lags must have shape (n, 2), got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ComputationError("lags must be integer pixel offsets")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _prepare(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes, crop to the bounding box of the mask, then convert and check.

    Returns the cropped image as C-contiguous float64, zero outside the mask, and the
    cropped bool mask. Only the bounding box is converted and checked (an ROI is a
    small part of a scan), and no pair is lost by the crop. Used by the numpy
    reference; :func:`variogram_sums` works on the crop without converting it.
    """
    image, mask = _check(image, mask)
    image, mask = crop_to_mask(image, mask)
    img = np.ascontiguousarray(image, dtype=np.float64)
    m = np.ascontiguousarray(mask)
    if not np.isfinite(img[m]).all():
        raise ComputationError("image has non-finite values inside the mask")
    return np.where(m, img, 0.0), m


def _check(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 2:
        raise ComputationError(f"image must be 2-D, got {image.ndim}-D")
    if mask.shape != image.shape:
        raise ComputationError(f"mask shape {mask.shape} differs from image shape {image.shape}")
    if mask.dtype != np.bool_:
        mask = mask != 0
    return image, mask


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Half-open bounding box ``(r0, r1, c0, c1)`` of a bool mask, or None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(mask[r0:r1].any(axis=0))
    return r0, r1, int(cols[0]), int(cols[-1]) + 1


def crop_to_mask(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop image and mask to the bounding box of the mask (no pair is lost)."""
    box = _bbox(mask)
    if box is None:
        return image[:0, :0], mask[:0, :0]
    r0, r1, c0, c1 = box
    return image[r0:r1, c0:c1], mask[r0:r1, c0:c1]


_CHUNK = 32  # mask bytes tested at once when looking for run edges


@njit(cache=True, nogil=True)
def _mask_runs(m8, nr, nc):  # pragma: no cover - compiled
    # Row runs of a C-contiguous mask (``m8``: its bytes, flat; shape (nr, nc)) and
    # their bounding box. Returns (r0, r1, c0, c1, starts, ends, ptr): the runs of row
    # r0 + r are columns [starts[k], ends[k]) for k in ptr[r] .. ptr[r + 1] - 1. Chunks
    # of _CHUNK bytes that do not change the inside/outside state are skipped after a
    # vectorised and/or test, so an empty or solid stretch costs ~1/_CHUNK per byte.
    cap = nr * ((nc + 1) // 2) + 1  # most runs the rows can hold, + 1 (see below)
    starts = np.empty(cap, np.int64)
    ends = np.empty(cap, np.int64)
    ptr = np.empty(nr + 1, np.int64)
    k = 0
    r0 = nr
    r1 = 0
    c0 = nc
    c1 = 0
    for r in range(nr):
        ptr[r] = k
        base = r * nc
        row = m8[base : base + nc]
        inside = False
        c = 0
        while c < nc:
            end = min(c + _CHUNK, nc)
            if end - c == _CHUNK:
                blk = m8[base + c : base + end]
                t = 0
                for q in range(_CHUNK):
                    t += blk[q]
                if (t == 0 and not inside) or (t == _CHUNK and inside):
                    c = end
                    continue
            # branch-free (a fragmented mask would mispredict every edge): both
            # candidates are stored, the counters advance only at a start / an end
            ks = k + np.int64(inside)  # next start slot; k counts finished runs
            prev = np.int64(inside)
            for q in range(c, end):
                v = np.int64(row[q] != 0)
                starts[ks] = q
                ends[k] = q
                ks += v & (1 - prev)
                k += prev & (1 - v)
                prev = v
            inside = prev != 0
            c = end
        if inside:
            ends[k] = nc
            k += 1
        if k > ptr[r]:
            r0 = min(r0, r)
            r1 = r + 1
            c0 = min(c0, starts[ptr[r]])
            c1 = max(c1, ends[k - 1])
    ptr[nr] = k
    if r1 == 0:
        return 0, 0, 0, 0, starts[:0], ends[:0], ptr[:1]
    return r0, r1, c0, c1, starts[:k], ends[:k], ptr[r0 : r1 + 1]


@njit(cache=True, nogil=True)
def _nonfinite(flat, fstride, ir0, ic0, m8, mstride, mr0, starts, ends, ptr):  # pragma: no cover
    # True if a gray level under the mask is nan or +-inf (x * 0 is nan exactly then):
    # one masked pass per row over the span of its runs (a select keeps out values
    # outside the mask).
    for r in range(ptr.shape[0] - 1):
        if ptr[r + 1] == ptr[r]:
            continue
        lo = starts[ptr[r]]
        n = ends[ptr[r + 1] - 1] - lo
        base = (r + ir0) * fstride - ic0 + lo
        seg = flat[base : base + n]
        mb = (r + mr0) * mstride + lo
        w = m8[mb : mb + n]
        t = 0.0
        for i in range(n):
            t += seg[i] * 0.0 if w[i] else 0.0
        if t != 0.0:
            return True
    return False


@njit(cache=True, nogil=True)
def _nonfinite_box(flat, fstride, ir0, ic0, nr, nc):  # pragma: no cover - compiled
    # _nonfinite for a solid box of nr x nc (mask columns 0 .. nc - 1)
    for r in range(nr):
        base = (r + ir0) * fstride - ic0
        seg = flat[base : base + nc]
        t = 0.0
        for i in range(nc):
            t += seg[i] * 0.0
        if t != 0.0:
            return True
    return False


def box_is_finite(image: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Whether every gray level of ``image[row0:row1, col0:col1]`` is finite.

    ``box`` is ``(row0, col0, row1, col1)``, half-open, in pixels (an ROI's
    ``bbox()``). A C-contiguous float64 image (what the loader makes) is read in place
    by the compiled loop the kernel's own check uses (no boolean copy of the box);
    anything else, or a box not inside the image, by ``np.isfinite(...).all()``.
    """
    r0, c0, r1, c1 = map(int, box)
    if (
        image.ndim == 2
        and image.dtype == np.float64
        and image.flags.c_contiguous
        and 0 <= r0 < r1 <= image.shape[0]
        and 0 <= c0 < c1 <= image.shape[1]
    ):
        return not _nonfinite_box(image.reshape(-1), image.shape[1], r0, -c0, r1 - r0, c1 - c0)
    return bool(np.isfinite(image[r0:r1, c0:c1]).all())


@njit(cache=True, nogil=True, fastmath=True)
def _span_sum(flat, ia, ib, n):  # pragma: no cover - compiled
    # Sum of (flat[ia + i] - flat[ib + i])**2 over i < n: contiguous, branch-free,
    # float64 accumulation (fastmath lets LLVM reassociate it into vector lanes).
    # (z + x): an int32 difference for integer images (exact, and half the width of a
    # float64 one), a float64 difference for float64 images.
    a = flat[ia : ia + n]
    b = flat[ib : ib + n]
    z = np.int32(0)
    s = 0.0
    for i in range(n):
        d = np.float64((z + a[i]) - (z + b[i]))
        s += d * d
    return s


@njit(cache=True, nogil=True, fastmath=True)
def _span_masked(flat, ia, ib, mflat, ma, mb, n):  # pragma: no cover - compiled
    # Same over a span where the masks of both rows (``mflat`` at ``ma``, ``mb``) are
    # fragmented: a select, not a branch, keeps it vectorised, and never lets a value
    # outside the mask (nan included) into the sum.
    a = flat[ia : ia + n]
    b = flat[ib : ib + n]
    wa = mflat[ma : ma + n]
    wb = mflat[mb : mb + n]
    z = np.int32(0)
    s = 0.0
    k = 0
    for i in range(n):
        both = wa[i] & wb[i]
        d = np.float64((z + a[i]) - (z + b[i]))
        s += d * d if both else 0.0
        k += np.int64(both)
    return s, k


# a row pair with more mask runs than this (both rows together) is summed with the
# masked loop over its overlap rather than run by run
_MAX_RUNS = 6


@njit(cache=True, nogil=True)
def _one_lag(
    flat, fstride, ir0, ic0, mflat, mstride, mr0, starts, ends, ptr, nr, nc, dr, dc, solid
):  # noqa: E501
    # k and -k are the same unordered pairs: take dr > 0, or dr == 0 and dc > 0. For
    # each row r the pairs (r, c) - (r + dr, c + dc) with both pixels in the mask are
    # the intersections of the runs of row r with the runs of row r + dr shifted by
    # -dc; each intersection is one contiguous span (:func:`_span_sum`). Row sums are
    # combined with Neumaier compensation.
    if dr < 0 or (dr == 0 and dc < 0):
        dr = -dr
        dc = -dc
    total = 0.0
    comp = 0.0
    count = 0
    if dr >= nr or dc >= nc or -dc >= nc:
        return 0.0, count
    if solid:  # every pixel of the box: one span per row, no runs to intersect
        lo = max(0, -dc)
        n = min(nc, nc - dc) - lo
        for r in range(nr - dr):
            base_a = (r + ir0) * fstride - ic0 + lo
            row_sum = _span_sum(flat, base_a, base_a + dr * fstride + dc, n)
            t = total + row_sum
            if abs(total) >= row_sum:
                comp += (total - t) + row_sum
            else:
                comp += (row_sum - t) + total
            total = t
        return total + comp, n * (nr - dr)
    for r in range(nr - dr):
        i = ptr[r]
        i_end = ptr[r + 1]
        j = ptr[r + dr]
        j_end = ptr[r + dr + 1]
        # image index of (row r of the box, mask column col): base_a + col
        base_a = (r + ir0) * fstride - ic0
        base_b = (r + dr + ir0) * fstride - ic0 + dc
        row_sum = 0.0
        if i_end - i + j_end - j > _MAX_RUNS:
            lo = max(starts[i], starts[j] - dc)
            hi = min(ends[i_end - 1], ends[j_end - 1] - dc)
            if lo < hi:
                ma = (r + mr0) * mstride + lo
                row_sum, k = _span_masked(
                    flat, base_a + lo, base_b + lo, mflat, ma, ma + dr * mstride + dc, hi - lo
                )
                count += k
            i = i_end
        while i < i_end and j < j_end:
            lo = max(starts[i], starts[j] - dc)
            e_i = ends[i]
            e_j = ends[j] - dc
            hi = min(e_i, e_j)
            if lo < hi:
                row_sum += _span_sum(flat, base_a + lo, base_b + lo, hi - lo)
                count += hi - lo
            if e_i <= e_j:
                i += 1
            else:
                j += 1
        t = total + row_sum
        if abs(total) >= row_sum:
            comp += (total - t) + row_sum
        else:
            comp += (row_sum - t) + total
        total = t
    return total + comp, count


@njit(cache=True, nogil=True)
def _kernel_serial(
    flat, fstride, ir0, ic0, mflat, mstride, mr0, starts, ends, ptr, nr, nc, lags, solid
):  # noqa: E501
    n = lags.shape[0]
    sums = np.zeros(n, dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    for k in range(n):
        s, c = _one_lag(
            flat,
            fstride,
            ir0,
            ic0,
            mflat,
            mstride,
            mr0,
            starts,
            ends,
            ptr,
            nr,
            nc,
            lags[k, 0],
            lags[k, 1],
            solid,
        )
        sums[k] = s
        counts[k] = c
    return sums, counts


@njit(cache=True, nogil=True, parallel=True)
def _kernel_parallel(
    flat, fstride, ir0, ic0, mflat, mstride, mr0, starts, ends, ptr, nr, nc, lags, solid
):  # noqa: E501
    n = lags.shape[0]
    sums = np.zeros(n, dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    for k in prange(n):
        s, c = _one_lag(
            flat,
            fstride,
            ir0,
            ic0,
            mflat,
            mstride,
            mr0,
            starts,
            ends,
            ptr,
            nr,
            nc,
            lags[k, 0],
            lags[k, 1],
            solid,
        )
        sums[k] = s
        counts[k] = c
    return sums, counts


# gray-level types the kernel reads in place (one compiled specialisation each);
# others are converted (the crop only): unsigned 8-bit to uint16, the rest to float64.
_NATIVE = (np.dtype(np.uint16), np.dtype(np.float64))
_NO_RUNS = np.zeros(1, np.int64)  # stands for the runs of a solid box
_NO_MASK = np.zeros(1, np.uint8)  # and for its mask bytes (the solid paths read neither)
# masks with more pixels than this are cropped to their box (numpy) before the runs
_BIG = 1 << 18


def variogram_sums(
    image: np.ndarray, mask: np.ndarray, lags: object, *, parallel: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Sums of squared gray-level differences and pair counts per lag (numba).

    The mask is turned into row runs once; for every lag the kernel sums over the
    contiguous spans where a run of one row meets a (shifted) run of the other, so no
    pixel outside the mask is read and the inner loop has no branch. uint16 and
    float64 images are read in place (no copy of the scan); the sums are accumulated
    in float64, combined across rows with compensated (Neumaier) summation.

    Parameters
    ----------
    image : ndarray, shape (rows, cols)
        Gray levels, any real dtype (uint8, uint16, int, float); computed in float64.
    mask : ndarray of bool, shape (rows, cols)
        Pixels that belong to the region; a pair counts only if both pixels are in it.
    lags : array_like of int, shape (n, 2)
        Lag vectors ``(d_row, d_col)`` in pixels; components may be negative.
    parallel : bool
        Spread the lags over numba threads.

    Returns
    -------
    sums : ndarray of float64, shape (n,)
        Sum over pairs of ``(I(x) - I(x + k))**2`` (gray level squared).
    counts : ndarray of int64, shape (n,)
        Number of pairs.
    """
    lag_arr = as_lags(lags)
    image, mask = _check(image, mask)
    return _sums(image, mask, lag_arr, parallel)


def _sums(
    image: np.ndarray,
    mask: np.ndarray,
    lag_arr: np.ndarray,
    parallel: bool,
    or0: int = 0,
    oc0: int = 0,
    solid: bool | None = None,
    finite: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`variogram_sums` of already validated arguments (its one body).

    ``image`` is 2-D (:func:`_check`), ``lag_arr`` what :func:`as_lags` returns, and
    ``mask`` a bool array for the region of ``image`` whose top-left pixel is
    ``(or0, oc0)`` (a crop of the image's mask to an ROI's box, so that the kernel reads
    the image in place; ``(0, 0)``: the mask has the image's shape). ``solid``: whether
    every pixel of ``mask`` is set, when the caller knows it (``None``: tested here).
    ``finite``: the caller has checked that the gray levels under ``mask`` are finite
    (:func:`tbscore.api.calc`, with its own error naming the file): not checked again.
    """
    n = lag_arr.shape[0]
    if mask.size > _BIG:  # numpy finds the box of a large mask faster; runs of the box
        box = _bbox(mask)
        if box is None:
            return np.zeros(n), np.zeros(n, dtype=np.int64)
        or0, oc0 = or0 + box[0], oc0 + box[2]
        mask = mask[box[0] : box[1], box[2] : box[3]]
        solid = None
    nr_m, nc_m = mask.shape
    if solid is None:
        solid = bool(mask.all())
    if solid:  # a rectangle (common ROI shape): the kernel needs no runs, nor the mask
        r0, r1, c0, c1 = 0, nr_m, 0, nc_m
        starts = ends = ptr = _NO_RUNS
        m8 = _NO_MASK
    else:
        m8 = np.ascontiguousarray(mask).view(np.uint8).reshape(-1)
        r0, r1, c0, c1, starts, ends, ptr = _mask_runs(m8, nr_m, nc_m)
    if r1 == 0:
        return np.zeros(n), np.zeros(n, dtype=np.int64)
    # image index of (row r of the box, mask column col) = (r + ir0) * fstride - ic0 + col
    if image.dtype in _NATIVE and image.flags.c_contiguous:
        flat, fstride, ir0, ic0 = image.reshape(-1), image.shape[1], or0 + r0, -oc0
    else:  # convert the bounding box only
        if image.dtype.kind == "c":
            raise ComputationError("image must have real gray levels, got complex values")
        crop = image[or0 + r0 : or0 + r1, oc0 + c0 : oc0 + c1]
        dtype = np.uint16 if crop.dtype in (np.uint8, np.bool_) else np.float64
        crop = np.ascontiguousarray(crop, dtype=dtype)
        flat, fstride, ir0, ic0 = crop.reshape(-1), c1 - c0, 0, c0
    if (
        not finite
        and flat.dtype.kind == "f"
        and (
            _nonfinite_box(flat, fstride, ir0, ic0, nr_m, nc_m)
            if solid
            else _nonfinite(flat, fstride, ir0, ic0, m8, nc_m, r0, starts, ends, ptr)
        )
    ):
        raise ComputationError("image has non-finite values inside the mask")
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    kernel = _kernel_parallel if parallel and n > 1 else _kernel_serial
    return kernel(
        flat, fstride, ir0, ic0, m8, nc_m, r0, starts, ends, ptr, r1 - r0, c1 - c0, lag_arr, solid
    )


def variogram_sums_reference(
    image: np.ndarray, mask: np.ndarray, lags: object
) -> tuple[np.ndarray, np.ndarray]:
    """Plain-numpy reference for :func:`variogram_sums` (same arguments and returns)."""
    img, m = _prepare(image, mask)
    lag_arr = as_lags(lags)
    nr, nc = img.shape
    sums = np.zeros(lag_arr.shape[0], dtype=np.float64)
    counts = np.zeros(lag_arr.shape[0], dtype=np.int64)
    for i, (dr, dc) in enumerate(lag_arr):
        dr, dc = int(dr), int(dc)
        if abs(dr) >= nr or abs(dc) >= nc:
            continue
        a = (slice(max(0, -dr), nr - max(0, dr)), slice(max(0, -dc), nc - max(0, dc)))
        b = (slice(max(0, dr), nr - max(0, -dr)), slice(max(0, dc), nc - max(0, -dc)))
        both = m[a] & m[b]
        diff = img[a][both] - img[b][both]
        sums[i] = np.sum(diff * diff)
        counts[i] = diff.size
    return sums, counts


def variogram(
    image: np.ndarray, mask: np.ndarray, lags: object, *, parallel: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Experimental variogram ``V(k)`` (gray level squared) and pair counts.

    Lags without pairs get ``nan``.
    """
    sums, counts = variogram_sums(image, mask, lags, parallel=parallel)
    v = sums / np.maximum(counts, 1)  # no division by 0, so no error state to switch
    v[counts == 0] = np.nan
    return v, counts


def set_threads(n: int) -> None:
    """Set the number of numba threads used by ``parallel=True`` (process-wide)."""
    numba.set_num_threads(n)
