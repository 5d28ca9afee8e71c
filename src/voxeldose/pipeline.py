"""One case through the engine: activity -> dose -> DVH per VOI.

:func:`dose_case` strings the engine stages for one case held in memory (no I/O);
:func:`run_case` runs one exported case from DICOM to the output folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from ._version import __version__
from .dose import Engine, Method, absorbed_dose
from .dvh import DVH, dvh
from .errors import VoxelDoseWarning
from .kernels import Tissue, kernel_source

if TYPE_CHECKING:
    from .case import Case

__all__ = ["CaseResult", "dose_case", "CaseOutputs", "run_case", "OUTPUT_FILES"]

logger = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------- one exported case


#: File names in a case's output folder (a research pipeline depends on them).
OUTPUT_FILES = ("dose.nii.gz", "activity.nii.gz", "rtdose.dcm", "dvh.csv", "metrics.json", "report.html")


@dataclass(frozen=True)
class CaseOutputs:
    """What :func:`run_case` wrote and computed."""

    out_dir: Path
    case_id: str
    metrics: Mapping[str, Any]
    warnings: tuple[str, ...]
    timings_s: Mapping[str, float]


def _case_from(case: "Case | str | os.PathLike[str] | None", overrides: Mapping[str, Any], image: Any) -> "Case":
    from .case import Case
    from .io.case_file import load_case

    values = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(case, Case):
        base = case
    elif case is not None:
        base = load_case(case)
    else:
        # no case file: the case id must not come from patient data; use the series UID's hash
        uid = image.meta.series_instance_uid or "unknown"
        base = Case(values.pop("case_id", None) or "case-" + hashlib.sha1(uid.encode()).hexdigest()[:10])
    if "voi_roles" in values:
        # roles given as options add to (or change) those of the case file
        values["voi_roles"] = {**dict(base.voi_roles), **dict(values["voi_roles"])}
    return base.with_overrides(**values) if values else base


def _check_out(out: Path, force: bool) -> None:
    from .errors import InputError

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is a file; choose a folder name")
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(
            f"--out {out} already holds results; choose another folder, or pass --force to replace them "
            "(the old results are kept until the new ones are complete)"
        )


#: What the provenance holds instead of input paths when the outputs are anonymized.
_WITHHELD = "withheld (anonymize)"


def _publish(staging: Path, out: Path) -> None:
    """Move the finished ``staging`` folder to ``out``; a previous ``out`` is removed only after."""
    backup = None
    if out.exists():
        backup = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(backup)
    try:
        staging.rename(out)
    except OSError:
        if backup is not None:
            backup.rename(out)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def run_case(
    scan: "str | os.PathLike[str]",
    vois: Sequence["str | os.PathLike[str]"],
    out: "str | os.PathLike[str]",
    *,
    case: "Case | str | os.PathLike[str] | None" = None,
    method: Method = "kernel",
    tissue: Tissue = "soft",
    engine: Engine = "auto",
    series_uid: str | None = None,
    registered: bool = False,
    anonymize: bool = False,
    force: bool = False,
    overrides: Mapping[str, Any] | None = None,
    progress: "Callable[[str], None] | None" = None,
    extra_provenance: Mapping[str, Any] | None = None,
) -> CaseOutputs:
    """Load, calibrate, dose and report one exported case; write its outputs into ``out``.

    Parameters
    ----------
    scan : path
        Folder or file(s) of the Y-90 PET or bremsstrahlung SPECT series.
    vois : sequence of paths
        RTSTRUCT, SEG or label-map files (or folders of them), placed on the scan's grid.
    out : path
        Output folder. Everything is written into a temporary folder beside it and moved into
        place only when the whole case succeeded; an existing ``out`` with results is refused
        unless ``force`` (and then replaced only after the new results are complete).
    case : Case, path of a case file, or None
        Values the headers lack; ``overrides`` (e.g. from the command line) replace its values.
    method, tissue, engine
        As in :func:`voxeldose.absorbed_dose`.
    series_uid : str, optional
        The series to load when ``scan`` holds several.
    registered : bool
        Accept VOIs from another frame of reference (the user states they are registered).
    anonymize : bool
        Write the RTDOSE without patient identifiers (the case id replaces them).
    progress : callable, optional
        Called with the name of each step as it starts.
    extra_provenance : mapping, optional
        Added to the provenance in metrics.json (e.g. the batch's input hash).

    Returns
    -------
    CaseOutputs

    Raises
    ------
    VoxelDoseError
        Bad input of any kind; nothing is written to ``out`` then.
    """
    from .calibrate import calibrate
    from .image import Image
    from .io.dicom import load_image
    from .io.vois import load_vois
    from .io.results import voi_metrics, write_dvh_csv, write_metrics_json, write_nifti, write_rtdose
    from .clinical import LUNG_DENSITY_G_PER_CM3, model_crosschecks
    from .report import write_report
    from .voi_sets import derive_vois

    out_dir = Path(out)
    _check_out(out_dir, force)
    step = progress or (lambda name: None)
    timings: dict[str, float] = {}
    caught: list[warnings.WarningMessage] = []

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        step(name)
        t0 = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - t0
        logger.info("%s: %.2f s", name, timings[name])
        return result

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = timed("load", lambda: load_image(scan, series_uid))
        record = _case_from(case, overrides or {}, image)
        if anonymize and record.source_path:  # the provenance names the case file by its name only
            record = replace(record, source_path=Path(record.source_path).name)

        def read_vois() -> dict[str, Any]:
            from .errors import VoiError

            masks: dict[str, Any] = {}
            for path in vois:
                for name, mask in load_vois(path, image, registered=registered).items():
                    if name in masks:
                        raise VoiError(f"VOI {name!r} is defined twice (again in {path}); rename one of them")
                    masks[name] = mask
            return masks

        masks = timed("vois", read_vois)
        roles = dict(record.voi_roles)
        tumour_names = [n for n, r in roles.items() if r == "tumour" and n in masks]
        whole = [n for n, r in roles.items() if r == "whole_liver" and n in masks]
        notes: list[str] = []
        missing = [n for n in roles if n not in masks]
        if missing:
            notes.append(f"VOIs named in the case file but not found in the VOI files: {', '.join(missing)}")
        if whole and tumour_names and not any(r == "normal_liver" for r in roles.values()):
            perfused = [n for n, r in roles.items() if r == "perfused" and n in masks]
            derived, derive_notes = derive_vois(masks, whole_liver=whole[0], tumours=tumour_names,
                                                perfused=perfused[0] if perfused else None)
            notes.extend(derive_notes)
            for name, mask in derived.items():
                if name not in masks:
                    masks[name] = mask
                    roles.setdefault(name, "normal_liver" if name == "normal_liver" else "derived")

        calibration_name = record.calibration_voi_name
        calibration_mask = masks.get(calibration_name) if calibration_name else None
        activity = timed("calibrate", lambda: calibrate(image, record, calibration_mask=calibration_mask))
        dose = timed("dose", lambda: absorbed_dose(activity.image.array, image.spacing_mm, method=method,
                                                   tissue=tissue, engine=engine))
        dvhs = timed("dvh", lambda: {n: dvh(dose, m, image.spacing_mm, name=n) for n, m in masks.items()})
        crosschecks = model_crosschecks(
            activity_mbq=activity.image.array, spacing_mm=image.spacing_mm, vois=masks, roles=roles, dvhs=dvhs,
            administered_gbq=record.administered_gbq, lung_shunt_fraction=record.lung_shunt_fraction or 0.0,
            residual_fraction=record.residual_fraction or 0.0,
        ) if record.administered_gbq is not None else {"warnings": ["no administered activity: no model cross-checks"]}

    negative = int(np.count_nonzero(dose < 0))
    if negative:
        notes.append(f"{negative} voxel(s) have a negative dose (negative activity in the scan); the RT Dose "
                     "stores them as 0, the NIfTI dose map keeps them")
    warning_texts = list(dict.fromkeys(
        [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        + notes + list(crosschecks.get("warnings", []))
    ))
    dose_image = Image(dose, image.spacing_mm, image.origin_mm, image.direction, "GY", image.meta)
    provenance = {
        "voxeldose_version": __version__,
        # folder names of exports often hold the patient's name: with anonymize, no folder paths
        "input": {"scan": _WITHHELD if anonymize else str(scan),
                  "series_instance_uid": image.meta.series_instance_uid,
                  "modality": image.meta.modality, "units": image.units,
                  "vois": [_WITHHELD if anonymize else str(v) for v in vois]},
        "grid": {"shape_zyx": list(image.shape), "spacing_mm": list(image.spacing_mm),
                 "origin_mm": list(image.origin_mm), "direction": list(image.direction)},
        "calibration": dict(activity.provenance),
        "dose": {"method": method, "tissue": tissue, "engine": engine,
                 "kernel": kernel_source(image.spacing_mm, tissue) if method == "kernel" else "local deposition"},
        "timings_s": timings,
        **dict(extra_provenance or {}),
    }
    per_voi = voi_metrics(dvhs, densities_g_per_cm3={n: LUNG_DENSITY_G_PER_CM3 for n, r in roles.items()
                                                     if r == "lung" and n in dvhs})
    metrics: dict[str, Any] = {
        "case_id": record.case_id,
        "case": record.to_dict(),
        "vois": per_voi,
        "roles": roles,
        "model_crosschecks": crosschecks,
        "warnings": warning_texts,
        "provenance": provenance,
    }

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: the published folder gets the user's umask permissions, not 0700
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        step("outputs")
        t0 = time.perf_counter()
        write_nifti(staging / "dose.nii.gz", dose_image)
        write_nifti(staging / "activity.nii.gz", activity.image)
        with warnings.catch_warnings():
            # already in the notes above, and in the report: not again on stderr
            warnings.filterwarnings("ignore", message=r"write_rtdose: \d+ voxel\(s\) have a negative dose",
                                    category=VoxelDoseWarning)
            write_rtdose(staging / "rtdose.dcm", dose_image, reference=image, anonymize=anonymize,
                         case_id=record.case_id)
        write_dvh_csv(staging / "dvh.csv", dvhs)
        write_report(staging / "report.html", case_id=record.case_id, dose=dose_image, vois=masks, dvhs=dvhs,
                     metrics=per_voi, crosschecks=crosschecks, warnings=warning_texts,
                     provenance=provenance, tumour_names=[n for n, r in roles.items() if r == "tumour"])
        timings["outputs"] = time.perf_counter() - t0
        write_metrics_json(staging / "metrics.json", metrics)
        _check_out(out_dir, force)  # nobody wrote there meanwhile
        _publish(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return CaseOutputs(out_dir, record.case_id, metrics, tuple(warning_texts), timings)
