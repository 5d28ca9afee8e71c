"""One case, one result: what a case produced, in one object that every output reads.

:class:`CaseResult` holds the images of a case (the activity at administration and the dose,
and any later ones), its VOI masks with their roles, the DVHs, the model cross-checks, the
caveats and the provenance. :func:`voxeldose.pipeline.compute_case` makes it from inputs in
memory; the writers (:func:`voxeldose.io.write_result`), the report, the batch's cohort table
and a Python user all read it.

Caveats travel one way. Every stage reports a scientific caveat as a
:class:`~voxeldose.VoxelDoseWarning`; :func:`~voxeldose.pipeline.compute_case` (and
:func:`~voxeldose.pipeline.run_case` for the reading steps) records each with the stage it came
from into :attr:`CaseResult.caveats`, and from there it reaches ``metrics.json``, the report, the
command line's log and the batch's log.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Mapping

from .case import Case
from .dvh import DVH, voi_metrics
from .errors import GeometryError, InputError, VoiError
from .image import Image

__all__ = ["Caveat", "CaseResult", "metrics_rows", "ROW_COLUMNS"]


@dataclass(frozen=True)
class Caveat:
    """A scientific caveat about a case's result, and the stage that raised it.

    Attributes
    ----------
    stage : str
        "batch" (what a batch case folder's rules chose), "load", "vois", "roles", "calibrate", "dose",
        "dvh", "crosschecks" or "outputs".
    message : str
        What the caveat is, with numbers and how to act on it.
    """

    stage: str
    message: str


@dataclass(frozen=True)
class CaseResult:
    """Everything one case produced. Immutable; build it with :func:`voxeldose.compute_case`.

    Attributes
    ----------
    case : Case
        The case values used (after overrides).
    images : mapping name -> Image
        ``"activity"`` (MBq per voxel at administration) and ``"dose"`` (Gy), on the scan's
        grid, with the scan's metadata (frame of reference, identifiers for the RT Dose).
    vois : mapping name -> Image
        The VOI masks (units "MASK") on the same grid, derived VOIs included, in order.
    roles : mapping name -> role
        The role of each VOI that has one (``tumour``, ``normal_liver``, ``whole_liver``,
        ``lung``, ``perfused``; ``derived`` for a derived VOI without another role).
    dvhs : mapping name -> DVH
        One per VOI; those of lung VOIs at lung density (:meth:`DVH.at_density`), the others in
        soft tissue, the medium of the dose map.
    crosschecks : mapping
        The model cross-checks (:func:`voxeldose.clinical.model_crosschecks`), or ``{}``.
    caveats : tuple of Caveat
        Every scientific caveat, in the order raised.
    provenance : mapping
        JSON-able: version, inputs, grid, every calibration factor, kernel, method, timings.
    plan : mapping
        A planning case's plan (:func:`voxeldose.plan.compute_plan`: the images are then the
        predicted activity and dose), or ``{}``.
    radiobiology : mapping
        The radiobiology of each VOI with parameters (:func:`voxeldose.radiobiology.case_radiobiology`:
        BED mean, D70 and D90, EQD2, EUD, EUBED, gEUD, the parameters and their sources), the
        VOIs without, and the BED maps' parameters; or ``{}``.
    uncertainty : mapping
        The uncertainty analysis (:func:`voxeldose.uncertainty.propagate`: per VOI and metric
        the value, standard uncertainty, 95 % interval and budget; the DVH bands; its record is
        ``provenance["uncertainty"]``), or ``{}`` when the case asked for none.
    """

    case: Case
    images: Mapping[str, Image]
    vois: Mapping[str, Image]
    roles: Mapping[str, str]
    dvhs: Mapping[str, DVH]
    crosschecks: Mapping[str, Any] = field(default_factory=dict)
    caveats: tuple[Caveat, ...] = ()
    provenance: Mapping[str, Any] = field(default_factory=dict)
    plan: Mapping[str, Any] = field(default_factory=dict)
    radiobiology: Mapping[str, Any] = field(default_factory=dict)
    uncertainty: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # one grid for everything a case holds: checked once, here, so that every output can rely on it
        if not isinstance(self.case, Case):
            raise InputError(f"CaseResult.case must be a voxeldose Case, got {type(self.case).__name__}")
        for key, units in (("activity", "MBQ"), ("dose", "GY")):
            image = self.images.get(key)
            if not isinstance(image, Image) or image.units != units:
                raise InputError(f"CaseResult.images[{key!r}] must be an Image in {units!r}, got {image!r:.80}")
        grid = self.images["dose"]
        for name, image in self.images.items():
            if not grid.same_grid(image):
                raise GeometryError(f"CaseResult: image {name!r} is not on the dose's grid")
        for name, mask in self.vois.items():
            if not isinstance(mask, Image) or mask.units != "MASK" or not grid.same_grid(mask):
                raise VoiError(f"CaseResult: VOI {name!r} must be a mask Image on the dose's grid; resample it "
                               "onto the scan (voxeldose.mask_image checks one)")
        missing = sorted(set(self.dvhs) - set(self.vois))
        if missing:
            raise VoiError(f"CaseResult: DVHs without a VOI mask: {', '.join(map(repr, missing))}")
        object.__setattr__(self, "caveats", tuple(self.caveats))

    @property
    def case_id(self) -> str:
        return self.case.case_id

    @property
    def activity(self) -> Image:
        """Activity per voxel at administration (MBq)."""
        return self.images["activity"]

    @property
    def dose(self) -> Image:
        """Absorbed dose (Gy)."""
        return self.images["dose"]

    @property
    def warnings(self) -> tuple[str, ...]:
        """The caveats' messages."""
        return tuple(c.message for c in self.caveats)

    @functools.cached_property
    def metrics(self) -> dict[str, dict[str, float]]:
        """Per VOI: volume, mass and density (those of its DVH: lung VOIs at lung density),
        mean/min/max and the D and V metrics."""
        return voi_metrics(self.dvhs)

    @property
    def references(self) -> dict[str, list[dict[str, Any]]]:
        """Each VOI's mean dose against the clinical references of its role
        (:func:`voxeldose.clinical.reference_flags`: lung limits, normal-liver toxicity levels,
        tumour response thresholds, each with its source)."""
        from .clinical import reference_flags

        return reference_flags(self.dvhs, self.roles)

    def to_dict(self) -> dict[str, Any]:
        """The result as ``metrics.json`` holds it (JSON-able apart from numpy scalars). Each VOI with
        radiobiology parameters has, after its physical metrics, a ``radiobiology`` entry (BED
        mean, D70, D90, EQD2 mean, EUD, EUBED, gEUD and the parameter values); the sources of the
        parameters and the rules are in ``provenance["radiobiology"]``."""
        return {
            "case_id": self.case_id,
            "case": self.case.to_dict(),
            "vois": self._vois_with_radiobiology(),
            "roles": dict(self.roles),
            "clinical_references": self.references,
            "model_crosschecks": dict(self.crosschecks),
            "warnings": list(self.warnings),
            "provenance": dict(self.provenance),
            **({"plan": dict(self.plan)} if self.plan else {}),
            **({"uncertainty": {"dvh_bands": dict(self.uncertainty.get("dvh_bands", {}))}} if self.uncertainty else {}),
        }

    def _vois_with_radiobiology(self) -> dict[str, dict[str, Any]]:
        """:attr:`metrics`, and for each VOI with radiobiology parameters a ``radiobiology`` entry:
        its metrics and the parameter values (their sources: ``provenance["radiobiology"]``)."""
        from .radiobiology import PARAMETER_KEYS, RADIOBIOLOGY_METRICS

        biology = (self.radiobiology or {}).get("vois", {}) or {}
        intervals = (self.uncertainty or {}).get("vois", {}) or {}
        out: dict[str, dict[str, Any]] = {}
        for name, values in self.metrics.items():
            rb = biology.get(name)
            entry: dict[str, Any] = dict(values)
            if rb is not None:
                params = rb.get("parameters", {}) or {}
                entry["radiobiology"] = {"parameter_role": rb.get("parameter_role", ""),
                                         **{k: rb.get(k) for k in RADIOBIOLOGY_METRICS},
                                         **{k: params.get(k) for k in PARAMETER_KEYS}}
            if name in intervals:
                entry["uncertainty"] = intervals[name]
            out[name] = entry
        return out

    def bed_maps(self) -> dict[str, Image]:
        """The BED map (Gy) of each parameter role with VOIs and a BED (``{"tumour": Image, ...}``):
        every voxel's BED with that role's parameters (:func:`voxeldose.radiobiology.bed_map`;
        the lung's from the dose at lung density when its VOIs' DVHs are). Written as
        ``bed_<role>.nii.gz`` when the case file's ``[radiobiology]`` says ``bed_maps = true``."""
        from .radiobiology import bed_map

        maps = (self.radiobiology or {}).get("maps", {}) or {}
        return {role: bed_map(self.dose, alpha_beta_gy=m["alpha_beta_gy"], repair_half_time_h=m["repair_half_time_h"],
                              dose_scale=m["dose_scale"])
                for role, m in maps.items() if m.get("file")}

    def table(self) -> list[dict[str, Any]]:
        """One row per VOI with the case values and the metrics: ``pandas.DataFrame(result.table())``."""
        return metrics_rows(self.to_dict())


#: Leading columns of :func:`metrics_rows`; the metric columns follow in the engine's order.
ROW_COLUMNS: tuple[str, ...] = (
    "case_id", "voi", "role", "administered_gbq", "lung_shunt_fraction", "residual_fraction",
    "administration_time", "method", "activity_vs_administered", "n_warnings", "references_flagged",
)


def metrics_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows (one per VOI) from a result's :meth:`CaseResult.to_dict` or a ``metrics.json``.

    Each row holds :data:`ROW_COLUMNS` then the VOI's metrics. ``activity_vs_administered`` is
    the calibration's check of the activity against the administered activity net of shunt and
    residual (1 when within; None when not checked), ``n_warnings`` the case's caveats,
    ``references_flagged`` the clinical references the VOI's mean dose crosses
    (:func:`voxeldose.clinical.reference_flags`), joined by "; ". The batch's cohort table is these
    rows with a status; reading a ``metrics.json`` back gives the same rows as the result did.
    When VOIs have a ``radiobiology`` entry, every row then ends with the radiobiology metrics
    (:data:`voxeldose.radiobiology.RADIOBIOLOGY_METRICS`: ``bed_mean_gy``, ``bed_D70_gy``, ...)
    and the parameters used (``alpha_beta_gy``, ``repair_half_time_h``, ``alpha_per_gy``,
    ``geud_a``), None where the VOI has none. When VOIs have an ``uncertainty`` entry, every row
    then ends with ``<metric>_u``, ``<metric>_lo95`` and ``<metric>_hi95`` for each of
    :data:`voxeldose.uncertainty.UNCERTAINTY_METRICS` (standard uncertainty and 95 % interval;
    None where the VOI has no such metric).
    """
    case = metrics.get("case", {}) or {}
    checks = ((metrics.get("provenance", {}) or {}).get("calibration", {}) or {}).get("checks", []) or []
    activity = next((c.get("ratio") for c in checks if c.get("name") == "activity_vs_administered"), None)
    base: dict[str, Any] = {
        "case_id": metrics.get("case_id"),
        "voi": "",
        "role": "",
        "administered_gbq": case.get("administered_gbq"),
        "lung_shunt_fraction": case.get("lung_shunt_fraction"),
        "residual_fraction": case.get("residual_fraction"),
        "administration_time": case.get("administration_time"),
        "method": (metrics.get("provenance", {}) or {}).get("dose", {}).get("method"),
        # calibrated activity over the administered activity net of shunt and residual (1: within)
        "activity_vs_administered": activity,
        "n_warnings": len(metrics.get("warnings", []) or []),
    }
    roles: Mapping[str, str] = metrics.get("roles", {}) or {}
    vois: Mapping[str, Mapping[str, Any]] = metrics.get("vois", {}) or {}
    references: Mapping[str, list[Mapping[str, Any]]] = metrics.get("clinical_references", {}) or {}

    def flagged(voi: str) -> str:
        return "; ".join(f"{r['reference']} {r['threshold_gy']:g} Gy" for r in references.get(voi, []) if r.get("flag"))

    with_biology = any(isinstance(v, Mapping) and "radiobiology" in v for v in vois.values())

    def biology(values: Mapping[str, Any]) -> dict[str, Any]:
        if not with_biology:
            return {}
        from .radiobiology import PARAMETER_KEYS, RADIOBIOLOGY_METRICS

        rb = values.get("radiobiology", {}) or {}
        return {k: rb.get(k) for k in (*RADIOBIOLOGY_METRICS, *PARAMETER_KEYS)}

    with_uncertainty = any(isinstance(v, Mapping) and "uncertainty" in v for v in vois.values())

    def intervals(values: Mapping[str, Any]) -> dict[str, Any]:
        if not with_uncertainty:
            return {}
        from .uncertainty import UNCERTAINTY_METRICS

        un = values.get("uncertainty", {}) or {}
        return {f"{m}_{k}": (un.get(m) or {}).get(key) for m in UNCERTAINTY_METRICS
                for k, key in (("u", "u"), ("lo95", "lo95"), ("hi95", "hi95"))}

    return [{**base, "voi": voi, "role": roles.get(voi, ""), "references_flagged": flagged(voi),
             **{k: v for k, v in values.items() if k not in ("radiobiology", "uncertainty")}, **biology(values),
             **intervals(values)}
            for voi, values in vois.items()]
