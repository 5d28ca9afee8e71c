"""Planar contours to a fractional mask: in-plane coverage and shape-based interpolation across planes.

Pure numpy/scipy on contours already mapped to continuous reference indices (i, j, k); the
DICOM side is :mod:`voxeldose.io.vois`, whose documentation states the model. In short:

- Each contour plane is rasterised on a sub-grid of the reference pixels (exact along sampling
  lines, :func:`plane_coverage`) and turned into a signed distance ``d`` (mm, < 0 inside) and the
  equivalent radius ``r`` (mm) of the part each point belongs to (or is nearest to).
- Between planes the field ``phi = d (d + 2 r)`` is interpolated along the slice normal with
  quadratic Lagrange polynomials (the mean of the two 3-plane stencils around an interval). For
  a circle of radius ``r``, ``phi = rho**2 - r**2`` (``rho`` the distance from the centre); for a
  sphere or a spheroid about the slice normal this is exactly quadratic in the plane position,
  so the interpolated surface is the true one. For any shape, ``phi`` has the sign of ``d``, so
  each contour plane is reproduced exactly.
- Beyond the first and last planes of a run of planes, the cross-section area is extrapolated
  quadratically (through the last three planes; linearly through two). An end that closes within
  one plane spacing ``h`` ends where the extrapolated area reaches 0 (a rounded end: exact for a
  sphere, an ellipsoid or a cone, whose areas are quadratic in the position); an end that does
  not close within ``h`` (a flat end, e.g. a cylinder) ends at ``h / 2 + h**2 / (2 c)`` with
  ``c`` the extrapolated closing distance (infinite when the area does not shrink): half a
  spacing, the usual convention, for a flat end, and continuous with the rounded rule at
  ``c = h``. In the cap the shape follows the extrapolated ``phi`` and never leaves the last
  contour.
- The reference voxel's value is the mean of the sub-samples' coverage over the voxel: in the
  plane, a sub-sample's coverage is ``clip(1/2 - d / pitch, 0, 1)``; along the normal, a
  midpoint rule over sub-planes, cut exactly at the ends. The pitch is the ROI's largest
  section's equivalent radius / :data:`SHAPE_SAMPLES_PER_RADIUS`, at least
  :data:`SHAPE_PITCH_MM`, with 2 to :data:`MAX_SHAPE_SUB` sub-samples per voxel edge.

References
----------
Raya SP, Udupa JK. Shape-based interpolation of multidimensional objects. IEEE Trans Med Imaging
9:32-42, 1990. doi:10.1109/42.52980 (interpolating a distance field rather than the grey values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .._checks import check_allocation

__all__ = ["plane_coverage", "rasterise_contours", "end_extent", "SHAPE_PITCH_MM", "SHAPE_SAMPLES_PER_RADIUS",
           "MAX_SHAPE_SUB", "MAX_PHI_CURVATURE"]

#: Finest distance (mm) between the sub-samples of a reference voxel, in the plane and along
#: the slice normal, for the interpolation between contour planes.
SHAPE_PITCH_MM = 0.5

#: The sub-sample distance of an ROI is its largest section's equivalent radius divided by this
#: (but at least :data:`SHAPE_PITCH_MM`): a 20 mm sphere is sampled every 0.5 mm, a liver
#: every 2-4 mm. Partial-volume sampling errors scale with pitch / radius.
SHAPE_SAMPLES_PER_RADIUS = 20.0

#: Most sub-samples per reference voxel edge (in the plane and along the normal).
MAX_SHAPE_SUB = 8

#: Largest second derivative of ``phi`` along the normal (dimensionless) that the interpolation
#: between two planes follows in full: 2 for a sphere, ``2 (a / c)**2`` for a spheroid with
#: semi-axis ``c`` along the normal; 8 allows spheroids twice as wide as tall.
MAX_PHI_CURVATURE = 8.0

#: Sampling lines per sub-grid row in :func:`plane_coverage` (exact along each line).
_LINES_PER_SUBROW = 2

#: Most sub-samples evaluated in one group of sub-planes (:meth:`_Run.shapes_at`): about 16 MB
#: per float64 array, a handful of which are alive at once.
_GROUP_ELEMENTS = 2_000_000


def plane_coverage(rings: list[NDArray[np.float64]], n_sub: int) -> tuple[int, int, NDArray[np.float64]]:
    """Fraction of each pixel inside polygons (even-odd rule), in continuous pixel indices.

    Pixel (j, i) covers [i - 0.5, i + 0.5] x [j - 0.5, j + 0.5]. Each pixel row is crossed by
    ``n_sub`` evenly spaced sampling lines; along a line the inside length in each pixel is exact.

    Parameters
    ----------
    rings : list of ndarray (N, 2)
        Polygons as (i, j) continuous indices, closed implicitly.
    n_sub : int
        Sampling lines per pixel row.

    Returns
    -------
    j0, i0 : int
        Index of the first row and column of the returned box (may be negative).
    coverage : ndarray, float64, [rows, columns]
        Fraction (0-1) of each pixel of the box inside the polygons; the box holds every pixel
        the polygons touch.
    """
    pts = np.concatenate(rings)
    i0 = int(math.floor(pts[:, 0].min() + 0.5))
    i1 = int(math.floor(pts[:, 0].max() + 0.5))
    j0 = int(math.floor(pts[:, 1].min() + 0.5))
    j1 = int(math.floor(pts[:, 1].max() + 0.5))
    width, height = i1 - i0 + 1, j1 - j0 + 1
    n_lines = height * n_sub
    # edges of every ring
    a = np.concatenate(rings)
    b = np.concatenate([np.concatenate([r[1:], r[:1]]) for r in rings])  # each edge's end: the next point
    y_base = j0 - 0.5
    ya, yb = a[:, 1], b[:, 1]
    ylo, yhi = np.minimum(ya, yb), np.maximum(ya, yb)
    # line s lies at y_s = y_base + (s + 0.5) / n_sub; an edge crosses lines with ylo <= y_s < yhi
    s_lo = np.ceil((ylo - y_base) * n_sub - 0.5).astype(np.int64)
    s_hi = np.ceil((yhi - y_base) * n_sub - 0.5).astype(np.int64)
    s_lo = np.minimum(np.maximum(s_lo, 0), n_lines)
    s_hi = np.minimum(np.maximum(s_hi, 0), n_lines)
    counts = np.maximum(s_hi - s_lo, 0)
    n_cross = int(counts.sum())
    check_allocation(n_lines * (width + 1), f"rasterising a contour {width} x {height} voxels wide, sampled {n_sub} "
                     "times per row", "is the contour far larger than the image?")
    cov = np.zeros((n_lines, width + 1))
    if n_cross:
        edge = np.repeat(np.arange(len(a)), counts)
        start = np.cumsum(counts) - counts
        s = s_lo[edge] + (np.arange(n_cross) - start[edge])
        y = y_base + (s + 0.5) / n_sub
        t = (y - ya[edge]) / (yb[edge] - ya[edge])
        x = a[edge, 0] + t * (b[edge, 0] - a[edge, 0])
        order = np.lexsort((x, s))
        s, x = s[order], x[order]
        first = np.searchsorted(s, s, side="left")
        sign = np.where((np.arange(n_cross) - first) % 2 == 0, 1.0, -1.0)
        # inside length left of X on a line: sum over crossings of sign * max(X - x, 0)
        u = np.clip(x - (i0 - 0.5), 0.0, float(width))  # from the box's left edge, in pixels
        p = np.minimum(np.floor(u).astype(np.int64), width - 1)
        flat = cov.reshape(-1)
        cols = width + 1
        # the pixel that holds the crossing gets the part right of it ...
        flat += np.bincount(s * cols + p, weights=sign * (p + 1 - u), minlength=flat.size)
        # ... and every pixel after it the whole width (a step, summed along the line below)
        step = np.bincount(s * cols + p + 1, weights=sign, minlength=flat.size).reshape(n_lines, cols)
        cov += np.cumsum(step, axis=1)
    lines = cov[:, :width]
    coverage = lines.reshape(height, n_sub, width).mean(axis=1)
    return j0, i0, np.clip(coverage, 0.0, 1.0)


def end_extent(areas: NDArray[np.float64], positions: NDArray[np.float64], fallback_step: float) -> float:
    """How far (index units) a run of contour planes reaches beyond its last plane.

    ``areas`` and ``positions`` are those of the last (up to three) planes, ordered towards the
    end: ``positions`` increase (or decrease) monotonically and the end lies beyond
    ``positions[-1]``. See the module documentation for the rule.

    Parameters
    ----------
    areas : ndarray (n,), n = 1, 2 or 3
        Cross-section areas (any unit) of the planes.
    positions : ndarray (n,)
        Their positions along the normal (index units).
    fallback_step : float
        Plane spacing (index units) for a run of one plane.

    Returns
    -------
    float
        The extent beyond the last plane, in ``(0, h]`` with ``h`` the last plane spacing.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([2.5, 5.0, 7.5])  # a sphere of radius 10, planes every 2.5
    >>> round(end_extent(np.pi * (100 - z**2), z, 1.0), 9)  # closes at the pole
    2.5
    >>> end_extent(np.array([4.0, 4.0, 4.0]), z, 1.0)  # a cylinder: half a spacing
    1.25
    """
    n = len(areas)
    if n == 1:
        return fallback_step / 2.0
    t = (positions - positions[-1]) * (1.0 if positions[-1] > positions[0] else -1.0)  # <= 0, last at 0
    h = float(-t[-2])
    if float(areas[-1]) > 0.0 and float(np.ptp(areas)) <= 1e-12 * float(np.max(np.abs(areas))):
        return h / 2.0  # a constant area (a cylinder): no root; the fit below would find a round-off one
    coef = np.polyfit(t, areas, n - 1)  # exact fit through 2 or 3 points
    roots = np.roots(coef) if np.any(coef[:-1] != 0) else np.array([])
    # a double root (a cone's apex: the area ~ (c - t)**2) comes out as a complex pair with a
    # round-off imaginary part; a pair that close to the axis is a touching, i.e. a closing
    real = roots[np.abs(roots.imag) <= 1e-4 * h].real
    ahead = real[real > 0]
    if float(areas[-1]) <= 0.0:
        return 1e-9 * h  # the last plane encloses nothing: the run ends there
    c = float(ahead.min()) if ahead.size else math.inf
    if c <= h:
        return c
    return h / 2.0 + h * h / (2.0 * c)


@dataclass
class _Plane:
    phi: NDArray[np.float64]  # d (d + 2 r), mm^2
    r: NDArray[np.float64]  # equivalent radius of the part, mm
    area: float  # mm^2


class _Run:
    """The contour planes of one run (no gap) of an ROI, on one sub-grid."""

    def __init__(self, rings_by_plane: list[list[NDArray[np.float64]]], k: NDArray[np.float64],
                 pixel_mm: tuple[float, float], sz_mm: float, f: int) -> None:
        self.k = k
        self.sz_mm = sz_mm
        self.f = f
        self.pitch_xy = (pixel_mm[0] / f, pixel_mm[1] / f)
        self.pitch = 0.5 * (self.pitch_xy[0] + self.pitch_xy[1])
        pts = np.concatenate([np.concatenate(r) for r in rings_by_plane])
        # reference pixel box (with a margin of one pixel outside every contour)
        self.i0 = int(math.floor(pts[:, 0].min() + 0.5)) - 1
        self.j0 = int(math.floor(pts[:, 1].min() + 0.5)) - 1
        self.width = int(math.floor(pts[:, 0].max() + 0.5)) + 1 - self.i0 + 1
        self.height = int(math.floor(pts[:, 1].max() + 0.5)) + 1 - self.j0 + 1
        self._rings = rings_by_plane
        self._cache: dict[int, _Plane] = {}

    def plane(self, m: int) -> _Plane:
        got = self._cache.get(m)
        if got is None:
            got = self._cache[m] = self._field(self._rings[m])
        return got

    def forget_before(self, m: int) -> None:
        for key in [key for key in self._cache if key < m]:
            del self._cache[key]

    def _field(self, rings: list[NDArray[np.float64]]) -> _Plane:
        from scipy import ndimage  # here, not at import: scipy.ndimage costs ~0.25 s

        f = self.f
        # continuous sub-grid indices: reference pixel i spans sub-pixels f (i - i0) .. + f - 1
        sub = [np.column_stack([(r[:, 0] - self.i0 + 0.5) * f - 0.5, (r[:, 1] - self.j0 + 0.5) * f - 0.5])
               for r in rings]
        shape = (self.height * f, self.width * f)
        cov = np.zeros(shape)
        j0, i0, box = plane_coverage(sub, _LINES_PER_SUBROW)
        cov[j0:j0 + box.shape[0], i0:i0 + box.shape[1]] = box  # the margin keeps the box inside
        px, py = self.pitch_xy
        area = float(cov.sum()) * px * py
        if area <= 0.0:
            # contours that enclose nothing (a pole drawn as a point-like polygon): a section of
            # radius 0 at the contour points, phi = distance**2, as a sphere's phi at its pole
            seed = np.zeros(shape, bool)
            pts = np.concatenate(sub)
            jj = np.clip(np.rint(pts[:, 1]).astype(np.int64), 0, shape[0] - 1)
            ii = np.clip(np.rint(pts[:, 0]).astype(np.int64), 0, shape[1] - 1)
            seed[jj, ii] = True
            dist = ndimage.distance_transform_edt(~seed, sampling=(py, px))
            return _Plane(dist * dist, np.zeros(shape), 0.0)
        inside = cov >= 0.5
        if not inside.any():  # a contour smaller than a sub-sample: its best-covered samples
            inside = cov >= cov.max()
        labels, n = ndimage.label(inside, structure=np.ones((3, 3), bool))
        if n > 1:
            d_out, nearest = ndimage.distance_transform_edt(~inside, sampling=(py, px), return_indices=True)
        else:
            d_out = ndimage.distance_transform_edt(~inside, sampling=(py, px))
        half = 0.5 * self.pitch
        d = d_out - half
        # the distance inside, to the nearest sample outside: that sample lies within the inside
        # samples' bounding box grown by one sample (whose rim is all outside; a sample beyond
        # it is strictly farther than its projection onto the rim), so the transform runs on that
        # box only. The same masks to the bit as the whole box's transform in every case tested
        # (tests/io/test_rasterise.py); only an exact tie between two nearest samples, which
        # the transform may break differently on a smaller box, could differ (by a rounding of
        # the distance, on anisotropic pixels)
        rows, cols = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
        grown = (slice(max(int(rows[0]) - 1, 0), int(rows[-1]) + 2),
                 slice(max(int(cols[0]) - 1, 0), int(cols[-1]) + 2))
        inside_grown = inside[grown]
        d_in = ndimage.distance_transform_edt(inside_grown, sampling=(py, px))
        d_grown = d[grown]
        d_grown[inside_grown] = -(d_in[inside_grown] - half)
        edge = (cov > 0.0) & (cov < 1.0)
        d[edge] = (0.5 - cov[edge]) * self.pitch  # sub-sample coverage is reproduced exactly
        # each part's area: ndimage.sum_labels does this bincount
        part_area = np.bincount(labels.reshape(-1), weights=cov.reshape(-1), minlength=n + 1)[1:n + 1] * px * py
        r_part = np.concatenate([[0.0], np.sqrt(part_area / math.pi)])
        # the part each sample belongs to or is nearest to (every nearest sample is inside, in a part)
        if n > 1:
            r = r_part[labels[nearest[0], nearest[1]]]
        else:
            r = np.full(shape, r_part[1])
        d = np.maximum(d, -r)  # phi = d (d + 2 r) increases with d from d = -r
        return _Plane(d * (d + 2.0 * r), r, area)

    def weights_at(self, z: float) -> tuple[tuple[str, int], dict[int, float]]:
        """The interpolation weights of the contour planes at ``z``, and the kind of stencil.

        The kind (``("one", 0)``, ``("cap", m)`` or ``("in", j)``) is the same for every ``z``
        whose weights are over the same planes in the same order, so :meth:`shapes_at` can
        evaluate those positions together.
        """
        k = self.k
        last = len(k) - 1
        if last == 0:
            return ("one", 0), {0: 1.0}
        if z < k[0] or z > k[last]:  # an end cap: extrapolate from the outermost planes
            ms = list(range(min(3, last + 1))) if z < k[0] else list(range(last, max(last - 3, -1), -1))
            return ("cap", 0 if z < k[0] else last), dict(zip(ms, _lagrange(k[ms], z)))
        j = min(int(np.searchsorted(k, z, side="right")) - 1, last - 1)
        stencils: list[tuple[int, ...]] = [
            s for s in ((j - 1, j, j + 1), (j, j + 1, j + 2)) if s[0] >= 0 and s[-1] <= last]
        if not stencils:
            stencils = [(j, j + 1)]
        weights: dict[int, float] = {}
        for s in stencils:
            for wi, m in zip(_lagrange(k[list(s)], z), s):
                weights[m] = weights.get(m, 0.0) + wi / len(stencils)
        return ("in", j), weights

    def shapes_at(self, zs: list[float], kind: tuple[str, int],
                  per_z: list[dict[int, float]]) -> NDArray[np.float64]:
        """Sub-sample coverage (0-1) of the run at positions ``zs``, all of one ``kind`` with the
        weights ``per_z`` over the same planes in the same order (:meth:`weights_at`).

        Evaluated together, position by position the same operations as one at a time: the
        same numbers to the bit, in fewer (larger) array operations.
        """
        order = list(per_z[0])
        n = len(zs)
        first = self.plane(order[0]).phi
        phi = np.zeros((n,) + first.shape)
        r = np.zeros_like(phi)
        for m in order:
            wi = np.array([w[m] for w in per_z]).reshape(n, 1, 1)
            plane = self.plane(m)
            phi += wi * plane.phi
            r += wi * plane.r
        np.maximum(r, 0.0, out=r)
        if kind[0] == "cap":
            np.maximum(phi, self.plane(kind[1]).phi, out=phi)  # never outside the end contour
        elif kind[0] == "in":
            # within MAX_PHI_CURVATURE / 2 t (1 - t) h**2 of the two bounding planes' range: where
            # the planes disagree wildly (a part that appears or vanishes), the parabola may not
            # open a point that is outside in both planes (or close one inside in both)
            j = kind[1]
            k = self.k
            a, b = self.plane(j), self.plane(j + 1)
            band = np.array([0.5 * MAX_PHI_CURVATURE * ((z - k[j]) * (k[j + 1] - z)) * self.sz_mm**2
                             for z in zs]).reshape(n, 1, 1)
            np.clip(phi, np.minimum(a.phi, b.phi) - band, np.maximum(a.phi, b.phi) + band, out=phi)
        s2 = r * r + phi
        d = np.where(s2 > 0.0, np.sqrt(np.maximum(s2, 0.0)) - r, -r)
        return np.clip(0.5 - d / self.pitch, 0.0, 1.0)


def _shoelace(ring: NDArray[np.float64]) -> float:
    """Signed area of a polygon (index units)."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _lagrange(nodes: NDArray[np.float64], z: float) -> list[float]:
    """Lagrange interpolation weights of ``nodes`` at ``z``."""
    out = []
    for a, za in enumerate(nodes):
        w = 1.0
        for b, zb in enumerate(nodes):
            if a != b:
                w *= (z - zb) / (za - zb)
        out.append(float(w))
    return out


def rasterise_contours(
    rings_by_plane: list[list[NDArray[np.float64]]],
    plane_k: NDArray[np.float64],
    shape: tuple[int, int, int],
    spacing_xyz_mm: tuple[float, float, float],
    *,
    fallback_step: float,
    gap_break_factor: float,
) -> tuple[NDArray[np.float32], float, float]:
    """Fractional mask [z, y, x] of one ROI's planar contours; also its volume inside the grid and in all.

    Parameters
    ----------
    rings_by_plane : list (one per plane) of lists of ndarray (N, 2)
        The contours of each plane as continuous reference indices (i, j).
    plane_k : ndarray
        The planes' positions along the slice normal (continuous index k), ascending.
    shape : (nz, ny, nx)
        The reference grid.
    spacing_xyz_mm : (x, y, z)
        Its voxel size.
    fallback_step : float
        Plane spacing (index units) for an ROI drawn on one plane.
    gap_break_factor : float
        A gap wider than this many typical plane spacings separates two runs.

    Returns
    -------
    mask : ndarray float32 [z, y, x], 0-1
    inside, total : float
        Volume (voxel units) inside the grid and of the whole ROI.
    """
    nz, ny, nx = shape
    out = np.zeros(shape, np.float32)  # float32 like the result: a CT-sized grid is large
    gaps = np.diff(plane_k)
    step = float(np.median(gaps)) if gaps.size else fallback_step
    breaks = np.nonzero(gaps > gap_break_factor * step)[0]
    # sub-sample distance from the largest section (shoelace areas; holes add, which only coarsens)
    px_mm, py_mm = spacing_xyz_mm[0], spacing_xyz_mm[1]
    largest_mm2 = max(sum(abs(_shoelace(r)) for r in rings) for rings in rings_by_plane) * px_mm * py_mm
    pitch = max(SHAPE_PITCH_MM, math.sqrt(largest_mm2 / math.pi) / SHAPE_SAMPLES_PER_RADIUS)
    f = int(min(MAX_SHAPE_SUB, max(2, math.ceil(max(px_mm, py_mm) / pitch))))
    n_z = int(min(MAX_SHAPE_SUB, max(2, math.ceil(spacing_xyz_mm[2] / pitch))))
    total = 0.0
    written = [nz, 0, ny, 0, nx, 0]  # the box of ``out`` the runs write: (z, y, x) from, to
    for first, last in zip(np.r_[0, breaks + 1], np.r_[breaks, len(plane_k) - 1]):
        k = plane_k[first:last + 1]
        run = _Run(rings_by_plane[first:last + 1], k, (spacing_xyz_mm[0], spacing_xyz_mm[1]), spacing_xyz_mm[2], f)
        n = len(k)
        head = np.array([run.plane(m).area for m in range(min(3, n))])
        tail = np.array([run.plane(m).area for m in range(max(0, n - 3), n)])
        lo = k[0] - end_extent(head[::-1], k[:3][::-1], step)
        hi = k[-1] + end_extent(tail, k[-3:], step)
        # the sub-planes (slice, part of the slice) in order; consecutive ones of one stencil
        # kind are evaluated together, at most _GROUP_ELEMENTS sub-samples at a time
        subs = []
        for kk in range(int(math.floor(lo + 0.5)), int(math.floor(hi + 0.5)) + 1):
            for s in range(n_z):
                a = max(kk - 0.5 + s / n_z, lo)
                b = min(kk - 0.5 + (s + 1) / n_z, hi)
                if b > a:
                    z = 0.5 * (a + b)
                    kind, weights = run.weights_at(z)
                    subs.append((kk, a, b, z, kind, weights))
        per_group = max(1, _GROUP_ELEMENTS // (run.height * f * run.width * f))
        ja, jb = max(run.j0, 0), min(run.j0 + run.height, ny)
        ia, ib = max(run.i0, 0), min(run.i0 + run.width, nx)
        g0 = 0
        while g0 < len(subs):
            g1 = g0 + 1
            while (g1 < len(subs) and g1 - g0 < per_group and subs[g1][4] == subs[g0][4]
                   and list(subs[g1][5]) == list(subs[g0][5])):  # one kind, the same planes in the same order
                g1 += 1
            group = subs[g0:g1]
            run.forget_before(min(int(np.searchsorted(k, group[0][3])) - 2, n - 3))  # keep the stencil's planes
            covs = run.shapes_at([g[3] for g in group], group[0][4], [g[5] for g in group])
            blocks = covs.reshape(len(group), run.height, f, run.width, f).mean(axis=(2, 4))
            for (kk, a, b, _, _, _), block in zip(group, blocks):
                total += (b - a) * float(block.sum())
                if 0 <= kk < nz and ja < jb and ia < ib:
                    out[kk, ja:jb, ia:ib] += (b - a) * block[ja - run.j0:jb - run.j0, ia - run.i0:ib - run.i0]
                    written = [min(written[0], kk), max(written[1], kk + 1), min(written[2], ja),
                               max(written[3], jb), min(written[4], ia), max(written[5], ib)]
            g0 = g1
    box = out[written[0]:written[1], written[2]:written[3], written[4]:written[5]]  # 0 elsewhere
    np.clip(box, 0.0, 1.0, out=box)
    return out, float(out.sum(dtype=np.float64)), total
