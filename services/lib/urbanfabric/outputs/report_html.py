"""``report.html``: the job report as one self-contained page.

The map and every chart are embedded as ``data:image/png;base64`` URIs and the style is
inline, so the page opens offline and can be mailed or archived alone; the only links are
relative ones to the interactive ``map.html`` and the outputs beside it. Each section is a
``<section id="…">`` with the stable ids of :data:`~urbanfabric.outputs.report_content.SECTIONS`
(screenshots and links rely on them).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

from urbanfabric.outputs import report_content as content
from urbanfabric.outputs.abstention import Abstention
from urbanfabric.outputs.charts import CHARTS
from urbanfabric.outputs.parameters import (
    ParameterRow,
    parameter_rows,
    spec_descriptions,
)
from urbanfabric.outputs.summary import Summary

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:1em 1.5em 3em}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:.4em 1.5em;font-size:13px;z-index:1}
nav a{margin-right:.9em;color:#1f5f99;text-decoration:none}
h1{font-size:1.6em;margin:.6em 0 .2em}h2{font-size:1.25em;margin:1.6em 0 .5em;border-bottom:1px solid #ddd}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0 1em;background:#fff}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f0f0f0}
img{max-width:100%;height:auto;border:1px solid #ddd;background:#fff}
.note{color:#555}.big td.n{font-size:1.1em;font-weight:600}
pre{background:#f3f3f3;padding:.6em;overflow:auto}code{font-size:12px}
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes | None, alt: str) -> str:
    return f'<p><img src="{data_uri(png)}" alt="{escape(alt)}"></p>' if png else ""


def _rows(rows: Iterable[content.Row], header: tuple[str, str, str], cls: str = "") -> str:
    body = "".join(f'<tr><td>{escape(r.what)}</td><td class="n">{escape(r.value)}</td>'
                   f'<td class="note">{escape(r.note)}</td></tr>' for r in rows)
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def _parameters(rows: list[ParameterRow]) -> str:
    out, group = [], None
    for r in rows:
        if r.group != group:
            group = r.group
            out.append(f'<tr><th colspan="2">{escape(group)}</th></tr>')
        out.append(f'<tr><td title="{escape(r.key)}">{escape(r.label)}</td><td>{escape(r.value)}</td></tr>')
    return '<table class="parameters">' + "".join(out) + "</table>"


def _abstentions(summary: Summary) -> str:
    rows = [Abstention(**a) for a in (summary.abstention or [])]
    if not rows:
        return ""
    body = "".join(
        f'<tr><td>{escape(r.attribute)}</td><td class="n">{r.kept:,}</td><td class="n">{r.unknown:,}</td>'
        f'<td>{escape("; ".join(f"{k}: {v:,}" for k, v in r.reasons.items()) or "–")}</td>'
        f'<td>{escape("; ".join(f"{k}: {v:,}" for k, v in r.sources.items()) or "–")}</td></tr>' for r in rows)
    return ("<h3>Abstentions</h3><p>Per class attribute: buildings with a value, buildings left "
            "<code>unknown</code> grouped by <code>*_unknown_reason</code>, and where the value came from.</p>"
            "<table><tr><th>attribute</th><th>kept</th><th>unknown</th><th>unknown by reason</th>"
            f"<th>kept by source</th></tr>{body}</table>")


def _sanity(summary: Summary) -> str:
    checks = summary.sanity or []
    if not checks:
        return "<p>No implausible combination found by the checks of <code>urbanfabric.outputs.sanity</code>.</p>"
    body = "".join(f'<tr><td><code>{escape(str(w["code"]))}</code></td><td class="n">{w["count"]:,}</td>'
                   f'<td>{escape(str(w["message"]))}</td>'
                   f'<td>{escape(", ".join(str(e) for e in w.get("examples", [])) or "–")}</td></tr>' for w in checks)
    return ("<p>Implausible combinations in the table (warnings: nothing was changed).</p>"
            f"<table><tr><th>check</th><th>buildings</th><th>what</th><th>e.g.</th></tr>{body}</table>")


def _section(sid: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{escape(content.SECTIONS[sid])}</h2>{body}</section>\n'


def report_html(summary: Summary, parameters: Mapping[str, Any], charts: Mapping[str, bytes],
                map_png: bytes | None) -> bytes:
    """The report page (UTF-8 bytes), every image inline.

    Args:
        charts: chart name → PNG (:func:`urbanfabric.outputs.charts.report_charts`).
        map_png: the static map, or ``None`` when there is none.
    """
    def chart(name: str) -> str:
        return _img(charts.get(name), CHARTS[name])

    map_link = f'<a href="{content.MAP_HTML}">{content.MAP_HTML}</a>'
    interactive = f"Open the interactive map {map_link} (pan, zoom, a popup per building; opens offline)." \
        if content.has_interactive_map(summary) else escape(content.NO_MAP_HTML)
    fallbacks = content.fallback_rows(summary)
    mix = ", ".join(f"{k} {v:,}" for k, v in summary.roof_material_mix.items()) or "no roof-material column"
    warnings = "".join(f"<li>{escape(w)}</li>" for w in summary.warnings or [])
    parts = [
        _section("summary", _rows(content.headline(summary), ("", "value", "range / note"), "big")
                 + "<p class=note>Material stock and CO2e ranges are the Monte-Carlo p05–p95 summed over "
                   "buildings (the draws share their levels across buildings); height and year ranges are "
                   f"the spread over buildings. {interactive}</p>"),
        _section("map", _img(map_png, "map: footprints by height and roof material")
                 + f"<p>{interactive}</p>"),
        _section("stock", chart("stock") + (_rows(content.stock_rows(summary), ("material", "stock", "Monte-Carlo range"))
                                             if summary.mass_kg else "<p>No material stock.</p>")),
        _section("heights", chart("heights") + f"<p class=note>{escape(content.histogram_note(summary.height_histogram))}.</p>"),
        _section("ages", chart("ages") + f"<p class=note>{escape(content.histogram_note(summary.year_histogram))}.</p>"),
        _section("roofs", chart("roofs") + f"<p class=note>{escape(mix)}.</p>"),
        _section("unknowns", chart("unknowns") + _abstentions(summary)
                 + ("<h3>Fallbacks</h3><p>What was assumed where an input was missing or odd (the "
                    "<code>fallback</code> column; a building may have several).</p>"
                    + _rows(fallbacks, ("fallback", "buildings", "share — meaning")) if fallbacks
                    else "<p>No building needed a fallback.</p>")),
        _section("warnings", f"<ul>{warnings}</ul>" if warnings else "<p>No warnings.</p>"),
        _section("sanity", _sanity(summary)),
        _section("timings", chart("timings") + (_rows(content.timing_rows(summary), ("stage", "time", "how"))
                                                if summary.stage_seconds else "<p>No stage times recorded.</p>")),
        _section("parameters", _parameters(parameter_rows(parameters, spec_descriptions())) if parameters
                 else "<p>No parameters recorded.</p>"),
        _section("reading", READING_HTML),
    ]
    nav = "".join(f'<a href="#{sid}">{escape(title)}</a>' for sid, title in content.SECTIONS.items())
    title = f"urbanfabric job {summary.job_id}"
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n"
            f'<body><nav id="contents">{nav}</nav><main><h1 id="title">{escape(title)}</h1>\n'
            + "".join(parts) + "</main></body></html>\n")
    return page.encode("utf-8")


READING_HTML = """<p><code>buildings/</code> is a Hive-partitioned GeoParquet 1.1 dataset
(<code>quadkey=&lt;zoom-10 key&gt;/part-*.parquet</code>, Hilbert-sorted, <code>bbox</code> covering column);
<code>buildings.parquet</code>, when present, is a single-file convenience copy of the same rows. Every output
is listed in <code>stac/collection.json</code>.</p>
<pre><code>import geopandas as gpd
buildings = gpd.read_parquet("buildings/")   # GeoParquet 1.1, EPSG:4326 (or "buildings.parquet")</code></pre>
<pre><code>SELECT quadkey, roof_material, count(*), sum(mass_total_kg) / 1000 AS tonnes
FROM read_parquet('buildings/*/*.parquet', hive_partitioning = true,
                  hive_types = {'quadkey': VARCHAR})
GROUP BY ALL;</code></pre>
"""
