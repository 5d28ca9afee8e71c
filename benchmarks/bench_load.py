"""Loading benchmark: a 300-slice 256x256 PET series from disk, voxeldose against SimpleITK.

Run:  python benchmarks/bench_load.py [--repeat N] [--compression none|rle|jpeg-ls|jpeg2000|deflate]

Writes the liver phantom at 2 mm (300 x 256 x 256, Bq/mL, int16 with a slope per slice, file
names in no particular order) to a temporary folder, then times ``voxeldose.load_image(folder)``
and SimpleITK's ``ImageSeriesReader`` (``GetGDCMSeriesFileNames`` + ``Execute``, float32 output) on the same
files, best of N, after one untimed read of each (so both see a warm file cache). Prints the
times, their ratio and whether the two agree (geometry within 1e-3 mm, values within 1e-5).
Not a test: timings depend on the machine; the README records a run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time

import numpy as np
import SimpleITK as sitk

import voxeldose
from voxeldose import phantoms
from voxeldose.image import Image
from voxeldose.io.series import SeriesHeader, write_pet_series

SPACING_MM = (2.0, 2.0, 2.0)
SHAPE = (300, 256, 256)


def best_of(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def sitk_read(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    # without this, the reader takes the pixel type of the first file: int16 when that slice is
    # empty (slope 1), and every other slice's rescaled Bq/mL overflow
    reader.SetOutputPixelType(sitk.sitkFloat32)
    return reader.Execute()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compression", default="none")
    args = parser.parse_args(argv)
    ph = phantoms.liver(spacing_xyz_mm=SPACING_MM, shape=SHAPE)
    bqml = Image(ph.activity_mbq / ph.voxel_ml * 1e6, ph.spacing_mm, ph.origin_mm, units="BQML")
    with tempfile.TemporaryDirectory() as folder:
        scan = dt.datetime(2026, 1, 16, 6, 0)
        write_pet_series(folder, bqml, SeriesHeader(acquisition_datetime=scan), radiopharmaceutical_start=None,
                         total_dose_bq=3e9, compression=args.compression)
        t_ours, ours = best_of(lambda: voxeldose.load_image(folder), args.repeat)
        t_sitk, ref = best_of(lambda: sitk_read(folder), args.repeat)
    same_geometry = (
        np.allclose(ref.GetOrigin(), ours.origin_mm, atol=1e-3)
        and np.allclose(ref.GetSpacing(), ours.spacing_mm, atol=1e-4)
        and np.allclose(ref.GetDirection(), ours.direction, atol=1e-6)
    )
    ref_array = sitk.GetArrayFromImage(ref)
    same_values = np.allclose(ref_array, ours.array, rtol=1e-5, atol=1e-5 * float(np.abs(ref_array).max()))
    print(f"voxeldose {voxeldose.__version__}, {os.cpu_count()} CPU(s), compression {args.compression}")
    print(f"{'series':>20} {'voxeldose s':>12} {'SimpleITK s':>12} {'ratio':>6} {'geometry':>9} {'values':>7}")
    print(
        f"{'x'.join(map(str, SHAPE)) + ' PT':>20} {t_ours:12.3f} {t_sitk:12.3f} {t_sitk / t_ours:5.2f}x "
        f"{'same' if same_geometry else 'DIFFER':>9} {'same' if same_values else 'DIFFER':>7}"
    )


if __name__ == "__main__":
    main()
