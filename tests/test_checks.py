"""The one module of argument checks that every public function and Image use."""

from __future__ import annotations

import numpy as np
import pytest

from voxeldose import GeometryError, InputError, VoiError
from voxeldose._checks import (
    check_between,
    check_choice,
    check_fraction,
    check_mask,
    check_number,
    check_positive,
    check_spacing,
)


@pytest.mark.parametrize("value", [True, "2.5", b"2", None, [1.0], float("nan"), float("inf")])
def test_numbers_are_numbers(value):
    # a number typed as text may carry a decimal comma or a unit: refused, not parsed
    with pytest.raises(InputError, match="administered_gbq"):
        check_number(value, "administered_gbq", "GBq")


def test_number_ranges_say_the_range_and_the_unit():
    assert check_number(np.float32(2.5), "x") == 2.5 and check_positive(3, "m", "kg") == 3.0
    with pytest.raises(InputError, match=r"mass_kg must be positive \(kg\), got 0"):
        check_positive(0, "mass_kg", "kg")
    with pytest.raises(InputError, match="between 0 and 100"):
        check_between(101, "percent", 0.0, 100.0)
    with pytest.raises(InputError, match="for 10 % write 0.1"):
        check_fraction(10, "lung_shunt_fraction", "the lung shunt fraction")
    with pytest.raises(InputError, match="'kernel' or 'local'"):
        check_choice("mc", "method", ("kernel", "local"))


def test_spacing_in_the_wrong_unit_is_caught():
    assert check_spacing((4, 4, 3)) == (4.0, 4.0, 3.0)
    with pytest.raises(GeometryError, match="spacing_xyz_mm z = 300.0 mm is larger than 50 mm"):
        check_spacing((4.0, 4.0, 300.0), name="spacing_xyz_mm")
    with pytest.raises(GeometryError, match="1e-30 mm is smaller than 0.01 mm"):
        check_spacing((4.0, 1e-30, 3.0))


@pytest.mark.parametrize("spacing", [True, (True, 4.0, 4.0), ("4", "4", "3"), "443", (4.0, np.bool_(True), 3.0)])
def test_spacing_must_be_numbers(spacing):
    """check_spacing accepted True (as 1 mm) and text ("4"), which `float` converts."""
    with pytest.raises(GeometryError, match="spacing_mm"):
        check_spacing(spacing)


def test_the_allocation_limit_is_stated_and_configurable(monkeypatch):
    from voxeldose._checks import MAX_VOXELS, check_allocation, max_voxels

    assert max_voxels() == MAX_VOXELS == 2**29
    check_allocation(MAX_VOXELS, "a full-size CT")
    with pytest.raises(InputError, match=r"a header needs 536,870,913 voxels, more than .* limit of 536,870,912 \(2 GiB"):
        check_allocation(MAX_VOXELS + 1, "a header")
    monkeypatch.setenv("VOXELDOSE_MAX_VOXELS", "10")
    with pytest.raises(InputError, match="limit of 10 "):
        check_allocation(11, "x")
    monkeypatch.setenv("VOXELDOSE_MAX_VOXELS", "lots")
    with pytest.raises(InputError, match="VOXELDOSE_MAX_VOXELS must be a whole number"):
        max_voxels()


def test_a_kernel_at_a_tiny_spacing_is_refused_before_allocating():
    """Spacing 0.05 mm asked for 50 GiB of shell weights (and ran out of memory)."""
    from voxeldose.kernels import y90_kernel

    with pytest.raises(InputError, match=r"the Y-90 kernel for voxels of 0.05 x 0.05 x 0.05 mm.*at least 0.2 mm"):
        y90_kernel((0.05, 0.05, 0.05))


def test_masks_are_checked_without_copying_a_valid_one():
    m = np.zeros((2, 2, 2), np.float32)
    m[0] = 1.0
    assert check_mask(m, (2, 2, 2), what="VOI 'a'", fix_shape="") is m  # no copy, float32 kept
    assert check_mask(m.astype(bool), None, what="VOI 'a'", fix_shape="").dtype == np.float32
    rounded = m + np.float32(1e-7)  # resampling round-off: clipped into [0, 1]
    assert check_mask(rounded, None, what="VOI 'a'", fix_shape="").max() == 1.0
    with pytest.raises(VoiError, match="VOI 'a'.*label map"):
        check_mask(m * 2, None, what="VOI 'a'", fix_shape="")
    with pytest.raises(VoiError, match="VOI 'a'.*NaN"):
        check_mask(np.full((2, 2, 2), np.nan), None, what="VOI 'a'", fix_shape="")
