"""The result files of one case: NIfTI maps, a DICOM RT Dose, the DVH table, the metrics, the report.

- :func:`write_result`: every output of a :class:`~voxeldose.result.CaseResult` into a folder,
  atomically (:data:`OUTPUT_FILES`);
- :func:`write_nifti`: an image as NIfTI with its geometry.
- :func:`write_rtdose`: the absorbed dose as a DICOM RT Dose in the frame of reference (and,
  unless anonymized, the patient and study) of the image it was computed from.
- :func:`write_dvh_csv`: cumulative DVHs in long format.
- :func:`write_metrics_json`: the case's JSON (:meth:`CaseResult.to_dict`);
- :func:`write_report`: the HTML report (:func:`voxeldose.report.render_report`).

Every single-file writer writes exactly the file it is given, in a folder that must exist, and
creates no other file. It refuses to replace an existing file unless ``overwrite=True`` (the
file is created exclusively, so two writers cannot both succeed). A writer that fails removes
what it had started. :func:`write_result` writes into a temporary folder beside the output
folder and moves it into place only when every file is written.

RT Dose
-------
A multi-frame RT Dose (PS3.3 A.18) on the dose image's grid: ImagePositionPatient of the first
frame, ImageOrientationPatient (any orientation, oblique too) and PixelSpacing from the grid,
and GridFrameOffsetVector from 0 in steps of the slice spacing along the slice normal (row
direction x column direction). When the image's third axis runs against that normal (a
left-handed grid), the frames are written in reverse order so that the offsets still increase:
the file holds the same voxels at the same places. DoseUnits GY, DoseType PHYSICAL.

DoseSummationType is PLAN_OVERVIEW ("dose calculated with respect to plan overview
parameters"). Radioembolization has no RT Plan or RT Treatment Record to reference, and every
other defined term needs one: PLAN, MULTI_PLAN, FRACTION, BEAM, BRACHY, the *_SESSION terms and
CONTROL_POINT require the Referenced RT Plan Sequence and RECORD the Referenced Treatment Record
Sequence (both Type 1C), which dciodvfy reports as errors. dicom3tools 2022 predates
PLAN_OVERVIEW and warns that it does not recognise it. No Plan Overview Sequence (300C,0116) is
written: dicom3tools 2022 does not know it in an RT Dose either (it reports it as
non-standard), and whether a newer standard requires it with PLAN_OVERVIEW is to be checked
against PS3.3 C.8.8.3 of the day.

Pixel values are 16-bit unsigned integers with DoseGridScaling = max / 65535, so the rounding
error is at most max / 131070 = 7.6e-6 of the maximum dose (the requirement is 1e-4). The
standard also allows 32 bits, but dciodvfy (dicom3tools 2022) aborts on 32-bit pixel data, and
16 bits are what planning systems commonly write. RT Dose pixel data are unsigned unless DoseType is
ERROR (C.8.8.3.4.6), so a negative dose (from negative activity in a noisy reconstruction) is
stored as 0, with a :class:`~voxeldose.errors.VoxelDoseWarning` that counts the voxels; the
NIfTI dose map keeps the negative values.

References
----------
DICOM PS3.3 (2024) A.18 RT Dose IOD; C.8.8.3 RT Dose Module (C.8.8.3.4 pixel data, C.8.8.3.2
Grid Frame Offset Vector); C.7.1.1 Patient Module (Patient Identity Removed); PS3.5 6.2 (value
lengths).
"""

from __future__ import annotations

import csv
import datetime as dt
import glob
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from .._version import __version__
from ..anonymize import anonymize_result, anonymous_uid
from ..dvh import DVH
from ..errors import GeometryError, InputError, OutputError, VoxelDoseWarning
from ..image import Image
from ..radiobiology import PARAMETER_ROLES
from ._dicom_common import ds_values, file_meta, new_uid, pixel_module
from ._sitk import to_sitk

if TYPE_CHECKING:
    from ..result import CaseResult

__all__ = [
    "write_result",
    "write_report",
    "check_out",
    "reserve_out",
    "clean_stale",
    "write_nifti",
    "write_rtdose",
    "write_dvh_csv",
    "write_metrics_json",
    "RTDOSE_SOP",
    "DVH_CSV_COLUMNS",
]

logger = logging.getLogger(__name__)

#: SOP Class UID of RT Dose Storage.
RTDOSE_SOP = "1.2.840.10008.5.1.4.1.1.481.2"

#: Columns of :func:`write_dvh_csv`, in order.
DVH_CSV_COLUMNS = ("voi", "dose_gy", "cumulative_volume_fraction", "cumulative_volume_ml", "density_g_per_cm3")

#: Largest stored RT Dose pixel value (16-bit unsigned).
_MAX_STORED = 2**16 - 1

#: Patient and study attributes copied from the reference image's identifiers.
_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "AccessionNumber", "ReferringPhysicianName", "StudyID")

#: DeidentificationMethod (LO, at most 64 characters): what write_rtdose(anonymize=True) does
_DEIDENTIFICATION = "voxeldose: name/ID = case id; no dates, identifiers; UIDs hashed"

#: File names in a case's output folder, as write_result writes them (a research pipeline
#: depends on them).
OUTPUT_FILES = ("dose.nii.gz", "activity.nii.gz", "rtdose.dcm", "dvh.csv", "metrics.json", "report.html")

#: The optional BED maps (Gy), one per parameter role with VOIs, written when the case file's
#: ``[radiobiology]`` says ``bed_maps = true`` (:meth:`CaseResult.bed_maps`).
BED_MAP_FILES = tuple(f"bed_{role}.nii.gz" for role in PARAMETER_ROLES)


# --------------------------------------------------------------------------- files


def _check_target(path: str | Path, what: str) -> Path:
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what}: {p} is a folder; give the path of the file to write")
    if not p.parent.is_dir():
        raise InputError(f"{what}: the folder {p.parent} does not exist; create it before writing {p.name}")
    return p


@contextmanager
def _new_file(path: Path, overwrite: bool, what: str) -> Iterator[IO[bytes]]:
    """Open ``path`` for writing: exclusively unless ``overwrite``; removed again on failure."""
    try:
        fh = open(path, "wb" if overwrite else "xb")
    except FileExistsError:
        raise InputError(
            f"{what}: {path} already exists; choose another path or pass overwrite=True to replace it"
        ) from None
    done = False
    try:
        with fh:
            yield fh
        done = True
    finally:
        if not done:
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- NIfTI


def write_nifti(path: str | Path, image: Image, *, overwrite: bool = False) -> Path:
    """Write ``image`` as NIfTI with its spacing, origin and direction (values as float32).

    NIfTI stores RAS world coordinates; SimpleITK converts from the image's DICOM LPS on
    writing and back on reading, so ``SimpleITK.ReadImage`` returns this image's geometry.

    Parameters
    ----------
    path : path
        The file to write, ``.nii.gz`` (compressed) or ``.nii``, in an existing folder.
    image : Image
        Any image (dose in Gy, activity, masks); values are written as float32.
    overwrite : bool
        Replace ``path`` if it exists.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        If ``path`` exists (and not ``overwrite``), its folder does not, or its name does not
        end in ``.nii.gz`` or ``.nii``.

    Example
    -------
    >>> import tempfile, numpy as np
    >>> from voxeldose import Image
    >>> out = Path(tempfile.mkdtemp()) / "dose.nii.gz"
    >>> write_nifti(out, Image(np.zeros((2, 3, 4)), (2.0, 2.0, 3.0), units="GY")).name
    'dose.nii.gz'
    """
    import SimpleITK as sitk

    p = _check_target(path, "write_nifti")
    if not p.name.endswith((".nii.gz", ".nii")):
        raise InputError(f"write_nifti: {p.name!r} is not a NIfTI file name; end it in .nii.gz (or .nii)")
    with _new_file(p, overwrite, "write_nifti"):
        pass  # the name is ours now; SimpleITK writes into it (and on failure it is removed)
    try:
        sitk.WriteImage(to_sitk(image), str(p), useCompression=p.name.endswith(".gz"))
    except BaseException:
        p.unlink(missing_ok=True)
        raise
    return p


# --------------------------------------------------------------------------- RT Dose


def _lo(value: str, name: str, *, max_chars: int = 64) -> str:
    """A Long String value (PS3.5 6.2): at most 64 characters, no backslash or control character."""
    text = str(value)
    if len(text) > max_chars or "\\" in text or any(ord(c) < 32 for c in text):
        raise InputError(
            f"write_rtdose: {name} {text!r} is not a valid DICOM value: use at most {max_chars} characters, "
            "without backslashes or control characters"
        )
    return text


def write_rtdose(
    path: str | Path,
    dose: Image,
    *,
    reference: Image | None = None,
    anonymize: bool = False,
    series_description: str = "voxeldose Y-90 absorbed dose",
    case_id: str | None = None,
    software_version: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``dose`` (Gy) as a DICOM RT Dose in ``reference``'s frame of reference and study.

    The module documentation gives the encoding: multi-frame on the dose grid, 16-bit
    unsigned values with DoseGridScaling = max / 65535 (error <= 7.6e-6 of the maximum),
    DoseSummationType PLAN_OVERVIEW, negative doses stored as 0.

    Parameters
    ----------
    path : path
        The file to write, in an existing folder.
    dose : Image
        Absorbed dose, ``units == "GY"``, finite, on the grid to write (any orientation).
    reference : Image, optional
        The image the dose was computed from. Its FrameOfReferenceUID, StudyInstanceUID and
        patient/study identifiers (``meta.identifiers``: PatientName, PatientID,
        PatientBirthDate, PatientSex, StudyDate, StudyTime, AccessionNumber,
        ReferringPhysicianName, StudyID, StudyDescription) are copied. Without it, those of
        ``dose.meta``.
    anonymize : bool
        Write no patient identity. PatientName and PatientID become ``case_id``; birth date,
        sex, study date and time, accession number, referring physician, study ID and study
        description are empty or left out; PatientIdentityRemoved is YES; the content date and
        time are left out (LongitudinalTemporalInformationModified REMOVED). The
        StudyInstanceUID and FrameOfReferenceUID are replaced by their
        :func:`voxeldose.anonymize.anonymous_uid` (PS3.15 Basic Profile, action U): consistent,
        so that the doses of one study share a study and the dose registers with its scan's
        anonymized outputs, but no longer the source UIDs, which link back to the hospital's
        records (and the source study UID beside another patient identity would make an archive
        merge or reject it). Such a dose does not register with the source images: to load it
        on them, write it without ``anonymize``. A dose whose metadata is anonymized already
        (:func:`voxeldose.anonymize.anonymize_result`) keeps its UIDs.
    series_description : str
        SeriesDescription (at most 64 characters).
    case_id : str, optional
        The patient name and ID when anonymized (required then; at most 64 characters). Not
        written otherwise.
    software_version : str, optional
        SoftwareVersions; default: the installed voxeldose version.
    overwrite : bool
        Replace ``path`` if it exists.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        If the dose is not in Gy or not finite, the grid is too large for DICOM (more than
        65535 rows or columns), ``anonymize`` has no ``case_id``, a text value is too long, or
        ``path`` exists (and not ``overwrite``) or its folder does not.
    GeometryError
        If ``dose`` and ``reference`` carry different FrameOfReferenceUIDs.

    Warns
    -----
    VoxelDoseWarning
        When negative doses are stored as 0, and when no frame of reference is known (the file
        then gets a new FrameOfReferenceUID and registers with nothing).

    Example
    -------
    >>> import tempfile, numpy as np
    >>> from voxeldose import Image, ImageMeta
    >>> dose = Image(np.full((2, 3, 4), 80.0), (4.0, 4.0, 4.0), units="GY",
    ...              meta=ImageMeta(frame_of_reference_uid="1.2.3.4"))
    >>> write_rtdose(Path(tempfile.mkdtemp()) / "rtdose.dcm", dose).name
    'rtdose.dcm'
    """
    from pydicom.dataset import Dataset

    p = _check_target(path, "write_rtdose")
    if dose.units != "GY":
        raise InputError(
            f"write_rtdose: the dose image has units {dose.units!r}; an RT Dose holds absorbed dose in Gy "
            "(units 'GY'): convert it, or build the Image with units='GY'"
        )
    values = np.asarray(dose.array, dtype=np.float64)
    if not np.isfinite(values).all():
        raise InputError(
            f"write_rtdose: the dose has {int(np.count_nonzero(~np.isfinite(values)))} NaN or infinite "
            "voxel(s); an RT Dose cannot store them: check the activity map and the dose calculation"
        )
    nz, ny, nx = dose.shape
    if ny > 65535 or nx > 65535:
        raise InputError(f"write_rtdose: {ny} rows x {nx} columns exceed DICOM's 65535; resample the dose")
    if anonymize and not case_id:
        raise InputError("write_rtdose: anonymize=True needs a case_id to name the patient; pass case_id=...")
    series_description = _lo(series_description, "series_description")
    if software_version is None:
        software_version = __version__
    software_version = _lo(software_version, "software_version")

    meta = reference.meta if reference is not None else dose.meta
    ids = dict(meta.identifiers)
    frame_uid = meta.frame_of_reference_uid
    if (reference is not None and dose.meta.frame_of_reference_uid and frame_uid
            and dose.meta.frame_of_reference_uid != frame_uid):
        raise GeometryError(
            f"write_rtdose: the dose's FrameOfReferenceUID {dose.meta.frame_of_reference_uid} differs from the "
            f"reference image's {frame_uid}; pass as reference the image the dose was computed from"
        )
    if not frame_uid:
        frame_uid = new_uid()
        warnings.warn(VoxelDoseWarning(
            "write_rtdose: neither the dose nor the reference image has a FrameOfReferenceUID; the RT Dose "
            "gets a new one and will not register with any image"), stacklevel=2)

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names copied from the images may use any script
    ds.SOPClassUID = RTDOSE_SOP
    ds.SOPInstanceUID = new_uid()
    ds.Modality = "RTDOSE"
    # Patient and General Study modules
    if anonymize:
        case = _lo(str(case_id), "case_id")
        for keyword in _PATIENT_STUDY:
            setattr(ds, keyword, "")  # Type 2: present, empty
        ds.PatientName = case
        ds.PatientID = case
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = _DEIDENTIFICATION
        ds.LongitudinalTemporalInformationModified = "REMOVED"  # no dates or times in the RT Dose
        # PS3.15 Basic Profile, action U: UIDs replaced consistently (the same study gives the
        # same study UID in every case), unless the dose's metadata is anonymized already
        study = meta.study_instance_uid or ids.get("StudyInstanceUID")
        ds.StudyInstanceUID = (study if meta.anonymized else anonymous_uid(study)) if study else new_uid()
        if not meta.anonymized and meta.frame_of_reference_uid:
            frame_uid = anonymous_uid(frame_uid)
    else:
        for keyword in _PATIENT_STUDY:
            setattr(ds, keyword, ids.get(keyword, ""))
        if ids.get("StudyDescription"):
            ds.StudyDescription = ids["StudyDescription"]
        ds.StudyInstanceUID = meta.study_instance_uid or ids.get("StudyInstanceUID") or new_uid()
    # RT Series, Frame of Reference, General Equipment
    ds.SeriesInstanceUID = new_uid()
    ds.SeriesNumber = 900
    ds.SeriesDescription = series_description
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "voxeldose"
    ds.ManufacturerModelName = "voxeldose"
    ds.SoftwareVersions = software_version
    # General Image, SOP Common
    ds.InstanceNumber = 1
    if not anonymize:  # the day the dose was computed can date the treatment
        now = dt.datetime.now()
        ds.ContentDate = now.strftime("%Y%m%d")
        ds.ContentTime = now.strftime("%H%M%S")
        ds.InstanceCreationDate = ds.ContentDate
        ds.InstanceCreationTime = ds.ContentTime

    # Image Plane and Multi-frame: frames run along the slice normal, offsets from 0 upwards
    d = dose.direction_matrix
    sx, sy, sz = dose.spacing_mm
    normal = np.cross(d[:, 0], d[:, 1])
    along_normal = float(normal @ d[:, 2]) > 0
    stack = values if along_normal else values[::-1]
    first = dose.index_to_world([0, 0, 0] if along_normal else [0, 0, nz - 1])
    ds.ImagePositionPatient = ds_values(first)
    ds.ImageOrientationPatient = ds_values(np.concatenate([d[:, 0], d[:, 1]]))
    ds.PixelSpacing = ds_values([sy, sx])  # row spacing (between rows, y), column spacing (x)
    ds.SliceThickness = ds_values(sz)
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = (0x3004, 0x000C)  # GridFrameOffsetVector
    ds.GridFrameOffsetVector = ds_values([k * sz for k in range(nz)])

    # Image Pixel and RT Dose
    pixel_module(ds, ny, nx, signed=False)  # unsigned: required unless DoseType is ERROR
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN_OVERVIEW"  # see the module documentation
    ds.DoseComment = "Y-90 radioembolization, permanent implant"
    negative = int(np.count_nonzero(stack < 0))
    if negative:
        warnings.warn(VoxelDoseWarning(
            f"write_rtdose: {negative} voxel(s) have a negative dose (lowest {float(values.min()):.4g} Gy, from "
            "negative activity); RT Dose values are unsigned, so they are stored as 0 in "
            f"{p.name} (the NIfTI dose map keeps them)"), stacklevel=2)
    top = float(stack.max())
    scaling_ds = ds_values(top / _MAX_STORED) if top > 0 else "1"
    scaling = float(scaling_ds)  # the value the file holds: scale by it, not by the unrounded one
    ds.DoseGridScaling = scaling_ds
    stored = np.clip(np.rint(np.clip(stack, 0.0, None) / scaling), 0, _MAX_STORED).astype("<u2")
    ds.PixelData = np.ascontiguousarray(stored).tobytes()

    file_meta(ds)
    with _new_file(p, overwrite, "write_rtdose") as fh:
        ds.save_as(fh, enforce_file_format=True)
    return p


# --------------------------------------------------------------------------- DVH table


def write_dvh_csv(path: str | Path, dvhs: Mapping[str, DVH], *, n_points: int = 501,
                  overwrite: bool = False) -> Path:
    """Cumulative DVHs in long format, columns :data:`DVH_CSV_COLUMNS`.

    One row per VOI and dose: ``n_points`` doses evenly spaced from 0 to the VOI's maximum
    (:meth:`DVH.curve`). ``cumulative_volume_fraction`` is the fraction (0-1) of the VOI receiving
    at least ``dose_gy`` Gy, ``cumulative_volume_ml`` that fraction times the VOI's volume (mL),
    ``density_g_per_cm3`` the density the VOI's doses refer to (lung VOIs at lung density:
    :meth:`DVH.at_density`). VOIs in the mapping's order; numbers with 9 significant digits;
    UTF-8, ``\\n`` line ends.

    Parameters
    ----------
    path : path
        The file to write, in an existing folder.
    dvhs : mapping of VOI name to DVH
    n_points : int
        Doses per VOI (at least 2).
    overwrite : bool
        Replace ``path`` if it exists.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        If a value is not a :class:`~voxeldose.dvh.DVH`, ``n_points`` < 2, or ``path`` exists
        (and not ``overwrite``) or its folder does not.

    Example
    -------
    >>> import tempfile, numpy as np
    >>> from voxeldose import dvh_array
    >>> h = dvh_array(np.full((2, 2, 2), 50.0), np.ones((2, 2, 2), bool), spacing_xyz_mm=(5.0, 5.0, 5.0))
    >>> out = write_dvh_csv(Path(tempfile.mkdtemp()) / "dvh.csv", {"liver": h}, n_points=3)
    >>> out.read_text().splitlines()[:3]
    ['voi,dose_gy,cumulative_volume_fraction,cumulative_volume_ml,density_g_per_cm3', 'liver,0,1,1,1.04', 'liver,25,1,1,1.04']
    """
    p = _check_target(path, "write_dvh_csv")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(DVH_CSV_COLUMNS)
    for name, h in dvhs.items():
        if not isinstance(h, DVH):
            raise InputError(f"write_dvh_csv: the value for VOI {name!r} is a {type(h).__name__}, not a DVH; "
                             "build it with voxeldose.dvh(dose, mask)")
        dose_gy, fraction = h.curve(n_points=n_points)
        for g, f in zip(dose_gy, fraction):
            writer.writerow([name, f"{g:.9g}", f"{f:.9g}", f"{f * h.volume_ml:.9g}", f"{h.density_g_per_cm3:g}"])
    data = buf.getvalue().encode("utf-8")
    with _new_file(p, overwrite, "write_dvh_csv") as fh:
        fh.write(data)
    return p


# --------------------------------------------------------------------------- metrics


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON types; NaN and infinities become None (JSON has neither)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        x = float(value)
        return x if math.isfinite(x) else None
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if isinstance(k, (np.integer, np.floating, np.bool_)):
                k = k.item()
            if not isinstance(k, (str, int, float, bool)):
                raise InputError(f"write_metrics_json: key {k!r} in metrics{where} is a {type(k).__name__}; "
                                 "JSON object keys must be strings")
            out[str(k)] = _jsonable(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value.tolist())]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise InputError(
        f"write_metrics_json: metrics{where} is a {type(value).__name__}, which JSON cannot hold; convert it "
        "to a number, string, list or dict first"
    )


def write_metrics_json(path: str | Path, metrics: Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """Write ``metrics`` as indented JSON, keys in insertion order (not sorted).

    Conversions, explicit because JSON has no NaN, infinity, numpy or dates: NaN and +/-inf
    become ``null``; numpy scalars and arrays become numbers and lists; tuples become lists;
    datetimes, dates and times become ISO 8601 strings; paths become strings. Anything else is
    an error. The file is strict JSON (written with ``allow_nan=False``), UTF-8.

    Parameters
    ----------
    path : path
        The file to write, in an existing folder.
    metrics : mapping
        Nested dicts, lists and the types above.
    overwrite : bool
        Replace ``path`` if it exists.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        If a value or key cannot be written (the message names where it is), or ``path``
        exists (and not ``overwrite``) or its folder does not. Nothing is written then.

    Example
    -------
    >>> import tempfile
    >>> out = write_metrics_json(Path(tempfile.mkdtemp()) / "m.json", {"mean_gy": float("nan")})
    >>> out.read_text()
    '{\\n  "mean_gy": null\\n}\\n'
    """
    p = _check_target(path, "write_metrics_json")
    text = json.dumps(_jsonable(metrics, ""), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    with _new_file(p, overwrite, "write_metrics_json") as fh:
        fh.write(text.encode("utf-8"))
    return p


# --------------------------------------------------------------------------- report


def write_report(path: str | Path, result: "CaseResult", *, overwrite: bool = False) -> Path:
    """Write the self-contained HTML report of ``result`` (:func:`voxeldose.report.render_report`).

    Raises
    ------
    InputError
        If ``path`` exists (and not ``overwrite``) or its folder does not.
    """
    from ..report import render_report

    p = _check_target(path, "write_report")
    data = render_report(result).encode("utf-8")
    with _new_file(p, overwrite, "write_report") as fh:
        fh.write(data)
    return p


# --------------------------------------------------------------------------- one case's folder


#: What a result folder holds (write_result's files, and a batch case's log): ``force`` replaces
#: a folder holding only these.
RESULT_FILES = (*OUTPUT_FILES, "density.nii.gz", *BED_MAP_FILES, "log.txt")


def check_out(out: Path, force: bool, *, known: tuple[str, ...] = RESULT_FILES) -> None:
    """Refuse an output folder that is a file, or that holds results (unless ``force``), or, even
    with ``force``, that holds anything voxeldose did not write (``known``: the files of this kind
    of result): replacing the folder would delete it (``--out ~/Documents --force`` must not
    empty Documents)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is a file; choose a folder name")
    if not out.exists():
        return
    entries = sorted(p.name for p in out.iterdir())
    if entries and not force:
        raise InputError(
            f"--out {out} already holds results; choose another folder, or pass --force to replace them "
            "(the old results are kept until the new ones are complete)"
        )
    foreign = [name for name in entries if name not in known]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise InputError(
            f"--out {out} holds files voxeldose did not write ({shown}); --force replaces only a folder of "
            "voxeldose results, and replacing this one would delete them: choose a new folder for the results"
        )


# --------------------------------------------------------------------------- reserving a folder

#: Names of the working entries beside an output folder OUT: ``.OUT.partial-PID-HOST-HEX`` (the
#: folder being written), ``.OUT.old-PID-HOST`` (the previous result while the new one is moved
#: in) and ``.OUT.lock-PID-HOST`` (the run writing OUT).
_WORKING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old|lock)-(?P<pid>\d+)-(?P<host>\w+)(?:-[0-9a-f]+)?$")

#: Output folders this process holds (reserve_out is re-entrant: run_case reserves, write_result
#: reserves again).
_HELD: dict[Path, int] = {}


def _host() -> str:
    import socket

    return re.sub(r"\W", "_", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _tag() -> str:
    return f"{os.getpid()}-{_host()}"


def clean_stale(folder: Path, name: str | None = None) -> list[str]:
    """Remove (or restore) what runs killed on this machine left beside the output folders in
    ``folder`` (only those of ``name`` if given); return what was done, for the log.

    A ``.OUT.partial-*`` folder of a dead process is an unfinished result: removed. A
    ``.OUT.old-*`` of a dead process is the previous good result, moved aside when the run was
    killed: put back as OUT when OUT is missing (the new one never arrived), removed when OUT is
    there (the new one did). A dead process's lock is removed. Entries of live processes, or of
    other machines (a shared disk), are left alone.
    """
    done: list[str] = []
    if not folder.is_dir():
        return done
    host = _host()
    # backups last: a result is restored only after the unfinished folders beside it are gone
    entries = sorted(folder.iterdir(), key=lambda e: (".old-" in e.name, e.name))
    for entry in entries:
        m = _WORKING.match(entry.name)
        if m is None or (name is not None and m["name"] != name) or m["host"] != host or _alive(int(m["pid"])):
            continue
        out = folder / m["name"]
        try:
            if m["kind"] == "old" and not out.exists():
                entry.rename(out)
                done.append(f"restored the previous result {out} (a run was killed while replacing it)")
            elif entry.is_dir():
                shutil.rmtree(entry)
                done.append(f"removed {entry} (left by a run that was killed)")
            else:
                entry.unlink()
                done.append(f"removed the stale lock {entry}")
        except OSError as exc:
            done.append(f"could not remove {entry}: {exc}")
    for line in done:
        logger.info("%s", line)
    return done


def _resolved(out: "str | os.PathLike[str]") -> Path:
    """``out`` as an absolute path; refused when it is the working folder or holds it (a result
    folder is replaced as a whole: ``--out .`` would replace the folder the run stands in)."""
    out_dir = Path(os.path.abspath(out))
    cwd = Path.cwd()
    if out_dir == cwd or out_dir in cwd.parents or out_dir.parent == out_dir:
        raise InputError(
            f"--out {out} is {'the root folder' if out_dir.parent == out_dir else 'the current folder or one above it'}: "
            "a result folder is written beside and then moved into place as a whole, so it must be a folder of its "
            f"own, e.g. --out {Path(out) / 'results'}"
        )
    return out_dir


@contextmanager
def reserve_out(out: "str | os.PathLike[str]", force: bool, *,
                known: tuple[str, ...] = RESULT_FILES) -> Iterator[Path]:
    """Hold the output folder ``out`` for one run: checked (:func:`check_out`, ``known`` the files
    that ``force`` may replace), the leftovers of killed runs cleaned (:func:`clean_stale`), and
    locked, so that a second run into the same folder is refused at once, not after computing for
    minutes. Yields the absolute folder."""
    out_dir = _resolved(out)
    if out_dir in _HELD:
        _HELD[out_dir] += 1
        try:
            yield out_dir
        finally:
            _HELD[out_dir] -= 1
        return
    parent = out_dir.parent
    clean_stale(parent, out_dir.name)
    check_out(out_dir, force, known=known)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, parent, "create the folder for the results") from None
    lock = parent / f".{out_dir.name}.lock-{_tag()}"
    others = [e for e in parent.glob(f".{glob.escape(out_dir.name)}.lock-*") if _WORKING.match(e.name)]
    if others:
        raise OutputError(
            f"--out {out_dir}: another voxeldose run is writing this folder (its lock {others[0].name} is beside it); "
            "wait for it to finish or choose another folder (a lock left by a run on another machine that is no longer "
            "running can be deleted)"
        )
    try:
        lock.touch(exist_ok=False)
    except OSError as exc:
        raise output_error(exc, parent, "write in the folder of the results") from None
    _HELD[out_dir] = 1
    try:
        others = [e for e in parent.glob(f".{glob.escape(out_dir.name)}.lock-*") if e != lock]
        if others:  # two runs created their locks at once: both refuse, neither writes
            raise OutputError(f"--out {out_dir}: another voxeldose run is writing this folder ({others[0].name}); "
                              "choose another folder")
        yield out_dir
    finally:
        _HELD.pop(out_dir, None)
        lock.unlink(missing_ok=True)


def output_error(exc: OSError, folder: Path, doing: str, needed_bytes: int | None = None) -> OutputError:
    """A clear error for a failed write: read-only folder, full disk (with the space needed), other."""
    import errno

    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot {doing} in {folder}: {exc.strerror or exc} (the folder or the disk is read-only "
                           "for this user); choose another --out")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = -1
        need = f"; the results need about {needed_bytes / 2**20:.0f} MiB" if needed_bytes else ""
        have = f"{free / 2**20:.0f} MiB are free there" if free >= 0 else "the free space is unknown"
        return OutputError(f"cannot {doing} in {folder}: the disk is full ({have}{need}); free some space or choose "
                           "another --out. Nothing was written and a previous result there is kept")
    return OutputError(f"cannot {doing} in {folder}: {exc}; nothing was written and a previous result there is kept")


def _needed_bytes(result: "CaseResult") -> int:
    """An upper bound of the size of a case's results: two float32 maps (uncompressed), the RT
    Dose's 16-bit frames, and a margin for the report, the DVHs and the metrics."""
    n = int(result.dose.array.size)
    maps = sum(1 for m in ((result.radiobiology or {}).get("maps", {}) or {}).values() if m.get("file")) if (
        (result.radiobiology or {}).get("write_bed_maps")) else 0
    return n * 4 * ((3 if "density" in result.images else 2) + maps) + n * 2 + 8 * 2**20


def _publish(staging: Path, out: Path) -> None:
    """Move the finished ``staging`` folder to ``out``; a previous ``out`` is removed only after."""
    backup = None
    if out.exists():
        backup = out.with_name(f".{out.name}.old-{_tag()}")
        out.rename(backup)
    try:
        staging.rename(out)
    except OSError:
        if backup is not None:
            backup.rename(out)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _write_all(result: "CaseResult", staging: Path, anonymize: bool) -> None:
    write_nifti(staging / "dose.nii.gz", result.dose)
    write_nifti(staging / "activity.nii.gz", result.activity)
    if "density" in result.images:  # a case with a CT: the density the dose used
        write_nifti(staging / "density.nii.gz", result.images["density"])
    if (result.radiobiology or {}).get("write_bed_maps"):  # asked for in the case file's [radiobiology]
        for role, image in result.bed_maps().items():
            write_nifti(staging / f"bed_{role}.nii.gz", image)
    with warnings.catch_warnings():
        # a caveat of the result already (stage "dose"), shown in the report: not again
        warnings.filterwarnings("ignore", message=r"write_rtdose: \d+ voxel\(s\) have a negative dose",
                                category=VoxelDoseWarning)
        warnings.filterwarnings("ignore", message=r"write_rtdose: neither the dose nor the reference image has a "
                                "FrameOfReferenceUID", category=VoxelDoseWarning)
        write_rtdose(staging / "rtdose.dcm", result.dose, anonymize=anonymize, case_id=result.case_id)
    write_dvh_csv(staging / "dvh.csv", result.dvhs)
    write_report(staging / "report.html", result)
    write_metrics_json(staging / "metrics.json", result.to_dict())


def write_result(result: "CaseResult", out: str | Path, *, force: bool = False, anonymize: bool = False) -> Path:
    """Write every output of one case into the folder ``out`` (stable names).

    ``dose.nii.gz`` (Gy) and ``activity.nii.gz`` (MBq per voxel at administration) with the
    scan's geometry, ``density.nii.gz`` (g/cm3) when the dose used a CT, and ``bed_<role>.nii.gz``
    (Gy, :meth:`CaseResult.bed_maps`) when the case file's ``[radiobiology]`` asks for them; ``rtdose.dcm`` (:func:`write_rtdose`, in the scan's frame of reference and
    study unless ``anonymize``); ``dvh.csv``; ``report.html``; ``metrics.json``
    (:meth:`CaseResult.to_dict`). Everything is written to a temporary folder beside ``out``
    and moved into place only when all files are complete; a previous result in ``out`` is
    removed only after, and only with ``force``. ``anonymize`` writes every output from
    :func:`voxeldose.anonymize.anonymize_result` (UIDs mapped, times shifted so that the
    administration is 2000-01-01 00:00, identifiers, descriptions and paths withheld) and the RT
    Dose without patient identifiers (:func:`write_rtdose`).

    Returns
    -------
    Path
        ``out``, as an absolute path.

    Raises
    ------
    InputError
        ``out`` is a file, holds results and not ``force``, or is the working folder (or one above
        it); nothing is written then.
    OutputError
        Another run is writing ``out``, or the disk is full or read-only (the message names the
        folder and the space needed); nothing is published and a previous result is kept.
    """
    with reserve_out(out, force) as out_dir:
        if anonymize:
            result = anonymize_result(result)
        # mkdir, not mkdtemp: the published folder gets the user's umask permissions, not 0700
        staging = out_dir.parent / f".{out_dir.name}.partial-{_tag()}-{secrets.token_hex(4)}"
        try:
            staging.mkdir()
            _write_all(result, staging, anonymize)
            check_out(out_dir, force)  # nobody wrote there meanwhile
            _publish(staging, out_dir)
        except OutputError:
            raise
        except OSError as exc:
            raise output_error(exc, out_dir.parent, "write the results", _needed_bytes(result)) from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return out_dir

