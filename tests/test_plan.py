"""Planning on an MAA SPECT (voxeldose.plan, voxeldose.planning): first tests with known answers."""

import warnings

import numpy as np
import pytest

import voxeldose
from voxeldose import phantoms
from voxeldose.constants import MIRD_Y90_GY_KG_PER_GBQ, Y90_DOSE_PER_ACTIVITY_GY_KG_PER_GBQ
from voxeldose.plan import compute_plan
from voxeldose.planning import plan_settings_from_dict, predicted_activity

ROLES = {"liver": "whole_liver", "lung": "lung", **{f"tumour_{i}": "tumour" for i in range(1, 6)}}


@pytest.fixture(scope="module")
def maa():
    ph = phantoms.liver(spacing_xyz_mm=(8.84, 8.84, 8.84), lung_shunt_fraction=0.1)
    counts = voxeldose.Image(ph.activity.array * 1000.0, ph.activity.spacing_mm, ph.activity.origin_mm, units="CNTS")
    return ph, counts, {n: ph.vois[n] for n in ROLES}


def _plan(counts, vois, plan, method="local", **case):
    c = voxeldose.Case("plan-1", voi_roles={n: r for n, r in ROLES.items() if n in vois}, plan=plan, **case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", voxeldose.VoxelDoseWarning)
        return compute_plan(counts, vois, c, method=method)


def test_the_predicted_activity_puts_each_territorys_activity_where_its_counts_are(maa):
    ph, counts, vois = maa
    act, rec = predicted_activity(counts, {"liver": vois["liver"]}, {"liver": 2.0}, lung_shunt_fraction=0.1,
                                  lung=vois["lung"])
    # the liver holds 2 GBq x 0.9 and the lung 2 GBq x 0.1, exactly (float32 storage: 1e-6); the
    # phantom's lungs lie 20 mm from the liver, so the voxels outside the lung mask hold the liver's
    liver = float(act.array[vois["lung"].array == 0].sum(dtype=np.float64))
    assert liver == pytest.approx(1800.0, rel=1e-6)
    assert float(act.array.sum(dtype=np.float64)) == pytest.approx(2000.0, rel=1e-6)
    assert rec["lung"]["activity_mbq"] == pytest.approx(200.0)


def test_a_surface_voxels_counts_stay_with_its_territory():
    # Uniform uptake c per voxel of liver, no blur: a voxel a share w inside the liver holds c w
    # counts, all of them the liver's. Two territories split the liver at x = 10, sharing that
    # column half and half; the liver's outer faces (x = 2 and x = 17) are 0.3 inside. The truth
    # is a uniform concentration, so every voxel wholly inside territory k holds
    # A_k (1 - LSF) / V_k with V_k = sum of k's shares (in voxels). Weighting each voxel's counts by
    # the share again (counts x w) would count the partial volume twice: A_k (1 - LSF) / sum(w^2 c)
    # in the interior, 2.8 % high for "a" here (7.8 / 7.59 per row), which the 1e-6 tolerance (float32 shares and
    # storage of the map: 1e-7) rejects.
    shape = (6, 8, 20)
    a = np.zeros(shape, np.float32)
    b = np.zeros(shape, np.float32)
    a[1:5, 1:7, 3:10] = 1.0
    a[1:5, 1:7, 2] = 0.3
    a[1:5, 1:7, 10] = 0.5
    b[1:5, 1:7, 11:17] = 1.0
    b[1:5, 1:7, 17] = 0.3
    b[1:5, 1:7, 10] = 0.5
    c = 500.0
    counts = voxeldose.Image((a + b) * c, (4.0, 4.0, 4.0), (0.0, 0.0, 0.0), units="CNTS")
    act, rec = predicted_activity(counts, {"a": a, "b": b}, {"a": 2.0, "b": 1.0}, lung_shunt_fraction=0.1)
    for name, w, gbq in (("a", a, 2.0), ("b", b, 1.0)):
        v_k = float(w.sum(dtype=np.float64))
        interior = act.array[w == 1.0]
        np.testing.assert_allclose(interior, gbq * 900.0 / v_k, rtol=1e-6)
        assert rec["territories"][name]["counts"] == pytest.approx(c * v_k, rel=1e-7)  # float32 shares
    old_rule = 2.0 * 900.0 / float(np.sum(a * (a + b) * c, dtype=np.float64)) * c
    assert old_rule / (2.0 * 900.0 / float(a.sum(dtype=np.float64))) == pytest.approx(7.8 / 7.59, rel=1e-6)
    # the shared column holds both territories' activity, each at its own concentration x its share
    np.testing.assert_allclose(act.array[1:5, 1:7, 10], 0.5 * (2.0 * 900.0 / a.sum() + 900.0 / b.sum()), rtol=1e-6)
    assert float(act.array.sum(dtype=np.float64)) == pytest.approx(2700.0, rel=1e-6)
    assert rec["counts_outside"] == 0.0


def test_a_uniform_territory_plans_the_mird_activity(maa):
    # uniform counts in the liver, one constraint: the liver's mean dose <= 120 Gy. With local
    # deposition the voxel mean is exactly C A (1 - LSF) / M with the engine's C (ICRP-107,
    # 49.77 Gy kg/GBq), so the voxel plan is the MIRD activity at that constant (1e-6: the activity
    # map and the dose at 1 GBq are stored as float32)
    # binary masks: a partly covered voxel of uniform uptake would hold the share w of a full
    # voxel's counts, so a dose w of the interior's, and weigh w in the DVH's mean, which the
    # single-compartment model has no term for
    ph, counts, vois = maa
    vois = {n: voxeldose.mask_image(counts, (m.array >= 0.5).astype(np.float32), name=n)
            for n, m in vois.items() if n in ("liver", "lung")}
    uniform = voxeldose.Image(vois["liver"].array * 100.0, counts.spacing_mm, counts.origin_mm, units="CNTS")
    plan = {"mird_target_gy": 120.0, "constraints": [{"voi": "liver", "metric": "mean", "max_gy": 120.0}]}
    r = _plan(uniform, vois, plan, lung_shunt_fraction=0.1)
    t = r.plan["territories"]["liver"]
    assert t["binding_constraint"] == "liver mean <= 120 Gy"
    mird = t["models"]["mird"]["activity_gbq"]  # at 49.67 Gy kg/GBq (no sphere type)
    assert t["activity_gbq"] == pytest.approx(mird * MIRD_Y90_GY_KG_PER_GBQ / Y90_DOSE_PER_ACTIVITY_GY_KG_PER_GBQ,
                                              rel=1e-6)
    assert mird == pytest.approx(120.0 * t["mass_kg"] / (49.67 * 0.9), rel=1e-12)


def test_the_plans_metrics_equal_a_fresh_dose_at_its_activity(maa):
    ph, counts, vois = maa
    plan = {"constraints": [{"role": "normal_liver", "metric": "mean", "max_gy": 40.0},
                            {"role": "tumour", "metric": "D70", "min_gy": 60.0}]}
    r = _plan(counts, vois, plan, method="kernel", lung_shunt_fraction=0.1)
    t = r.plan["territories"]["liver"]
    assert t["binding_constraint"] == "normal_liver mean <= 40 Gy"
    # the predicted dose (sum of activity x the dose at 1 GBq) equals the dose of the predicted
    # activity computed afresh (float32 convolution round-off: 1e-5 of the maximum)
    fresh = voxeldose.absorbed_dose(r.activity, method="kernel")
    np.testing.assert_allclose(r.dose.array, fresh.array, atol=1e-5 * float(fresh.array.max()))
    assert voxeldose.dvh(fresh, r.vois["normal_liver"]).mean_gy == pytest.approx(40.0, rel=1e-5)
    assert t["metrics_at_plan"]["normal_liver"]["mean_gy"] == pytest.approx(40.0, rel=1e-9)


def test_a_lower_bound_above_the_largest_activity_is_said(maa):
    ph, counts, vois = maa
    plan = {"constraints": [{"role": "normal_liver", "metric": "mean", "max_gy": 40.0},
                            {"role": "tumour", "metric": "D70", "min_gy": 500.0}]}
    r = _plan(counts, vois, plan, lung_shunt_fraction=0.1)
    assert r.plan["territories"]["liver"]["meets_all_constraints"] is False
    assert any("no activity meets every constraint" in c.message for c in r.caveats)


@pytest.mark.parametrize("plan, match", [
    ({"constraint": []}, "unknown \\[plan\\] key"),
    ({"constraints": [{"voi": "liver", "metric": "D70", "max_pct": 3}]}, "use max_gy/min_gy"),
    ({"constraints": [{"voi": "liver", "metric": "mean"}]}, "one bound"),
    ({"prior_lung_dose_gy": 50.0}, "leaves no room"),
    ({"activities_gbq": {"liver": 2000.0}}, "MBq"),
])
def test_bad_plan_settings_say_what_to_fix(plan, match):
    with pytest.raises(voxeldose.InputError, match=match):
        plan_settings_from_dict(plan)


def test_a_post_treatment_scan_is_refused(maa):
    ph, counts, vois = maa
    pet = voxeldose.Image(counts.array, counts.spacing_mm, counts.origin_mm, units="BQML",
                          meta=voxeldose.ImageMeta(modality="PT"))
    with pytest.raises(voxeldose.InputError, match="voxeldose run"):
        _plan(pet, vois, {})


def test_a_case_files_uncertainty_table_is_said_not_silently_dropped(maa):
    from voxeldose.uncertainty import uncertainty_settings_from_dict

    ph, counts, vois = maa
    plan = {"constraints": [{"role": "normal_liver", "metric": "mean", "max_gy": 40.0}]}
    r = _plan(counts, vois, plan, lung_shunt_fraction=0.1, uncertainty=uncertainty_settings_from_dict({"n": 50}))
    (c,) = [c for c in r.caveats if "[uncertainty]" in c.message]
    assert "n = 50" in c.message and "not used" in c.message
    assert not r.uncertainty  # no intervals
    without = _plan(counts, vois, plan, lung_shunt_fraction=0.1)
    assert not any("[uncertainty]" in c.message for c in without.caveats)


def test_the_measured_lung_shunt_counts_the_surface_voxels_once():
    # A lung block above a liver block, a cold voxel plane between them, no blur; surface voxels
    # are partly inside (0.3 to 0.6). The lung holds 10 % of the counts: C_lung / (C_lung +
    # C_liver) = 0.1 when each VOI counts every voxel it touches (1e-9: float64 sums). Weighting
    # each voxel's counts by its share instead keeps sum(w^2) / sum(w) of each VOI's counts, 0.878
    # of the lung's and 0.908 of the liver's here, and gives 0.1 x 0.970, which the tolerance
    # rejects. (A voxel both VOIs touch is split
    # by their shares: exact only where their concentrations are equal, so not tested to 1e-9.)
    from voxeldose.planning import lung_shunt_from_counts

    shape = (13, 8, 8)
    liver = np.zeros(shape)
    lung = np.zeros(shape)
    liver[1:6, 1:7, 1:7] = 1.0
    liver[1, 1:7, 1:7] = 0.3
    liver[6, 1:7, 1:7] = 0.6
    lung[8:11, 2:6, 2:6] = 1.0
    lung[7, 2:6, 2:6] = 0.4
    lung[11, 2:6, 2:6] = 0.3
    c_liver, c_lung = 1.0 / liver.sum(), (0.1 / 0.9) / lung.sum()  # per unit share: lung 10 % of all
    values = (liver * c_liver + lung * c_lung) * 1e6
    counts = voxeldose.Image(values, (4.0,) * 3, (0.0,) * 3, units="CNTS")
    assert lung_shunt_from_counts(counts, lung, liver) == pytest.approx(0.1, rel=1e-9)
    weighted = float((values * lung).sum() / ((values * lung).sum() + (values * liver).sum()))
    assert weighted / 0.1 == pytest.approx(0.970, abs=0.001)


def test_a_voxel_a_territory_and_the_lung_share_keeps_its_counts_for_the_territory():
    # The liver's top plane (0.5 inside) is also 0.5 inside the lung. Its counts are the
    # territory's (the lung's activity is the uniform shunt, not its counts): the liver's map holds
    # A (1 - LSF) in proportion to every voxel it touches (1e-6: float32 map), the lung A LSF, and
    # the record's lung counts are those of the voxels only the lung touches (exact sums).
    shape = (10, 6, 6)
    liver = np.zeros(shape, np.float32)
    lung = np.zeros(shape, np.float32)
    liver[1:5, 1:5, 1:5] = 1.0
    liver[5, 1:5, 1:5] = 0.5
    lung[5, 1:5, 1:5] = 0.5
    lung[6:9, 1:5, 1:5] = 1.0
    values = 100.0 * liver + 7.0 * lung
    counts = voxeldose.Image(values, (4.0,) * 3, (0.0,) * 3, units="CNTS")
    act, rec = predicted_activity(counts, {"liver": liver}, {"liver": 1.0}, lung_shunt_fraction=0.2, lung=lung)
    c_liver = float(values[liver > 0].sum(dtype=np.float64))
    assert rec["territories"]["liver"]["counts"] == pytest.approx(c_liver, rel=1e-12)
    assert rec["lung"]["counts"] == pytest.approx(float(values[6:9].sum(dtype=np.float64)), rel=1e-12)
    lung_per_share = 200.0 / float(lung.sum(dtype=np.float64))
    np.testing.assert_allclose(act.array[2, 2, 2], 800.0 * 100.0 / c_liver, rtol=1e-6)
    np.testing.assert_allclose(act.array[5, 2, 2], 800.0 * 53.5 / c_liver + 0.5 * lung_per_share, rtol=1e-6)
    np.testing.assert_allclose(act.array[7, 2, 2], lung_per_share, rtol=1e-6)
    assert float(act.array.sum(dtype=np.float64)) == pytest.approx(1000.0, rel=1e-6)
    assert rec["counts_outside"] == 0.0
