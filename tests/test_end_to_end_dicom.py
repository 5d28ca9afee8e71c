"""The liver phantom through the real loaders: DICOM PET/SPECT + RTSTRUCT/SEG + case file ->
calibrated activity -> dose -> DVH, against the phantom's truth."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import voxeldose
from voxeldose import phantoms
from voxeldose.phantoms.export import write_liver_case

# The criterion: calibration reproduces a known activity within 0.1 %.
CRITERION = 1e-3


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "liver"
    write_liver_case(out, ct_spacing_mm=(2.0, 2.0, 3.0))
    return out


def test_pet_case_through_the_loaders(case):
    pet = voxeldose.load_image(case / "PET")
    record = voxeldose.load_case(case / "case.toml")
    activity = voxeldose.calibrate(pet, record)  # headers + case file: nothing else needed
    truth = phantoms.liver(spacing_mm=(4.0, 4.0, 3.0))
    assert activity.total_mbq == pytest.approx(3000.0, rel=CRITERION)
    # voxel by voxel, to the int16 storage of the PET (1/32000 of each slice's maximum)
    np.testing.assert_allclose(activity.image.array, truth.activity_mbq, rtol=0,
                               atol=truth.activity_mbq.max() / 30000)
    for name in ("liver", "lung"):
        inside = truth.masks[name] > 0
        assert activity.image.array[inside].sum() == pytest.approx(truth.activity_mbq[inside].sum(), rel=CRITERION)
    # VOIs drawn on the CT (another grid) and the SEG on the PET grid
    rtstruct = voxeldose.load_vois(case / "RTSTRUCT.dcm", pet)
    seg = voxeldose.load_vois(case / "SEG.dcm", pet)
    voxel_ml = pet.voxel_volume_ml
    for name in ("liver", "tumour_1", "tumour_2", "lung"):
        analytic = truth.truth["vois"][name]["volume_ml_analytic"]
        # contours every 3 mm, interpolated (exact for these ellipsoids and spheres up to sampling:
        # within 0.45 % in test_io_vois); 0.5 % for the in-plane polygon (128 vertices) and the grid
        assert rtstruct[name].sum() * voxel_ml == pytest.approx(analytic, rel=0.005), name
        assert seg[name].sum() * voxel_ml == pytest.approx(analytic, rel=0.005), name
    derived, notes = voxeldose.derive_vois(rtstruct, whole_liver="liver",
                                           tumours=[f"tumour_{i}" for i in range(1, 6)])
    assert derived["normal_liver"].sum() * voxel_ml == pytest.approx(
        truth.truth["vois"]["normal_liver"]["volume_ml_analytic"], rel=0.005)
    # dose: the local-deposition mean over the whole liver equals the truth's voxelised value
    # to the accuracy of the VOI (the RTSTRUCT mask is not the phantom's mask: 0.5 %)
    local = voxeldose.absorbed_dose(activity.image.array, pet.spacing_mm, method="local")
    liver = voxeldose.dvh(local, rtstruct["liver"], pet.spacing_mm)
    assert liver.mean_gy == pytest.approx(truth.truth["vois"]["liver"]["ldm_mean_dose_voxelised_gy"], rel=0.005)


def test_spect_self_calibration_with_the_rtstruct_liver(case):
    spect = voxeldose.load_image(case / "SPECT")
    record = voxeldose.load_case(case / "case.toml")
    vois = voxeldose.load_vois(case / "RTSTRUCT.dcm", spect)
    activity = voxeldose.calibrate(spect, record, calibration_mask=vois[record.calibration_voi_name])
    truth = phantoms.liver(spacing_mm=(4.42, 4.42, 4.42))
    assert activity.total_mbq == pytest.approx(3000.0, rel=CRITERION)
    lung = truth.masks["lung"] > 0
    assert activity.image.array[lung].sum() == pytest.approx(300.0, rel=CRITERION)
    assert activity.provenance  # every factor recorded


@pytest.mark.parametrize(("correction", "nuclide"), [("ADMIN", "Y-90"), ("NONE", "Y-90"), ("START", "F-18")])
def test_pet_decay_correction_and_scanner_nuclide(tmp_path, correction, nuclide):
    out = tmp_path / "case"
    write_liver_case(out, write=("PET",), decay_correction=correction, scanner_nuclide=nuclide, delay_h=30.0)
    pet = voxeldose.load_image(out / "PET")
    record = voxeldose.load_case(out / "case.toml")  # the case file confirms the scanner's nuclide
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", voxeldose.VoxelDoseWarning)
        activity = voxeldose.calibrate(pet, record)
    assert activity.total_mbq == pytest.approx(3000.0, rel=CRITERION)
    if nuclide != "Y-90":
        # without the user's confirmation, a scanner set up for another nuclide is an error
        with pytest.raises(voxeldose.CalibrationError, match="scanner_nuclide"):
            voxeldose.calibrate(pet, voxeldose.Case(case_id="unconfirmed", administered_gbq=3.0))


def test_multibed_pet_files_are_calibrated_bed_by_bed(tmp_path):
    # A PET set up for F-18, acquired in two beds: the upper half of the slices 15 min after the
    # lower half. As a scanner writes it: each upper slice has the later AcquisitionTime, its own
    # DecayFactor (F-18, to the series time) and the values that implies, e^((lambda_F18 -
    # lambda_Y90) x 15 min) = 1.099 times those of a single-bed acquisition.
    import datetime as dt
    import math

    import pydicom

    out = tmp_path / "case"
    write_liver_case(out, write=("PET",), decay_correction="START", scanner_nuclide="F-18")
    files = sorted((out / "PET").iterdir())
    z = {f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files}
    upper = [f for f in files if z[f] > np.median(list(z.values()))]
    offset_s = 900.0
    lam_f18, lam_y90 = math.log(2) / (109.77 * 60), math.log(2) / (64.10 * 3600)
    for f in upper:
        ds = pydicom.dcmread(f)
        start = dt.datetime.strptime(ds.AcquisitionDate + ds.AcquisitionTime.split(".")[0], "%Y%m%d%H%M%S")
        ds.AcquisitionTime = (start + dt.timedelta(seconds=offset_s)).strftime("%H%M%S")
        ds.DecayFactor = f"{float(ds.DecayFactor) * math.exp(lam_f18 * offset_s):.10g}"
        ds.RescaleSlope = f"{float(ds.RescaleSlope) * math.exp((lam_f18 - lam_y90) * offset_s):.10g}"
        ds.save_as(f)
    pet = voxeldose.load_image(out / "PET")
    assert len(set(pet.meta.slice_acquisition_datetimes)) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", voxeldose.VoxelDoseWarning)  # consistent headers: no warning
        activity = voxeldose.calibrate(pet, voxeldose.load_case(out / "case.toml"))
    truth = phantoms.liver(spacing_mm=(4.0, 4.0, 3.0))
    assert activity.total_mbq == pytest.approx(3000.0, rel=CRITERION)
    np.testing.assert_allclose(activity.image.array, truth.activity_mbq, rtol=0,
                               atol=truth.activity_mbq.max() / 30000)  # int16 storage, as above
    assert [g["frame_start"][11:19] for g in activity.provenance["per_slice"]] == sorted(
        {t.strftime("%H:%M:%S") for t in pet.meta.slice_acquisition_datetimes})
