"""What a finished job tells its user: counts, mean height, roof mix, material stock, carbon,
solar, time per stage, warnings, sanity warnings (:mod:`urbanfabric.outputs.sanity`) and the
kept / unknown count per class attribute (:mod:`urbanfabric.outputs.abstention`) — printed by
the CLI, written into ``job.json``."""

from __future__ import annotations

from dataclasses import dataclass, field

import geopandas as gpd
import pandas as pd

from urbanfabric.outputs.abstention import abstentions
from urbanfabric.outputs.sanity import sanity_checks

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


def summarize(job_id: str, buildings: gpd.GeoDataFrame, stage_seconds: dict[str, float],
              outputs: dict[str, str], population: float | None = None) -> Summary:
    """The summary of a job's buildings table; ``population`` (inhabitants of the area, when
    the job gives one) enables the per-capita stock check."""
    mass_cols = [c for c in buildings.columns
                 if c.startswith(MASS_PREFIX) and c.endswith("_kg") and c != "mass_total_kg"]
    mix = buildings["roof_material"].fillna("no imagery").value_counts().to_dict() \
        if "roof_material" in buildings else {}
    return Summary(
        job_id=job_id,
        buildings=len(buildings),
        mean_height_m=float(buildings["height_m"].mean()) if len(buildings) else None,
        roof_material_mix={str(k): int(v) for k, v in mix.items()},
        mass_kg={c[len(MASS_PREFIX):-3]: float(buildings[c].sum()) for c in mass_cols},
        embodied_co2e_kg=float(buildings.get("embodied_co2e_kg", pd.Series(dtype=float)).sum()),
        solar_kwh_per_year=float(buildings.get("solar_kwh_per_year", pd.Series(dtype=float)).sum()),
        stage_seconds=stage_seconds,
        outputs=outputs,
        sanity=[w.as_dict() for w in sanity_checks(buildings, population)],
        abstention=[a.as_dict() for a in abstentions(buildings)],
        solar_sources={str(k): int(v) for k, v in buildings["solar_source"].value_counts().items()}
        if "solar_source" in buildings else {},
    )
