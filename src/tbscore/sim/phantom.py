"""Synthetic lumbar-spine phantoms with a known texture exponent.

Three layers:

* :func:`fbm_surface` / :func:`fbm_surface_pair` - exact simulation of isotropic
  fractional Brownian surfaces by circulant embedding (Stein 2002);
* :func:`synthetic_spine` - a DXA-like lumbar-spine image (soft tissue, spine column,
  T12 / L1-L4 / L5 vertebral bodies, iliac crests) whose vertebral bodies carry an
  exact fBm texture of known Hurst exponent ``H``;
* :func:`write_sample_set` - the bundled sample set (DICOM + ROI JSON + ground truth),
  regenerable with ``python -m tbscore.sim.phantom OUTDIR`` or ``tbscore phantom OUTDIR``.

3-D trabecular phantoms for the validation study (issue #7) live in their own modules,
re-exported here as ``tbscore.sim.phantom.microarch`` (trabecular volumes with a controllable
ageing path and micro-CT morphometry) and ``tbscore.sim.phantom.dxa_model`` (projection,
Beer-Lambert, soft tissue, blur, pixel sampling, quantum noise, dual energy); see
docs/validation.md.

For an fBm surface the variogram is ``E[(B(x) - B(x + d))^2] = 2 s^2 |d|^(2H)``, so the
log-log variogram slope is exactly ``2H`` at every lag.

References
----------
M. L. Stein, "Fast and exact simulation of fractional Brownian surfaces",
J. Comput. Graph. Statist. 11(3):587-599, 2002 (the circulant-embedding construction
used here; intrinsic embedding with a compactly supported modified covariance).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft as sfft

from tbscore._version import __version__
from tbscore.core.constants import LABELS
from tbscore.core.roi import rounded_rect_distance, rounded_rect_outline
from tbscore.sim import dxa_model, microarch  # re-exported: 3-D phantoms (issue #7)

__all__ = [
    "dxa_model",
    "microarch",
    "fbm_surface",
    "fbm_surface_pair",
    "synthetic_spine",
    "vertebra_mask",
    "vertebra_label_image",
    "write_sample_set",
    "SAMPLE_SET",
    "LUMBAR_LABELS",
]

LUMBAR_LABELS: tuple[str, ...] = LABELS

RngLike = np.random.Generator | int | np.random.SeedSequence | None


# --------------------------------------------------------------------------- fBm


def _stein_parameters(hurst: float) -> tuple[float, float, float, float]:
    """Return ``(R, beta, c2, c0)`` of Stein's modified covariance for ``hurst``."""
    a = 2.0 * hurst
    if a <= 1.5:
        return 1.0, 0.0, hurst, 1.0 - hurst
    R = 2.0
    beta = a * (2.0 - a) / (3.0 * R * (R * R - 1.0))
    c2 = (a - beta * (R - 1.0) ** 2 * (R + 2.0)) / 2.0
    c0 = beta * (R - 1.0) ** 3 + 1.0 - c2
    return R, beta, c2, c0


def _stein_psi(r: np.ndarray, hurst: float) -> np.ndarray:
    """Stein's stationary covariance ``psi(r)`` (compact support on ``r <= R``)."""
    R, beta, c2, c0 = _stein_parameters(hurst)
    out = np.zeros_like(r)
    inner = r <= 1.0
    ri = r[inner]
    out[inner] = c0 - ri ** (2.0 * hurst) + c2 * ri * ri
    if beta > 0.0:
        outer = (r > 1.0) & (r <= R)
        ro = r[outer]
        out[outer] = beta * (R - ro) ** 3 / ro
    return out


@functools.lru_cache(maxsize=8)
def _embedding(hy: float, hx: float, hurst: float) -> tuple[np.ndarray, float]:
    """Square roots of the scaled circulant eigenvalues, and ``c2``.

    The torus has period ``>= 2R`` along both axes (``R`` the support of ``psi``), so the
    block-circulant matrix is the covariance of ``psi`` on the torus and is non-negative
    definite (Stein 2002).
    """
    R, _, c2, _ = _stein_parameters(hurst)
    ny = sfft.next_fast_len(math.ceil(2.0 * R / hy - 1e-9))
    nx = sfft.next_fast_len(math.ceil(2.0 * R / hx - 1e-9))
    dy = np.minimum(np.arange(ny), ny - np.arange(ny)) * hy
    dx = np.minimum(np.arange(nx), nx - np.arange(nx)) * hx
    row = _stein_psi(np.hypot(dy[:, None], dx[None, :]), hurst)
    lam = sfft.fft2(row, workers=-1).real
    lmax = float(lam.max())
    lmin = float(lam.min())
    if lmin < -1e-10 * lmax:
        raise RuntimeError(
            f"circulant embedding is not non-negative definite (min eigenvalue "
            f"{lmin:.3e}, max {lmax:.3e}) for H={hurst}"
        )
    root = np.sqrt(np.clip(lam, 0.0, None) / lam.size)
    root.flags.writeable = False
    return root, c2


def _check_hurst(hurst: float) -> float:
    hurst = float(hurst)
    if not 0.0 < hurst < 1.0:
        raise ValueError(f"Hurst exponent must lie in (0, 1), got {hurst}")
    return hurst


def _fbm_grid(
    shape: tuple[int, int], h: tuple[float, float], hurst: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two independent exact fBm fields on a ``shape`` grid with steps ``h = (hy, hx)``.

    The grid must have all pairwise distances ``<= 1``. Variogram: ``2 |d|^(2H)`` with
    ``d`` in the same units as ``h``; both fields are zero at ``[0, 0]``.
    """
    ny, nx = shape
    hy, hx = h
    if math.hypot((ny - 1) * hy, (nx - 1) * hx) > 1.0 + 1e-12:
        raise ValueError("grid too large for exact embedding (pairwise distance > 1)")
    root, c2 = _embedding(float(hy), float(hx), hurst)
    eps = rng.standard_normal((2, *root.shape))
    field = sfft.fft2(root * (eps[0] + 1j * eps[1]), workers=-1)[:ny, :nx]
    coef = rng.standard_normal(4) * math.sqrt(2.0 * c2)
    y = (np.arange(ny) * hy)[:, None]
    x = (np.arange(nx) * hx)[None, :]
    out = []
    for part, (c_y, c_x) in ((field.real, coef[:2]), (field.imag, coef[2:])):
        # Intrinsic embedding: Z(x) - Z(0) + sqrt(2 c2) (x . X), X ~ N(0, I_2).
        out.append(part - part[0, 0] + (c_y * y + c_x * x))
    return out[0], out[1]


def fbm_surface_pair(
    n: int, hurst: float, rng: RngLike = None, *, return_spacing: bool = False
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, float]:
    """Two independent exact fractional Brownian surfaces on an ``n x n`` grid.

    One FFT yields two fields (real and imaginary parts), each with its own linear
    correction; see :func:`fbm_surface` for the model.

    Parameters
    ----------
    n : int
        Grid size (``n >= 2``).
    hurst : float
        Hurst exponent ``H`` in (0, 1).
    rng : numpy.random.Generator, int or None
        Random generator or seed.
    return_spacing : bool
        Also return the grid step ``h`` (dimensionless, see :func:`fbm_surface`).

    Returns
    -------
    b1, b2 : (n, n) ndarray of float64
        Independent fBm surfaces, zero at ``[0, 0]``.
    h : float
        Grid step, when ``return_spacing`` is True.
    """
    hurst = _check_hurst(hurst)
    n = int(n)
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    h = 1.0 / ((n - 1) * math.sqrt(2.0))
    b1, b2 = _fbm_grid((n, n), (h, h), hurst, np.random.default_rng(rng))
    return (b1, b2, h) if return_spacing else (b1, b2)


def fbm_surface(
    n: int, hurst: float, rng: RngLike = None, *, return_spacing: bool = False
) -> np.ndarray | tuple[np.ndarray, float]:
    """Exact isotropic fractional Brownian surface on an ``n x n`` grid.

    Circulant embedding of Stein (2002). The stationary covariance

    * ``psi(r) = c0 - r^(2H) + c2 r^2`` for ``r <= 1``,
    * ``psi(r) = beta (R - r)^3 / r`` for ``1 < r <= R``, ``0`` beyond,

    with ``R = 1, beta = 0, c2 = H, c0 = 1 - H`` when ``2H <= 1.5`` and ``R = 2``,
    ``beta = a(2 - a) / (3R(R^2 - 1))``, ``c2 = (a - beta (R-1)^2 (R+2)) / 2``,
    ``c0 = beta (R-1)^3 + 1 - c2`` (``a = 2H``) otherwise, is embedded exactly in a
    block-circulant matrix on a torus of period ``>= 2R``; a Gaussian field ``Z`` with
    that covariance is drawn with one 2-D FFT and

        ``B(x) = Z(x) - Z(0) + sqrt(2 c2) (x X1 + y X2)``,  ``X1, X2 ~ N(0, 1)`` iid,

    is a fractional Brownian surface on the grid points (all within distance 1 of
    each other): ``E[(B(p) - B(q))^2] = 2 |p - q|^(2H)`` exactly.

    Parameters
    ----------
    n : int
        Grid size (``n >= 2``).
    hurst : float
        Hurst exponent ``H`` in (0, 1); the log-log variogram slope is ``2H``.
    rng : numpy.random.Generator, int or None
        Random generator or seed.
    return_spacing : bool
        Also return the grid step ``h``.

    Returns
    -------
    b : (n, n) ndarray of float64
        The surface; ``b[0, 0] == 0``. Grid point ``[i, j]`` sits at ``(i h, j h)``.
    h : float
        Grid step (dimensionless), ``h = 1 / ((n - 1) sqrt(2))``, returned when
        ``return_spacing`` is True. At a lag of ``k`` pixels the variogram is
        ``2 (k h)^(2H)``; ``b / h**H`` has variogram ``2 k^(2H)`` in pixel units.

    Raises
    ------
    ValueError
        If ``hurst`` is not in (0, 1) or ``n < 2``.
    RuntimeError
        If the embedding is not non-negative definite (never for valid input).

    Examples
    --------
    >>> b, h = fbm_surface(256, 0.7, rng=0, return_spacing=True)
    >>> b.shape
    (256, 256)
    """
    b1, _, h = fbm_surface_pair(n, hurst, rng, return_spacing=True)
    return (b1, h) if return_spacing else b1


def _fbm_mm(
    shape: tuple[int, int], spacing_mm: tuple[float, float], hurst: float, rng: np.random.Generator
) -> np.ndarray:
    """fBm on a pixel grid with (possibly non-square) spacing, variogram ``2 d_mm^(2H)``."""
    ny, nx = shape
    diag = math.hypot(max(ny - 1, 1) * spacing_mm[0], max(nx - 1, 1) * spacing_mm[1])
    s = 1.0 / diag  # mm -> embedding units
    b, _ = _fbm_grid(shape, (spacing_mm[0] * s, spacing_mm[1] * s), hurst, rng)
    return b / s**hurst


# --------------------------------------------------------------------------- spine

# Vertebral bodies in spine coordinates: label -> (height mm, width mm).
_BODIES: dict[str, tuple[float, float]] = {
    "T11": (23.0, 34.0),
    "T12": (24.5, 36.0),
    "L1": (26.0, 38.0),
    "L2": (27.5, 40.0),
    "L3": (29.0, 42.0),
    "L4": (30.0, 44.0),
    "L5": (29.0, 46.0),
}
# Disc height (mm) below each body.
_DISC_BELOW: dict[str, float] = {
    "T11": 5.5,
    "T12": 6.0,
    "L1": 7.0,
    "L2": 8.0,
    "L3": 8.5,
    "L4": 9.0,
    "L5": 10.0,
}
# Relative bone density of each body (BMD rises caudally).
_DENSITY: dict[str, float] = {
    "T11": 0.88,
    "T12": 0.91,
    "L1": 0.94,
    "L2": 0.98,
    "L3": 1.02,
    "L4": 1.05,
    "L5": 1.0,
}
_CORNER_MM = 4.0
_CURVE_HALF_MM = 120.0  # half-length of the lateral curve (see _curve)
_EDGE_MM = 1.0  # width of the soft edge of every shape


def _smooth_step(sd: np.ndarray, width: float) -> np.ndarray:
    """1 inside (sd << 0), 0 outside, smooth cubic transition over ``[-w/2, w/2]``."""
    t = np.clip(0.5 - sd / width, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _body_sd(body: dict[str, Any], y: np.ndarray, x: np.ndarray) -> np.ndarray:
    cy, cx = body["center_mm"]
    t = math.radians(body["angle_deg"])
    dy, dx = y - cy, x - cx
    u = dy * math.cos(t) + dx * math.sin(t)
    v = -dy * math.sin(t) + dx * math.cos(t)
    hu, hv = body["half_size_mm"]
    return rounded_rect_distance(u, v, hu, hv, body["corner_radius_mm"])


def _mm_grid(shape: tuple[int, int], spacing: tuple[float, float], box=None):
    r0, c0, r1, c1 = box if box is not None else (0, 0, shape[0], shape[1])
    y = (np.arange(r0, r1) * spacing[0])[:, None]
    x = (np.arange(c0, c1) * spacing[1])[None, :]
    return y, x


def vertebra_mask(truth: dict[str, Any], label: str, *, inset_mm: float = 0.0) -> np.ndarray:
    """Boolean mask of a vertebral body of a :func:`synthetic_spine` phantom.

    Parameters
    ----------
    truth : dict
        Ground truth returned by :func:`synthetic_spine` (or read from ``.truth.json``).
    label : str
        Vertebra label, e.g. ``"L2"``.
    inset_mm : float
        Shrink the body outline by this distance (mm); ``truth["roi_inset_mm"]`` gives
        the region over which the texture is exactly fBm.

    Returns
    -------
    (rows, cols) ndarray of bool
        True where the pixel centre lies at least ``inset_mm`` inside the outline.
    """
    shape = tuple(truth["shape"])
    spacing = tuple(truth["spacing_mm"])
    y, x = _mm_grid(shape, spacing)
    return _body_sd(truth["vertebrae"][label]["body"], y, x) <= -inset_mm


def vertebra_label_image(truth: dict[str, Any], *, inset_mm: float = 0.0) -> np.ndarray:
    """Label image of the true L1-L4 vertebral bodies of a :func:`synthetic_spine` phantom.

    Parameters
    ----------
    truth : dict
        Ground truth returned by :func:`synthetic_spine` (or read from ``.truth.json``).
    inset_mm : float
        Shrink every body outline by this distance (mm), as in :func:`vertebra_mask`.

    Returns
    -------
    (rows, cols) ndarray of uint8
        1..4 inside L1..L4 (pixel centres inside the outline), 0 elsewhere; the format
        :func:`tbscore.core.roi.rois_from_label_image` reads.
    """
    out = np.zeros(tuple(truth["shape"]), dtype=np.uint8)
    for i, lab in enumerate(LUMBAR_LABELS, start=1):
        out[vertebra_mask(truth, lab, inset_mm=inset_mm)] = i
    return out


def _curve(u: np.ndarray | float, amplitude: float) -> np.ndarray | float:
    """Lateral offset (mm) of the spine axis at ``u`` mm along it: a raised cosine.

    ``amplitude * cos^2(pi u / 240)`` for ``|u| < 120`` mm and 0 beyond: a single
    scoliosis-like C curve centred on the L1-L4 block that fades out by T11 and the
    sacrum.
    """
    uu = np.asarray(u, dtype=float)
    out = np.where(np.abs(uu) < _CURVE_HALF_MM, np.cos(np.pi * uu / (2 * _CURVE_HALF_MM)) ** 2, 0.0)
    out = amplitude * out
    return float(out) if np.ndim(u) == 0 else out


def _curve_slope(u: float, amplitude: float) -> float:
    """Derivative ``d offset / d u`` of :func:`_curve` (dimensionless)."""
    if abs(u) >= _CURVE_HALF_MM:
        return 0.0
    k = math.pi / (2 * _CURVE_HALF_MM)
    return -amplitude * k * math.sin(2 * k * u)


def _polygon_px(body: dict[str, Any], spacing: tuple[float, float], per_corner: int = 6):
    """Outline of a rounded rectangle as ``[row, col]`` pixel vertices (clockwise)."""
    hu, hv = body["half_size_mm"]
    pts = rounded_rect_outline(hu, hv, body["corner_radius_mm"], per_corner)
    t = math.radians(body["angle_deg"])
    cy, cx = body["center_mm"]
    out = []
    for u, v in pts.tolist():
        y = cy + u * math.cos(t) - v * math.sin(t)
        x = cx + u * math.sin(t) + v * math.cos(t)
        out.append([round(y / spacing[0], 2), round(x / spacing[1], 2)])
    return out


def _inner_box(
    body: dict[str, Any], shape: tuple[int, int], spacing: tuple[float, float], inset: float
) -> list[int] | None:
    """Largest centred axis-aligned pixel box whose pixels all lie ``inset`` inside."""
    cy, cx = body["center_mm"]
    hu, hv = body["half_size_mm"]
    t = math.radians(body["angle_deg"])
    ext_y = abs(hu * math.cos(t)) + abs(hv * math.sin(t))
    ext_x = abs(hu * math.sin(t)) + abs(hv * math.cos(t))
    for f in np.linspace(1.0, 0.05, 96):
        r0 = max(math.ceil((cy - f * ext_y) / spacing[0]), 0)
        r1 = min(math.floor((cy + f * ext_y) / spacing[0]) + 1, shape[0])
        c0 = max(math.ceil((cx - f * ext_x) / spacing[1]), 0)
        c1 = min(math.floor((cx + f * ext_x) / spacing[1]) + 1, shape[1])
        if r1 - r0 < 2 or c1 - c0 < 2:
            return None
        y, x = _mm_grid(shape, spacing, (r0, c0, r1, c1))
        if np.all(_body_sd(body, y, x) <= -inset):
            return [int(r0), int(c0), int(r1), int(c1)]
    return None


def synthetic_spine(
    hurst: float | Sequence[float] = 0.6,
    *,
    shape: tuple[int, int] = (512, 256),
    spacing_mm: tuple[float, float] = (1.0, 1.0),
    rng: RngLike = None,
    soft_tissue: float = 200.0,
    bone: float = 400.0,
    texture_scale: float = 12.0,
    noise_sd: float = 1.0,
    tilt_deg: float = 0.0,
    center_mm: tuple[float, float] | None = None,
    roi_inset_mm: float = 4.0,
    curvature_mm: float = 0.0,
    soft_tissue_gradient: tuple[float, float] = (0.0, 0.0),
    soft_tissue_variation: float = 0.03,
    pelvis: bool = True,
    crest_offset_mm: float = 0.0,
    lumbar_count: int = 5,
    ribs: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Synthetic DXA-like lumbar-spine image with exact fBm vertebral texture.

    The image holds a smooth soft-tissue background (projected abdominal thickness
    plus a gentle low-frequency variation), a spine column (posterior elements) with
    transverse processes, vertebral bodies T11-T12, L1-L4 and L5 as rounded rectangles
    (L1 26 x 38 mm ... L4 30 x 44 mm, height x width) separated by darker disc spaces
    (7-9 mm), and the iliac crests lateral to L5. Sizes are in mm, so the anatomy looks
    right for any (also non-square) pixel spacing. Higher values mean more attenuation
    (bone bright, MONOCHROME2 convention). Options add a scoliosis-like lateral curve
    of the spine, soft-tissue gradients and lumps, and remove the pelvis.

    Inside each vertebral body the gray level is ``level + T(x)`` where ``T`` is an exact
    isotropic fBm surface (see :func:`fbm_surface`) with variogram
    ``E[(T(x) - T(x + d))^2] = 2 texture_scale^2 (|d| / 1 mm)^(2H)``, so within
    ``truth["vertebrae"][label]["box"]`` the log-log variogram slope is ``2H`` (up to the
    white-noise floor ``2 noise_sd^2``). Independent Gaussian noise is added everywhere.

    Parameters
    ----------
    hurst : float or sequence of 4 floats
        Hurst exponent(s) in (0, 1), one for all vertebrae or one per L1..L4. T11/T12
        use the L1 value, L5 the L4 value.
    shape : (rows, cols)
        Image size in pixels. The field of view ``shape * spacing_mm`` must be at
        least 150 mm tall and 60 mm wide.
    spacing_mm : (row_mm, col_mm)
        Pixel spacing in mm (DICOM PixelSpacing order).
    rng : numpy.random.Generator, int or None
        Random generator or seed.
    soft_tissue : float
        Soft-tissue level at the body midline (image units).
    bone : float
        Vertebral-body level above the column (image units).
    texture_scale : float
        fBm amplitude (image units): the texture increment over 1 mm has standard
        deviation ``sqrt(2) * texture_scale``.
    noise_sd : float
        Standard deviation of the additive white Gaussian noise (image units).
    tilt_deg : float
        Rotation of the spine about its centre; positive moves the lower vertebrae
        towards higher column indices.
    center_mm : (y_mm, x_mm), optional
        Centre of the L1-L4 block; the image centre when omitted.
    roi_inset_mm : float
        Distance (mm) by which the ground-truth boxes stay inside the body outline
        (clear of the soft edge and the brighter cortical rim).
    curvature_mm : float
        Scoliosis-like lateral curve: the spine axis is displaced sideways by
        ``curvature_mm * cos^2(pi u / 240 mm)`` at ``u`` mm along the spine from the
        centre of the L1-L4 block (``|u| < 120`` mm, straight beyond), positive towards
        higher column indices. Each vertebral body (and its transverse processes) is
        rotated to the local direction of the curve; the pelvis is not displaced.
        15 mm gives local body rotations of up to about 11 degrees (a Cobb angle of
        about 22 degrees between the end vertebrae of the curve).
    soft_tissue_gradient : (float, float)
        Linear change of the soft-tissue level, as a fraction per 100 mm, along rows
        (downwards) and along columns (to the right), about the image centre; e.g.
        ``(0.0, 0.3)`` makes the right side of the abdomen 30 %/100 mm thicker.
    soft_tissue_variation : float
        Amplitude, as a fraction of ``soft_tissue``, of the smooth random lumps (about
        5 per image side) added to the soft tissue (0.03 by default).
    pelvis : bool
        Draw the iliac wings (their crests at about the disc above the last lumbar
        vertebra, L4-L5 by default). False gives an image cut above the pelvis.
    crest_offset_mm : float
        Moves the iliac wings along the spine by this distance (mm, positive caudally),
        for crest heights across the anatomical range (about -40 mm: the L3-L4 disc;
        +20 mm: the middle of L5).
    lumbar_count : int
        Lumbar-type (rib-free) vertebrae above the sacrum: 5 (default), 4 (no L5: a
        sacralised or missing lowest segment) or 6 (an extra L6 below L5, 29 x 46 mm);
        the pelvis follows the last one. Transitional anatomy for the label-safety
        stress set (:func:`label_stress_case`).
    ribs : bool
        Draw the 11th and 12th ribs (oblique bands from the transverse processes of
        T11 and T12, running 25 degrees below horizontal, 8 mm thick, 60 and 80 mm long):
        T12 is then the last rib-bearing vertebra. No random draws, so the other
        pixels are unchanged.

    Returns
    -------
    image : (rows, cols) ndarray of float64
        The phantom.
    truth : dict
        JSON-serialisable ground truth: ``hurst`` and ``expected_slope`` (label ->
        ``H`` and ``2H``), ``spacing_mm``, ``shape``, ``texture_scale``, ``noise_sd``,
        ``tilt_deg``, ``roi_inset_mm``, ``curvature_mm``, ``soft_tissue``, ``bone``,
        ``soft_tissue_gradient``, ``soft_tissue_variation``, ``pelvis`` (and
        ``crest_offset_mm``, ``lumbar_count``, ``ribs`` when not the default) and
        ``vertebrae``: label -> ``box``
        (``[row0, col0, row1, col1]``, half-open pixels, inside the body by
        ``roi_inset_mm``), ``body_box`` (bounding box of the body), ``polygon``
        (outline, ``[row, col]`` pixels) and ``body`` (``center_mm``,
        ``half_size_mm`` as (along-spine, across), ``corner_radius_mm``, ``angle_deg``),
        from which :func:`vertebra_mask` rebuilds the boolean mask of the whole body
        (:func:`vertebra_label_image` for all four) - T11, T12 and L5 are included
        when they lie in the image.
    """
    rng = np.random.default_rng(rng)
    if lumbar_count not in (4, 5, 6):
        raise ValueError(f"lumbar_count must be 4, 5 or 6, got {lumbar_count}")
    if np.ndim(hurst) == 0:
        hs = [_check_hurst(hurst)] * 4
    else:
        hs = [_check_hurst(h) for h in hurst]
        if len(hs) != 4:
            raise ValueError(f"hurst must be one value or four (L1..L4), got {len(hs)}")
    rows, cols = (int(n) for n in shape)
    sy, sx = (float(s) for s in spacing_mm)
    if min(sy, sx) <= 0:
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    fov_y, fov_x = rows * sy, cols * sx
    if fov_y < 150.0 or fov_x < 60.0:
        raise ValueError(
            f"field of view {fov_y:.0f} x {fov_x:.0f} mm is too small for L1-L4 "
            "(need at least 150 x 60 mm)"
        )
    hurst_of = dict(zip(LUMBAR_LABELS, hs, strict=True))
    hurst_of.update(T11=hs[0], T12=hs[0], L5=hs[3], L6=hs[3])

    # Spine layout along the axis u (mm, downwards), L1-L4 block centred at u = 0.
    bodies_mm = dict(_BODIES, L6=_BODIES["L5"])
    discs_mm = dict(_DISC_BELOW, L6=_DISC_BELOW["L5"])
    density = dict(_DENSITY, L6=_DENSITY["L5"])
    labels = [lab for lab in bodies_mm if not lab.startswith("L") or int(lab[1:]) <= lumbar_count]
    last_lumbar = labels[-1]
    block = LUMBAR_LABELS
    length = sum(bodies_mm[lab][0] for lab in block) + sum(discs_mm[lab] for lab in block[:-1])
    u_of: dict[str, float] = {}
    u = -length / 2.0
    for lab in labels[labels.index("L1") :]:
        u_of[lab] = u + bodies_mm[lab][0] / 2.0
        u += bodies_mm[lab][0] + discs_mm[lab]
    u = -length / 2.0
    for lab in reversed(labels[: labels.index("L1")]):
        u -= discs_mm[lab] + bodies_mm[lab][0]
        u_of[lab] = u + bodies_mm[lab][0] / 2.0

    cy, cx = center_mm if center_mm is not None else ((rows - 1) * sy / 2, (cols - 1) * sx / 2)
    t = math.radians(tilt_deg)
    cos_t, sin_t = math.cos(t), math.sin(t)

    def to_image(u: float, v: float) -> tuple[float, float]:
        return cy + u * cos_t - v * sin_t, cx + u * sin_t + v * cos_t

    y, x = _mm_grid((rows, cols), (sy, sx))
    dy, dx = y - cy, x - cx
    sv = -dy * sin_t + dx * cos_t  # across the spine (mm)
    curvature_mm = float(curvature_mm)
    if curvature_mm:
        su = dy * cos_t + dx * sin_t  # along the spine (mm)
        sv = sv - _curve(su, curvature_mm)
    grad_y, grad_x = (float(g) for g in soft_tissue_gradient)

    # Soft tissue: projected thickness of an elliptic abdomen plus low-frequency variation.
    half_body = 170.0
    thickness = np.sqrt(np.clip(1.0 - ((x - cx) / half_body) ** 2, 0.0, 1.0))
    image = soft_tissue * (0.55 + 0.45 * thickness) * (1.0 - 0.04 * (y - cy) / 100.0)
    if grad_y or grad_x:
        ramp = 1.0 + grad_y * (y - cy) / 100.0 + grad_x * (x - cx) / 100.0
        image = image * np.clip(ramp, 0.05, None)
    coarse = rng.standard_normal((6, 6))
    gy = np.linspace(0, 5, rows)[:, None]
    gx = np.linspace(0, 5, cols)[None, :]
    iy, ix = np.clip(gy.astype(int), 0, 4), np.clip(gx.astype(int), 0, 4)
    fy, fx = gy - iy, gx - ix
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    lowfreq = (
        coarse[iy, ix] * (1 - fy) * (1 - fx)
        + coarse[iy + 1, ix] * fy * (1 - fx)
        + coarse[iy, ix + 1] * (1 - fy) * fx
        + coarse[iy + 1, ix + 1] * fy * fx
    )
    image = image + float(soft_tissue_variation) * soft_tissue * lowfreq

    # Spine column (posterior elements), continuous along the whole image.
    image = image + 0.22 * bone * _smooth_step(np.abs(sv) - 28.0, 6.0)

    # Iliac wings lateral to the last lumbar vertebra (L5), crests at about the disc
    # above it (L4-L5), moved by crest_offset_mm.
    u_wing = u_of[last_lumbar] + 38.0 + float(crest_offset_mm)
    for side in (-1.0, 1.0) if pelvis else ():
        ilium = {
            "center_mm": to_image(u_wing, side * (bodies_mm[last_lumbar][1] / 2 + 55.0)),
            "angle_deg": tilt_deg - side * 18.0,
            "half_size_mm": (52.0, 40.0),
            "corner_radius_mm": 38.0,
        }
        crest_sd = _body_sd(ilium, y, x)
        image = image + 0.45 * bone * _smooth_step(crest_sd, 5.0)
        image = image + 0.2 * bone * (_smooth_step(crest_sd, 3.0) - _smooth_step(crest_sd + 4, 3.0))

    vertebrae: dict[str, Any] = {}
    for lab in labels:
        hu, hv = bodies_mm[lab][0] / 2.0, bodies_mm[lab][1] / 2.0
        u0 = u_of[lab]
        w0 = _curve(u0, curvature_mm) if curvature_mm else 0.0
        phi = math.atan(_curve_slope(u0, curvature_mm)) if curvature_mm else 0.0
        cos_p, sin_p = math.cos(phi), math.sin(phi)
        angle = float(tilt_deg) + math.degrees(phi)
        body = {
            "center_mm": [round(c, 6) for c in to_image(u0, w0)],
            "half_size_mm": [hu, hv],
            "corner_radius_mm": _CORNER_MM,
            "angle_deg": angle,
        }
        # Transverse processes (outside the body), in the frame of the body.
        for side in (-1.0, 1.0):
            pu, pv = -0.2 * hu, side * (hv + 12.0)
            tp = {
                "center_mm": to_image(u0 + pu * cos_p - pv * sin_p, w0 + pu * sin_p + pv * cos_p),
                "angle_deg": angle,
                "half_size_mm": (4.5, 14.0),
                "corner_radius_mm": 4.0,
            }
            image = image + 0.18 * bone * _smooth_step(_body_sd(tp, y, x), 2.0)
            if ribs and lab in ("T11", "T12"):
                # From the tip of the transverse process, laterally and 25 deg caudally.
                half_len = 40.0 if lab == "T11" else 30.0
                th = math.radians(25.0)
                ru = pu + half_len * math.sin(th)
                rv = side * (hv + 20.0 + half_len * math.cos(th))
                rib = {
                    "center_mm": to_image(
                        u0 + ru * cos_p - rv * sin_p, w0 + ru * sin_p + rv * cos_p
                    ),
                    "angle_deg": angle + side * (90.0 - 25.0),
                    "half_size_mm": (half_len, 4.0),
                    "corner_radius_mm": 3.5,
                }
                image = image + 0.2 * bone * _smooth_step(_body_sd(rib, y, x), 2.0)
        # Pixel bounding box of the body (with a margin for the soft edge).
        cos_b, sin_b = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        ext_y = abs(hu * cos_b) + abs(hv * sin_b) + _EDGE_MM
        ext_x = abs(hu * sin_b) + abs(hv * cos_b) + _EDGE_MM
        bcy, bcx = body["center_mm"]
        r0 = max(math.floor((bcy - ext_y) / sy), 0)
        r1 = min(math.ceil((bcy + ext_y) / sy) + 1, rows)
        c0 = max(math.floor((bcx - ext_x) / sx), 0)
        c1 = min(math.ceil((bcx + ext_x) / sx) + 1, cols)
        texture = _fbm_mm((max(r1 - r0, 2), max(c1 - c0, 2)), (sy, sx), hurst_of[lab], rng)
        if r1 - r0 < 2 or c1 - c0 < 2:
            continue  # body outside the field of view (the draw keeps the stream fixed)
        texture = texture[: r1 - r0, : c1 - c0]
        by, bx = _mm_grid((rows, cols), (sy, sx), (r0, c0, r1, c1))
        sd = _body_sd(body, by, bx)
        inside = _smooth_step(sd, _EDGE_MM)
        core = sd <= -roi_inset_mm
        if np.any(core):
            texture = texture - texture[core].mean()
        rim = _smooth_step(sd, _EDGE_MM) - _smooth_step(sd + 2.0, _EDGE_MM)
        level = bone * density[lab]
        image[r0:r1, c0:c1] += inside * (level + texture_scale * texture) + 0.15 * bone * rim
        entry = {
            "hurst": hurst_of[lab],
            "body_box": [int(r0), int(c0), int(r1), int(c1)],
            "box": _inner_box(body, (rows, cols), (sy, sx), roi_inset_mm),
            "polygon": _polygon_px(body, (sy, sx)),
            "body": body,
        }
        vertebrae[lab] = entry

    missing = [lab for lab in LUMBAR_LABELS if vertebrae.get(lab, {}).get("box") is None]
    if missing:
        raise ValueError(f"vertebrae {missing} fall outside the image; move center_mm")
    image = image + noise_sd * rng.standard_normal(image.shape)

    truth = {
        "hurst": {lab: hurst_of[lab] for lab in LUMBAR_LABELS},
        "expected_slope": {lab: 2.0 * hurst_of[lab] for lab in LUMBAR_LABELS},
        "spacing_mm": [sy, sx],
        "shape": [rows, cols],
        "texture_scale": float(texture_scale),
        "noise_sd": float(noise_sd),
        "tilt_deg": float(tilt_deg),
        "roi_inset_mm": float(roi_inset_mm),
        "curvature_mm": curvature_mm,
        "soft_tissue": float(soft_tissue),
        "bone": float(bone),
        "soft_tissue_gradient": [grad_y, grad_x],
        "soft_tissue_variation": float(soft_tissue_variation),
        "pelvis": bool(pelvis),
        "vertebrae": vertebrae,
    }
    # Recorded only when used, so the truth files of the bundled samples stay as written.
    if crest_offset_mm:
        truth["crest_offset_mm"] = float(crest_offset_mm)
    if lumbar_count != 5:
        truth["lumbar_count"] = int(lumbar_count)
    if ribs:
        truth["ribs"] = True
    return image, truth


# --------------------------------------------------------------------------- sample set

#: The bundled sample set: one entry per phantom written by :func:`write_sample_set`.
SAMPLE_SET: tuple[dict[str, Any], ...] = (
    {
        "name": "phantom_a_square",
        "description": "square 1.0 x 1.0 mm pixels, 16-bit MONOCHROME2, H = 0.6",
        "hurst": 0.6,
        "shape": (200, 160),
        "spacing_mm": (1.0, 1.0),
        "tilt_deg": 0.0,
        "photometric": "MONOCHROME2",
        "bits": 16,
        "spacing_tag": "PixelSpacing",
        "patient": "A",
    },
    {
        "name": "phantom_b_nonsquare",
        "description": "non-square 1.05 x 0.60 mm pixels (GE Lunar-like), 16-bit, H = 0.4",
        "hurst": 0.4,
        "shape": (190, 250),
        "spacing_mm": (1.05, 0.60),
        "tilt_deg": 0.0,
        "photometric": "MONOCHROME2",
        "bits": 16,
        "spacing_tag": "PixelSpacing",
        "patient": "B",
    },
    {
        "name": "phantom_c_monochrome1",
        "description": "MONOCHROME1 (inverted storage), 8-bit, 0.5 x 0.5 mm pixels, H = 0.7",
        "hurst": 0.7,
        "shape": (400, 300),
        "spacing_mm": (0.5, 0.5),
        "tilt_deg": 0.0,
        "photometric": "MONOCHROME1",
        "bits": 8,
        "spacing_tag": "PixelSpacing",
        "patient": "C",
    },
    {
        "name": "phantom_d_mixed_hurst",
        "description": "per-vertebra H (L1..L4 = 0.35, 0.45, 0.55, 0.65), 0.8 mm pixels, "
        "4 degree tilt, spacing in ImagerPixelSpacing, 16-bit",
        "hurst": (0.35, 0.45, 0.55, 0.65),
        "shape": (250, 190),
        "spacing_mm": (0.8, 0.8),
        "tilt_deg": 4.0,
        "photometric": "MONOCHROME2",
        "bits": 16,
        "spacing_tag": "ImagerPixelSpacing",
        "patient": "D",
    },
)

_SAMPLE_DATE = "20261123"


def _realised_slope(image: np.ndarray, box: Sequence[int], spacing: Sequence[float]) -> float:
    """Least-squares log-log slope of the row/column variogram at lags 1..4 px in ``box``."""
    r0, c0, r1, c1 = box
    a = image[r0:r1, c0:c1]
    d, g = [], []
    for k in range(1, 5):
        d += [k * spacing[0], k * spacing[1]]
        g += [np.mean((a[k:] - a[:-k]) ** 2), np.mean((a[:, k:] - a[:, :-k]) ** 2)]
    return float(np.polyfit(np.log(d), np.log(g), 1)[0])


def _decoded(path: Path) -> np.ndarray:
    """Gray levels of a written file as a reader sees them (bone bright, rescaled)."""
    import pydicom

    ds = pydicom.dcmread(path)
    values = ds.pixel_array.astype(np.float64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        values = (2.0 ** int(ds.BitsStored) - 1.0) - values
    return values * float(ds.get("RescaleSlope", 1.0)) + float(ds.get("RescaleIntercept", 0.0))


def write_sample_set(outdir: str | Path, seed: int = 20261123) -> list[Path]:
    """Write the bundled phantom sample set (see :data:`SAMPLE_SET`).

    For each phantom ``NAME`` three files are written: ``NAME.dcm`` (DICOM Secondary
    Capture, modality BMD, fake patient ``PHANTOM^<letter>``, F, 65 y, 1.62 m, 68 kg),
    ``NAME.roi.json`` (``tbscore-roi/1``, pixel boxes L1-L4 inside the vertebral bodies)
    and ``NAME.truth.json`` (ground truth: ``H`` and expected slope ``2H`` per vertebra,
    spacing, boxes, body outlines, seed, generator version, and the slope realised in
    each box by a plain row/column variogram at lags 1-4 px). A ``README.md`` describes
    the set. The output is byte-for-byte deterministic for a given ``seed`` (UIDs are
    derived from the seed and the name).

    Parameters
    ----------
    outdir : str or Path
        Output folder (created if needed).
    seed : int
        Master seed; phantom ``i`` uses ``SeedSequence(seed).spawn(n)[i]``.

    Returns
    -------
    list of Path
        All files written, in order.
    """
    from tbscore.io.write import write_secondary_capture

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    streams = np.random.SeedSequence(seed).spawn(len(SAMPLE_SET))
    written: list[Path] = []
    lines = [
        "# tbscore phantom sample set",
        "",
        f"Synthetic lumbar-spine DXA-like images written by `tbscore.sim.phantom` "
        f"{__version__} with seed {seed}.",
        "Regenerate with `python -m tbscore.sim.phantom OUTDIR` (or `tbscore phantom OUTDIR`).",
        "Inside each vertebral body the texture is an exact fractional Brownian surface of",
        "Hurst exponent H, so the log-log variogram slope is 2H (see `NAME.truth.json`).",
        "All patient data are fake.",
        "",
        "| file | description |",
        "|---|---|",
    ]
    for spec, stream in zip(SAMPLE_SET, streams, strict=True):
        name = spec["name"]
        image, truth = synthetic_spine(
            spec["hurst"],
            shape=spec["shape"],
            spacing_mm=spec["spacing_mm"],
            tilt_deg=spec["tilt_deg"],
            rng=np.random.default_rng(stream),
        )
        spacing = truth["spacing_mm"]
        patient = {
            "name": f"PHANTOM^{spec['patient']}",
            "id": f"TBS-PHANTOM-{spec['patient']}",
            "sex": "F",
            "age": "065Y",
            "birth_date": "19610315",
            "height_m": 1.62,
            "weight_kg": 68.0,
        }
        dcm = write_secondary_capture(
            outdir / f"{name}.dcm",
            image,
            spacing,
            photometric=spec["photometric"],
            bits=spec["bits"],
            patient=patient,
            study_date=_SAMPLE_DATE,
            study_time="120000",
            series_description=f"tbscore {name}",
            spacing_tag=spec["spacing_tag"],
            extra={"ImageComments": f"tbscore synthetic phantom: {spec['description']}"},
            uid_entropy=f"tbscore-phantom/{seed}/{name}",
        )
        roi = {
            "format": "tbscore-roi/1",
            "units": "px",
            "image_shape": truth["shape"],
            "pixel_spacing_mm": spacing,
            "source": f"tbscore.phantom ground truth ({name})",
            "vertebrae": [
                {"label": lab, "box": truth["vertebrae"][lab]["box"]} for lab in LUMBAR_LABELS
            ],
        }
        decoded = _decoded(dcm)
        realised = {
            lab: round(_realised_slope(decoded, truth["vertebrae"][lab]["box"], spacing), 4)
            for lab in LUMBAR_LABELS
        }
        truth_doc = {
            "format": "tbscore-phantom-truth/1",
            "name": name,
            "description": spec["description"],
            "generator": "tbscore.sim.phantom.synthetic_spine",
            "generator_version": __version__,
            "seed": seed,
            "stream": SAMPLE_SET.index(spec),
            "dicom": {
                "file": dcm.name,
                "photometric": spec["photometric"],
                "bits": spec["bits"],
                "spacing_tag": spec["spacing_tag"],
            },
            **truth,
            "realised_slope": realised,
            "realised_slope_method": "least squares of log mean squared increment vs log lag "
            "(mm), row and column lags 1-4 px, inside box, "
            "image as decoded from NAME.dcm (MONOCHROME2 "
            "convention, rescale applied)",
        }
        roi_path = outdir / f"{name}.roi.json"
        truth_path = outdir / f"{name}.truth.json"
        roi_path.write_text(json.dumps(roi, indent=1) + "\n")
        truth_path.write_text(json.dumps(truth_doc, indent=1) + "\n")
        written += [dcm, roi_path, truth_path]
        lines.append(f"| `{name}.dcm` | {spec['description']} |")
    lines += [
        "",
        "Each `NAME.dcm` comes with `NAME.roi.json` (tbscore-roi/1 boxes) and",
        "`NAME.truth.json` (ground truth).",
        "",
    ]
    readme = outdir / "README.md"
    readme.write_text("\n".join(lines))
    written.append(readme)
    return written


if __name__ == "__main__":
    import sys

    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m tbscore.sim.phantom OUTDIR [SEED]")
    for _path in write_sample_set(sys.argv[1], *(int(a) for a in sys.argv[2:])):
        print(_path)


# --------------------------------------------------------------------------- label stress set

#: Crop conditions of :func:`label_stress_case`.
LABEL_STRESS_CROPS: tuple[str, ...] = ("none", "top at T12/L1", "bottom at L4/L5")


def label_stress_case(
    rng: RngLike = None,
    *,
    crest_offset_mm: float | None = None,
    lumbar_count: int | None = None,
    crop: str | None = None,
) -> tuple[np.ndarray, tuple[float, float], dict[str, Any]]:
    """One phantom of the label-safety stress set (issue 15).

    Anatomy and field drawn at random unless given: iliac-crest height across the
    anatomical range (``crest_offset_mm`` uniform in -40..+20 mm: from the L3-L4 disc to
    the middle of L5), 4, 5 or 6 lumbar-type vertebrae (probabilities 0.2, 0.6, 0.2),
    the 11th and 12th ribs drawn (T12 is the last rib-bearing vertebra), and the field
    cropped at the T12/L1 disc (ribs and thoracic bodies out of view), at the L4/L5 disc
    (pelvis mostly out of view) or not at all (equal chances), with a random tilt (+-8
    deg), noise, soft tissue, pixel spacing and Hurst exponent.

    Returns
    -------
    image : ndarray
    spacing : (row_mm, col_mm)
    truth : dict
        As :func:`synthetic_spine`, plus ``crop``; ``truth["vertebrae"]`` names every body
        in the field anatomically (T11, T12, L1 = the first rib-free vertebra, ...).
    """
    rng = np.random.default_rng(rng)
    spacings = ((1.0, 1.0), (1.05, 0.6), (0.8, 0.8), (0.6, 1.05))
    sp = spacings[int(rng.integers(len(spacings)))]
    offset = float(rng.uniform(-40.0, 20.0)) if crest_offset_mm is None else crest_offset_mm
    count = int(rng.choice([4, 5, 5, 5, 6])) if lumbar_count is None else int(lumbar_count)
    crop = LABEL_STRESS_CROPS[int(rng.integers(3))] if crop is None else crop
    if crop not in LABEL_STRESS_CROPS:
        raise ValueError(f"crop must be one of {LABEL_STRESS_CROPS}, got {crop!r}")
    tilt = float(rng.uniform(-8.0, 8.0))
    kw = {
        "tilt_deg": tilt,
        "noise_sd": float(rng.choice([1.0, 10.0, 20.0])),
        "soft_tissue": float(rng.uniform(150, 400)),
        "bone": float(rng.uniform(300, 500)),
        "soft_tissue_variation": float(rng.uniform(0, 0.06)),
    }
    hurst = float(rng.uniform(0.3, 0.7))
    fov_x = float(rng.uniform(170, 220))
    # L1-L4 block: 136 mm long, centred at u = 0; T12/L1 disc at u = -71, L4/L5 at +72.5.
    half_block = 68.0
    if crop == "top at T12/L1":
        top = half_block + 3.0
        fov_y = float(rng.uniform(200, 260))
        cy = top
    elif crop == "bottom at L4/L5":
        fov_y = float(rng.uniform(200, 260))
        cy = fov_y - (half_block + 4.5)
    else:
        fov_y = float(rng.uniform(240, 300))
        cy = fov_y / 2 + float(rng.uniform(-15, 15))
    shape = (int(fov_y / sp[0]), int(fov_x / sp[1]))
    image, truth = synthetic_spine(
        hurst,
        shape=shape,
        spacing_mm=sp,
        rng=int(rng.integers(2**31)),
        center_mm=(cy, (shape[1] - 1) * sp[1] / 2),
        crest_offset_mm=offset,
        lumbar_count=count,
        ribs=True,
        **kw,
    )
    truth.update(crop=crop, crest_offset_mm=offset, lumbar_count=count, ribs=True)
    return image, sp, truth
