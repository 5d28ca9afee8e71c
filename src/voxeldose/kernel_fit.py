"""Offline tool: fit the shipped Y-90 dose point kernel to the published voxel S-value tables.

Not used at run time. The engine's kernel (:mod:`voxeldose.kernels`) integrates the radial dose
point kernel in ``kernels/y90_dpk_lanconelli2012_fit.csv``; this module is how that file was
made, from the Lanconelli 2012 tables, which stay where they are kept (the project's
``../shared/reference_data``) and are never shipped::

    python -m voxeldose.kernel_fit --tables ../shared/reference_data/lanconelli2012_vsv_Y90 [--write]

prints, per table, the difference between the integrated point kernel and the published values
(the README's table) and the leave-one-out check; ``--write`` rewrites the CSV.

The fit is linear: every table entry is ``S = sum_m c_m M_m(d)`` with ``M`` the integral of
:mod:`voxeldose.kernels` for the hat function of knot ``m``. The coefficients ``c >= 0`` minimise
the squared relative residuals over all 13 tables (entries above 1e-3 of the table's central
value, relative uncertainty 0.5 % plus 1e-4 of the centre) plus a second-difference smoothness
penalty (:data:`SMOOTHING`), solved with :func:`scipy.optimize.lsq_linear`.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from . import constants as C
from ._resources import data_dir
from .kernels import (
    DPK_FILE,
    KNOT_STEP_MM,
    R_MAX_MM,
    TISSUES,
    DosePointKernel,
    Tissue,
    VsvTables,
    _check_tissue,
    _dose_factor,
    _radial_nodes,
    _shell_weights,
    dose_point_kernel,
    dpk_voxel_kernel,
)

__all__ = ["fit_dose_point_kernel", "leave_one_out", "table_differences", "SMOOTHING", "main"]

#: Weight of the second-difference penalty in the fit, per tissue: the largest that keeps every
#: table's central and neighbour values within 1 % (soft) and 0.5 % (bone, shorter range) while
#: removing the oscillations an unpenalised fit shows.
SMOOTHING = {"soft": 1e6, "bone": 1e5}


def _hat_basis(r_mm: NDArray[np.float64], knots_mm: NDArray[np.float64]) -> NDArray[np.float64]:
    """``B[q, m]``: piecewise-linear hat function of knot ``m`` at radius ``r_mm[q]``."""
    eye = np.eye(knots_mm.size)
    return np.stack([np.interp(r_mm, knots_mm, eye[m], right=0.0) for m in range(knots_mm.size)], 1)


def _knots() -> NDArray[np.float64]:
    return np.round(np.arange(0.0, R_MAX_MM + 1e-9, KNOT_STEP_MM), 6)


def _octant(table: NDArray[np.float64]) -> NDArray[np.float64]:
    return table[tuple(slice(n // 2, None) for n in table.shape)]


@dataclass(frozen=True)
class _Design:
    size_mm: float
    shape: tuple[int, ...]  # of the published octant
    values: NDArray[np.float64]  # published octant entries used in the fit
    matrix: NDArray[np.float64]  # model: values ~ matrix @ c


def _design(tables: VsvTables, size_mm: float, tissue: str, knots_mm: NDArray[np.float64]) -> _Design:
    density = TISSUES[tissue][2]
    spacing = (size_mm, size_mm, size_mm)
    octant = _octant(tables.table(size_mm, tissue))  # type: ignore[arg-type]
    n = octant.shape[0]
    r, wr = _radial_nodes(float(knots_mm[-1]))
    W = _shell_weights(spacing, r, min_half=n)[:, :n, :n, :n]
    B = _hat_basis(r, knots_mm)
    M = np.tensordot(B * wr[:, None], W, axes=(0, 0)) * _dose_factor(spacing, density)
    return _Design(size_mm, octant.shape, octant.ravel().copy(), M.reshape(knots_mm.size, -1).T.copy())


def _solve(designs: Sequence[_Design], smoothing: float, n_knots: int) -> NDArray[np.float64]:
    from scipy.optimize import lsq_linear

    rows, rhs = [], []
    for d in designs:
        centre = d.values[0]
        use = d.values >= 1e-3 * centre
        sigma = 0.005 * d.values[use] + 1e-4 * centre
        rows.append(d.matrix[use] / sigma[:, None])
        rhs.append(d.values[use] / sigma)
    # smoothness: second differences of f, scaled to the knot step
    D2 = np.diff(np.eye(n_knots), n=2, axis=0)
    rows.append(math.sqrt(smoothing) * D2)
    rhs.append(np.zeros(D2.shape[0]))
    A = np.vstack(rows)
    b = np.concatenate(rhs)
    upper = np.full(n_knots, np.inf)
    upper[-1] = 1e-12  # f(R_MAX) = 0
    res = lsq_linear(A, b, bounds=(np.zeros(n_knots), upper), method="bvls", tol=1e-12)
    c = res.x
    c[-1] = 0.0
    return c


def fit_dose_point_kernel(
    tables: VsvTables,
    tissue: Tissue = "soft",
    *,
    sizes_mm: Sequence[float] | None = None,
    smoothing: float | None = None,
) -> DosePointKernel:
    """Fit the radial DPK to the tables of ``tissue`` (all their sizes by default).

    This is how ``kernels/y90_dpk_lanconelli2012_fit.csv`` was made (module documentation);
    ``sizes_mm`` restricts the fit to some tables, for leave-one-out validation.
    """
    _check_tissue(tissue)
    knots = _knots()
    sizes = tables.sizes_mm(tissue) if sizes_mm is None else tuple(sizes_mm)
    designs = [_design(tables, s, tissue, knots) for s in sizes]
    c = _solve(designs, SMOOTHING[tissue] if smoothing is None else smoothing, knots.size)
    return DosePointKernel(knots, c, tissue, TISSUES[tissue][2])


def leave_one_out(tables: VsvTables, tissue: Tissue = "soft") -> dict[float, tuple[NDArray[np.float64], NDArray[np.float64]]]:
    """Predict each table from a DPK fitted to the other tables of ``tissue``.

    Returns ``{size_mm: (published_octant, predicted_octant)}``, octants [k, j, i] = 0..n.
    """
    knots = _knots()
    sizes = tables.sizes_mm(tissue)
    designs = {s: _design(tables, s, tissue, knots) for s in sizes}
    out = {}
    for size in sizes:
        c = _solve([designs[s] for s in sizes if s != size], SMOOTHING[tissue], knots.size)
        d = designs[size]
        out[size] = (d.values.reshape(d.shape), (d.matrix @ c).reshape(d.shape))
    return out


def table_differences(tables: VsvTables, tissue: Tissue = "soft") -> dict[float, dict[str, float]]:
    """How the shipped point kernel differs from each published table of ``tissue``.

    Per table size: ``centre`` (relative difference of the central value), ``neighbours`` (the
    largest relative difference over the centre and its 26 neighbours holding at least 1 % of
    the centre), ``energy`` (relative difference of the energy each kernel absorbs in the
    infinite medium, sum S rho V), as fractions.
    """
    dpk = dose_point_kernel(tissue)
    out = {}
    for size in tables.sizes_mm(tissue):
        table = _octant(tables.table(size, tissue))
        model = _octant(dpk_voxel_kernel((size,) * 3, dpk))
        near = [d for d in np.ndindex(2, 2, 2) if table[d] >= 1e-2 * table[0, 0, 0]]
        full_model = dpk_voxel_kernel((size,) * 3, dpk)
        out[size] = {
            "centre": float(model[0, 0, 0] / table[0, 0, 0] - 1),
            "neighbours": float(max((abs(model[d] / table[d] - 1) for d in near), default=0.0)),
            "energy": float(full_model.sum() / tables.table(size, tissue).sum() - 1),
        }
    return out


def write_dpk_file(path: str | Path, tables: VsvTables) -> Path:
    """Fit both tissues to ``tables`` and write the DPK CSV the engine ships."""
    fits = {t: fit_dose_point_kernel(tables, t) for t in TISSUES}  # type: ignore[arg-type]
    knots = fits["soft"].r_mm
    lines = [
        f"# Y-90 radial dose point kernel f(r): fraction of the emitted energy ({C.Y90_MEAN_ENERGY_MEV:g} MeV/decay,",
        "# ICRP-107) absorbed per mm of radius, piecewise linear between knots, zero beyond 12 mm.",
        "# Fitted by voxeldose.kernel_fit.fit_dose_point_kernel(tables, tissue) (smoothing "
        f"{SMOOTHING}) to all Lanconelli 2012 tables",
        "# (Phys Med Biol 57:517, 2012) of the tissue; regenerate with 'python -m voxeldose.kernel_fit",
        "# --tables DIR --write'. Soft tissue 1.04 g/cm3, compact bone 1.85 g/cm3.",
        "r_mm,f_soft_per_mm,f_bone_per_mm",
    ]
    for i, r in enumerate(knots):
        lines.append(f"{r:.2f},{fits['soft'].f_per_mm[i]:.8e},{fits['bone'].f_per_mm[i]:.8e}")
    p = Path(path)
    p.write_text("\n".join(lines) + "\n", encoding="ascii")
    return p


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - tool
    from .io.kernel_tables import load_vsv_tables

    parser = argparse.ArgumentParser(prog="python -m voxeldose.kernel_fit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", required=True, help="folder of the published 90Y*mm{soft,bone}.txt tables")
    parser.add_argument("--write", nargs="?", const=str(data_dir("kernels") / DPK_FILE), default=None,
                        metavar="CSV", help=f"refit and write the DPK (default: the package's {DPK_FILE})")
    args = parser.parse_args(argv)
    tables = load_vsv_tables(args.tables)
    if args.write:
        print(f"wrote {write_dpk_file(args.write, tables)}")
        dose_point_kernel.cache_clear()
    sel = [(0, 0, 0), (0, 0, 1), (0, 1, 1), (1, 1, 1), (0, 0, 2)]
    for tissue in TISSUES:
        dpk = dose_point_kernel(tissue)  # type: ignore[arg-type]
        print(f"{tissue}: absorbed fraction {dpk.absorbed_fraction:.4f}")
        print("  size mm   centre  max |centre & 26 neighbours >= 1 %|  energy    leave-one-out at "
              + " ".join(map(str, sel)))
        diffs = table_differences(tables, tissue)  # type: ignore[arg-type]
        for size, (table, predicted) in leave_one_out(tables, tissue).items():  # type: ignore[arg-type]
            d = diffs[size]
            loo = " ".join(f"{predicted[s] / table[s] - 1:+.2%}" for s in sel)
            print(f"  {size:7.2f}  {d['centre']:+7.2%}  {d['neighbours']:24.2%}        {d['energy']:+7.2%}    {loo}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
