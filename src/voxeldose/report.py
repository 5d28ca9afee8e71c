"""The per-case report: one self-contained HTML page (inline CSS, figures as embedded PNG).

Contents: the case id (never a patient name), run date, version, method and kernel; the
warnings; the cumulative DVHs of all VOIs; the dose on axial, coronal and sagittal planes through
the centre of the hottest tumour (highest mean dose among the VOIs with role "tumour", else the
hottest voxel) with VOI outlines and a colour bar in Gy; the metrics table; the model
cross-checks; the provenance (collapsed).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from .dvh import DVH
from .image import Image

__all__ = ["write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ccc}
.meta{color:#555;font-size:.9em} table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right} th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left} .warn{background:#fff3cd;border:1px solid #e0b000;
padding:.6em 1em;border-radius:4px} .ok{background:#e8f5e9;border:1px solid #7cb342;padding:.6em 1em;
border-radius:4px} img{max-width:100%} pre{font-size:.75em;background:#f7f7f7;padding:1em;overflow:auto}
"""


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _colours(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _dvh_figure(dvhs: Mapping[str, DVH]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (name, h), colour in zip(dvhs.items(), _colours(len(dvhs))):
        d, f = h.curve(n_points=400)
        ax.plot(d, 100 * f, label=f"{name} (mean {h.mean_gy:.1f} Gy)", color=colour, lw=1.6)
    ax.set_xlabel("dose (Gy)")
    ax.set_ylabel("volume receiving at least the dose (%)")
    ax.set_ylim(0, 102)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Cumulative dose-volume histograms")
    out = _png(fig)
    plt.close(fig)
    return out


def _axis_labels(direction: NDArray[np.float64]) -> list[tuple[str, str]]:
    """For index axes x, y, z: the patient direction (LPS letters) at their low and high ends."""
    letters = [("R", "L"), ("A", "P"), ("I", "S")]  # LPS: +x left, +y posterior, +z superior
    out = []
    for j in range(3):
        v = direction[:, j]
        k = int(np.argmax(np.abs(v)))
        lo, hi = letters[k]
        out.append((lo, hi) if v[k] > 0 else (hi, lo))
    return out


def _slices_figure(dose: Image, vois: Mapping[str, NDArray[Any]], centre_zyx: tuple[int, int, int]) -> str:
    import matplotlib.pyplot as plt

    arr = np.asarray(dose.array, float)
    z, y, x = centre_zyx
    sx, sy, sz = dose.spacing_mm
    labels = _axis_labels(dose.direction_matrix)
    vmax = float(np.percentile(arr[arr > 0], 99.9)) if (arr > 0).any() else 1.0
    # show the region of the VOIs (and the dose) with a 20 mm margin, not the whole field of view
    union = np.zeros(arr.shape, bool)
    for m in vois.values():
        union |= np.asarray(m) > 0
    union |= arr > 0.01 * vmax
    lo, hi = [], []
    for axis, step in zip(range(3), (sz, sy, sx)):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(union.any(axis=other)) if union.any() else np.array([0, arr.shape[axis] - 1])
        pad = int(np.ceil(20.0 / step))
        lo.append(max(int(idx[0]) - pad, 0))
        hi.append(min(int(idx[-1]) + pad + 1, arr.shape[axis]))
    zs, ys, xs = (slice(a, b) for a, b in zip(lo, hi))
    planes = [
        ("axial", arr[z, ys, xs], {n: np.asarray(m)[z, ys, xs] for n, m in vois.items()}, sx, sy,
         lo[2], lo[1], labels[0], labels[1]),
        ("coronal", arr[zs, y, xs], {n: np.asarray(m)[zs, y, xs] for n, m in vois.items()}, sx, sz,
         lo[2], lo[0], labels[0], labels[2]),
        ("sagittal", arr[zs, ys, x], {n: np.asarray(m)[zs, ys, x] for n, m in vois.items()}, sy, sz,
         lo[1], lo[0], labels[1], labels[2]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    colours = dict(zip(vois, _colours(len(vois))))
    image = None
    for ax, (title, plane, masks, du, dv, u0, v0, (u_lo, u_hi), (v_lo, v_hi)) in zip(axes, planes):
        nv, nu = plane.shape
        extent = ((u0 - 0.5) * du, (u0 + nu - 0.5) * du, (v0 - 0.5) * dv, (v0 + nv - 0.5) * dv)
        image = ax.imshow(plane, cmap="inferno", vmin=0, vmax=vmax, origin="lower", extent=extent,
                          interpolation="nearest")
        for name, m in masks.items():
            if (m >= 0.5).any() and (m < 0.5).any():
                grid_u, grid_v = (u0 + np.arange(nu)) * du, (v0 + np.arange(nv)) * dv
                # a dark halo under each outline keeps it visible on the brightest dose
                ax.contour(grid_u, grid_v, m, levels=[0.5], colors=["black"], linewidths=2.6)
                ax.contour(grid_u, grid_v, m, levels=[0.5], colors=[colours[name]], linewidths=1.3)
        if title == "axial":
            ax.invert_yaxis()  # anterior at the top, as radiologists view axial slices
        ax.set_title(f"{title}")
        ax.set_xlabel(f"mm   ({u_lo} \u2192 {u_hi})")
        top, bottom = (v_lo, v_hi) if title == "axial" else (v_hi, v_lo)
        ax.set_ylabel(f"mm   ({bottom} \u2192 {top})")
        ax.set_aspect("equal")
    handles = [plt.Line2D([0], [0], color=colours[n], lw=2) for n in vois]
    fig.legend(handles, list(vois), loc="upper center", bbox_to_anchor=(0.45, 0.0), ncol=min(len(vois), 9),
               fontsize=8, frameon=False)
    cbar = fig.colorbar(image, ax=axes, shrink=0.85, pad=0.02)  # type: ignore[arg-type]
    cbar.set_label("absorbed dose (Gy)")
    fig.suptitle(f"Dose through voxel [z, y, x] = [{z}, {y}, {x}] (colour scale to the 99.9th percentile)")
    out = _png(fig)
    plt.close(fig)
    return out


def _hottest_centre(dose: Image, vois: Mapping[str, NDArray[Any]], dvhs: Mapping[str, DVH],
                    tumour_names: Sequence[str]) -> tuple[tuple[int, int, int], str]:
    candidates = [n for n in tumour_names if n in dvhs and n in vois]
    if candidates:
        name = max(candidates, key=lambda n: dvhs[n].mean_gy)
        m = np.asarray(vois[name], float)
        idx = np.argwhere(m >= 0.5)
        if idx.size == 0:
            idx = np.argwhere(m > 0)
        centre = tuple(int(v) for v in np.round(idx.mean(axis=0)))
        return centre, f"centre of the hottest tumour, {name}"  # type: ignore[return-value]
    flat = int(np.argmax(np.asarray(dose.array)))
    return tuple(int(v) for v in np.unravel_index(flat, dose.shape)), "hottest voxel"  # type: ignore[return-value]


def _fmt(value: Any) -> str:
    if value is None:
        return "\u2014"
    if isinstance(value, float):
        if not np.isfinite(value):
            return "\u2014"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return html.escape(str(value))


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _crosscheck_html(cc: Mapping[str, Any]) -> str:
    rows = []
    if "mird" in cc:
        m = cc["mird"]
        rows.append([f"MIRD single compartment ({m['voi']})", m["model_mean_gy"], m["voxel_mean_gy"],
                     m["relative_difference"]])
    if "partition" in cc:
        p = cc["partition"]
        rows.append([f"partition: tumours (T:N {p['tumour_to_normal_measured']:.2f})", p["tumour_model_gy"],
                     p["tumour_voxel_mean_gy"], p["tumour_relative_difference"]])
        rows.append(["partition: normal liver", p["normal_liver_model_gy"], p["normal_liver_voxel_mean_gy"],
                     p["normal_liver_relative_difference"]])
    if "lung" in cc:
        lung = cc["lung"]
        rows.append([f"lung ({lung['mass_source']}, {lung['mass_kg']:.2f} kg)", lung["model_mean_gy"], None, None])
    for row in rows:
        if isinstance(row[3], float):
            row[3] = f"{row[3]:+.1%}"
    return _table(rows, ["model", "model mean Gy", "voxel mean Gy", "voxel vs model"])


def write_report(
    path: str | Path,
    *,
    case_id: str,
    dose: Image,
    vois: Mapping[str, NDArray[Any]],
    dvhs: Mapping[str, DVH],
    metrics: Mapping[str, Mapping[str, float]],
    crosschecks: Mapping[str, Any],
    warnings: Sequence[str],
    provenance: Mapping[str, Any],
    tumour_names: Sequence[str] = (),
    title: str | None = None,
) -> Path:
    """Write the self-contained HTML report of one case; returns its path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from . import __version__

    p = Path(path)
    centre, where = _hottest_centre(dose, vois, dvhs, tumour_names)
    dvh_png = _dvh_figure(dvhs) if dvhs else ""
    slices_png = _slices_figure(dose, vois, centre)
    first = next(iter(metrics.values()), {})
    columns = [k for k in first]
    metric_rows = [[name, *[values.get(c) for c in columns]] for name, values in metrics.items()]
    header = ["VOI", *[c.replace("_pct", " %").replace("_gy", " Gy").replace("_ml", " mL").replace("_g", " g")
                       .replace("_", " ") for c in columns]]
    dose_info = provenance.get("dose", {}) if isinstance(provenance, Mapping) else {}
    warn_html = ("<div class='warn'><b>Warnings</b><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
                 + "</ul></div>") if warnings else "<div class='ok'>No warnings.</div>"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title or f"voxeldose report {case_id}")}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title or "Y-90 radioembolization dosimetry")}: case {html.escape(case_id)}</h1>
<p class="meta">voxeldose {html.escape(__version__)} &middot; run {dt.datetime.now().strftime("%Y-%m-%d %H:%M")}
&middot; method {html.escape(str(dose_info.get("method", "")))} &middot; kernel {html.escape(str(dose_info.get("kernel", "")))}
&middot; grid {html.escape(" x ".join(f"{s:g}" for s in dose.spacing_mm))} mm</p>
{warn_html}
<h2>Dose-volume histograms</h2>
{f'<img alt="DVH curves" src="data:image/png;base64,{dvh_png}">' if dvh_png else "<p>No VOIs.</p>"}
<h2>Dose maps</h2>
<p class="meta">Planes through the {html.escape(where)}; outlines at half coverage of each VOI.</p>
<img alt="dose on axial, coronal and sagittal planes" src="data:image/png;base64,{slices_png}">
<h2>Metrics</h2>
{_table(metric_rows, header)}
<p class="meta">D<i>x</i>: minimum dose to the hottest <i>x</i> % of the VOI; V<i>g</i>: percent of the VOI
receiving at least <i>g</i> Gy. Mass at 1.04 g/cm3.</p>
<h2>Model cross-checks</h2>
{_crosscheck_html(crosschecks)}
<h2>Provenance</h2>
<details><summary>inputs, calibration factors, kernel, timings</summary>
<pre>{html.escape(json.dumps(provenance, indent=2, default=str))}</pre></details>
</body></html>
"""
    p.write_text(page, encoding="utf-8")
    return p
