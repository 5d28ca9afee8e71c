"""The Tc-99m MAA SPECT of the liver phantom: its header, counts, VOIs, truth, and refusal by 'run'.

One case is written for the module (about 5 s): the MAA with its own tumour-to-normal ratio and lung
shunt (different from the Y-90 case's, so that a test cannot pass on the wrong ones) and a cold
tumour, with the CT, RTSTRUCT and SEG it is read with.
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from scipy import ndimage

import voxeldose
from voxeldose.cli import main
from voxeldose.nuclides import TC99M, nuclide_of_code
from voxeldose.phantoms.export import (
    MAA_COUNTS_PER_MBQ_S,
    MAA_INJECTION,
    WRITE_DEFAULT,
    WRITABLE,
    write_liver_case,
)

MAA_TN, MAA_LSF, COLD = 3.0, 0.08, "tumour_2"


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    out = tmp_path_factory.mktemp("maa") / "liver"
    truth = write_liver_case(out, write=("MAA", "CT", "RTSTRUCT", "SEG"), ct_spacing_xyz_mm=(4.0, 4.0, 5.0),
                             maa_tumour_to_normal=MAA_TN, maa_lung_shunt_fraction=MAA_LSF, maa_cold_tumour=COLD)
    maa = voxeldose.load_image(out / "MAA")
    vois = voxeldose.load_vois(out / "RTSTRUCT.dcm", maa)
    return out, truth, maa, vois


def _core(mask: np.ndarray) -> np.ndarray:
    """Voxels at least one voxel inside a VOI: no partial volume there (the phantom is not blurred)."""
    return ndimage.binary_erosion(mask > 0.5)


def test_the_maa_is_a_tc99m_nm_spect_in_counts(case):
    out, truth, maa, _ = case
    assert (out / "MAA" / "maa.dcm").is_file()
    assert maa.meta.modality == "NM" and maa.units == "CNTS"
    assert nuclide_of_code(maa.meta.radionuclide_code) == "Tc-99m" and maa.meta.radionuclide == "^99m^Technetium"
    assert maa.meta.radionuclide_half_life_s == pytest.approx(TC99M.half_life_s)
    assert maa.meta.radiopharmaceutical == "Tc-99m MAA"
    assert maa.meta.radiopharmaceutical_start_datetime == MAA_INJECTION
    delay_s = (maa.meta.acquisition_datetime - MAA_INJECTION).total_seconds()
    assert delay_s == pytest.approx(3600.0)  # maa_delay_h, 1 h by default
    assert maa.meta.frame_duration_s == pytest.approx(1200.0)
    assert maa.meta.radionuclide_total_dose_bq == pytest.approx(150e6)
    assert maa.spacing_mm == pytest.approx((4.42, 4.42, 4.42))
    assert maa.meta.series_instance_uid == truth["maa"]["series_instance_uid"]


def test_the_maa_shares_the_frame_of_reference_and_loads_the_vois(case):
    out, truth, maa, vois = case
    rtstruct = pydicom.dcmread(out / "RTSTRUCT.dcm")
    ct = voxeldose.load_image(out / "CT")
    frame = rtstruct.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    assert maa.meta.frame_of_reference_uid == frame == ct.meta.frame_of_reference_uid
    assert truth["maa"]["frame_of_reference_uid"] == frame
    assert maa.meta.series_instance_uid != ct.meta.series_instance_uid
    # its own study: the planning scan is ten days before the treatment
    assert maa.meta.study_instance_uid != ct.meta.study_instance_uid
    assert set(vois) == {"liver", "lung", *(f"tumour_{i}" for i in range(1, 6))}
    seg = voxeldose.load_vois(out / "SEG.dcm", maa)
    assert set(seg) == set(vois)
    for name in vois:  # both VOI files on the MAA grid, with their volumes
        assert vois[name].same_grid(maa) and seg[name].same_grid(maa)
        v_rt = float(vois[name].array.sum()) * maa.voxel_volume_ml
        v_seg = float(seg[name].array.sum()) * maa.voxel_volume_ml
        truth_ml = truth["maa"]["vois"][name]["volume_ml"]
        assert v_rt > 0 and v_seg > 0, name
        if truth_ml > 20.0:
            # 3 %: contours on the CT's 5 mm slices and a SEG on the PET's grid, resampled; a small
            # sphere's caps between contour planes are lost (tumour_5: 25 %), so only the larger VOIs
            assert v_rt == pytest.approx(truth_ml, rel=0.03), name
            assert v_seg == pytest.approx(truth_ml, rel=0.03), name


def test_tumour_to_normal_is_the_maas(case):
    _, _, maa, vois = case
    counts = maa.array.astype(float)
    tumours = np.zeros(maa.shape, bool)
    for i in range(1, 6):
        tumours |= ndimage.binary_dilation(vois[f"tumour_{i}"].array > 0, iterations=2)
    normal = _core(vois["liver"].array) & ~tumours
    normal_mean = counts[normal].mean()
    measured = 0
    for i in range(1, 6):
        name = f"tumour_{i}"
        core = _core(vois[name].array)
        if name == COLD or not core.any():
            continue
        # on the cores, every voxel holds one compartment's concentration: the ratio is exact but
        # for rounding the counts to integers (0.5 in some 800 counts of normal liver: 6e-4 each,
        # 0.2 % together with margin); over the whole VOI partial volume at the sphere's edge
        # would lower it by tens of per cent
        assert counts[core].mean() / normal_mean == pytest.approx(MAA_TN, rel=2e-3), name
        measured += 1
    assert measured >= 3
    # not the Y-90 case's 4: the MAA's own ratio
    assert abs(MAA_TN - 4.0) > 0.5


def test_lung_shunt_is_the_maas(case):
    _, truth, maa, vois = case
    counts = maa.array.astype(float)
    # every voxel each VOI touches: the lungs are 20 mm from the liver and nothing is blurred, so
    # each VOI holds all of its compartment's counts; the ratio is exact but for the rounding of the
    # counts (1e-5 here) and voxels an RTSTRUCT polygon misses at a VOI's edge (0.1 %, measured)
    lung = counts[vois["lung"].array > 0].sum()
    liver = counts[vois["liver"].array > 0].sum()
    assert lung / (lung + liver) == pytest.approx(MAA_LSF, rel=5e-3)
    assert (lung + liver) == pytest.approx(counts.sum(), rel=2e-3)
    assert truth["maa"]["vois"]["lung"]["activity_mbq"] == pytest.approx(150.0 * MAA_LSF, rel=1e-12)


def test_the_cold_tumour_has_no_counts(case):
    _, truth, maa, vois = case
    counts = maa.array.astype(float)
    cold = vois[COLD].array
    assert counts[_core(cold)].max() == 0.0  # no MAA inside it
    # over the whole VOI only its edge voxels, shared with normal liver, hold counts
    normal_mean = counts[_core(vois["liver"].array) & (cold == 0)].mean()
    weighted_mean = float((counts * cold).sum() / cold.sum())
    assert weighted_mean < 0.3 * normal_mean
    record = truth["maa"]["vois"][COLD]
    assert record["activity_mbq"] == 0.0 and record["counts"] == 0.0


def test_the_truth_record(case):
    out, truth, maa, _ = case
    on_disk = json.loads((out / "truth.json").read_text())
    record = on_disk["maa"]
    assert record == json.loads(json.dumps(truth["maa"]))
    assert record["folder"] == "MAA" and record["nuclide"] == "Tc-99m"
    assert record["tumour_to_normal"] == MAA_TN and record["lung_shunt_fraction"] == MAA_LSF
    assert record["cold_tumour"] == COLD and record["activity_mbq"] == 150.0
    assert record["injection_datetime"] == MAA_INJECTION.isoformat()
    # the counting model, by hand: s x A0 x integral of e^(-lambda t) over the frame, Tc-99m's lambda
    lam = math.log(2) / (6.015 * 3600)  # ICRP-107, written out independently
    t_s, frame = 3600.0, 1200.0
    per_mbq = MAA_COUNTS_PER_MBQ_S * (math.exp(-lam * t_s) - math.exp(-lam * (t_s + frame))) / lam
    assert record["counts_per_mbq"] == pytest.approx(per_mbq, rel=1e-12)
    vois = record["vois"]
    assert vois["liver"]["activity_mbq"] + vois["lung"]["activity_mbq"] == pytest.approx(150.0, rel=1e-12)
    assert vois["liver"]["counts"] == pytest.approx(vois["liver"]["activity_mbq"] * per_mbq, rel=1e-12)
    # the image holds the modelled counts, rounded to integers (no noise): the voxels at the lungs'
    # edges, holding under 0.5 counts, round to 0 (5e-4 of the total, measured)
    assert maa.array.sum() == record["total_counts"]
    assert record["total_counts"] == pytest.approx(150.0 * per_mbq, rel=1e-3)
    # the Y-90 case is not described by the MAA's values
    assert on_disk["phantom"]["tumour_to_normal"] == 4.0 and on_disk["phantom"]["lung_shunt_fraction"] == 0.10


def test_run_refuses_the_maa(case, tmp_path, capsys):
    out, _, _, _ = case
    result = tmp_path / "o"
    capsys.readouterr()
    assert main(["-q", "run", str(out / "MAA"), "--voi", str(out / "RTSTRUCT.dcm"), "--case", str(out / "case.toml"),
                 "--out", str(result), "--method", "local"]) == 2
    err = capsys.readouterr().err
    assert "names Tc-99m, not Y-90" in err and "voxeldose plan" in err, err
    assert not result.exists()


#: dciodvfy's errors on every NM file voxeldose writes, the Y-90 bremsstrahlung SPECT's as well (see
#: tests/io/test_dicom.py): Type 2 NM acquisition attributes a synthetic phantom has no values for
#: (orientation codes, collimator, rotation, counts accumulated, laterality) and ActualFrameDuration,
#: which dicom3tools expects in the rotation sequence of a tomographic image and voxeldose reads.
NM_WRITER_ERRORS = {
    "Error - Missing attribute Type 2C Conditional Element=<Laterality> Module=<GeneralSeries>",
    "Error - Missing attribute Type 2 Required Element=<PatientOrientationCodeSequence> Module=<NMPETPatientOrientation>",
    "Error - Missing attribute Type 2 Required Element=<PatientGantryRelationshipCodeSequence> "
    "Module=<NMPETPatientOrientation>",
    "Error - Missing attribute Type 1C Conditional Element=<NumberOfRotations> Module=<NMMultiFrame>",
    "Error - Missing attribute Type 2 Required Element=<CountsAccumulated> Module=<NMImage>",
    "Error - Attribute present when condition unsatisfied (which may not be present otherwise) Type 1C Conditional "
    "Element=<ActualFrameDuration> Module=<NMImage>",
    "Error - Missing attribute Type 2 Required Element=<CollimatorType> Module=<NMDetector>",
    "Error - Missing attribute Type 2 Required Element=<RotationInformationSequence> Module=<NMTomoAcquisition>",
}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not installed")
def test_the_maa_file_has_no_dciodvfy_error_of_its_own(case):
    out, _, _, _ = case
    proc = subprocess.run(["dciodvfy", str(out / "MAA" / "maa.dcm")], capture_output=True, text=True, timeout=60)
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert "NMImage" in lines, lines
    errors = {ln for ln in lines if ln.startswith("Error")}
    assert errors <= NM_WRITER_ERRORS, "\n".join(sorted(errors - NM_WRITER_ERRORS))


def test_the_default_write_is_unchanged_and_the_maa_perturbs_nothing(tmp_path):
    assert WRITE_DEFAULT == ("PET", "SPECT", "CT", "RTSTRUCT", "SEG") and "MAA" not in WRITE_DEFAULT
    assert inspect.signature(write_liver_case).parameters["write"].default is WRITE_DEFAULT
    assert set(WRITABLE) == {*WRITE_DEFAULT, "MAA"}
    # the same SPECT and truth with and without the MAA (but its own record)
    without = write_liver_case(tmp_path / "a", write=("SPECT",))
    with_maa = write_liver_case(tmp_path / "b", write=("SPECT", "MAA"), maa_cold_tumour="tumour_1")
    assert not (tmp_path / "a" / "MAA").exists() and "maa" not in without
    a, b = (voxeldose.load_image(tmp_path / x / "SPECT") for x in "ab")
    np.testing.assert_array_equal(a.array, b.array)
    strip = {"series_instance_uid"}
    assert {k: v for k, v in without["spect"].items() if k not in strip} == \
        {k: v for k, v in with_maa["spect"].items() if k not in strip}
    assert without["phantom"] == with_maa["phantom"]
    assert (tmp_path / "a" / "case.toml").read_text() == (tmp_path / "b" / "case.toml").read_text()


def test_bad_maa_options_are_refused(tmp_path):
    with pytest.raises(voxeldose.InputError, match="maa_cold_tumour 'tumour_9' is not a tumour.*tumour_1"):
        write_liver_case(tmp_path / "a", write=("MAA",), maa_cold_tumour="tumour_9")
    with pytest.raises(voxeldose.InputError, match="maa_lung_shunt_fraction"):
        write_liver_case(tmp_path / "b", write=("MAA",), maa_lung_shunt_fraction=1.5)
    with pytest.raises(voxeldose.InputError, match="unknown objects to write: \\['MAAA'\\]"):
        write_liver_case(tmp_path / "c", write=("MAAA",))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before writing


def test_the_cli_adds_the_maa(tmp_path, monkeypatch):
    import voxeldose.phantoms.export as export

    seen = {}

    def capture(name, out_dir, **options):
        seen.update(options, name=name)
        inspect.signature(write_liver_case).bind(out_dir, **options)  # every option is one it takes
        out_dir.mkdir(parents=True)
        return {}

    monkeypatch.setattr(export, "write_phantom", capture)
    assert main(["-q", "phantom", "liver", "--out", str(tmp_path / "a"), "--maa", "--maa-tumour-to-normal", "2.5",
                 "--maa-lung-shunt", "0.05", "--maa-cold-tumour", "tumour_3"]) == 0
    assert seen["write"] == (*WRITE_DEFAULT, "MAA")
    assert (seen["maa_tumour_to_normal"], seen["maa_lung_shunt_fraction"], seen["maa_cold_tumour"]) == \
        (2.5, 0.05, "tumour_3")
    seen.clear()
    assert main(["-q", "phantom", "liver", "--out", str(tmp_path / "b")]) == 0
    assert "write" not in seen and "maa_cold_tumour" not in seen  # without --maa: the default write
    # MAA options without --maa, or for another phantom: refused, nothing written
    assert main(["-q", "phantom", "liver", "--out", str(tmp_path / "c"), "--maa-cold-tumour", "tumour_3"]) == 2
    assert main(["-q", "phantom", "sphere", "--out", str(tmp_path / "d"), "--maa"]) == 2
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_plan_reads_the_maa_and_measures_its_lung_shunt(case):
    # what the phantom is for: voxeldose.plan on the MAA SPECT with the RTSTRUCT's VOIs, the lung
    # shunt measured on the counts (the MAA's 0.08, not the case file's 0.10), to the accuracy of
    # the lung-shunt test above
    import warnings

    from voxeldose.plan import compute_plan
    from voxeldose.planning import plan_settings_from_dict

    out, _, maa, vois = case
    record = voxeldose.load_case(out / "case.toml")
    plan = plan_settings_from_dict({"lung_shunt": "counts", "activities_gbq": {"liver": 2.0}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", voxeldose.VoxelDoseWarning)
        result = compute_plan(maa, vois, record.with_overrides(plan=plan), method="local")
    text = json.dumps(result.plan, default=str)
    assert "Tc-99m (header)" in text
    shunt = result.plan["lung_shunt"]
    assert shunt["case"] == 0.10 and shunt["value"] == shunt["from_counts"] == pytest.approx(MAA_LSF, rel=5e-3)


def test_a_cold_tumour_in_the_phantom_keeps_the_activity_and_the_ratio():
    from voxeldose import phantoms

    ph = phantoms.liver(spacing_xyz_mm=(8.84, 8.84, 8.84), administered_gbq=0.15, cold_tumours=("tumour_1",))
    vois = ph.truth["vois"]
    assert ph.activity_mbq.sum() == pytest.approx(150.0, rel=1e-12)  # all of A0, none in the cold tumour
    assert vois["tumour_1"]["activity_mbq"] == 0.0 and vois["tumour_1"]["concentration_mbq_per_ml"] == 0.0
    assert vois["tumour_3"]["concentration_mbq_per_ml"] == pytest.approx(4.0 * vois["normal_liver"]["concentration_mbq_per_ml"])
    assert ph.truth["cold_tumours"] == ["tumour_1"] and "cold_tumours" not in phantoms.liver(spacing_xyz_mm=(8.84,) * 3).truth
    with pytest.raises(voxeldose.InputError, match="'tumour_7' is not a tumour"):
        phantoms.liver(cold_tumours=("tumour_7",))
