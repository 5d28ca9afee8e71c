"""Command line: demo, run and phantom; outputs, exit codes, safety of results, logs, help."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from voxeldose import __version__
from voxeldose.cli import main
from voxeldose.phantoms.export import write_liver_case
from voxeldose.pipeline import OUTPUT_FILES


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_single_case_commands_make_full_collections_rare_and_give_the_setting_back(monkeypatch):
    # the cyclic collector's full collections cost a fresh run 0.2 s: the single-case commands
    # raise threshold2 while they run; batch (whose process runs the cluster for hours) keeps
    # Python's; an in-process caller gets its own setting back, also after a failure
    import gc

    from voxeldose import cli
    from voxeldose.errors import InputError

    seen = {}

    def command(name, fail=False):
        def run(args):
            seen[name] = gc.get_threshold()
            if fail:
                raise InputError("bad input")
            return 0
        return run

    monkeypatch.setattr(cli, "_run", command("run"))
    monkeypatch.setattr(cli, "_batch", command("batch"))
    monkeypatch.setattr(cli, "_demo", command("demo", fail=True))
    old = gc.get_threshold()
    try:
        gc.set_threshold(old[0], old[1], 7)
        assert main(["run", "scan", "--out", "o"]) == 0
        assert seen["run"] == (old[0], old[1], cli.FULL_COLLECTION_EVERY)
        assert gc.get_threshold() == (old[0], old[1], 7)
        assert main(["batch", "cohort", "--out", "o"]) == 0
        assert seen["batch"] == (old[0], old[1], 7)
        assert main(["demo", "--out", "o"]) == cli.EXIT_BAD_INPUT
        assert seen["demo"] == (old[0], old[1], cli.FULL_COLLECTION_EVERY)
        assert gc.get_threshold() == (old[0], old[1], 7)
    finally:
        gc.set_threshold(*old)


def test_the_console_script_freezes_the_heap_after_the_command(monkeypatch):
    # interpreter exit then skips collecting the whole heap (0.4-0.6 s of a fresh run); the
    # exit code is main's, and the freeze comes after main has returned (every output written)
    import gc
    import importlib.metadata

    from voxeldose import cli

    order = []
    monkeypatch.setattr(cli, "main", lambda: order.append("main") or 3)
    monkeypatch.setattr(gc, "freeze", lambda: order.append("freeze"))
    assert cli.console() == 3
    assert order == ["main", "freeze"]
    (script,) = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "voxeldose"]
    assert script.value == "voxeldose.cli:console"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "liver"
    write_liver_case(out, write=("PET", "CT", "RTSTRUCT"), ct_spacing_xyz_mm=(4.0, 4.0, 5.0))
    return out


def test_demo_writes_the_outputs_and_prints_every_voi(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for voi in ("liver", "normal_liver", "lung", "tumour_1"):
        assert voi in printed
    assert "LDM Gy" in printed and "D70 Gy" in printed and "V100 %" in printed
    rows = [ln for ln in printed.splitlines() if ln.startswith(("liver", "normal_liver", "lung", "tumour"))]
    assert len(rows) >= 8 and all("\u2014" not in r for r in rows)  # every row has its LDM value
    # the lung row compares like with like: its mean and its LDM value both at lung density
    # (13.2 Gy measured against an LDM of 4.0 Gy in soft tissue was printed before)
    lung = next(r for r in rows if r.startswith("lung")).split()
    assert float(lung[3]) == pytest.approx(float(lung[2]), rel=0.10)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["case_id"] == "demo-liver"
    # the calibrated PET holds the administered activity: the liver's mean LDM-like check is in
    # test_end_to_end_dicom; here the outputs must be the demo's
    assert metrics["vois"]["liver"]["volume_ml"] == pytest.approx(1500, rel=0.01)


def test_force_never_replaces_a_folder_holding_other_files(tmp_path, capsys):
    # --force replaces a result folder as a whole: pointed at a folder of the user's files
    # (--out ~/Documents), it would have deleted them
    out = tmp_path / "documents"
    out.mkdir()
    (out / "thesis.docx").write_text("years of work")
    (out / "metrics.json").write_text("{}")
    assert main(["-q", "demo", "--out", str(out), "--force"]) == 2
    err = capsys.readouterr().err
    assert "holds files voxeldose did not write (thesis.docx)" in err and "choose a new folder" in err
    assert (out / "thesis.docx").read_text() == "years of work" and (out / "metrics.json").read_text() == "{}"


def test_demo_does_not_overwrite_results_without_force(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "metrics.json").write_text("previous good result")
    assert main(["-q", "demo", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == "previous good result"
    assert main(["-q", "demo", "--out", str(out), "--force", "--method", "local"]) == 0
    assert json.loads((out / "metrics.json").read_text())["provenance"]["dose"]["method"] == "local"


def test_demo_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--lung-shunt", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "lung" in err.lower() and "error" in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


def test_run_writes_all_outputs(export, tmp_path):
    out = tmp_path / "case-out"
    code = main(["-q", "run", str(export / "PET"), "--voi", str(export / "RTSTRUCT.dcm"),
                 "--case", str(export / "case.toml"), "--out", str(out), "--case-id", "tare-001"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["case_id"] == "tare-001"
    assert set(metrics["vois"]) >= {"liver", "lung", "tumour_1", "normal_liver"}
    assert metrics["provenance"]["input"]["series_instance_uid"]
    assert "Phantom" not in (out / "metrics.json").read_text()  # no patient name in the metrics
    assert str(export) in metrics["provenance"]["input"]["scan"]  # not anonymized: the paths are kept
    # the lung VOI's mass at lung density (0.30 g/mL), the others at soft tissue (1.04 g/mL)
    lung, liver = metrics["vois"]["lung"], metrics["vois"]["liver"]
    assert lung["mass_g"] == pytest.approx(0.30 * lung["volume_ml"])
    assert liver["mass_g"] == pytest.approx(1.04 * liver["volume_ml"])
    # the folder gets the umask's permissions (not the 0700 of a temporary folder)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask


def test_run_anonymized_keeps_no_input_path(export, tmp_path):
    out = tmp_path / "anon"
    assert main(["-q", "run", str(export / "PET"), "--voi", str(export / "RTSTRUCT.dcm"), "--case",
                 str(export / "case.toml"), "--out", str(out), "--case-id", "tare-002", "--anonymize"]) == 0
    for name in ("metrics.json", "report.html"):
        text = (out / name).read_text()
        assert str(export.parent) not in text, name  # export folders often carry the patient's name
    assert json.loads((out / "metrics.json").read_text())["provenance"]["input"]["scan"] == "withheld (anonymize)"


def test_run_options_override_the_case_file(export, tmp_path):
    out = tmp_path / "o"
    assert main(["-q", "run", str(export / "PET"), "--voi", str(export / "RTSTRUCT.dcm"), "--case",
                 str(export / "case.toml"), "--out", str(out), "--lung-shunt", "0.2",
                 "--voi-role", "tumour_5=tumour"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["case"]["lung_shunt_fraction"] == 0.2
    # --voi-role adds to the case file's roles
    assert metrics["roles"]["tumour_5"] == "tumour" and metrics["roles"]["liver"] == "whole_liver"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--voi", "/nonexistent/rtstruct.dcm"], ["nonexistent"]),
        (["--voi-role", "liver"], ["NAME=ROLE"]),
        (["--voi-role", "livr=whole_liver"], ["'livr'", "--voi-role", "did you mean 'liver'"]),
        (["--case", "/nonexistent/case.toml"], ["case.toml"]),
        (["--scan-modality", "NM"], ["scan_modality 'NM' (override) contradicts the scan's Modality 'PT'"]),
    ],
)
def test_run_bad_input_exits_2_and_leaves_no_output(export, tmp_path, capsys, extra, words):
    out = tmp_path / "o"
    args = ["run", str(export / "PET"), "--out", str(out)]
    if "--voi" not in extra:
        args += ["--voi", str(export / "RTSTRUCT.dcm")]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_internal_error_exits_1(monkeypatch, export, tmp_path, capsys):
    import voxeldose.pipeline

    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(voxeldose.pipeline, "run_case", boom)
    assert main(["run", str(export / "PET"), "--out", str(tmp_path / "o")]) == 1
    assert "internal error" in capsys.readouterr().err


def test_log_json(export, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["--log-json", "run", str(export / "PET"), "--voi", str(export / "RTSTRUCT.dcm"),
                 "--case", str(export / "case.toml"), "--out", str(out)]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("{")]
    assert lines
    records = [json.loads(ln) for ln in lines]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert not any("Phantom" in r["message"] for r in records)  # no patient data in logs


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["demo", "run", "phantom"])
def test_help_of_every_command(command):
    proc = subprocess.run([sys.executable, "-m", "voxeldose.cli", command, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "mm" in proc.stdout or "GBq" in proc.stdout


def test_run_refuses_a_tc99m_spect_and_writes_nothing(tmp_path, capsys):
    # the export's SPECT written again as a Tc-99m SPECT (same counts, same frame of reference):
    # 'run' would have self-calibrated it as Y-90 bremsstrahlung; it must refuse, exit 2, write nothing
    from voxeldose import load_image
    from voxeldose.io.series import SeriesHeader, write_nm_spect

    export = tmp_path / "export"
    write_liver_case(export, write=("SPECT", "CT", "RTSTRUCT"), ct_spacing_xyz_mm=(4.0, 4.0, 5.0))
    spect = load_image(export / "SPECT")
    m = spect.meta
    header = SeriesHeader(study_instance_uid=m.study_instance_uid, frame_of_reference_uid=m.frame_of_reference_uid,
                          acquisition_datetime=m.acquisition_datetime, series_number=9)
    write_nm_spect(export / "TC" / "tc.dcm", spect, header, radiopharmaceutical_start=m.radiopharmaceutical_start_datetime,
                   nuclide="Tc-99m", radiopharmaceutical="Tc-99m MAA")
    out = tmp_path / "o"
    capsys.readouterr()
    assert main(["-q", "run", str(export / "TC"), "--voi", str(export / "RTSTRUCT.dcm"), "--case",
                 str(export / "case.toml"), "--out", str(out), "--method", "local"]) == 2
    err = capsys.readouterr().err
    assert "names Tc-99m, not Y-90 (RadionuclideCodeSequence (0054,0300)" in err and "voxeldose plan" in err, err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging folder left either


def test_run_on_a_spect_self_calibrates_on_the_liver(tmp_path):
    export = tmp_path / "export"
    truth = write_liver_case(export, write=("SPECT", "CT", "RTSTRUCT"), ct_spacing_xyz_mm=(4.0, 4.0, 5.0))
    out = tmp_path / "o"
    assert main(["-q", "run", str(export / "SPECT"), "--voi", str(export / "RTSTRUCT.dcm"), "--case",
                 str(export / "case.toml"), "--out", str(out), "--method", "local"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    calibration = json.dumps(metrics["provenance"]["calibration"])
    assert "liver" in calibration  # the case's whole-liver VOI calibrated the counts
    # local deposition: the liver's mean dose is the phantom's voxelised LDM value, to the
    # accuracy of the RTSTRUCT rasterisation (0.5 %)
    expected = truth["spect"]["vois"]["liver"]["ldm_mean_dose_voxelised_gy"]
    assert metrics["vois"]["liver"]["mean_gy"] == pytest.approx(expected, rel=0.005)


def test_run_ct_draws_the_dose_over_the_ct(export, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["-q", "run", str(export / "PET"), "--voi", str(export / "RTSTRUCT.dcm"), "--case",
                 str(export / "case.toml"), "--ct", str(export / "CT"), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["provenance"]["ct"]["coverage_of_the_grid"] == 1.0
    assert metrics["provenance"]["input"]["ct"] == str(export / "CT")
    assert "Over the CT" in (out / "report.html").read_text()
    assert (out / "density.nii.gz").exists() and metrics["provenance"]["dose"]["density"].startswith("from the CT")
    assert metrics["provenance"]["density"]["hu_table"].startswith("Schneider et al. 2000")
    plain = tmp_path / "plain"
    assert main(["-q", "run", str(export / "PET"), "--voi", str(export / "RTSTRUCT.dcm"), "--case",
                 str(export / "case.toml"), "--out", str(plain)]) == 0
    without = json.loads((plain / "metrics.json").read_text())["vois"]
    # The CT's densities enter the dose: the kernel method's dose is the soft-tissue kernel's times
    # 1.04 / density. The phantom's liver is 60 HU, 1.0737 g/cm3 by Schneider 2000 (between 23 HU,
    # 1.031 and 100 HU, 1.1199); its tumours 45 HU. The means agree with that ratio to 1 %: the
    # boundary voxels of the 4 x 4 x 3 mm PET mix the neighbouring tissue's density in.
    from voxeldose.density import SCHNEIDER2000

    for name, hu in (("normal_liver", 60.0), ("tumour_1", 45.0)):
        ratio = 1.04 / float(SCHNEIDER2000.density(hu))
        assert metrics["vois"][name]["mean_gy"] == pytest.approx(without[name]["mean_gy"] * ratio, rel=0.01)
        assert metrics["vois"][name]["density_g_per_cm3"] == pytest.approx(1.04 / ratio, rel=0.01)
    # the PET given as the CT: refused, nothing written
    assert main(["-q", "run", str(export / "PET"), "--voi", str(export / "RTSTRUCT.dcm"), "--ct", str(export / "PET"),
                 "--out", str(tmp_path / "bad")]) == 2
    assert "expected a CT in HU" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_compute_case_takes_a_ct_on_the_scan_grid_only(liver_4x3):
    import voxeldose

    ct = voxeldose.Image(np.zeros((2, 2, 2), np.float32), (4.0, 4.0, 3.0), units="HU")
    with pytest.raises(voxeldose.GeometryError, match="load_ct"):
        voxeldose.compute_case(liver_4x3.activity, {}, voxeldose.Case("c"), ct=ct)


@pytest.fixture(scope="module")
def interface_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("interface") / "liver"
    write_liver_case(out, write=("PET", "CT", "RTSTRUCT"), pet_spacing_xyz_mm=(6.0, 6.0, 6.0),
                     ct_spacing_xyz_mm=(4.0, 4.0, 3.0), lung_interface=True)
    return out


def test_run_scaled_kernel_with_the_ct(interface_export, tmp_path):
    e = interface_export
    out = tmp_path / "o"
    assert main(["-q", "run", str(e / "PET"), "--voi", str(e / "RTSTRUCT.dcm"), "--case", str(e / "case.toml"),
                 "--ct", str(e / "CT"), "--method", "scaled_kernel", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["provenance"]["dose"]["method"] == "scaled_kernel"
    assert "density" in metrics["provenance"]["dose"]["method_description"]
    lung = metrics["vois"]["lung"]
    # the CT's lung is -730 HU, 0.280 g/cm3; the VOI's mean density is a little higher where its
    # boundary voxels share the chest wall and the liver
    assert 0.28 <= lung["density_g_per_cm3"] <= 0.32
    # the lung's mean dose beside the shunt model at the CT's lung mass (the interface phantom's
    # table in the README: scaled kernel 3 % below the model at 4 x 4 x 3 mm)
    model = 49.67 * 3.0 * 0.10 / (lung["mass_g"] / 1000.0)
    assert lung["mean_gy"] == pytest.approx(model, rel=0.10)
    assert (out / "density.nii.gz").exists()


def test_run_refuses_what_the_tissue_options_cannot_do(interface_export, tmp_path, capsys):
    e = interface_export
    base = ["-q", "run", str(e / "PET"), "--voi", str(e / "RTSTRUCT.dcm"), "--case", str(e / "case.toml")]
    assert main([*base, "--method", "scaled_kernel", "--out", str(tmp_path / "a")]) == 2
    assert "needs the case's CT" in capsys.readouterr().err and not (tmp_path / "a").exists()
    table = tmp_path / "hu.csv"
    table.write_text("hu,density\n-1000,0.001\n1000,1600\n")  # kg/m3 in the second row
    assert main([*base, "--ct", str(e / "CT"), "--hu-table", str(table), "--out", str(tmp_path / "b")]) == 2
    assert "g/cm3" in capsys.readouterr().err and not (tmp_path / "b").exists()
    table.write_text("hu,density\n-1000,0.001\n0,1.0\n1000,1.6\n")
    assert main([*base, "--ct", str(e / "CT"), "--hu-table", str(table), "--out", str(tmp_path / "c")]) == 0
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert metrics["provenance"]["density"]["hu_table"] == "user table hu.csv"
