"""The job report as Markdown (``report.md``); ``report.html`` renders the same content
self-contained (:mod:`urbanfabric.outputs.report_html`).

Sections follow :data:`urbanfabric.outputs.report_content.SECTIONS`. Charts are PNGs written
beside the report (``report_files/<chart>.png``, :mod:`urbanfabric.outputs.charts`), the map
is ``map.png`` and the interactive map ``map.html``, all relative links, so the report reads
the same in ``outputs/`` and in an exported folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from urbanfabric.outputs.abstention import Abstention, abstention_md
from urbanfabric.outputs.charts import CHARTS
from urbanfabric.outputs.parameters import (
    ParameterRow,
    parameter_rows,
    spec_descriptions,
)
from urbanfabric.outputs.report_content import (
    MAP_HTML,
    MAP_PNG,
    NO_MAP_HTML,
    SECTIONS,
    Row,
    fallback_rows,
    has_interactive_map,
    headline,
    histogram_note,
    stock_rows,
    timing_rows,
)
from urbanfabric.outputs.summary import Summary

#: Folder beside the report holding its chart PNGs.
CHART_DIR = "report_files"


def chart_path(name: str) -> str:
    """Where a chart lives relative to the report."""
    return f"{CHART_DIR}/{name}.png"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def rows_md(rows: Iterable[Row], header: tuple[str, str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} | {header[2]} |", "|---|---:|---|"]
    lines += [f"| {_cell(r.what)} | {_cell(r.value)} | {_cell(r.note) or '–'} |" for r in rows]
    return "\n".join(lines) + "\n"


def parameters_md(rows: list[ParameterRow]) -> str:
    """One table, grouped: the group's name in bold on its first row."""
    lines = ["| group | parameter | value |", "|---|---|---|"]
    last = None
    for r in rows:
        group = f"**{r.group}**" if r.group != last else ""
        last = r.group
        lines.append(f"| {group} | {_cell(r.label)} | {_cell(r.value)} |")
    return "\n".join(lines) + "\n"


def _chart_md(name: str, charts: Iterable[str]) -> str:
    return f"![{CHARTS[name]}]({chart_path(name)})\n\n" if name in charts else ""


def _warnings_md(summary: Summary) -> str:
    """A "Warnings" section: bad input that did not stop the job, each naming its tile."""
    warnings = getattr(summary, "warnings", None) or []
    if not warnings:
        return ""
    return f"## {SECTIONS['warnings']}\n\n" + "\n".join(f"- {w}" for w in warnings) + "\n\n"


def _sanity_md(summary: Summary) -> str:
    """A "Sanity checks" section: implausible combinations (urbanfabric.outputs.sanity)."""
    checks = getattr(summary, "sanity", None) or []
    if not checks:
        return f"## {SECTIONS['sanity']}\n\nNo implausible combination found by the checks of " \
               "`urbanfabric.outputs.sanity`.\n\n"
    rows = "\n".join(f"| `{w['code']}` | {w['count']} | {w['message']} | "
                     f"{', '.join(f'`{e}`' for e in w.get('examples', [])) or '–'} |" for w in checks)
    return (f"## {SECTIONS['sanity']}\n\nImplausible combinations in the table (warnings: nothing was "
            "changed; rules and sources in `urbanfabric.outputs.sanity`).\n\n"
            "| check | buildings | what | e.g. |\n|---|---:|---|---|\n" + rows + "\n\n")


def _unknowns_md(summary: Summary, charts: Iterable[str]) -> str:
    """Kept vs unknown per class attribute and why, then the fallbacks and what each means."""
    rows = [Abstention(**a) for a in (getattr(summary, "abstention", None) or [])]
    fallbacks = fallback_rows(summary)
    text = f"## {SECTIONS['unknowns']}\n\n" + _chart_md("unknowns", charts)
    if rows:
        text += ("### Abstentions\n\nPer class attribute: buildings with a value, buildings left "
                 "`unknown` grouped by `*_unknown_reason`, and where the value came from.\n\n"
                 + abstention_md(rows) + "\n")
    if fallbacks:
        text += ("### Fallbacks\n\nWhat was assumed where an input was missing or odd (the `fallback` "
                 "column; a building may have several).\n\n" + rows_md(fallbacks, ("fallback", "buildings", "share — meaning"))
                 + "\n")
    elif summary.buildings:
        text += "No building needed a fallback.\n\n"
    return text


def report_md(summary: Summary, parameters: Mapping[str, Any], charts: Iterable[str] = ()) -> str:
    """The job report in Markdown.

    Args:
        summary: the job summary (merged from the partitions).
        parameters: the job's parameters (``job.json`` → ``parameters``).
        charts: names of the charts written beside the report (:data:`CHARTS` keys).
    """
    charts = list(charts)
    table = rows_md(headline(summary), ("", "value", "range / note"))
    stock = rows_md(stock_rows(summary), ("material", "stock", "Monte-Carlo range")) if summary.mass_kg else \
        "No material stock (no building had a usable footprint).\n"
    timings = rows_md(timing_rows(summary), ("stage", "time", "how")) if summary.stage_seconds else \
        "No stage times recorded.\n"
    mix = ", ".join(f"{k} {v:,}" for k, v in summary.roof_material_mix.items()) or "no roof-material column"
    params = parameters_md(parameter_rows(parameters, spec_descriptions())) if parameters else "No parameters recorded.\n"
    link = f"[{MAP_HTML}]({MAP_HTML})"
    interactive = f"Open {link} for the interactive map (pan, zoom, a popup per building; opens offline)." \
        if has_interactive_map(summary) else NO_MAP_HTML
    return f"""# urbanfabric job {summary.job_id}

## {SECTIONS['summary']}

{table}
Ranges: material stock and CO2e are the Monte-Carlo p05–p95 summed over buildings (the draws
share their levels across buildings); height and year are the spread over buildings. {interactive}

## {SECTIONS['map']}

![map: footprints by height and roof material]({MAP_PNG})

{interactive}

## {SECTIONS['stock']}

{_chart_md("stock", charts)}{stock}
## {SECTIONS['heights']}

{_chart_md("heights", charts)}{histogram_note(summary.height_histogram)}.

## {SECTIONS['ages']}

{_chart_md("ages", charts)}{histogram_note(summary.year_histogram)}.

## {SECTIONS['roofs']}

{_chart_md("roofs", charts)}{mix}.

{_unknowns_md(summary, charts)}{_warnings_md(summary)}{_sanity_md(summary)}## {SECTIONS['timings']}

{_chart_md("timings", charts)}{timings}
## {SECTIONS['parameters']}

{params}
## {SECTIONS['reading']}

{READING_MD}"""


READING_MD = """`buildings/` is a Hive-partitioned GeoParquet 1.1 dataset (`quadkey=<zoom-10 key>/part-*.parquet`,
Hilbert-sorted, `bbox` covering column); `buildings.parquet`, when present, is a single-file
convenience copy of the same rows. Every output is listed in `stac/collection.json`.

```python
import geopandas as gpd
buildings = gpd.read_parquet("buildings/")   # GeoParquet 1.1, EPSG:4326 (or "buildings.parquet")
```

```sql
-- DuckDB (spatial extension for geometry functions)
SELECT quadkey, roof_material, count(*), sum(mass_total_kg) / 1000 AS tonnes
FROM read_parquet('buildings/*/*.parquet', hive_partitioning = true,
                  hive_types = {'quadkey': VARCHAR})
GROUP BY ALL;
```
"""
