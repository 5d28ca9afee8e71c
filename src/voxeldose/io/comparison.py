"""Predicted against delivered: reading the two result folders and the transform, writing the comparison.

- :func:`load_dose_result`: the dose map (Gy) and ``metrics.json`` of an output folder of
  ``voxeldose run`` or ``voxeldose plan`` (``dose.nii.gz``, ``metrics.json`` with ``case`` and
  ``provenance``), checked.
- :func:`load_transform`: a rigid 4 x 4 matrix from a text or JSON file.
- :func:`write_comparison`: every output of a :class:`~voxeldose.compare.Comparison` into a
  folder, atomically (:data:`COMPARISON_FILES`), as :func:`~voxeldose.io.write_result` does.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..compare import Comparison, check_rigid
from ..errors import GeometryError, InputError, OutputError
from ..image import Image
from ._structured import parse
from .image_file import load_image_file
from .results import _jsonable, _new_file, _publish, _tag, check_out, output_error, reserve_out, write_nifti

__all__ = ["load_dose_result", "load_transform", "write_comparison", "COMPARISON_FILES", "DVH_OVERLAY_COLUMNS",
           "ISODOSE_COLUMNS"]

#: What :func:`write_comparison` writes (``gamma.nii.gz`` only when gamma was computed).
COMPARISON_FILES = ("comparison.json", "dose_difference.nii.gz", "predicted_on_common_grid.nii.gz",
                    "dvh_overlay.csv", "isodose_overlap.csv", "report.html", "gamma.nii.gz")

#: Columns of ``dvh_overlay.csv``.
DVH_OVERLAY_COLUMNS = ("voi", "dose_gy", "predicted_volume_pct", "delivered_volume_pct")

#: Columns of ``isodose_overlap.csv``.
ISODOSE_COLUMNS = ("level_pct", "predicted_threshold_gy", "delivered_threshold_gy", "predicted_ml", "delivered_ml",
                   "overlap_ml", "dice")


# --------------------------------------------------------------------------- reading


def _dicom_dose_header(path: Path) -> tuple[str | None, str | None]:
    """DoseUnits and FrameOfReferenceUID of an RT Dose file (header only)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["DoseUnits", "FrameOfReferenceUID"])
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same error here
        raise InputError(f"{path}: cannot read the RT Dose header ({exc}); is the result folder complete?") from None
    units = ds.get("DoseUnits")
    frame = ds.get("FrameOfReferenceUID")
    return (str(units) if units else None), (str(frame) if frame else None)


def load_dose_result(folder: "str | os.PathLike[str]", *, what: str = "result folder") -> tuple[Image, dict[str, Any]]:
    """The dose map and the metrics of a ``voxeldose run`` or ``voxeldose plan`` output folder.

    The folder must hold ``dose.nii.gz`` (the dose in Gy, as those commands write it) and
    ``metrics.json`` with ``case_id``, ``case`` and ``provenance``. The dose must be in Gy: the
    units recorded in ``provenance.dose.units`` and, when the folder has its ``rtdose.dcm``, that
    file's DoseUnits, where present, must say GY. The RT Dose's FrameOfReferenceUID becomes the
    image's ``meta.frame_of_reference_uid`` (so that :func:`voxeldose.load_vois` can check VOI
    files against it). The grid in ``provenance.grid`` must be the map's.

    Parameters
    ----------
    folder : path
    what : str
        What the folder is, for messages (e.g. "PREDICTED").

    Returns
    -------
    dose : Image
        Units "GY", the NIfTI's geometry.
    metrics : dict
        ``metrics.json`` as read.

    Raises
    ------
    InputError
        The folder does not exist, is not such an output folder (the message names what is
        missing), its metrics.json is not valid, or the dose is not in Gy.
    """
    p = Path(folder)
    if not p.is_dir():
        raise InputError(f"{what} {p}: {'not a folder' if p.exists() else 'no such folder'}; give the output folder "
                         "of 'voxeldose run' or 'voxeldose plan' (its --out)")
    missing = [name for name in ("dose.nii.gz", "metrics.json") if not (p / name).is_file()]
    if missing:
        raise InputError(f"{what} {p} is not an output folder of 'voxeldose run' or 'voxeldose plan': it has no "
                         f"{' and no '.join(missing)}; give the folder those commands wrote (their --out)")
    try:
        text = (p / "metrics.json").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {p / 'metrics.json'}: cannot read it ({exc})") from None
    metrics = parse(text, "json", str(p / "metrics.json"))
    if not isinstance(metrics, dict) or not all(k in metrics for k in ("case_id", "case", "provenance")):
        raise InputError(f"{what} {p / 'metrics.json'} is not the metrics of a voxeldose result (it needs the keys "
                         "case_id, case and provenance); give the folder 'voxeldose run' or 'voxeldose plan' wrote")
    provenance = metrics["provenance"] if isinstance(metrics["provenance"], dict) else {}
    dose_record = provenance.get("dose") if isinstance(provenance.get("dose"), dict) else {}
    recorded = dose_record.get("units") if dose_record else None
    if recorded is not None and str(recorded).upper() != "GY":
        raise InputError(f"{what} {p}: its metrics.json records dose units {recorded!r}; the comparison needs "
                         "absorbed dose in Gy")
    frame = None
    if (p / "rtdose.dcm").is_file():
        units, frame = _dicom_dose_header(p / "rtdose.dcm")
        if units is not None and units.upper() != "GY":
            raise InputError(f"{what} {p / 'rtdose.dcm'}: DoseUnits {units!r}; the comparison needs absorbed dose in "
                             "Gy (DoseUnits GY)")
    image = load_image_file(p / "dose.nii.gz")
    grid = provenance.get("grid") if isinstance(provenance.get("grid"), dict) else {}
    shape = grid.get("shape_zyx") if grid else None
    if isinstance(shape, list) and tuple(shape) != image.shape:
        raise InputError(f"{what} {p}: dose.nii.gz has shape {image.shape} (z, y, x) but metrics.json records "
                         f"{tuple(shape)}: the files are not of one result; run the case again")
    import dataclasses

    meta = dataclasses.replace(image.meta, frame_of_reference_uid=frame, modality="RTDOSE")
    return Image(image.array, image.spacing_mm, image.origin_mm, image.direction, "GY", meta), metrics


def load_transform(path: "str | os.PathLike[str]") -> np.ndarray:
    """A rigid 4 x 4 transform (planning frame to post-treatment frame, mm, DICOM LPS) from a file.

    Two formats: a text file of 4 lines of 4 numbers (separated by spaces, tabs or commas; lines
    starting with ``#`` skipped), or a JSON file whose ``"matrix"`` is 4 lists of 4 numbers. The
    matrix takes a point's coordinates in the planning (MAA) scan's patient frame to its
    coordinates in the post-treatment scan's frame (:mod:`voxeldose.compare` says more, and how
    to convert a RAS matrix), and must be rigid (:func:`voxeldose.compare.check_rigid`).

    Raises
    ------
    InputError
        The file cannot be read or is in neither format.
    GeometryError
        The matrix is not 4 x 4, or not rigid (a scaling, shear or mirror).

    Example
    -------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "t.json"
    >>> _ = f.write_text('{"matrix": [[1, 0, 0, 5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}')
    >>> load_transform(f)[:3, 3].tolist()
    [5.0, 0.0, 0.0]
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the transform file {p}: {exc}") from None
    where = f"the transform file {p}"
    if text.lstrip().startswith("{"):
        data = parse(text, "json", str(p))
        if not isinstance(data, dict) or "matrix" not in data:
            raise InputError(f"{where}: a JSON transform needs a \"matrix\" key holding 4 rows of 4 numbers")
        rows = data["matrix"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for r in rows for v in r):
            raise GeometryError(f"{where}: \"matrix\" must be 4 lists of 4 numbers, got {rows!r:.200}")
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split("#", 1)[0].replace(",", " ").split()
            if not fields:
                continue
            try:
                rows.append([float(f) for f in fields])
            except ValueError:
                raise InputError(f"{where}, line {number}: {line.strip()!r} is not a row of numbers; the file must hold "
                                 "4 lines of 4 numbers (or be JSON with a \"matrix\" key)") from None
    if len(rows) != 4 or any(len(r) != 4 for r in rows):
        raise GeometryError(f"{where}: expected 4 rows of 4 numbers, got {len(rows)} row(s) of "
                            f"{sorted({len(r) for r in rows})} number(s)")
    return check_rigid(rows, where=where)


# --------------------------------------------------------------------------- writing


def _csv(rows: list[list[Any]], header: tuple[str, ...]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else (f"{v:.9g}" if isinstance(v, float) else v) for v in row])
    return buf.getvalue().encode("utf-8")


def _write_bytes(path: Path, data: bytes) -> None:
    with _new_file(path, False, "write_comparison") as fh:
        fh.write(data)


def _write_all(comparison: Comparison, staging: Path) -> None:
    from ..compare_report import render_comparison_report

    write_nifti(staging / "dose_difference.nii.gz", comparison.difference)
    write_nifti(staging / "predicted_on_common_grid.nii.gz", comparison.predicted)
    if comparison.gamma is not None:
        write_nifti(staging / "gamma.nii.gz", comparison.gamma.gamma)
    overlay = comparison.dvh_overlay
    rows: list[list[Any]] = []
    if overlay is not None:
        for name in overlay.predicted:
            for g, fp, fd in zip(overlay.dose_gy, overlay.predicted[name], overlay.delivered[name]):
                rows.append([name, float(g), 100.0 * float(fp), 100.0 * float(fd)])
    _write_bytes(staging / "dvh_overlay.csv", _csv(rows, DVH_OVERLAY_COLUMNS))
    iso = [[float(o.level_pct), o.predicted_threshold_gy, o.delivered_threshold_gy, o.predicted_ml, o.delivered_ml,
            o.overlap_ml, o.dice] for o in comparison.isodose]
    _write_bytes(staging / "isodose_overlap.csv", _csv(iso, ISODOSE_COLUMNS))
    _write_bytes(staging / "report.html", render_comparison_report(comparison).encode("utf-8"))
    text = json.dumps(_jsonable(comparison.to_dict(), ""), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    _write_bytes(staging / "comparison.json", text.encode("utf-8"))


def write_comparison(comparison: Comparison, out: "str | os.PathLike[str]", *, force: bool = False) -> Path:
    """Write every output of a comparison into the folder ``out`` (stable names).

    ``comparison.json`` (:meth:`Comparison.to_dict`: per-VOI metrics of both maps and their
    differences, isodose overlaps, gamma, field of view, caveats, conventions, provenance);
    ``dose_difference.nii.gz`` (delivered - predicted, Gy) and ``predicted_on_common_grid.nii.gz``
    (Gy), both on the delivered dose's grid; ``gamma.nii.gz`` when gamma was computed (NaN where
    not evaluated); ``dvh_overlay.csv`` (:data:`DVH_OVERLAY_COLUMNS`: per VOI and dose, the percent
    of the VOI receiving at least that dose in each map, one dose axis for both);
    ``isodose_overlap.csv`` (:data:`ISODOSE_COLUMNS`); ``report.html``, one self-contained page.
    Written to a temporary folder beside ``out`` and moved into place when complete; a previous
    comparison in ``out`` is replaced only with ``force`` (and never a folder holding other files).

    Returns
    -------
    Path
        ``out``, as an absolute path.

    Raises
    ------
    InputError
        ``out`` is a file, holds results and not ``force``, holds files voxeldose did not write,
        or is the working folder (or one above it); nothing is written then.
    OutputError
        Another run is writing ``out``, or the disk is full or read-only; nothing is published.
    """
    if not isinstance(comparison, Comparison):
        raise InputError(f"write_comparison takes a Comparison (voxeldose.compare_doses), got "
                         f"{type(comparison).__name__}")
    with reserve_out(out, force, known=COMPARISON_FILES) as out_dir:
        staging = out_dir.parent / f".{out_dir.name}.partial-{_tag()}-{secrets.token_hex(4)}"
        try:
            staging.mkdir()
            _write_all(comparison, staging)
            check_out(out_dir, force, known=COMPARISON_FILES)
            _publish(staging, out_dir)
        except OutputError:
            raise
        except OSError as exc:
            need = int(comparison.delivered.array.size) * 4 * 3 + 8 * 2**20
            raise output_error(exc, out_dir.parent, "write the comparison", need) from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return out_dir
