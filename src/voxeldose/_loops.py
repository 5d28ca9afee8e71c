"""numba loops. Private: validation happens in the public wrappers, never here.

Imported lazily by the modules that use it, so ``import voxeldose`` pays no JIT or numba import
cost. No ``fastmath``: results must be reproducible and comparable with the numpy references.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True)
def shell_cic_weights(r_mm, dirs, dir_w, spacing_zyx_mm, out):  # pragma: no cover - jitted
    """Angle-averaged tent overlap of spherical shells with a voxel lattice, one octant.

    For each radius ``r_mm[q]`` the points ``r * omega`` (``dirs`` are unit vectors in the
    positive octant, ``[n, 3]`` in (z, y, x), weights ``dir_w`` summing to 1) are distributed onto
    the lattice with cloud-in-cell (trilinear) weights, averaged over the 8 sign reflections and
    folded onto the octant ``out[q, kz, ky, kx]`` (value per lattice point, so that the sum over
    the full symmetric lattice is 1 for every radius).
    """
    nq = r_mm.shape[0]
    nz = out.shape[1]
    ny = out.shape[2]
    nx = out.shape[3]
    for q in numba.prange(nq):
        r = r_mm[q]
        for a in range(dirs.shape[0]):
            w = dir_w[a]
            pz = r * dirs[a, 0] / spacing_zyx_mm[0]
            py = r * dirs[a, 1] / spacing_zyx_mm[1]
            px = r * dirs[a, 2] / spacing_zyx_mm[2]
            iz = int(np.floor(pz))
            iy = int(np.floor(py))
            ix = int(np.floor(px))
            tz = pz - iz
            ty = py - iy
            tx = px - ix
            for dz in range(2):
                kz = iz + dz
                if kz >= nz:
                    continue
                wz = tz if dz == 1 else 1.0 - tz
                if kz > 0:
                    wz *= 0.5
                for dy in range(2):
                    ky = iy + dy
                    if ky >= ny:
                        continue
                    wy = ty if dy == 1 else 1.0 - ty
                    if ky > 0:
                        wy *= 0.5
                    for dx in range(2):
                        kx = ix + dx
                        if kx >= nx:
                            continue
                        wx = tx if dx == 1 else 1.0 - tx
                        if kx > 0:
                            wx *= 0.5
                        out[q, kz, ky, kx] += w * wz * wy * wx


@numba.njit(parallel=True, cache=True)
def scatter_convolve(src_z, src_y, src_x, src_a, plane_start, kernel, out):  # pragma: no cover
    """Full linear convolution of sparse sources with ``kernel`` into ``out`` (float64).

    Sources are sorted by their z index; ``plane_start[z]:plane_start[z + 1]`` are the sources in
    input plane ``z``. ``out`` has shape ``input_shape + kernel_shape - 1``; a source at input
    index (z, y, x) adds ``a * kernel`` with its corner at output index (z, y, x). Output planes
    are distributed over threads, so no two threads write the same element.
    """
    kz_n, ky_n, kx_n = kernel.shape
    nz_in = plane_start.shape[0] - 1
    for zo in numba.prange(out.shape[0]):
        for kz in range(kz_n):
            zs = zo - kz
            if zs < 0 or zs >= nz_in:
                continue
            for i in range(plane_start[zs], plane_start[zs + 1]):
                a = src_a[i]
                y0 = src_y[i]
                x0 = src_x[i]
                for ky in range(ky_n):
                    row = out[zo, y0 + ky]
                    krow = kernel[kz, ky]
                    for kx in range(kx_n):
                        row[x0 + kx] += a * krow[kx]


@numba.njit(parallel=True, cache=True)
def scan_planes(a, n_bad, n_neg, n_nonzero, neg_sum, minimum, box):  # pragma: no cover - jitted
    """One pass over a 3-D array, plane by plane (z) in parallel.

    Per plane z it writes: ``n_bad[z]`` non-finite values, ``n_neg[z]`` negative values and their
    sum ``neg_sum[z]``, ``n_nonzero[z]`` non-zero finite values, the smallest finite value ``minimum[z]``, and ``box[z] = (y_lo, y_hi,
    x_lo, x_hi)`` of the non-zero finite values (half-open; ``y_lo = -1`` when there are none).
    """
    nz, ny, nx = a.shape
    for z in numba.prange(nz):
        bad = 0
        neg = 0
        nonzero = 0
        s = 0.0
        m = np.inf
        y_lo = -1
        y_hi = -1
        x_lo = nx
        x_hi = -1
        for y in range(ny):
            for x in range(nx):
                v = a[z, y, x]
                if not np.isfinite(v):
                    bad += 1
                    continue
                if v < m:
                    m = v
                if v != 0:
                    nonzero += 1
                    if v < 0:
                        neg += 1
                        s += v
                    if y_lo < 0:
                        y_lo = y
                    y_hi = y + 1
                    if x < x_lo:
                        x_lo = x
                    if x + 1 > x_hi:
                        x_hi = x + 1
        n_bad[z] = bad
        n_neg[z] = neg
        n_nonzero[z] = nonzero
        neg_sum[z] = s
        minimum[z] = m
        box[z, 0] = y_lo
        box[z, 1] = y_hi
        box[z, 2] = x_lo
        box[z, 3] = x_hi
