"""Polygon rasterisation: the pixels of an ROI polygon, compiled (issue 14).

:func:`polygon_mask` gives the mask of ``skimage.draw.polygon2mask`` pixel for pixel:
the pixel centres ``(r, c)`` of the polygon's bounding box (clipped to the image) that
skimage's ``point_in_polygon`` (O'Rourke's crossing test) puts inside the polygon, on
one of its edges or at a vertex (within 1e-12), with the same arithmetic and
comparisons, in one compiled loop instead of skimage's Python lists of pixel indices.
``tests/test_roi.py`` checks it against skimage.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numba.extending import register_jitable


@register_jitable  # compiled into _fill (no dispatcher or cache entry of its own)
def _in_polygon(xp, yp, x, y):
    """skimage's ``point_in_polygon``: inside, on an edge or at a vertex."""
    n = xp.size
    eps = 1e-12
    x1 = xp[n - 1] - x
    y1 = yp[n - 1] - y
    r_cross = 0
    l_cross = 0
    for i in range(n):
        x0 = xp[i] - x
        y0 = yp[i] - y
        if -eps < x0 < eps and -eps < y0 < eps:
            return True  # a vertex
        if (y0 > 0) != (y1 > 0):
            if ((x0 * y1 - x1 * y0) / (y1 - y0)) > 0:
                r_cross += 1
        if (y0 < 0) != (y1 < 0):
            if ((x0 * y1 - x1 * y0) / (y1 - y0)) < 0:
                l_cross += 1
        x1 = x0
        y1 = y0
    if (r_cross & 1) != (l_cross & 1):
        return True  # on an edge
    return (r_cross & 1) == 1


@njit(cache=True, nogil=True)
def _fill(rows, cols, ny, nx):
    mask = np.zeros((ny, nx), dtype=np.bool_)
    if rows.size == 0:
        return mask
    # the bounding box (plain loops: numba's array min / max cost a cold-cache compile)
    rlo = rhi = rows[0]
    clo = chi = cols[0]
    for k in range(1, rows.size):
        rlo = min(rlo, rows[k])
        rhi = max(rhi, rows[k])
        clo = min(clo, cols[k])
        chi = max(chi, cols[k])
    minr = int(max(0.0, rlo))
    maxr = min(ny - 1, int(math.ceil(rhi)))
    minc = int(max(0.0, clo))
    maxc = min(nx - 1, int(math.ceil(chi)))
    for ri in range(minr, maxr + 1):
        for ci in range(minc, maxc + 1):
            if _in_polygon(cols, rows, float(ci), float(ri)):
                mask[ri, ci] = True
    return mask


def polygon_mask(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    """Boolean mask of the pixels inside a polygon (``skimage.draw.polygon2mask``'s).

    Parameters
    ----------
    shape : (int, int)
        Image shape ``(rows, cols)``.
    polygon : (n, 2) array_like
        Vertices ``(row, col)`` in pixels.

    Returns
    -------
    ndarray of bool, shape ``shape``
    """
    poly = np.asarray(polygon, dtype=np.float64)
    rows = np.ascontiguousarray(poly[:, 0]) if poly.size else np.empty(0)
    cols = np.ascontiguousarray(poly[:, 1]) if poly.size else np.empty(0)
    return _fill(rows, cols, int(shape[0]), int(shape[1]))
