"""One planning case through the engine: the MAA SPECT to a predicted dose and a plan per territory.

:func:`compute_plan` is the computation, from inputs in memory to one
:class:`~voxeldose.result.CaseResult` whose images are the *predicted* activity and dose, and
whose ``plan`` holds each territory's model and voxel-based activities (the rules are those of
:mod:`voxeldose.planning`). :func:`run_plan` reads an exported case, computes it and writes its
outputs like :func:`voxeldose.run_case` (the same files, and ``plan`` in ``metrics.json`` and the
report).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ._version import __version__
from .case import Case
from .constants import SOFT_TISSUE_DENSITY_G_PER_CM3
from .density import HuDensityTable
from .dose import METHODS, Engine, Method
from .errors import InputError, VoiError, VoxelDoseError, VoxelDoseWarning
from .image import Image, mask_image
from .kernels import Tissue, VsvTables
from .nuclides import normalise_nuclide, nuclide_of_code
from .pipeline import NEGATIVE_DOSE_FRACTION, _kernel_record, _resolve_vois, _Steps
from .planning import (
    OUTSIDE_COUNTS_CAVEAT_PERCENT,
    Constraint,
    PlanSettings,
    bsa_lung_shunt_reduction,
    dose_constant_gy_kg_per_gbq,
    lung_shunt_from_counts,
    metric_of,
    predicted_activity,
    soft_mass_kg,
    solve_activity,
    territories_of,
    updated_plan_settings,
)
from .result import CaseResult, Caveat

__all__ = ["compute_plan", "run_plan", "PLAN_UNITS"]

#: Units an MAA SPECT may be in: counts, or a quantitative SPECT's Bq/mL (both proportional to
#: the activity; only their distribution is used).
PLAN_UNITS = ("CNTS", "BQML")

#: Counts-based and case lung shunt fractions further apart than this (absolute) are a caveat.
LSF_DISAGREEMENT = 0.05


def _check_maa(scan: Image, case: Case) -> tuple[str, str]:
    """The MAA scan's units and what its header says of the nuclide; refuse a post-treatment scan."""
    m = scan.meta
    if (m.modality or "").upper() == "PT":
        raise InputError("plan reads the Tc-99m MAA SPECT of the planning; this scan is a PET (Modality PT), a "
                         "post-treatment Y-90 scan: use 'voxeldose run' for it")
    named = nuclide_of_code(m.radionuclide_code) or normalise_nuclide(m.radionuclide)
    if named == "Y-90":
        raise InputError("plan reads the Tc-99m MAA SPECT of the planning; this SPECT's header names Y-90 "
                         "(RadionuclideCodeSequence (0054,0300)): it is a post-treatment bremsstrahlung SPECT: use "
                         "'voxeldose run' for it")
    if named is not None and named != "Tc-99m":
        raise InputError(f"plan reads a Tc-99m MAA SPECT; this SPECT's header names {named} (RadionuclideCodeSequence "
                         "(0054,0300)); check the series")
    header = (scan.units or "").upper()
    given = (case.scan_units or "").upper()
    if header and given and header != given:
        raise InputError(f"the MAA SPECT's header says units {header!r}, the case file's scan_units {given!r}: check "
                         "which is right and remove scan_units")
    units = header or given
    if not units:
        raise InputError("the MAA SPECT's units are unknown (a NIfTI/NRRD file holds none): say what the values are "
                         "with the case-file key scan_units = \"CNTS\" (counts) or \"BQML\"")
    if units not in PLAN_UNITS:
        raise InputError(f"an MAA SPECT in units {units!r} cannot be planned on: it must be counts ('CNTS') or "
                         "activity concentration ('BQML'), values proportional to the activity")
    nuclide = ("Tc-99m (header)" if named == "Tc-99m" else
               "not in the header: taken as the Tc-99m MAA SPECT because it was given to plan")
    return units, nuclide


def _union(masks: Sequence[Image], like: Image) -> Image | None:
    if not masks:
        return None
    if len(masks) == 1:
        return masks[0]
    total = np.clip(np.sum([np.asarray(m.array, np.float64) for m in masks], axis=0), 0.0, 1.0)
    return mask_image(like, total.astype(np.float32), name="union")


def _dvh_at(dose: np.ndarray, mask: Image, lung: bool, name: str, rho: np.ndarray | None = None) -> Any:
    """The DVH of a dose array (Gy) on a VOI: rescaled to lung density where ``lung`` (no CT),
    or with the VOI's mean density from the density map ``rho`` (each voxel's dose already that
    of its own density), as :func:`voxeldose.compute_case` gives them."""
    from .clinical import LUNG_DENSITY_G_PER_CM3
    from .dvh import dvh_array

    h = dvh_array(dose, mask.array, spacing_xyz_mm=mask.spacing_mm, name=name)
    if rho is not None:
        w = np.asarray(mask.array, dtype=np.float64)
        return replace(h, density_g_per_cm3=float((w * rho).sum() / w.sum()))
    return h.at_density(LUNG_DENSITY_G_PER_CM3) if lung else h


def _mass_kg(mask: Image, rho: np.ndarray | None) -> float:
    """A VOI's mass (kg): its voxels' masses from the density map, else at soft-tissue density."""
    if rho is None:
        return soft_mass_kg(mask)
    return float((np.asarray(mask.array, np.float64) * rho).sum()) * mask.voxel_volume_ml * 1e-3


class _Target:
    """One constraint on one VOI, evaluated on the VOI's bounding box (``lung``: the VOI's dose is
    rescaled from soft tissue to lung density, as without a CT)."""

    def __init__(self, constraint: Constraint, voi: str, mask: Image, lung: bool) -> None:
        from ._checks import nonzero_box

        self.constraint, self.voi, self.lung = constraint, voi, lung
        box = nonzero_box(mask.array > 0)
        if box is None:
            raise VoiError(f"constraint {constraint.label(voi)}: VOI {voi!r} is empty on the MAA SPECT's grid")
        self.box = box
        self.mask = Image(np.ascontiguousarray(mask.array[box]), mask.spacing_mm, units="MASK")

    def metric(self, base: np.ndarray, unit: np.ndarray) -> Callable[[float], float]:
        b = np.asarray(base[self.box], np.float64)
        u = np.asarray(unit[self.box], np.float64)
        if self.constraint.metric == "mean":
            w = np.asarray(self.mask.array, np.float64)
            k = (1.0 if not self.lung else self._lung_factor()) / float(w.sum())
            mb, mu = float((w * b).sum()) * k, float((w * u).sum()) * k
            return lambda a: mb + a * mu
        return lambda a: metric_of(_dvh_at(b + a * u, self.mask, self.lung, self.voi), self.constraint.metric)

    @staticmethod
    def _lung_factor() -> float:
        from .clinical import LUNG_DENSITY_G_PER_CM3

        return SOFT_TISSUE_DENSITY_G_PER_CM3 / LUNG_DENSITY_G_PER_CM3


def _targets(settings: PlanSettings, masks: Mapping[str, Image], roles: Mapping[str, str],
             territories: Mapping[str, Image], territory_normals: Mapping[str, Image],
             lung_union: Image | None, rescale_lung: bool) -> list[tuple[_Target, str | None]]:
    """(target, territory it belongs to or None) for every constraint and VOI it applies to;
    lung VOIs' doses rescaled to lung density where ``rescale_lung`` (no density map)."""
    out: list[tuple[_Target, str | None]] = []
    if lung_union is not None:
        lung_names = [n for n, r in roles.items() if r == "lung" and n in masks]
        name = lung_names[0] if len(lung_names) == 1 else "lung (" + " + ".join(lung_names) + ")"
        c = Constraint("mean", voi=name, upper=settings.lung_limit_effective_gy,
                       source=_lung_source(settings))
        out.append((_Target(c, name, lung_union, rescale_lung), None))
    for c in settings.constraints:
        if c.voi is not None:
            if c.voi not in masks:
                raise VoiError(f"{c.source}: constraint on VOI {c.voi!r}, which is not among the VOIs "
                               f"({', '.join(map(repr, masks))})")
            out.append((_Target(c, c.voi, masks[c.voi], rescale_lung and roles.get(c.voi) == "lung"), None))
            continue
        if c.role == "perfused_normal":
            chosen: list[tuple[str, Image, str | None]] = [(f"{t} without tumours", territory_normals[t], t)
                                                           for t in territories]
        else:
            names = [n for n, r in roles.items() if r == c.role and n in masks]
            if not names:
                raise VoiError(f"{c.source}: constraint on role {c.role!r}, which no VOI has; give the role in the "
                               "case file's [vois]")
            chosen = [(n, masks[n], None) for n in names]
        for name, mask, owner in chosen:
            territory = owner
            if c.role == "tumour" and c.lower is not None:
                territory = _territory_holding(mask, territories)
            out.append((_Target(c, name, mask, rescale_lung and c.role == "lung"), territory))
    return out


def _lung_source(settings: PlanSettings) -> str:
    given = [k for k in ("lung_limit_gy", "lung_cumulative_limit_gy", "prior_lung_dose_gy") if k in settings.given]
    how = (f"min({settings.lung_limit_gy:g} Gy, {settings.lung_cumulative_limit_gy:g} Gy cumulative - "
           f"{settings.prior_lung_dose_gy:g} Gy prior)")
    return (f"[plan] {', '.join(given)}: {how}" if given else
            f"default {how} (Ho et al. 1997, doi:10.1007/BF01728766)")


def _territory_holding(mask: Image, territories: Mapping[str, Image]) -> str | None:
    w = np.asarray(mask.array, np.float64)
    total = float(w.sum())
    for t, m in territories.items():
        if float(np.minimum(w, m.array).sum()) >= 0.5 * total:
            return t
    return None


def compute_plan(
    maa: Image,
    vois: Mapping[str, "Image | np.ndarray"],
    case: Case,
    *,
    method: Method = "kernel",
    tissue: Tissue = "soft",
    engine: Engine = "auto",
    kernel_tables: VsvTables | None = None,
    caveats: Sequence[Caveat] = (),
    timings_s: Mapping[str, float] | None = None,
    provenance: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    ct: Image | None = None,
    density: Image | None = None,
    outside_body: str = "exclude",
) -> CaseResult:
    """A planning case, from its MAA SPECT, VOIs and case values in memory to its result.

    The rules (territories, the predicted activity, the lung shunt, the voxel plan, the models)
    are those of :mod:`voxeldose.planning`; the plan's settings are ``case.plan`` (the case
    file's ``[plan]`` table).

    Parameters
    ----------
    maa : Image
        The Tc-99m MAA SPECT: counts (or Bq/mL), on its own grid; a PET or a SPECT whose header
        names Y-90 is refused (a post-treatment scan: :func:`voxeldose.compute_case`).
    vois : mapping name -> mask Image (or array) on the SPECT's grid
        With roles in ``case.voi_roles``: ``perfused`` territories (or one ``whole_liver``),
        ``tumour``, ``lung``, ``normal_liver``.
    case : Case
        The roles, the lung shunt fraction (unless measured on the SPECT), the sphere type and
        ``plan`` (:class:`voxeldose.planning.PlanSettings`).
    method, tissue, engine, kernel_tables
        The dose engine, as in :func:`voxeldose.absorbed_dose`; one dose computation per
        territory.
    caveats, timings_s, provenance, progress
        As in :func:`voxeldose.compute_case`.
    ct, density, outside_body
        As in :func:`voxeldose.compute_case`, on the SPECT's grid (the SPECT/CT's CT): with a
        density map every dose method uses it (``scaled_kernel`` needs it), the VOIs' doses and
        masses (the MIRD and partition models' too) are those of their voxels' densities, lung
        VOIs are not rescaled to lung density, and predicted activity outside the body outline
        is left out of the dose (``outside_body="exclude"``) or kept, and reported.

    Returns
    -------
    CaseResult
        ``images["activity"]`` and ``images["dose"]``: the predicted activity (MBq at
        administration) and dose at the planned activities (``[plan] activities_gbq``; a
        territory without one at its voxel plan's activity); DVHs of every VOI on that dose;
        ``plan``: per territory the counts, masses, T:N, the MIRD, partition and BSA
        activities, the voxel plan (activity, binding constraint, every constraint's limit,
        every VOI's metrics at that activity) and the metrics at the planned activity.

    Raises
    ------
    VoxelDoseError
        Bad input of any kind (the message says what and how to fix it).
    """
    from .clinical import body_surface_area_m2
    from .dose import absorbed_dose
    from .pipeline import _add_tissue, _body, _body_outline, _check_tissue, _contrast_caveats, _density_record, _voi_dvhs
    from .voi_sets import difference, union_of

    if not isinstance(maa, Image):
        raise InputError(f"compute_plan needs the MAA SPECT as a voxeldose Image, got {type(maa).__name__}")
    if not isinstance(case, Case):
        raise InputError(f"compute_plan needs a voxeldose Case (voxeldose.load_case), got {type(case).__name__}")
    _check_tissue("compute_plan", maa, ct, density, outside_body, method)
    settings = case.plan if case.plan is not None else PlanSettings()
    steps = _Steps(progress)
    steps.caveats.extend(caveats)
    if case.uncertainty is not None and case.uncertainty.n >= 2:
        # said, not silently dropped: a case file shared with 'run' may carry the table
        steps.caveat("plan", f"the case's [uncertainty] table (n = {case.uncertainty.n}) is not used: plan propagates "
                             "no uncertainty (its metrics carry none); 'voxeldose run' does, on the post-treatment scan")
    units, nuclide = _check_maa(maa, case)
    counts = Image(np.asarray(maa.array), maa.spacing_mm, maa.origin_mm, maa.direction, units, meta=maa.meta)
    with steps.step("roles", timed=False):
        masks, roles = _resolve_vois({n: mask_image(maa, m, name=n) for n, m in vois.items()}, case)
    territories, territory_rule = territories_of(masks, roles)
    unknown = [t for t in settings.activities_gbq if t not in territories]
    if unknown:
        raise InputError(f"[plan] activities_gbq names {', '.join(map(repr, unknown))}, which are not territories; the "
                         f"territories are {', '.join(map(repr, territories))} ({territory_rule})")
    lungs = [masks[n] for n, r in roles.items() if r == "lung" and n in masks]
    lung_union = _union(lungs, maa)
    tumour_names = [n for n, r in roles.items() if r == "tumour" and n in masks]
    shape = maa.shape
    tumour_union = (union_of([np.asarray(masks[n].array) for n in tumour_names], shape) if tumour_names
                    else np.zeros(shape, np.float32))
    normals = {t: mask_image(maa, difference(m.array, tumour_union), name=f"{t} without tumours")
               for t, m in territories.items()}
    whole = [n for n, r in roles.items() if r == "whole_liver" and n in masks]

    with steps.step("lung shunt", timed=False):
        lsf, lsf_record = _lung_shunt(counts, case, settings, lung_union, masks, whole, territories, steps)

    rho = None if density is None else np.asarray(density.array, dtype=np.float64)
    body_vois = [n for n, r in roles.items() if r == "body"]
    body = outline = None
    if density is not None or body_vois:  # the outline depends on the CT (or the body VOI) only
        outline = _body_outline(density, maa, masks, body_vois)
        body = outline[0]
    # one dose per territory, at 1 GBq reaching the patient
    unit_doses: dict[str, np.ndarray] = {}
    records: dict[str, Any] = {}
    with steps.step("dose"):
        for t in territories:
            act, rec = predicted_activity(counts, territories, {t: 1.0}, lung_shunt_fraction=lsf, lung=lung_union)
            records[t] = rec
            if body is not None and outside_body == "exclude":  # linear: the map's exclusion is the sum of these
                act = act.with_array(np.where(body.array > 0.5, act.array, 0.0).astype(np.float32))
            unit_doses[t] = np.asarray(absorbed_dose(act, method=method, tissue=tissue, engine=engine,
                                                     kernel_tables=kernel_tables, density=density, body=body).array,
                                       np.float64)
    planned = dict(settings.activities_gbq)
    constant, convention = dose_constant_gy_kg_per_gbq(case.sphere_type)
    lung_model_mass = settings.lung_mass_kg or 1.0

    with steps.step("plan"):
        targets = _targets(settings, masks, roles, territories, normals, lung_union, density is None)
        plans: dict[str, Any] = {}
        for t in territories:
            base = sum((planned.get(o, 0.0) * unit_doses[o] for o in territories if o != t),
                       np.zeros(shape, np.float64))
            plans[t] = _voxel_plan(t, base, unit_doses[t], targets, settings, lsf, lung_union is None,
                                   planned, constant, lung_model_mass)
        acts = {t: planned.get(t, plans[t]["activity_gbq"]) for t in territories}
        for t in territories:
            if t not in planned:
                if not math.isfinite(acts[t]):
                    raise InputError(f"territory {t!r}: no constraint bounds its activity (add constraints in [plan], "
                                     "e.g. { voi = \"normal_liver\", metric = \"mean\", max_gy = 40 }), and no planned "
                                     "activity is given ([plan] activities_gbq)")
                warnings.warn(f"territory {t!r}: no planned activity ([plan] activities_gbq): the predicted dose is at "
                              f"its voxel plan's {acts[t]:.4g} GBq", VoxelDoseWarning, stacklevel=1)
        dose_arr = sum((acts[t] * unit_doses[t] for t in territories), np.zeros(shape, np.float64))
        activity, act_record = predicted_activity(counts, territories, acts, lung_shunt_fraction=lsf, lung=lung_union)
        dose = Image(dose_arr.astype(np.float32), maa.spacing_mm, maa.origin_mm, maa.direction, "GY", meta=maa.meta)
        for t in territories:
            a_plan = plans[t]["activity_gbq"]
            at_plan = None
            if math.isfinite(a_plan):  # the others at the predicted map's activities, this one at its plan
                at_plan = dose_arr + (a_plan - acts[t]) * unit_doses[t]
            plans[t]["metrics_at_plan"] = _metrics_at(at_plan, masks, roles, rho)
        # together, at the activities of the predicted map
        combined: list[dict[str, Any]] = [{"constraint": tg.constraint.label(tg.voi),
                     "value": tg.metric(dose_arr, np.zeros(shape))(0.0)} for tg, _ in targets]
        for row, (tg, _) in zip(combined, targets):
            c = tg.constraint
            value = float(row["value"])
            if c.upper is not None:
                row["met"] = bool(value <= c.upper + 1e-9 * max(1.0, c.upper))
            else:
                lo = float(c.lower or 0.0)
                row["met"] = bool(value >= lo - 1e-9 * max(1.0, lo))
            if not row["met"]:
                warnings.warn(f"at the predicted map's activities ({_acts_text(acts)}), {row['constraint']} is not met: "
                              f"{row['value']:.4g} {c.unit}", VoxelDoseWarning, stacklevel=1)
        lung_model_gy = constant * sum(acts.values()) * lsf / lung_model_mass

    body_record = None
    if body is not None:  # what lies outside the body, at the predicted map's activities
        _, _, body_record = _body(density, activity, masks, outside_body, body_vois, outline=outline)
    with steps.step("dvh"):
        dvhs, voi_densities = _voi_dvhs(dose, masks, roles, density)
    if ct is not None and density is not None:
        with steps.step("tissue", timed=False):
            _contrast_caveats(ct, density, masks, roles, dvhs)

    with steps.step("models", timed=False):
        liver_ml = (float(masks[whole[0]].array.sum(dtype=np.float64)) * maa.voxel_volume_ml if len(whole) == 1
                    else None)
        bsa = settings.bsa_m2 if settings.bsa_m2 is not None else (
            body_surface_area_m2(settings.height_m, settings.weight_kg)
            if settings.height_m is not None and settings.weight_kg is not None else None)
        for t, m in territories.items():
            plans[t]["models"] = _models(t, m, normals[t], tumour_union, counts, lsf, settings, constant, convention,
                                         case.sphere_type, bsa, liver_ml, whole, masks, rho)
            plans[t]["counts"] = records[t]["territories"][t]["counts"]
            plans[t]["volume_ml"] = float(m.array.sum(dtype=np.float64)) * maa.voxel_volume_ml
            plans[t]["mass_kg"] = _mass_kg(m, rho)
            plans[t]["planned_activity_gbq"] = planned.get(t)

    pct = act_record.get("counts_outside_percent")
    if pct is not None and pct > OUTSIDE_COUNTS_CAVEAT_PERCENT:
        steps.caveat("plan", f"{pct:.1f} % of the MAA SPECT's counts lie in voxels no territory or lung VOI touches "
                             "(extrahepatic uptake, free pertechnetate, blur, or a territory drawn too small): they get "
                             "no predicted activity; check the territories")
    residual = case.residual_fraction
    plan_record = {
        "scan": {"units": units, "nuclide": nuclide},
        "territory_rule": territory_rule,
        "lung_shunt": lsf_record,
        "dose_constant_gy_kg_per_gbq": constant,
        "convention": convention,
        "sphere_type": case.sphere_type,
        "activity_rule": "activities are those reaching the patient (GBq); the vial activity is this / (1 - residual)",
        "vial_activity_factor": None if residual is None else 1.0 / (1.0 - residual),
        "settings": settings.to_dict(),
        "predicted_map_activities_gbq": acts,
        "predicted_map": {k: v for k, v in act_record.items() if k != "territories"},
        "constraints_at_predicted_map": combined,
        "lung_model_dose_gy": lung_model_gy,
        "lung_model_mass_kg": lung_model_mass,
        "linearity": "dose = sum over territories of activity x the territory's dose at 1 GBq (one dose computation "
                     "per territory)",
        "territories": plans,
    }
    extra = dict(provenance or {})
    record = {
        "voxeldose_version": __version__,
        "kind": "plan (predicted dose from a Tc-99m MAA SPECT)",
        "input": {"series_instance_uid": maa.meta.series_instance_uid, "modality": maa.meta.modality, "units": units,
                  **dict(extra.pop("input", {}) or {})},
        "grid": {"shape_zyx": list(maa.shape), "spacing_mm": list(maa.spacing_mm), "origin_mm": list(maa.origin_mm),
                 "direction": list(maa.direction)},
        "calibration": {"method": "MAA counts of each territory normalised to its planned activity x (1 - LSF); the "
                                  "shunted activity uniform over the lung VOIs", "lung_shunt_fraction": lsf,
                        "times": {}},
        "dose": {"method": method, "method_description": METHODS[method], "units": "GY", "tissue": tissue,
                 "engine": engine, "kernel": _kernel_record(method, maa, tissue, kernel_tables),
                 **_density_record(density, voi_densities),
                 "negative_activity_rule": "negative counts (reconstruction noise) are kept: they cancel positive "
                                           "noise on average, and clipping them would raise every mean dose"},
        "timings_s": {**dict(timings_s or {}), **steps.timings_s},
        **extra,
    }
    # negative counts (reconstruction noise) are kept, as run keeps negative activity (module
    # voxeldose.pipeline): they cancel positive noise on average; a negative dose beyond the
    # FFT's round-off is said
    peak = float(np.abs(dose.array).max()) if dose.array.size else 0.0
    negative = int(np.count_nonzero(dose.array < -NEGATIVE_DOSE_FRACTION * peak))
    if negative:
        steps.caveat("dose", f"{negative} voxel(s) have a negative predicted dose, down to {float(dose.array.min()):.3g} "
                             "Gy (negative counts in the MAA SPECT); the RT Dose stores them as 0, the NIfTI dose map "
                             "keeps them")
    if not maa.meta.frame_of_reference_uid:
        steps.caveat("dose", "the MAA SPECT has no FrameOfReferenceUID (it was not read from DICOM): the RT Dose gets "
                             "a new one and registers with no image; the NIfTI maps keep the scan's geometry")
    from .radiobiology import case_radiobiology, radiobiology_provenance

    with steps.step("radiobiology", timed=False):  # of the predicted dose
        radiobiology = case_radiobiology(
            dvhs, roles, case.radiobiology,
            dose_scales={n: SOFT_TISSUE_DENSITY_G_PER_CM3 / rho for n, rho in voi_densities.items()})
    record["radiobiology"] = radiobiology_provenance(radiobiology)
    images = {"activity": activity, "dose": dose}
    _add_tissue(images, record, ct, density, body_record)
    return CaseResult(case=case, images=images, vois=masks, roles=roles, dvhs=dvhs,
                      caveats=tuple(steps.caveats), provenance=record, plan=plan_record, radiobiology=radiobiology)


def _acts_text(acts: Mapping[str, float]) -> str:
    return ", ".join(f"{t} {a:.4g} GBq" for t, a in acts.items())


def _lung_shunt(counts: Image, case: Case, settings: PlanSettings, lung: Image | None, masks: Mapping[str, Image],
                whole: Sequence[str], territories: Mapping[str, Image], steps: _Steps) -> tuple[float, dict[str, Any]]:
    measured = None
    liver_name = None
    if lung is not None:
        if len(whole) == 1:
            liver: Image | None = masks[whole[0]]
            liver_name = whole[0]
        else:
            liver, liver_name = _union(list(territories.values()), counts), "the territories"
        assert liver is not None
        measured = lung_shunt_from_counts(counts, lung, liver)
    source = settings.lung_shunt or ("case" if case.lung_shunt_fraction is not None else "counts")
    record: dict[str, Any] = {"from_counts": measured,
                              "counts_rule": None if measured is None else
                              f"C_lung / (C_lung + C_liver), lung VOIs and {liver_name} on the MAA SPECT",
                              "case": case.lung_shunt_fraction}
    if source == "case":
        if case.lung_shunt_fraction is None:
            raise InputError("[plan] lung_shunt = 'case' but the case has no lung_shunt_fraction; give it "
                             "(case-file key lung_shunt_fraction, or --lung-shunt) or measure it (lung_shunt = 'counts')")
        lsf = case.lung_shunt_fraction
        record["used"] = "case: " + case.source_of("lung_shunt_fraction")
        if measured is not None and abs(measured - lsf) > LSF_DISAGREEMENT:
            steps.caveat("plan", f"the lung shunt fraction measured on the MAA SPECT ({measured:.1%}) differs from the "
                                 f"case's ({lsf:.1%}) by more than {LSF_DISAGREEMENT:.0%}: check both (planar and SPECT "
                                 "estimates differ; a lung cut by the field of view lowers the SPECT's)")
    else:
        if measured is None:
            raise InputError("the lung shunt fraction is to be measured on the MAA SPECT, but no VOI has role 'lung'; "
                             "give the lungs' VOI the role 'lung', or the case's lung_shunt_fraction")
        lsf = measured
        record["used"] = f"counts: {record['counts_rule']}"
    if lsf >= 1.0:
        raise InputError(f"lung shunt fraction {lsf:g}: nothing would reach the liver")
    record["value"] = lsf
    return lsf, record


def _voxel_plan(t: str, base: np.ndarray, unit: np.ndarray, targets: Sequence[tuple[_Target, str | None]],
                settings: PlanSettings, lsf: float, lung_model: bool, planned: Mapping[str, float], constant: float,
                lung_mass_kg: float) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    upper = math.inf
    binding: str | None = None
    lower = 0.0
    lower_name: str | None = None
    for tg, owner in targets:
        c = tg.constraint
        if c.role == "perfused_normal" and owner != t:
            f = tg.metric(base, unit)
            row_limit = None  # another territory's normal liver: checked, not solved for here
        elif c.lower is not None and owner is not None and owner != t:
            continue  # a tumour of another territory: that territory's plan raises its dose
        else:
            f = tg.metric(base, unit)
            bound = c.upper if c.upper is not None else c.lower
            assert bound is not None
            row_limit = solve_activity(f, bound, upper=c.upper is not None)
        row = {"constraint": c.label(tg.voi), "source": c.source, "kind": "upper" if c.upper is not None else "lower",
               "activity_limit_gbq": row_limit, "at_zero": f(0.0)}
        rows.append(row)
        if row_limit is None:
            continue
        if c.upper is not None and row_limit < upper:
            upper, binding = row_limit, c.label(tg.voi)
        if c.lower is not None and row_limit > lower:
            lower, lower_name = row_limit, c.label(tg.voi)
    if lung_model and lsf > 0:
        others = sum(a for o, a in planned.items() if o != t)
        limit = settings.lung_limit_effective_gy
        a_lim = max(limit * lung_mass_kg / (constant * lsf) - others, 0.0)
        label = f"lung model (no lung VOI, {lung_mass_kg:g} kg) mean <= {limit:g} Gy"
        rows.append({"constraint": label, "source": _lung_source(settings), "kind": "upper",
                     "activity_limit_gbq": a_lim, "at_zero": constant * others * lsf / lung_mass_kg})
        if a_lim < upper:
            upper, binding = a_lim, label
    feasible = lower <= upper
    out: dict[str, Any] = {"activity_gbq": upper, "binding_constraint": binding, "constraints": rows,
                           "lowest_activity_for_lower_bounds_gbq": lower, "meets_all_constraints": feasible,
                           "others_at": {o: a for o, a in planned.items() if o != t}}
    if not math.isfinite(upper):
        out["note"] = "no upper-bound constraint limits this territory's activity"
    elif upper == 0.0:
        warnings.warn(f"territory {t!r}: {binding} is already exceeded by the other territories' planned activities: "
                      "no activity can be planned for it", VoxelDoseWarning, stacklevel=2)
    if not feasible:
        warnings.warn(f"territory {t!r}: no activity meets every constraint: {lower_name} needs at least {lower:.4g} GBq, "
                      f"{binding} allows at most {upper:.4g} GBq", VoxelDoseWarning, stacklevel=2)
    return out


def _metrics_at(dose_arr: np.ndarray | None, masks: Mapping[str, Image], roles: Mapping[str, str],
                rho: np.ndarray | None) -> dict[str, Any] | None:
    from .dvh import voi_metrics

    if dose_arr is None:
        return None
    dvhs = {n: _dvh_at(dose_arr, m, rho is None and roles.get(n) == "lung", n, rho) for n, m in masks.items()}
    return voi_metrics(dvhs)


def _models(t: str, territory: Image, normal: Image, tumour_union: np.ndarray, counts: Image, lsf: float,
            settings: PlanSettings, constant: float, convention: str, sphere_type: str | None, bsa: float | None,
            liver_ml: float | None, whole: Sequence[str], masks: Mapping[str, Image],
            rho: np.ndarray | None = None) -> dict[str, Any]:
    from .clinical import bsa_activity_gbq, tumour_to_normal_ratio
    from .voi_sets import intersection

    out: dict[str, Any] = {"dose_constant_gy_kg_per_gbq": constant, "convention": convention,
                           "masses": "from the CT's densities" if rho is not None else
                           f"at soft-tissue density ({SOFT_TISSUE_DENSITY_G_PER_CM3:g} g/cm3)"}
    m_t = _mass_kg(territory, rho)
    if settings.mird_target_gy is not None:
        out["mird"] = {"target_gy": settings.mird_target_gy, "mass_kg": m_t,
                       "activity_gbq": settings.mird_target_gy * m_t / (constant * (1.0 - lsf)),
                       "formula": "A = D M / (C (1 - LSF))"}
    tumours_in = intersection(territory.array, tumour_union)
    v_tum_ml = float(tumours_in.sum(dtype=np.float64)) * territory.voxel_volume_ml
    m_tum = (v_tum_ml * SOFT_TISSUE_DENSITY_G_PER_CM3 * 1e-3 if rho is None else
             float((np.asarray(tumours_in, np.float64) * rho).sum()) * territory.voxel_volume_ml * 1e-3)
    m_norm = _mass_kg(normal, rho)
    if m_tum > 0 and m_norm > 0:
        try:
            tn = float(tumour_to_normal_ratio(counts, tumours_in, normal.array))
        except VoxelDoseError as exc:
            out["partition"] = {"note": f"T:N not measured: {exc}"}
        else:
            part: dict[str, Any] = {"tumour_to_normal": tn, "tn_rule": "core voxels of each VOI on the MAA counts",
                                    "tumour_mass_kg": m_tum, "normal_mass_kg": m_norm}
            tn_mass = tn
            if rho is not None:
                # T:N is a ratio of counts per mL; the model needs it per kg: x rho_N / rho_T
                v_norm_ml = float(normal.array.sum(dtype=np.float64)) * territory.voxel_volume_ml
                tn_mass = tn * (m_norm / v_norm_ml) / (m_tum / v_tum_ml)
                part.update(tumour_to_normal_per_mass=tn_mass,
                            tn_mass_rule="T:N x (normal liver's mean density / tumours' mean density), from the CT")
            if settings.partition_normal_liver_gy is not None:
                d_n = settings.partition_normal_liver_gy
                a = d_n * (tn_mass * m_tum + m_norm) / (constant * (1.0 - lsf))
                part.update(normal_liver_target_gy=d_n, activity_gbq=a, tumour_dose_gy=tn_mass * d_n,
                            formula="A = D_N (T:N M_T + M_N) / (C (1 - LSF)); D_T = T:N D_N" + (
                                " (T:N per mass, masses from the CT)" if rho is not None else ""))
            out["partition"] = part
    else:
        out["partition"] = {"note": "no tumour in this territory (or no normal liver): the partition model has one "
                                    "compartment (MIRD)"}
    if sphere_type == "resin" or bsa is not None:
        if bsa is None:
            out["bsa"] = {"note": "resin: the BSA method needs [plan] height_m and weight_kg (or bsa_m2)"}
        elif liver_ml is None:
            out["bsa"] = {"note": "the BSA method needs the whole liver (one VOI of role 'whole_liver')"}
        else:
            liver = masks[whole[0]]
            v_tum = float(intersection(liver.array, tumour_union).sum(dtype=np.float64)) * liver.voxel_volume_ml
            v_norm = liver_ml - v_tum
            a_whole = float(bsa_activity_gbq(bsa, v_tum, v_norm))
            share = float(territory.array.sum(dtype=np.float64)) * territory.voxel_volume_ml / liver_ml
            reduction = bsa_lung_shunt_reduction(lsf)
            out["bsa"] = {"bsa_m2": bsa, "tumour_volume_ml": v_tum, "normal_liver_volume_ml": v_norm,
                          "whole_liver_activity_gbq": a_whole, "territory_share_of_liver": share,
                          "lung_shunt_reduction": reduction,
                          "activity_gbq": None if reduction is None else a_whole * min(share, 1.0) * reduction,
                          "formula": "A = (BSA - 0.2 + V_T / (V_T + V_N)) x V_territory / V_liver x LSF reduction "
                                     "(SIR-Spheres instructions; Kennedy et al. 2007)"}
            if reduction is None:
                out["bsa"]["note"] = f"lung shunt {lsf:.1%} > 20 %: the BSA method advises against treatment"
    return out


# --------------------------------------------------------------------------- reading and writing


def run_plan(
    scan: "str | os.PathLike[str]",
    vois: Sequence["str | os.PathLike[str]"],
    out: "str | os.PathLike[str]",
    *,
    case: "Case | str | os.PathLike[str] | None" = None,
    method: Method = "kernel",
    tissue: Tissue = "soft",
    engine: Engine = "auto",
    kernel_tables: "str | os.PathLike[str] | VsvTables | None" = None,
    series_uid: str | None = None,
    registered: bool = False,
    anonymize: bool = False,
    force: bool = False,
    overrides: Mapping[str, Any] | None = None,
    plan_overrides: Mapping[str, Any] | None = None,
    progress: "Callable[[str], None] | None" = None,
    ct: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None" = None,
    hu_table: "str | os.PathLike[str] | HuDensityTable | None" = None,
    outside_body: str = "exclude",
) -> CaseResult:
    """Read a planning case (the MAA SPECT and its VOIs), plan it (:func:`compute_plan`) and write
    its outputs into ``out`` like :func:`voxeldose.run_case` (``plan`` in ``metrics.json`` and the
    report).

    Parameters are those of :func:`voxeldose.run_case` (``anonymize`` too: every output, log
    and error message de-identified; ``ct``: the SPECT/CT's CT, whose densities enter the dose,
    :func:`compute_plan`); ``case`` holds the ``[plan]`` table, and
    ``plan_overrides`` (``[plan]`` keys, e.g. ``{"activities_gbq": {"right lobe": 2.0}}``) replace
    its values (:func:`voxeldose.planning.updated_plan_settings`).

    Raises
    ------
    VoxelDoseError
        Bad input of any kind; nothing is written to ``out`` then.
    """
    from .pipeline import _anonymized

    def call(anonymized: bool) -> CaseResult:
        return _run_plan(scan, vois, out, case=case, method=method, tissue=tissue, engine=engine,
                         kernel_tables=kernel_tables, series_uid=series_uid, registered=registered,
                         anonymize=anonymized, force=force, overrides=overrides, plan_overrides=plan_overrides,
                         progress=progress, ct_path=ct, hu_table=hu_table, outside_body=outside_body)

    return _anonymized(lambda: call(True)) if anonymize else call(False)


def _run_plan(scan: Any, vois: Sequence[Any], out: Any, *, case: Any, method: Method, tissue: Tissue, engine: Engine,
              kernel_tables: Any, series_uid: str | None, registered: bool, anonymize: bool, force: bool,
              overrides: Mapping[str, Any] | None, plan_overrides: Mapping[str, Any] | None,
              progress: "Callable[[str], None] | None", ct_path: Any, hu_table: Any,
              outside_body: str) -> CaseResult:
    from pathlib import Path

    from .density import SCHNEIDER2000
    from .io import load_hu_table, load_vsv_tables
    from .io.results import reserve_out
    from .pipeline import WITHHELD, _load_inputs, _write_outputs

    with reserve_out(out, force) as out_dir:
        steps = _Steps(progress)
        # the tables first: a wrong folder fails before minutes of reading
        tables = (load_vsv_tables(kernel_tables) if kernel_tables is not None
                  and not isinstance(kernel_tables, VsvTables) else kernel_tables)
        hu = (hu_table if isinstance(hu_table, HuDensityTable) else
              load_hu_table(hu_table) if hu_table is not None else SCHNEIDER2000)
        if method == "scaled_kernel" and ct_path is None:
            raise InputError("method 'scaled_kernel' scales the kernel by the tissue density along each path and needs "
                             "the SPECT/CT's CT: give it (--ct CT), or use method 'kernel' or 'local'")
        # a SPECT/CT export's folder holds both: each header is parsed once
        image, record, masks, ct, density = _load_inputs(steps, scan, series_uid, vois, case, overrides, ct_path,
                                                         hu, registered=registered, anonymize=anonymize)
        if plan_overrides:
            record = record.with_overrides(plan=updated_plan_settings(record.plan, plan_overrides))
        inputs: dict[str, Any] = {"scan": WITHHELD if anonymize else str(scan),
                                  "vois": [WITHHELD if anonymize else str(v) for v in vois]}
        if ct_path is not None:
            inputs["ct"] = WITHHELD if anonymize else (
                str(ct_path) if isinstance(ct_path, (str, os.PathLike))
                else f"{len(ct_path)} file(s) in {Path(ct_path[0]).parent}")
        result = compute_plan(image, masks, record, method=method, tissue=tissue, engine=engine, kernel_tables=tables,
                              caveats=steps.caveats, timings_s=steps.timings_s, progress=progress,
                              provenance={"input": inputs}, ct=ct, density=density, outside_body=outside_body)
        del image, masks, ct, density
        return _write_outputs(result, out_dir, steps, force=force, anonymize=anonymize)
