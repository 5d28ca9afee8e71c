"""Calibration: an image in scanner units -> Y-90 activity (MBq) per voxel at administration.

:func:`calibrate` turns a Y-90 PET in Bq/mL or a bremsstrahlung SPECT in counts into an
:class:`ActivityMap`: the activity in MBq in each voxel at the administration time, on the
image's grid, with a JSON-able provenance record of every factor, time and constant used and
where each came from. Values the calibration needs and cannot find are errors that name the
option (and case-file key) to pass; nothing is guessed silently.

Y-90 PET (units "BQML", modality "PT")
--------------------------------------
A scanner configured for nuclide X (ideally Y-90) counts positrons over a frame that starts at
``t_s`` and lasts ``T``, turns the frame-averaged positron rate into activity with X's positron
fraction ``p_X``, and multiplies by a decay factor ``D`` (DecayFactor, 0054,1321) that refers the
value to a reference time ``t_ref`` with X's half-life (DICOM PS3.3 C.8.9.1, C.8.9.4):

- DecayCorrection NONE: ``D = 1``: the value is the average over the frame;
- START: ``t_ref`` is the series reference time. DICOM makes Series Date/Time the reference of
  PET; following the QIBA vendor-neutral SUV pseudo-code, when the series time is later than
  the (earliest) acquisition time, the series was saved again after the scan, and GE's private
  scan start (0009,100D, GEMS_PETD_01) is used when present, else the earliest acquisition time
  (recorded in the provenance);
- ADMIN: ``t_ref`` is RadiopharmaceuticalStartDateTime (0018,1078).

With ``lambda_X T / (1 - e^(-lambda_X T))`` the frame-average-to-frame-start factor ``F_X``, the
factor a scanner applies is ``D = F_X e^(lambda_X (t_s - t_ref))``. The activity at the
administration time ``t_a`` is then

    A0 [MBq] = v [Bq/mL] x V [mL] x 1e-6 / D x (p_X / p_Y90) x F_Y90 x e^(lambda_Y90 (t_s - t_a))

i.e. undo the scanner's decay correction (back to the frame average), convert from X's
positron fraction to Y-90's internal-pair-production yield, go from the frame average to the
frame start exactly, and decay-correct to the administration with Y-90's half-life (ICRP-107).
For a scanner set to Y-90, ``D`` is computed from the header's half-life and times (it then
cancels to ``e^(lambda (t_ref - t_a))``: the value at ``t_ref`` decayed back to ``t_a``), and the
header's DecayFactor is only cross-checked (a warning beyond 1 %). For a scanner set to another
nuclide, the header's DecayFactor is what the scanner applied and is used when present;
otherwise ``D`` is computed with X's half-life (header, else the table below) and the
frame-decay term, with a warning. Such corrections are applied only when the user confirms the
nuclide (``scanner_nuclide``, case file or override), which must agree with the header.

Multi-bed PET: a PET acquired bed after bed holds, per slice, its own frame start, duration and
DecayFactor (:attr:`ImageMeta.slice_acquisition_datetimes` and siblings, filled by the loader
when the slices differ). Each slice is then calibrated with its own ``t_s``, ``T`` and ``D``. For a
scanner set to Y-90 with START or ADMIN correction this changes nothing (every slice refers to
``t_ref``), but with NONE, or with a scanner set to another nuclide, the per-bed factors differ:
F-18's half-life over a 15 min bed offset is 10 %. The provenance lists the groups of slices
that share their timing (``per_slice``), each with its total factor.

Bremsstrahlung SPECT (units "CNTS" or "CPS", or modality "NM")
--------------------------------------------------------------
A SPECT whose header names another nuclide than Y-90 (RadionuclideCodeSequence, or a
RadionuclideHalfLife that is not Y-90's), e.g. the Tc-99m MAA SPECT of the planning, is refused:
its counts are not Y-90's. A header that names no nuclide is taken as Y-90 bremsstrahlung.
Self-calibration: the counts in the calibration VOI's voxels (every voxel the VOI touches,
``mask > 0``) are set equal to the activity delivered to the liver,
``administered x (1 - residual) x (1 - LSF)``, decayed to the scan time; every voxel is then
decay-corrected back to the administration. The two decay factors cancel, so the result does not
depend on the times; both the activity at the scan and at administration are recorded when the
times are known. One MBq-per-count factor applies to the whole image: voxels outside the VOI
(extrahepatic uptake, lungs, spill-out) get activity in proportion to their counts, so the image
total may exceed the VOI's. A voxel the VOI only partly covers counts whole: its counts come from
the liver activity in the covered part (and the spill-out of the liver next to it), not from the
non-avid tissue beyond. Weighting it by its fraction would under-count the liver by the
partial-volume fraction of the surface (2.6 % for the 1.5 L liver phantom at 4.42 mm).

References
----------
DICOM PS3.3 (2024), C.8.9.1 PET Series Module (Series Date/Time as the reference time,
Decay Correction), C.8.9.4 PET Image Module (Decay Factor), C.8.9.2 Radiopharmaceutical
Information Module.

QIBA FDG-PET/CT Technical Committee, "Vendor-neutral pseudo-code for SUV calculation" (QIBA
wiki, 2013): Series versus Acquisition Date/Time for the decay reference.

ICRP Publication 107, Ann. ICRP 38(3), 2008. doi:10.1016/j.icrp.2008.10.004 (half-lives of
Y-90, F-18 and Ge-68; F-18 positron yield).

Selwyn RG et al., Appl Radiat Isot 65:318-327, 2007. doi:10.1016/j.apradiso.2006.08.009
(Y-90 internal-pair-production yield 31.86e-6).

DDEP / LNHB "Table de Radionucleides" and NNDC NuDat (ENSDF): Ga-68 half-life 67.71 min and
positron intensity 88.91 %, Ge-68 half-life 270.95 d.

Chiesa C et al., "EANM dosimetry committee series on standard operational procedures: a unified
methodology for 99mTc-MAA pre- and 90Y peri-therapy dosimetry in liver radioembolization with
90Y microspheres", EJNMMI Phys 8:77, 2021. doi:10.1186/s40658-021-00394-3 (SPECT
self-calibration on the administered activity net of lung shunt and residual).

Dezarn WA et al., AAPM recommendations for 90Y microsphere brachytherapy, Med Phys
38:4824-4845, 2011. doi:10.1118/1.3608909
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import warnings
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import constants as C
from ._version import __version__
from .case import Case
from .errors import CalibrationError, InputError, VoxelDoseWarning
from .image import Image, mask_image
from .nuclides import NUCLIDES, SPECT_NUCLIDES, Y90, normalise_nuclide, nuclide_of_code

__all__ = [
    "ActivityMap",
    "calibrate",
    "HALF_LIFE_TOLERANCE",
    "DECAY_FACTOR_TOLERANCE",
]

log = logging.getLogger(__name__)

#: A header half-life within this relative difference of a nuclide's is that nuclide's (0.5 %:
#: Y-90 is written as 64.0 to 64.2 h by different vendors and package inserts).
HALF_LIFE_TOLERANCE = 0.005

#: ``calibrate(..., calibration_mask=FIELD_OF_VIEW)``: a SPECT self-calibrated on every count of
#: the image, said explicitly (a missing calibration VOI is an error, not this).
FIELD_OF_VIEW = "field_of_view"

#: A header positron fraction further than this (relative) from its nuclide's contradicts it (vendors
#: write Y-90's as 31.86e-6 or 32e-6: 0.4 % apart).
POSITRON_FRACTION_CONTRADICTION = 0.05

#: The calibrated activity may differ from the administered activity net of shunt and residual by
#: this fraction before a caveat (calibrated PET is typically within 10-15 % of it), and by this
#: factor before an error (an F-18 PET read as Y-90 is 30 000 times off).
ACTIVITY_WARN_FRACTION = 0.25
ACTIVITY_ERROR_FACTOR = 2.0

#: The header's DecayFactor may differ from the one computed from half-life and times by this
#: much (relative) before a warning.
DECAY_FACTOR_TOLERANCE = 0.01

#: Administration times from the case and from the header that differ by more than this (s)
#: give a warning (the case's is used).
ADMINISTRATION_MISMATCH_S = 60.0

#: Scans later than this after the administration get a caveat: post-treatment Y-90 imaging is
#: usually done within a day of it, and a decay factor of more than 2.2 (72 h, 1.12 half-lives)
#: is worth a look at the dates.
SCAN_DELAY_CAVEAT_H = 72.0

#: Scans later than this are refused for Y-90 PET, whose activity is decayed back over the interval:
#: after 14 days (5.2 half-lives) 2.6 % of the activity is left, some 830 positrons/s per GBq
#: administered (x 31.86e-6), too few for an image, so the dates are wrong (a 30-day month or a
#: year typed wrongly multiplies every dose by 2 400 or 10^41). A SPECT's self-calibration does not use the interval: a
#: caveat there.
SCAN_DELAY_LIMIT_H = 14 * 24.0

_LAMBDA_Y90 = C.Y90_DECAY_CONSTANT_PER_S


@dataclass(frozen=True)
class ActivityMap:
    """Y-90 activity per voxel at the administration time, and how it was obtained.

    Attributes
    ----------
    image : Image
        On the input's grid, ``units="MBQ"``, float32 [z, y, x]: activity (MBq) in each voxel
        at the administration time. Its metadata is the input's, with ``decay_correction="ADMIN"``,
        ``radiopharmaceutical_start_datetime`` the administration time used (when known) and no
        ``decay_factor``.
    provenance : dict
        JSON-able, ordered: ``method``, ``kind`` ("pet", "spect" or "activity": which calibration
        applied, for :mod:`voxeldose.uncertainty`), ``input``, ``case``, ``times`` (each with its value and
        where it came from), ``nuclides`` (half-lives and positron fractions with sources),
        ``factors`` (name, value, meaning and source of each), ``total_factor``, ``result``,
        ``checks`` and ``notes``. Caveats are warnings (``VoxelDoseWarning``), not provenance.
    """

    image: Image
    provenance: dict[str, Any]

    @property
    def total_mbq(self) -> float:
        """Sum of the activity over the image (MBq at administration)."""
        return float(np.sum(self.image.array, dtype=np.float64))

    def provenance_json(self, *, indent: int | None = 2) -> str:
        """The provenance as JSON text."""
        return json.dumps(self.provenance, indent=indent)


class _Record:
    """Collects the provenance of one calibration."""

    def __init__(self) -> None:
        self.times: dict[str, dict[str, Any]] = {}
        self.factors: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.result: dict[str, Any] = {}
        self.scanner: dict[str, Any] | None = None
        self.per_slice: list[dict[str, Any]] | None = None

    def time(self, name: str, value: _dt.datetime | None, source: str, **extra: Any) -> None:
        self.times[name] = {"value": None if value is None else value.isoformat(), "from": source, **extra}

    def factor(self, name: str, value: float, meaning: str, source: str, **extra: Any) -> float:
        self.factors.append({"name": name, "value": float(value), "meaning": meaning, "from": source, **extra})
        return float(value)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


# ---------------------------------------------------------------------------- public


def calibrate(
    image: Image,
    case: Case | None = None,
    *,
    calibration_mask: Image | ArrayLike | str | None = None,
    **overrides: Any,
) -> ActivityMap:
    """Y-90 activity (MBq) per voxel at the administration time, from a PET or SPECT image.

    Parameters
    ----------
    image : Image
        A Y-90 PET in Bq/mL (``units="BQML"``, modality "PT"), a bremsstrahlung SPECT in counts
        (``units="CNTS"`` or "CPS", or modality "NM"), or an already calibrated map
        (``units="MBQ"``, passed through). Its metadata supplies the times and the scanner's
        nuclide and decay correction (see the module documentation). Not modified.
    case : Case, optional
        Administered activity and time, lung shunt and residual fractions, the confirmed
        scanner nuclide, the calibration VOI's name.
    calibration_mask : Image or array [z, y, x], bool or float in [0, 1], or "field_of_view"
        SPECT: the calibration VOI on the image grid (fraction of each voxel inside); required:
        ``"field_of_view"`` says to take every count of the image, with a warning. PET: used only
        for a consistency check (the PET activity in it against the administered activity net of
        shunt and residual).
    **overrides
        Any :class:`~voxeldose.case.Case` field (``administration_datetime=``,
        ``administered_gbq=``, ``lung_shunt_fraction=``, ``residual_fraction=``,
        ``scanner_nuclide=``, ...). Non-None values take precedence over the case and the header.

    Returns
    -------
    ActivityMap
        ``image`` in MBq per voxel at administration (float32) and its ``provenance``.

    Raises
    ------
    CalibrationError
        If the units are not supported; a value the method needs is missing (the message names
        the option and case-file key); times are inconsistent (administration after the scan, a
        reference time after the scan); the scanner was set to another nuclide and the user has
        not confirmed it, or the confirmation contradicts the header; a PET names a single-photon
        nuclide (Tc-99m); a SPECT's header names a nuclide other than Y-90 (a Tc-99m MAA SPECT is
        for :func:`voxeldose.plan.compute_plan`); the SPECT counts in the calibration VOI are not
        positive; or the image is empty, all zero or has NaN/inf.
    InputError
        If ``image`` is not an :class:`~voxeldose.image.Image` or an override is unknown or out
        of range.
    VoiError
        If the calibration mask does not match the image grid or has values outside [0, 1].

    Warns
    -----
    VoxelDoseWarning
        For every caveat: whole field of view used for
        SPECT calibration, DecayFactor disagreeing with the times, a computed DecayFactor for
        another nuclide, administration times in the case and header that differ, ...

    Example
    -------
    >>> import datetime as dt, numpy as np
    >>> from voxeldose.image import Image, ImageMeta
    >>> t_admin = dt.datetime(2024, 3, 5, 10, 0)
    >>> meta = ImageMeta(modality="PT", decay_correction="ADMIN", radionuclide_half_life_s=230760.0,
    ...                  acquisition_datetime=t_admin + dt.timedelta(hours=20),
    ...                  radiopharmaceutical_start_datetime=t_admin)
    >>> pet = Image(np.full((2, 2, 2), 1e5, np.float32), (4.0, 4.0, 4.0), units="BQML", meta=meta)
    >>> amap = calibrate(pet)
    >>> round(float(amap.image.array[0, 0, 0]), 8)  # 1e5 Bq/mL x 0.064 mL = 6400 Bq
    0.0064
    """
    if not isinstance(image, Image):
        raise InputError(f"calibrate needs a voxeldose Image, got {type(image).__name__}")
    try:
        return _calibrate(image, case, calibration_mask, overrides)
    except CalibrationError as exc:
        # a scan read from files: the message names them (the series' folder), as the readers' do
        where = _source_of(image)
        if where and where not in str(exc):
            raise CalibrationError(f"scan {where}: {exc}") from exc
        raise


def _source_of(image: Image) -> str:
    files = image.meta.source_files
    if not files:
        return ""
    return str(Path(files[0]).parent) if len(files) > 1 else str(files[0])


def _calibrate(image: Image, case: Case | None, calibration_mask: Image | ArrayLike | str | None,
               overrides: dict[str, Any]) -> ActivityMap:
    case = _resolve_case(case, overrides)
    rec0 = _Record()
    image = _described_by_case(image, case, rec0)
    source_image = image
    image, case = _reconcile_times(image, case, rec0)
    values = _check_values(image)
    units = (image.units or "").upper()
    modality = (image.meta.modality or "").upper()
    rec = rec0

    if units == "MBQ" and image.meta.sop_class_uid:
        raise CalibrationError(
            f"the DICOM {image.meta.modality or 'image'} says Units (0054,1001) 'MBQ', which is no DICOM unit (a PET is "
            "in BQML, a SPECT in CNTS): its values cannot be taken as MBq per voxel at administration; re-export the "
            "series (units 'MBQ' are for activity maps voxeldose or a NIfTI file holds)")
    if units == "MBQ":
        method = "passthrough: already activity (MBq per voxel at administration)"
        kind = "activity"
        out = values
        t_admin = None
        rec.notes.append("image units are MBQ: taken as activity at administration, unchanged")
    elif units in ("CNTS", "CPS") or (modality == "NM" and units in ("", "BQML")):
        method = "bremsstrahlung SPECT self-calibration to the administered activity net of lung shunt and residual"
        kind = "spect"
        _refuse_spect_of_another_nuclide(image)
        out, t_admin = _calibrate_spect(values, image, case, calibration_mask, rec)
    elif units == "BQML" and modality in ("PT", ""):
        method = "Y-90 PET: Bq/mL to MBq per voxel, decay-corrected to the administration with Y-90's half-life"
        kind = "pet"
        if modality == "":
            rec.warn("the image has no modality; taken as PET because its units are Bq/mL")
        out, t_admin = _calibrate_pet(values, image, case, calibration_mask, rec)
    else:
        raise CalibrationError(
            f"cannot calibrate an image in units {image.units!r} (Units (0054,1001); modality {image.meta.modality!r}): "
            "supported are Y-90 PET in Bq/mL (units 'BQML', modality 'PT'), bremsstrahlung SPECT in "
            "counts (units 'CNTS' or 'CPS', or modality 'NM'), and activity maps already in MBq per "
            "voxel (units 'MBQ'); a CT (HU) or a dose map cannot be calibrated"
        )

    if units != "MBQ" or case.administered_gbq is not None:
        _check_total(out, image, case, calibration_mask if units in ("BQML",) else None, rec)
    result32 = np.ascontiguousarray(out, dtype=np.float32)
    meta_changes: dict[str, Any] = {"decay_correction": "ADMIN", "decay_factor": None,
                                    "slice_acquisition_datetimes": (), "slice_frame_durations_s": (),
                                    "slice_decay_factors": ()}
    if t_admin is not None:
        meta_changes["radiopharmaceutical_start_datetime"] = t_admin
        meta_changes["radiopharmaceutical_start_time"] = None
    result = source_image.with_array(result32, units="MBQ", **meta_changes)

    n_negative = int(np.count_nonzero(out < 0))
    total = float(np.sum(out, dtype=np.float64))
    prov: dict[str, Any] = {
        "method": method,
        "kind": kind,
        "voxeldose_version": __version__,
        "case_id": case.case_id,
        "input": _input_record(image),
        "case": {**case.to_dict(), "source_path": case.source_path,
                 "overridden": list(case.overridden_fields)},
        "times": rec.times,
        "nuclides": _nuclide_record(rec.scanner),
        "factors": rec.factors,
        "total_factor": _total_factor(rec.factors, units),
        "per_slice": rec.per_slice,
        "result": {
            "units": "MBQ",
            "meaning": "activity (MBq) in each voxel at the administration time",
            "total_mbq": total,
            "n_negative_voxels": n_negative,
        },
        "checks": rec.checks,
        "notes": rec.notes,
    }
    prov["result"].update(rec.result)
    for message in rec.warnings:
        warnings.warn(message, VoxelDoseWarning, stacklevel=3)
    log.debug("calibrated %s image of case %s: %.6g MBq in total", units, case.case_id, total)
    return ActivityMap(result, prov)


# ---------------------------------------------------------------------------- shared


def _resolve_case(case: Case | None, overrides: dict[str, Any]) -> Case:
    if case is not None and not isinstance(case, Case):
        raise InputError(f"case must be a voxeldose Case (see voxeldose.case.load_case), got {type(case).__name__}")
    if case is None:
        case_id = overrides.get("case_id") or "unnamed"
        case = Case(case_id=case_id)
    return case.with_overrides(**overrides)


def _check_values(image: Image) -> NDArray[np.float64]:
    arr = np.asarray(image.array)
    if arr.size == 0:
        raise CalibrationError(f"the image is empty (shape {arr.shape} [z, y, x])")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise CalibrationError(f"image values must be numbers, got dtype {arr.dtype}")
    values = arr.astype(np.float64)  # a new array: the input is never touched
    finite = np.isfinite(values)
    if not finite.all():
        n_bad = int(values.size - np.count_nonzero(finite))
        what = "all" if n_bad == values.size else f"{n_bad} of {values.size}"
        raise CalibrationError(
            f"{what} voxel values are NaN or infinite; replace them (e.g. with 0 outside the "
            "reconstructed field of view) before calibration"
        )
    if not np.any(values):
        raise CalibrationError(
            f"every voxel of the image is zero (shape {arr.shape}, units {image.units!r}); "
            "is it the right series?"
        )
    total = float(values.sum())
    if total <= 0.0:
        raise CalibrationError(
            f"the image's values sum to {total:.4g} {image.units or '(no units)'} ({int(np.count_nonzero(values < 0))} of "
            f"{values.size} voxels negative, largest {float(values.max()):.4g}): it holds no net activity to "
            "calibrate. Is it the right series, a difference image, or are its values inverted?"
        )
    return values


def _input_record(image: Image) -> dict[str, Any]:
    m = image.meta
    return {
        "units": image.units,
        "modality": m.modality,
        "series_instance_uid": m.series_instance_uid,
        "series_description": m.series_description,
        "manufacturer": m.manufacturer,
        "manufacturer_model": m.manufacturer_model,
        "shape_zyx": list(image.shape),
        "spacing_mm": list(image.spacing_mm),
        "voxel_volume_ml": image.voxel_volume_ml,
        "n_source_files": len(m.source_files),
        "geometry_notes": list(m.geometry_notes),
        "header": {
            "decay_correction": m.decay_correction,
            "decay_factor": m.decay_factor,
            "private_scan_datetime": None if m.private_scan_datetime is None else m.private_scan_datetime.isoformat(),
            "corrected_image": list(m.corrected_image),
            "radiopharmaceutical": m.radiopharmaceutical,
            "radionuclide": m.radionuclide,
            "radionuclide_code": m.radionuclide_code,
            "radionuclide_half_life_s": m.radionuclide_half_life_s,
            "radionuclide_positron_fraction": m.radionuclide_positron_fraction,
            "radionuclide_total_dose_bq": m.radionuclide_total_dose_bq,
            "frame_duration_s": m.frame_duration_s,
        },
    }


def _nuclide_record(scanner: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Y-90": {
            "half_life_s": C.Y90_HALF_LIFE_S,
            "half_life_source": Y90.half_life_source + " (voxeldose.constants.Y90_HALF_LIFE_S)",
            "positron_yield_per_decay": C.Y90_POSITRON_YIELD,
            "positron_yield_source": Y90.positron_fraction_source + " (voxeldose.constants.Y90_POSITRON_YIELD)",
        }
    }
    if scanner is not None:
        out["scanner_setting"] = scanner
    return out


def _total_factor(factors: list[dict[str, Any]], units: str) -> dict[str, Any]:
    product = 1.0
    for f in factors:
        product *= f["value"]
    unit = {"BQML": "MBq per (Bq/mL)", "CNTS": "MBq per count", "CPS": "MBq per count/s"}.get(units, "1")
    return {"value": product, "unit": f"{unit}, at administration",
            "meaning": "product of the factors: voxel value x this = MBq in the voxel at administration"}


def _described_by_case(image: Image, case: Case, rec: _Record) -> Image:
    """The scan with what the case file says of it: the units, acquisition start and decay
    correction a NIfTI, NRRD or MetaImage file cannot hold. For a DICOM scan the case's values
    must agree with the header's (a contradiction is an error, never a silent choice)."""
    m = image.meta
    changes: dict[str, Any] = {}
    if case.scan_modality is not None:
        if m.modality is None:
            changes["modality"] = case.scan_modality
            rec.notes.append(f"scan modality {case.scan_modality} from {case.source_of('scan_modality')}")
        elif m.modality.upper() != case.scan_modality:
            raise CalibrationError(
                f"scan_modality {case.scan_modality!r} ({case.source_of('scan_modality')}) contradicts the scan's "
                f"Modality {m.modality!r}: this is not the scan the case names; load the "
                f"{'PET' if case.scan_modality == 'PT' else 'SPECT'} series or correct scan_modality"
            )
    units = image.units
    if not units:
        if case.scan_units is None:
            if m.sop_class_uid:
                raise CalibrationError(
                    f"the DICOM {m.modality or 'image'} has no Units (0054,1001), so what its values measure is "
                    "unknown; re-export the series with its units, or give scan_units (case-file key, or --scan-units)")
            raise CalibrationError(
                "the scan's units are not known (a NIfTI, NRRD or MetaImage file does not say them): give scan_units "
                "(case-file key, or --scan-units): BQML for a Y-90 PET in Bq/mL, CNTS for a bremsstrahlung SPECT in "
                "counts, MBQ for activity per voxel at administration"
            )
        units = case.scan_units
        rec.notes.append(f"scan units {units} from {case.source_of('scan_units')}")
        if m.modality is None and "modality" not in changes:
            changes["modality"] = {"BQML": "PT", "CNTS": "NM"}.get(units)
    elif case.scan_units is not None and case.scan_units != units.upper():
        raise CalibrationError(
            f"scan_units {case.scan_units!r} ({case.source_of('scan_units')}) contradicts the header's units {units!r}; "
            "remove scan_units (it is for scans read from NIfTI, NRRD or MetaImage files) or load the right series"
        )
    if case.scan_modality == "PT" and (units or "").upper() in ("CNTS", "CPS"):
        raise CalibrationError(
            f"scan_modality 'PT' ({case.source_of('scan_modality')}) but the scan is in counts ({units!r}): a Y-90 PET "
            "is in Bq/mL; correct scan_modality (NM for a bremsstrahlung SPECT) or scan_units"
        )
    if case.scan_datetime is not None:
        header = m.acquisition_datetime or m.series_datetime
        if header is None:
            changes.update(acquisition_datetime=case.scan_datetime, series_datetime=case.scan_datetime)
            rec.notes.append(f"scan start {case.scan_datetime.isoformat()} from {case.source_of('scan_datetime')}")
        elif abs(_seconds(*_comparable(header, case.scan_datetime))) > ADMINISTRATION_MISMATCH_S:
            raise CalibrationError(
                f"scan_time {case.scan_datetime.isoformat()} ({case.source_of('scan_datetime')}) contradicts the "
                f"header's acquisition start {header.isoformat()}; remove scan_time (it is for scans read from NIfTI, "
                "NRRD or MetaImage files) or correct it"
            )
    if case.decay_correction is not None:
        if m.decay_correction is None:
            changes["decay_correction"] = case.decay_correction
            rec.notes.append(f"decay correction {case.decay_correction} from {case.source_of('decay_correction')}")
        elif m.decay_correction.upper() != case.decay_correction:
            raise CalibrationError(
                f"decay_correction {case.decay_correction!r} ({case.source_of('decay_correction')}) contradicts the "
                f"header's DecayCorrection (0054,1102) {m.decay_correction!r}; remove it from the case or correct it"
            )
    if not changes and units == image.units:
        return image
    return image.with_array(image.array, units=units, **changes)


def _comparable(a: _dt.datetime, b: _dt.datetime) -> tuple[_dt.datetime, _dt.datetime]:
    """``a`` and ``b`` on one footing: both as given when both or neither carry a UTC offset,
    else both on their wall clocks."""
    if (a.tzinfo is None) != (b.tzinfo is None):
        return a.replace(tzinfo=None), b.replace(tzinfo=None)
    return a, b


_TIME_FIELDS = ("series_datetime", "acquisition_datetime", "private_scan_datetime", "radiopharmaceutical_start_datetime")


def _reconcile_times(image: Image, case: Case, rec: _Record) -> tuple[Image, Case]:
    """Make the times of the image and the case comparable, and say how.

    A DICOM time is aware when its offset from UTC is known (a DT's own "+HHMM", or the
    TimezoneOffsetFromUTC of its file) and naive otherwise (the scanner's wall clock). All aware:
    exact, across a daylight-saving change too. The case's administration time without an offset
    is taken on the scanner's clock (its offset attached). The image's times all naive: every
    time is compared on its clock as written (an offset given in the case file is noted, and
    dropped). The image's times mixed: the same, with a caveat, since times written in different
    zones are then off by 1.09 % of the activity per hour.
    """
    m = image.meta
    image_times = {f: getattr(m, f) for f in _TIME_FIELDS if getattr(m, f) is not None}
    slice_times = [t for t in m.slice_acquisition_datetimes if t is not None]
    aware = {t.tzinfo is not None for t in [*image_times.values(), *slice_times]}
    admin = case.administration_datetime

    def wall(t: _dt.datetime | None) -> _dt.datetime | None:
        return None if t is None else t.replace(tzinfo=None)

    def strip_image() -> Image:
        changes: dict[str, Any] = {f: wall(t) for f, t in image_times.items()}
        changes["slice_acquisition_datetimes"] = tuple(wall(t) for t in m.slice_acquisition_datetimes)
        return image.with_array(image.array, **changes)

    if aware == {True}:
        if admin is not None and admin.tzinfo is None:
            zone = (m.acquisition_datetime or m.series_datetime or next(iter(image_times.values()))).tzinfo
            rec.notes.append(f"the administration time {admin.isoformat()} has no UTC offset: taken on the scanner's "
                             f"clock, whose offset the header states ({zone})")
            case = replace(case, administration_datetime=admin.replace(tzinfo=zone))
        return image, case
    if aware == {True, False}:
        with_offset = [f for f, t in image_times.items() if t.tzinfo is not None]
        rec.warn(
            f"some of the header's times carry a UTC offset ({', '.join(with_offset) or 'slice times'}) and others do "
            "not, and the header gives no TimezoneOffsetFromUTC (0008,0201) for them: every time is compared on its "
            f"clock as written; if they were written in different zones, the activity is off by "
            f"{math.expm1(C.Y90_DECAY_CONSTANT_PER_S * 3600.0):.2%} per hour"
        )
        image = strip_image()
    if admin is not None and admin.tzinfo is not None:
        if image_times:
            rec.notes.append(f"the scan's times carry no UTC offset: the administration time {admin.isoformat()} is "
                             "compared with them on its clock as written (its offset dropped)")
        case = replace(case, administration_datetime=wall(admin))
    return image, case


def _time_of_day_gap_s(a: _dt.time, b: _dt.time) -> float:
    """Smallest difference between two times of day (s), across midnight."""
    sa = a.hour * 3600 + a.minute * 60 + a.second + a.microsecond * 1e-6
    sb = b.hour * 3600 + b.minute * 60 + b.second + b.microsecond * 1e-6
    d = abs(sa - sb) % 86400.0
    return min(d, 86400.0 - d)


#: The factor by which a Y-90 activity decay-corrected to an administration one day too late is low.
_PER_DAY = math.exp(C.Y90_DECAY_CONSTANT_PER_S * 86400.0)

_START_TIME_TAG = "RadiopharmaceuticalStartTime (0018,1072)"


def _administration_time(case: Case, image: Image, rec: _Record) -> tuple[_dt.datetime | None, str]:
    """Administration time: override > case > RadiopharmaceuticalStartDateTime > the header's time
    of day on the scan's date (a loud caveat, refused when that would follow the scan); recorded
    with the true source of each."""
    m = image.meta
    header = m.radiopharmaceutical_start_datetime
    time_of_day = m.radiopharmaceutical_start_time if header is None else None
    if case.administration_datetime is not None:
        t = case.administration_datetime
        source = case.source_of("administration_datetime")
        if header is not None and abs((header - t).total_seconds()) > ADMINISTRATION_MISMATCH_S:
            rec.warn(
                f"the administration time {t.isoformat()} ({source}) differs from the header's "
                f"RadiopharmaceuticalStartDateTime {header.isoformat()} by "
                f"{(t - header).total_seconds() / 60:+.1f} min; the former is used"
            )
        if time_of_day is not None and _time_of_day_gap_s(time_of_day, t.time()) > ADMINISTRATION_MISMATCH_S:
            rec.warn(
                f"the administration time {t.isoformat()} ({source}) differs from the header's {_START_TIME_TAG} "
                f"{time_of_day.isoformat()} (a time of day, without a date) by "
                f"{_time_of_day_gap_s(time_of_day, t.time()) / 60:.1f} min; the former is used"
            )
    elif header is not None:
        t, source = header, "DICOM RadiopharmaceuticalStartDateTime (0018,1078)"
    elif time_of_day is not None:
        scan = m.acquisition_datetime or m.series_datetime
        scan_tag = "AcquisitionDate" if m.acquisition_datetime is not None else "SeriesDate"
        if scan is None:
            raise CalibrationError(
                f"the header gives the administration time of day only ({_START_TIME_TAG} {time_of_day.isoformat()}, no "
                "date) and no scan date either; give the administration date and time: administration_datetime= "
                "(case-file key administration_time, or --administration-time)"
            )
        t = _dt.datetime.combine(scan.date(), time_of_day, tzinfo=scan.tzinfo)
        if t > scan:
            raise CalibrationError(
                f"the header gives the administration time of day only ({_START_TIME_TAG} {time_of_day.isoformat()}, no "
                f"date); on the scan's date, {scan.date().isoformat()}, it would follow the scan start "
                f"{scan.isoformat()}, so the administration was on an earlier day, which the header does not say. "
                "Give the administration date and time: administration_datetime= (case-file key administration_time, "
                "or --administration-time)"
            )
        rec.warn(
            f"the administration date is not known: the header gives the time of day only ({_START_TIME_TAG} "
            f"{time_of_day.isoformat()}), taken on the scan's date {scan.date().isoformat()} ({scan_tag}), "
            f"{(scan - t).total_seconds() / 3600:.1f} h before the scan. If the administration was on an earlier day, "
            f"every activity and dose here is too low by a factor {_PER_DAY:.3f} per day ({_PER_DAY - 1:.0%}). Give "
            "the administration date and time: case-file key administration_time, or --administration-time"
        )
        source = f"DICOM {_START_TIME_TAG}: a time of day only, put on the scan's date ({scan_tag} (0008,0022/0021))"
    else:
        return None, ""
    rec.time("administration", t, source)
    return t, source


def _seconds(a: _dt.datetime, b: _dt.datetime) -> float:
    """a - b in seconds."""
    return (a - b).total_seconds()


def _frame_start_factor(lam: float, duration_s: float | None) -> float:
    """lam T / (1 - e^(-lam T)): activity at the frame start over its average over the frame."""
    if duration_s is None:
        return 1.0
    x = lam * duration_s
    return 1.0 if x == 0.0 else x / -math.expm1(-x)


# ---------------------------------------------------------------------------- PET


@dataclass(frozen=True)
class _Scanner:
    nuclide: str
    half_life_s: float
    half_life_source: str
    positron_fraction: float
    positron_fraction_source: str
    is_y90: bool


def _header_nuclide(image: Image, rec: _Record) -> tuple[str | None, str | None]:
    """The nuclide the header names (code meaning first, then code value) and where from."""
    m = image.meta
    by_meaning = normalise_nuclide(m.radionuclide) or nuclide_of_code(m.radionuclide)
    code = (m.radionuclide_code or "").strip()
    by_code = nuclide_of_code(code) or normalise_nuclide(code)
    hl = m.radionuclide_half_life_s
    by_half_life = _match_half_life(hl)
    if by_meaning and by_code and by_meaning != by_code:
        rec.notes.append(
            f"RadionuclideCodeSequence: code value {code!r} means {by_code} in DICOM CID 4020 but the "
            f"code meaning {m.radionuclide!r} names {by_meaning}; the meaning is used"
        )
    if by_meaning:
        return by_meaning, "RadionuclideCodeSequence (0054,0300) CodeMeaning"
    if by_code:
        if by_half_life and by_half_life != by_code:
            rec.notes.append(
                f"RadionuclideCodeSequence code value {code!r} means {by_code} in DICOM CID 4020, but "
                f"RadionuclideHalfLife {hl:g} s is {by_half_life}'s; the half-life (what the scanner "
                "applied) is used"
            )
            return by_half_life, "RadionuclideHalfLife (0018,1075)"
        return by_code, "RadionuclideCodeSequence (0054,0300) CodeValue"
    if by_half_life:
        return by_half_life, "RadionuclideHalfLife (0018,1075)"
    return None, None


def _match_half_life(half_life_s: float | None, table: Any = NUCLIDES) -> str | None:
    """The nuclide of ``table`` (default the PET settings) whose half-life ``half_life_s`` (s) is."""
    if half_life_s is None or not half_life_s > 0:
        return None
    for name, n in table.items():
        if abs(half_life_s / n.half_life_s - 1.0) <= HALF_LIFE_TOLERANCE:
            return name
    return None


def _refuse_single_photon_setting(image: Image, case: Case, named: str | None, named_from: str | None,
                                  hl: float | None) -> None:
    """A PET whose header, or whose confirmed scanner nuclide, names a single-photon nuclide
    (:data:`~voxeldose.nuclides.SPECT_NUCLIDES`, e.g. Tc-99m): no PET scanner is set to one, so
    there is no positron fraction to undo; refused by name rather than as an unknown setting."""
    by_half_life = _match_half_life(hl, SPECT_NUCLIDES) if named is None else None
    fix = ("Is this the right series? A {nuclide} scan (the MAA SPECT of the planning) is for 'voxeldose plan'; "
           "'voxeldose run' takes the Y-90 PET (or bremsstrahlung SPECT) after the treatment")
    if named in SPECT_NUCLIDES:
        nuclide, where = named, f"the header names {named} ({named_from})"
    elif by_half_life is not None:
        nuclide, where = by_half_life, f"the header's RadionuclideHalfLife (0018,1075) {hl:g} s is {by_half_life}'s"
    elif case.scanner_nuclide in SPECT_NUCLIDES:
        nuclide = case.scanner_nuclide
        where = f"scanner_nuclide={nuclide!r} ({case.source_of('scanner_nuclide')})"
        fix = "Pass the nuclide the PET scanner was set to (scanner_nuclide, e.g. 'Y-90', 'F-18')"
    else:
        return
    raise CalibrationError(
        f"Y-90 PET: {where}, a single-photon nuclide that emits no positrons, so no PET scanner is set to it "
        f"({_describe_header(image, named, named_from, hl)}). " + fix.format(nuclide=nuclide)
    )


def _scanner(image: Image, case: Case, rec: _Record) -> _Scanner:
    """Which nuclide the scanner was set to, its half-life and positron fraction, with sources."""
    m = image.meta
    hl = m.radionuclide_half_life_s
    if hl is not None and not (math.isfinite(hl) and hl > 0):
        rec.warn(f"RadionuclideHalfLife (0018,1075) = {hl!r} is not a positive number; ignored")
        hl = None
    named, named_from = _header_nuclide(image, rec)
    _refuse_single_photon_setting(image, case, named, named_from, hl)
    hl_differs = hl is not None and abs(hl / C.Y90_HALF_LIFE_S - 1.0) > HALF_LIFE_TOLERANCE
    other = hl_differs or (named is not None and named != "Y-90")
    unknown = named is None and hl is None
    confirmed = case.scanner_nuclide
    confirmed_from = case.source_of("scanner_nuclide")
    header_says = _describe_header(image, named, named_from, hl)

    if confirmed is None:
        if unknown:
            raise CalibrationError(
                "Y-90 PET: the header does not say which nuclide the scanner was configured for "
                "(no RadionuclideHalfLife (0018,1075) nor RadionuclideCodeSequence (0054,0300)); "
                "pass scanner_nuclide='Y-90' (case-file key scanner_nuclide) if it was set for Y-90, "
                "or the nuclide it was set to (e.g. 'F-18', 'Ge-68')"
            )
        if other:
            guess = named or _match_half_life(hl) or "another nuclide"
            raise CalibrationError(
                f"Y-90 PET: the scanner was configured for {guess}, not Y-90 ({header_says}). It "
                "converted counts to Bq/mL with that nuclide's positron fraction and decay-corrected "
                "with its half-life, so the values must be rescaled to Y-90's positron yield "
                f"({C.Y90_POSITRON_YIELD * 1e6:.2f}e-6 per decay) and re-corrected with Y-90's half-life. "
                f"Confirm the nuclide by passing scanner_nuclide='{guess if guess != 'another nuclide' else 'F-18'}' "
                "(case-file key scanner_nuclide) and the corrections are applied"
            )
        nuclide = "Y-90"
        rec.notes.append(f"scanner nuclide Y-90 from the header ({header_says})")
    else:
        nuclide = confirmed
        conflict = None
        if named is not None and named != confirmed:
            conflict = f"the header says {named} ({named_from})"
        if conflict is None and hl is not None and confirmed in NUCLIDES:
            ref = NUCLIDES[confirmed].half_life_s
            if abs(hl / ref - 1.0) > HALF_LIFE_TOLERANCE:
                conflict = f"the header's RadionuclideHalfLife is {hl:g} s, not {confirmed}'s {ref:g} s"
        if conflict is None and named is None and hl is not None and confirmed not in NUCLIDES:
            match = _match_half_life(hl)
            if match is not None:
                conflict = f"the header's RadionuclideHalfLife {hl:g} s is {match}'s"
        if conflict is not None:
            raise CalibrationError(
                f"Y-90 PET: scanner_nuclide={confirmed!r} ({confirmed_from}) contradicts the image "
                f"header: {conflict} ({header_says}). Check the scanner protocol and pass the nuclide "
                "it was really configured for"
            )
        rec.notes.append(f"scanner nuclide {confirmed} confirmed by {confirmed_from} ({header_says})")
    table = NUCLIDES.get(nuclide)

    # half-life the scanner decay-corrected with
    if hl is not None:
        half_life, hl_source = hl, "DICOM RadionuclideHalfLife (0018,1075)"
    elif table is not None:
        half_life, hl_source = table.half_life_s, f"table: {table.half_life_source}"
    else:
        raise CalibrationError(
            f"Y-90 PET: the scanner was set to {nuclide}, whose half-life voxeldose does not know, and "
            "the header has no RadionuclideHalfLife (0018,1075); known: "
            f"{', '.join(NUCLIDES)}"
        )

    # positron fraction the scanner divided the positron rate by
    pf = m.radionuclide_positron_fraction
    if pf is not None and not (math.isfinite(pf) and 0.0 < pf <= 1.0):
        rec.warn(f"RadionuclidePositronFraction (0018,1076) =  {pf!r} is not in (0, 1]; ignored")
        pf = None
    if pf is not None:
        positron, pf_source = pf, "DICOM RadionuclidePositronFraction (0018,1076)"
        if table is not None and abs(pf / table.positron_fraction - 1.0) > POSITRON_FRACTION_CONTRADICTION:
            # e.g. F-18's 0.9673 on a series set to Y-90: taken at face value, every activity x 30 000
            others = [n.name for n in NUCLIDES.values()
                      if abs(pf / n.positron_fraction - 1.0) <= POSITRON_FRACTION_CONTRADICTION]
            like = f" (it is {others[0]}'s)" if others else ""
            raise CalibrationError(
                f"Y-90 PET: the header's RadionuclidePositronFraction (0018,1076) {pf:g}{like} contradicts the scanner "
                f"nuclide {nuclide} ({header_says if confirmed is None else f'confirmed by {confirmed_from}'}), whose "
                f"positron fraction is {table.positron_fraction:g} ({table.positron_fraction_source}): the header does "
                "not say consistently how the counts were converted. Check the scanner protocol and re-export the "
                "series with consistent radionuclide attributes"
            )
        if table is not None and abs(pf / table.positron_fraction - 1.0) > 0.01:
            rec.notes.append(
                f"the header's positron fraction {pf:g} differs from {nuclide}'s {table.positron_fraction:g} "
                f"({table.positron_fraction_source}); the header's is used: it is what the scanner applied"
            )
    elif table is not None:
        positron, pf_source = table.positron_fraction, f"table: {table.positron_fraction_source}"
        if table.note:
            rec.notes.append(table.note)
    else:
        raise CalibrationError(
            f"Y-90 PET: the scanner was set to {nuclide}, whose positron fraction voxeldose does not know, "
            "and the header has no RadionuclidePositronFraction (0018,1076); known: "
            f"{', '.join(NUCLIDES)}"
        )
    return _Scanner(nuclide, half_life, hl_source, positron, pf_source, nuclide == "Y-90")


def _describe_header(image: Image, named: str | None, named_from: str | None, hl: float | None) -> str:
    m = image.meta
    parts = []
    if m.radionuclide or m.radionuclide_code:
        parts.append(f"radionuclide {m.radionuclide!r}, code {m.radionuclide_code!r}")
    if hl is not None:
        parts.append(f"RadionuclideHalfLife {hl:g} s = {hl / 3600:.4g} h")
    if named is not None:
        parts.append(f"read as {named} from {named_from}")
    return "header: " + "; ".join(parts) if parts else "header: no radionuclide attributes"


def _check_scan_delay(what: str, t_admin: _dt.datetime, admin_from: str, t_scan: _dt.datetime, rec: _Record, *,
                      refuse: bool) -> None:
    """A caveat when the scan is more than :data:`SCAN_DELAY_CAVEAT_H` after the administration; an
    error (``refuse``) or a caveat beyond :data:`SCAN_DELAY_LIMIT_H`."""
    delay_h = (t_scan - t_admin).total_seconds() / 3600.0
    log10_factor = _LAMBDA_Y90 * delay_h * 3600.0 / math.log(10.0)  # as a power of ten: years apart overflow exp
    factor = 10.0 ** min(log10_factor, 300.0)
    factor_text = f"{factor:.3g}" if log10_factor < 15 else f"10^{log10_factor:.0f}"
    left_text = f"{100.0 / factor:.3g} %" if log10_factor < 15 else f"10^-{log10_factor - 2:.0f} %"
    text = (f"{what}: the scan starts {delay_h / 24.0:.1f} days ({delay_h:.0f} h) after the administration "
            f"({t_admin.isoformat()}, {admin_from}; scan {t_scan.isoformat()})")
    if delay_h > SCAN_DELAY_LIMIT_H:
        if refuse:
            raise CalibrationError(
                f"{text}: more than {SCAN_DELAY_LIMIT_H / 24:.0f} days, when {left_text} of the Y-90 is left "
                f"and decaying back multiplies every activity by {factor_text}; the dates are almost certainly wrong: "
                "check administration_datetime (case-file key administration_time) and the scan's date"
            )
        rec.warn(f"{text}: more than {SCAN_DELAY_LIMIT_H / 24:.0f} days (the self-calibration does not use the interval, "
                 "but check the dates: is this the right scan for this case?)")
    elif delay_h > SCAN_DELAY_CAVEAT_H:
        rec.warn(f"{text}: later than the usual day, so the activity is decayed back by a factor {factor:.3g}; "
                 "check the administration and scan dates")


def _scan_start(image: Image, rec: _Record) -> _dt.datetime:
    m = image.meta
    if m.acquisition_datetime is not None:
        rec.time("scan_start", m.acquisition_datetime,
                 "DICOM AcquisitionDateTime or AcquisitionDate/Time (0008,002A/0022/0032), earliest of the series")
        return m.acquisition_datetime
    if m.series_datetime is not None:
        rec.warn(
            "the header has no acquisition time; the series time is taken as the frame start (set "
            "ImageMeta.acquisition_datetime, e.g. image.with_array(image.array, acquisition_datetime=...), "
            "if it differs)"
        )
        rec.time("scan_start", m.series_datetime, "DICOM SeriesDate/SeriesTime (0008,0021/0031): no acquisition time")
        return m.series_datetime
    raise CalibrationError(
        "Y-90 PET: the header has neither AcquisitionDate/Time (0008,0022/0032) nor SeriesDate/Time "
        "(0008,0021/0031), so the scan time is unknown; set ImageMeta.acquisition_datetime, e.g. "
        "image.with_array(image.array, acquisition_datetime=...)"
    )


def _reference_time(mode: str, image: Image, t_scan: _dt.datetime, t_admin: _dt.datetime,
                    rec: _Record) -> _dt.datetime:
    """The time the scanner decay-corrected to (START or ADMIN)."""
    m = image.meta
    if mode == "ADMIN":
        t_ref = m.radiopharmaceutical_start_datetime
        if t_ref is None and m.radiopharmaceutical_start_time is not None:
            # the scanner corrected to the administration it knew; the header kept its time of day:
            # the administration time resolved above (the case's, or that time on the scan's date)
            rec.time("decay_reference", t_admin, f"the administration time (the header's {_START_TIME_TAG} has no "
                     "date): DecayCorrection ADMIN")
            return t_admin
        if t_ref is None:
            raise CalibrationError(
                "Y-90 PET: DecayCorrection is ADMIN but the header has no RadiopharmaceuticalStartDateTime "
                "(0018,1078), so the time the values refer to is unknown; set "
                "ImageMeta.radiopharmaceutical_start_datetime to the time the scanner used"
            )
        if t_ref > t_scan:
            raise CalibrationError(
                f"Y-90 PET: RadiopharmaceuticalStartDateTime {t_ref.isoformat()} (the ADMIN decay reference) "
                f"is after the scan start {t_scan.isoformat()}; check the header's dates and times"
            )
        rec.time("decay_reference", t_ref, "DICOM RadiopharmaceuticalStartDateTime (0018,1078): DecayCorrection ADMIN")
        return t_ref
    series = m.series_datetime
    acquisition = m.acquisition_datetime
    if series is None:
        rec.notes.append("START reference: no SeriesDate/Time; the acquisition time is used")
        rec.time("decay_reference", t_scan, "scan start (no SeriesDate/Time): DecayCorrection START")
        return t_scan
    private = m.private_scan_datetime
    if private is not None and (acquisition is None or series > acquisition):
        rec.notes.append(
            f"START reference: SeriesDate/Time {series.isoformat()} is later than the acquisition (series saved "
            f"again); GE's private scan start (0009,100D) {private.isoformat()} is used (QIBA SUV pseudo-code)"
        )
        rec.time("decay_reference", private,
                 "GE private scan DateTime (0009,100D, GEMS_PETD_01): SeriesDate/Time is later than the "
                 "acquisition (QIBA rule); DecayCorrection START", series_datetime=series.isoformat())
        return private
    if acquisition is not None and series > acquisition:
        rec.notes.append(
            f"START reference: SeriesDate/Time {series.isoformat()} is later than the acquisition "
            f"{acquisition.isoformat()} (series saved again after the scan); the acquisition time is used "
            "(QIBA SUV pseudo-code)"
        )
        rec.time("decay_reference", acquisition,
                 "DICOM AcquisitionDate/Time: SeriesDate/Time is later than the acquisition (QIBA rule); "
                 "DecayCorrection START", series_datetime=series.isoformat())
        return acquisition
    rec.time("decay_reference", series, "DICOM SeriesDate/SeriesTime (0008,0021/0031): DecayCorrection START "
             "(PS3.3 C.8.9.1)")
    return series


def _calibrate_pet(
    values: NDArray[np.float64], image: Image, case: Case, mask: Image | ArrayLike | str | None, rec: _Record
) -> tuple[NDArray[np.float64], _dt.datetime]:
    m = image.meta
    mode = (m.decay_correction or "").upper()
    if mode not in ("NONE", "START", "ADMIN"):
        raise CalibrationError(
            f"Y-90 PET: DecayCorrection (0054,1102) is {m.decay_correction!r}; expected NONE, START or "
            "ADMIN. Without it the time the values refer to is unknown; set ImageMeta.decay_correction "
            "(e.g. image.with_array(image.array, decay_correction='START'))"
        )
    t_admin, admin_from = _administration_time(case, image, rec)
    if t_admin is None:
        raise CalibrationError(
            "Y-90 PET: the administration time is unknown: the header has no RadiopharmaceuticalStartDateTime "
            "(0018,1078) and no case gives one; pass administration_datetime= (case-file key "
            "administration_time, ISO 8601 on the scanner's clock, e.g. 2024-03-05T10:30:00)"
        )
    t_scan = _scan_start(image, rec)
    if t_admin > t_scan:
        raise CalibrationError(
            f"Y-90 PET: the administration {t_admin.isoformat()} ({admin_from}) is after the scan start "
            f"{t_scan.isoformat()}; check administration_datetime (case-file key administration_time) and "
            "that both are on the scanner's clock"
        )
    _check_scan_delay("Y-90 PET", t_admin, admin_from, t_scan, rec, refuse=True)
    corrected = tuple(c.upper() for c in m.corrected_image)
    if corrected and mode in ("START", "ADMIN") and "DECY" not in corrected:
        rec.warn(f"DecayCorrection is {mode} but CorrectedImage (0028,0051) {list(m.corrected_image)} lacks DECY")
    if corrected and mode == "NONE" and "DECY" in corrected:
        rec.warn("DecayCorrection is NONE but CorrectedImage (0028,0051) lists DECY; NONE is followed")

    scanner = _scanner(image, case, rec)
    rec.scanner = {
        "nuclide": scanner.nuclide, "half_life_s": scanner.half_life_s,
        "half_life_from": scanner.half_life_source, "positron_fraction": scanner.positron_fraction,
        "positron_fraction_from": scanner.positron_fraction_source,
    }
    lam_s = math.log(2.0) / scanner.half_life_s
    duration = m.frame_duration_s
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        rec.warn(f"frame duration {duration!r} s is not positive; ignored")
        duration = None
    rec.times["frame_duration"] = {
        "value_s": duration,
        "from": "DICOM ActualFrameDuration (0018,1242)" if duration is not None else "not in the header",
    }

    # 1. Bq/mL -> MBq per voxel
    voxel_ml = image.voxel_volume_ml
    rec.factor("voxel_volume_ml", voxel_ml, "voxel volume (mL): Bq/mL x mL = Bq", "image spacing_mm")
    rec.factor("mbq_per_bq", 1e-6, "Bq to MBq", "definition")

    # 2. undo the scanner's decay correction (to the frame average)
    header_df = m.decay_factor
    if header_df is not None and not (math.isfinite(header_df) and header_df > 0):
        rec.warn(f"DecayFactor (0054,1321) = {header_df!r} is not a positive number; ignored")
        header_df = None
    if mode == "NONE":
        applied = 1.0
        applied_from = "DecayCorrection NONE: the values are averages over the frame"
        if header_df is not None and abs(header_df - 1.0) > DECAY_FACTOR_TOLERANCE:
            rec.warn(f"DecayCorrection is NONE but DecayFactor (0054,1321) is {header_df:g}; NONE is followed")
        t_ref = None
    else:
        t_ref = _reference_time(mode, image, t_scan, t_admin, rec)
        dt_ref = _seconds(t_scan, t_ref)
        computed = math.exp(lam_s * dt_ref) * _frame_start_factor(lam_s, duration)
        computed_no_frame = math.exp(lam_s * dt_ref)
        if header_df is not None:
            _check_decay_factor(header_df, computed, computed_no_frame, duration, scanner, rec)
        if scanner.is_y90:
            applied = computed
            applied_from = (
                f"computed: e^(lambda_s (t_scan - t_ref)) x lambda_s T / (1 - e^(-lambda_s T)) with the scanner's "
                f"half-life {scanner.half_life_s:g} s ({scanner.half_life_source}); the header's DecayFactor is "
                "only cross-checked for a Y-90 setting"
            )
        elif header_df is not None:
            applied = header_df
            applied_from = "DICOM DecayFactor (0054,1321): the factor the scanner applied"
        else:
            applied = computed
            applied_from = (
                f"computed with {scanner.nuclide}'s half-life {scanner.half_life_s:g} s ({scanner.half_life_source}), "
                "including decay during the frame: the header has no DecayFactor"
            )
            rec.warn(
                f"the scanner was set to {scanner.nuclide} and the header has no DecayFactor (0054,1321): the "
                f"decay correction it applied is recomputed as {computed:.6g}, assuming it also corrected for "
                f"decay during the frame (without that term it would be {computed_no_frame:.6g})"
                + ("" if duration is not None else "; the frame duration is unknown, so that term is omitted")
            )
    rec.factor("undo_scanner_decay_correction", 1.0 / applied,
               f"1 / the decay factor the scanner applied ({applied:.9g}; DecayCorrection {mode}): back to the "
               "average over the frame", applied_from, scanner_decay_factor=applied)

    # 3. positron fraction of the scanner's nuclide -> Y-90's internal pair production
    rec.factor("positron_fraction_ratio", scanner.positron_fraction / C.Y90_POSITRON_YIELD,
               f"p({scanner.nuclide}) {scanner.positron_fraction:g} / p(Y-90) {C.Y90_POSITRON_YIELD:g}: counts "
               "converted with the scanner's positron fraction, re-read as Y-90",
               f"{scanner.positron_fraction_source}; Y-90: {Y90.positron_fraction_source}")

    # 4. frame average -> frame start, Y-90
    if duration is None and (mode == "NONE" or not scanner.is_y90):
        rec.warn(
            "the frame duration is unknown (ActualFrameDuration): the activity averaged over the frame is "
            "taken as the activity at its start (an error of about lambda T / 2, 0.27 % for 30 min); set "
            "ImageMeta.frame_duration_s"
        )
    rec.factor("frame_average_to_start", _frame_start_factor(_LAMBDA_Y90, duration),
               "lambda T / (1 - e^(-lambda T)) for Y-90: activity at the frame start over its frame average",
               "Y-90 half-life (ICRP-107) and the frame duration" if duration is not None else "no frame duration: 1")

    # 5. frame start -> administration, Y-90
    dt_admin = _seconds(t_scan, t_admin)
    rec.factor("decay_to_administration", math.exp(_LAMBDA_Y90 * dt_admin),
               f"e^(lambda_Y90 (t_scan - t_admin)), t_scan - t_admin = {dt_admin / 3600:.6g} h",
               f"Y-90 half-life {C.Y90_HALF_LIFE_S:g} s (ICRP-107); times: scan start and administration "
               f"({admin_from})")

    total = 1.0
    for f in rec.factors:
        total *= f["value"]
    out = values * total
    if m.slice_acquisition_datetimes or m.slice_frame_durations_s or m.slice_decay_factors:
        per_slice = _pet_slice_factors(
            values.shape[0], m, mode=mode, scanner=scanner, t_ref=t_ref, t_scan=t_scan, t_admin=t_admin,
            duration=duration, header_df=header_df,
            constant=voxel_ml * 1e-6 * scanner.positron_fraction / C.Y90_POSITRON_YIELD, rec=rec)
        out = values * per_slice[:, None, None]

    rec.result = {
        "scanner_nuclide": scanner.nuclide,
        "decay_correction": mode,
        "total_mbq_at_scan_start": float(np.sum(out, dtype=np.float64)) * math.exp(-_LAMBDA_Y90 * dt_admin),
    }
    if mask is not None and not isinstance(mask, str):  # 'field_of_view': nothing to check on a PET
        _pet_mask_check(out, image, case, mask, rec)
    return out, t_admin


def _pet_slice_factors(n_z: int, m: Any, *, mode: str, scanner: _Scanner, t_ref: _dt.datetime | None,
                       t_scan: _dt.datetime, t_admin: _dt.datetime, duration: float | None,
                       header_df: float | None, constant: float, rec: _Record) -> NDArray[np.float64]:
    """Factor of each slice (MBq at administration per Bq/mL) of a PET whose slices differ in timing.

    A multi-bed PET acquires its beds one after another: each slice has its own frame start
    ``t_k``, duration ``T_k`` and DecayFactor ``D_k``. The factor of slice k is that of the module
    documentation with those: ``V 1e-6 / D_k x p_X / p_Y90 x F_Y90(T_k) x e^(lambda_Y90 (t_k - t_a))``.
    For a scanner set to Y-90 with START or ADMIN correction the per-slice terms cancel (every
    slice refers to ``t_ref``); with NONE, or a scanner set to another nuclide (whose DecayFactor
    per bed used that nuclide's half-life), they do not: F-18's half-life over a 15 min bed
    offset is 10 %.
    """
    starts, durations, factors = m.slice_acquisition_datetimes, m.slice_frame_durations_s, m.slice_decay_factors
    for name, seq in (("slice_acquisition_datetimes", starts), ("slice_frame_durations_s", durations),
                      ("slice_decay_factors", factors)):
        if seq and len(seq) != n_z:
            raise CalibrationError(
                f"ImageMeta.{name} has {len(seq)} entries for an image of {n_z} slices; it must have one per "
                "slice in the array's z order (or be empty)"
            )
    lam_s = math.log(2.0) / scanner.half_life_s
    out = np.empty(n_z)
    rows: list[dict[str, Any]] = []
    worst: tuple[float, int, float, float] | None = None
    for k in range(n_z):
        t_k = starts[k] if starts and starts[k] is not None else t_scan
        d_k = durations[k] if durations and durations[k] is not None and durations[k] > 0 else duration
        h_k = factors[k] if factors and factors[k] is not None and factors[k] > 0 else header_df
        if mode == "NONE":
            applied = 1.0
        else:
            assert t_ref is not None
            computed = math.exp(lam_s * _seconds(t_k, t_ref)) * _frame_start_factor(lam_s, d_k)
            applied = computed if scanner.is_y90 or h_k is None else h_k
            if h_k is not None:
                rel = h_k / computed - 1.0
                if worst is None or abs(rel) > abs(worst[0]):
                    worst = (rel, k, h_k, computed)
        out[k] = (constant / applied * _frame_start_factor(_LAMBDA_Y90, d_k)
                  * math.exp(_LAMBDA_Y90 * _seconds(t_k, t_admin)))
        key = (t_k.isoformat(), d_k, applied)
        if rows and rows[-1]["key"] == key:
            rows[-1]["slices"][1] = k
        else:
            rows.append({"key": key, "slices": [k, k], "frame_start": t_k.isoformat(), "frame_duration_s": d_k,
                         "scanner_decay_factor": applied, "total_factor": float(out[k])})
    for row in rows:
        del row["key"]
    if worst is not None and abs(worst[0]) > DECAY_FACTOR_TOLERANCE:
        rel, k, h_k, computed = worst
        message = (f"slice {k}: DecayFactor (0054,1321) {h_k:.6g} differs from {computed:.6g} computed from its frame "
                   f"start, duration and {scanner.nuclide}'s half-life by {rel:+.2%}")
        rec.warn(message + ("; the computed factor is used (scanner set to Y-90)" if scanner.is_y90
                            else "; the header's factors are used"))
    rec.per_slice = rows
    rec.notes.append(
        f"the slices differ in frame start, duration or DecayFactor ({len(rows)} groups, e.g. the beds of a "
        "multi-bed PET): each slice is calibrated with its own (provenance: per_slice); the factors listed "
        "are those of the series-level header"
    )
    return out


def _check_decay_factor(header: float, computed: float, computed_no_frame: float, duration: float | None,
                        scanner: _Scanner, rec: _Record) -> None:
    rel = header / computed - 1.0
    check: dict[str, Any] = {"name": "decay_factor", "header": header, "computed": computed,
                             "relative_difference": rel, "tolerance": DECAY_FACTOR_TOLERANCE}
    if abs(rel) <= DECAY_FACTOR_TOLERANCE:
        check["result"] = "agrees"
    elif duration is not None and abs(header / computed_no_frame - 1.0) <= DECAY_FACTOR_TOLERANCE:
        check["result"] = "agrees with the decay to the reference time without the decay-during-frame term"
    else:
        check["result"] = "disagrees"
        rec.warn(
            f"the header's DecayFactor (0054,1321) {header:.6g} differs from {computed:.6g}, computed from the "
            f"{scanner.nuclide} half-life {scanner.half_life_s:g} s and the times, by {100 * rel:+.2f} %; "
            "check the times (acquisition, series, administration) and the decay correction mode"
        )
    rec.checks.append(check)


def _check_total(out: NDArray[np.float64], image: Image, case: Case, mask: Image | ArrayLike | str | None,
                 rec: _Record) -> None:
    """Compare the calibrated activity with the administered activity net of shunt and residual.

    The reference is the case's administered activity, else the header's RadionuclideTotalDose
    (0018,1074). With a PET calibration VOI and a known shunt, the VOI's activity is compared with
    ``A (1 - r) (1 - LSF)``; otherwise the total of the image must lie between that (lungs out
    of the field of view) and ``A (1 - r)`` (all of them in it). More than
    :data:`ACTIVITY_WARN_FRACTION` outside: a caveat; more than :data:`ACTIVITY_ERROR_FACTOR`: an
    error naming both numbers, unless the case accepts it (``accept_activity_mismatch``).
    """
    if case.administered_gbq is not None:
        a_mbq, a_from = case.administered_gbq * 1e3, case.source_of("administered_gbq")
    elif image.meta.radionuclide_total_dose_bq:
        a_mbq, a_from = image.meta.radionuclide_total_dose_bq * 1e-6, "DICOM RadionuclideTotalDose (0018,1074)"
    else:
        rec.notes.append("no administered activity (case file or RadionuclideTotalDose): the calibrated activity is "
                         "not compared with it")
        return
    residual = case.residual_fraction or 0.0
    lsf = case.lung_shunt_fraction
    delivered = a_mbq * (1.0 - residual)
    check: dict[str, Any] = {"name": "activity_vs_administered", "administered_mbq": a_mbq, "from": a_from,
                             "residual_fraction": residual, "lung_shunt_fraction": lsf}
    if mask is not None and not isinstance(mask, str) and lsf is not None:
        name = case.calibration_voi_name or "calibration VOI"
        measured = float(np.sum(out * _mask_weights(mask, image, name), dtype=np.float64))
        low = high = delivered * (1.0 - lsf)
        what = f"the activity in {name!r}"
    else:
        measured = float(np.sum(out, dtype=np.float64))
        low, high = delivered * (1.0 - (lsf or 0.0)), delivered
        what = "the image's total activity"
    ratio = measured / low if measured < low else measured / high if measured > high else 1.0
    check.update(measured_mbq=measured, measured=what, expected_low_mbq=low, expected_high_mbq=high, ratio=ratio)
    rec.checks.append(check)
    expected = f"{low:.6g} MBq" if low == high else f"{low:.6g} to {high:.6g} MBq"
    text = (f"{what} at administration, {measured:.6g} MBq, against {expected} expected from the administered "
            f"{a_mbq:.6g} MBq ({a_from}) net of residual {residual:g}"
            + (f" and lung shunt {lsf:g}" if lsf is not None else "") + f": a factor {ratio:.3g}")
    if ratio > ACTIVITY_ERROR_FACTOR or ratio < 1.0 / ACTIVITY_ERROR_FACTOR or not math.isfinite(ratio):
        if not case.accept_activity_mismatch:
            raise CalibrationError(
                f"{text}. Is the series, the scanner nuclide, the unit or the administered activity wrong? If the "
                "numbers are right (e.g. part of the activity outside the field of view), set accept_activity_mismatch "
                "(case-file key, or --accept-activity-mismatch)"
            )
        rec.warn(f"{text} (accepted: accept_activity_mismatch)")
    elif abs(ratio - 1.0) > ACTIVITY_WARN_FRACTION:
        rec.warn(f"{text}; check the calibration inputs")


def _pet_mask_check(out: NDArray[np.float64], image: Image, case: Case, mask: Image | ArrayLike, rec: _Record) -> None:
    name = case.calibration_voi_name or "calibration_mask"
    weights = _mask_weights(mask, image, name)
    in_voi = float(np.sum(out * weights, dtype=np.float64))
    check: dict[str, Any] = {"name": "activity_in_calibration_voi", "voi": name, "pet_mbq": in_voi}
    if None not in (case.administered_gbq, case.lung_shunt_fraction, case.residual_fraction):
        expected = case.administered_gbq * 1e3 * (1 - case.lung_shunt_fraction) * (1 - case.residual_fraction)  # type: ignore[operator]
        check.update(expected_mbq=expected, ratio=in_voi / expected,
                     meaning="PET activity in the VOI over administered x (1 - LSF) x (1 - residual)")
    rec.checks.append(check)


# ---------------------------------------------------------------------------- SPECT


def _mask_weights(mask: Image | ArrayLike, image: Image, name: str) -> NDArray[np.floating]:
    return mask_image(image, mask, name=name).array


def _required(case: Case, name: str, what: str) -> float:
    value = getattr(case, name)
    if value is None:
        raise CalibrationError(
            f"SPECT self-calibration needs {what}; pass {name}= (case-file key {name})"
        )
    return float(value)


def _refuse_spect_of_another_nuclide(image: Image) -> None:
    """Refuse a SPECT whose header names a nuclide other than Y-90.

    Self-calibration takes counts for Y-90 bremsstrahlung whatever they are: a Tc-99m MAA SPECT
    (the planning scan) given in its place would give Y-90 doses of the MAA distribution, wrong
    and silent. The header names the nuclide by RadionuclideCodeSequence (0054,0300), its
    CodeMeaning first (as for a PET: a CodeValue once mistyped for Y-90's is outvoted by
    ^90^Yttrium), and by RadionuclideHalfLife (0018,1075), which must then be Y-90's within
    :data:`HALF_LIFE_TOLERANCE`. A header that names no nuclide is accepted (as before: many
    bremsstrahlung SPECT exports carry none).
    """
    m = image.meta
    code = (m.radionuclide_code or "").strip()
    by_meaning = normalise_nuclide(m.radionuclide) or nuclide_of_code(m.radionuclide)
    by_code = nuclide_of_code(code) or normalise_nuclide(code)
    hl = m.radionuclide_half_life_s
    if hl is not None and not (math.isfinite(hl) and hl > 0):
        hl = None
    hl_other = hl is not None and abs(hl / C.Y90_HALF_LIFE_S - 1.0) > HALF_LIFE_TOLERANCE
    by_half_life = _match_half_life(hl, {**NUCLIDES, **SPECT_NUCLIDES}) if hl_other else None
    if by_meaning is not None:
        named, where = by_meaning, "RadionuclideCodeSequence (0054,0300) CodeMeaning"
    elif by_code is not None:
        named, where = by_code, "RadionuclideCodeSequence (0054,0300) CodeValue"
    elif hl_other:
        named, where = by_half_life or "a nuclide other than Y-90", "RadionuclideHalfLife (0018,1075)"
    else:
        return
    named = f"{named}, not Y-90"
    if named.startswith("Y-90,"):
        if not hl_other:
            return
        named = f"Y-90 by its {where.split()[-1]} but {by_half_life or 'another nuclide'} by its half-life"
        where = f"{where} and RadionuclideHalfLife (0018,1075)"
    said = [f"CodeValue {code!r}, CodeMeaning {m.radionuclide!r}" if (code or m.radionuclide) else "",
            f"RadionuclideHalfLife {hl:g} s = {hl / 3600:.4g} h" if hl is not None else ""]
    raise CalibrationError(
        f"the SPECT's header names {named} ({where}: {'; '.join(x for x in said if x)}). calibrate turns a "
        "Y-90 bremsstrahlung SPECT into Y-90 activity; counts of another nuclide calibrated as Y-90 would give wrong "
        "doses. A Tc-99m MAA SPECT, the planning scan, is for 'voxeldose plan'; for the dose of the treatment give "
        "the Y-90 PET or bremsstrahlung SPECT"
    )


def _calibrate_spect(
    values: NDArray[np.float64], image: Image, case: Case, mask: Image | ArrayLike | str | None, rec: _Record
) -> tuple[NDArray[np.float64], _dt.datetime | None]:
    a_gbq = case.administered_gbq
    if a_gbq is None:
        header = image.meta.radionuclide_total_dose_bq
        hint = (f" (the header's RadionuclideTotalDose (0018,1074) says {header / 1e9:.4g} GBq: if that is the "
                "vial activity at the administration time, pass that)") if header else ""
        raise CalibrationError(
            "SPECT self-calibration needs the administered activity; pass administered_gbq= (case-file key "
            f"administered_gbq: the vial's activity at the administration time, GBq){hint}"
        )
    lsf = _required(case, "lung_shunt_fraction", "the lung shunt fraction (0 to 1)")
    residual = _required(case, "residual_fraction",
                         "the residual fraction left in the vial and lines (0 to 1; 0 if not measured)")

    if mask is None:
        raise CalibrationError(
            "SPECT self-calibration needs a calibration VOI: the counts in it are set to the delivered activity. "
            "Pass calibration_mask= the whole-liver or perfused VOI (compute_case and voxeldose run take the case's: "
            "calibration_voi, else its one perfused VOI, else its one whole_liver VOI), or "
            "calibration_mask='field_of_view' to take every count in the image as liver activity"
        )
    if isinstance(mask, str):
        if mask != FIELD_OF_VIEW:
            raise CalibrationError(f"calibration_mask must be a VOI mask or {FIELD_OF_VIEW!r}, got {mask!r}")
        name = "whole field of view"
        weights = None
        total = float(np.sum(values, dtype=np.float64))
        rec.warn(
            "SPECT calibrated on the whole field of view (calibration_mask='field_of_view'): its counts are set to "
            "the administered activity net of lung shunt and residual; lung or other counts in the field of view "
            "are counted as liver activity (a calibration VOI, the whole-liver or perfused one, avoids it)"
        )
    else:
        name = case.calibration_voi_name or "calibration_mask"
        weights = _mask_weights(mask, image, name)
        if not np.any(weights > 0):
            raise CalibrationError(f"calibration VOI {name!r} is empty on this {image.shape} grid; check the VOI")
        total = float(np.sum(values[weights > 0], dtype=np.float64))
    if not total > 0:
        raise CalibrationError(
            f"the counts in calibration VOI {name!r} sum to {total:g}; self-calibration needs a "
            "positive total: check the VOI (right VOI, same frame of reference) and the image"
        )

    t_admin, admin_from = _administration_time(case, image, rec)
    m = image.meta
    if m.acquisition_datetime is not None:
        t_scan, scan_from = m.acquisition_datetime, "DICOM AcquisitionDate/Time (0008,0022/0032)"
    elif m.series_datetime is not None:
        t_scan, scan_from = m.series_datetime, "DICOM SeriesDate/Time (0008,0021/0031): no acquisition time"
    else:
        t_scan, scan_from = None, ""
    if t_scan is not None:
        rec.time("scan_start", t_scan, scan_from)
    if t_admin is not None and t_scan is not None and t_admin > t_scan:
        raise CalibrationError(
            f"SPECT: the administration {t_admin.isoformat()} ({admin_from}) is after the scan start "
            f"{t_scan.isoformat()}; check administration_datetime (case-file key administration_time) and that "
            "both are on the scanner's clock"
        )
    if t_admin is not None and t_scan is not None:
        _check_scan_delay("SPECT", t_admin, admin_from, t_scan, rec, refuse=False)

    delivered_mbq = a_gbq * 1e3 * (1.0 - residual) * (1.0 - lsf)
    voi_weight = float(np.count_nonzero(weights > 0)) if weights is not None else float(values.size)
    rec.checks.append({"name": "calibration_voi", "voi": name, "counts": total,
                       "voxels": voi_weight, "volume_ml": voi_weight * image.voxel_volume_ml,
                       "rule": "total = sum of counts in the voxels the VOI touches (mask > 0); voxels outside the VOI get "
                       "the same MBq per count"})
    rec.factor("administered_mbq", a_gbq * 1e3, "vial activity at administration (MBq)",
               case.source_of("administered_gbq"))
    rec.factor("one_minus_residual", 1.0 - residual, "fraction of the vial delivered",
               case.source_of("residual_fraction"))
    rec.factor("one_minus_lung_shunt", 1.0 - lsf, "fraction of the delivered activity not shunted to the lungs",
               case.source_of("lung_shunt_fraction"))
    rec.factor("per_voi_counts", 1.0 / total, f"1 / counts in the voxels of VOI {name!r}", "image and VOI")
    factor_admin = delivered_mbq / total
    result: dict[str, Any] = {"calibration_voi": name, "delivered_to_voi_mbq_at_administration": delivered_mbq,
                              "mbq_per_count_at_administration": factor_admin}
    if t_admin is not None and t_scan is not None:
        dt_s = _seconds(t_scan, t_admin)
        decay = math.exp(-_LAMBDA_Y90 * dt_s)
        factor_scan = delivered_mbq * decay / total
        rec.factor("decay_to_scan", decay, f"e^(-lambda_Y90 (t_scan - t_admin)), {dt_s / 3600:.6g} h: VOI activity "
                   "at the scan", f"Y-90 half-life (ICRP-107); times: scan start and administration ({admin_from})")
        rec.factor("decay_back_to_administration", 1.0 / decay, "e^(+lambda_Y90 (t_scan - t_admin)): every voxel "
                   "back to the administration (cancels decay_to_scan)", "Y-90 half-life (ICRP-107)")
        result.update(delivered_to_voi_mbq_at_scan=delivered_mbq * decay, mbq_per_count_at_scan=factor_scan,
                      total_mbq_at_scan_start=float(np.sum(values, dtype=np.float64)) * factor_scan)
    else:
        missing = "administration time" if t_admin is None else "scan time"
        rec.notes.append(f"no {missing}: the activity at the scan is not reported; the calibration to the "
                         "administration does not need the times (the decay factors cancel)")
    rec.result = result
    return values * factor_admin, t_admin
