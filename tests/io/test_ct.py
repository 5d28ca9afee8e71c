"""The CT on the scan's grid (load_ct): values by world coordinates, frame of reference and coverage checked."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import voxeldose
from voxeldose.io import load_ct, load_image
from voxeldose.io.ct import AIR_HU, resample_ct


@pytest.fixture(scope="module")
def pet_and_ct(liver_export):
    export, truth = liver_export
    return load_image(export / "PET"), export / "CT"


def test_the_ct_lands_on_the_scan_grid_with_the_phantoms_hu(pet_and_ct, liver_4x3):
    pet, ct_path = pet_and_ct
    ct = load_ct(ct_path, pet)
    assert ct.same_grid(pet) and ct.units == "HU" and ct.meta.extra["coverage"] == pytest.approx(1.0)
    # the CT (2 x 2 x 3 mm) and the PET (4 x 4 x 3 mm) share the phantom's world: voxels wholly inside
    # each compartment of the PET grid have its HU exactly (data/phantoms/liver.toml [ct_hu])
    masks = liver_4x3.masks
    for name, hu in (("normal_liver", 60.0), ("lung", -800.0), ("tumours", 45.0)):
        inside = np.asarray(masks[name]) >= 1.0
        assert inside.sum() > 10, name
        assert np.median(ct.array[inside]) == pytest.approx(hu, abs=0.5), name


def test_a_ct_of_another_frame_or_region_or_modality_is_refused(pet_and_ct):
    pet, ct_path = pet_and_ct
    ct = load_image(ct_path)
    other = ct.with_array(ct.array, frame_of_reference_uid="1.2.3.4.5")
    with pytest.raises(voxeldose.GeometryError, match="FrameOfReferenceUID 1.2.3.4.5 differs.*--registered"):
        resample_ct(other, pet)
    assert resample_ct(other, pet, registered=True).same_grid(pet)
    far = dataclasses.replace(ct, origin_mm=(ct.origin_mm[0], ct.origin_mm[1], ct.origin_mm[2] + 5000.0))
    with pytest.raises(voxeldose.GeometryError, match="covers 0% of the scan's grid"):
        resample_ct(far, pet)
    with pytest.raises(voxeldose.InputError, match="expected a CT in HU"):
        resample_ct(pet, pet)


def test_air_outside_the_ct(pet_and_ct):
    pet, ct_path = pet_and_ct
    ct = load_image(ct_path)
    half = dataclasses.replace(ct, origin_mm=(ct.origin_mm[0], ct.origin_mm[1], ct.origin_mm[2] + 150.0))
    moved = resample_ct(half, pet)
    assert 0.1 < moved.meta.extra["coverage"] < 1.0
    assert (moved.array[0] == AIR_HU).all()  # the lowest PET slices are below the moved CT
