"""DVH and metrics: exact on analytic dose distributions, consistent with the voxel doses."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import voxeldose
from voxeldose.dvh import DEFAULT_D_PERCENTS, DEFAULT_V_GY, dvh, dvh_array, voi_metrics
from voxeldose.phantoms import ellipsoid_fraction


def _gradient(n=50, step_gy=5.0):
    """Doses step * (i + 1/2), i = 0..n-1, along x: the voxel-centre samples of D(x) = step * x
    over [0, n] voxels, so the continuous truth is V(g) = 1 - g / (step n)."""
    dose = np.broadcast_to(step_gy * (np.arange(n) + 0.5), (3, 4, n)).copy()
    return dose, n * step_gy


def test_linear_gradient_metrics_are_exact():
    dose, top = _gradient()
    h = dvh_array(dose, np.ones(dose.shape, bool), spacing_xyz_mm=(2.0, 2.0, 2.0), name="ramp")
    # exact to float64 rounding: the mid-point convention reproduces the continuous answer
    # between the lowest and highest voxel dose (2.5 to 247.5 Gy here, i.e. 1 % to 99 %)
    for x in DEFAULT_D_PERCENTS:
        assert h.d(x) == pytest.approx(top * (1 - x / 100), rel=1e-12)
    for g in DEFAULT_V_GY:
        assert h.v(g) == pytest.approx(100 * (1 - g / top), rel=1e-12)
    assert h.mean_gy == pytest.approx(top / 2, rel=1e-12)
    assert (h.min_gy, h.max_gy) == (2.5, 247.5)
    assert h.volume_ml == pytest.approx(3 * 4 * 50 * 8e-3, rel=1e-12)


def test_gradient_is_exact_whatever_the_voxel_order_and_orientation():
    dose, top = _gradient()
    rng = np.random.default_rng(1)
    shuffled = rng.permutation(dose.ravel()).reshape(dose.shape)
    a = dvh_array(dose, np.ones(dose.shape), spacing_xyz_mm=(2, 2, 2)).metrics()
    b = dvh_array(shuffled, np.ones(dose.shape), spacing_xyz_mm=(2, 2, 2)).metrics()
    c = dvh_array(np.moveaxis(dose, 2, 0).copy(), np.ones((50, 3, 4)), spacing_xyz_mm=(2, 2, 2)).metrics()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-12) == pytest.approx(c[key], rel=1e-12)


def test_uniform_dose_is_exact():
    dose = np.full((6, 7, 8), 123.4)
    h = dvh_array(dose, np.ones(dose.shape, bool), spacing_xyz_mm=(4.42, 4.42, 4.42))
    for x in (0, 2, 50, 70, 98, 100):
        assert h.d(x) == 123.4
    assert h.v(0) == h.v(100) == h.v(123.4) == 100.0
    assert h.v(123.40001) == h.v(205) == 0.0
    assert h.mean_gy == pytest.approx(123.4, rel=1e-12)


def test_radial_dose_in_a_sphere_matches_the_continuous_dvh():
    # D(r) = r inside a sphere of radius R: the fraction of the volume at >= g is 1 - (g/R)^3,
    # so D_x = R (1 - x/100)^(1/3). Voxelised at 1 mm with a partial-volume mask (R = 20 mm),
    # the error is that of sampling r at voxel centres: ~h/(2R) relative near the surface.
    # Tolerance 1 % of R.
    R, h = 20.0, 1.0
    n = 2 * int(R / h) + 3
    spacing = (h, h, h)
    origin = (-(n - 1) / 2 * h,) * 3
    mask = ellipsoid_fraction((n, n, n), spacing, origin, (0, 0, 0), (R, R, R))
    c = (np.arange(n) - (n - 1) / 2) * h
    dose = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    result = dvh_array(dose, mask, spacing_xyz_mm=spacing, name="sphere")
    assert result.volume_ml == pytest.approx(4 / 3 * math.pi * R**3 * 1e-3, rel=2e-3)
    for x in (5, 30, 50, 70, 90, 95):
        assert result.d(x) == pytest.approx(R * (1 - x / 100) ** (1 / 3), abs=0.01 * R)
    for g in (5.0, 10.0, 15.0, 18.0):
        assert result.v(g) == pytest.approx(100 * (1 - (g / R) ** 3), abs=1.0)
    assert result.mean_gy == pytest.approx(0.75 * R, rel=0.01)  # mean of r over a ball = 3R/4


def test_fractional_weights_count_as_partial_volumes():
    rng = np.random.default_rng(2)
    dose = rng.gamma(2.0, 30.0, (5, 6, 7))
    full = dvh_array(dose, np.ones(dose.shape), spacing_xyz_mm=(3, 3, 3))
    half = dvh_array(dose, np.full(dose.shape, 0.5), spacing_xyz_mm=(3, 3, 3))
    assert half.volume_ml == pytest.approx(full.volume_ml / 2, rel=1e-12)
    for key, value in full.metrics().items():
        if key != "volume_ml":
            assert half.metrics()[key] == pytest.approx(value, rel=1e-12)
    # one voxel with weight 1 is the same as two voxels of the same dose with weight 0.5
    w = rng.random((5, 6, 7))
    doubled = dvh_array(np.concatenate([dose, dose]), np.concatenate([w / 2, w / 2]), spacing_xyz_mm=(3, 3, 3))
    single = dvh_array(dose, w, spacing_xyz_mm=(3, 3, 3))
    for key, value in single.metrics().items():
        assert doubled.metrics()[key] == pytest.approx(value, rel=1e-12)
    # a zero-weight voxel does not count, whatever its dose
    masked = w.copy()
    masked[0, 0, 0] = 0.0
    hot = dose.copy()
    hot[0, 0, 0] = 1e6
    assert dvh_array(hot, masked, spacing_xyz_mm=(3, 3, 3)).max_gy < 1e6


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 400),
    st.booleans(),
)
def test_properties_against_the_voxel_step_dvh(seed, n, ties):
    rng = np.random.default_rng(seed)
    dose = rng.gamma(1.5, 40.0, n)
    if ties:
        dose = np.round(dose / 10) * 10
    w = rng.uniform(0.01, 1.0, n)
    h = dvh_array(dose.reshape(1, 1, n), w.reshape(1, 1, n), spacing_xyz_mm=(2, 2, 2))
    total = w.sum()
    assert h.mean_gy == pytest.approx(np.average(dose, weights=w), rel=1e-9)
    assert (h.min_gy, h.max_gy) == (dose.min(), dose.max())
    # the DVH differs from the step DVH of the voxels (fraction with dose >= g) by at most the
    # volume of the voxels at the two neighbouring dose values
    node_w = {d: w[dose == d].sum() for d in np.unique(dose)}
    biggest_two = sum(sorted(node_w.values())[-2:])
    gs = np.concatenate([np.unique(dose), rng.uniform(dose.min() - 1, dose.max() + 1, 20)])
    previous = 101.0
    for g in np.sort(gs):
        step = 100 * w[dose >= g].sum() / total
        assert abs(h.v(g) - step) <= 100 * biggest_two / total + 1e-9
        assert h.v(g) <= previous + 1e-12  # non-increasing
        previous = h.v(g)
    d_values = [h.d(x) for x in np.linspace(0, 100, 41)]
    assert all(a >= b - 1e-12 for a, b in zip(d_values, d_values[1:]))
    assert h.d(0) == dose.max() and h.d(100) == dose.min()
    # d and v are inverse functions between the nodes
    for x in (10, 40, 75):
        if h.min_gy < h.d(x) < h.max_gy:
            assert h.v(h.d(x)) == pytest.approx(x, abs=1e-7)


def test_curve_and_metrics_layout():
    dose, top = _gradient()
    h = dvh_array(dose, np.ones(dose.shape), spacing_xyz_mm=(2, 2, 2))
    d, frac = h.curve(n_points=101)
    assert d.shape == frac.shape == (101,)
    assert d[0] == 0.0 and d[-1] == h.max_gy
    assert frac[0] == 1.0 and np.all(np.diff(frac) <= 0)
    inside = (d > h.min_gy) & (d < h.max_gy)
    np.testing.assert_allclose(frac[inside], 1 - d[inside] / top, rtol=1e-12)
    keys = list(h.metrics())
    assert keys[:4] == ["volume_ml", "mean_gy", "min_gy", "max_gy"]
    assert keys[4:] == [f"D{x}_gy" for x in DEFAULT_D_PERCENTS] + [f"V{g}_pct" for g in DEFAULT_V_GY]
    assert "D2p5_gy" in h.metrics(d_percents=(2.5,), v_gy=())
    assert h.mass_g() == pytest.approx(h.volume_ml * 1.04)
    assert h.mass_g(1.0) == pytest.approx(h.volume_ml)


def test_top_level_export_and_large_input():
    assert voxeldose.dvh is dvh
    rng = np.random.default_rng(3)
    dose = rng.random((100, 100, 100), dtype=np.float32) * 300  # 1e6 voxels, float32 input
    mask = rng.random((100, 100, 100)) > 0.5
    h = voxeldose.dvh_array(dose, mask, spacing_xyz_mm=(2, 2, 2))
    assert h.mean_gy == pytest.approx(float(dose[mask].astype(float).mean()), rel=1e-9)
    assert h.d(50) == pytest.approx(150, rel=0.01)


@pytest.mark.parametrize(
    ("mask", "words"),
    [
        (np.zeros((4, 4, 4)), ["'liver'", "empty"]),
        (np.ones((4, 4, 5)), ["'liver'", "shape", "(4, 4, 5)", "resample"]),
        (np.full((4, 4, 4), 2.0), ["'liver'", "[0, 1]", "label map"]),
        (np.full((4, 4, 4), np.nan), ["'liver'", "NaN"]),
        (np.full((4, 4, 4), "a"), ["'liver'", "dtype"]),
    ],
)
def test_bad_masks_name_the_voi(mask, words):
    with pytest.raises(voxeldose.VoiError) as exc:
        dvh_array(np.ones((4, 4, 4)), mask, spacing_xyz_mm=(2, 2, 2), name="liver")
    assert isinstance(exc.value, voxeldose.VoxelDoseError)
    for word in words:
        assert word in str(exc.value)


def test_bad_doses_and_arguments():
    ok = np.ones((4, 4, 4))
    bad = ok.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(voxeldose.InputError, match=r"\(1, 2, 3\)"):
        dvh_array(bad, ok, spacing_xyz_mm=(2, 2, 2))
    with pytest.raises(voxeldose.InputError, match="3-D"):
        dvh_array(np.ones((4, 4)), np.ones((4, 4)), spacing_xyz_mm=(2, 2, 2))
    with pytest.raises(voxeldose.GeometryError):
        dvh_array(ok, ok, spacing_xyz_mm=(2, 0, 2))
    h = dvh_array(ok, ok, spacing_xyz_mm=(2, 2, 2))
    for call in (lambda: h.d(101), lambda: h.d(-1), lambda: h.d(float("nan")), lambda: h.v(float("inf")),
                 lambda: h.v("ten"), lambda: h.curve(1), lambda: h.mass_g(0)):
        with pytest.raises(voxeldose.InputError):
            call()


def test_negative_doses_are_kept():
    dose = np.linspace(-1, 9, 11).reshape(1, 1, 11)
    h = dvh_array(dose, np.ones(dose.shape), spacing_xyz_mm=(1, 1, 1))
    assert h.min_gy == -1.0 and h.mean_gy == pytest.approx(4.0)


def test_dvh_of_a_dose_image_needs_only_a_mask_on_its_grid():
    dose = voxeldose.Image(np.arange(24.0).reshape(2, 3, 4), (2.0, 2.0, 3.0), units="GY")
    inside = np.zeros((2, 3, 4), bool)
    inside[1] = True
    by_array = dvh(dose, inside, name="lower")
    by_image = dvh(dose, voxeldose.mask_image(dose, inside, name="lower"), name="lower")
    assert by_array.mean_gy == by_image.mean_gy == pytest.approx(np.arange(12.0, 24.0).mean())
    assert by_image.volume_ml == pytest.approx(12 * 0.012)
    shifted = voxeldose.Image(inside.astype(float), (2.0, 2.0, 3.0), origin_mm=(0.0, 0.0, 3.0), units="MASK")
    with pytest.raises(voxeldose.VoiError, match="grid.*resample"):
        dvh(dose, shifted, name="lower")
    with pytest.raises(voxeldose.InputError, match="Gy"):
        dvh(dose.with_array(dose.array, units="MBQ"), inside)
    with pytest.raises(voxeldose.InputError, match="dvh_array"):
        dvh(dose.array, inside)  # type: ignore[arg-type]


def test_voi_metrics_density():
    h = dvh_array(np.ones((2, 2, 2)), np.ones((2, 2, 2)), spacing_xyz_mm=(10, 10, 10))
    lung = h.at_density(0.3)
    # per-VOI density: the lung at 0.30 g/mL, the liver at the default 1.04 g/mL (8 mL each)
    m = voi_metrics({"liver": h, "lung": lung})
    assert (m["liver"]["mass_g"], m["lung"]["mass_g"]) == (pytest.approx(8.32), pytest.approx(2.4))
    assert m["lung"]["density_g_per_cm3"] == 0.3 and m["liver"]["density_g_per_cm3"] == 1.04
    # the same energy over a lighter mass: every dose x 1.04 / 0.30, the volume fractions unchanged
    assert m["lung"]["mean_gy"] == pytest.approx(1.04 / 0.3) and m["lung"]["V3_pct"] if "V3_pct" in m["lung"] else True
    assert lung.d(50) == pytest.approx(h.d(50) * 1.04 / 0.3) and lung.v(3.0) == 100.0 and h.v(3.0) == 0.0
    assert lung.at_density(1.04).mean_gy == pytest.approx(h.mean_gy)  # and back
    with pytest.raises(voxeldose.InputError, match="density"):
        h.at_density(0.0)


@pytest.mark.parametrize("spacing", [(1e-30, 4.0, 4.0), ("4", "4", "4"), (True, 4.0, 4.0)])
def test_dvh_array_refuses_spacings_that_are_not_voxel_sizes(spacing):
    """dvh accepted a spacing of 1e-30 mm (volumes of zero) and text."""
    with pytest.raises(voxeldose.GeometryError, match="spacing_xyz_mm"):
        dvh_array(np.ones((3, 3, 3)), np.ones((3, 3, 3)), spacing_xyz_mm=spacing)


@pytest.mark.parametrize("n", [10**9, 1, True, 2.5])
def test_a_dvh_curve_has_a_bounded_number_of_points(n):
    """dvh.curve(10**9) tried to allocate 8 GB."""
    h = dvh_array(np.arange(27.0).reshape(3, 3, 3), np.ones((3, 3, 3)), spacing_xyz_mm=(4.0, 4.0, 4.0))
    with pytest.raises(voxeldose.InputError, match="n_points must be an integer from 2 to 1,000,000"):
        h.curve(n)
    assert h.curve(10**6)[0].size == 10**6


def test_the_dvh_on_the_vois_box_is_the_whole_grids():
    # the DVH reads the dose and the mask on the bounding box of the mask's voxels > 0: the same
    # voxels in the same order as on the whole grid, so the same DVH to the last bit; a non-finite
    # dose outside the box does not enter it, one inside still fails with its whole-grid index
    from voxeldose.dvh import _dvh

    rng = np.random.default_rng(3)
    dose = rng.gamma(2.0, 40.0, (30, 40, 50)).astype(np.float32)
    dose[dose < 20] = dose[0, 0, 0]  # ties
    mask = np.zeros(dose.shape, np.float32)
    mask[7:19, 11:30, 4:41] = rng.random((12, 19, 37)).astype(np.float32)
    mask[mask < 0.3] = 0.0
    whole = _dvh(dose, mask, 0.008, "v")
    boxed = dvh_array(dose, mask, spacing_xyz_mm=(2, 2, 2), name="v")
    assert (boxed.volume_ml, boxed.mean_gy, boxed.min_gy, boxed.max_gy) == (
        whole.volume_ml, whole.mean_gy, whole.min_gy, whole.max_gy)
    assert np.array_equal(boxed._dose_nodes_gy, whole._dose_nodes_gy)
    assert np.array_equal(boxed._fraction_at_nodes, whole._fraction_at_nodes)
    image = voxeldose.dvh(voxeldose.Image(dose, (2.0, 2.0, 2.0), units="GY"), mask, name="v")
    assert np.array_equal(image._fraction_at_nodes, whole._fraction_at_nodes) and image.mean_gy == whole.mean_gy
    dose[0, 0, 0] = np.nan  # outside the VOI's box
    assert dvh_array(dose, mask, spacing_xyz_mm=(2, 2, 2)).mean_gy == whole.mean_gy
    dose[10, 20, 30] = np.inf  # inside it
    with pytest.raises(voxeldose.InputError, match=r"\(0, 0, 0\)"):  # the first on the whole grid
        dvh_array(dose, mask, spacing_xyz_mm=(2, 2, 2))
