"""Command line: demo output, exit codes, help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from voxeldose import __version__
from voxeldose.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_demo_prints_every_voi_with_its_ldm_expectation(capsys):
    assert main(["-q", "demo"]) == 0
    out = capsys.readouterr().out
    for voi in ("liver", "normal_liver", "lung"):
        assert voi in out
    assert "LDM Gy" in out and "D70 Gy" in out and "V100 %" in out
    # every row has an analytic LDM mean beside the computed one
    rows = [ln for ln in out.splitlines() if ln.startswith(("liver", "normal_liver", "lung", "tumour"))]
    assert len(rows) >= 4
    assert all("\u2014" not in r for r in rows)


def test_demo_bad_input_exits_2_with_a_message(capsys):
    assert main(["demo", "--lung-shunt", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "lung" in err.lower() and "error" in err


def test_demo_bad_option_is_an_argparse_error():
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--spacing", "4", "-1", "4"])
    assert exc.value.code == 2


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_console_script_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "voxeldose.cli", "demo", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert "--spacing" in proc.stdout and "mm" in proc.stdout
