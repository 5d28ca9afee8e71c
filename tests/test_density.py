"""Densities from CT: the HU table, the mass-conserving average onto the scan's grid, the body."""

from __future__ import annotations

import numpy as np
import pytest

import voxeldose
from voxeldose.density import (
    AIR_DENSITY_G_PER_CM3,
    SCHNEIDER2000,
    HuDensityTable,
    body_mask,
    density_on_grid,
)
from voxeldose.image import Image
from voxeldose.io import load_hu_table
from voxeldose.io.ct import ct_density


def test_schneider_table_points_and_interpolation():
    # the points of Schneider et al. 2000 as GATE tabulates them, and linear interpolation
    # between them: -800 HU (lung) lies 200/902 of the way from air (0.00121) to -98 HU (0.93)
    rho = SCHNEIDER2000.density([-1000, -800, -98, 0, 100, 1600, 3000])
    expected = [1.21e-3, 1.21e-3 + 200 / 902 * (0.93 - 1.21e-3), 0.93,
                0.930486 + 97 / 111 * (1.03 - 0.930486), 1.1199, 1.9642, 2.8]
    np.testing.assert_allclose(rho, expected, rtol=1e-6)
    # beyond the ends: constant (CT padding of -3024 HU is air, not negative mass)
    assert SCHNEIDER2000.density([-3024, 5000]).tolist() == pytest.approx([1.21e-3, 2.8])


@pytest.mark.parametrize("hu, rho, match", [
    ([0, 100], [1.0], "one density per HU"),
    ([100, 0, 200], [1.0, 1.1, 1.2], "increase strictly"),
    ([-1000, 1000], [1000.0, 1900.0], "g/cm3"),
    ([100, 1000], [1.1, 1.6], "not water"),
    ([-1000, 1000], [0.5, 0.6], "water .0 HU. gets 0.55"),
])
def test_hu_table_refuses_what_is_not_a_calibration(hu, rho, match):
    with pytest.raises(voxeldose.InputError, match=match):
        HuDensityTable(tuple(hu), tuple(rho), source="test")


def test_load_hu_table(tmp_path):
    good = tmp_path / "scanner.csv"
    good.write_text("# phantom calibration, 2026\nhu,density_g_per_cm3\n-1000, 0.001\n0, 1.0\n1000 1.6\n")
    table = load_hu_table(good)
    assert table.hu == (-1000.0, 0.0, 1000.0) and table.source == "user table scanner.csv"
    bad = tmp_path / "bad.csv"
    bad.write_text("hu,rho\n-1000,0.001\n0,1.0,7\n")
    with pytest.raises(voxeldose.InputError, match="line 3: expected two values"):
        load_hu_table(bad)
    bad.write_text("-1000,0.001\n0,one\n")
    with pytest.raises(voxeldose.InputError, match="line 2: '0,one' is not two numbers"):
        load_hu_table(bad)
    with pytest.raises(voxeldose.InputError, match="cannot read"):
        load_hu_table(tmp_path / "missing.csv")


def _supersampled_mean(ct: Image, ref: Image, index, n=240):
    """Brute force: the mean of the CT density at n^3 points spread over one reference voxel
    (nearest CT voxel), for an axis-aligned pair of grids."""
    centre = np.asarray(ref.origin_mm) + np.asarray(ref.spacing_mm) * np.asarray(index[::-1])
    u = (np.arange(n) + 0.5) / n - 0.5
    pts = [centre[a] + u * ref.spacing_mm[a] for a in range(3)]
    idx = [np.floor((pts[a] - ct.origin_mm[a]) / ct.spacing_mm[a] + 0.5).astype(int) for a in range(3)]
    return float(ct.array[np.ix_(idx[2], idx[1], idx[0])].mean())


def test_density_on_grid_is_the_volume_weighted_mean():
    rng = np.random.default_rng(1)
    ct = Image(rng.uniform(0.2, 2.0, (40, 64, 64)).astype(np.float32), (0.97, 0.97, 1.5), (-30.0, -31.0, -29.0),
               units="G/CM3")
    ref = Image(np.zeros((12, 14, 14), np.float32), (4.0, 4.0, 3.0), (-26.0, -27.0, -25.0))
    rho, cover = density_on_grid(ct, ref)
    assert rho.units == "G/CM3" and rho.same_grid(ref)
    # against 240^3 sub-samples per voxel (nearest CT voxel): the brute force misplaces each CT
    # voxel boundary by up to half a sample pitch (0.008 mm, 0.9 % of a CT voxel), at ~10
    # boundary planes per voxel, which moves the mean of these random densities by up to ~0.3 %
    # (the brute force itself moves by 0.2 % from 120^3 to 240^3 samples; the mass test below is exact)
    for index in [(3, 4, 5), (0, 0, 0), (11, 13, 13), (6, 7, 2)]:
        assert cover[index] == pytest.approx(1.0)
        assert rho.array[index] == pytest.approx(_supersampled_mean(ct, ref, index), rel=3e-3)


def test_density_on_grid_conserves_mass():
    # a CT of 1 x 1 x 1.5 mm and a scan of 4 x 4 x 3 mm over the same field of view: every CT
    # voxel lies in the scan, so the masses are equal to float rounding
    rng = np.random.default_rng(2)
    ct = Image(rng.uniform(0.001, 1.9, (20, 48, 40)).astype(np.float32), (1.0, 1.0, 1.5), (-19.5, -23.5, -14.25),
               units="G/CM3")
    ref = Image(np.zeros((10, 12, 10), np.float32), (4.0, 4.0, 3.0), (-18.0, -22.0, -13.5))
    rho, cover = density_on_grid(ct, ref)
    assert np.all(cover == pytest.approx(1.0))
    mass_ct = float(ct.array.sum(dtype=np.float64)) * 1.0 * 1.0 * 1.5
    mass_ref = float(rho.array.sum(dtype=np.float64)) * 4.0 * 4.0 * 3.0
    assert mass_ref == pytest.approx(mass_ct, rel=1e-6)


def test_voxels_outside_the_ct_are_air():
    # the CT spans -1 to 19 mm on every axis; the scan's voxel k spans 4k - 2 to 4k + 2 mm
    ct = Image(np.ones((10, 10, 10), np.float32), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), units="G/CM3")
    ref = Image(np.zeros((3, 3, 8), np.float32), (4.0, 4.0, 4.0), (0.0, 4.0, 4.0))
    rho, cover = density_on_grid(ct, ref)
    # voxel 0 is 3/4 inside: the mean over that part; 1-4 inside; 5 is 1/4 inside and 6, 7 outside: air
    assert cover[0, 0, 0] == pytest.approx(0.75) and cover[0, 0, 5] == pytest.approx(0.25)
    assert rho.array[0, 0, :5].tolist() == pytest.approx([1.0] * 5)
    assert rho.array[0, 0, 5:].tolist() == pytest.approx([AIR_DENSITY_G_PER_CM3] * 3)


def test_density_on_grid_refuses_other_axes():
    ct = Image(np.ones((4, 4, 4), np.float32), (2.0, 2.0, 2.0), direction=(0, 1, 0, 1, 0, 0, 0, 0, 1), units="G/CM3")
    with pytest.raises(voxeldose.GeometryError, match="axes differ"):
        density_on_grid(ct, Image(np.zeros((2, 2, 2), np.float32), (4.0, 4.0, 4.0)))


def test_ct_density_of_a_ct_on_other_axes_equals_the_same_ct_on_the_scans():
    # the same CT stored with its x and y axes swapped (and so a different direction matrix)
    rng = np.random.default_rng(3)
    hu = rng.uniform(-900, 1000, (12, 20, 24)).astype(np.float32)
    ct = Image(hu, (1.0, 1.0, 2.0), (-11.5, -9.5, -11.0), units="HU")
    swapped = Image(np.ascontiguousarray(hu.transpose(0, 2, 1)), (1.0, 1.0, 2.0), (-11.5, -9.5, -11.0),
                    direction=(0, 1, 0, 1, 0, 0, 0, 0, 1), units="HU")
    ref = Image(np.zeros((5, 4, 5), np.float32), (4.0, 4.0, 4.0), (-8.0, -6.0, -8.0))
    a = ct_density(ct, ref)
    b = ct_density(swapped, ref)
    # the second goes through the nearest-neighbour resampling at 1 mm, which here hits the CT
    # voxel centres exactly: the same mean
    np.testing.assert_allclose(b.array, a.array, rtol=1e-5)
    assert a.meta.extra["hu_table"] == SCHNEIDER2000.source and a.meta.extra["voxels_outside_ct"] == 0


def test_ct_density_warns_of_metal():
    ct = Image(np.full((4, 4, 4), 3500.0, np.float32), (2.0, 2.0, 2.0), units="HU")
    with pytest.warns(voxeldose.VoxelDoseWarning, match="64 CT voxel.s. above 3000 HU"):
        rho = ct_density(ct, Image(np.zeros((2, 2, 2), np.float32), (4.0, 4.0, 4.0), (1.0, 1.0, 1.0)))
    assert float(rho.array.max()) == pytest.approx(2.8)


def test_body_mask_fills_the_lungs_and_drops_the_couch():
    rho = np.full((6, 40, 40), AIR_DENSITY_G_PER_CM3, np.float32)
    z, y, x = np.indices(rho.shape)
    body = (y - 20) ** 2 / 15**2 + (x - 20) ** 2 / 18**2 <= 1
    rho[body] = 1.04
    lungs = body & ((y - 20) ** 2 / 8**2 + (np.abs(x - 20) - 8) ** 2 / 5**2 <= 1)
    rho[lungs] = 0.26
    rho[:, 38, 5:35] = 1.2  # a couch, apart from the body
    mask = body_mask(Image(rho, (4.0, 4.0, 4.0), units="G/CM3"))
    assert mask.units == "MASK"
    assert np.array_equal(mask.array > 0.5, body)  # lungs inside, couch and air outside
    with pytest.raises(voxeldose.InputError, match="no body"):
        body_mask(Image(np.full((2, 2, 2), 0.001, np.float32), (4.0, 4.0, 4.0), units="G/CM3"))


def test_hole_filling_is_scipys():
    # the body outline fills holes by labelling the background once (per axial slice, then in
    # 3-D): the same voxels as scipy.ndimage.binary_fill_holes slice by slice and on the volume
    from scipy import ndimage

    from voxeldose.density import _fill_holes

    rng = np.random.default_rng(5)
    for _ in range(40):
        shape = tuple(int(v) for v in rng.integers(1, 13, 3))
        mask = rng.random(shape) < rng.uniform(0.2, 0.8)
        per_slice = np.stack([ndimage.binary_fill_holes(plane) for plane in mask])
        assert np.array_equal(_fill_holes(mask, per_slice=True), per_slice), shape
        assert np.array_equal(_fill_holes(mask, per_slice=False), ndimage.binary_fill_holes(mask)), shape
    # a ring in one slice is a hole in that slice, but not in 3-D (open above and below)
    ring = np.zeros((5, 9, 9), bool)
    ring[2, 2:7, 2:7] = True
    ring[2, 3:6, 3:6] = False
    assert _fill_holes(ring, per_slice=True)[2, 4, 4] and not _fill_holes(ring, per_slice=False)[2, 4, 4]
