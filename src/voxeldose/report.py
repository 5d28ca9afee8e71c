"""The per-case report: one self-contained HTML page (inline CSS, figures as embedded PNG).

Contents, top to bottom: a header (case id, run date, voxeldose version, dose method and kernel,
grid); the warnings in a coloured box (or "No warnings"); the cumulative DVHs of all VOIs; the
dose on axial, coronal and sagittal planes through the hottest tumour, with VOI outlines, a
colour bar in Gy and patient-orientation letters; the metrics table; the model cross-checks
beside the voxel means; the provenance (collapsed JSON).

The page references nothing outside itself (no scripts, fonts, style sheets or images from
the network), so it can be archived and opened offline. Every text that comes from the caller
(case id, VOI names, warnings, provenance) is HTML-escaped. Figures are drawn with matplotlib's
object API on the Agg canvas: the caller's pyplot state and backend are left alone.

Orientation: the planes are drawn in patient coordinates (DICOM LPS, mm) in the radiological
convention: axial with the patient's right on the viewer's left and anterior at the top,
coronal with right on the left and superior at the top, sagittal with anterior on the left and
superior at the top. A grid whose index axes are permuted or flipped relative to the patient
axes is reoriented from its direction matrix; an oblique grid (index axes more than 10 degrees
from the patient axes) is shown along its nearest patient axes and the report says so.

The "hottest tumour" that the planes pass through is the tumour VOI with the highest mean dose
(:func:`hottest_tumour`); the planes cross at its centroid.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import re
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from ._version import __version__
from .dvh import DVH
from .errors import InputError
from .image import Image

if TYPE_CHECKING:
    from .result import CaseResult

__all__ = ["render_report", "hottest_tumour"]

#: Index axes further than this from a patient axis make the grid "oblique" (degrees).
_OBLIQUE_DEG = 10.0

#: Margin (mm) around the VOIs and the dose shown on the planes.
_MARGIN_MM = 20.0

_CSS = """
:root{--warn:#b45309;--warnbg:#fff7e6;--ok:#2e7d32;--okbg:#edf7ee;--line:#d0d4d9}
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:1.5em auto;
max-width:1240px;color:#1d232a;padding:0 1.2em;line-height:1.4}
h1{font-size:1.45em;margin:0 0 .3em} h2{font-size:1.15em;margin-top:1.8em;padding-bottom:.2em;
border-bottom:1px solid var(--line)}
.meta{color:#555;font-size:.88em}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid var(--line);padding:3px 6px;text-align:right;white-space:nowrap}
th{vertical-align:bottom}
thead th{background:#eef1f4} tbody tr:nth-child(even){background:#f8f9fa}
td.name,th.name{text-align:left} td.text{text-align:left;white-space:normal;max-width:26em}
table.info th{text-align:left;background:#eef1f4;font-weight:600} table.info td{text-align:left;white-space:normal}
.box{padding:.7em 1.1em;border-radius:6px;margin:1em 0}
.warn{background:var(--warnbg);border:2px solid var(--warn)} .warn h3{color:var(--warn);margin:.1em 0 .4em;font-size:1.05em}
.warn ul{margin:.2em 0 .2em 1.2em;padding:0} .warn li{margin:.15em 0}
.ok{background:var(--okbg);border:1px solid var(--ok);color:var(--ok);font-weight:600}
td.flag{background:#fde7c8;color:#7a3e00;font-weight:600}
figure{margin:.6em 0} figure img{max-width:100%;height:auto;display:block}
figcaption{color:#555;font-size:.85em;margin-top:.3em}
details{margin:.5em 0} summary{cursor:pointer;font-weight:600}
pre{font-size:.76em;background:#f6f8fa;padding:1em;overflow:auto;border:1px solid var(--line);border-radius:4px}
.scroll{overflow-x:auto}
"""

_PATIENT_AXES = "xyz"
# LPS: the patient direction at the low and high end of each patient axis
_LOW_HIGH = {"x": ("R", "L"), "y": ("A", "P"), "z": ("I", "S")}


# --------------------------------------------------------------------------- helpers


def _png(fig: Any, dpi: int = 100) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})  # layout="constrained": no crop pass
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _mpl_text(text: str) -> str:
    """A string matplotlib shows literally: no mathtext, no hidden "_" legend labels."""
    out = text.replace("$", r"\$")
    return "\u200b" + out if out.startswith("_") else out


def _colours(names: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """A (colour, line style) per VOI name, stable in the given order."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    n = 10 if len(names) <= 10 else 20
    styles = ("-", "--", ":", "-.")
    return {name: (cmap(i % n), styles[(i // n) % len(styles)]) for i, name in enumerate(names)}


def _is_tumour_name(name: str) -> bool:
    return re.match(r"(?i)tumou?r", name) is not None


def hottest_tumour(
    dvhs: Mapping[str, DVH],
    *,
    tumour_names: Sequence[str] | None = None,
    roles: Mapping[str, str] | None = None,
) -> str | None:
    """The tumour VOI with the highest mean dose, by a fixed rule; None when there is none.

    The candidates are, in order of precedence (the first non-empty set is used):

    1. ``tumour_names``, when given;
    2. the VOIs whose role is ``"tumour"`` in ``roles`` (e.g. ``crosschecks["roles"]``);
    3. the VOIs whose name starts with "tumour" or "tumor" (any case).

    Only names with a DVH count. Ties go to the first in order.

    Example
    -------
    >>> import numpy as np, voxeldose
    >>> d = np.arange(8.0).reshape(2, 2, 2)
    >>> a, b = np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool)
    >>> a[0], b[1] = True, True
    >>> h = lambda m: voxeldose.dvh_array(d, m, spacing_xyz_mm=(4, 4, 4))
    >>> dvhs = {"Tumor A": h(a), "tumor B": h(b)}
    >>> hottest_tumour(dvhs)
    'tumor B'
    """
    for candidates in (
        list(tumour_names or ()),
        [n for n, r in (roles or {}).items() if r == "tumour"],
        [n for n in dvhs if _is_tumour_name(n)],
    ):
        present = [n for n in candidates if n in dvhs]
        if present:
            return max(present, key=lambda n: dvhs[n].mean_gy)
    return None


class _Canonical:
    """A view of a grid in patient-axis order [z, y, x] (LPS), each axis ascending.

    ``coords[c]`` holds the patient coordinate (mm) of each voxel centre along canonical axis
    ``c`` (0: z, 1: y, 2: x), exact for grids aligned with the patient axes and along the
    nearest patient axis for oblique ones.
    """

    def __init__(self, image: Image) -> None:
        d = image.direction_matrix  # rows: patient axes x, y, z; columns: index axes i, j, k
        spacing = np.asarray(image.spacing_mm, float)
        origin = np.asarray(image.origin_mm, float)
        n_ijk = image.size_xyz
        nearest = [int(np.argmax(np.abs(d[:, j]))) for j in range(3)]  # patient axis of index axis j
        if sorted(nearest) != [0, 1, 2]:  # 45-degree ambiguity: keep the index order
            nearest = [0, 1, 2]
        self.oblique = any(abs(d[nearest[j], j]) < math.cos(math.radians(_OBLIQUE_DEG)) for j in range(3))
        index_of = {p: j for j, p in enumerate(nearest)}  # patient axis -> index axis
        # canonical axis c is patient axis 2 - c, stored in array axis 2 - index_of[2 - c]
        self.axes = tuple(2 - index_of[2 - c] for c in range(3))
        self.flip = []
        self.coords = []
        for c in range(3):
            p = 2 - c
            j = index_of[p]
            step = d[p, j] * spacing[j]
            coord = origin[p] + step * np.arange(n_ijk[j])
            self.flip.append(step < 0)
            self.coords.append(coord[::-1] if step < 0 else coord)

    def view(self, array: NDArray[Any]) -> NDArray[Any]:
        out = np.transpose(np.asarray(array), self.axes)
        flips = tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)
        return out[flips]


# --------------------------------------------------------------------------- figures


def _dvh_figure(dvhs: Mapping[str, DVH], colours: Mapping[str, tuple[Any, str]]) -> str:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(11.5, 5.2), layout="constrained")
    ax = fig.add_subplot()
    handles: list[Line2D] = []
    labels: list[str] = []
    top = 0.0
    for name, h in dvhs.items():
        d, f = h.curve(n_points=600)
        # close the curve at the maximum dose: no voxel receives more
        d = np.append(d, d[-1])
        f = np.append(f, 0.0)
        colour, style = colours[name]
        (line,) = ax.plot(d, 100.0 * f, color=colour, ls=style, lw=1.8)
        handles.append(line)
        labels.append(_mpl_text(f"{name}  (mean {h.mean_gy:.1f} Gy)"))
        top = max(top, h.max_gy)
    ax.set_xlabel("dose (Gy)", fontsize=11)
    ax.set_ylabel("volume receiving at least the dose (%)", fontsize=11)
    ax.set_ylim(0, 102)
    ax.set_xlim(0, top * 1.03 if top > 0 else 1.0)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=10)
    ax.legend(handles, labels, fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              title="VOI", title_fontsize=10, ncol=1 if len(labels) <= 22 else 2)
    return _png(fig)


def _crop(canon_masks: Sequence[NDArray[Any]], dose: NDArray[np.floating], vmax: float,
          coords: Sequence[NDArray[np.float64]]) -> list[slice]:
    """Index ranges (canonical axes) around the VOIs and the dose, with a margin in mm."""
    union = dose > 0.01 * vmax
    for m in canon_masks:
        union = union | (m > 0)
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(union.any(axis=other))
        n = dose.shape[axis]
        if idx.size == 0:
            out.append(slice(0, n))
            continue
        step = abs(float(coords[axis][1] - coords[axis][0])) if n > 1 else 1.0
        pad = int(math.ceil(_MARGIN_MM / step))
        out.append(slice(max(int(idx[0]) - pad, 0), min(int(idx[-1]) + pad + 1, n)))
    return out


def _outline_styles(masks: Mapping[str, NDArray[np.float64]]) -> dict[str, bool]:
    """Which VOIs to outline dashed: those whose outline mostly coincides with smaller VOIs'.

    Going from the smallest VOI to the largest, a VOI whose boundary voxels lie for more than
    half within one voxel of the boundaries already seen is marked dashed (e.g. a whole liver
    after its normal liver, or a "tumours" union after its tumours). Drawn on top of the solid
    outlines, the dashes let both colours show where outlines coincide.
    """
    from scipy import ndimage

    seen = None
    dashed: dict[str, bool] = {}
    for name in sorted(masks, key=lambda n: float(masks[n].sum())):
        inside = masks[name] >= 0.5
        boundary = inside & ~ndimage.binary_erosion(inside)
        if not boundary.any():
            dashed[name] = False
            continue
        if seen is None:
            dashed[name] = False
            seen = boundary.copy()
            continue
        near = ndimage.binary_dilation(seen, iterations=1)
        dashed[name] = bool((boundary & near).sum() > 0.5 * boundary.sum())
        seen |= boundary
    return dashed


def _centre(mask: NDArray[np.float64]) -> tuple[int, int, int]:
    """The voxel of ``mask`` (>= 0.5, else > 0) nearest to its weighted centroid."""
    inside = mask >= 0.5 if (mask >= 0.5).any() else mask > 0
    idx = np.argwhere(inside)
    w = mask[inside]
    centroid = (idx * w[:, None]).sum(axis=0) / w.sum()
    best = idx[int(np.argmin(((idx - centroid) ** 2).sum(axis=1)))]
    return int(best[0]), int(best[1]), int(best[2])


#: The CT window under the dose (HU): the soft-tissue window, W 400 / L 40.
CT_WINDOW_HU = (-160.0, 240.0)

#: Dose below this fraction of the colour scale's top is not drawn over the CT (the anatomy shows).
CT_DOSE_FLOOR = 0.02


def _span(c: NDArray[np.float64]) -> tuple[float, float]:
    """The extent (mm) of a row of voxel centres ``c``, half a voxel beyond each end."""
    half = abs(float(c[1] - c[0])) / 2 if len(c) > 1 else 0.5
    return float(c[0]) - half, float(c[-1]) + half


def _slices_figure(dose: Image, vois: Mapping[str, NDArray[np.floating]], colours: Mapping[str, tuple[Any, str]],
                   centre_name: str | None, ct: Image | None = None) -> tuple[str, str]:
    """The three planes as a PNG (base64) and a caption; over the CT (on the dose's grid) when given."""
    from matplotlib import patheffects
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    canon = _Canonical(dose)
    arr = canon.view(np.asarray(dose.array, dtype=np.float32))
    hu = canon.view(np.asarray(ct.array, dtype=np.float32)) if ct is not None else None
    masks = {n: canon.view(m) for n, m in vois.items()}
    positive = arr[arr > 0]
    vmax = float(np.percentile(positive, 99.9)) if positive.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    if centre_name is not None:
        kz, ky, kx = _centre(masks[centre_name])
        where = f"centroid of the hottest tumour, {centre_name}"
    else:
        kz, ky, kx = (int(v) for v in np.unravel_index(int(np.argmax(arr)), arr.shape))
        where = "hottest voxel (no tumour VOI)"
    cz, cy, cx = canon.coords
    zs, ys, xs = _crop(list(masks.values()), arr, vmax, canon.coords)

    # (title, plane, masks, horizontal coords, vertical coords, horizontal axis, vertical axis,
    #  crosshair positions (h, v))
    cuts: list[tuple[Any, Any, Any]] = [(kz, ys, xs), (zs, ky, xs), (zs, ys, kx)]
    planes = [
        (f"axial   z = {cz[kz]:.1f} mm", arr[cuts[0]], {n: m[cuts[0]] for n, m in masks.items()},
         cx[xs], cy[ys], "x", "y", (cx[kx], cy[ky])),
        (f"coronal   y = {cy[ky]:.1f} mm", arr[cuts[1]], {n: m[cuts[1]] for n, m in masks.items()},
         cx[xs], cz[zs], "x", "z", (cx[kx], cz[kz])),
        (f"sagittal   x = {cx[kx]:.1f} mm", arr[cuts[2]], {n: m[cuts[2]] for n, m in masks.items()},
         cy[ys], cz[zs], "y", "z", (cy[ky], cz[kz])),
    ]

    ratios = []
    for plane in planes:
        h0, h1 = _span(plane[3])
        v0, v1 = _span(plane[4])
        ratios.append((h1 - h0) / (v1 - v0))
    panel_h = min(max(11.0 / sum(ratios), 3.0), 6.0)
    fig = Figure(figsize=(sum(ratios) * panel_h + 3.2, panel_h + 1.6), layout="constrained")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": ratios})
    # solid outlines first (largest first), then the dashed ones on top (_outline_styles)
    dashed = _outline_styles({n: m[zs, ys, xs] for n, m in masks.items()})  # the region shown
    volume = {n: float(m.sum()) for n, m in masks.items()}
    order = sorted(masks, key=lambda n: (dashed[n], -volume[n]))
    shown: set[str] = set()
    image = None
    halo = [patheffects.withStroke(linewidth=3, foreground="black")]
    for ax, cut, (title, section, plane_masks, hc, vc, h_axis, v_axis, (h_mark, v_mark)) in zip(axes, cuts, planes):
        h0, h1 = _span(hc)
        v0, v1 = _span(vc)
        if hu is None:
            image = ax.imshow(section, cmap="inferno", vmin=0.0, vmax=vmax, origin="lower", extent=(h0, h1, v0, v1),
                              interpolation="nearest", aspect="equal")
        else:  # the anatomy in grey, the dose over it where it matters
            ax.imshow(hu[cut], cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], origin="lower",
                      extent=(h0, h1, v0, v1), interpolation="bilinear", aspect="equal")
            image = ax.imshow(np.ma.masked_less(section, CT_DOSE_FLOOR * vmax), cmap="inferno", vmin=0.0, vmax=vmax,
                              origin="lower", extent=(h0, h1, v0, v1), interpolation="nearest", aspect="equal",
                              alpha=0.6)
        drawable = [n for n in order if (plane_masks[n] >= 0.5).any() and (plane_masks[n] < 0.5).any()]
        for n in drawable:  # dark halos first, under every outline: visible on the hottest dose
            ax.contour(hc, vc, plane_masks[n], levels=[0.5], colors=["black"], linewidths=3.6)
        for n in drawable:
            colour, style = colours[n]
            ax.contour(hc, vc, plane_masks[n], levels=[0.5], colors=[colour], linewidths=2.5,
                       linestyles=[(0, (3, 2)) if dashed[n] else style])
            shown.add(n)
        ax.axvline(h_mark, color="white", lw=0.7, ls=(0, (4, 4)), alpha=0.45)
        ax.axhline(v_mark, color="white", lw=0.7, ls=(0, (4, 4)), alpha=0.45)
        if v_axis == "y":
            ax.invert_yaxis()  # anterior at the top
        lo_h, hi_h = _LOW_HIGH[h_axis]
        lo_v, hi_v = _LOW_HIGH[v_axis]
        top, bottom = (lo_v, hi_v) if v_axis == "y" else (hi_v, lo_v)
        for (x, y, ha, va), letter in zip(
            ((0.02, 0.5, "left", "center"), (0.98, 0.5, "right", "center"),
             (0.5, 0.98, "center", "top"), (0.5, 0.02, "center", "bottom")),
            (lo_h, hi_h, top, bottom),
        ):
            ax.text(x, y, letter, transform=ax.transAxes, ha=ha, va=va, color="white", fontsize=13,
                    fontweight="bold", path_effects=halo)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel(f"{h_axis} (mm)   {lo_h} \u2192 {hi_h}", fontsize=10)
        ax.set_ylabel(f"{v_axis} (mm)   {bottom} \u2192 {top}", fontsize=10)
        ax.tick_params(labelsize=9)
    cbar = fig.colorbar(image, ax=list(axes), shrink=0.9, pad=0.015, aspect=25)  # type: ignore[arg-type]
    cbar.set_label("absorbed dose (Gy)", fontsize=11)
    cbar.ax.tick_params(labelsize=9)
    names = list(masks)
    handles = [Line2D([0], [0], color=colours[n][0], ls=(0, (3, 2)) if dashed[n] else colours[n][1], lw=2.6)
               for n in names]
    labels = [_mpl_text(n if n in shown else f"{n} (not in these planes)") for n in names]
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(names), 6), fontsize=10, frameon=False)
    caption = (f"Planes through the {where}; thin white lines mark the other two planes. Outlines at half "
               f"coverage of each VOI. Colour scale 0 to {vmax:.0f} Gy (the 99.9th percentile of the dose; "
               f"hotter voxels show in the top colour). Patient coordinates (LPS, mm), radiological view.")
    if hu is not None:
        caption += (f" Over the CT (grey, window {CT_WINDOW_HU[0]:.0f} to {CT_WINDOW_HU[1]:.0f} HU, resampled onto the "
                    f"dose grid); dose below {CT_DOSE_FLOOR:.0%} of the scale is not drawn.")
    if canon.oblique:
        caption += (f" The grid is oblique (an index axis is more than {_OBLIQUE_DEG:g}\u00b0 from the patient axes): "
                    "planes are index planes, labelled with their nearest patient directions.")
    return _png(fig), caption


def _density_figure(density: Image, vois: Mapping[str, NDArray[np.floating]], centre_name: str | None,
                    dose: Image) -> tuple[str, str]:
    """The density the dose used, on three planes through the same point as the dose maps."""
    from matplotlib.figure import Figure

    canon = _Canonical(density)
    rho = canon.view(np.asarray(density.array, dtype=np.float32))
    if centre_name is not None:
        kz, ky, kx = _centre(canon.view(vois[centre_name]))
    else:
        kz, ky, kx = (int(v) for v in np.unravel_index(int(np.argmax(_Canonical(dose).view(
            np.asarray(dose.array, dtype=np.float32)))), rho.shape))
    cz, cy, cx = canon.coords
    planes = [(f"axial   z = {cz[kz]:.1f} mm", rho[kz], cx, cy, "x", "y"),
              (f"coronal   y = {cy[ky]:.1f} mm", rho[:, ky], cx, cz, "x", "z"),
              (f"sagittal   x = {cx[kx]:.1f} mm", rho[:, :, kx], cy, cz, "y", "z")]

    ratios = [(_span(p[2])[1] - _span(p[2])[0]) / (_span(p[3])[1] - _span(p[3])[0]) for p in planes]
    fig = Figure(figsize=(sum(ratios) * 3.0 + 2.0, 3.8), layout="constrained")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": ratios})
    image = None
    for ax, (title, section, hc, vc, h_axis, v_axis) in zip(axes, planes):
        h0, h1 = _span(hc)
        v0, v1 = _span(vc)
        image = ax.imshow(section, cmap="gray", vmin=0.0, vmax=2.0, origin="lower", extent=(h0, h1, v0, v1),
                          interpolation="nearest", aspect="equal")
        if v_axis == "y":
            ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"{h_axis} (mm)", fontsize=9)
        ax.set_ylabel(f"{v_axis} (mm)", fontsize=9)
        ax.tick_params(labelsize=8)
    cbar = fig.colorbar(image, ax=list(axes), shrink=0.9, pad=0.015, aspect=25)  # type: ignore[arg-type]
    cbar.set_label("density (g/cm\u00b3)", fontsize=10)
    caption = ("The mass density the dose used, on the dose grid, through the same point as the dose maps "
               "(grey scale 0 to 2 g/cm\u00b3; density.nii.gz holds it).")
    return _png(fig), caption


def _tissue_html(result: "CaseResult", tumour: str | None) -> str:
    """The section on the tissue: where the density came from, the body, the activity outside it."""
    provenance = result.provenance
    density = result.images.get("density")
    if density is None:
        return ("<p>No CT: every voxel is soft tissue (1.04 g/cm\u00b3) in the dose map; lung VOIs' doses are "
                "rescaled to 0.30 g/cm\u00b3 (see the warnings).</p>")
    record = provenance.get("density", {}) if isinstance(provenance.get("density"), Mapping) else {}
    body = provenance.get("body", {}) if isinstance(provenance.get("body"), Mapping) else {}
    masks = {str(n): m.array for n, m in result.vois.items()}
    png, caption = _density_figure(density, masks, tumour, result.dose)
    rows = [("HU to density", record.get("hu_table")), ("rule", record.get("rule")),
            ("body", body.get("rule")),
            ("body volume", f"{body['volume_ml']:.0f} mL" if "volume_ml" in body else None),
            ("activity outside the body",
             f"{body['activity_outside_mbq']:.4g} MBq ({body['activity_outside_percent']:.2f} %), "
             f"{body.get('activity_outside', '')}" if "activity_outside_mbq" in body else None),
            ("of which where the CT does not reach",
             f"{body['activity_outside_ct_mbq']:.4g} MBq ({body['activity_outside_ct_percent']:.2f} %)"
             if "activity_outside_ct_mbq" in body else None)]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows if v)
    return (f"<table class='info'>{cells}</table><figure><img alt='mass density on three planes' "
            f"src='data:image/png;base64,{png}'><figcaption>{html.escape(caption)}</figcaption></figure>")


# --------------------------------------------------------------------------- tables


def _fmt_number(value: Any, unit: str = "") -> str:
    if value is None or isinstance(value, bool):
        return "\u2014" if value is None else str(value)
    if not isinstance(value, (int, float, np.integer, np.floating)):
        return html.escape(str(value))
    x = float(value)
    if not math.isfinite(x):
        return "\u2014"
    if unit in ("gy", "pct"):
        return f"{x:.1f}"
    if unit in ("ml", "g"):
        return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"
    if unit == "kg":
        return f"{x:.3f}"
    return f"{x:.4g}"


_METRIC = re.compile(r"^(?P<kind>[DV])(?P<label>[0-9]+(?:p[0-9]+)?)_(?P<unit>gy|pct)$")
_BASIC = {"volume_ml": ("volume", "mL"), "mass_g": ("mass", "g"), "mean_gy": ("mean", "Gy"),
          "min_gy": ("min", "Gy"), "max_gy": ("max", "Gy")}


def _metrics_table(metrics: Mapping[str, Mapping[str, Any]], roles: Mapping[str, str]) -> str:
    columns: list[str] = []
    for values in metrics.values():  # the density is in the footnote, not a column: the table stays narrow
        columns.extend(c for c in values if c not in columns and c != "density_g_per_cm3")
    d_cols = [c for c in columns if (m := _METRIC.match(c)) and m["kind"] == "D"]
    v_cols = [c for c in columns if (m := _METRIC.match(c)) and m["kind"] == "V"]
    basic = [c for c in columns if c not in d_cols and c not in v_cols]
    ordered = basic + d_cols + v_cols
    with_role = any(n in roles for n in metrics)

    def short(c: str) -> str:
        m = _METRIC.match(c)
        if m:
            return f"{m['kind']}{m['label'].replace('p', '.')}"
        if c in _BASIC:
            name, unit = _BASIC[c]
            return f"{name}<br>({unit})"
        return html.escape(c.replace("_", " "))

    def unit(c: str) -> str:
        return c.rsplit("_", 1)[-1] if "_" in c else ""

    top = "<th class='name' rowspan='2'>VOI</th>" + ("<th class='name' rowspan='2'>role</th>" if with_role else "")
    top += "".join(f"<th rowspan='2'>{short(c)}</th>" for c in basic)
    if d_cols:
        top += f"<th colspan='{len(d_cols)}'>D<i>x</i>: dose to the hottest <i>x</i> % (Gy)</th>"
    if v_cols:
        top += f"<th colspan='{len(v_cols)}'>V<i>g</i>: % of the VOI receiving \u2265 <i>g</i> Gy</th>"
    second = "".join(f"<th>{short(c)}</th>" for c in d_cols + v_cols)
    rows = []
    for name, values in metrics.items():
        cells = [f"<td class='name'>{html.escape(str(name))}</td>"]
        if with_role:
            cells.append(f"<td class='name'>{html.escape(roles.get(name, ''))}</td>")
        cells += [f"<td>{_fmt_number(values.get(c), unit(c))}</td>" for c in ordered]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='scroll'><table><thead><tr>{top}</tr><tr>{second}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _pct(diff: Any, limit: float = 0.10) -> str:
    if not isinstance(diff, (int, float)) or not math.isfinite(float(diff)):
        return "<td>\u2014</td>"
    cls = " class='flag'" if abs(float(diff)) > limit else ""
    return f"<td{cls}>{float(diff):+.1%}</td>"


def _references_html(references: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Each VOI's mean dose against the clinical references of its role; crossed ones shaded."""
    rows = []
    for name, flags in references.items():
        for f in flags:
            cls = " class='flag'" if f["flag"] else ""
            rows.append(f"<tr><td class='name'>{html.escape(str(name))}</td><td class='text'>{html.escape(f['reference'])}</td>"
                        f"<td>{f['threshold_gy']:g}</td><td{cls}>{_fmt_number(f['mean_gy'], 'gy')}</td>"
                        f"<td{cls}>{'yes' if f['flag'] else 'no'}</td><td class='text'>{html.escape(f['source'])}</td></tr>")
    if not rows:
        return "<p>No VOI with a role that has clinical references (lung, normal liver, tumours).</p>"
    header = ("<tr><th class='name'>VOI</th><th class='name'>reference</th><th>threshold (Gy)</th>"
              "<th>mean dose (Gy)</th><th>flagged</th><th class='name'>source</th></tr>")
    return (f"<div class='scroll'><table><thead>{header}</thead><tbody>{''.join(rows)}</tbody></table></div>"
            "<p class='meta'>Mean doses against the values the literature reports for particular products and "
            "diseases (a lung limit or toxicity level reached, a response threshold reached, or a dose below which "
            "no response was predicted); voxeldose reports them and decides nothing.</p>")


def _crosscheck_html(cc: Mapping[str, Any]) -> str:
    from .clinical import THRESHOLDS as T

    def names(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return ", ".join(str(v) for v in value)
        return "" if value is None else str(value)

    rows: list[str] = []

    def row(check: str, vois: str, mass: Any, model: Any, voxel: str, diff: Any, reference: str,
            limit_gy: float | None = None) -> None:
        over = isinstance(model, (int, float)) and limit_gy is not None and model > limit_gy
        model_td = "<td class='flag'>" if over else "<td>"
        rows.append(f"<tr><td class='name'>{html.escape(check)}</td><td class='text'>{html.escape(vois)}</td>"
                    f"<td>{_fmt_number(mass, 'kg')}</td>{model_td}{_fmt_number(model, 'gy')}</td><td>{voxel}</td>"
                    f"{_pct(diff, T.model_disagreement_fraction)}<td class='text'>{html.escape(reference)}</td></tr>")

    mird = cc.get("mird")
    if isinstance(mird, Mapping):
        row("MIRD single compartment", names(mird.get("vois", mird.get("voi"))), mird.get("mass_kg"),
            mird.get("model_mean_gy"), _fmt_number(mird.get("voxel_mean_gy"), "gy"), mird.get("relative_difference"),
            f"glass: {T.glass_120_gy:g} Gy (80\u2013150) to the perfused liver")
    part = cc.get("partition")
    if isinstance(part, Mapping):
        tn = part.get("tumour_to_normal_measured")
        rule = {"core": "voxels wholly inside", "weighted": "partial-volume weighted"}.get(
            str(part.get("tumour_to_normal_rule")), "")
        tn_text = f" (T:N {tn:.2f}, {rule})" if isinstance(tn, (int, float)) else ""
        row(f"partition: tumours{tn_text}", names(part.get("tumour_vois")), part.get("tumour_mass_kg"),
            part.get("tumour_model_gy"), _fmt_number(part.get("tumour_voxel_mean_gy"), "gy"),
            part.get("tumour_relative_difference"),
            f"response: glass HCC \u2265 {T.tumour_glass_response_gy:g} Gy; resin NET \u2265 "
            f"{T.tumour_resin_net_response_gy:g} Gy (< {T.tumour_resin_net_no_response_gy:g} Gy: no response)")
        row("partition: normal liver", names(part.get("normal_liver")), part.get("normal_mass_kg"),
            part.get("normal_liver_model_gy"), _fmt_number(part.get("normal_liver_voxel_mean_gy"), "gy"),
            part.get("normal_liver_relative_difference"),
            f"mean {T.normal_liver_no_toxicity_gy:g} Gy without toxicity vs {T.normal_liver_toxicity_gy:g} Gy "
            "with fibrosis or failure (small series)")
    lung = cc.get("lung")
    if isinstance(lung, Mapping):
        at_lung = lung.get("voxel_mean_at_lung_density_gy")
        voxel = _fmt_number(at_lung, "gy")
        if isinstance(at_lung, (int, float)):
            voxel += (" at the CT's densities" if lung.get("voxel_density") == "the CT's"
                      else f" at {_fmt_number(cc.get('lung_density_g_per_cm3', 0.3))} g/mL")
        lsf = cc.get("lung_shunt_fraction")
        shunt = f" (shunt {lsf:.1%})" if isinstance(lsf, (int, float)) else ""
        row(f"lung{shunt}", names(lung.get("mass_source")), lung.get("mass_kg"), lung.get("model_mean_gy"), voxel,
            lung.get("relative_difference"),
            f"\u2264 {T.lung_single_treatment_gy:g} Gy one treatment, \u2264 {T.lung_cumulative_gy:g} Gy cumulative",
            limit_gy=T.lung_single_treatment_gy)
    if not rows:
        return "<p>No model cross-checks for this case (see the warnings).</p>"
    header = ("<tr><th class='name'>model</th><th class='name'>VOIs</th><th>mass (kg)</th><th>model mean (Gy)</th>"
              "<th>voxel mean (Gy)</th><th>voxel vs model</th><th class='name'>reference values</th></tr>")
    notes = [f"Voxel vs model = voxel mean / model mean \u2212 1, shaded beyond \u00b1"
             f"{T.model_disagreement_fraction:.0%}; a model dose above its limit is shaded too."]
    a = cc.get("activity_in_patient_gbq")
    if isinstance(a, (int, float)):
        given, res = cc.get("administered_gbq"), cc.get("residual_fraction")
        if isinstance(given, (int, float)) and isinstance(res, (int, float)):
            notes.append(f"Activity in the patient: {given:.4g} GBq administered \u00d7 (1 \u2212 residual "
                         f"{res:.1%}) = {a:.4g} GBq.")
        else:
            notes.append(f"Activity in the patient: {a:.4g} GBq.")
    k = cc.get("mird_constant_gy_kg_per_gbq")
    rho, rho_lung = cc.get("tissue_density_g_per_cm3"), cc.get("lung_density_g_per_cm3")
    if isinstance(k, (int, float)) and isinstance(rho, (int, float)):
        lung_rho = f"; lung VOIs at {rho_lung:g} g/mL" if isinstance(rho_lung, (int, float)) else ""
        notes.append(f"Models: {k:g} Gy\u00b7kg/GBq; masses at {rho:g} g/mL{lung_rho}.")
    burden = cc.get("tumour_burden_fraction")
    if isinstance(burden, (int, float)):
        notes.append(f"Tumour burden: {burden:.1%} of the whole liver.")
    extra = [str(n) for n in cc.get("notes", []) or []]
    if extra:
        notes.append("Notes: " + "; ".join(extra) + ".")
    note = " ".join(html.escape(n) for n in notes)
    return (f"<div class='scroll'><table><thead>{header}</thead><tbody>{''.join(rows)}</tbody></table></div>"
            f"<p class='meta'>{note}</p>")


def _treatment(result: "CaseResult") -> list[tuple[str, Any]]:
    """The treatment parameters a physicist checks first: activity, shunt, residual, product, times."""
    case = result.case
    times = (result.provenance.get("calibration", {}) or {}).get("times", {}) or {}

    def when(key: str) -> str | None:
        t = times.get(key) or {}
        return f"{t['value']} ({t.get('from', '')})" if t.get("value") else None

    def pct(x: float | None) -> str | None:
        return None if x is None else f"{x:.1%}"

    return [
        ("administered", None if case.administered_gbq is None else f"{case.administered_gbq:.4g} GBq"),
        ("lung shunt", pct(case.lung_shunt_fraction)),
        ("residual", pct(case.residual_fraction)),
        ("microspheres", case.sphere_type),
        ("administration", when("administration")),
        ("scan start", when("scan_start")),
    ]


def _mass_note(result: "CaseResult") -> str:
    if "density" in result.images:
        return ("mass = the sum of the VOI's voxel masses from the CT's densities (the density column is its mean); "
                "every voxel's dose is that of its own density (see Tissue).")
    return ("mass = volume × density (voxeldose: soft tissue, 1.04 g/mL; lung VOIs 0.30 g/mL). The doses of lung "
            "VOIs are at lung density: the soft-tissue dose × 1.04 / 0.30, the same energy over the lung's mass "
            "(Mikell et al., EJNMMI Phys 2015;2:16: about 20 % above Monte Carlo for the mean lung dose, where the "
            "plain soft-tissue dose is 60 % below). The dose maps, and the planes above, are in soft tissue.")


def _header_table(case_id: str, run: str, version: str, dose: Image, provenance: Mapping[str, Any],
                  treatment: Sequence[tuple[str, Any]] = ()) -> str:
    d_raw = provenance.get("dose")
    d: Mapping[str, Any] = d_raw if isinstance(d_raw, Mapping) else {}
    method = d.get("method", provenance.get("method"))
    kernel = d.get("kernel", provenance.get("kernel", provenance.get("kernel_source")))
    tissue = d.get("tissue", provenance.get("tissue"))
    nx, ny, nz = dose.size_xyz
    times = " \u00d7 "
    grid = f"{nx}{times}{ny}{times}{nz} voxels of {times.join(f'{s:.4g}' for s in dose.spacing_mm)} mm (x, y, z)"
    items = [("case", case_id), *treatment, ("run", run), ("voxeldose", version),
             ("dose method", method), ("kernel", kernel), ("tissue", tissue), ("density", d.get("density")),
             ("grid", grid)]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in items if v not in (None, ""))
    return f"<table class='info'>{cells}</table>"


# --------------------------------------------------------------------------- the report


def render_report(result: "CaseResult", *, title: str | None = None) -> str:
    """The self-contained HTML report of one case (write it with :func:`voxeldose.io.write_report`).

    Parameters
    ----------
    result : CaseResult
        The case: its dose (for the planes, their orientation and scale), VOI masks (outlines at
        0.5), DVHs, metrics, roles (they label the metrics table and choose the tumours), model
        cross-checks, caveats (shown first, in a coloured box, with the stage that raised them)
        and provenance (shown collapsed; its ``dose`` method, kernel and tissue go in the
        header, and ``run_datetime`` when present is the run date, else now). The report prints
        the case id, never a patient identifier (``dose.meta.identifiers`` is not read).
    title : str, optional
        Page title (default "Y-90 radioembolization dosimetry").

    Returns
    -------
    str
        The page (UTF-8 text).

    Raises
    ------
    InputError
        If ``result`` is not a :class:`~voxeldose.result.CaseResult`.

    Example
    -------
    >>> import numpy as np, voxeldose
    >>> ph = voxeldose.phantoms.sphere(spacing_xyz_mm=(4.0, 4.0, 4.0))
    >>> result = voxeldose.compute_case(ph.activity, ph.vois, voxeldose.Case("demo-1"))
    >>> render_report(result).startswith("<!DOCTYPE html>")
    True
    """
    from .result import CaseResult

    if not isinstance(result, CaseResult):
        raise InputError(f"render_report needs a voxeldose CaseResult, got {type(result).__name__}")
    dose = result.dose
    case_id = result.case_id
    masks = {str(n): m.array for n, m in result.vois.items()}
    dvhs = result.dvhs
    roles = result.roles
    provenance = result.provenance
    crosschecks = result.crosschecks
    names = list(dict.fromkeys([*dvhs, *masks]))
    colours = _colours(names)

    tumour = hottest_tumour({n: h for n, h in dvhs.items() if n in masks}, roles=roles)
    dvh_png = _dvh_figure(dvhs, colours) if dvhs else ""
    slices_png, slices_caption = _slices_figure(dose, masks, colours, tumour, result.images.get("ct"))

    run = provenance.get("run_datetime")
    run_text = str(run) if run else dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    heading = title or "Y-90 radioembolization dosimetry"
    caveats = result.caveats
    if caveats:
        items = "".join(f"<li>{html.escape(c.message)} <span class='meta'>({html.escape(c.stage)})</span></li>"
                        for c in caveats)
        n = len(caveats)
        warn_html = (f"<div class='box warn' role='alert'><h3>\u26a0 {n} warning{'s' if n > 1 else ''}</h3>"
                     f"<ul>{items}</ul></div>")
    else:
        warn_html = "<div class='box ok'>\u2714 No warnings.</div>"
    dvh_html = (f"<figure><img alt='cumulative dose-volume histograms' src='data:image/png;base64,{dvh_png}'>"
                "<figcaption>Percent of each VOI receiving at least the dose on the x axis (partial-volume "
                "weighted voxel doses, no binning).</figcaption></figure>") if dvh_png else "<p>No DVHs.</p>"
    metrics = result.metrics
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(heading)} \u2014 case {html.escape(str(case_id))}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(heading)} \u2014 case {html.escape(str(case_id))}</h1>
{_header_table(str(case_id), run_text, __version__, dose, provenance, _treatment(result))}
{warn_html}
<h2>Dose-volume histograms</h2>
{dvh_html}
<h2>Dose maps</h2>
<figure><img alt='absorbed dose on axial, coronal and sagittal planes with VOI outlines'
src='data:image/png;base64,{slices_png}'><figcaption>{html.escape(slices_caption)}</figcaption></figure>
<h2>Metrics</h2>
{_metrics_table(metrics, roles) if metrics else "<p>No metrics.</p>"}
<p class="meta">D<i>x</i>: the minimum dose to the hottest <i>x</i> % of the VOI; V<i>g</i>: the percent of the VOI
receiving at least <i>g</i> Gy; {_mass_note(result)}</p>
<h2>Tissue</h2>
{_tissue_html(result, tumour)}
<h2>Clinical references</h2>
{_references_html(result.references)}
<h2>Model cross-checks</h2>
{_crosscheck_html(crosschecks)}
<h2>Provenance</h2>
<details><summary>Inputs, calibration, kernel, versions, timings (JSON)</summary>
<pre>{html.escape(json.dumps(provenance, indent=2, default=str, ensure_ascii=False))}</pre></details>
<p class="meta">Written by voxeldose {html.escape(__version__)}. This page is self-contained: it loads nothing
from elsewhere.</p>
</body></html>
"""
