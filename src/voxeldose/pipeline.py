"""One case through the engine.

:func:`compute_case` is the computation of a case, from inputs in memory to one
:class:`~voxeldose.result.CaseResult`, with no file I/O: the VOI roles and derived VOIs,
calibration, dose, DVHs, model cross-checks, caveats and provenance. :func:`run_case` is
reading (:mod:`voxeldose.io`), that function, and writing (:func:`voxeldose.io.write_result`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ._version import __version__
from .constants import SOFT_TISSUE_DENSITY_G_PER_CM3
from .case import Case
from .dose import METHODS, Engine, Method
from .errors import GeometryError, InputError, VoiError, VoxelDoseError, VoxelDoseWarning
from .image import Image, mask_image
from .io.results import OUTPUT_FILES
from .kernels import Tissue, VsvTables, kernel_source
from .density import HuDensityTable
from .result import CaseResult, Caveat

if TYPE_CHECKING:
    from .dvh import DVH

__all__ = ["compute_case", "run_case", "OUTPUT_FILES"]

logger = logging.getLogger(__name__)


#: Negative doses smaller than this fraction of the largest are FFT round-off, not a caveat.
NEGATIVE_DOSE_FRACTION = 1e-5

#: What the provenance holds instead of input paths when the outputs are anonymized.
WITHHELD = "withheld (anonymize)"


class _Steps:
    """Times each step of a case and records, as its caveats, the warnings raised in it."""

    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.progress = progress or (lambda name: None)
        self.timings_s: dict[str, float] = {}
        self.caveats: list[Caveat] = []

    @contextmanager
    def step(self, name: str, *, timed: bool = True) -> Iterator[None]:
        if timed:
            self.progress(name)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                if timed:
                    self.timings_s[name] = time.perf_counter() - t0
                    logger.info("%s: %.2f s", name, self.timings_s[name])
        self.caveat(name, *(str(w.message) for w in caught if issubclass(w.category, UserWarning)))
        for w in caught:  # other warnings (deprecations of a library, ...) are not caveats: pass them on
            if not issubclass(w.category, UserWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def caveat(self, stage: str, *messages: str) -> None:
        seen = {c.message for c in self.caveats}
        for m in messages:
            if m not in seen:
                self.caveats.append(Caveat(stage, m))
                seen.add(m)


def _nearest(name: str, names: Sequence[str]) -> str:
    """ " (did you mean 'x'?)" for the nearest of ``names``, ignoring case; "" when none is near."""
    import difflib

    lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.6)
    return f" (did you mean {lower[close[0]]!r}?)" if close else ""


def _resolve_vois(vois: Mapping[str, Image], case: Case) -> tuple[dict[str, Image], dict[str, str]]:
    """The VOIs with the case's roles; normal liver derived from the whole liver and the tumours
    when no VOI has that role (:func:`voxeldose.derive_vois`).

    A role that names no VOI is an error: a typo there would silently move a tumour into the
    normal liver. VOIs without a role, and a case without roles, are caveats (warnings) that say
    what it costs and how to add the roles.
    """
    from .voi_sets import derive_vois

    masks = dict(vois)
    roles = dict(case.voi_roles)
    missing = [n for n in roles if n not in masks]
    if missing:
        listed = "; ".join(f"{n!r} (role {roles[n]}, from {case.role_source(n)}){_nearest(n, list(masks))}"
                           for n in missing)
        raise VoiError(
            f"the case gives roles to VOIs that are not in the VOI files: {listed}. The VOIs are: "
            f"{', '.join(map(repr, masks)) or 'none'}. Fix the names (they are case-sensitive) or remove those roles"
        )
    if not roles:
        warnings.warn(
            "no VOI has a role: no normal liver is derived, lung VOIs are not dosed at lung density, the model "
            "cross-checks have nothing to check, and a SPECT has no calibration VOI. Give roles in the case file "
            "([vois] liver = \"whole_liver\", ...) or with --voi-role NAME=ROLE (tumour, normal_liver, whole_liver, "
            "lung, perfused, body)", VoxelDoseWarning, stacklevel=2)
    else:
        unassigned = [n for n in masks if n not in roles]
        if unassigned:
            warnings.warn(
                f"VOIs without a role: {', '.join(map(repr, unassigned))}; they get DVHs but no place in the normal-"
                "liver derivation, the lung density or the model cross-checks. Give them roles in the case file "
                "[vois] or with --voi-role NAME=ROLE if they have one", VoxelDoseWarning, stacklevel=2)
    tumours = [n for n, r in roles.items() if r == "tumour"]
    whole = [n for n, r in roles.items() if r == "whole_liver"]
    if whole and tumours and not any(r == "normal_liver" for r in roles.values()):
        perfused = [n for n, r in roles.items() if r == "perfused"]
        derived = derive_vois(masks, whole_liver=whole[0], tumours=tumours, perfused=perfused[0] if perfused else None)
        for name, mask in derived.items():
            if name not in masks:
                masks[name] = mask
                roles.setdefault(name, "normal_liver" if name == "normal_liver" else "derived")
    return masks, roles


def compute_case(
    scan: Image,
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
    """One case, from its scan, VOIs and case values in memory to its :class:`CaseResult`.

    Parameters
    ----------
    scan : Image
        The Y-90 PET (Bq/mL) or bremsstrahlung SPECT (counts) with its metadata, or an activity
        map already in MBq per voxel at administration (units "MBQ", e.g. a phantom's).
    vois : mapping name -> mask Image (or array) on the scan's grid
        E.g. from :func:`voxeldose.load_vois`. Their roles come from ``case.voi_roles``; without
        a normal-liver VOI, normal liver is derived from the whole liver and the tumours.
    case : Case
        Administered activity and time, lung shunt, residual, scanner nuclide, roles.
    method, tissue, engine, kernel_tables
        As in :func:`voxeldose.absorbed_dose`.
    caveats : sequence of Caveat
        Caveats of earlier steps (reading), put first.
    timings_s : mapping, optional
        Times of earlier steps (s), put first in the provenance's ``timings_s``.
    provenance : mapping, optional
        Added to the provenance; an ``"input"`` mapping is merged into its ``input`` record
        (e.g. the paths read, or the batch's input hash).
    progress : callable, optional
        Called with the name of each step as it starts.
    ct : Image, optional
        The CT (HU) on the scan's grid (:func:`voxeldose.io.load_ct`): the report draws the dose
        over it; it is ``images["ct"]`` of the result.
    density : Image, optional
        Mass density (g/cm3) on the scan's grid, e.g. from the CT
        (:func:`voxeldose.io.load_ct_density`): every dose method uses it
        (:func:`voxeldose.absorbed_dose`), the body outline is drawn from it
        (:func:`voxeldose.density.body_mask`), VOI masses are their voxels' masses; it is
        ``images["density"]`` of the result. Without it, the tissue is soft tissue everywhere and
        lung VOIs' DVHs are rescaled to lung density.
    outside_body : {"exclude", "keep"}
        With a density map or a VOI of role "body" (which is then the body outline instead of the
        CT's): activity outside the body (noise, or a misregistration) is left out of the dose, or
        kept. Either way it is reported (MBq and % of the total) and the dose outside the body is
        0 (air is not tissue).

    Returns
    -------
    CaseResult
        With ``case.uncertainty`` asking for samples (``n`` >= 2; ``[uncertainty]`` or
        ``run --uncertainty N``), its ``uncertainty`` holds every VOI metric's interval and budget
        (:func:`voxeldose.uncertainty.propagate`; step "uncertainty" in the timings).

    Raises
    ------
    VoxelDoseError
        Bad input of any kind (the message says what and how to fix it).
    """
    from .calibrate import calibrate
    from .clinical import LUNG_DENSITY_G_PER_CM3, model_crosschecks
    from .dose import absorbed_dose
    from .radiobiology import case_radiobiology, radiobiology_provenance

    if not isinstance(scan, Image):
        raise InputError(f"compute_case needs the scan as a voxeldose Image, got {type(scan).__name__}")
    if not isinstance(case, Case):
        raise InputError(f"compute_case needs a voxeldose Case (voxeldose.load_case), got {type(case).__name__}")
    _check_tissue("compute_case", scan, ct, density, outside_body, method)
    steps = _Steps(progress)
    steps.caveats.extend(caveats)
    with steps.step("roles", timed=False):
        masks, roles = _resolve_vois({n: mask_image(scan, m, name=n) for n, m in vois.items()}, case)
    with steps.step("calibrate"):
        name = case.calibration_voi_name
        calibration_mask = masks.get(name) if name else None
        activity_map = calibrate(scan, case, calibration_mask=calibration_mask)
    body = None
    body_record: dict[str, Any] | None = None
    dosed = activity_map.image
    body_vois = [n for n, r in roles.items() if r == "body"]
    if density is not None or body_vois:
        with steps.step("body"):
            body, dosed, body_record = _body(density, activity_map.image, masks, outside_body, body_vois)
    with steps.step("dose"):
        if density is None and any(r == "lung" for r in roles.values()):
            warnings.warn(
                f"no CT: the dose ({method}) treats the lung as soft tissue ({SOFT_TISSUE_DENSITY_G_PER_CM3:g} g/cm3), "
                f"and the lung VOIs' DVHs are rescaled to {LUNG_DENSITY_G_PER_CM3:g} g/cm3, the same energy over the "
                "lung's mass (for the kernel, the 'soft-tissue kernel with density correction', +20 % in the right "
                "lung's mean dose against Monte Carlo in Mikell et al. 2015); the dose across the liver-lung interface "
                "ignores the lung. Give the CT (--ct) for the tissue-aware methods (--method scaled_kernel)",
                VoxelDoseWarning, stacklevel=2)
        dose = absorbed_dose(dosed, method=method, tissue=tissue, engine=engine, kernel_tables=kernel_tables,
                             density=density, body=body)
    with steps.step("dvh"):
        dvhs, voi_densities = _voi_dvhs(dose, masks, roles, density)
    if ct is not None and density is not None:
        with steps.step("tissue", timed=False):
            _contrast_caveats(ct, density, masks, roles, dvhs)
    crosschecks: dict[str, Any] = {}
    with steps.step("crosschecks", timed=False):
        if case.administered_gbq is None:
            header = scan.meta.radionuclide_total_dose_bq
            hint = (f"; the header's RadionuclideTotalDose (0018,1074) says {header / 1e9:.4g} GBq: if that is the "
                    "activity administered, pass it") if header else ""
            warnings.warn("no administered activity: no model cross-checks (MIRD, partition, lung shunt). Give it: "
                          f"case-file key administered_gbq, or --administered-gbq{hint}", VoxelDoseWarning, stacklevel=1)
        else:
            crosschecks = model_crosschecks(
                activity_map.image, masks, roles, dvhs, administered_gbq=case.administered_gbq,
                lung_shunt_fraction=case.lung_shunt_fraction or 0.0, residual_fraction=case.residual_fraction or 0.0,
                density=density)
    with steps.step("radiobiology", timed=False):
        radiobiology = case_radiobiology(
            dvhs, roles, case.radiobiology,
            dose_scales={n: SOFT_TISSUE_DENSITY_G_PER_CM3 / rho for n, rho in voi_densities.items()})
    uncertainty: dict[str, Any] = {}
    if case.uncertainty is not None and case.uncertainty.n > 0:
        from .uncertainty import propagate

        with steps.step("uncertainty"):
            uncertainty = propagate(
                activity_map.image, dose, masks, roles, dvhs, case.uncertainty, calibration=activity_map.provenance,
                calibration_voi=name if calibration_mask is not None else None, method=method, tissue=tissue,
                engine=engine, kernel_tables=kernel_tables, density=density, body=body,
                exclude_outside_body=outside_body == "exclude",
                voi_dose_scales={n: SOFT_TISSUE_DENSITY_G_PER_CM3 / rho for n, rho in voi_densities.items()},
                radiobiology=case.radiobiology)
    if not scan.meta.frame_of_reference_uid:
        steps.caveat("dose", "the scan has no FrameOfReferenceUID (it was not read from DICOM): the RT Dose gets a new "
                             "one and registers with no image; the NIfTI maps keep the scan's geometry")
    # negative doses beyond the float32 FFT's round-off (1e-7 of the maximum: not a dose)
    peak = float(np.abs(dose.array).max()) if dose.array.size else 0.0
    negative = int(np.count_nonzero(dose.array < -NEGATIVE_DOSE_FRACTION * peak))
    if negative:
        steps.caveat("dose", f"{negative} voxel(s) have a negative dose, down to {float(dose.array.min()):.3g} Gy "
                             "(negative activity in the scan); the RT Dose stores them as 0, the NIfTI dose map keeps them")
    extra = dict(provenance or {})
    record = {
        "voxeldose_version": __version__,
        "input": {"series_instance_uid": scan.meta.series_instance_uid, "modality": scan.meta.modality,
                  "units": scan.units, **dict(extra.pop("input", {}) or {})},
        "grid": {"shape_zyx": list(scan.shape), "spacing_mm": list(scan.spacing_mm),
                 "origin_mm": list(scan.origin_mm), "direction": list(scan.direction)},
        "calibration": dict(activity_map.provenance),
        "dose": {"method": method, "method_description": METHODS[method], "units": "GY", "tissue": tissue,
                 "engine": engine, "kernel": _kernel_record(method, scan, tissue, kernel_tables),
                 **_density_record(density, voi_densities),
                 "negative_activity_rule": "negative voxels (reconstruction noise) are kept: they cancel positive noise "
                                           "on average, and clipping them would raise every mean dose"},
        "timings_s": {**dict(timings_s or {}), **steps.timings_s},
        **extra,
    }
    images = {"activity": activity_map.image, "dose": dose}
    _add_tissue(images, record, ct, density, body_record)
    record["radiobiology"] = radiobiology_provenance(radiobiology)
    if uncertainty:
        record["uncertainty"] = uncertainty["record"]
    return CaseResult(case=case, images=images, vois=masks, roles=roles,
                      dvhs=dvhs, crosschecks=crosschecks, caveats=tuple(steps.caveats), provenance=record,
                      radiobiology=radiobiology, uncertainty=uncertainty)


#: What may happen to activity outside the body (:func:`compute_case`'s ``outside_body``).
OUTSIDE_BODY_RULES = ("exclude", "keep")

#: Activity outside the body above this share of the total (%) is a caveat.
OUTSIDE_BODY_CAVEAT_PERCENT = 1.0

#: A VOI with more than this share of its volume outside the body (%) is a caveat.
VOI_OUTSIDE_BODY_CAVEAT_PERCENT = 1.0


def _kernel_record(method: str, scan: Image, tissue: Tissue, kernel_tables: VsvTables | None) -> str:
    if method == "kernel":
        return kernel_source(scan.spacing_mm, tissue, tables=kernel_tables)
    if method == "scaled_kernel":
        return ("voxeldose DPK integration (fit to Lanconelli 2012), soft tissue, scaled to density classes 10 % apart "
                f"by the scaling theorem, voxel {' x '.join(f'{h:g}' for h in scan.spacing_mm)} mm")
    return "local deposition"


def _check_tissue(who: str, scan: Image, ct: Image | None, density: Image | None, outside_body: str,
                  method: str) -> None:
    """Refuse a CT or density map off the scan's grid, an unknown outside-body rule, and the
    scaled kernel without densities."""
    if ct is not None and (not isinstance(ct, Image) or (ct.units or "").upper() != "HU" or not ct.same_grid(scan)):
        raise GeometryError(f"{who}: ct must be a CT image (units 'HU') on the scan's grid; resample it with "
                            "voxeldose.io.load_ct(path, scan)")
    if density is not None and (not isinstance(density, Image) or (density.units or "").upper() != "G/CM3"
                                or not density.same_grid(scan)):
        raise GeometryError(f"{who}: density must be a density image (units 'G/CM3') on the scan's grid; make "
                            "it with voxeldose.io.load_ct_density(path, scan)")
    if outside_body not in OUTSIDE_BODY_RULES:
        raise InputError(f"outside_body must be one of {', '.join(map(repr, OUTSIDE_BODY_RULES))}, got {outside_body!r}")
    if method == "scaled_kernel" and density is None:
        raise InputError("method 'scaled_kernel' scales the kernel by the tissue density along each path and needs the "
                         "case's CT: give it (--ct CT, or a 'ct' in the batch manifest), or use method 'kernel' or 'local'")


def _voi_dvhs(dose: Image, masks: Mapping[str, Image], roles: Mapping[str, str],
              density: Image | None) -> tuple[dict[str, DVH], dict[str, float]]:
    """Every VOI's DVH, and the densities the lung VOIs' DVHs were rescaled to (no density map)."""
    from .clinical import LUNG_DENSITY_G_PER_CM3
    from .dvh import dvh

    dvhs = {n: dvh(dose, m, name=n) for n, m in masks.items()}
    voi_densities: dict[str, float] = {}
    if density is None:
        # the dose map is energy per mass of soft tissue; a lung VOI's mass is mostly air
        voi_densities = {n: LUNG_DENSITY_G_PER_CM3 for n, r in roles.items() if r == "lung" and n in dvhs}
        dvhs.update({n: dvhs[n].at_density(rho) for n, rho in voi_densities.items()})
    else:
        # each voxel's dose is already its own (density map): the VOI's mass is its voxels' masses
        rho = np.asarray(density.array, dtype=np.float64)
        for n, m in masks.items():
            w = np.asarray(m.array, dtype=np.float64)
            dvhs[n] = replace(dvhs[n], density_g_per_cm3=float((w * rho).sum() / w.sum()))
    return dvhs, voi_densities


def _density_record(density: Image | None, voi_densities: Mapping[str, float]) -> dict[str, Any]:
    """The dose record's words on the tissue density (a density map, or soft tissue everywhere)."""
    return {
        "density": "from the CT (images 'density', density.nii.gz)" if density is not None
        else f"none: soft tissue ({SOFT_TISSUE_DENSITY_G_PER_CM3:g} g/cm3) everywhere",
        "voi_densities_g_per_cm3": dict(voi_densities),
        "voi_density_rule": "the DVHs of these VOIs are those of the dose map (soft tissue, "
                            f"{SOFT_TISSUE_DENSITY_G_PER_CM3:g} g/cm3) times {SOFT_TISSUE_DENSITY_G_PER_CM3:g} / density: "
                            "the same energy over the VOI's mass (DVH.at_density)" if density is None else
                            "each voxel's dose is that of its own density (CT); a VOI's mass is the sum of its "
                            "voxels' masses",
    }


def _add_tissue(images: dict[str, Image], record: dict[str, Any], ct: Image | None, density: Image | None,
                body_record: Mapping[str, Any] | None) -> None:
    """The CT, the density map and the body outline's record into a result's images and provenance."""
    if ct is not None:
        images["ct"] = ct
        record["ct"] = {"series_instance_uid": ct.meta.series_instance_uid,
                        "use": "the report's background" + (" and the tissue density" if density is not None else ""),
                        "resampling": "trilinear onto the scan's grid by world coordinates, -1000 HU outside",
                        "coverage_of_the_grid": ct.meta.extra.get("coverage")}
    if density is not None:
        images["density"] = density
        record["density"] = {k: v for k, v in density.meta.extra.items() if k not in ("coverage", "outside_ct")}
    if body_record is not None:
        record["body"] = dict(body_record)


def _body_outline(density: Image | None, like: Image, masks: Mapping[str, Image],
                  body_vois: Sequence[str] = ()) -> tuple[Image, str, Any]:
    """The body outline on ``like``'s grid (the VOIs of role "body", else drawn from the
    density), the words of its rule, and the voxels the CT does not cover (or None)."""
    from .density import BODY_THRESHOLD_G_PER_CM3, body_mask

    if body_vois:
        union = np.maximum.reduce([np.asarray(masks[n].array, dtype=np.float32) for n in body_vois])
        body = like.with_array((union >= 0.5).astype(np.float32), units="MASK")
        how = f"the VOI(s) of role body ({', '.join(body_vois)}), voxels at least half inside; no dose outside it"
    elif density is not None:
        body = body_mask(density)
        how = (f"the largest connected region denser than {BODY_THRESHOLD_G_PER_CM3:g} g/cm3, holes of each axial "
               "slice filled; no dose outside it")
    else:  # pragma: no cover - compute_case calls this with one or the other
        raise InputError("the body outline needs a density map or a VOI of role body")
    unknown = None if density is None else density.meta.extra.get("outside_ct")
    if unknown is not None and np.shape(unknown) != like.shape:
        raise GeometryError(f"the density map's record of the voxels outside the CT has shape {np.shape(unknown)}, its "
                            f"grid {like.shape}: make the density with voxeldose.io.load_ct_density(path, scan)")
    if unknown is not None and np.any(unknown):
        # voxels the CT does not cover have no known density (they are given air's): never tissue,
        # also where a body VOI covers them (air's density would give them ~900 times the dose)
        body = body.with_array(((body.array > 0.5) & ~unknown).astype(np.float32))
        how += "; voxels less than half inside the CT (density unknown) are outside it"
    return body, how, unknown


def _body(density: Image | None, activity: Image, masks: Mapping[str, Image], rule: str,
          body_vois: Sequence[str] = (), outline: tuple[Image, str, Any] | None = None
          ) -> tuple[Image, Image, dict[str, Any]]:
    """The body outline (the VOIs of role "body", else drawn from the density; ``outline``:
    :func:`_body_outline`'s result when the caller has it already), the activity to dose
    (without what lies outside the body unless ``rule`` is "keep"), and what was found outside
    it (warned as caveats)."""
    body, how, unknown = outline if outline is not None else _body_outline(density, activity, masks, body_vois)
    inside = body.array > 0.5
    a = np.asarray(activity.array, dtype=np.float64)
    total = float(a.sum())
    unknown_record: dict[str, Any] = {}
    if unknown is not None and np.any(unknown):
        unknown_mbq = float(a[unknown].sum())
        unknown_percent = 100.0 * unknown_mbq / total if total > 0 else 0.0
        unknown_record = {"activity_outside_ct_mbq": unknown_mbq, "activity_outside_ct_percent": unknown_percent}
        if unknown_percent > OUTSIDE_BODY_CAVEAT_PERCENT:
            warnings.warn(
                f"{unknown_mbq:.4g} MBq ({unknown_percent:.1f} % of the scan's activity) lie in voxels the CT does not "
                f"cover, whose density is unknown: they are outside the body outline and "
                f"{'left out of' if rule == 'exclude' else 'kept in'} the dose. "
                "Give a CT that covers the scan's field of view", VoxelDoseWarning, stacklevel=3)
    outside_mbq = float(a[~inside].sum())
    percent = 100.0 * outside_mbq / total if total > 0 else 0.0
    record: dict[str, Any] = {
        "rule": how,
        "volume_ml": float(inside.sum()) * activity.voxel_volume_ml,
        "activity_outside_mbq": outside_mbq, "activity_outside_percent": percent,
        **unknown_record,
        "activity_outside": "excluded from the dose" if rule == "exclude" else "kept in the dose",
        "vois_outside_percent": {},
    }
    if percent > OUTSIDE_BODY_CAVEAT_PERCENT:
        warnings.warn(
            f"{outside_mbq:.4g} MBq ({percent:.1f} % of the scan's activity) lie outside the body outline "
            f"({'the body VOI' if body_vois else 'drawn from the CT'}): "
            f"{'left out of' if rule == 'exclude' else 'kept in'} the dose. Much activity outside the body is a "
            "misregistered CT or a scan with a large background; check the registration (--outside-body keep "
            "to keep it)", VoxelDoseWarning, stacklevel=3)
    dosed = activity
    if rule == "exclude" and outside_mbq != 0.0:
        dosed = activity.with_array(np.where(inside, a, 0.0).astype(np.float32))
    for name, mask in masks.items():
        if name in body_vois:
            continue
        w = np.asarray(mask.array, dtype=np.float64)
        share = 100.0 * float(w[~inside].sum()) / float(w.sum()) if w.sum() > 0 else 0.0
        record["vois_outside_percent"][name] = share
        if share > VOI_OUTSIDE_BODY_CAVEAT_PERCENT:
            warnings.warn(f"VOI {name!r}: {share:.1f} % of its volume lies outside the body outline, where the dose "
                          "is 0 (air): its DVH counts those voxels at 0 Gy. Check the CT's registration and the VOI",
                          VoxelDoseWarning, stacklevel=3)
    return body, dosed, record


#: A liver or tumour VOI whose mean CT number is above this (HU) is a caveat when the density
#: came from the default table: Schneider et al. 2000 turn from their soft-tissue line to their
#: bone line at 100 HU. Unenhanced liver is ~50-65 HU; iodine contrast raises the CT number far
#: more than the mass density (enhanced liver at 130 HU is ~1.06 g/cm3, the bone line gives 1.09).
CONTRAST_CAVEAT_HU = 100.0


def _contrast_caveats(ct: Image, density: Image, masks: Mapping[str, Image], roles: Mapping[str, str],
                      dvhs: Mapping[str, DVH]) -> None:
    """Warn for each liver or tumour VOI whose mean CT number suggests a contrast-enhanced CT,
    where the default HU table gives too high a density (and too low a dose). ``dvhs`` carry
    each VOI's mean density from the CT."""
    from .density import SCHNEIDER2000

    if density.meta.extra.get("hu_table") != SCHNEIDER2000.source:
        return  # the user's own table may be calibrated for the CT it is used with
    hu = np.asarray(ct.array, dtype=np.float64)
    for name, mask in masks.items():
        if roles.get(name) not in ("whole_liver", "normal_liver", "tumour", "perfused"):
            continue
        w = np.asarray(mask.array, dtype=np.float64)
        if w.sum() <= 0:
            continue
        mean_hu = float((w * hu).sum() / w.sum())
        if mean_hu > CONTRAST_CAVEAT_HU:
            rho = dvhs[name].density_g_per_cm3
            warnings.warn(
                f"VOI {name!r}: mean CT number {mean_hu:.0f} HU, above the {CONTRAST_CAVEAT_HU:.0f} HU where the "
                f"Schneider 2000 table turns from soft tissue to its bone line (density {rho:.3f} g/cm3 here): a "
                "contrast-enhanced CT? Iodine raises the CT number far more than the mass density, so the density "
                "is a few percent high and the dose as much low. Use an unenhanced CT, or a table calibrated for "
                "this one (--hu-table)", VoxelDoseWarning, stacklevel=3)


# --------------------------------------------------------------------------- one exported case


def _case_from(case: "Case | str | os.PathLike[str] | None", overrides: Mapping[str, Any], image: Image) -> Case:
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
    return base.with_overrides(**values) if values else base


def run_case(
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
    progress: "Callable[[str], None] | None" = None,
    extra_provenance: Mapping[str, Any] | None = None,
    caveats: Sequence[Caveat] = (),
    ct: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None" = None,
    hu_table: "str | os.PathLike[str] | HuDensityTable | None" = None,
    outside_body: str = "exclude",
) -> CaseResult:
    """Read one exported case, compute it (:func:`compute_case`) and write its outputs into ``out``.

    Parameters
    ----------
    scan : path
        Folder or file(s) of the Y-90 PET or bremsstrahlung SPECT series.
    vois : sequence of paths
        RTSTRUCT, SEG or label-map files (or folders of them), placed on the scan's grid.
    out : path
        Output folder (:func:`voxeldose.io.write_result`: written into a temporary folder beside
        it and moved into place only when complete; an existing ``out`` with results is refused
        unless ``force``, and then replaced only after the new results are complete).
    case : Case, path of a case file, or None
        Values the headers lack; ``overrides`` (e.g. from the command line) replace its values.
    method, tissue, engine
        As in :func:`voxeldose.absorbed_dose`.
    kernel_tables : path or VsvTables, optional
        Published voxel S-value tables (a folder: :func:`voxeldose.io.load_vsv_tables`).
    series_uid : str, optional
        The series to load when ``scan`` holds several.
    registered : bool
        Accept VOIs from another frame of reference (the user states they are registered).
    anonymize : bool
        De-identify every output (:mod:`voxeldose.anonymize`, after the DICOM Basic Profile):
        the RT Dose without patient identifiers (the case id replaces them) and with mapped
        UIDs; times shifted so that the administration is 2000-01-01 00:00 (intervals kept);
        UIDs mapped, identifiers, descriptions and input paths withheld in the metrics, the
        report, the log records of the run and the message of an error. The returned result is
        the anonymized one.
    progress : callable, optional
        Called with the name of each step as it starts.
    extra_provenance : mapping, optional
        Added to the provenance in metrics.json (e.g. the batch's input hash).
    caveats : sequence of Caveat
        Caveats the caller adds to the result's (e.g. the batch's choice of series).
    ct : path or sequence of paths, optional
        The CT series (folder, file or files) of the case (same frame of reference as the scan
        unless ``registered``): the report draws the dose over it, and its densities
        (:func:`voxeldose.io.load_ct_density`) enter the dose (:func:`compute_case`'s ``density``).
    hu_table : path or HuDensityTable, optional
        The CT's HU-to-density calibration (:func:`voxeldose.io.load_hu_table`); default
        :data:`voxeldose.density.SCHNEIDER2000`.
    outside_body : {"exclude", "keep"}
        As in :func:`compute_case`.

    Returns
    -------
    CaseResult
        With the time of writing the outputs in ``provenance["timings_s"]["outputs"]``.

    Raises
    ------
    VoxelDoseError
        Bad input of any kind; nothing is written to ``out`` then.
    """
    if not anonymize:
        return _run_case(scan, vois, out, case, method, tissue, engine, kernel_tables, series_uid, registered, False,
                         force, overrides, progress, extra_provenance, caveats, ct, hu_table, outside_body)
    return _anonymized(lambda: _run_case(scan, vois, out, case, method, tissue, engine, kernel_tables, series_uid,
                                         registered, True, force, overrides, progress, extra_provenance, caveats, ct,
                                         hu_table, outside_body))


def _anonymized(call: Callable[[], CaseResult]) -> CaseResult:
    """``call()`` with every log record and error message cleaned of dates, UIDs and paths (until
    the case is known there is no anchor for dates: they are withheld)."""
    from .anonymize import Anonymizer

    early = Anonymizer(None)
    with _anonymized_logs(early):
        try:
            return call()
        except VoxelDoseError as exc:
            text = early.text(str(exc))
            if text == str(exc):
                raise
            scrubbed = type(exc)(f"{text} (paths, dates and UIDs withheld: anonymize; run without it to see them)")
            raise scrubbed from None


class _LogAnonymizer(logging.Filter):
    def __init__(self, anonymizer: Any) -> None:
        super().__init__()
        self.anonymizer = anonymizer

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.anonymizer.text(record.getMessage()), ()
        return True


@contextmanager
def _anonymized_logs(anonymizer: Any) -> Iterator[None]:
    """Log records that reach the handlers of voxeldose's logger and of the root logger (the
    command line's, a batch case's log) pass through ``anonymizer`` while a case runs."""
    handlers = {*logging.getLogger("voxeldose").handlers, *logging.getLogger().handlers}
    f = _LogAnonymizer(anonymizer)
    for h in handlers:
        h.addFilter(f)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(f)


def _run_case(scan: "str | os.PathLike[str]", vois: Sequence["str | os.PathLike[str]"], out: "str | os.PathLike[str]",
              case: "Case | str | os.PathLike[str] | None", method: Method, tissue: Tissue, engine: Engine,
              kernel_tables: "str | os.PathLike[str] | VsvTables | None", series_uid: str | None, registered: bool,
              anonymize: bool, force: bool, overrides: Mapping[str, Any] | None,
              progress: "Callable[[str], None] | None", extra_provenance: Mapping[str, Any] | None,
              caveats: Sequence[Caveat],
              ct_path: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None",
              hu_table: Any = None, outside_body: str = "exclude") -> CaseResult:
    from .io.results import reserve_out

    with reserve_out(out, force) as out_dir:  # a second run into ``out`` is refused now, not after computing
        return _run_reserved(out_dir, scan, vois, case, series_uid=series_uid, method=method, tissue=tissue,
                             engine=engine, kernel_tables=kernel_tables, registered=registered, anonymize=anonymize,
                             force=force, overrides=overrides, progress=progress, extra_provenance=extra_provenance,
                             caveats=caveats, ct_path=ct_path, hu_table=hu_table, outside_body=outside_body)


def _run_reserved(out_dir: Path, scan: Any, vois: Sequence[Any], case: Any, *, series_uid: str | None, method: Method,
                  tissue: Tissue, engine: Engine, kernel_tables: Any, registered: bool, anonymize: bool, force: bool,
                  overrides: Mapping[str, Any] | None, progress: "Callable[[str], None] | None",
                  extra_provenance: Mapping[str, Any] | None, caveats: Sequence[Caveat], ct_path: Any,
                  hu_table: Any = None, outside_body: str = "exclude") -> CaseResult:
    from .density import SCHNEIDER2000, HuDensityTable
    from .io import load_hu_table, load_vsv_tables

    steps = _Steps(progress)
    steps.caveats.extend(caveats)
    # the tables first: a wrong folder fails before minutes of reading
    tables = (load_vsv_tables(kernel_tables) if kernel_tables is not None and not isinstance(kernel_tables, VsvTables)
              else kernel_tables)
    hu = (hu_table if isinstance(hu_table, HuDensityTable) else
          load_hu_table(hu_table) if hu_table is not None else SCHNEIDER2000)
    if method == "scaled_kernel" and ct_path is None:
        raise InputError("method 'scaled_kernel' scales the kernel by the tissue density along each path and needs the "
                         "case's CT: give it (--ct CT, or a 'ct' in the batch manifest), or use method 'kernel' or 'local'")
    image, record, masks, ct, density = _load_inputs(steps, scan, series_uid, vois, case, overrides, ct_path, hu,
                                                     registered=registered, anonymize=anonymize)
    # folder names of exports often hold the patient's name: with anonymize, no folder paths
    inputs = {"scan": WITHHELD if anonymize else str(scan), "vois": [WITHHELD if anonymize else str(v) for v in vois]}
    if ct_path is not None:
        inputs["ct"] = WITHHELD if anonymize else (
            str(ct_path) if isinstance(ct_path, (str, os.PathLike)) else f"{len(ct_path)} file(s) in {Path(ct_path[0]).parent}")
    result = compute_case(image, masks, record, method=method, tissue=tissue, engine=engine, kernel_tables=tables,
                          caveats=steps.caveats, timings_s=steps.timings_s,
                          provenance={"input": inputs, **dict(extra_provenance or {})}, progress=progress, ct=ct,
                          density=density, outside_body=outside_body)
    del image, masks, ct, density
    return _write_outputs(result, out_dir, steps, force=force, anonymize=anonymize)


def _load_inputs(steps: _Steps, scan: Any, series_uid: str | None, vois: Sequence[Any], case: Any,
                 overrides: Mapping[str, Any] | None, ct_path: Any, hu: Any, *, registered: bool,
                 anonymize: bool) -> tuple[Image, Case, dict[str, Image], Image | None, Image | None]:
    """A case's inputs, read (steps "load", "vois", "ct"): the scan, its case record, its VOIs
    and the CT with its densities (None without a CT). Within shared reads: the scan's folder
    often holds the CT, whose headers, read when the scan's series are listed, are not parsed
    again for the CT (nor those a batch worker read to find the case)."""
    from .io import load_ct_density, load_image
    from .io._dicom_common import shared_reads

    with shared_reads():
        with steps.step("load"):
            image = load_image(scan, series_uid)
        record = _case_from(case, overrides or {}, image)
        if anonymize and record.source_path:  # the provenance names the case file by its name only
            record = replace(record, source_path=Path(record.source_path).name)
        with steps.step("vois"):
            masks = _load_voi_files(vois, image, registered)
        ct = density = None
        if ct_path is not None:
            with steps.step("ct"):
                ct, density = load_ct_density(ct_path, image, table=hu, registered=registered)
    return image, record, masks, ct, density


def _load_voi_files(paths: Sequence[Any], image: Image, registered: bool) -> dict[str, Image]:
    """Every VOI of the files ``paths`` on ``image``'s grid; a name defined twice is refused."""
    from .io import load_vois

    masks: dict[str, Image] = {}
    for path in paths:
        for name, mask in load_vois(path, image, registered=registered).items():
            if name in masks:
                raise VoiError(f"VOI {name!r} is defined twice (again in {path}); rename one of them")
            masks[name] = mask
    return masks


def _write_outputs(result: CaseResult, out_dir: Path, steps: _Steps, *, force: bool, anonymize: bool) -> CaseResult:
    """Write a computed case into its reserved folder (anonymized when asked) and return it as
    written, with the time of writing and the caveats raised while writing."""
    from .anonymize import anonymize_result, anonymizer_for
    from .io.results import write_result

    text = (lambda message: message)
    if anonymize:  # the result as its outputs hold it, for the caller too (and its logs)
        text = anonymizer_for(result).text
        result = anonymize_result(result)
    with steps.step("outputs"):
        write_result(result, out_dir, force=force, anonymize=anonymize)
    timings = {**result.provenance["timings_s"], "outputs": steps.timings_s["outputs"]}
    return replace(result, provenance={**result.provenance, "timings_s": timings},
                   caveats=result.caveats + tuple(Caveat(c.stage, text(c.message)) for c in steps.caveats
                                                  if c.stage == "outputs"))
