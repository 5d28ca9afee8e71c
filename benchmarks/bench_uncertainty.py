"""Uncertainty benchmark: N samples of the liver phantom with noise and segmentation, against N full cases.

Run:  python benchmarks/bench_uncertainty.py [--n 200] [--naive 5]

The liver phantom (3 GBq, LSF 0.10, T:N 4) as a bremsstrahlung-SPECT-like counts image
(Poisson, 20 counts per MBq) on its 4.42 mm grid (100 x 128 x 128) and on the DICOM export's
4 x 4 x 3 mm grid (148 x 142 x 142), with its seven VOIs (liver, five tumours, lung; the
derived tumours and normal liver added by the case), kernel method. For each: the case without
uncertainty, the uncertainty step of ``--n`` samples with every input (multiplicative inputs,
segmentation margin, Poisson noise: one dose computation per sample), its cost per sample, the
peak numpy memory traced by tracemalloc during the step, and the obvious alternative measured in
the same run: ``--naive`` complete ``compute_case`` runs on resampled counts (what a script
looping over the pipeline does), scaled to N, and the ratio. Not a test: the README records a
run; tests/test_uncertainty.py checks the numbers.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
import warnings

import numpy as np

import voxeldose
from voxeldose import phantoms
from voxeldose.image import ImageMeta
from voxeldose.pipeline import compute_case
from voxeldose.uncertainty import uncertainty_settings_from_dict


def case(spacing):
    ph = phantoms.liver(spacing_xyz_mm=spacing)
    counts = np.random.default_rng(0).poisson(ph.activity_mbq * 20.0).astype(np.float32)
    scan = voxeldose.Image(counts, ph.spacing_mm, ph.origin_mm, units="CNTS", meta=ImageMeta(modality="NM"))
    roles = {"liver": "whole_liver", "lung": "lung", **{f"tumour_{i}": "tumour" for i in range(1, 6)}}
    vois = {n: ph.vois[n] for n in roles}
    c = voxeldose.Case("bench-u", administered_gbq=3.0, lung_shunt_fraction=0.10, residual_fraction=0.02,
                       voi_roles=roles)
    return ph, scan, vois, c


def row(name: str, spacing, n: int, naive: int) -> str:
    ph, scan, vois, c = case(spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compute_case(scan, vois, c)  # warm: numba, FFT plans
        t0 = time.perf_counter()
        compute_case(scan, vois, c)
        plain = time.perf_counter() - t0
        settings = uncertainty_settings_from_dict({"n": n, "seed": 1})
        tracemalloc.start()
        t0 = time.perf_counter()
        result = compute_case(scan, vois, c.with_overrides(uncertainty=settings))
        total = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        step = result.provenance["timings_s"]["uncertainty"]
        rng = np.random.default_rng(2)
        t0 = time.perf_counter()
        for _ in range(naive):
            resampled = scan.with_array(rng.poisson(np.asarray(scan.array, np.float64)).astype(np.float32))
            compute_case(resampled, vois, c)
        per_naive = (time.perf_counter() - t0) / naive
    shape = "x".join(map(str, scan.shape))
    n_vois = len(result.uncertainty["vois"])
    return (f"{name:<24}{shape:>14}{n_vois:>6}{n:>6}{plain:>9.2f}{step:>10.1f}{1e3 * step / n:>9.0f}{total:>9.1f}"
            f"{peak:>9.0f}{per_naive * n:>11.1f}{per_naive * n / step:>8.1f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="samples (default 200)")
    parser.add_argument("--naive", type=int, default=5, help="full cases timed for the alternative (default 5)")
    args = parser.parse_args(argv)
    print(f"voxeldose {voxeldose.__version__}, numpy {np.__version__}, {os.cpu_count()} CPU(s); kernel method; "
          "every input sampled (noise: one dose per sample)")
    header = (f"{'case':<24}{'grid [z,y,x]':>14}{'VOIs':>6}{'N':>6}{'case s':>9}{'N samp s':>10}{'ms/samp':>9}"
              f"{'total s':>9}{'peak MiB':>9}{'N cases s':>11}{'ratio':>8}")
    print(header)
    print("-" * len(header))
    print(row("liver phantom 4.42 mm", (4.42, 4.42, 4.42), args.n, args.naive), flush=True)
    print(row("liver phantom 4x4x3 mm", (4.0, 4.0, 3.0), args.n, args.naive), flush=True)
    print("case s: the case without uncertainty; N samp s: its uncertainty step; N cases s: N complete compute_case "
          "runs on resampled counts (measured on --naive, scaled); ratio: N cases s / N samp s")


if __name__ == "__main__":
    main()
