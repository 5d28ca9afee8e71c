"""Voxel S-value tables in: a folder of published Y-90 tables (MIRD format), e.g. Lanconelli's.

voxeldose ships no published table: its kernel is its own fitted point kernel
(:mod:`voxeldose.kernels`). A user who holds the tables can read them with
:func:`load_vsv_tables` and pass them to the engine (``tables=`` / ``kernel_tables=``, or
``voxeldose run --kernel-tables DIR``) to use the exact published values at their sizes; the
fitting tool (:mod:`voxeldose.kernel_fit`) reads them the same way.

File format (the Lanconelli 2012 database as distributed, Phys Med Biol 57:517): one file per
voxel size and tissue, named ``90Y<size>mm<soft|bone>.txt``; line 1 a title
("Y90 - 4.42mm - Soft tissue"), line 2 a header ("i j k S [mGy/(MBq·s)]"), then one line per
entry of one octant, ``i j k S`` (tab- or space-separated), i, j, k = 0..n. The kernel is
symmetric in sign and axis order, so the octant gives the whole (2n+1)^3 kernel.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..errors import KernelError
from ..kernels import TISSUES, VsvTables

__all__ = ["load_vsv_tables", "read_vsv_table"]

_TABLE_NAME = re.compile(r"^90Y(?P<size>[0-9]+(?:\.[0-9]+)?)mm(?P<tissue>soft|bone)\.txt$")


def read_vsv_table(path: str | os.PathLike[str]) -> NDArray[np.float64]:
    """One published octant file (i, j, k = 0..n) as the full (2n+1)^3 kernel, read-only.

    Raises
    ------
    KernelError
        An unreadable file, a line that is not ``i j k S``, a negative or non-finite S, or an
        octant with entries missing (the message names the file and line).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="latin-1")  # the database's header holds a Latin-1 "·"
    except OSError as exc:
        raise KernelError(f"{p}: cannot read the S-value table ({exc})") from exc
    entries: dict[tuple[int, int, int], float] = {}
    for lineno, line in enumerate(text.splitlines()[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        try:
            i, j, k = (int(v) for v in parts[:3])
            s = float(parts[3])
        except (ValueError, IndexError):
            raise KernelError(f"{p}, line {lineno}: cannot read 'i j k S' from {line!r}") from None
        if min(i, j, k) < 0 or not np.isfinite(s) or s < 0:
            raise KernelError(f"{p}, line {lineno}: i, j, k must be >= 0 and S a finite value >= 0, got {line!r}")
        entries[(i, j, k)] = s
    if not entries:
        raise KernelError(f"{p}: no 'i j k S' entries after the two header lines")
    n = max(max(key) for key in entries) + 1
    octant = np.full((n, n, n), np.nan)
    for (i, j, k), s in entries.items():
        octant[i, j, k] = s
    if np.isnan(octant).any():
        raise KernelError(f"{p}: the table does not cover every i, j, k = 0..{n - 1} ({int(np.isnan(octant).sum())} missing)")
    idx = np.abs(np.arange(-(n - 1), n))
    full = octant[np.ix_(idx, idx, idx)]
    full.setflags(write=False)
    return full


def load_vsv_tables(folder: str | os.PathLike[str]) -> VsvTables:
    """Every ``90Y<size>mm<soft|bone>.txt`` table in ``folder``.

    Parameters
    ----------
    folder : path
        A folder of MIRD-format Y-90 voxel S-value tables (module documentation), e.g. the
        Lanconelli 2012 database.

    Returns
    -------
    VsvTables

    Raises
    ------
    KernelError
        The folder does not exist or holds no table, or a table cannot be read.
    """
    root = Path(folder)
    if not root.is_dir():
        raise KernelError(f"voxel S-value tables: {root} is not a folder; point to the folder of 90Y*mm*.txt files")
    suffix_to_tissue = {suffix: name for name, (suffix, _, _) in TISSUES.items()}
    tables: dict[tuple[str, float], NDArray[np.float64]] = {}
    sources: dict[tuple[str, float], str] = {}
    for path in sorted(root.iterdir()):
        m = _TABLE_NAME.match(path.name)
        if m is None:
            continue
        key = (suffix_to_tissue[m["tissue"]], float(m["size"]))
        tables[key] = read_vsv_table(path)
        sources[key] = str(path)
    if not tables:
        raise KernelError(
            f"voxel S-value tables: no file named like 90Y4.42mmsoft.txt in {root}; point to the "
            "folder of the Lanconelli database's tables"
        )
    return VsvTables(tables, sources, str(root))
