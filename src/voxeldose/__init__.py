"""voxeldose: voxel-based absorbed dose for Y-90 radioembolization."""

from __future__ import annotations

from . import phantoms
from .dose import absorbed_dose
from .dvh import DVH, dvh
from .errors import (
    GeometryError,
    InputError,
    KernelError,
    VoiError,
    VoxelDoseError,
    VoxelDoseWarning,
)
from .kernels import y90_kernel

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "VoxelDoseError",
    "InputError",
    "GeometryError",
    "KernelError",
    "VoiError",
    "VoxelDoseWarning",
    "y90_kernel",
    "absorbed_dose",
    "dvh",
    "DVH",
    "phantoms",
]
