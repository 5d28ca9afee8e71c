"""Input checks shared by the public functions. Pure; raise the voxeldose error family."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from .errors import GeometryError, InputError, VoxelDoseWarning

#: Largest voxel edge accepted (mm): anything larger is a unit mistake (cm or m given as mm?).
MAX_SPACING_MM = 50.0

#: Smallest voxel edge accepted (mm): 10 micrometres, 20 times finer than the finest preclinical
#: PET or micro-CT voxel; a smaller value is a unit mistake (m given as mm?) or a corrupt header.
MIN_SPACING_MM = 0.01

#: Most voxels in one array voxeldose allocates: 2**29 (537 million; 2 GiB as float32, e.g. a
#: 512 x 512 x 2048 CT). Sizes are checked against it before anything is allocated, so that a
#: header claiming 65535 x 65535 pixels, or a spacing that turns a kernel into billions of voxels,
#: is a clear error instead of a MemoryError (or a machine swapping for minutes). Raise it with
#: the environment variable ``VOXELDOSE_MAX_VOXELS`` on a machine with the memory for more.
MAX_VOXELS = 2**29


def max_voxels() -> int:
    """The allocation limit in voxels: ``VOXELDOSE_MAX_VOXELS`` if set, else :data:`MAX_VOXELS`."""
    import os

    text = os.environ.get("VOXELDOSE_MAX_VOXELS", "").strip()
    if not text:
        return MAX_VOXELS
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"VOXELDOSE_MAX_VOXELS must be a whole number of voxels, got {text!r}") from None
    if value < 1:
        raise InputError(f"VOXELDOSE_MAX_VOXELS must be positive, got {text!r}")
    return value


def check_allocation(n_voxels: int, what: str, fix: str = "") -> None:
    """Raise an :class:`InputError` before allocating ``n_voxels`` voxels beyond :func:`max_voxels`.

    ``what`` says what would be allocated and where the size comes from, e.g. ``"file X: a PET
    series of 148 slices of 65535 x 65535 pixels"``; ``fix`` how to get under the limit.
    """
    limit = max_voxels()
    if int(n_voxels) > limit:
        raise InputError(
            f"{what} needs {int(n_voxels):,} voxels, more than voxeldose's limit of {limit:,} "
            f"({limit * 4 / 2**30:.3g} GiB as float32); {fix or 'is the header corrupt?'} "
            "(a machine with the memory for more can raise the limit with VOXELDOSE_MAX_VOXELS)"
        )


def check_number(value: object, name: str, unit: str = "") -> float:
    """``value`` as a finite float, or an :class:`InputError` naming ``name`` (and ``unit``).

    Numbers only: ints, floats and numpy scalars. Bools, text (``"2.5"``: a number typed as
    text may carry a decimal comma or a unit), NaN and infinities are refused.
    """
    what = f" ({unit})" if unit else ""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise InputError(f"{name} must be a number{what}, got {value!r} ({type(value).__name__})")
    try:
        x = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an integer of hundreds of digits
        raise InputError(f"{name} must be a finite number{what}, got an integer of {len(str(value))} digits") from None
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number{what}, got {value!r} ({type(value).__name__})") from None
    if not math.isfinite(x):
        raise InputError(f"{name} must be a finite number{what}, got {value!r}")
    return x


def check_positive(value: object, name: str, unit: str = "") -> float:
    """``value`` as a finite float > 0, or an :class:`InputError`."""
    x = check_number(value, name, unit)
    if x <= 0:
        raise InputError(f"{name} must be positive{f' ({unit})' if unit else ''}, got {value!r}")
    return x


def check_nonnegative(value: object, name: str, unit: str = "") -> float:
    """``value`` as a finite float >= 0, or an :class:`InputError`."""
    x = check_number(value, name, unit)
    if x < 0:
        raise InputError(f"{name} must be >= 0{f' ({unit})' if unit else ''}, got {value!r}")
    return x


def check_between(value: object, name: str, lo: float, hi: float, unit: str = "") -> float:
    """``value`` as a finite float in ``[lo, hi]``, or an :class:`InputError`."""
    x = check_number(value, name, unit)
    if not lo <= x <= hi:
        raise InputError(f"{name} must be between {lo:g} and {hi:g}{f' {unit}' if unit else ''}, got {value!r}")
    return x


def check_fraction(value: object, name: str, meaning: str = "a fraction") -> float:
    """``value`` as a fraction in ``[0, 1)`` (0.10 for 10 %), or an :class:`InputError`.

    A value from 1 to 100 is most likely a percentage: the message says how to write it.
    """
    x = check_number(value, name, "a fraction, 0 to 1")
    if not 0.0 <= x < 1.0:
        hint = f"; for {x:g} % write {x / 100:g}" if 1.0 <= x < 100.0 else ""
        raise InputError(f"{name} = {value!r} is outside [0, 1): it is {meaning}{hint}")
    return x


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else an :class:`InputError` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name} must be {' or '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def check_shape(shape: Sequence[int], name: str = "shape") -> tuple[int, int, int]:
    """Three positive integer voxel counts [z, y, x], or an :class:`InputError`."""
    try:
        values = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be three voxel counts [z, y, x], got {shape!r}") from None
    if len(values) != 3 or any(n < 1 for n in values) or any(n != s for n, s in zip(values, shape)):
        raise InputError(f"{name} must be three positive integers [z, y, x], got {shape!r}")
    return values  # type: ignore[return-value]


def check_spacing(spacing_mm: Sequence[float], *, name: str = "spacing_mm") -> tuple[float, float, float]:
    """Return a spacing ``name`` as three positive finite floats (x, y, z) in mm, or raise.

    Numbers only (not bools or text), each from :data:`MIN_SPACING_MM` to :data:`MAX_SPACING_MM`.
    """
    if isinstance(spacing_mm, (str, bytes)) or any(isinstance(s, (bool, np.bool_, str, bytes))
                                                    for s in _items(spacing_mm)):
        raise GeometryError(f"{name} must hold three numbers (x, y, z) in mm, got {spacing_mm!r}")
    try:
        values = tuple(float(s) for s in spacing_mm)
    except TypeError:
        raise GeometryError(
            f"{name} must be a sequence of three voxel sizes (x, y, z) in mm, got {spacing_mm!r}"
        ) from None
    except ValueError:
        raise GeometryError(f"{name} must hold numbers (mm), got {spacing_mm!r}") from None
    if len(values) != 3:
        raise GeometryError(
            f"{name} must have three values (x, y, z) in mm, got {len(values)}: {spacing_mm!r}"
        )
    for axis, value in zip("xyz", values):
        if not math.isfinite(value) or value <= 0.0:
            raise GeometryError(
                f"{name} {axis} = {value!r} mm: voxel sizes must be positive and finite"
            )
        if value > MAX_SPACING_MM:
            raise GeometryError(
                f"{name} {axis} = {value!r} mm is larger than {MAX_SPACING_MM:g} mm: "
                "is the spacing in cm or m? Pass it in mm"
            )
        if value < MIN_SPACING_MM:
            raise GeometryError(
                f"{name} {axis} = {value!r} mm is smaller than {MIN_SPACING_MM:g} mm: "
                "is the spacing in m? Pass it in mm"
            )
    return values  # type: ignore[return-value]


def _items(values: object) -> list[object]:
    """The items of a sequence (for type checks), or [] for anything that is not iterable."""
    try:
        return list(values)  # type: ignore[call-overload]
    except TypeError:
        return []


def check_origin(origin_mm: Sequence[float], *, name: str = "origin_mm") -> tuple[float, float, float]:
    """Return ``origin_mm`` as three finite floats (x, y, z) in mm, or raise :class:`GeometryError`."""
    try:
        values = tuple(float(o) for o in origin_mm)
    except (TypeError, ValueError):
        raise GeometryError(f"{name} must be three coordinates (x, y, z) in mm, got {origin_mm!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise GeometryError(f"{name} must be three finite coordinates (x, y, z) in mm, got {origin_mm!r}")
    return values  # type: ignore[return-value]


#: Tolerance on a direction matrix being orthonormal (|D^T D - I|).
DIRECTION_TOLERANCE = 1e-4


def check_direction(direction: Sequence[float]) -> tuple[float, ...]:
    """Return an ITK direction matrix (9 values, row-major) as floats, or raise :class:`GeometryError`
    when it has another size or is not orthonormal."""
    try:
        d = np.asarray(direction, float).reshape(-1)
    except (TypeError, ValueError):
        raise GeometryError(f"direction must hold 9 numbers (3x3, row-major), got {direction!r}") from None
    if d.size != 9 or not np.all(np.isfinite(d)):
        raise GeometryError(f"direction must hold 9 finite values (3x3, row-major), got {d.size}")
    m = d.reshape(3, 3)
    if not np.allclose(m.T @ m, np.eye(3), atol=DIRECTION_TOLERANCE):
        raise GeometryError(f"direction is not orthonormal: {m.round(5).tolist()}")
    return tuple(float(v) for v in d)


@dataclass(frozen=True)
class VolumeInfo:
    """A validated volume and what one pass over it found.

    Attributes
    ----------
    array : ndarray, float, [z, y, x]
        The input as a float array (the same object when it already was one).
    nonzero_lo, nonzero_hi : tuple of int or None
        Half-open [z, y, x] bounds of the non-zero voxels; None when all are zero.
    n_negative, n_nonzero : int
        Number of negative and of non-zero voxels.
    """

    array: NDArray[np.floating]
    nonzero_lo: tuple[int, int, int] | None
    nonzero_hi: tuple[int, int, int] | None
    n_negative: int
    n_nonzero: int


def inspect_volume(
    array: object,
    *,
    name: str,
    allow_negative: bool = True,
    warn_negative: bool = True,
    _stacklevel: int = 3,
) -> VolumeInfo:
    """Validate a volume like :func:`check_volume` and return the bounds of its non-zero part.

    One pass over the data (numba) finds non-finite values, negative values and the
    bounding box of the non-zero voxels.
    """
    from ._loops import scan_planes

    arr = np.asarray(array)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 3:
        raise InputError(
            f"{name} must be a 3-D array indexed [z, y, x], got {arr.ndim} dimension(s) with "
            f"shape {arr.shape}; squeeze extra axes or stack slices first"
        )
    if arr.size == 0:
        raise InputError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    nz = arr.shape[0]
    n_bad = np.empty(nz, np.int64)
    n_neg = np.empty(nz, np.int64)
    n_nonzero = np.empty(nz, np.int64)
    neg_sum = np.empty(nz, np.float64)
    minimum = np.empty(nz, np.float64)
    box = np.empty((nz, 4), np.int64)
    scan_planes(arr, n_bad, n_neg, n_nonzero, neg_sum, minimum, box)
    if n_bad.any():
        bad = np.argwhere(~np.isfinite(arr))
        first = tuple(int(i) for i in bad[0])
        raise InputError(
            f"{name} has {len(bad)} non-finite voxel(s) (NaN or inf), the first at [z, y, x] = "
            f"{first}; fix or mask them before computing dose"
        )
    negatives = int(n_neg.sum())
    if negatives:
        if not allow_negative:
            raise InputError(f"{name} has {negatives} negative voxel(s); values must be >= 0")
        if warn_negative:
            warnings.warn(
                f"{name} has {negatives} negative voxel(s) (sum {float(neg_sum.sum()):.4g}, most "
                f"negative {float(minimum.min()):.4g}); they are kept as they are, not clipped",
                VoxelDoseWarning,
                stacklevel=_stacklevel,
            )
    planes = np.flatnonzero(box[:, 0] >= 0)
    if planes.size == 0:
        return VolumeInfo(arr, None, None, negatives, 0)
    rows = box[planes]
    lo = (int(planes[0]), int(rows[:, 0].min()), int(rows[:, 2].min()))
    hi = (int(planes[-1]) + 1, int(rows[:, 1].max()), int(rows[:, 3].max()))
    return VolumeInfo(arr, lo, hi, negatives, int(n_nonzero.sum()))


def check_volume(
    array: object, *, name: str, allow_negative: bool = True, warn_negative: bool = True
) -> NDArray[np.floating]:
    """Return ``array`` as a finite 3-D float ndarray [z, y, x], or raise :class:`InputError`.

    Negative values are kept (reconstructions can produce them) and reported with a
    :class:`VoxelDoseWarning` giving their count and total (unless ``warn_negative`` is False:
    a dose map from a negative activity that was reported already), or rejected when
    ``allow_negative`` is False. Integer arrays are converted to float64.
    """
    info = inspect_volume(
        array, name=name, allow_negative=allow_negative, warn_negative=warn_negative, _stacklevel=4
    )
    return info.array


#: A mask value may exceed 1 or go below 0 by this much (float rounding of resampled masks).
MASK_TOLERANCE = 1e-6


def check_mask(mask: object, shape: tuple[int, ...] | None, *, what: str, fix_shape: str) -> NDArray[np.floating]:
    """Return a VOI mask as fractions in [0, 1], or raise :class:`VoiError`.

    A float32 or float64 array that is already valid is returned as it is (no copy); bool and
    integer masks become float32; values within :data:`MASK_TOLERANCE` outside [0, 1] (float
    rounding of resampled masks) are clipped, into a copy.

    Parameters
    ----------
    mask : array [z, y, x], bool or numeric in [0, 1]
    shape : tuple or None
        Required shape (the grid the mask must lie on); None: any 3-D shape.
    what : str
        How to name the mask in messages, e.g. ``"VOI 'liver'"``.
    fix_shape : str
        What to do when the shape differs, e.g. "resample the VOI onto the dose grid first".
    """
    from .errors import VoiError

    m = np.asarray(mask)
    if m.ndim != 3:
        raise VoiError(f"{what}: mask must be 3-D [z, y, x], got shape {m.shape}")
    if shape is not None and m.shape != tuple(shape):
        raise VoiError(f"{what}: shape {m.shape} differs from {tuple(shape)} [z, y, x]; {fix_shape}")
    if m.dtype == bool:
        return m.astype(np.float32)
    if not (np.issubdtype(m.dtype, np.floating) or np.issubdtype(m.dtype, np.integer)):
        raise VoiError(f"{what}: mask must be boolean or numeric (0-1), got dtype {m.dtype}")
    if m.dtype not in (np.float32, np.float64):
        m = m.astype(np.float32)
    if m.size == 0:
        raise VoiError(f"{what}: mask is empty (shape {m.shape})")
    lo, hi = float(m.min()), float(m.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise VoiError(f"{what}: mask has {int((~np.isfinite(m)).sum())} NaN or infinite value(s)")
    if lo < -MASK_TOLERANCE or hi > 1 + MASK_TOLERANCE:
        raise VoiError(
            f"{what}: mask values must lie in [0, 1] (fraction of each voxel inside the VOI), found {lo:g} "
            f"to {hi:g}; is it a label map? Select one label as a boolean mask"
        )
    if lo < 0.0 or hi > 1.0:
        return np.clip(m, 0.0, 1.0)
    return m


def nonzero_box(inside: NDArray[np.bool_], margin: int = 0) -> tuple[slice, ...] | None:
    """The bounding box of the set voxels of ``inside`` (an index range per axis, half-open),
    widened by ``margin`` voxels within the array; None when no voxel is set. One projection per
    axis (``any`` over the others), not ``np.nonzero``'s index arrays."""
    box = []
    for axis in range(inside.ndim):
        span = np.asarray(inside.any(axis=tuple(a for a in range(inside.ndim) if a != axis)))
        if not span.any():
            return None
        lo, hi = int(np.argmax(span)), span.size - int(np.argmax(span[::-1]))
        box.append(slice(max(lo - margin, 0), min(hi + margin, span.size)))
    return tuple(box)
