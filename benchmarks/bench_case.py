"""Whole-case benchmark: one exported case from DICOM to every output, warm and fresh.

Run:  python benchmarks/bench_case.py [--repeat N] [--no-fresh]

Writes the liver phantom as a DICOM export (Y-90 PET at 4 x 4 x 3 mm, 142 x 142 x 148, and an
RTSTRUCT with its 7 ROIs, as ``voxeldose demo`` does) to a temporary folder, then times:

* warm: ``voxeldose.run_case`` in this process, best of N after one call that loads the
  libraries and numba's loops; the wall and CPU seconds of each step (load, VOIs, calibrate,
  dose, DVH, outputs; the CPU seconds are the process's, all threads, read around each step)
  and of the whole call;
* fresh: ``voxeldose run`` in a new process (wall and CPU seconds of the process, its steps as
  its metrics.json records them), best of N, with numba's and matplotlib's caches as they are;
* first run after install: the same with empty numba and matplotlib caches (``NUMBA_CACHE_DIR``
  and ``MPLCONFIGDIR`` pointing at new folders) and voxeldose's own bytecode removed (an editable
  install compiles none), as a new user's demo or a fresh batch worker meets them;
* ``import voxeldose``: CPU seconds of a new interpreter importing it, and of one importing
  numpy only; and of one importing it with ``PYTHONDONTWRITEBYTECODE=1``, where every new process
  compiles voxeldose's modules from source again (container images often set it).

The runs in new processes write and use bytecode (``__pycache__``) as a normal installation does:
``PYTHONDONTWRITEBYTECODE`` is removed from their environment where this shell sets it, and the
benchmark says so.

Batch throughput with 1 and 2 workers is ``benchmarks/bench_batch.py``. Not a test: timings
depend on the machine; the README records a run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import voxeldose
from voxeldose import pipeline
from voxeldose.phantoms.export import write_liver_case

STEPS = ("load", "vois", "calibrate", "dose", "dvh", "outputs")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _subprocess(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall and CPU seconds of a command run to completion."""
    cpu0 = _children_cpu_s()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, _children_cpu_s() - cpu0


def _cpu_per_step() -> tuple[dict[str, float], contextlib.AbstractContextManager]:
    """The CPU seconds of each step of the pipeline's next calls, by wrapping its step timer."""
    cpu: dict[str, float] = {}
    original = pipeline._Steps.step

    @contextlib.contextmanager
    def step(self, name, *, timed=True):
        c0 = time.process_time()
        try:
            with original(self, name, timed=timed):
                yield
        finally:
            if timed:
                cpu[name] = time.process_time() - c0

    @contextlib.contextmanager
    def patched():
        pipeline._Steps.step = step
        try:
            yield
        finally:
            pipeline._Steps.step = original

    return cpu, patched()


def warm(export: Path, out: Path, repeat: int) -> tuple[dict[str, float], dict[str, float], float, float]:
    args = (export / "PET", [export / "RTSTRUCT.dcm"])
    voxeldose.run_case(*args, out / "warm-up", case=export / "case.toml", force=True)
    best = None
    for i in range(repeat):
        cpu, patched = _cpu_per_step()
        with patched:
            c0, t0 = time.process_time(), time.perf_counter()
            result = voxeldose.run_case(*args, out / f"warm-{i}", case=export / "case.toml", force=True)
            wall, total_cpu = time.perf_counter() - t0, time.process_time() - c0
        if best is None or wall < best[2]:
            best = (dict(result.provenance["timings_s"]), dict(cpu), wall, total_cpu)
    assert best is not None
    return best


def _normal_env(**extra: str) -> dict[str, str]:
    """This process's environment as a normal installation runs: bytecode written and used."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra)
    return env


def _remove_bytecode() -> int:
    """Remove voxeldose's compiled modules (``*.pyc``; numba's cache files stay): the state of an
    editable install before its first import. Returns how many were removed."""
    files = list(Path(voxeldose.__file__).parent.rglob("__pycache__/*.pyc"))
    for f in files:
        f.unlink()
    return len(files)


def fresh(export: Path, out: Path, repeat: int, env: dict[str, str] | None = None,
          new_caches: bool = False) -> tuple[dict[str, float], float, float]:
    best = None
    for i in range(repeat):
        run_env = dict(env or _normal_env())
        with tempfile.TemporaryDirectory() as caches:
            if new_caches:
                run_env["NUMBA_CACHE_DIR"] = str(Path(caches) / "numba")
                run_env["MPLCONFIGDIR"] = str(Path(caches) / "matplotlib")
                _remove_bytecode()
            target = out / f"fresh-{'new' if new_caches else 'warm'}-{i}"
            wall, cpu = _subprocess([_command(), "-q", "run", str(export / "PET"),
                                     "--voi", str(export / "RTSTRUCT.dcm"), "--case", str(export / "case.toml"),
                                     "--out", str(target)], run_env)
        steps = json.loads((target / "metrics.json").read_text(encoding="utf-8"))["provenance"]["timings_s"]
        if best is None or wall < best[1]:
            best = (steps, wall, cpu)
    assert best is not None
    return best


def _command() -> str:
    """The ``voxeldose`` command of this interpreter's environment (as a user types it)."""
    here = Path(sys.executable).parent / "voxeldose"
    found = str(here) if here.exists() else shutil.which("voxeldose")
    if not found:
        raise SystemExit("the voxeldose command is not installed: pip install -e . first")
    return found


def import_cpu(repeat: int, env: dict[str, str]) -> tuple[float, float]:
    _subprocess([sys.executable, "-c", "import voxeldose"], env)  # bytecode written where it is allowed
    runs = {code: min(_subprocess([sys.executable, "-c", code], env)[1] for _ in range(repeat))
            for code in ("import numpy", "import voxeldose")}
    return runs["import voxeldose"], runs["import numpy"]


def _row(label: str, wall: dict[str, float], cpu: dict[str, float] | None, total_wall: float,
         total_cpu: float) -> str:
    cells = []
    for step in STEPS:
        w = wall.get(step)
        c = None if cpu is None else cpu.get(step)
        cells.append(f"{w:5.2f}/{c:5.2f}" if w is not None and c is not None
                     else (f"{w:5.2f}/  -  " if w is not None else f"{'-':>11s}"))
    return f"{label:24s} " + " ".join(f"{c:>11s}" for c in cells) + f" {total_wall:7.2f} {total_cpu:7.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-fresh", action="store_true", help="skip the runs in new processes")
    args = parser.parse_args(argv)
    import numba

    print(f"voxeldose {voxeldose.__version__}, {os.cpu_count()} CPU(s), numba threads {numba.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "export"
        write_liver_case(export, write=("PET", "RTSTRUCT"))
        out = Path(tmp) / "out"
        print(f"{'run (wall s / CPU s)':24s} " + " ".join(f"{s:>11s}" for s in STEPS) + f" {'wall s':>7s} {'CPU s':>7s}")
        steps, cpu, wall, total_cpu = warm(export, out, args.repeat)
        print(_row("warm, in process", steps, cpu, wall, total_cpu), flush=True)
        if not args.no_fresh:
            steps, wall, total_cpu = fresh(export, out, args.repeat)
            print(_row("fresh voxeldose run", steps, None, wall, total_cpu), flush=True)
            steps, wall, total_cpu = fresh(export, out, 1, new_caches=True)
            print(_row("first run after install", steps, None, wall, total_cpu), flush=True)
            voxeldose_cpu, numpy_cpu = import_cpu(args.repeat, _normal_env())
            _remove_bytecode()  # as an environment that never writes it has none
            no_bytecode_cpu, _ = import_cpu(args.repeat, _normal_env(PYTHONDONTWRITEBYTECODE="1"))
            import_cpu(1, _normal_env())  # and written again for what comes next
            print(f"import voxeldose: {voxeldose_cpu:.2f} CPU s in a new interpreter "
                  f"(import numpy alone: {numpy_cpu:.2f}); {no_bytecode_cpu:.2f} with PYTHONDONTWRITEBYTECODE=1 "
                  "(voxeldose's modules compiled from source in every process)")
            if os.environ.get("PYTHONDONTWRITEBYTECODE"):
                print("this shell sets PYTHONDONTWRITEBYTECODE: it was removed for the runs in new processes "
                      "(a normal installation writes and reuses bytecode)")


if __name__ == "__main__":
    main()
