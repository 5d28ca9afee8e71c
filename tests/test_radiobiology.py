"""Radiobiology: BED, EQD2, EUD and gEUD against hand computations, the case file's table, and a case's outputs.

Hand values are computed here from the formulas with literal numbers (the Y-90 half-life typed as
64.10 h, ICRP-107), never by calling the module. Tolerance 1e-9 relative: the sums are of a few
float64 terms, so only round-off separates the two (about 1e-15).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

import voxeldose
from voxeldose import InputError, VoiError, dvh, dvh_array
from voxeldose.io import load_case
from voxeldose.radiobiology import (
    DEFAULT_PARAMETERS,
    TissueParameters,
    bed_gy,
    dvh_radiobiology,
    eqd2_gy,
    eud_gy,
    geud_gy,
    radiobiology_settings_from_dict,
)
from voxeldose.result import metrics_rows

from .conftest import LIVER_ROLES

REL = 1e-9
LAM = math.log(2) / 64.10  # Y-90, 1/h


def hand_bed(d, ab, t_rep):
    mu = math.log(2) / t_rep
    return d * (1 + d * LAM / ((mu + LAM) * ab))


def two_level(low=20.0, high=150.0):
    """A 4-voxel VOI: three voxels at ``low``, one at ``high`` (Gy), all fully inside."""
    dose = np.array([[[low, low, low, high]]])
    return dose, dvh_array(dose, np.ones_like(dose, bool), spacing_xyz_mm=(2.0, 2.0, 2.0), name="two")


TUMOUR = TissueParameters(alpha_beta_gy=10.0, repair_half_time_h=1.5, alpha_per_gy=0.005, geud_a=-10.0)


def test_bed_and_eqd2_of_a_uniform_dose_equal_the_formula():
    d = np.full((3, 3, 3), 120.0)
    m = dvh_radiobiology(dvh_array(d, np.ones_like(d, bool), spacing_xyz_mm=(4.0, 4.0, 4.0)), TUMOUR)
    bed = 120.0 * (1 + 120.0 * LAM / ((math.log(2) / 1.5 + LAM) * 10.0))
    for key in ("bed_mean_gy", "bed_D70_gy", "bed_D90_gy"):
        assert m[key] == pytest.approx(bed, rel=REL)
    assert m["eqd2_mean_gy"] == pytest.approx(bed / (1 + 2.0 / 10.0), rel=REL)
    assert m["eud_gy"] == pytest.approx(120.0, rel=REL)  # a uniform dose is its own EUD
    assert m["eubed_gy"] == pytest.approx(bed, rel=REL)
    assert m["geud_gy"] == pytest.approx(120.0, rel=REL)


def test_two_level_map_equals_the_hand_sums():
    _, h = two_level()
    m = dvh_radiobiology(h, TUMOUR)
    b_low, b_high = hand_bed(20.0, 10.0, 1.5), hand_bed(150.0, 10.0, 1.5)
    assert m["bed_mean_gy"] == pytest.approx(0.75 * b_low + 0.25 * b_high, rel=REL)
    assert m["eqd2_mean_gy"] == pytest.approx((0.75 * b_low + 0.25 * b_high) / 1.2, rel=REL)
    alpha = 0.005
    assert m["eud_gy"] == pytest.approx(-math.log(0.75 * math.exp(-alpha * 20) + 0.25 * math.exp(-alpha * 150)) / alpha,
                                        rel=REL)
    assert m["eubed_gy"] == pytest.approx(
        -math.log(0.75 * math.exp(-alpha * b_low) + 0.25 * math.exp(-alpha * b_high)) / alpha, rel=REL)
    assert m["geud_gy"] == pytest.approx((0.75 * 20.0 ** -10 + 0.25 * 150.0 ** -10) ** (1 / -10), rel=REL)
    # BED D_x = BED(D_x): the BED increases with dose
    assert m["bed_D70_gy"] == pytest.approx(hand_bed(h.d(70), 10.0, 1.5), rel=REL)
    # partial volumes are the weights: a half-covered hot voxel counts half
    dose = np.array([[[20.0, 20.0, 20.0, 150.0]]])
    half = dvh_array(dose, np.array([[[1.0, 1.0, 1.0, 0.5]]]), spacing_xyz_mm=(2.0, 2.0, 2.0))
    assert dvh_radiobiology(half, TUMOUR)["bed_mean_gy"] == pytest.approx((3 * b_low + 0.5 * b_high) / 3.5, rel=REL)


def test_the_mean_bed_is_not_the_bed_of_the_mean_dose():
    # BED = D + k D^2, so mean(BED) - BED(mean D) = k Var(D) > 0 on a non-uniform dose
    _, h = two_level()
    m = dvh_radiobiology(h, TUMOUR)
    k = LAM / ((math.log(2) / 1.5 + LAM) * 10.0)
    mean = 0.75 * 20 + 0.25 * 150
    variance = 0.75 * 20 ** 2 + 0.25 * 150 ** 2 - mean ** 2
    assert m["bed_mean_gy"] - hand_bed(mean, 10.0, 1.5) == pytest.approx(k * variance, rel=1e-9)
    assert m["bed_mean_gy"] > float(bed_gy(h.mean_gy, alpha_beta_gy=10.0, repair_half_time_h=1.5))


def test_limits():
    d = np.array([0.0, 10.0, 200.0])
    # alpha/beta -> infinity: no quadratic term, BED -> D
    assert bed_gy(d, alpha_beta_gy=1e15, repair_half_time_h=1.5) == pytest.approx(d, rel=1e-12, abs=1e-12)
    # fast repair (mu -> infinity): every sublethal lesion repaired, BED -> D
    assert bed_gy(d, alpha_beta_gy=3.0, repair_half_time_h=1e-12) == pytest.approx(d, rel=1e-9, abs=1e-12)
    # no repair (mu -> 0): the acute single dose, BED -> D (1 + D / (alpha/beta))
    assert bed_gy(d, alpha_beta_gy=3.0, repair_half_time_h=1e12) == pytest.approx(d * (1 + d / 3.0), rel=1e-9)
    # EQD2 of a BED with alpha/beta = 2 Gy halves it
    assert eqd2_gy(np.array([100.0]), alpha_beta_gy=2.0)[0] == pytest.approx(50.0, rel=REL)


def test_geud_a1_is_the_mean_and_eud_of_a_uniform_dose_is_that_dose():
    rng = np.random.default_rng(3)
    d, w = rng.uniform(1, 300, 50), rng.uniform(0.1, 1, 50)
    assert geud_gy(d, w, a=1) == pytest.approx(float(np.dot(d, w) / w.sum()), rel=REL)
    assert eud_gy(np.full(7, 88.0), np.ones(7), alpha_per_gy=0.3) == pytest.approx(88.0, rel=REL)
    # large |a| tends to the extremes (no overflow: log-sum-exp)
    assert geud_gy(d, w, a=-400) == pytest.approx(d.min(), rel=0.02)
    assert geud_gy(d, w, a=400) == pytest.approx(d.max(), rel=0.02)
    assert geud_gy([0.0, 50.0], [1, 1], a=-10) == 0.0  # a cold voxel dominates a tumour's gEUD


def test_functions_refuse_nonsense():
    with pytest.raises(InputError, match="alpha_beta_gy must be > 0"):
        bed_gy(10.0, alpha_beta_gy=0.0, repair_half_time_h=1.5)
    with pytest.raises(InputError, match="NaN"):
        bed_gy([np.nan], alpha_beta_gy=3.0, repair_half_time_h=1.5)
    with pytest.raises(InputError, match="a must not be 0"):
        geud_gy([1.0], [1.0], a=0)
    with pytest.raises(InputError, match="negative"):
        geud_gy([-1.0, 2.0], [1.0, 1.0], a=2)
    with pytest.raises(InputError, match="one weight per dose"):
        eud_gy([1.0, 2.0], [1.0], alpha_per_gy=0.1)
    with pytest.raises(InputError, match="TissueParameters: repair_half_time_h must be > 0"):
        TissueParameters(repair_half_time_h=-1.0)


def test_a_negative_dose_keeps_the_linear_term_and_no_geud():
    assert bed_gy([-2.0], alpha_beta_gy=3.0, repair_half_time_h=1.5)[0] == -2.0
    dose = np.array([[[-1.0, 50.0, 50.0, 50.0]]])
    h = dvh_array(dose, np.ones_like(dose, bool), spacing_xyz_mm=(2.0, 2.0, 2.0), name="noisy")
    with pytest.warns(voxeldose.VoxelDoseWarning, match="'noisy': no gEUD"):
        m = dvh_radiobiology(h, TUMOUR)
    assert m["geud_gy"] is None
    assert m["bed_mean_gy"] == pytest.approx((-1.0 + 3 * hand_bed(50.0, 10.0, 1.5)) / 4, rel=REL)


# --------------------------------------------------------------------------- the case file


def _case(tmp_path, table: str):
    p = tmp_path / "case.toml"
    p.write_text('case_id = "c1"\n[vois]\nliver = "whole_liver"\n"Tumor 1" = "tumour"\n' + table, encoding="utf-8")
    return load_case(p)


def test_the_case_file_table_is_read(tmp_path):
    case = _case(tmp_path, '[radiobiology]\ntumour = { alpha_beta_gy = 8, alpha_per_gy = 0.004, geud_a = -10 }\n'
                           '"Tumor 1" = { repair_half_time_h = 0.5 }\nbed_maps = true\n')
    rb = case.radiobiology
    assert rb.bed_maps and dict(rb.entries["tumour"]) == {"alpha_beta_gy": 8.0, "alpha_per_gy": 0.004, "geud_a": -10.0}
    assert rb.source.endswith("case.toml [radiobiology]")
    from voxeldose.radiobiology import parameters_for

    p = parameters_for("Tumor 1", "tumour", rb)
    # the VOI's entry beats its role's, the role's entry beats the default
    assert (p.alpha_beta_gy, p.repair_half_time_h, p.alpha_per_gy) == (8.0, 0.5, 0.004)
    assert p.sources["repair_half_time_h"].endswith("entry 'Tumor 1'")
    assert p.sources["alpha_beta_gy"].endswith("entry 'tumour'")
    other = parameters_for("Tumor 2", "tumour", rb)
    assert other.repair_half_time_h == 1.5 and "Strigari" in other.sources["repair_half_time_h"]
    # the JSON round trip keeps the table
    data = case.to_dict()
    (tmp_path / "case.json").write_text(json.dumps(data))
    assert load_case(tmp_path / "case.json") == case


@pytest.mark.parametrize("table, message", [
    ("tumour = { alpha_beta = 10 }", r"unknown key\(s\) 'alpha_beta' \(did you mean 'alpha_beta' -> 'alpha_beta_gy'\?\)"),
    ("tumour = { alpha_beta_gy = -10 }", "alpha_beta_gy must be > 0 Gy"),
    ("tumour = { alpha_beta_gy = 0 }", "alpha_beta_gy must be > 0 Gy"),
    ("tumour = { repair_half_time_h = 90 }", "repair_half_time_h = 90 h is outside 0.01 to 48 h; is it in minutes"),
    ("tumour = { alpha_per_gy = 5 }", "alpha_per_gy = 5 1/Gy is outside"),
    ("tumour = { geud_a = 0 }", "geud_a must not be 0"),
    ("tumour = { alpha_beta_gy = \"10\" }", "alpha_beta_gy must be a number"),
    ("tumour = 10", "an entry is a table"),
    ("tumour = {}", "gives no parameter"),
    ("geud_a = { tumour = -10 }", "geud_a is a parameter of an entry"),
    ("bed_maps = 1", "bed_maps must be true or false"),
])
def test_the_case_file_table_is_refused_when_wrong(tmp_path, table, message):
    with pytest.raises(InputError, match=message) as exc:
        _case(tmp_path, "[radiobiology]\n" + table + "\n")
    assert "case.toml [radiobiology]" in str(exc.value)  # where


def test_an_entry_that_names_no_voi_is_refused(liver):
    case = voxeldose.Case("c1", voi_roles=LIVER_ROLES, radiobiology={"tumor_1": {"alpha_per_gy": 0.004}})
    vois = {n: liver.vois[n] for n in LIVER_ROLES}
    with pytest.raises(VoiError, match=r"'tumor_1' \(did you mean 'tumour_1'\?\) names no VOI"):
        voxeldose.compute_case(liver.activity, vois, case, method="local")


# --------------------------------------------------------------------------- a case


@pytest.fixture(scope="module")
def result(liver):
    vois = {n: liver.vois[n] for n in LIVER_ROLES}
    case = voxeldose.Case("rb-1", administered_gbq=3.0, lung_shunt_fraction=0.1, residual_fraction=0.0,
                          voi_roles=LIVER_ROLES,
                          radiobiology={"tumour": {"alpha_per_gy": 0.005, "geud_a": -10},
                                        "lung": {"repair_half_time_h": 1.5}, "bed_maps": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return voxeldose.compute_case(liver.activity, vois, case, method="local")


def test_a_case_has_bed_metrics_for_tumours_normal_liver_and_lung(result):
    vois = result.to_dict()["vois"]
    for name in ("tumour_1", "tumour_5", "tumours", "normal_liver", "liver", "lung"):
        rb = vois[name]["radiobiology"]
        assert rb["bed_mean_gy"] > vois[name]["mean_gy"] > 0
        assert rb["eqd2_mean_gy"] == pytest.approx(rb["bed_mean_gy"] / (1 + 2 / rb["alpha_beta_gy"]), rel=REL)
    assert vois["tumour_1"]["radiobiology"]["eud_gy"] is not None and vois["tumour_1"]["radiobiology"]["geud_gy"]
    assert vois["normal_liver"]["radiobiology"]["eud_gy"] is None  # no alpha: no guess
    assert vois["normal_liver"]["radiobiology"]["alpha_beta_gy"] == 2.5
    assert vois["lung"]["radiobiology"]["alpha_beta_gy"] == 3.0
    assert list(vois["liver"])[:3] == ["volume_ml", "mass_g", "density_g_per_cm3"]  # the physical keys unchanged


def test_the_defaults_sources_are_in_the_provenance(result, liver):
    params = result.provenance["radiobiology"]["parameters"]
    assert "Strigari" in params["tumour_1"]["sources"]["alpha_beta_gy"]
    assert "Strigari" in params["normal_liver"]["sources"]["repair_half_time_h"]
    assert params["lung"]["sources"]["repair_half_time_h"] == "Case [radiobiology], entry 'lung'"
    assert params["tumour_1"]["sources"]["alpha_per_gy"] == "Case [radiobiology], entry 'tumour'"
    assert "Dale" in result.provenance["radiobiology"]["model"]
    # without a table: the defaults only, each with its source; no EUD and no lung BED
    vois = {n: liver.vois[n] for n in LIVER_ROLES}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = voxeldose.compute_case(liver.activity, vois, voxeldose.Case("rb-2", voi_roles=LIVER_ROLES), method="local")
    assert "Strigari" in plain.provenance["radiobiology"]["parameters"]["tumour_1"]["sources"]["alpha_beta_gy"]
    assert plain.to_dict()["vois"]["lung"]["radiobiology"]["bed_mean_gy"] is None
    assert plain.radiobiology["maps"]["lung"]["file"] is None


def test_lung_bed_uses_the_lung_density_dose(result):
    # the lung's DVH is at lung density (1.04 / 0.30 times the soft-tissue dose): its BED too
    lung = result.dvhs["lung"]
    d, v = lung.dose_distribution()
    rb = result.radiobiology["vois"]["lung"]
    assert rb["bed_mean_gy"] == pytest.approx(float(np.dot(v, [hand_bed(x, 3.0, 1.5) for x in d])), rel=REL)
    soft = dvh(result.dose, result.vois["lung"])
    assert lung.mean_gy == pytest.approx(soft.mean_gy * 1.04 / 0.30, rel=1e-12)
    # and the lung's BED map is the BED of the lung-density dose: its DVH gives the same mean (float32 map)
    maps = result.bed_maps()
    assert dvh(maps["lung"], result.vois["lung"]).mean_gy == pytest.approx(rb["bed_mean_gy"], rel=1e-6)


def test_bed_dx_equals_the_bed_map_dvh(result):
    maps = result.bed_maps()
    assert set(maps) == {"tumour", "normal_liver", "lung"}
    for name, role in (("tumour_1", "tumour"), ("normal_liver", "normal_liver"), ("lung", "lung")):
        rb = result.radiobiology["vois"][name]
        h = dvh(maps[role], result.vois[name])
        assert h.mean_gy == pytest.approx(rb["bed_mean_gy"], rel=1e-6)  # float32 map
        # BED(D_x) against the BED map's own D_x: equal where x falls on a voxel's dose; between
        # two, the map's DVH interpolates linearly between their BEDs and BED(D_x) follows the
        # convex BED, a difference of at most k (gap)^2 / 4, far below 1e-4 on these grids
        for x in (70, 90):
            assert h.d(x) == pytest.approx(rb[f"bed_D{x}_gy"], rel=1e-4)


def test_the_cohort_rows_have_the_new_columns(result):
    rows = metrics_rows(json.loads(json.dumps(result.to_dict())))
    row = next(r for r in rows if r["voi"] == "tumour_1")
    for key in ("bed_mean_gy", "bed_D70_gy", "bed_D90_gy", "eqd2_mean_gy", "eud_gy", "eubed_gy", "geud_gy",
                "alpha_beta_gy", "repair_half_time_h", "alpha_per_gy", "geud_a"):
        assert key in row
    assert row["bed_mean_gy"] == result.radiobiology["vois"]["tumour_1"]["bed_mean_gy"]
    assert "radiobiology" not in row  # flattened
    body = next(r for r in rows if r["voi"] == "liver")
    assert body["alpha_beta_gy"] == 2.5


def test_the_report_has_a_radiobiology_section(result):
    from voxeldose.report import render_report

    text = render_report(result)
    section = text[text.index("<h2>Radiobiology</h2>"):text.index("<h2>Tissue</h2>")]
    assert text.index("<h2>Metrics</h2>") < text.index("<h2>Radiobiology</h2>")
    assert "Strigari" in section and "EUBED" in section and "tumour_1" in section and "bed_lung.nii.gz" in section


def test_the_bed_maps_are_written_and_equal_the_formula(result, tmp_path):
    import SimpleITK as sitk

    out = voxeldose.io.write_result(result, tmp_path / "out")
    names = {p.name for p in out.iterdir()}
    assert {"bed_tumour.nii.gz", "bed_normal_liver.nii.gz", "bed_lung.nii.gz"} <= names
    dose = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "dose.nii.gz"))).astype(np.float64)
    for role, (ab, t, scale) in {"tumour": (10.0, 1.5, 1.0), "normal_liver": (2.5, 2.5, 1.0),
                                 "lung": (3.0, 1.5, 1.04 / 0.30)}.items():
        bed = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"bed_{role}.nii.gz"))).astype(np.float64)
        expected = hand_bed(dose * scale, ab, t)
        # float32 files: 1e-6 relative
        assert np.allclose(bed, expected, rtol=1e-6, atol=1e-6 * float(expected.max()))
    back = json.loads((out / "metrics.json").read_text())
    assert back["vois"]["tumour_1"]["radiobiology"]["bed_mean_gy"] == pytest.approx(
        result.radiobiology["vois"]["tumour_1"]["bed_mean_gy"])
    # --force may replace a folder holding BED maps (they are voxeldose's files)
    voxeldose.io.write_result(result, out, force=True)


def test_defaults_table():
    assert DEFAULT_PARAMETERS["tumour"].alpha_beta_gy == 10.0 and DEFAULT_PARAMETERS["tumour"].alpha_per_gy is None
    assert DEFAULT_PARAMETERS["normal_liver"].repair_half_time_h == 2.5
    assert DEFAULT_PARAMETERS["lung"].repair_half_time_h is None  # not sourced: no guess
    assert all(p.sources for p in DEFAULT_PARAMETERS.values())
    assert radiobiology_settings_from_dict({}).entries == {}
