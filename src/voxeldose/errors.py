"""The voxeldose exception family.

Every error the library raises on purpose derives from :class:`VoxelDoseError`. Each subclass
also inherits the matching builtin, so ``except ValueError`` in a caller's code keeps working.
Messages say what was wrong, where, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "VoxelDoseError",
    "InputError",
    "GeometryError",
    "KernelError",
    "VoiError",
    "DicomError",
    "CalibrationError",
    "OutputError",
    "VoxelDoseWarning",
]


class VoxelDoseError(Exception):
    """Root of every error voxeldose raises deliberately."""


class InputError(VoxelDoseError, ValueError):
    """An array or argument is unusable (NaN, wrong shape, wrong type, out of range)."""


class GeometryError(VoxelDoseError, ValueError):
    """Spacing, shape or orientation are inconsistent or unphysical."""


class KernelError(VoxelDoseError, ValueError):
    """A dose kernel was asked for something it cannot provide (unknown tissue, bad spacing)."""


class VoiError(VoxelDoseError, ValueError):
    """A volume of interest (mask) is empty, of the wrong shape, or out of range."""


class DicomError(VoxelDoseError, ValueError):
    """A DICOM file or series is unreadable, incomplete or inconsistent (names file and tag)."""


class CalibrationError(VoxelDoseError, ValueError):
    """An image cannot be turned into activity: missing times, units or case values."""


class OutputError(VoxelDoseError, OSError):
    """The results cannot be written: the disk is full, the folder read-only, or another run is
    writing the same folder (the message names the folder, and the space needed)."""


class VoxelDoseWarning(UserWarning):
    """A scientific caveat about a result (e.g. negative activity kept, density ignored)."""
