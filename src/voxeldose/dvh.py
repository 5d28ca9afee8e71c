"""Dose-volume histograms and dose metrics of a VOI, from the voxel doses themselves.

A VOI is a boolean or fractional (0-1, partial-volume) mask on the dose grid. Each voxel
counts with its volume times its mask fraction. No binning: the metrics are computed from
the sorted voxel doses.

Convention (stated, because every DVH tool chooses one)
--------------------------------------------------------
Sort the distinct voxel doses ``u_0 < u_1 < ... < u_n`` with their summed volumes ``W_k``.
The cumulative volume fraction at ``u_k`` is taken at the middle of that dose's own volume,

    V(u_k) = (sum_{j>k} W_j + W_k / 2) / W,

and is linear between consecutive doses. This is what a dose that varies continuously
inside the VOI gives when each voxel holds the doses half-way to its neighbours in the
sorted order; it makes the D and V metrics exact for a linear dose gradient (the
continuous answer), and it does not depend on how voxels are ordered in space. At the ends:
every voxel receives at least the minimum, so ``v(g) = 100`` for ``g <= min_gy`` and
``v(g) = 0`` for ``g > max_gy``; ``d(x)`` is clamped to ``[min_gy, max_gy]``. A uniform dose
``D`` gives ``d(x) = D`` for every x, ``v(g) = 100`` for ``g <= D`` and 0 above.

References
----------
ICRU Report 83 (2010), section 3.3: the near-minimum and near-maximum doses D98 and D2 and
the cumulative DVH. doi:10.1093/jicru/ndq002
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._checks import (
    MASK_TOLERANCE,
    check_between,
    check_mask,
    check_number,
    check_positive,
    check_spacing,
    check_volume,
    nonzero_box,
)
from .constants import SOFT_TISSUE_DENSITY_G_PER_CM3
from .errors import InputError, VoiError
from .image import Image, mask_image

__all__ = ["DVH", "dvh", "dvh_array", "voi_metrics", "DEFAULT_D_PERCENTS", "DEFAULT_V_GY", "MASK_TOLERANCE"]

#: Most points of a sampled DVH curve (:meth:`DVH.curve`): a million, far beyond any plot or
#: table (the CSV has 501); more is a mistake that would allocate without bound.
MAX_CURVE_POINTS = 1_000_000

#: D metrics reported by default: the minimum dose (Gy) to the hottest x % of the VOI.
DEFAULT_D_PERCENTS: tuple[float, ...] = (2, 5, 50, 70, 90, 95, 98)

#: V metrics reported by default: percent of the VOI receiving at least this dose (Gy).
#: 20/30/40/70 Gy: normal-liver and lung thresholds; 100/120/150/205 Gy: tumour thresholds
#: (../shared/CLINICAL.md).
DEFAULT_V_GY: tuple[float, ...] = (20, 30, 40, 70, 100, 120, 150, 205)



def _label(value: float) -> str:
    return f"{value:g}".replace(".", "p")


@dataclass(frozen=True)
class DVH:
    """Cumulative dose-volume histogram of one VOI.

    Build it with :func:`dvh`. Doses in Gy, volumes in mL, volume fractions in percent
    unless a name says otherwise.

    Attributes
    ----------
    name : str or None
        VOI name, used in messages and reports.
    volume_ml : float
        Partial-volume weighted volume of the VOI (mL).
    mean_gy, min_gy, max_gy : float
        Volume-weighted mean dose, and the lowest and highest dose of a voxel in the VOI (Gy).
    density_g_per_cm3 : float
        The density the doses refer to (the VOI's mass is its volume times it): soft tissue,
        1.04 g/cm3, the medium of the engine's dose, unless :meth:`at_density` changed it.
    """

    name: str | None
    volume_ml: float
    mean_gy: float
    min_gy: float
    max_gy: float
    _dose_nodes_gy: NDArray[np.float64] = field(repr=False, compare=False)
    _fraction_at_nodes: NDArray[np.float64] = field(repr=False, compare=False)
    density_g_per_cm3: float = SOFT_TISSUE_DENSITY_G_PER_CM3
    _weight_at_nodes: NDArray[np.float64] | None = field(default=None, repr=False, compare=False)

    def at_density(self, density_g_per_cm3: float) -> "DVH":
        """The DVH of the same energy deposition in a VOI of another density (e.g. lung).

        The engine's dose is the energy absorbed per mass of soft tissue. In a VOI whose tissue
        has density ``rho`` (lung: mostly air), the same energy over the VOI's real mass gives
        every dose times ``self.density_g_per_cm3 / rho``: the "soft-tissue kernel with density
        correction" of the literature [Mikell2015]_. The volume fractions do not change. The
        energy pattern is still the soft-tissue kernel's (electrons travel further in lung):
        Mikell et al. found this correction 20 % high on the mean lung dose against Monte Carlo
        in 17 patients, where the plain soft-tissue dose was 60 % low.

        References
        ----------
        .. [Mikell2015] Mikell JK, Mahvash A, Siman W, Mourtada F, Kappadath SC. Comparing voxel-based
           absorbed dosimetry methods in tumors, liver, lung, and at the liver-lung interface for
           90Y microsphere selective internal radiation therapy. EJNMMI Phys 2:16, 2015.
           doi:10.1186/s40658-015-0119-y
        """
        rho = check_positive(density_g_per_cm3, "density_g_per_cm3", "g/cm3")
        k = self.density_g_per_cm3 / rho
        return DVH(name=self.name, volume_ml=self.volume_ml, mean_gy=self.mean_gy * k, min_gy=self.min_gy * k,
                   max_gy=self.max_gy * k, _dose_nodes_gy=self._dose_nodes_gy * k,
                   _fraction_at_nodes=self._fraction_at_nodes, density_g_per_cm3=rho,
                   _weight_at_nodes=self._weight_at_nodes)

    def dose_distribution(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The distinct voxel doses of the VOI (Gy, ascending) and the fraction of its volume at each.

        The fractions are the partial-volume weights of the voxels (voxel volume times mask
        fraction) at each dose over the VOI's volume; they sum to 1. The doses are those of the
        DVH (a lung VOI's at lung density after :meth:`at_density`). A volume-weighted function
        of the voxel doses (a mean BED, an equivalent uniform dose) is a sum over these pairs.

        Returns
        -------
        dose_gy, volume_fraction : ndarray, float64, shape (n,)

        Raises
        ------
        InputError
            If the DVH was not built by :func:`dvh` or :func:`dvh_array` (it holds no weights).

        Example
        -------
        >>> import numpy as np
        >>> h = dvh_array(np.array([[[10.0, 10.0, 40.0, 70.0]]]), np.ones((1, 1, 4), bool),
        ...               spacing_xyz_mm=(2.0, 2.0, 2.0))
        >>> d, v = h.dose_distribution()
        >>> d.tolist(), v.tolist()
        ([10.0, 40.0, 70.0], [0.5, 0.25, 0.25])
        """
        if self._weight_at_nodes is None:
            raise InputError(f"DVH {self.name!r} holds no voxel weights: build it with voxeldose.dvh(dose, mask)")
        return self._dose_nodes_gy.copy(), self._weight_at_nodes.copy()

    def d(self, percent: float) -> float:
        """Minimum dose (Gy) received by the hottest ``percent`` % of the volume (D70: ``d(70)``).

        Parameters
        ----------
        percent : float
            0 to 100. ``d(0)`` is the maximum, ``d(100)`` the minimum voxel dose.

        Raises
        ------
        InputError
            If ``percent`` is outside [0, 100] or not a number.
        """
        p = check_between(percent, "percent", 0.0, 100.0)
        # fractions at the nodes decrease with dose: reverse both for np.interp
        return float(np.interp(p / 100.0, self._fraction_at_nodes[::-1], self._dose_nodes_gy[::-1]))

    def v(self, dose_gy: float) -> float:
        """Percent of the volume receiving at least ``dose_gy`` Gy (V100: ``v(100)``).

        Raises
        ------
        InputError
            If ``dose_gy`` is not a finite number.
        """
        g = check_number(dose_gy, "dose_gy", "Gy")
        return 100.0 * float(self._fraction(np.asarray([g]))[0])

    def volume_fraction(self, dose_gy: ArrayLike) -> NDArray[np.float64]:
        """The fraction (0-1) of the volume receiving at least each of ``dose_gy`` (Gy), as the
        curve of :meth:`curve` at those doses (e.g. for bands of DVHs on one dose axis)."""
        return self._fraction(np.asarray(dose_gy, dtype=np.float64).reshape(-1))

    def _fraction(self, dose_gy: NDArray[np.float64]) -> NDArray[np.float64]:
        nodes, frac = self._dose_nodes_gy, self._fraction_at_nodes
        out = np.interp(dose_gy, nodes, frac)
        out[dose_gy <= nodes[0]] = 1.0
        out[dose_gy > nodes[-1]] = 0.0
        return out

    def curve(self, n_points: int = 501) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Cumulative DVH sampled for plots.

        Parameters
        ----------
        n_points : int
            Number of doses, evenly spaced from 0 to ``max_gy`` (at least 2).

        Returns
        -------
        dose_gy, volume_fraction : ndarray, float64, shape (n_points,)
            Dose (Gy) and the fraction (0-1) of the volume receiving at least that dose.
        """
        if isinstance(n_points, (bool, np.bool_)) or not isinstance(n_points, (int, np.integer)) or not (
                2 <= n_points <= MAX_CURVE_POINTS):
            raise InputError(f"n_points must be an integer from 2 to {MAX_CURVE_POINTS:,}, got {n_points!r}")
        top = max(self.max_gy, 0.0)
        dose = np.linspace(0.0, top, int(n_points))
        return dose, self._fraction(dose)

    def mass_g(self, density_g_per_cm3: float | None = None) -> float:
        """Mass of the VOI (g) at a uniform density (default: the DVH's own density)."""
        if density_g_per_cm3 is None:
            return self.volume_ml * self.density_g_per_cm3
        return self.volume_ml * check_positive(density_g_per_cm3, "density_g_per_cm3", "g/cm3")

    def metrics(
        self,
        d_percents: Sequence[float] = DEFAULT_D_PERCENTS,
        v_gy: Sequence[float] = DEFAULT_V_GY,
    ) -> dict[str, float]:
        """Report metrics in a fixed order.

        Keys: ``volume_ml``, ``mean_gy``, ``min_gy``, ``max_gy``, then ``D{x}_gy`` for each x in
        ``d_percents`` and ``V{g}_pct`` for each g in ``v_gy`` (a decimal point becomes ``p``:
        ``D2p5_gy``).
        """
        out: dict[str, float] = {
            "volume_ml": self.volume_ml,
            "mean_gy": self.mean_gy,
            "min_gy": self.min_gy,
            "max_gy": self.max_gy,
        }
        for x in d_percents:
            out[f"D{_label(x)}_gy"] = self.d(x)
        for g in v_gy:
            out[f"V{_label(g)}_pct"] = self.v(g)
        return out



def dvh(dose: Image, mask: "Image | ArrayLike", *, name: str | None = None) -> DVH:
    """Cumulative DVH of one VOI of a dose image, weighted by the mask's partial volumes.

    Parameters
    ----------
    dose : Image
        Absorbed dose (``units="GY"``), e.g. from :func:`voxeldose.absorbed_dose`.
    mask : Image or array [z, y, x]
        The VOI on the dose's grid: a mask image (``units="MASK"``, e.g. from
        :func:`voxeldose.load_vois`), or a boolean or fractional (0-1) array of the dose's shape.
    name : str, optional
        VOI name for messages and reports.

    Returns
    -------
    DVH

    Raises
    ------
    InputError
        ``dose`` is not an Image in Gy (a bare array: use :func:`dvh_array`), or not finite.
    VoiError
        The mask is on another grid, has values outside [0, 1], or is empty.

    Example
    -------
    >>> import numpy as np
    >>> from voxeldose import Image
    >>> dose = Image(np.arange(10.0).reshape(1, 1, 10), (2.0, 2.0, 2.0), units="GY")  # 0 to 9 Gy
    >>> h = dvh(dose, np.ones((1, 1, 10), bool))
    >>> round(h.d(50), 6), round(h.v(4.5), 6), h.volume_ml
    (4.5, 50.0, 0.08)
    """
    if not isinstance(dose, Image):
        raise InputError(
            f"dvh takes the dose as a voxeldose Image (Gy, with its geometry), got {type(dose).__name__}; for a "
            "bare array use dvh_array(dose_gy, mask, spacing_xyz_mm=...)"
        )
    if dose.units.upper() != "GY":
        raise InputError(f"dvh needs a dose image in Gy (units 'GY'), got units {dose.units or 'none'!r}")
    label = name if name is not None else "(unnamed)"
    voi = mask_image(dose, mask, name=label)
    values, weights = _on_box(dose.array, voi.array, name, voi.nonzero_box())
    return _dvh(values, weights, dose.voxel_volume_ml, name)


def dvh_array(
    dose_gy: ArrayLike,
    mask: ArrayLike,
    *,
    spacing_xyz_mm: Sequence[float],
    name: str | None = None,
) -> DVH:
    """:func:`dvh` for bare arrays: the dose (Gy) and the mask [z, y, x] on one grid.

    Parameters
    ----------
    dose_gy : array [z, y, x]
        Absorbed dose (Gy).
    mask : array [z, y, x], bool or float in [0, 1]
        The VOI: True/1 inside, fractional values for partly covered voxels.
    spacing_xyz_mm : (x, y, z), keyword-only
        Voxel size (mm), in ITK/DICOM order (the reverse of the array's axes).
    name : str, optional
        VOI name for messages and reports.

    Example
    -------
    >>> import numpy as np
    >>> dose = np.arange(10.0).reshape(1, 1, 10)  # a linear gradient, 0 to 9 Gy
    >>> h = dvh_array(dose, np.ones_like(dose, bool), spacing_xyz_mm=(2.0, 2.0, 2.0))
    >>> round(h.d(50), 6), round(h.v(4.5), 6), h.volume_ml
    (4.5, 50.0, 0.08)
    """
    label = repr(name) if name is not None else "(unnamed)"
    dose = _as_volume(dose_gy)
    spacing = check_spacing(spacing_xyz_mm, name="spacing_xyz_mm")
    weights = check_mask(mask, dose.shape, what=f"VOI {label}", fix_shape="resample the VOI onto the dose grid first")
    values, weights = _on_box(dose, weights, name)
    return _dvh(values, weights, spacing[0] * spacing[1] * spacing[2] * 1e-3, name)


def _as_volume(dose_gy: ArrayLike) -> NDArray[np.floating]:
    """The dose as a 3-D float array, its type and shape checked (its values are checked on the
    VOI's bounding box, :func:`_on_box`)."""
    dose = np.asarray(dose_gy)
    if dose.ndim != 3 or dose.size == 0 or dose.dtype == bool or not (
            np.issubdtype(dose.dtype, np.floating) or np.issubdtype(dose.dtype, np.integer)):
        check_volume(dose, name="dose_gy", warn_negative=False)  # raises, with its message
    return dose if dose.dtype in (np.float32, np.float64) else dose.astype(np.float64)


def _on_box(dose: NDArray[np.floating], weights: NDArray[np.floating], name: str | None,
            box: tuple[slice, ...] | None = None) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
    """The dose and the mask on the bounding box of the mask's voxels > 0 (contiguous copies),
    the dose checked there (finite; negative doses are kept: min_gy shows them). Only the VOI's
    voxels enter its DVH, in the same order as on the whole grid, so the DVH is the same; a
    1.5 L VOI on a 256 x 256 x 300 grid is then not a pass over the whole dose. ``box``: that box
    when known (a mask Image's :meth:`~voxeldose.Image.nonzero_box`; None: found here)."""
    if box is None:
        box = nonzero_box(weights > 0)
    if box is None:
        raise _empty(name, dose.shape)
    part = np.ascontiguousarray(dose[box])
    if not np.may_share_memory(part, dose):
        # our copy, read-only as an Image's arrays are: numba's validation loop is compiled once
        # for both (a writeable copy cost the first run after install another 0.3 s)
        part.setflags(write=False)
    try:
        checked = check_volume(part, name="dose_gy", warn_negative=False)
    except InputError:
        check_volume(dose, name="dose_gy", warn_negative=False)  # the message with whole-grid indices
        raise
    return checked, np.ascontiguousarray(weights[box])


def _empty(name: str | None, shape: tuple[int, ...]) -> VoiError:
    label = repr(name) if name is not None else "(unnamed)"
    return VoiError(f"VOI {label} is empty: its mask has no voxel > 0 on this {shape} grid; check "
                    "that the VOI and the dose image share the same frame of reference and extent")


def _dvh(dose: NDArray[np.floating], weights: NDArray[np.floating], voxel_ml: float, name: str | None) -> DVH:
    """The DVH of a checked dose and a checked mask of its shape."""
    inside = weights > 0
    if not inside.any():
        raise _empty(name, dose.shape)
    d = dose[inside].astype(np.float64, copy=False)
    w = weights[inside].astype(np.float64, copy=False)
    order = np.argsort(d, kind="stable")
    d = d[order]
    w = w[order]
    total = float(w.sum())

    # group equal doses (ties) so that the curve is a function of dose
    starts = np.flatnonzero(np.concatenate(([True], d[1:] != d[:-1])))
    nodes = d[starts]
    node_w = np.add.reduceat(w, starts)
    above = total - np.cumsum(node_w)  # weight of strictly hotter doses
    frac = (above + 0.5 * node_w) / total
    return DVH(
        name=name,
        volume_ml=total * voxel_ml,
        mean_gy=float(np.dot(d, w) / total),
        min_gy=float(nodes[0]),
        max_gy=float(nodes[-1]),
        _dose_nodes_gy=nodes,
        _fraction_at_nodes=frac,
        _weight_at_nodes=node_w / total,
    )


def voi_metrics(dvhs: Mapping[str, DVH]) -> dict[str, dict[str, float]]:
    """Per VOI: ``volume_ml``, ``mass_g``, ``density_g_per_cm3``, then :meth:`DVH.metrics`.

    The mass and the density are those the DVH's doses refer to (:attr:`DVH.density_g_per_cm3`:
    soft tissue, or e.g. lung after :meth:`DVH.at_density`).

    Returns
    -------
    dict
        ``{voi: {"volume_ml", "mass_g", "density_g_per_cm3", "mean_gy", "min_gy", "max_gy",
        "D.._gy" ..., "V.._pct" ...}}`` in the mapping's order.

    Example
    -------
    >>> import numpy as np
    >>> h = dvh_array(np.full((2, 2, 2), 50.0), np.ones((2, 2, 2), bool), spacing_xyz_mm=(5.0, 5.0, 5.0))
    >>> m = voi_metrics({"liver": h, "lung": h.at_density(0.26)})
    >>> list(m["liver"])[:4], m["liver"]["mass_g"], round(m["lung"]["mean_gy"], 1)
    (['volume_ml', 'mass_g', 'density_g_per_cm3', 'mean_gy'], 1.04, 200.0)
    """
    out: dict[str, dict[str, float]] = {}
    for name, h in dvhs.items():
        m = h.metrics()
        out[name] = {"volume_ml": m.pop("volume_ml"), "mass_g": h.mass_g(), "density_g_per_cm3": h.density_g_per_cm3,
                     **m}
    return out
