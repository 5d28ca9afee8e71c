"""Result files: NIfTI, RT Dose (pydicom, SimpleITK, dciodvfy, dicompyler-core), DVH CSV, metrics JSON."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import voxeldose
from voxeldose.dvh import voi_metrics
from voxeldose.image import Image, ImageMeta
from voxeldose.io.results import (
    DVH_CSV_COLUMNS,
    RTDOSE_SOP,
    write_dvh_csv,
    write_metrics_json,
    write_nifti,
    write_rtdose,
)

FRAME_UID = "1.2.826.0.1.3680043.8.498.1"
STUDY_UID = "1.2.999.20260115.77.1"  # not a prefix of the UIDs pydicom generates (1.2.826.0.1.3680043.8.498.<n>)
IDENTIFIERS = {"PatientName": "Doe^Jane", "PatientID": "MRN123", "PatientBirthDate": "19600203", "PatientSex": "F",
               "StudyInstanceUID": STUDY_UID, "StudyDate": "20260115", "StudyTime": "090000", "StudyID": "7",
               "AccessionNumber": "ACC991", "ReferringPhysicianName": "Who^Doctor", "StudyDescription": "SIRT post"}


def _oblique() -> np.ndarray:
    """A rotation about z by 25 degrees after one about x by 0.2 rad (right-handed, oblique)."""
    a = np.deg2rad(25)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]])
    return rz @ rx


DIRECTIONS = {
    "identity": np.eye(3),
    "flipped_xy": np.diag([-1.0, -1.0, 1.0]),
    "oblique": _oblique(),
    # left-handed: slices run against the row x column normal (written in reverse frame order)
    "left_handed": np.diag([1.0, 1.0, -1.0]),
    "left_handed_oblique": _oblique() @ np.diag([1.0, 1.0, -1.0]),
}


def _dose(direction=np.eye(3), *, shape=(6, 7, 8), seed=4, meta=None) -> Image:
    rng = np.random.default_rng(seed)
    meta = meta or ImageMeta(frame_of_reference_uid=FRAME_UID, study_instance_uid=STUDY_UID, identifiers=IDENTIFIERS)
    return Image(rng.gamma(2.0, 40.0, shape), (2.5, 3.0, 4.0), (-30.0, 12.0, 80.0),
                 tuple(np.asarray(direction, float).reshape(-1)), "GY", meta)


def _dciodvfy(path: Path) -> list[str]:
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    report = proc.stdout + proc.stderr  # dciodvfy writes its findings to stderr
    assert "RTDose" in report, report  # it recognised the IOD (and did not abort)
    return report.splitlines()


requires_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                       reason="dciodvfy (Debian dicom3tools) not installed; .ci/run installs it")

# --------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize("direction", list(DIRECTIONS), ids=list(DIRECTIONS))
def test_nifti_round_trip_keeps_geometry_and_values(tmp_path, direction):
    dose = _dose(DIRECTIONS[direction])
    path = write_nifti(tmp_path / "dose.nii.gz", dose)
    assert path == tmp_path / "dose.nii.gz" and os.listdir(tmp_path) == ["dose.nii.gz"]
    back = sitk.ReadImage(str(path))
    # NIfTI stores the geometry as float32 (qform/sform): 1e-4 mm and 1e-5 in the direction
    # cosines are a few float32 steps at these magnitudes
    np.testing.assert_allclose(back.GetOrigin(), dose.origin_mm, atol=1e-4)
    np.testing.assert_allclose(back.GetSpacing(), dose.spacing_mm, atol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), dose.direction, atol=1e-5)
    # values are written as float32: exact against the float32 of the input
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), dose.array.astype(np.float32))


def test_nifti_refuses_to_overwrite_and_checks_the_name(tmp_path):
    dose = _dose()
    path = write_nifti(tmp_path / "dose.nii.gz", dose)
    before = path.read_bytes()
    with pytest.raises(voxeldose.InputError, match="already exists.*overwrite=True"):
        write_nifti(path, dose.with_array(dose.array * 2))
    assert path.read_bytes() == before
    write_nifti(path, dose.with_array(dose.array * 2), overwrite=True)
    np.testing.assert_allclose(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), dose.array * 2, rtol=1e-6)
    with pytest.raises(voxeldose.InputError, match=r"end it in \.nii\.gz"):
        write_nifti(tmp_path / "dose.mha", dose)
    with pytest.raises(voxeldose.InputError, match="does not exist"):
        write_nifti(tmp_path / "missing" / "dose.nii.gz", dose)
    assert sorted(os.listdir(tmp_path)) == ["dose.nii.gz"]


# --------------------------------------------------------------------------- RT Dose


def _read_rtdose_pydicom(path: Path) -> Image:
    """Our own reader of the RT Dose, from the standard's definitions (not from our writer)."""
    ds = pydicom.dcmread(path)
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    offsets = np.array([float(v) for v in ds.GridFrameOffsetVector])
    steps = np.diff(offsets)
    assert offsets[0] == 0 and np.allclose(steps, steps[0]) and steps[0] > 0
    dy, dx = (float(v) for v in ds.PixelSpacing)
    values = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    return Image(values.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns), (dx, dy, float(steps[0])),
                 tuple(float(v) for v in ds.ImagePositionPatient),
                 tuple(np.column_stack([row, col, normal]).reshape(-1)), "GY")


def _same_voxels(ours: Image, theirs: Image, *, atol_gy: float) -> None:
    """Same voxel centres in patient space and the same values, whatever the index order."""
    assert sorted(ours.shape) == sorted(theirs.shape)
    k, j, i = np.indices(ours.shape).reshape(3, -1)
    at = theirs.world_to_index(ours.index_to_world(np.column_stack([i, j, k])))
    idx = np.rint(at).astype(int)
    # every voxel centre of ours is a voxel centre of theirs, to 1e-4 mm (DS values hold 16
    # characters, >= 11 significant digits), and each one once
    np.testing.assert_allclose(at * np.asarray(theirs.spacing_mm), idx * np.asarray(theirs.spacing_mm), atol=1e-4)
    assert (idx >= 0).all() and (idx < np.asarray(theirs.size_xyz)).all()
    assert len({tuple(v) for v in idx}) == idx.shape[0]
    got = theirs.array[idx[:, 2], idx[:, 1], idx[:, 0]]
    np.testing.assert_allclose(got, ours.array.reshape(-1), atol=atol_gy, rtol=0)


@pytest.mark.parametrize("direction", list(DIRECTIONS), ids=list(DIRECTIONS))
def test_rtdose_round_trip_through_pydicom(tmp_path, direction):
    dose = _dose(DIRECTIONS[direction])
    path = write_rtdose(tmp_path / "rtdose.dcm", dose, reference=dose)
    assert os.listdir(tmp_path) == ["rtdose.dcm"]
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == RTDOSE_SOP and ds.file_meta.MediaStorageSOPClassUID == RTDOSE_SOP
    assert ds.Modality == "RTDOSE"
    assert (ds.DoseUnits, ds.DoseType, ds.DoseSummationType) == ("GY", "PHYSICAL", "PLAN_OVERVIEW")
    assert (ds.BitsAllocated, ds.PixelRepresentation, ds.NumberOfFrames) == (16, 0, 6)
    assert ds.FrameOfReferenceUID == FRAME_UID and ds.StudyInstanceUID == STUDY_UID
    assert ds.SoftwareVersions == voxeldose.__version__
    top = float(dose.array.max())
    # the precision: 1e-4 of the maximum; 16-bit storage gives half a step, max / 131070
    # (7.6e-6 of the maximum), plus float rounding of the product (factor 1.0001)
    ours = _read_rtdose_pydicom(path)
    assert float(ds.DoseGridScaling) == pytest.approx(top / 65535, rel=1e-10)
    _same_voxels(dose, ours, atol_gy=top / 131070 * 1.0001)
    assert top / 131070 * 1.0001 < 1e-4 * top
    # the first frame's position and the offsets: frame k lies at IPP + offset_k * normal
    d = dose.direction_matrix
    first_k = 0 if direction in ("identity", "flipped_xy", "oblique") else dose.shape[0] - 1
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], dose.index_to_world([0, 0, first_k]),
                               atol=1e-4)
    np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], np.r_[d[:, 0], d[:, 1]], atol=1e-12)
    np.testing.assert_allclose([float(v) for v in ds.GridFrameOffsetVector], 4.0 * np.arange(6), atol=1e-12)


@pytest.mark.parametrize("direction", list(DIRECTIONS), ids=list(DIRECTIONS))
def test_rtdose_read_by_simpleitk(tmp_path, direction):
    """SimpleITK (GDCM) reads an RT Dose as a multi-frame image of the stored integers."""
    dose = _dose(DIRECTIONS[direction])
    path = write_rtdose(tmp_path / "rtdose.dcm", dose, reference=dose)
    scaling = float(pydicom.dcmread(path, stop_before_pixels=True).DoseGridScaling)
    read = sitk.ReadImage(str(path))
    raw = sitk.GetArrayFromImage(read)
    assert raw.dtype == np.uint16 and raw.max() == 65535  # GDCM does not apply DoseGridScaling
    theirs = Image(raw * scaling, read.GetSpacing(), read.GetOrigin(), read.GetDirection(), "GY")
    # same tolerances as through pydicom; GDCM computes the slice spacing from the offsets
    np.testing.assert_allclose(theirs.spacing_mm, dose.spacing_mm, atol=1e-6)
    _same_voxels(dose, theirs, atol_gy=float(dose.array.max()) / 131070 * 1.0001)


def test_rtdose_precision_for_a_wide_range(tmp_path):
    """Doses from 1e-3 to 1e3 Gy: the absolute error stays within 1e-4 of the maximum."""
    dose = _dose()
    arr = np.geomspace(1e-3, 1e3, dose.array.size).reshape(dose.shape)
    ours = _read_rtdose_pydicom(write_rtdose(tmp_path / "r.dcm", dose.with_array(arr)))
    assert np.abs(ours.array - arr).max() <= 1e-4 * 1e3
    assert ours.array.max() == pytest.approx(1e3, rel=1e-9)  # the maximum is stored exactly (65535 steps)


def test_rtdose_all_zero_dose(tmp_path):
    dose = _dose()
    ds = pydicom.dcmread(write_rtdose(tmp_path / "r.dcm", dose.with_array(np.zeros(dose.shape))))
    assert float(ds.DoseGridScaling) == 1.0 and not ds.pixel_array.any()


def test_rtdose_negative_doses_are_stored_as_zero_with_a_warning(tmp_path):
    dose = _dose()
    arr = np.array(dose.array)
    arr[0, 0, 0] = -1.5
    arr[1, 2, 3] = -0.25
    with pytest.warns(voxeldose.VoxelDoseWarning, match=r"2 voxel\(s\) have a negative dose \(lowest -1\.5 Gy"):
        path = write_rtdose(tmp_path / "r.dcm", dose.with_array(arr))
    ours = _read_rtdose_pydicom(path)
    assert ours.array[0, 0, 0] == 0 and ours.array[1, 2, 3] == 0
    np.testing.assert_allclose(ours.array, np.clip(arr, 0, None), atol=arr.max() / 131070 * 1.0001, rtol=0)


def test_rtdose_copies_patient_and_study_from_the_reference(tmp_path):
    reference = _dose()
    dose = Image(reference.array, reference.spacing_mm, reference.origin_mm, reference.direction, "GY")  # no meta
    ds = pydicom.dcmread(write_rtdose(tmp_path / "r.dcm", dose, reference=reference, software_version="9.9"))
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription"):
        assert str(ds[keyword].value) == IDENTIFIERS[keyword], keyword
    assert ds.StudyInstanceUID == STUDY_UID and ds.FrameOfReferenceUID == FRAME_UID
    assert ds.SeriesInstanceUID not in (STUDY_UID, FRAME_UID) and ds.SoftwareVersions == "9.9"
    assert "PatientIdentityRemoved" not in ds and ds.ContentDate


def test_rtdose_writes_names_in_any_script(tmp_path):
    ids = {**IDENTIFIERS, "PatientName": "Müller^Zoë=山田^太郎"}
    dose = _dose(meta=ImageMeta(frame_of_reference_uid=FRAME_UID, identifiers=ids))
    ds = pydicom.dcmread(write_rtdose(tmp_path / "r.dcm", dose))
    assert ds.SpecificCharacterSet == "ISO_IR 192" and str(ds.PatientName) == "Müller^Zoë=山田^太郎"


def test_rtdose_anonymized(tmp_path):
    dose = _dose()
    path = write_rtdose(tmp_path / "rtdose.dcm", dose, reference=dose, anonymize=True, case_id="tare-017")
    ds = pydicom.dcmread(path)
    assert ds.PatientName == "tare-017" and ds.PatientID == "tare-017"
    for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber",
                    "ReferringPhysicianName", "StudyID"):
        assert ds[keyword].value in ("", None), keyword  # Type 2: present and empty
    assert "StudyDescription" not in ds and "ContentDate" not in ds and "InstanceCreationDate" not in ds
    assert ds.PatientIdentityRemoved == "YES" and "UIDs hashed" in ds.DeidentificationMethod  # what was done
    assert "new study" not in ds.DeidentificationMethod and len(ds.DeidentificationMethod) <= 64
    raw = path.read_bytes()
    for value in ("Doe", "MRN123", "19600203", "ACC991", "Who^Doctor", "SIRT post", "20260115", STUDY_UID):
        assert value.encode() not in raw, value
    # PS3.15 action U: the UIDs replaced, consistently (the same source UID, the same new one)
    from voxeldose.anonymize import anonymous_uid

    assert ds.FrameOfReferenceUID == anonymous_uid(FRAME_UID) != FRAME_UID
    assert ds.StudyInstanceUID == anonymous_uid(STUDY_UID) and ds.StudyInstanceUID.startswith("2.25.")
    assert len(ds.StudyInstanceUID) <= 64 and ds.LongitudinalTemporalInformationModified == "REMOVED"
    again = pydicom.dcmread(write_rtdose(tmp_path / "again.dcm", dose, anonymize=True, case_id="tare-017"))
    assert (again.StudyInstanceUID, again.FrameOfReferenceUID) == (ds.StudyInstanceUID, ds.FrameOfReferenceUID)
    assert again.SOPInstanceUID != ds.SOPInstanceUID and again.SeriesInstanceUID != ds.SeriesInstanceUID


def test_rtdose_errors_say_what_and_how(tmp_path):
    dose = _dose()
    with pytest.raises(voxeldose.InputError, match="anonymize=True needs a case_id"):
        write_rtdose(tmp_path / "x.dcm", dose, anonymize=True)
    with pytest.raises(voxeldose.InputError, match="units 'BQML'.*units='GY'"):
        write_rtdose(tmp_path / "x.dcm", dose.with_array(dose.array, units="BQML"))
    bad = np.array(dose.array)
    bad[0, 0, 0] = np.nan
    with pytest.raises(voxeldose.InputError, match="1 NaN or infinite"):
        write_rtdose(tmp_path / "x.dcm", dose.with_array(bad))
    with pytest.raises(voxeldose.InputError, match="case_id .* at most 64 characters"):
        write_rtdose(tmp_path / "x.dcm", dose, anonymize=True, case_id="x" * 65)
    other = dose.with_array(dose.array, frame_of_reference_uid="1.2.3")
    with pytest.raises(voxeldose.GeometryError, match="FrameOfReferenceUID 1.2.3 differs"):
        write_rtdose(tmp_path / "x.dcm", other, reference=dose)
    assert os.listdir(tmp_path) == []  # nothing left behind
    path = write_rtdose(tmp_path / "r.dcm", dose)
    with pytest.raises(voxeldose.InputError, match="already exists"):
        write_rtdose(path, dose)
    write_rtdose(path, dose, overwrite=True)


def test_rtdose_without_frame_of_reference_warns(tmp_path):
    dose = _dose(meta=ImageMeta())
    with pytest.warns(voxeldose.VoxelDoseWarning, match="will not register"):
        ds = pydicom.dcmread(write_rtdose(tmp_path / "r.dcm", dose))
    assert ds.FrameOfReferenceUID


def test_load_image_does_not_take_an_rtdose(tmp_path):
    write_rtdose(tmp_path / "rtdose.dcm", _dose())
    with pytest.raises(voxeldose.VoxelDoseError):
        voxeldose.load_image(tmp_path)


#: dciodvfy's remarks we accept, each explained:
ACCEPTED_DCIODVFY_WARNINGS = (
    # dicom3tools 2022 predates the defined term PLAN_OVERVIEW (see results)
    "Warning - Unrecognized defined term <PLAN_OVERVIEW> for value 1 of attribute <Dose Summation Type>",
)
#: ... and in an anonymized file, where these attributes are empty on purpose (Type 2, allowed):
ACCEPTED_WHEN_ANONYMIZED = (
    "Warning - Missing attribute or value that would be needed to build DICOMDIR - Study Date",
    "Warning - Missing attribute or value that would be needed to build DICOMDIR - Study Time",
    "Warning - Missing attribute or value that would be needed to build DICOMDIR - Study ID",
    # the case id is a valid one-component name (family name only); dciodvfy expects a caret
    "Warning - Value dubious for this VR - (0x0010,0x0010) PN Patient's Name  PN [1] = <tare-017> "
    "- Retired Person Name form",
)


@requires_dciodvfy
@pytest.mark.parametrize("case", ["identity", "oblique", "left_handed", "anonymized", "negative"])
def test_rtdose_passes_dciodvfy(tmp_path, case):
    dose = _dose(DIRECTIONS.get(case, np.eye(3)))
    kwargs = {"anonymize": True, "case_id": "tare-017"} if case == "anonymized" else {}
    if case == "negative":
        dose = dose.with_array(dose.array - 20.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", voxeldose.VoxelDoseWarning)
        path = write_rtdose(tmp_path / "rtdose.dcm", dose, reference=dose, **kwargs)
    lines = _dciodvfy(path)
    errors = [ln for ln in lines if ln.startswith("Error")]
    assert not errors, "\n".join(lines)
    accepted = ACCEPTED_DCIODVFY_WARNINGS + (ACCEPTED_WHEN_ANONYMIZED if case == "anonymized" else ())
    unexpected = [ln for ln in lines if ln.startswith("Warning") and ln not in accepted]
    assert not unexpected, "\n".join(lines)


# --------------------------------------------------------------------------- DVH CSV


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        # the columns say they are cumulative (the fraction and volume receiving at least the dose)
        assert tuple(reader.fieldnames or ()) == DVH_CSV_COLUMNS == (
            "voi", "dose_gy", "cumulative_volume_fraction", "cumulative_volume_ml", "density_g_per_cm3")
        return list(reader)


def test_dvh_csv_uniform_dose(tmp_path):
    dose = np.full((3, 4, 5), 50.0)
    h = voxeldose.dvh_array(dose, np.ones(dose.shape, bool), spacing_xyz_mm=(2, 2, 2), name="liver")
    path = write_dvh_csv(tmp_path / "dvh.csv", {"liver": h}, n_points=11)
    rows = _read_csv(path)
    assert [float(r["dose_gy"]) for r in rows] == pytest.approx(np.linspace(0, 50, 11))
    assert {r["voi"] for r in rows} == {"liver"}
    for r in rows:  # uniform 50 Gy: the whole VOI receives at least every dose up to 50 Gy, none above
        assert float(r["cumulative_volume_fraction"]) == (1.0 if float(r["dose_gy"]) <= 50 else 0.0)
        assert float(r["cumulative_volume_ml"]) == pytest.approx(float(r["cumulative_volume_fraction"]) * 60 * 8e-3)
        assert float(r["density_g_per_cm3"]) == 1.04
    assert path.read_bytes().count(b"\r") == 0 and os.listdir(tmp_path) == ["dvh.csv"]


def test_dvh_csv_several_vois_match_the_dvh(tmp_path):
    rng = np.random.default_rng(1)
    dose = rng.gamma(3.0, 30.0, (8, 9, 10))
    mask = np.zeros(dose.shape)
    mask[2:6, 2:7, 3:8] = 1.0
    mask[2, 2:7, 3:8] = 0.5  # partial volumes
    dvhs = {"tumour, segment 4": voxeldose.dvh_array(dose, mask, spacing_xyz_mm=(4, 4, 4)),
            "liver": voxeldose.dvh_array(dose, np.ones(dose.shape, bool), spacing_xyz_mm=(4, 4, 4))}
    rows = _read_csv(write_dvh_csv(tmp_path / "dvh.csv", dvhs, n_points=101))
    assert [r["voi"] for r in rows] == ["tumour, segment 4"] * 101 + ["liver"] * 101  # quoted comma survives
    for name, h in dvhs.items():
        got = np.array([[float(r[c]) for c in DVH_CSV_COLUMNS[1:4]] for r in rows if r["voi"] == name])
        g, f = h.curve(101)
        # 9 significant digits in the file: relative 5e-9
        np.testing.assert_allclose(got[:, 0], g, rtol=1e-8)
        np.testing.assert_allclose(got[:, 1], f, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(got[:, 2], f * h.volume_ml, rtol=1e-8, atol=1e-12)
        assert np.all(np.diff(got[:, 1]) <= 0) and got[0, 1] == 1.0  # cumulative: non-increasing from 1
        # the fraction at each dose is the DVH's own v(g) / 100
        assert got[50, 1] == pytest.approx(h.v(g[50]) / 100, rel=1e-8)


def test_dvh_csv_refuses_to_overwrite_and_checks_values(tmp_path):
    h = voxeldose.dvh_array(np.ones((2, 2, 2)), np.ones((2, 2, 2), bool), spacing_xyz_mm=(1, 1, 1))
    path = write_dvh_csv(tmp_path / "dvh.csv", {"a": h})
    with pytest.raises(voxeldose.InputError, match="already exists"):
        write_dvh_csv(path, {"b": h})
    assert _read_csv(path)[0]["voi"] == "a"
    assert _read_csv(write_dvh_csv(path, {"b": h}, overwrite=True))[0]["voi"] == "b"
    with pytest.raises(voxeldose.InputError, match="VOI 'c' is a dict, not a DVH"):
        write_dvh_csv(tmp_path / "other.csv", {"c": {}})
    assert os.listdir(tmp_path) == ["dvh.csv"]


# --------------------------------------------------------------------------- metrics JSON


def test_metrics_json_conversions(tmp_path):
    h = voxeldose.dvh_array(np.arange(8.0).reshape(2, 2, 2), np.ones((2, 2, 2)), spacing_xyz_mm=(10, 10, 10))
    data = {"vois": voi_metrics({"a": h}), "nan": float("nan"), "inf": np.float32(np.inf), "neg_inf": -math.inf,
            "when": dt.datetime(2026, 1, 2, 3, 4), "day": dt.date(2026, 1, 2), "arr": np.arange(3),
            "n": np.int64(4), "flag": np.bool_(True), "pair": (1.5, np.nan), "path": Path("/x/y"),
            "z_first": 1, "a_last": 2, 7: "int key"}
    path = write_metrics_json(tmp_path / "metrics.json", data)
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)
    assert back["nan"] is None and back["inf"] is None and back["neg_inf"] is None and back["pair"] == [1.5, None]
    assert back["when"] == "2026-01-02T03:04:00" and back["day"] == "2026-01-02" and back["arr"] == [0, 1, 2]
    assert back["n"] == 4 and back["flag"] is True and back["path"] == "/x/y" and back["7"] == "int key"
    assert list(back)[-3:] == ["z_first", "a_last", "7"]  # insertion order, not sorted
    assert back["vois"]["a"]["mass_g"] == pytest.approx(8.0 * 1.04)  # 8 mL of soft tissue
    assert list(back["vois"]["a"])[:6] == ["volume_ml", "mass_g", "density_g_per_cm3", "mean_gy", "min_gy", "max_gy"]
    assert back["vois"]["a"] == pytest.approx(voi_metrics({"a": h})["a"])


def test_metrics_json_refuses_what_it_cannot_write(tmp_path):
    path = tmp_path / "metrics.json"
    with pytest.raises(voxeldose.InputError, match=r"metrics\['vois'\]\['a'\] is a set"):
        write_metrics_json(path, {"vois": {"a": {1, 2}}})
    with pytest.raises(voxeldose.InputError, match="keys must be strings"):
        write_metrics_json(path, {(1, 2): 3})
    assert not path.exists()  # nothing written
    write_metrics_json(path, {"a": 1})
    with pytest.raises(voxeldose.InputError, match="already exists"):
        write_metrics_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    write_metrics_json(path, {"a": 2}, overwrite=True)
    assert json.loads(path.read_text()) == {"a": 2}


# --------------------------------------------------------------------------- dicompyler-core

#: dicompyler-core 0.5.6 needs pydicom 2.x, so it runs in a virtualenv of its own. Binary wheels
#: only (quick, and no compiler needed); these versions install on CPython 3.9-3.12.
DICOMPYLER_REQUIREMENTS = ("dicompyler-core==0.5.6", "pydicom==2.4.5", "numpy>=1.24,<2", "matplotlib>=3.7,<3.9")


def _cache_dir() -> Path:
    return Path(os.environ.get("VOXELDOSE_TEST_CACHE", Path.home() / ".cache" / "voxeldose-test"))


def _dicompyler_python() -> Path:
    """The python of a virtualenv with dicompyler-core, made once per requirements and interpreter.

    Made under a lock, in a folder beside its final one, and renamed when dicompyler-core
    imports, so an interrupted or concurrent run never uses a half-made one. Skips the test
    when it cannot be made (no package index, no wheels for this Python).
    """
    fcntl = pytest.importorskip("fcntl", reason="the dicompyler-core cache lock needs POSIX fcntl")
    key = hashlib.sha256("\n".join((sys.version, *DICOMPYLER_REQUIREMENTS)).encode()).hexdigest()[:10]
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
    cache = _cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        pytest.skip(f"cannot create {cache} for the dicompyler-core virtualenv ({exc}); set VOXELDOSE_TEST_CACHE")
    venv = cache / f"dicompyler-core-0.5.6-{tag}-{key}"
    python = venv / "bin" / "python"
    with open(cache / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one run builds, the others wait and reuse
        if (venv / "complete").is_file() and python.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)  # half-made by a run that was killed
        staging = cache / f"{venv.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True, capture_output=True, timeout=300)
            pip = [str(staging / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                   "--only-binary=:all:", "--retries", "1", "--timeout", "30", *DICOMPYLER_REQUIREMENTS]
            proc = subprocess.run(pip, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                pytest.skip(f"could not pip-install {' '.join(DICOMPYLER_REQUIREMENTS)} into a virtualenv "
                            f"(no package index reachable, or no wheels for this Python?): {tail}")
            check = subprocess.run([str(staging / "bin" / "python"), "-c", "import dicompylercore.dvhcalc"],
                                   capture_output=True, text=True, timeout=300)
            assert check.returncode == 0, f"dicompyler-core installed but does not import:\n{check.stderr}"
            (staging / "complete").write_text("\n".join(DICOMPYLER_REQUIREMENTS) + "\n")
            # bin/python links to the base interpreter and finds its site-packages from its own
            # place, so the venv works after the rename (pip's scripts do not: not used)
            staging.rename(venv)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return python


def test_dicompyler_core_reads_our_rtdose_and_agrees(tmp_path, liver_export):
    python = _dicompyler_python()
    case = liver_export[0]
    pet = voxeldose.load_image(case / "PET")
    activity = voxeldose.calibrate(pet, voxeldose.load_case(case / "case.toml"))
    dose = voxeldose.absorbed_dose(activity.image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", voxeldose.VoxelDoseWarning)  # noise may give negative doses
        rtdose = write_rtdose(tmp_path / "rtdose.dcm", dose, reference=pet)
    vois = voxeldose.load_vois(case / "RTSTRUCT.dcm", pet)
    script = Path(__file__).with_name("dicompyler_check.py")
    proc = subprocess.run([str(python), str(script), str(rtdose), str(case / "RTSTRUCT.dcm")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout)
    compared = []
    for name, mask in vois.items():
        ours = voxeldose.dvh(dose, mask)
        if ours.volume_ml < 50:
            continue
        # the criterion: mean dose within 2 % for VOIs over 50 mL. dicompyler-core
        # rasterises each contour at the dose grid's voxel centres and bins the dose in 0.01 Gy,
        # we weight partial volumes; the difference is a boundary effect that shrinks with size
        assert theirs[name] is not None, name
        assert theirs[name] == pytest.approx(ours.mean_gy, rel=0.02), name
        compared.append(name)
    assert len(compared) >= 3, compared  # the phantom: liver, lung and tumour_1
