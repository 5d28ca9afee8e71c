"""The density-scaled kernel: the scaling theorem, its density classes, the fast engine against its
brute-force reference, energy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from voxeldose import constants as C
from voxeldose._scaled_kernel import _kernel_energy, scaled_kernel_dose, scaled_kernel_reference
from voxeldose.kernels import density_kernels, dose_point_kernel, dpk_voxel_kernel, uniform_density_kernel

RHO0 = C.SOFT_TISSUE_DENSITY_G_PER_CM3
TABLES = Path(__file__).resolve().parents[2] / "shared" / "reference_data" / "lanconelli2012_vsv_Y90"


def _theorem(spacing_zyx, rho):
    """S_rho(h) = (rho/rho0)^2 S_rho0(h rho/rho0), straight from the point kernel."""
    s = rho / RHO0
    return dpk_voxel_kernel(tuple(h * s for h in spacing_zyx[::-1]), dose_point_kernel("soft")) * s * s


def _centre_and_neighbours(k, c):
    cz, cy, cx = c
    return [k[cz, cy, cx], k[cz, cy, cx + 1], k[cz, cy + 1, cx], k[cz + 1, cy, cx], k[cz, cy + 1, cx + 1],
            k[cz + 1, cy + 1, cx + 1]]


def test_density_classes_interpolate_the_kernel_to_a_tenth_of_a_percent():
    # a density between two classes (0.30 lies between 1.04 x 1.1^-14 and 1.1^-13): the kernel
    # the engine interpolates (linearly in log density) against the kernel computed at 0.30
    spacing_zyx = (3.0, 4.0, 4.0)
    classes = density_kernels(spacing_zyx[::-1], 0.25, 1.9)
    rho = 0.30
    assert not np.any(np.isclose(classes.densities_g_per_cm3, rho))
    assert np.any(classes.densities_g_per_cm3 == RHO0)  # soft tissue is a class itself
    f = math.log(rho / classes.densities_g_per_cm3[0]) / math.log(1.1)
    k, w = int(f), f - int(f)
    exact = _theorem(spacing_zyx, rho)
    shape = np.array(exact.shape)

    def embed(kernel):
        out = np.zeros(exact.shape)
        n = np.minimum(np.array(kernel.shape) // 2, shape // 2)
        out[tuple(slice(c - m, c + m + 1) for c, m in zip(shape // 2, n))] = \
            kernel[tuple(slice(c - m, c + m + 1) for c, m in zip(np.array(kernel.shape) // 2, n))]
        return out

    mixed = (1 - w) * embed(classes.kernel(k)) + w * embed(classes.kernel(k + 1))
    assert np.abs(mixed - exact).max() < 1e-3 * exact.max()
    assert (mixed.sum() - exact.sum()) / exact.sum() == pytest.approx(0.0, abs=1e-3)


def test_point_source_in_lung_follows_the_scaling_theorem():
    # uniform lung-density medium, 0.30 g/cm3: the engine's kernel at the centre and its first
    # neighbours against the theorem's values. Within 1 %: the class interpolation (< 0.1 %) and
    # the normalisation to the uniform medium's energy (the interpolated kernel's energy differs
    # from it by < 0.1 %) are all that separate them.
    spacing_zyx = (4.0, 4.0, 4.0)
    n = 41
    a = np.zeros((n, n, n))
    a[n // 2, n // 2, n // 2] = 1.0
    dose = scaled_kernel_dose(a, np.full(a.shape, 0.30), spacing_zyx, scale=1.0)
    exact = _theorem(spacing_zyx, 0.30)
    c = tuple(s // 2 for s in exact.shape)
    got = _centre_and_neighbours(dose, (n // 2,) * 3)
    want = _centre_and_neighbours(exact, c)
    np.testing.assert_allclose(got, want, rtol=0.01)


@pytest.mark.skipif(not TABLES.is_dir(), reason="the Lanconelli 2012 tables are not in ../shared/reference_data")
def test_scaled_kernel_reproduces_a_published_table_by_the_theorem():
    # In lung of 0.30 g/cm3, voxels of 2.21 x 1.04 / 0.30 = 7.66 mm are, by the theorem, the
    # published soft-tissue voxels of 2.21 mm, with doses x (0.30/1.04)^2: an independent truth.
    # Tolerance 1.5 %: the point kernel's fit residual against the tables (centre and neighbours
    # within 0.9 %, README) plus the class interpolation (0.1 %).
    from voxeldose.io import load_vsv_tables

    table = load_vsv_tables(TABLES).table(2.21, "soft")
    h = 2.21 * RHO0 / 0.30
    n = 21
    a = np.zeros((n, n, n))
    a[n // 2, n // 2, n // 2] = 1.0
    dose = scaled_kernel_dose(a, np.full(a.shape, 0.30), (h, h, h), scale=1.0)
    c = tuple(s // 2 for s in table.shape)
    want = np.array(_centre_and_neighbours(table, c)) * (0.30 / RHO0) ** 2
    np.testing.assert_allclose(_centre_and_neighbours(dose, (n // 2,) * 3), want, rtol=0.015)


def test_soft_tissue_everywhere_is_the_kernel_itself():
    spacing_zyx = (3.0, 4.0, 4.0)
    k = uniform_density_kernel(spacing_zyx[::-1], RHO0)
    rng = np.random.default_rng(0)
    a = np.zeros((25, 25, 25))
    a[8:17, 8:17, 8:17] = rng.uniform(-0.2, 1.0, (9, 9, 9))
    from scipy.signal import fftconvolve

    plain = fftconvolve(a, k, mode="same")
    scaled = scaled_kernel_dose(a, np.full(a.shape, RHO0), spacing_zyx, scale=1.0)
    assert np.abs(scaled - plain).max() < 1e-5 * np.abs(plain).max()  # float32 rounding


def _heterogeneous():
    """27^3 voxels of 4 mm: soft tissue with a lung ball (0.26 g/cm3, radius 24 mm) and a bone
    block (1.85), and four sources: inside the lung, at its boundary, in soft tissue beside it,
    beside the bone."""
    n = 27
    rho = np.full((n, n, n), RHO0)
    z, y, x = np.indices(rho.shape)
    rho[(z - 13) ** 2 + (y - 13) ** 2 + (x - 8) ** 2 <= 36] = 0.26
    rho[16:20, 14:20, 14:18] = 1.85
    a = np.zeros(rho.shape)
    for index, value in (((13, 13, 14), 1.0), ((13, 12, 8), 0.7), ((15, 15, 15), 0.5), ((13, 13, 15), 0.8)):
        a[index] = value
    return a, rho


@pytest.mark.parametrize("normalise", [False, True])
def test_engine_equals_the_brute_force_reference(normalise):
    # The engine takes each path's mean density along the lattice chain of a 3-D DDA ray, the
    # reference along the straight segment (16 samples per voxel step); the two paths differ by
    # up to half a voxel, which matters where they graze the lung's surface. Measured on this
    # phantom, without the normalisation: voxel doses within 0.9 % of the largest dose, the
    # energy absorbed in the lung within 3 % (the far, grazing paths differ most), in soft tissue
    # within 0.5 %. With it, a source at the lung's surface is scaled by factors that differ by
    # 2.5 % (its unnormalised energy is 1.055 of the emitted by the engine's paths, 1.081 by the
    # reference's), and it and its soft-tissue neighbour dose the same voxels: 4.3 % of the
    # largest dose, and 4.5 % of the lung's energy, measured. This is the method's own
    # uncertainty at a lung surface on 4 mm voxels (README), not an error of the engine.
    a, rho = _heterogeneous()
    spacing_zyx = (4.0, 4.0, 4.0)
    fast = scaled_kernel_dose(a, rho, spacing_zyx, scale=1.0, normalise=normalise)
    ref = scaled_kernel_reference(a, rho, spacing_zyx, scale=1.0, normalise=normalise)
    assert np.abs(fast - ref).max() < (0.012 if not normalise else 0.05) * ref.max()
    lung, soft = rho == 0.26, rho == RHO0  # the energy each tissue absorbs
    assert (fast * rho)[lung].sum() == pytest.approx((ref * rho)[lung].sum(), rel=0.035 if not normalise else 0.05)
    assert (fast * rho)[soft].sum() == pytest.approx((ref * rho)[soft].sum(), rel=0.01)


def test_energy_is_conserved_in_a_closed_heterogeneous_body():
    # the phantom in 12 more voxels of soft tissue on every side, so that no path leaves the
    # grid: what is deposited (dose x mass) is what is emitted times the point kernel's absorbed
    # fraction (1.0019 for the fit: within 0.5 % of 1)
    a, rho = (np.pad(x, 12, constant_values=v) for x, v in zip(_heterogeneous(), (0.0, RHO0)))
    spacing_zyx = (4.0, 4.0, 4.0)
    dose = scaled_kernel_dose(a, rho, spacing_zyx, scale=1.0)
    voxel_g = 64.0 * 1e-3  # g per (g/cm3) of a 64 mm^3 voxel
    deposited_j = float((dose.astype(np.float64) * rho).sum()) * voxel_g * 1e-3 * 1e-3  # mGy/s x kg -> J/s
    emitted_j = float(a.sum()) * 1e6 * C.Y90_MEAN_ENERGY_MEV * C.J_PER_MEV  # per MBq per s
    assert deposited_j == pytest.approx(emitted_j, rel=0.005)
    # and the normalisation is what conserves it: without, these sources deposit 1-5 % more or less
    raw = scaled_kernel_dose(a, rho, spacing_zyx, scale=1.0, normalise=False)
    assert abs(float((raw * rho).sum()) / float((dose * rho).sum()) - 1.0) > 0.005


def test_paths_end_outside_the_body():
    # a source at the skin: with the air outside marked as the end of paths, nothing is dosed
    # beyond the skin and the energy carried out is lost (not normalised back in)
    spacing_zyx = (4.0, 4.0, 4.0)
    rho = np.full((21, 21, 21), RHO0)
    rho[:, :, 12:] = 0.0012
    ends = rho < 0.5
    a = np.zeros(rho.shape)
    a[10, 10, 11] = 1.0
    dose = scaled_kernel_dose(a, rho, spacing_zyx, scale=1.0, ends=ends)
    assert np.all(dose[:, :, 12:] == 0.0)
    assert float((dose * rho).sum()) < 0.9 * _kernel_energy(spacing_zyx)
    inside = scaled_kernel_dose(a, np.full(rho.shape, RHO0), spacing_zyx, scale=1.0)
    assert dose[10, 10, 11] == pytest.approx(inside[10, 10, 11], rel=1e-6)  # the self-dose is not rescaled


def test_the_lung_tail_left_to_the_normalisation_changes_the_dose_by_little():
    # paths below 0.9 g/cm3 stop at the radiological depth of the kernel's last 0.1 % of energy,
    # which the normalisation puts back nearer: against following them to the kernel's end, no
    # voxel moves by more than 0.2 % of the largest dose and each tissue's energy by 0.2 %
    a, rho = (np.pad(x, 12, constant_values=v) for x, v in zip(_heterogeneous(), (0.0, RHO0)))
    a[22:30, 22:30, 14:22] += 0.05  # sources throughout the lung ball too
    spacing_zyx = (4.0, 4.0, 4.0)
    cut = scaled_kernel_dose(a, rho, spacing_zyx, scale=1.0)
    full = scaled_kernel_dose(a, rho, spacing_zyx, scale=1.0, truncate=False)
    assert np.abs(cut - full).max() < 2e-3 * full.max()
    for region in (rho == 0.26, rho == RHO0):
        assert float((cut * rho)[region].sum()) == pytest.approx(float((full * rho)[region].sum()), rel=2e-3)
    # and soft tissue is never cut: the plain kernel exactly
    soft = np.full(rho.shape, RHO0)
    assert np.array_equal(scaled_kernel_dose(a, soft, spacing_zyx, scale=1.0),
                          scaled_kernel_dose(a, soft, spacing_zyx, scale=1.0, truncate=False))


@pytest.mark.parametrize("width", [1, 3])
def test_sources_walked_together_give_the_dose_of_one_at_a_time(monkeypatch, width):
    # the engine walks up to TILE_WIDTH neighbouring sources through one offset tree, each with
    # its own chains, reach, edges and normalisation: any width gives the same dose to the bit,
    # here with runs of sources cut by gaps, sources at the grid's faces (x = 0 and the last x),
    # paths ending in air and a lung ball
    import voxeldose._scaled_kernel as sk

    rng = np.random.default_rng(7)
    rho = rng.uniform(0.2, 1.9, (14, 15, 17))
    rho[:, :, 13:] = 0.0012
    a = (rng.random(rho.shape) < 0.6) * rng.random(rho.shape)
    a[3, 4, :] = 1.0  # a whole row, both faces
    spacing_zyx = (3.0, 4.0, 2.5)
    ends = rho < 0.01
    z, y, x = (v.astype(np.int64) for v in np.nonzero(a))
    assert sk._tiles(z, y, x, sk.TILE_WIDTH).size - 1 < z.size / 2  # most sources share a tile
    wide = scaled_kernel_dose(a, rho, spacing_zyx, scale=1.0, ends=ends)
    monkeypatch.setattr(sk, "TILE_WIDTH", width)
    narrow = scaled_kernel_dose(a, rho, spacing_zyx, scale=1.0, ends=ends)
    assert np.array_equal(wide, narrow)


def test_tiles_at_the_end_of_the_grid_stay_inside_it(tmp_path):
    # a tile's sources share each offset's row of results; where one source's target lies off the
    # grid (its entry 0) nothing is written there. Sources on the grid's last row put such
    # targets past the end of the array: run with numba's bounds checking on, in a process of its
    # own (a fresh cache: the checked loop is compiled apart)
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from voxeldose._scaled_kernel import scaled_kernel_dose\n"
        "rho = np.full((6, 6, 10), 1.04)\n"
        "a = np.zeros(rho.shape)\n"
        "a[5, 5, :] = 1.0\n"
        "a[0, 0, :3] = 1.0\n"
        "d = scaled_kernel_dose(a, rho, (4.0, 4.0, 4.0), scale=1.0)\n"
        "assert np.isfinite(d).all() and d[5, 5].min() > 0\n"
        "print('ok')\n")
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


@pytest.mark.parametrize("spacing_zyx", [(4.0, 4.0, 4.0), (3.0, 2.21, 4.42)])
def test_the_class_table_is_every_class_looked_up_at_every_offset(spacing_zyx):
    # the table looks each class up only on the offsets inside the previous (larger) class's box:
    # the same table as looking every class up at every offset
    from voxeldose._scaled_kernel import _class_table, _classes, _offsets

    rho = np.array([0.26, 0.5, RHO0, 1.6]).reshape(1, 1, 4)
    kernels = _classes(spacing_zyx, rho)
    half = tuple(int(v) for v in kernels.half_zyx[0])
    off = _offsets(tuple(spacing_zyx), half)[0]
    table = _class_table(kernels, off)
    expected = np.zeros_like(table)
    for k in range(table.shape[0]):
        h = kernels.half_zyx[k]
        inside = np.all(np.abs(off) <= h, axis=1)
        idx = off[inside] + h
        expected[k, inside] = kernels.kernel(k)[idx[:, 0], idx[:, 1], idx[:, 2]]
    assert table.shape[0] > 5 and np.count_nonzero(table[-1]) < np.count_nonzero(table[0])  # boxes differ
    assert np.array_equal(table, expected)


def test_the_class_table_without_nested_boxes_tests_every_offset():
    # the fallback: were a denser class's box not inside the one before, each class is looked up
    # at every offset (a stand-in with boxes 1 x 2 x 1 then 2 x 1 x 1)
    from types import SimpleNamespace

    from voxeldose._scaled_kernel import _class_table, _offsets

    half = np.array([[1, 2, 1], [2, 1, 1]])
    values = [np.arange(np.prod(2 * h + 1), dtype=float).reshape(2 * h + 1) + 1 for h in half]
    kernels = SimpleNamespace(densities_g_per_cm3=np.array([0.5, 1.0]), half_zyx=half,
                              kernel=lambda k: values[k])
    off = _offsets((4.0, 4.0, 4.0), (2, 2, 1))[0]
    table = _class_table(kernels, off)
    for k, h in enumerate(half):
        inside = np.all(np.abs(off) <= h, axis=1)
        assert np.array_equal(table[k, inside], values[k][tuple((off[inside] + h).T)])
        assert not table[k, ~inside].any()
    assert (np.abs(off[:, 0]) == 2).any() and table[1, np.abs(off[:, 0]) == 2].any()  # beyond class 0's box


def _breadth_first_one_at_a_time(parent):
    """The breadth-first order as a queue walks it, one node at a time (the reference)."""
    from collections import deque

    children = {}
    for node in range(1, parent.size):
        children.setdefault(int(parent[node]), []).append(node)
    order, queue = [], deque([0])
    while queue:
        node = queue.popleft()
        order.append(node)
        queue.extend(children.get(node, []))
    return np.array(order)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_breadth_first_order_is_a_queues(seed):
    # trees of random shape: each node's parent any node of the level above, the nodes numbered
    # at random (children before their parent, too), some nodes with many children, some with none
    from voxeldose._scaled_kernel import _breadth_first

    rng = np.random.default_rng(seed)
    sizes = [1] + list(rng.integers(1, 40, size=6))
    labels = np.concatenate([[0], 1 + rng.permutation(sum(sizes) - 1)])
    parent = np.zeros(sum(sizes), np.int64)
    first = np.cumsum([0] + sizes)
    for level in range(1, len(sizes)):
        above = labels[first[level - 1]:first[level]]
        here = labels[first[level]:first[level + 1]]
        parent[here] = rng.choice(above[: max(1, above.size // 2)], size=here.size)  # half the level has none
    got = _breadth_first(parent)
    np.testing.assert_array_equal(got, _breadth_first_one_at_a_time(parent))
    assert sorted(got) == list(range(parent.size))


def test_the_offsets_tree_is_numbered_breadth_first_with_each_parent_one_shell_in():
    from voxeldose._scaled_kernel import _offsets

    off, parent, link, chain, kid_start, straightness = _offsets((3.0, 2.0, 1.5), (4, 6, 8))
    n = off.shape[0]
    assert n == 9 * 13 * 17 and not off[0].any()
    shell = np.abs(off).max(axis=1)
    assert np.all(np.diff(shell) >= 0)  # breadth first: shell by shell
    assert np.all(shell[parent[1:]] == shell[1:] - 1) and np.all(parent[1:] < np.arange(1, n))
    # the children of p are kid_start[p]:kid_start[p + 1]
    for p in range(0, n, 97):
        np.testing.assert_array_equal(np.flatnonzero(parent[1:] == p) + 1, np.arange(kid_start[p], kid_start[p + 1]))
    h = np.array([3.0, 2.0, 1.5])
    np.testing.assert_allclose(link[1:], np.sqrt((((off[1:] - off[parent[1:]]) * h) ** 2).sum(axis=1)))
    np.testing.assert_allclose(chain[1:], chain[parent[1:]] + link[1:])
    dist = np.sqrt(((off[1:] * h) ** 2).sum(axis=1))
    assert straightness == pytest.approx(np.min(dist / chain[1:]), rel=1e-12) and 0.0 < straightness <= 1.0


def test_the_density_classes_are_the_same_on_one_thread_and_on_several():
    # the classes are computed on numba's threads at once (the shell integration releases the
    # GIL): the same kernels to the bit as one after another, each class its own serial integral
    import numba

    from voxeldose import kernels

    threads = numba.get_num_threads()
    tables = {}
    try:
        for n in sorted({1, max(2, threads)}):
            if n > numba.config.NUMBA_NUM_THREADS:
                pytest.skip("numba may use one thread only here")
            numba.set_num_threads(n)
            kernels._density_kernels.cache_clear()
            tables[n] = kernels._density_kernels((4.42, 4.42, 3.0), -6, 0)
    finally:
        numba.set_num_threads(threads)
        kernels._density_kernels.cache_clear()
    one, many = (tables[n] for n in sorted(tables))
    assert one.densities_g_per_cm3.size == 7
    np.testing.assert_array_equal(one.table, many.table)
    np.testing.assert_array_equal(one.half_zyx, many.half_zyx)
    # and each class is the uniform medium's kernel computed on its own
    for k in (0, 3, 6):
        np.testing.assert_array_equal(many.kernel(k), uniform_density_kernel((4.42, 4.42, 3.0),
                                                                              float(many.densities_g_per_cm3[k])))
