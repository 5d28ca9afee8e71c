"""The density-scaled kernel (``method="scaled_kernel"`` of :func:`voxeldose.absorbed_dose`).

Private implementation behind :mod:`voxeldose.dose`, which checks the arguments.

The method
----------
The dose in voxel ``t`` from a decay in voxel ``s`` is the kernel of a uniform medium whose
density is the mean density ``rho_st`` along the path from ``s`` to ``t``:

    S(s -> t) = S_rho_st(t - s; h) = (rho_st/rho0)**2 S_rho0(t - s; h rho_st/rho0)

(the scaling theorem, O'Connor 1957; :func:`voxeldose.kernels.uniform_density_kernel`). In a
uniform medium this is that medium's kernel exactly. For a point source it is the continuum
relation ``D(r) = E f0(rho_bar r / rho0) / (4 pi r**2 rho0)``: the energy absorbed along a ray is
the soft-tissue fraction at the radiological depth, so the energy a closed heterogeneous body
absorbs equals what is emitted.

Two implementations
-------------------
:func:`scaled_kernel_dose` (numba, the engine's): ``rho_st`` is the mean density along the
lattice chain from ``s`` to ``t``, each offset's parent being the lattice point one Chebyshev step
back along the straight line (a 3-D DDA ray), each link weighted by the mean of the densities at
its ends, so the chains of all the targets of one source share their prefixes and the path mean
costs O(1) per (source, target) pair. The kernel at ``rho_st`` is interpolated in log(density)
between density classes 10 % apart (:func:`voxeldose.kernels.density_kernels`). A chain is
followed until its radiological length guarantees that no target farther along it is reached
(``voxeldose._loops.scaled_scatter``), so a source in soft tissue visits ~700 targets (4 x 4 x 3 mm
voxels); a path whose mean density is below 0.9 g/cm3 (lung) stops at the radiological depth of
the kernel's last 0.1 % of energy (:data:`TAIL_ENERGY_FRACTION`), so a source in lung visits
~4,000 targets instead of ~13,000. Up to :data:`TILE_WIDTH` sources, neighbours along x, walk the
tree together, each with its own chains and reach, so that they read and write neighbouring
voxels at every offset.

Energy. In the continuum this kernel conserves energy along every ray. On voxels it does not
quite where a source lies at a strong interface: the kernel of the mean density assumes that
density across the target voxel, whose real mass differs (a lung voxel beside soft tissue
deposits ~5-8 % more energy than it emits, a soft-tissue voxel beside lung 2-3 % less; measured
in tests/test_scaled_kernel.py). Each source's doses are therefore scaled so that the energy it
deposits is the uniform medium's (its kernel's absorbed fraction of what it emits), unless one
of its paths leaves the grid or the body (that energy leaves, as with the other methods).

:func:`scaled_kernel_reference` (numpy, brute force, small grids): for every (source, target)
pair, ``rho_st`` is the mean of the density sampled at 16 points per voxel step along the straight
segment between the voxel centres; the kernel at ``rho_st`` is interpolated between the same
classes; no reach cut; the same energy normalisation. The tests check the engine against it.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from . import constants as C
from .kernels import DENSITY_CLASS_RATIO, DensityKernels, density_kernels, dose_point_kernel, y90_kernel

__all__ = ["scaled_kernel_dose", "scaled_kernel_reference", "TAIL_ENERGY_FRACTION", "TAIL_DENSITY_G_PER_CM3"]

#: A path whose mean density is below :data:`TAIL_DENSITY_G_PER_CM3` is not followed beyond the
#: radiological depth where the point kernel has deposited all but this fraction of its energy
#: (8.96 mm of soft tissue). In lung that is the outer half of the kernel's reach, where three
#: quarters of the pairs lie; the energy normalisation puts the 0.1 % back in nearer. Denser
#: paths are followed to the end of the kernel, so a soft-tissue CT gives the plain kernel's dose
#: exactly. On the interface phantom (4 x 4 x 3 mm) the lung's mean dose moves by 0.01 % and no
#: voxel by more than 0.05 % of the largest dose; the lung's pairs are three times fewer.
TAIL_ENERGY_FRACTION = 1e-3
TAIL_DENSITY_G_PER_CM3 = 0.9

#: Sources walked together (neighbours along x): they read and write neighbouring voxels at every
#: offset, one cache line where one at a time misses the cache at nearly every target. Of widths 2
#: to 8 on a lung slab of the 2 mm interface phantom, 5 to 8 were fastest (within the machine's
#: noise), 1.3-1.6 times one source at a time.
TILE_WIDTH = 8


def _classes(spacing_zyx: Sequence[float], density: NDArray[np.floating],
             ends: NDArray[np.bool_] | None = None) -> DensityKernels:
    """The density classes for the densities a path can cross (not those where paths end)."""
    crossed = density if ends is None or ends.all() else density[~ends]
    lo, hi = float(crossed.min()), float(crossed.max())
    return density_kernels(tuple(spacing_zyx[::-1]), lo, hi)


def _interpolate(kernels: DensityKernels, mean: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Class index and weight of the upper class for each mean density (clamped to the classes)."""
    n = kernels.densities_g_per_cm3.size
    f = (np.log(mean) - math.log(kernels.densities_g_per_cm3[0])) / math.log(DENSITY_CLASS_RATIO)
    f = np.clip(f, 0.0, n - 1)
    k = np.minimum(np.floor(f).astype(np.int64), n - 2)
    return k, f - k


@functools.lru_cache(maxsize=2)  # one entry is ~48 bytes per offset: 16 MB at 4 x 4 x 3 mm
def _offsets(spacing_zyx: tuple[float, float, float], half_zyx: tuple[int, int, int]) -> tuple[Any, ...]:
    """The offsets of the box ``[-half, half]`` as a tree rooted at the origin.

    Returns ``(off, parent, link_mm, chain_mm, kid_start, straightness)``: each offset's parent
    is the lattice point one Chebyshev step back along the line to the origin (a 3-D DDA ray),
    ``link_mm`` the distance to it and ``chain_mm`` the length of the chain of links from the
    origin; the offsets are numbered in the tree's breadth-first order, so the children of
    offset ``p`` are ``kid_start[p]:kid_start[p + 1]``; ``straightness`` is the smallest ratio
    of an offset's distance to the length of its chain.
    """
    h = np.asarray(spacing_zyx, float)
    axes = [np.arange(-n, n + 1) for n in half_zyx]
    d = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    dist = np.sqrt(((d * h) ** 2).sum(axis=1))
    d, dist = d[np.argsort(dist, kind="stable")], np.sort(dist, kind="stable")
    cheb = np.abs(d).max(axis=1)
    n = np.maximum(cheb, 1)[:, None]
    parent_d = np.floor(d * (n - 1) / n + 0.5).astype(np.int64)
    shape = tuple(2 * m + 1 for m in half_zyx)
    centre = np.array(half_zyx)
    position = np.empty(math.prod(shape), np.int64)
    position[np.ravel_multi_index(tuple((d + centre).T), shape)] = np.arange(d.shape[0])
    parent = position[np.ravel_multi_index(tuple((parent_d + centre).T), shape)]
    parent[0] = 0
    link = np.sqrt((((d - parent_d) * h) ** 2).sum(axis=1))
    # number the offsets in the breadth-first order of the tree: the children of each offset are
    # then consecutive, and a walk of any pruned tree reads every per-offset array in increasing
    # index (memory order)
    bfs = _breadth_first(parent)
    rank = np.empty_like(bfs)
    rank[bfs] = np.arange(bfs.size)
    d, link, parent, dist = d[bfs], link[bfs], rank[parent[bfs]], dist[bfs]
    parent[0] = 0
    kid_start = np.searchsorted(parent[1:], np.arange(d.shape[0] + 1)).astype(np.int64) + 1
    chain = np.zeros(d.shape[0])
    shells = np.abs(d).max(axis=1)  # breadth-first is shell by shell: the parent is one shell in
    shell_start = np.searchsorted(shells, np.arange(int(shells.max()) + 2))
    for shell in range(1, shell_start.size - 1):
        sel = slice(shell_start[shell], shell_start[shell + 1])
        chain[sel] = chain[parent[sel]] + link[sel]
    straightness = float(np.min(dist[1:] / chain[1:])) if d.shape[0] > 1 else 1.0
    out = (np.ascontiguousarray(d), parent, link, chain, kid_start)
    for x in out:
        x.setflags(write=False)
    return (*out, np.float64(straightness))


def _breadth_first(parent: NDArray[np.int64]) -> NDArray[np.int64]:
    """The nodes of the tree ``parent`` (node 0 the root, its own parent) in breadth-first order,
    each node's children in increasing index: one level at a time (a node's children are the
    concatenation of its ``kids`` range), not one node at a time (2.25 million nodes at 2 mm: 3.3 s
    in a Python loop, 1.1 s for the whole of ``_offsets`` now)."""
    kids = np.argsort(parent[1:], kind="stable") + 1  # the nodes by parent, then by index
    start = np.searchsorted(parent[1:][kids - 1], np.arange(parent.size + 1))
    levels = [np.zeros(1, np.int64)]
    while True:
        level = levels[-1]
        lo = start[level]
        counts = start[level + 1] - lo
        total = int(counts.sum())
        if total == 0:
            break
        # the ranges kids[lo[i]:lo[i] + counts[i]], concatenated in the order of the level
        first = np.cumsum(counts) - counts
        levels.append(kids[np.repeat(lo - first, counts) + np.arange(total)])
    return np.concatenate(levels)


def _tiles(z: NDArray[np.int64], y: NDArray[np.int64], x: NDArray[np.int64], width: int) -> NDArray[np.int64]:
    """Where each tile of sources starts (and the end): runs of consecutive voxels along x in one
    row (the sources in C order), cut every ``width``."""
    new = np.ones(z.size, np.bool_)
    new[1:] = (z[1:] != z[:-1]) | (y[1:] != y[:-1]) | (x[1:] != x[:-1] + 1)
    run = np.cumsum(new) - 1
    new |= (np.arange(z.size) - np.flatnonzero(new)[run]) % width == 0
    return np.append(np.flatnonzero(new), z.size).astype(np.int64)


def _class_table(kernels: DensityKernels, off: NDArray[np.int64]) -> NDArray[np.float64]:
    """``table[k, j]``: the kernel of class ``k`` at offset ``off[j]`` (0 outside it). Class by
    class: a source's targets mostly use one or two classes, read in offset order."""
    table = np.zeros((kernels.densities_g_per_cm3.size, off.shape[0]))
    half = np.asarray(kernels.half_zyx)
    # denser classes have smaller boxes, each within the one before: test each class only on the
    # offsets inside the previous one (the same table as testing every offset, far fewer tests)
    nested = bool(np.all(np.diff(half, axis=0) <= 0))
    absolute = [np.abs(off[:, a]) for a in range(3)]
    candidates = np.arange(off.shape[0])
    for k in range(table.shape[0]):
        h = half[k]
        if not nested:
            candidates = np.arange(off.shape[0])
        inside = ((absolute[0][candidates] <= h[0]) & (absolute[1][candidates] <= h[1])
                  & (absolute[2][candidates] <= h[2]))
        candidates = candidates[inside]
        idx = off[candidates] + h
        table[k, candidates] = kernels.kernel(k)[idx[:, 0], idx[:, 1], idx[:, 2]]
    return table


def _fraction_table(kernels: DensityKernels) -> tuple[NDArray[np.float64], float, float]:
    """The fractional class ``log(rho / rho_class0) / log(ratio)`` tabulated every ~2.5e-4 g/cm3
    from the lowest class, with soft tissue on a node (so that it maps to its class exactly):
    linear interpolation in it errs by under 1e-4 of a class at 0.1 g/cm3 (less above)."""
    lo = float(kernels.densities_g_per_cm3[0])
    hi = float(kernels.densities_g_per_cm3[-1])
    rho0 = C.SOFT_TISSUE_DENSITY_G_PER_CM3
    step = (rho0 - lo) / max(1, math.ceil((rho0 - lo) / 2.5e-4)) if lo < rho0 else 2.5e-4
    n = int(math.ceil((hi - lo) / step)) + 1
    rho = lo + step * np.arange(n)
    return np.log(np.maximum(rho, lo) / lo) / math.log(DENSITY_CLASS_RATIO), lo, 1.0 / step


@functools.lru_cache(maxsize=1)
def _tail_depth_mm() -> float:
    """Radius (mm of soft tissue) within which the point kernel deposits 1 - TAIL_ENERGY_FRACTION
    of its energy."""
    dpk = dose_point_kernel("soft")
    r, f = dpk.r_mm, dpk.f_per_mm
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(r))])
    return float(np.interp(1.0 - TAIL_ENERGY_FRACTION, cumulative / cumulative[-1], r))


def _kernel_energy(spacing_zyx: Sequence[float]) -> float:
    """Sum of dose x density (mGy/(MBq s) x g/cm3) of the soft-tissue kernel: the energy a source
    deposits in a uniform medium (any density: the scaling theorem keeps it)."""
    return float(y90_kernel(tuple(spacing_zyx[::-1]), "soft").sum()) * C.SOFT_TISSUE_DENSITY_G_PER_CM3


def scaled_kernel_dose(activity: NDArray[np.floating], density: NDArray[np.floating],
                       spacing_zyx: Sequence[float], *, scale: float,
                       ends: NDArray[np.bool_] | None = None, normalise: bool = True,
                       truncate: bool = True) -> NDArray[np.float32]:
    """``scale`` x the density-scaled kernel dose (mGy/(MBq s) x activity) on the activity's grid.
    ``ends``: voxels where paths end (air outside the body): their energy leaves.
    ``normalise=False``: without the energy normalisation of each source; ``truncate=False``:
    low-density paths followed to the end of the kernel (:data:`TAIL_ENERGY_FRACTION`; for the
    tests and the benchmark)."""
    import numba

    from ._loops import scaled_scatter

    rho = np.ascontiguousarray(density, dtype=np.float64)
    z, y, x = np.nonzero(activity)
    if z.size == 0:
        return np.zeros(activity.shape, np.float32)
    kernels = _classes(spacing_zyx, rho, ends)
    half = tuple(int(v) for v in kernels.half_zyx[0])  # the lowest density reaches farthest
    off, _, link, chain, kid_start, straightness = _offsets(tuple(float(h) for h in spacing_zyx), half)
    table = _class_table(kernels, off)
    f_table, f_lo, f_inv = _fraction_table(kernels)
    stop = np.zeros(rho.shape, np.bool_) if ends is None else np.ascontiguousarray(ends, dtype=np.bool_)
    a = np.ascontiguousarray(activity[z, y, x], dtype=np.float64)
    chunks = max(1, min(int(numba.get_num_threads()), z.size))
    out = np.zeros((chunks, activity.size))
    diagonal = math.sqrt(sum(h * h for h in spacing_zyx))
    dead = DENSITY_CLASS_RATIO * dose_point_kernel("soft").range_mm * C.SOFT_TISSUE_DENSITY_G_PER_CM3
    _, ny, nx = activity.shape
    step = (off[:, 0] * ny + off[:, 1]) * nx + off[:, 2]
    with np.errstate(divide="ignore"):
        crit = straightness - diagonal / chain  # the origin's (-inf) is not read
    tail = _tail_depth_mm() * C.SOFT_TISSUE_DENSITY_G_PER_CM3 if truncate else math.inf
    z, y, x = z.astype(np.int64), y.astype(np.int64), x.astype(np.int64)
    scaled_scatter(_tiles(z, y, x, TILE_WIDTH), z, y, x, a, rho, stop, off, step, kid_start, link, chain, crit,
                   table, f_table, f_lo, f_inv, dead, tail, TAIL_DENSITY_G_PER_CM3,
                   _kernel_energy(spacing_zyx) if normalise else 0.0, float(scale), out)
    return out.sum(axis=0).reshape(activity.shape).astype(np.float32)


def scaled_kernel_reference(activity: NDArray[np.floating], density: NDArray[np.floating],
                            spacing_zyx: Sequence[float], *, scale: float,
                            samples_per_step: int = 16, normalise: bool = True) -> NDArray[np.float64]:
    """The brute-force density-scaled kernel (module docstring): every source to every voxel,
    the path mean sampled along the straight segment. Small grids only (O(sources x voxels x
    path samples)). ``normalise=False``: without the energy normalisation of each source."""
    rho = np.asarray(density, dtype=np.float64)
    shape = np.array(activity.shape)
    kernels = _classes(spacing_zyx, rho)
    energy = _kernel_energy(spacing_zyx)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in activity.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    out = np.zeros(grid.shape[0])
    for s in np.argwhere(activity != 0):
        d = grid - s
        steps = max(1, int(np.abs(d).max()))
        m = samples_per_step * steps
        u = (np.arange(m) + 0.5) / m
        pos = s[None, None, :] + u[None, :, None] * d[:, None, :]
        idx = np.clip(np.floor(pos + 0.5), 0, shape - 1).astype(np.int64)
        mean = rho[idx[..., 0], idx[..., 1], idx[..., 2]].mean(axis=1)
        k, w = _interpolate(kernels, mean)
        value = np.zeros(d.shape[0])
        for j in (0, 1):
            cls = k + j
            half = kernels.half_zyx[cls]
            inside = np.all(np.abs(d) <= half, axis=1)
            dims = 2 * half + 1
            flat = kernels.start[cls] + ((d[:, 0] + half[:, 0]) * dims[:, 1] + (d[:, 1] + half[:, 1])) * dims[:, 2] \
                + (d[:, 2] + half[:, 2])
            part = np.where(inside, kernels.table[np.where(inside, flat, 0)], 0.0)
            value += (w if j else 1.0 - w) * part
        # the engine's rule: normalised to the uniform medium's energy unless its kernel leaves the grid
        deposited = float((value * rho.reshape(-1)).sum())
        inside = bool(np.all(s - kernels.half_zyx[0] >= 0) and np.all(s + kernels.half_zyx[0] < shape))
        if normalise and inside and deposited > 0:
            value *= energy / deposited
        out += float(activity[tuple(s)]) * scale * value
    return out.reshape(activity.shape)
