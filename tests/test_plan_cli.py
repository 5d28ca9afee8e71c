"""``voxeldose plan``: the command line, its outputs and error contract, and the real MAA case.

The real case (``../shared/real_data/taranis_patient2_maa``: a Tc-99m MAA SPECT in counts and its
3D Slicer segmentation; no lung VOI, so the lung shunt comes from the case) is planned end to
end; its figures are those in the README's planning section.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import voxeldose
from voxeldose.cli import main
from voxeldose.constants import SOFT_TISSUE_DENSITY_G_PER_CM3
from voxeldose.phantoms.export import write_liver_case
from voxeldose.planning import PlanSettings, plan_settings_from_dict, updated_plan_settings

from .conftest import SHARED_REAL_DATA

TARANIS = SHARED_REAL_DATA / "taranis_patient2_maa"
needs_taranis = pytest.mark.skipif(
    not TARANIS.is_dir(),
    reason="shared/real_data/taranis_patient2_maa (a real MAA SPECT and its Slicer segmentation) not beside the "
           "repository",
)

CASE_TOML = """\
case_id = "taranis-2-plan"
scan_units = "CNTS"
lung_shunt_fraction = 0.05
sphere_type = "glass"

[vois]
"liver" = "whole_liver"
"Tumor 1" = "tumour"
"Tumor 2" = "tumour"
"perfused volume" = "perfused"

[plan]
mird_target_gy = 120
partition_normal_liver_gy = 40
constraints = [
  { role = "perfused_normal", metric = "mean", max_gy = 40 },
  { role = "tumour", metric = "D70", min_gy = 100 },
]
"""


@pytest.fixture(scope="module")
def y90_export(tmp_path_factory):
    """A post-treatment export (Y-90 PET and bremsstrahlung SPECT): what plan must refuse."""
    out = tmp_path_factory.mktemp("plan_export") / "liver"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_liver_case(out, write=("PET", "SPECT", "CT", "RTSTRUCT"), ct_spacing_xyz_mm=(4.0, 4.0, 5.0))
    return out


@pytest.fixture(scope="module")
def taranis_plan(tmp_path_factory):
    """``voxeldose plan`` on the real MAA case, once: (output folder, metrics.json, case file)."""
    if not TARANIS.is_dir():
        pytest.skip("shared/real_data/taranis_patient2_maa not beside the repository")
    root = tmp_path_factory.mktemp("taranis_plan")
    case = root / "case.toml"
    case.write_text(CASE_TOML)
    out = root / "out"
    assert main(["-q", "plan", str(TARANIS / "patient_2_SPECT.nrrd"), "--voi",
                 str(TARANIS / "patient_2_Segmentation.seg.nrrd"), "--case", str(case), "--out", str(out)]) == 0
    return out, json.loads((out / "metrics.json").read_text()), case


def test_plan_help():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "voxeldose.cli", "plan", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for word in ("--activity", "TERRITORY=GBQ", "--lung-shunt-from", "GBq", "[plan]", "--ct", "scaled_kernel",
                 "--hu-table", "--outside-body"):
        assert word in proc.stdout


@pytest.mark.parametrize("scan, words", [
    ("PET", ["Modality PT", "voxeldose run"]),
    ("SPECT", ["names Y-90", "voxeldose run"]),
])
def test_plan_refuses_a_post_treatment_scan_and_writes_nothing(y90_export, tmp_path, capsys, scan, words):
    out = tmp_path / "o"
    assert main(["plan", str(y90_export / scan), "--voi", str(y90_export / "RTSTRUCT.dcm"), "--case",
                 str(y90_export / "case.toml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra, words", [
    (["--activity", "liver"], ["--activity 'liver'", "TERRITORY=GBQ"]),
    (["--activity", "liver=two"], ["TERRITORY=GBQ"]),
    (["--activity", "liver=2", "--activity", "liver=3"], ["given twice"]),
    (["--voi-role", "liver"], ["NAME=ROLE"]),
    (["--method", "scaled_kernel"], ["'scaled_kernel'", "SPECT/CT's CT", "--ct CT"]),
])
def test_plan_bad_options_exit_2_and_write_nothing(y90_export, tmp_path, capsys, extra, words):
    out = tmp_path / "o"
    assert main(["plan", str(y90_export / "SPECT"), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err
    assert list(tmp_path.iterdir()) == []


def test_command_line_plan_values_override_the_case_files():
    base = plan_settings_from_dict({"activities_gbq": {"right": 1.5, "left": 0.8}, "lung_shunt": "counts",
                                    "constraints": [{"role": "lung", "metric": "mean", "max_gy": 20}]})
    new = updated_plan_settings(base, {"activities_gbq": {"right": 2.0}, "lung_shunt": "case"})
    # merged territory by territory; the rest kept
    assert dict(new.activities_gbq) == {"right": 2.0, "left": 0.8}
    assert new.lung_shunt == "case" and new.constraints == base.constraints
    assert updated_plan_settings(None, {}) == PlanSettings()
    with pytest.raises(voxeldose.InputError, match="MBq"):
        updated_plan_settings(base, {"activities_gbq": {"right": 2000.0}})
    with pytest.raises(voxeldose.InputError, match="lung_shunt"):
        updated_plan_settings(base, {"lung_shunt": "planar"})


@needs_taranis
def test_the_real_maa_case_plans_end_to_end(taranis_plan, taranis):
    out, metrics, _ = taranis_plan
    spect, vois, _ = taranis
    assert {p.name for p in out.iterdir()} >= {"dose.nii.gz", "activity.nii.gz", "rtdose.dcm", "dvh.csv",
                                                "metrics.json", "report.html"}
    plan = metrics["plan"]
    assert metrics["provenance"]["dose"]["units"] == "GY"
    assert plan["lung_shunt"]["value"] == 0.05 and plan["lung_shunt"]["used"].startswith("case")
    t = plan["territories"]["perfused volume"]
    # the territory's volume and mass from its mask on the SPECT grid (partial-volume fractions)
    perfused = np.asarray(vois["perfused volume"].array, np.float64)
    v_ml = float(perfused.sum()) * spect.voxel_volume_ml
    assert t["volume_ml"] == pytest.approx(v_ml, rel=1e-12)
    assert t["mass_kg"] == pytest.approx(v_ml * SOFT_TISSUE_DENSITY_G_PER_CM3 * 1e-3, rel=1e-12)
    # MIRD and partition activities equal their formulas (glass: C = 50 Gy kg/GBq) to 1e-9
    c, lsf = 50.0, 0.05
    assert plan["dose_constant_gy_kg_per_gbq"] == c
    mird = t["models"]["mird"]
    assert mird["activity_gbq"] == pytest.approx(120.0 * t["mass_kg"] / (c * (1 - lsf)), rel=1e-9)
    part = t["models"]["partition"]
    # the tumours' union is the clipped sum of their fractions (voxeldose.voi_sets' stated rule)
    tumours = np.clip(vois["Tumor 1"].array.astype(np.float64) + vois["Tumor 2"].array, 0.0, 1.0)
    m_t = float(np.minimum(perfused, tumours).sum()) * spect.voxel_volume_ml * 1.04e-3
    assert part["tumour_mass_kg"] == pytest.approx(m_t, rel=1e-9)
    tn = part["tumour_to_normal"]
    assert part["activity_gbq"] == pytest.approx(40.0 * (tn * m_t + part["normal_mass_kg"]) / (c * (1 - lsf)),
                                                 rel=1e-9)
    # the voxel plan: the perfused normal liver's mean at exactly 40 Gy binds (the tumours' D70
    # >= 100 Gy need less), and every constraint holds at that activity
    assert t["binding_constraint"] == "perfused volume without tumours mean <= 40 Gy"
    assert t["meets_all_constraints"] is True
    assert all(row["met"] for row in plan["constraints_at_predicted_map"])
    assert plan["constraints_at_predicted_map"][0]["value"] == pytest.approx(40.0, rel=1e-9)
    lows = [r["activity_limit_gbq"] for r in t["constraints"] if r["kind"] == "lower"]
    assert len(lows) == 2 and max(lows) < t["activity_gbq"]
    # without a lung VOI the lung's dose is the model's: C A LSF / 1 kg
    assert plan["lung_model_dose_gy"] == pytest.approx(c * t["activity_gbq"] * lsf, rel=1e-12)
    # with no planned activity, the predicted map is at the voxel plan's
    assert plan["predicted_map_activities_gbq"]["perfused volume"] == pytest.approx(t["activity_gbq"], rel=1e-15)
    page = (out / "report.html").read_text()
    assert "<h2>Plan</h2>" in page and "predicted dosimetry (Tc-99m MAA plan)" in page
    assert "perfused volume without tumours mean &lt;= 40 Gy" in page


@needs_taranis
def test_the_real_cases_plan_equals_a_fresh_run_on_its_predicted_activity(taranis_plan, tmp_path):
    # 'voxeldose run' on the plan's activity.nii.gz (MBq per voxel at administration) computes the
    # same dose afresh: every VOI's mean and D70 agree to 2e-6 (the NIfTI stores the activity and
    # the dose in float32; the two convolutions are the same engine on the same grid)
    out, plan_metrics, _ = taranis_plan
    case = tmp_path / "run.toml"
    case.write_text('case_id = "taranis-2-fresh"\nscan_units = "MBQ"\n[vois]\n"liver" = "whole_liver"\n'
                    '"Tumor 1" = "tumour"\n"Tumor 2" = "tumour"\n"perfused volume" = "perfused"\n')
    fresh = tmp_path / "fresh"
    assert main(["-q", "run", str(out / "activity.nii.gz"), "--voi", str(TARANIS / "patient_2_Segmentation.seg.nrrd"),
                 "--case", str(case), "--out", str(fresh)]) == 0
    a, b = plan_metrics["vois"], json.loads((fresh / "metrics.json").read_text())["vois"]
    assert set(a) == set(b)
    for name in a:
        for key in ("mean_gy", "D70_gy"):
            assert b[name][key] == pytest.approx(a[name][key], rel=2e-6, abs=1e-4), (name, key)


@needs_taranis
def test_plan_keeps_a_previous_result_and_names_unknown_territories(taranis_plan, tmp_path, capsys):
    out, metrics, case = taranis_plan
    before = (out / "metrics.json").read_bytes()
    args = ["plan", str(TARANIS / "patient_2_SPECT.nrrd"), "--voi", str(TARANIS / "patient_2_Segmentation.seg.nrrd"),
            "--case", str(case)]
    assert main([*args, "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before
    other = tmp_path / "o"
    assert main([*args, "--out", str(other), "--activity", "right lobe=2"]) == 2
    err = capsys.readouterr().err
    assert "'right lobe'" in err and "'perfused volume'" in err
    assert not other.exists()


@needs_taranis
def test_a_planned_activity_on_the_command_line_sets_the_predicted_map(taranis_plan, tmp_path):
    out, metrics, case = taranis_plan
    other = tmp_path / "o"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["-q", "plan", str(TARANIS / "patient_2_SPECT.nrrd"), "--voi",
                     str(TARANIS / "patient_2_Segmentation.seg.nrrd"), "--case", str(case), "--out", str(other),
                     "--activity", "perfused volume=2.0", "--method", "local"]) == 0
    m = json.loads((other / "metrics.json").read_text())
    plan = m["plan"]
    assert plan["predicted_map_activities_gbq"] == {"perfused volume": 2.0}
    assert plan["territories"]["perfused volume"]["planned_activity_gbq"] == 2.0
    # 2 GBq x (1 - LSF) in the territory, on the map (float32 NIfTI: 1e-6)
    act = voxeldose.load_image(other / "activity.nii.gz")
    assert float(act.array.sum(dtype=np.float64)) == pytest.approx(2000.0 * 0.95, rel=1e-6)
    # above the voxel plan's activity the perfused normal liver is over 40 Gy: said, not hidden
    row = plan["constraints_at_predicted_map"][0]
    assert row["met"] is False and row["value"] > 40.0
    assert any("is not met" in w for w in m["warnings"])


@needs_taranis
def test_an_anonymized_plan_names_no_input_path(taranis_plan, tmp_path, capsys):
    # a folder named after the patient holds the case file: no output, and no log line, names it
    _, _, case = taranis_plan
    folder = tmp_path / "Doe^Johnathan_1962"
    folder.mkdir()
    (folder / "case.toml").write_text(case.read_text())
    out = tmp_path / "o"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["--log-json", "plan", str(TARANIS / "patient_2_SPECT.nrrd"), "--voi",
                     str(TARANIS / "patient_2_Segmentation.seg.nrrd"), "--case", str(folder / "case.toml"),
                     "--out", str(out), "--anonymize"]) == 0
    logs = capsys.readouterr()
    assert "Johnathan" not in logs.err + logs.out and str(TARANIS) not in logs.err
    for f in out.iterdir():
        data = f.read_bytes()
        assert b"Johnathan_1962" not in data and str(TARANIS).encode() not in data, f.name
    m = json.loads((out / "metrics.json").read_text())
    assert m["provenance"]["input"]["scan"].startswith("withheld")
    assert m["plan"]["territories"]["perfused volume"]["binding_constraint"] is not None
