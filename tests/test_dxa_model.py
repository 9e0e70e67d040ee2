"""Tests of tbscore.sim.dxa_model: Beer–Lambert, blur, sampling, noise, dual energy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tbscore.sim.dxa_model import (
    DENSITY_G_CM3,
    MU_RHO,
    DXAParams,
    area_resample,
    dual_energy_bone,
    expected_counts,
    gaussian_blur,
    linear_attenuation,
    log_attenuation,
    mass_attenuation,
    poisson_counts,
    project,
    simulate_dxa,
    transform_2d,
)

CLEAN = dict(psf_sigma_mm=0.0, scatter_spr_per_cm=0.0, tissue_blur_mm_per_cm=0.0)


def test_attenuation_table_and_interpolation():
    for material, table in MU_RHO.items():
        for e, mu in table.items():
            assert mass_attenuation(material, e) == pytest.approx(mu)
    # log-log interpolation lies between the neighbours and decreases with energy
    m70 = mass_attenuation("bone", 70.0)
    assert MU_RHO["bone"][80.0] < m70 < MU_RHO["bone"][60.0]
    assert linear_attenuation("bone", 40.0) == pytest.approx(0.6655 * 1.92 / 10)
    assert linear_attenuation("marrow", 40.0) == pytest.approx(0.2688 * 1.0 / 10)
    with pytest.raises(ValueError):
        mass_attenuation("bone", 150.0)


def test_beer_lambert_slab():
    t_b, depth, soft, cort, phi = 4.0, 30.0, 150.0, 0.8, 1e6
    n = expected_counts(
        np.full((3, 3), t_b),
        40.0,
        phi,
        vertebral_depth_mm=depth,
        soft_tissue_mm=soft,
        cortical_mm=cort,
    )
    mu_b, mu_m, mu_s = 0.6655 * 1.92 / 10, 0.2688 * 1.0 / 10, 0.2688 * 1.06 / 10
    expect = phi * math.exp(-(mu_b * (t_b + cort) + mu_m * (depth - t_b) + mu_s * soft))
    assert np.allclose(n, expect, rtol=1e-12)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.05, 0.6)])
def test_single_energy_noiseless_is_the_line_integral(spacing):
    path = np.full((84, 60), 3.0)
    p = DXAParams(spacing_mm=spacing, energies_kev=(50.0,), fluence_per_mm2=(math.inf,), **CLEAN)
    img = simulate_dxa(path, 0.1, p)
    line = (
        linear_attenuation("bone", 50.0) * (3.0 + p.cortical_mm)
        + linear_attenuation("marrow", 50.0) * (p.vertebral_depth_mm - 3.0)
        + linear_attenuation("soft", 50.0) * p.soft_tissue_mm
    )
    assert np.allclose(img, line, rtol=1e-10)


def test_dual_energy_recovers_areal_bone_density():
    path = np.full((40, 40), 5.0)
    p = DXAParams(fluence_per_mm2=(math.inf, math.inf), **CLEAN)
    img = simulate_dxa(path, 0.1, p)
    expect = (5.0 + p.cortical_mm) * DENSITY_G_CM3["bone"] / 10
    assert np.allclose(img, expect, rtol=1e-9)  # marrow and soft tissue cancel
    # more soft tissue changes nothing without noise or scatter
    img2 = simulate_dxa(
        path, 0.1, DXAParams(fluence_per_mm2=(math.inf, math.inf), soft_tissue_mm=210.0, **CLEAN)
    )
    assert np.allclose(img2, img, rtol=1e-9)
    # and the inverse of the forward model is exact for any mixture
    a_l = 0.3 * linear_attenuation("bone", 40.0) + 200 * linear_attenuation("soft", 40.0)
    a_h = 0.3 * linear_attenuation("bone", 70.0) + 200 * linear_attenuation("soft", 70.0)
    assert dual_energy_bone(a_l, a_h, (40.0, 70.0)) == pytest.approx(0.3 * 0.192)


def test_area_resample_preserves_mean_and_weights():
    rng = np.random.default_rng(0)
    img = rng.random((210, 120))  # 21 x 12 mm at 0.1 mm
    out = area_resample(img, 0.1, (1.05, 0.6))  # 10.5 and 6 input pixels per output
    assert out.shape == (20, 20)
    assert out.mean() == pytest.approx(img.mean(), rel=1e-12)
    # output pixel (1, 0): rows 10.5..21 (row 10 half), columns 0..6
    by_hand = (0.5 * img[10, :6].sum() + img[11:21, :6].sum()) / (10.5 * 6)
    assert out[1, 0] == pytest.approx(by_hand, rel=1e-12)
    assert np.allclose(
        area_resample(np.full((50, 50), 7.0), 0.1, (0.7, 0.3), offset_mm=(0.25, 0.05)), 7.0
    )
    with pytest.raises(ValueError):
        area_resample(img, 0.1, (1.0, 1.0), out_shape=(30, 5))


def test_non_square_output_shape():
    path = np.zeros((280, 360))
    img = simulate_dxa(path, 0.1, DXAParams(spacing_mm=(1.05, 0.6)), rng=0)
    assert img.shape == (26, 60)
    img = simulate_dxa(path, 0.1, DXAParams(spacing_mm=(0.5, 0.5)), rng=0)
    assert img.shape == (56, 72)


def test_poisson_noise_matches_fluence():
    lam = np.full((400, 400), 250.0)
    n = poisson_counts(lam, rng=1)
    assert n.mean() == pytest.approx(250.0, rel=0.01)
    assert n.var() == pytest.approx(250.0, rel=0.03)
    assert np.array_equal(poisson_counts(np.full(3, np.inf)), np.full(3, np.inf))
    # log-attenuation noise: var(-ln N) = 1 / expected counts (delta method)
    path = np.full((600, 600), 2.0)
    p = DXAParams(spacing_mm=(1.0, 1.0), energies_kev=(60.0,), fluence_per_mm2=(2e4,), **CLEAN)
    img = simulate_dxa(path, 0.1, p, rng=2)
    lam = float(expected_counts(np.array(2.0), 60.0, 2e4, cortical_mm=p.cortical_mm))
    assert img.var() == pytest.approx(1.0 / lam, rel=0.1)
    assert log_attenuation(np.array([0.0]), 10.0)[0] == pytest.approx(-math.log(0.05))


def test_gaussian_blur_mean_and_width():
    img = np.zeros((128, 128))
    img[64, 64] = 1.0
    b = gaussian_blur(img, 0.8, 0.1)
    assert b.sum() == pytest.approx(1.0)
    r = (np.arange(128) - 64) * 0.1
    var_r = float((b.sum(axis=1) * r**2).sum())
    assert var_r == pytest.approx(0.8**2, rel=1e-3)
    assert np.array_equal(gaussian_blur(img, 0.0, 0.1), img)


def test_project_and_tilt():
    vol = np.zeros((20, 20, 30), dtype=bool)
    vol[:, :, 10:14] = True  # a plate perpendicular to the beam, 4 voxels thick
    p = project(vol, 0.1)
    assert np.allclose(p, 0.4)
    t = (3.0, -2.0)
    scale = math.sqrt(1 + math.tan(math.radians(3)) ** 2 + math.tan(math.radians(2)) ** 2)
    assert np.allclose(project(vol, 0.1, tilt_deg=t), 0.4 * scale)
    # a rod along the beam is smeared by the tilt but its total is kept (times the scale)
    rod = np.zeros((20, 20, 30), dtype=bool)
    rod[10, 10, :] = True
    pr = project(rod, 0.1, tilt_deg=(10.0, 0.0))
    assert pr.sum() == pytest.approx(30 * 0.1 * math.sqrt(1 + math.tan(math.radians(10)) ** 2))
    assert (pr > 0).sum(axis=0)[10] > 3  # spread over rows
    with pytest.raises(ValueError):
        project(np.zeros((3, 3)), 0.1)


def test_transform_2d():
    rng = np.random.default_rng(3)
    img = rng.random((30, 40))
    assert np.allclose(transform_2d(img, 0.1), img)
    assert np.allclose(
        transform_2d(img, 0.1, shift_mm=(0.2, -0.1)), np.roll(img, (2, -1), axis=(0, 1))
    )
    rot = transform_2d(img, 0.1, rotation_deg=2.0)
    assert rot.mean() == pytest.approx(img.mean(), rel=0.02)


def test_scatter_lowers_contrast_and_params_validation():
    path = np.zeros((100, 100))
    path[:, 50:] = 4.0
    a = simulate_dxa(
        path, 0.1, DXAParams(fluence_per_mm2=(math.inf, math.inf), scatter_spr_per_cm=0.0)
    )
    b = simulate_dxa(
        path, 0.1, DXAParams(fluence_per_mm2=(math.inf, math.inf), scatter_spr_per_cm=0.02)
    )
    assert np.ptp(b) < np.ptp(a)
    with pytest.raises(ValueError):
        simulate_dxa(path, 0.1, DXAParams(energies_kev=(40.0, 70.0), fluence_per_mm2=(1e5,)))


# --------------------------------------------------------------------------- issue #15:
# anatomy, system MTF, vendor-like processing, noise at the acquisition's counts


def _variogram_along_columns(img: np.ndarray, k: int) -> float:
    d = img[:, k:] - img[:, :-k]
    return float(np.mean(d * d))


@pytest.mark.parametrize("sigma_c, motion_c", [(0.5, 0.0), (0.3, 0.6), (0.0, 1.2)])
def test_system_mtf_attenuates_short_lag_variogram_by_mtf_squared(sigma_c, motion_c):
    from tbscore.sim.dxa_model import system_mtf

    # A small sinusoid of bone path along the columns (period 4.8 mm): the image is
    # linear in it, so at every lag the variogram with the MTF is MTF(f)^2 times the
    # variogram without (same sampling: the pixel aperture cancels in the ratio).
    fine = 0.1
    n0, n1 = 60, 960
    f = 1.0 / 4.8
    x = (np.arange(n1) + 0.5) * fine
    path = np.broadcast_to(2.0 + 0.01 * np.sin(2 * math.pi * f * x), (n0, n1)).copy()
    base = dict(
        spacing_mm=(0.6, 0.6),
        energies_kev=(60.0,),
        fluence_per_mm2=(math.inf,),
        scatter_spr_per_cm=0.0,
        tissue_blur_mm_per_cm=0.0,
    )
    ref = simulate_dxa(path, fine, DXAParams(psf_sigma_mm=0.0, **base))
    img = simulate_dxa(
        path,
        fine,
        DXAParams(psf_sigma_mm=(0.2, sigma_c), motion_blur_mm=(0.0, motion_c), **base),
    )
    expect = math.exp(-2 * (math.pi * sigma_c * f) ** 2)
    if motion_c > 0:
        expect *= math.sin(math.pi * motion_c * f) / (math.pi * motion_c * f)
    for k in (1, 2, 3):  # 0.6, 1.2, 1.8 mm
        ratio = _variogram_along_columns(img, k) / _variogram_along_columns(ref, k)
        assert ratio == pytest.approx(expect**2, rel=2e-3)
    # the transfer function itself at that frequency (row frequency 0)
    h = system_mtf((n0, n1), fine, (0.2, sigma_c), (0.0, motion_c))
    j = int(round(f * n1 * fine))
    assert h[0, j] == pytest.approx(expect, rel=1e-12)


def test_limiting_resolution_sets_total_mtf_to_ten_percent():
    from tbscore.sim.dxa_model import (
        LIMITING_RESOLUTION_LP_MM,
        scanner_params,
        sigma_for_limiting_resolution,
    )

    for name, f in LIMITING_RESOLUTION_LP_MM.items():
        p = scanner_params(name)
        for axis in (0, 1):
            pix, mot, sig = p.spacing_mm[axis], p.motion_blur_mm[axis], p.psf_sigma_mm[axis]
            total = math.exp(-2 * (math.pi * sig * f) ** 2)
            for w in (pix, mot):
                if w > 0:
                    total *= abs(math.sin(math.pi * w * f) / (math.pi * w * f))
            if sig > 0:
                assert total == pytest.approx(0.1, rel=1e-9)
            else:  # the apertures alone already fall below 10 %
                assert total <= 0.1
    assert sigma_for_limiting_resolution(0.6, 1.05) > sigma_for_limiting_resolution(0.6, 0.6) - 1
    assert sigma_for_limiting_resolution(0.1, 10.0) == 0.0


def test_bone_noise_matches_the_counts_of_the_dose():
    from tbscore.sim.dxa_model import bone_noise_sd, vendor_smooth

    # uniform body: 3 mm trabecular bone, 0.76 mm shell, 30 mm chord behind 15 cm
    shape = (840, 600)
    tb, cort, chord = np.full(shape, 3.0), np.full(shape, 0.76), np.full(shape, 30.0)
    variances = {}
    for fluence in (5e5, 2e6):
        p = DXAParams(
            spacing_mm=(1.05, 0.6),
            fluence_per_mm2=(fluence, fluence),
            scatter_spr_per_cm=0.0,
            tissue_blur_mm_per_cm=0.0,
        )
        img = simulate_dxa(tb, 0.1, p, rng=4, cortical_path_mm=cort, chord_mm=chord)
        # expected counts per pixel, computed here from the attenuation coefficients
        area = 1.05 * 0.6
        counts = []
        for e in p.energies_kev:
            line = (
                linear_attenuation("bone", e) * (3.0 + 0.76)
                + linear_attenuation("marrow", e) * (30.0 - 3.0 - 0.76)
                + linear_attenuation("soft", e) * 150.0
            )
            counts.append(fluence * area * math.exp(-line))
        sd = float(bone_noise_sd((counts[0], counts[1]), p.energies_kev))
        assert img.var() == pytest.approx(sd**2, rel=0.06)
        # the mean is the areal bone density of 3.76 mm of bone
        assert img.mean() == pytest.approx(3.76 * DENSITY_G_CM3["bone"] / 10, abs=3 * sd / 80)
        variances[fluence] = img.var()
        smooth = vendor_smooth(img - img.mean(), "binomial3")[2:-2, 2:-2]
        assert smooth.var() == pytest.approx((6 / 16) ** 2 * img.var(), rel=0.08)
    # quantum noise: variance inversely proportional to the dose
    assert variances[5e5] / variances[2e6] == pytest.approx(4.0, rel=0.1)
    with pytest.raises(ValueError):
        vendor_smooth(np.zeros((3, 3)), "sharpen")


def test_body_paths_match_the_ellipse():
    from tbscore.sim.dxa_model import body_paths, ellipse_chord_mm

    vox = 0.1
    solid = np.ones((4, 260, 180), dtype=bool)  # 26 mm lateral, 18 mm AP
    trab, shell, chord = body_paths(solid, vox, width_mm=24.0, depth_mm=16.0, shell_mm=0.4)
    x = (np.arange(260) + 0.5) * vox - 13.0
    inner = ellipse_chord_mm(x, 23.2, 15.2)
    # a solid volume: the trabecular path is the inner chord (to one voxel)
    assert np.all(np.abs(trab[0] - inner) <= vox + 1e-9)
    assert np.allclose(shell[0] + inner, ellipse_chord_mm(x, 24.0, 16.0))
    assert chord[0, 130] == pytest.approx(16.0, abs=0.01)
    assert np.all(trab[:, np.abs(x) > 12.0] == 0) and np.all(chord[:, np.abs(x) > 12.0] == 0)
    # projected area of the inner ellipse (pi a b) is the summed path per row
    assert trab[0].sum() * vox == pytest.approx(math.pi * 11.6 * 7.6, rel=0.01)
    with pytest.raises(ValueError):
        body_paths(solid, vox, width_mm=30.0)
    # a constant weight scales the trabecular path only
    t2, s2, _ = body_paths(
        solid, vox, width_mm=24.0, depth_mm=16.0, shell_mm=0.4, weight=np.full(solid.shape, 0.5)
    )
    assert np.allclose(t2, trab * 0.5) and np.allclose(s2, shell)


def test_density_modulation_band_and_amplitude():
    from tbscore.sim.microarch import density_modulation

    # on its own grid (no repetition): unit-variance field inside the 2-10 mm band
    w = density_modulation((64, 64, 64), 0.5, 0.2, cell_mm=0.5, rng=3)
    assert w.mean() == pytest.approx(1.0, abs=0.02)
    assert w.std() == pytest.approx(0.2, rel=0.02)
    spec = np.abs(np.fft.fftn(w - w.mean())) ** 2
    k = np.sqrt(sum(g**2 for g in np.meshgrid(*[np.fft.fftfreq(64, 0.5)] * 3, indexing="ij")))
    outside = spec[(k > 0.5 + 1e-9) | (k < 0.1 - 1e-9)].sum() / spec.sum()
    assert outside < 1e-3  # clipping at 0 is the only leak (5 SD at cv 0.2)
    # on voxels: blocks of the cell, same seed same field
    v = density_modulation((20, 30, 10), 0.1, 0.2, rng=3)
    assert v.shape == (20, 30, 10) and np.all(v[:5, :5, :5] == v[0, 0, 0])
    with pytest.raises(ValueError):
        density_modulation((10, 10, 10), 0.3, cell_mm=0.5)


def test_quick_anchor_study_runs_and_its_physics_acts(tmp_path):
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        import validation_study as vs
    finally:
        sys.path.remove(str(bench))
    st = vs.main(["--quick", "--workers", "1", "--out", str(tmp_path)])
    text = (tmp_path / "validation.md").read_text()
    assert "<!-- BEGIN ANCHORS -->" in text and "Anchor table" in text
    for name in ("validation_anchor_images.png", "validation_anchor_scatter.png"):
        assert (tmp_path / "images" / name).stat().st_size > 10_000
    lad = st["ladder"]  # (vertebra, model, dose, estimator)
    ols, noiseless, clinical = 0, 0, 1
    # smoothing removes most of the white-noise nugget: the clinical OLS index rises
    assert np.all(lad[:, 4, clinical, ols] > lad[:, 3, clinical, ols])
    # quantum noise flattens the OLS slope in every model
    assert np.all(lad[:, :, clinical, ols] < lad[:, :, noiseless, ols])
