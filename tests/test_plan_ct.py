"""Planning with the SPECT/CT's CT: densities in the predicted dose, the masses and the lung.

Three independent truths:

- a density map of soft tissue everywhere reproduces the plan without one (the engine's dose is
  soft tissue's), except the lung VOIs, which without a CT are rescaled to lung density;
- with local deposition, a CT that puts lung density in the lung VOI gives that VOI the dose that
  the no-CT rule (same energy over the lung's mass, ``DVH.at_density``) gives it: two routes to one
  number;
- on the DICOM phantom whose right lung abuts the liver (a matching CT), ``voxeldose plan --ct
  --method scaled_kernel`` gives the dose of a fresh scaled-kernel computation on its predicted
  activity, and the plan's metrics at its activity are those of that dose.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import voxeldose
from voxeldose import phantoms
from voxeldose.cli import main
from voxeldose.clinical import LUNG_DENSITY_G_PER_CM3
from voxeldose.constants import SOFT_TISSUE_DENSITY_G_PER_CM3
from voxeldose.dvh import voi_metrics
from voxeldose.io import load_ct_density, load_image, load_vois
from voxeldose.phantoms.export import write_liver_case
from voxeldose.plan import compute_plan

ROLES = {"liver": "whole_liver", "lung": "lung", **{f"tumour_{i}": "tumour" for i in range(1, 6)}}
PLAN = {"mird_target_gy": 120.0, "partition_normal_liver_gy": 40.0,
        "constraints": [{"role": "normal_liver", "metric": "mean", "max_gy": 40.0},
                        {"role": "lung", "metric": "mean", "max_gy": 30.0}]}


@pytest.fixture(scope="module")
def maa():
    """The liver phantom's activity as MAA counts on an 8.84 mm grid, with its VOIs."""
    ph = phantoms.liver(spacing_xyz_mm=(8.84, 8.84, 8.84), lung_shunt_fraction=0.1)
    counts = voxeldose.Image(ph.activity.array * 1000.0, ph.activity.spacing_mm, ph.activity.origin_mm, units="CNTS")
    return counts, {n: ph.vois[n] for n in ROLES}


def _density(like, values):
    return voxeldose.Image(np.asarray(values, np.float32), like.spacing_mm, like.origin_mm, units="G/CM3")


def _plan(counts, vois, method, density=None):
    case = voxeldose.Case("plan-ct", voi_roles=ROLES, lung_shunt_fraction=0.1,
                          plan=voxeldose.planning.plan_settings_from_dict(PLAN))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", voxeldose.VoxelDoseWarning)
        return compute_plan(counts, vois, case, method=method, density=density)


def _constraint(result, label):
    rows = result.plan["territories"]["liver"]["constraints"]
    return next(r for r in rows if r["constraint"] == label)


def test_a_soft_tissue_ct_reproduces_the_plan_without_one(maa):
    counts, vois = maa
    plain = _plan(counts, vois, "kernel")
    soft = _plan(counts, vois, "kernel", _density(counts, np.full(counts.shape, SOFT_TISSUE_DENSITY_G_PER_CM3)))
    # the kernel's density correction is x 1.04 / 1.04: the same dose to float32 rounding
    np.testing.assert_allclose(soft.dose.array, plain.dose.array, rtol=1e-6, atol=1e-6 * float(plain.dose.array.max()))
    t_plain, t_soft = plain.plan["territories"]["liver"], soft.plan["territories"]["liver"]
    assert t_soft["binding_constraint"] == t_plain["binding_constraint"] == "normal_liver mean <= 40 Gy"
    assert t_soft["activity_gbq"] == pytest.approx(t_plain["activity_gbq"], rel=1e-6)
    # masses from a 1.04 g/cm3 CT are the soft-tissue masses (the map's float32 1.04 is 3.7e-8
    # low: 1e-7), and so are the models' activities
    assert t_soft["mass_kg"] == pytest.approx(t_plain["mass_kg"], rel=1e-7)
    assert t_soft["mass_kg"] != t_plain["mass_kg"]  # from the density map, not the soft-tissue rule
    for model in ("mird", "partition"):
        assert t_soft["models"][model]["activity_gbq"] == pytest.approx(t_plain["models"][model]["activity_gbq"],
                                                                        rel=1e-7)
    assert t_soft["models"]["partition"]["tumour_to_normal_per_mass"] == pytest.approx(
        t_plain["models"]["partition"]["tumour_to_normal"], rel=1e-12)
    for name in ("liver", "normal_liver", "tumour_1"):
        assert soft.dvhs[name].mean_gy == pytest.approx(plain.dvhs[name].mean_gy, rel=1e-6)
    # the lung: without a CT rescaled to lung density, with this CT it is soft tissue
    ratio = SOFT_TISSUE_DENSITY_G_PER_CM3 / LUNG_DENSITY_G_PER_CM3
    assert plain.dvhs["lung"].mean_gy == pytest.approx(ratio * soft.dvhs["lung"].mean_gy, rel=1e-6)
    assert soft.dvhs["lung"].density_g_per_cm3 == pytest.approx(SOFT_TISSUE_DENSITY_G_PER_CM3, rel=1e-6)
    assert soft.provenance["dose"]["density"].startswith("from the CT")
    assert soft.provenance["dose"]["voi_densities_g_per_cm3"] == {}
    assert "density" in soft.images and soft.provenance["body"]["activity_outside_mbq"] == 0.0


def test_a_lung_density_ct_gives_the_lung_the_dose_the_no_ct_rule_gives(maa):
    # Local deposition: each voxel's dose is E A_i / (rho_i V). Lung voxels at 0.30 g/cm3 get
    # 1.04 / 0.30 of soft tissue's, which is what the no-CT plan's lung DVH is rescaled by: the
    # lung's mean dose, its constraint's activity limit and the plan agree to float32 rounding
    # (1e-6), partly covered lung voxels too (each is at 0.30 whole; the phantom's lungs lie 20 mm
    # from the liver, so no voxel is shared). Elsewhere the density is soft tissue's, so every
    # other VOI agrees too.
    counts, vois = maa
    lung = vois["lung"].array > 0
    rho = np.where(lung, LUNG_DENSITY_G_PER_CM3, SOFT_TISSUE_DENSITY_G_PER_CM3)
    plain = _plan(counts, vois, "local")
    ct = _plan(counts, vois, "local", _density(counts, rho))
    assert ct.dvhs["lung"].mean_gy == pytest.approx(plain.dvhs["lung"].mean_gy, rel=1e-6)
    assert ct.dvhs["lung"].density_g_per_cm3 == pytest.approx(LUNG_DENSITY_G_PER_CM3, rel=1e-6)
    label = "lung mean <= 30 Gy"
    assert _constraint(ct, label)["activity_limit_gbq"] == pytest.approx(
        _constraint(plain, label)["activity_limit_gbq"], rel=1e-6)
    t_plain, t_ct = plain.plan["territories"]["liver"], ct.plan["territories"]["liver"]
    assert t_ct["activity_gbq"] == pytest.approx(t_plain["activity_gbq"], rel=1e-6)
    for name in ("liver", "normal_liver", "tumour_2"):
        assert ct.dvhs[name].mean_gy == pytest.approx(plain.dvhs[name].mean_gy, rel=1e-6)
    # the lung mass at the plan is the CT's: 0.30 g/mL
    lung_metrics = t_ct["metrics_at_plan"]["lung"]
    assert lung_metrics["mass_g"] == pytest.approx(lung_metrics["volume_ml"] * LUNG_DENSITY_G_PER_CM3, rel=1e-6)
    # the lungs are holes in the body's axial slices: inside the outline, so nothing is left out
    assert ct.provenance["body"]["vois_outside_percent"]["lung"] == 0.0


def test_scaled_kernel_without_a_ct_is_refused(maa):
    counts, vois = maa
    with pytest.raises(voxeldose.InputError, match="needs the case's CT"):
        _plan(counts, vois, "scaled_kernel")


# --------------------------------------------------------------------------- the DICOM phantom with an interface


@pytest.fixture(scope="module")
def interface_plan(tmp_path_factory):
    """The MAA SPECT, CT and RTSTRUCT of the phantom whose right lung abuts the liver dome,
    planned by the command line with the scaled kernel."""
    base = tmp_path_factory.mktemp("plan_ct")
    case = base / "export"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = write_liver_case(case, write=("MAA", "CT", "RTSTRUCT"), lung_interface=True,
                                 ct_spacing_xyz_mm=(4.0, 4.0, 5.0), maa_spacing_xyz_mm=(6.63, 6.63, 6.63))
        plan_toml = base / "case.toml"
        plan_toml.write_text((case / "case.toml").read_text().replace("[vois]", """[plan]
constraints = [
  { role = "normal_liver", metric = "mean", max_gy = 40 },
]

[vois]"""))
        out = base / "plan"
        assert main(["-q", "plan", str(case / "MAA"), "--voi", str(case / "RTSTRUCT.dcm"), "--case", str(plan_toml),
                     "--ct", str(case / "CT"), "--method", "scaled_kernel", "--out", str(out)]) == 0
    return {"case": case, "out": out, "truth": truth, "metrics": json.loads((out / "metrics.json").read_text())}


def test_a_plan_with_a_ct_equals_a_fresh_scaled_kernel_dose(interface_plan):
    case, out, metrics = interface_plan["case"], interface_plan["out"], interface_plan["metrics"]
    assert (out / "density.nii.gz").is_file()
    prov = metrics["provenance"]
    assert prov["dose"]["method"] == "scaled_kernel" and prov["dose"]["density"].startswith("from the CT")
    assert prov["input"]["ct"].endswith("CT")
    maa = load_image(case / "MAA")
    ct, density = load_ct_density(case / "CT", maa)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vois = load_vois(case / "RTSTRUCT.dcm", maa)
    # the written maps are the plan's: the activity (MBq per voxel) and the dose; a fresh
    # scaled-kernel dose of that activity with the same densities and body outline is the same
    # (float32 storage and summation order of the per-territory doses: 1e-5 of the maximum)
    import SimpleITK as sitk

    activity = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "activity.nii.gz"))).astype(np.float64)
    dose = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "dose.nii.gz"))).astype(np.float64)
    from voxeldose.density import body_mask

    body = body_mask(density)
    fresh = voxeldose.absorbed_dose(maa.with_array(np.where(body.array > 0.5, activity, 0.0).astype(np.float32),
                                                   units="MBQ"),
                                    method="scaled_kernel", density=density, body=body)
    np.testing.assert_allclose(dose, fresh.array, atol=1e-5 * float(fresh.array.max()))
    # the plan's metrics at its activity (the one territory's plan is the predicted map) are the
    # DVH metrics of that dose at the CT's densities
    t = metrics["plan"]["territories"]["liver"]
    assert t["binding_constraint"] == "normal_liver mean <= 40 Gy"
    assert t["metrics_at_plan"]["normal_liver"]["mean_gy"] == pytest.approx(40.0, rel=1e-9)
    fresh_metrics = voi_metrics({n: voxeldose.dvh(fresh, m, name=n) for n, m in vois.items()})
    for name in ("liver", "lung", "tumour_1"):
        assert t["metrics_at_plan"][name]["mean_gy"] == pytest.approx(fresh_metrics[name]["mean_gy"], rel=1e-5)
        assert t["metrics_at_plan"][name]["D70_gy"] == pytest.approx(fresh_metrics[name]["D70_gy"], rel=1e-4)
    # the lung is the CT's lung (0.26-0.30 g/cm3 in the phantom), not rescaled to 0.30; its mass
    # is its voxels' (partly covered voxels at the liver dome are denser)
    lung = t["metrics_at_plan"]["lung"]
    assert 0.26 <= lung["density_g_per_cm3"] < 0.40
    assert lung["mass_g"] == pytest.approx(lung["volume_ml"] * lung["density_g_per_cm3"], rel=1e-9)
    assert metrics["provenance"]["dose"]["voi_densities_g_per_cm3"] == {}
    # the models' masses are the CT's: the liver's mean density is soft tissue's by the CT (1.04-1.06)
    assert 1.03 < t["mass_kg"] / (t["volume_ml"] * 1e-3) < 1.07
    assert t["models"]["masses"] == "from the CT's densities"


def test_the_partition_model_with_ct_masses_predicts_the_voxel_doses():
    # Uniform uptake: counts per mL c in the normal liver and T:N c in the tumours (binary VOIs,
    # no partly covered voxel), tumours at 1.10 g/cm3 on the CT and the rest at 1.04. With local
    # deposition each voxel's dose is its energy over its own mass, so at the partition model's
    # activity the normal liver's voxel mean is D_N and the tumours' D_N T:N rho_N / rho_T: the
    # model's per-mass T:N, from the CT. Both to 1e-6 (float32 maps), after the model's dose
    # constant (49.67 Gy kg/GBq, no sphere type) is put to the engine's ICRP-107 one (49.77).
    from voxeldose.constants import MIRD_Y90_GY_KG_PER_GBQ, Y90_DOSE_PER_ACTIVITY_GY_KG_PER_GBQ

    ph = phantoms.liver(spacing_xyz_mm=(8.84, 8.84, 8.84), lung_shunt_fraction=0.1)
    like = ph.activity
    binary = {n: (np.asarray(ph.vois[n].array) >= 0.5).astype(np.float32) for n in ("liver", "lung", "tumour_1",
                                                                                      "tumour_2")}
    tumours = np.maximum(binary["tumour_1"], binary["tumour_2"]) * binary["liver"]
    vois = {n: voxeldose.mask_image(like, m, name=n) for n, m in binary.items()}
    tn = 4.0
    counts_arr = 100.0 * (binary["liver"] - tumours) + 100.0 * tn * tumours + 3.0 * binary["lung"]
    counts = voxeldose.Image(counts_arr.astype(np.float32), like.spacing_mm, like.origin_mm, units="CNTS")
    rho = np.where(tumours > 0, 1.10, SOFT_TISSUE_DENSITY_G_PER_CM3)
    rho = np.where(binary["lung"] > 0, LUNG_DENSITY_G_PER_CM3, rho)
    roles = {"liver": "whole_liver", "lung": "lung", "tumour_1": "tumour", "tumour_2": "tumour"}
    settings = voxeldose.planning.plan_settings_from_dict({"partition_normal_liver_gy": 40.0})
    case = voxeldose.Case("partition-ct", voi_roles=roles, lung_shunt_fraction=0.1, plan=settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", voxeldose.VoxelDoseWarning)
        first = compute_plan(counts, vois, case, method="local", density=_density(counts, rho))
    part = first.plan["territories"]["liver"]["models"]["partition"]
    assert part["tumour_to_normal"] == pytest.approx(tn, rel=1e-6)
    assert part["tumour_to_normal_per_mass"] == pytest.approx(tn * SOFT_TISSUE_DENSITY_G_PER_CM3 / 1.10, rel=1e-6)
    a = part["activity_gbq"] * MIRD_Y90_GY_KG_PER_GBQ / Y90_DOSE_PER_ACTIVITY_GY_KG_PER_GBQ
    case_at = voxeldose.Case("partition-ct", voi_roles=roles, lung_shunt_fraction=0.1,
                             plan=voxeldose.planning.updated_plan_settings(settings, {"activities_gbq": {"liver": a}}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", voxeldose.VoxelDoseWarning)
        at = compute_plan(counts, vois, case_at, method="local", density=_density(counts, rho))
    assert at.dvhs["normal_liver"].mean_gy == pytest.approx(40.0, rel=1e-6)
    assert at.dvhs["tumours"].mean_gy == pytest.approx(part["tumour_dose_gy"], rel=1e-6)
    assert part["tumour_dose_gy"] == pytest.approx(40.0 * tn * SOFT_TISSUE_DENSITY_G_PER_CM3 / 1.10, rel=1e-6)
