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


@numba.njit(parallel=True, cache=True)
def scaled_scatter(src_z, src_y, src_x, src_a, density, ends, off, step, parent, link_mm, shell_start, ktab,
                   f_table, f_lo, f_inv_step, straightness, diagonal_mm, dead_mm, tail_mm, tail_density, energy, scale,
                   out):  # pragma: no cover
    """Density-scaled kernel dose of voxel sources, scattered into ``out[chunk]`` (flat, C order).

    ``density`` and ``ends`` are [z, y, x]. The offsets (``off``, [n, 3], (z, y, x), the origin
    first; ``step[j]`` the same offset in the flat C-order index of the grid) form a tree:
    ``parent[j]`` is the lattice point one Chebyshev step back along the line from the origin to
    ``off[j]``, ``link_mm[j]`` away. They are in breadth-first order, so Chebyshev shell by shell
    (shell ``n`` is ``shell_start[n]:shell_start[n + 1]``) with every parent before its children.
    For each source they are scanned in that order: at each offset the radiological length
    ``lr`` and the length ``lg`` of the chain grow by the link times the mean density of its two
    ends; the mean density ``lr / lg`` picks the kernel ``ktab[k, j]`` of the density classes,
    interpolated linearly between classes ``k`` and ``k + 1`` at the fractional class ``f`` read
    (linearly interpolated) from ``f_table`` (``f`` at densities ``f_lo + i / f_inv_step``;
    clamped to the classes). A chain is not followed further once no descendant can be dosed:
    ``lr * (straightness - diagonal_mm / lg) >= dead_mm`` (``straightness`` is the smallest
    |d| / lg of the lattice, ``dead_mm`` the kernel's range at the reference density times the
    class ratio); the scan ends after a shell where no chain goes on. A chain whose mean density
    is below ``tail_density`` is not followed beyond the radiological length ``tail_mm`` (the
    kernel's last 0.1 % of energy, in lung spread over the outer half of its reach). A chain that
    leaves the grid, or enters a voxel where ``ends`` is true (air outside the body), ends there.

    Each source's doses are then scaled so that the energy they deposit (sum of dose x density)
    is ``energy``, the kernel's in a uniform medium, unless one of its chains ended at the grid or
    at ``ends`` (that energy leaves, as it does with the other methods), or ``energy`` is 0.
    Sources are dealt to the chunks of ``out`` (``out.shape[0]``) in turn, one chunk per thread,
    so no two threads write the same array.
    """
    n_chunks = out.shape[0]
    nz, ny, nx = density.shape
    rho_flat = density.ravel()
    end_flat = ends.ravel()
    n_off = off.shape[0]
    n_src = src_z.shape[0]
    n_classes = ktab.shape[0]
    n_f = f_table.shape[0]
    n_shells = shell_start.shape[0] - 1
    hz = 0
    hy = 0
    hx = 0
    for j in range(n_off):
        hz = max(hz, abs(off[j, 0]))
        hy = max(hy, abs(off[j, 1]))
        hx = max(hx, abs(off[j, 2]))
    for c in numba.prange(n_chunks):
        st_a = np.empty((n_off, 3))
        val = np.zeros(n_off)
        hit = np.empty(n_off, np.int64)
        go = np.zeros(n_off, np.bool_)
        for i in range(c, n_src, n_chunks):
            z0 = src_z[i]
            y0 = src_y[i]
            x0 = src_x[i]
            base = (z0 * ny + y0) * nx + x0
            interior = z0 >= hz and z0 + hz < nz and y0 >= hy and y0 + hy < ny and x0 >= hx and x0 + hx < nx
            deposited = 0.0
            edge = False
            n_hit = 0
            for shell in range(n_shells):
                going = 0
                for j in range(shell_start[shell], shell_start[shell + 1]):
                    go[j] = False
                    if j > 0 and not go[parent[j]]:
                        continue
                    if not interior:
                        z = z0 + off[j, 0]
                        y = y0 + off[j, 1]
                        x = x0 + off[j, 2]
                        if z < 0 or z >= nz or y < 0 or y >= ny or x < 0 or x >= nx:
                            edge = True
                            continue
                    t_flat = base + step[j]
                    if j > 0 and end_flat[t_flat]:
                        edge = True
                        continue
                    rho = rho_flat[t_flat]
                    if j == 0:
                        lr = 0.0
                        lg = 0.0
                        mean = rho
                    else:
                        p = parent[j]
                        lr = st_a[p, 0] + link_mm[j] * 0.5 * (st_a[p, 2] + rho)
                        lg = st_a[p, 1] + link_mm[j]
                        mean = lr / lg
                    st_a[j, 0] = lr
                    st_a[j, 1] = lg
                    st_a[j, 2] = rho
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
                    v = (1.0 - w) * ktab[k, j] + w * ktab[k + 1, j]
                    val[n_hit] = v
                    hit[n_hit] = t_flat
                    n_hit += 1
                    deposited += v * rho
                    if j == 0 or (lr * (straightness - diagonal_mm / lg) < dead_mm
                                  and (mean >= tail_density or lr < tail_mm)):
                        go[j] = True
                        going += 1
                if going == 0:
                    break
            factor = 1.0
            if energy > 0.0 and not edge and deposited > 0.0:
                factor = energy / deposited
            a = src_a[i] * scale * factor
            for h in range(n_hit):
                v = val[h]
                if v != 0.0:
                    out[c, hit[h]] += a * v
