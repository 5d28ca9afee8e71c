"""Predicted against delivered dose: the MAA plan beside the post-treatment Y-90 PET.

Radioembolization is planned on a Tc-99m MAA SPECT (the *predicted* dose, ``voxeldose plan``) and
verified on the Y-90 PET or bremsstrahlung SPECT after the treatment (the *delivered* dose,
``voxeldose run``). :func:`compare_doses` puts the two on one grid and compares them: per VOI
(Dmean, D and V metrics, their differences and DVHs on one dose axis), voxel by voxel (the
dose-difference map), by isodose regions (volumes and Dice coefficients) and, optionally, by the
3-D gamma index. Everything here but :func:`run_compare` is a pure function of images; reading
and writing is :mod:`voxeldose.io.comparison`, and :func:`run_compare` reads two output folders,
compares them and writes the comparison (``voxeldose compare``).

Conventions
-----------
*The common grid* is the delivered dose's grid. The predicted dose is interpolated onto it
(:func:`to_common_grid`); the VOIs are masks on it.

*The transform* is a 4 x 4 homogeneous matrix ``M`` in mm, in DICOM patient coordinates (LPS),
that takes a point's coordinates in the planning (MAA) frame to its coordinates in the
post-treatment frame: a point at ``p`` in the planning scan is at ``M @ (p, 1)`` in the
post-treatment scan. So the predicted dose at the delivered grid's point ``q`` is the planning
map's value at ``M^-1 q``. ``M`` is what a registration that moves the MAA SPECT onto the PET
produces as "moving to fixed" for points; ITK's and SimpleITK's ``Resample`` take the inverse,
the fixed-to-moving map. A matrix written in RAS coordinates (3D Slicer) is
``F @ M_ras @ F`` in LPS, ``F = diag(-1, -1, 1, 1)``. It must be rigid (:func:`check_rigid`).
Without a transform both maps are taken to be in one patient frame.

*Interpolation* is trilinear in the predicted map's own voxels, by world coordinates. Within
half a voxel beyond its outermost voxel centres the edge value is used (the map's field of view
ends at the voxels' outer faces, as in ITK); beyond its field of view the predicted dose is 0,
and the share of the delivered grid out there is reported (a caveat when more than 1 % of a
VOI's volume or of the delivered dose lies outside). Interpolating a dose map does not conserve
its integral (Gy x mL), which a mass-weighted resampling would; the integral on both grids is
reported, so that the change can be seen.

*Differences* are delivered - predicted: Gy for doses, percentage points for V metrics; a
relative difference is the difference over the predicted value (None where that is 0).

*Isodose levels* are percentages of a maximum: by default each map's own maximum on the common
grid (relative isodoses, as most MAA-versus-PET studies compare them: it compares the shape of
the two distributions whatever their scales); ``isodose_reference="delivered"`` (or
``"predicted"``) takes one map's maximum for both, so that both regions have the same absolute
dose levels. A PET's maximum is one noisy voxel: the maxima (and the regions) can be restricted
to a VOI (``isodose_region``, e.g. the liver), which also keeps the lungs' and the background's
noise out of the regions.

*Gamma* (:func:`gamma_index`) is the global 3-D gamma index of Low et al. 1998 with the delivered
dose as the reference (the points where gamma is computed, whose maximum normalises the dose
criterion and the lower cutoff) and the predicted dose as the evaluated distribution,
interpolated in its own grid (sub-voxel) on spherical shells around each reference point.

References
----------
Low DA, Harms WB, Mutic S, Purdy JA. A technique for the quantitative evaluation of dose
distributions. Med Phys 25:656-661, 1998. doi:10.1118/1.598248

Wendling M, Zijp LJ, McDermott LN, et al. A fast algorithm for gamma evaluation in 3D. Med Phys
34:1647-1654, 2007. doi:10.1118/1.2721657 (the search on shells of increasing distance, at a step
of a tenth of the distance criterion)

Dice LR. Measures of the amount of ecologic association between species. Ecology 26:297-302,
1945. doi:10.2307/1932409
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._checks import check_between, check_positive
from ._version import __version__
from .dvh import DVH, dvh
from .errors import GeometryError, InputError, VoiError
from .image import Image, mask_image

__all__ = [
    "Comparison",
    "VoiComparison",
    "IsodoseOverlap",
    "GammaResult",
    "DvhOverlay",
    "compare_doses",
    "run_compare",
    "to_common_grid",
    "isodose_overlap",
    "gamma_index",
    "check_rigid",
    "DEFAULT_LEVELS_PCT",
    "DEFAULT_GAMMA_CUTOFF_PCT",
    "OUTSIDE_CAVEAT_FRACTION",
    "RIGID_TOLERANCE",
]

#: Isodose levels compared by default: 10, 20, ..., 90 % of the maximum.
DEFAULT_LEVELS_PCT: tuple[float, ...] = tuple(float(p) for p in range(10, 100, 10))

#: Lower dose cutoff of the gamma index by default: reference voxels below 10 % of the reference
#: maximum are not evaluated (background and noise).
DEFAULT_GAMMA_CUTOFF_PCT = 10.0

#: A VOI's volume, or the delivered dose, more than this share outside the predicted map's field
#: of view is a caveat.
OUTSIDE_CAVEAT_FRACTION = 0.01

#: How far a transform's rotation part may be from orthonormal with determinant +1 (and its last
#: row from (0, 0, 0, 1)).
RIGID_TOLERANCE = 1e-6

#: Dose points of the DVH overlay (0 to the largest VOI maximum of both maps).
DVH_OVERLAY_POINTS = 501

IsodoseReference = Literal["own", "delivered", "predicted"]

_CONVENTIONS = {
    "common_grid": "the delivered dose's grid; the predicted dose is interpolated onto it, the VOIs are masks on it",
    "transform": "4x4 matrix in mm (DICOM LPS) taking planning-frame (MAA) points to post-treatment-frame points: "
                 "p_post = M p_plan; the predicted dose at a delivered voxel q is the planning map at M^-1 q",
    "interpolation": "trilinear in the predicted map's voxels by world coordinates; edge value within half a voxel "
                     "beyond the outer voxel centres, 0 outside its field of view; not dose (integral) conserving",
    "difference": "delivered - predicted: Gy for doses, percentage points for V metrics; relative difference = "
                  "difference / predicted",
    "isodose": "levels in % of a maximum on the common grid: each map's own (relative isodoses) unless a common "
               "reference is named; Dice = 2|A and B| / (|A| + |B|)",
    "gamma": "global 3-D gamma (Low et al. 1998): reference = delivered, evaluated = predicted (interpolated in its own "
             "grid on spherical shells); dose criterion and cutoff in % of the delivered maximum",
}


# --------------------------------------------------------------------------- the transform


def check_rigid(matrix: ArrayLike, *, where: str = "the transform") -> NDArray[np.float64]:
    """``matrix`` as a checked rigid 4 x 4 homogeneous transform (float64, a new array).

    Parameters
    ----------
    matrix : array_like, shape (4, 4)
        Rotation ``R`` (3 x 3, upper left) and translation ``t`` (mm, last column) that take
        planning-frame points to post-treatment-frame points (module documentation); last row
        ``(0, 0, 0, 1)``.
    where : str
        What the matrix is, for messages (e.g. the file it came from).

    Raises
    ------
    GeometryError
        Not 4 x 4 finite numbers, a last row other than (0, 0, 0, 1), or a rotation part that is
        not orthonormal with determinant +1 within :data:`RIGID_TOLERANCE` (a scaling, shear or
        mirror: voxeldose compares doses under rigid motion only).

    Example
    -------
    >>> m = check_rigid([[0, -1, 0, 10], [1, 0, 0, 0], [0, 0, 1, -5], [0, 0, 0, 1]])  # 90 deg about z
    >>> m[:3, 3].tolist()
    [10.0, 0.0, -5.0]
    """
    try:
        m = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise GeometryError(f"{where}: expected a 4 x 4 matrix of numbers, got {matrix!r:.200}") from None
    if m.shape != (4, 4):
        raise GeometryError(f"{where}: expected a 4 x 4 homogeneous matrix (4 rows of 4 numbers), got shape {m.shape}")
    if not np.isfinite(m).all():
        raise GeometryError(f"{where}: the matrix holds NaN or infinite values")
    if not np.allclose(m[3], (0.0, 0.0, 0.0, 1.0), rtol=0.0, atol=RIGID_TOLERANCE):
        raise GeometryError(f"{where}: the last row is {m[3].tolist()}, not (0, 0, 0, 1): not an affine transform "
                            "in homogeneous coordinates")
    r = m[:3, :3]
    off = float(np.abs(r.T @ r - np.eye(3)).max())
    det = float(np.linalg.det(r))
    if off > RIGID_TOLERANCE or abs(det - 1.0) > RIGID_TOLERANCE:
        kind = "a mirror (determinant -1)" if det < 0 else "a scaling or shear"
        raise GeometryError(
            f"{where}: the rotation part is not rigid (|R^T R - I| = {off:.3g}, det R = {det:.9g}; both must be "
            f"within {RIGID_TOLERANCE:g} of the identity and of +1): it is {kind}. voxeldose compares doses under a "
            "rigid transform only; give the rigid registration's matrix (rotation and translation, mm)")
    m[3] = (0.0, 0.0, 0.0, 1.0)
    return m


def _grid_to_index(source: Image, grid: Image, transform: NDArray[np.float64] | None
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The affine map from ``grid``'s indices (i, j, k) to ``source``'s continuous indices:
    ``index = C @ ijk + c``, and ``A``, the map of a world offset (mm, ``grid``'s frame) to
    ``source``'s index offset. ``transform`` takes ``source``'s frame to ``grid``'s."""
    inv = np.eye(4) if transform is None else np.linalg.inv(transform)
    # source index of a source-frame point q: D_s^T (q - o_s) / s_s
    to_index = source.direction_matrix.T / np.asarray(source.spacing_mm)[:, None]
    a = to_index @ inv[:3, :3]  # world offset in grid's frame -> source index offset
    b = to_index @ (inv[:3, 3] - np.asarray(source.origin_mm))
    g = grid.direction_matrix * np.asarray(grid.spacing_mm)[None, :]  # grid index -> world offset
    return a @ g, a @ np.asarray(grid.origin_mm) + b, a


def _sample(values: NDArray[np.float64], index_xyz: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Trilinear samples of ``values`` [z, y, x] at continuous indices (..., 3) = (x, y, z), and
    whether each lies in its field of view ([-0.5, n - 0.5] per axis: the edge value in the
    outer half voxel); 0 outside."""
    from scipy.ndimage import map_coordinates

    shape_xyz = np.asarray(values.shape[::-1], float)
    inside = np.all((index_xyz >= -0.5) & (index_xyz <= shape_xyz - 0.5), axis=-1)
    coords = np.clip(index_xyz, 0.0, shape_xyz - 1.0).reshape(-1, 3)[:, ::-1].T  # (z, y, x) rows
    out = map_coordinates(values, coords, order=1, mode="nearest", prefilter=False).reshape(inside.shape)
    out[~inside] = 0.0
    return out, inside


def _check_dose(image: object, what: str) -> Image:
    if not isinstance(image, Image):
        raise InputError(f"{what} must be a voxeldose Image in Gy, got {type(image).__name__}")
    if image.units.upper() != "GY":
        raise InputError(f"{what} must be a dose in Gy (units 'GY'), got units {image.units or 'none'!r}")
    if not np.isfinite(image.array).all():
        raise InputError(f"{what} holds NaN or infinite voxels; check the dose calculation that wrote it")
    return image


def to_common_grid(predicted: Image, delivered: Image, *, transform: ArrayLike | None = None
                   ) -> tuple[Image, NDArray[np.bool_]]:
    """The predicted dose on the delivered dose's grid, and where it had no data.

    Trilinear interpolation of ``predicted`` in its own voxels at the world position of each
    delivered voxel (through ``transform``; module documentation). Not dose conserving.

    Parameters
    ----------
    predicted, delivered : Image, Gy
        The planned (MAA) and the post-treatment dose.
    transform : array_like (4, 4), optional
        Rigid matrix taking planning-frame points to post-treatment-frame points (mm, LPS).

    Returns
    -------
    on_grid : Image
        The predicted dose (Gy, float32) on the delivered grid, with the delivered dose's
        geometry and the predicted dose's metadata.
    outside : ndarray of bool, [z, y, x]
        The delivered grid's voxels outside the predicted map's field of view (their predicted
        dose is 0).

    Raises
    ------
    InputError
        A map that is not a finite dose in Gy.
    GeometryError
        A transform that is not rigid.

    Example
    -------
    >>> import numpy as np
    >>> plan = Image(np.arange(4.0).reshape(1, 1, 4), (2.0, 2.0, 2.0), units="GY")   # x = 0, 2, 4, 6 mm
    >>> post = Image(np.zeros((1, 1, 4)), (2.0, 2.0, 2.0), (1.0, 0.0, 0.0), units="GY")  # x = 1, 3, 5, 7 mm
    >>> on_grid, outside = to_common_grid(plan, post)
    >>> on_grid.array.ravel().tolist(), outside.ravel().tolist()
    ([0.5, 1.5, 2.5, 3.0], [False, False, False, False])
    """
    _check_dose(predicted, "the predicted dose")
    _check_dose(delivered, "the delivered dose")
    m = None if transform is None else check_rigid(transform)
    c_mat, c_vec, _ = _grid_to_index(predicted, delivered, m)
    values = np.asarray(predicted.array, np.float64)
    nz, ny, nx = delivered.shape
    jj, ii = np.meshgrid(np.arange(ny, dtype=float), np.arange(nx, dtype=float), indexing="ij")
    plane = np.stack([ii, jj, np.zeros_like(ii)], -1) @ c_mat.T + c_vec  # (y, x, 3) at k = 0
    out = np.empty(delivered.shape, np.float32)
    outside = np.empty(delivered.shape, bool)
    for k in range(nz):  # one plane at a time: memory of a few planes of coordinates
        vals, inside = _sample(values, plane + k * c_mat[:, 2])
        out[k] = vals
        outside[k] = ~inside
    outside.setflags(write=False)
    return Image(out, delivered.spacing_mm, delivered.origin_mm, delivered.direction, "GY", predicted.meta), outside


# --------------------------------------------------------------------------- per VOI


@dataclass(frozen=True)
class VoiComparison:
    """One VOI's metrics in both maps and their differences.

    Attributes
    ----------
    name : str
    volume_ml : float
        The VOI's (partial-volume) volume on the common grid.
    outside_fraction : float
        Share (0-1) of the VOI's volume outside the predicted map's field of view.
    predicted, delivered : mapping metric -> value
        :meth:`voxeldose.DVH.metrics` without ``volume_ml``: ``mean_gy``, ``min_gy``,
        ``max_gy``, ``D{x}_gy``, ``V{g}_pct``.
    difference : mapping metric -> value
        delivered - predicted (Gy, or percentage points for ``V`` metrics).
    relative_difference : mapping metric -> value or None
        difference / predicted (None where the predicted value is 0).
    density_g_per_cm3 : float
        The density the VOI's doses refer to (a lung VOI's, when rescaled: :meth:`DVH.at_density`).
    """

    name: str
    volume_ml: float
    outside_fraction: float
    predicted: Mapping[str, float]
    delivered: Mapping[str, float]
    difference: Mapping[str, float]
    relative_difference: Mapping[str, float | None]
    density_g_per_cm3: float

    def to_dict(self) -> dict[str, Any]:
        return {"volume_ml": self.volume_ml, "density_g_per_cm3": self.density_g_per_cm3,
                "outside_fov_fraction": self.outside_fraction, "predicted": dict(self.predicted),
                "delivered": dict(self.delivered), "difference": dict(self.difference),
                "relative_difference": dict(self.relative_difference)}


def _voi_comparison(name: str, pred: DVH, deliv: DVH, outside_fraction: float) -> VoiComparison:
    p = pred.metrics()
    d = deliv.metrics()
    volume = p.pop("volume_ml")
    d.pop("volume_ml")
    diff = {k: d[k] - p[k] for k in p}
    rel = {k: (diff[k] / p[k] if p[k] != 0 else None) for k in p}
    return VoiComparison(name, volume, outside_fraction, p, d, diff, rel, deliv.density_g_per_cm3)


@dataclass(frozen=True)
class DvhOverlay:
    """Both maps' cumulative DVHs of each VOI sampled on one dose axis.

    Attributes
    ----------
    dose_gy : ndarray, shape (n,)
        Doses from 0 to the highest VOI maximum of both maps (Gy).
    predicted, delivered : mapping VOI -> ndarray, shape (n,)
        The volume fraction (0-1) of the VOI receiving at least each dose.
    """

    dose_gy: NDArray[np.float64]
    predicted: Mapping[str, NDArray[np.float64]]
    delivered: Mapping[str, NDArray[np.float64]]


def _overlay(pred: Mapping[str, DVH], deliv: Mapping[str, DVH], n_points: int) -> DvhOverlay:
    top = max([0.0] + [h.max_gy for h in pred.values()] + [h.max_gy for h in deliv.values()])
    axis = np.linspace(0.0, top if top > 0 else 1.0, n_points)

    def fractions(h: DVH) -> NDArray[np.float64]:
        return np.array([h.v(float(g)) for g in axis]) / 100.0

    return DvhOverlay(axis, {n: fractions(h) for n, h in pred.items()}, {n: fractions(h) for n, h in deliv.items()})


# --------------------------------------------------------------------------- isodose regions


@dataclass(frozen=True)
class IsodoseOverlap:
    """One isodose level of both maps: the regions' volumes and their overlap.

    Attributes
    ----------
    level_pct : float
        The level, in % of the maximum (``reference`` of :func:`isodose_overlap`).
    predicted_threshold_gy, delivered_threshold_gy : float
        The dose each map's region starts at (Gy): the level times that map's maximum (or the
        common reference's).
    predicted_ml, delivered_ml, overlap_ml : float
        Volumes (mL) of the region ``dose >= threshold`` of each map, and of their
        intersection, weighted by the region mask's fractions when one is given.
    dice : float or None
        ``2 overlap / (predicted + delivered)``; None when both regions are empty.
    """

    level_pct: float
    predicted_threshold_gy: float
    delivered_threshold_gy: float
    predicted_ml: float
    delivered_ml: float
    overlap_ml: float
    dice: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def isodose_overlap(predicted: Image, delivered: Image, *, levels_pct: Sequence[float] = DEFAULT_LEVELS_PCT,
                    reference: IsodoseReference = "own", region: "Image | ArrayLike | None" = None,
                    ) -> tuple[IsodoseOverlap, ...]:
    """Volumes and Dice coefficients of the isodose regions of two dose maps on one grid.

    At each level L (% of a maximum), the region of a map is its voxels with ``dose >= L/100 x
    maximum``; the Dice coefficient of the two regions A and B is ``2|A and B| / (|A| + |B|)``.

    Parameters
    ----------
    predicted, delivered : Image, Gy
        On one grid (e.g. :func:`to_common_grid`'s output and the delivered dose).
    levels_pct : sequence of float
        Levels in % of the maximum, each in (0, 100].
    reference : {"own", "delivered", "predicted"}
        Which maximum: ``"own"`` (default), each map's own maximum, relative isodoses that compare
        the shapes of the two distributions whatever their scales (the usual choice of MAA
        against Y-90 PET studies); ``"delivered"`` or ``"predicted"``, that map's maximum for both,
        so that both regions start at the same absolute doses.
    region : mask Image or array, optional
        A VOI (e.g. the liver) that the maxima are taken in and the regions are restricted to,
        voxels weighted by its fractions. A PET's maximum is one noisy voxel, often outside the
        liver (or in the lungs' noise): restricting to the liver makes the levels, and the
        regions, stable.

    Returns
    -------
    tuple of IsodoseOverlap, one per level, in the given order

    Raises
    ------
    InputError
        Maps not in Gy, a level outside (0, 100], an unknown reference, or a maximum that is not
        positive (an empty map: no isodose regions).
    GeometryError
        The maps are on different grids.
    VoiError
        A region that is not a mask on the maps' grid, or is empty.

    Example
    -------
    >>> import numpy as np
    >>> d = Image(np.arange(1.0, 11.0).reshape(1, 1, 10), (10.0, 10.0, 10.0), units="GY")  # 1-10 Gy, 1 mL voxels
    >>> half = d.with_array(d.array * 0.5)
    >>> [o.dice for o in isodose_overlap(half, d, levels_pct=[50])]          # own maxima: same shape
    [1.0]
    >>> o = isodose_overlap(half, d, levels_pct=[50], reference="delivered")[0]   # 5 Gy for both
    >>> o.predicted_ml, o.delivered_ml, round(o.dice, 4)
    (1.0, 6.0, 0.2857)
    """
    _check_dose(predicted, "the predicted dose")
    _check_dose(delivered, "the delivered dose")
    if not delivered.same_grid(predicted):
        raise GeometryError("isodose_overlap: the predicted and the delivered dose are on different grids; put the "
                            "predicted dose on the delivered dose's grid first (to_common_grid)")
    if reference not in ("own", "delivered", "predicted"):
        raise InputError(f"isodose reference must be 'own', 'delivered' or 'predicted', got {reference!r}")
    levels = [check_between(v, "isodose level (%)", 0.0, 100.0) for v in levels_pct]
    if any(v <= 0 for v in levels):
        raise InputError("isodose levels must be above 0 % of the maximum (0 % is the whole grid)")
    if region is None:
        weights: NDArray[np.floating] | None = None
        box: tuple[slice, ...] = tuple(slice(0, n) for n in delivered.shape)
    else:
        from ._checks import nonzero_box

        weights = mask_image(delivered, region, name="isodose region").array
        found = nonzero_box(weights > 0)
        if found is None:
            raise VoiError("isodose region is empty: its mask has no voxel > 0 on the dose grid")
        box = found
    p = np.asarray(predicted.array[box], np.float64)
    d = np.asarray(delivered.array[box], np.float64)
    w = None if weights is None else np.asarray(weights[box], np.float64)
    inside = None if w is None else w > 0
    p_max = float(p.max() if inside is None else p[inside].max())
    d_max = float(d.max() if inside is None else d[inside].max())
    if reference == "delivered":
        p_ref = d_ref = d_max
    elif reference == "predicted":
        p_ref = d_ref = p_max
    else:
        p_ref, d_ref = p_max, d_max
    for what, top in (("predicted", p_ref), ("delivered", d_ref)):
        if not top > 0:
            raise InputError(f"isodose_overlap: the {what} dose's maximum{' in the region' if w is not None else ''} "
                             f"is {top:g} Gy; isodose levels need a positive maximum")
    voxel_ml = delivered.voxel_volume_ml
    out = []
    for level in levels:
        tp, td = level / 100.0 * p_ref, level / 100.0 * d_ref
        a, b = p >= tp, d >= td
        if w is None:
            va, vb, vab = float(a.sum()), float(b.sum()), float((a & b).sum())
        else:
            va, vb, vab = float(w[a].sum()), float(w[b].sum()), float(w[a & b].sum())
        dice = 2.0 * vab / (va + vb) if va + vb > 0 else None
        out.append(IsodoseOverlap(level, tp, td, va * voxel_ml, vb * voxel_ml, vab * voxel_ml, dice))
    return tuple(out)


# --------------------------------------------------------------------------- gamma


@dataclass(frozen=True)
class GammaResult:
    """The global 3-D gamma index of the predicted dose against the delivered dose.

    Attributes
    ----------
    dose_pct, dta_mm, cutoff_pct : float
        Dose criterion (% of ``normalisation_gy``), distance to agreement (mm), lower dose
        cutoff (% of ``normalisation_gy``: reference voxels below it are not evaluated).
    normalisation_gy : float
        The reference (delivered) maximum the percentages refer to.
    search_radius_mm : float
        How far from each point the evaluated dose was searched; gamma values are capped at
        ``search_radius_mm / dta_mm``.
    step_mm : float
        The distance between the search shells (and about the spacing of points on each).
    pass_rate_pct : float
        Percent of the evaluated voxels with gamma <= 1.
    n_evaluated : int
        Reference voxels at or above the cutoff.
    voi_pass_rate_pct : mapping VOI -> float or None
        The pass rate among the evaluated voxels of each VOI (weighted by its fractions; None
        where none of its voxels was evaluated).
    gamma : Image
        Gamma on the common grid (units ""), NaN where not evaluated.
    """

    dose_pct: float
    dta_mm: float
    cutoff_pct: float
    normalisation_gy: float
    search_radius_mm: float
    step_mm: float
    pass_rate_pct: float
    n_evaluated: int
    voi_pass_rate_pct: Mapping[str, float | None]
    gamma: Image = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"dose_pct": self.dose_pct, "dta_mm": self.dta_mm, "cutoff_pct": self.cutoff_pct,
                "normalisation_gy": self.normalisation_gy, "search_radius_mm": self.search_radius_mm,
                "step_mm": self.step_mm, "max_gamma": self.search_radius_mm / self.dta_mm,
                "pass_rate_pct": self.pass_rate_pct, "n_evaluated": self.n_evaluated,
                "voi_pass_rate_pct": dict(self.voi_pass_rate_pct),
                "reference": "delivered", "evaluated": "predicted", "kind": "global"}


def _shell(k: int) -> NDArray[np.float64]:
    """Unit directions of search shell ``k`` (radius k steps): a Fibonacci lattice of about
    4 pi k^2 points (one per step^2 of the sphere's area) plus the six axis directions."""
    if k == 0:
        return np.zeros((1, 3))
    n = max(6, int(math.ceil(4.0 * math.pi * k * k)))
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = math.pi * (3.0 - math.sqrt(5.0)) * i
    rho = np.sqrt(1.0 - z * z)
    lattice = np.stack([rho * np.cos(phi), rho * np.sin(phi), z], -1)
    return np.concatenate([np.vstack([np.eye(3), -np.eye(3)]), lattice])


#: Samples of the evaluated dose per chunk of the gamma search (memory: ~100 MB of coordinates).
_GAMMA_CHUNK = 2_000_000


def gamma_index(reference: Image, evaluated: Image, *, dose_pct: float, dta_mm: float,
                cutoff_pct: float = DEFAULT_GAMMA_CUTOFF_PCT, search_radius_mm: float | None = None,
                step_fraction: int = 10, transform: ArrayLike | None = None,
                normalisation_gy: float | None = None, vois: Mapping[str, Image] | None = None) -> GammaResult:
    """Global 3-D gamma index of ``evaluated`` against ``reference`` (Low et al. 1998).

    For each reference voxel r at or above the cutoff, gamma(r) = min over points e of
    sqrt(|e - r|^2 / dta^2 + (D_e(e) - D_r(r))^2 / (dose_pct/100 x norm)^2), where D_e is the
    evaluated dose interpolated trilinearly in its own voxels (sub-voxel; through
    ``transform``, as :func:`to_common_grid`), 0 outside its field of view. The minimum is
    searched on spherical shells of radius 0, h, 2h, ... (h = dta / step_fraction), each holding
    about one point per h^2 of its area plus the six axis directions, out to the search radius,
    a point's search stopping once the shell radius alone gives a larger gamma than the one
    found (Wendling et al. 2007). Approximation: the minimum over those points, which is at most
    the continuous minimum plus the effect of a distance error of about h/2 (for h = dta/10,
    gamma is found within ~0.05 of the continuous value at gamma near 1).

    Parameters
    ----------
    reference : Image, Gy
        The dose gamma is computed on (the delivered dose); its grid is the output's.
    evaluated : Image, Gy
        The dose searched (the predicted dose on its own grid).
    dose_pct : float
        Dose criterion, % of ``normalisation_gy`` (e.g. 3, 5, 10).
    dta_mm : float
        Distance to agreement (mm).
    cutoff_pct : float
        Reference voxels below this % of ``normalisation_gy`` are not evaluated (NaN).
    search_radius_mm : float, optional
        Default 2 x ``dta_mm``: gamma values are capped at ``search_radius_mm / dta_mm`` (at
        least ``dta_mm``, so that the pass rate is exact).
    step_fraction : int
        h = ``dta_mm / step_fraction`` (default 10, the common choice).
    transform : array_like (4, 4), optional
        Rigid matrix taking ``evaluated``'s frame to ``reference``'s (module documentation).
    normalisation_gy : float, optional
        The dose the percentages refer to; default the reference's maximum.
    vois : mapping name -> mask Image on the reference's grid, optional
        Pass rates per VOI.

    Returns
    -------
    GammaResult

    Raises
    ------
    InputError
        Criteria that are not positive, a cutoff outside [0, 100), a search radius below the
        DTA, a step_fraction outside 1-50, maps not in Gy, or a reference without a positive dose.

    Example
    -------
    >>> import numpy as np
    >>> ref = Image(np.full((3, 3, 3), 10.0), (2.0, 2.0, 2.0), units="GY")
    >>> g = gamma_index(ref, ref.with_array(ref.array * 1.02), dose_pct=3, dta_mm=2)  # 2 % off, 3 % allowed
    >>> g.pass_rate_pct, round(float(np.nanmax(g.gamma.array)), 4)
    (100.0, 0.6667)
    """
    _check_dose(reference, "the reference (delivered) dose")
    _check_dose(evaluated, "the evaluated (predicted) dose")
    dd = check_positive(dose_pct, "gamma dose criterion", "% of the maximum")
    dta = check_positive(dta_mm, "gamma distance to agreement", "mm")
    cutoff = check_between(cutoff_pct, "gamma lower dose cutoff", 0.0, 100.0, "% of the maximum")
    if cutoff >= 100.0:
        raise InputError("gamma lower dose cutoff must be below 100 % of the maximum")
    radius = 2.0 * dta if search_radius_mm is None else check_positive(search_radius_mm, "gamma search radius", "mm")
    if radius < dta:
        raise InputError(f"gamma search radius {radius:g} mm is below the distance to agreement {dta:g} mm: points "
                         "could fail that pass; give a radius of at least the DTA (default 2 x DTA)")
    if isinstance(step_fraction, bool) or not isinstance(step_fraction, (int, np.integer)) or not 1 <= step_fraction <= 50:
        raise InputError(f"gamma step_fraction must be an integer from 1 to 50, got {step_fraction!r}")
    m = None if transform is None else check_rigid(transform)
    ref = np.asarray(reference.array, np.float64)
    norm = float(ref.max()) if normalisation_gy is None else check_positive(normalisation_gy, "gamma normalisation",
                                                                             "Gy")
    if not norm > 0:
        raise InputError("gamma: the reference dose has no positive voxel; there is nothing to normalise to")
    dose_tol = dd / 100.0 * norm
    h = dta / int(step_fraction)
    n_shells = int(math.floor(radius / h + 1e-9))
    cap = radius / dta

    points = np.argwhere(ref >= cutoff / 100.0 * norm)  # (N, [z, y, x])
    c_mat, c_vec, offset_map = _grid_to_index(evaluated, reference, m)
    base = points[:, ::-1].astype(np.float64) @ c_mat.T + c_vec  # evaluated index of each point, (N, 3)
    ref_values = ref[points[:, 0], points[:, 1], points[:, 2]]
    values = np.asarray(evaluated.array, np.float64)
    gamma = np.full(len(points), np.inf)
    active = np.arange(len(points))
    for k in range(n_shells + 1):
        r_term = (k * h / dta) ** 2
        active = active[gamma[active] ** 2 > r_term]  # the shell alone gives more: done
        if active.size == 0:
            break
        offsets = (_shell(k) * (k * h)) @ offset_map.T  # index offsets of the shell's points, (S, 3)
        per = max(1, _GAMMA_CHUNK // len(offsets))
        for start in range(0, active.size, per):
            idx = active[start:start + per]
            sampled, _ = _sample(values, base[idx, None, :] + offsets[None, :, :])
            diff = np.min(np.abs(sampled - ref_values[idx, None]), axis=1) / dose_tol
            gamma[idx] = np.minimum(gamma[idx], np.sqrt(diff * diff + r_term))
    gamma = np.minimum(gamma, cap)
    full = np.full(reference.shape, np.nan, np.float32)
    full[points[:, 0], points[:, 1], points[:, 2]] = gamma
    passed = np.isfinite(full) & (full <= 1.0)
    evaluated_mask = np.isfinite(full)
    rate = 100.0 * float(passed.sum()) / len(points) if len(points) else float("nan")
    per_voi: dict[str, float | None] = {}
    for name, voi in (vois or {}).items():
        w = mask_image(reference, voi, name=name).array
        total = float(w[evaluated_mask].sum())
        per_voi[name] = 100.0 * float(w[passed].sum()) / total if total > 0 else None
    return GammaResult(dd, dta, cutoff, norm, radius, h, rate, int(len(points)), per_voi,
                       reference.with_array(full, units=""))


# --------------------------------------------------------------------------- the comparison


@dataclass(frozen=True)
class Comparison:
    """Predicted against delivered dose: what :func:`compare_doses` found. Immutable.

    Attributes
    ----------
    predicted : Image
        The predicted dose on the common grid (Gy; :func:`to_common_grid`).
    delivered : Image
        The delivered dose (Gy): its grid is the common grid.
    difference : Image
        delivered - predicted (Gy) on the common grid (outside the predicted map's field of
        view: the delivered dose).
    outside_fov : ndarray of bool [z, y, x]
        Common-grid voxels outside the predicted map's field of view.
    vois : mapping name -> VoiComparison
    dvh_overlay : DvhOverlay
    isodose : tuple of IsodoseOverlap
    isodose_reference : {"own", "delivered", "predicted"}
    isodose_region : str or None
        The VOI the isodose maxima and regions were restricted to.
    gamma : GammaResult or None
    transform : ndarray (4, 4) or None
        The rigid planning-to-post-treatment matrix used.
    caveats : tuple of str
    summary : mapping
        JSON-able figures: the field-of-view shares and the dose integrals on both grids.
    provenance : mapping
        JSON-able: version, conventions, the options, and what the caller added (inputs).
    """

    predicted: Image
    delivered: Image
    difference: Image
    outside_fov: NDArray[np.bool_] = field(repr=False)
    vois: Mapping[str, VoiComparison] = field(default_factory=dict)
    dvh_overlay: DvhOverlay | None = field(default=None, repr=False)
    isodose: tuple[IsodoseOverlap, ...] = ()
    isodose_reference: str = "own"
    isodose_region: str | None = None
    gamma: GammaResult | None = None
    transform: NDArray[np.float64] | None = None
    caveats: tuple[str, ...] = ()
    summary: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the maps, JSON-able (``comparison.json``)."""
        return {
            "vois": {n: v.to_dict() for n, v in self.vois.items()},
            "isodose": {"reference": self.isodose_reference, "region": self.isodose_region,
                        "levels": [o.to_dict() for o in self.isodose]},
            "gamma": None if self.gamma is None else self.gamma.to_dict(),
            "field_of_view": dict(self.summary.get("field_of_view", {})),
            "dose_integral_gy_ml": dict(self.summary.get("dose_integral_gy_ml", {})),
            "transform": None if self.transform is None else self.transform.tolist(),
            "caveats": list(self.caveats),
            "provenance": dict(self.provenance),
        }


def _check_levels(levels_pct: Sequence[float]) -> tuple[float, ...]:
    try:
        values = tuple(levels_pct)
    except TypeError:
        raise InputError(f"isodose levels must be a sequence of percentages, got {levels_pct!r}") from None
    if not values:
        raise InputError("isodose levels: give at least one level (% of the maximum)")
    return values


def compare_doses(predicted: Image, delivered: Image, vois: Mapping[str, "Image | ArrayLike"], *,
                  transform: ArrayLike | None = None, levels: Sequence[float] = DEFAULT_LEVELS_PCT,
                  isodose_reference: IsodoseReference = "own", isodose_region: str | None = None,
                  gamma: Sequence[float] | None = None,
                  predicted_voi_densities_g_per_cm3: Mapping[str, float] | None = None,
                  delivered_voi_densities_g_per_cm3: Mapping[str, float] | None = None,
                  provenance: Mapping[str, Any] | None = None) -> Comparison:
    """Compare a predicted (MAA) dose with the delivered (post-treatment) dose.

    The predicted dose is put on the delivered dose's grid (:func:`to_common_grid`); then, per
    VOI, both maps' DVH metrics and their differences (delivered - predicted) and the DVHs on
    one dose axis; the dose-difference map; the isodose regions' volumes and Dice coefficients
    (:func:`isodose_overlap`); and, when asked, the gamma pass rate (:func:`gamma_index`, the
    delivered dose as the reference, the predicted dose searched in its own grid). The module
    documentation states the conventions (transform direction, interpolation, maxima).

    Parameters
    ----------
    predicted : Image, Gy
        The planned dose (e.g. ``voxeldose plan``'s ``dose.nii.gz``), on its own grid.
    delivered : Image, Gy
        The post-treatment dose (``voxeldose run``'s): its grid is the common grid.
    vois : mapping name -> mask Image (or array) on the delivered dose's grid
        E.g. ``load_vois(path, delivered)``. May be empty.
    transform : array_like (4, 4), optional
        Rigid matrix taking planning-frame points to post-treatment-frame points (mm, LPS).
    levels : sequence of float
        Isodose levels, % of the maximum (default 10, 20, ..., 90).
    isodose_reference : {"own", "delivered", "predicted"}
        Which maximum the levels refer to (default each map's own: :func:`isodose_overlap`).
    isodose_region : str, optional
        A VOI name: the isodose maxima and regions are taken within it (e.g. "liver").
    gamma : (dose %, DTA mm) or (dose %, DTA mm, cutoff %), optional
        Compute the global gamma index with these criteria (cutoff default 10 % of the
        delivered maximum).
    predicted_voi_densities_g_per_cm3, delivered_voi_densities_g_per_cm3 : mapping, optional
        VOI name -> density whose DVH is reported at that density (:meth:`DVH.at_density`),
        e.g. a lung at 0.30 g/cm3 for a dose map computed in soft tissue, as each map's own
        run reported it (its ``provenance.dose.voi_densities_g_per_cm3``).
    provenance : mapping, optional
        Added to the comparison's provenance (e.g. the input folders and case ids).

    Returns
    -------
    Comparison

    Raises
    ------
    InputError, GeometryError, VoiError
        Maps that are not finite doses in Gy, a transform that is not rigid, VOIs not on the
        delivered grid (or empty), an unknown ``isodose_region``, bad levels or gamma criteria.

    Example
    -------
    >>> import numpy as np
    >>> dose = Image(np.fromfunction(lambda z, y, x: 100.0 - 5 * (x - 4) ** 2, (3, 4, 9)), (4.0, 4.0, 4.0),
    ...              units="GY")
    >>> c = compare_doses(dose.with_array(dose.array * 0.9), dose, {"all": np.ones((3, 4, 9))}, gamma=(5, 4))
    >>> round(c.vois["all"].relative_difference["mean_gy"], 4), c.isodose[4].dice, c.gamma.pass_rate_pct < 100
    (0.1111, 1.0, True)
    """
    _check_dose(predicted, "the predicted dose")
    _check_dose(delivered, "the delivered dose")
    m = None if transform is None else check_rigid(transform)
    level_values = _check_levels(levels)
    masks = {name: mask_image(delivered, voi, name=name) for name, voi in vois.items()}
    if isodose_region is not None and isodose_region not in masks:
        known = ", ".join(repr(n) for n in masks) or "none"
        raise VoiError(f"isodose region {isodose_region!r} is not one of the VOIs (known: {known})")
    gamma_args: tuple[float, ...] | None = None
    if gamma is not None:
        gamma_args = tuple(gamma)
        if len(gamma_args) not in (2, 3):
            raise InputError(f"gamma must be (dose %, DTA mm) or (dose %, DTA mm, cutoff %), got {gamma!r}")

    on_grid, outside = to_common_grid(predicted, delivered, transform=m)
    difference = delivered.with_array((np.asarray(delivered.array, np.float64)
                                       - np.asarray(on_grid.array, np.float64)).astype(np.float32))
    caveats: list[str] = []

    # what lies outside the predicted map's field of view
    d_arr = np.asarray(delivered.array, np.float64)
    positive = np.clip(d_arr, 0.0, None)
    total_dose = float(positive.sum())
    dose_outside = float(positive[outside].sum()) / total_dose if total_dose > 0 else 0.0
    fov: dict[str, Any] = {"voxels_outside": int(outside.sum()), "fraction_of_grid": float(outside.mean()),
                           "fraction_of_delivered_dose": dose_outside, "fraction_of_voi_volume": {}}
    if dose_outside > OUTSIDE_CAVEAT_FRACTION:
        caveats.append(f"{dose_outside:.1%} of the delivered dose (its sum over the voxels) lies outside the predicted "
                       "dose map's field of view, where the predicted dose is taken as 0: the two scans cover different "
                       "regions, or the transform is wrong")
    densities_p = dict(predicted_voi_densities_g_per_cm3 or {})
    densities_d = dict(delivered_voi_densities_g_per_cm3 or {})
    for what, densities in (("predicted", densities_p), ("delivered", densities_d)):
        unknown = sorted(set(densities) - set(masks))
        if unknown:
            raise VoiError(f"{what} VOI densities name VOIs that are not given: {', '.join(map(repr, unknown))}")
    pred_dvhs: dict[str, DVH] = {}
    deliv_dvhs: dict[str, DVH] = {}
    comparisons: dict[str, VoiComparison] = {}
    for name, mask in masks.items():
        hp = dvh(on_grid, mask, name=name)
        hd = dvh(delivered, mask, name=name)
        if name in densities_p:
            hp = hp.at_density(densities_p[name])
        if name in densities_d:
            hd = hd.at_density(densities_d[name])
        w = np.asarray(mask.array, np.float64)
        share = float(w[outside].sum()) / float(w.sum())
        fov["fraction_of_voi_volume"][name] = share
        if share > OUTSIDE_CAVEAT_FRACTION:
            caveats.append(f"VOI {name!r}: {share:.1%} of its volume lies outside the predicted dose map's field of view "
                           "(predicted dose 0 there): its predicted metrics are too low")
        if densities_p.get(name, hp.density_g_per_cm3) != densities_d.get(name, hd.density_g_per_cm3):
            caveats.append(f"VOI {name!r}: its predicted doses refer to {hp.density_g_per_cm3:g} g/cm3 and its delivered "
                           f"doses to {hd.density_g_per_cm3:g} g/cm3 (the two runs treated its tissue differently)")
        pred_dvhs[name], deliv_dvhs[name] = hp, hd
        comparisons[name] = _voi_comparison(name, hp, hd, share)
    overlay = _overlay(pred_dvhs, deliv_dvhs, DVH_OVERLAY_POINTS)

    region = masks[isodose_region] if isodose_region is not None else None
    isodose = isodose_overlap(on_grid, delivered, levels_pct=level_values, reference=isodose_reference, region=region)

    gamma_result = None
    if gamma_args is not None:
        cutoff = gamma_args[2] if len(gamma_args) == 3 else DEFAULT_GAMMA_CUTOFF_PCT
        gamma_result = gamma_index(delivered, predicted, dose_pct=gamma_args[0], dta_mm=gamma_args[1],
                                   cutoff_pct=cutoff, transform=m, vois=masks)

    integral = {"predicted_own_grid": float(np.asarray(predicted.array, np.float64).sum()) * predicted.voxel_volume_ml,
                "predicted_common_grid": float(np.asarray(on_grid.array, np.float64).sum()) * delivered.voxel_volume_ml,
                "delivered": float(d_arr.sum()) * delivered.voxel_volume_ml}
    record = {
        "voxeldose_version": __version__,
        "conventions": dict(_CONVENTIONS),
        "common_grid": {"shape_zyx": list(delivered.shape), "spacing_mm": list(delivered.spacing_mm),
                        "origin_mm": list(delivered.origin_mm), "direction": list(delivered.direction)},
        "predicted_grid": {"shape_zyx": list(predicted.shape), "spacing_mm": list(predicted.spacing_mm),
                           "origin_mm": list(predicted.origin_mm), "direction": list(predicted.direction)},
        "options": {"levels_pct": list(level_values), "isodose_reference": isodose_reference,
                    "isodose_region": isodose_region, "gamma": None if gamma_args is None else list(gamma_args),
                    "predicted_voi_densities_g_per_cm3": densities_p, "delivered_voi_densities_g_per_cm3": densities_d},
        **dict(provenance or {}),
    }
    return Comparison(on_grid, delivered, difference, outside, comparisons, overlay, isodose, isodose_reference,
                      isodose_region, gamma_result, m, tuple(caveats),
                      {"field_of_view": fov, "dose_integral_gy_ml": integral}, record)


# --------------------------------------------------------------------------- reading and writing


def run_compare(
    predicted: "str | os.PathLike[str]",
    delivered: "str | os.PathLike[str]",
    vois: Sequence["str | os.PathLike[str]"],
    out: "str | os.PathLike[str]",
    *,
    voi_roles: Mapping[str, str] | None = None,
    transform: "str | os.PathLike[str] | None" = None,
    registered: bool = False,
    accept_different_cases: bool = False,
    isodose_reference: IsodoseReference = "own",
    isodose_region: str | None = None,
    gamma: Sequence[float] | None = None,
    force: bool = False,
) -> Comparison:
    """Read a predicted and a delivered output folder, compare them (:func:`compare_doses`) and
    write the comparison into ``out`` (:func:`voxeldose.io.write_comparison`: atomically, a
    previous result kept unless ``force``).

    Parameters
    ----------
    predicted, delivered : path
        Output folders of ``voxeldose plan`` (or run) and ``voxeldose run``: their ``dose.nii.gz``
        and ``metrics.json`` (:func:`voxeldose.io.load_dose_result`).
    vois : sequence of paths
        RTSTRUCT, SEG or label-map files, loaded onto the delivered dose's grid (at least one).
    out : path
        Output folder.
    voi_roles : mapping name -> role, optional
        Over the roles both folders' ``metrics.json`` record (which must agree on the VOIs given);
        with a whole liver and tumours, the normal liver (and the perfused normal liver) is
        derived as :func:`voxeldose.compute_case` derives it.
    transform : path, optional
        Rigid registration, planning frame to post-treatment frame
        (:func:`voxeldose.io.load_transform`); without one, two different frames of reference
        are refused unless ``registered``.
    registered : bool
        Accept VOIs, or a predicted dose, from another frame of reference (the user states they
        are registered).
    accept_different_cases : bool
        Compare folders whose ``metrics.json`` name different case ids (refused otherwise).
    isodose_reference, isodose_region, gamma
        As in :func:`compare_doses`.
    force : bool
        Replace an existing comparison in ``out``.

    Raises
    ------
    VoxelDoseError
        Bad input of any kind; nothing is written to ``out`` then.
    """
    import dataclasses
    import warnings
    from pathlib import Path

    from .io import load_dose_result, load_transform, write_comparison
    from .io.comparison import COMPARISON_FILES
    from .io.results import reserve_out
    from .pipeline import _load_voi_files

    if not vois:
        raise InputError("compare: give at least one VOI file (--voi: RTSTRUCT, SEG or label map), e.g. the liver "
                         "and tumours")
    with reserve_out(out, force, known=COMPARISON_FILES):
        pred, p_metrics = load_dose_result(predicted, what="PREDICTED")
        deliv, d_metrics = load_dose_result(delivered, what="DELIVERED")
        p_case, d_case = str(p_metrics["case_id"]), str(d_metrics["case_id"])
        if p_case != d_case and not accept_different_cases:
            raise InputError(f"PREDICTED is case {p_case!r} and DELIVERED case {d_case!r}: the doses of two cases "
                             "would be compared; check the folders, or pass --accept-different-cases")
        matrix = load_transform(transform) if transform else None
        p_frame, d_frame = pred.meta.frame_of_reference_uid, deliv.meta.frame_of_reference_uid
        if matrix is None and p_frame and d_frame and p_frame != d_frame and not registered:
            raise GeometryError(
                f"PREDICTED's frame of reference ({p_frame}) differs from DELIVERED's ({d_frame}): two patient "
                "coordinate systems; give the registration with --transform, or pass --registered if both doses are "
                "in one frame already")
        masks = _load_voi_files(vois, deliv, registered)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            masks, roles = _compare_roles(masks, p_metrics, d_metrics, dict(voi_roles or {}))
        role_caveats = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        if isodose_region is not None and isodose_region not in masks:
            raise VoiError(f"--isodose-voi {isodose_region!r} is not one of the VOIs ({', '.join(masks)})")
        inputs: dict[str, Any] = {
            role: {"folder": str(Path(folder).resolve()), "case_id": m["case_id"],
                   "method": ((m.get("provenance") or {}).get("dose") or {}).get("method")}
            for role, folder, m in (("predicted", predicted, p_metrics), ("delivered", delivered, d_metrics))}
        inputs["vois"] = [str(v) for v in vois]
        inputs["roles"] = roles
        inputs["transform"] = str(transform) if transform else None
        comparison = compare_doses(
            pred, deliv, masks, transform=matrix, isodose_reference=isodose_reference, isodose_region=isodose_region,
            gamma=gamma, predicted_voi_densities_g_per_cm3=_recorded_densities(p_metrics, masks),
            delivered_voi_densities_g_per_cm3=_recorded_densities(d_metrics, masks), provenance={"inputs": inputs})
        if role_caveats:
            comparison = dataclasses.replace(comparison, caveats=tuple(role_caveats) + comparison.caveats)
        write_comparison(comparison, out, force=force)
    return comparison


def _compare_roles(vois: dict[str, Image], p_metrics: Mapping[str, Any], d_metrics: Mapping[str, Any],
                   given: Mapping[str, str]) -> tuple[dict[str, Image], dict[str, str]]:
    """The VOIs with roles (the folders' recorded roles of the VOIs given, then ``given``) and
    the VOIs run derives from them (normal liver, tumours, perfused normal liver)."""
    from .case import Case
    from .pipeline import _resolve_vois

    def recorded(metrics: Mapping[str, Any]) -> dict[str, str]:
        found = metrics.get("roles")
        return {str(k): str(v) for k, v in found.items() if k in vois} if isinstance(found, dict) else {}

    p_roles, d_roles = recorded(p_metrics), recorded(d_metrics)
    clash = {n: (p_roles[n], d_roles[n]) for n in p_roles.keys() & d_roles.keys() if p_roles[n] != d_roles[n]}
    clash = {n: v for n, v in clash.items() if n not in given}
    if clash:
        listed = "; ".join(f"{n!r}: {a} in PREDICTED, {b} in DELIVERED" for n, (a, b) in sorted(clash.items()))
        raise InputError(f"the two folders give VOIs different roles ({listed}); say which with --voi-role NAME=ROLE")
    roles = {**p_roles, **d_roles, **given}
    roles = {n: r for n, r in roles.items() if r != "derived"}
    if not roles:
        return vois, {}
    return _resolve_vois(vois, Case("compare", voi_roles=roles))


def _recorded_densities(metrics: Mapping[str, Any], vois: Mapping[str, Image]) -> dict[str, float]:
    """The VOI densities a run reported its doses at (lung VOIs without a CT), for the VOIs given."""
    provenance = metrics.get("provenance")
    dose = provenance.get("dose") if isinstance(provenance, dict) else None
    found = dose.get("voi_densities_g_per_cm3") if isinstance(dose, dict) else None
    if not isinstance(found, dict):
        return {}
    return {str(k): float(v) for k, v in found.items()
            if k in vois and isinstance(v, (int, float)) and not isinstance(v, bool)}
