"""The HTML report: self-contained, complete, escaped; looked at in headless Chromium."""

from __future__ import annotations

import base64
import html.parser
import re
import shutil
import subprocess

import numpy as np
import pytest

import voxeldose
from voxeldose import phantoms
from voxeldose.image import Image
from voxeldose.report import write_report


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    ph = phantoms.liver()
    dose = voxeldose.absorbed_dose(ph.activity_mbq, ph.spacing_mm)
    masks = dict(ph.masks)
    masks["<script>alert(1)</script>"] = ph.masks["tumour_2"]
    dvhs = {n: voxeldose.dvh(dose, m, ph.spacing_mm) for n, m in masks.items()}
    metrics = {n: {"volume_ml": h.volume_ml, **h.metrics()} for n, h in dvhs.items()}
    path = tmp_path_factory.mktemp("report") / "report.html"
    write_report(path, case_id="tare-001", dose=Image(dose, ph.spacing_mm, ph.origin_mm, units="GY"), vois=masks,
                 dvhs=dvhs, metrics=metrics, crosschecks={"lung": {"mass_kg": 1.0, "mass_source": "1 kg",
                                                                   "model_mean_gy": 14.9}},
                 warnings=["lung dose 34.3 Gy exceeds 30 Gy"], provenance={"dose": {"method": "kernel"}},
                 tumour_names=[f"tumour_{i}" for i in range(1, 6)])
    return path


def test_report_is_self_contained_and_complete(report):
    text = report.read_text()
    parser = html.parser.HTMLParser()
    parser.feed(text)  # parses
    for name in ("liver", "tumour_5", "lung", "normal_liver", "tare-001", "exceeds 30 Gy", "centre of the hottest tumour"):
        assert name in text
    assert not re.search(r"""(src|href)=["']https?://""", text)  # no external resources
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 2
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;" in text  # VOI names escaped
    assert report.stat().st_size < 3e6


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
def test_report_renders_in_chromium(report, tmp_path):
    png = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1300,2400",
                    report.as_uri()], capture_output=True, timeout=120)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a page with figures, not blank
