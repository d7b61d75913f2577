"""What the job report says, as rows and text, once for both renderings (``report.md`` and the
self-contained ``report.html``): the headline numbers with units and p05–p95 ranges, the stock
per material, the fallbacks with their meaning, the time per stage, and the sections' stable
ids (the HTML's anchors, which screenshots and links rely on)."""

from __future__ import annotations

from dataclasses import dataclass

from urbanfabric.outputs.histograms import quantile, total
from urbanfabric.outputs.summary import Summary
from urbanfabric.stock.intensity import FALLBACKS
from urbanfabric.stock.solar import SOLAR_FALLBACKS

#: Section id → heading, in report order. The ids are stable: report.html's anchors.
SECTIONS = {
    "summary": "Summary",
    "map": "Map",
    "stock": "Material stock",
    "heights": "Heights",
    "ages": "Construction years",
    "roofs": "Roof materials",
    "unknowns": "Unknowns and fallbacks",
    "warnings": "Warnings",
    "sanity": "Sanity checks",
    "timings": "Time per stage",
    "parameters": "Parameters",
    "reading": "Reading the outputs",
}
#: Fallback tokens written by the stock stage besides those of the intensity table and solar.
OTHER_FALLBACKS = {
    "floors_invalid": "more floors than any building has: floors treated as unknown",
    "location_invalid": "longitude / latitude outside the globe: location treated as unknown",
}
#: Where the interactive map lives, beside the report (outputs/ and an exported folder alike).
MAP_HTML = "map.html"
MAP_PNG = "map.png"


@dataclass(frozen=True)
class Row:
    """A labelled value: ``what``, the value as text, and a note (range, source) or ``""``."""

    what: str
    value: str
    note: str = ""


def has_interactive_map(summary: Summary) -> bool:
    """Whether the job wrote ``map.html`` (not above the webmap's building limit; a summary
    without its outputs listed is taken to have one)."""
    return "map_html" in summary.outputs or not summary.outputs


NO_MAP_HTML = ("No interactive map for this job: more buildings than one self-contained page holds "
               "(see Warnings); open the table in QGIS or DuckDB instead.")


def tonnes(kg: float) -> str:
    return f"{kg / 1000:,.0f} t"


def _range_t(pair: tuple[float, float] | list | None) -> str:
    if not pair:
        return ""
    low, high = pair
    return f"p05–p95 {low / 1000:,.0f}–{high / 1000:,.0f} t"


def _spread(h: dict | None, unit: str, fmt: str = "{:,.1f}") -> str:
    """``p05–p95 a–b unit`` of a histogram (the spread over buildings)."""
    lo, hi = quantile(h, 0.05), quantile(h, 0.95)
    if lo is None or hi is None:
        return ""
    return f"buildings' p05–p95 {fmt.format(lo)}–{fmt.format(hi)}{unit}"


def headline(summary: Summary) -> list[Row]:
    """The numbers a reader looks for first, each with its unit and range."""
    rows = [Row("Buildings", f"{summary.buildings:,}")]
    if summary.mean_height_m is not None and summary.mean_height_m == summary.mean_height_m:
        rows.append(Row("Mean height", f"{summary.mean_height_m:,.1f} m", _spread(summary.height_histogram, " m")))
    median_year = quantile(summary.year_histogram, 0.5)
    if median_year is not None:
        rows.append(Row("Median construction year", f"{median_year:.0f}",
                        _spread(summary.year_histogram, "", "{:.0f}")))
    if summary.mass_kg:
        total_kg = summary.mass_total_kg or sum(summary.mass_kg.values())
        rows.append(Row("Material stock", tonnes(total_kg), _range_t(summary.mass_total_kg_range)))
    rows.append(Row("Embodied CO2e", f"{summary.embodied_co2e_kg / 1000:,.0f} t CO2e",
                    _range_t(summary.embodied_co2e_kg_range).replace(" t", " t CO2e") if
                    summary.embodied_co2e_kg_range else ""))
    sources = ", ".join(f"{k} {v:,}" for k, v in summary.solar_sources.items())
    rows.append(Row("Rooftop solar potential", f"{summary.solar_kwh_per_year / 1e6:,.2f} GWh/year",
                    f"PVOUT from {sources}" if sources else ""))
    if summary.buildings:
        rows.append(Row("Buildings with a fallback", f"{summary.fallback_buildings:,}",
                        f"{summary.fallback_buildings / summary.buildings:.0%} of buildings"))
    return rows


def stock_rows(summary: Summary) -> list[Row]:
    """Tonnes per material (largest first) with the Monte-Carlo p05–p95."""
    out = []
    for mat, kg in sorted(summary.mass_kg.items(), key=lambda kv: -kv[1]):
        low, high = summary.mass_kg_p05.get(mat), summary.mass_kg_p95.get(mat)
        out.append(Row(mat, tonnes(kg), _range_t((low, high)) if low is not None and high is not None else ""))
    return out


def fallback_meaning(token: str) -> str:
    """What a ``fallback`` token means (the stock and solar stages' own descriptions)."""
    return {**FALLBACKS, **SOLAR_FALLBACKS, **OTHER_FALLBACKS}.get(token, "")


def fallback_rows(summary: Summary) -> list[Row]:
    """Buildings per fallback token, its share and meaning."""
    n = max(1, summary.buildings)
    return [Row(token, f"{count:,}", f"{count / n:.0%} — {fallback_meaning(token) or 'see the fallback column'}")
            for token, count in summary.fallbacks.items()]


def timing_rows(summary: Summary) -> list[Row]:
    return [Row(stage, f"{s:,.1f} s", "elapsed" if "(wall)" in stage else "summed over tasks")
            for stage, s in summary.stage_seconds.items()]


def histogram_note(h: dict | None) -> str:
    """How many buildings a histogram counts and how many had no value."""
    if not h:
        return "the table has no such column"
    missing = h.get("missing", 0)
    return f"{total(h):,} buildings with a value" + (f", {missing:,} without" if missing else "")
