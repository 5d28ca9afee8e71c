"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import convolve

#: The project's reference data (read-only, beside the repository in CI and development).
SHARED_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference_data"

requires_shared = pytest.mark.skipif(
    not SHARED_REFERENCE.is_dir(), reason="shared/reference_data not beside the repository"
)


def composite_kernel(small: np.ndarray, n: tuple[int, int, int]) -> np.ndarray:
    """Exact S values of a voxel made of n = (nz, ny, nx) voxels of a published kernel.

    S_big(d) = (1/N^2) sum_{s in big(0)} sum_{t in big(d)} S_small(t - s): the per-axis overlap
    counts of two boxes are triangle weights (m - |q|)/m^2, applied separably, then the result is
    sampled every m voxels around the centre.
    """
    out = np.asarray(small, float)
    for axis, m in enumerate(n):
        w = np.array([m - abs(q) for q in range(-m + 1, m)], float) / m**2
        shape = [1, 1, 1]
        shape[axis] = w.size
        out = convolve(out, w.reshape(shape), mode="full")
    c = [s // 2 for s in out.shape]
    return out[tuple(slice(c[a] % n[a], None, n[a]) for a in range(3))]
