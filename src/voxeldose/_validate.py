"""Input checks shared by the public functions. Pure; raise the voxeldose error family."""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from .errors import GeometryError, InputError, VoxelDoseWarning

#: Largest voxel edge accepted (mm): anything larger is a unit mistake (cm or m given as mm?).
MAX_SPACING_MM = 50.0


def check_spacing(spacing_mm: Sequence[float], *, name: str = "spacing_mm") -> tuple[float, float, float]:
    """Return ``spacing_mm`` as three positive finite floats (x, y, z) in mm, or raise."""
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
    return values  # type: ignore[return-value]


def check_volume(
    array: object, *, name: str, allow_negative: bool = True, warn_negative: bool = True
) -> NDArray[np.floating]:
    """Return ``array`` as a finite 3-D float ndarray [z, y, x], or raise :class:`InputError`.

    Negative values are kept (reconstructions can produce them) and reported with a
    :class:`VoxelDoseWarning` giving their count and total (unless ``warn_negative`` is False:
    a dose map from a negative activity that was reported already), or rejected when
    ``allow_negative`` is False.
    """
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
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.argwhere(~finite)
        first = tuple(int(i) for i in bad[0])
        raise InputError(
            f"{name} has {len(bad)} non-finite voxel(s) (NaN or inf), the first at [z, y, x] = "
            f"{first}; fix or mask them before computing dose"
        )
    if allow_negative and not warn_negative:
        return arr
    negative = arr < 0
    if negative.any():
        n = int(negative.sum())
        if not allow_negative:
            raise InputError(f"{name} has {n} negative voxel(s); values must be >= 0")
        warnings.warn(
            f"{name} has {n} negative voxel(s) (sum {float(arr[negative].sum()):.4g}, most "
            f"negative {float(arr.min()):.4g}); they are kept as they are, not clipped",
            VoxelDoseWarning,
            stacklevel=3,
        )
    return arr
