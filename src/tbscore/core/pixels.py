"""The compiled pass that turns stored pixel values into gray levels.

:func:`tbscore.io.load.gray_levels` calls :func:`gray_levels_into` for 2-D 8-32 bit
integer images: the cast to float64, the MONOCHROME1 inversion and the rescale in one
pass over the pixels (numpy needs one pass per step). Each step is the same IEEE
operation numpy does, in the same order (no fused multiply-add: no fast-math), so the
values are the same bit for bit (property test against the numpy steps). Float
images stay with numpy: a nan's sign bit is not kept by compiled arithmetic (LLVM may
move a negation across a product), while the integers' gray levels are never nan.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["gray_levels_into"]


@njit(cache=True, nogil=True)
def gray_levels_into(stored, invert, top, slope, intercept, rescale, out):  # pragma: no cover
    """Write the gray levels of ``stored`` (2-D) into ``out`` (2-D float64, same shape).

    ``invert``: 0 none, 1 ``top - x`` (``top = 2**bits - 1``), 2 ``-x``; then
    ``x * slope + intercept`` when ``rescale`` (slope dimensionless, intercept in gray
    levels), each step rounded to float64.
    """
    n0, n1 = stored.shape
    for r in range(n0):
        for c in range(n1):
            x = np.float64(stored[r, c])
            if invert == 1:
                x = top - x
            elif invert == 2:
                x = -x
            if rescale:
                x = x * slope + intercept
            out[r, c] = x
