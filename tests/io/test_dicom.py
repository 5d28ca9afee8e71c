"""DICOM images in: PET series, Enhanced PET, NM SPECT, CT; geometry against SimpleITK; errors."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import voxeldose
from voxeldose.image import Image
from voxeldose.io.dicom import list_series, load_image
from voxeldose.io.series import (
    SeriesHeader,
    write_ct_series,
    write_nm_spect,
    write_pet_series,
)

ADMIN = dt.datetime(2026, 1, 15, 10, 0, 0)
SCAN = dt.datetime(2026, 1, 16, 6, 30, 0)


def _rotation(ax_deg: float, az_deg: float) -> np.ndarray:
    a, b = np.deg2rad(ax_deg), np.deg2rad(az_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rx @ rz


DIRECTIONS = {
    "head-first axial": np.eye(3),
    "feet-first axial": np.diag([1.0, -1.0, -1.0]),
    "oblique": _rotation(17.0, 25.0),
}


def _image(shape=(9, 11, 13), spacing=(2.5, 3.0, 4.0), direction=np.eye(3), seed=0, scale=5e4):
    rng = np.random.default_rng(seed)
    arr = rng.gamma(2.0, scale / 2, shape)
    return Image(arr, spacing, (-40.0, 25.0, 110.0), tuple(np.asarray(direction).reshape(-1)), "BQML")


def _write_pet(folder, image, **kw):
    header = kw.pop("header", None) or SeriesHeader(acquisition_datetime=SCAN, series_datetime=SCAN)
    args = dict(radiopharmaceutical_start=ADMIN, total_dose_bq=3.0e9, half_life_s=64.1 * 3600,
                positron_fraction=31.86e-6, decay_factor=1.0)
    args.update(kw)
    return write_pet_series(folder, image, header, **args)


def _sitk_series(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    # float32: by default the reader takes the first file's pixel type (int16 when its slope is 1)
    reader.SetOutputPixelType(sitk.sitkFloat32)
    return reader.Execute()


def _assert_same_world(loaded: Image, expected: Image, rtol: float):
    """Same voxel values at the same patient positions (the grids may run in opposite directions)."""
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float)
    corners *= np.array(expected.size_xyz) - 1
    idx = np.rint(loaded.world_to_index(expected.index_to_world(corners))).astype(int)
    assert np.allclose(loaded.index_to_world(idx), expected.index_to_world(corners), atol=1e-3)
    for (i, j, k), (ei, ej, ek) in zip(idx, corners.astype(int)):
        assert loaded.array[k, j, i] == pytest.approx(expected.array[ek, ej, ei], rel=rtol, abs=rtol * expected.array.max())


# --------------------------------------------------------------------------- PET classic


@pytest.mark.parametrize("orientation", list(DIRECTIONS))
def test_pet_series_any_file_order_matches_simpleitk(tmp_path, orientation):
    image = _image(direction=DIRECTIONS[orientation])
    _write_pet(tmp_path, image)  # shuffled file names, unrelated to slice order
    loaded = load_image(tmp_path)
    # int16 storage with a slope per slice: quantisation step = slice max / 32000
    assert loaded.units == "BQML"
    assert loaded.shape == image.shape
    assert loaded.same_grid(image, tol_mm=1e-3)
    np.testing.assert_allclose(loaded.array, image.array, rtol=0, atol=image.array.max() / 32000)
    # the independent reader agrees on geometry and values
    ref = _sitk_series(tmp_path)
    assert ref.GetSize() == loaded.size_xyz
    np.testing.assert_allclose(ref.GetOrigin(), loaded.origin_mm, atol=1e-3)
    np.testing.assert_allclose(ref.GetSpacing(), loaded.spacing_mm, atol=1e-4)
    np.testing.assert_allclose(ref.GetDirection(), loaded.direction, atol=1e-5)
    np.testing.assert_allclose(sitk.GetArrayFromImage(ref), loaded.array, rtol=1e-5, atol=1e-3)


def test_pet_metadata(tmp_path):
    header = SeriesHeader(acquisition_datetime=SCAN, series_datetime=SCAN, series_description="Y90 PET",
                          patient_name="Doe^Jane")
    _write_pet(tmp_path, _image(), header=header, decay_correction="START", decay_factor=1.0023,
               frame_duration_s=1200)
    meta = load_image(tmp_path).meta
    assert meta.modality == "PT"
    assert meta.acquisition_datetime == SCAN and meta.series_datetime == SCAN
    assert meta.radiopharmaceutical_start_datetime == ADMIN
    assert meta.decay_correction == "START" and meta.decay_factor == pytest.approx(1.0023)
    assert meta.frame_duration_s == pytest.approx(1200)
    assert meta.radionuclide_half_life_s == pytest.approx(64.1 * 3600)
    assert meta.radionuclide_positron_fraction == pytest.approx(31.86e-6)
    assert meta.radionuclide_code == "C-162A7" and "Yttrium" in meta.radionuclide
    assert meta.radionuclide_total_dose_bq == pytest.approx(3e9)
    assert meta.series_description == "Y90 PET"
    assert meta.frame_of_reference_uid == header.frame_of_reference_uid
    assert len(meta.source_files) == 9
    # identifiers are kept for the outputs but not shown in the repr (logs)
    assert meta.identifiers["PatientName"] == "Doe^Jane"
    assert "Doe" not in repr(meta)


def test_start_time_without_date_is_kept_as_a_time_of_day(tmp_path):
    paths = _write_pet(tmp_path, _image(shape=(3, 4, 5)))
    for p in paths:
        ds = pydicom.dcmread(p)
        del ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
        ds.save_as(p)
    meta = load_image(tmp_path).meta
    # RadiopharmaceuticalStartTime (TM) has no date. It was put on the series date, as SUV tools
    # do, which for a next-day scan made every activity 23 % low without a word: the loader keeps
    # the time of day and calibration decides (tests/test_calibrate.py)
    assert meta.radiopharmaceutical_start_datetime is None
    assert meta.radiopharmaceutical_start_time == ADMIN.time()


@pytest.mark.parametrize("compression", ["rle", "jpeg-ls", "jpeg2000", "deflate"])
def test_compressed_transfer_syntaxes(tmp_path, compression):
    image = _image(shape=(4, 64, 48))  # JPEG 2000 needs tiles larger than its resolution levels
    paths = _write_pet(tmp_path, image, compression=compression)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID != pydicom.uid.ExplicitVRLittleEndian
    loaded = load_image(tmp_path)
    np.testing.assert_allclose(loaded.array, image.array, rtol=0, atol=image.array.max() / 32000)


def test_list_of_files_and_single_file(tmp_path):
    image = _image(shape=(4, 5, 6))
    paths = _write_pet(tmp_path, image)
    loaded = load_image([str(p) for p in reversed(paths)])
    assert loaded.same_grid(image)
    with pytest.raises(voxeldose.GeometryError, match="single slice"):
        load_image(paths[0])


# --------------------------------------------------------------------------- Enhanced PET


def _enhanced_from_classic(paths, out, frame_timing=None):
    """An Enhanced PET Image (multi-frame, functional groups) holding the classic series;
    ``frame_timing(i)`` -> (start datetime, duration ms, DecayFactor) of the slice of ``paths[i]``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    slices = [pydicom.dcmread(p) for p in paths]
    rng = np.random.default_rng(3)
    order = rng.permutation(len(slices))  # frames stored in no particular order
    first = slices[0]
    ds = Dataset()
    for kw in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyTime", "SeriesInstanceUID",
               "SeriesDate", "SeriesTime", "FrameOfReferenceUID", "RadiopharmaceuticalInformationSequence",
               "Manufacturer", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
               "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        setattr(ds, kw, getattr(first, kw))
    ds.Modality = "PT"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.130"
    ds.SOPInstanceUID = generate_uid()
    ds.NumberOfFrames = len(slices)
    ds.AcquisitionDateTime = SCAN.strftime("%Y%m%d%H%M%S")
    ds.DecayCorrected = "YES"
    ds.DecayCorrectionDateTime = SCAN.strftime("%Y%m%d%H%M%S")
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = first.PixelSpacing
    measures.SliceThickness = first.SliceThickness
    shared.PixelMeasuresSequence = [measures]
    orient = Dataset()
    orient.ImageOrientationPatient = first.ImageOrientationPatient
    shared.PlaneOrientationSequence = [orient]
    rwv = Dataset()
    unit = Dataset()
    unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "Bq/ml", "UCUM", "Becquerels/milliliter"
    rwv.MeasurementUnitsCodeSequence = [unit]
    shared.RealWorldValueMappingSequence = [rwv]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames, pixels = [], []
    for i in order:
        s = slices[i]
        f = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = s.ImagePositionPatient
        f.PlanePositionSequence = [pos]
        tr = Dataset()
        tr.RescaleSlope, tr.RescaleIntercept, tr.RescaleType = s.RescaleSlope, s.RescaleIntercept, "BQML"
        f.PixelValueTransformationSequence = [tr]
        if frame_timing is not None:
            start, duration_ms, decay_factor = frame_timing(i)
            content = Dataset()
            content.FrameAcquisitionDateTime = start.strftime("%Y%m%d%H%M%S")
            content.FrameAcquisitionDuration = duration_ms
            f.FrameContentSequence = [content]
            corr = Dataset()
            corr.DecayFactor = decay_factor
            f.PETFrameCorrectionFactorsSequence = [corr]
        frames.append(f)
        pixels.append(s.pixel_array)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.stack(pixels).astype(np.int16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(out, enforce_file_format=True)


def test_enhanced_pet_equals_the_classic_series(tmp_path):
    image = _image(direction=DIRECTIONS["oblique"])
    paths = _write_pet(tmp_path / "classic", image)
    classic = load_image(tmp_path / "classic")
    _enhanced_from_classic(paths, tmp_path / "enhanced.dcm")
    enhanced = load_image(tmp_path / "enhanced.dcm")
    assert enhanced.same_grid(classic)
    np.testing.assert_array_equal(enhanced.array, classic.array)
    assert enhanced.units == "BQML"
    assert enhanced.meta.decay_correction == "START" and enhanced.meta.series_datetime == SCAN
    assert enhanced.meta.slice_acquisition_datetimes == ()  # one bed: no per-slice timing


def test_per_slice_timing_of_a_two_bed_pet(tmp_path):
    # the upper half of the slices acquired 10 min later: per-slice start, duration and
    # DecayFactor come out in the array's z order, from classic files and from the frames of an
    # Enhanced PET stored in shuffled order; the series-level values are the earliest slice's
    image = _image()
    paths = _write_pet(tmp_path / "classic", image)
    n = len(paths)
    k_of = {p: int(round((float(pydicom.dcmread(p).ImagePositionPatient[2]) - image.origin_mm[2])
                         / image.spacing_mm[2])) for p in paths}

    def timing(i):
        late = k_of[paths[i]] >= n // 2
        return SCAN + dt.timedelta(minutes=10 * late), 600000.0 - 1000.0 * late, 1.0 + 0.25 * late

    for i, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        start, duration_ms, factor = timing(i)
        ds.AcquisitionDate, ds.AcquisitionTime = start.strftime("%Y%m%d"), start.strftime("%H%M%S")
        ds.ActualFrameDuration, ds.DecayFactor = int(duration_ms), factor
        ds.save_as(p)
    _enhanced_from_classic(paths, tmp_path / "enhanced.dcm", frame_timing=timing)
    expected_starts = tuple(SCAN + dt.timedelta(minutes=10 * (k >= n // 2)) for k in range(n))
    for loaded in (load_image(tmp_path / "classic"), load_image(tmp_path / "enhanced.dcm")):
        assert loaded.meta.slice_acquisition_datetimes == expected_starts
        assert loaded.meta.slice_decay_factors == tuple(1.0 + 0.25 * (k >= n // 2) for k in range(n))
        assert loaded.meta.slice_frame_durations_s == tuple(600.0 - (k >= n // 2) for k in range(n))
        assert loaded.meta.decay_factor == 1.0 and loaded.meta.frame_duration_s == 600.0


# --------------------------------------------------------------------------- NM and CT


@pytest.mark.parametrize("orientation", list(DIRECTIONS))
@pytest.mark.parametrize("sign", [1, -1])
def test_nm_spect_multiframe(tmp_path, orientation, sign):
    image = Image(np.random.default_rng(1).integers(0, 3000, (10, 12, 14)).astype(float), (4.42, 4.42, 4.42),
                  (-100.0, -80.0, 50.0), tuple(DIRECTIONS[orientation].reshape(-1)), "CNTS")
    path = write_nm_spect(tmp_path / "spect.dcm", image, SeriesHeader(acquisition_datetime=SCAN),
                          radiopharmaceutical_start=ADMIN, spacing_between_slices_sign=sign)
    loaded = load_image(path)
    assert loaded.units == "CNTS" and loaded.meta.modality == "NM"
    assert loaded.meta.acquisition_datetime == SCAN
    assert loaded.spacing_mm == pytest.approx(image.spacing_mm)
    _assert_same_world(loaded, image, rtol=0)
    if sign > 0:
        # SimpleITK reads NM multi-frame geometry from the same attributes
        ref = sitk.ReadImage(str(path))
        np.testing.assert_allclose(ref.GetOrigin(), loaded.origin_mm, atol=1e-3)
        np.testing.assert_allclose(ref.GetDirection(), loaded.direction, atol=1e-5)
        np.testing.assert_allclose(sitk.GetArrayFromImage(ref), loaded.array)


def test_nm_projections_are_refused(tmp_path):
    image = Image(np.ones((4, 5, 6)), (4.42,) * 3, units="CNTS")
    path = write_nm_spect(tmp_path / "p.dcm", image, SeriesHeader(), radiopharmaceutical_start=None)
    ds = pydicom.dcmread(path)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMO", "EMISSION"]
    ds.save_as(path)
    with pytest.raises(voxeldose.DicomError, match="RECON TOMO"):
        load_image(path)


def _nm_pair(tmp_path, **kwargs):
    """The same counts written as a Y-90 (default) and as a Tc-99m SPECT."""
    image = Image(np.random.default_rng(3).integers(0, 3000, (6, 7, 8)).astype(float), (4.42,) * 3, units="CNTS")
    header = SeriesHeader(acquisition_datetime=SCAN)
    y90 = write_nm_spect(tmp_path / "y90.dcm", image, header, radiopharmaceutical_start=ADMIN, **kwargs)
    tc = write_nm_spect(tmp_path / "tc.dcm", image, header, radiopharmaceutical_start=ADMIN, nuclide="Tc-99m",
                        radiopharmaceutical="Tc-99m MAA", **kwargs)
    return y90, tc


def _nm_nuclide_attributes(path):
    ds = pydicom.dcmread(path)
    window = ds.EnergyWindowInformationSequence[0]
    rng = window.EnergyWindowRangeSequence[0]
    item = ds.RadiopharmaceuticalInformationSequence[0]
    code = item.RadionuclideCodeSequence[0]
    return {"window": (float(rng.EnergyWindowLowerLimit), float(rng.EnergyWindowUpperLimit), window.EnergyWindowName),
            "agent": item.Radiopharmaceutical, "half_life_s": item.get("RadionuclideHalfLife"),
            "code": (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning)}


def test_nm_spect_y90_is_the_default_and_unchanged(tmp_path):
    # what the writer wrote before it took a nuclide (byte for byte, checked once against the
    # previous writer with fixed UIDs): the bremsstrahlung window, the Y-90 code, no half-life
    image, header = Image(np.ones((3, 4, 5)), (4.42,) * 3, units="CNTS"), SeriesHeader()
    default = write_nm_spect(tmp_path / "a.dcm", image, header, radiopharmaceutical_start=ADMIN)
    y90 = write_nm_spect(tmp_path / "b.dcm", image, header, radiopharmaceutical_start=ADMIN, nuclide="Y-90")
    assert _nm_nuclide_attributes(default) == _nm_nuclide_attributes(y90) == {
        "window": (90.0, 125.0, "BREMS"), "agent": "Y-90 microspheres", "half_life_s": None,
        "code": ("C-162A7", "SRT", "^90^Yttrium")}
    a, b = pydicom.dcmread(default), pydicom.dcmread(y90)
    assert [e.tag for e in a] == [e.tag for e in b]
    assert all(a[t].value == b[t].value for t in (e.tag for e in a) if t != 0x00080018)  # but the SOPInstanceUID


def test_nm_spect_tc99m_names_its_nuclide_and_photopeak_window(tmp_path):
    from voxeldose.nuclides import TC99M, nuclide_of_code

    _, tc = _nm_pair(tmp_path)
    # 140.5 keV +- 10 % (a 20 % photopeak window); the code of DICOM CID 18; ICRP-107's half-life
    assert _nm_nuclide_attributes(tc) == {
        "window": (pytest.approx(126.45, abs=1e-9), pytest.approx(154.55, abs=1e-9), "Tc-99m 140.5 keV"),
        "agent": "Tc-99m MAA", "half_life_s": pytest.approx(6.015 * 3600),
        "code": ("C-163A8", "SRT", "^99m^Technetium")}
    loaded = load_image(tc)
    assert loaded.units == "CNTS" and loaded.meta.modality == "NM"
    assert nuclide_of_code(loaded.meta.radionuclide_code) == "Tc-99m" and loaded.meta.radionuclide == TC99M.code_meaning
    assert loaded.meta.radionuclide_half_life_s == pytest.approx(TC99M.half_life_s)
    assert loaded.meta.radiopharmaceutical == "Tc-99m MAA"


def test_nm_spect_refuses_a_nuclide_it_does_not_write(tmp_path):
    image = Image(np.ones((3, 4, 5)), (4.42,) * 3, units="CNTS")
    with pytest.raises(voxeldose.InputError, match="nuclide 'F-18' is not one it writes; choose one of Y-90, Tc-99m"):
        write_nm_spect(tmp_path / "f.dcm", image, SeriesHeader(), radiopharmaceutical_start=None, nuclide="F-18")
    assert not (tmp_path / "f.dcm").exists()


#: dciodvfy's one remark on a Tc-99m SPECT that a Y-90 one does not get: dicom3tools' NM Isotope
#: Module lists no Radionuclide Half Life in the Radiopharmaceutical Information Sequence (the PET
#: one does); it is a standard attribute (PS3.6), kept so that a reader knows the nuclide's decay,
#: and makes the file a Standard Extended SOP Class, as RadiopharmaceuticalStartDateTime already does.
TC99M_EXTRA_WARNING = ("Warning - Attribute is not present in standard DICOM IOD - (0x0018,0x1075) DS Radionuclide "
                       "Half Life")


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not installed")
def test_nm_spect_tc99m_adds_no_dciodvfy_error(tmp_path):
    import subprocess

    def report(path):
        proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        assert "NMImage" in lines, lines  # it recognised the IOD
        return lines

    y90, tc = (report(p) for p in _nm_pair(tmp_path))
    errors = sorted(ln for ln in tc if ln.startswith("Error"))
    # the Y-90 writer's errors (missing Type 2 NM acquisition attributes a synthetic phantom does not
    # have) are its own; the Tc-99m file has those and no other
    assert errors == sorted(ln for ln in y90 if ln.startswith("Error")), "\n".join(tc)
    assert sorted(set(tc) - set(y90)) == [TC99M_EXTRA_WARNING], "\n".join(tc)


def test_ct_series(tmp_path):
    hu = Image(np.random.default_rng(2).integers(-1000, 1500, (6, 7, 8)).astype(float), (0.98, 0.98, 2.5),
               (-250.0, -250.0, -100.0), units="HU")
    write_ct_series(tmp_path, hu, SeriesHeader())
    loaded = load_image(tmp_path)
    assert loaded.units == "HU"
    np.testing.assert_array_equal(loaded.array, hu.array)
    assert loaded.same_grid(hu)


# --------------------------------------------------------------------------- folders and errors


def test_several_series_need_a_choice(tmp_path):
    a = SeriesHeader(series_description="PET AC", acquisition_datetime=SCAN)
    b = SeriesHeader(series_description="CT 5mm")
    _write_pet(tmp_path / "pet", _image(shape=(3, 4, 5)), header=a)
    write_ct_series(tmp_path / "ct", Image(np.zeros((4, 4, 4)), (1, 1, 1), units="HU"), b)
    (tmp_path / "notes.txt").write_text("not DICOM")
    series = {s.series_instance_uid: s for s in list_series(tmp_path)}
    assert set(series) == {a.series_instance_uid, b.series_instance_uid}
    assert series[a.series_instance_uid].n_files == 3 and series[a.series_instance_uid].modality == "PT"
    with pytest.raises(voxeldose.DicomError) as exc:
        load_image(tmp_path)
    message = str(exc.value)
    for text in (a.series_instance_uid, b.series_instance_uid, "PET AC", "CT 5mm", "series_uid", "3 file(s)"):
        assert text in message
    assert load_image(tmp_path, series_uid=b.series_instance_uid).units == "HU"
    with pytest.raises(voxeldose.DicomError, match="no series with"):
        load_image(tmp_path, series_uid="1.2.3")


def test_non_image_objects_are_skipped(tmp_path):
    _write_pet(tmp_path, _image(shape=(3, 4, 5)))
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rs = Dataset()
    rs.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    rs.SOPInstanceUID = generate_uid()
    rs.Modality = "RTSTRUCT"
    rs.SeriesInstanceUID = generate_uid()
    rs.file_meta = FileMetaDataset()
    rs.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    rs.file_meta.MediaStorageSOPClassUID = rs.SOPClassUID
    rs.file_meta.MediaStorageSOPInstanceUID = rs.SOPInstanceUID
    rs.save_as(tmp_path / "rtstruct.dcm", enforce_file_format=True)
    assert load_image(tmp_path).shape == (3, 4, 5)


def test_missing_slice_is_an_error_naming_the_gap(tmp_path):
    paths = _write_pet(tmp_path, _image(shape=(8, 4, 5)), names="ordered")
    paths[4].unlink()
    with pytest.raises(voxeldose.GeometryError) as exc:
        load_image(tmp_path)
    message = str(exc.value)
    assert "missing slice" in message and "IM00004.dcm" in message and "IM00006.dcm" in message
    assert isinstance(exc.value, voxeldose.VoxelDoseError)


def test_slightly_uneven_positions_within_tolerance_are_accepted(tmp_path):
    paths = _write_pet(tmp_path, _image(shape=(5, 4, 5)), names="ordered")
    ds = pydicom.dcmread(paths[2])
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 0.005  # rounding in exports
    ds.save_as(paths[2])
    assert load_image(tmp_path).spacing_mm[2] == pytest.approx(4.0, abs=0.01)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda ds: setattr(ds, "ImageOrientationPatient", [0, 1, 0, 0, 0, -1]), ["ImageOrientationPatient", "differs"]),
        (lambda ds: setattr(ds, "PixelSpacing", [2.0, 2.0]), ["PixelSpacing", "differs"]),
        (lambda ds: setattr(ds, "ImagePositionPatient", [0, 0, 110.0]), ["same position", "duplicates"]),
        (lambda ds: delattr(ds, "ImagePositionPatient"), ["ImagePositionPatient", "missing"]),
    ],
)
def test_inconsistent_slices(tmp_path, change, words):
    image = Image(np.ones((4, 5, 6)), (3.0, 3.0, 3.0), (0.0, 0.0, 110.0), units="BQML")
    paths = _write_pet(tmp_path, image, names="ordered")
    ds = pydicom.dcmread(paths[1])
    change(ds)
    ds.save_as(paths[1])
    with pytest.raises(voxeldose.VoxelDoseError) as exc:
        load_image(tmp_path)
    for word in words:
        assert word in str(exc.value)


def test_truncated_file_names_the_file(tmp_path):
    paths = _write_pet(tmp_path, _image(shape=(4, 16, 16)), names="ordered")
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 200])  # pixel data cut short
    with pytest.raises(voxeldose.DicomError) as exc:
        load_image(tmp_path)
    assert "IM00003.dcm" in str(exc.value)


def test_a_header_scan_reads_no_pixel_data_and_still_finds_a_cut_slice(tmp_path):
    """Slices of 64 x 64 x 2 bytes: over the 4 kB from which pixel data is deferred. Listing the
    series leaves every slice's pixel data in its file (none read), yet a slice cut short inside
    its pixel data is refused by name, as the load refuses it."""
    from voxeldose.io.dicom import _read_header

    paths = _write_pet(tmp_path, _image(shape=(4, 64, 64)), names="ordered")
    ds = _read_header(paths[1])
    raw = ds.get_item(0x7FE00010, keep_deferred=True)
    assert raw.value is None and raw.length == 64 * 64 * 2  # deferred, not read
    assert list_series(tmp_path)[0].n_files == 4
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 200])  # inside the pixel data
    for read in (list_series, load_image):
        with pytest.raises(voxeldose.DicomError, match=r"IM00003\.dcm: the DICOM file is truncated in .*7FE0.*"
                                                       r"7992 of 8192 bytes"):
            read(tmp_path)


def test_shared_reads_parse_a_file_once_and_again_when_it_changed(tmp_path):
    import threading

    from voxeldose.io._dicom_common import _SHARED, read_dicom, shared_reads

    paths = _write_pet(tmp_path, _image(shape=(3, 64, 64)), names="ordered")
    assert read_dicom(paths[0]) is not read_dicom(paths[0])  # outside a scope: a new parse each time
    with shared_reads():
        first = read_dicom(paths[0])
        assert read_dicom(paths[0]) is first
        assert read_dicom(paths[0], pixels=False) is not first  # other kinds of reads are not shared
        in_thread = []
        worker = threading.Thread(target=lambda: in_thread.append(read_dicom(paths[0])))
        worker.start()
        worker.join()
        assert in_thread[0] is not first  # each thread has its own
        with shared_reads():
            assert read_dicom(paths[0]) is first  # an inner scope shares the outer one's reads
        assert read_dicom(paths[0]) is not first  # ... and its end forgets them
        again = read_dicom(paths[1])
        ds = pydicom.dcmread(paths[1])
        ds.SeriesDescription = "changed"
        ds.save_as(paths[1])
        changed = read_dicom(paths[1])
        assert changed is not again and changed.SeriesDescription == "changed"
    assert _SHARED.get() is None


def test_images_loaded_from_shared_reads_are_those_read_alone(tmp_path):
    """A case folder holding the PET and the CT, as a batch worker reads it: the series listed,
    the PET loaded from the folder, then the CT from its files, each file parsed once. Every
    value, the geometry and the metadata are those of loading each alone."""
    from voxeldose.io._dicom_common import shared_reads
    from voxeldose.phantoms.export import write_liver_case

    write_liver_case(tmp_path, pet_spacing_xyz_mm=(8.0, 8.0, 8.0), ct_spacing_xyz_mm=(8.0, 8.0, 8.0),
                     write=("PET", "CT"))
    series = {s.modality: s for s in list_series(tmp_path)}
    alone = load_image(tmp_path, series["PT"].series_instance_uid), load_image(list(series["CT"].files))
    with shared_reads():
        list_series(tmp_path)
        shared = load_image(tmp_path, series["PT"].series_instance_uid), load_image(list(series["CT"].files))
    for a, b in zip(alone, shared):
        assert a.array.dtype == b.array.dtype and np.array_equal(a.array, b.array)
        assert (a.spacing_mm, a.origin_mm, a.units) == (b.spacing_mm, b.origin_mm, b.units)
        assert np.array_equal(a.direction, b.direction) and repr(a.meta) == repr(b.meta)


@pytest.mark.parametrize("modality, tag, value", [("PT", "RescaleSlope", "1e36"), ("CT", "RescaleIntercept", "-1e39")])
def test_values_that_overflow_float32_are_refused(tmp_path, modality, tag, value):
    """Stored values times a RescaleSlope of 1e36 exceed float32's 3.4e38, as does a CT's
    RescaleIntercept of -1e39 (the other sign): refused naming the file, not loaded as
    infinities."""
    if modality == "PT":
        paths = _write_pet(tmp_path, _image(shape=(3, 8, 8)), names="ordered")
    else:
        paths = write_ct_series(tmp_path, Image(np.zeros((3, 8, 8)), (1, 1, 1), units="HU"), SeriesHeader())
    ds = pydicom.dcmread(paths[1])
    setattr(ds, tag, value)
    ds.save_as(paths[1])
    with pytest.raises(voxeldose.DicomError,
                       match=rf"{paths[1].name}: the pixel values times RescaleSlope .*not finite") as exc:
        load_image(tmp_path)
    assert str(exc.value).count("re-export the series") == 1


def test_empty_and_missing_inputs(tmp_path):
    with pytest.raises(voxeldose.DicomError, match="empty"):
        load_image(tmp_path)
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(voxeldose.DicomError, match="no PET, NM or CT image series"):
        load_image(tmp_path)
    with pytest.raises(voxeldose.DicomError, match="does not exist"):
        load_image(tmp_path / "nowhere")


def test_folder_search_is_recursive(tmp_path):
    image = _image(shape=(3, 4, 5))
    _write_pet(tmp_path / "export" / "patient" / "series1", image)
    shutil.copy(Path(__file__), tmp_path / "export" / "readme.py")
    assert load_image(tmp_path).same_grid(image)


def test_mixed_frames_of_reference(tmp_path):
    paths = _write_pet(tmp_path, _image(shape=(4, 5, 6)), names="ordered")
    ds = pydicom.dcmread(paths[2])
    ds.FrameOfReferenceUID = "1.2.3.4"
    ds.save_as(paths[2])
    with pytest.raises(voxeldose.GeometryError, match="FrameOfReferenceUID"):
        load_image(tmp_path)


# Header mutations: whatever happens to a tag, loading either works or raises a VoxelDoseError
# that names a file; never another exception (a crash would lose the batch's other cases).
_MUTABLE = ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept",
            "Rows", "Columns", "BitsAllocated", "PixelRepresentation", "SeriesInstanceUID", "Modality", "Units",
            "AcquisitionTime", "SeriesDate", "DecayFactor", "NumberOfFrames", "SamplesPerPixel",
            "FrameOfReferenceUID", "PixelData"]
_VALUES = [None, "", "abc", "-1", "0", "1e9", "1\\2", "\\".join(["0.5"] * 6), "PT", "CT", "RTSTRUCT"]


@pytest.fixture(scope="module")
def small_series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("series")
    _write_pet(folder, _image(shape=(4, 6, 5)), names="ordered")
    return folder


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the invalid values we write
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    slice_index=st.integers(0, 3),
    keyword=st.sampled_from(_MUTABLE),
    value=st.sampled_from(_VALUES),
)
def test_header_mutations_fail_cleanly(small_series, tmp_path_factory, slice_index, keyword, value):
    folder = tmp_path_factory.mktemp("mutated")
    for p in small_series.iterdir():
        shutil.copy(p, folder / p.name)
    target = sorted(folder.iterdir())[slice_index]
    ds = pydicom.dcmread(target)
    try:
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        elif keyword == "PixelData":
            ds.PixelData = b"\x00" * 10
        else:
            setattr(ds, keyword, value)
        ds.save_as(target)
    except Exception:  # noqa: BLE001 - pydicom refused to write this value: nothing to test
        return
    try:
        image = load_image(folder)
    except voxeldose.VoxelDoseError as exc:
        assert str(exc)  # a message
        return
    assert np.isfinite(image.array).all() and image.array.ndim == 3


def test_ge_private_scan_datetime_is_read(tmp_path):
    paths = _write_pet(tmp_path / "pet", _image())
    assert load_image(tmp_path / "pet").meta.private_scan_datetime is None
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.private_block(0x0009, "GEMS_PETD_01", create=True).add_new(0x0D, "DT", "20260116063012")
        ds.save_as(p)
    assert load_image(tmp_path / "pet").meta.private_scan_datetime == dt.datetime(2026, 1, 16, 6, 30, 12)


def test_a_slice_of_another_modality_in_the_series_is_refused(tmp_path):
    # one file of the series says CT (or NM): it is not one PET image, whatever its values
    paths = _write_pet(tmp_path, _image(shape=(4, 5, 6)))
    ds = pydicom.dcmread(paths[2])
    ds.Modality = "CT"
    ds.save_as(paths[2])
    with pytest.raises(voxeldose.DicomError, match=r"Modality '(CT|PT)' differs from .*'(PT|CT)' in the same series"):
        load_image(tmp_path)


def test_utc_offsets_are_read(tmp_path):
    # a DT's own offset, and TimezoneOffsetFromUTC for the DA/TM values of its file
    paths = _write_pet(tmp_path, _image(shape=(3, 4, 5)))
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.TimezoneOffsetFromUTC = "+0100"
        ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime = (
            ADMIN.strftime("%Y%m%d%H%M%S") + "+0000")
        ds.save_as(p)
    meta = load_image(tmp_path).meta
    cet = dt.timezone(dt.timedelta(hours=1))
    assert meta.acquisition_datetime == SCAN.replace(tzinfo=cet)
    assert meta.series_datetime.utcoffset() == dt.timedelta(hours=1)
    assert meta.radiopharmaceutical_start_datetime == ADMIN.replace(tzinfo=dt.timezone.utc)
    # an hour apart from what the wall clocks say: the offsets were dropped before
    assert (meta.acquisition_datetime - meta.radiopharmaceutical_start_datetime) == (SCAN - ADMIN) - dt.timedelta(hours=1)


def _set_steps(paths, steps):
    """Rewrite the slices' positions along z (ordered files) so that they step by ``steps`` (mm)."""
    z0 = float(pydicom.dcmread(paths[0]).ImagePositionPatient[2])
    zs = z0 + np.concatenate([[0.0], np.cumsum(steps)])
    for p, z in zip(paths, zs):
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], f"{z:.4f}"]
        ds.save_as(p)
    return zs


def test_bed_junctions_load_with_a_warning(tmp_path):
    # a GE Discovery multi-bed PET: 3.27 mm steps, 3.29 and 3.19 mm where the beds meet. It was
    # refused as "uneven slice spacing" although no slice is missing
    image = _image(shape=(30, 4, 5), spacing=(2.5, 3.0, 3.27))
    paths = _write_pet(tmp_path, image, names="ordered")
    steps = [3.27] * 29
    steps[9], steps[10], steps[19] = 3.29, 3.29, 3.19
    zs = _set_steps(paths, steps)
    with pytest.warns(voxeldose.VoxelDoseWarning, match=r"uneven slice spacing at 1 junction\(s\).*3.190 mm.*IM00020.dcm"
                      r".*within 0.0\d\d mm.*used as they are"):
        loaded = load_image(tmp_path)
    # every slice within 0.1 mm of its file's position (what SimpleITK reports per slice)
    centres = loaded.index_to_world(np.array([[0, 0, k] for k in range(30)], float))[:, 2]
    assert np.abs(centres - zs).max() <= 0.1
    np.testing.assert_allclose(loaded.array, image.array, rtol=0, atol=image.array.max() / 30000)  # not resampled
    assert loaded.meta.geometry_notes and "bed junctions" in loaded.meta.geometry_notes[0]


def test_junctions_further_from_the_grid_are_interpolated_onto_it(tmp_path):
    # one step of 3.0 mm where the series steps 3.27 (8 %): the slices beyond it lie up to
    # 0.13 mm off any regular grid, so they are interpolated along z; a dose that is linear in z
    # is reproduced exactly by the linear interpolation
    z = np.arange(12, dtype=float)
    values = np.broadcast_to((1000.0 + 100.0 * z)[:, None, None], (12, 4, 5)).copy()
    image = Image(values, (2.5, 3.0, 3.27), (-40.0, 25.0, 110.0), units="BQML")
    paths = _write_pet(tmp_path, image, names="ordered")
    steps = [3.27] * 11
    steps[5] = 3.0
    zs = _set_steps(paths, steps)
    with pytest.warns(voxeldose.VoxelDoseWarning, match="interpolated linearly along the normal"):
        loaded = load_image(tmp_path)
    grid_z = loaded.index_to_world(np.array([[0, 0, k] for k in range(12)], float))[:, 2]
    assert grid_z[0] == pytest.approx(zs[0]) and grid_z[-1] == pytest.approx(zs[-1])
    truth = np.interp(grid_z, zs, 1000.0 + 100.0 * z)  # the written values, linear in z
    np.testing.assert_allclose(loaded.array[:, 0, 0], truth, rtol=2e-5)


def test_a_missing_slice_between_beds_is_still_refused(tmp_path):
    paths = _write_pet(tmp_path, _image(shape=(10, 4, 5), spacing=(2.5, 3.0, 3.27)), names="ordered")
    steps = [3.27] * 9
    steps[4] = 3.27 * 1.5  # half a slice more: no bed junction does that
    _set_steps(paths, steps)
    with pytest.raises(voxeldose.GeometryError, match=r"uneven slice spacing \(ImagePositionPatient \(0020,0032\)\): 4.905 mm.*bed junction may differ by up to 10%"):
        load_image(tmp_path)


def test_nrrd_scan_loads_with_its_geometry_and_no_units(taranis):
    # a real SPECT exported by 3D Slicer: int16 counts, LPS, slices running feet-ward
    spect, _, _ = taranis
    assert spect.shape == (160, 128, 128) and spect.units == ""
    assert spect.spacing_mm == pytest.approx((4.418156, 4.418156, 2.5))
    assert spect.origin_mm == pytest.approx((-280.552912, -280.552912, 1332.800049))
    assert spect.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, -1))
    assert spect.meta.modality is None and spect.meta.source_files[0].endswith("patient_2_SPECT.nrrd")


def test_image_files_other_than_one_3d_volume_are_refused(tmp_path):
    import SimpleITK as sitk

    four_d = sitk.Image([4, 5, 6, 2], sitk.sitkFloat32)
    sitk.WriteImage(four_d, str(tmp_path / "dynamic.nii.gz"))
    with pytest.raises(voxeldose.InputError, match="4-D image.*one 3-D scalar volume"):
        load_image(tmp_path / "dynamic.nii.gz")
    (tmp_path / "broken.nrrd").write_text("NRRD0004\nnot a header\n")
    with pytest.raises(voxeldose.InputError, match="cannot read the image"):
        load_image(tmp_path / "broken.nrrd")


# --------------------------------------------------------------------------- issue 14: damaged files


@pytest.mark.parametrize("which", [0, 3, -1], ids=["first", "middle", "last"])
@pytest.mark.parametrize("keep", [0, 1, 100, 131, 132, 200, 400], ids=lambda n: f"{n}B")
def test_a_cut_or_empty_slice_anywhere_is_an_error_naming_it(tmp_path, which, keep):
    """A slice cut to its first bytes (or emptied) was skipped as 'not DICOM': at either end of
    the stack the series lost a slice without a word, mid-stack the error named its neighbours."""
    paths = sorted(_write_pet(tmp_path / "pet", _image(shape=(7, 6, 5)), names="ordered"))
    bad = paths[which]
    bad.write_bytes(bad.read_bytes()[:keep])
    with pytest.raises(voxeldose.DicomError) as exc:
        load_image(tmp_path / "pet")
    assert bad.name in str(exc.value) and ("truncated" in str(exc.value) or "empty" in str(exc.value))


def test_a_short_extensionless_slice_is_an_error_but_other_files_are_skipped(tmp_path):
    paths = sorted(_write_pet(tmp_path / "pet", _image(shape=(4, 6, 5)), names="ordered"))
    (tmp_path / "pet" / "notes.txt").write_text("exported by the scanner")
    (tmp_path / "pet" / "thumbs.png").write_bytes(b"\x89PNG" + bytes(300))
    assert load_image(tmp_path / "pet").shape == (4, 6, 5)
    cut = tmp_path / "pet" / "IM00009"
    cut.write_bytes(paths[0].read_bytes()[:60])
    with pytest.raises(voxeldose.DicomError, match="IM00009.*too few"):
        load_image(tmp_path / "pet")


def test_macos_appledouble_sidecars_are_skipped_but_a_dcm_without_their_magic_is_not(tmp_path):
    """An export copied from a Mac onto a FAT/exFAT disk or a share holds "._IM00001.dcm" beside
    each slice: AppleDouble files (RFC 1740, magic 0x00051607) of 4096 bytes, named like DICOM. They
    are sidecars, skipped (by name and magic); anything else so named is still a damaged slice."""
    paths = sorted(_write_pet(tmp_path / "pet", _image(shape=(4, 6, 5)), names="ordered"))
    header = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + bytes(4096 - 24)
    for path in paths:
        (path.parent / f"._{path.name}").write_bytes(header)
    (tmp_path / "pet" / "._small").write_bytes(header[:82])  # extensionless and short: a sidecar too
    assert load_image(tmp_path / "pet").shape == (4, 6, 5)
    assert [s.n_files for s in list_series(tmp_path / "pet")] == [4]
    (tmp_path / "pet" / "._IM00009.dcm").write_bytes(b"\x00\x05\x16\x00" + bytes(4092))  # AppleSingle's, not it
    with pytest.raises(voxeldose.DicomError, match=r"\._IM00009\.dcm: the file is named \.dcm but is not DICOM"):
        load_image(tmp_path / "pet")


@pytest.mark.parametrize("rows", [3, 5, 7, 12])
def test_rows_that_do_not_match_the_pixel_data_are_refused(tmp_path, rows):
    """Rows = 71 for 142-row slices read half of every slice (141: sheared); only too few bytes
    were an error. The pixel data must hold exactly the bytes the matrix describes."""
    paths = _write_pet(tmp_path / "pet", _image(shape=(4, 6, 5)), names="ordered")
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.Rows = rows
        ds.save_as(p)
    with pytest.raises(voxeldose.DicomError, match=r"PixelData \(7FE0,0010\) holds \d+ bytes.*(wrong Rows|truncated)"):
        load_image(tmp_path / "pet")


@pytest.mark.parametrize("frames", [5, 9, 0, -3])
def test_spect_number_of_frames_must_match_the_pixel_data(tmp_path, frames):
    """NumberOfFrames = 50 of a 100-frame SPECT loaded half the volume."""
    image = Image(np.random.default_rng(1).integers(0, 3000, (10, 6, 7)).astype(float), (4.42,) * 3, units="CNTS")
    path = write_nm_spect(tmp_path / "spect.dcm", image, SeriesHeader(acquisition_datetime=SCAN),
                          radiopharmaceutical_start=ADMIN)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = frames
    ds.save_as(path)
    with pytest.raises(voxeldose.DicomError, match="NumberOfFrames|PixelData .* holds"):
        load_image(path)


def test_an_image_larger_than_the_allocation_limit_is_refused_before_allocating(tmp_path, monkeypatch):
    """A header claiming 65535 x 65535 pixels asked numpy for 2.3 TiB (MemoryError, exit 1)."""
    paths = _write_pet(tmp_path / "pet", _image(shape=(4, 6, 5)), names="ordered")
    monkeypatch.setenv("VOXELDOSE_MAX_VOXELS", "100")  # the 4-slice series of 30 pixels is 120
    with pytest.raises(voxeldose.InputError, match="4 slices of 6 x 5.*120 voxels.*limit of 100"):
        load_image(tmp_path / "pet")
    monkeypatch.delenv("VOXELDOSE_MAX_VOXELS")
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.Rows = ds.Columns = 65535
        ds.save_as(p)
    with pytest.raises(voxeldose.InputError, match="65535 x 65535.*limit of 536,870,912"):
        load_image(tmp_path / "pet")


@pytest.mark.parametrize("keyword, value, which", [
    ("Units", "CNTS", 0),  # the first file by name: it switched the whole series to SPECT self-calibration
    ("Units", "BQML ", 2),  # padding only: the same value
    ("DecayCorrection", "NONE", 3),
    ("SeriesTime", "093000", 1),
    ("item:RadionuclideTotalDose", "1.5e9", 4),
])
def test_series_values_must_agree_in_every_file(tmp_path, keyword, value, which):
    """Units or DecayCorrection differing between slices were ignored: the value came from one file."""
    paths = sorted(_write_pet(tmp_path / "pet", _image(shape=(5, 6, 5)), names="ordered"))
    ds = pydicom.dcmread(paths[which])
    if keyword.startswith("item:"):
        setattr(ds.RadiopharmaceuticalInformationSequence[0], keyword[5:], value)
    else:
        setattr(ds, keyword, value)
    ds.save_as(paths[which])
    if value.strip() == "BQML":
        assert load_image(tmp_path / "pet").units == "BQML"
        return
    with pytest.raises(voxeldose.DicomError, match=f"{keyword[5:] if ':' in keyword else keyword} is .* but .* of the "
                       "same series"):
        load_image(tmp_path / "pet")


@pytest.mark.parametrize("changes, words", [
    ({"BitsStored": 12}, "HighBit BitsStored - 1"),
    ({"BitsStored": 12, "HighBit": 11}, r"stored pixel values run from .* outside the -2048 to 2047 that BitsStored"),
    ({"BitsStored": 15, "HighBit": 14}, "outside the -16384 to 16383"),
    ({"HighBit": 11}, "HighBit 11"),
    ({"BitsStored": 17}, "BitsStored must be at most BitsAllocated"),
    ({"SamplesPerPixel": 3}, "one sample per pixel"),
    ({"PhotometricInterpretation": "RGB"}, "MONOCHROME2"),
    ({"BitsAllocated": 8, "BitsStored": 8, "HighBit": 7}, r"PixelData \(7FE0,0010\) holds 60 bytes.*BitsAllocated 8 describe 30: a wrong Rows, Columns, NumberOfFrames or BitsAllocated"),
])
@pytest.mark.parametrize("which", ["one", "all"])
def test_bit_depths_that_do_not_describe_the_pixels_are_refused(tmp_path, changes, words, which):
    """BitsStored 12 on a slice of 16-bit values: pydicom masked the high bits (activity changed
    on that slice, negative on others); BitsAllocated = BitsStored = 8: -99.6 %."""
    image = _image(shape=(4, 6, 5), scale=2e6)  # large values: the slope leaves big stored integers
    paths = sorted(_write_pet(tmp_path / "pet", image, names="ordered"))
    for p in paths[1:2] if which == "one" else paths:
        ds = pydicom.dcmread(p)
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        ds.save_as(p)
    with pytest.raises(voxeldose.DicomError, match=words):
        load_image(tmp_path / "pet")


def test_bits_stored_below_bits_allocated_reads_values_that_fit(tmp_path):
    """A CT's 12 stored bits of 16 are read as they are (no masking needed when the values fit)."""
    hu = Image(np.random.default_rng(2).integers(-1000, 1000, (4, 5, 6)).astype(float), (1.0, 1.0, 2.5), units="HU")
    paths = write_ct_series(tmp_path / "ct", hu, SeriesHeader(acquisition_datetime=SCAN))
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.BitsStored, ds.HighBit = 12, 11
        ds.save_as(p)
    np.testing.assert_allclose(load_image(tmp_path / "ct").array, hu.array, atol=1e-3)


@pytest.mark.parametrize("keyword", ["Rows", "Columns", "Modality"])
def test_an_image_file_without_what_makes_it_an_image_is_an_error_not_skipped(tmp_path, keyword):
    """Found by checking the fuzz suite's messages: a PET slice without Rows or Modality was
    skipped as 'not an image', and the error that followed named its neighbours' spacing."""
    paths = sorted(_write_pet(tmp_path / "pet", _image(shape=(5, 6, 5)), names="ordered"))
    ds = pydicom.dcmread(paths[2])
    delattr(ds, keyword)
    ds.save_as(paths[2])
    with pytest.raises(voxeldose.DicomError, match=f"{paths[2].name}: the file is a PET, NM or CT image .* no {keyword}"):
        load_image(tmp_path / "pet")
