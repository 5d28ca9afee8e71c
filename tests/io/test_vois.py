"""VOIs in: RTSTRUCT rasterisation, SEG and label maps onto a reference grid, and the writers.

Inputs are built here: a synthetic CT series (pydicom datasets, geometry only), structure sets
from analytic polygons via ``write_rtstruct``, segmentations via ``write_seg``, label maps via
SimpleITK.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pydicom
import pytest

import voxeldose
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from voxeldose.errors import (
    DicomError,
    InputError,
    VoiError,
    VoxelDoseError,
    VoxelDoseWarning,
)
from voxeldose.image import Image, ImageMeta
from voxeldose.io.vois import load_vois as _load_vois
from voxeldose.io.vois import plane_coverage
from voxeldose.io.write_vois import (
    RTSTRUCT_SOP,
    ellipsoid_polygons,
    interpreted_type,
    write_rtstruct,
    write_seg,
)
from voxeldose.phantoms import ellipsoid_fraction

FOR_UID = "1.2.826.0.1.3680043.8.498.1"
CT_SOP = "1.2.840.10008.5.1.4.1.1.2"


def load_vois(path, reference, **kwargs):
    """:func:`voxeldose.load_vois`, checked to return mask images on the reference's grid, with
    the masks as arrays (these tests check the fractions voxel by voxel)."""
    vois = _load_vois(path, reference, **kwargs)
    for mask in vois.values():
        assert mask.units == "MASK" and mask.same_grid(reference) and mask.array.dtype == np.float32
    return {name: mask.array for name, mask in vois.items()}


# --------------------------------------------------------------------------- helpers


def ct_series(shape_zyx, spacing_xyz, origin_xyz, *, for_uid=FOR_UID, shuffle=False):
    """Pydicom datasets of an axial CT series (zero pixels) with the given geometry."""
    nz, ny, nx = shape_zyx
    study, series = generate_uid(), generate_uid()
    out = []
    for k in range(nz):
        ds = Dataset()
        ds.SOPClassUID = CT_SOP
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName = "Test^Voi"
        ds.PatientID = "VOI-001"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = for_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20260115", "090000", "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.Modality = "CT"
        ds.Manufacturer = "test"
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin_xyz[0], origin_xyz[1], origin_xyz[2] + k * spacing_xyz[2]]
        ds.PixelSpacing = [spacing_xyz[1], spacing_xyz[0]]
        ds.SliceThickness = spacing_xyz[2]
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.zeros((ny, nx), np.int16).tobytes()
        out.append(ds)
    if shuffle:
        order = np.random.default_rng(3).permutation(nz)
        out = [out[i] for i in order]
    return out


def series_image(datasets, for_uid=FOR_UID):
    """The Image (zeros) on the grid of an axial series, slices sorted by z."""
    dss = sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2]))
    z = [float(d.ImagePositionPatient[2]) for d in dss]
    sy, sx = (float(v) for v in dss[0].PixelSpacing)
    origin = tuple(float(v) for v in dss[0].ImagePositionPatient)
    shape = (len(dss), int(dss[0].Rows), int(dss[0].Columns))
    return Image(np.zeros(shape, np.float32), (sx, sy, z[1] - z[0]), origin,
                 meta=ImageMeta(frame_of_reference_uid=for_uid))


def reference(shape_zyx, spacing_xyz, origin_xyz, *, direction=None, for_uid=FOR_UID):
    kwargs = {} if direction is None else {"direction": tuple(np.asarray(direction, float).reshape(-1))}
    return Image(np.zeros(shape_zyx, np.float32), spacing_xyz, origin_xyz,
                 meta=ImageMeta(frame_of_reference_uid=for_uid), **kwargs)


def centred_reference(fov_mm, spacing_xyz, *, shift_mm=(0.0, 0.0, 0.0), **kwargs):
    """A grid covering about [-fov/2, fov/2] mm on each axis, shifted by shift_mm."""
    n = [int(math.ceil(fov_mm / s)) for s in spacing_xyz]
    origin = [-(k - 1) / 2 * s + d for k, s, d in zip(n, spacing_xyz, shift_mm)]
    return reference(tuple(n[::-1]), spacing_xyz, tuple(origin), **kwargs)


def sphere_ml(radius_mm):
    return 4.0 / 3.0 * math.pi * radius_mm**3 * 1e-3


def volume_ml(mask, ref):
    return float(mask.sum(dtype=np.float64)) * ref.voxel_volume_ml


def centroid_mm(mask, ref):
    k, j, i = np.indices(mask.shape)
    w = mask.astype(np.float64)
    idx = np.array([(i * w).sum(), (j * w).sum(), (k * w).sum()]) / w.sum()
    return ref.index_to_world(idx)


def square(x0, x1, y0, y1, z, *, clockwise=False):
    pts = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], float)
    return pts[::-1] if clockwise else pts


def sphere_rtstruct(tmp_path, centre, radius, plane_mm, *, plane_offset=0.0, pixel_mm=0.8, name="sphere",
                    for_uid=FOR_UID):
    """An RTSTRUCT of a sphere contoured on every slice of a CT with ``plane_mm`` slices."""
    n_planes = int(math.ceil(2 * (radius + 2 * plane_mm) / plane_mm)) + 1
    z0 = centre[2] - (n_planes - 1) / 2 * plane_mm + plane_offset
    n_pix = int(math.ceil(2 * (abs(centre[0]) + abs(centre[1]) + radius + 5) / pixel_mm))
    ct = ct_series((n_planes, n_pix, n_pix), (pixel_mm, pixel_mm, plane_mm),
                   (-(n_pix - 1) / 2 * pixel_mm, -(n_pix - 1) / 2 * pixel_mm, z0), for_uid=for_uid)
    z = [float(d.ImagePositionPatient[2]) for d in ct]
    path = write_rtstruct(tmp_path / f"{name}.dcm", {name: ellipsoid_polygons(centre, (radius,) * 3, z)}, ct)
    return path, np.asarray(z)


# --------------------------------------------------------------------------- writers


def test_ellipsoid_polygons_area_preserving_and_planes_outside():
    polys = ellipsoid_polygons((1.0, -2.0, 3.0), (20.0, 10.0, 5.0), [3.0 - 5.0, 3.0, 4.0, 9.0], n_points=64)
    assert len(polys) == 2  # the pole plane (z = -2) and a plane beyond (z = 9) give none
    for poly, z in zip(polys, (3.0, 4.0)):
        x, y = poly[:, 0], poly[:, 1]
        area = 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)
        s = 1 - ((z - 3.0) / 5.0) ** 2
        assert area == pytest.approx(math.pi * 20 * 10 * s, rel=1e-12)  # counter-clockwise, exact area
        assert np.all(poly[:, 2] == z)
    inscribed = ellipsoid_polygons((0, 0, 0), (10, 10, 10), [0.0], n_points=64, area_preserving=False)[0]
    assert np.allclose(np.hypot(inscribed[:, 0], inscribed[:, 1]), 10.0)
    with pytest.raises(InputError, match="semi_axes_mm"):
        ellipsoid_polygons((0, 0, 0), (10, 0, 10), [0.0])


def test_write_rtstruct_reads_back_with_names_colours_types_and_references(tmp_path):
    ct = ct_series((8, 40, 40), (1.0, 1.0, 2.0), (-19.5, -19.5, -7.0), shuffle=True)
    z = np.arange(8) * 2.0 - 7.0
    rois = {
        "liver": ellipsoid_polygons((0, 0, 0), (15, 12, 6), z),
        "tumour_1": ellipsoid_polygons((3, 2, 0), (4, 4, 4), z),
        "between": [square(-5, 5, -5, 5, -6.0)],  # half-way between two slices
        "empty": [],
    }
    path = write_rtstruct(tmp_path / "rs.dcm", rois, ct, label="test set", colours={"liver": (1, 2, 3)})
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == RTSTRUCT_SOP and ds.Modality == "RTSTRUCT"
    assert ds.file_meta.MediaStorageSOPClassUID == RTSTRUCT_SOP
    assert ds.PatientName == "Test^Voi" and ds.PatientID == "VOI-001"
    assert ds.StudyInstanceUID == ct[0].StudyInstanceUID
    assert ds.StructureSetLabel == "test set"
    for_item = ds.ReferencedFrameOfReferenceSequence[0]
    assert for_item.FrameOfReferenceUID == FOR_UID
    series = for_item.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == ct[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in series.ContourImageSequence} == {d.SOPInstanceUID for d in ct}
    assert [r.ROIName for r in ds.StructureSetROISequence] == list(rois)
    assert [r.ReferencedFrameOfReferenceUID for r in ds.StructureSetROISequence] == [FOR_UID] * 4
    assert [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence] == ["ORGAN", "GTV", "ORGAN", "ORGAN"]
    contours = {c.ReferencedROINumber: c for c in ds.ROIContourSequence}
    assert list(contours[1].ROIDisplayColor) == [1, 2, 3]
    assert "ContourSequence" not in contours[4]
    by_z = {float(d.ImagePositionPatient[2]): d.SOPInstanceUID for d in ct}
    for item in contours[1].ContourSequence:
        pts = np.asarray(item.ContourData, float).reshape(-1, 3)
        assert item.ContourGeometricType == "CLOSED_PLANAR" and item.NumberOfContourPoints == len(pts)
        assert item.ContourImageSequence[0].ReferencedSOPInstanceUID == by_z[pts[0, 2]]
    assert "ContourImageSequence" not in contours[3].ContourSequence[0]  # not on a slice
    assert interpreted_type("GTV_2") == "GTV" and interpreted_type("T3") == "GTV"
    assert interpreted_type("lungs") == "ORGAN"


def test_write_rtstruct_rejects_bad_polygons(tmp_path):
    ct = ct_series((3, 8, 8), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="ROI 'bad', polygon 1"):
        write_rtstruct(tmp_path / "rs.dcm", {"bad": [np.zeros((2, 3))]}, ct)
    with pytest.raises(InputError, match="rois is empty"):
        write_rtstruct(tmp_path / "rs.dcm", {}, ct)


# --------------------------------------------------------------------------- RTSTRUCT: volumes


SPHERE_CASES = [
    # (diameter mm, contour plane spacing mm, reference spacing (x, y, z) mm): planes from R/10
    # to R/2 apart, on CT-like and PET/SPECT-like grids
    (20.0, 1.0, (2.0, 2.0, 2.0)),
    (20.0, 2.5, (4.0, 4.0, 4.0)),
    (20.0, 4.0, (4.0, 4.0, 4.0)),
    (20.0, 5.0, (4.42, 4.42, 4.42)),
    (24.0, 2.0, (3.0, 3.0, 5.0)),
    (24.0, 6.0, (4.0, 4.0, 4.0)),
    (30.0, 3.0, (5.0, 5.0, 2.5)),
    (30.0, 5.0, (4.42, 4.42, 4.42)),
    (40.0, 2.5, (2.0, 3.0, 4.0)),
]


@pytest.mark.parametrize("diameter, plane_mm, spacing", SPHERE_CASES)
def test_sphere_volume_within_one_percent(tmp_path, diameter, plane_mm, spacing):
    rng = np.random.default_rng(int(diameter * 10 + plane_mm * 100))
    radius = diameter / 2
    for trial in range(3):
        centre = tuple(rng.uniform(-4, 4, 3))
        path, z = sphere_rtstruct(tmp_path, centre, radius, plane_mm, plane_offset=rng.uniform(0, plane_mm),
                                  name=f"s{trial}")
        ref = centred_reference(2 * diameter + 20, spacing, shift_mm=tuple(rng.uniform(-2, 2, 3)))
        mask = load_vois(path, ref)[f"s{trial}"]
        assert mask.dtype == np.float32 and mask.shape == ref.shape
        assert mask.min() >= 0.0 and mask.max() <= 1.0
        # the criterion: 1 %. The interpolation is exact for a sphere (phi quadratic in z,
        # rounded caps), so what is left is sampling: <= 0.5 mm sub-samples with linear
        # anti-aliasing in the plane, midpoint sub-planes along z. Measured over 224 random
        # spheres of 20-40 mm with planes 1-6 mm apart (benchmarks/bench_vois.py and a second
        # set): within 0.7 %, within 0.45 % for planes up to R/2 apart: 0.5 % here for h <= R/2.
        tol = 0.005 if plane_mm <= radius / 2 else 0.01
        assert volume_ml(mask, ref) == pytest.approx(sphere_ml(radius), rel=tol)


def test_planes_through_the_poles(tmp_path):
    # planes every 2.5 mm with one through each pole of a 20 mm sphere: the slab rule lost the
    # caps beyond the last planes (-h^2 / (4 R^2) = -1.6 %); the rounded ends close them
    path, z = sphere_rtstruct(tmp_path, (0.0, 0.0, 0.0), 10.0, 2.5)
    assert np.any(np.isclose(z, 10.0))
    ref = centred_reference(40, (4.0, 4.0, 4.0))
    mask = load_vois(path, ref)["sphere"]
    assert volume_ml(mask, ref) == pytest.approx(sphere_ml(10.0), rel=0.005)
    # and a pole drawn as a point-like polygon (an area of 0) ends the sphere there
    polys = ellipsoid_polygons((0.0, 0.0, 0.0), (10.0,) * 3, z) + [
        np.array([[0.0, 0.0, zz], [1e-4, 0.0, zz], [0.0, 1e-4, zz]]) for zz in (-10.0, 10.0)]
    ct = ct_series((len(z), 60, 60), (0.8, 0.8, 2.5), (-23.6, -23.6, float(z[0])))
    mask = load_vois(write_rtstruct(tmp_path / "poles.dcm", {"sphere": polys}, ct), ref)["sphere"]
    assert volume_ml(mask, ref) == pytest.approx(sphere_ml(10.0), rel=0.005)


@pytest.mark.parametrize("plane_mm", [2.0, 3.0, 5.0])
def test_other_quadric_shapes(tmp_path, plane_mm):
    # the cross-section area of a cone, a spheroid or a cylinder is quadratic in z: their volumes
    # are kept like the sphere's, whatever the plane spacing. Cone: 30 mm high, base radius 12
    # mm, apex between planes; oblate spheroid 24 x 24 x 12 mm (a / c = 2: the largest phi
    # curvature followed in full); cylinder of radius 10 mm, flat ends half a spacing beyond the
    # end planes (the convention for ends that do not close): 0.5 % as for the sphere.
    z = np.arange(-30.0, 30.0 + 1e-9, plane_mm) + 0.37
    ct = ct_series((len(z), 80, 80), (0.8, 0.8, plane_mm), (-31.6, -31.6, float(z[0])))
    apex, base, height = 15.0, -15.0, 30.0
    cone = [ellipsoid_polygons((0.0, 0.0, zz), (12.0 * (apex - zz) / height,) * 2 + (1.0,), zz)[0]
            for zz in z if base <= zz < apex]
    spheroid = ellipsoid_polygons((0.0, 0.0, 0.0), (12.0, 12.0, 6.0), z)
    inside = z[(z >= -10.0) & (z <= 10.0)]
    cylinder = [ellipsoid_polygons((0.0, 0.0, zz), (10.0, 10.0, 1.0), zz)[0] for zz in inside]
    path = write_rtstruct(tmp_path / "shapes.dcm", {"cone": cone, "spheroid": spheroid, "cylinder": cylinder}, ct)
    ref = centred_reference(70, (4.0, 4.0, 4.0))
    vois = load_vois(path, ref)
    # the cone's base is cut flat at z = -15 mm: its area grows towards that end, so the end is
    # the first contour continued half a spacing down (a cap never leaves the end contour)
    first = float(z[z >= base][0])
    r_first = 12.0 * (apex - first) / height
    cone_ml = math.pi * r_first**2 * ((apex - first) / 3.0 + plane_mm / 2.0) * 1e-3
    assert volume_ml(vois["cone"], ref) == pytest.approx(cone_ml, rel=0.005)
    assert volume_ml(vois["spheroid"], ref) == pytest.approx(4 / 3 * math.pi * 12 * 12 * 6 * 1e-3, rel=0.01)
    cyl_ml = math.pi * 100.0 * (len(inside) * plane_mm) * 1e-3
    assert volume_ml(vois["cylinder"], ref) == pytest.approx(cyl_ml, rel=0.005)


def test_interpolation_does_not_bridge_parts(tmp_path):
    # two bars side by side on five planes, one wide bar on the next five: the shapes change
    # abruptly between planes 4 and 5; the interpolation may not fill the gap between the bars
    # below plane 4 (outside in both neighbouring planes), nor leave the wide bar
    ct = ct_series((10, 40, 40), (1.0, 1.0, 3.0), (-19.5, -19.5, 0.0))
    z = [float(d.ImagePositionPatient[2]) for d in ct]
    polys = [p for zz in z[:5] for p in (square(-12, -4, -6, 6, zz), square(4, 12, -6, 6, zz))]
    polys += [square(-12, 12, -6, 6, zz) for zz in z[5:]]
    ref = reference((18, 20, 20), (2.0, 2.0, 2.0), (-19.0, -19.0, -3.0))
    mask = load_vois(write_rtstruct(tmp_path / "bars.dcm", {"bars": polys}, ct), ref)["bars"]
    k_of = lambda zz: int(round((zz - ref.origin_mm[2]) / 2.0))  # noqa: E731
    gap = mask[:, 10, 9:11]  # y = 1 mm, x = -1 .. 1 mm: between the bars
    assert gap[: k_of(z[3]) + 1].max() == 0.0  # below plane 3: nothing between the bars
    assert gap[k_of(z[6]):k_of(z[9]) + 1].min() == 1.0  # the wide bar is full
    assert mask[:, :, :3].max() == 0.0 and mask[:, :, 17:].max() == 0.0  # nothing beyond x = +-13 mm


def test_end_extent():
    from voxeldose.io._rasterise import end_extent

    z = np.array([2.5, 5.0, 7.5])
    # sphere of radius 10: the area pi (100 - z^2) reaches 0 at the pole, one spacing beyond
    assert end_extent(math.pi * (100 - z**2), z, 1.0) == pytest.approx(2.5)
    # a cone's apex (a double root of the area) one spacing beyond, and half a spacing beyond
    assert end_extent(math.pi * (10 - z) ** 2, z, 1.0) == pytest.approx(2.5, rel=1e-6)
    assert end_extent(math.pi * (8.75 - z) ** 2, z, 1.0) == pytest.approx(1.25, rel=1e-6)
    # the same planes taken from the other end (positions decreasing towards the end)
    assert end_extent(math.pi * (100 - z**2), -z, 1.0) == pytest.approx(2.5)
    # flat end: half a spacing; growing end: half a spacing
    assert end_extent(np.array([4.0, 4.0, 4.0]), z, 1.0) == pytest.approx(1.25)
    assert end_extent(np.array([1.0, 2.0, 3.0]), z, 1.0) == pytest.approx(1.25)
    # slowly closing (linear area reaching 0 at c = 2h): h/2 + h^2 / (2c), between the two rules
    assert end_extent(np.array([3.0, 2.0]), np.array([0.0, 1.0]), 1.0) == pytest.approx(0.5 + 1 / 4)
    # continuous at c = h
    assert end_extent(np.array([2.0, 1.0]), np.array([0.0, 1.0]), 1.0) == pytest.approx(1.0)
    # one plane: half the fallback step; an end plane that encloses nothing: the end is there
    assert end_extent(np.array([5.0]), np.array([3.0]), 2.0) == pytest.approx(1.0)
    assert end_extent(np.array([5.0, 0.0]), np.array([0.0, 1.0]), 1.0) == pytest.approx(0.0, abs=1e-6)


def test_fractions_match_the_analytic_sphere_voxel_by_voxel(tmp_path):
    # 1 mm planes, 4 mm voxels: each voxel's fraction agrees with the analytic sub-sampled sphere
    # (itself sampled at 4 mm / 8 per axis: its own error is up to ~1/16 in a voxel that the
    # surface crosses). The interpolated surface is the sphere; measured: 0.02 at most
    path, _ = sphere_rtstruct(tmp_path, (1.3, -0.7, 0.4), 15.0, 1.0)
    ref = centred_reference(48, (4.0, 4.0, 4.0))
    mask = load_vois(path, ref)["sphere"]
    truth = ellipsoid_fraction(ref.shape, ref.spacing_mm, ref.origin_mm, (1.3, -0.7, 0.4), (15.0,) * 3)
    assert np.abs(mask - truth).max() < 0.05
    assert np.abs(mask - truth).sum() < 0.01 * truth.sum()  # measured 0.4 %


# --------------------------------------------------------------------------- RTSTRUCT: geometry


def test_holes_and_two_contours_on_one_slice(tmp_path):
    # 2 mm voxels with edges at even mm; squares on voxel edges give exact 0/1 voxels, and a
    # hole edge through voxel centres gives exactly 1/2
    ct = ct_series((5, 40, 40), (1.0, 1.0, 2.0), (-19.5, -19.5, -4.0))
    z = [float(d.ImagePositionPatient[2]) for d in ct]
    ref = reference((5, 30, 30), (2.0, 2.0, 2.0), (-29.0, -29.0, -4.0))
    rois = {
        "ring": [p for zz in z for p in (square(-20, 20, -20, 20, zz), square(-10, 10, -10, 10, zz, clockwise=True))],
        "two": [p for zz in z for p in (square(-28, -24, -28, -24, zz), square(24, 28, 24, 28, zz))],
        "half": [p for zz in z for p in (square(-20, 20, -20, 20, zz), square(-9, 9, -9, 9, zz))],
    }
    vois = load_vois(write_rtstruct(tmp_path / "rs.dcm", rois, ct), ref)
    ring, two, half = vois["ring"], vois["two"], vois["half"]
    assert set(np.unique(ring)) == {0.0, 1.0}
    assert ring.sum() == 5 * (20 * 20 - 10 * 10)  # 40 mm square minus the 20 mm hole, 5 slices
    assert ring[2, 15, 15] == 0.0 and ring[2, 15, 6] == 1.0  # the hole is empty, the ring full
    assert two.sum() == 5 * 2 * 4 and two[2, 1, 1] == 1.0 and two[2, 27, 27] == 1.0
    # hole of 18 mm: its edges at +-9 mm cut the voxels centred on +-9 mm in half
    assert half.sum() * 8.0 == pytest.approx(5 * 2.0 * (40 * 40 - 18 * 18), rel=1e-9)
    assert half[2, 10, 15] == pytest.approx(0.5, abs=1e-9)  # x = 1 mm, y = -9 mm: half in the hole


def test_plane_coverage_matches_shoelace_area_and_orientation_does_not_matter():
    rng = np.random.default_rng(7)
    t = np.sort(rng.uniform(0, 2 * np.pi, 40))
    r = rng.uniform(3, 8, 40)
    star = np.stack([10 + r * np.cos(t), 12 + r * np.sin(t)], -1)
    area = 0.5 * abs(np.sum(star[:, 0] * np.roll(star[:, 1], -1) - np.roll(star[:, 0], -1) * star[:, 1]))
    for ring in (star, star[::-1]):
        _, _, cov = plane_coverage([ring], 16)
        # exact along rows; across rows 16 lines per pixel: the midpoint rule on a polygon with
        # 40 vertices errs by well under 0.5 % of the area
        assert cov.sum() == pytest.approx(area, rel=5e-3)
        assert cov.min() >= 0.0 and cov.max() <= 1.0


def test_contours_from_ct_of_another_grid_land_by_patient_coordinates(tmp_path):
    centre = (7.3, -4.1, 3.7)
    path, _ = sphere_rtstruct(tmp_path, centre, 12.0, 1.25, pixel_mm=0.7)
    # feet-first PET grid (k runs towards -z), 4 mm voxels, origin on no CT or contour plane
    ref = reference((16, 16, 16), (4.0, 4.0, 4.0), (-27.1, -31.7, 33.3), direction=np.diag([1.0, 1.0, -1.0]))
    mask = load_vois(path, ref)["sphere"]
    # sub-voxel placement: the mask's centroid is the sphere's centre within a quarter voxel
    assert np.abs(centroid_mm(mask, ref) - centre).max() < 0.25 * 4.0
    assert volume_ml(mask, ref) == pytest.approx(sphere_ml(12.0), rel=0.01)  # 1.25 mm planes, R = 12 mm


def test_reference_rotated_in_plane_is_supported(tmp_path):
    # axial contours on an image rotated about z: the slices stay parallel to the contours
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    path, _ = sphere_rtstruct(tmp_path, (2.0, 1.0, 0.0), 12.0, 2.0)
    ref = reference((12, 12, 12), (4.0, 4.0, 4.0), tuple(rot @ np.array([-22.0, -22.0, -22.0])), direction=rot)
    mask = load_vois(path, ref)["sphere"]
    assert volume_ml(mask, ref) == pytest.approx(sphere_ml(12.0), rel=0.01)  # h = 2 mm <= R/5
    assert np.abs(centroid_mm(mask, ref) - (2.0, 1.0, 0.0)).max() < 1.0


@pytest.mark.parametrize("tilt_deg", [20.0, 90.0])
def test_contours_not_parallel_to_the_slices(tmp_path, tilt_deg):
    # axial contours (2 mm planes) of a 20 mm sphere on an image tilted by 20 degrees about x, or
    # on a coronal image (90 degrees): rasterised on a grid of the contour planes and resampled
    # onto the image. 1 %: the resampling (linear, about one sub-sample per 2 mm source voxel)
    # adds to the interpolation's 0.45 %.
    c, s = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])  # tilted about x
    centre = np.array([1.5, -2.0, 0.7])
    path, _ = sphere_rtstruct(tmp_path, tuple(centre), 10.0, 2.0)
    ref = reference((12, 12, 12), (4.0, 4.0, 4.0), tuple(rot @ np.array([-22.0, -22.0, -22.0])), direction=rot)
    mask = load_vois(path, ref)["sphere"]
    assert volume_ml(mask, ref) == pytest.approx(sphere_ml(10.0), rel=0.01)
    assert np.abs(centroid_mm(mask, ref) - centre).max() < 0.25  # within 1/16 of a voxel
    # voxel by voxel: a sphere is the same in the image's own axes, centred at R^T (c - origin)
    local_centre = rot.T @ (centre - np.asarray(ref.origin_mm))
    truth = ellipsoid_fraction(ref.shape, ref.spacing_mm, (0.0, 0.0, 0.0), tuple(local_centre), (10.0,) * 3)
    assert np.abs(mask - truth).max() < 0.06  # measured below 0.05: interpolation and resampling
    assert np.abs(mask - truth).sum() < 0.02 * truth.sum()


def test_contours_in_different_orientations_are_an_error(tmp_path):
    ct = ct_series((5, 40, 40), (1.0, 1.0, 2.0), (-19.5, -19.5, -4.0))
    axial = square(-5, 5, -5, 5, 0.0)
    tilted = axial.copy()
    tilted[:, 2] = tilted[:, 1] * 0.5  # a plane through the x axis, tilted by 27 degrees
    path = write_rtstruct(tmp_path / "rs.dcm", {"mixed": [axial, tilted + [0, 0, 2.0]]}, ct)
    ref = reference((5, 20, 20), (2.0, 2.0, 2.0), (-19.0, -19.0, -4.0), direction=np.array(
        [[1.0, 0.0, 0.0], [0.0, 0.8, -0.6], [0.0, 0.6, 0.8]]))
    with pytest.raises(VoiError, match="do not lie in parallel planes") as err:
        load_vois(path, ref)
    assert "mixed" in str(err.value) and str(path) in str(err.value)


def test_gap_between_parts_is_not_filled(tmp_path):
    # one ROI in two parts 20 mm apart (2 mm planes): each part is a prism with flat ends (its area
    # does not close), which reach half a plane beyond each part; nothing fills the gap
    ct = ct_series((20, 20, 20), (1.0, 1.0, 2.0), (-9.5, -9.5, 0.0))
    polys = [square(-4, 4, -4, 4, z) for z in (0.0, 2.0, 4.0, 26.0, 28.0, 30.0)]
    ref = reference((20, 10, 10), (2.0, 2.0, 2.0), (-9.0, -9.0, -1.0))  # voxels edges at 0, 2, ... mm
    mask = load_vois(write_rtstruct(tmp_path / "rs.dcm", {"parts": polys}, ct), ref)["parts"]
    assert volume_ml(mask, ref) == pytest.approx(2 * 3 * 2.0 * 64 * 1e-3, rel=1e-9)
    assert mask[8:13].sum() == 0.0  # z = 15 .. 25 mm stays empty


# --------------------------------------------------------------------------- RTSTRUCT: checks


def test_empty_rois_and_point_contours_are_skipped_with_a_warning(tmp_path):
    path, z = sphere_rtstruct(tmp_path, (0.0, 0.0, 0.0), 10.0, 2.0)
    ds = pydicom.dcmread(path)
    # add an ROI with a POINT contour only, and one without contours
    ct_like = ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    for number, name in ((2, "marker"), (3, "nothing")):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, ct_like
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
    point = Dataset()
    point.ContourGeometricType, point.NumberOfContourPoints, point.ContourData = "POINT", 1, [0.0, 0.0, 0.0]
    item = Dataset()
    item.ReferencedROINumber, item.ROIDisplayColor = 2, [0, 0, 255]
    item.ContourSequence = [point]
    ds.ROIContourSequence.append(item)
    ds.save_as(tmp_path / "edited.dcm")
    ref = centred_reference(40, (4.0, 4.0, 4.0))
    with pytest.warns(VoxelDoseWarning, match="ROI 'marker' has no closed planar contours"):
        with pytest.warns(VoxelDoseWarning, match="ROI 'nothing' has no closed planar contours"):
            vois = load_vois(tmp_path / "edited.dcm", ref)
    assert list(vois) == ["sphere"]


def test_frame_of_reference_mismatch(tmp_path):
    path, _ = sphere_rtstruct(tmp_path, (0.0, 0.0, 0.0), 10.0, 2.0, for_uid="1.2.3.4")
    ref = centred_reference(40, (4.0, 4.0, 4.0))
    with pytest.raises(VoiError, match="FrameOfReferenceUID 1.2.3.4 differs") as err:
        load_vois(path, ref)
    assert "registered=True" in str(err.value) and str(path) in str(err.value)
    assert load_vois(path, ref, registered=True)["sphere"].sum() > 0
    # an image without a frame of reference (e.g. from NIfTI) cannot be checked: accepted
    assert load_vois(path, Image(ref.array, ref.spacing_mm, ref.origin_mm))["sphere"].sum() > 0


def test_voi_outside_the_image(tmp_path):
    ct = ct_series((30, 60, 60), (1.0, 1.0, 2.0), (-29.5, -29.5, -30.0))
    z = [float(d.ImagePositionPatient[2]) for d in ct]
    rois = {"inside": ellipsoid_polygons((0, 0, 0), (8, 8, 8), z),
            "far": [square(-5, 5, -5, 5, zz) + np.array([500.0, 0, 0]) for zz in z[10:15]]}
    path = write_rtstruct(tmp_path / "rs.dcm", rois, ct)
    ref = reference((10, 10, 10), (4.0, 4.0, 4.0), (-18.0, -18.0, -18.0))
    with pytest.raises(VoiError, match="VOI 'far' .* lies entirely outside the image"):
        load_vois(path, ref)
    # a sphere centred on the image's top face: half of it is cut off
    half = write_rtstruct(tmp_path / "half.dcm", {"cut": ellipsoid_polygons((0, 0, 20.0), (10, 10, 10), z)}, ct)
    with pytest.warns(VoxelDoseWarning, match=r"VOI 'cut' .*: (4[89]|5[01])\.\d\d % of its volume lies outside"):
        mask = load_vois(half, ref)["cut"]
    assert volume_ml(mask, ref) == pytest.approx(sphere_ml(10.0) / 2, rel=0.02)  # 2 mm planes, half sphere


def test_duplicate_roi_names_are_an_error(tmp_path):
    ct = ct_series((5, 20, 20), (1.0, 1.0, 2.0), (-9.5, -9.5, -4.0))
    path = write_rtstruct(tmp_path / "rs.dcm", {"liver": [square(-4, 4, -4, 4, 0.0)],
                                                 "Liver": [square(-2, 2, -2, 2, 0.0)]}, ct)
    ds = pydicom.dcmread(path)
    ds.StructureSetROISequence[1].ROIName = "liver"
    ds.save_as(path)
    ref = reference((5, 10, 10), (2.0, 2.0, 2.0), (-9.0, -9.0, -4.0))
    with pytest.raises(VoiError, match="ROIs 1 and 2 are both named 'liver'"):
        load_vois(path, ref)


@pytest.mark.parametrize("fraction", [0.005, 0.05, 0.3, 0.6, 0.95, 0.999])
def test_truncated_rtstruct_is_an_error_naming_the_file(tmp_path, fraction):
    path, _ = sphere_rtstruct(tmp_path, (0.0, 0.0, 0.0), 10.0, 2.0)
    data = path.read_bytes()
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(VoxelDoseError) as err:
        load_vois(bad, centred_reference(40, (4.0, 4.0, 4.0)))
    message = str(err.value).replace(str(bad), "")
    assert str(bad) in str(err.value) and ("truncated" in message or "damaged" in message)


def test_rtstruct_cut_inside_an_element_header_is_an_error(tmp_path):
    # a file that ends 6 bytes into the last element's 12-byte header parses without complaint
    # in pydicom; the bytes left over after the last whole element give it away
    path, _ = sphere_rtstruct(tmp_path, (0.0, 0.0, 0.0), 10.0, 2.0)
    last = pydicom.dcmread(path).get_item(0x30060080)  # RTROIObservationsSequence, the last element
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(path.read_bytes()[: last.value_tell - 12 + 6])
    with pytest.raises(DicomError, match=r"the DICOM file is truncated after byte \d+") as err:
        load_vois(bad, centred_reference(40, (4.0, 4.0, 4.0)))
    assert str(bad) in str(err.value)


def test_not_a_voi_file(tmp_path):
    junk = tmp_path / "notes.dcm"
    junk.write_bytes(b"not dicom at all" * 20)
    ref = centred_reference(40, (4.0, 4.0, 4.0))
    with pytest.raises(VoiError, match="neither a readable DICOM file .* nor a label map"):
        load_vois(junk, ref)
    ct = ct_series((2, 4, 4), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    ct[0].save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    with pytest.raises(VoiError, match="DICOM CT file, not an RT Structure Set"):
        load_vois(tmp_path / "ct.dcm", ref)
    with pytest.raises(VoiError, match="does not exist"):
        load_vois(tmp_path / "missing.dcm", ref)


# --------------------------------------------------------------------------- SEG


def test_seg_binary_round_trip_on_the_same_grid(tmp_path):
    ct = ct_series((12, 16, 20), (2.0, 1.5, 2.5), (-10.0, -20.0, 5.0), shuffle=True)
    ref = series_image(ct)
    rng = np.random.default_rng(0)
    liver = np.zeros(ref.shape, bool)
    liver[2:9, 3:12, 4:15] = True
    lesion = np.zeros(ref.shape, bool)
    lesion[4:6, 5:7, 6:9] = True
    lesion[10, 0, 0] = True  # asymmetric: catches a flipped or shifted slice order
    noise = rng.random(ref.shape) > 0.7
    path = write_seg(tmp_path / "seg.dcm", {"liver": liver, "tumour_1": lesion, "noise": noise}, ct)
    assert pydicom.dcmread(path).SegmentationType == "BINARY"
    vois = load_vois(path, ref)
    assert list(vois) == ["liver", "tumour_1", "noise"]
    for name, m in (("liver", liver), ("tumour_1", lesion), ("noise", noise)):
        assert vois[name].dtype == np.float32
        np.testing.assert_array_equal(vois[name], m.astype(np.float32))


def test_seg_segments_sharing_a_label_get_unique_names(tmp_path):
    # a research converter labels ten lesions "Neoplasm, Secondary"; the SEG cannot be edited.
    # Each shared label becomes label + segment number, with a warning; the masks stay themselves
    ct = ct_series((12, 16, 20), (2.0, 1.5, 2.5), (-10.0, -20.0, 5.0))
    ref = series_image(ct)
    liver = np.zeros(ref.shape, bool)
    liver[2:9, 3:12, 4:15] = True
    a, b = np.zeros(ref.shape, bool), np.zeros(ref.shape, bool)
    a[3:5, 4:6, 5:7] = True
    b[6:8, 8:10, 10:13] = True
    path = write_seg(tmp_path / "seg.dcm", {"liver": liver, "lesion a": a, "lesion b": b}, ct)
    ds = pydicom.dcmread(path)
    for item in ds.SegmentSequence[1:]:
        item.SegmentLabel = "Neoplasm, Secondary"
    ds.save_as(path)
    with pytest.warns(VoxelDoseWarning, match=r"share a label \('Neoplasm, Secondary': segments 2, 3\).*"
                      r"'Neoplasm, Secondary \(segment 2\)'"):
        vois = load_vois(path, ref)
    assert list(vois) == ["liver", "Neoplasm, Secondary (segment 2)", "Neoplasm, Secondary (segment 3)"]
    np.testing.assert_array_equal(vois["Neoplasm, Secondary (segment 2)"], a.astype(np.float32))
    np.testing.assert_array_equal(vois["Neoplasm, Secondary (segment 3)"], b.astype(np.float32))


def test_seg_fractional_round_trip(tmp_path):
    ct = ct_series((10, 20, 20), (2.0, 2.0, 2.0), (-19.0, -19.0, -9.0))
    ref = series_image(ct)
    frac = ellipsoid_fraction(ref.shape, ref.spacing_mm, ref.origin_mm, (1.0, -2.0, 0.5), (12.0, 9.0, 7.0))
    path = write_seg(tmp_path / "seg.dcm", {"liver": frac}, ct, fractional=True)
    assert pydicom.dcmread(path).SegmentationType == "FRACTIONAL"
    got = load_vois(path, ref)["liver"]
    # 8-bit storage (MaximumFractionalValue 255): each fraction within half a step, 1/510
    assert np.abs(got - frac).max() <= 1.0 / 510 + 1e-6
    with pytest.raises(InputError, match="pass fractional=True"):
        write_seg(tmp_path / "bad.dcm", {"liver": frac}, ct)


def test_seg_on_a_finer_grid_is_resampled_with_partial_volumes(tmp_path):
    ct = ct_series((40, 48, 48), (1.0, 1.0, 1.0), (-23.5, -23.5, -19.5))
    fine = series_image(ct)
    centre, radius = (1.2, -0.8, 0.6), 12.0
    binary = ellipsoid_fraction(fine.shape, fine.spacing_mm, fine.origin_mm, centre, (radius,) * 3) >= 0.5
    path = write_seg(tmp_path / "seg.dcm", {"sphere": binary}, ct)
    ref = reference((10, 12, 12), (4.0, 4.0, 4.0), (-22.3, -21.9, -18.1))
    got = load_vois(path, ref)["sphere"]
    truth = ellipsoid_fraction(ref.shape, ref.spacing_mm, ref.origin_mm, centre, (radius,) * 3)
    # the volume of the 1 mm voxelisation is kept to within 0.5 % (interpolation, averaging)
    assert volume_ml(got, ref) == pytest.approx(binary.sum() * 1e-3, rel=5e-3)
    # partial volumes, not 0/1 point samples: each voxel within the 1 mm staircase of the
    # source (a 4 mm voxel's fraction moves by at most ~0.25 per mm of boundary shift)
    assert np.abs(got - truth).max() < 0.25
    assert np.count_nonzero((got > 0.05) & (got < 0.95)) > 0.8 * np.count_nonzero((truth > 0.05) & (truth < 0.95))


def test_seg_frame_of_reference_and_truncation(tmp_path):
    ct = ct_series((6, 10, 10), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), for_uid="1.2.3.5")
    ref = series_image(ct, for_uid=FOR_UID)
    mask = np.zeros(ref.shape, bool)
    mask[2:4, 3:6, 3:6] = True
    path = write_seg(tmp_path / "seg.dcm", {"a": mask}, ct)
    with pytest.raises(VoiError, match="registered=True"):
        load_vois(path, ref)
    np.testing.assert_array_equal(load_vois(path, ref, registered=True)["a"], mask)
    data = path.read_bytes()
    for fraction in (0.5, 0.9, 0.995):
        bad = tmp_path / f"cut{fraction}.dcm"
        bad.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(VoxelDoseError) as err:
            load_vois(bad, ref, registered=True)
        assert str(bad) in str(err.value) and "truncated" in str(err.value).replace(str(bad), "")


# --------------------------------------------------------------------------- label maps


def write_label_map(path, labels, spacing, origin, direction=None):
    img = sitk.GetImageFromArray(labels)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path))
    return path


def test_label_map_same_grid_with_names(tmp_path):
    ref = reference((8, 10, 12), (3.0, 2.0, 4.0), (-5.0, 3.0, 11.0))
    labels = np.zeros(ref.shape, np.uint8)
    labels[1:6, 2:8, 2:10] = 1
    labels[3:5, 4:6, 4:6] = 2
    labels[7, 9, 11] = 7
    path = write_label_map(tmp_path / "labels.nii.gz", labels, ref.spacing_mm, ref.origin_mm)
    with pytest.warns(VoxelDoseWarning, match=r"label value\(s\) \[7\] have no name"):
        vois = load_vois(path, ref, label_names={1: "liver", 2: "tumour_1"})
    np.testing.assert_array_equal(vois["liver"], (labels == 1).astype(np.float32))
    np.testing.assert_array_equal(vois["tumour_1"], (labels == 2).astype(np.float32))
    with pytest.raises(VoiError, match="pass label_names"):
        load_vois(path, ref)


@pytest.mark.parametrize("sidecar, text", [
    ("json", json.dumps({"1": "liver", "2": "tumour_1"})),
    ("toml", '[labels]\n1 = "liver"\n2 = "tumour_1"\n'),
    ("csv", "label,name\n1,liver\n2,tumour_1\n"),
])
def test_label_map_names_from_a_sidecar(tmp_path, sidecar, text):
    ref = reference((6, 6, 6), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    labels = np.zeros(ref.shape, np.int16)
    labels[1:4, 1:4, 1:4] = 1
    labels[4, 4, 4] = 2
    path = write_label_map(tmp_path / "seg_labels.nrrd", labels, ref.spacing_mm, ref.origin_mm)
    (tmp_path / f"seg_labels.{sidecar}").write_text(text)
    vois = load_vois(path, ref)
    assert sorted(vois) == ["liver", "tumour_1"]
    assert vois["liver"].sum() == 27 and vois["tumour_1"].sum() == 1


def test_label_map_on_another_grid_is_resampled(tmp_path):
    # 2 mm labels onto a 4 mm grid whose voxels hold exactly 2 x 2 x 2 source voxels: the two
    # sub-samples per axis fall on source voxel centres, so each fraction is the block mean
    rng = np.random.default_rng(5)
    labels = (rng.random((16, 16, 16)) > 0.5).astype(np.uint8)
    labels[0] = labels[-1] = 0
    labels[:, 0] = labels[:, -1] = 0
    labels[:, :, 0] = labels[:, :, -1] = 0
    path = write_label_map(tmp_path / "labels.mha", labels, (2.0, 2.0, 2.0), (-15.0, -15.0, -15.0))
    ref = reference((8, 8, 8), (4.0, 4.0, 4.0), (-14.0, -14.0, -14.0))
    got = load_vois(path, ref, label_names={1: "blob"})["blob"]
    expected = labels.reshape(8, 2, 8, 2, 8, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(got, expected, atol=1e-6)  # float32 interpolation
    # a grid that covers only part of it: cut, with a warning naming the fraction
    part = reference((4, 8, 8), (4.0, 4.0, 4.0), (-14.0, -14.0, -14.0))
    with pytest.warns(VoxelDoseWarning, match="VOI 'blob'.*% of its volume lies outside"):
        cut = load_vois(path, part, label_names={1: "blob"})["blob"]
    np.testing.assert_allclose(cut, expected[:4], atol=1e-6)


def test_coarse_label_map_is_interpolated_linearly(tmp_path):
    # a 4 mm block onto a 2 mm grid: a fine voxel centred half-way between an inside and an
    # outside source voxel centre gets 1/2 (linear interpolation; nearest neighbour gives 0 or 1)
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[2:4, 2:4, 2:4] = 1
    path = write_label_map(tmp_path / "coarse.nrrd", labels, (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    ref = reference((10, 10, 10), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    got = load_vois(path, ref, label_names={1: "block"})["block"]
    assert got[6, 6, 6] == pytest.approx(1.0)  # (12, 12, 12) mm: a source voxel centre inside
    assert got[6, 6, 7] == pytest.approx(0.5)  # x = 14 mm: between the centres at 12 (in) and 16 (out)
    assert got[7, 7, 7] == pytest.approx(0.125)  # half-way on all three axes
    assert volume_ml(got, ref) == pytest.approx(labels.sum() * 64e-3, rel=1e-6)  # volume kept


def test_label_map_errors(tmp_path):
    ref = reference((4, 4, 4), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    floats = write_label_map(tmp_path / "prob.nii", np.full((4, 4, 4), 0.5, np.float32), (2.0,) * 3, (0.0,) * 3)
    with pytest.raises(VoiError, match="not a label map"):
        load_vois(floats, ref, label_names={1: "x"})
    labels = np.ones((4, 4, 4), np.uint8)
    path = write_label_map(tmp_path / "l.nii.gz", labels, (2.0,) * 3, (0.0,) * 3)
    data = path.read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(VoiError, match="cannot read the label map") as err:
        load_vois(bad, ref, label_names={1: "x"})
    assert str(bad) in str(err.value)
    with pytest.raises(VoiError, match="entirely outside the image"):
        far = write_label_map(tmp_path / "far.nii.gz", labels, (2.0,) * 3, (300.0, 0.0, 0.0))
        load_vois(far, ref, label_names={1: "x"})
    with pytest.raises(InputError, match="label_names applies to label maps only"):
        load_vois(sphere_rtstruct(tmp_path, (0.0, 0.0, 0.0), 3.0, 2.0)[0], ref, label_names={1: "x"})


# --------------------------------------------------------------------------- folders


def test_folder_with_series_rtstruct_and_seg(tmp_path):
    ct = ct_series((10, 20, 20), (2.0, 2.0, 2.0), (-19.0, -19.0, -9.0))
    ref = series_image(ct)
    folder = tmp_path / "case"
    (folder / "ct").mkdir(parents=True)
    for k, ds in enumerate(ct):
        ds.save_as(folder / "ct" / f"{k:03d}", enforce_file_format=True)
    (folder / "readme.txt").write_text("not dicom")
    z = [float(d.ImagePositionPatient[2]) for d in ct]
    write_rtstruct(folder / "rs.dcm", {"liver": ellipsoid_polygons((0, 0, 0), (12, 10, 6), z)}, ct)
    lesion = np.zeros(ref.shape, bool)
    lesion[4:6, 9:11, 9:11] = True
    write_seg(folder / "seg" / "seg.dcm", {"tumour_1": lesion}, ct)
    vois = load_vois(folder, ref)
    assert sorted(vois) == ["liver", "tumour_1"]
    np.testing.assert_array_equal(vois["tumour_1"], lesion)
    # the same name in two files of a folder
    write_seg(folder / "seg" / "again.dcm", {"liver": lesion}, ct)
    with pytest.raises(VoiError, match=r"two VOIs are named 'liver' \(in .* and .*\)"):
        load_vois(folder, ref)
    (folder / "seg" / "again.dcm").unlink()
    # a macOS sidecar beside the RTSTRUCT is skipped; an emptied or cut VOI file is refused, naming
    # it (it was skipped as "not DICOM", and its VOIs were missing without a word)
    (folder / "._rs.dcm").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00" + bytes(4088))
    assert sorted(load_vois(folder, ref)) == ["liver", "tumour_1"]
    for keep in (0, 100):
        (folder / "seg" / "more.dcm").write_bytes((folder / "rs.dcm").read_bytes()[:keep])
        with pytest.raises(DicomError, match=r"more\.dcm: the file (is empty|is named \.dcm but is not DICOM)"):
            load_vois(folder, ref)
    (folder / "seg" / "more.dcm").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.txt").write_text("nothing")
    with pytest.raises(VoiError, match="no RTSTRUCT or SEG file in folder"):
        load_vois(empty, ref)


# --------------------------------------------------------------------------- 3D Slicer segmentations (real data)


def test_slicer_segmentation_loads_every_layer_with_its_volume(taranis):
    # a real .seg.nrrd: 4 layers on a 0.98 x 0.98 x 2.5 mm CT grid, 7 segments that overlap
    # across layers (the liver and its tumours), resampled onto the 4.42 x 4.42 x 2.5 mm SPECT
    import SimpleITK as sitk

    spect, vois, folder = taranis
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(folder / "patient_2_Segmentation.seg.nrrd"))
    seg = reader.Execute()
    labels = sitk.GetArrayFromImage(seg)
    ct_ml = float(np.prod(seg.GetSpacing())) * 1e-3
    assert list(vois) == ["gallbladder", "liver", "Tumor 1", "Tumor 2", "perfused volume", "whole liver normal",
                          "perfused normal"]
    for i, name in enumerate(vois):
        layer, value = int(reader.GetMetaData(f"Segment{i}_Layer")), int(reader.GetMetaData(f"Segment{i}_LabelValue"))
        truth = float((labels[..., layer] == value).sum()) * ct_ml  # the segment on its own grid
        ours = float(vois[name].array.sum(dtype=np.float64)) * spect.voxel_volume_ml
        # resampled by world coordinates with sub-voxel sampling: the volume is kept (observed
        # within 0.003 %; 0.1 % allowed)
        assert ours == pytest.approx(truth, rel=1e-3), name
        assert vois[name].same_grid(spect) and vois[name].units == "MASK"
    # overlaps are kept: the tumours lie inside the liver (another layer)
    inside = float(np.minimum(vois["Tumor 1"].array, vois["liver"].array).sum()) / float(vois["Tumor 1"].array.sum())
    assert inside > 0.95


# --------------------------------------------------------------------------- issue 14: corrupt VOI files


def _two_rois(tmp_path):
    ct = ct_series((5, 20, 20), (1.0, 1.0, 2.0), (-9.5, -9.5, -4.0))
    polys = {"tumour_1": [square(-4, 0, -4, 0, z) for z in (-2.0, 0.0, 2.0)],
             "tumour_2": [square(1, 4, 1, 4, z) for z in (-2.0, 0.0, 2.0)]}
    return write_rtstruct(tmp_path / "rs.dcm", polys, ct), reference((5, 10, 10), (2.0, 2.0, 2.0), (-9.0, -9.0, -4.0))


def test_rois_sharing_an_roi_number_are_an_error(tmp_path):
    """Two ROIs with one ROINumber merged: tumour_1 vanished and tumour_2 took its contours."""
    path, ref = _two_rois(tmp_path)
    ds = pydicom.dcmread(path)
    ds.StructureSetROISequence[1].ROINumber = ds.StructureSetROISequence[0].ROINumber
    ds.save_as(path)
    with pytest.raises(VoiError, match="'tumour_1' and 'tumour_2' share ROINumber"):
        load_vois(path, ref)


@pytest.mark.parametrize("order", ["same", "reversed"])
def test_a_contour_exported_twice_is_an_error(tmp_path, order):
    """Every contour duplicated left the liver at 1 % of itself by the even-odd rule, silently."""
    path, ref = _two_rois(tmp_path)
    ds = pydicom.dcmread(path)
    contours = ds.ROIContourSequence[0].ContourSequence
    copy = pydicom.Dataset()
    copy.update(contours[1])
    if order == "reversed":
        pts = np.asarray(contours[1].ContourData, float).reshape(-1, 3)[::-1]
        copy.ContourData = [f"{v:g}" for v in pts.ravel()]
    contours.append(copy)
    ds.save_as(path)
    with pytest.raises(VoiError, match=r"'tumour_1' holds the same contour twice \(contours 2 and 4, 4 points"):
        load_vois(path, ref)


def test_a_contour_wider_than_any_scanner_is_an_error(tmp_path):
    """A 20 m contour ran for 6 minutes and 11 GB."""
    path, ref = _two_rois(tmp_path)
    ds = pydicom.dcmread(path)
    ds.ROIContourSequence[1].ContourSequence[0].ContourData = [
        f"{v:g}" for v in square(-10000, 10000, -4, 4, -2.0).ravel()]
    ds.save_as(path)
    with pytest.raises(VoiError, match="'tumour_2' spans 2e\\+04 mm, more than 1000 mm"):
        load_vois(path, ref)


def test_more_vois_than_the_allocation_limit_are_refused_before_masks_are_made(tmp_path, monkeypatch):
    """3,000 labels took 8 GB: the count times the grid is checked against the limit first."""
    ref = reference((4, 5, 6), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    labels = np.arange(1, 121, dtype=np.uint16).reshape(4, 5, 6)
    path = write_label_map(tmp_path / "many.nii.gz", labels, (2.0,) * 3, (0.0,) * 3)
    monkeypatch.setenv("VOXELDOSE_MAX_VOXELS", str(100 * 120))
    with pytest.raises(InputError, match="120 VOIs on the 4 x 5 x 6 image grid.*limit of 12,000"):
        load_vois(path, ref, label_names={i: f"l{i}" for i in range(1, 121)})
    with pytest.warns(voxeldose.VoxelDoseWarning, match="have no name and are skipped"):
        assert len(load_vois(path, ref, label_names={i: f"l{i}" for i in range(1, 101)})) == 100


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_a_truncated_nifti_label_map_is_an_error(tmp_path, suffix, keep):
    """ITK reads a NIfTI cut short as zeros: a label map truncated to half lost 89 % of the lung."""
    ref = reference((20, 20, 20), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:18, 3:17, 4:16] = 1
    path = write_label_map(tmp_path / f"l{suffix}", labels, (2.0,) * 3, (0.0,) * 3)
    assert volume_ml(load_vois(path, ref, label_names={1: "lung"})["lung"], ref) == pytest.approx(16 * 14 * 12 * 8e-3)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(VoiError, match="truncated|cut short") as err:
        load_vois(path, ref, label_names={1: "lung"})
    assert str(path) in str(err.value)


@pytest.mark.parametrize("pixdim", [0.0, float("nan"), -2.0, float("inf")])
def test_a_nifti_voxel_size_of_zero_or_nan_is_an_error(tmp_path, pixdim):
    """ITK replaces a pixdim of 0 or NaN by 1 mm (the liver came out 98 % small)."""
    import struct

    ref = reference((6, 6, 6), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    path = write_label_map(tmp_path / "l.nii", np.ones((6, 6, 6), np.uint8), (2.0,) * 3, (0.0,) * 3)
    raw = bytearray(path.read_bytes())
    assert struct.unpack_from("<i", raw, 0)[0] == 348  # NIfTI-1: pixdim[1] is the float32 at byte 80
    struct.pack_into("<f", raw, 80, pixdim)
    path.write_bytes(bytes(raw))
    with pytest.raises(VoiError, match="voxel size along x is .*pixdim in the NIfTI header"):
        load_vois(path, ref, label_names={1: "liver"})
    from voxeldose.io.image_file import load_image_file

    with pytest.raises(InputError, match="image's voxel size along x"):
        load_image_file(path)


@pytest.mark.parametrize("slope, inter", [(2.0, 0.0), (1.0, 1.0), (0.0, 5.0), (float("nan"), 0.0)])
def test_a_label_map_whose_header_scales_its_labels_is_an_error(tmp_path, slope, inter):
    """ITK applies scl_slope and scl_inter: a slope of 2 turned the liver (1) into the tumour (2)."""
    import struct

    ref = reference((6, 6, 6), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    labels = np.ones((6, 6, 6), np.uint8)
    labels[2:4, 2:4, 2:4] = 2
    path = write_label_map(tmp_path / "l.nii", labels, (2.0,) * 3, (0.0,) * 3)
    names = {1: "liver", 2: "tumour"}
    assert volume_ml(load_vois(path, ref, label_names=names)["tumour"], ref) == pytest.approx(0.064)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<2f", raw, 112, slope, inter)
    path.write_bytes(bytes(raw))
    with pytest.raises(VoiError, match="header scales its values"):
        load_vois(path, ref, label_names=names)


def _small_seg(tmp_path):
    """A SEG of two segments (each frame names its segment in its own functional group)."""
    ct = ct_series((6, 8, 10), (2.0, 2.0, 2.0), (-10.0, -8.0, 0.0))
    ref = series_image(ct)
    liver = np.zeros(ref.shape, bool)
    liver[1:5, 2:7, 2:9] = True
    lesion = np.zeros(ref.shape, bool)
    lesion[2:4, 3:5, 4:6] = True
    return write_seg(tmp_path / "seg.dcm", {"liver": liver, "tumour_1": lesion}, ct), ref


def test_a_one_segment_seg_names_its_segment_in_the_shared_groups(tmp_path):
    ct = ct_series((6, 8, 10), (2.0, 2.0, 2.0), (-10.0, -8.0, 0.0))
    ref = series_image(ct)
    liver = np.zeros(ref.shape, bool)
    liver[1:5, 2:7, 2:9] = True
    path = write_seg(tmp_path / "seg.dcm", {"liver": liver}, ct)
    ds = pydicom.dcmread(path)
    assert "SegmentIdentificationSequence" in ds.SharedFunctionalGroupsSequence[0]
    assert volume_ml(load_vois(path, ref)["liver"], ref) == pytest.approx(4 * 5 * 7 * 8e-3)


@pytest.mark.parametrize("change, words", [
    (lambda ds: setattr(ds, "Rows", 1), r"pixel data holds \d+ bytes but 6 frames of Rows 1"),
    (lambda ds: setattr(ds.PerFrameFunctionalGroupsSequence[1].SegmentIdentificationSequence[0],
                        "ReferencedSegmentNumber", 0), "frame 2 belongs to segment 0"),
    (lambda ds: setattr(ds, "NumberOfFrames", 3), "NumberOfFrames .* is 3 but PerFrameFunctionalGroupsSequence holds 6"),
    (lambda ds: setattr(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0], "PixelSpacing", "1\\1\\"),
     "PixelSpacing .* must be two positive numbers"),
    (lambda ds: setattr(ds, "BitsAllocated", 8), "BINARY with BitsAllocated 8"),
])
def test_a_seg_whose_header_does_not_describe_its_frames_is_an_error(tmp_path, change, words):
    """Found by the fuzz suite: a wrong Rows sheared the masks, a frame of segment 0 was dropped
    (and a plane of the liver with it), a third PixelSpacing value was ignored."""
    path, ref = _small_seg(tmp_path)
    assert volume_ml(load_vois(path, ref)["liver"], ref) == pytest.approx(4 * 5 * 7 * 8e-3)
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)
    with pytest.raises(DicomError, match=words):
        load_vois(path, ref)


def test_a_nifti_label_map_with_more_bytes_than_its_header_describes_is_an_error(tmp_path):
    """Found by the fuzz suite: dim[1] = 5 for a 10-wide map read the labels sheared."""
    import struct

    ref = reference((6, 8, 10), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    labels = np.zeros((6, 8, 10), np.uint8)
    labels[1:5, 2:7, 2:9] = 1
    path = write_label_map(tmp_path / "l.nii", labels, (2.0,) * 3, (0.0,) * 3)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<h", raw, 42, 5)
    path.write_bytes(bytes(raw))
    with pytest.raises(VoiError, match="holds 832 bytes but its header describes 592.*a wrong dim or datatype"):
        load_vois(path, ref, label_names={1: "liver"})


def test_a_seg_frame_placed_far_away_is_refused_before_the_volume_is_made(tmp_path, monkeypatch):
    """Found by the fuzz suite: one frame at z = 77.6 m made highdicom build a volume of 38,819 planes."""
    path, ref = _small_seg(tmp_path)
    ds = pydicom.dcmread(path)
    ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient = [0.0, 0.0, 77638.0]
    ds.save_as(path)
    monkeypatch.setenv("VOXELDOSE_MAX_VOXELS", str(2**20))
    with pytest.raises(InputError, match=r"spanning 776\d\d mm in planes 2 mm apart .*ImagePositionPatient"):
        load_vois(path, ref)
