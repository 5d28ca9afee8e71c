"""Predictive dosimetry on a Tc-99m MAA SPECT, and the activity plan of each perfused territory.

Before a Y-90 treatment the microspheres' distribution is predicted from a Tc-99m MAA SPECT: the
counts in each perfused territory are taken to show where that territory's spheres will go. This
module turns the MAA counts into a predicted activity map, and finds for each territory the
activity that the clinical models and the voxel dose give.

Rules (each stated again in the plan's record):

- **Territories** are the VOIs of role ``"perfused"`` (one per catheter position), or, without
  one, the whole liver (role ``"whole_liver"``). They must not overlap.
- **Predicted activity.** Territory *k* with planned activity ``A_k`` (GBq reaching the patient)
  gets ``A_k (1 - LSF)`` spread over the voxels it touches in proportion to their MAA counts; a
  voxel touched by several territories is split between them by their shares of it (the sum
  over the territory is ``A_k (1 - LSF)`` exactly). A surface voxel's counts come from its
  liver part, so all of them stay with the territory, as in the SPECT self-calibration
  (:mod:`voxeldose.calibrate`); weighting them by the share as well would count the partial
  volume twice and move activity into the interior (4 % too much at 6.6 mm voxels). The
  shunted ``A_k LSF`` is spread uniformly over the lung VOI(s) (the partition model's lung; MAA
  counts in the lungs are few, noisy and hold scatter from the liver); without a lung VOI it
  is left out of the map and the lung dose is the model's. Counts in voxels that no territory
  and no lung VOI touches (extrahepatic uptake, free pertechnetate, blur) get no activity and
  are reported.
- **Lung shunt fraction**: the case's ``lung_shunt_fraction`` (usually from planar
  scintigraphy), or measured on the SPECT as ``C_lung / (C_lung + C_liver)`` with the lung VOI(s)
  and the whole liver (else the territories), each ``C`` counted by the territories' rule;
  ``[plan] lung_shunt`` chooses, and both are
  reported when both can be had.
- **Dose is linear in activity**: one dose computation per territory, at 1 GBq; any activity's
  dose is ``sum_k A_k D_k``.
- **Voxel plan** of territory *k*: the largest ``A_k`` (the other territories at their planned
  activities, 0 where none is planned) for which every upper-bound constraint holds; the
  constraint that sets it is the binding one. Lower bounds (e.g. tumour D70 >= 100 Gy) are then
  checked at that activity; if one fails, no activity meets every constraint and the plan says
  so. The lung constraint is always there: ``min(lung_limit_gy, lung_cumulative_limit_gy -
  prior_lung_dose_gy)`` (30 Gy and 50 Gy [Ho1997]_) on the lung VOIs' mean dose at lung density
  (0.30 g/mL, or the CT's), or, without a lung VOI, on the lung model ``D = C A LSF / M_lung``
  (1 kg unless measured).
- **Model activities** per territory: MIRD single compartment for a target mean dose (the
  territory's mass at 1.04 g/mL, or the CT's), partition for a normal-liver target (T:N measured on the MAA
  counts: :func:`voxeldose.clinical.tumour_to_normal_ratio`), and for resin the BSA method scaled
  by the territory's share of the liver volume and reduced for the lung shunt as the SIR-Spheres
  instructions say [Kennedy2007]_. The dose constant is the product's convention: glass
  (TheraSphere) 50 Gy kg/GBq, as its planning formula writes it; resin and unset 49.67 Gy kg/GBq
  [Dezarn2011]_. The voxel dose uses the ICRP-107 decay data (49.77 Gy kg/GBq in a uniform
  medium), so on a uniform territory the voxel plan and the 49.67 MIRD activity differ by 0.2 %.

Case-file table ``[plan]`` (all keys optional)::

    [plan]
    activities_gbq = { "right lobe" = 2.1 }  # planned activity per territory (reaching the patient)
    lung_shunt = "case"             # or "counts": where the LSF comes from
    prior_lung_dose_gy = 0.0        # lung dose of earlier treatments
    lung_limit_gy = 30.0            # one treatment
    lung_cumulative_limit_gy = 50.0 # all treatments
    lung_mass_kg = 1.0              # measured lung mass, for the lung model (no lung VOI)
    mird_target_gy = 120.0          # MIRD: target mean dose of each territory
    partition_normal_liver_gy = 40.0  # partition: normal-liver dose of each territory
    height_m = 1.75                 # BSA method (resin): height and weight, or bsa_m2
    weight_kg = 80.0
    constraints = [
      { voi = "normal_liver", metric = "mean", max_gy = 40.0 },
      { role = "tumour", metric = "D70", min_gy = 100.0 },
      { role = "perfused_normal", metric = "mean", max_gy = 70.0 },
      { voi = "normal_liver", metric = "V30", max_pct = 50.0 },
    ]

A constraint names a VOI (``voi``) or a role (``role``: every VOI of it; ``"perfused_normal"`` is
each territory without its tumours; a tumour lower bound applies to the plans of the territory
holding at least half of it). ``metric`` is ``mean``, ``D<x>`` (the dose covering ``x`` % of the
volume, Gy) or ``V<x>`` (the % of the volume receiving at least ``x`` Gy); bounds carry their
units: ``max_gy``/``min_gy`` for mean and D, ``max_pct``/``min_pct`` for V.

References
----------
.. [Ho1997] Ho S et al. Eur J Nucl Med 24:293-298, 1997. doi:10.1007/BF01728766 (lung 30 Gy for
   one treatment, 50 Gy cumulative)
.. [Dezarn2011] Dezarn WA et al. (AAPM TG-144). Med Phys 38:4824-4845, 2011. doi:10.1118/1.3608909
.. [Kennedy2007] Kennedy A et al. Int J Radiat Oncol Biol Phys 68:13-23, 2007.
   doi:10.1016/j.ijrobp.2006.11.060 (the BSA method and its lung-shunt reductions: none below
   10 %, 20 % for 10-15 %, 40 % for 15-20 %, no treatment above 20 %)
.. [Garin2021] Garin E et al. Eur J Nucl Med Mol Imaging 48:2127-2134, 2021 (the MAA SPECT's
   lung shunt overestimates less than the planar one; both are estimates).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np
from numpy.typing import NDArray

from ._checks import nonzero_box
from .constants import MIRD_Y90_GY_KG_PER_GBQ, SOFT_TISSUE_DENSITY_G_PER_CM3
from .errors import CalibrationError, InputError, VoiError, VoxelDoseWarning
from .image import Image, mask_image

__all__ = [
    "Constraint",
    "PlanSettings",
    "plan_settings_from_dict",
    "updated_plan_settings",
    "dose_constant_gy_kg_per_gbq",
    "territories_of",
    "lung_shunt_from_counts",
    "predicted_activity",
    "bsa_lung_shunt_reduction",
    "solve_activity",
]

#: TheraSphere's planning formula writes the MIRD constant as 50 Gy kg/GBq [Dezarn2011]_.
GLASS_DOSE_CONSTANT_GY_KG_PER_GBQ = 50.0

#: Largest activity a plan searches (GBq): more than any vial holds (see case.MAX_ADMINISTERED_GBQ).
MAX_PLAN_GBQ = 50.0

#: Counts outside every territory and the lungs above this share of all counts (%) are a caveat.
OUTSIDE_COUNTS_CAVEAT_PERCENT = 10.0

#: Territories overlapping by more than this (summed voxel fractions) are refused.
OVERLAP_TOLERANCE_VOXELS = 0.5

_METRIC = re.compile(r"^(mean|[DV](\d+(\.\d+)?))$")
_ROLES = ("tumour", "normal_liver", "whole_liver", "lung", "perfused", "perfused_normal")


def dose_constant_gy_kg_per_gbq(sphere_type: str | None) -> tuple[float, str]:
    """The model dose constant of a product's planning convention, and its label."""
    if sphere_type == "glass":
        return GLASS_DOSE_CONSTANT_GY_KG_PER_GBQ, ("glass (TheraSphere) convention: 50 Gy kg/GBq, the rounded MIRD "
                                                   "constant of its planning formula")
    if sphere_type == "resin":
        return MIRD_Y90_GY_KG_PER_GBQ, "resin (SIR-Spheres) convention: 49.67 Gy kg/GBq (MIRD, AAPM TG-144)"
    return MIRD_Y90_GY_KG_PER_GBQ, "49.67 Gy kg/GBq (MIRD, AAPM TG-144); no sphere_type in the case"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Constraint:
    """One dose constraint of a voxel plan.

    Attributes
    ----------
    metric : str
        ``"mean"``, ``"D<x>"`` (Gy covering x % of the volume) or ``"V<x>"`` (% of the volume
        receiving at least x Gy).
    voi : str or None
        The VOI it applies to; or ``role`` (exactly one of the two).
    role : str or None
        Every VOI of this role (``"perfused_normal"``: each territory without its tumours).
    upper : float or None
        The metric must be at most this (Gy for mean and D, % for V).
    lower : float or None
        The metric must be at least this.
    source : str
        Where it came from ("case file ...", or "default" with its reference).
    """

    metric: str
    voi: str | None = None
    role: str | None = None
    upper: float | None = None
    lower: float | None = None
    source: str = ""

    @property
    def unit(self) -> str:
        return "%" if self.metric.startswith("V") else "Gy"

    def label(self, voi: str) -> str:
        bound = f"<= {self.upper:g}" if self.upper is not None else f">= {self.lower:g}"
        return f"{voi} {self.metric} {bound} {self.unit}"

    def to_dict(self) -> dict[str, Any]:
        key = "pct" if self.unit == "%" else "gy"
        out: dict[str, Any] = {"voi": self.voi} if self.voi is not None else {"role": self.role}
        out["metric"] = self.metric
        if self.upper is not None:
            out[f"max_{key}"] = self.upper
        if self.lower is not None:
            out[f"min_{key}"] = self.lower
        return out


@dataclass(frozen=True)
class PlanSettings:
    """The ``[plan]`` table of a case file (module documentation); every field optional."""

    activities_gbq: Mapping[str, float] = field(default_factory=dict, hash=False)
    lung_shunt: str | None = None
    prior_lung_dose_gy: float = 0.0
    lung_limit_gy: float = 30.0
    lung_cumulative_limit_gy: float = 50.0
    lung_mass_kg: float | None = None
    mird_target_gy: float | None = None
    partition_normal_liver_gy: float | None = None
    height_m: float | None = None
    weight_kg: float | None = None
    bsa_m2: float | None = None
    constraints: tuple[Constraint, ...] = ()
    given: tuple[str, ...] = field(default=(), compare=False)

    @property
    def lung_limit_effective_gy(self) -> float:
        return min(self.lung_limit_gy, self.lung_cumulative_limit_gy - self.prior_lung_dose_gy)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("lung_shunt", "prior_lung_dose_gy", "lung_limit_gy", "lung_cumulative_limit_gy", "lung_mass_kg",
                     "mird_target_gy", "partition_normal_liver_gy", "height_m", "weight_kg", "bsa_m2"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.activities_gbq:
            out["activities_gbq"] = dict(self.activities_gbq)
        out["constraints"] = [c.to_dict() for c in self.constraints]
        return out


_NUMBER_KEYS = {"prior_lung_dose_gy": "Gy", "lung_limit_gy": "Gy", "lung_cumulative_limit_gy": "Gy",
                "lung_mass_kg": "kg", "mird_target_gy": "Gy", "partition_normal_liver_gy": "Gy", "height_m": "m",
                "weight_kg": "kg", "bsa_m2": "m2"}
_PLAN_KEYS = ("activities_gbq", "lung_shunt", "constraints", *_NUMBER_KEYS)
_PLAUSIBLE = {"height_m": (0.5, 2.5), "weight_kg": (10.0, 350.0), "bsa_m2": (0.3, 3.5), "lung_mass_kg": (0.1, 5.0)}


def _positive(value: object, key: str, where: str, unit: str, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise InputError(f"{where}: {key} must be a number ({unit}), got {value!r}")
    x = float(value)
    if x < 0 or (x == 0 and not zero):
        raise InputError(f"{where}: {key} must be {'>= 0' if zero else '> 0'} {unit}, got {value!r}")
    lo, hi = _PLAUSIBLE.get(key, (None, None))
    if lo is not None and hi is not None and not lo <= x <= hi:
        raise InputError(f"{where}: {key} = {value!r} {unit} is outside {lo:g} to {hi:g} {unit}; is the unit right?")
    return x


def _constraint(item: object, where: str) -> Constraint:
    if not isinstance(item, Mapping):
        raise InputError(f"{where}: each constraint is a table like {{ voi = \"normal_liver\", metric = \"mean\", "
                         f"max_gy = 40 }}, got {item!r}")
    allowed = ("voi", "role", "metric", "max_gy", "min_gy", "max_pct", "min_pct")
    unknown = [k for k in item if k not in allowed]
    if unknown:
        raise InputError(f"{where}: unknown constraint key(s) {', '.join(map(repr, unknown))}; allowed: "
                         f"{', '.join(allowed)}")
    voi, role = item.get("voi"), item.get("role")
    if (voi is None) == (role is None):
        raise InputError(f"{where}: a constraint names either a VOI (voi = ...) or a role (role = ...), got {dict(item)}")
    if voi is not None and (not isinstance(voi, str) or not voi.strip()):
        raise InputError(f"{where}: voi must be a VOI name, got {voi!r}")
    if role is not None and role not in _ROLES:
        raise InputError(f"{where}: role {role!r} is not one of {', '.join(map(repr, _ROLES))}")
    raw = item.get("metric")
    m = _METRIC.match(raw) if isinstance(raw, str) else None
    if m is None or not isinstance(raw, str):
        raise InputError(f"{where}: metric must be 'mean', 'D<x>' (e.g. 'D70') or 'V<x>' (e.g. 'V30'), got {raw!r}")
    metric: str = raw
    if metric.startswith("D") and not 0 <= float(metric[1:]) <= 100:
        raise InputError(f"{where}: {metric}: D<x> needs 0 <= x <= 100 (% of the volume)")
    unit = "pct" if metric.startswith("V") else "gy"
    wrong = [k for k in ("max_gy", "min_gy", "max_pct", "min_pct") if k in item and not k.endswith(unit)]
    if wrong:
        raise InputError(f"{where}: {metric} is in {'%' if unit == 'pct' else 'Gy'}: use max_{unit}/min_{unit}, not "
                         f"{', '.join(wrong)}")
    upper, lower = item.get(f"max_{unit}"), item.get(f"min_{unit}")
    if (upper is None) == (lower is None):
        raise InputError(f"{where}: a constraint has one bound, max_{unit} or min_{unit}, got {dict(item)}")
    bound = _positive(upper if upper is not None else lower, f"max_{unit}" if upper is not None else f"min_{unit}",
                      where, "%" if unit == "pct" else "Gy", zero=True)
    if unit == "pct" and bound > 100:
        raise InputError(f"{where}: a volume bound is a percentage (0 to 100), got {bound:g}")
    return Constraint(metric=metric, voi=voi, role=role, upper=bound if upper is not None else None,
                      lower=bound if lower is not None else None, source=where)


def plan_settings_from_dict(data: object, *, where: str = "[plan]") -> PlanSettings:
    """:class:`PlanSettings` from a case file's ``[plan]`` table (module documentation).

    Raises
    ------
    InputError
        An unknown key (listed with the allowed ones), a value of the wrong type or range.
    """
    if isinstance(data, PlanSettings):
        return data
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: [plan] must be a table of keys, got {type(data).__name__}")
    unknown = [k for k in data if k not in _PLAN_KEYS]
    if unknown:
        raise InputError(f"{where}: unknown [plan] key(s) {', '.join(map(repr, unknown))}; allowed: "
                         f"{', '.join(_PLAN_KEYS)}")
    values: dict[str, Any] = {}
    for key, unit in _NUMBER_KEYS.items():
        if data.get(key) is not None:
            values[key] = _positive(data[key], key, where, unit, zero=key == "prior_lung_dose_gy")
    shunt = data.get("lung_shunt")
    if shunt is not None:
        if shunt not in ("case", "counts"):
            raise InputError(f"{where}: lung_shunt must be 'case' (the case's lung_shunt_fraction) or 'counts' "
                             f"(measured on the MAA SPECT's lung and liver VOIs), got {shunt!r}")
        values["lung_shunt"] = shunt
    acts = data.get("activities_gbq")
    if acts is not None:
        if not isinstance(acts, Mapping):
            raise InputError(f"{where}: activities_gbq must be a table territory -> GBq, got {acts!r}")
        checked = {}
        for name, a in acts.items():
            x = _positive(a, f"activities_gbq[{name!r}]", where, "GBq")
            if x > MAX_PLAN_GBQ:
                raise InputError(f"{where}: activities_gbq[{name!r}] = {x:g} GBq is more than any vial holds; is it "
                                 "in MBq? Write GBq")
            checked[str(name)] = x
        values["activities_gbq"] = MappingProxyType(checked)
    items = data.get("constraints")
    if items is not None:
        if not isinstance(items, (list, tuple)):
            raise InputError(f"{where}: constraints must be a list of tables, got {type(items).__name__}")
        values["constraints"] = tuple(_constraint(c, f"{where}, constraint {i + 1}") for i, c in enumerate(items))
    settings = PlanSettings(**values, given=tuple(k for k in data if data[k] is not None))
    if settings.lung_limit_effective_gy <= 0:
        raise InputError(f"{where}: the prior lung dose {settings.prior_lung_dose_gy:g} Gy leaves no room under the "
                         f"cumulative lung limit {settings.lung_cumulative_limit_gy:g} Gy: no activity can be planned")
    if settings.bsa_m2 is not None and (settings.height_m is not None or settings.weight_kg is not None):
        raise InputError(f"{where}: give bsa_m2 or height_m and weight_kg, not both")
    if (settings.height_m is None) != (settings.weight_kg is None):
        raise InputError(f"{where}: the body surface area needs both height_m and weight_kg")
    return settings


# --------------------------------------------------------------------------- territories and the MAA


def territories_of(masks: Mapping[str, Image], roles: Mapping[str, str]) -> tuple[dict[str, Image], str]:
    """The perfused territories of a case and the rule that chose them (module documentation).

    Raises
    ------
    VoiError
        No perfused or whole-liver VOI, several whole-liver VOIs without a perfused one, or
        territories that overlap.
    """
    perfused = [n for n, r in roles.items() if r == "perfused" and n in masks]
    if perfused:
        chosen, rule = {n: masks[n] for n in perfused}, "the VOIs of role 'perfused'"
    else:
        whole = [n for n, r in roles.items() if r == "whole_liver" and n in masks]
        if len(whole) != 1:
            raise VoiError(
                "planning needs the perfused territories: give each territory's VOI the role 'perfused' (case file "
                "[vois], or --voi-role NAME=perfused); a whole-treatment of the liver may use its one VOI of role "
                f"'whole_liver' (found {len(whole)})")
        chosen, rule = {whole[0]: masks[whole[0]]}, "no VOI of role 'perfused': the whole liver is the one territory"
    names = list(chosen)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = float(np.minimum(chosen[a].array, chosen[b].array).sum(dtype=np.float64))
            if shared > OVERLAP_TOLERANCE_VOXELS:
                raise VoiError(
                    f"territories {a!r} and {b!r} overlap ({shared:.1f} voxels of {chosen[a].voxel_volume_ml:.3g} mL): "
                    "a voxel's counts cannot go to two catheter positions; make them disjoint")
    return chosen, rule


def _counts_in(counts: NDArray[np.float64], mask: NDArray[np.floating]) -> float:
    box = nonzero_box(mask > 0)
    if box is None:
        return 0.0
    return float(np.sum(counts[box] * mask[box], dtype=np.float64))


def _count_shares(weights: Mapping[str, NDArray[np.float64]]) -> dict[str, NDArray[np.float64]]:
    """Each VOI's share of every voxel's counts: all of a voxel only it touches, a voxel several
    touch split by their mask fractions (``w_k / sum_j w_j``), none where no VOI touches it.

    The counting rule of the MAA plan (module documentation) and of the SPECT self-calibration
    (:mod:`voxeldose.calibrate`: the counts of every voxel the VOI touches): a surface voxel's
    counts come from its part inside the VOI, so weighting them by the fraction again would count
    the partial volume twice."""
    covered = np.zeros(next(iter(weights.values())).shape, np.float64)
    for w in weights.values():
        covered += w
    inv = np.zeros(covered.shape, np.float64)
    np.divide(1.0, covered, out=inv, where=covered > 0)
    return {name: w * inv for name, w in weights.items()}


def lung_shunt_from_counts(counts: Image, lung: "Image | NDArray[np.floating]",
                           liver: "Image | NDArray[np.floating]") -> float:
    """Lung shunt fraction measured on an MAA SPECT: ``C_lung / (C_lung + C_liver)``.

    ``C`` are the counts of every voxel each VOI touches, a voxel touched by both split by their
    shares of it: the territories' rule (:func:`predicted_activity`). A surface voxel's counts
    come from its part inside the VOI; weighting them by that share would drop part of each
    VOI's counts, more of the VOI with more surface per volume, and bias the ratio. The SPECT
    must be attenuation corrected for the ratio to mean activity; a lung VOI cut by the field of
    view misses counts (the shunt is then underestimated).

    Raises
    ------
    CalibrationError
        The liver's counts are not positive, or the lung's are negative.
    """
    values = np.asarray(counts.array, np.float64)
    shares = _count_shares({"lung": np.asarray(mask_image(counts, lung, name="lung").array, np.float64),
                            "liver": np.asarray(mask_image(counts, liver, name="liver").array, np.float64)})
    c_lung = _counts_in(values, shares["lung"])
    c_liver = _counts_in(values, shares["liver"])
    if not c_liver > 0:
        raise CalibrationError(f"the liver VOI holds {c_liver:g} counts on the MAA SPECT: no lung shunt can be measured")
    if c_lung < 0:
        raise CalibrationError(f"the lung VOIs hold {c_lung:g} counts (negative) on the MAA SPECT: no lung shunt can "
                               "be measured; give lung_shunt_fraction in the case file")
    return c_lung / (c_lung + c_liver)


def predicted_activity(
    counts: Image,
    territories: Mapping[str, "Image | NDArray[np.floating]"],
    activities_gbq: Mapping[str, float],
    *,
    lung_shunt_fraction: float,
    lung: "Image | NDArray[np.floating] | None" = None,
) -> tuple[Image, dict[str, Any]]:
    """Predicted Y-90 activity (MBq per voxel at administration) from MAA counts.

    Each territory's ``A (1 - LSF)`` over the voxels it touches in proportion to their counts (a
    voxel shared by territories split by their shares), ``A LSF`` uniformly over the lung mask
    (left out without one); no activity elsewhere (module documentation).

    Parameters
    ----------
    counts : Image
        The MAA SPECT (counts, or any unit proportional to activity).
    territories : mapping name -> mask (Image or array on the counts' grid)
    activities_gbq : mapping name -> GBq
        Activity reaching the patient through each territory's catheter position; territories
        missing here get none.
    lung_shunt_fraction : float
        In [0, 1).
    lung : mask, optional
        Where the shunted activity goes (union of the lung VOIs).

    Returns
    -------
    activity : Image
        MBq per voxel (units "MBQ"), float32, on the counts' grid.
    record : dict
        Counts per territory, the MBq per count of each, the counts outside every territory
        and the lungs (and their share), the lung activity and where it went.

    Raises
    ------
    CalibrationError
        A territory with an activity whose counts are not positive.
    """
    if not 0.0 <= lung_shunt_fraction < 1.0:
        raise InputError(f"lung_shunt_fraction must be in [0, 1), got {lung_shunt_fraction!r}")
    values = np.asarray(counts.array, np.float64)
    out = np.zeros(values.shape, np.float64)
    weights = {name: np.asarray(mask_image(counts, m, name=name).array, np.float64) for name, m in territories.items()}
    touched = np.zeros(values.shape, bool)
    for w in weights.values():
        touched |= w > 0
    record: dict[str, Any] = {"territories": {}}
    lung_mbq = 0.0
    for name, share in _count_shares(weights).items():
        c = _counts_in(values, share)
        a = float(activities_gbq.get(name, 0.0))
        entry: dict[str, Any] = {"counts": c, "activity_gbq": a, "liver_activity_mbq": a * 1e3 * (1 - lung_shunt_fraction),
                                 "lung_activity_mbq": a * 1e3 * lung_shunt_fraction}
        if a > 0:
            if not c > 0:
                raise CalibrationError(
                    f"territory {name!r} holds {c:g} counts on the MAA SPECT: its activity cannot be spread by the "
                    "counts; check the VOI's registration to the SPECT")
            k = a * 1e3 * (1.0 - lung_shunt_fraction) / c
            out += values * share * k
            entry["mbq_per_count"] = k
        lung_mbq += a * 1e3 * lung_shunt_fraction
        record["territories"][name] = entry
    record["counts_rule"] = ("a territory's counts are those of every voxel it touches, a voxel touched by several "
                             "territories split by their shares of it (as the SPECT self-calibration counts its VOI)")
    total = float(values.sum(dtype=np.float64))
    if lung is not None:
        lw = np.asarray(mask_image(counts, lung, name="lung").array, np.float64)
        if lung_mbq > 0:
            out += lw * (lung_mbq / float(lw.sum(dtype=np.float64)))
        lung_only = (lw > 0) & ~touched
        record["lung"] = {"activity_mbq": lung_mbq, "rule": "uniform over the lung VOIs (mask-weighted)",
                          "counts": float(np.sum(values[lung_only], dtype=np.float64)),
                          "counts_rule": "counts of the voxels the lung VOIs touch and no territory does (reported "
                                         "only: the lung's activity is the shunt's; a voxel a territory touches keeps "
                                         "its counts for the territory)"}
        touched |= lw > 0
    else:
        record["lung"] = {"activity_mbq": lung_mbq, "rule": "no lung VOI: the shunted activity is not in the map; the "
                          "lung dose is the lung model's"}
    outside = float(np.sum(values[~touched], dtype=np.float64))
    record.update(total_counts=total, counts_outside=outside,
                  counts_outside_percent=100.0 * outside / total if total > 0 else None,
                  outside_rule="counts in voxels that no territory and no lung VOI touches get no activity "
                               "(extrahepatic uptake, free pertechnetate, or blur across the territory's edge)",
                  lung_shunt_fraction=lung_shunt_fraction)
    image = Image(out.astype(np.float32), counts.spacing_mm, counts.origin_mm, counts.direction, "MBQ", meta=counts.meta)
    return image, record


# --------------------------------------------------------------------------- BSA


def bsa_lung_shunt_reduction(lung_shunt_fraction: float) -> float | None:
    """The BSA method's activity factor for a lung shunt (SIR-Spheres instructions, [Kennedy2007]_):
    1 below 10 %, 0.8 for 10-15 %, 0.6 for 15-20 %, None (no treatment) above 20 %."""
    if lung_shunt_fraction < 0.10:
        return 1.0
    if lung_shunt_fraction < 0.15:
        return 0.8
    if lung_shunt_fraction <= 0.20:
        return 0.6
    return None


# --------------------------------------------------------------------------- the solver


def solve_activity(metric: Callable[[float], float], bound: float, *, upper: bool,
                   hi_gbq: float = MAX_PLAN_GBQ, rel_tol: float = 1e-10) -> float:
    """The activity (GBq) where a non-decreasing ``metric(activity)`` meets ``bound``.

    ``upper``: the largest activity in [0, hi] with ``metric <= bound`` (inf when the metric
    stays below it up to ``hi``; 0 when it is above it already at 0, check with ``metric(0)``).
    Otherwise the smallest activity with ``metric >= bound`` (inf when none up to ``hi``). By
    bisection to ``rel_tol``.
    """
    def ok(a: float) -> bool:
        v = metric(a)
        return v <= bound if upper else v >= bound

    if upper:
        if not ok(0.0):
            return 0.0
        if ok(hi_gbq):
            return math.inf
        lo, hi = 0.0, hi_gbq
    else:
        if ok(0.0):
            return 0.0
        if not ok(hi_gbq):
            return math.inf
        lo, hi = 0.0, hi_gbq
    # invariant (upper): ok(lo), not ok(hi); (lower): not ok(lo), ok(hi)
    while hi - lo > rel_tol * max(hi, 1e-12):
        mid = 0.5 * (lo + hi)
        if ok(mid) == upper:
            lo = mid
        else:
            hi = mid
    return lo if upper else hi


def _caveat(message: str) -> None:
    warnings.warn(message, VoxelDoseWarning, stacklevel=3)


def soft_mass_kg(mask: Image) -> float:
    """Mass (kg) of a VOI at soft-tissue density (1.04 g/mL)."""
    return float(mask.array.sum(dtype=np.float64)) * mask.voxel_volume_ml * SOFT_TISSUE_DENSITY_G_PER_CM3 * 1e-3


def metric_of(h: Any, metric: str) -> float:
    """``mean``, ``D<x>`` or ``V<x>`` of a DVH."""
    if metric == "mean":
        return float(h.mean_gy)
    if metric.startswith("D"):
        return float(h.d(float(metric[1:])))
    return float(h.v(float(metric[1:])))


def updated_plan_settings(settings: PlanSettings | None, changes: Mapping[str, Any], *,
                          where: str = "command line") -> PlanSettings:
    """``settings`` with the ``[plan]`` keys in ``changes`` replaced (command-line options over the
    case file); ``activities_gbq`` is merged territory by territory. Each value is checked as in
    :func:`plan_settings_from_dict`.

    Raises
    ------
    InputError
        A key or value that :func:`plan_settings_from_dict` refuses.
    """
    base = settings if settings is not None else PlanSettings()
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return base
    checked = plan_settings_from_dict(changes, where=where)
    values: dict[str, Any] = {k: getattr(checked, k) for k in changes}
    if "activities_gbq" in values:
        values["activities_gbq"] = MappingProxyType({**dict(base.activities_gbq), **dict(values["activities_gbq"])})
    if "constraints" in values:
        values["constraints"] = base.constraints + tuple(values["constraints"])
    given = base.given + tuple(k for k in changes if k not in base.given)
    out = replace(base, **values, given=given)
    if out.lung_limit_effective_gy <= 0:
        raise InputError(f"{where}: the prior lung dose {out.prior_lung_dose_gy:g} Gy leaves no room under the "
                         f"cumulative lung limit {out.lung_cumulative_limit_gy:g} Gy: no activity can be planned")
    return out
