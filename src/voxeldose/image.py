"""The image type: an array that carries its geometry, units and the metadata later steps need.

Geometry follows ITK/DICOM conventions (the conversion to and from SimpleITK images, whose
tuples are (x, y, z) and whose ``GetArrayFromImage`` is [z, y, x], is :mod:`voxeldose.io._sitk`,
the one place that does it):

- ``array`` is indexed [z, y, x] (``SimpleITK.GetArrayFromImage`` order);
- ``spacing_mm`` and ``origin_mm`` are (x, y, z) in mm; ``origin_mm`` is the patient position
  (DICOM LPS) of the centre of voxel [0, 0, 0];
- ``direction`` is the 3x3 ITK direction matrix: column ``j`` is the unit vector, in patient
  coordinates, of index axis ``j`` (i = x, j = y, k = z). For a DICOM series its first two
  columns are ImageOrientationPatient and the third points from the first slice to the next.

The world position of index (i, j, k) is ``origin + direction @ (spacing * (i, j, k))``.

Masks are compact. A VOI's mask (units "MASK") is held as its bounding box and the fractions
inside it: the Image copies the box into new anonymous memory that the operating system maps to
its shared zero page until written, so only the pages that hold the box take memory, while
``array`` stays an ordinary read-only array of the whole grid that every caller reads as before.
The box is found once, when the mask is made (:meth:`Image.nonzero_box`), and the work on masks
(DVHs, derived VOIs, model cross-checks) is done on it. A pickled or copied mask carries the box
and its fractions only.
"""

from __future__ import annotations

import datetime as _dt
import mmap
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._checks import check_direction, check_mask, check_origin, check_spacing, nonzero_box
from .errors import InputError, VoiError

__all__ = ["Image", "ImageMeta", "mask_image"]

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
_UNSET = object()


class _MaskMemory(mmap.mmap):
    """The anonymous memory of one compact mask (:func:`_compact`), with the mask's box and the
    layout of the one array that views all of it (``signature``)."""

    box: tuple[slice, ...] | None
    signature: tuple[Any, ...]


def _signature(array: NDArray[Any]) -> tuple[Any, ...]:
    return (array.__array_interface__["data"][0], array.shape, array.strides, array.dtype.str)


def _compact(shape: tuple[int, ...], dtype: Any, box: tuple[slice, ...] | None,
             fractions: NDArray[Any] | None) -> NDArray[Any]:
    """A read-only array of ``shape``, zero except ``fractions`` in ``box``, in new private
    anonymous memory: the pages outside the box are never written, so the system maps them to its
    zero page and only the box's pages are resident (huge pages are declined where the system
    would otherwise use them, so that a small box does not take 2 MB pages)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    flags = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}
    try:
        memory: _MaskMemory | None = _MaskMemory(-1, max(count * dtype.itemsize, 1), **flags)
    except OSError:  # no mapping to be had (e.g. the process's map count at its limit): a plain array
        memory = None
    if memory is not None and hasattr(mmap, "MADV_NOHUGEPAGE"):
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    out = (np.zeros(shape, dtype) if memory is None
           else np.frombuffer(memory, dtype, count=count).reshape(shape))
    if box is not None and fractions is not None:
        out[box] = fractions
    out.setflags(write=False)
    if memory is not None:
        memory.box, memory.signature = box, _signature(out)
    return out


def _compact_box(array: NDArray[Any]) -> Any:
    """The box of ``array`` when it is a compact mask's whole array, unchanged since it was made
    (read-only); :data:`_UNSET` otherwise."""
    base: Any = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):  # np.frombuffer's view of the memory
        base = base.obj
    if (isinstance(base, _MaskMemory) and not array.flags.writeable
            and getattr(base, "signature", None) == _signature(array)):
        return base.box
    return _UNSET


@dataclass(frozen=True)
class _CompactState:
    """How a compact mask's array is pickled: its shape, dtype, box and the fractions in it."""

    shape: tuple[int, ...]
    dtype: str
    box: tuple[slice, ...] | None
    fractions: NDArray[Any] | None


def _frozen(array: NDArray[Any]) -> bool:
    """Whether nothing can change ``array``'s values short of resetting a flag: it and every
    array whose memory it views are read-only, down to memory numpy owns or immutable bytes."""
    a: Any = array
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return False
        a = a.base
    return a is None or isinstance(a, bytes)


@dataclass(frozen=True)
class ImageMeta:
    """What the calibration and output steps need to know about where an image came from.

    Every field is optional: synthetic images have none of them. Times are naive
    :class:`datetime.datetime` in the scanner's local time, as DICOM stores them (all times of
    one case share that clock). ``identifiers`` holds patient and study identifiers for copying
    into outputs; it is never logged.
    """

    modality: str | None = None  # "PT", "NM", "CT"
    sop_class_uid: str | None = None
    series_instance_uid: str | None = None
    study_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    series_description: str | None = None
    manufacturer: str | None = None
    manufacturer_model: str | None = None
    series_datetime: _dt.datetime | None = None
    acquisition_datetime: _dt.datetime | None = None
    # GE's private scan start (0009,100D, creator GEMS_PETD_01): the decay reference of a GE PET
    # whose Series Date/Time was changed by re-saving (QIBA SUV pseudo-code)
    private_scan_datetime: _dt.datetime | None = None
    frame_duration_s: float | None = None
    radiopharmaceutical: str | None = None
    radionuclide: str | None = None  # code meaning, e.g. "^90^Yttrium", or the code value
    radionuclide_code: str | None = None  # SNOMED code value, e.g. "C-162A7" (Y-90)
    radionuclide_half_life_s: float | None = None
    radionuclide_positron_fraction: float | None = None
    radiopharmaceutical_start_datetime: _dt.datetime | None = None
    # RadiopharmaceuticalStartTime (0018,1072) when the header has no StartDateTime: a time of
    # day without a date, never combined with a date here (calibrate decides, and says so)
    radiopharmaceutical_start_time: _dt.time | None = None
    radionuclide_total_dose_bq: float | None = None
    decay_correction: str | None = None  # "START", "ADMIN", "NONE"
    decay_factor: float | None = None
    corrected_image: tuple[str, ...] = ()
    # per slice, in the array's z order; filled only where slices differ (a multi-bed PET, whose
    # beds were acquired one after another): acquisition start, frame duration and DecayFactor
    slice_acquisition_datetimes: tuple[_dt.datetime | None, ...] = ()
    slice_frame_durations_s: tuple[float | None, ...] = ()
    slice_decay_factors: tuple[float | None, ...] = ()
    source_files: tuple[str, ...] = ()
    # what the loader did to the geometry (e.g. slices of uneven spacing put on a regular grid)
    geometry_notes: tuple[str, ...] = ()
    identifiers: Mapping[str, str] = field(default_factory=dict, repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # the UIDs are anonymized ones and the times shifted (voxeldose.anonymize): not to be mapped again
    anonymized: bool = False


@dataclass(frozen=True)
class Image:
    """A 3-D image with its geometry, units and metadata. Immutable: the array is read-only.

    Attributes
    ----------
    array : ndarray, float32, [z, y, x]
        Voxel values in ``units``.
    spacing_mm : (x, y, z)
    origin_mm : (x, y, z)
        Patient position (mm) of the centre of voxel [0, 0, 0].
    direction : tuple of 9 floats
        ITK direction matrix, row-major (see the module documentation).
    units : str
        "BQML" (Bq/mL), "CNTS" (counts), "HU", "MBQ" (MBq per voxel), "GY", "MASK" (fraction of
        each voxel inside a VOI, 0-1: checked once, when the image is made, and held compactly:
        the Image's own copy, whose memory outside the box is never written; the module
        documentation) or "".
    meta : ImageMeta
    """

    array: NDArray[np.floating]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = _IDENTITY
    units: str = ""
    meta: ImageMeta = field(default_factory=ImageMeta)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise InputError(f"an Image needs a 3-D array [z, y, x], got shape {arr.shape}")
        if arr.flags.writeable:
            # a read-only view: no copy, and the caller's array keeps its flags (do not modify
            # an array after handing it to an Image)
            arr = arr.view()
            arr.setflags(write=False)
        if self.units == "MASK":
            box = _compact_box(arr)
            if box is _UNSET:
                # a VOI: fractions in [0, 1], checked here once, so that every stage can trust it,
                # and copied into a compact array with its box (another Image's compact array,
                # e.g. from with_array or replace, is taken as it is)
                arr = check_mask(arr, None, what="mask image", fix_shape="")
                box = nonzero_box(arr > 0)
                arr = _compact(arr.shape, arr.dtype, box, None if box is None else arr[box])
            object.__setattr__(self, "_nonzero_box", box)
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "spacing_mm", check_spacing(self.spacing_mm))
        object.__setattr__(self, "origin_mm", check_origin(self.origin_mm))
        object.__setattr__(self, "direction", check_direction(self.direction))

    def __getstate__(self) -> dict[str, Any]:
        # a copy or an unpickled Image finds its box again; a compact mask travels as its box
        # and the fractions in it, not as the whole grid
        state = {k: v for k, v in self.__dict__.items() if k != "_nonzero_box"}
        arr = state.get("array")
        if isinstance(arr, np.ndarray) and (box := _compact_box(arr)) is not _UNSET:
            state["array"] = _CompactState(arr.shape, arr.dtype.str, box, None if box is None else arr[box].copy())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # unpickled (protocols up to 4) or deep-copied, the array is a new writeable one that only
        # this Image holds: read-only again, as every Image's array is
        self.__dict__.update(state)
        arr = self.__dict__.get("array")
        if isinstance(arr, _CompactState):
            self.__dict__["array"] = _compact(arr.shape, arr.dtype, arr.box, arr.fractions)
            self.__dict__["_nonzero_box"] = arr.box
        elif isinstance(arr, np.ndarray) and arr.flags.writeable:
            arr.setflags(write=False)

    def nonzero_box(self) -> tuple[slice, ...] | None:
        """The bounding box [z, y, x] of the voxels > 0 (of a mask: those the VOI touches), an
        index range per axis (half-open); None when there are none.

        A mask's box is found when the Image is made (its array is the Image's own compact
        copy: the module documentation). Another image's box is kept once found where its array
        cannot change: it is read-only down to the memory that holds it. An Image made from the
        caller's own writeable array is a read-only view of memory the caller may still change,
        so its box is found again at each call: never a stale box. (Only an owner that sets a
        read-only array writeable again and changes it defeats this, as it defeats a mask's check
        when the Image was made.)
        """
        cached = self.__dict__.get("_nonzero_box", _UNSET)
        if cached is not _UNSET:
            return cached  # type: ignore[no-any-return]
        box = nonzero_box(self.array > 0)
        if _frozen(self.array):
            object.__setattr__(self, "_nonzero_box", box)
        return box

    # ----------------------------------------------------------------- geometry

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape [z, y, x]."""
        return self.array.shape  # type: ignore[return-value]

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        """Number of voxels along (x, y, z)."""
        z, y, x = self.array.shape
        return (x, y, z)

    @property
    def direction_matrix(self) -> NDArray[np.float64]:
        """3x3 direction matrix (columns: index axes x, y, z in patient coordinates)."""
        return np.asarray(self.direction, float).reshape(3, 3)

    @property
    def voxel_volume_ml(self) -> float:
        sx, sy, sz = self.spacing_mm
        return sx * sy * sz * 1e-3

    def index_to_world(self, index_xyz: ArrayLike) -> NDArray[np.float64]:
        """Patient coordinates (mm) of continuous indices (i, j, k) = (x, y, z); shape (..., 3)."""
        ijk = np.asarray(index_xyz, float)
        return np.asarray(self.origin_mm) + (ijk * np.asarray(self.spacing_mm)) @ self.direction_matrix.T

    def world_to_index(self, point_mm: ArrayLike) -> NDArray[np.float64]:
        """Continuous indices (i, j, k) = (x, y, z) of patient points (mm); shape (..., 3)."""
        p = np.asarray(point_mm, float) - np.asarray(self.origin_mm)
        return (p @ self.direction_matrix) / np.asarray(self.spacing_mm)

    def same_grid(self, other: "Image", *, tol_mm: float = 1e-3) -> bool:
        """True when ``other`` has the same shape and, within ``tol_mm``, the same geometry."""
        if self.shape != other.shape:
            return False
        corners = np.array([[0, 0, 0], [n - 1 for n in self.size_xyz]], float)
        return bool(np.allclose(self.index_to_world(corners), other.index_to_world(corners), atol=tol_mm)
                    and np.allclose(self.direction, other.direction, atol=1e-5))

    # ----------------------------------------------------------------- derived images

    def with_array(self, array: ArrayLike, *, units: str | None = None, **meta_changes: Any) -> "Image":
        """A new image on the same grid with ``array`` (same shape) and optionally new units/meta."""
        arr = np.asarray(array)
        if arr.shape != self.shape:
            raise InputError(f"new array shape {arr.shape} differs from the image's {self.shape}")
        meta = replace(self.meta, **meta_changes) if meta_changes else self.meta
        return replace(self, array=arr, units=self.units if units is None else units, meta=meta)


def mask_image(reference: Image, mask: "Image | ArrayLike", *, name: str) -> Image:
    """VOI ``name`` as a mask image (units "MASK", fractions 0-1) on ``reference``'s grid.

    ``mask`` is a mask :class:`Image` on the same grid (returned as it is when its units are
    "MASK"), or an array [z, y, x] of ``reference``'s shape, boolean or fractional.

    Raises
    ------
    VoiError
        A mask on another grid (the message says to resample it), of another shape, or with
        values outside [0, 1].
    """
    if isinstance(mask, Image):
        if not reference.same_grid(mask):
            raise VoiError(
                f"VOI {name!r}: its grid (shape {mask.shape}, origin {mask.origin_mm} mm, spacing "
                f"{mask.spacing_mm} mm) differs from the image's (shape {reference.shape}, origin "
                f"{reference.origin_mm} mm, spacing {reference.spacing_mm} mm); resample the VOI onto "
                "the image grid (load_vois does, given the image)"
            )
        if mask.units == "MASK":
            return mask
        mask = mask.array
    checked = check_mask(mask, reference.shape, what=f"VOI {name!r}",
                         fix_shape="put the VOI on the image's grid (load_vois does, given the image)")
    return Image(checked, reference.spacing_mm, reference.origin_mm, reference.direction, "MASK")
