"""Planning benchmark: the cost of planning a territory, against one dose computation per trial.

Run:  python benchmarks/bench_plan.py [--repeat 3] [--no-real]

For the liver phantom's MAA-like counts (one territory, the whole liver; and the liver split into
two territories) on a 4.42 mm SPECT grid, for the phantom's Tc-99m MAA SPECT as DICOM (the export
of ``voxeldose phantom liver --maa``: its NM file and the RTSTRUCT, read with
:func:`voxeldose.load_image` and :func:`voxeldose.load_vois`; the reading is timed and counted
in its total, and its ratio, the naive loop over read + plan, is a lower bound too), for the
phantom whose right lung abuts the liver with its CT (MAA, CT and RTSTRUCT as DICOM, the CT's
densities on the SPECT's grid read in the total; planned and looped with the scaled kernel), and
for the real MAA case in
``../shared/real_data/taranis_patient2_maa`` (skipped where absent), prints the best of
``--repeat`` runs of :func:`voxeldose.plan.compute_plan` (kernel method, two constraints per
territory: a normal-liver mean and a tumour D70): its dose step (one dose computation per
territory), its plan step (solving every constraint by bisection on the linear sum), the DVH
step, the total, the peak numpy memory traced by tracemalloc, and the obvious alternative
measured in the same run: the same bisection with a fresh predicted activity map, dose and DVH
at every trial activity (what a planning loop without linearity does), its number of dose
computations and the ratio. The voxel plan's activity of both is printed: they agree to the
bisection's tolerance. Not a test: the README records a run; tests/test_plan*.py check the
numbers.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

import voxeldose
from voxeldose import phantoms
from voxeldose.plan import compute_plan
from voxeldose.planning import metric_of, plan_settings_from_dict, predicted_activity

REAL = Path(__file__).resolve().parents[2] / "shared" / "real_data" / "taranis_patient2_maa"


def phantom_case(split: bool):
    ph = phantoms.liver(spacing_xyz_mm=(4.42, 4.42, 4.42), lung_shunt_fraction=0.08)
    counts = voxeldose.Image(ph.activity.array * 1000.0, ph.activity.spacing_mm, ph.activity.origin_mm, units="CNTS")
    vois = {n: ph.vois[n] for n in ("liver", "lung", *(f"tumour_{i}" for i in range(1, 6)))}
    roles = {"liver": "whole_liver", "lung": "lung", **{f"tumour_{i}": "tumour" for i in range(1, 6)}}
    if split:
        liver = np.asarray(ph.vois["liver"].array, np.float32)
        cols = np.nonzero(liver.sum(axis=(0, 1)))[0]
        cut = int((cols[0] + cols[-1]) // 2)
        right, left = liver.copy(), liver.copy()
        right[..., cut:] = 0.0
        left[..., :cut] = 0.0
        vois.update(right=voxeldose.mask_image(counts, right, name="right"),
                    left=voxeldose.mask_image(counts, left, name="left"))
        roles.update(right="perfused", left="perfused")
    plan = {"constraints": [{"role": "normal_liver", "metric": "mean", "max_gy": 40.0},
                            {"role": "tumour", "metric": "D70", "min_gy": 100.0}]}
    case = voxeldose.Case("bench-plan", voi_roles=roles, lung_shunt_fraction=0.08, plan=plan)
    return counts, vois, case


def dicom_case(folder: Path):
    """The liver phantom's MAA SPECT written as DICOM (MAA/maa.dcm, RTSTRUCT.dcm, case.toml) into
    ``folder``; returns (read, case), ``read()`` giving the counts and VOIs from the files."""
    from voxeldose.phantoms.export import write_liver_case

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_liver_case(folder, write=("MAA", "RTSTRUCT"))
    plan = {"constraints": [{"role": "normal_liver", "metric": "mean", "max_gy": 40.0},
                            {"role": "tumour", "metric": "D70", "min_gy": 100.0}]}
    case = voxeldose.load_case(folder / "case.toml").with_overrides(plan=plan_settings_from_dict(plan))

    def read():
        maa = voxeldose.load_image(folder / "MAA")
        return maa, dict(voxeldose.load_vois(folder / "RTSTRUCT.dcm", maa)), {}

    return read, case


def interface_case(folder: Path):
    """The phantom whose right lung abuts the liver: MAA SPECT (6.63 mm), CT (4 x 4 x 5 mm) and
    RTSTRUCT as DICOM; ``read()`` gives the counts, the VOIs and the CT's densities on the SPECT's
    grid (``compute_plan``'s ``ct`` and ``density``), planned with the scaled kernel."""
    from voxeldose.io import load_ct_density
    from voxeldose.phantoms.export import write_liver_case

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_liver_case(folder, write=("MAA", "CT", "RTSTRUCT"), lung_interface=True,
                         ct_spacing_xyz_mm=(4.0, 4.0, 5.0), maa_spacing_xyz_mm=(6.63, 6.63, 6.63))
    plan = {"constraints": [{"role": "normal_liver", "metric": "mean", "max_gy": 40.0},
                            {"role": "tumour", "metric": "D70", "min_gy": 100.0}]}
    case = voxeldose.load_case(folder / "case.toml").with_overrides(plan=plan_settings_from_dict(plan))

    def read():
        maa = voxeldose.load_image(folder / "MAA")
        ct, density = load_ct_density(folder / "CT", maa)
        return maa, dict(voxeldose.load_vois(folder / "RTSTRUCT.dcm", maa)), {"ct": ct, "density": density}

    return read, case


def real_case():
    spect = voxeldose.load_image(REAL / "patient_2_SPECT.nrrd")
    vois = voxeldose.load_vois(REAL / "patient_2_Segmentation.seg.nrrd", spect)
    roles = {"liver": "whole_liver", "Tumor 1": "tumour", "Tumor 2": "tumour", "perfused volume": "perfused"}
    plan = {"constraints": [{"role": "perfused_normal", "metric": "mean", "max_gy": 40.0},
                            {"role": "tumour", "metric": "D70", "min_gy": 100.0}]}
    case = voxeldose.Case("taranis-2", scan_units="CNTS", voi_roles=roles, lung_shunt_fraction=0.05,
                          sphere_type="glass", plan=plan)
    return spect, vois, case


def traced(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        out = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, out


def naive_plan(counts, result, case, territory: str, rel_tol: float = 1e-4, method: str = "kernel",
               density=None):
    """Bisection on the binding constraint with a new activity map, dose and DVH per trial (with a
    density map: its body outline, activity outside it left out, as the plan does)."""
    binding = result.plan["territories"][territory]["binding_constraint"]
    m = re.match(r"^(?P<voi>.+) (?P<metric>mean|[DV][0-9.]+) <= (?P<bound>[0-9.eE+-]+) ", binding)
    assert m is not None, binding
    voi, metric, bound = m["voi"], m["metric"], float(m["bound"])
    territories = {t: result.vois[t] for t in result.plan["territories"]}
    others = dict(result.plan["territories"][territory]["others_at"])  # the plan's rule: others at planned
    lsf = result.plan["lung_shunt"]["value"]
    lung = result.vois.get("lung")
    if voi == f"{territory} without tumours":
        mask = _territory_normal(result, territory)
    else:
        mask = result.vois[voi]
    n = 0
    body = None
    if density is not None:
        from voxeldose.density import body_mask

        body = body_mask(density)

    def value(a: float) -> float:
        nonlocal n
        n += 1
        act, _ = predicted_activity(counts, territories, {**others, territory: a}, lung_shunt_fraction=lsf, lung=lung)
        if body is not None:
            act = act.with_array(np.where(body.array > 0.5, act.array, 0.0).astype(np.float32))
        dose = voxeldose.absorbed_dose(act, method=method, density=density, body=body)
        return metric_of(voxeldose.dvh(dose, mask), metric)

    lo, hi = 0.0, 20.0
    while hi - lo > rel_tol * max(hi, 1e-9):
        mid = 0.5 * (lo + hi)
        if value(mid) <= bound:
            lo = mid
        else:
            hi = mid
    return lo, n


def _territory_normal(result, territory):
    from voxeldose.voi_sets import difference, union_of

    tumours = [np.asarray(result.vois[v].array) for v, r in result.roles.items() if r == "tumour" and v in result.vois]
    t = np.asarray(result.vois[territory].array)
    return voxeldose.mask_image(result.dose, difference(t, union_of(tumours, t.shape)), name="normal")


def row(name: str, counts, vois, case, repeat: int, read=None, method: str = "kernel") -> str:
    """One line of the table; with ``read`` (a function giving the counts, the VOIs and further
    ``compute_plan`` arguments from files), each trial reads them first and its total includes
    the reading."""
    extra: dict = {}

    def one():
        nonlocal extra
        c, v, extra = (counts, vois, {}) if read is None else read()
        return c, compute_plan(c, v, case, method=method, **extra)

    best = None
    for _ in range(repeat):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peak, _ = traced(one)
        # tracemalloc slows numpy allocation little; time again without it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            counts, result = one()
            total = time.perf_counter() - t0
        if best is None or total < best[0]:
            best = (total, peak, result)
    assert best is not None
    total, peak, result = best
    tim = result.provenance["timings_s"]
    first = next(iter(result.plan["territories"]))
    a_fast = result.plan["territories"][first]["activity_gbq"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        a_naive, n_doses = naive_plan(counts, result, case, first, method=method, density=extra.get("density"))
        naive = time.perf_counter() - t0
    n_terr = len(result.plan["territories"])
    nz, ny, nx = counts.shape
    return (f"{name:<22} {nx}x{ny}x{nz:<5} {n_terr:>5} {tim['dose']:>7.2f} {tim['plan']:>7.2f} {tim['dvh']:>6.2f} "
            f"{total:>7.2f} {peak / 2**20:>8.0f} {naive:>9.2f} {n_doses:>6} {naive / total:>6.1f}x "
            f"{a_fast:>8.4f} {a_naive:>8.4f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-real", action="store_true", help="skip the real MAA case")
    args = parser.parse_args(argv)
    print(f"voxeldose {voxeldose.__version__}, numpy {np.__version__}, {os.cpu_count()} CPU(s); kernel method "
          "(the lung-interface row: scaled kernel with the CT); "
          "naive = a new activity map, dose and DVH per bisection trial (to 1e-4), first territory only")
    header = (f"{'case':<22} {'grid':<13} {'terr':>5} {'dose s':>7} {'plan s':>7} {'dvh s':>6} {'total s':>7} "
              f"{'peak MiB':>8} {'naive s':>9} {'doses':>6} {'ratio':>7} {'A GBq':>8} {'naive A':>8}")
    print(header)
    print("-" * len(header))
    voxeldose.absorbed_dose(voxeldose.Image(np.ones((8, 8, 8), np.float32), (4.42,) * 3, units="MBQ"))  # compile
    print(row("phantom, 1 territory", *phantom_case(False), args.repeat), flush=True)
    print(row("phantom, 2 territories", *phantom_case(True), args.repeat), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        read, case = dicom_case(Path(tmp) / "liver")
        print(row("phantom MAA DICOM+read", None, None, case, args.repeat, read=read), flush=True)
        read, case = interface_case(Path(tmp) / "interface")
        print(row("lung interface CT+read", None, None, case, args.repeat, read=read, method="scaled_kernel"),
              flush=True)
    if args.no_real:
        return
    if not REAL.is_dir():
        print(f"(real case skipped: {REAL} not found)")
        return
    print(row("real MAA (taranis 2)", *real_case(), args.repeat), flush=True)


if __name__ == "__main__":
    main()
