"""The runtime data (kernel tables, DPK, phantom definitions) ship inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import voxeldose
from voxeldose._resources import data_dir

REPO = Path(__file__).resolve().parents[1]


def test_installed_package_uses_its_own_data_copy():
    package = Path(voxeldose.__file__).resolve().parent
    kernels = data_dir("kernels")
    if REPO / "src" in package.parents:
        pytest.skip("editable install: data come from the source tree")
    # a regular (wheel) install, as in CI: the data must be inside the installed package
    assert package in kernels.parents
    assert (kernels / "y90_dpk_lanconelli2012_fit.csv").is_file()
    assert not list(kernels.glob("90Y*.txt"))  # the published tables stay in ../shared
    assert package in data_dir("phantoms").parents


def test_wheel_contains_the_data(tmp_path):
    if not (REPO / "pyproject.toml").is_file():
        pytest.skip("not run from a source checkout")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("voxeldose-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not [n for n in names if "/90Y" in n]  # no copy of the published tables
    assert "voxeldose/_data/kernels/y90_dpk_lanconelli2012_fit.csv" in names
    assert "voxeldose/_data/kernels/README.md" in names
    assert any(n.startswith("voxeldose/_data/phantoms/") for n in names)
    assert "voxeldose/py.typed" in names
