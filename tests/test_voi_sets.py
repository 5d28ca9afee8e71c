"""Derived VOIs: normal liver, tumour union, perfused normal liver, and the conflicts reported."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from voxeldose import Image
from voxeldose.errors import InputError, VoiError, VoxelDoseWarning
from voxeldose.voi_sets import derive_vois


def derive(vois, **kwargs):
    """derive_vois on masks given as arrays (4 mm voxels): the derived masks as arrays, and the
    conflicts it reported (its caveats, as VoxelDoseWarnings)."""
    images = {n: m if isinstance(m, Image) else Image(np.asarray(m, float), (4.0, 4.0, 4.0), units="MASK")
              for n, m in vois.items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        derived = derive_vois(images, **kwargs)
    assert all(w.category is VoxelDoseWarning for w in caught)
    assert all(d.units == "MASK" and d.same_grid(images[kwargs["whole_liver"]]) for d in derived.values())
    return {n: d.array for n, d in derived.items()}, [str(w.message) for w in caught]


def box(shape, z, y, x, value=1.0):
    m = np.zeros(shape)
    m[z, y, x] = value
    return m


SHAPE = (6, 10, 10)


def test_disjoint_tumours_and_shared_boundary_voxels_are_not_conflicts():
    liver = box(SHAPE, slice(0, 6), slice(0, 10), slice(0, 10))
    t1 = box(SHAPE, slice(1, 3), slice(1, 3), slice(1, 3))
    t2 = box(SHAPE, slice(3, 5), slice(5, 8), slice(5, 8))
    # a voxel shared by two tumours, half each: the union fills it (sum), no overlap reported
    t1[4, 4, 4] = 0.5
    t2[4, 4, 4] = 0.5
    vois = {"liver": liver, "t1": t1, "t2": t2}
    copies = {k: v.copy() for k, v in vois.items()}
    derived, messages = derive(vois, whole_liver="liver", tumours=["t1", "t2"])
    assert messages == []
    assert sorted(derived) == ["normal_liver", "tumours"]
    assert all(m.dtype == np.float32 for m in derived.values())
    assert derived["tumours"][4, 4, 4] == 1.0  # max would give 0.5 and lose half a voxel
    assert derived["tumours"].sum() == pytest.approx(8 + 18 + 1)
    assert derived["normal_liver"].sum() == pytest.approx(600 - 27)
    assert derived["normal_liver"][4, 4, 4] == 0.0
    for k, v in vois.items():
        np.testing.assert_array_equal(v, copies[k])  # inputs untouched


def test_overlapping_tumours_are_counted_once_and_reported():
    liver = box(SHAPE, slice(0, 6), slice(0, 10), slice(0, 10))
    a = box(SHAPE, slice(1, 4), slice(1, 4), slice(1, 4))  # 27 voxels
    b = box(SHAPE, slice(2, 5), slice(2, 5), slice(2, 5))  # 27 voxels, 8 shared with a
    b[1, 1, 1] = 0.25  # and a quarter claim on a voxel a fills: 0.25 more overlap
    derived, messages = derive({"liver": liver, "a": a, "b": b}, whole_liver="liver", tumours=["a", "b"])
    assert len(messages) == 1
    assert "tumours 'a' and 'b' overlap by 8.25 voxel(s)" in messages[0]
    assert "in 9 voxel(s)" in messages[0]
    assert derived["tumours"].sum() == pytest.approx(27 + 27 - 8)  # the union, each voxel once
    assert derived["normal_liver"].sum() == pytest.approx(600 - 46)


def test_tumour_outside_the_liver_is_kept_and_reported():
    liver = box(SHAPE, slice(0, 6), slice(0, 5), slice(0, 10))
    t = box(SHAPE, slice(2, 4), slice(3, 7), slice(3, 5))  # 16 voxels, half (y >= 5) outside
    derived, messages = derive({"liver": liver, "t": t}, whole_liver="liver", tumours="t")
    assert messages == ["tumour 't': 8.00 voxel(s) (50.0 % of it) lie outside 'liver'; kept in 'tumours', "
                        "not taken from 'normal_liver'"]
    assert derived["tumours"].sum() == 16  # kept as drawn
    assert derived["normal_liver"].sum() == 300 - 8  # only the part inside is taken out


def test_perfused_normal_liver_is_the_minimum_of_fractions():
    liver = box(SHAPE, slice(0, 6), slice(0, 10), slice(0, 5))
    liver[:, :, 5] = 0.5  # liver edge: half of each voxel
    tumour = box(SHAPE, slice(2, 3), slice(2, 3), slice(2, 3))
    perfused = box(SHAPE, slice(0, 6), slice(0, 10), slice(2, 8))  # reaches beyond the liver
    perfused[:, :, 2] = 0.5
    derived, messages = derive({"liver": liver, "t": tumour, "p": perfused}, whole_liver="liver",
                                    tumours=["t"], perfused="p")
    pnl = derived["perfused_normal_liver"]
    assert pnl[0, 0, 5] == 0.5  # both half: the territory holds the liver part (product: 0.25)
    assert pnl[0, 0, 2] == 0.5 and pnl[2, 2, 2] == 0.0 and pnl[0, 0, 1] == 0.0
    assert pnl.sum() == pytest.approx(59 * 0.5 + 120 + 60 * 0.5)  # x = 2 (less the tumour), 3-4, 5
    assert len(messages) == 1 and messages[0].startswith("perfused territory 'p': 150.00 voxel(s)")


def test_errors_name_the_problem():
    liver = np.ones(SHAPE)
    with pytest.raises(VoiError, match=r"no VOI named 'Liver'; the VOIs are: 'liver', 't'"):
        derive({"liver": liver, "t": liver}, whole_liver="Liver", tumours=["t"])
    with pytest.raises(VoiError, match="no VOI named 'x'"):
        derive({"liver": liver}, whole_liver="liver", tumours=[], perfused="x")
    with pytest.raises(VoiError, match=r"VOI 't': its grid \(shape \(2, 2, 2\).*differs.*resample"):
        derive({"liver": liver, "t": np.ones((2, 2, 2))}, whole_liver="liver", tumours=["t"])
    with pytest.raises(VoiError, match="is it a label map"):
        derive({"liver": liver * 2, "t": liver}, whole_liver="liver", tumours=["t"])
    with pytest.raises(VoiError, match="as the whole liver and as a tumour"):
        derive({"liver": liver}, whole_liver="liver", tumours=["liver"])
    with pytest.raises(VoiError, match="more than once"):
        derive({"liver": liver, "t": liver}, whole_liver="liver", tumours=["t", "t"])
    with pytest.raises(InputError, match="sequence of VOI names"):
        derive({"liver": liver}, whole_liver="liver", tumours=[1])  # type: ignore[list-item]
    with pytest.raises(InputError, match="not a mask Image.*mask_image"):
        derive_vois({"liver": liver}, whole_liver="liver", tumours=[])  # arrays carry no grid


def test_no_tumours_leaves_the_liver():
    liver = np.random.default_rng(0).random(SHAPE)
    derived, messages = derive({"liver": liver}, whole_liver="liver", tumours=[])
    np.testing.assert_allclose(derived["normal_liver"], liver, rtol=1e-7)  # float32
    assert derived["tumours"].sum() == 0 and messages == []


def test_reproduces_the_liver_phantom_masks(liver):
    # the phantom builds its derived masks with the same rules (clip of the sum, clipped difference)
    names = [n for n in liver.masks if n.startswith("tumour_")]
    derived, messages = derive(liver.vois, whole_liver="liver", tumours=names)
    ph = liver
    assert messages == []  # the phantom's tumours lie inside the liver and apart
    np.testing.assert_allclose(derived["tumours"], ph.masks["tumours"], atol=1e-6)  # float32
    np.testing.assert_allclose(derived["normal_liver"], ph.masks["normal_liver"], atol=1e-6)


fractions = arrays(np.float64, (3, 4, 5), elements=st.floats(0.0, 1.0))


@settings(max_examples=50, deadline=None)
@given(liver=fractions, a=fractions, b=fractions, p=fractions)
def test_derived_masks_partition_the_liver(liver, a, b, p):
    derived, _ = derive({"liver": liver, "a": a, "b": b, "p": p}, whole_liver="liver", tumours=["a", "b"],
                             perfused="p")
    union = derived["tumours"].astype(float)
    normal = derived["normal_liver"].astype(float)
    for m in derived.values():
        assert m.min() >= 0.0 and m.max() <= 1.0
    # every voxel's liver part is split into normal liver and the tumour part inside the liver
    np.testing.assert_allclose(normal + np.minimum(union, liver), liver, atol=1e-6)  # float32 rounding
    np.testing.assert_allclose(union, np.clip(a + b, 0, 1), atol=1e-6)
    assert np.all(derived["perfused_normal_liver"] <= normal + 1e-7)
    assert np.all(derived["perfused_normal_liver"] <= p + 1e-7)


def test_the_bounding_box_arithmetic_is_the_whole_grids():
    # union, normal liver and the out-of-liver sums work on each mask's bounding box: the same
    # numbers voxel by voxel as the whole-grid definitions (module rules), to the bit
    from voxeldose.voi_sets import union_of

    rng = np.random.default_rng(11)
    shape = (20, 24, 28)
    liver = np.zeros(shape, np.float32)
    liver[2:18, 3:20, 4:25] = rng.random((16, 17, 21)).astype(np.float32)
    tumours = []
    for z, y, x in ((3, 4, 5), (8, 10, 12), (12, 15, 18)):
        t = np.zeros(shape, np.float32)
        t[z:z + 6, y:y + 7, x:x + 8] = rng.random((6, 7, 8)).astype(np.float32)
        tumours.append(t)
    tumours.append(np.zeros(shape, np.float32))  # an empty one
    expected = np.clip(sum(t.astype(np.float64) for t in tumours), 0.0, 1.0).astype(np.float32)
    assert np.array_equal(union_of(tumours, shape), expected)
    derived, caveats = derive({"liver": liver, **{f"t{i}": t for i, t in enumerate(tumours[:3])}},
                              whole_liver="liver", tumours=["t0", "t1", "t2"])
    union = np.clip(sum(t.astype(np.float64) for t in tumours[:3]), 0.0, 1.0).astype(np.float32)
    assert np.array_equal(derived["tumours"], union)
    assert np.array_equal(derived["normal_liver"], np.clip(liver.astype(np.float64) - union, 0.0, 1.0).astype(np.float32))
    outside = float(np.clip(tumours[0].astype(np.float64) - liver, 0.0, 1.0).sum())
    assert any(c.startswith(f"tumour 't0': {outside:.2f} voxel(s)") for c in caveats)
