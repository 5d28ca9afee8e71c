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
import json
import math
import re
import struct
import zlib
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from ._checks import nonzero_box
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


#: Resolution of the figures (pixels per inch): their pixel size is their size in inches x 100.
_DPI = 100

#: zlib level of the figures' PNGs: on these figures (flat colour and text) level 1 takes 40 %
#: of the time of zlib's default 6 for ~10 % more bytes.
_PNG_ZLIB_LEVEL = 1

#: Clearance (inches) between a figure's edge, or a neighbouring panel, and the nearest text.
_GAP_IN = 0.06


def _new_figure(width_in: float, height_in: float) -> Any:
    """A figure on its own Agg canvas (the caller's pyplot state and backend are left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _png_bytes(pixels: NDArray[np.uint8], dpi: int = _DPI) -> bytes:
    """A PNG of an 8-bit RGB or RGBA image [row, column, channel], its resolution ``dpi``.

    Every row is "Up"-filtered (filter type 2 of the PNG specification, W3C 2003: the
    difference from the row above, zero over flat colour) and the whole compressed at
    ``_PNG_ZLIB_LEVEL``. PIL chooses a filter per row by trying all five, which takes ~3x as
    long for the same size on these figures.
    """
    rows, columns, channels = pixels.shape
    flat = pixels.reshape(rows, columns * channels)
    filtered = np.empty((rows, columns * channels + 1), np.uint8)
    filtered[:, 0] = 2  # the filter type of each row: Up
    filtered[0, 1:] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=filtered[1:, 1:])  # modulo 256, as PNG defines it

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    colour_type = {3: 2, 4: 6}[channels]  # RGB, RGBA
    per_metre = round(dpi / 0.0254)
    return b"".join([
        b"\x89PNG\r\n\x1a\n",
        chunk(b"IHDR", struct.pack(">IIBBBBB", columns, rows, 8, colour_type, 0, 0, 0)),
        chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1)),
        chunk(b"IDAT", zlib.compress(filtered.tobytes(), _PNG_ZLIB_LEVEL)),
        chunk(b"IEND", b""),
    ])


def _png(fig: Any) -> str:
    """The figure drawn once, as an RGBA PNG in base64 (the canvas's own pixels: dropping the
    alpha of an opaque figure would cost a strided copy longer than compressing it)."""
    fig.canvas.draw()
    return base64.b64encode(_png_bytes(np.asarray(fig.canvas.buffer_rgba()))).decode("ascii")


# Fixed layout. Matplotlib's constrained layout measures every artist by drawing the figure
# once more before the real draw (~0.4 s of the planes figure's ~0.75 s). These figures are
# fixed in form (a row of equal-aspect panels with a colour bar, or one plot with its legend at
# the right), so their margins are computed from the few texts that set them: tick labels
# (from each axis's own locator and formatter), axis labels, titles, the legend, measured with
# matplotlib's text layout (whose cache the draw then reuses). Then the ticks, axis-label and
# title positions are fixed at what matplotlib would choose at the final size: left automatic,
# matplotlib works them out again while drawing by measuring every tick label of the axes and
# of its siblings (a third of the drawing time here). Sizes in inches; matplotlib's tick
# lengths and pads are in points.


def _pt_in(key: str) -> float:
    """An rcParams length in points, in inches."""
    import matplotlib

    rc: Any = matplotlib.rcParams  # keys built at run time
    return float(rc[key]) / 72.0


def _extent_in(artist: Any) -> tuple[float, float]:
    """The width and height (inches) of a text or legend as it will be drawn."""
    box = artist.get_window_extent(artist.get_figure(root=True).canvas.get_renderer())
    return box.width / _DPI, box.height / _DPI


def _legend_pad_in(fontsize_pt: float) -> float:
    """The space (inches) between a legend and its anchor: ``legend.borderaxespad`` font sizes."""
    import matplotlib

    return float(matplotlib.rcParams["legend.borderaxespad"]) * fontsize_pt / 72.0


def _ticks_in_view(axis: Any) -> list[float]:
    """The major tick locations ``axis`` draws at its present size (its locator's, within the view)."""
    lo, hi = sorted(axis.get_view_interval())
    slack = 1e-10 * (hi - lo)  # matplotlib's own tolerance (transforms._interval_contains_close)
    return [float(v) for v in axis.get_majorticklocs() if lo - slack <= v <= hi + slack]


def _text_size_in(figure: Any, labels: Sequence[str], size_pt: float,
                  sizes: dict[tuple[str, float], tuple[float, float]]) -> tuple[float, float]:
    """The widest and the tallest (inches) of ``labels`` in the tick-label font at ``size_pt``;
    ``sizes`` keeps each label's size for the next call (the layout measures twice)."""
    from matplotlib.text import Text

    width = height = 0.0
    for label in labels:
        if (label, size_pt) not in sizes:
            meter = Text(0, 0, label, fontsize=size_pt)  # a tick label's font: the draw reuses the measurement
            meter.set_figure(figure)
            box = meter.get_window_extent(figure.canvas.get_renderer())
            sizes[label, size_pt] = box.width / _DPI, box.height / _DPI
        w, h = sizes[label, size_pt]
        width, height = max(width, w), max(height, h)
    return width, height


def _tick_text_in(axis: Any, size_pt: float, sizes: dict[tuple[str, float], tuple[float, float]]) -> tuple[float, float]:
    """The widest and the tallest (inches) of the major tick labels ``axis`` draws at its present size."""
    labels = axis.get_major_formatter().format_ticks(_ticks_in_view(axis))
    return _text_size_in(axis.get_figure(root=True), labels, size_pt, sizes)


def _tick_depth_in(axis_name: str) -> float:
    """The space (inches) between an axes' edge and its tick labels along ``axis_name`` ("x" or "y")."""
    return _pt_in(f"{axis_name}tick.major.size") + _pt_in(f"{axis_name}tick.major.pad")


#: Per side of an axes: the axis ("x" or "y"), its tick row (1: bottom or left, 2: top or right)
#: and the tick marker for each tick direction, as matplotlib's XTick and YTick draw them.
_TICK_SIDES: dict[str, tuple[str, int, dict[str, Any]]] = {
    "bottom": ("x", 1, {"out": 3, "in": 2, "inout": "|"}),  # TICKDOWN, TICKUP
    "left": ("y", 1, {"out": 0, "in": 1, "inout": "_"}),  # TICKLEFT, TICKRIGHT
    "right": ("y", 2, {"out": 1, "in": 0, "inout": "_"}),
}


def _draw_ticks(ax: Any, side: str, size_pt: float, sizes: dict[tuple[str, float], tuple[float, float]], *,
                grid_alpha: float | None = None) -> tuple[float, float]:
    """Draw the major ticks on one ``side`` of ``ax`` and return their labels' largest width and height (in).

    The ticks are those matplotlib would draw at the axes' present size (its locator and
    formatter, its rcParams for the marks), drawn as one line of tick marks, a text per label
    and (with ``grid_alpha``) one collection of grid lines, instead of one matplotlib Tick of
    five artists per tick (~1 ms each to make and draw: a third of these figures' time). The
    labels' gid is "<side> tick label". Where the labels need an offset or a scale (e.g.
    "+1.2e3" at the axis end), matplotlib's own ticks draw them.
    """
    import matplotlib
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.text import Text
    from matplotlib.ticker import FixedLocator, NullLocator

    name, row, markers = _TICK_SIDES[side]
    axis = ax.xaxis if name == "x" else ax.yaxis
    locs = _ticks_in_view(axis)
    formatter = axis.get_major_formatter()
    labels = formatter.format_ticks(locs)
    if formatter.get_offset():
        axis.set_major_locator(FixedLocator(locs))
        axis.set_tick_params(labelsize=size_pt, grid_alpha=grid_alpha, gridOn=grid_alpha is not None)
        return _tick_text_in(axis, size_pt, sizes)
    axis.set_major_locator(NullLocator())
    rc: Any = matplotlib.rcParams  # keys built at run time
    size, direction = float(rc[f"{name}tick.major.size"]), rc[f"{name}tick.direction"]
    pad_pt = float(rc[f"{name}tick.major.pad"]) + size * {"in": 0.0, "inout": 0.5, "out": 1.0}[direction]
    colour = rc[f"{name}tick.color"]
    label_colour = colour if str(rc[f"{name}tick.labelcolor"]) == "inherit" else rc[f"{name}tick.labelcolor"]
    edge = [0.0 if row == 1 else 1.0] * len(locs)
    xs, ys = (locs, edge) if name == "x" else (edge, locs)
    get_transform = ax.get_xaxis_transform if name == "x" else ax.get_yaxis_transform
    text_transform = getattr(ax, f"get_{name}axis_text{row}_transform")
    zorder = axis.get_zorder()  # drawn where the axis would draw them
    if grid_alpha is not None:
        segments = [[(v, 0.0), (v, 1.0)] if name == "x" else [(0.0, v), (1.0, v)] for v in locs]
        ax.add_collection(LineCollection(segments, colors=rc["grid.color"], linestyles=rc["grid.linestyle"],
                                         linewidths=rc["grid.linewidth"], alpha=grid_alpha, zorder=zorder,
                                         transform=get_transform(which="grid")), autolim=False)
    ax.add_artist(Line2D(xs, ys, linestyle="none", marker=markers[direction], markersize=size,
                         markeredgewidth=rc[f"{name}tick.major.width"], color=colour, markeredgecolor=colour,
                         transform=get_transform(which=f"tick{row}"), zorder=zorder, clip_on=False))
    transform, va, ha = text_transform(pad_pt)
    for x, y, label in zip(xs, ys, labels):
        ax.add_artist(Text(x, y, label, fontsize=size_pt, color=label_colour, va=va, ha=ha, transform=transform,
                           zorder=zorder, clip_on=False, gid=f"{side} tick label"))
    return _text_size_in(ax.get_figure(root=True), labels, size_pt, sizes)


def _fix_positions(ax: Any, sizes: dict[tuple[str, float], tuple[float, float]], *, tick_pt: float,
                   y_side: str = "left", grid_alpha: float | None = None) -> None:
    """Draw ``ax``'s ticks (:func:`_draw_ticks`) and fix its axis labels beyond the tick labels
    (``axes.labelpad`` from them, as matplotlib places them) and its title at the top, so that
    drawing it measures nothing again."""
    width_in, height_in = ax.get_position().size * ax.get_figure(root=True).get_size_inches()
    label_pad = _pt_in("axes.labelpad")
    _, x_h = _draw_ticks(ax, "bottom", tick_pt, sizes, grid_alpha=grid_alpha)
    y_w, _ = _draw_ticks(ax, y_side, tick_pt, sizes, grid_alpha=grid_alpha)
    if ax.xaxis.label.get_text():
        ax.xaxis.set_label_coords(0.5, -(_tick_depth_in("x") + x_h + label_pad) / height_in)
    if ax.yaxis.label.get_text():
        offset = (_tick_depth_in("y") + y_w + label_pad) / width_in
        ax.yaxis.set_label_coords(1.0 + offset if y_side == "right" else -offset, 0.5)
    if ax.get_title() and not ax.yaxis.get_major_formatter().get_offset():
        # at the top, where matplotlib puts it without ticks, labels or an offset text there; a
        # given y turns its placement off (the title's other properties are matplotlib's defaults)
        ax.set_title(ax.get_title(), fontsize=ax.title.get_fontsize(), y=1.0)


def _place_row(fig: Any, axes: Sequence[Any], ratios: Sequence[float], cbar: Any, *, tick_pt: float,
               cbar_tick_pt: float, below_in: float = 0.0, cbar_shrink: float = 0.9,
               cbar_aspect: float = 25.0) -> None:
    """Place a row of equal-aspect panels (width / height ``ratios``) and a colour bar at their right.

    The panels get the largest common height that leaves room for each one's y tick labels and
    label at its left, x tick labels and label below and title above, for the colour bar
    (``cbar_shrink`` of the panel height, ``cbar_aspect`` times as tall as wide) with its labels,
    and for ``below_in`` at the bottom (a legend); the block is centred in what is left.
    """
    width_in, height_in = fig.get_size_inches()
    label_pad, title_pad = _pt_in("axes.labelpad"), _pt_in("axes.titlepad")
    sizes: dict[tuple[str, float], tuple[float, float]] = {}
    # what does not depend on the panels' size: the axis labels and titles
    y_label_w = [_extent_in(ax.yaxis.label)[0] for ax in axes]
    below_ticks = max(label_pad + _extent_in(ax.xaxis.label)[1] + _GAP_IN for ax in axes)
    above = max(title_pad + _extent_in(ax.title)[1] + _GAP_IN for ax in axes)
    cbar_label_w = _extent_in(cbar.ax.yaxis.label)[0]
    for _ in range(2):  # the tick labels depend on the panels' size (the locators fit ticks to it)
        lefts, overhangs, below = [], [], 0.0
        for ax, label_w in zip(axes, y_label_w):
            y_w, _ = _tick_text_in(ax.yaxis, tick_pt, sizes)
            x_w, x_h = _tick_text_in(ax.xaxis, tick_pt, sizes)
            lefts.append(_GAP_IN + label_w + label_pad + y_w + _tick_depth_in("y"))
            overhangs.append(x_w / 2)  # an x tick label at a panel's right edge reaches past it
            below = max(below, _tick_depth_in("x") + x_h + below_ticks)
        c_w, _ = _tick_text_in(cbar.ax.yaxis, cbar_tick_pt, sizes)
        cbar_pad = max(0.15, overhangs[-1] + _GAP_IN)
        cbar_right = _tick_depth_in("y") + c_w + label_pad + cbar_label_w + _GAP_IN
        fixed_w = sum(lefts) + sum(overhangs[:-1]) + cbar_pad + cbar_right
        band_h = height_in - below_in - below - above
        scale = sum(ratios) + cbar_shrink / cbar_aspect  # widths per inch of panel height
        panel_h = max(min(band_h, (width_in - fixed_w) / scale), 0.1)
        x = max((width_in - fixed_w - panel_h * scale) / 2, 0.0)
        y = below_in + below + max(band_h - panel_h, 0.0) / 2
        for i, (ax, ratio) in enumerate(zip(axes, ratios)):
            x += lefts[i]
            ax.set_position((x / width_in, y / height_in, ratio * panel_h / width_in, panel_h / height_in))
            x += ratio * panel_h + (overhangs[i] if i < len(axes) - 1 else 0.0)
        cbar_h = cbar_shrink * panel_h
        cbar.ax.set_position(((x + cbar_pad) / width_in, (y + (panel_h - cbar_h) / 2) / height_in,
                              cbar_h / cbar_aspect / width_in, cbar_h / height_in))
    for ax in axes:
        _fix_positions(ax, sizes, tick_pt=tick_pt)
    _fix_positions(cbar.ax, sizes, tick_pt=cbar_tick_pt, y_side="right")


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


def _dvh_figure(dvhs: Mapping[str, DVH], colours: Mapping[str, tuple[Any, str]],
                bands: Mapping[str, Mapping[str, Sequence[float]]] | None = None) -> Any:
    """The cumulative DVHs of all VOIs on one plot, the legend (with mean doses) at its right; with
    ``bands`` (the uncertainty analysis' 95 % DVH bands) a shaded band under each curve."""
    from matplotlib.lines import Line2D

    fig = _new_figure(11.5, 5.2)
    ax = fig.add_axes((0.1, 0.1, 0.6, 0.8))  # placed below, once the legend's width is known
    handles: list[Line2D] = []
    labels: list[str] = []
    top = 0.0
    for name, h in dvhs.items():
        d, f = h.curve(n_points=600)
        # close the curve at the maximum dose: no voxel receives more
        d = np.append(d, d[-1])
        f = np.append(f, 0.0)
        colour, style = colours[name]
        band = (bands or {}).get(name)
        if band:
            ax.fill_between(band["dose_gy"], 100.0 * np.asarray(band["lo"]), 100.0 * np.asarray(band["hi"]),
                            color=colour, alpha=0.15, lw=0)
        (line,) = ax.plot(d, 100.0 * f, color=colour, ls=style, lw=1.8)
        handles.append(line)
        labels.append(_mpl_text(f"{name}  (mean {h.mean_gy:.1f} Gy)"))
        top = max(top, h.max_gy)
    ax.set_xlabel("dose (Gy)", fontsize=11)
    ax.set_ylabel("volume receiving at least the dose (%)", fontsize=11)
    ax.set_ylim(0, 102)
    ax.set_xlim(0, top * 1.03 if top > 0 else 1.0)
    tick_pt = 10
    legend_x, legend_pt = 1.01, 9  # the legend's anchor (axes widths) and its font size
    legend = ax.legend(handles, labels, fontsize=legend_pt, loc="upper left", bbox_to_anchor=(legend_x, 1.0),
                       frameon=False, title="VOI", title_fontsize=10, ncol=1 if len(labels) <= 22 else 2)
    width_in, height_in = fig.get_size_inches()
    legend_w = _extent_in(legend)[0] + _legend_pad_in(legend_pt)
    label_pad = _pt_in("axes.labelpad")
    sizes: dict[tuple[str, float], tuple[float, float]] = {}
    y_label_w, x_label_h = _extent_in(ax.yaxis.label)[0], _extent_in(ax.xaxis.label)[1]
    for _ in range(2):  # the tick labels depend on the axes' size (the locators fit ticks to it)
        y_w, y_h = _tick_text_in(ax.yaxis, tick_pt, sizes)
        x_w, x_h = _tick_text_in(ax.xaxis, tick_pt, sizes)
        left = _GAP_IN + y_label_w + label_pad + y_w + _tick_depth_in("y")
        bottom = _GAP_IN + x_label_h + label_pad + x_h + _tick_depth_in("x")
        top_in = _GAP_IN + y_h / 2  # the top tick label reaches above the axes
        # the legend (from legend_x axes widths) or the last x tick label, whichever reaches further right
        plot_w = min((width_in - left - legend_w - _GAP_IN) / legend_x, width_in - left - x_w / 2 - _GAP_IN)
        ax.set_position((left / width_in, bottom / height_in, plot_w / width_in,
                         (height_in - bottom - top_in) / height_in))
    _fix_positions(ax, sizes, tick_pt=tick_pt, grid_alpha=0.3)
    return fig


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


def _neighbours6(inside: NDArray[np.bool_], *, every: bool) -> NDArray[np.bool_]:
    """Whether every (``every``) or any of each voxel's six face neighbours is set; outside the
    array counts as not set: scipy.ndimage's binary erosion (or dilation, OR-ed with the voxel
    itself) with its default cross and border 0, in a few array operations."""
    out = inside.copy()
    combine = np.logical_and if every else np.logical_or
    for axis in range(inside.ndim):
        n = inside.shape[axis]
        lo = [slice(None)] * inside.ndim
        hi = [slice(None)] * inside.ndim
        lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
        combine(out[tuple(lo)], inside[tuple(hi)], out=out[tuple(lo)])  # the neighbour above
        combine(out[tuple(hi)], inside[tuple(lo)], out=out[tuple(hi)])  # the neighbour below
        if every:  # beyond the array's faces: not set
            edge = [slice(None)] * inside.ndim
            for index in (0, n - 1):
                edge[axis] = slice(index, index + 1)
                out[tuple(edge)] = False
    return out


def _outline_styles(masks: Mapping[str, NDArray[np.float64]], volumes: Mapping[str, float]) -> dict[str, bool]:
    """Which VOIs to outline dashed: those whose outline mostly coincides with smaller VOIs'.

    Going from the smallest VOI to the largest, a VOI whose boundary voxels lie for more than
    half within one voxel of the boundaries already seen is marked dashed (e.g. a whole liver
    after its normal liver, or a "tumours" union after its tumours). Drawn on top of the solid
    outlines, the dashes let both colours show where outlines coincide. ``volumes``: each
    mask's sum.
    """
    seen = None
    dashed: dict[str, bool] = {}
    for name in sorted(masks, key=lambda n: volumes[n]):
        inside_all = masks[name] >= 0.5
        # the VOI's bounding box and one voxel around it (the reach of the erosion and the
        # dilation below): the same answer as on the whole region in work proportional to
        # the VOI; beyond the region counts as outside in both
        window = nonzero_box(inside_all, margin=1) or (slice(0, 0),) * 3
        inside = inside_all[window]
        boundary = inside & ~_neighbours6(inside, every=True)
        if not boundary.any():
            dashed[name] = False
            continue
        if seen is None:
            dashed[name] = False
            seen = np.zeros(inside_all.shape, bool)
            seen[window] = boundary
            continue
        near = _neighbours6(seen[window], every=False)
        dashed[name] = bool((boundary & near).sum() > 0.5 * boundary.sum())
        seen[window] |= boundary
    return dashed


def _centre(mask: NDArray[np.float64]) -> tuple[int, int, int]:
    """The voxel of ``mask`` (>= 0.5, else > 0) nearest to its weighted centroid."""
    inside = mask >= 0.5
    if not inside.any():
        inside = mask > 0
    # within the bounding box: the same voxels, weights and order as on the whole grid (the
    # same sums to the bit), in work proportional to the VOI
    box = nonzero_box(inside) or tuple(slice(0, n) for n in mask.shape)
    idx = np.argwhere(inside[box]) + np.array([b.start for b in box])
    w = mask[box][inside[box]]
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


def _outline_paths(hc: NDArray[np.float64], vc: NDArray[np.float64], plane_mask: NDArray[Any]) -> Any:
    """The outline of a VOI on a plane at half coverage: the path ``Axes.contour(..., levels=[0.5])`` draws."""
    import contourpy
    import matplotlib
    from matplotlib.path import Path

    generator = contourpy.contour_generator(
        hc, vc, np.asarray(plane_mask, np.float64), name=matplotlib.rcParams["contour.algorithm"],
        corner_mask=matplotlib.rcParams["contour.corner_mask"], line_type=contourpy.LineType.SeparateCode)
    lines: Any = generator.lines(0.5)  # SeparateCode: (list of vertices, list of codes)
    vertices, codes = lines
    return Path(np.concatenate(vertices), np.concatenate(codes)) if vertices else Path(np.empty((0, 2)))


def _slices_figure(dose: Image, vois: Mapping[str, NDArray[np.floating]], colours: Mapping[str, tuple[Any, str]],
                   centre_name: str | None, ct: Image | None = None) -> tuple[Any, str]:
    """The three planes as a figure and a caption; over the CT (on the dose's grid) when given."""
    from matplotlib import patheffects
    from matplotlib.collections import PathCollection
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
    fig = _new_figure(sum(ratios) * panel_h + 3.2, panel_h + 1.6)
    axes = [fig.add_axes((0.1 + 0.3 * i, 0.2, 0.25, 0.6)) for i in range(3)]  # placed by _place_row
    # solid outlines first (largest first), then the dashed ones on top (_outline_styles)
    region = {n: m[zs, ys, xs] for n, m in masks.items()}  # the region shown: every VOI is inside it
    volume = {n: float(m.sum()) for n, m in region.items()}
    dashed = _outline_styles(region, volume)
    order = sorted(masks, key=lambda n: (dashed[n], -volume[n]))
    shown: set[str] = set()
    image = None
    halo = [patheffects.withStroke(linewidth=3, foreground="black")]
    tick_pt = 9
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
        # each outline traced once and drawn twice, in two collections (instead of two contour
        # sets per VOI; zorder 2 as a contour set's): dark halos first, under every outline
        # (visible on the hottest dose), then the coloured outlines in the same order
        paths = [_outline_paths(hc, vc, plane_masks[n]) for n in drawable]
        if paths:
            ax.add_collection(PathCollection(paths, facecolors="none", edgecolors="black", linewidths=3.6,
                                             zorder=2), autolim=False)
            ax.add_collection(PathCollection(
                paths, facecolors="none", edgecolors=[colours[n][0] for n in drawable], linewidths=2.5,
                linestyles=[(0, (3, 2)) if dashed[n] else colours[n][1] for n in drawable], zorder=2),
                autolim=False)
        shown.update(drawable)
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
    cax = fig.add_axes((0.92, 0.2, 0.02, 0.6))  # placed by _place_row
    cbar = fig.colorbar(image, cax=cax)  # type: ignore[arg-type]
    cbar.set_label("absorbed dose (Gy)", fontsize=11)
    names = list(masks)
    handles = [Line2D([0], [0], color=colours[n][0], ls=(0, (3, 2)) if dashed[n] else colours[n][1], lw=2.6)
               for n in names]
    labels = [_mpl_text(n if n in shown else f"{n} (not in these planes)") for n in names]
    legend_pt = 10
    legend = fig.legend(handles, labels, loc="lower center", ncol=min(len(names), 6), fontsize=legend_pt,
                        frameon=False)
    below_in = _extent_in(legend)[1] + _legend_pad_in(legend_pt)
    _place_row(fig, axes, ratios, cbar, tick_pt=tick_pt, cbar_tick_pt=tick_pt, below_in=below_in)
    caption = (f"Planes through the {where}; thin white lines mark the other two planes. Outlines at half "
               f"coverage of each VOI. Colour scale 0 to {vmax:.0f} Gy (the 99.9th percentile of the dose; "
               f"hotter voxels show in the top colour). Patient coordinates (LPS, mm), radiological view.")
    if hu is not None:
        caption += (f" Over the CT (grey, window {CT_WINDOW_HU[0]:.0f} to {CT_WINDOW_HU[1]:.0f} HU, resampled onto the "
                    f"dose grid); dose below {CT_DOSE_FLOOR:.0%} of the scale is not drawn.")
    if canon.oblique:
        caption += (f" The grid is oblique (an index axis is more than {_OBLIQUE_DEG:g}\u00b0 from the patient axes): "
                    "planes are index planes, labelled with their nearest patient directions.")
    return fig, caption


def _density_figure(density: Image, vois: Mapping[str, NDArray[np.floating]], centre_name: str | None,
                    dose: Image) -> tuple[Any, str]:
    """The density the dose used, on three planes through the same point as the dose maps."""
    import matplotlib
    from matplotlib.font_manager import FontProperties

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
    fig = _new_figure(sum(ratios) * 3.0 + 2.0, 3.8)
    axes = [fig.add_axes((0.1 + 0.3 * i, 0.2, 0.25, 0.6)) for i in range(3)]  # placed by _place_row
    image = None
    tick_pt = 8
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
    cax = fig.add_axes((0.92, 0.2, 0.02, 0.6))  # placed by _place_row
    cbar = fig.colorbar(image, cax=cax)  # type: ignore[arg-type]
    cbar.set_label("density (g/cm\u00b3)", fontsize=10)
    cbar_tick_pt = FontProperties(size=matplotlib.rcParams["ytick.labelsize"]).get_size_in_points()
    _place_row(fig, axes, ratios, cbar, tick_pt=tick_pt, cbar_tick_pt=cbar_tick_pt)
    caption = ("The mass density the dose used, on the dose grid, through the same point as the dose maps "
               "(grey scale 0 to 2 g/cm\u00b3; density.nii.gz holds it).")
    return fig, caption


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
    figure, caption = _density_figure(density, masks, tumour, result.dose)
    png = _png(figure)
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


def _metrics_table(metrics: Mapping[str, Mapping[str, Any]], roles: Mapping[str, str],
                   intervals: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> str:
    """The metrics of every VOI; with ``intervals`` (the uncertainty analysis' per VOI and metric)
    each metric that has one shows its standard uncertainty under it (an error bar: +/- u)."""
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
        own = (intervals or {}).get(name, {}) or {}
        cells += [f"<td>{_fmt_number(values.get(c), unit(c))}"
                  + (f"<br><span class='meta'>\u00b1 {_fmt_number(own[c]['u'], unit(c))}</span>" if c in own else "")
                  + "</td>" for c in ordered]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='scroll'><table><thead><tr>{top}</tr><tr>{second}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


_RB_COLUMNS = (("bed_mean_gy", "BED mean"), ("bed_D70_gy", "BED D70"), ("bed_D90_gy", "BED D90"),
               ("eqd2_mean_gy", "EQD2 mean"), ("eud_gy", "EUD"), ("eubed_gy", "EUBED"), ("geud_gy", "gEUD"))
_RB_PARAMETERS = (("alpha_beta_gy", "\u03b1/\u03b2 (Gy)"), ("repair_half_time_h", "T<sub>rep</sub> (h)"),
                  ("alpha_per_gy", "\u03b1 (1/Gy)"), ("geud_a", "gEUD a"))


def _radiobiology_html(record: Mapping[str, Any]) -> str:
    """The radiobiology of each VOI with parameters, the parameters and the source of each value."""
    vois: Mapping[str, Mapping[str, Any]] = record.get("vois", {}) or {}
    if not vois:
        return "<p>No VOI has radiobiology parameters (roles tumour, normal liver, lung, or a [radiobiology] entry).</p>"
    head = ("<tr><th class='name'>VOI</th><th class='name'>parameters of</th>"
            + "".join(f"<th>{label}</th>" for _, label in _RB_PARAMETERS)
            + "".join(f"<th>{label} (Gy)</th>" for _, label in _RB_COLUMNS) + "</tr>")
    rows = []
    sources: dict[tuple[str, str], list[str]] = {}
    for name, rb in vois.items():
        params = rb.get("parameters", {}) or {}
        cells = [f"<td class='name'>{html.escape(str(name))}</td>",
                 f"<td class='name'>{html.escape(str(rb.get('parameter_role') or 'its own entry'))}</td>"]
        cells += [f"<td>{_fmt_number(params.get(k))}</td>" for k, _ in _RB_PARAMETERS]
        cells += [f"<td>{_fmt_number(rb.get(k), 'gy')}</td>" for k, _ in _RB_COLUMNS]
        rows.append("<tr>" + "".join(cells) + "</tr>")
        for key, label in _RB_PARAMETERS:
            src = (params.get("sources", {}) or {}).get(key)
            if src:
                sources.setdefault((label, str(src)), []).append(str(name))
    source_items = "".join(f"<li>{label}: {html.escape(src)} <span class='meta'>({html.escape(', '.join(names))})</span>"
                           "</li>" for (label, src), names in sources.items())
    notes = sorted({n for rb in vois.values() for n in (rb.get("notes", []) or [])})
    missing = record.get("not_evaluated", {}) or {}
    maps = record.get("maps", {}) or {}
    map_text = "; ".join(f"{role}: {m['file']}" if m.get("file") else f"{role}: none ({m.get('reason', '')})"
                         for role, m in maps.items())
    written = "written" if record.get("write_bed_maps") else "not written (bed_maps = true in [radiobiology] writes them)"
    return (f"<div class='scroll'><table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>"
            f"<p class='meta'>{html.escape(str(record.get('model', '')))}. Y-90 half-life "
            f"{float(record.get('decay_half_life_h', float('nan'))):g} h, "
            f"{html.escape(str(record.get('effective_decay', '')))}; BED D70/D90 = BED(D70)/BED(D90); the doses are "
            "each VOI's DVH doses (lung VOIs at lung density); EUBED is the EUD of the BED.</p>"
            f"<p>Parameters and their sources:</p><ul>{source_items}</ul>"
            + (f"<p class='meta'>Not computed: {html.escape('; '.join(notes))}.</p>" if notes else "")
            + (f"<p class='meta'>No radiobiology: {html.escape('; '.join(f'{k}: {v}' for k, v in missing.items()))}.</p>"
               if missing else "")
            + (f"<p class='meta'>BED maps ({written}): {html.escape(map_text)}.</p>" if maps else ""))


_UNCERTAINTY_LABELS = {"mean_gy": ("mean", "Gy"), "D70_gy": ("D70", "Gy"), "D90_gy": ("D90", "Gy"),
                       "V100_pct": ("V100", "%"), "bed_mean_gy": ("BED mean", "Gy"), "eud_gy": ("EUD", "Gy")}


def _uncertainty_html(uncertainty: Mapping[str, Any], record: Mapping[str, Any]) -> str:
    """Each VOI's metrics with their standard uncertainty, 95 % interval and largest contributors;
    then the inputs (standard uncertainty, whether and how each entered, its source)."""
    rows = []
    for voi, metrics in (uncertainty.get("vois", {}) or {}).items():
        for key, m in metrics.items():
            label, unit = _UNCERTAINTY_LABELS.get(key, (key, ""))
            budget = sorted((m.get("budget") or {}).items(), key=lambda kv: -kv[1])
            top = ", ".join(f"{html.escape(k)} {v:.3g}" for k, v in budget[:3] if v > 0)
            rel = f" ({100 * m['u_rel']:.1f} %)" if m.get("u_rel") is not None else ""
            rows.append(f"<tr><td>{html.escape(voi)}</td><td>{label}</td><td>{m['value']:.4g} {unit}</td>"
                        f"<td>\u00b1 {m['u']:.3g}{rel}</td><td>{m['lo95']:.4g} \u2013 {m['hi95']:.4g}</td>"
                        f"<td>{top}</td></tr>")
    inputs = []
    for key, i in (record.get("inputs", {}) or {}).items():
        inputs.append(f"<tr><td>{html.escape(key)}</td><td>{i['u']:g} {html.escape(str(i['unit']))}</td>"
                      f"<td>{'yes' if i['applied'] else 'no'}</td><td>{html.escape(str(i['how']))}</td>"
                      f"<td class='meta'>{html.escape(str(i['source']))}</td></tr>")
    noise = record.get("noise", {}) or {}
    noise_text = noise.get("model") or noise.get("how") or ""
    correlation = (noise.get("correlation") or {}).get("how")
    if correlation:
        noise_text = f"{noise_text}; correlation: {correlation}"
    return (f"<p>{record.get('n')} seeded samples (seed {record.get('seed')}), "
            f"{record.get('cost_s_per_sample', 0.0):.3g} s per sample. {html.escape(str(record.get('interval_rule', '')))}."
            "</p><table><tr><th>VOI</th><th>metric</th><th>value</th><th>standard uncertainty</th>"
            "<th>95 % interval</th><th>largest contributors (standard uncertainty)</th></tr>"
            + "".join(rows) + "</table><h3>Inputs</h3><table><tr><th>input</th><th>standard uncertainty</th>"
            "<th>applied</th><th>how</th><th>source</th></tr>" + "".join(inputs) + "</table>"
            f"<p class='meta'>Image noise: {html.escape(str(noise_text))}. "
            f"{html.escape(str(record.get('segmentation_rule', '')))}. "
            f"{html.escape(str(record.get('budget_rule', '')))}.</p>")


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


def _gbq(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(float(value)):
        return "\u2014"
    return f"{float(value):.3g}"


def _plan_html(plan: Mapping[str, Any]) -> str:
    """The plan of a planning case: per territory the model and voxel-based activities, the
    constraints with the activity each allows, and the constraints at the predicted map's
    activities."""
    e = html.escape
    lsf = plan.get("lung_shunt", {}) or {}
    pm = plan.get("predicted_map", {}) or {}
    measured = lsf.get("from_counts")
    lines = [
        f"Lung shunt fraction {_fmt_number(100.0 * float(lsf.get('value', math.nan)), 'pct')} % "
        f"({e(str(lsf.get('used', '')))})" + (f"; measured on the SPECT: {100.0 * float(measured):.1f} %"
                                                if isinstance(measured, (int, float)) else "") + ".",
        f"{e(str(plan.get('convention', '')))}; {e(str(plan.get('activity_rule', '')))}.",
        f"Counts in voxels no territory or lung VOI touches: {_fmt_number(pm.get('counts_outside_percent'), 'pct')} % "
        "of the SPECT's (no predicted activity).",
        f"{e(str(plan.get('linearity', '')))}.",
    ]
    if plan.get("lung_model_dose_gy") is not None:
        lines.append(f"Lung dose by the lung-shunt model ({_fmt_number(plan.get('lung_model_mass_kg'), 'kg')} kg) at "
                     f"the predicted map's activities: {_fmt_number(plan.get('lung_model_dose_gy'), 'gy')} Gy.")
    head = ("<tr><th class='name'>territory</th><th>volume (mL)</th><th>mass (kg)</th><th>T:N</th>"
            "<th>MIRD (GBq)</th><th>partition (GBq)</th><th>BSA (GBq)</th><th>voxel plan (GBq)</th>"
            "<th class='name'>binding constraint</th><th>planned (GBq)</th><th>predicted map (GBq)</th></tr>")
    rows, details = [], []
    at_map = plan.get("predicted_map_activities_gbq", {}) or {}
    for name, t in (plan.get("territories", {}) or {}).items():
        models = t.get("models", {}) or {}
        part = models.get("partition", {}) or {}

        def model(key: str) -> str:
            m = models.get(key) or {}
            a = m.get("activity_gbq")
            target = (f" at {m['target_gy']:g} Gy" if key == "mird" and "target_gy" in m else
                      f" at D<sub>N</sub> {m['normal_liver_target_gy']:g} Gy" if "normal_liver_target_gy" in m else "")
            return f"{_gbq(a)}{target}" if a is not None else "\u2014"

        flag = "" if t.get("meets_all_constraints", True) else " class='flag'"
        rows.append(
            f"<tr><td class='name'>{e(str(name))}</td><td>{_fmt_number(t.get('volume_ml'), 'ml')}</td>"
            f"<td>{_fmt_number(t.get('mass_kg'), 'kg')}</td><td>{_fmt_number(part.get('tumour_to_normal'))}</td>"
            f"<td>{model('mird')}</td><td>{model('partition')}</td><td>{model('bsa')}</td>"
            f"<td{flag}>{_gbq(t.get('activity_gbq'))}</td>"
            f"<td class='name'>{e(str(t.get('binding_constraint') or t.get('note') or ''))}</td>"
            f"<td>{_gbq(t.get('planned_activity_gbq'))}</td><td>{_gbq(at_map.get(name))}</td></tr>")
        crow = "".join(
            f"<tr><td class='name'>{e(str(c.get('constraint')))}</td><td class='name'>{e(str(c.get('kind')))}</td>"
            f"<td>{_gbq(c.get('activity_limit_gbq'))}</td><td class='name'>{e(str(c.get('source', '')))}</td></tr>"
            for c in t.get("constraints", []) or [])
        notes = "".join(f"<p class='meta'>{e(name)}: {e(str(m['note']))}</p>"
                        for m in (models.get(k) or {} for k in ("partition", "bsa")) if m.get("note"))
        if not t.get("meets_all_constraints", True):
            notes += (f"<p class='meta flag'>{e(str(name))}: no activity meets every constraint: the lower bounds need "
                      f"{_gbq(t.get('lowest_activity_for_lower_bounds_gbq'))} GBq.</p>")
        details.append(f"<h3>{e(str(name))}: constraints</h3><div class='scroll'><table><thead><tr>"
                       "<th class='name'>constraint</th><th class='name'>bound</th><th>activity it allows or needs "
                       f"(GBq)</th><th class='name'>source</th></tr></thead><tbody>{crow}</tbody></table></div>{notes}")
    combined = "".join(
        f"<tr><td class='name'>{e(str(c.get('constraint')))}</td><td>{_fmt_number(c.get('value'))}</td>"
        + ("<td>met</td></tr>" if c.get("met") else "<td class='flag'>NOT met</td></tr>")
        for c in plan.get("constraints_at_predicted_map", []) or [])
    return ("<p>" + "<br>".join(lines) + "</p>"
            f"<div class='scroll'><table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>"
            "<p class='meta'>MIRD: A = D M / (C (1 \u2212 LSF)); partition: A = D<sub>N</sub> (T:N M<sub>T</sub> + "
            "M<sub>N</sub>) / (C (1 \u2212 LSF)); BSA (resin): (BSA \u2212 0.2 + V<sub>T</sub>/V<sub>liver</sub>) "
            "\u00d7 the territory's share of the liver, reduced for the lung shunt; voxel plan: the largest "
            "activity meeting every upper-bound constraint, the other territories at their planned activities. "
            "Activities reach the patient.</p>"
            + "".join(details)
            + ("<h3>All territories together, at the predicted map's activities</h3><div class='scroll'><table><thead>"
               "<tr><th class='name'>constraint</th><th>value (Gy or %)</th><th>status</th></tr></thead>"
               f"<tbody>{combined}</tbody></table></div>" if combined else ""))


def _treatment(result: "CaseResult") -> list[tuple[str, Any]]:
    """The treatment parameters a physicist checks first: activity, shunt, residual, product, times."""
    case = result.case
    times = (result.provenance.get("calibration", {}) or {}).get("times", {}) or {}

    def when(key: str) -> str | None:
        t = times.get(key) or {}
        return f"{t['value']} ({t.get('from', '')})" if t.get("value") else None

    def pct(x: float | None) -> str | None:
        return None if x is None else f"{x:.1%}"

    if result.plan:
        acts = result.plan.get("predicted_map_activities_gbq", {}) or {}
        lsf = (result.plan.get("lung_shunt", {}) or {}).get("value")
        return [
            ("predicted for", ", ".join(f"{t} {a:.3g} GBq" for t, a in acts.items()) or None),
            ("lung shunt", pct(lsf)),
            ("microspheres", case.sphere_type),
            ("scan", "Tc-99m MAA SPECT (" + str((result.plan.get("scan", {}) or {}).get("nuclide", "")) + ")"),
        ]
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
    bands = (result.uncertainty or {}).get("dvh_bands") or None
    dvh_png = _png(_dvh_figure(dvhs, colours, bands)) if dvhs else ""
    slices_figure, slices_caption = _slices_figure(dose, masks, colours, tumour, result.images.get("ct"))
    slices_png = _png(slices_figure)

    run = provenance.get("run_datetime")
    run_text = str(run) if run else dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    heading = title or ("Y-90 radioembolization: predicted dosimetry (Tc-99m MAA plan)" if result.plan
                        else "Y-90 radioembolization dosimetry")
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
                "weighted voxel doses, no binning)."
                + (" Shaded: the 95 % band of the uncertainty analysis' samples." if bands else "")
                + "</figcaption></figure>") if dvh_png else "<p>No DVHs.</p>"
    metrics = result.metrics
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(heading)} \u2014 case {html.escape(str(case_id))}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(heading)} \u2014 case {html.escape(str(case_id))}</h1>
{_header_table(str(case_id), run_text, __version__, dose, provenance, _treatment(result))}
{warn_html}
{f"<h2>Plan</h2>{_plan_html(result.plan)}" if result.plan else ""}
<h2>Dose-volume histograms</h2>
{dvh_html}
<h2>Dose maps</h2>
<figure><img alt='absorbed dose on axial, coronal and sagittal planes with VOI outlines'
src='data:image/png;base64,{slices_png}'><figcaption>{html.escape(slices_caption)}</figcaption></figure>
<h2>Metrics</h2>
{_metrics_table(metrics, roles, (result.uncertainty or {}).get("vois")) if metrics else "<p>No metrics.</p>"}
<p class="meta">D<i>x</i>: the minimum dose to the hottest <i>x</i> % of the VOI; V<i>g</i>: the percent of the VOI
receiving at least <i>g</i> Gy; {_mass_note(result)}</p>
{f"<h2>Radiobiology</h2>{_radiobiology_html(result.radiobiology)}" if result.radiobiology else ""}
{f"<h2>Uncertainty</h2>{_uncertainty_html(result.uncertainty, provenance.get('uncertainty', {}))}"
 if result.uncertainty else ""}
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
