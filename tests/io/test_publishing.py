"""Publishing a result folder under adverse conditions (issue 14): killed runs, concurrent runs,
``--out .``, a full disk and a read-only folder. Nothing partial is published, no good result
is lost, and each failure is a clear error naming the folder."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import voxeldose
from voxeldose import OutputError
from voxeldose.io import results as R


@pytest.fixture(scope="module")
def small_result():
    a = np.zeros((12, 12, 12))
    a[3:9, 3:9, 3:9] = 1.0
    activity = voxeldose.Image(a, (4.0, 4.0, 4.0), units="MBQ")
    mask = voxeldose.Image((a > 0).astype(np.float32), (4.0, 4.0, 4.0), units="MASK")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return voxeldose.compute_case(activity, {"liver": mask}, voxeldose.Case("small", voi_roles={"liver": "whole_liver"}))


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_leftovers_of_a_killed_run_are_cleaned_and_a_moved_aside_result_restored(small_result, tmp_path):
    """SIGKILL while writing left .OUT.partial-* folders that no rerun removed; killed between
    moving the old result aside and moving the new one in, the good result sat in .OUT.old-*."""
    out = tmp_path / "out"
    voxeldose.write_result(small_result, out)
    host, dead = R._host(), _dead_pid()
    partial = tmp_path / f".out.partial-{dead}-{host}-0a1b2c3d"
    partial.mkdir()
    (partial / "dose.nii.gz").write_bytes(b"half")
    out.rename(tmp_path / f".out.old-{dead}-{host}")  # the kill came between the two renames
    live = tmp_path / f".out.partial-{os.getpid()}-{host}-deadbeef"  # a run still writing: left alone
    live.mkdir()
    other = tmp_path / f".out.partial-{dead}-elsewhere-0a1b2c3d"  # another machine's: left alone
    other.mkdir()
    done = R.clean_stale(tmp_path, "out")
    assert (out / "metrics.json").is_file() and not partial.exists()
    assert live.exists() and other.exists()
    assert any("restored the previous result" in line for line in done)
    # once the new result is in place, a stale backup is just removed
    old = tmp_path / f".out.old-{dead}-{host}"
    old.mkdir()
    R.clean_stale(tmp_path)
    assert not old.exists() and (out / "metrics.json").is_file()


def test_the_next_run_cleans_what_a_killed_run_left(small_result, tmp_path):
    dead = _dead_pid()
    partial = tmp_path / f".out.partial-{dead}-{R._host()}-0a1b2c3d"
    partial.mkdir()
    voxeldose.write_result(small_result, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_second_run_into_the_same_folder_is_refused_before_computing(small_result, tmp_path):
    """A concurrent second run into OUT computed everything, then refused."""
    out = tmp_path / "out"
    with R.reserve_out(out, force=False):
        lock = [p.name for p in tmp_path.iterdir()]
        assert len(lock) == 1 and lock[0].startswith(".out.lock-")
        code = ("import sys, voxeldose\n"
                "from voxeldose.io.results import reserve_out\n"
                "try:\n    reserve_out(sys.argv[1], False).__enter__()\n"
                "except voxeldose.OutputError as e:\n    print(e); sys.exit(7)\n")
        other = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True)
        assert other.returncode == 7 and "another voxeldose run is writing this folder" in other.stdout
        voxeldose.write_result(small_result, out)  # the holder itself may write (re-entrant)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # a lock left by a killed run does not block the next
    (tmp_path / f".out.lock-{_dead_pid()}-{R._host()}").touch()
    voxeldose.write_result(small_result, out, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_run_case_refuses_a_folder_being_written_before_reading_anything(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(voxeldose.io, "load_image", lambda *a, **k: pytest.fail("read the scan"))
    with R.reserve_out(out, force=False):
        monkeypatch.setattr(R, "_HELD", {})  # as seen from another process
        with pytest.raises(OutputError, match="another voxeldose run is writing"):
            voxeldose.run_case(tmp_path / "scan", [], out)


@pytest.mark.parametrize("out", [".", "./", "..", "/"])
def test_out_cannot_be_the_working_folder_or_above_it(small_result, tmp_path, monkeypatch, out):
    """--out . never worked: the staging folder was inside it (with --force a ValueError)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(voxeldose.InputError, match="must be a folder of its own, e.g. --out"):
        voxeldose.write_result(small_result, out, force=True)
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, r"the disk is full \(\d+ MiB are free there; the results need about \d+ MiB\)"),
    (errno.EROFS, "read-only for this user"),
    (errno.EACCES, "read-only for this user"),
])
def test_a_full_disk_or_read_only_folder_is_a_clear_error_that_keeps_the_old_result(small_result, tmp_path,
                                                                                    monkeypatch, code, words):
    """Disk full and read-only output exited 1 with a traceback."""
    out = tmp_path / "out"
    voxeldose.write_result(small_result, out)
    before = (out / "metrics.json").read_bytes()

    def full(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(R, "write_dvh_csv", full)
    with pytest.raises(OutputError, match=words) as err:
        voxeldose.write_result(small_result, out, force=True)
    assert str(tmp_path) in str(err.value)
    assert (out / "metrics.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder, no lock


def test_the_cli_reports_a_full_disk_with_exit_code_2(tmp_path, monkeypatch, capsys, liver_export):
    from voxeldose import cli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(R, "write_report", full)
    case_dir = liver_export[0]
    code = cli.main(["run", str(case_dir / "PET"), "--voi", str(case_dir / "RTSTRUCT.dcm"), "--case",
                     str(case_dir / "case.toml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "the disk is full" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
