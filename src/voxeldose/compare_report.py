"""The comparison report: one self-contained HTML page of a predicted-against-delivered comparison.

Top to bottom: the inputs and conventions, the caveats, the DVH overlay (each VOI's delivered DVH
solid, its predicted DVH dashed, in one colour), the per-VOI table (predicted, delivered,
difference, relative difference), the isodose overlaps, the gamma pass rates and the provenance.
It reuses the case report's page style and figure helpers (:mod:`voxeldose.report`): the figure is
drawn on its own Agg canvas and embedded as a PNG; every caller text is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from typing import Any, Mapping

from ._version import __version__
from .compare import Comparison
from .errors import InputError
from .report import _CSS, _colours, _fmt_number, _mpl_text, _new_figure, _png

__all__ = ["render_comparison_report"]

#: The metrics of the per-VOI table, with their labels and units (the JSON holds all of them).
_ROWS = (("mean_gy", "Dmean", "Gy"), ("D70_gy", "D70", "Gy"), ("D90_gy", "D90", "Gy"), ("D2_gy", "D2", "Gy"),
         ("V70_pct", "V70", "%"), ("V100_pct", "V100", "%"), ("V120_pct", "V120", "%"), ("V205_pct", "V205", "%"))


def _overlay_figure(comparison: Comparison) -> Any:
    overlay = comparison.dvh_overlay
    assert overlay is not None
    names = list(overlay.predicted)
    colours = _colours(names)
    fig = _new_figure(9.0, 4.6)
    ax = fig.add_axes((0.08, 0.12, 0.62, 0.83))
    for name in names:
        colour = colours[name][0]
        ax.plot(overlay.dose_gy, 100.0 * overlay.delivered[name], color=colour, lw=1.8,
                label=_mpl_text(f"{name} delivered"))
        ax.plot(overlay.dose_gy, 100.0 * overlay.predicted[name], color=colour, lw=1.6, ls="--",
                label=_mpl_text(f"{name} predicted"))
    ax.set_xlabel("dose (Gy)")
    ax.set_ylabel("volume receiving at least the dose (%)")
    ax.set_ylim(0, 102)
    ax.set_xlim(0, float(overlay.dose_gy[-1]) * 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8,
              ncol=1 if len(names) <= 11 else 2)
    return fig


def _num(value: Any, unit: str = "gy") -> str:
    return _fmt_number(value, unit)


def _signed(value: Any) -> str:
    if value is None:
        return "\u2014"
    return f"{float(value):+.1f}"


def _rel(value: Any) -> str:
    if value is None:
        return "\u2014"
    return f"{100.0 * float(value):+.1f} %"


def _voi_table(comparison: Comparison) -> str:
    if not comparison.vois:
        return "<p>No VOIs.</p>"
    head = ("<tr><th class='name'>VOI</th><th>volume mL</th><th class='name'>metric</th><th>predicted</th>"
            "<th>delivered</th><th>delivered \u2212 predicted</th><th>relative</th></tr>")
    body = []
    for name, v in comparison.vois.items():
        for i, (key, label, unit) in enumerate(_ROWS):
            lead = (f"<td class='name' rowspan='{len(_ROWS)}'>{html.escape(name)}</td>"
                    f"<td rowspan='{len(_ROWS)}'>{_num(v.volume_ml, 'ml')}</td>") if i == 0 else ""
            body.append(f"<tr>{lead}<td class='name'>{label} ({unit})</td><td>{_num(v.predicted.get(key))}</td>"
                        f"<td>{_num(v.delivered.get(key))}</td><td>{_signed(v.difference.get(key))}</td>"
                        f"<td>{_rel(v.relative_difference.get(key))}</td></tr>")
    return f"<div class='scroll'><table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table></div>"


def _isodose_table(comparison: Comparison) -> str:
    head = ("<tr><th>level %</th><th>predicted from Gy</th><th>delivered from Gy</th><th>predicted mL</th>"
            "<th>delivered mL</th><th>overlap mL</th><th>Dice</th></tr>")
    rows = "".join(
        f"<tr><td>{o.level_pct:g}</td><td>{_num(o.predicted_threshold_gy)}</td><td>{_num(o.delivered_threshold_gy)}</td>"
        f"<td>{_num(o.predicted_ml, 'ml')}</td><td>{_num(o.delivered_ml, 'ml')}</td><td>{_num(o.overlap_ml, 'ml')}</td>"
        f"<td>{'—' if o.dice is None else f'{o.dice:.3f}'}</td></tr>" for o in comparison.isodose)
    return f"<table><thead>{head}</thead><tbody>{rows}</tbody></table>"


def _gamma_html(comparison: Comparison) -> str:
    g = comparison.gamma
    if g is None:
        return "<p>Not computed (<code>--gamma DOSE_PCT DTA_MM</code>).</p>"
    rows = "".join(f"<tr><td class='name'>{html.escape(n)}</td><td>{_num(r, 'pct')}</td></tr>"
                   for n, r in g.voi_pass_rate_pct.items())
    per_voi = (f"<table><thead><tr><th class='name'>VOI</th><th>pass rate %</th></tr></thead><tbody>{rows}"
               "</tbody></table>") if rows else ""
    return (f"<p>Global gamma {g.dose_pct:g} % / {g.dta_mm:g} mm (dose criterion in % of the delivered maximum, "
            f"{g.normalisation_gy:.1f} Gy; voxels below {g.cutoff_pct:g} % of it not evaluated; search radius "
            f"{g.search_radius_mm:g} mm, step {g.step_mm:.3g} mm): <b>{g.pass_rate_pct:.1f} %</b> of "
            f"{g.n_evaluated} voxels pass (gamma \u2264 1). Reference: the delivered dose; evaluated: the predicted "
            f"dose, interpolated in its own grid.</p>{per_voi}")


def _info(comparison: Comparison) -> str:
    prov = comparison.provenance
    inputs = prov.get("inputs") if isinstance(prov.get("inputs"), Mapping) else {}
    items: list[tuple[str, Any]] = []
    for role in ("predicted", "delivered"):
        record = inputs.get(role) if isinstance(inputs, Mapping) else None
        if isinstance(record, Mapping):
            items.append((role, f"case {record.get('case_id')} \u2014 {record.get('folder', '')}"))
    d = comparison.delivered
    nx, ny, nz = d.size_xyz
    times = " \u00d7 "
    items.append(("common grid", f"the delivered dose's: {nx}{times}{ny}{times}{nz} voxels of "
                  f"{times.join(f'{s:.4g}' for s in d.spacing_mm)} mm"))
    items.append(("transform", "none (one patient frame)" if comparison.transform is None else
                  "rigid, planning frame \u2192 post-treatment frame: " + json.dumps(
                      [[round(v, 6) for v in row] for row in comparison.transform.tolist()])))
    fov = comparison.summary.get("field_of_view", {})
    items.append(("outside the predicted field of view",
                  f"{fov.get('fraction_of_grid', 0.0):.1%} of the grid, "
                  f"{fov.get('fraction_of_delivered_dose', 0.0):.1%} of the delivered dose"))
    integral = comparison.summary.get("dose_integral_gy_ml", {})
    if integral:
        items.append(("dose integral (Gy \u00b7 mL)",
                      f"predicted {integral.get('predicted_own_grid', 0.0):.4g} on its grid, "
                      f"{integral.get('predicted_common_grid', 0.0):.4g} on the common grid (interpolation does not "
                      f"conserve it); delivered {integral.get('delivered', 0.0):.4g}"))
    reference = {"own": "each map's own maximum", "delivered": "the delivered dose's maximum, for both",
                 "predicted": "the predicted dose's maximum, for both"}[comparison.isodose_reference]
    region = f", within VOI {comparison.isodose_region}" if comparison.isodose_region else ""
    items.append(("isodose levels", f"% of {reference}{region}"))
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in items)
    return f"<table class='info'>{cells}</table>"


def render_comparison_report(comparison: Comparison) -> str:
    """The self-contained HTML page of a comparison (written by :func:`voxeldose.io.write_comparison`).

    Raises
    ------
    InputError
        If ``comparison`` is not a :class:`~voxeldose.compare.Comparison`.

    Example
    -------
    >>> import numpy as np
    >>> from voxeldose import Image, compare_doses
    >>> dose = Image(np.linspace(1, 60, 27).reshape(3, 3, 3), (4.0, 4.0, 4.0), units="GY")
    >>> page = render_comparison_report(compare_doses(dose, dose, {"all": np.ones((3, 3, 3))}))
    >>> page.startswith("<!DOCTYPE html>") and "Dice" in page
    True
    """
    if not isinstance(comparison, Comparison):
        raise InputError(f"render_comparison_report needs a Comparison, got {type(comparison).__name__}")
    figure = ""
    if comparison.dvh_overlay is not None and comparison.vois:
        figure = (f"<figure><img alt='DVH overlay, predicted and delivered' src='data:image/png;base64,"
                  f"{_png(_overlay_figure(comparison))}'><figcaption>Percent of each VOI receiving at least the dose: "
                  "delivered solid, predicted dashed (the predicted dose on the delivered dose's grid).</figcaption>"
                  "</figure>")
    if comparison.caveats:
        items = "".join(f"<li>{html.escape(c)}</li>" for c in comparison.caveats)
        n = len(comparison.caveats)
        warn = f"<div class='box warn' role='alert'><h3>\u26a0 {n} warning{'s' if n > 1 else ''}</h3><ul>{items}</ul></div>"
    else:
        warn = "<div class='box ok'>\u2714 No warnings.</div>"
    title = "Predicted against delivered dose"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{_CSS}</style></head><body>
<h1>{title}</h1>
{_info(comparison)}
{warn}
<h2>DVH overlay</h2>
{figure or "<p>No VOIs.</p>"}
<h2>Per VOI</h2>
{_voi_table(comparison)}
<p class="meta">Differences are delivered \u2212 predicted (Gy; percentage points for V metrics); relative: over the
predicted value.</p>
<h2>Isodose overlap</h2>
{_isodose_table(comparison)}
<p class="meta">Region of a map at a level: its voxels at or above the level; Dice = 2|A \u2229 B| / (|A| + |B|).</p>
<h2>Gamma</h2>
{_gamma_html(comparison)}
<h2>Provenance</h2>
<details><summary>Conventions, options, inputs (JSON)</summary>
<pre>{html.escape(json.dumps(comparison.provenance, indent=2, default=str, ensure_ascii=False))}</pre></details>
<p class="meta">Written by voxeldose {html.escape(__version__)}. This page is self-contained: it loads nothing
from elsewhere.</p>
</body></html>
"""
