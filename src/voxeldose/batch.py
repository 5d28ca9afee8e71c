"""Many cases in one run, on Dask: isolated failures, resumable, one cohort table at the end.

:func:`run_batch` takes a folder of case folders or a manifest (CSV or TOML), runs each case with
:func:`voxeldose.pipeline.run_case` on a Dask cluster (a local cluster of worker processes by
default, or an existing scheduler), and writes:

- ``OUT/<case_id>/``: the case's outputs exactly as ``voxeldose run`` writes them, plus
  ``log.txt`` (the case's log; for a failed case, the folder holds only this log);
- ``OUT/cohort.csv`` (and ``cohort.parquet`` when pyarrow is installed): one row per case and VOI
  with the metrics, the case values and the status;
- ``OUT/failures.csv``: case id, error kind and message of each failed case.

Case folders
------------
Each sub-folder of INPUT is one case, named by its folder (or by ``case_id`` in its
``case.toml``). It is searched recursively, into linked folders too (a cohort that links each
case's series in instead of copying them); a sub-folder that cannot be listed, or a broken link,
fails the case, naming it. ``case.toml`` (or ``case.json``) is the case file: the one at the
folder's top, else the one in its sub-folders; two at the top, or none there and two below,
fail the case, naming them (which one holds the case's activity and times is not guessed). The
scan, the VOI files and the CT are chosen by these rules, each stated in the case's caveats when
it chose:

- **The scan** is the folder's one emission series, PET (PT) or SPECT (NM). With several, the
  case's ``scan_modality`` (the batch option ``--scan-modality``, else the case file's key)
  keeps those of that modality; if no modality is given and the folder holds exactly one PET,
  the PET is the scan (Y-90 PET is quantitative in Bq/mL, where a bremsstrahlung SPECT is only
  scaled to the administered activity), with a caveat naming the series left out. Any other
  case of several (two PETs) is a failed case whose message lists the series (choose in a
  manifest with ``series_uid``).
- **The VOIs** are the folder's RTSTRUCT and SEG files. A folder holding both kinds (a phantom
  export, or a SEG converted from the RTSTRUCT) would define each VOI twice: the VOIs come from
  the kind ``voi_format`` names (``--voi-format``), by default the RTSTRUCT, with a caveat
  naming the files left out. A role in the case file that names a VOI only the other kind
  defines is an error when the case runs, not a silently missing VOI.
- **The CT** is the folder's one CT series: the report draws the dose over it (several: none,
  with a caveat).

So ``voxeldose phantom liver --out COHORT/liver`` is a case folder as it is (its PET, its
RTSTRUCT), and ``--scan-modality NM --voi-format SEG`` computes the same cases from their SPECT
and SEG.

What concerns the whole batch is refused before any worker starts: an input that does not exist
or holds no case folders, two case folders with one case id (from their case files), a bad
option. Each case folder's DICOM headers (about 0.14 CPU s for 300 files) are then read by the
worker that runs the case, as the first part of it: the case's loading takes them from that
reading instead of parsing them again, the batch's process reads no DICOM, and no case waits for
the others to be found. A damaged or unreadable folder is that case's failure, not the batch's.

Manifest
--------
CSV with columns ``case_id, scan`` and optionally ``vois`` (paths separated by ``;``),
``case_file``, ``series_uid``, ``ct`` (the CT to draw the dose over) and any case-file key
(``administered_gbq``, ``lung_shunt_fraction``, ``administration_time``, ...); or TOML with one ``[[cases]]`` table per case holding the same
keys (``vois`` as a list). Relative paths are relative to the manifest.

Resuming
--------
A case is skipped when ``OUT/<case_id>/metrics.json`` exists and records the same input hash: a
SHA-256 over the contents of every input file (scan, VOIs, case file) and the run's options.
Anything else (missing, failed, changed inputs or options) is run again. Each case's folder is
written by ``run_case`` into a temporary folder and moved into place when complete, and the
cohort tables are written to temporary files and renamed, so an interrupted run leaves neither a
half-written case folder nor a corrupt table.

Memory
------
Each worker process holds one case at a time (one thread per worker). The peak per worker is
that of one ``voxeldose run``: about 12 volumes of float32 of the scan's grid (input, activity,
dose, the FFT workspace of 2-3 volumes, the CT's densities; the VOI masks hold only their
bounding boxes) plus the interpreter, numba and scipy (~300 MB); benchmarks/bench_batch.py prints
the measured figure.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import logging
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .case import CASE_FILE_KEYS
from .errors import InputError, VoxelDoseError

__all__ = ["CaseSpec", "BatchResult", "discover_cases", "run_batch", "COHORT_COLUMNS"]

logger = logging.getLogger(__name__)

_CASE_FILES = ("case.toml", "case.json")
#: Case-file keys a manifest may carry (they override the case file, like command-line options).
_MANIFEST_VALUES = {key: name for key, name in CASE_FILE_KEYS.items() if key not in ("case_id", "vois")}

#: Leading columns of cohort.csv; the metric columns follow in the order the engine reports them.
COHORT_COLUMNS = (
    "case_id", "status", "voi", "role", "administered_gbq", "lung_shunt_fraction", "residual_fraction",
    "administration_time", "method", "activity_vs_administered", "n_warnings", "references_flagged",
    "error_kind", "error",
)


@dataclass(frozen=True)
class CaseSpec:
    """One case of a batch: where its inputs are, or why it cannot run."""

    case_id: str
    scan: str | None = None
    vois: tuple[str, ...] = ()
    case_file: str | None = None
    series_uid: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_kind: str | None = None
    #: What the case-folder rules chose (which series, which VOI files), for the case's caveats.
    caveats: tuple[str, ...] = ()
    #: The CT's files (or a folder): the report draws the dose over it.
    ct: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchResult:
    """The outcome of :func:`run_batch`. ``cases`` holds one record per case: status, seconds,
    the step timings, the worker's peak memory (MB) and its numba thread count."""

    out_dir: Path
    rows: list[dict[str, Any]]
    cases: list[dict[str, Any]]
    n_ok: int
    n_skipped: int
    n_failed: int
    elapsed_s: float
    #: Starting (or connecting to) the cluster and warming its workers; the case folders' headers
    #: are read meanwhile and while the first cases run.
    startup_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.n_failed == 0


# --------------------------------------------------------------------------- discovering cases


def _safe_id(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "._-" else "_" for c in text.strip())
    return keep[:64] or "case"


@dataclass(frozen=True)
class _Head:
    """What a case folder's case file says, read before any DICOM: the case id (the folder's
    name, or the case file's ``case_id``), the case file, its ``scan_modality``, or the error
    that reading it gave."""

    case_id: str
    case_file: str | None = None
    scan_modality: str | None = None
    error: CaseSpec | None = None


def _case_head(folder: Path) -> _Head:
    from .io._walk import files_under

    case_id = _safe_id(folder.name)
    found = [folder / n for n in _CASE_FILES if (folder / n).is_file()]
    if not found:
        try:
            found = [p for p in files_under(folder) if p.name in _CASE_FILES]
        except VoxelDoseError as exc:  # the case's failure, named when it runs
            return _Head(case_id, error=CaseSpec(case_id, error=str(exc), error_kind=type(exc).__name__))
    if len(found) > 1:  # which holds this case's activity and times is not for voxeldose to guess
        names = ", ".join(str(p.relative_to(folder)) for p in found)
        return _Head(case_id, error=CaseSpec(case_id, error_kind="InputError", error=(
            f"{folder}: {len(found)} case files ({names}); keep the one of this case, or give the case in a manifest "
            "with its case_file")))
    if not found:
        return _Head(case_id)
    case_file = str(found[0])
    try:
        from .io.case_file import load_case

        case = load_case(case_file)
    except VoxelDoseError as exc:
        return _Head(case_id, error=CaseSpec(case_id, error=str(exc), error_kind=type(exc).__name__))
    return _Head(_safe_id(case.case_id), case_file, case.scan_modality)


def _case_folder(folder: Path, scan_modality: str | None, voi_format: str | None, head: _Head) -> CaseSpec:
    """The case of one case folder, by the rules of the module documentation. ``scan_modality``
    and ``voi_format`` are the batch's options (None: the case file's ``scan_modality``, and
    the RTSTRUCT); ``head``: the folder's :func:`_case_head`."""
    from .io._walk import files_under
    from .io.dicom import list_series

    if head.error is not None:
        return head.error
    case_id, case_file = head.case_id, head.case_file
    scan_modality = scan_modality or head.scan_modality
    try:
        series = list_series(folder)
    except VoxelDoseError as exc:
        return CaseSpec(case_id, case_file=case_file, error=str(exc), error_kind=type(exc).__name__)
    caveats: list[str] = []
    emission = [s for s in series if s.modality in ("PT", "NM")]
    if not emission:
        return CaseSpec(case_id, case_file=case_file, error=f"{folder}: no PET or SPECT series found",
                        error_kind="DicomError")
    if scan_modality is not None:
        chosen = [s for s in emission if s.modality == scan_modality]
        if not chosen:
            listing = "; ".join(s.line() for s in emission)
            return CaseSpec(case_id, case_file=case_file, error_kind="DicomError",
                            error=f"{folder}: no {scan_modality} series for scan_modality {scan_modality!r}; the "
                                  f"folder holds {listing}")
        emission = chosen
    elif len(emission) > 1 and sum(s.modality == "PT" for s in emission) == 1:
        pet = next(s for s in emission if s.modality == "PT")
        others = "; ".join(s.line() for s in emission if s is not pet)
        caveats.append(f"the case folder holds {len(emission)} emission series: the PET {pet.line()} is the scan (the "
                       f"rule: Y-90 PET is quantitative), not {others}; set scan_modality = \"NM\" in the case file "
                       "or --scan-modality NM to compute the SPECT")
        emission = [pet]
    if len(emission) > 1:
        listing = "; ".join(s.line() for s in emission)
        return CaseSpec(case_id, case_file=case_file, error_kind="DicomError",
                        error=f"{folder}: {len(emission)} emission series, expected one: {listing}; give the "
                              "case in a manifest with its series_uid")
    images = {str(Path(f)) for s in series for f in s.files}
    try:
        kinds = {str(p): kind for p in files_under(folder)
                 if str(p) not in images and (kind := _voi_kind(p)) is not None}
    except VoxelDoseError as exc:
        return CaseSpec(case_id, case_file=case_file, error=str(exc), error_kind=type(exc).__name__)
    if len(set(kinds.values())) > 1:
        keep = (voi_format or "RTSTRUCT").lower()
        left_out = [Path(p).name for p, k in kinds.items() if k != keep]
        if voi_format is None:
            caveats.append(f"the case folder holds RTSTRUCT and SEG files: the VOIs are the RTSTRUCT's (the rule), "
                           f"not those of {', '.join(left_out)}; use --voi-format SEG for the SEG's")
        kinds = {p: k for p, k in kinds.items() if k == keep}
    cts = [s for s in series if s.modality == "CT"]
    if len(cts) > 1:
        caveats.append(f"the case folder holds {len(cts)} CT series; the report draws the dose without a CT (give the "
                       "case in a manifest with its ct to choose one)")
    return CaseSpec(case_id, scan=str(folder), vois=tuple(kinds), case_file=case_file,
                    series_uid=emission[0].series_instance_uid, caveats=tuple(caveats),
                    ct=cts[0].files if len(cts) == 1 else ())


def _voi_kind(path: Path) -> str | None:
    """"rtstruct" or "seg" for RTSTRUCT and SEG files (headers only), None for other files; a
    damaged DICOM file is an error."""
    from .io.vois import voi_file_kind

    if path.suffix.lower() in (".toml", ".json", ".txt", ".csv", ".md"):
        return None
    return voi_file_kind(path)


def _manifest(path: Path) -> list[CaseSpec]:
    base = path.parent
    if path.suffix.lower() == ".toml":
        from .io._structured import parse

        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"manifest {path}: cannot read it ({exc})") from exc
        records = parse(text, "toml", f"manifest {path}").get("cases", [])
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise InputError(f"manifest {path}: 'cases' must be an array of tables ([[cases]] entries)")
    elif path.suffix.lower() == ".csv":
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                records = list(csv.DictReader(fh))
        except (OSError, csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"manifest {path}: cannot read it ({exc})") from exc
    else:
        raise InputError(f"manifest {path}: expected a .csv or .toml file, or a folder of case folders")
    if not records:
        raise InputError(f"manifest {path} lists no cases")
    specs, seen = [], set()
    allowed = {"case_id", "scan", "vois", "case_file", "series_uid", "ct", *_MANIFEST_VALUES}
    for i, rec in enumerate(records, start=1):
        unknown = sorted(k for k, v in rec.items() if k not in allowed and v not in (None, ""))
        if unknown:
            raise InputError(f"manifest {path}, case {i}: unknown column(s) {unknown}; allowed: {sorted(allowed)}")
        case_id = _safe_id(str(rec.get("case_id") or ""))
        if not rec.get("case_id") or not rec.get("scan"):
            raise InputError(f"manifest {path}, case {i}: case_id and scan are required")
        if case_id in seen:
            raise InputError(f"manifest {path}: case_id {case_id!r} appears twice")
        seen.add(case_id)
        vois = rec.get("vois") or []
        if isinstance(vois, str):
            vois = [v for v in vois.split(";") if v.strip()]
        values = {}
        for key, name in _MANIFEST_VALUES.items():
            value = rec.get(key)
            if value in (None, ""):
                continue
            if name in ("administered_gbq", "lung_shunt_fraction", "residual_fraction") and isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise InputError(f"manifest {path}, case {case_id}: {key} = {value!r} is not a number") from None
            if name == "accept_activity_mismatch" and isinstance(value, str):
                if value.strip().lower() not in ("true", "false"):
                    raise InputError(f"manifest {path}, case {case_id}: {key} = {value!r} must be true or false")
                value = value.strip().lower() == "true"
            if name == "administration_datetime" and isinstance(value, str):
                import datetime as dt

                try:
                    value = dt.datetime.fromisoformat(value)
                except ValueError:
                    raise InputError(f"manifest {path}, case {case_id}: administration_time {value!r} "
                                     "is not ISO 8601") from None
            values[name] = value

        def resolve(p: str) -> str:
            q = Path(p.strip())
            return str(q if q.is_absolute() else base / q)

        specs.append(CaseSpec(
            case_id, scan=resolve(str(rec["scan"])), vois=tuple(resolve(str(v)) for v in vois),
            case_file=resolve(str(rec["case_file"])) if rec.get("case_file") else None,
            series_uid=str(rec["series_uid"]) if rec.get("series_uid") else None, values=values,
            ct=(resolve(str(rec["ct"])),) if rec.get("ct") else (),
        ))
    return specs


def discover_cases(input_path: str | os.PathLike[str], *, scan_modality: str | None = None,
                   voi_format: str | None = None) -> list[CaseSpec]:
    """The cases of a batch: a manifest (CSV/TOML) or a folder whose sub-folders are cases
    (``scan_modality`` "PT" or "NM" and ``voi_format`` "RTSTRUCT" or "SEG" choose in a case
    folder, as the module documentation says)."""
    return [make() for _, make in _case_makers(input_path, scan_modality=scan_modality, voi_format=voi_format)]


def _case_makers(input_path: str | os.PathLike[str], *, scan_modality: str | None = None,
                 voi_format: str | None = None) -> list[tuple[str, Callable[[], CaseSpec]]]:
    """The cases of :func:`discover_cases`, each as its case id and a call that returns its
    CaseSpec. What concerns the whole batch is checked here (the options, the input, the
    manifest, one case id per case folder, from the case files) and raises; reading each case
    folder's DICOM headers (0.14 CPU s for a folder of 300 files) is left to its call, which a
    batch makes on the worker that runs the case (:func:`_run_found`)."""
    if voi_format is not None and voi_format.upper() not in ("RTSTRUCT", "SEG"):
        raise InputError(f"voi_format must be 'RTSTRUCT' or 'SEG', got {voi_format!r}")
    if scan_modality is not None and scan_modality not in ("PT", "NM"):
        raise InputError(f"scan_modality must be 'PT' or 'NM', got {scan_modality!r}")
    path = Path(input_path)
    if path.is_file():
        return [(spec.case_id, functools.partial(_given, spec)) for spec in _manifest(path)]
    if not path.is_dir():
        raise InputError(f"batch input {path} does not exist")
    try:
        folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise InputError(f"cannot list the batch input {path} ({exc.strerror or exc}); give read access to "
                         "it") from None
    if not folders:
        raise InputError(f"{path} holds no case folders; give a folder of case folders or a manifest")
    heads = [_case_head(f) for f in folders]
    ids = [h.case_id for h in heads]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"{path}: several case folders share the case id(s) {dupes}; make them unique")
    return [(h.case_id, functools.partial(_case_folder, f, scan_modality, voi_format and voi_format.upper(), h))
            for f, h in zip(folders, heads)]


def _given(spec: CaseSpec) -> CaseSpec:
    return spec


# --------------------------------------------------------------------------- one case on a worker


def _files_of(path: str) -> list[Path]:
    from .io._walk import files_under

    p = Path(path)
    if p.is_dir():
        return files_under(p)
    return [p] if p.is_file() else []


#: Part of every case's input hash; changed whenever the same inputs and options give other
#: numbers, so that a batch run after an upgrade recomputes the cases an older voxeldose wrote
#: instead of skipping them as up to date. 2: a case's CT enters the dose (its densities). 3: voxels
#: the CT does not cover are outside the body even inside a body VOI.
RESULTS_REVISION = 3


def input_hash(spec: CaseSpec, options: Mapping[str, Any]) -> str:
    """SHA-256 over the case's input files' contents, its values and the run's options."""
    h = hashlib.sha256()
    paths = (([*_files_of(spec.scan)] if spec.scan else []) + [f for v in spec.vois for f in _files_of(v)]
             + [f for c in spec.ct for f in _files_of(c)])
    if spec.case_file:
        paths.append(Path(spec.case_file))
    for f in sorted(set(paths)):
        h.update(str(f.name).encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    h.update(json.dumps({"values": dict(spec.values), "series_uid": spec.series_uid, "options": dict(options)},
                        sort_keys=True, default=str).encode())
    return h.hexdigest()


def case_digest(spec: CaseSpec, options: Mapping[str, Any]) -> str:
    """The input hash a case's results are stamped with: its inputs, the options that change its
    numbers, and :data:`RESULTS_REVISION`."""
    relevant = {k: options[k] for k in ("method", "tissue", "anonymize", "kernel_tables", "registered", "overrides",
                                        "voi_format", "hu_table_sha256")
                if k in options and (k in ("method", "tissue") or options[k])}
    if options.get("outside_body", "exclude") != "exclude":
        relevant["outside_body"] = options["outside_body"]
    relevant["results_revision"] = RESULTS_REVISION
    return input_hash(spec, relevant)


def _done(out: Path, digest: str) -> bool:
    try:
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return metrics.get("provenance", {}).get("batch_input_hash") == digest


def _rows(case_id: str, status: str, metrics: Mapping[str, Any] | None, error_kind: str = "",
          error: str = "") -> list[dict[str, Any]]:
    """The case's cohort rows: :func:`voxeldose.result.metrics_rows` with the status (one row with
    the error for a failed case)."""
    from .result import metrics_rows

    rows = metrics_rows(metrics) if metrics else []
    extra = {"case_id": case_id, "status": status, "error_kind": error_kind, "error": error}
    return [{**row, **extra} for row in rows] or [{**extra, "voi": "", "role": ""}]


def _warm_worker(freeze: bool = False) -> None:
    """Import the pipeline's libraries and load numba's compiled loops once per worker process,
    so that this one-off cost is paid during the start, on all workers at once.

    ``freeze``: then move every object the process holds out of the cyclic garbage collector
    (``gc.collect`` first, so that no garbage is kept): the libraries' million objects live as
    long as the worker, and each full collection during a case then scans only what the case made
    (0.06-0.08 s of a case's 0.95-1.24 s in full collections, 0.01-0.015 s frozen, measured over
    warm phantom cases in one process). Only for the local cluster's own worker processes, not for
    the workers of a scheduler that the user runs.
    """
    import gc
    import warnings

    import matplotlib.pyplot  # noqa: F401 - the report's figures
    import numpy as np

    from . import pipeline  # noqa: F401
    from .dose import absorbed_dose, absorbed_dose_array
    from .image import Image
    from .io import dicom, results, vois  # noqa: F401

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dtype in (np.float32, np.float64):
            a = np.zeros((5, 5, 5), dtype)
            a[2, 2, 2] = 1.0
            for engine in ("direct", "fft"):
                absorbed_dose_array(a, spacing_xyz_mm=(4.0, 4.0, 4.0), engine=engine)  # writeable arrays
                # and read-only ones, as a case's images hold (numba compiles each layout apart)
                absorbed_dose(Image(a, (4.0, 4.0, 4.0), units="MBQ"), engine=engine)  # type: ignore[arg-type]
    if freeze:
        gc.collect()
        gc.freeze()


def _run_found(case_id: str, make: Callable[[], CaseSpec], out_root: str, options: Mapping[str, Any],
               force: bool = False) -> dict[str, Any]:
    """Find one case and run it (on a worker), as :func:`run_one`; ``make`` is its call from
    :func:`_case_makers`. The headers read to find the case folder's series are the ones its
    loading takes (:func:`voxeldose.io._dicom_common.shared_reads`): each file is parsed once.
    A folder that cannot be read is the case's failure, as a damaged one is."""
    from .io._dicom_common import shared_reads

    t0 = time.perf_counter()
    with shared_reads():
        try:
            spec = make()
        except OSError as exc:
            spec = CaseSpec(case_id, error=f"the case's files cannot be read: {exc}", error_kind="InputError")
        except Exception as exc:  # noqa: BLE001 - one case's crash must not stop the cohort
            spec = CaseSpec(case_id, error=f"{type(exc).__name__} while finding the case's files: {exc}",
                            error_kind="InternalError")
        find_s = time.perf_counter() - t0
        record = run_one(spec, out_root, options, force)
    # the time it took to find the case is part of the case's time, a step before "load"
    timings = {"find": find_s, **record["timings"]} if record["timings"] else {}
    return {**record, "seconds": record["seconds"] + find_s, "timings": timings}


def run_one(spec: CaseSpec, out_root: str, options: Mapping[str, Any], force: bool = False) -> dict[str, Any]:
    """Run one case (on a worker). Never raises: a failure is returned as a row."""
    from .io._sitk import filter_threads, set_filter_threads
    from .pipeline import run_case
    from .result import Caveat

    out = Path(out_root) / spec.case_id
    t0 = time.perf_counter()
    anonymize = bool(options.get("anonymize", False))
    # an anonymized batch's failure messages lose their paths, dates and UIDs too
    scrub = _scrubber() if anonymize else (lambda text: text)
    if spec.error:
        error = scrub(spec.error)
        _write_log(out, f"case {spec.case_id} not run: {error}\n", failed=True)
        return {"case_id": spec.case_id, "status": "failed", "rows": _rows(spec.case_id, "failed", None,
                spec.error_kind or "InputError", error), "seconds": 0.0, "timings": {}}
    # the result depends on the method and tissue, not on how many threads computed it
    # (anonymize only when set, so that the digests of earlier plain runs stay valid)
    try:
        digest = case_digest(spec, options)
    except (VoxelDoseError, OSError) as exc:  # an input file that cannot be read: the case's failure
        kind = type(exc).__name__ if isinstance(exc, VoxelDoseError) else "InputError"
        error = scrub(str(exc) if isinstance(exc, VoxelDoseError) else f"an input file cannot be read: {exc}")
        _write_log(out, f"case {spec.case_id} not run: {error}\n", failed=True)
        return {"case_id": spec.case_id, "status": "failed", "rows": _rows(spec.case_id, "failed", None, kind, error),
                "seconds": time.perf_counter() - t0, "timings": {}}
    if not force and _done(out, digest):
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        return {"case_id": spec.case_id, "status": "skipped", "rows": _rows(spec.case_id, "ok", metrics),
                "seconds": time.perf_counter() - t0, "timings": {}}
    threads = int(options.get("threads_per_case", 0) or 0)
    if not threads and options.get("threads_by_worker"):  # an existing scheduler's workers
        from distributed import get_worker

        try:
            threads = int(options["threads_by_worker"].get(get_worker().address, 1))
        except ValueError:  # pragma: no cover - not on a worker (called directly)
            threads = 0
    if threads > 0:
        # one case per worker process: share the cores between workers instead of each taking
        # all of them (numba's parallel loops and the FFT follow numba's thread count; SimpleITK's
        # filters, the CT's resampling among them, take their own default: all the cores)
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
        set_filter_threads(threads)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    # an anonymized case's log holds no date: milliseconds since the worker started instead
    handler.setFormatter(logging.Formatter("%(relativeCreated)10.0f ms %(levelname)s %(name)s: %(message)s"
                                           if anonymize else "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("voxeldose")
    package_logger.addHandler(handler)
    old_level = package_logger.level
    package_logger.setLevel(logging.INFO)
    try:
        if spec.scan is None:  # pragma: no cover - specs without a scan carry an error
            raise InputError(f"case {spec.case_id}: no scan")
        # the batch's options apply to every case and override its case file; a manifest row's
        # values are the case's own and win over both
        result = run_case(
            spec.scan, list(spec.vois), out, case=spec.case_file, series_uid=spec.series_uid,
            method=options.get("method", "kernel"), tissue=options.get("tissue", "soft"),
            kernel_tables=options.get("kernel_tables"), anonymize=anonymize,
            registered=bool(options.get("registered", False)), force=True,
            overrides={**dict(options.get("overrides") or {}), "case_id": spec.case_id, **spec.values},
            caveats=[Caveat("batch", text) for text in spec.caveats], ct=list(spec.ct) or None,
            extra_provenance={"batch_input_hash": digest}, hu_table=options.get("hu_table"),
            outside_body=options.get("outside_body", "exclude"),
        )
        for caveat in result.caveats:  # the case's log lists its caveats, as the command line's does
            stream.write(f"caveat ({caveat.stage}): {caveat.message}\n")
        _write_log(out, stream.getvalue(), failed=False)
        return {"case_id": spec.case_id, "status": "ok", "rows": _rows(spec.case_id, "ok", result.to_dict()),
                "seconds": time.perf_counter() - t0, "timings": dict(result.provenance["timings_s"]),
                "peak_rss_mb": _peak_rss_mb(), "threads": _numba_threads(), "itk_threads": filter_threads()}
    except VoxelDoseError as exc:
        kind, message = type(exc).__name__, str(exc)
        stream.write(f"failed: {kind}: {message}\n")
    except Exception as exc:  # noqa: BLE001 - one case's crash must not stop the cohort
        kind, message = "InternalError", scrub(f"{type(exc).__name__}: {exc}")
        stream.write(scrub(traceback.format_exc()))
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(old_level)
    _write_log(out, stream.getvalue(), failed=True)
    return {"case_id": spec.case_id, "status": "failed", "rows": _rows(spec.case_id, "failed", None, kind, message),
            "seconds": time.perf_counter() - t0, "timings": {}}


def _scrubber() -> Any:
    """Texts without paths, dates and UIDs (an anonymized batch's messages about a case that did
    not produce a result to anchor its times on)."""
    from .anonymize import Anonymizer

    return Anonymizer(None).text


def _numba_threads() -> int | None:
    """The thread count numba's parallel loops (and the FFT) use in this thread, if numba is loaded."""
    import sys

    numba = sys.modules.get("numba")
    return int(numba.get_num_threads()) if numba is not None else None


def _host_cores() -> tuple[str, int]:
    """This machine's name and the cores this process may use (run on each worker)."""
    import socket

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return socket.gethostname(), cores


def threads_by_worker(client: Any) -> dict[str, int]:
    """Each worker's share of its machine's cores for one case: the cores over the task threads of
    all the workers on that machine (at least 1), by worker address. With ``--scheduler`` the
    workers are someone else's: this is what ``--workers`` sets for a local cluster."""
    hosts = client.run(_host_cores)  # {address: (host, cores)}
    info = client.scheduler_info().get("workers", {})
    load: dict[str, int] = {}
    for address, (host, _) in hosts.items():
        load[host] = load.get(host, 0) + max(1, int(info.get(address, {}).get("nthreads", 1)))
    return {address: max(1, cores // load[host]) for address, (host, cores) in hosts.items()}


def _peak_rss_mb() -> float | None:
    """High-water mark of this process's resident memory (MB), where the OS reports it."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _write_log(out: Path, text: str, *, failed: bool) -> None:
    """``out/log.txt``; a failed case whose folder holds no results gets a folder with the log only."""
    if failed and out.exists() and (out / "metrics.json").exists():
        # an earlier good result stays as it is; the failure is in failures.csv
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write(out / "log.txt", text)
    except (OSError, VoxelDoseError) as exc:  # a case's log is not worth stopping the batch for
        logger.warning("case log %s not written: %s", out / "log.txt", exc)


def _atomic_write(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all; a failure (disk full, read-only) is an OutputError."""
    from .io.results import output_error

    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise output_error(exc, path.parent, f"write {path.name}", len(text.encode("utf-8"))) from None


# --------------------------------------------------------------------------- the batch


def _write_tables(out: Path, rows: list[dict[str, Any]], failures: list[dict[str, Any]]) -> None:
    columns = list(COHORT_COLUMNS)
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    _atomic_write(out / "cohort.csv", buf.getvalue())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["case_id", "error_kind", "error"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(failures)
    _atomic_write(out / "failures.csv", buf.getvalue())
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return
    table = pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in rows])
    fd, tmp = tempfile.mkstemp(prefix=".cohort.parquet.", dir=out)
    os.close(fd)
    pq.write_table(table, tmp)
    os.replace(tmp, out / "cohort.parquet")


def run_batch(
    input_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    method: str = "kernel",
    tissue: str = "soft",
    kernel_tables: str | os.PathLike[str] | None = None,
    anonymize: bool = False,
    registered: bool = False,
    overrides: Mapping[str, Any] | None = None,
    voi_format: str | None = None,
    force: bool = False,
    progress: bool = True,
    cases: Sequence[CaseSpec] | None = None,
    hu_table: str | os.PathLike[str] | None = None,
    outside_body: str = "exclude",
) -> BatchResult:
    """Run every case of a batch on Dask and write the cohort tables.

    Parameters
    ----------
    input_path : path
        A folder of case folders, or a manifest (.csv or .toml).
    out : path
        Output folder (created); one sub-folder per case, cohort.csv, failures.csv.
    workers : int, optional
        Worker processes of the local cluster (default: the number of cores). Ignored with
        ``scheduler``.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:port``); its workers must have
        voxeldose installed and see the input and output paths.
    method, tissue
        As in :func:`voxeldose.absorbed_dose`.
    kernel_tables : path, optional
        A folder of published voxel S-value tables (:func:`voxeldose.io.load_vsv_tables`), seen
        by every worker.
    anonymize : bool
        As in :func:`voxeldose.run_case`: RT Doses without patient identifiers (name and ID =
        case id) and no input folder paths in the metrics and reports.
    registered : bool
        As in :func:`voxeldose.run_case`, for every case.
    overrides : mapping, optional
        :class:`voxeldose.Case` fields for every case (what ``voxeldose run``'s options set that
        is not one case's own: ``scanner_nuclide``, ``residual_fraction``, ``sphere_type``,
        ``calibration_voi``, ``voi_roles``, ``scan_modality``, ``scan_units``,
        ``decay_correction``); they override each case file, a manifest row's values override
        them. ``scan_modality`` also chooses the series of a case folder.
    voi_format : {"RTSTRUCT", "SEG"}, optional
        The VOI files of a case folder holding both kinds (default the RTSTRUCT, with a caveat).
    force : bool
        Run every case again, even those whose outputs are up to date.
    progress : bool
        A progress bar over cases (on a terminal).
    hu_table : path, optional
        The CTs' HU-to-density calibration (:func:`voxeldose.io.load_hu_table`), seen by every
        worker; its content is part of each case's input hash.
    outside_body : {"exclude", "keep"}
        As in :func:`voxeldose.run_case`.
    cases : sequence of CaseSpec, optional
        Use these instead of discovering them from ``input_path``.

    Returns
    -------
    BatchResult
        ``ok`` is False when any case failed; the others were still run.

    Notes
    -----
    The local cluster starts worker processes: a script calling ``run_batch`` needs the usual
    ``if __name__ == "__main__":`` guard.
    """
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    t0 = time.perf_counter()

    n = workers or os.cpu_count() or 1
    if n < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    cohort = dict(overrides or {})
    per_case = sorted(set(cohort) & {"case_id", "administered_gbq", "administration_datetime", "lung_shunt_fraction",
                                      "scan_datetime", "accept_activity_mismatch"})
    if per_case:
        raise InputError(f"batch overrides {per_case} are one case's own values: give them in each case file or "
                         "manifest row, not for the whole batch")
    if voi_format is not None and voi_format.upper() not in ("RTSTRUCT", "SEG"):
        raise InputError(f"voi_format must be 'RTSTRUCT' or 'SEG', got {voi_format!r}")
    if cohort:
        from .case import Case

        checked = Case("check").with_overrides(**cohort)  # a bad value fails here, not once per case
        if "scan_modality" in cohort:
            cohort["scan_modality"] = checked.scan_modality  # "PET" -> "PT"
    from .io.results import output_error, clean_stale

    out_dir = Path(out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, out_dir, "create the batch's output folder") from None
    clean_stale(out_dir)  # what killed workers left: unfinished case folders, a replaced result
    hu_digest = None
    if hu_table is not None:  # read now: a wrong path fails before the cluster starts
        from .io import load_hu_table

        load_hu_table(hu_table)
        hu_digest = hashlib.sha256(Path(hu_table).read_bytes()).hexdigest()
    options: dict[str, Any] = {"method": method, "tissue": tissue, "anonymize": anonymize,
                               "kernel_tables": None if kernel_tables is None else str(kernel_tables),
                               "registered": registered, "overrides": cohort,
                               "voi_format": voi_format and voi_format.upper(),
                               "hu_table": None if hu_table is None else str(hu_table), "hu_table_sha256": hu_digest,
                               "outside_body": outside_body}
    # what concerns the whole batch (the input, the case ids) is checked before the cluster
    # starts; each case folder's DICOM headers are read on the worker that runs the case
    found = (_case_makers(input_path, scan_modality=cohort.get("scan_modality"), voi_format=voi_format)
             if cases is None else [(spec.case_id, functools.partial(_given, spec)) for spec in cases])
    ids = [case_id for case_id, _ in found]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:  # one output folder and one task per case id
        raise InputError(f"the batch's cases share the case id(s) {dupes}; make them unique")
    cluster = None
    results: list[dict[str, Any]] = []
    if scheduler:
        client = Client(scheduler)
        try:
            options["threads_by_worker"] = threads_by_worker(client)
        except BaseException:
            client.close()
            raise
    else:
        options["threads_per_case"] = max(1, (os.cpu_count() or 1) // n)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        try:
            client = Client(cluster)
        except BaseException:
            cluster.close()
            raise
    try:
        client.run(_warm_worker, freeze=cluster is not None)  # all workers at once
        startup_s = time.perf_counter() - t0
        case_of: dict[Any, str] = {}  # future key -> case id
        futures = []
        for case_id, make in found:
            future = client.submit(_run_found, case_id, make, str(out_dir), options, force,
                                   key=f"voxeldose-{case_id}", pure=False)
            case_of[future.key] = case_id
            futures.append(future)
        for future in tqdm(as_completed(futures), total=len(futures), unit="case",
                           disable=None if progress else True, desc="cases"):
            try:
                results.append(future.result())
            except Exception as exc:  # noqa: BLE001 - a worker died: record, go on
                case_id = case_of[future.key]
                results.append({"case_id": case_id, "status": "failed", "seconds": 0.0, "timings": {},
                                "rows": _rows(case_id, "failed", None, "WorkerError",
                                              f"{type(exc).__name__}: {exc}")})
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    order = {case_id: i for i, case_id in enumerate(ids)}
    results.sort(key=lambda r: order.get(r["case_id"], 0))
    rows = [row for r in results for row in r["rows"]]
    failures = [{"case_id": r["case_id"], "error_kind": r["rows"][0].get("error_kind", ""),
                 "error": r["rows"][0].get("error", "")} for r in results if r["status"] == "failed"]
    _write_tables(out_dir, rows, failures)
    n_failed = len(failures)
    n_skipped = sum(r["status"] == "skipped" for r in results)
    records = [{k: v for k, v in r.items() if k != "rows"} for r in results]
    result = BatchResult(out_dir, rows, records, len(results) - n_failed - n_skipped, n_skipped, n_failed,
                         time.perf_counter() - t0, startup_s)
    logger.info("batch: %d ok, %d up to date, %d failed in %.1f s", result.n_ok, result.n_skipped, n_failed,
                result.elapsed_s)
    return result

