"""Uncertainty propagation (voxeldose.uncertainty) against independent truths.

- only multiplicative inputs: the sampled standard uncertainty, interval and budget of a large
  VOI's mean equal first-order analytic propagation;
- noise: the spread of D70 over independent noisy realisations of the liver phantom equals the
  engine's standard uncertainty from one realisation;
- segmentation: a sphere in a radial dose gradient gives the analytic change of its mean dose;
- seeded runs are reproducible bit for bit, whatever runs the samples.
"""

from __future__ import annotations

import json
import math
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from voxeldose import Case, InputError, VoxelDoseError
from voxeldose.cli import main
from voxeldose.dvh import dvh
from voxeldose.image import Image, ImageMeta
from voxeldose.phantoms import ellipsoid_fraction, liver
from voxeldose.pipeline import compute_case
from voxeldose.radiobiology import Y90_DECAY_CONSTANT_PER_H
from voxeldose.result import metrics_rows
from voxeldose.uncertainty import (
    DEFAULT_UNCERTAINTIES,
    INPUT_KEYS,
    correlate_noise,
    moved_mask,
    propagate,
    uncertainty_settings_from_dict,
)

#: every input off: a test turns on the ones it checks
OFF = {k: 0.0 for k in INPUT_KEYS}


@pytest.fixture(scope="module")
def coarse():
    """The liver phantom at 8.84 mm (50 x 64 x 64): fast enough for hundreds of samples."""
    return liver(spacing_xyz_mm=(8.84, 8.84, 8.84))


def _spect(ph, counts_per_mbq: float, seed: int) -> Image:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(ph.activity_mbq * counts_per_mbq).astype(np.float32)
    return Image(counts, ph.spacing_mm, ph.origin_mm, units="CNTS", meta=ImageMeta(modality="NM"))


def _case(roles, settings=None, **values) -> Case:
    base = dict(administered_gbq=3.0, lung_shunt_fraction=0.10, residual_fraction=0.05)
    base.update(values)
    return Case("u-1", voi_roles=roles, uncertainty=None if settings is None else uncertainty_settings_from_dict(settings),
                **base)


def _quiet(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call()


# --------------------------------------------------------------------------- multiplicative inputs


def test_multiplicative_inputs_equal_first_order_propagation(coarse):
    # SPECT self-calibration: the dose is proportional to A (1 - r)(1 - LSF) times the kernel, so to
    # first order u_rel^2 = u_A^2 + (u_r / (1 - r))^2 + (u_LSF / (1 - LSF))^2 + u_k^2 (GUM).
    # N = 4000: the sample standard deviation's own relative error is 1/sqrt(2N) = 1.1 %, the
    # 2.5/97.5 percentiles' about 2 %; the factors' second-order terms (u ~ 5 %) are < 0.2 %. So 5 %.
    roles = {"liver": "whole_liver"}
    settings = {**OFF, "n": 4000, "seed": 11, "noise": False, "administered_activity_rel": 0.05,
                "residual_abs": 0.01, "lung_shunt_abs": 0.02, "kernel_rel": 0.02}
    result = _quiet(lambda: compute_case(_spect(coarse, 50.0, 1), {"liver": coarse.vois["liver"]},
                                         _case(roles, settings)))
    mean = result.uncertainty["vois"]["liver"]["mean_gy"]
    parts = {"administered_activity_rel": 0.05, "residual_abs": 0.01 / 0.95, "lung_shunt_abs": 0.02 / 0.90,
             "kernel_rel": 0.02}
    u_rel = math.sqrt(sum(v * v for v in parts.values()))
    assert mean["value"] == pytest.approx(result.metrics["liver"]["mean_gy"])
    assert mean["u_rel"] == pytest.approx(u_rel, rel=0.05)
    assert (mean["hi95"] - mean["lo95"]) / 2 == pytest.approx(1.959964 * u_rel * mean["value"], rel=0.05)
    for key, expected in parts.items():  # the budget: each input alone
        assert mean["budget"][key] / mean["value"] == pytest.approx(expected, rel=0.05), key
    assert set(mean["budget"]) == set(parts)  # segmentation and noise off: not in the budget
    # a dose-linear metric scales like the mean
    assert result.uncertainty["vois"]["liver"]["D70_gy"]["u_rel"] == pytest.approx(u_rel, rel=0.05)


def test_pet_inputs_are_the_scanners_not_the_vials(coarse):
    # a PET measures activity: the administered activity, residual and lung shunt are not in its
    # dose; its calibration and the time stamps are (factor exp(lambda dt)).
    activity = coarse.activity
    dose = activity.with_array(np.asarray(activity.array) * 50.0, units="GY")
    masks = {"liver": coarse.vois["liver"]}
    dvhs = {"liver": dvh(dose, masks["liver"], name="liver")}
    settings = uncertainty_settings_from_dict({"n": 4000, "seed": 2, "noise": False, "segmentation_margin_mm": 0.0,
                                               "administration_time_min": 60.0})
    out = propagate(activity, dose, masks, {"liver": "whole_liver"}, dvhs, settings, calibration={"kind": "pet"},
                    calibration_voi=None, method="kernel")
    inputs = out["record"]["inputs"]
    assert not inputs["administered_activity_rel"]["applied"] and "PET measures" in inputs["residual_abs"]["how"]
    lam_per_min = Y90_DECAY_CONSTANT_PER_H / 60.0
    parts = {"pet_calibration_rel": DEFAULT_UNCERTAINTIES["pet_calibration_rel"][0],
             "administration_time_min": lam_per_min * 60.0,
             "scan_time_min": lam_per_min * DEFAULT_UNCERTAINTIES["scan_time_min"][0],
             "kernel_rel": DEFAULT_UNCERTAINTIES["kernel_rel"][0]}
    mean = out["vois"]["liver"]["mean_gy"]
    assert mean["u_rel"] == pytest.approx(math.sqrt(sum(v * v for v in parts.values())), rel=0.05)
    assert mean["budget"]["administration_time_min"] / mean["value"] == pytest.approx(parts["administration_time_min"],
                                                                                      rel=0.05)
    assert inputs["pet_calibration_rel"]["source"] == DEFAULT_UNCERTAINTIES["pet_calibration_rel"][2]
    assert inputs["administration_time_min"]["source"] == "[uncertainty]"


# --------------------------------------------------------------------------- noise


def test_noise_interval_from_one_realisation_matches_the_spread_over_realisations(coarse):
    # 50 independent Poisson realisations of the phantom's SPECT (20 counts per MBq): the spread
    # of D70 across them is the truth. The engine sees one realisation and resamples it.
    # The spread of 50 realisations is known to 10 % (1/sqrt(2 x 49)), the engine's u from 100
    # samples to 7 %: 30 % (the bound) is 2.5 standard errors of their ratio.
    # The tumour's D70 varies mostly through its mean, which resampling reproduces. The normal
    # liver's D70 is a quantile of a noise-broadened DVH: resampling a noisy image adds its
    # noise again (voxel variance 2 lambda, not lambda), so its spread is between 1 and sqrt(2)
    # times the truth (1.14-1.32 measured on three realisations): checked as such, conservative.
    roles = {"liver": "whole_liver", "tumour_1": "tumour"}
    vois = {k: coarse.vois[k] for k in roles}
    spread: dict[str, list[float]] = {"tumour_1": [], "normal_liver": []}
    for seed in range(100, 150):
        r = _quiet(lambda: compute_case(_spect(coarse, 20.0, seed), vois, _case(roles)))
        for name in spread:
            spread[name].append(r.metrics[name]["D70_gy"])
    truth = {n: float(np.std(v, ddof=1)) for n, v in spread.items()}
    settings = {**OFF, "n": 100, "seed": 5}
    for seed in (0, 1):
        r = _quiet(lambda: compute_case(_spect(coarse, 20.0, seed), vois, _case(roles, settings)))
        assert r.provenance["uncertainty"]["noise"]["applied"]
        tumour = r.uncertainty["vois"]["tumour_1"]["D70_gy"]
        assert tumour["u"] / truth["tumour_1"] == pytest.approx(1.0, abs=0.30)
        assert set(tumour["budget"]) == {"noise"}
        normal = r.uncertainty["vois"]["normal_liver"]["D70_gy"]["u"] / truth["normal_liver"]
        assert 0.9 <= normal <= 1.3 * math.sqrt(2.0)


def test_self_calibration_cancels_noise_in_the_calibration_vois_total(coarse):
    # Each noise sample is recalibrated: the liver (calibration VOI) holds the delivered activity
    # again, so its mean dose hardly moves (only the kernel's spill across its surface does):
    # under 0.1 % here, against 2-3 % for the tumour's.
    roles = {"liver": "whole_liver", "tumour_1": "tumour"}
    r = _quiet(lambda: compute_case(_spect(coarse, 20.0, 3), {k: coarse.vois[k] for k in roles},
                                    _case(roles, {**OFF, "n": 50, "seed": 1})))
    assert r.uncertainty["vois"]["liver"]["mean_gy"]["u_rel"] < 1e-3
    assert r.uncertainty["vois"]["tumour_1"]["mean_gy"]["u_rel"] > 0.01


def test_counts_per_second_get_no_poisson_model(coarse):
    # CPS values are not counts: Poisson resampling of them would be wrong by the frame duration
    roles = {"liver": "whole_liver"}
    scan = _spect(coarse, 20.0, 3)
    cps = scan.with_array(np.asarray(scan.array) / 1200.0, units="CPS")
    r = _quiet(lambda: compute_case(cps, {"liver": coarse.vois["liver"]}, _case(roles, {"n": 3, "seed": 1})))
    noise = r.provenance["uncertainty"]["noise"]
    assert noise["applied"] is False and "counts per second" in noise["how"]
    assert "noise" not in r.uncertainty["vois"]["liver"]["mean_gy"]["budget"]


@pytest.mark.parametrize("shape, spacing, fwhm", [
    ((40, 36, 32), (4.0, 4.0, 3.0), 12.0),  # taps within every axis
    ((5, 36, 3), (4.0, 2.0, 6.0), 30.0),  # taps reaching around the short axes: folded onto them
])
def test_correlated_noise_keeps_unit_variance_and_correlates_as_a_gaussian(shape, spacing, fwhm):
    # The filter is linear and periodic, so a voxel's variance is the sum of the squares of the
    # map's weights onto the white noise, and two voxels' covariance the sum of the products of
    # theirs: both read exactly off the image of one white-noise impulse. Truth: every voxel's
    # variance 1 (to rounding), and voxels l apart along an axis of n voxels correlated by the
    # continuous Gaussian's exp(-r^2 / (4 sigma^2)) summed over the periodic images r = (l + m n) h
    # and normalised at l = 0 (on an axis longer than the filter, the plain Gaussian), within
    # 2e-3: the taps end at 4 sigma; sigma >= 1.3 voxels is sampled finely enough that the
    # discrete sums equal the integrals to 1e-10.
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    impulse = np.zeros(shape)
    impulse[1, 2, 0] = 1.0  # near a corner: periodic, so no different from the centre
    k = correlate_noise(impulse, spacing, fwhm)  # k[i]: the weight of white[1, 2, 0] in voxel i
    assert float(np.sum(k * k)) == pytest.approx(1.0, abs=1e-12)  # a voxel's variance
    folded = 0
    for axis, h in zip((2, 1, 0), spacing):
        n = shape[axis]
        images = n * np.arange(-50, 51)

        def rho(lag):
            return float(np.sum(np.exp(-((lag + images) * h) ** 2 / (4 * sigma**2))))

        folded += 2 * math.ceil(4 * sigma / h) + 1 > n  # the filter's taps reach around the axis
        for lag in range(1, min(4, n)):
            cov = float(np.sum(k * np.roll(k, lag, axis=axis)))  # voxels `lag` apart along `axis`
            assert cov == pytest.approx(rho(lag) / rho(0), abs=2e-3), (axis, lag)
            if n * h > 12 * sigma:  # far from folded: the plain Gaussian correlation
                assert cov == pytest.approx(math.exp(-(lag * h) ** 2 / (4 * sigma**2)), abs=2e-3)
    assert folded == (3 if shape[2] == 3 else 0)  # the cases reach both branches
    white = np.random.default_rng(3).standard_normal(shape)
    assert np.array_equal(correlate_noise(white, spacing, 0.0), white)  # FWHM 0: unchanged
    np.testing.assert_allclose(correlate_noise(white + impulse, spacing, fwhm),  # linear
                               correlate_noise(white, spacing, fwhm) + k, atol=1e-12)


def _pet_cube(cv: float, fwhm: float, n: int, seed: int):
    """A uniform 1 MBq cube of 10^3 voxels (4 mm) in a 32^3 grid, local deposition, noise only."""
    from voxeldose.dose import absorbed_dose_array

    a = np.zeros((32, 32, 32), np.float32)
    a[11:21, 11:21, 11:21] = 1.0
    activity = Image(a, (4.0, 4.0, 4.0), units="MBQ")
    mask = activity.with_array((a > 0).astype(np.float32), units="MASK")
    dose = activity.with_array(absorbed_dose_array(a, spacing_xyz_mm=(4.0, 4.0, 4.0), method="local"), units="GY")
    settings = uncertainty_settings_from_dict({**OFF, "n": n, "seed": seed, "pet_noise_cv": cv, "noise_fwhm_mm": fwhm})
    out = propagate(activity, dose, {"cube": mask}, {"cube": "whole_liver"}, {"cube": dvh(dose, mask, name="cube")},
                    settings, calibration={"kind": "pet"}, calibration_voi=None, method="local")
    return out["vois"]["cube"]["mean_gy"], out["record"]["noise"]


@pytest.mark.parametrize("fwhm", [0.0, 12.0])
def test_correlated_noise_gives_a_vois_mean_the_analytic_spread(fwhm):
    # Local deposition, uniform activity a in a cube of N = 10^3 voxels, per-voxel noise variance
    # s a with s = cv^2 a (pet_noise_cv): the mean's relative standard uncertainty is
    # cv sqrt(sum_ij rho_ij) / N, with rho_ij the correlation of voxels i and j: cv / sqrt(N)
    # independent; with the Gaussian correlation the product over axes of
    # sum_{i,j < 10} exp(-((i - j) h)^2 / (4 sigma^2)), 7.65 times as large at 12 mm FWHM.
    # 400 samples: the sample standard deviation's own error 1/sqrt(2 x 399) = 3.5 %; 12 % is 3.4 of them.
    cv = 0.2
    mean, record = _pet_cube(cv, fwhm, 400, 9)
    if fwhm == 0:
        expected = cv / math.sqrt(1000)
        assert "none: voxels independent" in record["correlation"]["how"]
    else:
        sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        d = np.subtract.outer(np.arange(10), np.arange(10)) * 4.0
        expected = cv * math.sqrt(float(np.exp(-d**2 / (4 * sigma**2)).sum()) ** 3) / 1000
        assert record["correlation"]["fwhm_mm"] == fwhm and "exp(-r^2" in record["correlation"]["how"]
        assert expected / (cv / math.sqrt(1000)) == pytest.approx(7.65, abs=0.01)  # what independence misses
    assert mean["u_rel"] == pytest.approx(expected, rel=0.12)
    assert set(mean["budget"]) == {"noise"}


def test_correlated_spect_noise_keeps_the_poisson_variance(coarse):
    # SPECT counts with a correlation: Gaussian deviates of the Poisson variance (counts) per
    # voxel; the nominal stays, the spread of the tumour's mean grows against independent
    # Poisson resampling, and the seeded run is reproducible.
    roles = {"liver": "whole_liver", "tumour_1": "tumour"}
    vois = {k: coarse.vois[k] for k in roles}
    scan = _spect(coarse, 20.0, 4)
    runs = {f: _quiet(lambda: compute_case(scan, vois, _case(roles, {**OFF, "n": 60, "seed": 2, "noise_fwhm_mm": f})))
            for f in (0.0, 20.0)}
    u = {f: r.uncertainty["vois"]["tumour_1"]["mean_gy"]["u_rel"] for f, r in runs.items()}
    assert u[20.0] > 1.5 * u[0.0]  # the 8.84 mm voxels: ~2.3 voxels per FWHM
    assert runs[20.0].metrics["tumour_1"]["mean_gy"] == runs[0.0].metrics["tumour_1"]["mean_gy"]
    noise = runs[20.0].provenance["uncertainty"]["noise"]
    assert "Poisson variance" in noise["model"] and noise["correlation"]["fwhm_mm"] == 20.0
    again = _quiet(lambda: compute_case(scan, vois, _case(roles, {**OFF, "n": 60, "seed": 2, "noise_fwhm_mm": 20.0})))
    assert again.uncertainty["vois"] == runs[20.0].uncertainty["vois"]


# --------------------------------------------------------------------------- segmentation


def _sphere_fraction(n, h, radius_mm, sub=8):
    """Fraction of each voxel of an n^3 grid (spacing h) inside a sphere at the grid's centre,
    with sub^3 samples in each voxel the surface crosses (8 per edge: steps of 1/512, sub-voxel
    positions to h/8; the phantoms' ellipsoid_fraction has 2 per edge at 1 mm, too coarse for
    sub-voxel moves)."""
    c = (n - 1) / 2 * h
    axis = np.arange(n) * h - c
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    half = 0.5 * math.sqrt(3.0) * h
    w = (r + half <= radius_mm).astype(np.float64)
    edge = np.nonzero((r + half > radius_mm) & (r - half < radius_mm))
    offsets = ((np.arange(sub) + 0.5) / sub - 0.5) * h
    o = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 3)
    centres = np.stack([z[edge], y[edge], x[edge]], axis=-1)
    w[edge] = (np.linalg.norm(centres[:, None, :] + o[None], axis=-1) <= radius_mm).mean(axis=1)
    return w, r


def _radial_case(radius_mm=15.0, gradient=2.0, h=1.0):
    n = int(2 * (radius_mm + 12) / h) + 1
    inside, r = _sphere_fraction(n, h, radius_mm)
    dose = Image((gradient * r).astype(np.float32), (h, h, h), units="GY")
    return dose, inside


def test_a_moved_sphere_in_a_radial_gradient_changes_its_mean_as_analytic():
    # D = g r in a sphere of radius R: mean 3 g R / 4, so moving the boundary by d changes the
    # mean by exactly 3 g d / 4, and the volume by 4/3 pi ((R + d)^3 - R^3). (A linear gradient
    # along an axis would give no change at all: no test.) Each voxel's moved fraction is the
    # cube's fraction under its local surface plane moved by d. Measured on a 1 mm grid, R = 15
    # mm: every move from a quarter voxel to three voxels within 2.3 % (volume and mean);
    # tolerance 4 %. The rule before 2026-12-03 (a one-voxel ramp from the fractions) was 13-20 %
    # short for sub-voxel moves here and 5-8 % short at 2-3 voxels: rejected.
    dose, inside = _radial_case()
    base = float((dose.array * inside).sum() / inside.sum())
    assert base == pytest.approx(0.75 * 2.0 * 15.0, rel=0.01)
    assert np.array_equal(moved_mask(inside, (1.0, 1.0, 1.0), 0.0), inside)
    for d in (-3.0, -2.0, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 2.0, 3.0):
        moved = moved_mask(inside, (1.0, 1.0, 1.0), d)
        mean = float((dose.array * moved).sum() / moved.sum())
        assert mean - base == pytest.approx(0.75 * 2.0 * d, rel=0.04), d
        assert moved.sum() - inside.sum() == pytest.approx(4 / 3 * math.pi * ((15.0 + d) ** 3 - 15.0**3),
                                                           rel=0.04), d
    # an inward move deeper than the sphere leaves its deepest voxel, never an empty VOI
    core = moved_mask(inside, (1.0, 1.0, 1.0), -40.0)
    assert 1.0 <= core.sum() < 30.0 and core[inside == 0].sum() == 0.0
    # a 4 mm grid (a PET's), R = 7.5 voxels moved by half a voxel to two voxels: within 2.5 %
    # (measured); tolerance 4 % (the old rule: 10 % short at 2 voxels, 14 % long at a quarter voxel)
    _, inside4 = _radial_case(radius_mm=30.0, h=4.0)
    for d in (-8.0, -2.0, 1.0, 2.0, 8.0):
        moved = moved_mask(inside4, (4.0, 4.0, 4.0), d)
        assert (moved.sum() - inside4.sum()) * 64 == pytest.approx(4 / 3 * math.pi * ((30.0 + d) ** 3 - 30.0**3),
                                                                   rel=0.04), d
    # an anisotropic grid (2 x 2 x 5 mm, a SPECT's thick slices): the same rule, within 4 %
    n_xy, n_z = 41, 17
    c_xy, c_z = 40.0, 40.0
    zz, yy, xx = np.meshgrid(np.arange(n_z) * 5.0 - c_z, np.arange(n_xy) * 2.0 - c_xy, np.arange(n_xy) * 2.0 - c_xy,
                             indexing="ij")
    sub = (np.arange(8) + 0.5) / 8 - 0.5
    oz, oy, ox = (g.ravel() for g in np.meshgrid(sub * 5.0, sub * 2.0, sub * 2.0, indexing="ij"))
    aniso = np.zeros(zz.shape)
    for i in range(oz.size):
        aniso += np.sqrt((zz + oz[i]) ** 2 + (yy + oy[i]) ** 2 + (xx + ox[i]) ** 2) <= 25.0
    aniso /= oz.size
    for d in (-2.5, -1.0, 1.0, 2.5):
        moved = moved_mask(aniso, (2.0, 2.0, 5.0), d)
        assert (moved.sum() - aniso.sum()) * 20.0 == pytest.approx(4 / 3 * math.pi * ((25.0 + d) ** 3 - 25.0**3),
                                                                   rel=0.04), d


def test_derived_vois_are_made_again_from_the_moved_vois():
    # A liver sphere (R = 30 mm) with a tumour sphere (R = 10 mm) inside, 2 mm voxels; the
    # normal liver and the tumours' union derived as the case derives them. In a sample that moves
    # the liver out by 2 mm and the tumour out by 3 mm, the normal liver is the moved liver
    # without the moved tumour (the derivation's own rule, exactly), so its volume is
    # V_L(32) - V_T(13) (within 2 %: each move is within 2.5 % of the exact one, measured above).
    # A normal liver drawn by the user (here one voxel off the derivation) moves on its own.
    from voxeldose.uncertainty import _derive_moved, _segmentation_boundaries
    from voxeldose.voi_sets import derive_vois, difference, union_of

    h, n = 2.0, 41
    liver_w, _ = _sphere_fraction(n, h, 30.0)
    tumour_w, _ = _sphere_fraction(n, h, 10.0)
    like = Image(np.zeros((n, n, n), np.float32), (h, h, h), units="MASK")
    masks = {"liver": like.with_array(liver_w.astype(np.float32)), "t": like.with_array(tumour_w.astype(np.float32))}
    masks.update(derive_vois(masks, whole_liver="liver", tumours=["t"]))
    roles = {"liver": "whole_liver", "t": "tumour", "normal_liver": "normal_liver", "tumours": "derived"}
    boundaries, derived = _segmentation_boundaries(masks, roles, (h, h, h), 6.0)
    assert set(derived) == {"tumours", "normal_liver"}
    deltas = {"liver": 2.0, "t": 3.0}
    moved = {k: boundaries[k].moved(d) for k, d in deltas.items()}
    _derive_moved(moved, {k: b.box for k, b in boundaries.items()}, derived)

    def full(name):
        out = np.zeros((n, n, n))
        out[boundaries[name].box] = moved[name]
        return out

    np.testing.assert_array_equal(full("normal_liver"), difference(full("liver"), union_of([full("t")], (n, n, n))))
    np.testing.assert_array_equal(full("tumours"), full("t").astype(np.float32))
    v_normal = full("normal_liver").sum() * h**3
    assert v_normal == pytest.approx(4 / 3 * math.pi * (32.0**3 - 13.0**3), rel=0.02)
    # no move: the derived masks are the case's own, bit for bit
    still = {k: boundaries[k].moved(0.0) for k in deltas}
    _derive_moved(still, {k: b.box for k, b in boundaries.items()}, derived)
    np.testing.assert_array_equal(still["normal_liver"], np.asarray(masks["normal_liver"].array)[boundaries["normal_liver"].box])
    drawn = np.array(masks["normal_liver"].array)
    drawn[20, 20, 0] = 0.5  # not the derivation's result: the user's own VOI
    _, own = _segmentation_boundaries({**masks, "normal_liver": like.with_array(drawn)}, roles, (h, h, h), 6.0)
    assert set(own) == {"tumours"}


def test_segmentation_margin_gives_the_analytic_spread():
    # d ~ N(0, 1.5 mm) clipped at 3 sigma (sd 0.986 sigma): u(mean) = 3 g / 4 x 0.986 x 1.5 mm.
    # 400 samples know a standard deviation to 3.5 %; the discretisation adds < 5 %: 10 %.
    dose, inside = _radial_case()
    activity = dose.with_array(np.zeros(dose.shape, np.float32), units="MBQ")
    mask = dose.with_array(inside.astype(np.float32), units="MASK")
    settings = uncertainty_settings_from_dict({**OFF, "n": 400, "seed": 3, "segmentation_margin_mm": 1.5})
    out = propagate(activity, dose, {"s": mask}, {}, {"s": dvh(dose, mask, name="s")}, settings,
                    calibration={"kind": "activity"}, calibration_voi=None, method="local")
    mean = out["vois"]["s"]["mean_gy"]
    assert mean["u"] == pytest.approx(0.75 * 2.0 * 0.986 * 1.5, rel=0.10)
    assert set(mean["budget"]) == {"segmentation_margin_mm"}
    assert out["record"]["noise"]["applied"] is False  # an activity map has no noise model
    assert not out["record"]["inputs"]["kernel_rel"]["applied"]  # local deposition: no kernel input


# --------------------------------------------------------------------------- reproducibility


def test_seeded_runs_are_reproducible_bit_for_bit(coarse):
    roles = {"liver": "whole_liver", "tumour_1": "tumour", "lung": "lung"}
    vois = {k: coarse.vois[k] for k in roles}
    scan = _spect(coarse, 20.0, 4)
    case = _case(roles, {"n": 12, "seed": 42})
    a = _quiet(lambda: compute_case(scan, vois, case))
    b = _quiet(lambda: compute_case(scan, vois, case))
    assert json.dumps(a.uncertainty["vois"]) == json.dumps(b.uncertainty["vois"])
    assert json.dumps(a.uncertainty["dvh_bands"]) == json.dumps(b.uncertainty["dvh_bands"])
    # other workers, other order: the same numbers (each sample seeded by its index)
    masks, dvhs = a.vois, a.dvhs
    scales = {n: 1.04 / rho for n, rho in a.provenance["dose"]["voi_densities_g_per_cm3"].items()}
    kwargs = dict(calibration=a.provenance["calibration"], calibration_voi="liver", method="kernel",
                  voi_dose_scales=scales)
    serial = _quiet(lambda: propagate(a.activity, a.dose, masks, a.roles, dvhs, case.uncertainty, **kwargs,
                                      chunk_size=5))
    with ThreadPoolExecutor(2) as pool:
        pooled = _quiet(lambda: propagate(a.activity, a.dose, masks, a.roles, dvhs, case.uncertainty, **kwargs,
                                          map_function=pool.map, chunk_size=3))
    assert json.dumps(serial["vois"]) == json.dumps(pooled["vois"]) == json.dumps(a.uncertainty["vois"])
    other = _quiet(lambda: compute_case(scan, vois, _case(roles, {"n": 12, "seed": 43})))
    assert json.dumps(other.uncertainty["vois"]) != json.dumps(a.uncertainty["vois"])


# --------------------------------------------------------------------------- outputs


def test_result_outputs_carry_the_intervals(coarse):
    roles = {"liver": "whole_liver", "tumour_1": "tumour", "lung": "lung"}
    r = _quiet(lambda: compute_case(_spect(coarse, 20.0, 6), {k: coarse.vois[k] for k in roles},
                                    _case(roles, {"n": 20, "seed": 1})))
    data = json.loads(json.dumps(r.to_dict()))
    entry = data["vois"]["tumour_1"]["uncertainty"]["mean_gy"]
    assert entry["lo95"] < entry["value"] < entry["hi95"] and entry["u"] > 0
    assert set(entry["budget"]) == {"administered_activity_rel", "residual_abs", "lung_shunt_abs", "kernel_rel",
                                    "segmentation_margin_mm", "noise"}
    assert "bed_mean_gy" in data["vois"]["tumour_1"]["uncertainty"]  # tumour radiobiology defaults
    assert data["provenance"]["uncertainty"]["n"] == 20
    assert len(data["uncertainty"]["dvh_bands"]["liver"]["lo"]) == 101
    rows = {row["voi"]: row for row in metrics_rows(data)}
    assert rows["tumour_1"]["mean_gy_u"] == entry["u"] and rows["tumour_1"]["mean_gy_hi95"] == entry["hi95"]
    assert rows["lung"]["bed_mean_gy_u"] is None  # no lung BED default (no repair half-time)
    from voxeldose.report import render_report

    page = render_report(r)
    assert "<h2>Uncertainty</h2>" in page and "95 % band" in page and "segmentation_margin_mm" in page


def test_no_analysis_unless_asked(coarse):
    roles = {"liver": "whole_liver"}
    r = _quiet(lambda: compute_case(_spect(coarse, 20.0, 6), {"liver": coarse.vois["liver"]}, _case(roles)))
    assert r.uncertainty == {} and "uncertainty" not in r.provenance
    assert "uncertainty" not in r.to_dict() and "mean_gy_u" not in metrics_rows(r.to_dict())[0]


@pytest.mark.parametrize("table, message", [
    ({"n": 1}, "n = 1 gives no spread"),
    ({"n": -3}, "whole number from 0"),
    ({"n": 2.5}, "whole number from 0"),
    ({"kernel_rel": 2.0}, "implausible"),
    ({"segmentation_margin_mm": -1}, ">= 0"),
    ({"noise": "yes"}, "true or false"),
    ({"kernal_rel": 0.02}, "'kernal_rel' -> 'kernel_rel'"),
    ({"noise_fwhm_mm": 150.0}, "the unit is mm"),
    ({"noise_fwhm_mm": -2.0}, r">= 0 \(mm\)"),
])
def test_bad_tables_are_refused(table, message):
    with pytest.raises(InputError, match=message):
        uncertainty_settings_from_dict(table, where="case file c.toml [uncertainty]")


def test_cli_samples_override_the_case_file_but_keep_its_inputs(liver_export, tmp_path):
    export, _ = liver_export
    case = tmp_path / "case.toml"
    case.write_text((export / "case.toml").read_text() + "\n[uncertainty]\nn = 500\nkernel_rel = 0.03\n")
    out = tmp_path / "out"
    assert main(["-q", "run", str(export / "PET"), "--voi", str(export / "RTSTRUCT.dcm"), "--case", str(case),
                 "--out", str(out), "--method", "local", "--uncertainty", "4", "--seed", "9"]) == 0
    record = json.loads((out / "metrics.json").read_text())["provenance"]["uncertainty"]
    assert record["n"] == 4 and record["seed"] == 9
    assert record["inputs"]["kernel_rel"]["applied"] is False  # local deposition
    assert record["inputs"]["kernel_rel"]["u"] == 0.03 and "[uncertainty]" in record["inputs"]["kernel_rel"]["source"]
    assert record["calibration_kind"] == "pet" and record["noise"]["applied"]
    with pytest.raises(VoxelDoseError, match="n = 1"):
        Case("x").with_overrides(uncertainty={"n": 1})


def test_the_calibration_voi_moves_as_one_boundary():
    # A SPECT of uniform counts in a sphere (R = 15 mm), self-calibrated on that sphere, local
    # deposition, segmentation only (d ~ N(0, 1 mm), |d| <= 3 mm). The sphere's counts and its DVH
    # share one boundary: shrinking it puts the delivered activity into V' (dose x V/V'), growing
    # it adds only empty voxels (mean x V/V'), so its mean dose is D0 (R/(R + d))^3 in every
    # sample: u_rel = std((R/(R + d))^3) = 0.212 (Monte Carlo of that formula). The formula is
    # skewed (d near -3 mm gives x1.9): 300 samples know its std to 5.1 % (1 sigma, simulated),
    # and this seed's draws are high: the formula on the engine's own 300 draws gives 0.244, and
    # the engine 0.2439 (its moved volumes within 1.7 % of the sphere's). Tolerance 18 % (3.5
    # sigma). Moving the calibration and the DVH by independent draws gave 0.145 (-32 %).
    n, c = 57, 28.0
    inside = ellipsoid_fraction((n, n, n), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (c, c, c), (15.0,) * 3)
    scan = Image((1000.0 * inside).astype(np.float32), (1.0, 1.0, 1.0), units="CNTS", meta=ImageMeta(modality="NM"))
    mask = scan.with_array(inside.astype(np.float32), units="MASK")
    settings = {**OFF, "n": 300, "seed": 4, "noise": False, "segmentation_margin_mm": 1.0}
    case = Case("s", administered_gbq=1.0, lung_shunt_fraction=0.0, residual_fraction=0.0,
                voi_roles={"s": "whole_liver"}, uncertainty=uncertainty_settings_from_dict(settings))
    r = _quiet(lambda: compute_case(scan, {"s": mask}, case, method="local"))
    d = np.clip(np.random.default_rng(0).normal(0.0, 1.0, 1_000_000), -3.0, 3.0)
    expected = float(np.std((15.0 / (15.0 + d)) ** 3))
    assert r.uncertainty["vois"]["s"]["mean_gy"]["u_rel"] == pytest.approx(expected, rel=0.18)
