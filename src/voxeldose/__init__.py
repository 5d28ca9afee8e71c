"""voxeldose: voxel-based absorbed dose for Y-90 radioembolization.

The public API, by stage: read (:mod:`voxeldose.io`: ``load_image``, ``load_vois``,
``load_case``), compute (``calibrate``, ``absorbed_dose``, ``dvh``, ``derive_vois``, or the whole
case with ``compute_case``; a predicted dose against the delivered one with
``compare_doses``), write (:mod:`voxeldose.io`: ``write_result`` and the single-file
writers), or all three with ``run_case`` and ``run_batch``.
"""

from __future__ import annotations

from . import density, io, phantoms
from ._version import __version__
from .batch import run_batch
from .calibrate import ActivityMap, calibrate
from .case import Case
from .compare import Comparison, compare_doses
from .dose import absorbed_dose, absorbed_dose_array
from .dvh import DVH, dvh, dvh_array
from .errors import (
    CalibrationError,
    DicomError,
    GeometryError,
    InputError,
    KernelError,
    OutputError,
    VoiError,
    VoxelDoseError,
    VoxelDoseWarning,
)
from .image import Image, ImageMeta, mask_image
from .io import (
    list_series,
    load_case,
    load_image,
    load_vois,
    load_vsv_tables,
    write_dvh_csv,
    write_metrics_json,
    write_nifti,
    write_report,
    write_result,
    write_rtdose,
)
from .kernels import y90_kernel
from .pipeline import compute_case, run_case
from .result import CaseResult, Caveat
from .voi_sets import derive_vois

__all__ = [
    "__version__",
    "VoxelDoseError",
    "InputError",
    "GeometryError",
    "KernelError",
    "VoiError",
    "DicomError",
    "CalibrationError",
    "OutputError",
    "VoxelDoseWarning",
    "Image",
    "ImageMeta",
    "mask_image",
    "load_image",
    "list_series",
    "load_vois",
    "load_case",
    "load_vsv_tables",
    "derive_vois",
    "Case",
    "calibrate",
    "ActivityMap",
    "y90_kernel",
    "absorbed_dose",
    "absorbed_dose_array",
    "dvh",
    "dvh_array",
    "DVH",
    "compute_case",
    "CaseResult",
    "Caveat",
    "write_result",
    "write_nifti",
    "write_rtdose",
    "write_dvh_csv",
    "write_metrics_json",
    "write_report",
    "run_case",
    "run_batch",
    "compare_doses",
    "Comparison",
    "io",
    "phantoms",
    "density",
]
