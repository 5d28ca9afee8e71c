"""The HTML report: self-contained, complete, escaped, oriented; looked at in headless Chromium."""

from __future__ import annotations

import base64
import dataclasses
import html.parser
import io
import re
import shutil
import subprocess

import numpy as np
import pytest

import voxeldose
from voxeldose import phantoms
from voxeldose.image import Image
from voxeldose.io import write_report
from voxeldose.report import _Canonical, hottest_tumour, render_report
from voxeldose.result import Caveat

EVIL = "<script>alert(1)</script>"
ROLES = {"liver": "whole_liver", "normal_liver": "normal_liver", "lung": "lung",
         **{f"tumour_{i}": "tumour" for i in range(1, 6)}}


class _Collector(html.parser.HTMLParser):
    """Tags and their attributes, and the text, of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def case():
    """The liver phantom on its 128 x 128 x 100 grid (4.42 mm), kernel dose, LSF 0.25 (warns),
    as one case result, with a caveat, a VOI name and a provenance entry that must not inject markup."""
    ph = phantoms.liver(lung_shunt_fraction=0.25)
    vois = {n: ph.vois[n] for n in ROLES}
    vois[EVIL] = ph.vois["tumour_2"]  # a VOI name that must not inject markup
    record = voxeldose.Case("tare-001", administered_gbq=3.0, lung_shunt_fraction=0.25, residual_fraction=0.0,
                            voi_roles=ROLES)
    result = voxeldose.compute_case(ph.activity, vois, record)
    return dataclasses.replace(
        result, caveats=result.caveats + (Caveat("test", "VOI <b>x</b> & co"),),
        provenance={**result.provenance, "dose": {"method": "kernel", "tissue": "soft", "kernel": "Lanconelli 2012, 4.42 mm"},
                    "run_datetime": "2026-01-15T10:00:00", "note": "</pre><script>bad()</script>"})


def _write(path, case, **changes):
    return write_report(path, dataclasses.replace(case, **changes) if changes else case)


@pytest.fixture(scope="module")
def report(case, tmp_path_factory):
    return _write(tmp_path_factory.mktemp("report") / "report.html", case)


def test_report_is_self_contained(report):
    text = report.read_text(encoding="utf-8")
    page = _Collector()
    page.feed(text)
    page.close()
    tags = [t for t, _ in page.tags]
    assert tags[0] == "html" and "body" in tags
    assert "script" not in tags and "iframe" not in tags and "link" not in tags  # nothing active or fetched
    for tag, attrs in page.tags:
        for key in ("src", "href"):
            if attrs.get(key) is not None:
                assert attrs[key].startswith("data:"), (tag, attrs[key][:60])
    assert "http://" not in text and "https://" not in text and "url(" not in text
    assert report.stat().st_size < 3e6  # 128 x 128 x 100 case: two PNGs, ~0.4 MB


def test_report_images_are_png(report):
    from PIL import Image as PILImage

    text = report.read_text(encoding="utf-8")
    images = re.findall(r"src='data:image/png;base64,([^']+)'", text)
    assert len(images) == 2  # the DVHs and the dose planes
    for data in images:
        raw = base64.b64decode(data, validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        with PILImage.open(io.BytesIO(raw)) as im:
            im.verify()
        with PILImage.open(io.BytesIO(raw)) as im:
            assert im.width > 800 and im.height > 300
            assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 50  # not blank


def test_report_content(report, case):
    masks, dvhs, cc, warnings = case.vois, case.dvhs, case.crosschecks, case.warnings
    text = report.read_text(encoding="utf-8")
    page = _Collector()
    page.feed(text)
    shown = " ".join(page.text)
    for name in masks:
        assert name in shown  # every VOI, as text (EVIL escaped in the source, shown literally)
    assert "tare-001" in shown and voxeldose.__version__ in shown
    assert "kernel" in shown and "Lanconelli 2012, 4.42 mm" in shown and "2026-01-15T10:00:00" in shown
    for c in case.caveats:
        assert c.message in shown and f"({c.stage})" in shown  # every caveat, with its stage
    assert any("exceeds 30 Gy" in w for w in warnings)  # LSF 0.25: 49.67 x 3 x 0.25 / 1.09 kg = 34 Gy
    assert f"{len(warnings)} warnings" in shown
    # the planes pass through the hottest tumour, named in the caption
    hottest = max((n for n, r in ROLES.items() if r == "tumour"), key=lambda n: dvhs[n].mean_gy)
    assert f"hottest tumour, {hottest}" in shown
    # metrics and cross-checks
    for label in ("D98", "V205", "volume", "mass", "MIRD single compartment", "partition: tumours",
                  "partition: normal liver", "lung (shunt 25.0%)", "Clinical references", "lung limit, one treatment",
                  "glass HCC", "administered", "3 GBq", "lung shunt", "25.0%", "residual"):
        assert label in shown
    assert f"{cc['mird']['model_mean_gy']:.1f}" in shown
    assert "<details>" in text  # provenance collapsed


def test_report_escapes_text(report):
    text = report.read_text(encoding="utf-8")
    assert EVIL not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>x</b>" not in text and "VOI &lt;b&gt;x&lt;/b&gt; &amp; co" in text
    assert "</pre><script>" not in text  # provenance cannot close its <pre>


def test_report_without_warnings_or_models(case, tmp_path):
    text = render_report(dataclasses.replace(case, caveats=(), crosschecks={}, roles={}), title="Post-treatment dosimetry")
    assert "No warnings" in text and "No model cross-checks" in text
    assert "Post-treatment dosimetry" in text
    assert "hottest tumour, tumour_" in text  # found by the name rule without roles


def test_report_input_errors(case, tmp_path):
    with pytest.raises(voxeldose.InputError, match="CaseResult"):
        render_report(case.dose)  # type: ignore[arg-type]
    # the result holds one grid: a mask on another is refused when the result is made
    masks = dict(case.vois)
    liver = masks["liver"]
    masks["liver"] = Image(liver.array[:-1], liver.spacing_mm, liver.origin_mm, units="MASK")
    with pytest.raises(voxeldose.VoiError, match="'liver'.*grid"):
        dataclasses.replace(case, vois=masks)
    with pytest.raises(voxeldose.InputError, match="'dose'.*GY"):
        dataclasses.replace(case, images={**case.images, "dose": case.activity})
    (tmp_path / "r.html").write_text("earlier")
    with pytest.raises(voxeldose.InputError, match="already exists"):
        _write(tmp_path / "r.html", case)


def test_hottest_tumour_rule():
    d = np.arange(8.0).reshape(2, 2, 2)
    lo, hi = np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool)
    lo[0], hi[1] = True, True
    def h(mask):
        return voxeldose.dvh_array(d, mask, spacing_xyz_mm=(4, 4, 4))

    dvhs = {"tumour_a": h(lo), "Tumor_b": h(hi), "lesion": h(hi), "liver": h(hi | lo)}
    assert hottest_tumour(dvhs) == "Tumor_b"  # name rule: tumour/tumor, any case
    assert hottest_tumour(dvhs, roles={"lesion": "tumour", "tumour_a": "tumour"}) == "lesion"  # roles first
    assert hottest_tumour(dvhs, tumour_names=["tumour_a"], roles={"lesion": "tumour"}) == "tumour_a"  # names first
    assert hottest_tumour({"liver": dvhs["liver"]}) is None


def test_orientation_from_the_direction_matrix():
    # the same patient volume stored with x and y flipped, or with its index axes permuted
    # (a coronal acquisition), shows the same canonical (LPS, ascending) array and coordinates
    rng = np.random.default_rng(1)
    a = rng.random((4, 5, 6)).astype(np.float32)  # [z, y, x], identity direction
    ref = Image(a, (2.0, 3.0, 4.0), (-5.0, -6.0, -8.0))
    flipped = Image(a[:, ::-1, ::-1], (2.0, 3.0, 4.0), (5.0, 6.0, -8.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    # index i -> patient x, j -> patient z, k -> patient y: array [y, z, x]
    permuted = Image(np.transpose(a, (1, 0, 2)), (2.0, 4.0, 3.0), (-5.0, -6.0, -8.0), (1, 0, 0, 0, 0, 1, 0, 1, 0))
    c_ref = _Canonical(ref)
    for other in (flipped, permuted):
        c = _Canonical(other)
        np.testing.assert_array_equal(c.view(other.array), c_ref.view(ref.array))
        for axis in range(3):
            np.testing.assert_allclose(c.coords[axis], c_ref.coords[axis])
        assert not c.oblique
    tilted = np.array([[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]])
    assert _Canonical(Image(a, (2.0, 3.0, 4.0), direction=tuple(tilted.ravel()))).oblique  # 17 degrees


def test_report_on_a_flipped_grid(case, tmp_path):
    # a grid stored right-to-left / posterior-to-anterior gives the same radiological view
    image = case.dose
    flip = (slice(None), slice(None, None, -1), slice(None, None, -1))
    nz, ny, nx = image.shape
    sx, sy, _ = image.spacing_mm
    ox, oy, oz = image.origin_mm

    def flipped(im, units):
        return Image(np.asarray(im.array)[flip], im.spacing_mm, (ox + (nx - 1) * sx, oy + (ny - 1) * sy, oz),
                     (-1, 0, 0, 0, -1, 0, 0, 0, 1), units)

    a = _write(tmp_path / "a.html", case, provenance={})
    b = _write(tmp_path / "b.html", case, images={"dose": flipped(image, "GY"), "activity": flipped(case.activity, "MBQ")},
               vois={n: flipped(m, "MASK") for n, m in case.vois.items()}, provenance={})
    from PIL import Image as PILImage

    planes = []
    for page in (a, b):
        data = re.findall(r"src='data:image/png;base64,([^']+)'", page.read_text())[1]
        planes.append(np.asarray(PILImage.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), int))
    assert planes[0].shape == planes[1].shape
    # the voxel coordinates of the two grids differ by float rounding (1e-13 mm), which moves a
    # few anti-aliased outline pixels: allow 0.1 % of the pixels to differ
    assert (np.abs(planes[0] - planes[1]).sum(axis=2) > 0).mean() < 1e-3


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (apt-get install chromium)")
def test_report_renders_in_chromium(report, tmp_path):
    from PIL import Image as PILImage

    png = tmp_path / "shot.png"
    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1400,3000",
         report.as_uri()],
        capture_output=True, timeout=120,
    )
    assert png.exists(), result.stderr.decode(errors="replace")[-2000:]
    with PILImage.open(png) as im:
        assert im.format == "PNG" and im.size == (1400, 3000)
        rgb = np.asarray(im.convert("RGB"))
    not_white = (rgb < 245).any(axis=2).mean()
    assert not_white > 0.05  # text, tables and two figures: well above a blank page
    # the amber warning box and the dark dose maps are on the page
    assert ((np.abs(rgb.astype(int) - [255, 247, 230]).sum(axis=2) < 12).mean() > 0.002)
    assert (rgb.max(axis=2) < 30).mean() > 0.01


def _grey_fraction(report_path):
    """The fraction of the planes figure's pixels that are grey (R = G = B, mid-level): the CT."""
    from PIL import Image as PILImage

    data = re.findall(r"src='data:image/png;base64,([^']+)'", report_path.read_text(encoding="utf-8"))[1]
    with PILImage.open(io.BytesIO(base64.b64decode(data))) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    grey = (np.ptp(rgb, axis=2) <= 3) & (rgb[..., 0] > 60) & (rgb[..., 0] < 200)
    return float(grey.mean())


def test_report_draws_the_dose_over_the_ct(case, tmp_path):
    from voxeldose.phantoms.export import _ct_image, _geometry  # the export's CT model

    ct = _ct_image(case.dose.spacing_mm, _geometry())
    assert ct.same_grid(case.dose)
    with_ct = _write(tmp_path / "ct.html", case, images={**case.images, "ct": ct})
    without = _write(tmp_path / "plain.html", case)
    # the body (40 HU) is mid-grey in the W 400 / L 40 window (31 % of the figure's pixels here);
    # without the CT only the grey outline and anti-aliased text are (1 %)
    assert _grey_fraction(with_ct) > 0.15 > 0.03 > _grey_fraction(without)
    text = with_ct.read_text(encoding="utf-8")
    assert "Over the CT (grey, window -160 to 240 HU" in text and "Over the CT" not in without.read_text()


def test_report_shows_the_density_the_dose_used():
    # with a density map: the Tissue section names the HU table and the body, and shows the
    # density on three planes; without: it says the tissue was soft tissue everywhere
    ph = phantoms.sphere(spacing_xyz_mm=(6.0, 6.0, 6.0))
    rho = np.full(ph.activity.shape, 1.04, np.float32)
    rho[:, :, :3] = 0.0012
    meta = dataclasses.replace(ph.activity.meta, extra={"hu_table": "Schneider et al. 2000 (test)", "rule": "test"})
    density = Image(rho, ph.activity.spacing_mm, ph.activity.origin_mm, units="G/CM3", meta=meta)
    with_ct = render_report(voxeldose.compute_case(ph.activity, ph.vois, voxeldose.Case("d-1"), density=density))
    tissue = with_ct[with_ct.index("<h2>Tissue</h2>"):with_ct.index("<h2>Clinical references</h2>")]
    assert "Schneider et al. 2000 (test)" in tissue and "largest connected region" in tissue
    assert "alt='mass density on three planes'" in tissue and "data:image/png;base64," in tissue
    assert "mass = the sum of the VOI's voxel masses" in with_ct
    plain = render_report(voxeldose.compute_case(ph.activity, ph.vois, voxeldose.Case("d-2")))
    assert "No CT: every voxel is soft tissue" in plain and "lung VOIs 0.30 g/mL" in plain


# --------------------------------------------------------------------------- the figures
# The figures are laid out by hand (no constrained layout) and draw their own ticks: what
# they show is checked on the figure objects, against matplotlib where it has an answer.


def _figures(case, *, ct=None, density=None):
    """The report's three figures of ``case`` as matplotlib figures, drawn, by name."""
    from voxeldose import report

    masks = {str(n): m.array for n, m in case.vois.items()}
    colours = report._colours(list(dict.fromkeys([*case.dvhs, *masks])))
    tumour = hottest_tumour({n: h for n, h in case.dvhs.items() if n in masks}, roles=case.roles)
    figures = {"dvh": report._dvh_figure(case.dvhs, colours),
               "planes": report._slices_figure(case.dose, masks, colours, tumour, ct)[0]}
    if density is not None:
        figures["density"] = report._density_figure(density, masks, tumour, case.dose)[0]
    for fig in figures.values():
        fig.canvas.draw()
    return figures


@pytest.fixture(scope="module")
def ct_and_density(case):
    from voxeldose.phantoms.export import _ct_image, _geometry

    ct = _ct_image(case.dose.spacing_mm, _geometry())
    rho = np.where(np.asarray(ct.array) > -500, 1.04, 0.0012).astype(np.float32)
    return ct, Image(rho, case.dose.spacing_mm, case.dose.origin_mm, case.dose.direction, units="G/CM3")


@pytest.fixture(scope="module")
def figures(case, ct_and_density):
    ct, density = ct_and_density
    return {"plain": _figures(case), "ct": _figures(case, ct=ct, density=density)}


def _shown_texts(fig):
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def test_figures_show_every_title_label_letter_and_legend_entry(case, figures):
    hottest = max((n for n, r in ROLES.items() if r == "tumour"), key=lambda n: case.dvhs[n].mean_gy)
    for kind, figs in figures.items():
        planes = figs["planes"]
        panels, cbar = planes.axes[:3], planes.axes[3]
        assert [ax.get_title().split("   ")[0] for ax in panels] == ["axial", "coronal", "sagittal"]
        assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in panels] == [
            ("x (mm)   R \u2192 L", "y (mm)   P \u2192 A"), ("x (mm)   R \u2192 L", "z (mm)   I \u2192 S"),
            ("y (mm)   A \u2192 P", "z (mm)   I \u2192 S")]
        for ax, letters in zip(panels, ("RLAP", "RLSI", "APSI")):
            assert sorted(t.get_text() for t in ax.texts if t.get_path_effects()) == sorted(letters)
            assert len(ax.images) == (1 if kind == "plain" else 2)  # the dose (over the CT)
            assert len(ax.lines) == 2 + 2  # the crosshair lines, the bottom and left tick marks
        assert cbar.get_ylabel() == "absorbed dose (Gy)"
        # the hottest tumour is outlined (a halo and a coloured line) on all three planes
        assert all(len(ax.collections) == 2 for ax in panels)
        legend = [t.get_text() for t in planes.legends[0].get_texts()]
        assert len(legend) == len(case.vois) and all(any(t.startswith(n) for t in legend) for n in case.vois)
        assert hottest in legend
        dvh = figs["dvh"]
        assert dvh.axes[0].get_xlabel() == "dose (Gy)"
        assert dvh.axes[0].get_legend().get_title().get_text() == "VOI"
        assert [t.get_text() for t in dvh.axes[0].get_legend().get_texts()] == [
            f"{n}  (mean {h.mean_gy:.1f} Gy)" for n, h in case.dvhs.items()]
        curves = [ln for ln in dvh.axes[0].lines if ln.get_linestyle() != "None"]  # not the tick marks
        assert len(curves) == len(case.dvhs) and all(len(ln.get_xdata()) == 601 for ln in curves)
    density = figures["ct"]["density"]
    assert [ax.get_title().split("   ")[0] for ax in density.axes[:3]] == ["axial", "coronal", "sagittal"]
    assert density.axes[3].get_ylabel() == "density (g/cm\u00b3)"


def test_figure_ticks_are_matplotlibs(figures):
    # each axis shows the ticks and labels matplotlib's own locator and formatter give an axes
    # of the same size and limits
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for figs in figures.values():
        for fig in figs.values():
            for ax in fig.axes:
                ref_fig = Figure(figsize=fig.get_size_inches(), dpi=fig.dpi)
                FigureCanvasAgg(ref_fig)
                ref = ref_fig.add_axes(ax.get_position().bounds)
                ref.set_xlim(ax.get_xlim())
                ref.set_ylim(ax.get_ylim())
                ref_fig.canvas.draw()
                sides = {"bottom": (ref.xaxis, 0)} if ax.get_xlabel() or ax.get_title() else {}
                sides["left" if ax.yaxis.get_label_position() == "left" else "right"] = (ref.yaxis, 1)
                for side, (axis, coord) in sides.items():
                    ours = [(t.get_text(), t.get_position()[coord]) for t in ax.texts
                            if t.get_gid() == f"{side} tick label"]
                    lo, hi = sorted(axis.get_view_interval())
                    theirs = [(t.get_text(), t.get_position()[coord]) for t in axis.get_ticklabels()
                              if lo <= t.get_position()[coord] <= hi]  # the ones drawn
                    assert len(ours) >= 3 and ours == theirs, (fig.axes.index(ax), side)


def test_figure_texts_are_inside_and_apart(figures):
    # nothing is cut at the figure's edge; a panel's tick labels, axis labels and title do not
    # reach into another panel, the colour bar, the legend or each other
    for figs in figures.values():
        for name, fig in figs.items():
            renderer = fig.canvas.get_renderer()
            width, height = fig.canvas.get_width_height()
            for text in _shown_texts(fig):
                box = text.get_window_extent(renderer)
                assert box.x0 >= -0.5 and box.y0 >= -0.5 and box.x1 <= width + 0.5 and box.y1 <= height + 0.5, (
                    name, text.get_text())
            boxes = []  # (owner, kind, box)
            for i, ax in enumerate(fig.axes):
                boxes.append((i, "axes", ax.get_window_extent(renderer)))
                for text in ax.texts:
                    if text.get_gid():
                        boxes.append((i, "tick", text.get_window_extent(renderer)))
                for text in (ax.xaxis.label, ax.yaxis.label, ax.title):
                    if text.get_text():
                        boxes.append((i, "label", text.get_window_extent(renderer)))
            for legend in fig.legends:
                boxes.append((-1, "legend", legend.get_window_extent(renderer)))
            for a, (owner_a, kind_a, box_a) in enumerate(boxes):
                for owner_b, kind_b, box_b in boxes[a + 1:]:
                    if owner_a == owner_b and "label" not in (kind_a, kind_b):
                        continue  # an axes and its own tick labels, or two of them
                    if owner_a == owner_b and {kind_a, kind_b} == {"label", "axes"}:
                        continue  # a title or label touches its own axes' edge
                    inter = box_a.intersection(box_a, box_b)
                    assert inter is None or inter.width < 1 or inter.height < 1, (name, owner_a, kind_a, owner_b, kind_b)


def test_png_encoding_round_trips():
    from PIL import Image as PILImage

    from voxeldose.report import _png_bytes

    rng = np.random.default_rng(3)
    flat = np.full((7, 9, 3), 200, np.uint8)
    for pixels in (rng.integers(0, 256, (31, 17, 3), dtype=np.uint8), rng.integers(0, 256, (5, 40, 4), dtype=np.uint8),
                   flat, np.zeros((1, 1, 3), np.uint8)):
        with PILImage.open(io.BytesIO(_png_bytes(pixels))) as im:
            assert im.mode == ("RGB" if pixels.shape[2] == 3 else "RGBA") and im.info["dpi"] == pytest.approx((100, 100), abs=0.01)
            np.testing.assert_array_equal(np.asarray(im), pixels)


def test_outline_helpers_agree_with_their_references(case):
    # the VOI-sized fast paths give what the whole-grid scipy versions gave, to the voxel
    from scipy import ndimage

    from voxeldose.report import _centre, _neighbours6, _outline_styles

    rng = np.random.default_rng(5)
    for shape in ((1, 1, 1), (1, 4, 3), (6, 7, 8), (2, 9, 2)):
        for p in (0.3, 0.8, 1.0):
            a = rng.random(shape) < p
            np.testing.assert_array_equal(_neighbours6(a, every=True), ndimage.binary_erosion(a))
            np.testing.assert_array_equal(_neighbours6(a, every=False), ndimage.binary_dilation(a))

    def styles_reference(masks):
        seen, dashed = None, {}
        for name in sorted(masks, key=lambda n: float(masks[n].sum())):
            inside = masks[name] >= 0.5
            boundary = inside & ~ndimage.binary_erosion(inside)
            if not boundary.any() or seen is None:
                dashed[name] = False
                seen = boundary.copy() if seen is None and boundary.any() else seen
                continue
            dashed[name] = bool((boundary & ndimage.binary_dilation(seen)).sum() > 0.5 * boundary.sum())
            seen |= boundary
        return dashed

    def centre_reference(mask):
        inside = mask >= 0.5 if (mask >= 0.5).any() else mask > 0
        idx = np.argwhere(inside)
        w = mask[inside]
        best = idx[int(np.argmin(((idx - (idx * w[:, None]).sum(axis=0) / w.sum()) ** 2).sum(axis=1)))]
        return tuple(int(v) for v in best)

    masks = {n: np.asarray(m.array) for n, m in case.vois.items()}
    masks["touches the edge"] = np.zeros_like(masks["liver"])
    masks["touches the edge"][:5, :, -3:] = 0.7
    assert _outline_styles(masks, {n: float(m.sum()) for n, m in masks.items()}) == styles_reference(masks)
    assert any(styles_reference(masks).values())  # the liver after its normal liver
    for mask in masks.values():
        assert _centre(mask) == centre_reference(mask)
    partial = np.zeros((5, 6, 7))
    partial[1:3, 2:5, 3] = 0.3  # nothing at 0.5 or more: the voxels above 0
    assert _centre(partial) == centre_reference(partial)
