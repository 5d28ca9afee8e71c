"""numba loops. Private: validation happens in the public wrappers, never here.

Imported lazily by the modules that use it, so ``import voxeldose`` pays no JIT or numba import
cost. No ``fastmath``: results must be reproducible and comparable with the numpy references.
"""

from __future__ import annotations

import numba
import numpy as np


# Serial: compiling a parallel loop costs ~0.7 s more on the first run after install (the cache is
# then on disk), and one kernel takes milliseconds to a tenth of a second. Without the GIL, so
# that the density classes of the scaled kernel (a dozen or more kernels) are computed on
# several threads at once (voxeldose.kernels._density_kernels).
@numba.njit(cache=True, nogil=True)
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
    for q in range(nq):
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


# Serial: memory-bound (44 ms parallel, 49 ms serial on a 256 x 256 x 300 float32 array, 2
# cores), and its parallel compile cost the first run after install ~0.8 s more.
@numba.njit(cache=True)
def scan_planes(a, n_bad, n_neg, n_nonzero, neg_sum, minimum, box):  # pragma: no cover - jitted
    """One pass over a 3-D array, plane by plane (z).

    Per plane z it writes: ``n_bad[z]`` non-finite values, ``n_neg[z]`` negative values and their
    sum ``neg_sum[z]``, ``n_nonzero[z]`` non-zero finite values, the smallest finite value ``minimum[z]``, and ``box[z] = (y_lo, y_hi,
    x_lo, x_hi)`` of the non-zero finite values (half-open; ``y_lo = -1`` when there are none).
    """
    nz, ny, nx = a.shape
    for z in range(nz):
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


@numba.njit(parallel=True, cache=True)
def scaled_scatter(tile_start, src_z, src_y, src_x, src_a, density, ends, off, step, kid_start, link_mm, chain_mm,
                   crit, ktab, f_table, f_lo, f_inv_step, dead_mm, tail_mm, tail_density, energy, scale,
                   out):  # pragma: no cover
    """Density-scaled kernel dose of voxel sources, scattered into ``out[chunk]`` (flat, C order).

    ``density`` and ``ends`` are [z, y, x]. The sources come in tiles: tile ``t`` is sources
    ``tile_start[t]:tile_start[t + 1]``, consecutive voxels along x in one row, so that the
    sources of a tile read and write neighbouring voxels at every offset (one cache line, where
    one source at a time would miss the cache at nearly every target: a source in lung reaches
    ~15,000 of them at 2 mm).

    The offsets (``off``, [n, 3], (z, y, x), the origin first; ``step[j]`` the same offset in the
    flat C-order index of the grid) form a tree: each offset's parent is the lattice point one
    Chebyshev step back along the line from the origin to it, ``link_mm[j]`` away, and
    ``chain_mm[j]`` is the length of the chain of links from the origin. They are numbered in the
    tree's breadth-first order, so the children of offset ``p`` are ``kid_start[p]:kid_start[p + 1]``
    and every parent comes before its children. For each source the tree is walked from the
    origin: at each offset the radiological length ``lr`` grows by the link times the mean
    density of its two ends; the mean density ``lr / chain_mm`` picks the kernel ``ktab[k, j]``
    of the density classes, interpolated linearly between classes ``k`` and ``k + 1`` at the
    fractional class ``f`` read (linearly interpolated) from ``f_table`` (``f`` at densities
    ``f_lo + i / f_inv_step``; clamped to the classes). A chain is not followed further once no
    descendant can be dosed: ``lr * crit[j] >= dead_mm`` (``crit`` is ``straightness - diagonal /
    chain_mm``, ``straightness`` the smallest |d| / chain of the lattice, ``dead_mm`` the kernel's
    range at the reference density times the class ratio). A chain whose mean density is below
    ``tail_density`` is not followed beyond the radiological length ``tail_mm`` (the kernel's
    last 0.1 % of energy, in lung spread over the outer half of its reach). A chain that leaves
    the grid, or enters a voxel where ``ends`` is true (air outside the body), ends there. Only
    the offsets whose chain goes on for some source of the tile keep a state (in walk order).

    Each source's doses are then scaled so that the energy they deposit (sum of dose x density)
    is ``energy``, the kernel's in a uniform medium, unless one of its chains ended at the grid or
    at ``ends`` (that energy leaves, as it does with the other methods), or ``energy`` is 0.
    Tiles are dealt to the chunks of ``out`` (``out.shape[0]``) in turn, one chunk per thread,
    so no two threads write the same array.
    """
    n_chunks = out.shape[0]
    nz, ny, nx = density.shape
    rho_flat = density.ravel()
    end_flat = ends.ravel()
    n_off = off.shape[0]
    n_tiles = tile_start.shape[0] - 1
    n_classes = ktab.shape[0]
    n_f = f_table.shape[0]
    hz = 0
    hy = 0
    hx = 0
    for j in range(n_off):
        hz = max(hz, abs(off[j, 0]))
        hy = max(hy, abs(off[j, 1]))
        hx = max(hx, abs(off[j, 2]))
    width = 1
    for t in range(n_tiles):
        width = max(width, tile_start[t + 1] - tile_start[t])
    for c in numba.prange(n_chunks):
        # the walk's queue: offset, and per source of the tile whether its chain goes on, its
        # radiological length and the density at its end (pages are touched only as far as used)
        q_node = np.empty(n_off, np.int64)
        q_go = np.empty((n_off, width), np.bool_)
        q_lr = np.empty((n_off, width))
        q_rho = np.empty((n_off, width))
        val = np.empty((n_off, width))
        hit = np.empty(n_off, np.int64)
        deposited = np.empty(width)
        edge = np.empty(width, np.bool_)
        amp = np.empty(width)
        for tile in range(c, n_tiles, n_chunks):
            i0 = tile_start[tile]
            n = tile_start[tile + 1] - i0
            z0 = src_z[i0]
            y0 = src_y[i0]
            x0 = src_x[i0]
            base = (z0 * ny + y0) * nx + x0
            interior = (z0 >= hz and z0 + hz < nz and y0 >= hy and y0 + hy < ny and x0 >= hx
                        and x0 + n - 1 + hx < nx)
            n_q = 1
            q_node[0] = 0
            n_hit = 1
            hit[0] = 0
            for s in range(n):
                rho = rho_flat[base + s]
                v = _class_kernel(rho, 0, ktab, f_table, f_lo, f_inv_step, n_classes, n_f)
                val[0, s] = v
                deposited[s] = v * rho
                edge[s] = False
                q_go[0, s] = True
                q_lr[0, s] = 0.0
                q_rho[0, s] = rho
            head = 0
            while head < n_q:
                p = q_node[head]
                for j in range(kid_start[p], kid_start[p + 1]):
                    sj = step[j]
                    lg = chain_mm[j]
                    half_link = 0.5 * link_mm[j]
                    cr = crit[j]
                    lo_s = 0
                    hi_s = n
                    if not interior:
                        z = z0 + off[j, 0]
                        y = y0 + off[j, 1]
                        if z < 0 or z >= nz or y < 0 or y >= ny:
                            hi_s = 0
                        else:
                            x = x0 + off[j, 2]
                            lo_s = max(0, -x)
                            hi_s = min(n, nx - x)
                    any_hit = False
                    any_go = False
                    for s in range(n):
                        val[n_hit, s] = 0.0
                        q_go[n_q, s] = False
                        if not q_go[head, s]:
                            continue
                        if s < lo_s or s >= hi_s:
                            edge[s] = True
                            continue
                        t_flat = base + s + sj
                        if end_flat[t_flat]:
                            edge[s] = True
                            continue
                        rho = rho_flat[t_flat]
                        lr = q_lr[head, s] + half_link * (q_rho[head, s] + rho)
                        mean = lr / lg
                        v = _class_kernel(mean, j, ktab, f_table, f_lo, f_inv_step, n_classes, n_f)
                        val[n_hit, s] = v
                        deposited[s] += v * rho
                        any_hit = True
                        if lr * cr < dead_mm and (mean >= tail_density or lr < tail_mm):
                            q_go[n_q, s] = True
                            q_lr[n_q, s] = lr
                            q_rho[n_q, s] = rho
                            any_go = True
                    if any_hit:
                        hit[n_hit] = sj
                        n_hit += 1
                    if any_go:
                        q_node[n_q] = j
                        n_q += 1
                head += 1
            for s in range(n):
                factor = 1.0
                if energy > 0.0 and not edge[s] and deposited[s] > 0.0:
                    factor = energy / deposited[s]
                amp[s] = src_a[i0 + s] * scale * factor
            for h in range(n_hit):
                t0 = base + hit[h]
                for s in range(n):
                    v = val[h, s]
                    if v != 0.0:  # 0 where source s did not reach this offset: t0 + s may lie off the grid
                        out[c, t0 + s] += amp[s] * v


@numba.njit(inline="always", cache=True)
def _class_kernel(mean, j, ktab, f_table, f_lo, f_inv_step, n_classes, n_f):  # pragma: no cover - jitted
    """The kernel at offset ``j`` of the mean density ``mean``: linear between the density
    classes at the fractional class read (linearly interpolated) from ``f_table``."""
    g = (mean - f_lo) * f_inv_step
    if g <= 0.0:
        f = f_table[0]
    elif g >= n_f - 1:
        f = f_table[n_f - 1]
    else:
        b = int(g)
        t = g - b
        f = (1.0 - t) * f_table[b] + t * f_table[b + 1]
    if f <= 0.0:
        k = 0
        w = 0.0
    elif f >= n_classes - 1:
        k = n_classes - 2
        w = 1.0
    else:
        k = int(f)
        w = f - k
    return (1.0 - w) * ktab[k, j] + w * ktab[k + 1, j]
