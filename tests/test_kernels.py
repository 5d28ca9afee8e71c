"""Y-90 kernels: the fitted point kernel against the published tables, energy conservation, anisotropic voxels."""

from __future__ import annotations

import json

import numpy as np
import pytest

import voxeldose
from voxeldose import constants as C
from voxeldose import kernels as K
from voxeldose._resources import data_dir

from .conftest import SHARED_REFERENCE, composite_kernel, requires_shared

SIZES = (2.21, 2.33, 2.4, 3.0, 3.59, 3.9, 4.0, 4.42, 4.8, 5.0, 6.0, 6.8, 9.28)


def centre(k):
    return tuple(n // 2 for n in k.shape)


def at(k, dz, dy, dx):
    z, y, x = centre(k)
    return k[z + dz, y + dy, x + dx]


# ----------------------------------------------------------------------------- published tables


def test_the_project_ships_no_published_table():
    # Data from outside sources stays in ../shared: the package holds only its own fitted DPK
    shipped = sorted(p.name for p in data_dir("kernels").iterdir())
    assert not [n for n in shipped if n.startswith("90Y")], shipped
    assert K.DPK_FILE in shipped
    # without tables, every spacing (the table sizes too) is the point kernel
    assert "DPK" in K.kernel_source((4.42, 4.42, 4.42))


@requires_shared
def test_table_match_tolerance_is_a_micrometre_not_a_guess(tables):
    # Within 1e-3 mm a spacing is the table's (floating-point noise in headers); beyond it the
    # kernel is integrated from the DPK and agrees with the table within the fit residual (0.4 %).
    table = voxeldose.y90_kernel((4.42, 4.42, 4.42), tables=tables)
    np.testing.assert_array_equal(voxeldose.y90_kernel((4.4204, 4.4196, 4.42), tables=tables), table)
    near = voxeldose.y90_kernel((4.4215, 4.4215, 4.4215), tables=tables)
    assert "table" in K.kernel_source((4.4204,) * 3, tables=tables)
    assert "DPK" in K.kernel_source((4.4215,) * 3, tables=tables)
    assert "no table of this spacing" in K.kernel_source((4.0, 4.0, 3.0), tables=tables)
    assert near.shape != table.shape or not np.array_equal(near, table)
    assert near[centre(near)] == pytest.approx(table[5, 5, 5], rel=0.01)


# ----------------------------------------------------------------------------- kernel contract


@pytest.mark.parametrize("spacing", [(4.42, 4.42, 4.42), (4.07, 4.07, 3.0), (2.04, 2.04, 2.03), (1.5, 1.5, 1.5)])
def test_kernel_shape_centre_symmetry_and_immutability(spacing):
    kern = voxeldose.y90_kernel(spacing)
    assert kern.dtype == np.float64
    assert all(n % 2 == 1 for n in kern.shape)
    assert np.unravel_index(kern.argmax(), kern.shape) == centre(kern)
    for axis in range(3):
        np.testing.assert_array_equal(kern, np.flip(kern, axis))
    assert not kern.flags.writeable
    assert voxeldose.y90_kernel(spacing) is kern  # cached


def test_kernel_axes_follow_spacing_order():
    # spacing is (x, y, z); the array is [z, y, x]: a long z voxel gives fewer planes in z
    kern = voxeldose.y90_kernel((2.0, 3.0, 6.0))
    assert kern.shape[0] < kern.shape[1] < kern.shape[2]


def test_cubic_dpk_kernel_is_symmetric_under_axis_permutation():
    # The angular quadrature treats z differently from x and y (polar axis); on a cubic grid the
    # exact kernel is permutation-symmetric, so the asymmetry measures the quadrature error.
    kern = voxeldose.y90_kernel((3.3, 3.3, 3.3))
    rel = np.abs(kern - kern.transpose(2, 1, 0)) / kern.max()
    assert rel.max() < 2e-4


def _mean_energy_from_icrp107() -> float:
    raw = json.loads(json.load(open(SHARED_REFERENCE / "icrp107_Y-90.json")))
    em = raw["emissions"]
    return sum(e * y for kind in ("beta-", "IE", "auger", "X", "gamma") for e, y in em[kind])


@pytest.mark.parametrize(
    "spacing",
    [(1.5, 1.5, 1.5), (2.0, 2.0, 2.0), (2.73, 2.73, 3.27), (4.07, 4.07, 3.0), (4.8, 4.8, 4.8), (7.0, 7.0, 2.0), (10.0, 10.0, 10.0)],
)
@pytest.mark.parametrize("tissue", ["soft", "bone"])
def test_energy_conservation_at_every_spacing(spacing, tissue):
    # sum(S) * rho * V is the energy absorbed per decay in an infinite medium. Truth: the ICRP-107
    # mean emitted energy (independently summed from the decay-data file when present). The
    # database itself sums to 0.04-0.3 % above it (see kernels/README.md); 0.5 % is the issue's
    # tolerance and leaves room for the escaping bremsstrahlung (~0.2 %).
    kern = voxeldose.y90_kernel(spacing, tissue)
    rho_kg_mm3 = K.TISSUES[tissue][2] * 1e-6
    mev = kern.sum() * 1e-3 * rho_kg_mm3 * np.prod(spacing) / 1e6 / C.J_PER_MEV
    truth = _mean_energy_from_icrp107() if SHARED_REFERENCE.is_dir() else 0.9331
    assert mev == pytest.approx(truth, rel=5e-3)


@requires_shared
def test_constant_mean_energy_matches_icrp107_file():
    assert _mean_energy_from_icrp107() == pytest.approx(C.Y90_MEAN_ENERGY_MEV, abs=5e-4)


# ----------------------------------------------------------------------------- DPK accuracy


@requires_shared
@pytest.mark.parametrize("tissue", ["soft", "bone"])
def test_dpk_reproduces_every_table(tables, tissue):
    # The fitted DPK integrated at each table size: centre and its 26 neighbours within 0.5 %
    # of the published values (fit residual 0.38 % at most, README; MC noise of the tables
    # ~0.3 %). In bone the corner neighbour of the 9.28 mm table (0.1 % of the centre, beyond
    # the electron range) is photon-dominated and excluded by the 1 %-of-centre floor.
    dpk = K.dose_point_kernel(tissue)
    for size in SIZES:
        table = tables.table(size, tissue)
        model = K.dpk_voxel_kernel((size,) * 3, dpk)
        for d in np.ndindex(3, 3, 3):
            d = tuple(v - 1 for v in d)
            ref = at(table, *d)
            if ref < 1e-2 * table[5, 5, 5]:
                continue
            assert at(model, *d) == pytest.approx(ref, rel=0.005), (size, d)
        # the energy each kernel absorbs in the infinite medium: within 0.2 % (README)
        assert model.sum() == pytest.approx(table.sum(), rel=2e-3), size


ANISOTROPIC_FROM_TABLES = [
    # (table mm, subdivisions (nz, ny, nx)) -> voxel (x, y, z) = table * (nx, ny, nz)
    (3.0, (2, 1, 1)),
    (3.0, (3, 1, 1)),
    (2.4, (2, 1, 1)),
    (2.21, (2, 1, 1)),
    (3.0, (2, 2, 1)),
    (2.21, (3, 2, 1)),
]


@requires_shared
@pytest.mark.parametrize("tissue", ["soft", "bone"])
@pytest.mark.parametrize("table_mm,n", ANISOTROPIC_FROM_TABLES)
def test_anisotropic_kernel_matches_monte_carlo_composite(tables, tissue, table_mm, n):
    # Independent Monte Carlo truth for an anisotropic voxel: a 3x3x6 mm voxel is two 3 mm voxels,
    # so its S values follow exactly from the published 3 mm table:
    #   S_big(d) = (1/N^2) sum_{s in big(0)} sum_{t in big(d)} S_small(t - s).
    # (The same relation reproduces the 6 mm table from the 3 mm one within 0.3 %.) Tolerance
    # 1 % for values above 1 % of the centre (the tables' MC noise ~0.3 % plus the fit residual;
    # observed <= 0.5 %); 4 % for values between 0.1 % and 1 % of the centre, where the tables'
    # tail entries carry more MC noise (observed <= 2.9 %, on 3 mm-based composites). Smaller
    # values (photon tails beyond the electron range) are not compared.
    truth = composite_kernel(tables.table(table_mm, tissue), n)
    spacing = (table_mm * n[2], table_mm * n[1], table_mm * n[0])
    kern = voxeldose.y90_kernel(spacing, tissue)
    compared = 0
    for d in np.ndindex(5, 5, 5):
        d = tuple(v - 2 for v in d)
        if any(abs(v) > c for v, c in zip(d, centre(truth))):
            continue
        ref = at(truth, *d)
        share = ref / truth[centre(truth)]
        if share < 1e-3:
            continue
        tolerance = 0.01 if share >= 1e-2 else 0.04
        assert at(kern, *d) == pytest.approx(ref, rel=tolerance), (spacing, d)
        compared += 1
    assert compared >= 27


@requires_shared
def test_composite_relation_reproduces_the_6mm_table(tables):
    # Check of the truth used above on the database itself.
    big = composite_kernel(tables.table(3.0), (2, 2, 2))
    table6 = tables.table(6.0)
    for d in [(0, 0, 0), (0, 0, 1), (0, 1, 1), (1, 1, 1)]:
        assert at(big, *d) == pytest.approx(at(table6, *d), rel=0.005)


def test_nearest_or_volume_equivalent_table_would_be_wrong_at_4x4x3():
    # Why the DPK integration exists: at 4 x 4 x 3 mm the nearest (4 mm) table's centre value
    # (here the 4 mm kernel, within 0.1 % of that table) is ~18 % low, and an isotropic kernel at the volume-equivalent 3.63 mm, though its centre is
    # within 1 %, puts ~19 % too little dose into the z neighbours (3 mm away) and ~14 % too much
    # into the x/y neighbours (4 mm away). The anisotropic kernel is validated above.
    kern = voxeldose.y90_kernel((4.0, 4.0, 3.0))
    assert at(voxeldose.y90_kernel((4.0, 4.0, 4.0)), 0, 0, 0) / at(kern, 0, 0, 0) - 1 < -0.15
    iso = voxeldose.y90_kernel((48.0 ** (1 / 3),) * 3)
    assert at(iso, 1, 0, 0) / at(kern, 1, 0, 0) - 1 < -0.1
    assert at(iso, 0, 0, 1) / at(kern, 0, 0, 1) - 1 > 0.1


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "spacing,fragment",
    [
        ((4.0, 4.0), "three values"),
        ((4.0, -1.0, 4.0), "y = -1.0 mm"),
        ((4.0, 4.0, float("nan")), "z = nan"),
        ((0.0, 4.0, 4.0), "positive"),
        ((400.0, 4.0, 4.0), "cm or m"),
        ("abc", "numbers"),
        (4.0, "sequence of three"),
    ],
)
def test_bad_spacing_raises_geometry_error(spacing, fragment):
    with pytest.raises(voxeldose.GeometryError, match=fragment):
        voxeldose.y90_kernel(spacing)


def test_unknown_tissue_is_a_kernel_error():
    with pytest.raises(voxeldose.KernelError, match=r"unknown tissue 'lung'.*\['bone', 'soft'\]"):
        voxeldose.y90_kernel((4, 4, 4), "lung")
    with pytest.raises(voxeldose.KernelError, match="no soft table at 3.3 mm"):
        K.VsvTables({("soft", 3.0): np.ones((3, 3, 3))}, folder="tables").table(3.3)
