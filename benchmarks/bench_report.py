"""HTML report benchmark: the time of ``render_report`` and of each of its figures.

Run:  python benchmarks/bench_report.py [--repeat N] [--cases 4x3,ct6] [--against REV] [--dump DIR]

Cases: "4x3" is the liver phantom at 4 x 4 x 3 mm (148 x 142 x 142 voxels), kernel dose, 8 VOIs
(the dose maps and the DVHs); "ct6" is the liver-lung interface phantom at 6 mm with its CT's
densities in the dose and the CT (HU, on the scan's grid) under the dose maps, which adds the
density figure. For each case it prints the best of N warm calls (after one warm-up call that
imports matplotlib and fills its font cache) of ``render_report`` and of each figure (built,
drawn and encoded), and the size of the page.

``--against REV`` loads ``src/voxeldose/report.py`` as it was at git revision REV (e.g. HEAD~1)
beside the working tree's, checks that the two pages are the same text once the base64 image
payloads are cut out, and times the two ``render_report`` calls interleaved (the best of N of
each): a before/after on a busy machine. ``--dump DIR`` writes each case's page without the
payloads (``DIR/<case>.html``) and its images (``DIR/<case>-<n>.png``).

Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import functools
import importlib.util
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import voxeldose
from voxeldose import phantoms
from voxeldose import report as R

ROLES = {"liver": "whole_liver", "normal_liver": "normal_liver", "lung": "lung",
         **{f"tumour_{i}": "tumour" for i in range(1, 6)}}
CASES = ("4x3", "ct6")
_PAYLOAD = re.compile(r"(src='data:image/png;base64,)([^']+)(')")


def case_result(label):
    """The CaseResult of a case (see the module docstring), with a fixed run date."""
    if label == "4x3":
        ph = phantoms.liver(spacing_xyz_mm=(4.0, 4.0, 3.0), shape=(148, 142, 142))
        vois = {n: ph.vois[n] for n in ROLES}
        case = voxeldose.Case("tare-001", administered_gbq=3.0, lung_shunt_fraction=0.1, residual_fraction=0.0,
                              voi_roles=ROLES)
        result = voxeldose.compute_case(ph.activity, vois, case)
    elif label == "ct6":
        from voxeldose.io.ct import ct_density
        from voxeldose.phantoms.export import _ct_image, _geometry

        ph = phantoms.liver(spacing_xyz_mm=(6.0, 6.0, 6.0), lung_interface=True)
        density = ct_density(_ct_image((3.0, 3.0, 3.0), _geometry(), lung_interface=True), ph.activity)
        ct = _ct_image(ph.activity.spacing_mm, _geometry(), lung_interface=True)  # HU on the scan's grid
        roles = {n: r for n, r in ROLES.items() if n != "normal_liver"}
        vois = {n: ph.vois[n] for n in roles}
        case = voxeldose.Case("tare-ct", administered_gbq=3.0, lung_shunt_fraction=0.1, residual_fraction=0.0,
                              voi_roles=roles)
        result = voxeldose.compute_case(ph.activity, vois, case, density=density, ct=ct)
    else:
        raise SystemExit(f"unknown case {label!r}; known: {', '.join(CASES)}")
    # the page shows the run date, else the minute it was rendered: fixed, two renderings compare
    return dataclasses.replace(result, provenance={**result.provenance, "run_datetime": "2026-01-15T10:00:00"})


def best_s(fn, repeat):
    """The shortest of ``repeat`` wall times (s) of ``fn()``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def strip_images(page):
    """The page with every base64 image payload cut out, and the payloads."""
    return _PAYLOAD.sub(r"\1\3", page), [m[1] for m in _PAYLOAD.findall(page)]


def report_module_at(rev):
    """``voxeldose.report`` as it was at git revision ``rev``, imported beside the present one."""
    root = pathlib.Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{rev}:src/voxeldose/report.py"], cwd=root, check=True,
                            capture_output=True, text=True).stdout
    path = pathlib.Path(tempfile.mkdtemp()) / "report_at_rev.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("voxeldose._report_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # its relative imports resolve in the voxeldose package
    return module


def figure_parts(result):
    """``render_report`` and each of its figures (built, drawn, encoded) as calls, by name."""
    masks = {str(n): m.array for n, m in result.vois.items()}
    colours = R._colours(list(dict.fromkeys([*result.dvhs, *masks])))
    tumour = R.hottest_tumour({n: h for n, h in result.dvhs.items() if n in masks}, roles=result.roles)
    parts = {
        "render_report": lambda: R.render_report(result),
        "  dvh figure": lambda: R._png(R._dvh_figure(result.dvhs, colours)),
        "  dose planes": lambda: R._png(R._slices_figure(result.dose, masks, colours, tumour,
                                                          result.images.get("ct"))[0]),
    }
    if "density" in result.images:
        parts["  density planes"] = lambda: R._png(R._density_figure(result.images["density"], masks, tumour,
                                                                      result.dose)[0])
    return parts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--against", metavar="REV")
    parser.add_argument("--dump", type=pathlib.Path)
    args = parser.parse_args(argv)
    before = report_module_at(args.against) if args.against else None
    for label in args.cases.split(","):
        result = case_result(label)
        page = R.render_report(result)  # warm-up
        parts = figure_parts(result)
        print(f"{label}: grid {result.dose.shape}, {len(result.vois)} VOIs, page {len(page) / 1e6:.2f} MB")
        for name, fn in parts.items():
            print(f"  {name:18s} {best_s(fn, args.repeat):7.3f} s")
        if before is not None:
            old_page = before.render_report(result)
            same = strip_images(old_page)[0] == strip_images(page)[0]
            print(f"  at {args.against}: page {len(old_page) / 1e6:.2f} MB; without the images "
                  f"{'the same text' if same else 'DIFFERENT TEXT'}")
            old_s, new_s = [], []
            for _ in range(args.repeat):  # interleaved: both see the same load
                old_s.append(best_s(functools.partial(before.render_report, result), 1))
                new_s.append(best_s(functools.partial(R.render_report, result), 1))
            print(f"  render_report interleaved: {args.against} {min(old_s):.3f} s, now {min(new_s):.3f} s "
                  f"({min(old_s) / min(new_s):.1f}x)")
        if args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            text, images = strip_images(page)
            (args.dump / f"{label}.html").write_text(text, encoding="utf-8")
            for i, data in enumerate(images):
                (args.dump / f"{label}-{i}.png").write_bytes(base64.b64decode(data))


if __name__ == "__main__":
    main()
