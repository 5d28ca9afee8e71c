"""Y-90 voxel S-value kernels at any voxel size.

Two sources, one convention (mGy per MBq s, float64 array indexed [z, y, x], odd size on every
axis, source voxel at the centre):

* At the cubic voxel sizes of the Lanconelli 2012 database (2.21 ... 9.28 mm, soft tissue and
  compact bone) the published table is returned as published [Lanconelli2012].
* At any other spacing, isotropic or not, the kernel is computed from a radial dose point kernel
  (DPK) integrated over the source and the target voxel volumes (below). The DPK was fitted to
  the whole database at once (:func:`fit_dose_point_kernel`) and is shipped in
  ``kernels/y90_dpk_lanconelli2012_fit.csv``.

Derivation
----------
Let ``f(r)`` (1/mm) be the fraction of the emitted energy ``E`` deposited per unit distance ``r``
from a point source in an infinite homogeneous medium of density ``rho`` (``int f dr`` is the
fraction absorbed; the rest escapes as bremsstrahlung). For a source uniformly distributed in a
box voxel of size ``h = (hx, hy, hz)`` and volume ``V``, the mean absorbed dose per decay in the
voxel displaced by ``d = (i hx, j hy, k hz)`` is

    S(d) = E / (rho V^2) * int f(|u|)/(4 pi |u|^2) T(u - d) d^3u,
    T(u) = prod_a max(0, h_a - |u_a|)      (the overlap volume of two boxes at offset u).

In spherical coordinates about the source, with ``T = V * CIC(u/h - d)`` (the trilinear
cloud-in-cell weight), this is

    S(d) = E / (rho V) * int f(r) W_d(r) dr,   W_d(r) = < CIC(r omega / h - d) >_omega,

the angle-averaged share of a spherical shell of radius ``r`` that lands on voxel ``d``.
``sum_d W_d(r) = 1`` for every ``r``, so the kernel conserves the absorbed energy exactly:
``sum(S) rho V = E int f dr`` whatever the spacing. ``W_d(r)`` is computed with a product
Gauss-Legendre rule over the octant of directions (96 x 96) and Gauss-Legendre radial nodes
(4 per 0.1 mm); the 1/r^2 singularity of the point kernel is absorbed by the shell area, so no
special treatment of the source voxel is needed. ``f`` is piecewise linear on knots every
0.25 mm from 0 to 12 mm (beyond the CSDA range of the 2.28 MeV end-point electrons).

The fit is linear: every table entry is ``S = sum_m c_m M_m(d)`` with ``M`` computed as above
for the hat function of knot ``m``. The coefficients ``c >= 0`` minimise the squared relative
residuals over all 13 tables (entries above 1e-3 of the table's central value, relative
uncertainty 0.5 % plus 1e-4 of the centre) plus a second-difference smoothness penalty (:data:`SMOOTHING`), solved
with :func:`scipy.optimize.lsq_linear`. Residuals and the leave-one-out check (each table
predicted by a fit to the other 12) are printed by ``python -m voxeldose.kernels`` and tested in
``tests/test_kernels.py``; the README lists them.

References
----------
.. [Lanconelli2012] Lanconelli N, Pacilio M, Lo Meo S, et al. "A free database of radionuclide
   voxel S values for the dosimetry of nonuniform activity distributions." Phys Med Biol
   57:517-533, 2012. doi:10.1088/0031-9155/57/2/517
.. [Bolch1999] Bolch WE, Bouchet LG, Robertson JS, et al. "MIRD Pamphlet No. 17: the dosimetry of
   nonuniform activity distributions - radionuclide S values at the voxel level." J Nucl Med
   40:11S-36S, 1999.
.. [Dieudonne2010] Dieudonne A, Hobbs RF, Bolch WE, Sgouros G, Gardin I. "Fine-resolution voxel S
   values for constructing absorbed dose distributions at variable voxel size." J Nucl Med
   51:1600-1607, 2010. doi:10.2967/jnumed.110.077149
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from numpy.typing import NDArray

from . import constants as C
from ._resources import data_dir
from ._checks import check_spacing
from .errors import KernelError

__all__ = [
    "Tissue",
    "TISSUES",
    "y90_kernel",
    "kernel_source",
    "published_voxel_sizes_mm",
    "lanconelli_table",
    "DosePointKernel",
    "dose_point_kernel",
    "dpk_voxel_kernel",
    "fit_dose_point_kernel",
    "leave_one_out",
]

Tissue = Literal["soft", "bone"]
TISSUES: dict[str, tuple[str, str, float]] = {
    # name: (file suffix, CSV tissue column, density g/cm^3)
    "soft": ("soft", "soft_tissue", C.SOFT_TISSUE_DENSITY_G_PER_CM3),
    "bone": ("bone", "compact_bone", C.COMPACT_BONE_DENSITY_G_PER_CM3),
}

#: Two spacings closer than this (mm) are the same voxel size for the published tables.
TABLE_MATCH_TOLERANCE_MM = 1e-3

DPK_FILE = "y90_dpk_lanconelli2012_fit.csv"
KNOT_STEP_MM = 0.25
R_MAX_MM = 12.0
_RADIAL_STEP_MM = 0.1
_RADIAL_ORDER = 4
_ANGULAR_ORDER = 96
#: Weight of the second-difference penalty in the fit, per tissue: the largest that keeps every
#: table's central and neighbour values within 1 % (soft) and 0.5 % (bone, shorter range) while
#: removing the oscillations an unpenalised fit shows (see fit_dose_point_kernel).
SMOOTHING = {"soft": 1e6, "bone": 1e5}

_TABLE_NAME = re.compile(r"^90Y(?P<size>[0-9.]+)mm(?P<tissue>soft|bone)\.txt$")


def _check_tissue(tissue: str) -> tuple[str, str, float]:
    try:
        return TISSUES[tissue]
    except KeyError:
        raise KernelError(
            f"unknown tissue {tissue!r} for the Y-90 kernel; use one of {sorted(TISSUES)}"
        ) from None


# --------------------------------------------------------------------------- published tables


@functools.lru_cache(maxsize=None)
def _tables(tissue: str) -> dict[float, NDArray[np.float64]]:
    suffix = _check_tissue(tissue)[0]
    folder = data_dir("kernels")
    tables: dict[float, NDArray[np.float64]] = {}
    for path in sorted(folder.glob("90Y*mm*.txt")):
        m = _TABLE_NAME.match(path.name)
        if m is None or m["tissue"] != suffix:
            continue
        tables[float(m["size"])] = _read_table(path)
    if not tables:
        raise KernelError(f"no Lanconelli 2012 tables for tissue {tissue!r} in {folder}")
    return tables


def _read_table(path: Path) -> NDArray[np.float64]:
    """Read one published octant file (i, j, k = 0..5) into the full 11x11x11 kernel."""
    octant = np.full((6, 6, 6), np.nan)
    text = path.read_text(encoding="latin-1")
    for lineno, line in enumerate(text.splitlines()[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        try:
            i, j, k = (int(p) for p in parts[:3])
            octant[i, j, k] = float(parts[3])
        except (ValueError, IndexError) as exc:
            raise KernelError(f"{path}, line {lineno}: cannot read 'i j k S' from {line!r}") from exc
    if np.isnan(octant).any():
        raise KernelError(f"{path}: the table does not cover i, j, k = 0..5")
    idx = np.abs(np.arange(-5, 6))
    full = octant[np.ix_(idx, idx, idx)]
    full.setflags(write=False)
    return full


def published_voxel_sizes_mm(tissue: Tissue = "soft") -> tuple[float, ...]:
    """Cubic voxel sizes (mm) of the Lanconelli 2012 tables for ``tissue``."""
    return tuple(sorted(_tables(tissue)))


def lanconelli_table(voxel_mm: float, tissue: Tissue = "soft") -> NDArray[np.float64]:
    """The published 11x11x11 Y-90 S-value table, mGy/(MBq s), for a cubic voxel size in mm.

    Raises
    ------
    KernelError
        If the database has no table at ``voxel_mm`` (within 1e-3 mm).
    """
    tables = _tables(tissue)
    for size, table in tables.items():
        if abs(size - voxel_mm) <= TABLE_MATCH_TOLERANCE_MM:
            return table
    raise KernelError(
        f"the Lanconelli 2012 database has no {tissue} table at {voxel_mm} mm; "
        f"available: {sorted(tables)} mm (use y90_kernel for any other spacing)"
    )


# --------------------------------------------------------------------------- quadrature


@functools.lru_cache(maxsize=None)
def _octant_directions(order: int = _ANGULAR_ORDER) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Product Gauss-Legendre rule over the positive octant of the unit sphere, (z, y, x)."""
    x, w = np.polynomial.legendre.leggauss(order)
    mu = 0.5 * (x + 1.0)  # cos(polar angle) in [0, 1]
    wmu = 0.5 * w
    phi = 0.25 * math.pi * (x + 1.0)  # azimuth in [0, pi/2]
    wphi = 0.25 * math.pi * w
    MU, PHI = np.meshgrid(mu, phi, indexing="ij")
    sin_t = np.sqrt(1.0 - MU**2)
    dirs = np.stack([MU, sin_t * np.sin(PHI), sin_t * np.cos(PHI)], axis=-1).reshape(-1, 3)
    weights = np.outer(wmu, wphi).ravel()
    weights /= weights.sum()
    return np.ascontiguousarray(dirs), weights


def _radial_nodes(r_max_mm: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gauss-Legendre nodes and weights on [0, r_max] by intervals of 0.1 mm."""
    x, w = np.polynomial.legendre.leggauss(_RADIAL_ORDER)
    edges = np.arange(0.0, r_max_mm + 1e-9, _RADIAL_STEP_MM)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    r = (mid[:, None] + half[:, None] * x[None, :]).ravel()
    wr = (half[:, None] * w[None, :]).ravel()
    return r, wr


def _shell_weights(
    spacing_zyx_mm: tuple[float, float, float], r_mm: NDArray[np.float64], *, min_half: int = 1
) -> NDArray[np.float64]:
    """``W[q, kz, ky, kx]``: share of the shell of radius ``r_mm[q]`` per octant voxel."""
    from ._loops import shell_cic_weights

    half = tuple(max(min_half, int(math.floor(float(r_mm.max()) / h)) + 2) for h in spacing_zyx_mm)
    out = np.zeros((r_mm.size, *half))
    dirs, dir_w = _octant_directions()
    shell_cic_weights(r_mm, dirs, dir_w, np.asarray(spacing_zyx_mm, float), out)
    return out


def _unfold_octant(octant: NDArray[np.float64]) -> NDArray[np.float64]:
    """Full symmetric kernel [-n..n] from its octant [0..n] on each axis."""
    idx = [np.abs(np.arange(-(n - 1), n)) for n in octant.shape]
    return octant[np.ix_(*idx)]


def _dose_factor(spacing_zyx_mm: Sequence[float], density_g_cm3: float) -> float:
    """E / (rho V), in mGy per (MBq s) per unit absorbed fraction."""
    volume_mm3 = float(np.prod(spacing_zyx_mm))
    mass_kg = density_g_cm3 * C.KG_PER_MM3_PER_G_PER_CM3 * volume_mm3
    return C.Y90_MEAN_ENERGY_MEV * C.J_PER_MEV * 1e6 * 1e3 / mass_kg


def _hat_basis(r_mm: NDArray[np.float64], knots_mm: NDArray[np.float64]) -> NDArray[np.float64]:
    """``B[q, m]``: piecewise-linear hat function of knot ``m`` at radius ``r_mm[q]``."""
    eye = np.eye(knots_mm.size)
    return np.stack([np.interp(r_mm, knots_mm, eye[m], right=0.0) for m in range(knots_mm.size)], 1)


# --------------------------------------------------------------------------- dose point kernel


@dataclass(frozen=True)
class DosePointKernel:
    """A radial Y-90 dose point kernel in a homogeneous medium.

    Attributes
    ----------
    r_mm : ndarray
        Knots (mm), from 0.
    f_per_mm : ndarray
        Fraction of the emitted energy absorbed per mm of radius at each knot (piecewise linear
        between knots, zero beyond the last).
    tissue : str
        "soft" or "bone".
    density_g_cm3 : float
        Density of the medium.
    """

    r_mm: NDArray[np.float64]
    f_per_mm: NDArray[np.float64]
    tissue: str
    density_g_cm3: float

    @property
    def absorbed_fraction(self) -> float:
        """Fraction of the emitted energy absorbed in the infinite medium (``int f dr``)."""
        return float(np.trapezoid(self.f_per_mm, self.r_mm))

    @property
    def range_mm(self) -> float:
        """Radius beyond which the kernel is zero."""
        nz = np.nonzero(self.f_per_mm > 0)[0]
        return float(self.r_mm[min(nz[-1] + 1, self.r_mm.size - 1)])


@functools.lru_cache(maxsize=None)
def dose_point_kernel(tissue: Tissue = "soft") -> DosePointKernel:
    """The shipped Y-90 dose point kernel for ``tissue``, fitted to the Lanconelli 2012 tables."""
    _check_tissue(tissue)
    path = data_dir("kernels") / DPK_FILE
    try:
        lines = [ln for ln in path.read_text(encoding="ascii").splitlines() if not ln.startswith("#")]
    except OSError as exc:
        raise KernelError(f"cannot read the dose point kernel {path}: {exc}; reinstall voxeldose") from exc
    header = lines[0].split(",")
    column = f"f_{tissue}_per_mm"
    if "r_mm" not in header or column not in header:
        raise KernelError(f"{path} has no columns 'r_mm' and {column!r}; reinstall voxeldose")
    values = np.array([[float(v) for v in ln.split(",")] for ln in lines[1:] if ln.strip()])
    data = {name: values[:, i] for i, name in enumerate(header)}
    r = np.array(data["r_mm"], float)
    f = np.array(data[column], float)
    r.setflags(write=False)
    f.setflags(write=False)
    return DosePointKernel(r, f, tissue, TISSUES[tissue][2])


def dpk_voxel_kernel(
    spacing_mm: Sequence[float], dpk: DosePointKernel
) -> NDArray[np.float64]:
    """Voxel S values (mGy/(MBq s)) from a radial dose point kernel, by the integral above.

    Parameters
    ----------
    spacing_mm : (x, y, z) sequence of float
        Voxel size in mm.
    dpk : DosePointKernel
        The radial kernel and its medium.

    Returns
    -------
    ndarray, float64, [z, y, x], odd sizes, centred on the source voxel.
    """
    sx, sy, sz = check_spacing(spacing_mm)
    spacing_zyx = (sz, sy, sx)
    r, wr = _radial_nodes(dpk.range_mm)
    f = np.interp(r, dpk.r_mm, dpk.f_per_mm, right=0.0)
    W = _shell_weights(spacing_zyx, r)
    octant = np.tensordot(wr * f, W, axes=(0, 0)) * _dose_factor(spacing_zyx, dpk.density_g_cm3)
    # drop octant planes that received nothing
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        used = np.nonzero(octant.max(axis=other) > 0)[0]
        octant = np.take(octant, np.arange(used[-1] + 1), axis=axis)
    return _unfold_octant(octant)


# --------------------------------------------------------------------------- public kernel


def kernel_source(spacing_mm: Sequence[float], tissue: Tissue = "soft") -> str:
    """Describe where ``y90_kernel(spacing_mm, tissue)`` comes from (for provenance)."""
    sx, sy, sz = check_spacing(spacing_mm)
    table = _matching_table_size(sx, sy, sz, tissue)
    if table is not None:
        return f"Lanconelli 2012 published table, {tissue}, {table:g} mm cubic voxels"
    return (
        f"voxeldose DPK integration ({DPK_FILE}, fit to Lanconelli 2012), {tissue}, "
        f"voxel {sx:g} x {sy:g} x {sz:g} mm"
    )


def _matching_table_size(sx: float, sy: float, sz: float, tissue: str) -> float | None:
    if max(sx, sy, sz) - min(sx, sy, sz) > TABLE_MATCH_TOLERANCE_MM:
        return None
    for size in _tables(tissue):
        if all(abs(s - size) <= TABLE_MATCH_TOLERANCE_MM for s in (sx, sy, sz)):
            return size
    return None


def y90_kernel(
    spacing_mm: Sequence[float], tissue: Tissue = "soft", *, source: Literal["auto", "dpk"] = "auto"
) -> NDArray[np.float64]:
    """Y-90 voxel S-value kernel, mGy/(MBq s), for any voxel spacing.

    Parameters
    ----------
    spacing_mm : (x, y, z) sequence of float
        Voxel size in mm (ITK/DICOM order); anisotropic allowed, each in (0, 50] mm.
    tissue : {"soft", "bone"}
        Medium: ICRP soft tissue (1.04 g/cm^3) or compact bone (1.85 g/cm^3).
    source : {"auto", "dpk"}, keyword-only
        "auto" returns the published table when the spacing is cubic and equals a database size
        (within 1e-3 mm), the DPK integration otherwise; "dpk" always integrates the DPK.

    Returns
    -------
    ndarray, float64, read-only, indexed [z, y, x]
        Odd size on every axis, source voxel at the centre. ``S[c + (k, j, i)]`` is the mean dose
        rate in the voxel displaced by (i, j, k) voxels per MBq in the centre voxel. Results are
        cached per (spacing, tissue, source).

    Raises
    ------
    KernelError
        Unknown tissue or ``source``.
    GeometryError
        Non-finite or non-positive spacing, or not three values.

    References
    ----------
    Lanconelli et al. 2012, doi:10.1088/0031-9155/57/2/517 (the tables and the fitted DPK).

    Examples
    --------
    >>> import voxeldose
    >>> k = voxeldose.y90_kernel((4.0, 4.0, 3.0))
    >>> k.shape[0] % 2 == 1 and k.argmax() == k.size // 2
    True
    """
    spacing = check_spacing(spacing_mm)
    _check_tissue(tissue)
    if source not in ("auto", "dpk"):
        raise KernelError(f"source must be 'auto' or 'dpk', got {source!r}")
    key = tuple(round(s, 6) for s in spacing)
    return _cached_kernel(key, tissue, source)


@functools.lru_cache(maxsize=64)
def _cached_kernel(spacing: tuple[float, float, float], tissue: str, source: str) -> NDArray[np.float64]:
    if source == "auto":
        size = _matching_table_size(*spacing, tissue)
        if size is not None:
            return lanconelli_table(size, tissue)  # type: ignore[arg-type]
    kernel = dpk_voxel_kernel(spacing, dose_point_kernel(tissue))  # type: ignore[arg-type]
    kernel.setflags(write=False)
    return kernel


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class _Design:
    size_mm: float
    values: NDArray[np.float64]  # published octant entries used in the fit
    matrix: NDArray[np.float64]  # model: values ~ matrix @ c


def _design(size_mm: float, tissue: str, knots_mm: NDArray[np.float64]) -> _Design:
    density = TISSUES[tissue][2]
    spacing = (size_mm, size_mm, size_mm)
    r, wr = _radial_nodes(float(knots_mm[-1]))
    W = _shell_weights(spacing, r, min_half=6)[:, :6, :6, :6]
    B = _hat_basis(r, knots_mm)
    M = np.tensordot(B * wr[:, None], W, axes=(0, 0)) * _dose_factor(spacing, density)
    table = lanconelli_table(size_mm, tissue)[5:, 5:, 5:]  # type: ignore[arg-type]
    return _Design(size_mm, table.ravel().copy(), M.reshape(knots_mm.size, -1).T.copy())


def _solve(designs: Sequence[_Design], smoothing: float, n_knots: int) -> NDArray[np.float64]:
    from scipy.optimize import lsq_linear

    rows, rhs = [], []
    for d in designs:
        centre = d.values[0]
        use = d.values >= 1e-3 * centre
        sigma = 0.005 * d.values[use] + 1e-4 * centre
        rows.append(d.matrix[use] / sigma[:, None])
        rhs.append(d.values[use] / sigma)
    # smoothness: second differences of f, scaled to the knot step
    D2 = np.diff(np.eye(n_knots), n=2, axis=0)
    rows.append(math.sqrt(smoothing) * D2)
    rhs.append(np.zeros(D2.shape[0]))
    A = np.vstack(rows)
    b = np.concatenate(rhs)
    upper = np.full(n_knots, np.inf)
    upper[-1] = 1e-12  # f(R_MAX) = 0
    res = lsq_linear(A, b, bounds=(np.zeros(n_knots), upper), method="bvls", tol=1e-12)
    c = res.x
    c[-1] = 0.0
    return c


def fit_dose_point_kernel(
    tissue: Tissue = "soft",
    *,
    sizes_mm: Sequence[float] | None = None,
    smoothing: float | None = None,
) -> DosePointKernel:
    """Fit the radial DPK to the Lanconelli 2012 tables of ``tissue`` (all sizes by default).

    This is how ``kernels/y90_dpk_lanconelli2012_fit.csv`` was made (see the module docstring);
    ``sizes_mm`` restricts the fit to some tables, for leave-one-out validation.
    """
    _check_tissue(tissue)
    knots = np.round(np.arange(0.0, R_MAX_MM + 1e-9, KNOT_STEP_MM), 6)
    sizes = published_voxel_sizes_mm(tissue) if sizes_mm is None else tuple(sizes_mm)
    designs = [_design(s, tissue, knots) for s in sizes]
    c = _solve(designs, SMOOTHING[tissue] if smoothing is None else smoothing, knots.size)
    return DosePointKernel(knots, c, tissue, TISSUES[tissue][2])


def _write_dpk_file(path: Path) -> None:  # pragma: no cover - tool
    fits = {t: fit_dose_point_kernel(t) for t in TISSUES}  # type: ignore[misc,arg-type]
    knots = fits["soft"].r_mm
    lines = [
        "# Y-90 radial dose point kernel f(r): fraction of the emitted energy (0.9331 MeV/decay,",
        "# ICRP-107) absorbed per mm of radius, piecewise linear between knots, zero beyond 12 mm.",
        "# Fitted by voxeldose.kernels.fit_dose_point_kernel(tissue) (smoothing "
        f"{SMOOTHING}) to all Lanconelli 2012 tables",
        "# (Phys Med Biol 57:517, 2012) of the tissue; regenerate with",
        "# 'python -m voxeldose.kernels --write'. Soft tissue 1.04 g/cm3, compact bone 1.85 g/cm3.",
        "r_mm,f_soft_per_mm,f_bone_per_mm",
    ]
    for i, r in enumerate(knots):
        lines.append(f"{r:.2f},{fits['soft'].f_per_mm[i]:.8e},{fits['bone'].f_per_mm[i]:.8e}")
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def leave_one_out(tissue: Tissue = "soft") -> dict[float, tuple[NDArray[np.float64], NDArray[np.float64]]]:
    """Predict each published table from a DPK fitted to the other tables of ``tissue``.

    Returns ``{size_mm: (published_octant, predicted_octant)}``, octants [k, j, i] = 0..5.
    """
    knots = np.round(np.arange(0.0, R_MAX_MM + 1e-9, KNOT_STEP_MM), 6)
    sizes = published_voxel_sizes_mm(tissue)
    designs = {s: _design(s, tissue, knots) for s in sizes}
    out = {}
    for size in sizes:
        c = _solve([designs[s] for s in sizes if s != size], SMOOTHING[tissue], knots.size)
        d = designs[size]
        out[size] = (d.values.reshape(6, 6, 6), (d.matrix @ c).reshape(6, 6, 6))
    return out


def _report() -> None:  # pragma: no cover - tool
    sel = [(0, 0, 0), (0, 0, 1), (0, 1, 1), (1, 1, 1), (0, 0, 2)]
    print("relative difference to the published table at offsets " + " ".join(map(str, sel)))
    for tissue in TISSUES:
        dpk = dose_point_kernel(tissue)  # type: ignore[arg-type]
        print(f"{tissue}: absorbed fraction {dpk.absorbed_fraction:.4f}")
        loo = leave_one_out(tissue)  # type: ignore[arg-type]
        for size, (table, predicted) in loo.items():
            model = dpk_voxel_kernel((size,) * 3, dpk)
            model = model[tuple(slice(n // 2, n // 2 + 6) for n in model.shape)]
            fit_err = [model[s] / table[s] - 1 for s in sel]
            loo_err = [predicted[s] / table[s] - 1 for s in sel]
            print(
                f"  {size:5.2f} mm  fit "
                + " ".join(f"{e:+.2%}" for e in fit_err)
                + "   leave-one-out "
                + " ".join(f"{e:+.2%}" for e in loo_err)
            )


if __name__ == "__main__":  # pragma: no cover
    import sys

    if "--write" in sys.argv:
        _write_dpk_file(data_dir("kernels") / DPK_FILE)
    _report()
