"""Published voxel S-value tables in: the MIRD-format reader, and their exact use at their sizes."""

from __future__ import annotations

import csv

import pytest

import voxeldose
from voxeldose import kernels as K
from voxeldose.io import load_vsv_tables

from ..conftest import SHARED_REFERENCE, requires_shared

SIZES = (2.21, 2.33, 2.4, 3.0, 3.59, 3.9, 4.0, 4.42, 4.8, 5.0, 6.0, 6.8, 9.28)


def at(k, dz, dy, dx):
    z, y, x = (n // 2 for n in k.shape)
    return k[z + dz, y + dy, x + dx]


@requires_shared
@pytest.mark.parametrize("tissue,column", [("soft", "soft_tissue"), ("bone", "compact_bone")])
def test_user_tables_reproduce_the_published_csv_exactly(tables, tissue, column):
    # A user who holds the database gets its exact values at its sizes. Independent copy of the
    # same numbers: shared/reference_data's CSV, parsed separately from the .txt files.
    rows = [r for r in csv.DictReader(open(SHARED_REFERENCE / "lanconelli2012_vsv_Y90_all.csv"))]
    checked = 0
    for size in SIZES:
        kern = voxeldose.y90_kernel((size, size, size), tissue, tables=tables)
        assert kern.shape == (11, 11, 11)
        for r in rows:
            if r["tissue"] != column or float(r["voxel_mm"]) != size:
                continue
            i, j, k = int(r["i"]), int(r["j"]), int(r["k"])
            expected = float(r["S_mGy_per_MBq_s"])
            # every sign and axis permutation of the octant entry (the table is symmetric)
            for perm in [(i, j, k), (j, k, i), (k, i, j), (i, k, j)]:
                for sz, sy, sx in [(1, 1, 1), (-1, 1, -1), (-1, -1, -1)]:
                    assert at(kern, sz * perm[0], sy * perm[1], sx * perm[2]) == expected
            checked += 1
    assert checked == 13 * 216
    assert "published voxel S-value table" in K.kernel_source((4.42,) * 3, tissue, tables=tables)


def test_vsv_table_reader_refuses_bad_files(tmp_path):
    from voxeldose.io import read_vsv_table

    bad = tmp_path / "90Y4mmsoft.txt"
    bad.write_text("Y90 - 4mm - Soft tissue\ni j k S\n0\t0\t0\t1.0\n1\t0\t0\tx\n")
    with pytest.raises(voxeldose.KernelError, match="line 4"):
        read_vsv_table(bad)
    bad.write_text("Y90 - 4mm - Soft tissue\ni j k S\n0\t0\t0\t1.0\n1\t0\t0\t0.1\n")
    with pytest.raises(voxeldose.KernelError, match="does not cover"):
        read_vsv_table(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(voxeldose.KernelError, match="no file named like"):
        load_vsv_tables(tmp_path / "empty")
    with pytest.raises(voxeldose.KernelError, match="not a folder"):
        load_vsv_tables(tmp_path / "missing")
