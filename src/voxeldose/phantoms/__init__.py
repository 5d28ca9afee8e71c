"""Synthetic phantoms with analytic answers: activity maps, VOI masks and the truth beside them.

Every phantom is an activity map in MBq per voxel at administration, indexed [z, y, x], on a
grid centred on the origin of patient coordinates, with fractional (partial-volume) VOI masks
and a JSON-able ``truth`` record of what the engine must find:

- :func:`point_source`: 1 MBq in one voxel; its dose is the voxel kernel itself, and the dose
  summed over the grid times the voxel mass is the emitted energy.
- :func:`uniform`: uniform activity everywhere; deep inside, the kernel dose equals local
  deposition (charged-particle equilibrium).
- :func:`sphere`: a uniform sphere (300 mL by default) in soft tissue; its mean dose is the
  local-deposition dose times the fraction of the beta energy absorbed in the sphere, computed
  semi-analytically from the radial dose point kernel and the sphere's geometric reduction
  factor (Berger 1971).
- :func:`liver`: an ellipsoidal liver (~1.5 L) with five spherical tumours (1-5 cm) at a
  tumour-to-normal uptake ratio, and two lungs receiving the lung shunt. Geometry in
  ``data/phantoms/liver.toml``. Optional scanner blur (Gaussian FWHM) and Poisson noise.

Masks are rasterised with sub-voxel sampling (about 0.5 mm or finer inside each boundary
voxel): the mask of a 1 cm sphere at 4.42 mm voxels holds its analytic volume within 1 %.

References
----------
Berger MJ. Distribution of absorbed dose around point sources of electrons and beta
particles in water and other media. J Nucl Med 1971;12 Suppl 5:5-23 (the geometric reduction
factor of a sphere, 1 - 3x/4 + x^3/16).
"""

from __future__ import annotations

import functools
import json
import math
import tomllib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from .. import constants as C
from .._checks import check_fraction, check_positive, check_shape, check_spacing
from .._resources import data_dir
from ..dose import local_deposition_gy_per_mbq
from ..errors import GeometryError, InputError
from ..image import Image
from ..kernels import dose_point_kernel

#: Local-deposition dose (Gy) of 1 MBq/mL at administration in soft tissue (1.04 g in 1 mL).
_LDM_GY_PER_MBQ_PER_ML = local_deposition_gy_per_mbq(C.SOFT_TISSUE_DENSITY_G_PER_CM3 * 1.0)

__all__ = [
    "Phantom",
    "point_source",
    "uniform",
    "sphere",
    "liver",
    "PHANTOMS",
    "make_phantom",
]

#: Largest sub-sample pitch (mm) used to rasterise a boundary voxel.
SUBSAMPLE_PITCH_MM = 0.5

#: FWHM (mm) to Gaussian sigma (mm).
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))



@dataclass(frozen=True)
class Phantom:
    """A synthetic case: activity, VOI masks and the truth.

    Attributes
    ----------
    name : str
    activity_mbq : ndarray, float64, [z, y, x], read-only
        Activity per voxel at administration (MBq).
    spacing_mm : (x, y, z)
        Voxel size (mm).
    origin_mm : (x, y, z)
        Patient coordinates (mm) of the centre of voxel [0, 0, 0]; axes along x, y, z.
    masks : mapping name -> ndarray float64 [z, y, x] in [0, 1], read-only
        Fraction of each voxel inside each VOI.
    truth : mapping
        What the engine must find, JSON-able (see each phantom's documentation).
    activity : Image
        ``activity_mbq`` with its geometry (units "MBQ"), for the image-level functions.
    vois : mapping name -> Image
        ``masks`` as mask images (units "MASK") on the same grid.
    """

    name: str
    activity_mbq: NDArray[np.float64]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    masks: Mapping[str, NDArray[np.float64]] = field(default_factory=dict)
    truth: Mapping[str, Any] = field(default_factory=dict)

    def truth_json(self) -> str:
        """The truth record as indented JSON."""
        return json.dumps(self.truth, indent=2, sort_keys=False)

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel (mL)."""
        sx, sy, sz = self.spacing_mm
        return sx * sy * sz * 1e-3

    @functools.cached_property
    def activity(self) -> Image:
        """The activity (MBq per voxel at administration) as an image with its geometry."""
        return Image(self.activity_mbq, self.spacing_mm, self.origin_mm, units="MBQ")

    @functools.cached_property
    def vois(self) -> Mapping[str, Image]:
        """The VOI masks as mask images on the activity's grid."""
        return MappingProxyType({n: self.activity.with_array(m, units="MASK") for n, m in self.masks.items()})


def _frozen(array: NDArray[np.float64]) -> NDArray[np.float64]:
    array.setflags(write=False)
    return array


def _make(name: str, activity: NDArray[np.float64], spacing: tuple[float, float, float],
          origin: tuple[float, float, float], masks: dict[str, NDArray[np.float64]],
          truth: dict[str, Any]) -> Phantom:
    return Phantom(
        name=name,
        activity_mbq=_frozen(activity),
        spacing_mm=spacing,
        origin_mm=origin,
        masks=MappingProxyType({k: _frozen(v) for k, v in masks.items()}),
        truth=truth,
    )


# --------------------------------------------------------------------------- grid and shapes



def _centred_origin(shape_zyx: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    """Origin (x, y, z) that puts the centre of the field of view at (0, 0, 0)."""
    nz, ny, nx = shape_zyx
    return tuple(-(n - 1) / 2.0 * s for n, s in zip((nx, ny, nz), spacing))  # type: ignore[return-value]



def ellipsoid_fraction(
    shape_zyx: tuple[int, int, int],
    spacing_xyz_mm: tuple[float, float, float],
    origin_mm: tuple[float, float, float],
    centre_mm: Sequence[float],
    semi_axes_mm: Sequence[float],
    *,
    name: str = "ellipsoid",
) -> NDArray[np.float64]:
    """Fraction of each voxel inside an axis-aligned ellipsoid, [z, y, x] in [0, 1].

    Voxels whose whole extent lies inside (outside) get 1 (0) exactly; the others are sampled
    on a regular sub-grid of pitch at most :data:`SUBSAMPLE_PITCH_MM` and at most 1/20 of the
    smallest semi-axis (midpoint rule).

    Raises
    ------
    GeometryError
        If the ellipsoid does not lie wholly inside the field of view.
    """
    spacing = np.asarray(spacing_xyz_mm, float)
    origin = np.asarray(origin_mm, float)
    centre = np.asarray(centre_mm, float)
    axes = np.asarray(semi_axes_mm, float)
    n_xyz = np.asarray(shape_zyx[::-1])
    lo_mm, hi_mm = origin - spacing / 2, origin + (n_xyz - 0.5) * spacing
    if np.any(centre - axes < lo_mm) or np.any(centre + axes > hi_mm):
        raise GeometryError(
            f"{name} (centre {tuple(centre.round(2).tolist())} mm, semi-axes {tuple(axes.round(2).tolist())} mm) "
            f"does not fit in the field of view {tuple(lo_mm.round(1).tolist())} to "
            f"{tuple(hi_mm.round(1).tolist())} mm "
            "(x, y, z); enlarge the shape or the spacing"
        )
    out = np.zeros(shape_zyx, np.float64)
    # index box that can touch the ellipsoid, per axis (x, y, z)
    first = np.floor((centre - axes - origin) / spacing).astype(int)
    last = np.ceil((centre + axes - origin) / spacing).astype(int)
    first = np.clip(first, 0, n_xyz - 1)
    last = np.clip(last, 0, n_xyz - 1)
    coords = [origin[a] + np.arange(first[a], last[a] + 1) * spacing[a] for a in range(3)]
    # scaled coordinates (units of semi-axes); q is 1-Lipschitz in them
    u = [(coords[a] - centre[a]) / axes[a] for a in range(3)]
    q = np.sqrt(u[2][:, None, None] ** 2 + u[1][None, :, None] ** 2 + u[0][None, None, :] ** 2)
    half_diag = 0.5 * float(np.sqrt(np.sum((spacing / axes) ** 2)))
    box = np.where(q + half_diag <= 1.0, 1.0, 0.0)
    edge = np.argwhere((q + half_diag > 1.0) & (q - half_diag < 1.0))  # [k, (z, y, x)]
    if edge.size:
        # finer sampling for small shapes: the volume error of the midpoint rule grows as the
        # pitch approaches the radius of curvature
        pitch = min(SUBSAMPLE_PITCH_MM, float(axes.min()) / 20.0)
        n_sub = max(1, int(math.ceil(float(spacing.max()) / pitch)))
        frac = (np.arange(n_sub) + 0.5) / n_sub - 0.5
        offsets = np.stack(np.meshgrid(frac, frac, frac, indexing="ij"), -1).reshape(-1, 3)  # (x, y, z)
        offsets_u = offsets * (spacing / axes)
        centres_u = np.stack([u[0][edge[:, 2]], u[1][edge[:, 1]], u[2][edge[:, 0]]], -1)
        chunk = max(1, 4_000_000 // offsets_u.shape[0])
        values = np.empty(len(edge))
        for start in range(0, len(edge), chunk):
            pts = centres_u[start:start + chunk, None, :] + offsets_u[None, :, :]
            values[start:start + chunk] = np.mean(np.einsum("kpi,kpi->kp", pts, pts) <= 1.0, axis=1)
        box[edge[:, 0], edge[:, 1], edge[:, 2]] = values
    out[first[2]:last[2] + 1, first[1]:last[1] + 1, first[0]:last[0] + 1] = box
    return out


def _blur(activity: NDArray[np.float64], spacing: tuple[float, float, float], fwhm_mm: float) -> NDArray[np.float64]:
    from scipy import ndimage  # imported here: scipy.ndimage costs 0.1 s at import

    sigma_zyx = [fwhm_mm / _FWHM_PER_SIGMA / s for s in spacing[::-1]]
    return ndimage.gaussian_filter(activity, sigma_zyx, mode="constant", cval=0.0, truncate=4.0)


def _add_noise(activity: NDArray[np.float64], counts_per_mbq: float, seed: int) -> NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    expected = np.clip(activity, 0.0, None) * counts_per_mbq
    return rng.poisson(expected).astype(np.float64) / counts_per_mbq


# --------------------------------------------------------------------------- point source


def point_source(
    *,
    spacing_xyz_mm: Sequence[float] = (4.42, 4.42, 4.42),
    shape: Sequence[int] = (21, 21, 21),
    activity_mbq: float = 1.0,
) -> Phantom:
    """All activity in the centre voxel: the dose map is the voxel kernel times the decays.

    Truth keys: ``activity_mbq``, ``source_index_zyx``, ``cumulated_activity_mbq_s``
    (A0 x T1/2/ln 2), ``emitted_energy_j`` (all beta energy of all decays), and ``expected``, a
    sentence: dose (Gy) = ``y90_kernel(spacing)`` (mGy/(MBq s)) x cumulated activity x 1e-3,
    centred on the source voxel. The grid must be odd on every axis.
    """
    spacing = check_spacing(spacing_xyz_mm, name="spacing_xyz_mm")
    shape_zyx = check_shape(shape)
    if any(n % 2 == 0 for n in shape_zyx):
        raise InputError(f"point_source needs an odd shape on every axis to centre the source, got {shape_zyx}")
    a0 = check_positive(activity_mbq, "activity_mbq", "MBq")
    activity = np.zeros(shape_zyx)
    centre = tuple(n // 2 for n in shape_zyx)
    activity[centre] = a0
    cumulated = a0 * C.Y90_MEAN_LIFE_S
    truth = {
        "phantom": "point_source",
        "spacing_mm": list(spacing),
        "shape_zyx": list(shape_zyx),
        "activity_mbq": a0,
        "source_index_zyx": list(centre),
        "cumulated_activity_mbq_s": cumulated,
        "emitted_energy_j": cumulated * 1e6 * C.Y90_MEAN_ENERGY_MEV * C.J_PER_MEV,
        "expected": "dose_gy = y90_kernel(spacing_xyz_mm) * cumulated_activity_mbq_s * 1e-3, "
        "centred on source_index_zyx",
    }
    masks = {"source": (activity > 0).astype(np.float64)}
    return _make("point_source", activity, spacing, _centred_origin(shape_zyx, spacing), masks, truth)


# --------------------------------------------------------------------------- uniform


def uniform(
    *,
    spacing_xyz_mm: Sequence[float] = (4.0, 4.0, 4.0),
    shape: Sequence[int] = (40, 40, 40),
    concentration_mbq_per_ml: float = 1.0,
) -> Phantom:
    """Uniform activity filling the whole grid.

    Truth: ``local_deposition_dose_gy``, the dose deep inside (more than the ~11 mm maximum beta
    range from the edge), where the kernel dose equals local deposition.
    """
    spacing = check_spacing(spacing_xyz_mm, name="spacing_xyz_mm")
    shape_zyx = check_shape(shape)
    c = check_positive(concentration_mbq_per_ml, "concentration_mbq_per_ml", "MBq/mL")
    voxel_ml = spacing[0] * spacing[1] * spacing[2] * 1e-3
    activity = np.full(shape_zyx, c * voxel_ml)
    truth = {
        "phantom": "uniform",
        "spacing_mm": list(spacing),
        "shape_zyx": list(shape_zyx),
        "concentration_mbq_per_ml": c,
        "activity_total_mbq": float(activity.sum()),
        "local_deposition_dose_gy": c * _LDM_GY_PER_MBQ_PER_ML,
        "expected": "kernel dose equals local_deposition_dose_gy more than 11 mm inside the edge",
    }
    masks = {"volume": np.ones(shape_zyx)}
    return _make("uniform", activity, spacing, _centred_origin(shape_zyx, spacing), masks, truth)


# --------------------------------------------------------------------------- sphere


def sphere_absorbed_fraction(radius_mm: float, tissue: str = "soft") -> float:
    """Fraction of the Y-90 beta energy emitted uniformly in a sphere that is absorbed in it.

    ``phi(R) = int_0^2R F(r) g(r/R) dr`` with ``F`` the shipped radial dose point kernel
    (energy fraction absorbed per mm of radius) and ``g(x) = 1 - 3x/4 + x^3/16`` the
    probability that a point at distance ``r`` from a uniformly chosen point of the sphere,
    in a random direction, is also inside it (Berger 1971).
    """
    R = check_positive(radius_mm, "radius_mm", "mm")
    dpk = dose_point_kernel(tissue)  # type: ignore[arg-type]
    r = np.linspace(0.0, min(2 * R, float(dpk.r_mm[-1])), 20001)
    f = np.interp(r, dpk.r_mm, dpk.f_per_mm, right=0.0)
    x = r / R
    g = 1.0 - 0.75 * x + x**3 / 16.0
    return float(np.trapezoid(f * g, r))


def sphere(
    *,
    volume_ml: float = 300.0,
    spacing_xyz_mm: Sequence[float] = (2.0, 2.0, 2.0),
    activity_mbq: float = 1000.0,
    margin_mm: float = 15.0,
) -> Phantom:
    """A uniform sphere of activity in soft tissue, at the centre of the grid.

    Truth keys: ``radius_mm``, ``volume_ml`` (analytic) and ``volume_ml_voxelised``,
    ``ldm_mean_dose_gy`` (all energy stays in the sphere), ``absorbed_fraction`` (of the beta
    energy, inside the sphere, from the dose point kernel), ``escape_fraction`` (1 minus it) and
    ``dpk_mean_dose_gy`` = ldm x absorbed fraction, the expected mean dose in the sphere VOI.
    """
    spacing = check_spacing(spacing_xyz_mm, name="spacing_xyz_mm")
    v = check_positive(volume_ml, "volume_ml", "mL")
    a0 = check_positive(activity_mbq, "activity_mbq", "MBq")
    margin = check_positive(margin_mm, "margin_mm", "mm")
    radius = (3.0 * v * 1e3 / (4.0 * math.pi)) ** (1.0 / 3.0)
    shape_zyx = tuple(2 * int(math.ceil((radius + margin) / s)) + 1 for s in spacing[::-1])
    origin = _centred_origin(shape_zyx, spacing)  # type: ignore[arg-type]
    mask = ellipsoid_fraction(shape_zyx, spacing, origin, (0, 0, 0), (radius,) * 3, name="sphere")  # type: ignore[arg-type]
    voxel_ml = spacing[0] * spacing[1] * spacing[2] * 1e-3
    v_vox = float(mask.sum()) * voxel_ml
    activity = mask * (a0 / v_vox * voxel_ml)
    ldm = a0 / v * _LDM_GY_PER_MBQ_PER_ML
    phi = sphere_absorbed_fraction(radius)
    truth = {
        "phantom": "sphere",
        "spacing_mm": list(spacing),
        "shape_zyx": list(shape_zyx),
        "radius_mm": radius,
        "volume_ml": v,
        "volume_ml_voxelised": v_vox,
        "activity_mbq": a0,
        "ldm_mean_dose_gy": ldm,
        "absorbed_fraction": phi,
        "escape_fraction": 1.0 - phi,
        "dpk_mean_dose_gy": ldm * phi,
    }
    return _make("sphere", activity, spacing, origin, {"sphere": mask}, truth)


# --------------------------------------------------------------------------- liver


def _liver_geometry() -> dict[str, Any]:
    path = data_dir("phantoms") / "liver.toml"
    with path.open("rb") as fh:
        return tomllib.load(fh)


def _ellipsoid_ml(semi_axes_mm: Sequence[float]) -> float:
    return 4.0 / 3.0 * math.pi * math.prod(semi_axes_mm) * 1e-3


def _cap_ml(semi_axes_mm: Sequence[float], z_mm: float, *, below: bool) -> float:
    """Volume (mL) of the part of an ellipsoid below (or above) the plane ``z_mm`` from its centre:
    a cap of height h has pi a b h^2 (3c - h) / (3 c^2)."""
    a, b, c = semi_axes_mm
    h = min(max(c + z_mm if below else c - z_mm, 0.0), 2 * c)
    return math.pi * a * b * h * h * (3 * c - h) / (3 * c * c) * 1e-3


def liver(
    *,
    spacing_xyz_mm: Sequence[float] = (4.42, 4.42, 4.42),
    shape: Sequence[int] | None = None,
    administered_gbq: float = 3.0,
    lung_shunt_fraction: float = 0.10,
    tumour_to_normal: float = 4.0,
    fwhm_mm: float | None = None,
    noise_counts_per_mbq: float | None = None,
    seed: int = 0,
    lung_interface: bool = False,
    cold_tumours: Sequence[str] = (),
) -> Phantom:
    """Ellipsoidal liver with five spherical tumours, and two lungs receiving the lung shunt.

    The administered activity A0 splits into A0 x LSF, spread uniformly over the lungs, and
    A0 x (1 - LSF) over the liver, where tumours take up ``tumour_to_normal`` times the
    concentration of normal liver (``cold_tumours`` none). The voxel activities sum to A0
    exactly (before noise).

    Parameters
    ----------
    spacing_xyz_mm : (x, y, z)
        Voxel size (mm).
    shape : [z, y, x], optional
        Array shape; default ``ceil(fov_mm / spacing_xyz_mm)`` from ``data/phantoms/liver.toml``.
    administered_gbq : float
        Administered Y-90 activity (GBq).
    lung_shunt_fraction : float
        Fraction of the activity shunted to the lungs, 0 <= LSF < 1.
    tumour_to_normal : float
        Tumour-to-normal-liver concentration ratio (> 0).
    fwhm_mm : float, optional
        Blur the activity with a 3-D Gaussian of this FWHM (mm), like a scanner's resolution.
        The blur conserves activity (none lies near the edge of the field of view).
    noise_counts_per_mbq : float, optional
        Replace each voxel's activity by Poisson counts at this sensitivity, divided back.
    seed : int
        Seed of the noise.
    lung_interface : bool
        The right lung rests on the liver (``[interface]`` of ``liver.toml``): the liver's top and
        the right lung's base are cut by one axial plane, a flat interface with no gap, so liver
        activity doses the lung through the kernel. Default: the lungs 20 mm above the liver.
    cold_tumours : sequence of str
        Tumours (``"tumour_1"`` ... ``"tumour_5"``) that take up nothing (e.g. necrotic, or not
        perfused on the MAA scan): the liver's activity goes to normal liver and the other tumours.

    Returns
    -------
    Phantom
        Masks ``liver``, ``tumour_1`` ... ``tumour_5``, ``tumours``, ``normal_liver``, ``lung``.
        ``truth["vois"][name]`` holds ``volume_ml`` (of the voxelised mask),
        ``volume_ml_analytic``, ``concentration_mbq_per_ml``, ``activity_mbq`` (the activity in
        the VOI's own compartment), ``ldm_mean_dose_gy`` (analytic local-deposition mean dose in
        soft tissue: the concentration times :func:`voxeldose.dose.local_deposition_gy_per_mbq` of 1.04 g) and
        ``ldm_mean_dose_voxelised_gy`` (the mask-weighted mean of the local-deposition dose of
        the noiseless, unblurred activity map: what ``absorbed_dose(..., method="local")``
        followed by ``dvh(...).mean_gy`` must give). ``truth["models"]`` holds the MIRD,
        partition-model and lung-dose values of ../shared/CLINICAL.md for the same case.

    Raises
    ------
    InputError
        If a parameter is out of range (e.g. a lung shunt fraction outside [0, 1)).
    GeometryError
        If the grid is too small to hold the phantom.
    """
    spacing = check_spacing(spacing_xyz_mm, name="spacing_xyz_mm")
    a0_gbq = check_positive(administered_gbq, "administered_gbq", "GBq")
    lsf = check_fraction(lung_shunt_fraction, "lung_shunt_fraction",
                         "the lung shunt, the fraction of the administered activity that reaches the lungs")
    tn = check_positive(tumour_to_normal, "tumour_to_normal", "ratio of concentrations")
    fwhm = None if fwhm_mm is None else check_positive(fwhm_mm, "fwhm_mm", "mm")
    cpm = None if noise_counts_per_mbq is None else check_positive(noise_counts_per_mbq, "noise_counts_per_mbq", "counts/MBq")

    geo = _liver_geometry()
    names = [t["name"] for t in geo["tumours"]]
    cold = [cold_tumours] if isinstance(cold_tumours, str) else list(cold_tumours)
    unknown = [c for c in cold if c not in names]
    if unknown:
        raise InputError(f"cold_tumours: {', '.join(map(repr, unknown))} is not a tumour of the liver phantom; its "
                         f"tumours are {', '.join(names)}")
    if shape is None:
        shape_zyx = tuple(int(math.ceil(f / s - 1e-9)) for f, s in zip(geo["fov_mm"][::-1], spacing[::-1]))
    else:
        shape_zyx = check_shape(shape)
    origin = _centred_origin(shape_zyx, spacing)  # type: ignore[arg-type]
    voxel_ml = spacing[0] * spacing[1] * spacing[2] * 1e-3

    def frac(name: str, centre: Sequence[float] | NDArray[np.float64], axes: Sequence[float]) -> NDArray[np.float64]:
        return ellipsoid_fraction(shape_zyx, spacing, origin, centre, axes, name=name)  # type: ignore[arg-type]

    liver_c = np.asarray(geo["liver"]["centre_mm"], float)
    liver_ax = geo["liver"]["semi_axes_mm"]
    masks: dict[str, NDArray[np.float64]] = {"liver": frac("liver", liver_c, liver_ax)}
    analytic_ml: dict[str, float] = {"liver": _ellipsoid_ml(liver_ax)}
    below = np.ones(shape_zyx)  # the share of each voxel below the interface plane
    if lung_interface:
        z0 = geo["interface"]["plane_z_mm"]
        zc = origin[2] + spacing[2] * np.arange(shape_zyx[0])
        below = np.clip((z0 - (zc - spacing[2] / 2)) / spacing[2], 0.0, 1.0)[:, None, None] * np.ones(shape_zyx)
        masks["liver"] = masks["liver"] * below
        analytic_ml["liver"] -= _cap_ml(liver_ax, z0 - liver_c[2], below=False)
    tumour_names = []
    tumours = np.zeros(shape_zyx)
    for t in geo["tumours"]:
        r = t["diameter_mm"] / 2.0
        m = frac(t["name"], liver_c + np.asarray(t["centre_mm"], float), (r, r, r))
        masks[t["name"]] = m
        analytic_ml[t["name"]] = 4.0 / 3.0 * math.pi * r**3 * 1e-3
        tumours += m
        tumour_names.append(t["name"])
    masks["tumours"] = np.clip(tumours, 0.0, 1.0)
    analytic_ml["tumours"] = sum(analytic_ml[n] for n in tumour_names)
    # the tumours that take up activity (all of them unless some are cold)
    hot = masks["tumours"] if not cold else np.clip(sum(masks[n] for n in tumour_names if n not in cold)
                                                      + np.zeros(shape_zyx), 0.0, 1.0)
    masks["normal_liver"] = np.clip(masks["liver"] - masks["tumours"], 0.0, 1.0)
    analytic_ml["normal_liver"] = analytic_ml["liver"] - analytic_ml["tumours"]
    lung = np.zeros(shape_zyx)
    analytic_ml["lung"] = 0.0
    for lu in geo["lungs"]:
        centre, axes = lu["centre_mm"], lu["semi_axes_mm"]
        if lung_interface and lu["name"] == "right_lung":
            centre = geo["interface"]["right_lung_centre_mm"]
            z0 = geo["interface"]["plane_z_mm"]
            lung += frac(lu["name"], centre, axes) * (1.0 - below)
            analytic_ml["lung"] += (_ellipsoid_ml(axes) - _cap_ml(axes, z0 - centre[2], below=True))
            continue
        lung += frac(lu["name"], centre, axes)
        analytic_ml["lung"] += _ellipsoid_ml(axes)
    masks["lung"] = np.clip(lung, 0.0, 1.0)

    vox_ml = {name: float(m.sum()) * voxel_ml for name, m in masks.items()}
    a0_mbq = a0_gbq * 1e3
    a_liver = a0_mbq * (1.0 - lsf)
    a_lung = a0_mbq * lsf
    hot_ml = vox_ml["tumours"] if not cold else float(hot.sum()) * voxel_ml
    c_normal = a_liver / (vox_ml["normal_liver"] + tn * hot_ml)
    c_tumour = tn * c_normal
    c_lung = a_lung / vox_ml["lung"]
    clean = voxel_ml * (c_normal * masks["normal_liver"] + c_tumour * hot + c_lung * masks["lung"])

    activity = clean
    if fwhm is not None:
        activity = _blur(activity, spacing, fwhm)
    if cpm is not None:
        activity = _add_noise(activity, cpm, seed)

    k = _LDM_GY_PER_MBQ_PER_ML
    local_gy = clean * (k / voxel_ml)  # local-deposition dose of the clean map
    conc = {name: 0.0 if name in cold else c_tumour for name in tumour_names}
    hot_analytic_ml = sum(analytic_ml[n] for n in tumour_names if n not in cold)
    conc.update({"tumours": c_tumour * hot_ml / vox_ml["tumours"] if cold else c_tumour,
                 "normal_liver": c_normal, "lung": c_lung})
    conc["liver"] = (c_normal * analytic_ml["normal_liver"] + c_tumour * hot_analytic_ml) / analytic_ml["liver"]
    vois: dict[str, dict[str, float]] = {}
    for name, m in masks.items():
        compartment_activity = a_liver if name == "liver" else (a_lung if name == "lung" else conc[name] * vox_ml[name])
        vois[name] = {
            "volume_ml": vox_ml[name],
            "volume_ml_analytic": analytic_ml[name],
            "concentration_mbq_per_ml": conc[name],
            "activity_mbq": compartment_activity,
            "ldm_mean_dose_gy": conc[name] * k,
            "ldm_mean_dose_voxelised_gy": float((local_gy * m).sum() / m.sum()),
        }

    # reference values of the clinical models for this case (../shared/CLINICAL.md), with the
    # masses of the voxelised VOIs at soft-tissue density and the rounded-in-practice 49.67
    rho_kg_per_ml = C.SOFT_TISSUE_DENSITY_G_PER_CM3 * 1e-3
    m_liver = vox_ml["liver"] * rho_kg_per_ml
    m_tumour = hot_ml * rho_kg_per_ml  # the tumours that take up activity
    m_normal = vox_ml["normal_liver"] * rho_kg_per_ml
    mird = C.MIRD_Y90_GY_KG_PER_GBQ
    d_normal = mird * a0_gbq * (1.0 - lsf) / (tn * m_tumour + m_normal)
    models = {
        "mird_constant_gy_kg_per_gbq": mird,
        "liver_mass_kg": m_liver,
        "mird_liver_dose_gy": mird * a0_gbq * (1.0 - lsf) / m_liver,
        "partition_normal_liver_dose_gy": d_normal,
        "partition_tumour_dose_gy": tn * d_normal,
        "lung_dose_gy_1kg": mird * a0_gbq * lsf / 1.0,
        "note": "MIRD and partition models use 49.67 Gy kg/GBq; the LDM values in 'vois' use "
        "E x T1/2/ln2 from ICRP-107 (49.77 Gy kg/GBq) at 1.04 g/mL, like the engine.",
    }
    truth = {
        "phantom": "liver",
        "description": geo.get("title", "liver phantom") + (", right lung resting on the liver" if lung_interface else ""),
        "lung_interface": bool(lung_interface),
        "spacing_mm": list(spacing),
        "shape_zyx": list(shape_zyx),
        "origin_mm": list(origin),
        "administered_gbq": a0_gbq,
        "lung_shunt_fraction": lsf,
        "tumour_to_normal": tn,
        **({"cold_tumours": cold} if cold else {}),
        "fwhm_mm": fwhm,
        "noise_counts_per_mbq": cpm,
        "seed": int(seed),
        "activity_total_mbq": float(clean.sum()),
        "tissue_density_g_per_cm3": C.SOFT_TISSUE_DENSITY_G_PER_CM3,
        "ldm_gy_per_mbq_per_ml": k,
        "vois": vois,
        "models": models,
    }
    return _make("liver", activity, spacing, origin, masks, truth)  # type: ignore[arg-type]


#: Phantom generators by name (for the command line and batch benchmarks).
PHANTOMS: Mapping[str, Callable[..., Phantom]] = MappingProxyType(
    {"point_source": point_source, "uniform": uniform, "sphere": sphere, "liver": liver}
)


def make_phantom(name: str, **kwargs: Any) -> Phantom:
    """Build the phantom ``name`` (one of :data:`PHANTOMS`) with keyword options."""
    try:
        factory = PHANTOMS[name]
    except KeyError:
        raise InputError(f"unknown phantom {name!r}; choose one of {', '.join(PHANTOMS)}") from None
    return factory(**kwargs)
