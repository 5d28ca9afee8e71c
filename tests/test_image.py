"""The image type: geometry checked once, by the shared checks, when an image is made."""

from __future__ import annotations

import numpy as np
import pytest

from voxeldose import GeometryError, Image, InputError


def test_spacing_in_cm_is_refused_when_the_image_is_made():
    # was accepted here and refused only later by absorbed_dose: one rule now, at the start
    with pytest.raises(GeometryError, match="larger than 50 mm.*cm or m"):
        Image(np.zeros((2, 2, 2)), (100.0, 100.0, 100.0))
    with pytest.raises(GeometryError, match="positive"):
        Image(np.zeros((2, 2, 2)), (4.0, 0.0, 4.0))
    with pytest.raises(GeometryError, match="three values"):
        Image(np.zeros((2, 2, 2)), (4.0, 4.0))


def test_origin_and_direction_are_checked():
    with pytest.raises(GeometryError, match="finite"):
        Image(np.zeros((2, 2, 2)), (4.0, 4.0, 4.0), origin_mm=(0.0, float("nan"), 0.0))
    with pytest.raises(GeometryError, match="orthonormal"):
        Image(np.zeros((2, 2, 2)), (4.0, 4.0, 4.0), direction=(1, 0, 0, 0, 2, 0, 0, 0, 1))
    with pytest.raises(GeometryError, match="9"):
        Image(np.zeros((2, 2, 2)), (4.0, 4.0, 4.0), direction=(1, 0, 0, 1))


def test_array_is_read_only_and_must_be_3d():
    a = np.zeros((2, 3, 4))
    image = Image(a, (1.0, 2.0, 3.0))
    assert not image.array.flags.writeable
    assert a.flags.writeable  # the caller's array keeps its flags
    assert image.size_xyz == (4, 3, 2)
    assert image.voxel_volume_ml == pytest.approx(6e-3)
    with pytest.raises(InputError, match="3-D"):
        Image(np.zeros((2, 3)), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="shape"):
        image.with_array(np.zeros((2, 2, 2)))


def test_world_and_index_are_inverse():
    image = Image(np.zeros((3, 4, 5)), (1.5, 2.0, 3.0), origin_mm=(10.0, -5.0, 2.0),
                  direction=(0, 1, 0, -1, 0, 0, 0, 0, 1))
    ijk = np.array([[1.0, 2.0, 0.5], [4.0, 0.0, 2.0]])
    assert np.allclose(image.world_to_index(image.index_to_world(ijk)), ijk)
    assert image.same_grid(image.with_array(np.ones((3, 4, 5))))


def _box_of(array):
    """The bounding box of the voxels > 0, the plain way (np.nonzero)."""
    idx = np.nonzero(np.asarray(array) > 0)
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx) if idx[0].size else None


def test_a_mask_keeps_its_box_only_where_its_array_cannot_change():
    import pickle

    a = np.zeros((6, 7, 8), np.float32)
    a[1:3, 2:5, 4] = 0.25
    # the caller's writeable array: a read-only view of memory the caller may change; the box
    # is found again at every call, so a change shows (never a stale box)
    given = Image(a, (2.0, 2.0, 2.0), units="MASK")
    assert given.nonzero_box() == _box_of(a) and "_nonzero_box" not in given.__dict__
    a[5, 6, 7] = 1.0
    assert given.nonzero_box() == _box_of(a) == (slice(1, 6), slice(2, 7), slice(4, 8))
    # an array nothing can write (as the loaders and derive_vois hand over): found once, kept
    owned = a.copy()
    owned.setflags(write=False)
    kept = Image(owned, (2.0, 2.0, 2.0), units="MASK")
    assert kept.nonzero_box() == _box_of(owned) and kept.__dict__["_nonzero_box"] == _box_of(owned)
    # a read-only view of a writeable array is not enough
    view = a.view()
    view.setflags(write=False)
    viewed = Image(view, (2.0, 2.0, 2.0), units="MASK")
    assert viewed.nonzero_box() == _box_of(a) and "_nonzero_box" not in viewed.__dict__
    # a boolean mask becomes our own float copy: kept
    converted = Image(a > 0, (2.0, 2.0, 2.0), units="MASK")
    assert converted.nonzero_box() == _box_of(a) and "_nonzero_box" in converted.__dict__
    # a copy sent elsewhere (pickled, as to a batch worker) finds its box again
    assert "_nonzero_box" not in pickle.loads(pickle.dumps(kept)).__dict__
    assert pickle.loads(pickle.dumps(kept)).nonzero_box() == _box_of(owned)
    # an empty mask has no box
    assert Image(np.zeros((2, 2, 2), np.float32), (1.0,) * 3, units="MASK").nonzero_box() is None


def test_loaded_and_derived_vois_keep_their_boxes_and_the_dvh_is_unchanged(tmp_path):
    import voxeldose
    from voxeldose.dvh import dvh_array
    from voxeldose.phantoms.export import write_liver_case

    write_liver_case(tmp_path, write=("PET", "RTSTRUCT"))
    image = voxeldose.load_image(tmp_path / "PET")
    vois = voxeldose.load_vois(tmp_path / "RTSTRUCT.dcm", image)
    derived = voxeldose.derive_vois(vois, whole_liver="liver", tumours=[n for n in vois if n.startswith("tumour")])
    rng = np.random.default_rng(5)
    dose = image.with_array(rng.random(image.shape, dtype=np.float32) * 100, units="GY")
    for name, mask in {**vois, **derived}.items():
        assert mask.nonzero_box() == _box_of(mask.array) and "_nonzero_box" in mask.__dict__, name
        # the DVH from the kept box equals the DVH of the bare arrays, whose box is found anew
        ours = voxeldose.dvh(dose, mask, name=name)
        plain = dvh_array(dose.array, np.array(mask.array), spacing_xyz_mm=dose.spacing_mm, name=name)
        assert ours == plain, name  # volume, mean, min, max
        for a, b in zip(ours.dose_distribution(), plain.dose_distribution()):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_pickled_or_copied_image_stays_read_only(protocol):
    import copy
    import pickle

    image = Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), (1.0, 2.0, 3.0), units="MBQ")
    for other in (pickle.loads(pickle.dumps(image, protocol=protocol)), copy.deepcopy(image)):
        assert not other.array.flags.writeable  # before, protocols 2 and 4 and deepcopy gave writeable arrays
        np.testing.assert_array_equal(other.array, image.array)
        assert other.spacing_mm == image.spacing_mm and other.units == "MBQ"
        with pytest.raises(ValueError):
            other.array[0, 0, 0] = 1.0
