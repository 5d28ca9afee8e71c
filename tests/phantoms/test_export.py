"""The phantoms written as DICOM: scanner models by hand, round trips through the loader, CLI."""

from __future__ import annotations

import json
import math
import tomllib

import numpy as np
import pytest

import voxeldose
from voxeldose import phantoms
from voxeldose.cli import main
from voxeldose.phantoms.export import pet_stored_per_activity, write_liver_case

LAMBDA = math.log(2) / (64.10 * 3600)  # Y-90, ICRP-107, written out independently


def _avg(lam, t):
    return (1 - math.exp(-lam * t)) / (lam * t)


@pytest.mark.parametrize("delay_h", [3.0, 20.0, 70.0])
def test_pet_scanner_model_by_hand(delay_h):
    t, frame = delay_h * 3600, 900.0
    # a scanner set up for Y-90 and correcting to the frame start stores the activity at the
    # start of the acquisition; corrected to the administration, the administered activity
    start, df = pet_stored_per_activity(delay_s=t, frame_s=frame, decay_correction="START")
    assert start == pytest.approx(math.exp(-LAMBDA * t), rel=1e-12)
    assert df == pytest.approx(1 / _avg(LAMBDA, frame), rel=1e-12)
    admin, _ = pet_stored_per_activity(delay_s=t, frame_s=frame, decay_correction="ADMIN")
    assert admin == pytest.approx(1.0, rel=1e-12)
    none, df_none = pet_stored_per_activity(delay_s=t, frame_s=frame, decay_correction="NONE")
    assert none == pytest.approx(math.exp(-LAMBDA * t) * _avg(LAMBDA, frame), rel=1e-12) and df_none == 1.0
    # set up for F-18: positrons counted as F-18 activity (96.73 % positrons) and decay
    # corrected over the frame with F-18's 109.77 min
    f18, df18 = pet_stored_per_activity(delay_s=t, frame_s=frame, decay_correction="START", nuclide="F-18")
    lam_f = math.log(2) / (109.77 * 60)
    expected = 31.86e-6 / 0.9673 * math.exp(-LAMBDA * t) * _avg(LAMBDA, frame) / _avg(lam_f, frame)
    assert f18 == pytest.approx(expected, rel=1e-12)
    assert df18 == pytest.approx(1 / _avg(lam_f, frame), rel=1e-12)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    out = tmp_path_factory.mktemp("case") / "liver"
    truth = write_liver_case(out, write=("PET", "SPECT", "CT"), ct_spacing_xyz_mm=(4.0, 4.0, 5.0))
    return out, truth


def test_pet_holds_the_phantom_activity(case):
    out, truth = case
    pet = voxeldose.load_image(out / "PET")
    ph = phantoms.liver(spacing_xyz_mm=(4.0, 4.0, 3.0))
    assert pet.same_grid(voxeldose.Image(ph.activity_mbq, ph.spacing_mm, ph.origin_mm))
    activity = pet.array.astype(float) * pet.voxel_volume_ml * 1e-6 / truth["pet"]["stored_per_activity"]
    # int16 storage with a slope per slice: 1/32000 of each slice's maximum
    np.testing.assert_allclose(activity, ph.activity_mbq, rtol=0, atol=ph.activity_mbq.max() / 30000)
    assert activity.sum() == pytest.approx(3000.0, rel=1e-5)
    meta = pet.meta
    assert meta.decay_correction == "START"
    delay = (meta.acquisition_datetime - meta.radiopharmaceutical_start_datetime).total_seconds()
    assert delay == pytest.approx(20 * 3600)
    assert meta.radionuclide_total_dose_bq == pytest.approx(3e9)


def test_spect_and_ct_share_the_frame_of_reference(case):
    out, truth = case
    spect = voxeldose.load_image(out / "SPECT")
    ct = voxeldose.load_image(out / "CT")
    pet = voxeldose.load_image(out / "PET")
    assert spect.units == "CNTS" and ct.units == "HU"
    assert spect.meta.frame_of_reference_uid == ct.meta.frame_of_reference_uid == pet.meta.frame_of_reference_uid
    assert spect.meta.study_instance_uid == pet.meta.study_instance_uid
    # counts are proportional to the activity: the liver holds (1 - LSF) of the counts
    ph = phantoms.liver(spacing_xyz_mm=(4.42, 4.42, 4.42))
    in_liver = spect.array[ph.masks["liver"] > 0].sum() / spect.array.sum()
    assert in_liver == pytest.approx(0.9, rel=1e-4)  # counts rounded to integers
    assert spect.array.max() == pytest.approx(60000, rel=1e-3)
    # CT numbers of the tissues
    cph = phantoms.liver(spacing_xyz_mm=(4.0, 4.0, 5.0))
    assert np.median(ct.array[cph.masks["normal_liver"] == 1]) == 60
    assert np.median(ct.array[cph.masks["lung"] == 1]) == -800
    assert ct.array.min() == -1000


def test_case_file_and_truth(case):
    out, truth = case
    with (out / "case.toml").open("rb") as fh:
        record = tomllib.load(fh)
    assert record["administered_gbq"] == 3.0 and record["lung_shunt_fraction"] == 0.1
    assert record["vois"]["liver"] == "whole_liver" and record["vois"]["tumour_3"] == "tumour"
    stored = json.loads((out / "truth.json").read_text())
    assert stored["phantom"]["vois"]["liver"]["activity_mbq"] == pytest.approx(2700.0)
    assert stored["spect"]["counts_per_mbq_s"] > 0


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(voxeldose.InputError, match="not empty"):
        write_liver_case(tmp_path, write=("PET",))
    assert (tmp_path / "x").read_text() == "keep me"


def test_cli_phantom_writes_atomically(tmp_path, capsys):
    out = tmp_path / "sphere"
    assert main(["-q", "phantom", "sphere", "--out", str(out)]) == 0
    assert (out / "truth.json").is_file() and (out / "PET").is_dir() and (out / "SEG.dcm").is_file()
    pet = voxeldose.load_image(out / "PET")
    truth = json.loads((out / "truth.json").read_text())
    activity = pet.array.astype(float).sum() * pet.voxel_volume_ml * 1e-6 / truth["pet"]["stored_per_activity"]
    assert activity == pytest.approx(1000.0, rel=1e-4)
    # a second run into the same folder is refused, and leaves it as it was
    before = sorted(p.name for p in out.rglob("*"))
    assert main(["phantom", "sphere", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == before
    # bad input: exit 2, nothing written, no staging folder left behind
    bad = tmp_path / "bad"
    assert main(["phantom", "liver", "--out", str(bad), "--lung-shunt", "1.2"]) == 2
    assert not bad.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
