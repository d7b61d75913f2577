"""Per-job sanity checks (urbanfabric.outputs.sanity) and the abstention table
(urbanfabric.outputs.abstention): each check fires on a crafted table and stays silent on a
plausible one; the report renders both sections."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from urbanfabric.outputs import report
from urbanfabric.outputs.abstention import abstentions
from urbanfabric.outputs.sanity import sanity_checks
from urbanfabric.outputs.summary import Summary, summarize


def plausible(n: int = 30) -> pd.DataFrame:
    """A district of 30 plausible buildings: 4-storey RC housing and 2-storey timber houses."""
    rows = []
    for i in range(n):
        timber = i % 3 == 0
        floors = 2 if timber else 4
        area = 120.0 if timber else 400.0
        gfa = floors * area
        rows.append({"building_id": f"b{i}", "footprint_area_m2": area, "floors": floors,
                     "height_m": floors * 3.0, "structure": "T" if timber else "C",
                     "gfa_m2": gfa, "mass_total_kg": gfa * (450.0 if timber else 1300.0),
                     "function": "RS" if timber else "RM", "building_function": "residential",
                     "roof_material": "concrete_cement", "roof_shape": "flat",
                     "facade_material": "brick", "age_class": "1991-2000"})
    return pd.DataFrame(rows)


def codes(table: pd.DataFrame, **kw) -> set[str]:
    return {w.code for w in sanity_checks(table, **kw)}


def test_a_plausible_district_raises_nothing() -> None:
    assert codes(plausible()) == set()
    assert codes(plausible(), population=300) == set()  # ≈ 190 t per inhabitant
    assert codes(plausible().iloc[:0]) == set()


@pytest.mark.parametrize("edit,code", [
    ({"structure": "T", "floors": 9, "height_m": 27.0}, "timber_too_tall"),
    ({"structure": "T", "floors": 5, "height_m": 60.0}, "timber_too_tall"),
    ({"structure": "M", "floors": 15, "height_m": 45.0}, "masonry_too_tall"),
    ({"floors": 4, "height_m": 40.0}, "storey_height_implausible"),
    ({"footprint_area_m2": 25.0, "floors": 30, "height_m": 90.0}, "too_slender"),
    ({"mass_total_kg": 10.0}, "mass_per_gfa_outside_range"),
])
def test_each_building_check_fires_on_a_crafted_row(edit: dict, code: str) -> None:
    t = plausible()
    for k, v in edit.items():
        t.loc[4, k] = v
    warnings = {w.code: w for w in sanity_checks(t)}
    assert code in warnings
    assert warnings[code].count == 1 and warnings[code].examples == ["b4"]


def test_district_checks_fire() -> None:
    t = plausible()
    t["building_function"] = "commercial"
    t["function"] = "NR"
    assert "no_housing" in codes(t)
    assert "no_housing" not in codes(t.iloc[:10])  # too few buildings to judge
    units = plausible()
    units["mass_total_kg"] = units["gfa_m2"] * 3.0  # t/m² read as kg/m²
    assert {"district_mass_per_gfa", "mass_per_gfa_outside_range"} <= codes(units)
    assert "stock_per_capita_outside_range" in codes(plausible(), population=3)
    assert "stock_per_capita_outside_range" in codes(plausible(), population=10_000_000)
    unknown = plausible()
    unknown.loc[:20, "roof_material"] = "unknown"
    w = [w for w in sanity_checks(unknown) if w.code == "many_unknown"]
    assert len(w) == 1 and w[0].count == 21 and "roof material" in w[0].message


def test_abstention_counts_by_reason_with_and_without_the_new_columns() -> None:
    t = plausible(10)
    t.loc[:3, "roof_material"] = "unknown"
    t.loc[:1, "roof_material_unknown_reason"] = "out_of_domain"
    t.loc[2:3, "roof_material_unknown_reason"] = "no_imagery"
    t.loc[0, "age_class"] = None
    rows = {a.attribute: a for a in abstentions(t)}
    assert (rows["roof material"].kept, rows["roof material"].unknown) == (6, 4)
    assert rows["roof material"].reasons == {"out_of_domain": 2, "no_imagery": 2}
    assert rows["age class"].reasons == {"no reason recorded": 1}
    assert "function" in rows and rows["structure"].sources == {}
    t["structure_source"] = ["model"] * 7 + ["default"] * 3
    assert {a.attribute: a for a in abstentions(t)}["structure"].sources == {"model": 7, "default": 3}
    t["building_function_unknown_reason"] = None
    t.loc[5, ["building_function", "building_function_unknown_reason"]] = ["unknown", "out_of_domain"]
    assert {a.attribute: a for a in abstentions(t)}["function"].reasons == {"out_of_domain": 1}


def test_report_and_summary_carry_sanity_and_abstention() -> None:
    import geopandas as gpd
    from shapely.geometry import Point

    t = plausible()
    t.loc[4, ["structure", "floors", "height_m"]] = ["T", 20, 60.0]
    t["solar_kwh_per_year"] = 1000.0
    t["solar_source"] = "clear_sky_climate"
    gdf = gpd.GeoDataFrame(t, geometry=[Point(118.1, 24.5)] * len(t), crs=4326)
    s = summarize("j", gdf, {}, {})
    assert [w["code"] for w in s.sanity] == ["timber_too_tall"]
    assert s.solar_sources == {"clear_sky_climate": 30}
    assert {a["attribute"] for a in s.abstention} >= {"roof material", "function", "structure"}
    md = report.report_md(s, {})
    assert "## Sanity checks" in md and "`timber_too_tall`" in md and "`b4`" in md
    assert "## Abstentions" in md and "| roof material | 30 | 0 |" in md
    assert "[timber_too_tall] 1 ×" in s.text()
    # A summary from job.json (a dict) renders the same; an old one without the fields too.
    again = Summary(**s.__dict__)
    assert report.report_md(again, {}) == md
    old = Summary("j", 0, None, {}, {}, 0.0)
    assert "No implausible combination" in report.report_md(old, {})
    assert np.isfinite(s.solar_kwh_per_year)
