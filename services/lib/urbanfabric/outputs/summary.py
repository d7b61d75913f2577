"""What a finished job tells its user: counts, mean height, roof mix, material stock, carbon,
solar, time per stage, warnings, sanity warnings (:mod:`urbanfabric.outputs.sanity`) and the
kept / unknown count per class attribute (:mod:`urbanfabric.outputs.abstention`) — printed by
the CLI, written into ``job.json``."""

from __future__ import annotations

from dataclasses import dataclass, field

import geopandas as gpd
import pandas as pd

from urbanfabric.outputs.abstention import abstentions
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

    def text(self) -> str:
        lines = [f"job {self.job_id}: {self.buildings} buildings"]
        if self.mean_height_m is not None:
            lines.append(f"  mean height            {self.mean_height_m:8.1f} m")
        mix = ", ".join(f"{k} {v}" for k, v in sorted(self.roof_material_mix.items(), key=lambda kv: -kv[1]))
        lines.append(f"  roof material mix      {mix or 'n/a'}")
        lines.append("  material stock (t)")
        for mat, kg in sorted(self.mass_kg.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {mat:<20} {kg / 1000:12,.0f}")
        lines.append(f"  embodied CO2e          {self.embodied_co2e_kg / 1000:12,.0f} t")
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
    }


def _add_counts(total: dict[str, float], more: dict[str, float]) -> None:
    for k, v in more.items():
        total[k] = total.get(k, 0) + v


def merge_summary_parts(parts: list[dict]) -> dict:
    """One :func:`summary_parts` dict from many (a partition's files, or a job's partitions)."""
    out: dict = {"buildings": 0, "height_sum_m": 0.0, "height_count": 0, "roof_material_mix": {},
                 "mass_kg": {}, "embodied_co2e_kg": 0.0, "solar_kwh_per_year": 0.0, "solar_sources": {},
                 "sanity": [], "abstention": []}
    for p in parts:
        for k in ("buildings", "height_sum_m", "height_count", "embodied_co2e_kg", "solar_kwh_per_year"):
            out[k] += p[k]
        for k in ("roof_material_mix", "mass_kg", "solar_sources"):
            _add_counts(out[k], p[k])
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
    return Summary(
        job_id=job_id, buildings=n, mean_height_m=mean, roof_material_mix=mix, mass_kg=p["mass_kg"],
        embodied_co2e_kg=p["embodied_co2e_kg"], solar_kwh_per_year=p["solar_kwh_per_year"],
        stage_seconds=stage_seconds, outputs=outputs,
        sanity=[w.as_dict() for w in sanity_from_parts(p["sanity"], population)],
        abstention=p["abstention"],
        solar_sources=dict(sorted(p["solar_sources"].items(), key=lambda kv: -kv[1])),
    )


def summarize(job_id: str, buildings: gpd.GeoDataFrame, stage_seconds: dict[str, float],
              outputs: dict[str, str], population: float | None = None) -> Summary:
    """The summary of a job's buildings table; ``population`` (inhabitants of the area, when
    the job gives one) enables the per-capita stock check."""
    return summary_from_parts(job_id, [summary_parts(buildings)], stage_seconds, outputs, population)
