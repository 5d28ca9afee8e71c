"""The benchmark's cases, checked for correctness here (speed is measured in benchmarks/)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import fftconvolve

import voxeldose
from voxeldose import constants as C

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_dose.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_dose", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_case(bench, label):
    spacing = bench.CASES[label][0]
    activity = bench.case_activity(label)
    kernel = voxeldose.y90_kernel(spacing)
    reference = fftconvolve(activity.astype(np.float64), kernel, mode="same") * C.Y90_MEAN_LIFE_S * 1e-3
    # the benchmark's acceptance: equal to the obvious alternative within 1e-4 of the maximum
    # dose (float32 FFT round-off is ~1e-6 of the maximum)
    for engine in ("fft", "direct"):
        dose = voxeldose.absorbed_dose_array(activity, spacing_xyz_mm=spacing, engine=engine)
        assert np.abs(dose - reference).max() <= 1e-4 * reference.max(), engine


def test_smallest_benchmark_case_matches_fftconvolve(bench):
    assert set(bench.CASES) >= {"4.42", "4x3", "2.0"}
    _check_case(bench, "4.42")


@pytest.mark.slow
@pytest.mark.parametrize("label", ["4x3", "2.0"])
def test_larger_benchmark_cases_match_fftconvolve(bench, label):
    _check_case(bench, label)
