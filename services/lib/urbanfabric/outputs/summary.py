"""What a finished job tells its user: counts, mean height, roof mix, material stock, carbon,
solar, time per stage, warnings, sanity warnings (:mod:`urbanfabric.outputs.sanity`) and the
kept / unknown count per class attribute (:mod:`urbanfabric.outputs.abstention`) — printed by
the CLI, written into ``job.json``."""

from __future__ import annotations

from dataclasses import dataclass, field

import geopandas as gpd
import pandas as pd

from urbanfabric.outputs.abstention import abstentions
from urbanfabric.outputs.histograms import HEIGHT_BINS, YEAR_BINS, histogram, merge_histograms
from urbanfabric.outputs.sanity import sanity_from_parts, sanity_parts

MASS_PREFIX = "mass_"


@dataclass
class Summary:
    """What a finished job tells its user."""

    job_id: str
    buildings: int
    mean_height_m: float | None
    roof_material_mix: dict[str, int]
    mass_kg: dict[str, float]
    embodied_co2e_kg: float
    solar_kwh_per_year: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    #: Bad input that did not stop the job (skipped tiles, scene fallbacks), naming tiles.
    warnings: list[str] = field(default_factory=list)
    #: Implausible combinations in the table (code, message, count, examples).
    sanity: list[dict] = field(default_factory=list)
    #: Per class attribute: kept, unknown, unknowns by reason, sources.
    abstention: list[dict] = field(default_factory=list)
    #: Buildings per PVOUT source (tmy, raster, constant, clear_sky_climate, gbm_constant).
    solar_sources: dict[str, int] = field(default_factory=dict)
    #: Monte-Carlo p05 / p95 per material, summed over buildings (kg). The draws' levels are
    #: shared by every building (common random numbers, stock/monte_carlo.py), so these sums
    #: are the range of the total under that design, not an independent-buildings range.
    mass_kg_p05: dict[str, float] = field(default_factory=dict)
    mass_kg_p95: dict[str, float] = field(default_factory=dict)
    mass_total_kg: float = 0.0
    mass_total_kg_range: tuple[float, float] | None = None
    embodied_co2e_kg_range: tuple[float, float] | None = None
    #: Buildings per height (1 m bins) and per construction year (1-year bins):
    #: :mod:`urbanfabric.outputs.histograms` dicts, the report's charts and p05–p95.
    height_histogram: dict | None = None
    year_histogram: dict | None = None
    #: Buildings per fallback token of the ``fallback`` column (what was assumed where an
    #: input was missing or odd), and the buildings with at least one.
    fallbacks: dict[str, int] = field(default_factory=dict)
    fallback_buildings: int = 0

    def text(self) -> str:
        lines = [f"job {self.job_id}: {self.buildings} buildings"]
        if self.mean_height_m is not None:
            lines.append(f"  mean height            {self.mean_height_m:8.1f} m")
        mix = ", ".join(f"{k} {v}" for k, v in sorted(self.roof_material_mix.items(), key=lambda kv: -kv[1]))
        lines.append(f"  roof material mix      {mix or 'n/a'}")
        lines.append("  material stock (t)")
        for mat, kg in sorted(self.mass_kg.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {mat:<20} {kg / 1000:12,.0f}" + _range_t(self.mass_kg_p05.get(mat), self.mass_kg_p95.get(mat)))
        co2e = self.embodied_co2e_kg_range or (None, None)
        lines.append(f"  embodied CO2e          {self.embodied_co2e_kg / 1000:12,.0f} t" + _range_t(*co2e))
        lines.append(f"  rooftop solar          {self.solar_kwh_per_year / 1e6:12,.1f} GWh/year")
        if self.solar_sources:
            lines.append("    PVOUT from " + ", ".join(f"{k} {v}" for k, v in self.solar_sources.items()))
        if self.abstention:
            lines.append("  kept / unknown per attribute")
            for a in self.abstention:
                lines.append(f"    {a['attribute']:<20} {a['kept']:6d} / {a['unknown']:<6d}")
        if self.sanity:
            lines.append(f"  sanity warnings ({len(self.sanity)})")
            lines.extend(f"    [{w['code']}] {w['count']} × {w['message']}" for w in self.sanity)
        lines.append("  time per stage (s, summed over tasks)")
        for stage, s in self.stage_seconds.items():
            lines.append(f"    {stage:<20} {s:8.1f}")
        for name, uri in self.outputs.items():
            lines.append(f"  {name:<22} {uri}")
        if self.warnings:
            lines.append(f"  warnings ({len(self.warnings)})")
            lines.extend(f"    {w}" for w in self.warnings[:10])
            if len(self.warnings) > 10:
                lines.append(f"    … {len(self.warnings) - 10} more in job.json")
        return "\n".join(lines)


def _range_t(low: float | None, high: float | None) -> str:
    """``  (p05–p95 a–b)`` in tonnes, or nothing when the table has no Monte-Carlo range."""
    if low is None or high is None:
        return ""
    return f"   (p05–p95 {low / 1000:,.0f}–{high / 1000:,.0f})"


def _column_sum(buildings: pd.DataFrame, column: str) -> float | None:
    return float(pd.to_numeric(buildings[column], errors="coerce").sum()) if column in buildings else None


def fallback_counts(buildings: pd.DataFrame) -> tuple[dict[str, int], int]:
    """Buildings per token of the ``;``-joined ``fallback`` column, and buildings with any."""
    if "fallback" not in buildings:
        return {}, 0
    text = buildings["fallback"].fillna("").astype(str).reset_index(drop=True)
    # A set per building: it counts once per token even if a token repeats in its cell.
    tokens = text.map(lambda cell: sorted({t.strip() for t in cell.split(";") if t.strip()})).explode().dropna()
    counts = tokens.value_counts() if len(tokens) else pd.Series(dtype=int)
    return {str(k): int(v) for k, v in counts.items()}, int((text.str.strip().str.len() > 0).sum())


def _numeric(buildings: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(buildings[column], errors="coerce") if column in buildings else pd.Series(dtype=float)


def summary_parts(buildings: pd.DataFrame) -> dict:
    """The counts and sums a job summary needs from one part of the buildings table (a
    partition), JSON-serialisable: written beside the partition as ``_summary.json`` and merged
    by :func:`summary_from_parts` without rereading any building."""
    mass_cols = [c for c in buildings.columns
                 if c.startswith(MASS_PREFIX) and c.endswith("_kg") and c != "mass_total_kg"]
    height = pd.to_numeric(buildings["height_m"], errors="coerce") if "height_m" in buildings \
        else pd.Series(dtype=float)
    mix = buildings["roof_material"].fillna("no imagery").value_counts().to_dict() \
        if "roof_material" in buildings else {}
    fallbacks, fallback_buildings = fallback_counts(buildings)
    ranges = {f"{base}{q}": _column_sum(buildings, f"{base}{q}")
              for base in ("mass_total_kg", "embodied_co2e_kg") for q in ("", "_p05", "_p95")}
    return {
        "buildings": len(buildings),
        "height_sum_m": float(height.sum()), "height_count": int(height.notna().sum()),
        "roof_material_mix": {str(k): int(v) for k, v in mix.items()},
        "mass_kg": {c[len(MASS_PREFIX):-3]: float(buildings[c].sum()) for c in mass_cols},
        "embodied_co2e_kg": float(buildings.get("embodied_co2e_kg", pd.Series(dtype=float)).sum()),
        "solar_kwh_per_year": float(buildings.get("solar_kwh_per_year", pd.Series(dtype=float)).sum()),
        "solar_sources": {str(k): int(v) for k, v in buildings["solar_source"].value_counts().items()}
        if "solar_source" in buildings else {},
        "sanity": sanity_parts(buildings),
        "abstention": [a.as_dict() for a in abstentions(buildings)],
        "mass_kg_p05": {c[len(MASS_PREFIX):-3]: float(buildings[c + "_p05"].sum())
                        for c in mass_cols if c + "_p05" in buildings},
        "mass_kg_p95": {c[len(MASS_PREFIX):-3]: float(buildings[c + "_p95"].sum())
                        for c in mass_cols if c + "_p95" in buildings},
        "ranges": {k: v for k, v in ranges.items() if v is not None},
        "height_histogram": histogram(height, *HEIGHT_BINS) if "height_m" in buildings else None,
        "year_histogram": histogram(_numeric(buildings, "year_built"), *YEAR_BINS)
        if "year_built" in buildings else None,
        "fallbacks": fallbacks, "fallback_buildings": fallback_buildings,
    }


def _add_counts(total: dict[str, float], more: dict[str, float]) -> None:
    for k, v in more.items():
        total[k] = total.get(k, 0) + v


def merge_summary_parts(parts: list[dict]) -> dict:
    """One :func:`summary_parts` dict from many (a partition's files, or a job's partitions)."""
    out: dict = {"buildings": 0, "height_sum_m": 0.0, "height_count": 0, "roof_material_mix": {},
                 "mass_kg": {}, "embodied_co2e_kg": 0.0, "solar_kwh_per_year": 0.0, "solar_sources": {},
                 "sanity": [], "abstention": [], "mass_kg_p05": {}, "mass_kg_p95": {}, "ranges": {},
                 "height_histogram": None, "year_histogram": None, "fallbacks": {}, "fallback_buildings": 0}
    for p in parts:
        for k in ("buildings", "height_sum_m", "height_count", "embodied_co2e_kg", "solar_kwh_per_year",
                  "fallback_buildings"):
            out[k] += p.get(k, 0)
        # .get: a partition summary written before a key existed still merges (as zero).
        for k in ("roof_material_mix", "mass_kg", "solar_sources", "mass_kg_p05", "mass_kg_p95", "ranges",
                  "fallbacks"):
            _add_counts(out[k], p.get(k) or {})
        for k in ("height_histogram", "year_histogram"):
            out[k] = merge_histograms([out[k], p.get(k)])
        sanity = p["sanity"]
        out["sanity"].extend(sanity if isinstance(sanity, list) else [sanity])
        out["abstention"] = merge_abstentions([out["abstention"], p["abstention"]])
    return out


def merge_abstentions(parts: list[list[dict]]) -> list[dict]:
    """Kept / unknown / reasons / sources summed per attribute, in first-seen order."""
    merged: dict[str, dict] = {}
    for rows in parts:
        for r in rows:
            m = merged.setdefault(r["attribute"], {"attribute": r["attribute"], "kept": 0, "unknown": 0,
                                                   "reasons": {}, "sources": {}})
            m["kept"] += r["kept"]
            m["unknown"] += r["unknown"]
            _add_counts(m["reasons"], r.get("reasons", {}))
            _add_counts(m["sources"], r.get("sources", {}))
    for m in merged.values():
        for k in ("reasons", "sources"):
            m[k] = dict(sorted(m[k].items(), key=lambda kv: -kv[1]))
    return list(merged.values())


def summary_from_parts(job_id: str, parts: list[dict], stage_seconds: dict[str, float],
                       outputs: dict[str, str], population: float | None = None) -> Summary:
    """The job summary from per-partition :func:`summary_parts` (the same numbers as
    :func:`summarize` over the whole table)."""
    p = merge_summary_parts(parts)
    n = p["buildings"]
    mean = (p["height_sum_m"] / p["height_count"] if p["height_count"] else float("nan")) if n else None
    mix = dict(sorted(p["roof_material_mix"].items(), key=lambda kv: -kv[1]))
    r = p["ranges"]

    def pair(base: str) -> tuple[float, float] | None:
        return (r[base + "_p05"], r[base + "_p95"]) if base + "_p05" in r and base + "_p95" in r else None

    return Summary(
        job_id=job_id, buildings=n, mean_height_m=mean, roof_material_mix=mix, mass_kg=p["mass_kg"],
        embodied_co2e_kg=p["embodied_co2e_kg"], solar_kwh_per_year=p["solar_kwh_per_year"],
        stage_seconds=stage_seconds, outputs=outputs,
        sanity=[w.as_dict() for w in sanity_from_parts(p["sanity"], population)],
        abstention=p["abstention"],
        solar_sources=dict(sorted(p["solar_sources"].items(), key=lambda kv: -kv[1])),
        mass_kg_p05=p["mass_kg_p05"], mass_kg_p95=p["mass_kg_p95"],
        mass_total_kg=r.get("mass_total_kg", sum(p["mass_kg"].values())),
        mass_total_kg_range=pair("mass_total_kg"), embodied_co2e_kg_range=pair("embodied_co2e_kg"),
        height_histogram=p["height_histogram"], year_histogram=p["year_histogram"],
        fallbacks=dict(sorted(p["fallbacks"].items(), key=lambda kv: -kv[1])),
        fallback_buildings=p["fallback_buildings"],
    )


def summarize(job_id: str, buildings: gpd.GeoDataFrame, stage_seconds: dict[str, float],
              outputs: dict[str, str], population: float | None = None) -> Summary:
    """The summary of a job's buildings table; ``population`` (inhabitants of the area, when
    the job gives one) enables the per-capita stock check."""
    return summary_from_parts(job_id, [summary_parts(buildings)], stage_seconds, outputs, population)
