"""The image type: geometry checked once, by the shared checks, when an image is made."""

from __future__ import annotations

from pathlib import Path

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


def test_a_mask_is_its_own_compact_copy_with_its_box():
    import copy
    import pickle

    from voxeldose.image import _MaskMemory

    a = np.zeros((6, 7, 8), np.float32)
    a[1:3, 2:5, 4] = 0.25
    # the caller's writeable array: the Image holds its own copy, so a later change to the
    # caller's array reaches neither the mask nor its box (never a stale box)
    given = Image(a, (2.0, 2.0, 2.0), units="MASK")
    assert given.__dict__["_nonzero_box"] == _box_of(a) == (slice(1, 3), slice(2, 5), slice(4, 5))
    a[5, 6, 7] = 1.0
    assert given.nonzero_box() == (slice(1, 3), slice(2, 5), slice(4, 5)) and given.array[5, 6, 7] == 0.0
    assert not np.shares_memory(given.array, a) and not given.array.flags.writeable
    # a read-only array, a read-only view and a boolean mask: the same values, each kept with its box
    owned = a.copy()
    owned.setflags(write=False)
    view = a.view()
    view.setflags(write=False)
    for source in (owned, view, a > 0):
        mask = Image(source, (2.0, 2.0, 2.0), units="MASK")
        np.testing.assert_array_equal(mask.array, np.asarray(source, np.float32))
        assert mask.array.dtype == (np.float32 if source.dtype == bool else source.dtype)
        assert mask.__dict__["_nonzero_box"] == _box_of(source) == (slice(1, 6), slice(2, 7), slice(4, 8))
    # a float64 mask stays float64, and the voxels outside the box are exact zeros
    wide = Image(a.astype(np.float64), (2.0, 2.0, 2.0), units="MASK")
    assert wide.array.dtype == np.float64 and np.array_equal(wide.array, a)
    # an Image made again from a mask's own array (with_array, replace) takes it as it is
    again = mask.with_array(mask.array)
    assert again.array is mask.array and again.nonzero_box() == mask.nonzero_box()
    # a view of part of it is another array: copied
    part = Image(mask.array[:, :, ::-1], (2.0, 2.0, 2.0), units="MASK")
    assert not np.shares_memory(part.array, mask.array)
    assert part.nonzero_box() == (slice(1, 6), slice(2, 7), slice(0, 4))
    # pickled or copied, a mask travels as its box and fractions and arrives compact, with its box
    big = np.zeros((40, 40, 40), np.float32)
    big[3:5, 6:8, 9:11] = 1.0
    big = Image(big, (2.0, 2.0, 2.0), units="MASK")
    for protocol in (2, 4, 5):
        # 40 x 40 x 40 float32 is 256,000 bytes; its 2 x 2 x 2 box and the metadata are ~2,000
        assert len(pickle.dumps(big, protocol=protocol)) < 5_000
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(big, protocol=protocol)).array, big.array)
        data = pickle.dumps(mask, protocol=protocol)
        back = pickle.loads(data) if protocol != 2 else copy.deepcopy(mask)
        np.testing.assert_array_equal(back.array, mask.array)
        assert back.__dict__["_nonzero_box"] == mask.nonzero_box() and not back.array.flags.writeable
        base = back.array
        while isinstance(base, np.ndarray):
            base = base.base
        assert isinstance(base.obj, _MaskMemory)
    # an empty mask has no box
    empty = Image(np.zeros((2, 2, 2), np.float32), (1.0,) * 3, units="MASK")
    assert empty.nonzero_box() is None and pickle.loads(pickle.dumps(empty)).nonzero_box() is None
    assert not pickle.loads(pickle.dumps(empty)).array.any()


def test_a_mask_without_a_mapping_is_a_plain_array_with_the_same_values(monkeypatch):
    import voxeldose.image as image_module

    class refuse(image_module._MaskMemory):
        def __new__(cls, *args, **kwargs):
            raise OSError(12, "Cannot allocate memory")

    a = np.zeros((6, 7, 8), np.float32)
    a[1:3, 2:5, 4] = 0.25
    monkeypatch.setattr(image_module, "_MaskMemory", refuse)
    mask = Image(a, (2.0, 2.0, 2.0), units="MASK")
    np.testing.assert_array_equal(mask.array, a)
    assert mask.nonzero_box() == _box_of(a) and not mask.array.flags.writeable and not np.shares_memory(mask.array, a)


def _resident_bytes(array):
    """Bytes of the pages holding ``array`` that are resident (Linux ``mincore``, page by page)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    page = mmap.PAGESIZE
    address = array.__array_interface__["data"][0]
    start = address - address % page
    length = address + array.nbytes - start
    pages = (length + page - 1) // page
    vec = ctypes.create_string_buffer(pages)
    if libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(length), vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore failed")
    return sum(b & 1 for b in vec.raw) * page


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads residency with Linux's mincore")
def test_a_mask_takes_the_memory_of_its_box_not_of_the_grid():
    # 100 x 200 x 200 float32 (16 MB) with a 10 x 20 x 20 box: each of its 10 slices holds 20 rows
    # of 800 bytes, 4-5 pages of 4 KB; resident about 10 x 5 pages = 0.2 MB (1 MB allows for larger
    # pages and the mapping's first page). The grid's own array, every page written, is 16 MB.
    grid = np.full((100, 200, 200), 0.0, np.float32)
    grid[40:50, 90:110, 90:110] = 0.5
    assert _resident_bytes(grid) > 15_000_000
    mask = Image(grid, (2.0, 2.0, 2.0), units="MASK")
    del grid
    assert _resident_bytes(mask.array) < 1_000_000  # before anything reads it (a read maps the zero page)
    assert mask.array.nbytes == 16_000_000 and float(mask.array.sum()) == 0.5 * 4000
    np.testing.assert_array_equal(np.nonzero(mask.array)[0], np.repeat(np.arange(40, 50), 400))


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
