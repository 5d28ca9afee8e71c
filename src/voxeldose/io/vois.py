"""VOIs in: RT Structure Sets, DICOM Segmentations and label maps, onto an image's grid.

:func:`load_vois` returns one mask image per VOI (units "MASK", float32 [z, y, x], the fraction of
each voxel inside, 0-1) on the grid of a reference :class:`~voxeldose.image.Image`, by patient
coordinates. It reads

- **RTSTRUCT** (Modality RTSTRUCT): closed planar contours are rasterised directly onto the
  reference grid (see *Contours* below);
- **SEG** (Modality SEG, BINARY or FRACTIONAL, through highdicom): one mask per segment, named
  by SegmentLabel;
- **label maps** (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, through
  SimpleITK): one mask per integer label, named by ``label_names`` or a sidecar file;
- **3D Slicer segmentations** (``.seg.nrrd``): every segment of every layer, named by the
  header's ``SegmentN_Name``, overlaps kept.

A folder is searched recursively for RTSTRUCT and SEG files (other files are skipped), into linked
folders too; a sub-folder that cannot be listed, or a broken link, is an error, not a VOI file
left out.

Contours
--------
The contours of an ROI lie in planes parallel to the reference image's slices (axial contours on
an axial image; contours and image may also share an oblique orientation). Their points are
mapped to continuous reference indices with :meth:`Image.world_to_index`, so contours drawn on a
CT of another grid, spacing or origin land where they belong.

Between contour planes the ROI's shape is interpolated, not stepped: each plane's contours
(all contours of the ROI on that plane, combined with the even-odd rule: a contour inside
another is a hole, contours side by side are separate parts) give a signed distance ``d`` and
the equivalent radius ``r`` of each part, and ``phi = d (d + 2 r)`` is interpolated along the
slice normal with quadratic polynomials through neighbouring planes (shape-based interpolation,
Raya & Udupa 1990). For a circle, ``phi = rho**2 - r**2``, which for a sphere is exactly
quadratic in the plane position: the interpolated surface is the sphere itself, between the
planes and beyond the end planes. Each contour plane is reproduced exactly.

The ends: beyond the first and last planes (and the planes beside a gap wider than
:data:`GAP_BREAK_FACTOR` typical spacings, which separates two parts), the cross-section area is
extrapolated from the end planes. An end whose area closes within one plane spacing ``h`` ends
there, rounded (exact for spheres, ellipsoids and cones); an end that does not (a cylinder's flat
end, or an ROI cut by the field of view) reaches half a spacing beyond its last plane, the usual
convention, with a continuous transition between the two (:func:`voxeldose.io._rasterise.end_extent`).
A cap never reaches outside its end contour. An ROI drawn on one plane only is a slab of half the
typical plane spacing of the structure set (else half a reference slice) on either side.

Sampling: the contours are rasterised exactly along sampling lines on a sub-grid of the reference
pixels, every 0.5 mm for a 20 mm sphere and more coarsely for large ROIs (the largest section's
equivalent radius / 20, :data:`~voxeldose.io._rasterise.SHAPE_SAMPLES_PER_RADIUS`); sub-samples
on the surface are anti-aliased by their distance to it, and along the normal the shape is
integrated with sub-planes as finely spaced, cut exactly at the ends. Measured on 224 spheres of
20-40 mm at random positions, contoured 1-6 mm apart (up to 0.6 R) on reference grids of 2-5 mm
(``benchmarks/bench_vois.py`` and a second random set): volume within 0.7 % of the analytic
volume, within 0.45 % when the planes are at most R/2 apart (the slab rule it replaces lost up
to h**2 / (4 R**2): -1.6 % for a 20 mm sphere at 2.5 mm planes, -6 % at 5 mm).

Contours that are not parallel to the reference slices (points farther than
:data:`CONTOUR_PLANE_TOLERANCE_MM` from a plane parallel to the slices, e.g. axial contours on a
tilted or coronal image) are rasterised in the same way on a grid of their own planes (voxels of
a quarter of the image's smallest spacing, coarser for large ROIs:
:data:`OBLIQUE_GRID_DIVISOR`, :data:`OBLIQUE_GRID_MAX_VOXELS`) and resampled onto the image as
SEG masks are (below): a 20 mm sphere on an image tilted by 20 or 90 degrees keeps its volume
within 1 % and each voxel's fraction within 0.06. The contours of one ROI must lie in parallel
planes; otherwise it is a :class:`VoiError`.

Masks (SEG and label maps)
--------------------------
When the mask's grid equals the reference grid (:meth:`Image.same_grid`) the fractions are used
as they are. Otherwise each mask is resampled by patient coordinates with SimpleITK: linear
interpolation of the fraction at sub-voxel points of every reference voxel, averaged over the
voxel. The points are about one source voxel apart along each reference axis (at most
:data:`MAX_SUPERSAMPLING` per axis), so a fine CT segmentation keeps its partial volumes on a
coarse SPECT grid, grids that coincide or nest with an integer ratio are sampled at the source
voxel centres (exact block means), and a coarser source is plainly interpolated linearly.

Label names come from ``label_names`` (label value -> name) or from a sidecar file next to the
label map with the same stem (``liver_labels.nii.gz`` -> ``liver_labels.json``):

- ``.json``: ``{"1": "liver", "2": "tumour_1"}`` (or the same under a ``"labels"`` key);
- ``.toml``: ``1 = "liver"`` lines (or under a ``[labels]`` table);
- ``.csv``: rows ``value,name`` (a header row ``label,name`` is allowed).

Only the named labels are loaded (others are skipped with a warning).

Checks
------
- Frame of reference: when both the VOI file and the reference image state a
  FrameOfReferenceUID and they differ, the VOIs were drawn in another patient coordinate system:
  :class:`VoiError`, unless ``registered=True`` says the coordinates already match.
- A VOI wholly outside the image is an error that names it; a VOI partly outside is cut at the
  image's edge with a :class:`VoxelDoseWarning` that gives the fraction outside.
- Two VOIs with the same name (in one file or across the files of a folder) are an error: rename
  one (no silent suffixes, since a report keyed by name must not pick the wrong one).
- ROIs without contours are skipped with a warning; POINT contours are ignored.

References
----------
Raya SP, Udupa JK. Shape-based interpolation of multidimensional objects. IEEE Trans Med Imaging
9:32-42, 1990. doi:10.1109/42.52980.
DICOM PS3.3 (2024) C.8.8.5 Structure Set Module, C.8.8.6 ROI Contour Module (ContourData in
patient mm, CLOSED_PLANAR), C.8.20.2 Segmentation Image Module (FRACTIONAL, MaximumFractionalValue).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from numpy.typing import NDArray

from ..errors import DicomError, GeometryError, InputError, VoiError, VoxelDoseError, VoxelDoseWarning
from ..image import Image
from ._dicom_common import native_pixel_bytes_match, not_dicom_reason, read_dicom
from ._rasterise import SHAPE_PITCH_MM, plane_coverage, rasterise_contours
from ._structured import parse
from ._sitk import from_sitk, nifti_scaling, read_image_file, to_sitk

__all__ = [
    "load_vois",
    "voi_file_kind",
    "plane_coverage",
    "LABEL_MAP_SUFFIXES",
    "SIDECAR_SUFFIXES",
    "CONTOUR_PLANE_TOLERANCE_MM",
    "SHAPE_PITCH_MM",
    "GAP_BREAK_FACTOR",
    "MAX_SUPERSAMPLING",
    "OBLIQUE_GRID_DIVISOR",
    "OBLIQUE_GRID_MAX_VOXELS",
    "OUTSIDE_WARN_FRACTION",
]

logger = logging.getLogger(__name__)

#: File name endings read as label maps (through SimpleITK).
LABEL_MAP_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Sidecar files with label names, looked for in this order next to a label map.
SIDECAR_SUFFIXES = (".json", ".toml", ".csv")

#: Largest distance (mm) of a contour point from its contour's plane, along the reference slice
#: normal, for the contour to count as parallel to the slices; also the tolerance for two
#: contours to lie on the same plane.
CONTOUR_PLANE_TOLERANCE_MM = 0.05

#: A gap between contour planes wider than this many typical spacings separates two parts.
GAP_BREAK_FACTOR = 2.5

#: Contours not parallel to the image's slices are rasterised on a grid of their planes with
#: voxels this many times smaller than the image's smallest spacing, then resampled onto it.
OBLIQUE_GRID_DIVISOR = 4.0

#: Largest number of voxels of such a grid (its voxels grow for large ROIs).
OBLIQUE_GRID_MAX_VOXELS = 4_000_000

#: Most sub-samples per axis of a reference voxel when resampling a mask.
MAX_SUPERSAMPLING = 8

#: Warn when more than this fraction of a VOI lies outside the image (below: rounding).
OUTSIDE_WARN_FRACTION = 1e-4

#: Largest in-plane extent (mm) of one contour: wider than any CT's field of view (bores are at
#: most 85 cm). A larger contour is a unit mistake or a corrupt file (a 20 m contour took 6 min
#: and 11 GB to rasterise).
MAX_CONTOUR_EXTENT_MM = 1000.0

#: Two contours of one ROI on one plane whose points agree within this (mm) are the same contour
#: exported twice; by the even-odd rule they would cancel (the liver became 1 % of itself).
DUPLICATE_CONTOUR_TOLERANCE_MM = 1e-3

_CLOSED = {"CLOSED_PLANAR", "CLOSEDPLANAR_XOR"}
_RTSTRUCT_SOP = "1.2.840.10008.5.1.4.1.1.481.3"
_SEG_SOP = "1.2.840.10008.5.1.4.1.1.66.4"

Mask = NDArray[np.float32]


@dataclass(frozen=True)
class _Loaded:
    """One VOI as read from a file, before the outside checks."""

    name: str
    mask: Mask
    inside: float  # VOI volume inside the reference grid, in reference voxels
    outside_fraction: float  # fraction of the whole VOI's volume outside the grid (0-1)


# =========================================================================== public


def load_vois(
    path: str | os.PathLike[str],
    reference: Image,
    *,
    registered: bool = False,
    label_names: Mapping[int, str] | None = None,
) -> dict[str, Image]:
    """Load VOIs (RTSTRUCT, SEG or a label map) as mask images on ``reference``'s grid.

    Parameters
    ----------
    path : str or path
        An RTSTRUCT or SEG file, a label map (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``,
        ``.mha``, ``.mhd``), or a folder searched recursively for RTSTRUCT and SEG files.
    reference : Image
        The image whose grid the masks are made on (e.g. the SPECT or PET); its
        ``meta.frame_of_reference_uid`` is checked against the VOI files'.
    registered : bool
        Accept VOIs whose FrameOfReferenceUID differs from the reference's (you know the two
        patient coordinate systems coincide, e.g. after registration and resampling).
    label_names : mapping int -> str, optional
        Names of the labels of a label map (label value -> VOI name). Without it, a sidecar
        file (``<stem>.json``, ``.toml`` or ``.csv``) is read. Only for label maps.

    Returns
    -------
    dict str -> Image
        VOI name -> mask image (units "MASK", float32 [z, y, x], the fraction 0-1 of each
        reference voxel inside the VOI) on ``reference``'s grid, in file order.

    Raises
    ------
    VoiError
        No VOI file in a folder, a file that is neither a VOI nor a label map, a frame-of-reference
        mismatch, a VOI wholly outside the image, duplicate names, contours not parallel to the
        reference slices, a label map without names, no VOI at all.
    DicomError
        A DICOM file that is unreadable, truncated, or lacks required attributes (the message
        names the file and the tag).
    InputError
        ``label_names`` given for DICOM VOIs, or ``reference`` not an :class:`Image`.

    Warns
    -----
    VoxelDoseWarning
        A VOI partly outside the image (with the fraction outside), an ROI without contours,
        label-map labels without names.

    Example
    -------
    >>> import numpy as np, SimpleITK as sitk, tempfile, os
    >>> from voxeldose.image import Image
    >>> ref = Image(np.zeros((10, 10, 10), np.float32), (4.0, 4.0, 4.0))
    >>> labels = np.zeros((10, 10, 10), np.uint8); labels[2:5, 2:5, 2:5] = 1
    >>> f = os.path.join(tempfile.mkdtemp(), "labels.nii.gz")
    >>> img = sitk.GetImageFromArray(labels); img.SetSpacing((4.0, 4.0, 4.0))
    >>> sitk.WriteImage(img, f)
    >>> vois = load_vois(f, ref, label_names={1: "liver"})
    >>> vois["liver"].units, float(vois["liver"].array.sum())
    ('MASK', 27.0)
    """
    if not isinstance(reference, Image):
        raise InputError(
            f"reference must be a voxeldose Image (the grid to put the VOIs on), got {type(reference).__name__}"
        )
    p = Path(path)
    if not p.exists():
        raise VoiError(f"{p} does not exist: point to an RTSTRUCT or SEG file, a folder holding them, or a label map")
    if p.is_dir():
        files = _voi_files_in(p)
    else:
        files = [(p, _kind_of(p))]
    if label_names is not None and any(kind != "labelmap" for _, kind in files):
        raise InputError(
            "label_names applies to label maps only; DICOM VOIs carry their names "
            "(ROIName, SegmentLabel)"
        )
    out: dict[str, Image] = {}
    source: dict[str, Path] = {}
    for f, kind in files:
        logger.debug("reading %s VOIs from %s", kind, f)
        if kind == "rtstruct":
            loaded = _load_rtstruct(f, reference, registered)
        elif kind == "seg":
            loaded = _load_seg(f, reference, registered)
        elif kind == "slicer":
            loaded = _load_slicer_segmentation(f, reference)
        else:
            loaded = _load_label_map(f, reference, label_names)
        for item in loaded:
            if item.name in out:
                where = f"both in {f}" if source[item.name] == f else f"in {source[item.name]} and {f}"
                raise VoiError(
                    f"two VOIs are named {item.name!r} ({where}); rename one of them so that each "
                    "name means one VOI"
                )
            mask = _checked(item, f, reference)
            if mask is not None:
                out[item.name] = Image(mask, reference.spacing_mm, reference.origin_mm, reference.direction, "MASK")
                source[item.name] = f
    if not out:
        raise VoiError(f"{p}: no VOI found (every ROI or segment was empty or skipped); check the file's contents")
    return out


# =========================================================================== files


def _is_label_map_name(p: Path) -> bool:
    return p.name.lower().endswith(LABEL_MAP_SUFFIXES)


def _has_dicom_preamble(p: Path) -> bool:
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise VoiError(f"{p}: cannot be read ({exc})") from exc
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_dicom(p: Path, *, header_only: bool) -> Any | None:
    """The dataset, or None when the file is not DICOM. Truncation is an error."""
    return read_dicom(p, pixels=not header_only, whole_file=not header_only)


def _modality(ds: Any) -> str:
    modality = str(getattr(ds, "Modality", "") or "").upper()
    sop = str(getattr(ds, "SOPClassUID", ""))
    if sop == _RTSTRUCT_SOP:
        return "RTSTRUCT"
    if sop == _SEG_SOP:
        return "SEG"
    return modality


def _kind_of(p: Path) -> str:
    if not _has_dicom_preamble(p) and p.name.lower().endswith(".seg.nrrd"):
        return "slicer"
    if not _has_dicom_preamble(p) and _is_label_map_name(p):
        return "labelmap"
    ds = _read_dicom(p, header_only=True)
    if ds is None:
        raise VoiError(
            f"{p} is neither a readable DICOM file (it may be damaged or truncated) nor a label map "
            f"({', '.join(LABEL_MAP_SUFFIXES)}); point to an RTSTRUCT, a SEG, or a label map"
        )
    if len(ds) == 0:
        raise DicomError(f"{p}: the DICOM file holds no data after its file meta information (truncated?); "
                         "re-export or copy it again")
    modality = _modality(ds)
    if not modality:
        _read_dicom(p, header_only=False)  # raises on a truncated file
    if modality == "RTSTRUCT":
        return "rtstruct"
    if modality == "SEG":
        return "seg"
    what = f"a DICOM {modality} file" if modality else "a DICOM file without Modality (0008,0060) (damaged?)"
    raise VoiError(
        f"{p} is {what}, not an RT Structure Set (RTSTRUCT) or a Segmentation (SEG); point to the VOI file"
    )


def voi_file_kind(path: str | os.PathLike[str]) -> str | None:
    """``"rtstruct"`` or ``"seg"`` for a DICOM VOI file, None for any other file (not DICOM, or
    DICOM of another modality). A damaged DICOM file is a :class:`DicomError`: it may be the VOI
    file, and skipping it would lose VOIs. So is a file that is not DICOM but should be, by
    :func:`voxeldose.io._dicom_common.not_dicom_reason` (empty, or named ``.dcm``; an AppleDouble
    "._" sidecar is skipped)."""
    p = Path(path)
    ds = _read_dicom(p, header_only=True)
    if ds is None:
        reason = not_dicom_reason(p)
        if reason is not None:
            raise DicomError(f"{p}: {reason}; re-export or copy it again, or remove it if it is not part of the export")
        return None
    modality = _modality(ds)
    return modality.lower() if modality in ("RTSTRUCT", "SEG") else None


def _voi_files_in(folder: Path) -> list[tuple[Path, str]]:
    from ._walk import files_under

    files = files_under(folder, VoiError)
    found = []
    for f in files:
        kind = voi_file_kind(f)
        if kind is None:
            logger.debug("skipping %s: not an RTSTRUCT or SEG", f)
            continue
        found.append((f, kind))
    if not found:
        raise VoiError(
            f"no RTSTRUCT or SEG file in folder {folder} ({len(files)} file(s) looked at); point to "
            "the structure set or segmentation file, or to the folder that holds it"
        )
    return found


# =========================================================================== checks


def _check_frame_of_reference(uid: str | None, reference: Image, registered: bool, where: str) -> None:
    ref_uid = reference.meta.frame_of_reference_uid
    if not uid or not ref_uid or uid == ref_uid:
        return
    if registered:
        logger.info("%s: frame of reference %s differs from the image's %s; accepted (registered=True)",
                    where, uid, ref_uid)
        return
    raise VoiError(
        f"{where}: the VOIs' FrameOfReferenceUID {uid} differs from the image's {ref_uid}: they were "
        "drawn in another patient coordinate system. Register the images first, or pass "
        "registered=True if you know the coordinates already match"
    )


def _check_voi_count(n: int, reference: Image, f: Path) -> None:
    """Refuse, before any mask is made, more VOIs than the allocation limit holds on the
    reference grid (each VOI is a float32 mask of the grid: 3,000 labels took 8 GB)."""
    from .._checks import check_allocation

    check_allocation(n * reference.array.size,
                     f"{f}: {n} VOIs on the {' x '.join(map(str, reference.shape))} image grid",
                     "load fewer VOIs (select the labels you need in the sidecar or the VOI list)")


def _checked(item: _Loaded, f: Path, reference: Image) -> Mask | None:
    if item.inside <= 0.0 and item.outside_fraction <= 0.0:
        warnings.warn(f"VOI {item.name!r} in {f} is empty (zero volume); it is skipped", VoxelDoseWarning,
                      stacklevel=3)
        return None
    if item.inside <= 0.0 or item.outside_fraction >= 1.0 - 1e-9:
        lo = reference.index_to_world([-0.5, -0.5, -0.5])
        hi = reference.index_to_world([n - 0.5 for n in reference.size_xyz])
        raise VoiError(
            f"VOI {item.name!r} in {f} lies entirely outside the image (image corners "
            f"{tuple(np.round(lo, 1).tolist())} and {tuple(np.round(hi, 1).tolist())} mm): was it drawn "
            "on another scan or in another coordinate system?"
        )
    outside = item.outside_fraction
    if outside > OUTSIDE_WARN_FRACTION:
        warnings.warn(
            f"VOI {item.name!r} in {f}: {100.0 * outside:.2f} % of its volume lies outside the image "
            "and is cut off at the image's edge",
            VoxelDoseWarning,
            stacklevel=3,
        )
    mask = item.mask
    if mask.dtype == np.float32 and float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0:
        return mask  # already fractions (the rasteriser's are): two reads, not a clipped copy of the grid
    return np.clip(mask, 0.0, 1.0).astype(np.float32, copy=False)


# =========================================================================== RTSTRUCT


def _contour_points(item: Any, f: Path, name: str) -> NDArray[np.float64]:
    """ContourData as (N, 3) patient coordinates (mm), parsed from the raw bytes when possible."""
    raw = item.get_item(0x30060050)
    if raw is None:
        raise DicomError(f"{f}: ROI {name!r} has a contour without ContourData (3006,0050)")
    try:
        value = getattr(raw, "value", None)
        if isinstance(value, bytes):
            values = np.array(value.decode("ascii").replace("\\", " ").split(), dtype=float)
        else:
            values = np.asarray([float(v) for v in item.ContourData], float)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise DicomError(f"{f}: ROI {name!r}: ContourData (3006,0050) is not a list of numbers ({exc})") from exc
    if values.size % 3 or not np.isfinite(values).all():
        raise DicomError(
            f"{f}: ROI {name!r}: ContourData (3006,0050) holds {values.size} values, not (x, y, z) "
            "triplets of finite numbers; the file is damaged, re-export it"
        )
    n = getattr(item, "NumberOfContourPoints", None)
    if n is not None and int(n) * 3 != values.size:
        raise DicomError(
            f"{f}: ROI {name!r}: NumberOfContourPoints (3006,0046) is {int(n)} but ContourData "
            f"(3006,0050) holds {values.size // 3} points; the file is damaged, re-export it"
        )
    return values.reshape(-1, 3)


def _load_rtstruct(f: Path, reference: Image, registered: bool) -> list[_Loaded]:
    ds = _read_dicom(f, header_only=False)
    if ds is None:  # pragma: no cover - _kind_of already read it as DICOM
        raise DicomError(f"{f}: not a DICOM file")
    try:
        names, contours = _parse_rtstruct(ds, f)
    except (VoxelDoseError, Warning):  # ours, or a warning turned into an error by the caller
        raise
    except Exception as exc:  # damaged nested sequences surface on access, as many kinds
        raise DicomError(f"{f}: damaged RT Structure Set ({type(exc).__name__}: {exc}); re-export it") from exc

    drawn = [n for n in names if contours[n]]
    _check_voi_count(len(drawn), reference, f)
    for number, (name, roi_for) in names.items():
        if number not in drawn:
            warnings.warn(f"{f}: ROI {name!r} has no closed planar contours; it is skipped", VoxelDoseWarning,
                          stacklevel=3)
        else:
            _check_frame_of_reference(roi_for, reference, registered, f"{f}, ROI {name!r}")
    # ROIs whose contours are not parallel to the reference slices are rasterised on a grid of
    # their own planes and resampled (below)
    oblique = {n: _contour_grid(contours[n], f, names[n][0], reference) for n in drawn
               if not _parallel_to(contours[n], reference)}
    grid_of = {n: oblique.get(n, reference) for n in drawn}
    idx = {n: [grid_of[n].world_to_index(p) for p in contours[n]] for n in drawn}
    planes_k = {n: _plane_positions(idx[n], f, names[n][0], grid_of[n]) for n in drawn}
    # the typical plane spacing of the whole file, for ROIs drawn on one plane only
    # (in mm: the ROIs on their own grids have other slice spacings)
    all_mm = [k * grid_of[n].spacing_mm[2] for n, (_, k) in planes_k.items() if n not in oblique]
    all_mm_k = np.unique(np.concatenate(all_mm)) if all_mm else np.array([])
    gaps = np.diff(all_mm_k)
    gaps = gaps[gaps > CONTOUR_PLANE_TOLERANCE_MM]
    file_step_mm = float(np.median(gaps)) if gaps.size else reference.spacing_mm[2]  # else one reference slice
    out = []
    for number in drawn:
        plane_of, group_k = planes_k[number]
        grid = grid_of[number]
        mask, inside, total = _rasterise(idx[number], plane_of, group_k, grid, file_step_mm / grid.spacing_mm[2])
        if number in oblique:
            mask, inside, outside = _resample_fraction(grid.with_array(mask, units="MASK"), reference)
            out.append(_Loaded(names[number][0], mask, inside, outside))
        else:
            out.append(_Loaded(names[number][0], mask, inside, 1.0 - inside / total if total > 0 else 0.0))
    return out


def _normal(points: NDArray[np.float64]) -> NDArray[np.float64]:
    """Unit normal of a closed polygon by Newell's method (the sign follows its winding)."""
    a, b = points, np.roll(points, -1, axis=0)
    n = np.array([np.sum((a[:, 1] - b[:, 1]) * (a[:, 2] + b[:, 2])),
                  np.sum((a[:, 2] - b[:, 2]) * (a[:, 0] + b[:, 0])),
                  np.sum((a[:, 0] - b[:, 0]) * (a[:, 1] + b[:, 1]))])
    norm = float(np.linalg.norm(n))
    return n / norm if norm > 0 else n


def _parallel_to(polys: list[NDArray[np.float64]], reference: Image) -> bool:
    """Whether every contour lies in a plane parallel to the reference slices."""
    normal = reference.direction_matrix[:, 2]
    return all(float(np.ptp(p @ normal)) <= 2.0 * CONTOUR_PLANE_TOLERANCE_MM for p in polys)


def _contour_grid(polys: list[NDArray[np.float64]], f: Path, name: str, reference: Image) -> Image:
    """A grid whose slices are the planes of an ROI's contours (not parallel to the reference's).

    Its in-plane axes follow the reference's x axis projected on the plane; its voxels are the
    reference's smallest spacing / :data:`OBLIQUE_GRID_DIVISOR`, larger if the grid would hold
    more than :data:`OBLIQUE_GRID_MAX_VOXELS`; it holds every contour with a margin for the end
    caps.
    """
    normals = [_normal(p) for p in polys if len(p) >= 3]
    normals = [n for n in normals if np.any(n)]
    if not normals:
        raise VoiError(f"{f}: the contours of ROI {name!r} are degenerate (no area); re-export the ROI")
    n = np.zeros(3)
    for m in normals:
        n += m if float(m @ normals[0]) >= 0 else -m
    n /= float(np.linalg.norm(n))
    for p in polys:
        if float(np.ptp(p @ n)) > 2.0 * CONTOUR_PLANE_TOLERANCE_MM:
            raise VoiError(
                f"{f}: the contours of ROI {name!r} do not lie in parallel planes (a contour spans "
                f"{float(np.ptp(p @ n)):.2f} mm along their mean normal); voxeldose rasterises planar contours "
                "in parallel planes only: re-export the ROI from the planning system"
            )
    axes = reference.direction_matrix
    u = axes[:, 0] - float(axes[:, 0] @ n) * n
    if float(np.linalg.norm(u)) < 1e-6:  # the plane is normal to the reference x axis
        u = axes[:, 1] - float(axes[:, 1] @ n) * n
    u /= float(np.linalg.norm(u))
    v = np.cross(n, u)
    direction = np.column_stack([u, v, n])
    pts = np.concatenate(polys)
    uvn = pts @ direction
    plane_mm = np.unique(np.round(uvn[:, 2] / CONTOUR_PLANE_TOLERANCE_MM)) * CONTOUR_PLANE_TOLERANCE_MM
    step_mm = float(np.median(np.diff(plane_mm))) if plane_mm.size > 1 else max(reference.spacing_mm)
    margin = np.array([2.0 * max(reference.spacing_mm)] * 2 + [step_mm + min(reference.spacing_mm)])
    lo = uvn.min(axis=0) - margin
    # finer for accuracy, but at most OBLIQUE_GRID_MAX_VOXELS (a liver: about 1 mm)
    box_mm3 = float(np.prod(uvn.max(axis=0) + margin - lo))
    spacing = max(min(reference.spacing_mm) / OBLIQUE_GRID_DIVISOR, (box_mm3 / OBLIQUE_GRID_MAX_VOXELS) ** (1 / 3))
    size = np.ceil((uvn.max(axis=0) + margin - lo) / spacing).astype(int) + 1
    origin = direction @ lo
    grid = Image(np.zeros(tuple(int(x) for x in size[::-1]), np.float32), (spacing,) * 3, tuple(origin),
                 tuple(direction.reshape(-1)), "MASK")
    logger.info("ROI %r: contours not parallel to the image's slices; rasterised on a %s grid of %.2f mm and "
                "resampled", name, "x".join(str(int(x)) for x in size[::-1]), spacing)
    return grid


def _parse_rtstruct(
    ds: Any, f: Path
) -> tuple[dict[int, tuple[str, str | None]], dict[int, list[NDArray[np.float64]]]]:
    """ROI number -> (name, frame of reference UID), and ROI number -> closed contours (N, 3) in mm."""
    if "StructureSetROISequence" not in ds:
        raise DicomError(f"{f}: RT Structure Set without StructureSetROISequence (3006,0020); re-export it")
    default_for = None
    for item in getattr(ds, "ReferencedFrameOfReferenceSequence", []) or []:
        default_for = str(getattr(item, "FrameOfReferenceUID", "") or "") or default_for
        break
    names: dict[int, tuple[str, str | None]] = {}
    for item in ds.StructureSetROISequence:
        if "ROINumber" not in item:
            raise DicomError(f"{f}: an item of StructureSetROISequence has no ROINumber (3006,0022)")
        name = str(getattr(item, "ROIName", "") or "").strip() or f"ROI_{int(item.ROINumber)}"
        roi_for = str(getattr(item, "ReferencedFrameOfReferenceUID", "") or "") or default_for
        if int(item.ROINumber) in names:
            raise VoiError(
                f"{f}: ROIs {names[int(item.ROINumber)][0]!r} and {name!r} share ROINumber (3006,0022) "
                f"{int(item.ROINumber)}, so their contours cannot be told apart; the file is inconsistent, re-export it"
            )
        names[int(item.ROINumber)] = (name, roi_for)

    seen: dict[str, int] = {}
    for number, (name, _) in names.items():
        if name in seen:
            raise VoiError(
                f"{f}: ROIs {seen[name]} and {number} are both named {name!r}; rename one of them so that "
                "each name means one VOI"
            )
        seen[name] = number

    # contours per ROI: list of (N, 3) patient points
    contours: dict[int, list[NDArray[np.float64]]] = {n: [] for n in names}
    for item in getattr(ds, "ROIContourSequence", []) or []:
        if "ReferencedROINumber" not in item:
            raise DicomError(f"{f}: an item of ROIContourSequence has no ReferencedROINumber (3006,0084)")
        number = int(item.ReferencedROINumber)
        if number not in names:
            raise DicomError(
                f"{f}: ROIContourSequence refers to ROI number {number}, which StructureSetROISequence "
                "does not define; the file is inconsistent, re-export it"
            )
        name = names[number][0]
        for c in getattr(item, "ContourSequence", []) or []:
            kind = str(getattr(c, "ContourGeometricType", "") or "").upper()
            if kind == "POINT":
                continue
            if kind not in _CLOSED:
                warnings.warn(
                    f"{f}: ROI {name!r} has a {kind or 'untyped'} contour; only CLOSED_PLANAR contours "
                    "enclose a volume, it is ignored",
                    VoxelDoseWarning,
                    stacklevel=5,
                )
                continue
            pts = _contour_points(c, f, name)
            if len(pts) >= 3:
                extent = float(np.ptp(pts, axis=0).max())
                if extent > MAX_CONTOUR_EXTENT_MM:
                    raise VoiError(
                        f"{f}: a contour of ROI {name!r} spans {extent:.4g} mm, more than {MAX_CONTOUR_EXTENT_MM:g} mm "
                        "(wider than any scanner's field of view): are its coordinates in mm? The file may be "
                        "damaged; re-export it"
                    )
                contours[number].append(pts)
    for number, polys in contours.items():
        _check_no_duplicates(polys, f, names[number][0])
    return names, contours


def _check_no_duplicates(polys: list[NDArray[np.float64]], f: Path, name: str) -> None:
    """Refuse an ROI holding one contour twice (same points, in any order or winding)."""
    seen: dict[tuple[int, bytes], int] = {}
    for c, p in enumerate(polys):
        key_points = np.round(p / DUPLICATE_CONTOUR_TOLERANCE_MM).astype(np.int64)
        key_points = key_points[np.lexsort(key_points.T[::-1])]
        key = (len(p), key_points.tobytes())
        if key in seen:
            z = float(np.mean(p[:, 2]))
            raise VoiError(
                f"{f}: ROI {name!r} holds the same contour twice (contours {seen[key] + 1} and {c + 1}, {len(p)} "
                f"points, at z = {z:.2f} mm); by the even-odd rule they would cancel into a hole. The export "
                "duplicated it: remove one copy or re-export the ROI"
            )
        seen[key] = c


def _plane_positions(
    polys: list[NDArray[np.float64]], f: Path, name: str, reference: Image
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Group contours into planes: (plane number of each contour, plane k positions, ascending)."""
    sz = reference.spacing_mm[2]
    k_of = np.empty(len(polys))
    for c, p in enumerate(polys):
        k = p[:, 2]
        spread_mm = float(k.max() - k.min()) * sz
        if spread_mm > 2.0 * CONTOUR_PLANE_TOLERANCE_MM:
            raise VoiError(
                f"{f}: a contour of ROI {name!r} spans {spread_mm:.2f} mm along the reference image's "
                "slice normal: its plane is not parallel to the image's slices. voxeldose rasterises "
                "contours parallel to the slices only; load the scan the contours were drawn on as the "
                "reference (or resample the image into that orientation)"
            )
        k_of[c] = float(k.mean())
    order = np.argsort(k_of, kind="stable")
    tol_k = CONTOUR_PLANE_TOLERANCE_MM / sz
    plane_of = np.empty(len(polys), np.int64)
    group_k: list[list[float]] = []
    for c in order:
        if group_k and k_of[c] - group_k[-1][0] <= tol_k:
            group_k[-1].append(k_of[c])
        else:
            group_k.append([k_of[c]])
        plane_of[c] = len(group_k) - 1
    return plane_of, np.asarray([float(np.mean(g)) for g in group_k])


def _rasterise(
    polys: list[NDArray[np.float64]],
    plane_of: NDArray[np.int64],
    plane_k: NDArray[np.float64],
    reference: Image,
    fallback_step: float,
) -> tuple[Mask, float, float]:
    """Fractional mask of one ROI; also its volume inside the grid and in all (voxel units)."""
    rings = [[polys[c][:, :2] for c in np.nonzero(plane_of == m)[0]] for m in range(len(plane_k))]
    return rasterise_contours(rings, plane_k, reference.shape, reference.spacing_mm,
                              fallback_step=fallback_step, gap_break_factor=GAP_BREAK_FACTOR)


# =========================================================================== masks on other grids


def _crop_to_content(src: Image) -> Image | None:
    """``src`` cropped to its non-zero voxels plus one voxel (None when all zero)."""
    nz = np.nonzero(src.array)
    if nz[0].size == 0:
        return None
    lo = [max(int(a.min()) - 1, 0) for a in nz]
    hi = [min(int(a.max()) + 2, n) for a, n in zip(nz, src.shape)]
    arr = np.ascontiguousarray(src.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
    origin = src.index_to_world([lo[2], lo[1], lo[0]])
    return Image(arr, src.spacing_mm, (float(origin[0]), float(origin[1]), float(origin[2])), src.direction)


def _fraction_outside(src: Image, reference: Image) -> float:
    """Value-weighted fraction of the non-zero voxels of ``src`` whose centres lie outside the reference."""
    k, j, i = np.nonzero(src.array)
    weights = src.array[k, j, i].astype(np.float64)
    total = float(weights.sum())
    if total <= 0.0:
        return 0.0
    n_xyz = np.asarray(reference.size_xyz, float)
    out = 0.0
    chunk = 1_000_000
    for s in range(0, k.size, chunk):
        world = src.index_to_world(np.stack([i[s:s + chunk], j[s:s + chunk], k[s:s + chunk]], -1))
        idx = reference.world_to_index(world)
        outside = np.any((idx < -0.5) | (idx > n_xyz - 0.5), axis=1)
        out += float(weights[s:s + chunk][outside].sum())
    return out / total


def _resample_fraction(src: Image, reference: Image) -> tuple[Mask, float, float]:
    """``src`` (fractions 0-1) on the reference grid, its volume inside (reference voxels), and
    the fraction of it outside the reference grid (by source voxel centres)."""
    if src.same_grid(reference):
        arr = np.clip(np.asarray(src.array, np.float32), 0.0, 1.0)
        return arr, float(arr.sum(dtype=np.float64)), 0.0
    out = np.zeros(reference.shape, np.float32)
    cropped = _crop_to_content(src)
    if cropped is None:
        return out, 0.0, 0.0
    outside = _fraction_outside(cropped, reference)
    # reference voxels the source can touch: its box, plus one source voxel for interpolation
    n_xyz = np.asarray(cropped.size_xyz, float)
    corners = np.array([[x, y, z] for x in (-1.5, n_xyz[0] + 0.5) for y in (-1.5, n_xyz[1] + 0.5)
                        for z in (-1.5, n_xyz[2] + 0.5)])
    idx = reference.world_to_index(cropped.index_to_world(corners))
    lo = np.maximum(np.floor(idx.min(axis=0) + 0.5).astype(int), 0)
    hi = np.minimum(np.floor(idx.max(axis=0) + 0.5).astype(int), np.asarray(reference.size_xyz) - 1)
    if np.any(lo > hi):
        return out, 0.0, outside
    # sub-samples per reference axis: about one per source voxel along that axis (the source
    # voxel's extent projected on it), so that grids that coincide, or nest with an integer
    # ratio, sample the source at its voxel centres and the result is exact
    extent = np.abs(reference.direction_matrix.T @ cropped.direction_matrix) @ np.asarray(cropped.spacing_mm)
    m = np.clip(np.ceil(np.asarray(reference.spacing_mm) / extent - 1e-9), 1, MAX_SUPERSAMPLING).astype(np.int64)
    box = hi - lo + 1  # (x, y, z) reference voxels
    source = to_sitk(cropped)
    # about 8 M sub-samples at a time at most: split along z
    per_slice = int(box[0] * box[1] * m.prod())
    slices = max(1, 8_000_000 // max(per_slice, 1))
    for z0 in range(0, int(box[2]), slices):
        nzb = min(slices, int(box[2]) - z0)
        first = lo + np.array([0, 0, z0])
        part = _supersample(source, reference, first, np.array([box[0], box[1], nzb]), m)
        out[first[2]:first[2] + nzb, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = part
    np.clip(out, 0.0, 1.0, out=out)
    return out, float(out.sum(dtype=np.float64)), outside


def _supersample(source: Any, reference: Image, first_xyz: NDArray[np.int64], size_xyz: NDArray[np.int64],
                 m: NDArray[np.int64]) -> Mask:
    """Mean of the linearly interpolated source over m sub-samples per axis of each reference voxel."""
    import SimpleITK as sitk

    sub_spacing = np.asarray(reference.spacing_mm) / m
    first_sub = first_xyz - 0.5 + 0.5 / m  # continuous reference index of the first sub-sample
    grid = sitk.Image([int(v) for v in size_xyz * m], sitk.sitkFloat32)
    grid.SetSpacing([float(v) for v in sub_spacing])
    grid.SetOrigin([float(v) for v in reference.index_to_world(first_sub)])
    grid.SetDirection(reference.direction)
    fine = sitk.Resample(source, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(fine)  # [z, y, x]
    nzb, nyb, nxb = int(size_xyz[2]), int(size_xyz[1]), int(size_xyz[0])
    mx, my, mz = (int(v) for v in m)
    return arr.reshape(nzb, mz, nyb, my, nxb, mx).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


# =========================================================================== SEG


def _check_seg_extent(ds: Any, f: Path, groups: Any, shared: Any, per_plane: int) -> None:
    """The volume highdicom builds spans the frames' planes at their smallest spacing: a frame
    placed 78 m away asks for tens of thousands of planes. Checked against the allocation limit."""
    from .._checks import check_allocation

    orient = getattr(shared, "PlaneOrientationSequence", None) if shared is not None else None
    try:
        iop = np.array([float(v) for v in orient[0].ImageOrientationPatient], float) if orient else None
        positions = np.array([[float(v) for v in g.PlanePositionSequence[0].ImagePositionPatient] for g in groups], float)
    except (AttributeError, IndexError, TypeError, ValueError):
        return  # highdicom reports what is missing or malformed
    if iop is None or iop.size != 6 or positions.ndim != 2 or positions.shape[1] != 3 or not np.isfinite(positions).all():
        return
    normal = np.cross(iop[:3], iop[3:])
    planes = np.unique(np.round(positions @ normal, 3))
    gaps = np.diff(planes)
    gaps = gaps[gaps > 0.01]
    if gaps.size:
        n_planes = int(round(float(planes[-1] - planes[0]) / float(gaps.min()))) + 1
        check_allocation(n_planes * per_plane, f"{f}: a segmentation spanning {float(planes[-1] - planes[0]):.6g} mm "
                         f"in planes {float(gaps.min()):.4g} mm apart ({n_planes} planes)",
                         "is a frame's ImagePositionPatient (0020,0032) wrong?")


def _check_seg_frames(ds: Any, f: Path, numbers: set[int]) -> None:
    """Every frame of a SEG belongs to a segment the file defines (a frame of segment 0 was
    dropped without a word, and a plane of the liver with it), and NumberOfFrames counts them."""
    groups = getattr(ds, "PerFrameFunctionalGroupsSequence", None) or []
    n_frames = int(getattr(ds, "NumberOfFrames", 0) or 0)
    if len(groups) != n_frames:
        raise DicomError(f"{f}: NumberOfFrames (0028,0008) is {n_frames} but PerFrameFunctionalGroupsSequence holds "
                         f"{len(groups)} frames; the file is inconsistent, re-export it")
    rows, cols, bits = int(ds.Rows), int(ds.Columns), int(getattr(ds, "BitsAllocated", 0) or 0)
    kind = str(getattr(ds, "SegmentationType", "")).upper()
    if (kind, bits) not in (("BINARY", 1), ("FRACTIONAL", 8), ("LABELMAP", 8), ("LABELMAP", 16)):
        raise DicomError(f"{f}: SegmentationType {kind or '(none)'} with BitsAllocated {bits}: a BINARY SEG has 1 bit per "
                         "pixel and a FRACTIONAL one 8 (PS3.3 C.8.20.2); re-export it")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and not syntax.is_compressed and "PixelData" in ds:
        matches, expected = native_pixel_bytes_match(len(ds.PixelData), rows, cols, n_frames, bits)
        if not matches:
            raise DicomError(
                f"{f}: the pixel data holds {len(ds.PixelData)} bytes but {n_frames} frames of Rows {rows} x Columns "
                f"{cols} at {bits} bit(s) describe {expected}: a wrong Rows, Columns or NumberOfFrames, or a truncated "
                "file; re-export it"
            )
    shared = (getattr(ds, "SharedFunctionalGroupsSequence", None) or [None])[0]
    for k, group in enumerate([shared, *groups]):
        measures = getattr(group, "PixelMeasuresSequence", None) if group is not None else None
        if measures and "PixelSpacing" in measures[0]:
            spacing = measures[0].PixelSpacing
            values = list(spacing) if type(spacing).__name__ == "MultiValue" else [spacing]
            try:
                ok = len(values) == 2 and all(math.isfinite(float(v)) and float(v) > 0 for v in values)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise DicomError(f"{f}: PixelSpacing (0028,0030) {values!r} in the {'shared' if k == 0 else f'frame {k}'} "
                                 "pixel measures must be two positive numbers; re-export it")
    _check_seg_extent(ds, f, groups, shared, rows * cols * max(1, len(numbers)))
    shared_ident = getattr(shared, "SegmentIdentificationSequence", None) if shared is not None else None
    for k, group in enumerate(groups, start=1):
        ident = getattr(group, "SegmentIdentificationSequence", None) or shared_ident  # per frame, or shared by all
        number = getattr(ident[0], "ReferencedSegmentNumber", None) if ident else None
        if number is None or int(number) not in numbers:
            raise DicomError(
                f"{f}: frame {k} belongs to segment {number} (ReferencedSegmentNumber (0062,000B)), which SegmentSequence "
                f"does not define (segments {sorted(numbers)}); the file is inconsistent, re-export it"
            )


def _load_seg(f: Path, reference: Image, registered: bool) -> list[_Loaded]:
    import highdicom as hd

    ds = _read_dicom(f, header_only=False)
    if ds is None:  # pragma: no cover - _kind_of already read it as DICOM
        raise DicomError(f"{f}: not a DICOM file")
    _check_frame_of_reference(str(getattr(ds, "FrameOfReferenceUID", "") or "") or None, reference, registered, str(f))
    try:
        # sizes and references first, from the dataset: highdicom works through every frame
        segments = [(int(item.SegmentNumber), str(getattr(item, "SegmentLabel", "") or "").strip())
                    for item in ds.SegmentSequence]
        from .._checks import check_allocation

        check_allocation(int(getattr(ds, "NumberOfFrames", 1) or 1) * int(ds.Rows) * int(ds.Columns),
                         f"{f}: a segmentation of {getattr(ds, 'NumberOfFrames', 1)} frames of {ds.Rows} x {ds.Columns}")
        _check_voi_count(len(segments), reference, f)
        _check_seg_frames(ds, f, {n for n, _ in segments})
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
        volume = seg.get_volume(combine_segments=False, rescale_fractional=True, dtype=np.float32,
                                segment_numbers=[n for n, _ in segments])
        array = np.asarray(volume.array, np.float32)
        affine = np.asarray(volume.affine, float)
    except VoxelDoseError:
        raise
    except Exception as exc:  # highdicom and pydicom raise many kinds on damaged files
        raise DicomError(
            f"{f}: cannot read the segmentation ({type(exc).__name__}: {exc}); check that it is a complete "
            "SEG of a regular 3-D volume, or re-export it"
        ) from exc
    if array.ndim == 3:
        array = array[..., None]
    # a physicist cannot edit a SEG: segments sharing a label (a converter's "Neoplasm, Secondary"
    # for ten lesions) get unique names, the label and the segment number, with a warning
    labels = [label or f"segment_{number}" for number, label in segments]
    shared = {name for name in labels if labels.count(name) > 1}
    names = [f"{name} (segment {number})" if name in shared else name for (number, _), name in zip(segments, labels)]
    if shared:
        listed = "; ".join(f"{name!r}: segments {', '.join(str(n) for (n, _), l in zip(segments, labels) if l == name)}"
                           for name in sorted(shared))
        warnings.warn(
            f"{f}: several segments share a label ({listed}); they are named by label and segment number, e.g. "
            f"{names[labels.index(sorted(shared)[0])]!r}. Use those names for their roles (case file [vois] or "
            "--voi-role)", VoxelDoseWarning, stacklevel=3)
    if len(set(names)) != len(names):
        clash = sorted({n for n in names if names.count(n) > 1})
        raise VoiError(f"{f}: the segment names {clash} are not unique even with their segment numbers; re-export the SEG")
    out = []
    for c, name in enumerate(names):
        src = _image_from_affine(array[..., c], affine, f)
        out.append(_Loaded(name, *_resample_fraction(src, reference)))
    return out


def _image_from_affine(array: NDArray[np.float32], affine: NDArray[np.float64], f: Path) -> Image:
    """An Image from a [slice, row, column] array and the affine of highdicom's Volume."""
    cols = affine[:3, :3]
    spacing_kji = np.linalg.norm(cols, axis=0)
    if np.any(spacing_kji <= 0):
        raise DicomError(f"{f}: the segmentation has a zero pixel spacing or slice spacing")
    unit = cols / spacing_kji
    direction = np.stack([unit[:, 2], unit[:, 1], unit[:, 0]], axis=1)  # columns: i (x), j (y), k (z)
    spacing = (float(spacing_kji[2]), float(spacing_kji[1]), float(spacing_kji[0]))
    origin = (float(affine[0, 3]), float(affine[1, 3]), float(affine[2, 3]))
    try:
        return Image(np.ascontiguousarray(array), spacing, origin, tuple(float(v) for v in direction.reshape(-1)))
    except GeometryError as exc:
        raise DicomError(f"{f}: the segmentation's geometry is not usable: {exc}; re-export it") from None


# =========================================================================== label maps


def _stem(p: Path) -> str:
    name = p.name
    for suffix in LABEL_MAP_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return p.stem


def _sidecar_names(p: Path) -> dict[int, str] | None:
    stem = _stem(p)
    found = [p.with_name(stem + s) for s in SIDECAR_SUFFIXES if p.with_name(stem + s).is_file()]
    if not found:
        return None
    if len(found) > 1:
        raise VoiError(
            f"{p}: several label-name files next to it ({', '.join(x.name for x in found)}); keep one, "
            "or pass label_names"
        )
    side = found[0]
    try:
        pairs: list[tuple[Any, Any]]
        if side.suffix == ".json":
            data: Any = parse(side.read_text(encoding="utf-8"), "json", f"label names {side}")
            if isinstance(data, dict) and isinstance(data.get("labels"), dict):
                data = data["labels"]
            if not isinstance(data, dict):
                raise ValueError("expected an object mapping label values to names")
            pairs = list(data.items())
        elif side.suffix == ".toml":
            data = parse(side.read_text(encoding="utf-8"), "toml", f"label names {side}")
            if isinstance(data.get("labels"), dict):
                data = data["labels"]
            pairs = list(data.items())
        else:
            with open(side, newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
            if rows and not rows[0][0].strip().lstrip("-").isdigit():
                rows = rows[1:]  # a header row
            if any(len(r) < 2 for r in rows):
                raise ValueError("each row needs two columns: label value, name")
            pairs = [(r[0], r[1]) for r in rows]
        names = {int(str(key).strip()): str(value).strip() for key, value in pairs}
    except (ValueError, TypeError, OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise VoiError(
            f"{side}: cannot read label names ({exc}); write label value -> name pairs, e.g. "
            '{"1": "liver", "2": "tumour_1"} in JSON'
        ) from exc
    return names


def _load_label_map(f: Path, reference: Image, label_names: Mapping[int, str] | None) -> list[_Loaded]:
    import SimpleITK as sitk

    img = read_image_file(f, VoiError, "label map")
    scaling = nifti_scaling(f, VoiError, "label map")
    # ITK applies a NIfTI's scl_slope and scl_inter: a slope of 2 turns label 1 into 2, another VOI
    # (a slope of 0 means no scaling in the NIfTI-1 standard, but ITK still adds the intercept)
    if scaling is not None and (scaling[0] not in (0.0, 1.0) or scaling[1] != 0.0):
        raise VoiError(
            f"{f}: the label map's NIfTI header scales its values (scl_slope {scaling[0]:g}, scl_inter {scaling[1]:g}), "
            "so the labels read are not the labels stored; a label map stores its labels unscaled (scl_slope 0 or 1, "
            "scl_inter 0): re-export it"
        )
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise VoiError(
            f"{f}: a label map must be a 3-D image of integer labels, got {img.GetDimension()}-D with "
            f"{img.GetNumberOfComponentsPerPixel()} component(s)"
        )
    labels = sitk.GetArrayFromImage(img)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise VoiError(
                f"{f}: the image holds non-integer values, so it is not a label map; VOI masks with "
                "fractions go in a DICOM SEG (FRACTIONAL), or give one integer label per VOI"
            )
        labels = labels.astype(np.int64)
    if label_names is not None:
        names = {int(k): str(v) for k, v in label_names.items()}
    else:
        side = _sidecar_names(f)
        if side is None:
            raise VoiError(
                f"{f}: no names for the labels of this label map; pass label_names={{1: 'liver', ...}} "
                f"or put {_stem(f)}.json ({{\"1\": \"liver\"}}), .toml or .csv next to it"
            )
        names = side
    present = set(int(v) for v in np.unique(labels)) - {0}
    seen: dict[str, int] = {}
    for value, name in names.items():
        if not name:
            raise VoiError(f"{f}: label {value} has an empty name")
        if name in seen:
            raise VoiError(f"{f}: labels {seen[name]} and {value} are both named {name!r}; rename one of them")
        seen[name] = value
    unnamed = sorted(present - set(names))
    if unnamed:
        warnings.warn(
            f"{f}: label value(s) {unnamed} have no name and are skipped; add them to label_names or the "
            "sidecar file to load them",
            VoxelDoseWarning,
            stacklevel=4,
        )
    _check_voi_count(len(present & set(names)), reference, f)
    base = from_sitk(img, dtype=np.float32)
    out = []
    for value, name in names.items():
        if value not in present:
            warnings.warn(f"{f}: label {value} ({name!r}) does not occur in the label map; it is skipped",
                          VoxelDoseWarning, stacklevel=4)
            continue
        src = base.with_array((labels == value).astype(np.float32))
        out.append(_Loaded(name, *_resample_fraction(src, reference)))
    return out


def _load_slicer_segmentation(f: Path, reference: Image) -> list[_Loaded]:
    """A 3D Slicer segmentation (``.seg.nrrd``): every segment of every layer, named by the header.

    Slicer stores segments in layers (the NRRD's first axis, ``kinds: list``); a segment is the
    voxels of its layer holding its label value (``SegmentN_Layer``, ``SegmentN_LabelValue``,
    ``SegmentN_Name``). Segments in different layers may overlap, and are kept so. Each mask is
    resampled onto the reference grid by world coordinates, as label maps are.
    """
    import SimpleITK as sitk

    img = read_image_file(f, VoiError, "3D Slicer segmentation")
    keys = set(img.GetMetaDataKeys())
    if img.GetDimension() != 3:
        raise VoiError(f"{f}: a Slicer segmentation must have three spatial axes, got {img.GetDimension()}")
    segments = []
    i = 0
    while f"Segment{i}_Name" in keys or f"Segment{i}_ID" in keys:
        def meta(key: str, default: str) -> str:
            return img.GetMetaData(f"Segment{i}_{key}").strip() if f"Segment{i}_{key}" in keys else default

        name = meta("Name", "") or meta("ID", f"segment_{i}")
        try:
            layer, value = int(meta("Layer", "0")), int(meta("LabelValue", "1"))
        except ValueError:
            raise VoiError(f"{f}: segment {i} ({name!r}) has a malformed Layer or LabelValue in the header") from None
        segments.append((name, layer, value))
        i += 1
    if not segments:
        raise VoiError(f"{f}: no Segment0_Name in the header: not a 3D Slicer segmentation (a label map goes in a "
                       ".nrrd with a name table)")
    _check_voi_count(len(segments), reference, f)
    layers = img.GetNumberOfComponentsPerPixel()
    array = sitk.GetArrayFromImage(img)
    if array.ndim == 3:
        array = array[..., None]
    names = [n for n, _, _ in segments]
    shared = {n for n in names if names.count(n) > 1}
    if shared:
        names = [f"{n} (segment {k})" if n in shared else n for k, n in enumerate(names)]
        warnings.warn(f"{f}: several segments share a name ({', '.join(map(repr, sorted(shared)))}); they are named by "
                      "name and segment index", VoxelDoseWarning, stacklevel=4)
    base = from_sitk(sitk.VectorIndexSelectionCast(img, 0) if layers > 1 else img, dtype=np.float32)
    out = []
    for name, (_, layer, value) in zip(names, segments):
        if not 0 <= layer < layers:
            raise VoiError(f"{f}: segment {name!r} is in layer {layer}, but the file has {layers} layer(s)")
        src = base.with_array((array[..., layer] == value).astype(np.float32))
        out.append(_Loaded(name, *_resample_fraction(src, reference)))
    return out

