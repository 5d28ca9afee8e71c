"""The layout the package promises: I/O at the edge, imports one way, one version, nothing heavy at import."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import voxeldose

PACKAGE = Path(voxeldose.__file__).resolve().parent
IO_LIBRARIES = {"pydicom", "SimpleITK", "highdicom"}


def _imports(path: Path) -> set[str]:
    """Top-level names of the modules a file imports (anywhere in it, functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_io_touches_pydicom_simpleitk_and_highdicom():
    outside = {str(p.relative_to(PACKAGE)): sorted(_imports(p) & IO_LIBRARIES)
               for p in PACKAGE.rglob("*.py") if "io" not in p.relative_to(PACKAGE).parts}
    assert {k: v for k, v in outside.items() if v} == {}


def test_the_version_is_written_once():
    assert importlib.metadata.version("voxeldose") == voxeldose.__version__
    written = [p for p in PACKAGE.rglob("*.py") if "__version__ =" in p.read_text(encoding="utf-8")]
    assert [p.name for p in written] == ["_version.py"]


def test_import_loads_no_plotting_cluster_jit_or_scipy():
    # the command line's --help must not wait for matplotlib, Dask or numba compilation, and a
    # script that imports voxeldose pays numpy only (~0.2 CPU-s): SciPy's submodules (ndimage
    # alone ~0.25 s), the DICOM and image libraries load where they are used
    code = ("import sys, voxeldose; heavy = [m for m in ('matplotlib', 'dask', 'distributed', 'numba', 'scipy', "
            "'SimpleITK', 'pydicom', 'highdicom', 'PIL') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
