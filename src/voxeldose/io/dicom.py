"""DICOM images in: PET (classic and Enhanced), reconstructed NM SPECT, CT.

:func:`load_image` takes a folder (searched recursively), one file, or a list of files, finds the
image series in them, and returns an :class:`~voxeldose.image.Image` in the series' physical
units with its geometry and the metadata calibration needs. :func:`list_series` lists what a
folder holds.

Geometry
--------
Slices are ordered by their position along the slice normal (ImageOrientationPatient row x
column), not by file name or InstanceNumber. The volume's k axis points from the first slice to
the next, so head-first and feet-first series, and oblique ones, all come out with the right
patient coordinates. The spacing between slices must be even: a step that differs from the
median step by more than ``SLICE_GAP_TOLERANCE`` (1 % of the step, at least 0.01 mm) is a
missing or extra slice, and is an error that names the two slices around it — never a silently
stretched volume. All slices must share orientation, pixel spacing and matrix size.

Pixel values
------------
Stored values are converted with each slice's (or frame's) RescaleSlope and RescaleIntercept
(PET scanners give every slice its own slope) into float32. Compressed transfer syntaxes (JPEG
2000, JPEG-LS, JPEG, RLE, deflate) are decoded by pydicom's pixel-data plugins (pylibjpeg,
pylibjpeg-openjpeg, pylibjpeg-libjpeg, pyjpegls), installed with voxeldose.

References
----------
DICOM PS3.3 (2024): C.7.6.2 Image Plane Module; C.8.9 PET modules (Units, DecayCorrection,
DecayFactor, Radiopharmaceutical Information); C.8.4 NM modules (Detector Information Sequence,
SpacingBetweenSlices); C.8.22 Enhanced PET; C.7.6.16 Multi-frame Functional Groups.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

from ..errors import DicomError, GeometryError, VoxelDoseError, VoxelDoseWarning
from ..image import Image, ImageMeta
from ._dicom_common import native_pixel_bytes_match, not_dicom_reason, read_dicom
from ._walk import files_under

__all__ = ["load_image", "list_series", "SeriesInfo", "SLICE_GAP_TOLERANCE", "JUNCTION_TOLERANCE", "GRID_TOLERANCE_MM"]

logger = logging.getLogger(__name__)

#: Relative tolerance on the slice step (and at least 0.01 mm absolute) for a regular series.
SLICE_GAP_TOLERANCE = 0.01

#: A step that differs from the median by more than SLICE_GAP_TOLERANCE but at most this much is a
#: bed junction (accepted, with a warning); more is a missing slice (an error).
JUNCTION_TOLERANCE = 0.10

#: Slices within this distance (mm) of a series' regular grid are used as they are; further,
#: they are interpolated onto it along the normal.
GRID_TOLERANCE_MM = 0.1

#: Tolerance on direction cosines being equal across slices and orthonormal.
ORIENTATION_TOLERANCE = 1e-4

PET_SOP = "1.2.840.10008.5.1.4.1.1.128"
ENHANCED_PET_SOP = "1.2.840.10008.5.1.4.1.1.130"
LEGACY_ENHANCED_PET_SOP = "1.2.840.10008.5.1.4.1.1.128.1"
NM_SOP = "1.2.840.10008.5.1.4.1.1.20"
CT_SOP = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_SOP = "1.2.840.10008.5.1.4.1.1.2.1"
IMAGE_MODALITIES = {"PT", "NM", "CT"}
# Not images (skipped when scanning a folder): RT Structure Set, RT Dose, SEG, SR, RT Plan...
_NON_IMAGE_MODALITIES = {"RTSTRUCT", "RTDOSE", "RTPLAN", "SEG", "SR", "REG", "KO", "PR", "RTRECORD"}


@dataclass(frozen=True)
class SeriesInfo:
    """One image series found in a folder."""

    series_instance_uid: str
    modality: str
    description: str
    n_files: int
    n_frames: int
    files: tuple[str, ...]

    def line(self) -> str:
        return (
            f"{self.series_instance_uid}  {self.modality}  {self.description or '(no description)'!r}  "
            f"{self.n_files} file(s), {self.n_frames} slice(s)"
        )


# --------------------------------------------------------------------------- reading headers


def _files_of(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if p.is_dir():
            files = files_under(p, DicomError)
            if not files:
                raise DicomError(f"folder {p} is empty: point to the folder that holds the exported series")
            return files
        if p.is_file():
            return [p]
        raise DicomError(f"{p} does not exist")
    files = [Path(f) for f in path]
    if not files:
        raise DicomError("an empty list of files was given")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DicomError(f"{len(missing)} file(s) do not exist, e.g. {missing[0]}")
    return files


def _read_header(path: Path) -> Any | None:
    """The dataset with its pixel data deferred (read later from the file, only for the chosen
    series), or None when the file is not DICOM."""
    return read_dicom(path, pixels="deferred")


def _is_image(ds: Any) -> bool:
    modality = str(getattr(ds, "Modality", "")).upper()
    if modality in _NON_IMAGE_MODALITIES:
        return False
    return modality in IMAGE_MODALITIES and "Rows" in ds and "Columns" in ds


#: Storage SOP classes of the images voxeldose reads: a file that declares one in its file meta
#: information but holds no image is a cut copy, not another kind of object.
_IMAGE_SOPS = {PET_SOP, ENHANCED_PET_SOP, LEGACY_ENHANCED_PET_SOP, NM_SOP, CT_SOP, ENHANCED_CT_SOP}


def _damaged(path: Path, ds: Any | None) -> str | None:
    """Why a file that is no readable image is a damaged DICOM file (to refuse, naming it), or
    None when it is simply not an image (to skip): a skipped slice at either end of a series is
    undetectable, so a file that is not DICOM is refused by :func:`not_dicom_reason`'s rules, and
    a DICOM file holding no data set after its file meta information, or an image lacking what
    makes one, is refused."""
    if ds is None:
        return not_dicom_reason(path)
    declared = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
    if len(ds) == 0:
        return "the file holds its file meta information but no data set: truncated"
    if declared in _IMAGE_SOPS or str(getattr(ds, "SOPClassUID", "")) in _IMAGE_SOPS:
        # a PET, NM or CT image that lacks what makes it one: not another kind of file to skip
        missing = [k for k in ("Modality", "Rows", "Columns", "PixelData") if k not in ds or ds.get(k) in (None, "")]
        if missing:
            return f"the file is a PET, NM or CT image (its SOP class) but has no {', '.join(missing)}: damaged"
        modality = str(ds.Modality).upper()
        if modality not in IMAGE_MODALITIES:
            return f"the file is a PET, NM or CT image (its SOP class) but its Modality (0008,0060) is {modality!r}"
    return None


def _scan(files: Iterable[Path]) -> dict[str, list[tuple[Path, Any]]]:
    series: dict[str, list[tuple[Path, Any]]] = {}
    skipped = 0
    for f in files:
        if f.name.upper() == "DICOMDIR":
            continue
        ds = _read_header(f)
        if ds is None or not _is_image(ds):
            reason = _damaged(f, ds)
            if reason is not None:
                raise DicomError(f"{f}: {reason}; re-export or copy it again, or remove it if it is not part of "
                                 "the export")
            skipped += 1
            continue
        uid = str(getattr(ds, "SeriesInstanceUID", ""))
        if not uid:
            raise DicomError(f"{f}: no SeriesInstanceUID (0020,000E); the file is not a valid image")
        series.setdefault(uid, []).append((f, ds))
    if skipped:
        logger.debug("skipped %d file(s) that are not PET, NM or CT images", skipped)
    return series


def _info(uid: str, items: list[tuple[Path, Any]]) -> SeriesInfo:
    ds = items[0][1]
    frames = sum(max(1, _int(d, "NumberOfFrames", 1, str(f))) for f, d in items)
    return SeriesInfo(uid, str(getattr(ds, "Modality", "")), str(getattr(ds, "SeriesDescription", "")),
                      len(items), frames, tuple(str(f) for f, _ in items))


def list_series(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[SeriesInfo]:
    """The PET, NM and CT series in a folder (recursively), a file or a list of files."""
    return [_info(uid, items) for uid, items in _scan(_files_of(path)).items()]


# --------------------------------------------------------------------------- values and times


def _int(ds: Any, keyword: str, default: int | None = None, where: str = "") -> int:
    """An integer attribute; a missing one gives ``default`` (or an error), a malformed one an error."""
    value = getattr(ds, keyword, None)
    if value is None or value == "":
        if default is None:
            raise DicomError(f"{where or 'a file'}: {keyword} is missing")
        return default
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            raise TypeError("several values")
        return int(value)
    except (TypeError, ValueError):
        raise DicomError(f"{where or 'a file'}: {keyword} must be one integer, got {value!r}") from None


def _float(ds: Any, keyword: str, default: float | None = None) -> float | None:
    """A numeric attribute: ``default`` when absent or empty; one finite number otherwise, and a
    ValueError naming the tag and the file when it is not (text, several values, NaN): a value
    that cannot be read is never replaced by the default (a RescaleSlope of "abc" read as 1
    made a whole series 94 % low)."""
    value = getattr(ds, keyword, None)
    if value is None or value == "":
        return default
    where = getattr(ds, "filename", "") or "a file"
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        raise ValueError(f"{where}: {keyword} must be one number, got {len(value)} values {list(value)!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {keyword} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise ValueError(f"{where}: {keyword} {value!r} is not a finite number")
    return x


def _floats(ds: Any, keyword: str, n: int, where: str) -> NDArray[np.float64]:
    value = getattr(ds, keyword, None)
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise DicomError(f"{where}: {keyword} is missing or not numeric ({value!r})") from None
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise DicomError(f"{where}: {keyword} must hold {n} finite numbers, got {value!r}")
    return arr


_DT = re.compile(r"^(?P<date>\d{8})(?P<time>\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?(?P<offset>[+-]\d{4})?$")
_TM = re.compile(r"^(?P<h>\d{2})(?:(?P<m>\d{2})(?:(?P<s>\d{2})(?:\.(?P<f>\d{1,6}))?)?)?$")
_OFFSET = re.compile(r"^[+-](?P<h>\d{2})(?P<m>\d{2})$")


def _offset(text: str) -> dt.timezone:
    """A DICOM UTC offset "+HHMM" / "-HHMM" as a timezone; a ValueError when malformed."""
    m = _OFFSET.match(text.strip())
    if m is None or int(m["h"]) > 14 or int(m["m"]) >= 60:
        raise ValueError(f"{text!r} is not a UTC offset (+HHMM or -HHMM)")
    sign = -1 if text.strip()[0] == "-" else 1
    return dt.timezone(sign * dt.timedelta(hours=int(m["h"]), minutes=int(m["m"])))


def _tz(ds: Any) -> dt.timezone | None:
    """The dataset's TimezoneOffsetFromUTC (0008,0201), which applies to its DA and TM values."""
    value = str(getattr(ds, "TimezoneOffsetFromUTC", "") or "").strip()
    if not value:
        return None
    try:
        return _offset(value)
    except ValueError as exc:
        raise ValueError(f"{getattr(ds, 'filename', '') or 'a file'}: TimezoneOffsetFromUTC (0008,0201) {exc}") from None


def _time_of_day(text: str) -> dt.timedelta:
    """A DICOM TM (HH[MM[SS[.FFFFFF]]], or the old HH:MM:SS) as a time since midnight; a
    ValueError when malformed or out of range."""
    m = _TM.match(text.replace(":", ""))
    if m is None:
        raise ValueError(f"{text!r} is not a DICOM time (HHMMSS.FFFFFF)")
    h, mi, se = int(m["h"]), int(m["m"] or 0), int(m["s"] or 0)
    if h > 23 or mi > 59 or se > 60:
        raise ValueError(f"{text!r} is not a DICOM time: {h:02d}:{mi:02d}:{se:02d} is out of range")
    return dt.timedelta(hours=h, minutes=mi, seconds=se + (int(m["f"].ljust(6, "0")) * 1e-6 if m["f"] else 0.0))


def _datetime(date: Any, time: Any, tz: dt.timezone | None = None, *, what: str = "a date and time",
              ds: Any = None) -> dt.datetime | None:
    """DICOM DA + TM (or a DT in ``date`` with ``time`` None) to a datetime; None when absent.

    Aware when the offset from UTC is known: a DT's own "+HHMM" suffix, else ``tz`` (the
    dataset's TimezoneOffsetFromUTC); naive (the scanner's wall clock) otherwise. A value
    without a time of day gives None (a date alone is no time to decay-correct to). A malformed
    value is a ValueError naming ``what`` and the file: never read as another time (AcquisitionTime
    "-10000" was read as 23:00 the day before).
    """
    where = f"{getattr(ds, 'filename', '') or 'a file'}: " if ds is not None else ""
    zone = tz
    if time is None:
        text = str(date or "").strip()
        if not text:
            return None
        m = _DT.match(text)
        if m is None:
            raise ValueError(f"{where}{what} {text!r} is not a DICOM date-time (YYYYMMDDHHMMSS.FFFFFF&ZZXX)")
        if m["offset"]:
            try:
                zone = _offset(m["offset"])
            except ValueError as exc:
                raise ValueError(f"{where}{what}: {exc}") from None
        date, time = m["date"], m["time"] or ""
    date_s = str(date or "").strip()
    time_s = str(time or "").strip()
    if not date_s or not time_s:
        return None
    try:
        day = dt.datetime.strptime(date_s, "%Y%m%d")
    except ValueError:
        raise ValueError(f"{where}{what}: {date_s!r} is not a DICOM date (YYYYMMDD)") from None
    try:
        moment = day + _time_of_day(time_s)
    except ValueError as exc:
        raise ValueError(f"{where}{what}: {exc}") from None
    return moment.replace(tzinfo=zone) if zone is not None else moment


def _earliest(times: Sequence[dt.datetime]) -> dt.datetime:
    """The earliest of ``times``; on their wall clocks when some carry a UTC offset and others not."""
    aware = {t.tzinfo is not None for t in times}
    return min(times) if len(aware) == 1 else min(times, key=lambda t: t.replace(tzinfo=None))


def _radiopharmaceutical(ds: Any) -> dict[str, Any]:
    seq = getattr(ds, "RadiopharmaceuticalInformationSequence", None)
    if not seq:
        return {}
    item = seq[0]
    out: dict[str, Any] = {
        "radiopharmaceutical": str(getattr(item, "Radiopharmaceutical", "")) or None,
        "radionuclide_half_life_s": _float(item, "RadionuclideHalfLife"),
        "radionuclide_positron_fraction": _float(item, "RadionuclidePositronFraction"),
        "radionuclide_total_dose_bq": _float(item, "RadionuclideTotalDose"),
    }
    start = _datetime(getattr(item, "RadiopharmaceuticalStartDateTime", None), None, _tz(ds),
                      what="RadiopharmaceuticalStartDateTime (0018,1078)", ds=ds)
    out["radiopharmaceutical_start_datetime"] = start
    if start is None:
        # the older TM attribute has no date: kept as a time of day; putting it on the series
        # date would be wrong by a day for a next-day scan (23 % of Y-90 activity), so calibrate
        # decides, with the case file's date-time if it has one, and says so
        start_tm = getattr(item, "RadiopharmaceuticalStartTime", None)
        if start_tm:
            try:
                since_midnight = _time_of_day(str(start_tm).strip())
            except ValueError as exc:
                raise ValueError(f"{getattr(ds, 'filename', '') or 'a file'}: RadiopharmaceuticalStartTime (0018,1072) "
                                 f"{exc}") from None
            out["radiopharmaceutical_start_time"] = (dt.datetime(1900, 1, 1) + since_midnight).time()
    codes = getattr(item, "RadionuclideCodeSequence", None)
    if codes:
        out["radionuclide"] = str(getattr(codes[0], "CodeMeaning", "")) or None
        out["radionuclide_code"] = str(getattr(codes[0], "CodeValue", "")) or None
    return out


_IDENTIFIER_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
    "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
)


def _meta(ds: Any, files: Sequence[Path], acquisition: dt.datetime | None) -> ImageMeta:
    identifiers = {k: str(getattr(ds, k)) for k in _IDENTIFIER_KEYWORDS if getattr(ds, k, None) not in (None, "")}
    duration_ms = _float(ds, "ActualFrameDuration")
    corrected = getattr(ds, "CorrectedImage", None)
    if isinstance(corrected, str):
        corrected = [corrected]
    return ImageMeta(
        modality=str(getattr(ds, "Modality", "")) or None,
        sop_class_uid=str(getattr(ds, "SOPClassUID", "")) or None,
        series_instance_uid=str(getattr(ds, "SeriesInstanceUID", "")) or None,
        study_instance_uid=str(getattr(ds, "StudyInstanceUID", "")) or None,
        frame_of_reference_uid=str(getattr(ds, "FrameOfReferenceUID", "")) or None,
        series_description=str(getattr(ds, "SeriesDescription", "")) or None,
        manufacturer=str(getattr(ds, "Manufacturer", "")) or None,
        manufacturer_model=str(getattr(ds, "ManufacturerModelName", "")) or None,
        series_datetime=_datetime(getattr(ds, "SeriesDate", None), getattr(ds, "SeriesTime", None), _tz(ds),
                                  what="SeriesDate/SeriesTime (0008,0021/0031)", ds=ds),
        acquisition_datetime=acquisition,
        private_scan_datetime=_ge_scan_datetime(ds),
        frame_duration_s=None if duration_ms is None else duration_ms / 1000.0,
        decay_correction=str(getattr(ds, "DecayCorrection", "")).upper() or None,
        decay_factor=_float(ds, "DecayFactor"),
        corrected_image=tuple(str(c) for c in (corrected or ())),
        source_files=tuple(str(f) for f in files),
        identifiers=identifiers,
        **_radiopharmaceutical(ds),
    )


def _ge_scan_datetime(ds: Any) -> dt.datetime | None:
    """GE PET's private scan start, (0009,100D) in the GEMS_PETD_01 block, or None."""
    try:
        block = ds.private_block(0x0009, "GEMS_PETD_01")
        value = block[0x0D].value
    except (KeyError, ValueError, TypeError):
        return None
    return _datetime(value, None, _tz(ds), what="GE private scan DateTime (0009,100D)", ds=ds) if value else None


def _with_slice_timing(meta: ImageMeta, starts: Sequence[dt.datetime | None], durations_ms: Sequence[float | None],
                       decay_factors: Sequence[float | None]) -> ImageMeta:
    """``meta`` with per-slice timing when the slices differ in it (a multi-bed PET), else as is."""
    def varies(values: Sequence[Any]) -> bool:
        return len({v for v in values if v is not None}) > 1

    if not (varies(starts) or varies(durations_ms) or varies(decay_factors)):
        return meta
    # the series-level values are those of the earliest slice (the scan start), not of the file
    # that happened to come first
    known = [(t, k) for k, t in enumerate(starts) if t is not None]
    k0 = next(k for t, k in known if t == _earliest([t for t, _ in known])) if known else 0
    duration_ms = durations_ms[k0]
    return replace(
        meta,
        decay_factor=decay_factors[k0],
        frame_duration_s=None if duration_ms is None else duration_ms / 1000.0,
        slice_acquisition_datetimes=tuple(starts),
        slice_frame_durations_s=tuple(None if d is None else d / 1000.0 for d in durations_ms),
        slice_decay_factors=tuple(decay_factors),
    )


def _acquisition_datetime(datasets: Sequence[Any]) -> dt.datetime | None:
    times = []
    for ds in datasets:
        t = _datetime(getattr(ds, "AcquisitionDateTime", None), None, _tz(ds),
                      what="AcquisitionDateTime (0008,002A)", ds=ds)
        if t is None:
            t = _datetime(getattr(ds, "AcquisitionDate", None) or getattr(ds, "SeriesDate", None),
                          getattr(ds, "AcquisitionTime", None), _tz(ds),
                          what="AcquisitionDate/AcquisitionTime (0008,0022/0032)", ds=ds)
            if getattr(ds, "AcquisitionTime", None) in (None, ""):
                t = None
        if t is not None:
            times.append(t)
    return _earliest(times) if times else None


def _units(ds: Any) -> str:
    modality = str(getattr(ds, "Modality", "")).upper()
    units = str(getattr(ds, "Units", "") or "").upper()
    if modality == "CT":
        return "HU"
    if units:
        return units
    if modality == "NM":
        return "CNTS"
    return ""


# --------------------------------------------------------------------------- geometry


def _orientation(iop: NDArray[np.float64], where: str) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise GeometryError(f"{where}: ImageOrientationPatient {iop.tolist()} is not two orthonormal vectors")
    row = row / np.linalg.norm(row)
    col = col / np.linalg.norm(col)
    return row, col, np.cross(row, col)


@dataclass(frozen=True)
class _Stack:
    """How a series' slices stack: their order along the normal, the grid step and what was done."""

    order: NDArray[np.intp]
    step: float
    positions: NDArray[np.float64]  # of the sorted slices along the normal, mm
    resample: bool  # the slices are interpolated onto the regular grid (they lie further from it)
    note: str | None  # what was done along z, for the provenance (None: a regular series)


def _stack_geometry(positions: NDArray[np.float64], normal: NDArray[np.float64], labels: Sequence[str]) -> _Stack:
    """Order of the slices along ``normal`` and the slice step (mm); errors for gaps.

    Steps within ``SLICE_GAP_TOLERANCE`` of the median are a regular series. Steps that differ
    more but by less than :data:`JUNCTION_TOLERANCE` (the bed junctions of a multi-bed PET: a
    GE Discovery steps 3.27 mm, and 3.29 or 3.19 mm where two beds meet) are accepted with a
    warning: the grid runs from the first slice to the last in equal steps; when every slice lies
    within :data:`GRID_TOLERANCE_MM` of it the slices are used as they are, otherwise they are
    interpolated linearly along the normal onto it. A step further off (a missing slice: twice
    the step) is an error.
    """
    d = positions @ normal
    order = np.argsort(d, kind="stable")
    d_sorted = d[order]
    if len(d_sorted) < 2:
        raise GeometryError(f"the series has a single slice ({labels[0]}); a 3-D volume needs at least two")
    steps = np.diff(d_sorted)
    dup = np.flatnonzero(steps < 1e-3)
    if dup.size:
        i = dup[0]
        raise GeometryError(
            f"two slices at the same position {d_sorted[i]:.3f} mm along the normal (ImagePositionPatient (0020,0032)): "
            f"{labels[order[i]]} and {labels[order[i + 1]]}; the folder holds duplicates or several series with one UID"
        )
    step = float(np.median(steps))
    tol = max(0.01, SLICE_GAP_TOLERANCE * step)
    deviation = np.abs(steps - step)
    gaps = np.flatnonzero(deviation > JUNCTION_TOLERANCE * step)
    if gaps.size:
        i = gaps[0]
        raise GeometryError(
            f"uneven slice spacing (ImagePositionPatient (0020,0032)): {steps[i]:.3f} mm between {labels[order[i]]} "
            f"(at {d_sorted[i]:.2f} mm) and "
            f"{labels[order[i + 1]]} (at {d_sorted[i + 1]:.2f} mm) where the series steps {step:.3f} mm "
            f"(a bed junction may differ by up to {JUNCTION_TOLERANCE:.0%}): a missing slice or a mixed series; "
            "re-export the complete series"
        )
    # in-plane offsets: every slice must lie on the same line through the first one
    lateral = (positions[order] - positions[order][0]) - np.outer(d_sorted - d_sorted[0], normal)
    if np.abs(lateral).max() > max(0.01, 0.01 * step) + 1e-6:
        # tilted stacks (gantry tilt) are not a rectilinear grid
        raise GeometryError(
            f"slice positions are not along the slice normal (offset up to {np.abs(lateral).max():.3f} mm): "
            "a gantry-tilted or sheared series; resample it to a rectilinear grid first"
        )
    uneven = np.flatnonzero(deviation > tol)
    if not uneven.size:
        return _Stack(order, step, d_sorted, False, None)
    grid_step = float((d_sorted[-1] - d_sorted[0]) / (len(d_sorted) - 1))
    off = float(np.abs(d_sorted - (d_sorted[0] + grid_step * np.arange(len(d_sorted)))).max())
    resample = off > GRID_TOLERANCE_MM
    worst = int(uneven[np.argmax(deviation[uneven])])
    note = (
        f"uneven slice spacing at {uneven.size} junction(s), e.g. {steps[worst]:.3f} mm between "
        f"{labels[order[worst]]} and {labels[order[worst + 1]]} where the series steps {step:.3f} mm (bed junctions "
        f"of a multi-bed scan; no slice missing): the volume has a regular grid of {grid_step:.4f} mm from the first "
        f"slice to the last, on which the slices lie within {off:.3f} mm"
        + (f"; more than {GRID_TOLERANCE_MM:g} mm, so they are interpolated linearly along the normal onto it"
           if resample else f" (within {GRID_TOLERANCE_MM:g} mm: used as they are)")
    )
    warnings.warn(note, VoxelDoseWarning, stacklevel=4)
    return _Stack(order, grid_step, d_sorted, resample, note)


def _onto_grid(volume: NDArray[np.float32], stack: _Stack) -> NDArray[np.float32]:
    """The slices, at their positions along the normal, interpolated linearly onto the stack's
    regular grid (first slice to last), when they lie too far from it; else as they are."""
    if not stack.resample:
        return volume
    d = stack.positions - stack.positions[0]
    grid = stack.step * np.arange(len(d))
    upper = np.clip(np.searchsorted(d, grid, side="right"), 1, len(d) - 1)
    lower = upper - 1
    w = ((grid - d[lower]) / (d[upper] - d[lower])).astype(np.float32)[:, None, None]
    return (volume[lower] * (1 - w) + volume[upper] * w).astype(np.float32)


def _rescale_factors(ds: Any, modality: str, where: str) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept of a slice or frame, checked: PET and CT must state the
    slope (Type 1, PS3.3 C.8.9.4 and C.8.2.1); it must be a positive number; a PET's intercept
    must be zero (C.8.9.4.1.3). NM images have none (pixel values are counts)."""
    slope = _float(ds, "RescaleSlope")
    intercept = _float(ds, "RescaleIntercept")
    if slope is None:
        if modality in ("PT", "CT"):
            raise ValueError(f"{where}: RescaleSlope (0028,1053) is missing: a {modality} image must state it; "
                             "re-export the series")
        slope = 1.0
    if not slope > 0:
        raise ValueError(f"{where}: RescaleSlope (0028,1053) {slope:g} is not positive: the pixel values cannot be "
                         "read; re-export the series")
    intercept = 0.0 if intercept is None else intercept
    if modality == "PT" and intercept != 0.0:
        raise ValueError(f"{where}: RescaleIntercept (0028,1052) of a PET image must be 0 (PS3.3 C.8.9.4.1.3), got "
                         f"{intercept:g}; re-export the series")
    return slope, intercept


def _rescale(ds: Any, pixels: NDArray[Any], out: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
    """The stored values times RescaleSlope plus RescaleIntercept, in float64 (into ``out``, a
    float64 array of the pixels' shape, when given: one buffer for every slice of a series is
    memory already mapped, where a new array per slice may be new memory to map, which cost a
    quarter of a 300-slice series' load in one allocator state, measured)."""
    where = getattr(ds, "filename", "") or "a file"
    slope, intercept = _rescale_factors(ds, str(getattr(ds, "Modality", "")).upper(), where)
    values = np.multiply(pixels, slope, out=out, dtype=np.float64)
    values += intercept
    # min and max propagate NaN; an infinity is one of them
    lo, hi = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    if not (np.isfinite(lo) and np.isfinite(hi)) or max(-lo, hi) > float(np.finfo(np.float32).max):
        raise ValueError(f"{where}: the pixel values times RescaleSlope {slope:g} are not finite in float32; "
                         "re-export the series")
    return values


_NATIVE_LE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")  # Implicit / Explicit VR Little Endian


def _native_pixels(ds: Any) -> NDArray[Any] | None:
    """Uncompressed little-endian greyscale pixels straight from the bytes (pydicom's general
    decoder costs more than the read for small PET slices); None for anything else."""
    try:
        syntax = str(ds.file_meta.TransferSyntaxUID)
    except AttributeError:
        return None
    bits = _int(ds, "BitsAllocated", 0)
    stored = _int(ds, "BitsStored", bits)
    if (
        syntax not in _NATIVE_LE
        or _int(ds, "SamplesPerPixel", 1) != 1
        or bits not in (8, 16, 32)
        or not 1 <= stored <= bits
        or "PixelData" not in ds
    ):
        return None
    signed = bool(_int(ds, "PixelRepresentation", 0))
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    frames, rows, cols = _frames(ds, ""), _int(ds, "Rows"), _int(ds, "Columns")
    arr = np.frombuffer(ds.PixelData, dtype, count=frames * rows * cols)
    if stored < bits:
        # pydicom masks the bits above HighBit away: a BitsStored of 12 in a slice of 16-bit values
        # changed them silently. Values that fit in BitsStored read the same either way; others
        # mean a wrong BitsStored (or overlay bits), and are refused.
        lo, hi = (-(2 ** (stored - 1)), 2 ** (stored - 1) - 1) if signed else (0, 2**stored - 1)
        vmin, vmax = int(arr.min(initial=0)), int(arr.max(initial=0))
        if vmin < lo or vmax > hi:
            raise DicomError(
                f"{getattr(ds, 'filename', '') or 'a file'}: stored pixel values run from {vmin} to {vmax}, outside "
                f"the {lo} to {hi} that BitsStored (0028,0101) "
                f"{stored} allows: BitsStored is wrong, or the unused high bits hold other data; re-export the series"
            )
    return arr.reshape(frames, rows, cols) if frames > 1 else arr.reshape(rows, cols)


def _frames(ds: Any, where: str) -> int:
    """NumberOfFrames (1 when absent); zero or negative is an error."""
    n = _int(ds, "NumberOfFrames", 1, where)
    if n < 1:
        raise DicomError(f"{where or 'a file'}: NumberOfFrames (0028,0008) is {n}; it must be at least 1")
    return n


def _check_pixel_size(path: Path, ds: Any) -> None:
    """Check the Image Pixel module before decoding: positive matrix, at most the allocation
    limit, and (uncompressed syntaxes) exactly the bytes it describes, padded to an even length
    (PS3.5 8.1.1). More bytes than described are not padding but a wrong Rows, Columns or
    NumberOfFrames: read as described they shear or crop every slice."""
    from .._checks import check_allocation

    where = str(path)
    rows, cols, frames = _int(ds, "Rows", None, where), _int(ds, "Columns", None, where), _frames(ds, where)
    samples = _int(ds, "SamplesPerPixel", 1, where)
    if rows < 1 or cols < 1 or samples != 1:
        raise DicomError(f"{where}: Rows {rows}, Columns {cols}, SamplesPerPixel {samples}: a PET, NM or CT image has "
                         "one sample per pixel and at least one row and column")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError(f"{where}: PhotometricInterpretation (0028,0004) {photometric!r}: a PET, NM or CT image is "
                         "MONOCHROME2 (grey values); re-export the series")
    allocated = _int(ds, "BitsAllocated", None, where)
    stored = _int(ds, "BitsStored", allocated, where)
    high = _int(ds, "HighBit", stored - 1, where)
    if not 1 <= stored <= allocated or high != stored - 1:
        raise DicomError(f"{where}: BitsAllocated {allocated}, BitsStored {stored}, HighBit {high}: BitsStored must be at "
                         "most BitsAllocated and HighBit BitsStored - 1 (PS3.3 C.7.6.3); re-export the series")
    check_allocation(rows * cols * frames,
                     f"{where}: an image of {frames} frame(s) (NumberOfFrames) of {rows} x {cols} pixels (Rows x Columns)")
    if "PixelData" not in ds or not ds.PixelData:
        raise DicomError(f"{where}: no PixelData (7FE0,0010), or an empty one; re-export the series")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or getattr(syntax, "is_compressed", True):
        return  # encapsulated: the decoder checks the frames it finds
    bits = allocated
    if bits not in (1, 8, 16, 32, 64):
        raise DicomError(f"{where}: BitsAllocated (0028,0100) {bits} is not 1, 8, 16, 32 or 64")
    length = len(ds.PixelData)
    matches, expected = native_pixel_bytes_match(length, rows, cols, frames * samples, bits)
    if not matches:
        raise DicomError(
            f"{where}: the PixelData (7FE0,0010) holds {length} bytes but Rows {rows} x Columns {cols} x NumberOfFrames "
            f"{frames} x BitsAllocated {bits} describe {expected}: {'the file is truncated' if length < expected else 'a wrong Rows, Columns, NumberOfFrames or BitsAllocated'}; "
            "re-export the series"
        )


def _pixels(path: Path, ds: Any) -> tuple[Any, NDArray[Any]]:
    _check_pixel_size(path, ds)
    frames, rows, cols = _frames(ds, str(path)), _int(ds, "Rows"), _int(ds, "Columns")
    try:
        native = _native_pixels(ds)
        pixels = native if native is not None else ds.pixel_array
    except VoxelDoseError:
        raise
    except Exception as exc:
        ts = ""
        try:
            ts = f" (transfer syntax {ds.file_meta.TransferSyntaxUID.name})"  # type: ignore[possibly-undefined]
        except Exception:  # noqa: BLE001 - only for the message
            pass
        raise DicomError(
            f"{path}: cannot decode the pixel data{ts}: {type(exc).__name__}: {exc}. The file may be "
            "truncated, or compressed in a syntax no installed plugin decodes (reinstall voxeldose "
            "to get pylibjpeg, pylibjpeg-openjpeg, pylibjpeg-libjpeg and pyjpegls)"
        ) from exc
    if pixels.shape != ((frames, rows, cols) if frames > 1 else (rows, cols)):
        raise DicomError(f"{path}: pixel data decoded to shape {pixels.shape}, but the header describes {frames} "
                         f"frame(s) of {rows} x {cols}; re-export the series")
    return ds, pixels


#: Attributes of the series, not of a slice (PS3.3 C.8.9.1 PET Series and C.8.9.2 PET Isotope
#: modules; General Series): read from one file, so every file must agree. A slice with Units CNTS
#: in a BQML series, or another SeriesTime (the decay-correction reference of START), is a mixed
#: or damaged series, not a detail.
SERIES_WIDE = ("Units", "DecayCorrection", "CorrectedImage", "SeriesDate", "SeriesTime")
SERIES_WIDE_ISOTOPE = ("RadiopharmaceuticalStartDateTime", "RadiopharmaceuticalStartTime", "RadionuclideTotalDose",
                       "RadionuclideHalfLife", "RadionuclidePositronFraction")


def _series_values(ds: Any) -> dict[str, str]:
    def text(item: Any, keyword: str) -> str:
        value = getattr(item, keyword, None)
        if value is None:
            return "(absent)"
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            return "\\".join(str(v).strip() for v in value)
        return str(value).strip()

    values = {k: text(ds, k) for k in SERIES_WIDE}
    info = getattr(ds, "RadiopharmaceuticalInformationSequence", None)
    item = info[0] if info else None
    values.update({f"RadiopharmaceuticalInformationSequence {k}": "(absent)" if item is None else text(item, k)
                   for k in SERIES_WIDE_ISOTOPE})
    return values


def _check_series_wide(items: list[tuple[Path, Any]]) -> None:
    """Every file of a one-file-per-slice series holds the same :data:`SERIES_WIDE` values."""
    first_path, first = items[0]
    expected = _series_values(first)
    for path, ds in items[1:]:
        for keyword, value in _series_values(ds).items():
            if value != expected[keyword]:
                raise DicomError(
                    f"{path}: {keyword} is {value!r} but {expected[keyword]!r} in {first_path.name} of the same series: "
                    "a value of the series must be the same in every file (slices of different series or a damaged "
                    "export?); re-export the series"
                )


def _classic_series(items: list[tuple[Path, Any]]) -> Image:
    """One file per slice (PET Image, CT Image, single-frame NM)."""
    first_path, first = items[0]
    where0 = str(first_path)
    _check_series_wide(items)
    iop0 = _floats(first, "ImageOrientationPatient", 6, where0)
    row, col, normal = _orientation(iop0, where0)
    rows, cols = _int(first, "Rows", None, where0), _int(first, "Columns", None, where0)
    spacing_rc = _floats(first, "PixelSpacing", 2, where0)
    positions = []
    frame_of_reference = str(getattr(first, "FrameOfReferenceUID", ""))
    modality = str(getattr(first, "Modality", ""))
    for path, ds in items:
        where = str(path)
        if str(getattr(ds, "Modality", "")) != modality:
            raise DicomError(
                f"{where}: Modality {getattr(ds, 'Modality', '(none)')!r} differs from {where0}'s {modality!r} in the "
                "same series (SeriesInstanceUID): a series of mixed modalities is not one image; re-export the series"
            )
        if str(getattr(ds, "FrameOfReferenceUID", "")) != frame_of_reference:
            raise GeometryError(
                f"{where}: FrameOfReferenceUID {getattr(ds, 'FrameOfReferenceUID', '(none)')} differs from "
                f"{where0}'s {frame_of_reference or '(none)'}: slices from different frames of reference "
                "cannot form one volume; re-export the series"
            )
        iop = _floats(ds, "ImageOrientationPatient", 6, where)
        if np.abs(iop - iop0).max() > ORIENTATION_TOLERANCE:
            raise GeometryError(f"{where}: ImageOrientationPatient {iop.tolist()} differs from {where0}'s {iop0.tolist()}")
        if (_int(ds, "Rows", None, where), _int(ds, "Columns", None, where)) != (rows, cols):
            raise GeometryError(f"{where}: matrix (Rows x Columns) {ds.Rows}x{ds.Columns} differs from {where0}'s "
                                f"{rows}x{cols}")
        if np.abs(_floats(ds, "PixelSpacing", 2, where) - spacing_rc).max() > 1e-4:
            raise GeometryError(f"{where}: PixelSpacing differs from {where0}'s {spacing_rc.tolist()}")
        positions.append(_floats(ds, "ImagePositionPatient", 3, where))
    pos = np.array(positions)
    stack = _stack_geometry(pos, normal, [str(p) for p, _ in items])
    order, step = stack.order, stack.step
    from .._checks import check_allocation

    check_allocation(len(items) * rows * cols,
                     f"{where0}: a series of {len(items)} slices of {rows} x {cols} pixels (Rows x Columns)")
    volume = np.empty((len(items), rows, cols), np.float32)
    values = np.empty((rows, cols), np.float64)
    for k, idx in enumerate(order):
        path = items[idx][0]
        ds, pixels = _pixels(path, items[idx][1])
        if pixels.shape != (rows, cols):
            raise DicomError(f"{path}: pixel data of shape {pixels.shape}, expected ({rows}, {cols}) single-frame")
        volume[k] = _rescale(ds, pixels, out=values)
    volume = _onto_grid(volume, stack)
    origin = pos[order[0]]
    direction = np.column_stack([row, col, normal])
    datasets = [d for _, d in items]
    meta = _meta(first, [items[i][0] for i in order], _acquisition_datetime(datasets))
    sorted_ds = [items[i][1] for i in order]
    meta = _with_slice_timing(meta, [_acquisition_datetime([d]) for d in sorted_ds],
                              [_float(d, "ActualFrameDuration") for d in sorted_ds],
                              [_float(d, "DecayFactor") for d in sorted_ds])
    if stack.note:
        meta = replace(meta, geometry_notes=(stack.note,))
    return Image(volume, (float(spacing_rc[1]), float(spacing_rc[0]), step), tuple(origin),
                 tuple(direction.reshape(-1)), _units(first), meta)


def _nm_multiframe(path: Path, header: Any) -> Image:
    """A reconstructed tomographic NM multi-frame image (SPECT)."""
    where = str(path)
    image_type = [str(t).upper() for t in (getattr(header, "ImageType", None) or [])]
    if not any("TOMO" in t for t in image_type) or not any("RECON" in t for t in image_type):
        kind = "\\".join(image_type) or "(none)"
        raise DicomError(
            f"{where}: NM image of type {kind} is not a reconstructed "
            "tomographic image (ImageType RECON TOMO); export the reconstructed SPECT, not projections"
        )
    detectors = getattr(header, "DetectorInformationSequence", None)
    if not detectors:
        raise DicomError(f"{where}: no DetectorInformationSequence (0054,0022): the SPECT's position is unknown")
    det = detectors[0]
    iop = _floats(det, "ImageOrientationPatient", 6, f"{where} DetectorInformationSequence")
    ipp = _floats(det, "ImagePositionPatient", 3, f"{where} DetectorInformationSequence")
    row, col, normal = _orientation(iop, where)
    spacing_rc = _floats(header, "PixelSpacing", 2, where)
    step = _float(header, "SpacingBetweenSlices")
    source = "SpacingBetweenSlices"
    if step is None or step == 0:
        step = _float(header, "SliceThickness")
        source = "SliceThickness"
    if step is None or step == 0:
        raise DicomError(f"{where}: neither SpacingBetweenSlices nor SliceThickness gives the slice step")
    ds, pixels = _pixels(path, header)
    n_frames = _frames(ds, where)
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.shape[0] != n_frames or n_frames < 2:
        raise DicomError(f"{where}: {pixels.shape[0]} frame(s) decoded, NumberOfFrames says {n_frames}")
    # SpacingBetweenSlices is signed for NM in some exports: a negative step runs against the normal
    if step < 0:
        normal = -normal
        step = -step
    volume = _rescale(ds, pixels).astype(np.float32)
    direction = np.column_stack([row, col, normal])
    meta = _meta(ds, [path], _acquisition_datetime([ds]))
    logger.debug("NM slice step %.3f mm from %s", step, source)
    return Image(volume, (float(spacing_rc[1]), float(spacing_rc[0]), float(step)), tuple(ipp),
                 tuple(direction.reshape(-1)), _units(ds), meta)


def _functional(ds: Any, frame: int, sequence: str, item: str) -> Any | None:
    """An item of a functional group, per-frame first, then shared."""
    per = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if per is not None and frame < len(per):
        group = per[frame]
        if sequence in group and len(group[sequence].value):
            return group[sequence].value[0]
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    if shared:
        group = shared[0]
        if sequence in group and len(group[sequence].value):
            return group[sequence].value[0]
    return None


def _enhanced(path: Path, header: Any) -> Image:
    """Enhanced (multi-frame) PET or CT: geometry and rescale from the functional groups."""
    where = str(path)
    ds, pixels = _pixels(path, header)
    n = _frames(ds, where)
    if pixels.ndim == 2:
        pixels = pixels[None]
    positions, slopes = [], []
    iop0 = None
    spacing_rc = None
    for f in range(n):
        plane = _functional(ds, f, "PlanePositionSequence", "ImagePositionPatient")
        orient = _functional(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient")
        measures = _functional(ds, f, "PixelMeasuresSequence", "PixelSpacing")
        if plane is None or orient is None or measures is None:
            raise DicomError(f"{where}: frame {f + 1} lacks PlanePosition, PlaneOrientation or PixelMeasures")
        iop = _floats(orient, "ImageOrientationPatient", 6, f"{where} frame {f + 1}")
        if iop0 is None:
            iop0 = iop
            spacing_rc = _floats(measures, "PixelSpacing", 2, f"{where} frame {f + 1}")
        elif np.abs(iop - iop0).max() > ORIENTATION_TOLERANCE:
            raise GeometryError(f"{where}: frame {f + 1} has another orientation; a multi-orientation object is not a volume")
        positions.append(_floats(plane, "ImagePositionPatient", 3, f"{where} frame {f + 1}"))
        transform = _functional(ds, f, "PixelValueTransformationSequence", "RescaleSlope")
        if transform is None:
            raise ValueError(f"{where}: frame {f + 1} has no PixelValueTransformationSequence (RescaleSlope); "
                             "re-export the series")
        slopes.append(_rescale_factors(transform, str(getattr(ds, "Modality", "")).upper(), f"{where} frame {f + 1}"))
    assert iop0 is not None and spacing_rc is not None
    row, col, normal = _orientation(iop0, where)
    pos = np.array(positions)
    stack = _stack_geometry(pos, normal, [f"{where} frame {i + 1}" for i in range(n)])
    order, step = stack.order, stack.step
    volume = np.empty(pixels.shape, np.float32)
    for k, idx in enumerate(order):
        s, b = slopes[idx]
        volume[k] = pixels[idx].astype(np.float64) * s + b
    volume = _onto_grid(volume, stack)
    direction = np.column_stack([row, col, normal])
    meta = _meta(ds, [path], _datetime(getattr(ds, "AcquisitionDateTime", None), None, _tz(ds),
                                       what="AcquisitionDateTime (0008,002A)", ds=ds))
    units = _units(ds)
    if str(getattr(ds, "Modality", "")).upper() == "PT":
        units, meta = _enhanced_pet_units_and_decay(ds, units, meta)
        frames = [(_functional(ds, int(i), "FrameContentSequence", "FrameAcquisitionDateTime"),
                   _functional(ds, int(i), "PETFrameCorrectionFactorsSequence", "DecayFactor")) for i in order]
        meta = _with_slice_timing(
            meta,
            [None if c is None else _datetime(getattr(c, "FrameAcquisitionDateTime", None), None, _tz(ds),
                                              what="FrameAcquisitionDateTime (0018,9074)", ds=ds)
             for c, _ in frames],
            [None if c is None else _float(c, "FrameAcquisitionDuration") for c, _ in frames],
            [None if f is None else _float(f, "DecayFactor") for _, f in frames],
        )
    if stack.note:
        meta = replace(meta, geometry_notes=(stack.note,))
    return Image(volume, (float(spacing_rc[1]), float(spacing_rc[0]), step), tuple(pos[order[0]]),
                 tuple(direction.reshape(-1)), units, meta)


def _enhanced_pet_units_and_decay(ds: Any, units: str, meta: ImageMeta) -> tuple[str, ImageMeta]:
    """Enhanced PET keeps units in Real World Value Mapping and decay in frame correction items."""
    rwv = _functional(ds, 0, "RealWorldValueMappingSequence", "MeasurementUnitsCodeSequence")
    if rwv is not None and getattr(rwv, "MeasurementUnitsCodeSequence", None):
        code = str(rwv.MeasurementUnitsCodeSequence[0].CodeValue)
        units = {"Bq/ml": "BQML", "Bq/mL": "BQML", "{counts}": "CNTS", "{counts}/s": "CPS"}.get(code, code.upper())
    corr = _functional(ds, 0, "PETFrameCorrectionFactorsSequence", "DecayFactor")
    changes: dict[str, Any] = {}
    if corr is not None and _float(corr, "DecayFactor") is not None:
        changes["decay_factor"] = _float(corr, "DecayFactor")
    decayed = str(getattr(ds, "DecayCorrected", "") or "").upper()
    reference = _datetime(getattr(ds, "DecayCorrectionDateTime", None), None, _tz(ds),
                          what="DecayCorrectionDateTime (0018,9701)", ds=ds)
    if decayed == "NO":
        changes["decay_correction"] = "NONE"
    elif decayed == "YES":
        start = meta.radiopharmaceutical_start_datetime
        if reference is not None and start is not None and abs(
            (reference - start).total_seconds() if (reference.tzinfo is None) == (start.tzinfo is None)
            else (reference.replace(tzinfo=None) - start.replace(tzinfo=None)).total_seconds()
        ) < 1.0:
            changes["decay_correction"] = "ADMIN"
        else:
            # corrected to a stated time: expressed as START with that time as the series reference
            changes["decay_correction"] = "START"
            if reference is not None:
                changes["series_datetime"] = reference
    return units, replace(meta, **changes) if changes else meta


# --------------------------------------------------------------------------- public


def load_image(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    series_uid: str | None = None,
) -> Image:
    """Load one PET, NM (reconstructed SPECT) or CT series as an :class:`Image`.

    Parameters
    ----------
    path : folder, file, or list of files
        A folder is searched recursively, into linked folders too (a sub-folder that cannot be
        listed, or a broken link, is an error: it may hold slices); files that are not DICOM,
        and DICOM objects that are not images (RTSTRUCT, SEG, RTDOSE, reports), are skipped. A NIfTI, NRRD or MetaImage
        file is read as it is (:func:`voxeldose.io.image_file.load_image_file`): its units and
        times come from the case file.
    series_uid : str, optional
        SeriesInstanceUID to load when the files hold several image series.

    Returns
    -------
    Image
        float32 [z, y, x] in the series' units ("BQML", "CNTS", "HU", ...), with spacing,
        origin and direction from the headers and :class:`~voxeldose.image.ImageMeta`.

    Raises
    ------
    DicomError
        No image series, several and none chosen (the message lists them), an unreadable file,
        undecodable pixel data, missing geometry attributes.
    GeometryError
        A missing slice, uneven spacing, mixed orientations or matrix sizes.
    """
    from .image_file import is_image_file, load_image_file

    if isinstance(path, (str, os.PathLike)) and Path(path).is_file() and is_image_file(path):
        # a research reconstruction or a 3D Slicer export: units and times from the case file
        if series_uid is not None:
            raise DicomError(f"{path}: series_uid applies to DICOM series, not to an image file")
        return load_image_file(path)
    files = _files_of(path)
    series = _scan(files)
    where = str(path) if isinstance(path, (str, os.PathLike)) else f"{len(files)} file(s)"
    if not series:
        raise DicomError(
            f"{where}: no PET, NM or CT image series found among {len(files)} file(s); "
            "point to the folder with the exported scan"
        )
    if series_uid is not None:
        if series_uid not in series:
            listing = "\n  ".join(_info(u, i).line() for u, i in series.items())
            raise DicomError(f"{where}: no series with SeriesInstanceUID {series_uid}; found:\n  {listing}")
        items = series[series_uid]
    elif len(series) > 1:
        listing = "\n  ".join(_info(u, i).line() for u, i in series.items())
        raise DicomError(
            f"{where} holds {len(series)} image series (by SeriesInstanceUID); choose one with series_uid "
            f"(--series-uid on the command line):\n  {listing}"
        )
    else:
        items = next(iter(series.values()))
    try:
        return _assemble(items, where)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError) as exc:
        if isinstance(exc, VoxelDoseError):
            raise
        advice = "" if str(exc).endswith("re-export the series") else "; re-export the series"  # ours say it
        raise DicomError(
            f"{where}: malformed DICOM header in series {items[0][0].parent} (first file {items[0][0].name}): "
            f"{type(exc).__name__}: {exc}{advice}"
        ) from exc


def _assemble(items: list[tuple[Path, Any]], where: str) -> Image:
    try:
        return _assemble_series(items, where)
    except GeometryError as exc:
        text = str(exc)
        if where in text or str(items[0][0]) in text:
            raise
        # the Image's own checks (voxel size, orientation) name no file: say which series and tags
        label = where if str(items[0][0]).startswith(where) else f"{where} (first file {items[0][0]})"
        raise GeometryError(f"{label}: {text} (the grid from PixelSpacing (0028,0030), SliceThickness (0018,0050), "
                            "ImagePositionPatient (0020,0032) and ImageOrientationPatient (0020,0037)); check the "
                            "export") from None


def _assemble_series(items: list[tuple[Path, Any]], where: str) -> Image:
    first_path, first = items[0]
    sop = str(getattr(first, "SOPClassUID", ""))
    n_frames = _frames(first, str(first_path))
    if sop in (ENHANCED_PET_SOP, LEGACY_ENHANCED_PET_SOP, ENHANCED_CT_SOP) or (
        n_frames > 1 and "PerFrameFunctionalGroupsSequence" in first
    ):
        if len(items) > 1:
            raise DicomError(f"{where}: the series has {len(items)} multi-frame files; expected one")
        return _enhanced(first_path, first)
    if str(getattr(first, "Modality", "")).upper() == "NM" and n_frames > 1:
        if len(items) > 1:
            raise DicomError(f"{where}: the NM series has {len(items)} multi-frame files; expected one reconstructed volume")
        return _nm_multiframe(first_path, first)
    multi = [str(p) for p, d in items if _frames(d, str(p)) > 1]
    if multi:
        raise DicomError(f"{multi[0]}: a multi-frame file (NumberOfFrames > 1) inside a single-frame series; export one "
                         "series per folder")
    return _classic_series(items)
