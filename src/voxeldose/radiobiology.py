"""Radiobiology of a permanent Y-90 implant: BED, EQD2 and equivalent uniform doses, per voxel and per VOI.

Formulas (doses in Gy, times in h):

- **BED** of a permanent implant whose dose rate falls exponentially [Dale1985]_::

      BED = D [1 + D lambda / ((mu + lambda) (alpha/beta))],
      lambda = ln 2 / T_phys,  mu = ln 2 / T_repair,

  with T_phys the Y-90 half-life of :data:`voxeldose.constants.Y90_HALF_LIFE_H` (64.10 h).
  Microspheres lodge permanently in the arterioles: there is no biological clearance, so the
  effective decay constant is the physical one. A negative voxel dose (reconstruction noise,
  which the engine keeps as it keeps negative activity) has no quadratic term: its BED is the
  dose itself; the function stays continuous and increasing, so BED D_x = BED(D_x) holds.
- **EQD2** = BED / (1 + 2 Gy / (alpha/beta)).
- **EUD** (alpha-based, [ODonoghue1999]_): the uniform dose with the same surviving fraction of
  clonogens, ``EUD = -(1/alpha) ln(sum_i v_i exp(-alpha D_i))``, ``v_i`` the volume fractions
  (the DVH's partial-volume weights). Applied to the BED instead of the dose it is the EUBED
  (equivalent uniform BED) of the TARE literature [Strigari2010]_ [Cremonesi2014]_; both are
  reported, labelled ``eud_gy`` and ``eubed_gy``.
- **gEUD** [Niemierko1999]_: ``(sum_i v_i D_i^a)^(1/a)``; ``a`` negative for tumours (cold spots
  dominate), positive and large for serial organs, ``a = 1`` the mean dose. It is undefined for
  a negative dose and 0 when ``a < 0`` and a voxel has no dose.

Parameters per VOI role (:data:`DEFAULT_PARAMETERS`, each with its source in every result):

================ ============ ================= ======== =========================================
role             alpha/beta   repair half-time  alpha    source
================ ============ ================= ======== =========================================
tumour           10 Gy        1.5 h             none     HCC, [Strigari2010]_
normal_liver     2.5 Gy       2.5 h             none     non-tumoural liver, [Strigari2010]_
lung             3 Gy         none              none     late lung reactions, [Bentzen2000]_
================ ============ ================= ======== =========================================

``whole_liver`` and ``perfused`` VOIs (and the derived ``perfused_normal_liver``) take the
normal-liver parameters over all their voxels, their tumours included; the derived ``tumours``
union takes the tumour parameters. What could be checked: the references themselves (titles,
journals, DOIs of Strigari 2010 and Cremonesi 2014) and the form of Niemierko's gEUD; the
numbers could not be read in the papers' text from here: they are the values these papers are
widely quoted with (check them before clinical use). No default is given where no value could be
sourced with confidence: alpha (so no EUD or EUBED), the lung's repair half-time (so no lung
BED) and gEUD's ``a``: the case file gives them, never a guess.

Case-file table ``[radiobiology]`` (every key optional)::

    [radiobiology]
    tumour = { alpha_beta_gy = 10, repair_half_time_h = 1.5, alpha_per_gy = 0.005, geud_a = -10 }
    normal_liver = { alpha_beta_gy = 2.5, repair_half_time_h = 2.5, geud_a = 1 }
    lung = { repair_half_time_h = 1.5 }
    "Tumor 1" = { alpha_per_gy = 0.003 }   # a VOI by name: beats its role's entry
    bed_maps = true                        # write bed_<role>.nii.gz

A key is a parameter role (``tumour``, ``normal_liver``, ``lung``) or a VOI's name (which must
name a VOI of the case). Each value is taken from the VOI's own entry, else its role's entry,
else the default, and recorded with where it came from. Unknown keys, non-positive values and
implausible numbers (a repair half-time over 48 h: minutes?) are refused.

References
----------
.. [Dale1985] Dale RG. The application of the linear-quadratic dose-effect equation to
   fractionated and protracted radiotherapy. Br J Radiol 58:515-528, 1985.
   doi:10.1259/0007-1285-58-690-515
.. [ODonoghue1999] O'Donoghue JA. Implications of nonuniform tumor doses for
   radioimmunotherapy. J Nucl Med 40:1337-1341, 1999.
.. [Niemierko1999] Niemierko A. A generalized concept of equivalent uniform dose (EUD)
   (abstract). Med Phys 26:1100, 1999.
.. [Strigari2010] Strigari L et al. Efficacy and toxicity related to treatment of hepatocellular
   carcinoma with 90Y-SIR spheres: radiobiologic considerations. J Nucl Med 51:1377-1385, 2010.
   doi:10.2967/jnumed.110.075861
.. [Cremonesi2014] Cremonesi M, Chiesa C, Strigari L et al. Radioembolization of hepatic lesions
   from a radiobiology and dosimetric perspective. Front Oncol 4:210, 2014.
   doi:10.3389/fonc.2014.00210
.. [Bentzen2000] Bentzen SM, Skoczylas JZ, Bernier J. Quantitative clinical radiobiology of early
   and late lung reactions. Int J Radiat Biol 76:453-462, 2000 (alpha/beta of lung reactions of
   about 3 to 4 Gy).
"""

from __future__ import annotations

import difflib
import math
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._checks import check_number
from .constants import Y90_HALF_LIFE_H
from .errors import InputError, VoiError, VoxelDoseWarning

if TYPE_CHECKING:
    from .dvh import DVH
    from .image import Image

__all__ = [
    "TissueParameters",
    "RadiobiologySettings",
    "radiobiology_settings_from_dict",
    "DEFAULT_PARAMETERS",
    "PARAMETER_ROLES",
    "PARAMETER_KEYS",
    "RADIOBIOLOGY_METRICS",
    "Y90_DECAY_CONSTANT_PER_H",
    "bed_gy",
    "eqd2_gy",
    "eud_gy",
    "geud_gy",
    "dvh_radiobiology",
    "parameters_for",
    "case_radiobiology",
    "radiobiology_provenance",
    "bed_map",
]

#: Y-90 physical decay constant (1/h): the effective one of microspheres, which do not wash out.
Y90_DECAY_CONSTANT_PER_H: float = math.log(2.0) / Y90_HALF_LIFE_H

#: The roles that have parameters (defaults, and keys of the case file's table).
PARAMETER_ROLES: tuple[str, ...] = ("tumour", "normal_liver", "lung")

#: The parameters of a tissue, as the case file names them.
PARAMETER_KEYS: tuple[str, ...] = ("alpha_beta_gy", "repair_half_time_h", "alpha_per_gy", "geud_a")

#: Per-VOI metrics, in order (None where a parameter they need is missing).
RADIOBIOLOGY_METRICS: tuple[str, ...] = ("bed_mean_gy", "bed_D70_gy", "bed_D90_gy", "eqd2_mean_gy", "eud_gy",
                                         "eubed_gy", "geud_gy")

#: VOI role -> the role whose parameters it takes.
ROLE_PARAMETERS: Mapping[str, str] = MappingProxyType({
    "tumour": "tumour", "normal_liver": "normal_liver", "whole_liver": "normal_liver", "perfused": "normal_liver",
    "lung": "lung"})

#: Derived VOIs (:func:`voxeldose.derive_vois`, role "derived") -> the role whose parameters they take.
DERIVED_PARAMETERS: Mapping[str, str] = MappingProxyType({"tumours": "tumour", "perfused_normal_liver": "normal_liver"})

# plausible ranges of the case file's values: outside them the unit is probably wrong
_PLAUSIBLE: Mapping[str, tuple[float, float, str, str]] = MappingProxyType({
    "alpha_beta_gy": (0.1, 100.0, "Gy", "is it in cGy? write Gy (10 for 1000 cGy)"),
    "repair_half_time_h": (0.01, 48.0, "h", "is it in minutes? write hours (1.5 for 90 minutes)"),
    "alpha_per_gy": (1e-4, 2.0, "1/Gy", "is it per cGy, or a survival fraction? write alpha in 1/Gy (e.g. 0.005)"),
    "geud_a": (-100.0, 100.0, "", "gEUD's a is usually between -40 (tumours) and 40 (serial organs)"),
})

_NOT_VERIFIED = "value not checked against the paper's text here: check it before clinical use"
_STRIGARI = "Strigari et al., J Nucl Med 51:1377 (2010), doi:10.2967/jnumed.110.075861"


def _parameter(value: object, key: str, where: str, *, plausible: bool = True) -> float:
    x = check_number(value, f"{where}: {key}", _PLAUSIBLE[key][2])
    if key == "geud_a":
        if x == 0.0:
            raise InputError(f"{where}: geud_a must not be 0 (gEUD = (sum v_i D_i^a)^(1/a) has no a = 0; a = 1 is the "
                             "mean dose, negative a for tumours)")
    elif x <= 0.0:
        raise InputError(f"{where}: {key} must be > 0 {_PLAUSIBLE[key][2]}, got {value!r}")
    lo, hi, unit, hint = _PLAUSIBLE[key]
    if plausible and not lo <= x <= hi:
        raise InputError(f"{where}: {key} = {value!r} {unit} is outside {lo:g} to {hi:g} {unit}; {hint}")
    return x


@dataclass(frozen=True)
class TissueParameters:
    """The linear-quadratic parameters of one tissue, and where each came from.

    Attributes
    ----------
    alpha_beta_gy : float or None
        alpha/beta (Gy).
    repair_half_time_h : float or None
        Half-time of the repair of sublethal damage (h).
    alpha_per_gy : float or None
        Radiosensitivity alpha (1/Gy), for the EUD and EUBED.
    geud_a : float or None
        The gEUD's volume parameter ``a`` (not 0).
    sources : mapping parameter -> str
        Where each given value came from ("default: ..." or "case file ...").
    """

    alpha_beta_gy: float | None = None
    repair_half_time_h: float | None = None
    alpha_per_gy: float | None = None
    geud_a: float | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for key in PARAMETER_KEYS:
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, _parameter(value, key, "TissueParameters", plausible=False))
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))

    @property
    def has_bed(self) -> bool:
        """Whether the BED can be computed (alpha/beta and the repair half-time are known)."""
        return self.alpha_beta_gy is not None and self.repair_half_time_h is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {key: getattr(self, key) for key in PARAMETER_KEYS}
        out["sources"] = {key: self.sources[key] for key in PARAMETER_KEYS if key in self.sources}
        return out


#: Default parameters per role, each with its source (module documentation).
DEFAULT_PARAMETERS: Mapping[str, TissueParameters] = MappingProxyType({
    "tumour": TissueParameters(alpha_beta_gy=10.0, repair_half_time_h=1.5, sources={
        "alpha_beta_gy": f"default: HCC, {_STRIGARI} ({_NOT_VERIFIED})",
        "repair_half_time_h": f"default: HCC, {_STRIGARI} ({_NOT_VERIFIED})"}),
    "normal_liver": TissueParameters(alpha_beta_gy=2.5, repair_half_time_h=2.5, sources={
        "alpha_beta_gy": f"default: non-tumoural liver, {_STRIGARI} ({_NOT_VERIFIED})",
        "repair_half_time_h": f"default: non-tumoural liver, {_STRIGARI} ({_NOT_VERIFIED})"}),
    "lung": TissueParameters(alpha_beta_gy=3.0, sources={
        "alpha_beta_gy": "default: late-responding tissue value for lung; Bentzen, Skoczylas, Bernier, Int J Radiat "
                         f"Biol 76:453 (2000) report about 3 to 4 Gy for lung reactions ({_NOT_VERIFIED})"}),
})

#: What each missing parameter costs, for the record.
_MISSING = {
    "alpha_beta_gy": "no alpha_beta_gy: no BED, EQD2 or EUBED",
    "repair_half_time_h": "no repair_half_time_h: no BED, EQD2 or EUBED",
    "alpha_per_gy": "no alpha_per_gy: no EUD or EUBED",
    "geud_a": "no geud_a: no gEUD",
}


# --------------------------------------------------------------------------- the case file's table


@dataclass(frozen=True)
class RadiobiologySettings:
    """The ``[radiobiology]`` table of a case file (module documentation).

    Attributes
    ----------
    entries : mapping key -> mapping parameter -> float
        Per parameter role (``tumour``, ``normal_liver``, ``lung``) or VOI name.
    bed_maps : bool
        Write the BED maps (``bed_<role>.nii.gz``) with the results.
    source : str
        Where the table came from (not compared), for the provenance.
    """

    entries: Mapping[str, Mapping[str, float]] = field(default_factory=dict, hash=False)
    bed_maps: bool = False
    source: str = field(default="Case", compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {key: dict(entry) for key, entry in self.entries.items()}
        if self.bed_maps:
            out["bed_maps"] = True
        return out


def radiobiology_settings_from_dict(data: object, *, where: str = "[radiobiology]") -> RadiobiologySettings:
    """:class:`RadiobiologySettings` from a case file's ``[radiobiology]`` table.

    Raises
    ------
    InputError
        The table or an entry is not a table, an entry is empty or has an unknown key (the
        message lists the allowed ones), a value is not a number, not positive (``geud_a``: 0)
        or outside its plausible range (the message suggests the unit).

    Example
    -------
    >>> s = radiobiology_settings_from_dict({"tumour": {"alpha_per_gy": 0.005}, "bed_maps": True})
    >>> dict(s.entries["tumour"]), s.bed_maps
    ({'alpha_per_gy': 0.005}, True)
    """
    if isinstance(data, RadiobiologySettings):
        return data
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: [radiobiology] must be a table of role or VOI entries, got {type(data).__name__}")
    entries: dict[str, Mapping[str, float]] = {}
    bed_maps = False
    for key, entry in data.items():
        if key == "bed_maps":
            if not isinstance(entry, bool):
                raise InputError(f"{where}: bed_maps must be true or false, got {entry!r}")
            bed_maps = entry
            continue
        if key in PARAMETER_KEYS:
            raise InputError(f"{where}: {key} is a parameter of an entry, not of the table: write it inside the role's "
                             f"or VOI's entry, e.g. tumour = {{ {key} = ... }}")
        if not isinstance(key, str) or not key.strip():
            raise InputError(f"{where}: entry names must be a role ({', '.join(PARAMETER_ROLES)}) or a VOI name, got "
                             f"{key!r}")
        label = f"{where}, entry {key!r}"
        if not isinstance(entry, Mapping):
            raise InputError(f"{label}: an entry is a table like {{ alpha_beta_gy = 10, repair_half_time_h = 1.5 }}, "
                             f"got {entry!r}")
        unknown = [k for k in entry if k not in PARAMETER_KEYS]
        if unknown:
            hints = [f"{k!r} -> {close[0]!r}" for k in unknown
                     if (close := difflib.get_close_matches(str(k), PARAMETER_KEYS, n=1, cutoff=0.5))]
            hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
            raise InputError(f"{label}: unknown key(s) {', '.join(map(repr, unknown))}{hint}; allowed: "
                             f"{', '.join(PARAMETER_KEYS)}")
        if not entry:
            raise InputError(f"{label}: the entry gives no parameter; give one of {', '.join(PARAMETER_KEYS)} or "
                             "remove it")
        entries[key] = MappingProxyType({k: _parameter(v, k, label) for k, v in entry.items()})
    return RadiobiologySettings(entries=MappingProxyType(entries), bed_maps=bed_maps, source=where)


# --------------------------------------------------------------------------- the formulas


def _dose(dose_gy: ArrayLike, name: str = "dose_gy") -> NDArray[np.float64]:
    d = np.asarray(dose_gy)
    if d.dtype == bool or not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
        raise InputError(f"{name} must be numbers (Gy), got an array of {d.dtype}")
    d = d.astype(np.float64)
    if not np.isfinite(d).all():
        raise InputError(f"{name} holds {int(np.count_nonzero(~np.isfinite(d)))} NaN or infinite value(s); check the "
                         "dose calculation")
    return d


def _positive(value: object, name: str, unit: str) -> float:
    x = check_number(value, name, unit)
    if x <= 0:
        raise InputError(f"{name} must be > 0 {unit}, got {value!r}")
    return x


def bed_gy(dose_gy: ArrayLike, *, alpha_beta_gy: float, repair_half_time_h: float) -> NDArray[np.float64]:
    """BED (Gy) of a permanent Y-90 implant, per voxel [Dale1985]_ (module documentation).

    ``BED = D [1 + D lambda / ((mu + lambda) alpha/beta)]``, lambda = ln 2 / 64.10 h (physical
    decay only: microspheres do not wash out), mu = ln 2 / ``repair_half_time_h``. A negative
    dose keeps only the linear term (BED = D).

    Parameters
    ----------
    dose_gy : array_like
        Absorbed dose (Gy), any shape.
    alpha_beta_gy : float, keyword-only
        alpha/beta (Gy), > 0.
    repair_half_time_h : float, keyword-only
        Repair half-time (h), > 0.

    Returns
    -------
    ndarray, float64, the shape of ``dose_gy``

    Raises
    ------
    InputError
        A dose that is not finite, a parameter that is not a positive number.

    Example
    -------
    >>> round(float(bed_gy(100.0, alpha_beta_gy=10.0, repair_half_time_h=1.5)), 4)
    122.8659
    """
    d = _dose(dose_gy)
    ab = _positive(alpha_beta_gy, "alpha_beta_gy", "Gy")
    mu = math.log(2.0) / _positive(repair_half_time_h, "repair_half_time_h", "h")
    lam = Y90_DECAY_CONSTANT_PER_H
    k = lam / ((mu + lam) * ab)
    result: NDArray[np.float64] = d + k * d * np.maximum(d, 0.0)
    return result


def eqd2_gy(bed: ArrayLike, *, alpha_beta_gy: float) -> NDArray[np.float64]:
    """EQD2 (Gy): the BED as a dose in 2-Gy fractions, ``BED / (1 + 2 Gy / (alpha/beta))``.

    Example
    -------
    >>> float(eqd2_gy(120.0, alpha_beta_gy=10.0))
    100.0
    """
    b = _dose(bed, "bed")
    ab = _positive(alpha_beta_gy, "alpha_beta_gy", "Gy")
    result: NDArray[np.float64] = b / (1.0 + 2.0 / ab)
    return result


def _weights(dose: NDArray[np.float64], weights: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != dose.shape:
        raise InputError(f"the volume weights have shape {w.shape}, the doses {dose.shape}: give one weight per dose")
    if not np.isfinite(w).all() or (w < 0).any() or not w.sum() > 0:
        raise InputError("the volume weights must be finite, >= 0 and not all 0 (e.g. the mask's partial volumes)")
    keep = w > 0
    return dose[keep].ravel(), (w[keep] / w[keep].sum()).ravel()


def eud_gy(dose_gy: ArrayLike, weights: ArrayLike, *, alpha_per_gy: float) -> float:
    """alpha-based equivalent uniform dose (Gy) [ODonoghue1999]_: ``-(1/alpha) ln(sum v_i exp(-alpha D_i))``.

    Parameters
    ----------
    dose_gy : array_like
        Voxel doses (Gy); a BED gives the EUBED.
    weights : array_like, the shape of ``dose_gy``
        Relative volumes (e.g. the mask's partial volumes); normalised to the volume fractions
        ``v_i`` (sum 1).
    alpha_per_gy : float, keyword-only
        alpha (1/Gy), > 0.

    Example
    -------
    >>> eud_gy([50.0, 50.0], [1.0, 3.0], alpha_per_gy=0.01)  # a uniform dose is its own EUD
    50.0
    """
    d, v = _weights(_dose(dose_gy), weights)
    alpha = _positive(alpha_per_gy, "alpha_per_gy", "1/Gy")
    low = float(d.min())  # exp(-alpha (D - min)) <= 1: no overflow or underflow of the whole sum
    return low - math.log(float(np.dot(v, np.exp(-alpha * (d - low))))) / alpha


def geud_gy(dose_gy: ArrayLike, weights: ArrayLike, *, a: float) -> float:
    """Niemierko's generalised EUD (Gy) [Niemierko1999]_: ``(sum v_i D_i^a)^(1/a)``.

    Parameters
    ----------
    dose_gy : array_like
        Voxel doses (Gy), >= 0.
    weights : array_like, the shape of ``dose_gy``
        Relative volumes, normalised to the volume fractions.
    a : float, keyword-only
        Not 0: negative for tumours, 1 the mean dose, large for serial organs.

    Raises
    ------
    InputError
        ``a`` is 0, or a dose is negative (``D^a`` is not defined).

    Example
    -------
    >>> round(geud_gy([10.0, 30.0], [1.0, 1.0], a=1), 9)
    20.0
    """
    d, v = _weights(_dose(dose_gy), weights)
    x = check_number(a, "a")
    if x == 0.0:
        raise InputError("gEUD: a must not be 0 (a = 1 is the mean dose; negative a for tumours)")
    if (d < 0).any():
        raise InputError(f"gEUD: {int(np.count_nonzero(d < 0))} dose(s) are negative (lowest {float(d.min()):.3g} Gy), "
                         "where D^a is not defined")
    if (d == 0).any():
        if x < 0:
            return 0.0  # sum v D^a is infinite: the limit is 0
        d, v = d[d > 0], v[d > 0]
        if d.size == 0:
            return 0.0
    t = x * np.log(d)
    top = float(t.max())  # the log-sum-exp of a ln D: no overflow for large |a|
    return math.exp((top + math.log(float(np.dot(v, np.exp(t - top))))) / x)


# --------------------------------------------------------------------------- per VOI


def dvh_radiobiology(h: "DVH", parameters: TissueParameters) -> dict[str, float | None]:
    """The radiobiology metrics of one VOI from its DVH (:data:`RADIOBIOLOGY_METRICS`).

    The doses are the DVH's (:meth:`voxeldose.DVH.dose_distribution`: a lung VOI's at lung
    density), so the BED is that of the dose the physical metrics use. ``bed_mean_gy`` is the
    volume-weighted mean of the voxels' BED (not the BED of the mean dose); BED increases with
    dose, so ``bed_D70_gy`` = BED(D70) and ``bed_D90_gy`` = BED(D90); ``eqd2_mean_gy`` the EQD2 of
    the mean BED. A metric whose parameter is missing is None.

    Warns
    -----
    VoxelDoseWarning
        When the gEUD is not defined (a negative voxel dose): it is None then.

    Example
    -------
    >>> import numpy as np
    >>> from voxeldose import dvh_array
    >>> h = dvh_array(np.full((2, 2, 2), 100.0), np.ones((2, 2, 2), bool), spacing_xyz_mm=(4.0, 4.0, 4.0))
    >>> m = dvh_radiobiology(h, DEFAULT_PARAMETERS["tumour"])
    >>> round(m["bed_mean_gy"], 4), m["eud_gy"]
    (122.8659, None)
    """
    d, v = h.dose_distribution()
    p = parameters
    out: dict[str, float | None] = dict.fromkeys(RADIOBIOLOGY_METRICS)
    bed = None
    if p.has_bed:
        ab, t = p.alpha_beta_gy, p.repair_half_time_h
        assert ab is not None and t is not None
        bed = bed_gy(d, alpha_beta_gy=ab, repair_half_time_h=t)
        mean = float(np.dot(v, bed))
        out["bed_mean_gy"] = mean
        out["bed_D70_gy"] = float(bed_gy(h.d(70), alpha_beta_gy=ab, repair_half_time_h=t))
        out["bed_D90_gy"] = float(bed_gy(h.d(90), alpha_beta_gy=ab, repair_half_time_h=t))
        out["eqd2_mean_gy"] = float(eqd2_gy(mean, alpha_beta_gy=ab))
    if p.alpha_per_gy is not None:
        out["eud_gy"] = eud_gy(d, v, alpha_per_gy=p.alpha_per_gy)
        if bed is not None:
            out["eubed_gy"] = eud_gy(bed, v, alpha_per_gy=p.alpha_per_gy)
    if p.geud_a is not None:
        if (d < 0).any():
            warnings.warn(f"VOI {h.name!r}: no gEUD: {int(np.count_nonzero(d < 0))} distinct voxel dose(s) are negative "
                          f"(lowest {float(d.min()):.3g} Gy, from negative activity), where D^a is not defined",
                          VoxelDoseWarning, stacklevel=2)
        else:
            out["geud_gy"] = geud_gy(d, v, a=p.geud_a)
    return out


def parameter_role(voi: str, role: str | None) -> str | None:
    """The role whose parameters VOI ``voi`` of role ``role`` takes (None: no default)."""
    if role is not None and role in ROLE_PARAMETERS:
        return ROLE_PARAMETERS[role]
    if role == "derived":
        return DERIVED_PARAMETERS.get(voi)
    return None


def parameters_for(voi: str, role: str | None, settings: RadiobiologySettings | None) -> TissueParameters | None:
    """The parameters of VOI ``voi``: its own entry in the case file, else its role's entry, else
    the role's defaults, each value with its source; None when none applies.

    Example
    -------
    >>> s = radiobiology_settings_from_dict({"tumour": {"alpha_per_gy": 0.005}}, where="case file c.toml")
    >>> p = parameters_for("lesion", "tumour", s)
    >>> p.alpha_beta_gy, p.alpha_per_gy, p.sources["alpha_per_gy"]
    (10.0, 0.005, "case file c.toml, entry 'tumour'")
    """
    prole = parameter_role(voi, role)
    layers: list[tuple[Mapping[str, Any], Mapping[str, str] | str]] = []
    if prole is not None:
        default = DEFAULT_PARAMETERS[prole]
        layers.append(({k: getattr(default, k) for k in PARAMETER_KEYS}, default.sources))
    entries = settings.entries if settings is not None else {}
    source = settings.source if settings is not None else ""
    if prole is not None and prole in entries:
        layers.append((entries[prole], f"{source}, entry {prole!r}"))
    if voi not in PARAMETER_ROLES and voi in entries:
        layers.append((entries[voi], f"{source}, entry {voi!r}"))
    if not layers:
        return None
    values: dict[str, float] = {}
    sources: dict[str, str] = {}
    for given, where in layers:
        for key in PARAMETER_KEYS:
            if given.get(key) is not None:
                values[key] = given[key]
                sources[key] = where if isinstance(where, str) else where[key]
    return TissueParameters(**values, sources=sources)


def case_radiobiology(dvhs: Mapping[str, "DVH"], roles: Mapping[str, str], settings: RadiobiologySettings | None, *,
                      dose_scales: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The radiobiology record of a case: per VOI its parameters (with sources) and metrics, the
    VOIs without parameters, and the BED maps' parameters (JSON-able).

    Parameters
    ----------
    dvhs : mapping VOI -> DVH
        The case's DVHs (lung VOIs at lung density).
    roles : mapping VOI -> role
    settings : RadiobiologySettings or None
        The case file's ``[radiobiology]``.
    dose_scales : mapping VOI -> float, optional
        The factor by which a VOI's DVH doses differ from the dose map's (lung VOIs without a CT:
        soft tissue over lung density); a role's BED map uses its VOIs' factor.

    Raises
    ------
    VoiError
        An entry of the case file names no VOI (a typo would silently leave the defaults).
    """
    entries = settings.entries if settings is not None else {}
    unknown = [k for k in entries if k not in PARAMETER_ROLES and k not in dvhs]
    if unknown:
        near = []
        for k in unknown:
            close = difflib.get_close_matches(k, [*dvhs, *PARAMETER_ROLES], n=1, cutoff=0.6)
            near.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise VoiError(f"{settings.source if settings else '[radiobiology]'}: entry {', '.join(near)} names no VOI and no "
                       f"role; the keys are the roles {', '.join(PARAMETER_ROLES)} or VOI names "
                       f"({', '.join(map(repr, dvhs))}); names are case-sensitive")
    scales = dict(dose_scales or {})
    vois: dict[str, Any] = {}
    not_evaluated: dict[str, str] = {}
    scales_of: dict[str, set[float]] = {}
    for name, h in dvhs.items():
        role = roles.get(name)
        params = parameters_for(name, role, settings)
        if params is None:
            not_evaluated[name] = (f"role {role!r} has no radiobiology parameters" if role else "no role") + (
                f"; give them in [radiobiology] \"{name}\" = {{ alpha_beta_gy = ..., repair_half_time_h = ... }}")
            continue
        prole = parameter_role(name, role)
        if prole is not None:
            scales_of.setdefault(prole, set()).add(float(scales.get(name, 1.0)))
        notes = [_MISSING[k] for k in PARAMETER_KEYS if getattr(params, k) is None]
        if role in ("whole_liver", "perfused"):
            notes.append(f"{role} VOI: the normal-liver parameters apply to all its voxels, its tumours included")
        vois[name] = {"role": role or "", "parameter_role": prole or "", **dvh_radiobiology(h, params),
                      "parameters": params.to_dict(), "notes": notes}
    maps: dict[str, Any] = {}
    for prole in PARAMETER_ROLES:
        if prole not in scales_of:
            continue
        params = parameters_for(prole, prole, settings)
        assert params is not None
        found = sorted(scales_of[prole])
        if not params.has_bed:
            maps[prole] = {"file": None, "reason": "no BED: " + "; ".join(_MISSING[k] for k in PARAMETER_KEYS[:2]
                                                                           if getattr(params, k) is None)}
        elif len(found) > 1:
            maps[prole] = {"file": None, "reason": f"its VOIs' doses refer to different densities (factors {found})"}
        else:
            maps[prole] = {"file": f"bed_{prole}.nii.gz", "dose_scale": found[0],
                           "alpha_beta_gy": params.alpha_beta_gy, "repair_half_time_h": params.repair_half_time_h,
                           "sources": {k: params.sources[k] for k in PARAMETER_KEYS[:2]}}
    return {
        "model": ("BED = D [1 + D lambda / ((mu + lambda) alpha/beta)] of a permanent implant with exponential decay "
                  "(Dale, Br J Radiol 58:515, 1985); EQD2 = BED / (1 + 2 Gy / (alpha/beta)); EUD = -(1/alpha) ln(sum v_i "
                  "exp(-alpha D_i)) (O'Donoghue, J Nucl Med 40:1337, 1999), of the dose (eud_gy) and of the BED "
                  "(eubed_gy); gEUD = (sum v_i D_i^a)^(1/a) (Niemierko, Med Phys 26:1100, 1999)"),
        "decay_half_life_h": Y90_HALF_LIFE_H,
        "decay_constant_per_h": Y90_DECAY_CONSTANT_PER_H,
        "effective_decay": "physical decay only: microspheres lodge permanently (no biological clearance)",
        "doses": "each VOI's DVH doses (lung VOIs at lung density), as the physical metrics",
        "d_rule": "BED D70 and D90 are BED(D70) and BED(D90): the BED increases with dose",
        "negative_dose_rule": "a negative voxel dose (noise) keeps only the linear term: BED = D",
        "vois": vois,
        "not_evaluated": not_evaluated,
        "maps": maps,
        "write_bed_maps": bool(settings.bed_maps) if settings is not None else False,
    }


def radiobiology_provenance(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a case's provenance holds of its radiobiology (:func:`case_radiobiology`): the model
    and its rules, every VOI's parameters with the source of each value, the VOIs without
    parameters and the BED maps; the metrics are in the result's ``radiobiology``."""
    return {**{k: v for k, v in record.items() if k != "vois"},
            "parameters": {name: {"parameter_role": rb["parameter_role"], **rb["parameters"]}
                           for name, rb in (record.get("vois", {}) or {}).items()}}


def bed_map(dose: "Image", *, alpha_beta_gy: float, repair_half_time_h: float, dose_scale: float = 1.0) -> "Image":
    """The BED (Gy) of every voxel of a dose image with one tissue's parameters, on its grid.

    ``dose_scale`` multiplies the dose first (a lung map without a CT: soft tissue over lung
    density, as the lung VOIs' DVHs do).

    Example
    -------
    >>> import numpy as np
    >>> from voxeldose import Image
    >>> m = bed_map(Image(np.full((1, 1, 2), 100.0), (4.0, 4.0, 4.0), units="GY"), alpha_beta_gy=10.0,
    ...             repair_half_time_h=1.5)
    >>> m.units, round(float(m.array[0, 0, 0]), 2)
    ('GY', 122.87)
    """
    k = _positive(dose_scale, "dose_scale", "")
    values = bed_gy(np.asarray(dose.array, dtype=np.float64) * k, alpha_beta_gy=alpha_beta_gy,
                    repair_half_time_h=repair_half_time_h)
    return dose.with_array(values.astype(np.float32), units="GY")
