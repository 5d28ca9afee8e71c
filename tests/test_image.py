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
