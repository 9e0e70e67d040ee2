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
