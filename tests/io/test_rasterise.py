"""The RTSTRUCT rasteriser's faster evaluation gives the same masks to the bit.

``voxeldose.io._rasterise`` evaluates the sub-planes of one stencil together, takes the distance
inside a contour on the inside samples' bounding box, sums the parts' areas with one
``bincount`` and skips the nearest-part lookup for a plane of one part (issue 15). The
references below are the straightforward evaluation it replaced: one sub-plane at a time, both
distance transforms on the whole box, ``ndimage.sum_labels`` and the lookup always. Masks,
volumes inside the grid and total volumes must be equal bit for bit: nothing numerical changes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from voxeldose.io import _rasterise as R


class _ReferenceRun(R._Run):
    def _field(self, rings):  # the whole-box evaluation
        f = self.f
        sub = [np.column_stack([(r[:, 0] - self.i0 + 0.5) * f - 0.5, (r[:, 1] - self.j0 + 0.5) * f - 0.5])
               for r in rings]
        shape = (self.height * f, self.width * f)
        cov = np.zeros(shape)
        j0, i0, box = R.plane_coverage(sub, R._LINES_PER_SUBROW)
        cov[j0:j0 + box.shape[0], i0:i0 + box.shape[1]] = box
        px, py = self.pitch_xy
        area = float(cov.sum()) * px * py
        if area <= 0.0:
            return super()._field(rings)  # the pole: unchanged code
        inside = cov >= 0.5
        if not inside.any():
            inside = cov >= cov.max()
        d_out, nearest = ndimage.distance_transform_edt(~inside, sampling=(py, px), return_indices=True)
        d_in = ndimage.distance_transform_edt(inside, sampling=(py, px))
        half = 0.5 * self.pitch
        d = np.where(inside, -(d_in - half), d_out - half)
        edge = (cov > 0.0) & (cov < 1.0)
        d[edge] = (0.5 - cov[edge]) * self.pitch
        labels, n = ndimage.label(inside, structure=np.ones((3, 3), bool))
        part_area = ndimage.sum_labels(cov, labels, index=np.arange(1, n + 1)) * px * py
        r_part = np.concatenate([[0.0], np.sqrt(part_area / math.pi)])
        r = r_part[labels[nearest[0], nearest[1]]]
        d = np.maximum(d, -r)
        return R._Plane(d * (d + 2.0 * r), r, area)

    def shape_at(self, z):  # one sub-plane, scalar weights
        k, last = self.k, len(self.k) - 1
        kind, weights = self.weights_at(z)
        phi = np.zeros_like(self.plane(next(iter(weights))).phi)
        r = np.zeros_like(phi)
        for m, wi in weights.items():
            phi += wi * self.plane(m).phi
            r += wi * self.plane(m).r
        np.maximum(r, 0.0, out=r)
        if kind[0] == "cap":
            np.maximum(phi, self.plane(0 if z < k[0] else last).phi, out=phi)
        elif kind[0] == "in":
            j = int(kind[1])
            a, b = self.plane(j), self.plane(j + 1)
            band = 0.5 * R.MAX_PHI_CURVATURE * ((z - k[j]) * (k[j + 1] - z)) * self.sz_mm**2
            np.clip(phi, np.minimum(a.phi, b.phi) - band, np.maximum(a.phi, b.phi) + band, out=phi)
        s2 = r * r + phi
        d = np.where(s2 > 0.0, np.sqrt(np.maximum(s2, 0.0)) - r, -r)
        return np.clip(0.5 - d / self.pitch, 0.0, 1.0)


def _reference(rings_by_plane, plane_k, shape, spacing, *, fallback_step, gap_break_factor):
    """rasterise_contours as it was: every sub-plane on its own, the whole grid clipped."""
    nz, ny, nx = shape
    out = np.zeros(shape, np.float32)
    gaps = np.diff(plane_k)
    step = float(np.median(gaps)) if gaps.size else fallback_step
    breaks = np.nonzero(gaps > gap_break_factor * step)[0]
    largest = max(sum(abs(R._shoelace(r)) for r in rings) for rings in rings_by_plane) * spacing[0] * spacing[1]
    pitch = max(R.SHAPE_PITCH_MM, math.sqrt(largest / math.pi) / R.SHAPE_SAMPLES_PER_RADIUS)
    f = int(min(R.MAX_SHAPE_SUB, max(2, math.ceil(max(spacing[0], spacing[1]) / pitch))))
    n_z = int(min(R.MAX_SHAPE_SUB, max(2, math.ceil(spacing[2] / pitch))))
    total = 0.0
    for first, last in zip(np.r_[0, breaks + 1], np.r_[breaks, len(plane_k) - 1]):
        k = plane_k[first:last + 1]
        run = _ReferenceRun(rings_by_plane[first:last + 1], k, spacing[:2], spacing[2], f)
        n = len(k)
        head = np.array([run.plane(m).area for m in range(min(3, n))])
        tail = np.array([run.plane(m).area for m in range(max(0, n - 3), n)])
        lo = k[0] - R.end_extent(head[::-1], k[:3][::-1], step)
        hi = k[-1] + R.end_extent(tail, k[-3:], step)
        for kk in range(int(math.floor(lo + 0.5)), int(math.floor(hi + 0.5)) + 1):
            for s in range(n_z):
                a, b = max(kk - 0.5 + s / n_z, lo), min(kk - 0.5 + (s + 1) / n_z, hi)
                if b <= a:
                    continue
                block = run.shape_at(0.5 * (a + b)).reshape(run.height, f, run.width, f).mean(axis=(1, 3))
                total += (b - a) * float(block.sum())
                ja, jb = max(run.j0, 0), min(run.j0 + run.height, ny)
                ia, ib = max(run.i0, 0), min(run.i0 + run.width, nx)
                if 0 <= kk < nz and ja < jb and ia < ib:
                    out[kk, ja:jb, ia:ib] += (b - a) * block[ja - run.j0:jb - run.j0, ia - run.i0:ib - run.i0]
    np.clip(out, 0.0, 1.0, out=out)
    return out, float(out.sum(dtype=np.float64)), total


def _circle(cx, cy, radius, n=48, wobble=0.0, phase=0.0):
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    rr = radius * (1.0 + wobble * np.sin(3.0 * t + phase))
    return np.column_stack([cx + rr * np.cos(t), cy + rr * np.sin(t)])


def _cases():
    """(name, rings per plane, plane k, grid shape [z, y, x], spacing (x, y, z) mm)."""
    ks = np.arange(4.0, 15.0)
    # a wobbly spheroid, one part per plane (the single-part path)
    blob = [[_circle(20.3, 18.7, 1.0 + 7.0 * math.sqrt(max(0.0, 1.0 - ((k - 9.3) / 6.0) ** 2)), wobble=0.15,
                     phase=0.4 * k)] for k in ks]
    yield "blob", blob, ks, (20, 40, 40), (4.0728, 4.0728, 3.27)
    # two parts on every plane (the nearest-part lookup), one vanishing half-way
    two = [[_circle(10.2, 10.4, 3.5), _circle(24.6, 21.1, 2.5 if k < 9 else 0.9)] for k in ks]
    yield "two parts", two, ks, (20, 36, 36), (2.0, 2.0, 2.0)
    # a ring with a hole (even-odd), on anisotropic pixels
    ring = [[_circle(15.0, 15.0, 9.0), _circle(15.3, 14.6, 3.0 + 0.2 * k)] for k in ks]
    yield "hole", ring, ks, (18, 32, 32), (3.9, 4.4, 3.0)
    # small lesions: 8 sub-samples per edge and along the normal; one of them drawn on one plane
    small = [[_circle(8.4, 9.1, 0.6 + 0.3 * (2 - abs(k - 6.0)))] for k in (4.0, 5.0, 6.0, 7.0, 8.0)]
    yield "small", small, np.array([4.0, 5.0, 6.0, 7.0, 8.0]), (12, 20, 20), (4.0, 4.0, 4.0)
    yield "one plane", [[_circle(8.0, 8.0, 2.2)]], np.array([5.0]), (10, 16, 16), (4.0, 4.0, 4.0)
    # two runs (a gap of 5 planes) and a contour reaching past the grid's edge and last slice
    gap_k = np.array([1.0, 2.0, 3.0, 9.0, 10.0, 11.0, 12.0])
    gapped = [[_circle(3.0 if k < 5 else 14.0, 12.0, 4.5)] for k in gap_k]
    yield "gap and edge", gapped, gap_k, (12, 24, 16), (3.0, 3.0, 3.0)
    # a pole drawn as a point-like polygon (encloses nothing) at the end of a run
    pole = [[np.array([[12.0, 12.0], [12.0001, 12.0], [12.0, 12.0001]])]] + \
        [[_circle(12.0, 12.0, r)] for r in (2.0, 3.0, 3.4, 3.0, 2.0)]
    yield "pole", pole, np.arange(2.0, 8.0), (12, 24, 24), (2.5, 2.5, 2.5)


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
@pytest.mark.parametrize("group_elements", [R._GROUP_ELEMENTS, 1, 3000])
def test_the_masks_are_the_straightforward_evaluations_to_the_bit(case, group_elements, monkeypatch):
    _, rings, ks, shape, spacing = case
    monkeypatch.setattr(R, "_GROUP_ELEMENTS", group_elements)  # groups of every size, one sub-plane too
    kwargs = dict(fallback_step=1.0, gap_break_factor=2.5)
    mask, inside, total = R.rasterise_contours(rings, ks, shape, spacing, **kwargs)
    ref_mask, ref_inside, ref_total = _reference(rings, ks, shape, spacing, **kwargs)
    assert mask.dtype == ref_mask.dtype and mask.shape == ref_mask.shape
    assert ref_mask.max() > 0.5  # not an empty comparison
    assert mask.tobytes() == ref_mask.tobytes()
    assert inside == ref_inside and total == ref_total


def test_the_cases_reach_every_path():
    """The cases above take every branch the faster code has: several parts, a pole, an inside box
    that touches nothing, caps at both ends, sub-planes of several kinds, a contour off the grid."""
    cases = {c[0]: c for c in _cases()}
    _, rings, ks, _, spacing = cases["two parts"]
    run = R._Run(rings, ks, spacing[:2], spacing[2], 2)
    assert ndimage.label(run.plane(0).r > 0)[1] >= 1 and len(np.unique(run.plane(0).r)) == 2  # two parts' radii
    _, rings, ks, _, spacing = cases["pole"]
    assert R._Run(rings, ks, spacing[:2], spacing[2], 2).plane(0).area == 0.0
    _, rings, ks, shape, spacing = cases["gap and edge"]
    mask, inside, total = R.rasterise_contours(rings, ks, shape, spacing, fallback_step=1.0, gap_break_factor=2.5)
    assert inside < total  # part of it lies off the grid
    run = R._Run(rings[:3], ks[:3], spacing[:2], spacing[2], 2)
    kinds = {run.weights_at(z)[0][0] for z in np.arange(0.3, 3.8, 0.25)}
    assert kinds == {"cap", "in"}
