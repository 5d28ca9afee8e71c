"""Uncertainty of every per-VOI metric: seeded Monte Carlo propagation of the inputs' standard uncertainties.

A case's dose rests on inputs each known only so well: the administered activity and residual,
the scanner's calibration or the SPECT's self-calibration, the lung shunt fraction, the time
stamps, the dose kernel, the VOI boundaries and the image noise. :func:`propagate` draws N
seeded samples of all of them together, recomputes every VOI's metrics in each and reports,
per VOI and metric, the nominal value, its standard uncertainty, a 95 % interval and the
budget: the standard uncertainty each input causes alone [Gear2018]_ (EANM's guidance: an
uncertainty analysis of every dosimetry result, following the GUM).

How each input enters (the calibration's ``kind`` decides which apply):

=========================== ======== ===================================================================
input (case-file key)       default  how it enters
=========================== ======== ===================================================================
administered_activity_rel   5 %      SPECT: a factor A'/A on every voxel (the counts are normalised to
                                     the delivered activity). PET, activity maps: not in the dose.
residual_abs                0.01     SPECT: residual r' = r + u z, factor (1 - r') / (1 - r).
lung_shunt_abs              0.02     SPECT: LSF' = LSF + u z, factor (1 - LSF') / (1 - LSF).
pet_calibration_rel         10 %     PET: a factor on every voxel (scanner calibration for Y-90).
administration_time_min     5 min    PET: the decay back to the administration, factor exp(lambda dt).
scan_time_min               1 min    PET: the same for the scan's start.
kernel_rel                  2 %      methods ``kernel`` and ``scaled_kernel``: a factor on the dose.
segmentation_margin_mm      2 mm     every VOI's boundary moved by its own d ~ N(0, u) (mm), out or in;
                                     a SPECT's calibration VOI too, which renormalises the activity.
noise (true/false)          true     SPECT: Poisson resampling of the counts; PET: the variance model
                                     below. A new dose computation per sample.
pet_noise_cv                (image)  PET: the coefficient of variation of a voxel at the reference VOI's
                                     mean activity; default: measured in that VOI.
=========================== ======== ===================================================================

Multiplicative inputs need no new convolution (the dose is linear in activity): they scale the
sample's DVH. Segmentation samples need new DVHs only. Noise samples need a new dose
computation each, the cost that dominates (``cost_s_per_sample`` in the record).

Rules, each stated in the record:

- **Factors**: ``1 + u z`` with ``z`` standard normal (relative inputs), or the exact ratio of the
  perturbed and nominal fractions (residual, lung shunt: clipped to [0, 0.99]); time errors a
  factor ``exp(lambda u z)`` with the Y-90 decay constant.
- **Segmentation**: each voxel gets a signed distance ``s`` (mm) to the VOI's surface: in a
  partly covered voxel from its fraction ``f``, ``s = (1/2 - f) h`` (``h`` the voxel's size, the
  cube root of its volume); elsewhere from the Euclidean distance transform (with the voxel
  spacing) of the voxels at least half inside. The moved mask is ``clip(1/2 + (d - s)/h, 0, 1)``:
  ``d = 0`` gives the VOI's own mask, and the volume changes by about area x d: measured on
  spheres, moves of 2-3 voxels within 6-10 % of the exact volume and mean-dose change, moves of
  half a voxel to one voxel 13-20 % short (the fraction-to-distance rule is exact only for a
  surface parallel to a voxel face), so the segmentation's share is somewhat underestimated
  when the margin is below a voxel (tests/test_uncertainty.py). An inward move never empties a
  VOI: it stops where the VOI's deepest voxel is still whole (small tumours, large margins). Each VOI moves on its own, derived VOIs (normal liver) included: their boundaries are
  not re-derived from the moved ones (a simplification: a tumour that grows does not shrink the
  normal liver in the same sample).
- **Noise**. SPECT: the counts of each voxel (activity over the calibration's MBq per count) are
  replaced by Poisson counts of that mean; negative voxels are kept. The reconstruction's noise
  correlations are ignored. PET: each voxel gets Gaussian noise of variance ``s a`` (``a`` its
  activity, a scaled Poisson model with ``s`` from a noise-equivalent count estimate:
  ``s = cv^2 m`` for a voxel at the reference VOI's mean ``m``); ``cv`` is ``pet_noise_cv`` or,
  by default, the reference VOI's own coefficient of variation, which counts real uptake
  heterogeneity as noise (an overestimate). The reference VOI is the normal liver, else the
  whole liver, else the perfused VOI. Activity maps (units MBQ, phantoms): no noise model.
  A SPECT's self-calibration is redone on each sample: its calibration VOI holds the delivered
  activity again.
- **Interval**: the standard uncertainty ``u`` is the samples' standard deviation; the 95 %
  interval is the nominal value plus the 2.5th and 97.5th percentiles of the samples' deviations
  from their median. Resampling a noisy image adds its noise a second time, which shifts noise-
  sensitive metrics (D70 falls as the DVH widens); the median's deviation form removes that
  shift and keeps the spread.
- **Budget**: for each input, the standard deviation of the metric over the same N samples with
  only that input varied (the others nominal); the total's square is close to the sum of their
  squares when the inputs act independently.

Samples are seeded each by its own index (one :class:`numpy.random.SeedSequence` child per
sample), so a seeded run is reproducible bit for bit, also when ``map_function`` runs the samples
in another order or on other workers (e.g. a Dask client's map).

References
----------
.. [Gear2018] Gear JI, Cox MG, Gustafsson J, et al. EANM practical guidance on uncertainty analysis
   for molecular radiotherapy absorbed dose calculations. Eur J Nucl Med Mol Imaging 45:2456-2474,
   2018. doi:10.1007/s00259-018-4136-7
.. [Finocchiaro2020] Finocchiaro D, Gear JI, Fioroni F, et al. Uncertainty analysis of tumour
   absorbed dose calculations in molecular radiotherapy. EJNMMI Phys 7:63, 2020.
   doi:10.1186/s40658-020-00328-5
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from .radiobiology import Y90_DECAY_CONSTANT_PER_H
from .errors import InputError

if TYPE_CHECKING:
    from .dvh import DVH
    from .image import Image
    from .radiobiology import RadiobiologySettings

__all__ = [
    "UncertaintySettings",
    "uncertainty_settings_from_dict",
    "propagate",
    "moved_mask",
    "UNCERTAINTY_METRICS",
    "INPUT_KEYS",
    "DEFAULT_UNCERTAINTIES",
]

#: The metrics that get an interval, in this order (radiobiology's only where the VOI has them).
UNCERTAINTY_METRICS: tuple[str, ...] = ("mean_gy", "D70_gy", "D90_gy", "V100_pct", "bed_mean_gy", "eud_gy")

_ASSUMPTION = "assumption of voxeldose, not a measured value: set your own in [uncertainty]"

#: Input -> (default standard uncertainty, unit, source). Every default is an assumption stated
#: as such; the case file's ``[uncertainty]`` table replaces any of them.
DEFAULT_UNCERTAINTIES: Mapping[str, tuple[float, str, str]] = MappingProxyType({
    "administered_activity_rel": (0.05, "relative", "radionuclide calibrators are accepted within +/-5 % (AAPM Report "
                                  "181, 2012), taken as one standard uncertainty; " + _ASSUMPTION),
    "residual_abs": (0.01, "fraction of the vial", "a residual measured to one percentage point; " + _ASSUMPTION),
    "lung_shunt_abs": (0.02, "fraction", "lung shunt estimates from planar and tomographic MAA imaging differ by "
                       "percentage points; " + _ASSUMPTION),
    "pet_calibration_rel": (0.10, "relative", "Y-90 PET activity recovery in large volumes varies by about 10 % between "
                            "centres in multicentre phantom studies; " + _ASSUMPTION),
    "administration_time_min": (5.0, "min", "clocks of the injection room and the scanner agree to minutes; "
                                + _ASSUMPTION),
    "scan_time_min": (1.0, "min", "the scanner's acquisition time; " + _ASSUMPTION),
    "kernel_rel": (0.02, "relative", "about 2 %: the order of the agreement of voxel S-value kernels with Monte Carlo in "
                   "soft tissue (Lanconelli et al., Phys Med Biol 57:517, 2012; the engine's kernel is tested against "
                   "their tables); " + _ASSUMPTION),
    "segmentation_margin_mm": (2.0, "mm", "a boundary known to about half an emission voxel (contour and registration); "
                               + _ASSUMPTION),
})

#: Keys of ``[uncertainty]`` with a standard uncertainty (the table also takes ``n``, ``seed``,
#: ``noise`` and ``pet_noise_cv``).
INPUT_KEYS: tuple[str, ...] = tuple(DEFAULT_UNCERTAINTIES)

#: Upper bounds of plausible values (a larger one is a unit mistake).
_PLAUSIBLE: Mapping[str, float] = MappingProxyType({
    "administered_activity_rel": 1.0, "residual_abs": 0.5, "lung_shunt_abs": 0.5, "pet_calibration_rel": 1.0,
    "administration_time_min": 1440.0, "scan_time_min": 1440.0, "kernel_rel": 1.0, "segmentation_margin_mm": 20.0,
    "pet_noise_cv": 5.0,
})

#: Most samples a case may ask for.
MAX_SAMPLES = 100_000

_OTHER_KEYS = ("n", "seed", "noise", "pet_noise_cv")


@dataclass(frozen=True)
class UncertaintySettings:
    """The ``[uncertainty]`` table of a case file (module documentation).

    Attributes
    ----------
    n : int
        Samples to draw; 0: no uncertainty analysis.
    seed : int
        Seed of the samples (>= 0).
    noise : bool
        Resample the image noise (a dose computation per sample).
    values : mapping key -> float
        The standard uncertainties the table gives (:data:`INPUT_KEYS`) and ``pet_noise_cv``;
        the others are :data:`DEFAULT_UNCERTAINTIES`.
    source : str
        Where the table came from, for the provenance (not compared).

    Example
    -------
    >>> s = uncertainty_settings_from_dict({"n": 200, "kernel_rel": 0.03})
    >>> s.n, s.value("kernel_rel"), s.value("residual_abs")
    (200, 0.03, 0.01)
    """

    n: int = 0
    seed: int = 0
    noise: bool = True
    values: Mapping[str, float] = field(default_factory=dict, hash=False)
    source: str = field(default="Case", compare=False)

    def value(self, key: str) -> float:
        """The standard uncertainty of input ``key``: the table's, else the default."""
        if key in self.values:
            return float(self.values[key])
        return DEFAULT_UNCERTAINTIES[key][0]

    def source_of(self, key: str) -> str:
        """Where input ``key``'s value came from."""
        if key in self.values:
            return self.source
        return DEFAULT_UNCERTAINTIES[key][2]

    def with_samples(self, n: int | None = None, seed: int | None = None) -> "UncertaintySettings":
        """The same settings with another sample count or seed (e.g. ``run --uncertainty N --seed S``)."""
        return uncertainty_settings_from_dict(
            {**self.to_dict(), **({} if n is None else {"n": n}), **({} if seed is None else {"seed": seed})},
            where=self.source)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "seed": self.seed, "noise": self.noise, **dict(self.values)}


def _count(value: object, key: str, where: str, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= top:
        raise InputError(f"{where}: {key} must be a whole number from 0 to {top:,}, got {value!r}")
    return int(value)


def uncertainty_settings_from_dict(data: object, *, where: str = "[uncertainty]") -> UncertaintySettings:
    """:class:`UncertaintySettings` from a case file's ``[uncertainty]`` table.

    Raises
    ------
    InputError
        The table is not a table, a key is unknown (the message lists the allowed ones), ``n`` or
        ``seed`` is not a whole number in range, ``noise`` not true/false, or an uncertainty is
        negative, not a number or implausibly large (a percentage written as a fraction's 100
        times: the message says the unit).

    Example
    -------
    >>> uncertainty_settings_from_dict({"n": 100, "seed": 7, "noise": False}).noise
    False
    """
    if isinstance(data, UncertaintySettings):
        return data
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: [uncertainty] must be a table (n = 200, seed = 1, kernel_rel = 0.02, ...), got "
                         f"{type(data).__name__}")
    allowed = (*_OTHER_KEYS, *INPUT_KEYS)
    unknown = [k for k in data if k not in allowed]
    if unknown:
        import difflib

        hints = [f"{k!r} -> {c[0]!r}" for k in unknown if (c := difflib.get_close_matches(str(k), allowed, n=1))]
        raise InputError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}"
                         + (f" (did you mean {', '.join(hints)}?)" if hints else "") + f"; allowed: {', '.join(allowed)}")
    n = _count(data.get("n", 0), "n", where, MAX_SAMPLES)
    if n == 1:
        raise InputError(f"{where}: n = 1 gives no spread; give n = 0 (no analysis) or at least 2 (200 or more for "
                         "stable 95 % intervals)")
    seed = _count(data.get("seed", 0), "seed", where, 2**63 - 1)
    noise = data.get("noise", True)
    if not isinstance(noise, bool):
        raise InputError(f"{where}: noise must be true or false, got {noise!r}")
    values: dict[str, float] = {}
    for key in (*INPUT_KEYS, "pet_noise_cv"):
        if key not in data:
            continue
        v = data[key]
        unit = DEFAULT_UNCERTAINTIES[key][1] if key in DEFAULT_UNCERTAINTIES else "relative"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) or float(v) < 0:
            raise InputError(f"{where}: {key} must be a number >= 0 ({unit}), got {v!r}")
        if float(v) > _PLAUSIBLE[key]:
            raise InputError(f"{where}: {key} = {v!r} is implausible (at most {_PLAUSIBLE[key]:g} {unit}); "
                             + ("give a fraction (0.05 for 5 %)" if unit in ("relative", "fraction", "fraction of the vial")
                                else f"the unit is {unit}"))
        values[key] = float(v)
    return UncertaintySettings(n=n, seed=seed, noise=noise, values=MappingProxyType(values), source=where)


# --------------------------------------------------------------------------- moved masks


@dataclass(frozen=True)
class _Boundary:
    """A VOI's mask on a box around it, with the signed distance to its boundary (mm)."""

    box: tuple[slice, ...]
    mask: NDArray[np.float64]
    signed_mm: NDArray[np.float64]
    ramp_mm: float

    def moved(self, d_mm: float) -> NDArray[np.float64]:
        """The mask on the box with its boundary moved out by ``d_mm`` (in when negative)."""
        if d_mm == 0.0:
            return self.mask
        # an inward move never empties the VOI: it stops where its deepest voxel is still whole
        d = max(d_mm, self.deepest_mm + 0.5 * self.ramp_mm)
        return np.clip(0.5 + (d - self.signed_mm) / self.ramp_mm, 0.0, 1.0)

    @property
    def deepest_mm(self) -> float:
        return float(self.signed_mm.min())


def _boundary(mask: NDArray[np.floating], spacing_xyz_mm: Sequence[float], reach_mm: float) -> _Boundary:
    from scipy import ndimage  # imported here: scipy.ndimage is slow to import

    from ._checks import nonzero_box

    w = np.asarray(mask, dtype=np.float64)
    spacing_zyx = tuple(float(s) for s in spacing_xyz_mm[::-1])
    ramp = float(np.prod(spacing_zyx)) ** (1.0 / 3.0)
    inside = w >= 0.5
    if not inside.any():
        inside = w > 0
    core = nonzero_box(w > 0)
    if core is None:
        raise InputError("moved_mask: the mask is empty")
    box = tuple(slice(max(sl.start - int(math.ceil((reach_mm + 2 * ramp) / h)), 0),
                      min(sl.stop + int(math.ceil((reach_mm + 2 * ramp) / h)), n))
                for sl, h, n in zip(core, spacing_zyx, w.shape))
    b = inside[box]
    part = np.ascontiguousarray(w[box])
    # each voxel's own offset of the surface: a partly covered voxel's fraction places the surface
    # inside it; a full (empty) voxel lies at least half a ramp inside (outside)
    partial = (part > 0.0) & (part < 1.0)
    local = np.where(b, -0.5 * ramp, 0.5 * ramp)
    local[partial] = (0.5 - part[partial]) * ramp
    # elsewhere: the distance to the nearest voxel across the half-inside boundary, plus that voxel's
    # own offset (the surface lies between the two)
    d_in, near_in = ndimage.distance_transform_edt(b, sampling=spacing_zyx, return_indices=True)
    d_out, near_out = ndimage.distance_transform_edt(~b, sampling=spacing_zyx, return_indices=True)
    signed = np.where(b, -(d_in - local[tuple(near_in)]), d_out + local[tuple(near_out)])
    signed = np.where(part >= 1.0, np.minimum(signed, -0.5 * ramp), signed)
    signed = np.where(part <= 0.0, np.maximum(signed, 0.5 * ramp), signed)
    signed[partial] = local[partial]
    return _Boundary(box=box, mask=part, signed_mm=signed, ramp_mm=ramp)


def moved_mask(mask: NDArray[np.floating], spacing_xyz_mm: Sequence[float], d_mm: float) -> NDArray[np.float64]:
    """A VOI mask with its boundary moved outwards by ``d_mm`` mm (inwards when negative).

    The rule of :mod:`voxeldose.uncertainty` (module documentation): ``d_mm = 0`` returns the
    mask itself, and the volume changes by about the VOI's surface area times ``d_mm``.

    Parameters
    ----------
    mask : ndarray [z, y, x]
        Fraction of each voxel inside the VOI (0 to 1).
    spacing_xyz_mm : (x, y, z)
        Voxel size (mm).
    d_mm : float
        The move (mm).

    Returns
    -------
    ndarray, float64, the mask's shape

    Example
    -------
    >>> import numpy as np
    >>> m = np.zeros((1, 1, 21)); m[0, 0, 8:13] = 1.0
    >>> float(moved_mask(m, (1.0, 1.0, 1.0), 1.0).sum()), float(moved_mask(m, (1.0, 1.0, 1.0), -1.5).sum())
    (7.0, 2.0)
    """
    d = float(d_mm)
    b = _boundary(mask, spacing_xyz_mm, abs(d))
    out = np.array(mask, dtype=np.float64)
    out[b.box] = b.moved(d)
    return out


# --------------------------------------------------------------------------- propagation


@dataclass(frozen=True)
class _Voi:
    name: str
    boundary: _Boundary
    dose_scale: float
    parameters: Any  # TissueParameters | None
    nominal: "DVH"  # on the box, doses times dose_scale: the case's DVH


@dataclass(frozen=True)
class _Problem:
    """Everything one sample needs, built once per case."""

    activity: NDArray[np.float64]
    dose: NDArray[np.float32]
    spacing_xyz_mm: tuple[float, float, float]
    voxel_ml: float
    vois: tuple[_Voi, ...]
    factors: tuple[tuple[str, str, float, float], ...]  # (input, form, u, nominal)
    margin_mm: float
    noise: str | None  # "poisson", "gaussian" or None
    mbq_per_count: float
    pet_variance_mbq: float
    calibration: _Boundary | None
    calibration_name: str | None
    inside: NDArray[np.bool_] | None
    dose_args: Mapping[str, Any]
    band_doses_gy: Mapping[str, NDArray[np.float64]]


def _factor(form: str, u: float, nominal: float, z: float) -> float:
    if form == "relative":
        return max(1.0 + u * z, 1e-6)
    if form == "fraction":  # (1 - f') / (1 - f), f' = f + u z in [0, 0.99]
        f = min(max(nominal + u * z, 0.0), 0.99)
        return (1.0 - f) / (1.0 - nominal)
    if form == "time":  # u in minutes
        return math.exp(Y90_DECAY_CONSTANT_PER_H * u / 60.0 * z)
    raise AssertionError(form)  # pragma: no cover


def _metrics(h: "DVH", parameters: Any) -> dict[str, float]:
    out = {"mean_gy": h.mean_gy, "D70_gy": h.d(70), "D90_gy": h.d(90), "V100_pct": h.v(100)}
    if parameters is not None:
        from .radiobiology import dvh_radiobiology

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rb = dvh_radiobiology(h, parameters)
        for key in ("bed_mean_gy", "eud_gy"):
            if rb.get(key) is not None:
                out[key] = float(rb[key])  # type: ignore[arg-type]
    return out


def _scaled(h: "DVH", f: float) -> "DVH":
    # the same volumes at every dose times f (DVH.at_density scales the doses by density / rho)
    return h if f == 1.0 else h.at_density(h.density_g_per_cm3 / f)


def _voi_dvh(dose: NDArray[np.floating], v: _Voi, weights: NDArray[np.float64], voxel_ml: float,
             scale: float) -> "DVH":
    from .dvh import _dvh

    h = _dvh(np.asarray(dose[v.boundary.box], dtype=np.float64) * (v.dose_scale * scale), weights, voxel_ml, v.name)
    return h


def _sample(problem: _Problem, seed: np.random.SeedSequence) -> dict[str, Any]:
    """One sample: the metrics of every VOI with all inputs varied ("all") and with each alone."""
    rng = np.random.default_rng(seed)
    p = problem
    f_each = {name: _factor(form, u, nominal, float(rng.standard_normal())) for name, form, u, nominal in p.factors}
    f_all = float(np.prod(list(f_each.values()))) if f_each else 1.0
    deltas = {v.name: float(np.clip(rng.normal(0.0, p.margin_mm), -3 * p.margin_mm, 3 * p.margin_mm))
              if p.margin_mm > 0 else 0.0 for v in p.vois}
    cal_delta = 0.0
    if p.calibration is not None and p.margin_mm > 0:
        cal_delta = float(np.clip(rng.normal(0.0, p.margin_mm), -3 * p.margin_mm, 3 * p.margin_mm))
        # the calibration VOI is one boundary: its counts and its DVH move together
        cal_delta = deltas.get(p.calibration_name or "", cal_delta)
    noisy = None
    noisy_dose = None
    if p.noise is not None:
        a = p.activity
        if p.noise == "poisson":
            counts = a / p.mbq_per_count
            noisy = np.where(counts > 0, rng.poisson(np.clip(counts, 0.0, None)).astype(np.float64), counts)
            noisy *= p.mbq_per_count
        else:
            noisy = a + np.sqrt(p.pet_variance_mbq * np.clip(a, 0.0, None)) * rng.standard_normal(a.shape)
        dosed = noisy if p.inside is None else np.where(p.inside, noisy, 0.0)
        from .dose import absorbed_dose_array

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # negative noise voxels: the nominal case reported them
            noisy_dose = absorbed_dose_array(dosed, spacing_xyz_mm=p.spacing_xyz_mm, **p.dose_args)
    # a SPECT's self-calibration redone: its (moved) calibration VOI holds the delivered activity again
    c_seg = c_noise = c_all = 1.0
    if p.calibration is not None:
        cb = p.calibration
        moved_cal = cb.moved(cal_delta)
        nominal = float(np.sum(cb.mask * p.activity[cb.box]))
        c_seg = nominal / float(np.sum(moved_cal * p.activity[cb.box]))
        c_all = c_seg
        if noisy is not None:
            c_noise = nominal / float(np.sum(cb.mask * noisy[cb.box]))
            c_all = nominal / float(np.sum(moved_cal * noisy[cb.box]))
    out: dict[str, Any] = {}
    for v in p.vois:
        moved = v.boundary.moved(deltas[v.name])
        nominal_h = v.nominal
        entry: dict[str, dict[str, float]] = {}
        base = noisy_dose if noisy_dose is not None else p.dose
        all_h = _voi_dvh(base, v, moved, p.voxel_ml, c_all * f_all)
        entry["all"] = _metrics(all_h, v.parameters)
        for name, f in f_each.items():
            entry[name] = _metrics(_scaled(nominal_h, f), v.parameters)
        if p.margin_mm > 0:
            entry["segmentation_margin_mm"] = _metrics(_voi_dvh(p.dose, v, moved, p.voxel_ml, c_seg), v.parameters)
        if noisy_dose is not None:
            entry["noise"] = _metrics(_voi_dvh(noisy_dose, v, v.boundary.mask, p.voxel_ml, c_noise), v.parameters)
        out[v.name] = {"metrics": entry, "band": all_h.volume_fraction(p.band_doses_gy[v.name])}
    return out


def _chunks(seeds: Sequence[np.random.SeedSequence], size: int) -> list[list[tuple[int, np.random.SeedSequence]]]:
    items = list(enumerate(seeds))
    return [items[i:i + size] for i in range(0, len(items), size)]


def propagate(
    activity: "Image",
    dose: "Image",
    masks: Mapping[str, "Image"],
    roles: Mapping[str, str],
    dvhs: Mapping[str, "DVH"],
    settings: UncertaintySettings,
    *,
    calibration: Mapping[str, Any],
    calibration_voi: str | None,
    method: str,
    tissue: str = "soft",
    engine: str = "auto",
    kernel_tables: Any = None,
    density: "Image | None" = None,
    body: "Image | None" = None,
    exclude_outside_body: bool = True,
    voi_dose_scales: Mapping[str, float] | None = None,
    radiobiology: "RadiobiologySettings | None" = None,
    map_function: Callable[..., Iterable[Any]] = map,
    chunk_size: int = 10,
) -> dict[str, Any]:
    """Propagate the inputs' uncertainties to every VOI's metrics (module documentation).

    Parameters
    ----------
    activity, dose : Image
        The case's activity at administration (MBq) and dose (Gy), as computed.
    masks, roles, dvhs : mappings by VOI name
        The case's VOI masks on that grid, their roles, and their DVHs (the nominal metrics).
    settings : UncertaintySettings
        ``n`` samples, the seed, the inputs' standard uncertainties.
    calibration : mapping
        The calibration's provenance (:class:`voxeldose.calibrate.ActivityMap`): its ``kind``
        decides which inputs apply, its MBq per count (SPECT) the Poisson counts.
    calibration_voi : str or None
        The VOI that calibrated a SPECT (renormalised in each sample).
    method, tissue, engine, kernel_tables, density, body
        As the case's dose (:func:`voxeldose.absorbed_dose`).
    exclude_outside_body : bool
        Activity outside ``body`` was left out of the dose (``compute_case``'s rule "exclude").
    voi_dose_scales : mapping VOI -> float, optional
        Factors by which a VOI's DVH doses differ from the dose map's (lung VOIs without a CT).
    radiobiology : RadiobiologySettings, optional
        The case's ``[radiobiology]``, for the BED and EUD of each sample.
    map_function : callable
        ``map_function(f, chunks)`` runs ``f`` on each chunk of samples (default the builtin
        ``map``; a thread pool's or a Dask client's map spreads them); the result does not depend
        on it.
    chunk_size : int
        Samples per call of ``f``.

    Returns
    -------
    dict
        ``{"record": {...}, "vois": {voi: {metric: {"value", "u", "u_rel", "lo95", "hi95",
        "budget": {input: u}}}}, "dvh_bands": {voi: {"dose_gy", "lo", "hi"}}}`` (JSON-able).

    Raises
    ------
    InputError
        ``settings.n`` is 0 or 1 (no spread from fewer than 2 samples).
    """
    from .radiobiology import parameters_for

    if not isinstance(settings, UncertaintySettings):
        raise InputError(f"propagate needs UncertaintySettings, got {type(settings).__name__}")
    if settings.n < 2:
        raise InputError(f"an uncertainty analysis needs at least 2 samples, got n = {settings.n}; "
                         "200 or more give stable 95 % intervals")
    started = time.perf_counter()
    kind = str(calibration.get("kind", ""))
    sx, sy, sz = (float(s) for s in activity.spacing_mm)
    spacing = (sx, sy, sz)
    inputs: dict[str, dict[str, Any]] = {}
    factors: list[tuple[str, str, float, float]] = []

    def entry(key: str, applied: bool, how: str) -> None:
        inputs[key] = {"u": settings.value(key), "unit": DEFAULT_UNCERTAINTIES[key][1], "applied": applied,
                       "how": how, "source": settings.source_of(key)}

    case_record = calibration.get("case", {}) or {}
    if kind == "spect":
        lsf = float(case_record.get("lung_shunt_fraction") or 0.0)
        residual = float(case_record.get("residual_fraction") or 0.0)
        for key, form, nominal, how in (
                ("administered_activity_rel", "relative", 1.0, "a factor A'/A on every voxel (self-calibration)"),
                ("residual_abs", "fraction", residual, "factor (1 - r')/(1 - r) on every voxel (self-calibration)"),
                ("lung_shunt_abs", "fraction", lsf, "factor (1 - LSF')/(1 - LSF) on every voxel (self-calibration)")):
            entry(key, settings.value(key) > 0, how)
            if settings.value(key) > 0:
                factors.append((key, form, settings.value(key), nominal))
    else:
        why = ("not in the dose: a PET measures the activity; the administered activity, residual and lung shunt enter "
               "only the model cross-checks") if kind == "pet" else (
            "not in the dose: the activity map is given (units MBQ)")
        for key in ("administered_activity_rel", "residual_abs", "lung_shunt_abs"):
            entry(key, False, why)
    if kind == "pet":
        for key, form, how in (("pet_calibration_rel", "relative", "a factor on every voxel"),
                               ("administration_time_min", "time", "factor exp(lambda dt): the decay to the "
                                                                   "administration"),
                               ("scan_time_min", "time", "factor exp(lambda dt): the decay from the scan's start")):
            entry(key, settings.value(key) > 0, how)
            if settings.value(key) > 0:
                factors.append((key, form, settings.value(key), 1.0))
    else:
        for key in ("pet_calibration_rel", "administration_time_min", "scan_time_min"):
            entry(key, False, "not in the dose: " + ("the SPECT is calibrated to the administered activity, which the "
                                                     "decay factors cancel" if kind == "spect" else
                                                     "the activity map is given (units MBQ)"))
    if method in ("kernel", "scaled_kernel"):
        entry("kernel_rel", settings.value("kernel_rel") > 0, "a factor on the dose")
        if settings.value("kernel_rel") > 0:
            factors.append(("kernel_rel", "relative", settings.value("kernel_rel"), 1.0))
    else:
        entry("kernel_rel", False, f"method {method!r} uses no kernel: the energy is deposited in the voxel that emits "
                                   "it (its spatial error is not a standard uncertainty of the energy)")
    margin = settings.value("segmentation_margin_mm")
    entry("segmentation_margin_mm", margin > 0, "each VOI's boundary moved by d ~ N(0, u), |d| <= 3 u, out or in"
          + ("; the SPECT's calibration VOI too, renormalising the activity" if kind == "spect" else ""))

    noise = None
    noise_record: dict[str, Any] = {"applied": False}
    mbq_per_count = 0.0
    pet_variance = 0.0
    result = calibration.get("result", {}) or {}
    if not settings.noise:
        noise_record["how"] = "not sampled ([uncertainty] noise = false)"
    elif kind == "spect" and str((calibration.get("input", {}) or {}).get("units") or "").upper() == "CPS":
        noise_record["how"] = ("not sampled: the SPECT is in counts per second, and the counts behind them (the frame "
                               "durations) are not known; export it in counts (CNTS) for a Poisson noise model")
    elif kind == "spect":
        mbq_per_count = float(result.get("mbq_per_count_at_administration") or 0.0)
        if mbq_per_count > 0:
            noise = "poisson"
            noise_record = {"applied": True, "model": "Poisson resampling of each voxel's counts (activity / "
                            f"{mbq_per_count:.6g} MBq per count); negative voxels kept; reconstruction's correlations "
                            "ignored", "mbq_per_count": mbq_per_count}
        else:
            noise_record["how"] = "not sampled: the calibration records no MBq per count"
    elif kind == "pet":
        ref = next((n for role in ("normal_liver", "whole_liver", "perfused") for n, r in roles.items()
                    if r == role and n in masks), None)
        if ref is None:
            noise_record["how"] = "not sampled: no normal-liver, whole-liver or perfused VOI to estimate the noise in"
        else:
            w = np.asarray(masks[ref].array, dtype=np.float64)
            a = np.asarray(activity.array, dtype=np.float64)
            mean = float(np.sum(w * a) / np.sum(w))
            if "pet_noise_cv" in settings.values:
                cv = settings.values["pet_noise_cv"]
                cv_source = settings.source
            else:
                cv = math.sqrt(float(np.sum(w * (a - mean) ** 2) / np.sum(w))) / mean if mean > 0 else 0.0
                cv_source = (f"measured: the coefficient of variation of the voxels of VOI {ref!r} (real uptake "
                             "heterogeneity counted as noise: an overestimate)")
            if mean > 0 and cv > 0:
                noise = "gaussian"
                pet_variance = cv * cv * mean
                noise_record = {"applied": True, "model": "Gaussian noise of variance s a per voxel (a: its activity; a "
                                "scaled Poisson model), s = cv^2 m at the reference VOI's mean m; correlations ignored",
                                "reference_voi": ref, "reference_mean_mbq": mean, "cv": cv, "cv_source": cv_source,
                                "s_mbq": pet_variance}
            else:
                noise_record["how"] = f"not sampled: VOI {ref!r} has no positive mean activity or no spread"
    else:
        noise_record["how"] = "not sampled: the activity map is given (units MBQ): no image noise model"

    scales = dict(voi_dose_scales or {})
    vois_list = []
    for n, m in masks.items():
        b = _boundary(m.array, spacing, 3 * margin)
        scale = float(scales.get(n, 1.0))
        from .dvh import _dvh

        nominal_h = _dvh(np.asarray(dose.array, dtype=np.float64)[b.box] * scale, b.mask, activity.voxel_volume_ml, n)
        vois_list.append(_Voi(name=n, boundary=b, dose_scale=scale, parameters=parameters_for(n, roles.get(n), radiobiology),
                              nominal=nominal_h))
    vois = tuple(vois_list)
    cal = None
    if kind == "spect" and calibration_voi is not None and calibration_voi in masks:
        cal = _boundary(masks[calibration_voi].array, spacing, 3 * margin)
    inside = None
    if body is not None and exclude_outside_body:
        inside = np.asarray(body.array) > 0.5
    dose_args: dict[str, Any] = {"method": method, "tissue": tissue, "engine": engine, "kernel_tables": kernel_tables,
                                 "density": None if density is None else np.asarray(density.array),
                                 "body": None if body is None else np.asarray(body.array) > 0.5}
    bands = {v.name: np.linspace(0.0, 1.5 * max(v.nominal.max_gy, 1e-9), 101) for v in vois}
    problem = _Problem(activity=np.asarray(activity.array, dtype=np.float64), dose=np.asarray(dose.array),
                       spacing_xyz_mm=spacing, voxel_ml=activity.voxel_volume_ml, vois=vois, factors=tuple(factors),
                       margin_mm=margin, noise=noise, mbq_per_count=mbq_per_count, pet_variance_mbq=pet_variance,
                       calibration=cal, calibration_name=calibration_voi if cal is not None else None, inside=inside, dose_args=MappingProxyType(dose_args),
                       band_doses_gy=MappingProxyType(bands))
    seeds = np.random.SeedSequence(settings.seed).spawn(settings.n)

    def run_chunk(chunk: list[tuple[int, np.random.SeedSequence]]) -> list[tuple[int, dict[str, Any]]]:
        return [(i, _sample(problem, s)) for i, s in chunk]

    samples: list[dict[str, Any] | None] = [None] * settings.n
    for part in map_function(run_chunk, _chunks(seeds, max(int(chunk_size), 1))):
        for i, s in part:
            samples[i] = s
    done = [s for s in samples if s is not None]
    if len(done) != settings.n:
        raise InputError(f"map_function returned {len(done)} of {settings.n} samples")

    nominal_metrics = {v.name: _metrics(dvhs[v.name], v.parameters) if v.name in dvhs else _metrics(v.nominal, v.parameters)
                       for v in vois}
    out_vois: dict[str, Any] = {}
    out_bands: dict[str, Any] = {}
    for v in vois:
        per: dict[str, Any] = {}
        for metric in UNCERTAINTY_METRICS:
            if metric not in nominal_metrics[v.name]:
                continue
            value = nominal_metrics[v.name][metric]
            values = np.array([s[v.name]["metrics"]["all"][metric] for s in done])
            u = float(np.std(values, ddof=1))
            lo, hi = np.percentile(values - np.median(values), [2.5, 97.5])
            budget = {}
            for source in done[0][v.name]["metrics"]:
                if source == "all":
                    continue
                budget[source] = float(np.std([s[v.name]["metrics"][source][metric] for s in done], ddof=1))
            per[metric] = {"value": value, "u": u, "u_rel": u / abs(value) if value else None,
                           "lo95": float(value + lo), "hi95": float(value + hi), "budget": budget}
        out_vois[v.name] = per
        curves = np.array([s[v.name]["band"] for s in done])
        out_bands[v.name] = {"dose_gy": bands[v.name].tolist(),
                             "lo": np.percentile(curves, 2.5, axis=0).tolist(),
                             "hi": np.percentile(curves, 97.5, axis=0).tolist()}
    elapsed = time.perf_counter() - started
    record = {
        "method": "seeded Monte Carlo propagation of the inputs' standard uncertainties (EANM guidance, Gear et al. "
                  "2018, doi:10.1007/s00259-018-4136-7)",
        "n": settings.n, "seed": settings.seed,
        "rng": "numpy PCG64, one SeedSequence child per sample (reproducible in any order of evaluation)",
        "calibration_kind": kind,
        "inputs": inputs,
        "noise": noise_record,
        "interval_rule": "u: the samples' standard deviation; 95 % interval: the nominal value plus the 2.5th and 97.5th "
                         "percentiles of the samples' deviations from their median",
        "budget_rule": "per input: the standard deviation over the same samples with only that input varied",
        "segmentation_rule": "each voxel's signed distance to the VOI's surface (partly covered voxels: from their "
                             "fraction; others: distance transform), the mask a one-voxel ramp moved by d; each VOI "
                             "on its own, derived VOIs included; an inward move stops where the VOI's deepest voxel "
                             "is still whole",
        "dose_computations": settings.n if noise is not None else 0,
        "elapsed_s": elapsed,
        "cost_s_per_sample": elapsed / settings.n,
    }
    return {"record": record, "vois": out_vois, "dvh_bands": out_bands}
