"""Header mutations of a real-shaped PET series: never a silently changed number.

One tag at a time is changed (deleted, emptied, made text, zero, negative, huge, two values, a
wrong modality ...) in one file or in every file of a Y-90 PET series written as a scanner
writes it, and the series is loaded and calibrated. Each mutation must end in one of:

- a ``VoxelDoseError`` with a message (the input is refused, clearly);
- a result equal to the unmutated one (the tag does not matter for the number);
- nothing to test, where pydicom itself refuses to write the value.

Never another exception, and never a changed activity, not even with a caveat, except for the
values listed in :data:`UNDETECTABLE`: another valid value of the tag, indistinguishable from the
scanner's (a different RescaleSlope for one slice); the test checks that those do change the
activity, so the list cannot hide a mutation that has since become harmless or refused. All
936 run in the default suite (about 16 s); the README's reliability section states the outcomes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

import voxeldose
from voxeldose.io.series import SeriesHeader, write_pet_series
from voxeldose.nuclides import Y90

ADMIN = dt.datetime(2026, 1, 15, 10, 30, 0)
SCAN = ADMIN + dt.timedelta(hours=20)

#: Tags the loader or the calibration reads (top level; the radiopharmaceutical item's below).
TAGS = [
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "RescaleSlope",
    "RescaleIntercept", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "SamplesPerPixel", "PhotometricInterpretation", "SeriesInstanceUID", "Modality", "SOPClassUID", "Units",
    "DecayCorrection", "DecayFactor", "ActualFrameDuration", "AcquisitionDate", "AcquisitionTime", "SeriesDate",
    "SeriesTime", "FrameOfReferenceUID", "NumberOfFrames", "PixelData", "TimezoneOffsetFromUTC", "CorrectedImage",
    "Manufacturer",
]
ITEM_TAGS = ["RadiopharmaceuticalStartDateTime", "RadiopharmaceuticalStartTime", "RadionuclideTotalDose",
             "RadionuclideHalfLife", "RadionuclidePositronFraction"]
VALUES = [None, "", "abc", "-1", "0", "1e30", "2", "1\\2", "CT", "20261340", "-10000", "99999999999999999999", "MBQ"]
TARGETS = ["one", "all"]

#: Every mutation: (tag, value, target); the radiopharmaceutical item's tags prefixed "item:".
MUTATIONS = [(tag, value, target) for tag, value, target in itertools.product(
    TAGS + [f"item:{t}" for t in ITEM_TAGS], VALUES, TARGETS)]

#: Mutations to another valid value of the tag that change the activity and that no header check
#: can tell from the scanner's own: a slice's RescaleSlope is whatever the scanner chose for it.
UNDETECTABLE = {("RescaleSlope", "2", "one"): "a valid slope for one slice"}


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A Y-90 PET series as a scanner writes it (16 slices of 24 x 20, int16 with a slope per
    slice, START decay correction), its case, and the unmutated result."""
    folder = tmp_path_factory.mktemp("pet")
    rng = np.random.default_rng(3)
    bqml = rng.gamma(2.0, 2e4, (16, 20, 24))
    bqml[:, :4] = 0.0  # empty rows, as outside a body
    image = voxeldose.Image(bqml, (4.0, 4.0, 3.0), (-40.0, -30.0, 100.0), units="BQML")
    header = SeriesHeader(acquisition_datetime=SCAN, series_datetime=SCAN, study_datetime=SCAN)
    lam = np.log(2) / Y90.half_life_s
    options = {"radiopharmaceutical_start": ADMIN, "decay_correction": "START", "frame_duration_s": 900.0,
               "decay_factor": 900.0 * lam / -np.expm1(-900.0 * lam), "half_life_s": Y90.half_life_s,
               "positron_fraction": Y90.positron_fraction, "names": "ordered"}
    write_pet_series(folder, image, header, total_dose_bq=None, **options)
    # the header's administered activity: what the series holds at administration
    total_mbq = voxeldose.calibrate(voxeldose.load_image(folder), voxeldose.Case("c")).total_mbq
    shutil.rmtree(folder)
    write_pet_series(folder, image, header, total_dose_bq=total_mbq * 1e6, **options)
    case = voxeldose.Case("mutations", administration_datetime=ADMIN)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the unmutated series raises no caveat
        baseline = voxeldose.calibrate(voxeldose.load_image(folder), case).image
    return folder, case, baseline


def _mutate(ds, tag: str, value):
    target = ds
    if tag.startswith("item:"):
        tag = tag[5:]
        target = ds.RadiopharmaceuticalInformationSequence[0]
    if value is None:
        if tag in target:
            delattr(target, tag)
        return
    if tag == "PixelData":
        ds.PixelData = {"": b"", "2": ds.PixelData[: len(ds.PixelData) // 2]}.get(value, ds.PixelData + b"\x00\x01" * 8)
        return
    setattr(target, tag, value)


def mutated_series(folder: Path, mutated: Path, target: str, mutate) -> bool:
    """Copy the series ``folder`` to ``mutated`` (replacing it) and apply ``mutate(ds)`` to one
    file (the eighth) or to all; False where pydicom refuses to write the value."""
    if mutated.exists():
        shutil.rmtree(mutated)
    shutil.copytree(folder, mutated)
    files = sorted(mutated.iterdir())
    for f in files[7:8] if target == "one" else files:
        ds = pydicom.dcmread(f)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mutate(ds)
                ds.save_as(f)
        except Exception:  # noqa: BLE001 - pydicom refused this value: nothing to test
            return False
    return True


def same_activity(result, baseline) -> bool:
    """The same grid and the same activity to 1e-6 (relative) in every voxel."""
    return (result.shape == baseline.shape and result.same_grid(baseline)
            and np.allclose(result.array, baseline.array, rtol=1e-6, atol=1e-9 * float(np.abs(baseline.array).max())))


def _run(series, tmp_path, tag, value, target) -> str:
    """The outcome of one mutation: 'error', 'equal', 'undetectable' or 'unchanged' (nothing written)."""
    folder, case, baseline = series
    mutated = tmp_path / "pet"
    if not mutated_series(folder, mutated, target, lambda ds: _mutate(ds, tag, value)):
        return "unchanged"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a caveat does not excuse a changed number here
        try:
            result = voxeldose.calibrate(voxeldose.load_image(mutated), case).image
        except voxeldose.VoxelDoseError as exc:
            assert str(exc), "an error without a message"
            return "error"
    same = same_activity(result, baseline)
    if (tag, value, target) in UNDETECTABLE:
        assert not same, f"{tag} = {value!r} in {target} file(s) no longer changes the activity: drop it from UNDETECTABLE"
        return "undetectable"
    assert same, (f"{tag} = {value!r} in {target} file(s) changed the activity (total {float(result.array.sum()):.6g} "
                  f"vs {float(baseline.array.sum()):.6g} MBq, shape {result.shape}) and was not refused")
    return "equal"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("tag, value, target", MUTATIONS)
def test_a_header_mutation_is_refused_or_harmless(series, tmp_path, tag, value, target):
    _run(series, tmp_path, tag, value, target)


def test_the_readme_states_this_campaign():
    """The README's counts are this campaign's: its tags, values and mutations."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert len(TAGS) + len(ITEM_TAGS) == 36 and len(VALUES) == 13 and len(MUTATIONS) == 936
    assert "36 tags" in readme and "13 values" in readme and "936 mutations" in readme


@pytest.mark.parametrize("value, words", [
    ("0\\1E-3", ["smaller than 0.01 mm"]),  # the fuzz campaign's finds (tests/test_fuzz.py): the Image's
    ("0\\100", ["larger than 50 mm"]),      # own voxel-size check refused them without naming the series
    ("0\\0", ["must be positive"]),
])
def test_a_refused_voxel_size_names_the_series_and_the_tag(series, tmp_path, value, words):
    folder, case, _ = series
    mutated = tmp_path / "pet"
    assert mutated_series(folder, mutated, "all", lambda ds: _mutate(ds, "PixelSpacing", value))
    with pytest.raises(voxeldose.GeometryError) as info:
        voxeldose.load_image(mutated)
    text = str(info.value)
    for word in [str(mutated), "PixelSpacing (0028,0030)", *words]:
        assert word in text, text


@pytest.mark.parametrize("value, target, words", [
    ("0\\0\\0", "all", ["two slices at the same position"]),  # the 1,500-input fuzz's finds: refused,
    ("0\\0\\0", "one", ["uneven slice spacing"]),             # but naming no DICOM attribute
])
def test_a_refused_slice_geometry_names_the_tag(series, tmp_path, value, target, words):
    folder, case, _ = series
    mutated = tmp_path / "pet"
    assert mutated_series(folder, mutated, target, lambda ds: _mutate(ds, "ImagePositionPatient", value))
    with pytest.raises(voxeldose.GeometryError) as info:
        voxeldose.load_image(mutated)
    text = str(info.value)
    for word in [str(mutated), "ImagePositionPatient (0020,0032)", *words]:
        assert word in text, text
