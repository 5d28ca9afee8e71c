"""The README's research-pipeline example runs as it stands (from an export to a pandas table)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_research_pipeline_example_runs(tmp_path):
    pytest.importorskip("pandas", reason="pandas not installed (pip install '.[test]')")
    text = README.read_text(encoding="utf-8")
    after = text[text.index("A research pipeline, from an export to a pandas table"):]
    code = re.search(r"```python\n(.*?)```", after, re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the table: one row per VOI and case, the mean doses of both cases side by side
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("case_id"))
    assert "tare-000" in lines[header] and "tare-001" in lines[header]
    assert any(line.startswith("tumour_1") for line in lines[header:])
    for case in ("tare-000", "tare-001"):
        assert sorted(p.name for p in (tmp_path / "results" / case).iterdir()) == sorted(
            ["activity.nii.gz", "dose.nii.gz", "dvh.csv", "metrics.json", "report.html", "rtdose.dcm"])
