"""Batch: a cohort on a Dask LocalCluster and through --scheduler; isolated failures; resuming."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pydicom
import pytest

import voxeldose.batch
from voxeldose.batch import CaseSpec, discover_cases, run_batch
from voxeldose.cli import main
from voxeldose.phantoms.export import write_liver_case
from voxeldose.pipeline import OUTPUT_FILES

# coarse grids keep each case to about a second
GRID = dict(pet_spacing_xyz_mm=(6.0, 6.0, 6.0), ct_spacing_xyz_mm=(6.0, 6.0, 6.0), write=("PET", "CT", "RTSTRUCT"))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    write_liver_case(root / "case_a", case_id="case_a", **GRID)
    write_liver_case(root / "case_b", case_id="case_b", lung_shunt_fraction=0.05, **GRID)
    broken = root / "broken"
    broken.mkdir()
    (broken / "notes.txt").write_text("the export failed")
    return root


def _read(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_discovery(cohort):
    specs = {s.case_id: s for s in discover_cases(cohort)}
    assert set(specs) == {"case_a", "case_b", "broken"}
    assert specs["case_a"].case_file.endswith("case.toml") and specs["case_a"].series_uid
    assert len(specs["case_a"].vois) == 1 and specs["case_a"].vois[0].endswith("RTSTRUCT.dcm")
    assert specs["broken"].error and "no PET or SPECT" in specs["broken"].error


def test_a_case_folder_with_two_case_files_is_a_failed_case_naming_them(cohort, tmp_path):
    """Two case files (top-level case.toml and case.json, or two in sub-folders) may hold other
    activities and times: the case fails naming them, where before the one found first was
    taken (top level) or neither (sub-folders: the case ran on the defaults)."""
    for layout in ("top", "nested"):
        root = tmp_path / layout
        shutil.copytree(cohort / "case_a", root / "case_a")
        text = (root / "case_a" / "case.toml").read_text()
        if layout == "top":
            (root / "case_a" / "case.json").write_text('{"case_id": "case_a"}')
        else:
            (root / "case_a" / "case.toml").rename(root / "case_a" / "PET" / "case.toml")
            (root / "case_a" / "CT" / "case.toml").write_text(text)
        spec, = discover_cases(root)
        assert spec.error_kind == "InputError", layout
        assert "2 case files" in spec.error and "keep the one of this case" in spec.error
        assert (("case.toml, case.json" if layout == "top" else "CT/case.toml, PET/case.toml") in spec.error)


def test_a_case_folder_of_linked_series_is_found_whole_and_an_unlistable_one_fails_alone(cohort, tmp_path,
                                                                                       unlistable):
    """A research cohort links each case's series in instead of copying them: the linked CT and
    RTSTRUCT belong to the case (rglob did not enter linked folders: the case lost its CT and
    VOIs without a word). A sub-folder that cannot be listed fails its case, naming it."""
    root = tmp_path / "cohort"
    linked = root / "linked"
    linked.mkdir(parents=True)
    for name in ("PET", "CT"):
        (linked / name).symlink_to(cohort / "case_a" / name, target_is_directory=True)
    (linked / "rt").mkdir()
    (linked / "rt" / "RTSTRUCT.dcm").symlink_to(cohort / "case_a" / "RTSTRUCT.dcm")
    (linked / "case.toml").symlink_to(cohort / "case_a" / "case.toml")
    shutil.copytree(cohort / "case_b", root / "case_b")
    (root / "case_b" / "case.toml").rename(root / "case_b" / "PET" / "case.toml")  # found by the walk
    spec = {s.case_id: s for s in discover_cases(root)}["case_a"]
    assert spec.error is None and spec.series_uid == discover_cases(cohort)[1].series_uid
    assert len(spec.ct) == len(list((cohort / "case_a" / "CT").iterdir())) and spec.vois[0].endswith("RTSTRUCT.dcm")

    unlistable(root / "case_b" / "PET")
    specs = {s.case_id: s for s in discover_cases(root)}
    assert specs["case_b"].error_kind == "InputError" and "cannot list the folder" in specs["case_b"].error
    assert specs["case_a"].error is None


def _frozen_after_warm_up(monkeypatch):
    """The number of objects frozen out of the garbage collector (``gc.get_freeze_count``) on
    each worker right after run_batch's warm-up: the client's ``run`` recorded on the way."""
    import gc

    from dask.distributed import Client

    frozen = []
    run = Client.run

    def recording(self, function, *args, **kwargs):
        out = run(self, function, *args, **kwargs)
        if function is voxeldose.batch._warm_worker:
            frozen.append(sorted(run(self, gc.get_freeze_count).values()))
        return out

    monkeypatch.setattr(Client, "run", recording)
    return frozen


def test_batch_isolates_failures_and_resumes(cohort, tmp_path, monkeypatch):
    input_dir = tmp_path / "in"
    shutil.copytree(cohort, input_dir)
    out = tmp_path / "out"
    frozen = _frozen_after_warm_up(monkeypatch)
    result = run_batch(input_dir, out, workers=2, progress=False)
    assert (result.n_ok, result.n_skipped, result.n_failed) == (2, 0, 1) and not result.ok
    # the local cluster's own workers have their libraries' objects frozen after the warm-up
    # (hundreds of thousands of them: numba, SciPy, matplotlib)
    assert len(frozen) == 1 and len(frozen[0]) == 2 and min(frozen[0]) > 100_000
    for case in ("case_a", "case_b"):
        names = {p.name for p in (out / case).iterdir()}
        assert names == set(OUTPUT_FILES) | {"log.txt", "density.nii.gz"}  # the case folder's CT: its density
    assert [p.name for p in (out / "broken").iterdir()] == ["log.txt"]
    rows = _read(out / "cohort.csv")
    assert {r["case_id"] for r in rows} == {"case_a", "case_b", "broken"}
    voi_rows = [r for r in rows if r["case_id"] == "case_a"]
    assert {r["voi"] for r in voi_rows} >= {"liver", "lung", "tumour_1", "normal_liver"}
    assert all(r["status"] == "ok" and float(r["mean_gy"]) > 0 for r in voi_rows)
    lsf = {r["case_id"]: r["lung_shunt_fraction"] for r in rows if r["voi"] == "liver"}
    assert lsf == {"case_a": "0.1", "case_b": "0.05"}
    failures = _read(out / "failures.csv")
    assert [f["case_id"] for f in failures] == ["broken"] and "no PET or SPECT" in failures[0]["error"]
    if (out / "cohort.parquet").exists():
        import pyarrow.parquet as pq

        assert pq.read_table(out / "cohort.parquet").num_rows == len(rows)

    # second run: the good cases are up to date, the broken one is tried again
    again = run_batch(input_dir, out, workers=1, progress=False)
    assert (again.n_ok, again.n_skipped, again.n_failed) == (0, 2, 1)
    assert len(_read(out / "cohort.csv")) == len(rows)

    # a changed input is run again; the other case is not
    case_file = input_dir / "case_b" / "case.toml"
    case_file.write_text(case_file.read_text().replace("lung_shunt_fraction = 0.05", "lung_shunt_fraction = 0.08"))
    third = run_batch(input_dir, out, workers=1, progress=False)
    assert (third.n_ok, third.n_skipped, third.n_failed) == (1, 1, 1)
    metrics = json.loads((out / "case_b" / "metrics.json").read_text())
    assert metrics["case"]["lung_shunt_fraction"] == 0.08
    assert not [p for p in out.rglob(".*")]  # no temporary files or staging folders left


def test_existing_scheduler_and_manifest(cohort, tmp_path, monkeypatch):
    from dask.distributed import LocalCluster

    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "case_id,scan,vois,case_file,lung_shunt_fraction\n"
        f"m1,{cohort / 'case_a' / 'PET'},{cohort / 'case_a' / 'RTSTRUCT.dcm'},{cohort / 'case_a' / 'case.toml'},0.2\n"
    )
    frozen = _frozen_after_warm_up(monkeypatch)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        result = run_batch(manifest, tmp_path / "out", scheduler=cluster.scheduler_address, progress=False)
    assert result.ok and result.n_ok == 1
    assert frozen == [[0, 0]]  # the user's workers are warmed, not frozen: their process is not ours
    # the scheduler's two single-threaded workers share the machine's cores, as --workers 2 would
    # (before, each case kept numba's default, all the cores, however many workers shared them)
    assert [r["threads"] for r in result.cases] == [max(1, voxeldose.batch._host_cores()[1] // 2)]
    # SimpleITK's filters too (the CT's resampling): before, each took all the cores
    assert [r["itk_threads"] for r in result.cases] == [max(1, voxeldose.batch._host_cores()[1] // 2)]
    rows = _read(tmp_path / "out" / "cohort.csv")
    assert {r["lung_shunt_fraction"] for r in rows} == {"0.2"}  # the manifest overrides the case file


def test_ambiguous_folder_is_a_failed_case_naming_the_series(cohort, tmp_path):
    case = tmp_path / "in" / "two"
    shutil.copytree(cohort / "case_a", case)
    write_liver_case(tmp_path / "other", write=("PET",), pet_spacing_xyz_mm=(8.0, 8.0, 8.0))
    shutil.copytree(tmp_path / "other" / "PET", case / "PET2")
    (spec,) = discover_cases(tmp_path / "in")
    assert spec.error and "2 emission series" in spec.error and "Y90 PET" in spec.error


def test_cli_batch_exit_code(cohort, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["-q", "batch", str(cohort), "--out", str(out), "--workers", "1", "--anonymize",
                 "--uncertainty", "3", "--seed", "7"]) == 3
    captured = capsys.readouterr()
    assert "2 case(s) done" in captured.out and "failures.csv" in captured.err
    # --anonymize reaches every case: RT Dose named by the case id, no input paths kept
    ds = pydicom.dcmread(out / "case_a" / "rtdose.dcm")
    assert ds.PatientName == "case_a" and ds.PatientIdentityRemoved == "YES"
    metrics = (out / "case_a" / "metrics.json").read_text()
    assert str(cohort) not in metrics and "withheld (anonymize)" in metrics
    # --uncertainty and --seed reach every case: its record, its intervals, the cohort's columns
    record = json.loads(metrics)["provenance"]["uncertainty"]
    assert (record["n"], record["seed"]) == (3, 7)
    rows = [r for r in _read(out / "cohort.csv") if r["status"] == "ok"]
    assert {r["case_id"] for r in rows} == {"case_a", "case_b"}
    tumour = [r for r in rows if r["voi"] == "tumour_1"]
    assert len(tumour) == 2 and all(float(r["mean_gy_u"]) > 0 for r in tumour)
    assert all(float(r["mean_gy_lo95"]) < float(r["mean_gy"]) < float(r["mean_gy_hi95"]) for r in tumour)


def test_the_batch_process_reads_no_dicom_each_worker_finds_its_cases(cohort, tmp_path, monkeypatch):
    """Each case folder's headers are read on the worker that runs the case: here the batch's
    own process cannot read a DICOM file (the workers are processes of their own, started
    afresh), and the batch still finds and runs every case."""
    import voxeldose.io._dicom_common as common

    def no_dicom(*args, **kwargs):
        raise AssertionError("the batch's process read a DICOM file")

    monkeypatch.setattr(common, "_read", no_dicom)
    out = tmp_path / "out"
    result = run_batch(cohort, out, workers=1, progress=False)
    assert (result.n_ok, result.n_failed) == (2, 1)
    assert [r["case_id"] for r in result.cases] == ["broken", "case_a", "case_b"]  # in folder order
    assert {r["case_id"] for r in _read(out / "cohort.csv")} == {"broken", "case_a", "case_b"}


def test_a_worker_parses_each_image_file_of_its_case_once(cohort, tmp_path, monkeypatch):
    """Finding the case (its folder's series), loading the PET from the folder and then the CT:
    three listings of the same files, one parse of each (without the shared reads, each CT file
    was parsed three times and each PET file twice)."""
    from collections import Counter

    import voxeldose.io._dicom_common as common

    parsed: Counter[str] = Counter()
    real = pydicom.dcmread

    def counting(path, *args, **kwargs):
        parsed[str(path)] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counting)
    (case_id, make), = [m for m in voxeldose.batch._case_makers(cohort) if m[0] == "case_a"]
    row = voxeldose.batch._run_found(case_id, make, str(tmp_path), {"method": "kernel", "tissue": "soft"})
    assert row["status"] == "ok", row["rows"]
    assert list(row["timings"])[:2] == ["find", "load"] and row["seconds"] > sum(row["timings"].values()) > 0
    images = sorted(str(f) for sub in ("PET", "CT") for f in (cohort / "case_a" / sub).rglob("*") if f.is_file())
    assert len(images) > 20 and all(str(f) in parsed for f in images)
    assert max(parsed[f] for f in images) == 1, {f: n for f, n in parsed.items() if n > 1}
    assert common._SHARED.get() is None  # the scope has ended: nothing read is kept


def test_what_concerns_the_whole_batch_is_refused_before_the_cluster_starts(cohort, tmp_path, monkeypatch):
    import dask.distributed

    def no_cluster(*args, **kwargs):
        raise AssertionError("the cluster was started")

    monkeypatch.setattr(dask.distributed, "LocalCluster", no_cluster)
    twice = tmp_path / "twice"
    for name in ("first", "second"):  # two folders whose case files give the same case id
        shutil.copytree(cohort / "case_a", twice / name)
    with pytest.raises(voxeldose.InputError, match="share the case id.*case_a"):
        run_batch(twice, tmp_path / "out", workers=1, progress=False)
    with pytest.raises(voxeldose.InputError, match="holds no case folders"):
        run_batch(tmp_path / "out", tmp_path / "out2", workers=1, progress=False)
    spec = CaseSpec("same", scan=str(cohort / "case_a"))
    with pytest.raises(voxeldose.InputError, match=r"share the case id\(s\) \['same'\]"):
        run_batch(cohort, tmp_path / "out3", workers=1, progress=False, cases=[spec, spec])


def _unreadable(path):
    raise PermissionError(13, "Permission denied", path)


def test_an_unreadable_case_folder_fails_that_case_only(cohort, tmp_path, monkeypatch):
    """An error reading a case folder while finding its files (here a PermissionError, on the
    worker) is that case's failure, as a damaged folder is; the other cases run."""
    import functools

    real = voxeldose.batch._case_makers

    def with_unreadable(*args, **kwargs):
        return [(i, functools.partial(_unreadable, str(cohort / i)) if i == "case_b" else make)
                for i, make in real(*args, **kwargs)]

    monkeypatch.setattr(voxeldose.batch, "_case_makers", with_unreadable)
    result = run_batch(cohort, tmp_path / "out", workers=1, progress=False)
    assert (result.n_ok, result.n_failed) == (1, 2)
    failed = {r["case_id"]: r for r in _read(tmp_path / "out" / "failures.csv")}
    assert set(failed) == {"broken", "case_b"}
    assert failed["case_b"]["error_kind"] == "InputError"
    assert "cannot be read" in failed["case_b"]["error"] and "Permission denied" in failed["case_b"]["error"]
    assert "Permission denied" in (tmp_path / "out" / "case_b" / "log.txt").read_text()


def _die_in_a_worker(parent_pid):
    if os.getpid() != parent_pid:
        os._exit(1)  # the worker process dies, as if killed or out of memory
    return _KillsItsWorker("killed")  # unpickled in the client or scheduler: stay a killer


class _KillsItsWorker(CaseSpec):
    """A case whose worker process dies when it receives it."""

    def __reduce__(self):
        return (_die_in_a_worker, (os.getpid(),))


def test_a_killed_worker_fails_its_case_only(cohort, tmp_path):
    import dask
    import distributed  # noqa: F401 - its defaults loaded first: config.set's exit would drop them all

    good = [s for s in discover_cases(cohort) if s.case_id == "case_a"]
    killer = _KillsItsWorker("killed")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        result = run_batch(cohort, tmp_path / "out", workers=2, progress=False, cases=[killer, *good])
    assert (result.n_ok, result.n_failed) == (1, 1)
    failures = _read(tmp_path / "out" / "failures.csv")
    assert failures[0]["case_id"] == "killed" and failures[0]["error_kind"] == "WorkerError"
    assert not (tmp_path / "out" / "killed").exists()  # nothing half-written
    assert (tmp_path / "out" / "case_a" / "metrics.json").exists()


def test_the_next_batch_removes_what_a_killed_worker_left(cohort, tmp_path):
    """A worker killed while writing leaves its case's staging folder; no rerun removed it."""
    import subprocess
    import sys

    from voxeldose.io.results import _host

    good = [s for s in discover_cases(cohort) if s.case_id == "case_a"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / "out" / f".killed.partial-{dead.pid}-{_host()}-0123abcd"
    left.mkdir(parents=True)
    (left / "dose.nii.gz").write_bytes(b"half")
    run_batch(cohort, tmp_path / "out", workers=1, progress=False, cases=good)
    assert not left.exists()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A cohort of one phantom export as ``voxeldose phantom liver`` writes it: PET, SPECT, CT,
    RTSTRUCT and SEG in one folder."""
    root = tmp_path_factory.mktemp("exports")
    write_liver_case(root / "liver", case_id="liver", pet_spacing_xyz_mm=(6.0, 6.0, 6.0),
                     spect_spacing_xyz_mm=(6.0, 6.0, 6.0), ct_spacing_xyz_mm=(6.0, 6.0, 6.0))
    return root


def test_a_phantom_export_is_a_case_folder_by_stated_rules(exports, tmp_path):
    from voxeldose.io import list_series

    series = {s.modality: s.series_instance_uid for s in list_series(exports / "liver")}
    # by default: the PET, and the RTSTRUCT's VOIs, each choice a caveat
    (spec,) = discover_cases(exports)
    assert spec.error is None and spec.series_uid == series["PT"]
    assert [os.path.basename(v) for v in spec.vois] == ["RTSTRUCT.dcm"]
    assert len(spec.caveats) == 2 and "the PET" in spec.caveats[0] and "--scan-modality NM" in spec.caveats[0]
    assert "not those of SEG.dcm" in spec.caveats[1] and "--voi-format SEG" in spec.caveats[1]
    assert spec.ct and all("/CT/" in f for f in spec.ct)  # the one CT series: the report's background
    # chosen by the options: the SPECT and the SEG, no caveat (nothing was chosen for the user)
    (spec,) = discover_cases(exports, scan_modality="NM", voi_format="SEG")
    assert spec.series_uid == series["NM"] and [os.path.basename(v) for v in spec.vois] == ["SEG.dcm"]
    assert spec.caveats == ()
    # or by the case file; an option overrides it
    case = tmp_path / "in" / "liver"
    shutil.copytree(exports / "liver", case)
    (case / "case.toml").write_text((case / "case.toml").read_text().replace(
        'case_id = "liver"', 'case_id = "liver"\nscan_modality = "SPECT"'))
    (spec,) = discover_cases(tmp_path / "in")
    assert spec.series_uid == series["NM"] and len(spec.caveats) == 1  # the VOI rule's caveat
    (spec,) = discover_cases(tmp_path / "in", scan_modality="PT")
    assert spec.series_uid == series["PT"]
    # a modality the folder does not hold fails the case, listing what it holds
    shutil.rmtree(case / "SPECT")
    (spec,) = discover_cases(tmp_path / "in")
    assert spec.error and "no NM series for scan_modality 'NM'" in spec.error and "Y90 PET" in spec.error


def test_batch_runs_phantom_exports_with_the_run_options(exports, tmp_path):
    out = tmp_path / "out"
    # the default rules: PET and RTSTRUCT, and their caveats reach the case's outputs
    assert main(["-q", "batch", str(exports), "--out", str(out / "pet"), "--workers", "1"]) == 0
    metrics = json.loads((out / "pet" / "liver" / "metrics.json").read_text())
    assert sum(w.startswith("the case folder holds") for w in metrics["warnings"]) == 2
    assert "PET" in metrics["provenance"]["calibration"]["method"]
    assert metrics["provenance"]["ct"]["coverage_of_the_grid"] > 0.99
    assert "Over the CT" in (out / "pet" / "liver" / "report.html").read_text()
    # the SPECT and SEG, with options of run applied to every case over its case file
    assert main(["-q", "batch", str(exports), "--out", str(out / "spect"), "--workers", "1", "--scan-modality", "NM",
                 "--voi-format", "SEG", "--residual", "0.02", "--sphere-type", "resin",
                 "--voi-role", "tumour_1=tumour"]) == 0
    metrics = json.loads((out / "spect" / "liver" / "metrics.json").read_text())
    assert "SPECT" in metrics["provenance"]["calibration"]["method"]
    assert metrics["case"]["residual_fraction"] == 0.02 and metrics["case"]["sphere_type"] == "resin"
    assert not [w for w in metrics["warnings"] if w.startswith("the case folder holds")]
    rows = _read(out / "spect" / "cohort.csv")
    assert {r["residual_fraction"] for r in rows} == {"0.02"}
    # the SPECT self-calibration holds the delivered activity: 3 GBq x (1 - 0.02) x (1 - 0.1) in the liver
    assert float(rows[0]["activity_vs_administered"]) == pytest.approx(1.0, abs=1e-3)


def test_batch_options_are_checked_before_any_case_runs(exports, tmp_path):
    from voxeldose import InputError

    with pytest.raises(InputError, match="one case's own values"):
        run_batch(exports, tmp_path / "out", overrides={"administered_gbq": 3.0}, progress=False)
    with pytest.raises(InputError, match="residual_fraction"):
        run_batch(exports, tmp_path / "out", overrides={"residual_fraction": 2.0}, progress=False)
    with pytest.raises(InputError, match="voi_format"):
        run_batch(exports, tmp_path / "out", voi_format="NIFTI", progress=False)
    assert not (tmp_path / "out").exists()


def test_batch_passes_the_tissue_options_and_hashes_the_hu_table(cohort, tmp_path, monkeypatch):
    # every case of a batch folder uses its CT; --hu-table and --outside-body reach every case,
    # and a changed table (its content, not its name) runs the cases again
    input_dir = tmp_path / "in"
    shutil.copytree(cohort / "case_a", input_dir / "case_a")
    table = tmp_path / "scanner.csv"
    table.write_text("hu,density\n-1000,0.0012\n0,1.0\n1000,1.6\n")
    out = tmp_path / "out"
    first = run_batch(input_dir, out, workers=1, progress=False, method="scaled_kernel", hu_table=table,
                      outside_body="keep")
    assert (first.n_ok, first.n_failed) == (1, 0)
    metrics = json.loads((out / "case_a" / "metrics.json").read_text())
    assert metrics["provenance"]["density"]["hu_table"] == "user table scanner.csv"
    assert metrics["provenance"]["body"]["activity_outside"] == "kept in the dose"
    assert metrics["provenance"]["dose"]["method"] == "scaled_kernel"
    again = run_batch(input_dir, out, workers=1, progress=False, method="scaled_kernel", hu_table=table,
                      outside_body="keep")
    assert again.n_skipped == 1
    table.write_text("hu,density\n-1000,0.0012\n0,1.0\n1000,1.7\n")
    changed = run_batch(input_dir, out, workers=1, progress=False, method="scaled_kernel", hu_table=table,
                        outside_body="keep")
    assert (changed.n_ok, changed.n_skipped) == (1, 0)
    # results an older voxeldose wrote (another results revision) are not up to date: the revision
    # is part of the stamp (the workers are other processes, so it is checked here, in this one)
    spec = discover_cases(input_dir)[0]
    options = {"method": "scaled_kernel", "tissue": "soft"}
    stamp = voxeldose.batch.case_digest(spec, options)
    monkeypatch.setattr(voxeldose.batch, "RESULTS_REVISION", voxeldose.batch.RESULTS_REVISION + 1)
    assert voxeldose.batch.case_digest(spec, options) != stamp
    with pytest.raises(voxeldose.InputError, match="cannot read the HU-to-density table"):
        run_batch(input_dir, out, workers=1, progress=False, hu_table=tmp_path / "missing.csv")


def test_workers_of_a_scheduler_share_their_machine():
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        shares = voxeldose.batch.threads_by_worker(client)
    cores = voxeldose.batch._host_cores()[1]
    assert len(shares) == 2 and set(shares.values()) == {max(1, cores // 2)}
