"""A simple DXA imaging model: from a 3-D bone volume to a noisy density image.

Chain (every length in mm, every function a plain function on numpy arrays):

1. **Projection** (:func:`project`): bone path length through the vertebral depth along
   the antero-posterior axis (axis 2 of a ``(cranio-caudal, lateral, AP)`` volume),
   parallel beam, optionally tilted (patient repositioning) by shearing the slices.
2. **Beer–Lambert** (:func:`expected_counts`): primary photons per mm^2 behind the
   patient, ``Phi * exp(-(mu_b * (t_b + t_cort) + mu_m * (D - t_b) + mu_s * T))`` with
   ``t_b`` the trabecular path, ``t_cort`` a uniform cortical-shell path, ``D`` the
   vertebral depth (the rest of the depth is marrow) and ``T`` the soft tissue outside
   the vertebra.
3. **Soft tissue** adds attenuation (fewer photons, more quantum noise) and scatter:
   a scatter-to-primary ratio growing linearly with the tissue crossed, spread by a broad
   Gaussian (``scatter_sigma_mm``), and a small extra blur of the primary growing with
   the soft-tissue thickness (small-angle scatter and geometric unsharpness).
4. **Detector blur**: Gaussian PSF (``psf_sigma_mm``).
5. **Sampling** (:func:`area_resample`): area averaging of the photon density onto
   pixels at real DXA spacings (square or not, e.g. 1.05 x 0.60 mm).
6. **Quantum noise** (:func:`poisson_counts`): Poisson counts per pixel.
7. **Output** (:func:`log_attenuation`): ``-ln(N / N0)`` per energy; with two energies
   (:func:`dual_energy_bone`) the standard two-material decomposition gives the
   bone-equivalent areal density image in g/cm^2, which is what a DXA "density image"
   is. :func:`simulate_dxa` runs the whole chain.

Attenuation coefficients (:data:`MU_RHO`) are NIST XCOM / Hubbell & Seltzer (NIST
Standard Reference Database 126, NISTIR 5632) mass attenuation coefficients, total with
coherent scattering, for "Bone, Cortical (ICRU-44)" (density 1.92 g/cm^3) and "Tissue,
Soft (ICRU-44)" (1.06 g/cm^3), interpolated log-log between tabulated energies.
Trabecular bone tissue is taken as cortical-bone material (tissue mineralisation is
similar); marrow as soft tissue at 1.0 g/cm^3 (between red, ~1.03, and yellow, ~0.98).
Default energies 40 and 70 keV are the effective energies of K-edge-filtered DXA
(about 38 and 70 keV for cerium filters). A single energy (e.g. 50 keV) gives a
single-energy log-attenuation image.

Incident fluence: the default 5e5 photons/mm^2 per energy corresponds to an entrance
air kerma of about 37 µGy (22 µGy at 40 keV, 1 / (E * mu_en/rho_air) = 2.28e4
photons/mm^2/µGy with mu_en/rho_air = 0.0683 cm^2/g; 15 µGy at 70 keV, 3.3e4
photons/mm^2/µGy with ~0.027 cm^2/g), the entrance skin dose listed for an AP-spine scan
on a GE Lunar Prodigy (37 µGy; 200 µGy for a Hologic QDR-4500, 10 µGy for a Lunar DPX:
Table 2 of Quant Imaging Med Surg 2020;10:1723-1738). It is an order-of-magnitude
anchor, not a scanner specification: detectors, spectra, filtration and the vendors'
image processing differ, which is why the validation study sweeps it.

Scatter and extra-blur constants are assumptions (narrow-fan / pencil-beam DXA has a low
scatter fraction): ``scatter_spr_per_cm = 0.005`` (SPR 0.1 behind 20 cm of tissue),
``scatter_sigma_mm = 10``, ``tissue_blur_mm_per_cm = 0.01`` (Gaussian sigma added in
quadrature per cm of soft tissue: the geometric unsharpness of a ~0.5 mm focal spot grows
by about this much per cm that the spine moves away from the detector). Detector PSF
sigma 0.4 mm (FWHM 0.94 mm), of the order of the ~1 mm resolution of DXA. Pixel values
are not smoothed or otherwise post-processed (vendors' processing is not public).

Added for issue #15 (docs/validation.md part 1; every value cited where it is defined):

* **Vertebral body** (:func:`body_paths`): an elliptic cylinder (:data:`BODY_WIDTH_MM` x
  :data:`BODY_DEPTH_MM`) cut from the trabecular volume, with an analytic cortical shell
  (:data:`CORTICAL_SHELL_MM`) and soft tissue outside it at constant patient thickness
  (``simulate_dxa(..., cortical_path_mm=, chord_mm=)``); regional density variation at
  2-10 mm comes from :func:`tbscore.sim.microarch.density_modulation`.
* **System MTF** (:func:`system_mtf`, :func:`scanner_params`): anisotropic Gaussian x
  rectangular motion blur, before the pixel aperture of :func:`area_resample`; the
  Gaussian is solved (:func:`sigma_for_limiting_resolution`) so that the total MTF is 0.1
  at the published limiting resolution (:data:`LIMITING_RESOLUTION_LP_MM`).
* **Vendor-like processing** (:func:`vendor_smooth`, ``DXAParams.post_filter``): an
  option, off by default, and an assumption.
* **Noise at the acquisition's counts** (:func:`bone_noise_sd`): the analytic per-pixel SD
  of the bone image for the expected detected photons, which the Poisson simulation
  reproduces (tests/test_dxa_model.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from numba import njit, prange
from scipy import ndimage as ndi

__all__ = [
    "MU_RHO",
    "DENSITY_G_CM3",
    "DXAParams",
    "mass_attenuation",
    "linear_attenuation",
    "project",
    "transform_2d",
    "gaussian_blur",
    "area_resample",
    "expected_counts",
    "poisson_counts",
    "log_attenuation",
    "dual_energy_bone",
    "simulate_dxa",
    "BODY_WIDTH_MM",
    "BODY_DEPTH_MM",
    "CORTICAL_SHELL_MM",
    "LIMITING_RESOLUTION_LP_MM",
    "ellipse_chord_mm",
    "body_paths",
    "rect_transfer",
    "system_mtf",
    "sigma_for_limiting_resolution",
    "vendor_smooth",
    "bone_noise_sd",
    "scanner_params",
]

RngLike = np.random.Generator | int | np.random.SeedSequence | None

#: Mass attenuation coefficients mu/rho (cm^2/g), NIST SRD 126 (Hubbell & Seltzer),
#: ICRU-44 compositions, at the tabulated energies (keV).
MU_RHO: dict[str, dict[float, float]] = {
    "bone": {  # Bone, Cortical (ICRU-44)
        30.0: 1.331,
        40.0: 0.6655,
        50.0: 0.4242,
        60.0: 0.3148,
        80.0: 0.2229,
        100.0: 0.1855,
    },
    "soft": {  # Tissue, Soft (ICRU-44)
        30.0: 0.3790,
        40.0: 0.2688,
        50.0: 0.2264,
        60.0: 0.2048,
        80.0: 0.1823,
        100.0: 0.1693,
    },
}

#: Densities (g/cm^3): ICRU-44 cortical bone and soft tissue; marrow (see module doc).
DENSITY_G_CM3: dict[str, float] = {"bone": 1.92, "soft": 1.06, "marrow": 1.0}


def mass_attenuation(material: str, energy_kev: float) -> float:
    """Mass attenuation coefficient (cm^2/g), log-log interpolated in :data:`MU_RHO`.

    Parameters
    ----------
    material : {"bone", "soft", "marrow"}
        ``"marrow"`` has the soft-tissue composition.
    energy_kev : float
        Photon energy (keV), 30-100.
    """
    table = MU_RHO["soft" if material == "marrow" else material]
    e = np.array(sorted(table))
    if not e[0] <= energy_kev <= e[-1]:
        raise ValueError(f"energy {energy_kev} keV outside the table ({e[0]}-{e[-1]} keV)")
    mu = np.array([table[k] for k in e])
    return float(np.exp(np.interp(np.log(energy_kev), np.log(e), np.log(mu))))


def linear_attenuation(material: str, energy_kev: float) -> float:
    """Linear attenuation coefficient (1/mm) at the density of :data:`DENSITY_G_CM3`."""
    return mass_attenuation(material, energy_kev) * DENSITY_G_CM3[material] / 10.0


# --------------------------------------------------------------------------- geometry


@njit(cache=True, parallel=True)
def _shear_project(vol, shift0, shift1):  # pragma: no cover - compiled
    n0, n1, n2 = vol.shape
    out = np.zeros((n0, n1), dtype=np.float64)
    for i in prange(n0):
        for k in range(n2):
            s0 = shift0[k]
            s1 = shift1[k]
            f0 = int(math.floor(s0))
            f1 = int(math.floor(s1))
            w0 = s0 - f0
            w1 = s1 - f1
            ia = (i + f0) % n0
            ib = (ia + 1) % n0
            for j in range(n1):
                ja = (j + f1) % n1
                jb = (ja + 1) % n1
                out[i, j] += (1 - w0) * ((1 - w1) * vol[ia, ja, k] + w1 * vol[ia, jb, k]) + w0 * (
                    (1 - w1) * vol[ib, ja, k] + w1 * vol[ib, jb, k]
                )
    return out


def project(
    volume: np.ndarray, voxel_mm: float, *, tilt_deg: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Path length (mm) through a bone volume along axis 2 (parallel beam).

    Parameters
    ----------
    volume : ndarray, shape (n0, n1, n2)
        Bone indicator (bool) or bone volume fraction per voxel, axes
        ``(cranio-caudal, lateral, antero-posterior)``; axis 2 is the beam.
    voxel_mm : float
        Isotropic voxel size (mm).
    tilt_deg : (float, float)
        Beam tilt (degrees) towards axis 0 and axis 1. Each slice ``k`` along the beam is
        shifted by ``(k - n2/2) * tan(tilt)`` voxels (bilinear, periodic wrap) and the
        path is scaled by the ray length ``1 / cos``: the line integral along the tilted
        ray through a periodic specimen.

    Returns
    -------
    ndarray of float64, shape (n0, n1)
        Bone path length (mm).
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3-D, got {vol.ndim}-D")
    t0, t1 = (math.radians(float(a)) for a in tilt_deg)
    if t0 == 0.0 and t1 == 0.0:
        return vol.sum(axis=2, dtype=np.float64) * voxel_mm
    k = np.arange(vol.shape[2]) - (vol.shape[2] - 1) / 2.0
    scale = math.sqrt(1.0 + math.tan(t0) ** 2 + math.tan(t1) ** 2)
    v = vol.astype(np.float32) if vol.dtype == np.bool_ else vol
    out = _shear_project(v, k * math.tan(t0), k * math.tan(t1))
    return out * voxel_mm * scale


def transform_2d(
    image: np.ndarray,
    spacing_mm: float,
    *,
    shift_mm: tuple[float, float] = (0.0, 0.0),
    rotation_deg: float = 0.0,
) -> np.ndarray:
    """Rotate (about the centre) and shift a periodic 2-D map; bilinear, wrap mode.

    Parameters
    ----------
    image : ndarray, 2-D
    spacing_mm : float
        Pixel size of ``image`` (mm).
    shift_mm : (float, float)
        Translation of the content (mm) along rows and columns.
    rotation_deg : float
        In-plane rotation (degrees, counter-clockwise).

    Returns
    -------
    ndarray, same shape
    """
    a = math.radians(rotation_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    centre = (np.asarray(image.shape) - 1) / 2.0
    shift = np.asarray(shift_mm, dtype=float) / spacing_mm
    # output x <- input rot^-1 (x - centre - shift) + centre
    inv = rot.T
    offset = centre - inv @ (centre + shift)
    return ndi.affine_transform(image, inv, offset=offset, order=1, mode="grid-wrap")


def _gaussian_transfer(
    shape: tuple[int, int], sigma_mm: float, spacing_mm: float | tuple[float, float]
) -> np.ndarray:
    """Real-FFT transfer function of a Gaussian blur (sigma in mm) on a periodic grid."""
    sp = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (2,))
    f0 = np.fft.fftfreq(shape[0], d=sp[0])[:, None]
    f1 = np.fft.rfftfreq(shape[1], d=sp[1])[None, :]
    return np.exp(-2.0 * (math.pi * sigma_mm) ** 2 * (f0 * f0 + f1 * f1))


def gaussian_blur(
    image: np.ndarray, sigma_mm: float, spacing_mm: float | tuple[float, float]
) -> np.ndarray:
    """Gaussian blur with ``sigma_mm`` (periodic, via FFT).

    Parameters
    ----------
    image : ndarray, 2-D
    sigma_mm : float
        Standard deviation of the Gaussian (mm); 0 returns a copy.
    spacing_mm : float or (float, float)
        Pixel spacing of ``image``.
    """
    img = np.asarray(image, dtype=np.float64)
    if sigma_mm <= 0:
        return img.copy()
    h = _gaussian_transfer(img.shape, sigma_mm, spacing_mm)
    return np.fft.irfft2(np.fft.rfft2(img) * h, s=img.shape)


def _overlap_matrix(n_in: int, d_in: float, n_out: int, d_out: float, offset: float):
    """Fraction of each input cell inside each output cell (rows: output)."""
    a_in = np.arange(n_in + 1) * d_in
    a_out = offset + np.arange(n_out + 1) * d_out
    lo = np.maximum(a_out[:-1, None], a_in[None, :-1])
    hi = np.minimum(a_out[1:, None], a_in[None, 1:])
    return np.clip(hi - lo, 0.0, None) / d_out


def area_resample(
    image: np.ndarray,
    in_spacing_mm: float | tuple[float, float],
    out_spacing_mm: tuple[float, float],
    *,
    offset_mm: tuple[float, float] = (0.0, 0.0),
    out_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Area-average a fine image onto coarser pixels (exact overlap weights).

    Input pixel ``(i, j)`` covers ``[i*di, (i+1)*di) x [j*dj, (j+1)*dj)`` (mm); output
    pixel ``(r, c)`` covers ``offset + [r*DR, (r+1)*DR) x [c*DC, (c+1)*DC)``. Each output
    value is the mean of the input over its area (input cells cut by an output edge
    count with their overlap fraction), so a pixel measures the mean photon density over
    its aperture.

    Parameters
    ----------
    image : ndarray, 2-D
    in_spacing_mm : float or (float, float)
        Input pixel size (mm).
    out_spacing_mm : (float, float)
        Output ``(row_mm, col_mm)``; may be non-square and need not be a multiple of the
        input spacing.
    offset_mm : (float, float)
        Position of the output grid origin in the input (mm), ``>= 0``.
    out_shape : (int, int), optional
        Default: as many whole output pixels as fit inside the input.

    Returns
    -------
    ndarray of float64, shape ``out_shape``
    """
    img = np.asarray(image, dtype=np.float64)
    di, dj = np.broadcast_to(np.asarray(in_spacing_mm, dtype=float), (2,))
    dr, dc = (float(v) for v in out_spacing_mm)
    o0, o1 = (float(v) for v in offset_mm)
    if min(dr, dc, di, dj) <= 0 or min(o0, o1) < 0:
        raise ValueError("spacings must be positive and offsets non-negative")
    if out_shape is None:
        out_shape = (
            int(math.floor((img.shape[0] * di - o0) / dr + 1e-9)),
            int(math.floor((img.shape[1] * dj - o1) / dc + 1e-9)),
        )
    if out_shape[0] * dr + o0 > img.shape[0] * di + 1e-9 or (
        out_shape[1] * dc + o1 > img.shape[1] * dj + 1e-9
    ):
        raise ValueError("output grid extends beyond the input")
    wr = _overlap_matrix(img.shape[0], di, out_shape[0], dr, o0)
    wc = _overlap_matrix(img.shape[1], dj, out_shape[1], dc, o1)
    return wr @ img @ wc.T


# --------------------------------------------------------------------------- physics


@dataclass(frozen=True)
class DXAParams:
    """Acquisition parameters of :func:`simulate_dxa` (lengths in mm).

    Attributes
    ----------
    spacing_mm : (float, float)
        Output pixel spacing ``(row_mm, col_mm)``.
    energies_kev : tuple of float
        One energy: single-energy log-attenuation image; two: dual-energy bone image.
    fluence_per_mm2 : tuple of float
        Incident photons per mm^2 at each energy; ``inf`` gives a noiseless image.
    vertebral_depth_mm : float
        Antero-posterior depth of the trabecular volume (marrow fills what is not bone).
    soft_tissue_mm : float
        Soft tissue crossed outside the vertebra.
    cortical_mm : float
        Uniform cortical-shell bone path (anterior + posterior shells).
    psf_sigma_mm : float
        Detector PSF (Gaussian sigma).
    scatter_spr_per_cm : float
        Scatter-to-primary ratio per cm of tissue crossed (soft tissue + vertebra).
    scatter_sigma_mm : float
        Width of the scatter spread (Gaussian sigma).
    tissue_blur_mm_per_cm : float
        Extra blur sigma per cm of soft tissue (added in quadrature to the PSF).
    offset_mm : (float, float)
        Sampling-grid origin in the input map (repositioning by sub-pixel amounts).
    motion_blur_mm : (float, float)
        Width (mm) of the rectangular blur along rows and columns from the detector moving
        while it integrates (a scanning DXA moves one pixel per sample along its scan
        axis); 0 = none. Part of the system MTF (:func:`system_mtf`).
    post_filter : {"none", "binomial3"}
        Vendor-like image processing applied to the output image (:func:`vendor_smooth`;
        an assumption, the vendors' processing is not public).

    ``psf_sigma_mm`` may be one number or ``(row_mm, col_mm)`` (anisotropic system blur).
    """

    spacing_mm: tuple[float, float] = (1.0, 1.0)
    energies_kev: tuple[float, ...] = (40.0, 70.0)
    fluence_per_mm2: tuple[float, ...] = (5e5, 5e5)
    vertebral_depth_mm: float = 30.0
    soft_tissue_mm: float = 150.0
    cortical_mm: float = 0.8
    psf_sigma_mm: float | tuple[float, float] = 0.4
    scatter_spr_per_cm: float = 0.005
    scatter_sigma_mm: float = 10.0
    tissue_blur_mm_per_cm: float = 0.01
    offset_mm: tuple[float, float] = field(default=(0.0, 0.0))
    motion_blur_mm: tuple[float, float] = (0.0, 0.0)
    post_filter: str = "none"

    def with_(self, **changes: object) -> DXAParams:
        """Copy with some fields changed."""
        return replace(self, **changes)


def expected_counts(
    bone_path_mm: np.ndarray,
    energy_kev: float,
    fluence_per_mm2: float,
    *,
    vertebral_depth_mm: float = 30.0,
    soft_tissue_mm: float = 150.0,
    cortical_mm: float = 0.0,
) -> np.ndarray:
    """Primary photons per mm^2 behind the patient (Beer–Lambert, monoenergetic).

    Parameters
    ----------
    bone_path_mm : ndarray
        Trabecular bone path length through the vertebral depth (mm).
    energy_kev : float
    fluence_per_mm2 : float
        Incident photons per mm^2.
    vertebral_depth_mm : float
        Depth of the trabecular volume; ``depth - bone`` is marrow (mm).
    soft_tissue_mm : float
        Soft tissue outside the vertebra (mm).
    cortical_mm : float
        Uniform extra bone path (mm).

    Returns
    -------
    ndarray of float64 (photons/mm^2)
    """
    tb = np.asarray(bone_path_mm, dtype=np.float64)
    mu_b = linear_attenuation("bone", energy_kev)
    mu_m = linear_attenuation("marrow", energy_kev)
    mu_s = linear_attenuation("soft", energy_kev)
    line = mu_b * (tb + cortical_mm) + mu_m * (vertebral_depth_mm - tb) + mu_s * soft_tissue_mm
    return fluence_per_mm2 * np.exp(-line)


def poisson_counts(expected: np.ndarray, rng: RngLike = None) -> np.ndarray:
    """Poisson photon counts with the given means (``inf`` fluence: returned unchanged)."""
    lam = np.asarray(expected, dtype=np.float64)
    if not np.all(np.isfinite(lam)):
        return lam.copy()
    return np.random.default_rng(rng).poisson(lam).astype(np.float64)


def log_attenuation(counts: np.ndarray, incident: float) -> np.ndarray:
    """``-ln(N / N0)``; zero counts are clipped to 0.5 photon.

    Parameters
    ----------
    counts : ndarray
        Detected photons per pixel.
    incident : float
        Incident photons per pixel ``N0``.
    """
    return -np.log(np.maximum(np.asarray(counts, dtype=np.float64), 0.5) / incident)


def dual_energy_bone(
    a_low: np.ndarray, a_high: np.ndarray, energies_kev: tuple[float, float]
) -> np.ndarray:
    """Bone-equivalent areal density (g/cm^2) from two log-attenuation images.

    Solves ``A_E = mu_b(E) t_b + mu_s(E) t_s`` at both energies for the bone path
    ``t_b`` (mm; bone = ICRU-44 cortical bone, soft basis = ICRU-44 soft tissue) and
    returns ``t_b * rho_bone / 10``. Marrow and soft tissue share the soft-tissue
    composition, so they cancel exactly; scatter and noise do not.
    """
    el, eh = energies_kev
    m = np.array(
        [
            [linear_attenuation("bone", el), linear_attenuation("soft", el)],
            [linear_attenuation("bone", eh), linear_attenuation("soft", eh)],
        ]
    )
    inv = np.linalg.inv(m)
    t_b = inv[0, 0] * np.asarray(a_low) + inv[0, 1] * np.asarray(a_high)
    return t_b * DENSITY_G_CM3["bone"] / 10.0


def simulate_dxa(
    bone_path_mm: np.ndarray,
    fine_spacing_mm: float,
    params: DXAParams = DXAParams(),
    rng: RngLike = None,
    *,
    cortical_path_mm: np.ndarray | None = None,
    chord_mm: np.ndarray | None = None,
) -> np.ndarray:
    """Simulate a DXA density image from a fine bone path-length map.

    Parameters
    ----------
    bone_path_mm : ndarray, 2-D
        Trabecular bone path length (mm) on a fine square grid (e.g. the 0.1 mm voxel
        grid of :func:`project`), treated as periodic for the blurs.
    fine_spacing_mm : float
        Pixel size of ``bone_path_mm`` (mm).
    params : DXAParams
    rng : numpy.random.Generator, int or None
        For the Poisson noise.
    cortical_path_mm : ndarray, optional
        Cortical-shell bone path per fine pixel (mm), e.g. from :func:`body_paths`;
        default: the uniform ``params.cortical_mm``.
    chord_mm : ndarray, optional
        Antero-posterior chord of the vertebral body per fine pixel (mm): marrow fills
        ``chord - bone - cortical`` and soft tissue the rest of a constant patient
        thickness ``soft_tissue_mm + vertebral_depth_mm``; default: the uniform
        ``params.vertebral_depth_mm``.

    Returns
    -------
    ndarray of float64, 2-D
        One energy: log attenuation ``-ln(N/N0)`` (dimensionless); two energies:
        bone-equivalent areal density (g/cm^2). Pixel spacing ``params.spacing_mm``.
    """
    rng = np.random.default_rng(rng)
    p = params
    if len(p.energies_kev) not in (1, 2) or len(p.fluence_per_mm2) != len(p.energies_kev):
        raise ValueError("need one or two energies, with one fluence each")
    soft_cm = p.soft_tissue_mm / 10.0
    psf = np.broadcast_to(np.asarray(p.psf_sigma_mm, dtype=float), (2,))
    sig = tuple(math.hypot(float(v), p.tissue_blur_mm_per_cm * soft_cm) for v in psf)
    spr = p.scatter_spr_per_cm * (p.soft_tissue_mm + p.vertebral_depth_mm) / 10.0
    area = p.spacing_mm[0] * p.spacing_mm[1]
    if chord_mm is None:
        depth: float | np.ndarray = p.vertebral_depth_mm
        soft: float | np.ndarray = p.soft_tissue_mm
    else:
        depth = np.asarray(chord_mm, dtype=np.float64)
        soft = p.soft_tissue_mm + (p.vertebral_depth_mm - depth)
    cort = p.cortical_mm if cortical_path_mm is None else np.asarray(cortical_path_mm)
    shape2 = np.asarray(bone_path_mm).shape
    logs = []
    for energy, fluence in zip(p.energies_kev, p.fluence_per_mm2, strict=True):
        noiseless = not math.isfinite(fluence)
        phi = 1.0 if noiseless else float(fluence)
        if chord_mm is None:
            prim = expected_counts(
                bone_path_mm,
                energy,
                phi,
                vertebral_depth_mm=p.vertebral_depth_mm,
                soft_tissue_mm=p.soft_tissue_mm,
                cortical_mm=p.cortical_mm,
            )
        else:
            tb = np.asarray(bone_path_mm, dtype=np.float64)
            line = (
                linear_attenuation("bone", energy) * (tb + cort)
                + linear_attenuation("marrow", energy) * (depth - tb - cort)
                + linear_attenuation("soft", energy) * soft
            )
            prim = phi * np.exp(-line)
        # detector signal: primary blurred by the system MTF plus scatter (SPR times the
        # primary spread by a broad Gaussian), one FFT round trip for both
        if sig[0] == sig[1] and p.motion_blur_mm == (0.0, 0.0):
            transfer = _gaussian_transfer(shape2, sig[0], fine_spacing_mm)
        else:
            transfer = system_mtf(shape2, fine_spacing_mm, sig, p.motion_blur_mm)
        if spr > 0:
            transfer = transfer + spr * _gaussian_transfer(
                prim.shape, p.scatter_sigma_mm, fine_spacing_mm
            )
        det = np.fft.irfft2(np.fft.rfft2(prim) * transfer, s=prim.shape)
        lam = area_resample(det, fine_spacing_mm, p.spacing_mm, offset_mm=p.offset_mm) * area
        if noiseless:
            logs.append(-np.log(lam / area))
        else:
            logs.append(log_attenuation(poisson_counts(lam, rng), phi * area))
    if len(logs) == 1:
        out = logs[0]
    else:
        out = dual_energy_bone(logs[0], logs[1], (p.energies_kev[0], p.energies_kev[1]))
    return vendor_smooth(out, p.post_filter)


# --------------------------------------------------------------------------- anatomy,
# system MTF, vendor-like processing, noise (issue #15 item 4)

#: Lateral width of the vertebral body at mid-height (mm). Lumbar bodies are about
#: 40-50 mm wide at the end plates and narrower at the waist (Zhou SH et al., Eur Spine J
#: 2000;9:242-248, lumbar vertebral geometry from CT); 40 mm is taken for L1-L4 at
#: mid-height, a round value inside that range, not a fit.
BODY_WIDTH_MM = 40.0
#: Antero-posterior depth of the vertebral body (mm): about 30-35 mm for L1-L4 (Zhou
#: et al. 2000); 30 mm, the depth already used by the baseline model.
BODY_DEPTH_MM = 30.0
#: Thickness of the vertebral cortical shell (mm): 0.38 +/- 0.06 mm measured by micro-CT
#: (Eswaran SK et al., J Bone Miner Res 2006;21:307-314); Silva MJ et al. (Bone 1994;
#: 15:409-414) report 0.2-0.4 mm.
CORTICAL_SHELL_MM = 0.38
#: Limiting resolution (line pairs per mm) read from a radiographic line-pair phantom on
#: PA-spine images: "less than 0.6 lp/mm" for a GE-Lunar Prodigy, up to 1.5 lp/mm on a
#: Hologic Discovery (Jankowski LG, NOF 6th International Symposium on Osteoporosis 2005,
#: poster P337). Used with the visual-limit convention MTF = 0.1 (an assumption: the
#: modulation at which bar patterns are no longer resolved is usually put at 5-10 %).
LIMITING_RESOLUTION_LP_MM = {"lunar-like": 0.6, "hologic-like": 1.5}
#: Pixel spacing (row = cranio-caudal, column = lateral; mm) of the scanner models:
#: 1.05 x 0.60 mm is the Lunar Prodigy AP-spine grid already used by the baseline
#: study; 1.0 x 1.0 mm for the "hologic-like" entry is an assumption (the vendor grid of
#: the PA-spine mode is not published in a source found here), and inconsistent with its
#: 1.5 lp/mm limit, which needs pixels of 0.33 mm or less: use it only to isolate the
#: effect of a sharper blur.
SCANNER_SPACING_MM = {"lunar-like": (1.05, 0.60), "hologic-like": (1.0, 1.0)}


def ellipse_chord_mm(x_mm: np.ndarray, width_mm: float, depth_mm: float) -> np.ndarray:
    """Antero-posterior chord (mm) of an elliptic cross-section at lateral offset ``x_mm``.

    ``depth * sqrt(1 - (2 x / width)^2)`` inside the ellipse, 0 outside.
    """
    u = 1.0 - (2.0 * np.asarray(x_mm, dtype=float) / width_mm) ** 2
    return depth_mm * np.sqrt(np.clip(u, 0.0, None))


def body_paths(
    volume: np.ndarray,
    voxel_mm: float,
    *,
    width_mm: float = BODY_WIDTH_MM,
    depth_mm: float = BODY_DEPTH_MM,
    shell_mm: float = CORTICAL_SHELL_MM,
    weight: np.ndarray | None = None,
    tilt_deg: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bone paths through an elliptic vertebral body cut from a trabecular volume.

    The body is an elliptic cylinder along axis 0 (cranio-caudal) centred in the
    ``(lateral, AP)`` plane: outer semi-axes ``width/2, depth/2``, a cortical shell of
    ``shell_mm`` and trabecular bone inside the inner ellipse.

    Parameters
    ----------
    volume : ndarray, shape (n0, n1, n2)
        Trabecular bone (bool or volume fraction), axes ``(cc, lateral, AP)``; needs
        ``n1 * voxel >= width`` and ``n2 * voxel >= depth``.
    voxel_mm : float
    width_mm, depth_mm, shell_mm : float
        Body width, depth and cortical-shell thickness (mm).
    weight : ndarray, optional
        Per-voxel multiplier of the bone (e.g. :func:`tbscore.sim.microarch.density_modulation`):
        regional variation of the bone volume fraction.
    tilt_deg : (float, float)
        Beam tilt applied to the trabecular path (:func:`project`); the shell and chord
        are those of the untilted body (a 1 degree tilt changes them by < 0.02 %).

    Returns
    -------
    trabecular_mm, shell_mm, chord_mm : ndarray of float64, shape (n0, n1)
        Trabecular bone path, cortical bone path (both walls, analytic) and the outer
        chord of the body, per fine pixel (mm).
    """
    vol = np.asarray(volume)
    n0, n1, n2 = vol.shape
    if n1 * voxel_mm < width_mm - 1e-9 or n2 * voxel_mm < depth_mm - 1e-9:
        raise ValueError("volume smaller than the vertebral body")
    x = (np.arange(n1) + 0.5) * voxel_mm - n1 * voxel_mm / 2
    z = (np.arange(n2) + 0.5) * voxel_mm - n2 * voxel_mm / 2
    ai, bi = width_mm / 2 - shell_mm, depth_mm / 2 - shell_mm
    inner = (x[:, None] / ai) ** 2 + (z[None, :] / bi) ** 2 <= 1.0
    v = vol.astype(np.float32) * inner[None, :, :]
    if weight is not None:
        v *= np.asarray(weight, dtype=np.float32)
    trab = project(v, voxel_mm, tilt_deg=tilt_deg)
    outer_c = ellipse_chord_mm(x, width_mm, depth_mm)
    inner_c = ellipse_chord_mm(x, 2 * ai, 2 * bi)
    shell = np.broadcast_to(outer_c - inner_c, (n0, n1)).astype(np.float64)
    chord = np.broadcast_to(outer_c, (n0, n1)).astype(np.float64)
    return trab, shell, chord


def rect_transfer(freq_per_mm: np.ndarray, width_mm: float) -> np.ndarray:
    """MTF of a rectangular aperture of ``width_mm``: ``sinc(width * f)`` (signed)."""
    return np.sinc(width_mm * np.asarray(freq_per_mm, dtype=float))


def system_mtf(
    shape: tuple[int, int],
    spacing_mm: float | tuple[float, float],
    sigma_mm: tuple[float, float],
    motion_mm: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Real-FFT transfer function of the system blur before pixel sampling.

    ``exp(-2 pi^2 (s_r^2 f_r^2 + s_c^2 f_c^2)) * sinc(m_r f_r) * sinc(m_c f_c)``: a
    Gaussian (focal spot, detector and electronics lumped; sigma per axis) times the
    rectangular motion blur of a detector that moves ``m`` mm while it integrates. The
    pixel aperture itself is applied by :func:`area_resample` (another ``sinc(p f)``).

    Parameters
    ----------
    shape : (int, int)
        Fine grid shape.
    spacing_mm : float or (float, float)
        Fine grid spacing (mm).
    sigma_mm : (float, float)
        Gaussian sigma along rows and columns (mm).
    motion_mm : (float, float)
        Motion-blur widths along rows and columns (mm).
    """
    sp = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (2,))
    f0 = np.fft.fftfreq(shape[0], d=sp[0])[:, None]
    f1 = np.fft.rfftfreq(shape[1], d=sp[1])[None, :]
    g = np.exp(-2.0 * math.pi**2 * (sigma_mm[0] ** 2 * f0 * f0 + sigma_mm[1] ** 2 * f1 * f1))
    return g * rect_transfer(f0, motion_mm[0]) * rect_transfer(f1, motion_mm[1])


def sigma_for_limiting_resolution(
    limit_lp_mm: float,
    pixel_mm: float,
    motion_mm: float = 0.0,
    *,
    mtf_at_limit: float = 0.1,
) -> float:
    """Gaussian sigma (mm) that brings the total MTF to ``mtf_at_limit`` at the limit.

    Total MTF along one axis = Gaussian * ``|sinc(pixel f)|`` * ``|sinc(motion f)|``;
    solved for the Gaussian at ``f = limit_lp_mm``. Returns 0 when the apertures alone
    already fall below ``mtf_at_limit`` there.
    """
    f = float(limit_lp_mm)
    ap = abs(float(np.sinc(pixel_mm * f))) * abs(float(np.sinc(motion_mm * f)))
    if ap <= mtf_at_limit:
        return 0.0
    g = mtf_at_limit / ap
    return math.sqrt(-math.log(g) / 2.0) / (math.pi * f)


def vendor_smooth(image: np.ndarray, kind: str = "none") -> np.ndarray:
    """Vendor-like image processing (an assumption: the vendors' filters are not public).

    ``"none"``: unchanged. ``"binomial3"``: separable ``[1, 2, 1] / 4`` smoothing in both
    directions (edges: nearest), the mildest standard noise-reduction kernel; it
    multiplies the variance of white noise by ``(6/16)^2 = 0.1406``. Any other name
    raises ``ValueError``.
    """
    if kind == "none":
        return image
    if kind != "binomial3":
        raise ValueError(f"unknown post_filter {kind!r} (none, binomial3)")
    k = np.array([0.25, 0.5, 0.25])
    out = ndi.correlate1d(np.asarray(image, dtype=np.float64), k, axis=0, mode="nearest")
    return ndi.correlate1d(out, k, axis=1, mode="nearest")


def bone_noise_sd(
    counts: tuple[np.ndarray | float, np.ndarray | float],
    energies_kev: tuple[float, float] = (40.0, 70.0),
) -> np.ndarray:
    """Quantum-noise SD (g/cm^2) of one pixel of the dual-energy bone image.

    Poisson counts ``N_E`` give ``var(-ln N_E / N0) = 1 / N_E`` (first order);
    :func:`dual_energy_bone` is linear, so ``var = (rho_b / 10)^2 (m00^2 / N_low +
    m01^2 / N_high)`` with ``m`` the inverse of the attenuation matrix. Before any
    ``post_filter`` (``"binomial3"`` multiplies the variance of white noise by
    ``(3/8)^2 = 0.1406``).

    Parameters
    ----------
    counts : (array_like, array_like)
        Expected detected photons per pixel at the low and the high energy.
    energies_kev : (float, float)
    """
    el, eh = energies_kev
    m = np.array(
        [
            [linear_attenuation("bone", el), linear_attenuation("soft", el)],
            [linear_attenuation("bone", eh), linear_attenuation("soft", eh)],
        ]
    )
    inv = np.linalg.inv(m)
    nl, nh = (np.asarray(c, dtype=float) for c in counts)
    return DENSITY_G_CM3["bone"] / 10.0 * np.sqrt(inv[0, 0] ** 2 / nl + inv[0, 1] ** 2 / nh)


def scanner_params(
    scanner: str = "lunar-like", *, post_filter: str = "none", **changes: object
) -> DXAParams:
    """Acquisition parameters of a scanner model with its system MTF.

    Pixel grid :data:`SCANNER_SPACING_MM`; motion blur of one pixel along the lateral
    (column) axis, the axis the detector sweeps while it integrates (assumption: a
    continuously moving detector sampled once per pixel); Gaussian sigma per axis from
    :func:`sigma_for_limiting_resolution` so that pixel aperture x motion x Gaussian
    reaches MTF 0.1 at :data:`LIMITING_RESOLUTION_LP_MM`. Other fields as
    :class:`DXAParams` (``changes`` override).
    """
    sp = SCANNER_SPACING_MM[scanner]
    lim = LIMITING_RESOLUTION_LP_MM[scanner]
    motion = (0.0, sp[1])
    sigma = (
        sigma_for_limiting_resolution(lim, sp[0], motion[0]),
        sigma_for_limiting_resolution(lim, sp[1], motion[1]),
    )
    p = DXAParams(spacing_mm=sp, psf_sigma_mm=sigma, motion_blur_mm=motion, post_filter=post_filter)
    return replace(p, **changes)  # type: ignore[arg-type]
