"""Tissue-aware dose benchmark: the density-scaled kernel against the plain kernel and against its
brute-force reference, and the lung dose of every method on the liver-lung interface phantom.

Run:  python benchmarks/bench_tissue.py [--repeat N] [--cases 4x3ct,2.0ct] [--no-table]

Speed table. For each case (the liver phantom with the right lung resting on the liver, its CT at
2 x 2 x 3 mm turned into densities on the scan's grid by the Schneider 2000 table, as
``voxeldose run --ct`` does) it prints the array size, the number of voxels holding activity,
the time of ``absorbed_dose(..., method="scaled_kernel", density=...)`` (best of N after a
warm-up call that compiles the loop and computes the density classes), the time of the warm-up
itself, its peak memory (numpy allocations traced by tracemalloc, in float32 volumes of the
array), the time of the plain soft-tissue kernel (``method="kernel"``, no density) on the same
input in the same run and the ratio. The "reference" row times the brute-force reference of the
same method (``voxeldose._scaled_kernel.scaled_kernel_reference``) on a small grid against the
engine, with their largest difference as a fraction of the maximum dose.

Method table (--no-table skips it). On the 4 x 4 x 3 mm interface phantom: the lung VOI's mean
dose by each method, the shunt model (49.67 Gy kg/GBq x A x LSF / the lung's mass from the CT),
and local deposition of the shunted activity alone at the CT's density (no spill from the liver:
what the lung would get if the interface did not exist), with each method's difference from the
scaled kernel.

Not a test: timings depend on the machine. The README records the figures of a run.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

import numpy as np

import voxeldose
from voxeldose import constants as C
from voxeldose import phantoms

# label: (scan spacing (x, y, z) mm, array shape [z, y, x]); the CT is always 2 x 2 x 3 mm
CASES = {
    "4x3ct": ((4.0, 4.0, 3.0), (148, 142, 142)),
    "2.0ct": ((2.0, 2.0, 2.0), (300, 256, 256)),
}
CT_SPACING_MM = (2.0, 2.0, 3.0)


def case_inputs(label):
    """Activity (MBq per voxel, Image), density (g/cm3, Image) and the phantom of a case."""
    from voxeldose.io.ct import ct_density
    from voxeldose.phantoms.export import _ct_image, _geometry

    spacing, shape = CASES[label]
    ph = phantoms.liver(spacing_xyz_mm=spacing, shape=shape, lung_interface=True)
    activity = ph.activity.with_array(np.asarray(ph.activity_mbq, np.float32))
    ct = _ct_image(CT_SPACING_MM, _geometry(), lung_interface=True)
    density = ct_density(ct, activity)
    return activity, density, ph


def timed(fn, repeat):
    best, result = np.inf, None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def speed_row(label, repeat):
    activity, density, _ = case_inputs(label)
    body = voxeldose.density.body_mask(density)

    def scaled():
        return voxeldose.absorbed_dose(activity, method="scaled_kernel", density=density, body=body)

    t0 = time.perf_counter()
    scaled()
    first = time.perf_counter() - t0
    t_scaled, _ = timed(scaled, repeat)
    tracemalloc.start()
    tracemalloc.reset_peak()
    scaled()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    plain = lambda: voxeldose.absorbed_dose(activity, method="kernel")  # noqa: E731
    plain()
    t_plain, _ = timed(plain, repeat)
    n = activity.array.size
    return (f"{label:8s} {'x'.join(map(str, activity.shape[::-1])):>12s} {int(np.count_nonzero(activity.array)):>9d} "
            f"{t_scaled:9.2f} {first:9.2f} {peak / (4 * n):8.1f} {t_plain:9.2f} {t_scaled / t_plain:8.1f}")


def reference_row():
    from voxeldose._scaled_kernel import scaled_kernel_dose, scaled_kernel_reference

    rho = np.full((27, 27, 27), C.SOFT_TISSUE_DENSITY_G_PER_CM3)
    z, y, x = np.indices(rho.shape)
    rho[(z - 13) ** 2 + (y - 13) ** 2 + (x - 8) ** 2 <= 36] = 0.26
    a = np.zeros(rho.shape)
    a[11:16, 11:16, 12:17] = 1.0  # 125 sources at the lung's surface and beside it
    spacing = (4.0, 4.0, 4.0)
    scaled_kernel_dose(a, rho, spacing, scale=1.0)
    t_fast, fast = timed(lambda: scaled_kernel_dose(a, rho, spacing, scale=1.0), 3)
    t_ref, ref = timed(lambda: scaled_kernel_reference(a, rho, spacing, scale=1.0), 1)
    diff = float(np.abs(fast - ref).max() / ref.max())
    return (f"{'reference':8s} {'27x27x27':>12s} {125:>9d} {t_fast:9.3f} {'':>9s} {'':>8s} {t_ref:9.2f} "
            f"{t_fast / t_ref:8.4f}   (brute force in the 'plain' column; max difference {diff:.2%} of the maximum)")


def method_table():
    activity, density, ph = case_inputs("4x3ct")
    body = voxeldose.density.body_mask(density)
    lung = np.asarray(ph.masks["lung"], np.float64)
    rho = np.asarray(density.array, np.float64)
    voxel_ml = activity.voxel_volume_ml
    mass_kg = float((lung * rho).sum()) * voxel_ml * 1e-3
    a0_gbq, lsf = ph.truth["administered_gbq"], ph.truth["lung_shunt_fraction"]
    shunt_model = C.MIRD_Y90_GY_KG_PER_GBQ * a0_gbq * lsf / mass_kg

    def lung_mean(dose):
        return float((np.asarray(dose.array, np.float64) * lung).sum() / lung.sum())

    runs = {
        "kernel, no CT (the lung as soft tissue)": voxeldose.absorbed_dose(activity),
        "kernel, no CT, DVH at 0.30 g/cm3": None,
        "local, CT density": voxeldose.absorbed_dose(activity, method="local", density=density, body=body),
        "kernel, CT density (x 1.04 / rho)": voxeldose.absorbed_dose(activity, density=density, body=body),
        "scaled_kernel, CT density": voxeldose.absorbed_dose(activity, method="scaled_kernel", density=density,
                                                             body=body),
    }
    means = {k: lung_mean(v) for k, v in runs.items() if v is not None}
    means["kernel, no CT, DVH at 0.30 g/cm3"] = means["kernel, no CT (the lung as soft tissue)"] * (
        C.SOFT_TISSUE_DENSITY_G_PER_CM3 / 0.30)
    shunt_only = activity.with_array(np.asarray(ph.activity_mbq) * (lung > 0.5))
    ldm_shunt = lung_mean(voxeldose.absorbed_dose(shunt_only, method="local", density=density, body=body))
    ref = means["scaled_kernel, CT density"]
    print(f"\nLung VOI (both lungs, {lung.sum() * voxel_ml:.0f} mL, {mass_kg:.3f} kg from the CT), 4 x 4 x 3 mm, "
          "right lung resting on the liver")
    print(f"{'method':44s} {'lung mean Gy':>12s} {'vs scaled':>10s}")
    for name, value in means.items():
        print(f"{name:44s} {value:12.2f} {value / ref - 1:+10.1%}")
    print(f"{'shunt model (49.67 x A x LSF / CT mass)':44s} {shunt_model:12.2f} {shunt_model / ref - 1:+10.1%}")
    print(f"{'local, shunted activity only (no spill)':44s} {ldm_shunt:12.2f} {ldm_shunt / ref - 1:+10.1%}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cases", default="4x3ct")
    parser.add_argument("--no-table", action="store_true")
    args = parser.parse_args(argv)
    import numba

    print(f"numba threads: {numba.get_num_threads()}")
    print(f"{'case':8s} {'shape xyz':>12s} {'active':>9s} {'scaled s':>9s} {'first s':>9s} {'peak vol':>8s} "
          f"{'plain s':>9s} {'ratio':>8s}")
    for label in args.cases.split(","):
        print(speed_row(label.strip(), args.repeat), flush=True)
    print(reference_row(), flush=True)
    if not args.no_table:
        method_table()


if __name__ == "__main__":
    main()
