"""The result files of one case: NIfTI maps, DICOM RT Dose, DVH table and metrics.

Every writer writes exactly the file it is given and refuses to replace an existing one unless
``overwrite=True``; the pipeline writes into a temporary folder and moves it into place.

RT Dose
-------
A multi-frame RT Dose (PS3.3 A.18) on the dose image's grid and in the reference image's Frame
of Reference: ImagePositionPatient of the first frame, ImageOrientationPatient and PixelSpacing
from the grid, GridFrameOffsetVector relative to the first frame along the slice normal.
DoseUnits GY, DoseType PHYSICAL. DoseSummationType "PLAN_OVERVIEW": radioembolization has no RT
Plan or RT Treatment Record to reference, and every other defined term requires one of them
(PLAN, FRACTION, BRACHY ...: Referenced RT Plan Sequence; RECORD: Referenced Treatment Record
Sequence, both Type 1C), which dciodvfy reports as errors. (dicom3tools 2023 does not know
PLAN_OVERVIEW yet and warns; that is its only remark.) The dose is the total dose of the implant as imaged after the treatment. Doses are
stored as 16-bit unsigned integers with DoseGridScaling = max / 65535: the rounding error is at
most 7.6e-6 of the maximum, within the 1e-4 asked (32-bit storage is allowed by the standard but
dciodvfy cannot parse it, and several readers mishandle it). RT Dose pixel values are unsigned:
negative doses (from negative activity in a noisy reconstruction) are stored as 0 and their count
is returned in the warning list of the pipeline (NIfTI keeps them).

References
----------
DICOM PS3.3 (2024) A.18 RT Dose IOD, C.8.8.3 RT Dose Module.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..dvh import DVH
from ..errors import InputError
from ..image import Image
from .write_dicom import ds_values, file_meta, new_uid

__all__ = ["write_nifti", "write_rtdose", "write_dvh_csv", "write_metrics_json", "voi_metrics", "RTDOSE_SOP"]

RTDOSE_SOP = "1.2.840.10008.5.1.4.1.1.481.2"
_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "AccessionNumber", "ReferringPhysicianName", "StudyID")


def _target(path: str | Path, overwrite: bool) -> Path:
    p = Path(path)
    if p.exists() and not overwrite:
        raise InputError(f"{p} already exists; choose another path or pass overwrite=True")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def write_nifti(path: str | Path, image: Image, *, overwrite: bool = False) -> Path:
    """Write ``image`` as NIfTI (``.nii.gz``) with its geometry (SimpleITK converts LPS to RAS)."""
    import SimpleITK as sitk

    p = _target(path, overwrite)
    sitk.WriteImage(image.to_sitk(), str(p), useCompression=True)
    return p


def write_rtdose(
    path: str | Path,
    dose: Image,
    *,
    reference: Image | None = None,
    anonymize: bool = False,
    case_id: str | None = None,
    series_description: str = "voxeldose Y-90 absorbed dose",
    overwrite: bool = False,
) -> Path:
    """Write ``dose`` (Gy) as a DICOM RT Dose in ``reference``'s frame of reference and study.

    Parameters
    ----------
    path : path
        The file to write.
    dose : Image
        Absorbed dose (Gy) on the grid to write.
    reference : Image, optional
        The image the dose was computed from: its FrameOfReferenceUID, StudyInstanceUID and
        patient/study identifiers (``meta.identifiers``) are copied. Without it, new UIDs.
    anonymize : bool
        Leave out patient identifiers: PatientName and PatientID become ``case_id`` and the other
        patient and study attributes are empty. The Frame of Reference (and study) UIDs are
        kept, so the dose still registers with the images.
    case_id : str, optional
        Used for anonymized names (required with ``anonymize``).

    Returns
    -------
    Path
    """
    from pydicom.dataset import Dataset

    from .. import __version__

    p = _target(path, overwrite)
    if anonymize and not case_id:
        raise InputError("write_rtdose: anonymize=True needs a case_id to name the patient")
    values = np.asarray(dose.array, dtype=np.float64)
    if not np.isfinite(values).all():
        raise InputError("write_rtdose: the dose has NaN or infinite values")
    meta = reference.meta if reference is not None else dose.meta
    ids = dict(meta.identifiers)
    now = dt.datetime.now()

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = RTDOSE_SOP
    ds.SOPInstanceUID = new_uid()
    ds.Modality = "RTDOSE"
    for keyword in _PATIENT_STUDY:
        setattr(ds, keyword, "" if anonymize else ids.get(keyword, ""))
    if anonymize:
        ds.PatientName = case_id
        ds.PatientID = case_id
    ds.StudyInstanceUID = meta.study_instance_uid or ids.get("StudyInstanceUID") or new_uid()
    ds.SeriesInstanceUID = new_uid()
    ds.SeriesNumber = 900
    ds.SeriesDescription = series_description
    ds.FrameOfReferenceUID = meta.frame_of_reference_uid or new_uid()
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "voxeldose"
    ds.ManufacturerModelName = "voxeldose"
    ds.SoftwareVersions = __version__
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.InstanceCreationDate = ds.ContentDate
    ds.InstanceCreationTime = ds.ContentTime

    d = dose.direction_matrix
    sx, sy, sz = dose.spacing_mm
    nz, ny, nx = dose.shape
    ds.ImagePositionPatient = ds_values(dose.index_to_world([0, 0, 0]))
    ds.ImageOrientationPatient = ds_values(np.concatenate([d[:, 0], d[:, 1]]))
    ds.PixelSpacing = ds_values([sy, sx])
    ds.SliceThickness = ds_values(sz)
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = (0x3004, 0x000C)  # GridFrameOffsetVector
    # offsets along the slice normal (row x column), which the third axis follows
    normal = np.cross(d[:, 0], d[:, 1])
    sign = 1.0 if float(normal @ d[:, 2]) > 0 else -1.0
    ds.GridFrameOffsetVector = ds_values([sign * k * sz for k in range(nz)])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ny
    ds.Columns = nx
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN_OVERVIEW"
    ds.OperatorsName = ""
    ds.DoseComment = "Y-90 radioembolization, permanent implant"
    top = float(values.max())
    scaling = top / (2**16 - 1) if top > 0 else 1.0
    ds.DoseGridScaling = f"{scaling:.10e}"
    stored = np.rint(np.clip(values, 0.0, None) / scaling).astype(np.uint16)
    ds.PixelData = stored.tobytes()

    file_meta(ds)
    ds.save_as(p, enforce_file_format=True)
    return p


def write_dvh_csv(path: str | Path, dvhs: Mapping[str, DVH], *, n_points: int = 501,
                  overwrite: bool = False) -> Path:
    """Cumulative DVHs in long format: ``voi,dose_gy,volume_fraction,volume_ml``.

    One row per VOI and dose (``n_points`` doses from 0 to the VOI's maximum, see
    :meth:`DVH.curve`); ``volume_fraction`` is the fraction of the VOI receiving at least
    ``dose_gy`` and ``volume_ml`` that fraction times the VOI's volume.
    """
    p = _target(path, overwrite)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["voi", "dose_gy", "volume_fraction", "volume_ml"])
    for name, h in dvhs.items():
        dose, fraction = h.curve(n_points=n_points)
        for d_gy, f in zip(dose, fraction):
            writer.writerow([name, f"{d_gy:.6g}", f"{f:.6g}", f"{f * h.volume_ml:.6g}"])
    p.write_text(buf.getvalue(), encoding="utf-8")
    return p


def voi_metrics(dvhs: Mapping[str, DVH], *, density_g_per_cm3: float = 1.04) -> dict[str, dict[str, float]]:
    """Per VOI: volume (mL), mass (g, at ``density_g_per_cm3``), then :meth:`DVH.metrics`."""
    out = {}
    for name, h in dvhs.items():
        m = h.metrics()
        out[name] = {"volume_ml": m.pop("volume_ml"), "mass_g": h.mass_g(density_g_per_cm3), **m}
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.floating, float)):
        x = float(value)
        return x if math.isfinite(x) else None  # JSON has no NaN or infinity: null
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


def write_metrics_json(path: str | Path, metrics: Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """``metrics`` as indented JSON (insertion order kept; NaN/inf become null, datetimes ISO 8601)."""
    p = _target(path, overwrite)
    p.write_text(json.dumps(_jsonable(metrics), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return p
