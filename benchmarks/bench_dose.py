"""Kernel-dose benchmark on the liver phantom: voxeldose against scipy.signal.fftconvolve.

Run:  python benchmarks/bench_dose.py [--repeat N] [--cases 4.42,4x3,2.0]

For each case it prints the array size, the activity's bounding box, the kernel size, the time of
``voxeldose.absorbed_dose`` on the activity image (read-only array, as a case holds it) with each
engine (best of N, after one warm-up call that compiles and
caches the kernel), its peak memory beyond the input and output (numpy allocations traced by
tracemalloc, in float32 volumes of the full array), the time of the obvious alternative
``scipy.signal.fftconvolve(activity, kernel, mode="same")`` (float32 in, float32 kernel) on the
same input in the same run, the speed-up, and the largest difference between the two as a
fraction of the maximum dose. The floor column is one forward real FFT over the padded bounding
box, the least any FFT convolution must do.

Not a test: timings depend on the machine. The README records the figures of a run.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

import numpy as np
from scipy import fft
from scipy.signal import fftconvolve

import voxeldose
from voxeldose import constants as C
from voxeldose import dose as D
from voxeldose import phantoms

# label: (spacing (x, y, z) mm, array shape [z, y, x], background) — shared with
# tests/test_benchmark_cases.py. The phantom's activity is zero outside the liver and lungs; a
# reconstructed scan has non-zero voxels everywhere (noise, scatter), so its bounding box is the
# whole array: the "bg" cases add a uniform background of 1e-4 MBq per voxel to show that case.
CASES = {
    "4.42": ((4.42, 4.42, 4.42), (100, 128, 128), False),
    "4x3": ((4.0, 4.0, 3.0), (160, 192, 192), False),
    "2.0": ((2.0, 2.0, 2.0), (300, 256, 256), False),
    "2.0bg": ((2.0, 2.0, 2.0), (300, 256, 256), True),
}
BACKGROUND_MBQ = 1e-4


def case_activity(label):
    """The activity map (MBq per voxel, float32) of a benchmark case."""
    spacing, shape, background = CASES[label]
    activity = np.array(phantoms.liver(spacing_xyz_mm=spacing, shape=shape).activity_mbq, dtype=np.float32)
    if background:
        activity += np.float32(BACKGROUND_MBQ)
    return activity


def best_of(fn, repeat):
    times = []
    result = None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def peak_memory_bytes(fn):
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    result = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, result


def run_case(label, repeat):
    spacing, shape, _ = CASES[label]
    activity = case_activity(label)
    kernel = voxeldose.y90_kernel(spacing)
    kernel32 = kernel.astype(np.float32)
    lo, hi = D._bounding_box(activity != 0)
    box = tuple(b - a for a, b in zip(lo, hi))
    fft_shape = D._fft_shape([b + k - 1 for b, k in zip(box, kernel.shape)])
    volume_bytes = activity.size * 4
    image = voxeldose.Image(activity, spacing, units="MBQ")  # what calibrate gives: the array read-only

    rows = []
    scale = C.Y90_MEAN_LIFE_S * 1e-3
    t_ref, ref = best_of(lambda: fftconvolve(activity, kernel32, mode="same"), repeat)
    ref = ref.astype(np.float64) * scale
    padded = np.zeros(fft_shape, np.float32)
    t_floor, _ = best_of(lambda: fft.rfftn(padded, workers=-1), repeat)
    for engine in ("auto", "fft", "direct"):
        n_active = int(np.count_nonzero(activity))
        if engine == "direct" and n_active * kernel.size > 3e9:
            continue  # minutes: not a sensible choice here, the cost model says so too
        def compute():
            return voxeldose.absorbed_dose(image, engine=engine).array

        compute()  # warm-up: JIT, kernel FFT cache
        t, dose = best_of(compute, repeat)
        peak, _ = peak_memory_bytes(compute)
        extra_volumes = (peak - volume_bytes) / volume_bytes  # beyond the float32 output
        diff = float(np.abs(dose - ref).max() / ref.max())
        chosen = D.choose_engine(n_active, kernel.shape, fft_shape) if engine == "auto" else engine
        rows.append((engine if engine != "auto" else f"auto={chosen}", t, extra_volumes, diff))
    return {
        "label": label,
        "shape": shape,
        "box": box,
        "kernel": kernel.shape,
        "t_ref": t_ref,
        "t_floor": t_floor,
        "rows": rows,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args(argv)
    import os

    print(f"voxeldose {voxeldose.__version__}, numpy {np.__version__}, {os.cpu_count()} CPU(s)")
    header = (
        f"{'case':>5} {'array [z,y,x]':>15} {'bbox':>15} {'kernel':>11} {'engine':>12} "
        f"{'time s':>7} {'fftconv s':>9} {'speed-up':>8} {'floor s':>7} {'t/floor':>7} "
        f"{'mem vol':>7} {'max|diff|/max':>13}"
    )
    print(header)
    print("-" * len(header))
    for label in args.cases.split(","):
        r = run_case(label, args.repeat)
        for engine, t, mem, diff in r["rows"]:
            print(
                f"{label:>5} {'x'.join(map(str, r['shape'])):>15} {'x'.join(map(str, r['box'])):>15} "
                f"{'x'.join(map(str, r['kernel'])):>11} {engine:>12} {t:7.3f} {r['t_ref']:9.3f} "
                f"{r['t_ref'] / t:7.1f}x {r['t_floor']:7.3f} {t / r['t_floor']:7.1f} {mem:7.2f} {diff:13.1e}"
            )


if __name__ == "__main__":
    main()
