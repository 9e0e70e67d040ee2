"""Experimental variogram of gray levels inside a mask.

For a lag vector ``k = (dr, dc)`` (pixels) the experimental variogram is

    V(k) = mean over x of (I(x) - I(x + k))**2

over all pixel pairs ``(x, x + k)`` with *both* pixels inside the mask (and the
image). Each unordered pair is counted once. Note that this is the "variogram"
of the TBS literature (Pothuaud et al. 2008), i.e. twice the geostatistical
semivariogram; the factor does not change a log–log slope.

Two implementations return the same ``(sums, counts)``:

* :func:`variogram_sums` — numba kernel, compiled once and cached on disk,
  compensated (Neumaier) summation, optionally multi-threaded over lags;
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
    small part of a scan), and no pair is lost by the crop.
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 2:
        raise ComputationError(f"image must be 2-D, got {image.ndim}-D")
    if mask.shape != image.shape:
        raise ComputationError(f"mask shape {mask.shape} differs from image shape {image.shape}")
    if mask.dtype != np.bool_:
        mask = mask != 0
    image, mask = crop_to_mask(image, mask)
    img = np.ascontiguousarray(image, dtype=np.float64)
    m = np.ascontiguousarray(mask)
    if not np.isfinite(img[m]).all():
        raise ComputationError("image has non-finite values inside the mask")
    return np.where(m, img, 0.0), m


def crop_to_mask(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop image and mask to the bounding box of the mask (no pair is lost)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return image[:0, :0], mask[:0, :0]
    band = mask[rows[0] : rows[-1] + 1]
    cols = np.flatnonzero(band.any(axis=0))
    sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return image[sl], mask[sl]


@njit(cache=True, nogil=True, fastmath=True)
def _row_sum(a, b, wa, wb):  # pragma: no cover - compiled
    s = 0.0
    n = 0.0
    for i in range(a.shape[0]):
        both = wa[i] * wb[i]
        d = a[i] - b[i]
        s += both * d * d
        n += both
    return s, n


@njit(cache=True, nogil=True)
def _one_lag(img, w, dr, dc):  # pragma: no cover - compiled
    # ``w`` is the mask as float64 0/1 weights and ``img`` is zero outside the mask,
    # so the row loop (:func:`_row_sum`) has no branch and vectorises. Row sums are
    # combined with Neumaier compensation.
    nr, nc = img.shape
    r0 = max(0, -dr)
    r1 = min(nr, nr - dr)
    c0 = max(0, -dc)
    c1 = min(nc, nc - dc)
    total = 0.0
    comp = 0.0
    count = 0.0
    if c1 <= c0:
        return 0.0, np.int64(0)
    for r in range(r0, r1):
        row_sum, row_count = _row_sum(
            img[r, c0:c1], img[r + dr, c0 + dc : c1 + dc], w[r, c0:c1], w[r + dr, c0 + dc : c1 + dc]
        )
        t = total + row_sum
        if abs(total) >= row_sum:
            comp += (total - t) + row_sum
        else:
            comp += (row_sum - t) + total
        total = t
        count += row_count
    return total + comp, np.int64(count + 0.5)


@njit(cache=True, nogil=True)
def _kernel_serial(img, w, lags):  # pragma: no cover - compiled
    n = lags.shape[0]
    sums = np.zeros(n, dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    for i in range(n):
        s, c = _one_lag(img, w, lags[i, 0], lags[i, 1])
        sums[i] = s
        counts[i] = c
    return sums, counts


@njit(cache=True, nogil=True, parallel=True)
def _kernel_parallel(img, w, lags):  # pragma: no cover - compiled
    n = lags.shape[0]
    sums = np.zeros(n, dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    for i in prange(n):
        s, c = _one_lag(img, w, lags[i, 0], lags[i, 1])
        sums[i] = s
        counts[i] = c
    return sums, counts


def variogram_sums(
    image: np.ndarray, mask: np.ndarray, lags: object, *, parallel: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Sums of squared gray-level differences and pair counts per lag (numba).

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
    img, m = _prepare(image, mask)
    if lag_arr.shape[0] == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    kernel = _kernel_parallel if parallel else _kernel_serial
    return kernel(np.ascontiguousarray(img), np.ascontiguousarray(m, dtype=np.float64), lag_arr)


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
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return v, counts


def set_threads(n: int) -> None:
    """Set the number of numba threads used by ``parallel=True`` (process-wide)."""
    numba.set_num_threads(n)
