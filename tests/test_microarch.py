"""Tests of tbscore.sim.microarch: random-field specimens, degradation, 3-D morphometry."""

from __future__ import annotations

import numpy as np
import pytest

from tbscore.sim.microarch import (
    gaussian_random_field,
    hole_time_map,
    largest_component,
    local_thickness,
    make_specimen,
    morphometry,
    parallel_plates,
    perforation_holes,
    render,
    render_region,
    sheet_distance,
)

VOX = 0.05  # mm


# ----------------------------------------------------------------------------- morphometry


@pytest.mark.parametrize(("thickness", "gap"), [(8, 12), (7, 13), (6, 20)])
def test_parallel_plates_thickness_spacing_bvtv(thickness, gap):
    period = thickness + gap
    shape = (4 * period, 24, 24)
    bone = parallel_plates(shape, thickness, period, offset=3)
    m = morphometry(bone, VOX, margin=(period, 0, 0))
    # interior of whole periods: BV/TV exact up to the cut at the margin
    assert m.bv_tv == pytest.approx(thickness / period, abs=0.02)
    assert m.tb_th_mm == pytest.approx(thickness * VOX, rel=0.1)
    assert m.tb_sp_mm == pytest.approx(gap * VOX, rel=0.1)
    assert m.tb_n_per_mm == pytest.approx(m.bv_tv / m.tb_th_mm)
    # plates spanning the box: no handles, one plate per component
    assert np.isfinite(m.conn_d_per_mm3)


def test_plate_thickness_any_orientation():
    a = morphometry(parallel_plates((40, 30, 30), 8, 20, axis=0), VOX, margin=(10, 0, 0))
    b = morphometry(parallel_plates((30, 30, 40), 8, 20, axis=2), VOX, margin=(0, 0, 10))
    assert a.tb_th_mm == pytest.approx(b.tb_th_mm)
    assert a.tb_sp_mm == pytest.approx(b.tb_sp_mm)


def test_solid_cube_is_all_bone():
    m = morphometry(np.ones((16, 16, 16), dtype=bool), VOX)
    assert m.bv_tv == 1.0
    assert m.tb_n_per_mm == 0.0  # no marrow: thickness unbounded
    assert m.tb_sp_mm == 0.0


def test_cube_in_marrow():
    bone = np.zeros((40, 40, 40), dtype=bool)
    bone[10:30, 10:30, 10:30] = True
    m = morphometry(bone, 0.1)
    assert m.bv_tv == pytest.approx(20**3 / 40**3)
    # the largest inscribed ball (diameter 20 voxels) covers the centre; corners less
    lt = local_thickness(bone, 0.1)
    assert lt[20, 20, 20] == pytest.approx(2.0, rel=0.05)
    assert 1.0 < m.tb_th_mm <= 2.0


def test_ball_local_thickness_and_euler():
    z, y, x = np.mgrid[-12:13, -12:13, -12:13]
    ball = z * z + y * y + x * x <= 8 * 8
    lt = local_thickness(ball, 1.0)
    # the nearest background centre is at sqrt(65): estimator 2 sqrt(65) - 0.5, within
    # half a voxel of the diameter 16 of the continuous ball
    assert lt[12, 12, 12] == pytest.approx(2 * np.sqrt(65) - 0.5, abs=1e-4)
    assert lt[12, 12, 12] == pytest.approx(16.0, abs=0.5)
    assert np.all(lt[ball] == lt[12, 12, 12])  # one maximal ball covers everything
    assert np.all(lt[~ball] == 0)
    m = morphometry(ball, 1.0)
    assert m.euler == 1
    assert m.conn_d_per_mm3 == 0.0


def test_torus_connectivity():
    z, y, x = np.mgrid[-15:16, -15:16, -6:7].astype(float)
    r = np.hypot(z, y)
    torus = (r - 9) ** 2 + x**2 <= 3.5**2
    m = morphometry(torus, 1.0)
    assert m.euler == 0  # one handle
    assert m.conn_d_per_mm3 == pytest.approx(1.0 / torus.size)


def test_local_thickness_empty_and_validation():
    assert not local_thickness(np.zeros((5, 5, 5), bool), 1.0).any()
    with pytest.raises(ValueError):
        morphometry(np.ones((4, 4), bool), 1.0)
    with pytest.raises(ValueError):
        morphometry(np.ones((4, 4, 4), bool), 1.0, margin=2)
    with pytest.raises(ValueError):
        parallel_plates((10, 10, 10), 5, 5)


# ----------------------------------------------------------------------------- fields


def test_grf_unit_variance_and_anisotropy():
    y = gaussian_random_field((48, 48, 48), 0.1, 1.2, anisotropy=2.0, rng=1)
    assert y.dtype == np.float32 and y.shape == (48, 48, 48)
    assert float(y.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(y.std()) == pytest.approx(1.0, rel=1e-5)
    g0 = np.mean(np.abs(np.diff(y, axis=0)))
    g1 = np.mean(np.abs(np.diff(y, axis=1)))
    assert g0 < 0.75 * g1  # elongated along axis 0
    # reproducible
    assert np.array_equal(y, gaussian_random_field((48, 48, 48), 0.1, 1.2, anisotropy=2.0, rng=1))
    with pytest.raises(ValueError):
        gaussian_random_field((4, 4), 0.1, 1.0)


def test_sheet_distance_of_a_linear_field():
    x = np.arange(20, dtype=np.float32) * 0.1
    y = np.broadcast_to((x - 0.95)[None, None, :], (6, 6, 20)).copy() * 3.0
    d = sheet_distance(y, 0.1, periodic=False)
    assert np.allclose(d[2, 2], np.abs(x - 0.95), atol=1e-5)


def test_hole_time_map_balls_and_wrap():
    shape = (20, 20, 20)
    t = hole_time_map(shape, 1.0, np.array([[10.0, 10.0, 10.0]]), np.array([0.3]), 3.0)
    z, y, x = np.indices(shape)
    inside = (z - 10) ** 2 + (y - 10) ** 2 + (x - 10) ** 2 <= 9
    assert np.all(t[inside] == np.float32(0.3))
    assert np.all(np.isinf(t[~inside]))
    # periodic: a ball at the corner appears at the opposite faces
    t = hole_time_map(shape, 1.0, np.array([[0.0, 0.0, 0.0]]), np.array([0.5]), 2.0)
    assert t[19, 0, 0] == np.float32(0.5) and t[0, 19, 19] == np.float32(0.5)
    t = hole_time_map(shape, 1.0, np.array([[0.0, 0.0, 0.0]]), np.array([0.5]), 2.0, periodic=False)
    assert np.isinf(t[19, 0, 0]) and t[1, 0, 0] == np.float32(0.5)


def test_perforation_holes_density():
    c, t = perforation_holes((10.0, 10.0, 10.0), 5.0, rng=3)
    assert c.shape == (len(t), 3)
    assert abs(len(t) - 5000) < 5 * np.sqrt(5000)
    assert np.all((c >= 0) & (c < 10)) and np.all((t >= 0) & (t < 1))


def test_largest_component_periodic_join():
    bone = np.zeros((30, 10, 10), dtype=bool)
    bone[0:6, 5, 5] = True  # one rod of 12 voxels split by the face ...
    bone[24:30, 5, 5] = True
    bone[10:20, 2, 2] = True  # ... and a 10-voxel rod
    kept = largest_component(bone, periodic=True)
    assert kept.sum() == 12 and kept[0, 5, 5] and kept[29, 5, 5]
    kept = largest_component(bone, periodic=False)
    assert kept.sum() == 10 and kept[15, 2, 2]


# ----------------------------------------------------------------------------- degradation


@pytest.fixture(scope="module")
def small_specimen():
    return make_specimen((48, 48, 48), 0.1, wavelength_mm=1.6, thickness_mm=0.14, rng=7)


def test_degradation_is_nested_and_monotone(small_specimen):
    spec = small_specimen
    steps = (0.0, 0.25, 0.5, 0.75, 1.0)
    bones = [render(spec, s) for s in steps]
    bvtv = [b.mean() for b in bones]
    assert all(a > b for a, b in zip(bvtv, bvtv[1:], strict=False))
    for a, b in zip(bones, bones[1:], strict=False):
        assert not np.any(b & ~a)  # later bone is a subset of earlier bone
    # s = 0: thickness * surface density; the plates are one connected network
    assert 0.1 < bvtv[0] < 0.3
    with pytest.raises(ValueError):
        render(spec, 1.5)


def test_degradation_reduces_bvtv_and_tbn(small_specimen):
    spec = small_specimen
    start, size = (8, 8, 8), (32, 32, 32)
    ms = []
    for s in (0.0, 0.5, 1.0):
        keep = render(spec, s)
        fine = render_region(spec, s, start, size, refine=2, keep=keep)
        ms.append(morphometry(fine, 0.05, margin=4))
    assert ms[0].bv_tv > ms[1].bv_tv > ms[2].bv_tv
    assert ms[0].tb_n_per_mm > ms[1].tb_n_per_mm > ms[2].tb_n_per_mm
    assert ms[0].tb_th_mm > ms[2].tb_th_mm
    assert ms[0].tb_sp_mm < ms[2].tb_sp_mm
    # the fine rendering agrees with the coarse volume on bone amount
    coarse = render(spec, 0.0)[8:40, 8:40, 8:40].mean()
    assert ms[0].bv_tv == pytest.approx(coarse, rel=0.15)
    assert ms[0].tb_th_mm == pytest.approx(spec.thickness_mm, rel=0.3)
