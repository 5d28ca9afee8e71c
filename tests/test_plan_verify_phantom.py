"""Planning and verification end to end on the liver phantom's pair: the Tc-99m MAA SPECT and the Y-90 PET.

One DICOM export holds the MAA SPECT (counts), the post-treatment PET (Bq/mL) and an RTSTRUCT drawn
on the CT, on one frame of reference. ``voxeldose plan`` on MAA/, ``voxeldose run`` on PET/ and
``voxeldose compare`` on their two output folders must find predicted = delivered where the MAA
predicts the microspheres exactly (its T:N and lung shunt are the Y-90 truth's), and a predicted
tumour dose that drops by what the truth implies where one tumour takes up no MAA.

What differs between the predicted and the delivered dose here (``voxeldose.phantoms.export``):
both are the same analytic phantom, with no blur (``fwhm_mm`` None: the same option would blur
both) and no noise (``maa_noise`` False; the PET has none), dosed by the same kernel engine, with
VOIs from one RTSTRUCT. They differ by

1. the grids: the MAA at 6.63 mm (1.5 x the SPECT's 4.42 mm), the PET at 6 mm; the partial-volume
   voxels at every surface differ, and ``compare`` resamples the predicted dose trilinearly onto
   the PET's grid, a further smoothing;
2. the plan's rule (``voxeldose.planning.predicted_activity``): a territory's activity goes to
   the voxels it touches in proportion to their counts, all of a surface voxel's counts with it
   (they come from its liver part); the predicted normal-liver concentration is the truth's times
   ``beta`` = (truth counts of the liver) / (the plan's liver counts), 1 up to the counts'
   rounding here, computed below from the two records, not typed in. (Weighting each voxel's
   counts by its share as well, the rule before, counted the partial volume twice: beta 1.039 on
   this grid, 3.9 % too much activity in the liver's interior.)
3. storage: counts rounded to integers (some 2300 a voxel of normal liver: 2e-4) and the PET's
   int16 with a slope per slice (1.5e-5 of a slice's maximum), both far below the tolerances.

The grids are coarse so that the module runs in about 15 s (the export, two plans, a run, two
comparisons).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

import voxeldose
from voxeldose.cli import main
from voxeldose.compare import compare_doses
from voxeldose.io import load_dose_result
from voxeldose.kernels import dose_point_kernel
from voxeldose.phantoms.export import write_liver_case
from voxeldose.voi_sets import difference, union_of

PET_MM = (6.0, 6.0, 6.0)
MAA_MM = (6.63, 6.63, 6.63)
CT_MM = (8.0, 8.0, 6.0)  # the RTSTRUCT's contours lie on the CT's 6 mm slices
COLD = "tumour_1"  # the deepest tumour (20 mm or more inside the liver surface): see the cold-tumour test
TUMOURS = [f"tumour_{i}" for i in range(1, 6)]


# --------------------------------------------------------------------------- the model of the differences


def _edge_widths_mm() -> tuple[float, float]:
    """(w, sigma): the rms width (per axis, mm) of the delivered dose's edge at a tumour surface, and
    the extra smoothing of the predicted dose against it on the common grid.

    w^2 = the Y-90 beta's energy spread per axis (<r^2>/3 of the shipped dose point kernel, 1.84 mm)
    plus the PET voxel's box, h_pet^2 / 12. sigma^2 = the MAA voxel's larger box, (h_maa^2 - h_pet^2) / 12,
    plus trilinear interpolation at a fractional offset u (a two-point average, variance u (1 - u) h^2),
    averaged over the offsets, which vary across the two incommensurate grids: h_maa^2 / 6.
    """
    dpk = dose_point_kernel("soft")
    beta_var = float(np.trapezoid(dpk.f_per_mm * dpk.r_mm**2, dpk.r_mm) / np.trapezoid(dpk.f_per_mm, dpk.r_mm)) / 3
    h_pet, h_maa = PET_MM[0], MAA_MM[0]
    w = math.sqrt(beta_var + h_pet**2 / 12)
    sigma = math.sqrt((h_maa**2 - h_pet**2) / 12 + h_maa**2 / 6)
    return w, sigma


def _surface_loss(radius_mm: float, contrast: float) -> float:
    """Relative loss of a sphere's mean dose when its edge, a step of ``contrast`` (of the inside's dose)
    smoothed to rms width w, is smoothed further by sigma.

    Through a flat surface a Gaussian-smoothed step of width s moves (step) x s / sqrt(2 pi) of dose x
    length out of the inside; smoothing from w to sqrt(w^2 + sigma^2) moves the difference, over a
    surface S = 3 V / R: loss = contrast x (3 / R) x (sqrt(w^2 + sigma^2) - w) / sqrt(2 pi). First order
    in the surface's curvature; the next term is of order contrast x (sigma / R)^2 (the tolerance).
    """
    w, sigma = _edge_widths_mm()
    return contrast * 3.0 / radius_mm * (math.hypot(w, sigma) - w) / math.sqrt(2 * math.pi)


def _expected(truth: dict, plan_metrics: dict) -> dict[str, tuple[float, float]]:
    """VOI -> (expected relative difference (delivered - predicted) / predicted in Dmean, tolerance)."""
    phantom = truth["phantom"]
    tn = phantom["tumour_to_normal"]
    beta = _beta(truth, plan_metrics)
    _, sigma = _edge_widths_mm()
    out: dict[str, tuple[float, float]] = {}
    for name in TUMOURS:
        # a tumour is inside the liver: the predicted dose is beta x the truth's, less what the extra
        # smoothing takes across its surface (dose contrast 1 - 1/T:N against the normal liver); the
        # tolerance is the model's second-order term plus 0.5 % (the RTSTRUCT's polygons, on 6 mm
        # slices, rasterised on each grid; rounding). Measured residuals (tumours 1-5): +0.1, +0.4, -1.1,
        # 0.0, -3.7 % against tolerances 1.5, 2.0, 3.2, 6.5, 24.5 %.
        radius = (3 * phantom["vois"][name]["volume_ml_analytic"] * 1e3 / (4 * math.pi)) ** (1 / 3)
        contrast = 1 - 1 / tn
        loss = _surface_loss(radius, contrast)
        out[name] = (1 / (beta * (1 - loss)) - 1, contrast * (sigma / radius) ** 2 + 0.005)
    # the whole liver and the normal liver hold A (1 - LSF) in both maps: the plan's rule moves it
    # inward (at most a factor beta on any voxel) and the smoothing moves dose across the liver's
    # surface (a step of contrast 1 to no activity; the liver as the sphere of its volume, R 71 mm):
    # the two magnitudes added, no sign assumed (measured: +1.7 and +0.6 % within +-2.2 %). A 10 %
    # error of the planned activity is outside it.
    r_liver = (3 * phantom["vois"]["liver"]["volume_ml_analytic"] * 1e3 / (4 * math.pi)) ** (1 / 3)
    bound = (beta - 1) + _surface_loss(r_liver, 1.0)
    for name in ("liver", "normal_liver"):
        out[name] = (0.0, bound)
    return out


def _beta(truth: dict, plan_metrics: dict) -> float:
    """The plan's predicted concentration over the truth's inside the liver (point 2 of the module text)."""
    return truth["maa"]["vois"]["liver"]["counts"] / plan_metrics["plan"]["territories"]["liver"]["counts"]


def _violations(means: dict[str, tuple[float, float]], expected: dict[str, tuple[float, float]]) -> list[str]:
    """Every VOI whose (delivered - predicted) / predicted Dmean is outside its expected value +- tolerance."""
    out = []
    for name, (value, tol) in expected.items():
        predicted, delivered = means[name]
        rel = (delivered - predicted) / predicted
        if not abs(rel - value) <= tol:
            out.append(f"{name}: {rel:+.4f}, expected {value:+.4f} +- {tol:.4f}")
    return out


def _means(comparison_vois: dict) -> dict[str, tuple[float, float]]:
    return {n: (v["predicted"]["mean_gy"], v["delivered"]["mean_gy"]) for n, v in comparison_vois.items()}


def _dice_at(data: dict, level_pct: float) -> float:
    (row,) = [r for r in data["isodose"]["levels"] if r["level_pct"] == level_pct]
    return float(row["dice"])


# --------------------------------------------------------------------------- the chain, through the command line


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """The export (MAA with the Y-90 truth's T:N and lung shunt), then plan, run and compare by the CLI."""
    base = tmp_path_factory.mktemp("plan_verify")
    case = base / "export"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = write_liver_case(case, write=("PET", "RTSTRUCT", "MAA"), pet_spacing_xyz_mm=PET_MM,
                                 maa_spacing_xyz_mm=MAA_MM, ct_spacing_xyz_mm=CT_MM)
    assert truth["maa"]["tumour_to_normal"] == truth["phantom"]["tumour_to_normal"] == 4.0
    assert truth["maa"]["lung_shunt_fraction"] == truth["phantom"]["lung_shunt_fraction"] == 0.10
    gbq = truth["phantom"]["administered_gbq"]
    common = ["--voi", str(case / "RTSTRUCT.dcm"), "--case", str(case / "case.toml")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["-q", "plan", str(case / "MAA"), *common, "--out", str(base / "plan"),
                     "--activity", f"liver={gbq!r}"]) == 0
        assert main(["-q", "run", str(case / "PET"), *common, "--out", str(base / "run")]) == 0
        assert main(["-q", "compare", str(base / "plan"), str(base / "run"), "--voi", str(case / "RTSTRUCT.dcm"),
                     "--out", str(base / "compare")]) == 0
    return {"base": base, "case": case, "truth": truth,
            "plan": json.loads((base / "plan" / "metrics.json").read_text()),
            "run": json.loads((base / "run" / "metrics.json").read_text()),
            "compare": json.loads((base / "compare" / "comparison.json").read_text())}


def test_the_phantom_pair_differs_only_by_grid_and_storage(chain):
    truth = chain["truth"]
    # no blur on either scan, no noise on the MAA (the PET has none): what the module text relies on
    assert truth["maa"]["fwhm_mm"] is None and truth["pet"]["fwhm_mm"] is None and truth["maa"]["noise"] is False
    assert truth["maa"]["spacing_mm"] == list(MAA_MM) and truth["pet"]["spacing_mm"] == list(PET_MM)
    plan = chain["plan"]["plan"]
    # the plan put the phantom's administered activity into the map (residual 0 in the case file)
    assert plan["predicted_map_activities_gbq"] == {"liver": truth["phantom"]["administered_gbq"]}
    assert plan["lung_shunt"]["value"] == truth["phantom"]["lung_shunt_fraction"]
    # the plan's rule, point 2: every count of the liver's voxels (no blur: none outside them) is the
    # plan's, so beta is 1 up to the counts' rounding to integers (2e-4 a voxel of normal liver; a
    # surface voxel holds fewer counts, so more relative rounding: 1e-3). The rule that weighted
    # each voxel's counts by its share gave 1.039 here and fails this.
    beta = _beta(truth, chain["plan"])
    assert abs(beta - 1) < 1e-3, beta


def test_matched_maa_predicts_the_delivered_dose(chain):
    data = chain["compare"]
    assert data["provenance"]["inputs"]["predicted"]["case_id"] == data["provenance"]["inputs"]["delivered"]["case_id"]
    expected = _expected(chain["truth"], chain["plan"])
    assert _violations(_means(data["vois"]), expected) == []
    # the comparison's own difference is the two means' (no sign slip between the folders)
    t1 = data["vois"]["tumour_1"]
    assert t1["difference"]["mean_gy"] == pytest.approx(t1["delivered"]["mean_gy"] - t1["predicted"]["mean_gy"])
    # each map's maximum normalises its own isodoses (relative isodoses, the default), so beta cancels.
    # At 50 % of the maximum (the tumours' plateau, 279 Gy; normal liver is at 25 %) the isodose is the
    # tumours, its surface where a step from 25 % to 100 % smoothed to width s reaches 50 %: 0.43 s
    # outside the tumour's surface; the predicted's extra smoothing (sigma) puts it 0.43 (sqrt(w^2 +
    # sigma^2) - w) = 0.5 mm farther out. Both regions are sets of PET voxels, so they differ in the
    # voxels of that shell: Dice = 1 - S d / (2 V), S and V of tumours 1-4 (17 000 mm2, 117 mL), 0.96;
    # tumour_5 (0.5 mL, peak near 50 %) in one and not the other costs 0.004 more. Bound 0.95 (measured
    # 0.980). The same bound fails where one tumour is missing from the MAA (the cold-tumour test).
    assert _dice_at(data, 50.0) >= 0.95


def test_the_library_call_is_the_command(chain, tmp_path):
    # voxeldose compare is run_compare and printing: the same folders give the same numbers
    from voxeldose.compare import run_compare

    case, base = chain["case"], chain["base"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comparison = run_compare(base / "plan", base / "run", [case / "RTSTRUCT.dcm"], tmp_path / "api")
    assert set(comparison.vois) == set(chain["compare"]["vois"])
    for name, v in comparison.vois.items():
        assert v.difference["mean_gy"] == chain["compare"]["vois"][name]["difference"]["mean_gy"]
    assert json.loads((tmp_path / "api" / "comparison.json").read_text())["vois"] == chain["compare"]["vois"]
    with pytest.raises(voxeldose.InputError, match="at least one VOI"):
        run_compare(base / "plan", base / "run", [], tmp_path / "none")
    assert not (tmp_path / "none").exists()
    with pytest.raises(voxeldose.VoiError, match="defined twice"):
        run_compare(base / "plan", base / "run", [case / "RTSTRUCT.dcm"] * 2, tmp_path / "twice")
    assert not (tmp_path / "twice").exists()


def test_a_10_percent_activity_error_is_caught(chain):
    # the planned activity enters the predicted dose linearly (one dose per territory at 1 GBq, scaled:
    # tests/test_plan.py), so a plan at 0.9 or 1.1 x the administered activity is this dose x 0.9 or
    # 1.1: each must break the Dmean checks above (the isodoses, relative, cannot see it)
    base = chain["base"]
    predicted, _ = load_dose_result(base / "plan")
    delivered, _ = load_dose_result(base / "run")
    vois = dict(voxeldose.load_vois(chain["case"] / "RTSTRUCT.dcm", delivered))
    # the normal liver as run and compare derive it (the library's compare_doses takes the VOIs it is given)
    tumours = union_of([np.asarray(vois[n].array) for n in TUMOURS], delivered.shape)
    vois["normal_liver"] = voxeldose.mask_image(delivered, difference(vois["liver"].array, tumours), name="normal_liver")
    expected = _expected(chain["truth"], chain["plan"])
    for factor in (0.9, 1.1):
        scaled = predicted.with_array(predicted.array * factor)
        c = compare_doses(scaled, delivered, vois)
        means = {n: (v.predicted["mean_gy"], v.delivered["mean_gy"]) for n, v in c.vois.items()}
        failed = {line.split(":")[0] for line in _violations(means, expected)}
        # every VOI but tumour_5 (its second-order tolerance, 24.5 %, exceeds 10 %)
        assert failed >= {"liver", "normal_liver", "tumour_1", "tumour_2", "tumour_3", "tumour_4"}, (factor, failed)
    # and the unscaled dose, through the same function, passes: the check is the test's, not a copy
    c = compare_doses(predicted, delivered, vois)
    assert _violations({n: (v.predicted["mean_gy"], v.delivered["mean_gy"]) for n, v in c.vois.items()},
                       expected) == []


# --------------------------------------------------------------------------- one tumour cold on the MAA


@pytest.fixture(scope="module")
def cold(chain, tmp_path_factory):
    """The MAA SPECT of the same patient with tumour_1 taking up no MAA, planned and compared by the CLI.

    Only the MAA is written (the PET, the RTSTRUCT and the run are the matched chain's: one treatment,
    a planning scan that mispredicted it). It is its own export, with its own frame of reference: the
    phantom's geometry is the same in patient coordinates, which ``--registered`` states.
    """
    base = tmp_path_factory.mktemp("plan_verify_cold")
    case = base / "export"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = write_liver_case(case, write=("MAA",), pet_spacing_xyz_mm=PET_MM, maa_spacing_xyz_mm=MAA_MM,
                                 maa_cold_tumour=COLD)
    first = chain["case"]
    gbq = chain["truth"]["phantom"]["administered_gbq"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["-q", "plan", str(case / "MAA"), "--voi", str(first / "RTSTRUCT.dcm"), "--case",
                     str(first / "case.toml"), "--out", str(base / "plan"), "--activity", f"liver={gbq!r}",
                     "--registered"]) == 0
        assert main(["-q", "compare", str(base / "plan"), str(chain["base"] / "run"), "--voi",
                     str(first / "RTSTRUCT.dcm"), "--out", str(base / "compare"), "--registered"]) == 0
    return {"truth": truth, "plan": json.loads((base / "plan" / "metrics.json").read_text()),
            "compare": json.loads((base / "compare" / "comparison.json").read_text())}


def _normal_concentration(truth: dict, plan_metrics: dict, gbq: float) -> float:
    """The predicted Y-90 concentration of normal liver (MBq/mL): the truth's MAA counts per mL there times
    the plan's MBq per count, A (1 - LSF) / (the plan's liver counts)."""
    maa = truth["maa"]
    counts_per_ml = maa["vois"]["normal_liver"]["concentration_mbq_per_ml"] * maa["counts_per_mbq"]
    lsf = plan_metrics["plan"]["lung_shunt"]["value"]
    return counts_per_ml * gbq * 1e3 * (1 - lsf) / plan_metrics["plan"]["territories"]["liver"]["counts"]


def test_a_cold_tumour_on_the_maa_lowers_its_predicted_dose_by_what_the_truth_implies(chain, cold):
    matched, perturbed = chain["compare"]["vois"], cold["compare"]["vois"]
    gbq = chain["truth"]["phantom"]["administered_gbq"]
    k = chain["truth"]["phantom"]["ldm_gy_per_mbq_per_ml"]  # local-deposition Gy per MBq/mL, 1.04 g/mL
    tn = chain["truth"]["maa"]["tumour_to_normal"]
    assert cold["truth"]["maa"]["cold_tumour"] == COLD and cold["truth"]["maa"]["vois"][COLD]["counts"] == 0.0
    # Dose is linear in activity: the tumour's mean is a c_T + b c_N (its own activity and the normal
    # liver's around it; the other tumours are 15.9 mm or more away, beyond the betas' 11 mm). With the
    # liver uniform (c_T = c_N = c) it is k c, charged-particle equilibrium, as tumour_1 lies 20 mm or
    # more inside the liver: a + b = k. So on the matched prediction, at T:N = tn,
    # D_m = k c_N (1 + (tn - 1) alpha), alpha = a / k (kernel, partial volume and resampling: the same
    # grids in both MAAs); cold, c_T = 0: D_cold = k c_N' (1 - alpha), c_N' the cold MAA's normal liver,
    # higher (its counts now hold the whole liver's activity).
    c_n = _normal_concentration(chain["truth"], chain["plan"], gbq)
    c_n_cold = _normal_concentration(cold["truth"], cold["plan"], gbq)
    d_matched = matched[COLD]["predicted"]["mean_gy"]
    alpha = (d_matched / (k * c_n) - 1) / (tn - 1)
    expected = k * c_n_cold * (1 - alpha)
    cold_pred = perturbed[COLD]["predicted"]["mean_gy"]
    drop = d_matched - cold_pred
    # An error delta (of k) in a + b = k moves D_cold by 4 delta / (3 (1 - alpha)) = 6 delta of itself
    # (alpha 0.78 here). The equilibrium holds in the continuum (the liver's surface is 20 mm from the
    # tumour's, beyond the 11 mm range); on the grid the 6.63 mm voxels and the resampling reach up to
    # 1.5 voxels further, where the dose is down to well under 1 % of the plateau: delta <= 0.8 %, so 5 %
    # of the remainder (measured: 18.94 Gy against 18.72 Gy expected, 1.2 %) and 1 % of the drop (223 Gy;
    # measured 0.1 %). A 10 % activity error moves both by 10 %.
    assert drop == pytest.approx(d_matched - expected, rel=0.01)
    assert cold_pred == pytest.approx(expected, rel=0.05)
    # ... while the delivered dose does not drop: the same PET, read the same way
    assert perturbed[COLD]["delivered"]["mean_gy"] == matched[COLD]["delivered"]["mean_gy"]
    assert perturbed[COLD]["difference"]["mean_gy"] == pytest.approx(
        matched[COLD]["delivered"]["mean_gy"] - cold_pred)
    # the hot tumours' predicted doses rise with the normal liver's concentration (their share of the
    # counts grew, 1.172 x): both their own and their surroundings' activity scale by c_N' / c_N (tumour_1
    # is beyond the betas' range of them), so their doses do; 1e-3 for the counts' rounding (measured 1e-5)
    for name in ("tumour_2", "tumour_3"):
        ratio = perturbed[name]["predicted"]["mean_gy"] / matched[name]["predicted"]["mean_gy"]
        assert ratio == pytest.approx(c_n_cold / c_n, rel=1e-3), name
    # the 50 % isodose of the prediction lost tumour_1: Dice = 2 V_hot / (V_all + V_hot) with the tumours'
    # volumes of the truth, 0.615 (measured 0.622); 0.05, the matched test's partial-volume shells
    v = chain["truth"]["phantom"]["vois"]
    v_all = sum(v[n]["volume_ml"] for n in TUMOURS)
    v_hot = v_all - v[COLD]["volume_ml"]
    dice = _dice_at(cold["compare"], 50.0)
    assert dice == pytest.approx(2 * v_hot / (v_all + v_hot), abs=0.05)
    assert dice < 0.95  # the bound the matched MAA meets
