"""Locate the runtime data shipped with the package (one copy, see pyproject force-include)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import VoxelDoseError


def data_dir(name: str) -> Path:
    """Folder of runtime data ``name`` ("kernels" or "phantoms").

    In an installed wheel the folders live in ``voxeldose/_data/``; in a source checkout
    (editable install) they are the repository's top-level ``kernels/`` and ``data/phantoms/``.
    """
    installed = Path(str(resources.files("voxeldose"))) / "_data" / name
    if installed.is_dir():
        return installed
    repo = Path(__file__).resolve().parents[2]
    source = repo / ("kernels" if name == "kernels" else f"data/{name}")
    if source.is_dir():
        return source
    raise VoxelDoseError(
        f"voxeldose data folder {name!r} not found (looked in {installed} and {source}); "
        "the installation is incomplete: reinstall voxeldose with 'pip install .'"
    )
