"""Result files: NIfTI, RT Dose (dciodvfy, SimpleITK, dicompyler-core), DVH CSV, metrics JSON."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import voxeldose
from voxeldose.image import Image, ImageMeta
from voxeldose.io.write_outputs import (
    voi_metrics,
    write_dvh_csv,
    write_metrics_json,
    write_nifti,
    write_rtdose,
)


def _rotation(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ np.array(
        [[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]])


def _dose(direction=np.eye(3)):
    rng = np.random.default_rng(4)
    meta = ImageMeta(frame_of_reference_uid="1.2.826.0.1.3680043.8.498.1", study_instance_uid="1.2.826.0.1.3680043.8.498.2",
                     identifiers={"PatientName": "Doe^Jane", "PatientID": "MRN123", "StudyDate": "20260115",
                                  "StudyTime": "090000", "StudyID": "7", "AccessionNumber": "A1"})
    return Image(rng.gamma(2.0, 40.0, (6, 7, 8)), (2.5, 3.0, 4.0), (-30.0, 12.0, 80.0),
                 tuple(np.asarray(direction).reshape(-1)), "GY", meta)


@pytest.mark.parametrize("direction", [np.eye(3), _rotation(25)])
def test_nifti_round_trip(tmp_path, direction):
    dose = _dose(direction)
    path = write_nifti(tmp_path / "dose.nii.gz", dose)
    back = sitk.ReadImage(str(path))
    np.testing.assert_allclose(back.GetOrigin(), dose.origin_mm, atol=1e-4)
    np.testing.assert_allclose(back.GetSpacing(), dose.spacing_mm, atol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), dose.direction, atol=1e-5)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), dose.array, rtol=1e-6)
    with pytest.raises(voxeldose.InputError, match="already exists"):
        write_nifti(path, dose)


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([1.0, -1.0, -1.0]), _rotation(25)])
def test_rtdose_round_trip(tmp_path, direction):
    dose = _dose(direction)
    path = write_rtdose(tmp_path / "rtdose.dcm", dose, reference=dose)
    ds = pydicom.dcmread(path)
    assert ds.Modality == "RTDOSE" and ds.DoseUnits == "GY" and ds.DoseType == "PHYSICAL"
    assert ds.FrameOfReferenceUID == dose.meta.frame_of_reference_uid
    assert ds.PatientName == "Doe^Jane" and ds.PatientID == "MRN123"
    values = ds.pixel_array.astype(float) * float(ds.DoseGridScaling)
    # 16-bit storage: the rounding error is at most half a step, max / 131070
    assert np.abs(values - dose.array).max() <= dose.array.max() / 131070 * 1.0001
    assert np.abs(values - dose.array).max() <= 1e-4 * dose.array.max()  # the precision
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], dose.index_to_world([0, 0, 0]), atol=1e-4)
    # frame k lies at the first position + GridFrameOffsetVector[k] along the slice normal
    d = dose.direction_matrix
    normal = np.cross(d[:, 0], d[:, 1])
    for k, offset in enumerate(ds.GridFrameOffsetVector):
        np.testing.assert_allclose(dose.index_to_world([0, 0, 0]) + float(offset) * normal,
                                   dose.index_to_world([0, 0, k]), atol=1e-4)
    # SimpleITK reads the same geometry and (scaled) values
    ref = sitk.ReadImage(str(path))
    np.testing.assert_allclose(ref.GetOrigin(), dose.origin_mm, atol=1e-3)
    np.testing.assert_allclose(ref.GetSpacing()[:2], dose.spacing_mm[:2], atol=1e-4)
    np.testing.assert_allclose(sitk.GetArrayFromImage(ref) * float(ds.DoseGridScaling), values, rtol=1e-5)


def test_rtdose_anonymized(tmp_path):
    dose = _dose()
    path = write_rtdose(tmp_path / "rtdose.dcm", dose, reference=dose, anonymize=True, case_id="tare-017")
    ds = pydicom.dcmread(path)
    assert ds.PatientName == "tare-017" and ds.PatientID == "tare-017"
    assert ds.AccessionNumber == "" and ds.StudyDate == ""
    assert "Doe" not in path.read_bytes().decode("latin-1") and "MRN123" not in path.read_bytes().decode("latin-1")
    assert ds.FrameOfReferenceUID == dose.meta.frame_of_reference_uid  # still registers with the images
    with pytest.raises(voxeldose.InputError, match="case_id"):
        write_rtdose(tmp_path / "x.dcm", dose, anonymize=True)


def test_negative_doses_are_stored_as_zero(tmp_path):
    dose = _dose()
    arr = np.array(dose.array)
    arr[0, 0, 0] = -1.0
    ds = pydicom.dcmread(write_rtdose(tmp_path / "r.dcm", dose.with_array(arr)))
    assert ds.pixel_array[0, 0, 0] == 0


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not installed; .ci/run installs it")
def test_rtdose_passes_dciodvfy(tmp_path):
    path = write_rtdose(tmp_path / "rtdose.dcm", _dose(_rotation(25)), reference=_dose())
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    report = proc.stdout + proc.stderr
    errors = [ln for ln in report.splitlines() if ln.startswith("Error")]
    assert not errors, report
    assert "RTDose" in report  # it recognised the IOD


def test_dvh_csv(tmp_path):
    dose = np.full((3, 4, 5), 50.0)
    h = voxeldose.dvh(dose, np.ones(dose.shape, bool), (2, 2, 2), name="liver")
    path = write_dvh_csv(tmp_path / "dvh.csv", {"liver": h}, n_points=11)
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["voi", "dose_gy", "volume_fraction", "volume_ml"]
    assert len(rows) == 11
    for r in rows:  # uniform 50 Gy: everything receives at least doses up to 50 Gy
        assert float(r["volume_fraction"]) == (1.0 if float(r["dose_gy"]) <= 50 else 0.0)
        assert float(r["volume_ml"]) == pytest.approx(float(r["volume_fraction"]) * 0.48)


def test_metrics_json(tmp_path):
    import datetime as dt

    h = voxeldose.dvh(np.arange(8.0).reshape(2, 2, 2), np.ones((2, 2, 2)), (10, 10, 10))
    data = {"vois": voi_metrics({"a": h}), "nan": float("nan"), "when": dt.datetime(2026, 1, 2, 3, 4),
            "arr": np.arange(3), "n": np.int64(4)}
    path = write_metrics_json(tmp_path / "metrics.json", data)
    back = json.loads(path.read_text())
    assert back["nan"] is None and back["when"] == "2026-01-02T03:04:00" and back["arr"] == [0, 1, 2]
    assert back["vois"]["a"]["mass_g"] == pytest.approx(8.0 * 1.04)
    assert list(back["vois"]["a"])[:3] == ["volume_ml", "mass_g", "mean_gy"]


# --------------------------------------------------------------------------- dicompyler-core

_DICOMPYLER_VENV = Path(os.environ.get("VOXELDOSE_TEST_CACHE", Path.home() / ".cache" / "voxeldose-test")) / "dicompyler-venv"
_DICOMPYLER_REQUIREMENTS = ["dicompyler-core==0.5.6", "pydicom<3", "numpy<2", "matplotlib<3.9", "six"]


def _dicompyler_python() -> Path | None:
    """A virtualenv with dicompyler-core 0.5.6 and pydicom 2.x (it cannot import beside pydicom 3),
    made once and reused; None when it cannot be made (no package index)."""
    python = _DICOMPYLER_VENV / "bin" / "python"
    if (_DICOMPYLER_VENV / ".complete").exists():
        return python
    staging = _DICOMPYLER_VENV.with_name(f"{_DICOMPYLER_VENV.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pytest.skip(f"cannot create {staging.parent} for the dicompyler-core virtualenv; set VOXELDOSE_TEST_CACHE")
    # made beside its final path and renamed when complete, so an interrupted install is never
    # reused; only bin/python is used afterwards (a link to the base interpreter, which finds the
    # venv's site-packages from its own location, so it survives the rename)
    subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True)
    proc = subprocess.run([str(staging / "bin" / "pip"), "install", "-q", *_DICOMPYLER_REQUIREMENTS],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        return None
    (staging / ".complete").write_text("ok")
    try:
        staging.rename(_DICOMPYLER_VENV)
    except OSError:  # another run finished first: use its venv
        shutil.rmtree(staging, ignore_errors=True)
        return python
    return python


def test_dicompyler_core_reads_our_rtdose_and_agrees(tmp_path):
    from voxeldose.io.phantom_dicom import write_liver_case

    python = _dicompyler_python()
    if python is None:
        pytest.skip("could not install dicompyler-core 0.5.6 into its own virtualenv (no package index?)")
    case = tmp_path / "case"
    write_liver_case(case, write=("PET", "CT", "RTSTRUCT"), ct_spacing_mm=(2.0, 2.0, 3.0))
    pet = voxeldose.load_image(case / "PET")
    activity = voxeldose.calibrate(pet, voxeldose.load_case(case / "case.toml"))
    dose = voxeldose.absorbed_dose(activity.image.array, pet.spacing_mm)
    dose_image = Image(dose, pet.spacing_mm, pet.origin_mm, pet.direction, "GY", pet.meta)
    rtdose = write_rtdose(tmp_path / "rtdose.dcm", dose_image, reference=pet)
    vois = voxeldose.load_vois(case / "RTSTRUCT.dcm", pet)
    script = Path(__file__).with_name("dicompyler_check.py")
    proc = subprocess.run([str(python), str(script), str(rtdose), str(case / "RTSTRUCT.dcm")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout)
    compared = 0
    for name, mask in vois.items():
        ours = voxeldose.dvh(dose, mask, pet.spacing_mm)
        if ours.volume_ml < 50:
            continue
        # the criterion: mean dose within 2 % for VOIs over 50 mL (dicompyler-core
        # rasterises the contours at the dose grid's voxel centres, we with partial volumes)
        assert theirs[name] == pytest.approx(ours.mean_gy, rel=0.02), name
        compared += 1
    assert compared >= 3  # liver, tumour_1, lung
    assert not math.isnan(sum(theirs.values()))
