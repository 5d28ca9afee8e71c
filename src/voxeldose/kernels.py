"""Y-90 voxel S-value kernels at any voxel size, from the project's own fitted point kernel.

One convention (mGy per MBq s, float64 array indexed [z, y, x], odd size on every axis, source
voxel at the centre). The kernel at any spacing, isotropic or not, is computed from a radial
dose point kernel (DPK) integrated over the source and the target voxel volumes (below). The DPK
(``kernels/y90_dpk_lanconelli2012_fit.csv``, shipped inside the package) was fitted to the whole
Lanconelli 2012 database [Lanconelli2012]_ at once by the offline tool :mod:`voxeldose.kernel_fit`,
which reads the published tables from where they are kept (``../shared/reference_data``); the
tables are not shipped. At the 13 table sizes the integrated DPK differs from the published
tables by the fit residual (centre and its 26 neighbours within 0.9 %, soft tissue; README).

A user who holds a voxel S-value table set (Lanconelli's database, MIRD format) can pass it
(:func:`voxeldose.io.load_vsv_tables`, ``tables=``): at a cubic spacing equal to one of its
sizes the published table is then used exactly; at every other spacing, the DPK.

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

References
----------
.. [Lanconelli2012] Lanconelli N, Pacilio M, Lo Meo S, et al. "A free database of radionuclide
   voxel S values for the dosimetry of nonuniform activity distributions." Phys Med Biol
   57:517-533, 2012. doi:10.1088/0031-9155/57/2/517
.. [Bolch1999] Bolch WE, Bouchet LG, Robertson JS, et al. "MIRD Pamphlet No. 17: the dosimetry of
   nonuniform activity distributions - radionuclide S values at the voxel level." J Nucl Med
   40:11S-36S, 1999.
.. [OConnor1957] O'Connor JE. "The variation of scattered x-rays with density in an irradiated
   body." Phys Med Biol 1:352-369, 1957. doi:10.1088/0031-9155/1/4/305 (the density scaling
   theorem behind :func:`uniform_density_kernel`).
.. [Dieudonne2010] Dieudonne A, Hobbs RF, Bolch WE, Sgouros G, Gardin I. "Fine-resolution voxel S
   values for constructing absorbed dose distributions at variable voxel size." J Nucl Med
   51:1600-1607, 2010. doi:10.2967/jnumed.110.077149
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from . import constants as C
from ._checks import check_allocation, check_spacing
from ._resources import data_dir
from .errors import KernelError

__all__ = [
    "Tissue",
    "TISSUES",
    "y90_kernel",
    "kernel_source",
    "VsvTables",
    "DosePointKernel",
    "dose_point_kernel",
    "dpk_voxel_kernel",
    "TABLE_MATCH_TOLERANCE_MM",
    "DensityKernels",
    "density_kernels",
    "uniform_density_kernel",
]

Tissue = Literal["soft", "bone"]
TISSUES: dict[str, tuple[str, str, float]] = {
    # name: (table file suffix, CSV tissue column, density g/cm^3)
    "soft": ("soft", "soft_tissue", C.SOFT_TISSUE_DENSITY_G_PER_CM3),
    "bone": ("bone", "compact_bone", C.COMPACT_BONE_DENSITY_G_PER_CM3),
}

#: Two spacings closer than this (mm) are the same voxel size for a published table.
TABLE_MATCH_TOLERANCE_MM = 1e-3

DPK_FILE = "y90_dpk_lanconelli2012_fit.csv"
KNOT_STEP_MM = 0.25
R_MAX_MM = 12.0
_RADIAL_STEP_MM = 0.1
_RADIAL_ORDER = 4
_ANGULAR_ORDER = 96


def _check_tissue(tissue: str) -> tuple[str, str, float]:
    try:
        return TISSUES[tissue]
    except KeyError:
        raise KernelError(
            f"unknown tissue {tissue!r} for the Y-90 kernel; use one of {sorted(TISSUES)}"
        ) from None


# --------------------------------------------------------------------------- user tables


@dataclass(frozen=True)
class VsvTables:
    """A set of published voxel S-value tables a user holds (e.g. Lanconelli's database).

    Read one with :func:`voxeldose.io.load_vsv_tables`. Each table is the full kernel
    (mGy/(MBq s), [z, y, x], read-only) of a cubic voxel size and tissue.

    Attributes
    ----------
    tables : mapping (tissue, voxel_mm) -> ndarray
    sources : mapping (tissue, voxel_mm) -> str
        The file each table was read from (for provenance).
    folder : str
        Where the set was read from.
    """

    tables: Mapping[tuple[str, float], NDArray[np.float64]]
    sources: Mapping[tuple[str, float], str] = field(default_factory=dict)
    folder: str = ""

    def sizes_mm(self, tissue: Tissue = "soft") -> tuple[float, ...]:
        """Cubic voxel sizes (mm) of the tables of ``tissue``."""
        return tuple(sorted(size for t, size in self.tables if t == tissue))

    def match(self, spacing_xyz_mm: Sequence[float], tissue: Tissue = "soft") -> float | None:
        """The table size equal to a cubic ``spacing_xyz_mm`` (within 1e-3 mm), or None."""
        sx, sy, sz = check_spacing(spacing_xyz_mm, name="spacing_xyz_mm")
        if max(sx, sy, sz) - min(sx, sy, sz) > TABLE_MATCH_TOLERANCE_MM:
            return None
        for size in self.sizes_mm(tissue):
            if all(abs(s - size) <= TABLE_MATCH_TOLERANCE_MM for s in (sx, sy, sz)):
                return size
        return None

    def table(self, voxel_mm: float, tissue: Tissue = "soft") -> NDArray[np.float64]:
        """The table of a cubic voxel size (within 1e-3 mm).

        Raises
        ------
        KernelError
            If the set has no table of ``tissue`` at ``voxel_mm``.
        """
        size = self.match((voxel_mm,) * 3, tissue)
        if size is None:
            raise KernelError(
                f"the tables in {self.folder or 'this set'} have no {tissue} table at {voxel_mm} mm; "
                f"available: {list(self.sizes_mm(tissue))} mm"
            )
        return self.tables[(tissue, size)]


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
    check_allocation(r_mm.size * math.prod(half),
                     f"the Y-90 kernel for voxels of {' x '.join(f'{h:g}' for h in spacing_zyx_mm[::-1])} mm "
                     f"({r_mm.size} radii over {' x '.join(str(n) for n in half[::-1])} voxels)",
                     "resample the scan to voxels of at least 0.2 mm")
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
    """The shipped Y-90 dose point kernel for ``tissue``, fitted to the Lanconelli 2012 tables
    by :mod:`voxeldose.kernel_fit` (the tables themselves are not shipped)."""
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
    spacing_xyz_mm: Sequence[float], dpk: DosePointKernel
) -> NDArray[np.float64]:
    """Voxel S values (mGy/(MBq s)) from a radial dose point kernel, by the integral above.

    Parameters
    ----------
    spacing_xyz_mm : (x, y, z) sequence of float
        Voxel size in mm.
    dpk : DosePointKernel
        The radial kernel and its medium.

    Returns
    -------
    ndarray, float64, [z, y, x], odd sizes, centred on the source voxel.
    """
    sx, sy, sz = check_spacing(spacing_xyz_mm, name="spacing_xyz_mm")
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


def kernel_source(spacing_xyz_mm: Sequence[float], tissue: Tissue = "soft", *,
                  tables: VsvTables | None = None) -> str:
    """Describe where ``y90_kernel(spacing_xyz_mm, tissue, tables=tables)`` comes from (provenance)."""
    sx, sy, sz = check_spacing(spacing_xyz_mm, name="spacing_xyz_mm")
    _check_tissue(tissue)
    size = tables.match((sx, sy, sz), tissue) if tables is not None else None
    if tables is not None and size is not None:
        return (f"published voxel S-value table, {tissue}, {size:g} mm cubic voxels, from "
                f"{tables.sources.get((tissue, size), tables.folder)}")
    text = (f"voxeldose DPK integration ({DPK_FILE}, fit to Lanconelli 2012), {tissue}, "
            f"voxel {sx:g} x {sy:g} x {sz:g} mm")
    if tables is not None:
        text += f" (no table of this spacing in {tables.folder})"
    return text


def y90_kernel(
    spacing_xyz_mm: Sequence[float], tissue: Tissue = "soft", *, tables: VsvTables | None = None
) -> NDArray[np.float64]:
    """Y-90 voxel S-value kernel, mGy/(MBq s), for any voxel spacing.

    Parameters
    ----------
    spacing_xyz_mm : (x, y, z) sequence of float
        Voxel size in mm (ITK/DICOM order, the reverse of the array's axes); anisotropic
        allowed, each in (0, 50] mm.
    tissue : {"soft", "bone"}
        Medium: ICRP soft tissue (1.04 g/cm^3) or compact bone (1.85 g/cm^3).
    tables : VsvTables, optional, keyword-only
        Published tables to use where the spacing is cubic and equals one of their sizes
        (within 1e-3 mm); the fitted point kernel everywhere else. None: always the point kernel.

    Returns
    -------
    ndarray, float64, read-only, indexed [z, y, x]
        Odd size on every axis, source voxel at the centre. ``S[c + (k, j, i)]`` is the mean dose
        rate in the voxel displaced by (i, j, k) voxels per MBq in the centre voxel. Point-kernel
        results are cached per (spacing, tissue).

    Raises
    ------
    KernelError
        Unknown tissue.
    GeometryError
        Non-finite or non-positive spacing, or not three values.

    References
    ----------
    Lanconelli et al. 2012, doi:10.1088/0031-9155/57/2/517 (the tables the point kernel is fitted to).

    Examples
    --------
    >>> import voxeldose
    >>> k = voxeldose.y90_kernel((4.0, 4.0, 3.0))
    >>> bool(k.shape[0] % 2 == 1 and k.argmax() == k.size // 2)
    True
    """
    spacing = check_spacing(spacing_xyz_mm, name="spacing_xyz_mm")
    _check_tissue(tissue)
    if tables is not None:
        size = tables.match(spacing, tissue)
        if size is not None:
            return tables.tables[(tissue, size)]
    key = tuple(round(s, 6) for s in spacing)
    return _cached_kernel(key, tissue)


@functools.lru_cache(maxsize=64)
def _cached_kernel(spacing: tuple[float, float, float], tissue: str) -> NDArray[np.float64]:
    kernel = dpk_voxel_kernel(spacing, dose_point_kernel(tissue))  # type: ignore[arg-type]
    kernel.setflags(write=False)
    return kernel


# --------------------------------------------------------------------------- density-scaled kernels

#: Ratio between consecutive densities of the scaled kernel's density classes. The kernel at a
#: density between two classes is interpolated linearly in log(density): against the kernel
#: computed at that density (4 x 4 x 3 mm voxels, 0.3 to 1.5 g/cm3) the error is below 1e-3 of
#: the maximum and 1e-3 of the kernel's energy sum (tests/test_kernels.py measures it).
DENSITY_CLASS_RATIO = 1.1

#: Densities below this (g/cm3) use the kernel at this density: a path through air or bowel gas
#: only. The scaling theorem would carry the energy of a source in air ~10 m; here it is kept
#: within 12 mm x 1.04 / 0.1 = 125 mm.
MIN_KERNEL_DENSITY_G_PER_CM3 = 0.1


@dataclass(frozen=True)
class DensityKernels:
    """Voxel S values of a uniform medium at a ladder of densities, for the scaled kernel.

    By the scaling theorem [OConnor1957]_ the kernel of a uniform medium of density ``rho`` on
    voxels ``h`` is ``S_rho(d; h) = (rho/rho0)**2 S_rho0(d; h rho/rho0)`` (``rho0`` = 1.04 g/cm3,
    the soft-tissue point kernel); each class is computed so, from the shipped point kernel.
    The densities are ``rho0 * DENSITY_CLASS_RATIO**k``: soft tissue is a class itself, so its
    kernel is :func:`y90_kernel`'s exactly.

    Attributes
    ----------
    densities_g_per_cm3 : ndarray (n,)
        The class densities, increasing.
    table : ndarray
        The kernels one after another, each [z, y, x] flattened (mGy/(MBq s)).
    start : ndarray (n,) int64
        Where each kernel begins in ``table``.
    half_zyx : ndarray (n, 3) int64
        Each kernel's half size (its shape is ``2 * half + 1``).
    """

    densities_g_per_cm3: NDArray[np.float64]
    table: NDArray[np.float64]
    start: NDArray[np.int64]
    half_zyx: NDArray[np.int64]

    def kernel(self, index: int) -> NDArray[np.float64]:
        """The kernel of class ``index`` as a [z, y, x] array."""
        shape = tuple(int(2 * h + 1) for h in self.half_zyx[index])
        n = math.prod(shape)
        s = int(self.start[index])
        return self.table[s: s + n].reshape(shape)


def uniform_density_kernel(spacing_xyz_mm: Sequence[float], density_g_cm3: float) -> NDArray[np.float64]:
    """Voxel S values (mGy/(MBq s)) of a uniform medium of density ``density_g_cm3``, from the
    soft-tissue point kernel by the scaling theorem (:class:`DensityKernels`)."""
    sx, sy, sz = check_spacing(spacing_xyz_mm, name="spacing_xyz_mm")
    rho0 = C.SOFT_TISSUE_DENSITY_G_PER_CM3
    s = float(density_g_cm3) / rho0
    if s == 1.0:
        return y90_kernel((sx, sy, sz), "soft")
    return dpk_voxel_kernel((sx * s, sy * s, sz * s), dose_point_kernel("soft")) * s * s


def density_kernels(spacing_xyz_mm: Sequence[float], lo_g_cm3: float, hi_g_cm3: float) -> DensityKernels:
    """The density classes that bracket ``[lo, hi]`` g/cm3 (``lo`` at least
    :data:`MIN_KERNEL_DENSITY_G_PER_CM3`), with their kernels (cached per spacing and range)."""
    spacing = tuple(round(s, 6) for s in check_spacing(spacing_xyz_mm, name="spacing_xyz_mm"))
    rho0 = C.SOFT_TISSUE_DENSITY_G_PER_CM3
    lq = math.log(DENSITY_CLASS_RATIO)
    lo = max(float(lo_g_cm3), MIN_KERNEL_DENSITY_G_PER_CM3)
    hi = max(float(hi_g_cm3), lo)
    k_lo = math.floor(math.log(lo / rho0) / lq + 1e-9)
    k_hi = math.ceil(math.log(hi / rho0) / lq - 1e-9)
    if k_hi == k_lo:
        k_hi += 1
    return _density_kernels(spacing, k_lo, k_hi)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=8)
def _density_kernels(spacing: tuple[float, float, float], k_lo: int, k_hi: int) -> DensityKernels:
    import numba

    rho0 = C.SOFT_TISSUE_DENSITY_G_PER_CM3
    densities = np.array([rho0 * DENSITY_CLASS_RATIO**k if k else rho0 for k in range(k_lo, k_hi + 1)])

    def one(rho: float) -> NDArray[np.float64]:
        return np.ascontiguousarray(uniform_density_kernel(spacing, float(rho)))

    # each class is its own kernel, computed by the same serial code on as many threads as numba
    # may use (the shell integration releases the GIL): the same kernels; 14 classes at 4 x 4 x 3 mm
    # took 0.63-0.65 s on two threads, 1.03-1.14 s on one
    threads = max(1, min(int(numba.get_num_threads()), densities.size))
    if threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=threads) as pool:
            kernels = list(pool.map(one, densities))
    else:
        kernels = [one(rho) for rho in densities]
    sizes = [k.size for k in kernels]
    check_allocation(sum(sizes), f"the density-scaled Y-90 kernels for voxels of {' x '.join(f'{h:g}' for h in spacing)} mm",
                     "resample the scan to voxels of at least 1 mm")
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    half = np.array([[n // 2 for n in k.shape] for k in kernels], np.int64)
    table = np.concatenate([k.ravel() for k in kernels])
    for a in (densities, table, start, half):
        a.setflags(write=False)
    return DensityKernels(densities, table, start, half)
