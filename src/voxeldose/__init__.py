"""voxeldose: voxel-based absorbed dose for Y-90 radioembolization."""

from __future__ import annotations

from . import phantoms
from ._version import __version__
from .dose import absorbed_dose
from .dvh import DVH, dvh
from .errors import (
    CalibrationError,
    DicomError,
    GeometryError,
    InputError,
    KernelError,
    VoiError,
    VoxelDoseError,
    VoxelDoseWarning,
)
from .batch import run_batch
from .calibrate import ActivityMap, calibrate
from .case import Case
from .io.case_file import load_case
from .image import Image, ImageMeta
from .io.dicom import list_series, load_image
from .io.vois import load_vois
from .pipeline import run_case
from .voi_sets import derive_vois
from .kernels import y90_kernel


__all__ = [
    "__version__",
    "VoxelDoseError",
    "InputError",
    "GeometryError",
    "KernelError",
    "VoiError",
    "DicomError",
    "CalibrationError",
    "VoxelDoseWarning",
    "Image",
    "ImageMeta",
    "load_image",
    "list_series",
    "load_vois",
    "derive_vois",
    "Case",
    "load_case",
    "calibrate",
    "ActivityMap",
    "run_case",
    "run_batch",
    "y90_kernel",
    "absorbed_dose",
    "dvh",
    "DVH",
    "phantoms",
]
