"""RTSTRUCT rasterisation benchmark: sphere volumes against the analytic volume, and the time.

Run:  python benchmarks/bench_vois.py [--trials 4] [--seed 1]

For spheres of 20-40 mm contoured on CT slices 1-6 mm apart (area-preserving 128-gons, random
centre and slice phase), writes an RTSTRUCT on a small synthetic CT, loads it with
``voxeldose.load_vois`` onto a reference grid of random voxel size (2-5 mm per axis, random
shift) and prints, per diameter and plane spacing, the range of the relative volume error over
the trials, the error the slab rule would give for the same planes (each plane's exact section
filling half-way to its neighbours: the obvious alternative, computed analytically) and the mean
load time. Then times the liver phantom's seven ROIs (drawn on a CT with 3 mm slices) onto its
4 x 4 x 3 mm PET grid, and onto the same grid tilted by 15 degrees (contours not parallel to the
slices: rasterised in their own planes and resampled), with the volumes of both, and the memory
the seven masks hold (resident, from the process's page count over five loads kept at once, Linux)
against the size of their arrays. Not a test: the README records a run; tests/test_io_vois.py
checks the tolerances.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

import voxeldose
from voxeldose.image import Image
from voxeldose.io._dicom_common import read_datasets
from voxeldose.io.series import SeriesHeader, write_ct_series
from voxeldose.io.write_vois import ellipsoid_polygons, write_rtstruct

DIAMETERS_MM = (20.0, 24.0, 30.0, 40.0)
PLANES_MM = (1.0, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0)


def slab_error(radius: float, z_planes: np.ndarray, centre_z: float) -> float:
    """Relative volume error of the slab rule for exact sections at ``z_planes``."""
    h = float(np.median(np.diff(z_planes)))
    r2 = np.clip(radius**2 - (z_planes - centre_z) ** 2, 0.0, None)
    return float(np.sum(math.pi * r2) * h) / (4.0 / 3.0 * math.pi * radius**3) - 1.0


def one(tmp: Path, rng: np.random.Generator, diameter: float, plane_mm: float, tag: str) -> tuple[float, float, float]:
    radius = diameter / 2
    centre = rng.uniform(-4, 4, 3)
    n_planes = int(math.ceil(2 * (radius + 2 * plane_mm) / plane_mm)) + 1
    z0 = centre[2] - (n_planes - 1) / 2 * plane_mm + rng.uniform(0, plane_mm)
    pixel = 0.8
    n_pix = int(math.ceil((2 * radius + 30) / pixel))
    ct = Image(np.zeros((n_planes, n_pix, n_pix), np.float32), (pixel, pixel, plane_mm),
               (-(n_pix - 1) / 2 * pixel, -(n_pix - 1) / 2 * pixel, z0), units="HU")
    header = SeriesHeader()
    paths = write_ct_series(tmp / f"ct{tag}", ct, header)
    z = np.array([z0 + k * plane_mm for k in range(n_planes)])
    rs = write_rtstruct(tmp / f"rs{tag}.dcm", {"sphere": ellipsoid_polygons(centre, (radius,) * 3, z)},
                        read_datasets(paths))
    spacing = tuple(float(s) for s in rng.choice([2.0, 3.0, 4.0, 4.42, 5.0], 3))
    fov = 2 * diameter + 20
    n = [int(math.ceil(fov / s)) for s in spacing]
    shift = rng.uniform(-2, 2, 3)
    origin = tuple(-(k - 1) / 2 * s + d for k, s, d in zip(n, spacing, shift))
    ref = Image(np.zeros(tuple(n[::-1]), np.float32), spacing, origin, units="BQML",
                meta=voxeldose.ImageMeta(frame_of_reference_uid=header.frame_of_reference_uid))
    t0 = time.perf_counter()
    mask = voxeldose.load_vois(rs, ref)["sphere"].array
    seconds = time.perf_counter() - t0
    volume = float(mask.sum(dtype=np.float64)) * ref.voxel_volume_ml * 1e3
    return volume / (4.0 / 3.0 * math.pi * radius**3) - 1.0, slab_error(radius, z, centre[2]), seconds


def liver_timings(tmp: Path, repeat: int = 3) -> None:
    """The liver phantom's ROIs on its PET grid, axial and tilted by 15 degrees: best time of ``repeat``."""
    from voxeldose.phantoms.export import write_liver_case

    case = tmp / "liver"
    write_liver_case(case, write=("PET", "CT", "RTSTRUCT"))
    pet = voxeldose.load_image(case / "PET")
    c, s = math.cos(math.radians(15.0)), math.sin(math.radians(15.0))
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    half = (np.array(pet.size_xyz) - 1) / 2.0
    centre = np.asarray(pet.index_to_world(half))
    origin = centre - rot @ (half * np.asarray(pet.spacing_mm))
    tilted = Image(np.zeros(pet.shape, np.float32), pet.spacing_mm, tuple(origin), tuple(rot.reshape(-1)),
                   "BQML", pet.meta)
    print(f"\nliver phantom: 7 ROIs from {case.name}/RTSTRUCT.dcm onto the PET grid {pet.shape} (z, y, x)")
    results = {}
    for label, ref in (("axial", pet), ("tilted 15 deg", tilted)):
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            vois = voxeldose.load_vois(case / "RTSTRUCT.dcm", ref)
            times.append(time.perf_counter() - t0)
        results[label] = {n: float(m.array.sum(dtype=np.float64)) * ref.voxel_volume_ml for n, m in vois.items()}
        print(f"  {label:14s} {min(times):6.2f} s")
    print("  volumes mL (axial / tilted): " + ", ".join(
        f"{n} {results['axial'][n]:.1f} / {results['tilted 15 deg'][n]:.1f}" for n in results["axial"]))
    statm = Path("/proc/self/statm")
    if statm.exists():
        import gc
        import mmap

        def resident_mb() -> float:
            return int(statm.read_text().split()[1]) * mmap.PAGESIZE / 2**20

        del vois
        gc.collect()
        before = resident_mb()
        kept = [voxeldose.load_vois(case / "RTSTRUCT.dcm", pet) for _ in range(5)]
        gc.collect()
        size = sum(m.array.nbytes for m in kept[0].values()) / 2**20
        print(f"  memory of the 7 masks: {(resident_mb() - before) / len(kept):.1f} MB resident, "
              f"{size:.1f} MB of arrays (the whole grid each)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print(f"voxeldose {voxeldose.__version__}: {args.trials} spheres per row, random centre, slice phase and grid")
    print(f"{'diameter mm':>11} {'planes mm':>9} {'h/R':>5} {'error % (min .. max)':>22} "
          f"{'slab rule % (min .. max)':>26} {'load s':>7}")
    print("-" * 86)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for diameter in DIAMETERS_MM:
            for plane_mm in PLANES_MM:
                rows = [one(tmp, rng, diameter, plane_mm, f"{diameter}-{plane_mm}-{t}") for t in range(args.trials)]
                err, slab, secs = (np.array(c) for c in zip(*rows))
                worst = max(worst, float(np.abs(err).max()))
                print(f"{diameter:11.0f} {plane_mm:9.1f} {plane_mm / (diameter / 2):5.2f} "
                      f"{100 * err.min():+10.2f} .. {100 * err.max():+6.2f}   "
                      f"{100 * slab.min():+12.2f} .. {100 * slab.max():+6.2f}   {secs.mean():7.3f}")
        print(f"largest |error|: {100 * worst:.2f} %")
        liver_timings(tmp)


if __name__ == "__main__":
    main()
