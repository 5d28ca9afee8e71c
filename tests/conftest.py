"""Shared test helpers and session-wide fixtures (each phantom is built once per test run).

The fixtures are read-only by convention: a test that edits a phantom's files copies them to its
own ``tmp_path`` first.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import convolve

from voxeldose import Image, phantoms
from voxeldose.phantoms.export import write_liver_case

#: The project's reference data (read-only, beside the repository in CI and development).
SHARED_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference_data"

#: The real MAA SPECT and its Slicer segmentation (read-only, beside the repository).
SHARED_REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "real_data"

requires_shared = pytest.mark.skipif(
    not SHARED_REFERENCE.is_dir(), reason="shared/reference_data not beside the repository"
)

#: The liver phantom's standard roles (its RTSTRUCT and case file name the VOIs so).
LIVER_ROLES = {"liver": "whole_liver", "lung": "lung", **{f"tumour_{i}": "tumour" for i in range(1, 6)}}


def composite_kernel(small: np.ndarray, n: tuple[int, int, int]) -> np.ndarray:
    """Exact S values of a voxel made of n = (nz, ny, nx) voxels of a published kernel.

    S_big(d) = (1/N^2) sum_{s in big(0)} sum_{t in big(d)} S_small(t - s): the per-axis overlap
    counts of two boxes are triangle weights (m - |q|)/m^2, applied separably, then the result is
    sampled every m voxels around the centre.
    """
    out = np.asarray(small, float)
    for axis, m in enumerate(n):
        w = np.array([m - abs(q) for q in range(-m + 1, m)], float) / m**2
        shape = [1, 1, 1]
        shape[axis] = w.size
        out = convolve(out, w.reshape(shape), mode="full")
    c = [s // 2 for s in out.shape]
    return out[tuple(slice(c[a] % n[a], None, n[a]) for a in range(3))]


def mask(values, spacing_xyz_mm=(4.0, 4.0, 4.0)) -> Image:
    """A mask image from nested lists or an array (tests of the VOI rules)."""
    return Image(np.asarray(values, float), spacing_xyz_mm, units="MASK")


# --------------------------------------------------------------------------- phantoms, once per run


@pytest.fixture(scope="session")
def liver() -> phantoms.Phantom:
    """The liver phantom at its default 4.42 mm (3 GBq, LSF 0.10, T:N 4)."""
    return phantoms.liver()


@pytest.fixture(scope="session")
def liver_4x3() -> phantoms.Phantom:
    """The liver phantom on the DICOM export's PET grid, 4 x 4 x 3 mm."""
    return phantoms.liver(spacing_xyz_mm=(4.0, 4.0, 3.0))


@pytest.fixture(scope="session")
def liver_export(tmp_path_factory) -> tuple[Path, dict]:
    """The liver phantom as a DICOM export (PET 4x4x3 mm, SPECT 4.42 mm, CT 2x2x3 mm, RTSTRUCT
    on the CT, SEG on the PET, case.toml, truth.json) and its truth. Do not modify: copy."""
    out = tmp_path_factory.mktemp("liver_export") / "liver"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = write_liver_case(out)
    return out, truth


@pytest.fixture(scope="session")
def tables():
    """The published Lanconelli 2012 tables, read from ../shared (never shipped with the project)."""
    if not SHARED_REFERENCE.is_dir():
        pytest.skip("shared/reference_data (the published Lanconelli 2012 tables) not beside the repository")
    from voxeldose.io import load_vsv_tables

    return load_vsv_tables(SHARED_REFERENCE / "lanconelli2012_vsv_Y90")


requires_real_data = pytest.mark.skipif(
    not (SHARED_REAL_DATA / "taranis_patient2_maa").is_dir(),
    reason="shared/real_data/taranis_patient2_maa (a real MAA SPECT and its Slicer segmentation) not beside the repository",
)


@pytest.fixture(scope="session")
def taranis():
    """The real MAA SPECT (NRRD, counts) and its 3D Slicer segmentation on the CT grid, loaded
    once: (spect Image, vois, folder). Read from ../shared/real_data; never copied."""
    folder = SHARED_REAL_DATA / "taranis_patient2_maa"
    if not folder.is_dir():
        pytest.skip("shared/real_data/taranis_patient2_maa not beside the repository")
    from voxeldose import load_image, load_vois

    spect = load_image(folder / "patient_2_SPECT.nrrd")
    return spect, load_vois(folder / "patient_2_Segmentation.seg.nrrd", spect), folder


@pytest.fixture
def unlistable(monkeypatch):
    """``unlistable(folder)``: from then on ``os.scandir(folder)`` raises PermissionError, as for
    a folder the user may not list (the tests run as root, whom chmod does not stop)."""
    import os

    real = os.scandir
    hidden: set[str] = set()

    def scandir(path):
        if str(path) in hidden:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return lambda folder: hidden.add(str(folder))
