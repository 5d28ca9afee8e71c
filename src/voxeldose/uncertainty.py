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
noise_fwhm_mm               0        the noise's correlation: white noise filtered by a Gaussian of this
                                     FWHM (mm), about the reconstruction's resolution; 0: voxels
                                     independent (the reconstruction's correlations ignored).
=========================== ======== ===================================================================

Multiplicative inputs need no new convolution (the dose is linear in activity): they scale the
sample's DVH. Segmentation samples need new DVHs only. Noise samples need a new dose
computation each, the cost that dominates (``cost_s_per_sample`` in the record).

Rules, each stated in the record:

- **Factors**: ``1 + u z`` with ``z`` standard normal (relative inputs), or the exact ratio of the
  perturbed and nominal fractions (residual, lung shunt: clipped to [0, 0.99]); time errors a
  factor ``exp(lambda u z)`` with the Y-90 decay constant.
- **Segmentation**: the surface is taken as locally planar. Each voxel near it gets the
  surface's normal (the gradient of the mask smoothed by a one-voxel Gaussian, in index space)
  and its centre's signed distance ``s`` to the surface along it: in a partly covered voxel the
  offset at which a plane of that normal cuts the voxel's fraction ``f`` off the cube (the exact
  cube-plane volume, inverted by bisection); elsewhere the distance to the local plane of the
  nearest voxel across the half-inside boundary (its offset plus the projection on its normal;
  Euclidean distance transform with the voxel spacing). The moved mask is, in each voxel, the
  cube's fraction under its plane moved by ``d``: ``d = 0`` gives the VOI's own mask, and for a
  plane surface the volume changes by exactly area x d at any orientation. Measured on spheres
  with accurate partial volumes (tests/test_uncertainty.py): on a 1 mm grid (R = 15 mm) every
  move from a quarter voxel to three voxels within 2.3 % of the exact volume and mean-dose
  change; on a 4 mm grid (R = 30 mm) within 2.5 %; a sphere of 3 voxels' radius (12 mm at 4 mm)
  within 9 % for moves up to a voxel, 8 % long to 18 % short at two (its curvature within a
  voxel). Fractions quantized coarsely (2 samples per voxel edge) cannot
  place the surface within a voxel: sub-voxel moves of such masks come out up to 20 % short.
  (The rule before 2026-12-03, a one-voxel ramp from ``s = (1/2 - f) h``, was 13-20 % short for
  sub-voxel moves and 5-10 % short at 2-3 voxels.) An inward move never empties a VOI: it stops
  where the VOI's deepest voxel is still whole (small tumours, large margins); a VOI without a
  whole voxel does not move in. Each drawn VOI moves by its own ``d``; the VOIs the case
  derived (:func:`voxeldose.derive_vois`: the tumours' union, the normal liver, the perfused
  normal liver, recognised as such where their masks are bit for bit the derivation's) are made
  again in each sample from the moved VOIs they come from, so a tumour that grows shrinks the
  normal liver in the same sample (before 2026-12-03 they moved on their own).
- **Noise**. SPECT: the counts of each voxel (activity over the calibration's MBq per count) are
  replaced by Poisson counts of that mean; negative voxels are kept. PET: each voxel gets
  Gaussian noise of variance ``s a`` (``a`` its
  activity, a scaled Poisson model with ``s`` from a noise-equivalent count estimate:
  ``s = cv^2 m`` for a voxel at the reference VOI's mean ``m``); ``cv`` is ``pet_noise_cv`` or,
  by default, the reference VOI's own coefficient of variation, which counts real uptake
  heterogeneity as noise (an overestimate). The reference VOI is the normal liver, else the
  whole liver, else the perfused VOI. Activity maps (units MBQ, phantoms): no noise model.
  By default the voxels' noise is independent, which a reconstruction's is not: its
  iterations, resolution modelling and post-filter correlate neighbouring voxels over about
  the image's resolution, so independent noise understates the spread of a VOI's mean by
  roughly the square root of the voxels in a resolution volume, and overstates how much a
  VOI's noise averages out. ``noise_fwhm_mm`` > 0 correlates it: the unit normal deviates are
  white noise filtered by a Gaussian of that FWHM along each axis (periodic at the grid's
  faces) and scaled to variance 1 in every voxel (:func:`correlated_normal`), so each voxel
  keeps the variance above and neighbours at distance ``r`` correlate by
  ``exp(-r**2 / (4 sigma**2))`` (``sigma`` = FWHM / 2.3548). With it a SPECT's noise is the
  Gaussian of the counts' Poisson variance (correlated Poisson counts have no standard form).
  The FWHM is the user's statement about the reconstruction (e.g. its measured resolution);
  voxeldose cannot read it from the image.
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
    "correlate_noise",
    "correlated_normal",
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
    "pet_noise_cv": 5.0, "noise_fwhm_mm": 100.0,
})

#: Most samples a case may ask for.
MAX_SAMPLES = 100_000

_OTHER_KEYS = ("n", "seed", "noise", "pet_noise_cv", "noise_fwhm_mm")

#: FWHM of a Gaussian over its standard deviation, 2 sqrt(2 ln 2).
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: A correlation filter's taps reach this many standard deviations from its centre.
_FILTER_REACH_SIGMA = 4.0


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
        The standard uncertainties the table gives (:data:`INPUT_KEYS`), ``pet_noise_cv`` and
        ``noise_fwhm_mm``; the others are :data:`DEFAULT_UNCERTAINTIES`.
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
    for key in (*INPUT_KEYS, "pet_noise_cv", "noise_fwhm_mm"):
        if key not in data:
            continue
        v = data[key]
        unit = DEFAULT_UNCERTAINTIES[key][1] if key in DEFAULT_UNCERTAINTIES else (
            "mm" if key == "noise_fwhm_mm" else "relative")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) or float(v) < 0:
            raise InputError(f"{where}: {key} must be a number >= 0 ({unit}), got {v!r}")
        if float(v) > _PLAUSIBLE[key]:
            raise InputError(f"{where}: {key} = {v!r} is implausible (at most {_PLAUSIBLE[key]:g} {unit}); "
                             + ("give a fraction (0.05 for 5 %)" if unit in ("relative", "fraction", "fraction of the vial")
                                else f"the unit is {unit}"))
        values[key] = float(v)
    return UncertaintySettings(n=n, seed=seed, noise=noise, values=MappingProxyType(values), source=where)


# --------------------------------------------------------------------------- moved masks


#: Components of a surface normal (index space) below this are taken as 0 in the cube-fraction
#: formula, which divides by their product: the 3-D formula's round-off stays below 1e-8, and
#: dropping such a component changes a fraction by less than 1e-4 / 8.
_MIN_NORMAL_COMPONENT = 1e-4

#: Width (voxels) of the Gaussian that smooths a mask before its gradient gives the surface
#: normals: the partial-volume fractions of a rasterised VOI are too coarse for a two-voxel
#: difference alone (measured on spheres: 1-2 % closer to the exact volume change).
_NORMAL_SMOOTHING_VOXELS = 1.0


def _filter_taps(fwhm_mm: float, spacing_mm: float) -> NDArray[np.float64]:
    """A Gaussian filter's taps (FWHM ``fwhm_mm``) at offsets ``-R .. R`` voxels of ``spacing_mm``
    (R: 4 standard deviations, at least 1), summing to 1."""
    sigma = fwhm_mm / _FWHM_PER_SIGMA / spacing_mm  # voxels
    reach = max(1, int(math.ceil(_FILTER_REACH_SIGMA * sigma)))
    k = np.arange(-reach, reach + 1)
    g = np.exp(-0.5 * (k / sigma) ** 2)
    return g / g.sum()


def correlate_noise(white: NDArray[np.floating], spacing_xyz_mm: Sequence[float], fwhm_mm: float) -> NDArray[np.float64]:
    """Unit-variance white noise [z, y, x] made correlated: filtered by a Gaussian of FWHM
    ``fwhm_mm`` along each axis (periodic at the grid's faces, so every voxel is alike) and
    scaled so that each voxel's variance stays 1 (the filter's sum of squared weights divided
    out). Voxels ``r`` apart then correlate by ``exp(-r**2 / (4 sigma**2))``, ``sigma`` =
    FWHM / 2.3548 (within the taps' truncation at 4 sigma). Linear in ``white``; ``fwhm_mm``
    0 returns it unchanged (as float64).
    """
    out = np.asarray(white, dtype=np.float64)
    if fwhm_mm <= 0:
        return out
    from scipy import ndimage

    norm2 = 1.0
    for axis, h in zip((2, 1, 0), spacing_xyz_mm):  # spacing is (x, y, z), the array [z, y, x]
        n = out.shape[axis]
        g = _filter_taps(fwhm_mm, float(h))
        reach = g.size // 2
        if g.size <= n:  # out[i] = sum_k g[k] white[i + k], k = -R .. R, indices mod n
            out = ndimage.correlate1d(out, g, axis=axis, mode="wrap")
        else:  # the taps reach around the axis: fold them onto its period, filter by FFT
            taps = np.zeros(n)
            np.add.at(taps, np.arange(-reach, reach + 1) % n, g)
            g = taps
            spectrum = np.fft.rfft(out, axis=axis) * np.conj(np.fft.rfft(taps)).reshape(
                [-1 if a == axis else 1 for a in range(out.ndim)])
            out = np.fft.irfft(spectrum, n=n, axis=axis)
        norm2 *= float(np.sum(g * g))  # the variance the filter leaves of unit white noise
    return out / math.sqrt(norm2)


def correlated_normal(shape: tuple[int, ...], spacing_xyz_mm: Sequence[float], fwhm_mm: float,
                      rng: np.random.Generator) -> NDArray[np.float64]:
    """Standard normal deviates [z, y, x], correlated by :func:`correlate_noise` (independent
    for ``fwhm_mm`` 0: the generator's ``standard_normal`` as drawn)."""
    return correlate_noise(rng.standard_normal(shape), spacing_xyz_mm, fwhm_mm)


def _cube_fraction(offset: NDArray[np.float64], normal: NDArray[np.float64]) -> NDArray[np.float64]:
    """Fraction of the unit cube ``[-1/2, 1/2]^3`` where ``normal . u <= offset`` (index space).

    ``normal`` (n, 3): the components' magnitudes (a reflection of the cube does not change the
    fraction). The exact volume of a cube cut by a plane, by inclusion-exclusion over the corners
    of ``[0, 1]^m``: ``sum over corners v of (-1)^|v| max(0, b - normal . v)^m / (m! prod
    normal)``, ``b = offset + sum(normal) / 2``, in ``m`` = 3, 2 or 1 dimensions as one or two
    components are below :data:`_MIN_NORMAL_COMPONENT` (taken as 0)."""
    a = np.sort(np.abs(normal), axis=-1)  # ascending: a[:, 0] is the smallest
    out = np.empty(offset.shape, dtype=np.float64)
    small = a < _MIN_NORMAL_COMPONENT
    dims = np.where(small[:, 1], 1, np.where(small[:, 0], 2, 3))
    for m, fact in ((1, 1.0), (2, 2.0), (3, 6.0)):
        rows = dims == m
        if not rows.any():
            continue
        am = a[rows][:, 3 - m:]
        b = offset[rows] + 0.5 * am.sum(axis=-1)
        acc = np.zeros(b.shape, dtype=np.float64)
        for corner in np.ndindex(*(2,) * m):
            t = b - am @ np.asarray(corner, dtype=np.float64)
            acc += (-1.0) ** sum(corner) * np.maximum(t, 0.0) ** m
        out[rows] = acc / (fact * np.prod(am, axis=-1))
    return np.clip(out, 0.0, 1.0)


def _cube_offset(fraction: NDArray[np.float64], normal: NDArray[np.float64]) -> NDArray[np.float64]:
    """The offset at which :func:`_cube_fraction` is ``fraction`` (bisection to 1e-15 of a voxel)."""
    half = 0.5 * normal.sum(axis=-1)
    lo, hi = -half, half.copy()
    for _ in range(52):
        mid = 0.5 * (lo + hi)
        below = _cube_fraction(mid, normal) < fraction
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class _Boundary:
    """A VOI's mask on a box around it, and what moving its surface needs.

    Each voxel a move within the reach can change (the band) carries the local surface: its
    normal in index space (``normal``, magnitudes) and its centre's signed distance to the surface
    along that normal (``sigma``, index units, > 0 outside), with ``k`` index units per mm along
    the normal. The moved fraction is the cube's fraction under that plane moved by ``d`` mm:
    :func:`_cube_fraction` ``(-sigma + d k)``."""

    box: tuple[slice, ...]
    mask: NDArray[np.float64]
    signed_mm: NDArray[np.float64]
    band: NDArray[np.intp]
    sigma: NDArray[np.float64]
    k: NDArray[np.float64]
    normal: NDArray[np.float64]
    min_move_mm: float

    def moved(self, d_mm: float) -> NDArray[np.float64]:
        """The mask on the box with its boundary moved out by ``d_mm`` (in when negative)."""
        if d_mm == 0.0:
            return self.mask
        # an inward move never empties the VOI: it stops where its deepest voxel is still whole
        d = max(d_mm, self.min_move_mm)
        out = self.mask.copy()
        out.flat[self.band] = _cube_fraction(-self.sigma + d * self.k, self.normal)
        return out


def _boundary(mask: NDArray[np.floating], spacing_xyz_mm: Sequence[float], reach_mm: float,
              within: tuple[slice, ...] | None = None) -> _Boundary:
    from scipy import ndimage  # imported here: scipy.ndimage is slow to import

    from ._checks import nonzero_box

    w = np.asarray(mask, dtype=np.float64)
    h = np.asarray([float(s) for s in spacing_xyz_mm[::-1]])  # z, y, x
    half_diag = 0.5 * float(np.sqrt(np.sum(h ** 2)))
    inside = w >= 0.5
    if not inside.any():
        inside = w > 0
    core = nonzero_box(w > 0)
    if core is None:
        raise InputError("moved_mask: the mask is empty")
    box = tuple(slice(max(sl.start - int(math.ceil((reach_mm + 3 * half_diag) / hh)), 0),
                      min(sl.stop + int(math.ceil((reach_mm + 3 * half_diag) / hh)), n))
                for sl, hh, n in zip(core, h, w.shape))
    if within is not None:  # at least this box (a derived VOI: the box of the VOIs it comes from)
        box = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(box, within))
    b = inside[box]
    part = np.ascontiguousarray(w[box])
    # the surface normal of every voxel (index space, outwards): the gradient of the smoothed mask
    smooth = ndimage.gaussian_filter(part, _NORMAL_SMOOTHING_VOXELS, mode="nearest")
    grad = np.zeros(part.shape + (3,))
    for axis in range(3):
        if part.shape[axis] > 1:
            grad[..., axis] = -np.gradient(smooth, axis=axis)
    norm = np.linalg.norm(grad, axis=-1)
    flat = norm <= 0.0
    grad[flat] = (1.0, 0.0, 0.0)  # no gradient: any direction (such voxels are never partial)
    normal = grad / np.where(flat, 1.0, norm)[..., None]
    k = np.linalg.norm(normal / h, axis=-1)  # index units per mm along the normal
    normal_mm = normal / h / k[..., None]  # the same normal in patient space (unit)
    cube = np.abs(normal)
    half = 0.5 * np.abs(normal).sum(axis=-1)  # a whole voxel's centre lies at least this far (index units)
    # the signed distance (mm) of each partly covered voxel's centre: where its fraction puts the
    # plane of its normal; a whole (empty) voxel lies at least its half-extent inside (outside)
    partial = (part > 0.0) & (part < 1.0)
    local = np.where(b, -half / k, half / k)
    local[partial] = -_cube_offset(part[partial], cube[partial]) / k[partial]
    # elsewhere: from the nearest voxel across the half-inside boundary, the distance to its local
    # surface plane (its offset plus the projection on its normal)
    _, near_in = ndimage.distance_transform_edt(b, sampling=h, return_indices=True)
    _, near_out = ndimage.distance_transform_edt(~b, sampling=h, return_indices=True)
    near = np.where(b[None], near_in, near_out)
    nearest = tuple(near)
    offset_mm = (np.indices(part.shape) - near).astype(np.float64) * h[:, None, None, None]
    signed = local[nearest] + np.einsum("i...,...i->...", offset_mm, normal_mm[nearest])
    # and each such voxel takes that voxel's normal
    far = ~partial
    cube[far] = cube[nearest][far]
    k[far] = k[nearest][far]
    half = 0.5 * cube.sum(axis=-1)
    signed = np.where(part >= 1.0, np.minimum(signed, -half / k), signed)
    signed = np.where(part <= 0.0, np.maximum(signed, half / k), signed)
    signed[partial] = local[partial]
    band = np.flatnonzero(np.abs(signed) <= reach_mm + 2 * half_diag)
    sigma = (signed * k).ravel()
    deepest = int(np.argmin(signed))
    # (a VOI without a whole voxel does not move in at all)
    min_move = min(float((sigma[deepest] + half.ravel()[deepest]) / k.ravel()[deepest]), 0.0)
    return _Boundary(box=box, mask=part, signed_mm=signed, band=band, sigma=sigma[band], k=k.ravel()[band],
                     normal=cube.reshape(-1, 3)[band], min_move_mm=min_move)


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
    derived: Mapping[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    noise_fwhm_mm: float = 0.0  # the noise's correlation (correlate_noise); 0: voxels independent


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


#: How a derived VOI comes from the VOIs it is made of (the rules of
#: :func:`voxeldose.derive_vois`): the tumours' union, the whole liver without it, the normal
#: liver within the perfused territory.
_DERIVATIONS = ("tumours", "normal_liver", "perfused_normal_liver")


def _derivations(masks: Mapping[str, Any], roles: Mapping[str, str]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The VOIs that :func:`voxeldose.derive_vois` made from the others: name -> (rule, the VOIs
    it is made of, in order). A VOI counts as derived only where its mask is bit for bit that
    rule's result: a normal liver the user drew moves on its own."""
    from .voi_sets import difference, intersection, union_of

    whole = [n for n, r in roles.items() if r == "whole_liver" and n in masks]
    tumours = tuple(n for n, r in roles.items() if r == "tumour" and n in masks)
    perfused = [n for n, r in roles.items() if r == "perfused" and n in masks]
    if len(whole) != 1 or not tumours:
        return {}
    def arr(name: str) -> NDArray[np.floating]:
        return np.asarray(getattr(masks[name], "array", masks[name]))

    liver = arr(whole[0])
    union = union_of([arr(t) for t in tumours], liver.shape)
    normal = difference(liver, union)
    found: dict[str, tuple[str, tuple[str, ...]]] = {}

    def same(name: str, value: NDArray[np.floating]) -> bool:
        if name not in masks or name in whole or name in tumours or name in perfused:
            return False
        mine = arr(name)
        return bool(np.array_equal(mine, np.asarray(value, dtype=mine.dtype)))

    if same("tumours", union):
        found["tumours"] = ("tumours", tumours)
    if same("normal_liver", normal):
        found["normal_liver"] = ("normal_liver", (whole[0], *tumours))
    if len(perfused) == 1 and same("perfused_normal_liver", intersection(normal, arr(perfused[0]))):
        found["perfused_normal_liver"] = ("perfused_normal_liver", (whole[0], perfused[0], *tumours))
    return found


def _on_box(mask: NDArray[np.float64], box: tuple[slice, ...], target: tuple[slice, ...]) -> NDArray[np.float64]:
    """A mask given on ``box`` placed on the box ``target`` (0 outside ``box``)."""
    out = np.zeros(tuple(t.stop - t.start for t in target), dtype=np.float64)
    src, dst = [], []
    for b, t in zip(box, target):
        lo, hi = max(b.start, t.start), min(b.stop, t.stop)
        if hi <= lo:
            return out
        src.append(slice(lo - b.start, hi - b.start))
        dst.append(slice(lo - t.start, hi - t.start))
    out[tuple(dst)] = mask[tuple(src)]
    return out


def _derive_moved(moved: dict[str, NDArray[np.float64]], boxes: Mapping[str, tuple[slice, ...]],
                  derived: Mapping[str, tuple[str, tuple[str, ...]]]) -> None:
    """Add to ``moved`` (VOI -> moved mask on its box) each derived VOI, made from the moved VOIs
    it comes from by :func:`voxeldose.derive_vois`' rules, on its own box."""
    from .voi_sets import difference, intersection, union_of

    for name in _DERIVATIONS:
        if name not in derived:
            continue
        rule, sources = derived[name]
        box = boxes[name]
        shape = tuple(b.stop - b.start for b in box)
        placed = [_on_box(moved[n], boxes[n], box) for n in sources]
        if rule == "tumours":
            moved[name] = union_of(placed, shape).astype(np.float64)
        elif rule == "normal_liver":
            moved[name] = difference(placed[0], union_of(placed[1:], shape)).astype(np.float64)
        else:
            normal = difference(placed[0], union_of(placed[2:], shape))
            moved[name] = intersection(normal, placed[1]).astype(np.float64)


def _segmentation_boundaries(masks: Mapping[str, Any], roles: Mapping[str, str], spacing_xyz_mm: Sequence[float],
                             reach_mm: float) -> tuple[dict[str, _Boundary], dict[str, tuple[str, tuple[str, ...]]]]:
    """Every VOI's boundary, and the derived VOIs' rules (:func:`_derivations`; none without a
    move): a derived VOI's box holds the boxes of the VOIs it comes from."""
    derived = _derivations(masks, roles) if reach_mm > 0 else {}
    boundaries: dict[str, _Boundary] = {}
    for n, m in masks.items():
        if n not in derived:
            boundaries[n] = _boundary(np.asarray(getattr(m, "array", m)), spacing_xyz_mm, reach_mm)
    for n in _DERIVATIONS:
        if n in derived:
            sources = [boundaries[s].box for s in derived[n][1]]
            hull = tuple(slice(min(b[a].start for b in sources), max(b[a].stop for b in sources)) for a in range(3))
            boundaries[n] = _boundary(np.asarray(getattr(masks[n], "array", masks[n])), spacing_xyz_mm, reach_mm,
                                      within=hull)
    return {n: boundaries[n] for n in masks}, derived


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
        if p.noise == "poisson" and p.noise_fwhm_mm > 0:  # correlated: the Gaussian of the Poisson variance
            counts = a / p.mbq_per_count
            z = correlated_normal(a.shape, p.spacing_xyz_mm, p.noise_fwhm_mm, rng)
            noisy = np.where(counts > 0, counts + np.sqrt(np.clip(counts, 0.0, None)) * z, counts)
            noisy *= p.mbq_per_count
        elif p.noise == "poisson":
            counts = a / p.mbq_per_count
            noisy = np.where(counts > 0, rng.poisson(np.clip(counts, 0.0, None)).astype(np.float64), counts)
            noisy *= p.mbq_per_count
        else:
            z = correlated_normal(a.shape, p.spacing_xyz_mm, p.noise_fwhm_mm, rng)
            noisy = a + np.sqrt(p.pet_variance_mbq * np.clip(a, 0.0, None)) * z
        dosed = noisy if p.inside is None else np.where(p.inside, noisy, 0.0)
        from .dose import absorbed_dose_array

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # negative noise voxels: the nominal case reported them
            noisy_dose = absorbed_dose_array(dosed, spacing_xyz_mm=p.spacing_xyz_mm, **p.dose_args)
    # a SPECT's self-calibration redone: its (moved) calibration VOI holds the delivered activity again
    # every VOI's moved mask (derived VOIs made again from the moved VOIs they come from)
    moved_of = {v.name: v.boundary.moved(deltas[v.name]) for v in p.vois if v.name not in p.derived}
    if p.derived:
        _derive_moved(moved_of, {v.name: v.boundary.box for v in p.vois}, p.derived)
    c_seg = c_noise = c_all = 1.0
    if p.calibration is not None:
        cb = p.calibration
        moved_cal = (moved_of[p.calibration_name] if p.calibration_name in moved_of and p.calibration_name in p.derived
                     else cb.moved(cal_delta))
        nominal = float(np.sum(cb.mask * p.activity[cb.box]))
        c_seg = nominal / float(np.sum(moved_cal * p.activity[cb.box]))
        c_all = c_seg
        if noisy is not None:
            c_noise = nominal / float(np.sum(cb.mask * noisy[cb.box]))
            c_all = nominal / float(np.sum(moved_cal * noisy[cb.box]))
    out: dict[str, Any] = {}
    for v in p.vois:
        moved = moved_of[v.name]
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
    fwhm = float(settings.values.get("noise_fwhm_mm", 0.0))
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
                            f"{mbq_per_count:.6g} MBq per count); negative voxels kept", "mbq_per_count": mbq_per_count}
            if fwhm > 0:
                noise_record["model"] = ("Gaussian noise of the Poisson variance of each voxel's counts (activity / "
                                         f"{mbq_per_count:.6g} MBq per count), correlated; negative voxels kept")
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
                                "scaled Poisson model), s = cv^2 m at the reference VOI's mean m",
                                "reference_voi": ref, "reference_mean_mbq": mean, "cv": cv, "cv_source": cv_source,
                                "s_mbq": pet_variance}
            else:
                noise_record["how"] = f"not sampled: VOI {ref!r} has no positive mean activity or no spread"
    else:
        noise_record["how"] = "not sampled: the activity map is given (units MBQ): no image noise model"
    if noise is not None:
        noise_record["correlation"] = (
            {"fwhm_mm": fwhm, "source": settings.source,
             "how": f"white noise filtered by a Gaussian of FWHM {fwhm:g} mm along each axis (periodic at the grid's "
                    "faces) and scaled to unit variance per voxel: voxels r apart correlate by exp(-r^2 / (4 sigma^2)), "
                    f"sigma = {fwhm / _FWHM_PER_SIGMA:.4g} mm"}
            if fwhm > 0 else
            {"fwhm_mm": 0.0, "how": "none: voxels independent. A reconstruction's noise is correlated over about its "
                                    "resolution, so a VOI's noise spread is understated; set noise_fwhm_mm in "
                                    "[uncertainty] to the reconstruction's resolution"})

    scales = dict(voi_dose_scales or {})
    boundaries, derived = _segmentation_boundaries(masks, roles, spacing, 3 * margin)
    vois_list = []
    for n, m in masks.items():
        b = boundaries[n]
        scale = float(scales.get(n, 1.0))
        from .dvh import _dvh

        nominal_h = _dvh(np.asarray(dose.array, dtype=np.float64)[b.box] * scale, b.mask, activity.voxel_volume_ml, n)
        vois_list.append(_Voi(name=n, boundary=b, dose_scale=scale, parameters=parameters_for(n, roles.get(n), radiobiology),
                              nominal=nominal_h))
    vois = tuple(vois_list)
    cal = None
    if kind == "spect" and calibration_voi is not None and calibration_voi in masks:
        cal = boundaries[calibration_voi]
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
                       band_doses_gy=MappingProxyType(bands), derived=MappingProxyType(derived), noise_fwhm_mm=fwhm)
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
        "segmentation_rule": "the surface locally planar: each voxel's normal (gradient of the smoothed mask) and "
                             "signed distance (partly covered voxels: where that plane cuts their fraction; others: "
                             "the nearest boundary voxel's plane), the moved fraction the cube's under that plane moved "
                             "by d; each drawn VOI by its own d; derived VOIs (" + (", ".join(derived) or "none") +
                             ") made again from the moved VOIs they come from; an inward move stops where the VOI's "
                             "deepest voxel is still whole",
        "dose_computations": settings.n if noise is not None else 0,
        "elapsed_s": elapsed,
        "cost_s_per_sample": elapsed / settings.n,
    }
    return {"record": record, "vois": out_vois, "dvh_bands": out_bands}
