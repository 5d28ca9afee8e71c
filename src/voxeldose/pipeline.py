"""One case through the engine: activity -> dose -> DVH per VOI.

This module strings the stages together for one case held in memory. Later stages of the
project (DICOM in, files out) wrap it; it does no I/O itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from .dose import Engine, Method, absorbed_dose
from .dvh import DVH, dvh
from .kernels import Tissue, kernel_source

__all__ = ["CaseResult", "dose_case"]


@dataclass(frozen=True)
class CaseResult:
    """Dose and DVHs of one case.

    Attributes
    ----------
    dose_gy : ndarray, float32, [z, y, x]
    spacing_mm : (x, y, z)
    dvhs : mapping VOI name -> DVH
    provenance : dict
        Method, kernel source, engine and the time of each step (s).
    """

    dose_gy: NDArray[np.float32]
    spacing_mm: tuple[float, float, float]
    dvhs: Mapping[str, DVH]
    provenance: Mapping[str, object] = field(default_factory=dict)


def dose_case(
    activity_mbq: NDArray[np.floating],
    spacing_mm: Sequence[float],
    masks: Mapping[str, NDArray[np.floating]],
    *,
    method: Method = "kernel",
    tissue: Tissue = "soft",
    engine: Engine = "auto",
) -> CaseResult:
    """Dose map (Gy) and a DVH for every VOI of one case.

    Parameters
    ----------
    activity_mbq : ndarray [z, y, x]
        Activity per voxel at administration (MBq).
    spacing_mm : (x, y, z)
        Voxel size (mm).
    masks : mapping of VOI name to ndarray [z, y, x]
        Boolean or fractional (0-1) masks on the activity's grid.
    method, tissue, engine
        As in :func:`voxeldose.absorbed_dose`.

    Returns
    -------
    CaseResult
    """
    t0 = time.perf_counter()
    dose = absorbed_dose(activity_mbq, spacing_mm, method=method, tissue=tissue, engine=engine)
    t1 = time.perf_counter()
    dvhs = {name: dvh(dose, mask, spacing_mm, name=name) for name, mask in masks.items()}
    t2 = time.perf_counter()
    spacing = tuple(float(s) for s in spacing_mm)
    provenance = {
        "method": method,
        "tissue": tissue,
        "kernel": kernel_source(spacing, tissue) if method == "kernel" else "local deposition",
        "engine": engine,
        "time_dose_s": t1 - t0,
        "time_dvh_s": t2 - t1,
    }
    return CaseResult(dose, spacing, dvhs, provenance)  # type: ignore[arg-type]
