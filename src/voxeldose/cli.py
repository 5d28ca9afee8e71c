"""Command line: a thin layer over the library.

Exit codes: 0 success, 2 bad input (a VoxelDoseError, message on stderr), 1 internal error,
3 (batch) some cases failed while the others finished.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import math
import sys
import time
import warnings
from typing import Iterator, Sequence

from ._version import __version__
from .errors import VoxelDoseError

logger = logging.getLogger("voxeldose.cli")

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_SOME_FAILED = 3  # batch: the other cases finished; see failures.csv


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _iso_datetime(text: str):  # type: ignore[no-untyped-def]
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date-time (YYYY-MM-DDTHH:MM[:SS])") from None


#: The options several commands share, each defined once: flags, and the keyword arguments of
#: ``add_argument`` (a command may give its own default). Units are in every help line.
_OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, object]]] = {
    "method": (("--method",), dict(choices=("kernel", "local", "scaled_kernel"), default="kernel",
               help="kernel: Y-90 voxel S-value convolution (with a CT: times 1.04 / density); local: local energy "
                    "deposition (with a CT: at each voxel's density); scaled_kernel: the kernel scaled by the density "
                    "along each path (needs a CT) (default kernel)")),
    "hu_table": (("--hu-table",), dict(default=None, metavar="FILE",
                 help="the CT's HU-to-density calibration: a text file of two columns, HU and g/cm3 (default "
                      "Schneider et al. 2000)")),
    "outside_body": (("--outside-body",), dict(choices=("exclude", "keep"), default="exclude",
                     help="with a CT: activity outside the body outline is left out of the dose (exclude, default) "
                          "or kept; it is reported either way, and the dose outside the body is 0")),
    "tissue": (("--tissue",), dict(choices=("soft", "bone"), default="soft",
               help="medium of the kernel and of local deposition (default soft tissue, 1.04 g/cm3)")),
    "kernel_tables": (("--kernel-tables",), dict(default=None, metavar="DIR",
                      help="folder of published Y-90 voxel S-value tables (90Y<size>mm<soft|bone>.txt, e.g. the "
                           "Lanconelli 2012 database) to use at their voxel sizes instead of voxeldose's fitted "
                           "point kernel")),
    "anonymize": (("--anonymize",), dict(action="store_true",
                  help="de-identified outputs (DICOM Basic Profile): RT Dose with name and ID = case id and "
                       "mapped UIDs; every date shifted so that the administration is 2000-01-01 00:00 (intervals "
                       "kept); UIDs mapped, identifiers, descriptions and input paths withheld in every file and "
                       "log")),
    "force": (("--force",), dict(action="store_true", help="replace the results in OUT")),
    "out": (("--out",), dict(required=True, help="output folder")),
    "administered_gbq": (("--administered-gbq",), dict(type=_positive_float, default=None,
                         help="activity of the Y-90 dose at administration, GBq")),
    "lung_shunt": (("--lung-shunt",), dict(type=float, default=None, help="lung shunt fraction, 0 <= LSF < 1")),
    "fwhm_mm": (("--fwhm-mm",), dict(type=_positive_float, default=None,
                help="scanner resolution: Gaussian FWHM in mm applied to the activity (default none)")),
    "scanner_nuclide": (("--scanner-nuclide",), dict(default=None,
                        help="nuclide the PET scanner was set up for, confirmed by you (Y-90, F-18, Ga-68, Ge-68)")),
    "residual": (("--residual",), dict(type=float, default=None,
                 help="fraction of the activity left in the vial and lines, 0 <= r < 1")),
    "sphere_type": (("--sphere-type",), dict(choices=("glass", "resin"), default=None, help="microsphere product")),
    "calibration_voi": (("--calibration-voi",), dict(
        default=None, help="VOI whose counts calibrate a SPECT (default: the perfused or whole-liver VOI)")),
    "voi_role": (("--voi-role",), dict(action="append", default=[], metavar="NAME=ROLE",
                 help="role of a VOI: tumour, normal_liver, whole_liver, lung, perfused or body (the body outline, "
                      "instead of the CT's); repeatable")),
    "scan_modality": (("--scan-modality",), dict(
        choices=("PT", "NM"), default=None,
        help="the scan is a Y-90 PET (PT) or a bremsstrahlung SPECT (NM); checked against the scan's Modality")),
    "scan_units": (("--scan-units",), dict(
        choices=("BQML", "CNTS", "MBQ"), default=None,
        help="units of a scan read from a NIfTI, NRRD or MetaImage file: Bq/mL, counts, or MBq per voxel at "
             "administration")),
    "decay_correction": (("--decay-correction",), dict(choices=("START", "ADMIN", "NONE"), default=None,
                         help="decay correction of such a PET (DICOM's terms)")),
    "uncertainty": (("--uncertainty",), dict(type=int, default=None, metavar="N",
                    help="uncertainty analysis with N seeded samples (200 or more for stable 95 %% intervals; 0: none): "
                         "intervals and budgets on every VOI metric, with the inputs' standard uncertainties from the "
                         "case file's [uncertainty] or the stated defaults")),
    "seed": (("--seed",), dict(type=int, default=None, help="seed of the uncertainty samples (default 0, or the case "
                                                            "file's)")),
    "registered": (("--registered",), dict(
        action="store_true", help="accept VOIs from another frame of reference (you state they are registered)")),
}

#: ``run`` options that ``batch`` applies to every case (the case's own values, from its case file
#: or manifest row, are per case: administered activity, times, shunt, case id, series UID).
_COHORT_OPTIONS = ("scanner_nuclide", "residual", "sphere_type", "calibration_voi", "voi_role", "scan_modality",
                   "scan_units", "decay_correction")


def _add(parser: argparse.ArgumentParser, name: str, **changes: object) -> None:
    """Add shared option ``name``; ``default=`` and ``help=`` may be changed for one command."""
    flags, spec = _OPTIONS[name]
    options = {**spec, **changes}
    if "default" in changes and changes["default"] is not None and "help" not in changes:
        options["help"] = f"{spec['help']} (default {changes['default']})"
    parser.add_argument(*flags, **options)  # type: ignore[arg-type]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voxeldose",
        description="Voxel-based absorbed dose for Y-90 radioembolization.",
        epilog="Exit codes: 0 success, 2 bad input, 1 internal error, 3 batch finished with failed cases.",
    )
    parser.add_argument("--version", action="version", version=f"voxeldose {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only results and errors")
    parser.add_argument("--log-json", action="store_true",
                        help="log as JSON lines on stderr (time, level, logger, message) for pipelines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="write the liver phantom as DICOM, run the whole pipeline on it and print per-VOI metrics",
        description=(
            "Write the synthetic liver phantom (a 1.5 L ellipsoidal liver with five spherical tumours "
            "of 1-5 cm at a tumour-to-normal uptake ratio of 4, and two lungs) as a clinic would export "
            "it (Y-90 PET or bremsstrahlung SPECT, CT, RTSTRUCT, case file) to a temporary folder, run "
            "'voxeldose run' on it, write the outputs to OUT and print, per VOI, the volume and dose "
            "metrics beside the analytic local-deposition (LDM) mean dose."
        ),
    )
    _add(demo, "out", required=False, default="voxeldose-demo",
         help="output folder (default voxeldose-demo; must not hold results unless --force)")
    _add(demo, "force")
    demo.add_argument("--scan", choices=("pet", "spect"), default="pet",
                      help="pet: Y-90 PET in Bq/mL, 4 x 4 x 3 mm; spect: bremsstrahlung SPECT in counts, "
                           "4.42 mm, self-calibrated on the liver VOI (default pet)")
    _add(demo, "method")
    _add(demo, "kernel_tables")
    _add(demo, "administered_gbq", default=3.0)
    _add(demo, "lung_shunt", default=0.10)
    _add(demo, "fwhm_mm")

    run = sub.add_parser(
        "run",
        help="one exported case: load, calibrate, dose, DVH; write RTDOSE, NIfTI, DVH, metrics and a report",
        description=(
            "Load the Y-90 PET or bremsstrahlung SPECT series SCAN and the VOIs, calibrate to MBq per voxel "
            "at administration, compute the absorbed dose and the DVHs, and write into OUT: dose.nii.gz (Gy), "
            "activity.nii.gz (MBq per voxel at administration), rtdose.dcm, dvh.csv, metrics.json and "
            "report.html. Options override the case file. Nothing is written to OUT unless the whole case "
            "succeeds; existing results are kept unless --force."
        ),
    )
    run.add_argument("scan", metavar="SCAN", help="folder or file of the PET (Bq/mL) or SPECT (counts) series, or a "
                     "NIfTI/NRRD/MetaImage file (its units and times from the case file or the options below)")
    run.add_argument("--voi", action="append", default=[], metavar="VOI",
                     help="RTSTRUCT, SEG, 3D Slicer .seg.nrrd or label map (NIfTI/NRRD with a name table) file or "
                          "folder; repeatable")
    run.add_argument("--ct", default=None, metavar="CT",
                     help="CT series (folder or file, HU) of the PET/CT or SPECT/CT: its densities enter the dose "
                          "(see --method), the body outline comes from it, and the report draws the dose over it")
    _add(run, "out")
    run.add_argument("--case", default=None, help="case file (TOML or JSON) with the values the headers lack")
    run.add_argument("--case-id", default=None, help="case id naming the outputs (never a patient name)")
    _add(run, "method")
    _add(run, "tissue")
    _add(run, "kernel_tables")
    _add(run, "hu_table")
    _add(run, "outside_body")
    run.add_argument("--series-uid", default=None, help="SeriesInstanceUID to load when SCAN holds several series")
    _add(run, "administered_gbq")
    run.add_argument("--administration-time", type=_iso_datetime, default=None, metavar="YYYY-MM-DDTHH:MM[:SS]",
                     help="start of the administration, on the scanner's clock")
    _add(run, "lung_shunt")
    for name in _COHORT_OPTIONS:
        _add(run, name)
    run.add_argument("--scan-time", type=_iso_datetime, default=None, metavar="YYYY-MM-DDTHH:MM[:SS]",
                     help="acquisition start of a scan read from a NIfTI, NRRD or MetaImage file, on the scanner's "
                          "clock")
    run.add_argument("--accept-activity-mismatch", action="store_true", default=None,
                     help="the calibrated activity may differ from the administered one (net of shunt and residual) by "
                          "more than a factor 2: a warning instead of an error")
    _add(run, "uncertainty")
    _add(run, "seed")
    _add(run, "registered")
    _add(run, "anonymize")
    _add(run, "force")

    batch = sub.add_parser(
        "batch",
        help="many cases on Dask: a folder of case folders or a manifest; cohort table at the end",
        description=(
            "Run every case of INPUT (a folder whose sub-folders are cases, or a manifest .csv/.toml) like "
            "'voxeldose run', on a local Dask cluster of worker processes or an existing scheduler. Writes "
            "OUT/CASE/ per case (with log.txt), OUT/cohort.csv (and .parquet with pyarrow) and "
            "OUT/failures.csv. Failed cases do not stop the others; exit code 0 when all succeeded, 3 when "
            "any failed. A second run skips cases whose outputs are up to date (same input content hash)."
        ),
    )
    batch.add_argument("input", metavar="INPUT", help="folder of case folders, or a manifest (.csv or .toml)")
    _add(batch, "out")
    batch.add_argument("--workers", type=int, default=None, help="worker processes (default: the number of cores)")
    batch.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="an existing Dask scheduler, e.g. tcp://host:8786 (default: a local cluster)")
    _add(batch, "method")
    _add(batch, "tissue")
    _add(batch, "kernel_tables")
    _add(batch, "hu_table")
    _add(batch, "outside_body")
    for name in _COHORT_OPTIONS:
        _add(batch, name)
    batch.add_argument("--voi-format", choices=("RTSTRUCT", "SEG"), default=None,
                       help="in a case folder holding both RTSTRUCT and SEG files, take the VOIs from these (default "
                            "RTSTRUCT, with a caveat naming the files left out)")
    _add(batch, "uncertainty")
    _add(batch, "seed")
    _add(batch, "registered")
    _add(batch, "anonymize")
    _add(batch, "force", help="run every case again, even up-to-date ones")

    _plan_parser(sub)
    _compare_parser(sub)

    ph = sub.add_parser(
        "phantom",
        help="write a synthetic phantom as DICOM (PET, SPECT, CT, RTSTRUCT, SEG) with its case file and truth",
        description=(
            "Write phantom NAME as a clinic would export it into a new folder OUT: for 'liver', a Y-90 PET "
            "series (Bq/mL), a bremsstrahlung SPECT (counts), a CT, an RTSTRUCT drawn on the CT, a SEG on "
            "the PET grid, case.toml and truth.json (with --maa also a Tc-99m MAA SPECT); for the other phantoms, "
            "the PET, a SEG, case.toml and truth.json. OUT must not exist (or be empty); nothing is left behind if "
            "writing fails."
        ),
    )
    ph.add_argument("name", choices=("liver", "sphere", "uniform", "point_source"), metavar="NAME",
                    help="liver, sphere, uniform or point_source")
    _add(ph, "out", help="folder to create")
    _add(ph, "administered_gbq", default=3.0, help="liver: administered Y-90 activity in GBq (default 3.0)")
    _add(ph, "lung_shunt", default=0.10, help="liver: lung shunt fraction, 0 <= LSF < 1 (default 0.10)")
    ph.add_argument("--tumour-to-normal", type=_positive_float, default=4.0,
                    help="liver: tumour-to-normal uptake ratio (default 4)")
    ph.add_argument("--delay-h", type=_positive_float, default=20.0,
                    help="scan start after administration, in hours (default 20)")
    ph.add_argument("--decay-correction", choices=("START", "ADMIN", "NONE"), default="START",
                    help="PET DecayCorrection written by the scanner model (default START)")
    _add(ph, "scanner_nuclide", choices=("Y-90", "F-18", "Ga-68", "Ge-68"), default="Y-90",
         help="nuclide the PET scanner is configured for (default Y-90)")
    ph.add_argument("--pet-spacing", nargs=3, type=_positive_float, default=(4.0, 4.0, 3.0), metavar=("X", "Y", "Z"),
                    help="PET voxel size in mm (default 4 4 3; the phantom's own spacing for non-liver phantoms)")
    ph.add_argument("--spect-spacing", nargs=3, type=_positive_float, default=(4.42, 4.42, 4.42),
                    metavar=("X", "Y", "Z"), help="liver: SPECT voxel size in mm (default 4.42)")
    ph.add_argument("--ct-spacing", nargs=3, type=_positive_float, default=(2.0, 2.0, 3.0), metavar=("X", "Y", "Z"),
                    help="liver: CT voxel size in mm (default 2 2 3)")
    _add(ph, "fwhm_mm", help="liver: scanner resolution, Gaussian FWHM in mm, applied to PET and SPECT (default none)")
    ph.add_argument("--spect-noise", action="store_true", help="liver: Poisson noise on the SPECT counts")
    ph.add_argument("--lung-interface", action="store_true",
                    help="liver: the right lung rests on the liver (a flat interface, no gap; CT lung 0.28 g/cm3), "
                         "instead of 20 mm above it")
    ph.add_argument("--maa", action="store_true",
                    help="liver: also write the Tc-99m MAA SPECT of the planning (counts) into OUT/MAA, on the same "
                         "frame of reference (150 MBq MAA, scanned 1 h after injection)")
    ph.add_argument("--maa-tumour-to-normal", type=_positive_float, default=None, metavar="X",
                    help="liver, --maa: the MAA's tumour-to-normal uptake ratio (default --tumour-to-normal)")
    ph.add_argument("--maa-lung-shunt", type=float, default=None, metavar="F",
                    help="liver, --maa: the MAA's lung shunt fraction, 0 <= F < 1 (default --lung-shunt)")
    ph.add_argument("--maa-cold-tumour", default=None, metavar="NAME",
                    help="liver, --maa: a tumour that takes up no MAA (tumour_1 ... tumour_5; default none)")
    ph.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ph.add_argument("--case-id", default=None, help="case id written to case.toml (default phantom-NAME)")
    return parser


# --------------------------------------------------------------------------- plan


def _plan_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    plan = sub.add_parser(
        "plan",
        help="plan a treatment on the Tc-99m MAA SPECT: predicted dose, MIRD/partition/BSA and voxel-based activities",
        description=(
            "Read the Tc-99m MAA SPECT SCAN (counts, or a quantitative SPECT in Bq/mL) and its VOIs; normalise "
            "the counts of each perfused territory to its planned Y-90 activity x (1 - lung shunt), compute the "
            "predicted dose with the same engines as 'run' (one dose computation per territory), and plan each "
            "territory: the MIRD single-compartment, partition and (resin) BSA activities, and the largest "
            "activity meeting every constraint of the case file's [plan] table, with the binding one. Writes "
            "into OUT what 'run' writes (dose.nii.gz, activity.nii.gz, rtdose.dcm, dvh.csv, metrics.json with "
            "'plan', report.html), for the predicted dose at the planned activities. Nothing is written unless "
            "the whole case succeeds; existing results are kept unless --force."
        ),
    )
    plan.add_argument("scan", metavar="SCAN", help="folder or file of the MAA SPECT series (DICOM NM), or a "
                      "NIfTI/NRRD/MetaImage file (its units from the case file or --scan-units)")
    plan.add_argument("--voi", action="append", default=[], metavar="VOI",
                      help="RTSTRUCT, SEG, 3D Slicer .seg.nrrd or label map file or folder; repeatable. Roles "
                           "(case file [vois] or --voi-role): perfused (one per territory) or whole_liver, tumour, "
                           "lung, normal_liver")
    _add(plan, "out")
    plan.add_argument("--case", default=None, help="case file (TOML or JSON) with the roles and the [plan] table")
    plan.add_argument("--case-id", default=None, help="case id naming the outputs (never a patient name)")
    plan.add_argument("--ct", default=None, metavar="CT",
                      help="CT series (folder or file, HU) of the SPECT/CT: its densities enter the predicted dose "
                           "(see --method) and the VOIs' masses, the body outline comes from it, and the report draws "
                           "the dose over it")
    _add(plan, "method")
    _add(plan, "tissue")
    _add(plan, "kernel_tables")
    _add(plan, "hu_table")
    _add(plan, "outside_body")
    plan.add_argument("--series-uid", default=None, help="SeriesInstanceUID to load when SCAN holds several series")
    plan.add_argument("--activity", action="append", default=[], metavar="TERRITORY=GBQ",
                      help="planned Y-90 activity reaching the patient for a territory, in GBq (over the case "
                           "file's [plan] activities_gbq); repeatable. A territory without one is shown at its voxel "
                           "plan's activity")
    _add(plan, "lung_shunt", help="the case's lung shunt fraction, 0 <= LSF < 1 (e.g. from planar MAA scintigraphy)")
    plan.add_argument("--lung-shunt-from", choices=("case", "counts"), default=None,
                      help="case: the case's lung shunt fraction; counts: measured on the SPECT's lung and liver VOIs "
                           "(default: the case's when it has one, else counts)")
    _add(plan, "sphere_type", help="microsphere product: glass (dose constant 50 Gy kg/GBq) or resin (49.67, and the "
                                   "BSA method)")
    _add(plan, "residual")
    _add(plan, "voi_role")
    _add(plan, "scan_units", choices=("CNTS", "BQML"),
         help="units of an MAA SPECT read from a NIfTI, NRRD or MetaImage file: counts or Bq/mL")
    _add(plan, "registered")
    _add(plan, "anonymize")
    _add(plan, "force")


def _activities(items: Sequence[str]) -> dict[str, float] | None:
    """``--activity TERRITORY=GBQ`` items as a mapping (values checked by the plan settings)."""
    from .errors import InputError

    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            gbq = float(value)
        except ValueError:
            gbq = math.nan
        if not sep or not name or not math.isfinite(gbq):
            raise InputError(f"--activity {item!r}: expected TERRITORY=GBQ, e.g. --activity 'right lobe=2.1'")
        if name in out:
            raise InputError(f"--activity: territory {name!r} is given twice")
        out[name] = gbq
    return out or None


def _plan(args: argparse.Namespace) -> int:
    from .plan import run_plan

    roles = _voi_roles(args.voi_role) or None
    overrides: dict[str, object] = {
        "case_id": args.case_id, "lung_shunt_fraction": args.lung_shunt, "sphere_type": args.sphere_type,
        "residual_fraction": args.residual, "scan_units": args.scan_units, "voi_roles": roles,
    }
    plan_overrides = {"activities_gbq": _activities(args.activity), "lung_shunt": args.lung_shunt_from}
    result = run_plan(args.scan, args.voi, args.out, case=args.case, method=args.method, tissue=args.tissue,
                      kernel_tables=args.kernel_tables, series_uid=args.series_uid, registered=args.registered,
                      anonymize=args.anonymize, force=args.force, overrides=overrides, plan_overrides=plan_overrides,
                      progress=_progress(args, ["load", "vois"] + (["ct"] if args.ct else []) +
                                         ["dose", "plan", "dvh", "outputs"]),
                      ct=args.ct, hu_table=args.hu_table, outside_body=args.outside_body)
    for caveat in result.caveats:
        logger.warning("%s: %s", caveat.stage, caveat.message)
    plan = result.plan or {}
    lsf = plan.get("lung_shunt", {})
    print(f"case {result.case_id}: lung shunt {lsf.get('value', math.nan):.1%} ({lsf.get('used', '?')})")
    for name, t in plan.get("territories", {}).items():
        a = t.get("activity_gbq")
        voxel = (f"{a:.3g} GBq, bound by {t.get('binding_constraint')}" if a is not None and math.isfinite(a)
                 else "no upper bound")
        models = t.get("models", {})
        parts = [f"{key} {models[key]['activity_gbq']:.3g} GBq" for key in ("mird", "partition", "bsa")
                 if isinstance(models.get(key), dict) and models[key].get("activity_gbq") is not None]
        print(f"  {name}: voxel plan {voxel}" + (f"; {', '.join(parts)}" if parts else ""))
    print(f"outputs in {args.out}")
    return EXIT_OK


# --------------------------------------------------------------------------- compare


def _compare_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    cmp = sub.add_parser(
        "compare",
        help="predicted (voxeldose plan) against delivered (voxeldose run) dose: per-VOI metrics, DVH overlay, "
             "dose difference, isodose overlap, gamma",
        description=(
            "Compare the predicted dose of a 'voxeldose plan' output folder (Tc-99m MAA SPECT) with the delivered "
            "dose of a 'voxeldose run' output folder (post-treatment Y-90 PET or SPECT). The predicted dose is "
            "interpolated (trilinear, by world coordinates; not dose conserving) onto the delivered dose's grid, "
            "through --transform if given; the VOIs are loaded onto that grid. Writes into OUT: comparison.json, "
            "dose_difference.nii.gz (delivered - predicted, Gy), predicted_on_common_grid.nii.gz, dvh_overlay.csv, "
            "isodose_overlap.csv, report.html (and gamma.nii.gz with --gamma). Nothing is written unless the whole "
            "comparison succeeds; existing results are kept unless --force."
        ),
    )
    cmp.add_argument("predicted", metavar="PREDICTED", help="output folder of 'voxeldose plan' (or run): its "
                     "dose.nii.gz (Gy) and metrics.json")
    cmp.add_argument("delivered", metavar="DELIVERED", help="output folder of 'voxeldose run': its dose.nii.gz (Gy) "
                     "and metrics.json; its grid is the common grid")
    cmp.add_argument("--voi", action="append", default=[], metavar="VOI",
                     help="RTSTRUCT, SEG, 3D Slicer .seg.nrrd or label map, loaded onto the delivered dose's grid; "
                          "repeatable")
    _add(cmp, "out")
    cmp.add_argument("--transform", default=None, metavar="FILE",
                     help="rigid registration, planning frame to post-treatment frame (p_post = M p_plan, mm, DICOM "
                          "LPS): a text file of 4 rows of 4 numbers, or JSON with a \"matrix\" key (default: one "
                          "patient frame)")
    cmp.add_argument("--gamma", nargs=2, type=_positive_float, default=None, metavar=("DOSE_PCT", "DTA_MM"),
                     help="also the global 3-D gamma index: dose criterion in %% of the delivered maximum and "
                          "distance to agreement in mm (e.g. 5 3)")
    cmp.add_argument("--gamma-cutoff", type=float, default=10.0, metavar="PCT",
                     help="gamma: delivered voxels below this %% of the delivered maximum are not evaluated "
                          "(default 10)")
    cmp.add_argument("--isodose-reference", choices=("own", "delivered", "predicted"), default="own",
                     help="isodose levels in %% of each map's own maximum (own, default), or of one map's maximum "
                          "for both")
    cmp.add_argument("--isodose-voi", default=None, metavar="NAME",
                     help="take the isodose maxima and regions within this VOI (e.g. liver: a PET's maximum is one "
                          "noisy voxel)")
    cmp.add_argument("--accept-different-cases", action="store_true",
                     help="compare folders whose metrics.json name different case ids")
    _add(cmp, "voi_role", help="role of a VOI (tumour, normal_liver, whole_liver, lung, perfused), over the roles "
                               "both folders' metrics.json record; with a whole liver and tumours, the normal liver "
                               "(and the perfused normal liver) is derived as run derives it; repeatable")
    _add(cmp, "registered", help="accept VOI files, or a predicted dose, from another frame of reference without "
                                 "--transform (you state they are registered)")
    _add(cmp, "force")


def _compare(args: argparse.Namespace) -> int:
    from .compare import run_compare
    from .errors import InputError

    if not args.voi:
        raise InputError("compare: give at least one --voi (RTSTRUCT, SEG or label map), e.g. the liver and tumours")
    gamma = None if args.gamma is None else (args.gamma[0], args.gamma[1], args.gamma_cutoff)
    comparison = run_compare(args.predicted, args.delivered, args.voi, args.out, voi_roles=_voi_roles(args.voi_role),
                             transform=args.transform, registered=args.registered,
                             accept_different_cases=args.accept_different_cases,
                             isodose_reference=args.isodose_reference, isodose_region=args.isodose_voi, gamma=gamma,
                             force=args.force)
    for caveat in comparison.caveats:
        logger.warning("compare: %s", caveat)
    for name, v in comparison.vois.items():
        print(f"{name}: Dmean predicted {v.predicted['mean_gy']:.1f} Gy, delivered {v.delivered['mean_gy']:.1f} Gy "
              f"({v.difference['mean_gy']:+.1f} Gy)")
    if comparison.gamma is not None:
        g = comparison.gamma
        print(f"gamma {g.dose_pct:g} %/{g.dta_mm:g} mm: {g.pass_rate_pct:.1f} % pass")
    inputs = comparison.provenance.get("inputs", {})
    print(f"comparison of {inputs.get('predicted', {}).get('case_id')} (predicted) and "
          f"{inputs.get('delivered', {}).get('case_id')} (delivered): outputs in {args.out}")
    return EXIT_OK


# --------------------------------------------------------------------------- phantom


def _phantom(args: argparse.Namespace) -> int:
    import shutil
    import tempfile
    from pathlib import Path

    from .errors import InputError
    from .phantoms.export import WRITE_DEFAULT, write_phantom

    maa_options = {"--maa-tumour-to-normal": args.maa_tumour_to_normal, "--maa-lung-shunt": args.maa_lung_shunt,
                   "--maa-cold-tumour": args.maa_cold_tumour}
    given = [flag for flag, value in maa_options.items() if value is not None]
    if (args.maa or given) and args.name != "liver":
        raise InputError(f"--maa and its options are for the liver phantom, not {args.name!r}")
    if given and not args.maa:
        raise InputError(f"{', '.join(given)} describe the MAA SPECT: add --maa to write it")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists and is not an empty folder; choose a new --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, object] = {"delay_h": args.delay_h, "decay_correction": args.decay_correction,
                                  "scanner_nuclide": args.scanner_nuclide, "seed": args.seed,
                                  "case_id": args.case_id or f"phantom-{args.name}"}
    if args.name == "liver":
        options.update(administered_gbq=args.administered_gbq, lung_shunt_fraction=args.lung_shunt,
                       tumour_to_normal=args.tumour_to_normal, pet_spacing_xyz_mm=tuple(args.pet_spacing),
                       spect_spacing_xyz_mm=tuple(args.spect_spacing), ct_spacing_xyz_mm=tuple(args.ct_spacing),
                       fwhm_mm=args.fwhm_mm, spect_noise=args.spect_noise, lung_interface=args.lung_interface)
        if args.maa:
            options.update(write=(*WRITE_DEFAULT, "MAA"), maa_tumour_to_normal=args.maa_tumour_to_normal,
                           maa_lung_shunt_fraction=args.maa_lung_shunt, maa_cold_tumour=args.maa_cold_tumour)
    t0 = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        write_phantom(args.name, staging / "case", **options)
        if out.exists():
            out.rmdir()
        (staging / "case").rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote phantom %s to %s in %.1f s", args.name, out, time.perf_counter() - t0)
    print(f"{args.name} phantom written to {out}")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    import json

    from .constants import SOFT_TISSUE_DENSITY_G_PER_CM3
    import tempfile
    from pathlib import Path

    from .phantoms.export import write_liver_case
    from .pipeline import run_case

    with tempfile.TemporaryDirectory(prefix="voxeldose-demo-") as tmp:
        export = Path(tmp) / "export"
        t0 = time.perf_counter()
        write_liver_case(export, administered_gbq=args.administered_gbq, lung_shunt_fraction=args.lung_shunt,
                         fwhm_mm=args.fwhm_mm, write=("PET" if args.scan == "pet" else "SPECT", "CT", "RTSTRUCT"),
                         case_id="demo-liver")
        logger.info("wrote the liver phantom as DICOM in %.1f s", time.perf_counter() - t0)
        truth = json.loads((export / "truth.json").read_text(encoding="utf-8"))
        result = run_case(export / args.scan.upper(), [export / "RTSTRUCT.dcm"], args.out,
                          case=export / "case.toml", method=args.method, kernel_tables=args.kernel_tables,
                          force=args.force, progress=_progress(args))
    grid = result.provenance["grid"]
    shape = "x".join(str(n) for n in grid["shape_zyx"])
    spacing = " x ".join(f"{s:g}" for s in grid["spacing_mm"])
    print(f"voxeldose {__version__} demo: liver phantom as {args.scan.upper()} DICOM, [z,y,x] {shape}, "
          f"voxel {spacing} mm")
    print(f"administered {args.administered_gbq:g} GBq, lung shunt {args.lung_shunt:.0%}, method {args.method} "
          f"({result.provenance['dose']['kernel']})")
    print("steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.provenance["timings_s"].items()))
    print()
    expected = _expected_ldm_means(truth.get("phantom", {}))
    head = (f"{'VOI':<14}{'volume mL':>10}{'mean Gy':>9}{'LDM Gy':>8}{'D70 Gy':>8}{'D90 Gy':>8}{'D2 Gy':>8}"
            f"{'V100 %':>8}{'V205 %':>8}")
    print(head)
    print("-" * len(head))
    for name, m in result.metrics.items():
        ldm = expected.get(name)
        if ldm is not None:  # the analytic mean is in soft tissue; the VOI's doses at its density (lung)
            ldm *= SOFT_TISSUE_DENSITY_G_PER_CM3 / m["density_g_per_cm3"]
        print(
            f"{name:<14}{m['volume_ml']:10.1f}{m['mean_gy']:9.1f}"
            f"{(f'{ldm:8.1f}' if ldm is not None else f'{chr(8212):>8}')}"
            f"{m['D70_gy']:8.1f}{m['D90_gy']:8.1f}{m['D2_gy']:8.1f}{m['V100_pct']:8.1f}{m['V205_pct']:8.1f}"
        )
    print()
    print(
        "LDM Gy: analytic mean dose if every decay's energy stayed where the spheres lodged, at the VOI's density "
        "(soft tissue 1.04 g/cm3, lung 0.30 g/cm3). The kernel mean is lower in small tumours and higher just outside them: electrons "
        "cross the VOI surfaces. The dose map is soft tissue; the lung VOI's doses are at lung density "
        "(0.30 g/cm3: the soft-tissue dose x 1.04 / 0.30)."
    )
    for text in result.warnings:
        print(f"warning: {text}")
    out = Path(args.out)
    print(f"outputs in {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return EXIT_OK


def _voi_roles(items: Sequence[str]) -> dict[str, str]:
    """``--voi-role NAME=ROLE`` items as a mapping (roles checked by the case)."""
    from .errors import InputError

    roles: dict[str, str] = {}
    for item in items:
        name, sep, role = item.rpartition("=")
        if not sep or not name or not role:
            raise InputError(f"--voi-role {item!r}: expected NAME=ROLE, e.g. --voi-role liver=whole_liver")
        roles[name] = role
    return roles


def _cohort_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The case values of the options in :data:`_COHORT_OPTIONS`, as :class:`voxeldose.Case` fields."""
    roles = _voi_roles(args.voi_role)
    values: dict[str, object] = {
        "residual_fraction": args.residual, "sphere_type": args.sphere_type, "scanner_nuclide": args.scanner_nuclide,
        "calibration_voi": args.calibration_voi, "scan_modality": args.scan_modality, "scan_units": args.scan_units,
        "decay_correction": args.decay_correction, "voi_roles": roles or None,
    }
    samples = {k: v for k, v in (("n", getattr(args, "uncertainty", None)), ("seed", getattr(args, "seed", None)))
               if v is not None}
    if samples:
        values["uncertainty"] = samples
    return {k: v for k, v in values.items() if v is not None}


def _run(args: argparse.Namespace) -> int:
    from .pipeline import run_case

    overrides: dict[str, object] = {
        "case_id": args.case_id, "administered_gbq": args.administered_gbq,
        "administration_datetime": args.administration_time, "lung_shunt_fraction": args.lung_shunt,
        "accept_activity_mismatch": args.accept_activity_mismatch, "scan_datetime": args.scan_time,
        **_cohort_overrides(args),
    }
    result = run_case(args.scan, args.voi, args.out, case=args.case, method=args.method, tissue=args.tissue,
                      kernel_tables=args.kernel_tables, series_uid=args.series_uid, registered=args.registered,
                      anonymize=args.anonymize, force=args.force, overrides=overrides, progress=_progress(args),
                      ct=args.ct, hu_table=args.hu_table, outside_body=args.outside_body)
    for caveat in result.caveats:
        logger.warning("%s: %s", caveat.stage, caveat.message)
    print(f"case {result.case_id}: outputs in {args.out}")
    return EXIT_OK


def _batch(args: argparse.Namespace) -> int:
    from .batch import run_batch

    result = run_batch(args.input, args.out, workers=args.workers, scheduler=args.scheduler, method=args.method,
                       tissue=args.tissue, kernel_tables=args.kernel_tables, anonymize=args.anonymize,
                       registered=args.registered, overrides=_cohort_overrides(args), voi_format=args.voi_format,
                       force=args.force, progress=not args.quiet, hu_table=args.hu_table,
                       outside_body=args.outside_body)
    print(f"{result.n_ok} case(s) done, {result.n_skipped} up to date, {result.n_failed} failed "
          f"in {result.elapsed_s:.1f} s; cohort table {result.out_dir / 'cohort.csv'}")
    if result.n_failed:
        print(f"failures: {result.out_dir / 'failures.csv'}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def _progress(args: argparse.Namespace, steps: Sequence[str] | None = None):  # type: ignore[no-untyped-def]
    """A step reporter: a progress bar on a terminal (tqdm), nothing when quiet; ``steps`` are the
    timed steps in order (default those of ``run``)."""
    if args.quiet:
        return None
    from tqdm import tqdm

    if steps is None:
        steps = ["load", "vois", *(["ct"] if getattr(args, "ct", None) else []), "calibrate", "dose", "dvh", "outputs"]
    bar = tqdm(total=len(steps), unit="step", file=sys.stderr, disable=None, leave=False,
               bar_format="{desc:<12}{bar:20} {n_fmt}/{total_fmt} [{elapsed}]")

    def report(name: str) -> None:
        # each step's start means the previous one finished
        if bar.n < len(steps) and name != steps[0]:
            bar.update(1)
        bar.set_description_str(name)
        if name == steps[-1]:
            bar.close()

    return report


def _expected_ldm_means(truth: object) -> dict[str, float]:
    """Per-VOI analytic local-deposition mean dose from the phantom's truth record."""
    vois = truth.get("vois", {}) if isinstance(truth, dict) else {}
    out = {}
    for name, record in vois.items():
        for key in ("ldm_mean_dose_gy", "expected_ldm_mean_gy", "ldm_dose_gy"):
            if key in record:
                out[name] = float(record[key])
                break
    return out


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message. Anonymized runs
    write the seconds since the start instead of the time (the date of a run dates the scan)."""

    def __init__(self, anonymize: bool = False) -> None:
        super().__init__()
        self.anonymize = anonymize

    def format(self, record: logging.LogRecord) -> str:
        import datetime as dt
        import json

        entry = {
            **({"elapsed_s": round(record.relativeCreated / 1000.0, 3)} if self.anonymize else
               {"time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat()}),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


#: Python's cyclic garbage collector runs a full collection (of every object the process holds:
#: numba, SciPy, matplotlib, pydicom are a million of them) after every ``threshold2`` collections
#: of the middle generation, 10 by default: three or four in a fresh ``voxeldose run`` of the
#: phantom, 0.2-0.27 s of its ~3 s (measured with ``gc.callbacks``). The single-case commands
#: raise it to :data:`FULL_COLLECTION_EVERY` while they run, so that a case sees none: the young
#: generations are still collected as usual (cycles that die young, e.g. a report's figures, are
#: freed), and an array that no cycle holds is freed by reference counting as before. The batch
#: command keeps Python's setting (its process runs the cluster for hours); in-process callers get
#: their own setting back when :func:`main` returns.
FULL_COLLECTION_EVERY = 100


@contextlib.contextmanager
def _rare_full_collections(enabled: bool) -> Iterator[None]:
    old = gc.get_threshold()
    if enabled:
        gc.set_threshold(old[0], old[1], max(old[2], FULL_COLLECTION_EVERY))
    try:
        yield
    finally:
        gc.set_threshold(*old)


def console() -> int:
    """The ``voxeldose`` console script: :func:`main`, then every object frozen out of the cyclic
    garbage collector (``gc.freeze``) before the interpreter exits.

    At exit Python collects the whole heap several times while it tears the modules down: 0.4-0.6 s
    of a fresh ``voxeldose run`` (measured between ``main`` returning and the process ending; 0.05 s
    with the heap frozen). By then every output is written, closed and in place (each file is
    written in a ``with`` block and closed before the folder is moved into place), and the atexit
    handlers (logging's, temporary folders') still run; what is skipped is the search for cycles
    in memory that the operating system reclaims anyway, and with it the finalizers of objects
    caught in a cycle, which hold no open output. Not for in-process callers of :func:`main`,
    whose process goes on.
    """
    code = main()
    gc.freeze()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (``voxeldose ...``) called in process; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(anonymize=bool(getattr(args, "anonymize", False))) if args.log_json else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("voxeldose")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if args.quiet else logging.INFO)
    root.propagate = False
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        with warnings.catch_warnings(), _rare_full_collections(args.command != "batch"):
            warnings.simplefilter("default")
            if args.command == "demo":
                return _demo(args)
            if args.command == "phantom":
                return _phantom(args)
            if args.command == "run":
                return _run(args)
            if args.command == "batch":
                return _batch(args)
            if args.command == "plan":
                return _plan(args)
            if args.command == "compare":
                return _compare(args)
    except VoxelDoseError as exc:
        print(f"voxeldose: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception:  # noqa: BLE001 - the CLI's last line of defence
        logger.exception("internal error; please report it with the command line you used")
        return EXIT_INTERNAL
    return EXIT_INTERNAL  # pragma: no cover - unknown command is rejected by argparse


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console())
