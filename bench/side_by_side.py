"""Two buildings tables side by side, as a researcher would compare a before and an after run:
class mixes with their abstentions, the structure mix and the intensity each building was
costed with, the stock with its ranges (totals and per m² of GFA), and rooftop solar.

    python bench/side_by_side.py BEFORE.parquet AFTER.parquet [--markdown]

Columns one table lacks are shown as "—", so a table from before a column existed still
compares. Totals of a range are sums of the per-building p05/p95 (a conservative band: the
buildings' errors are not independent), stated as such.
"""

from __future__ import annotations

import argparse
import sys

import geopandas as gpd
import numpy as np
import pandas as pd

#: Class attributes and the column that says why one is unknown (if the table has it).
CLASSES = {
    "roof_material": "roof_material_unknown_reason",
    "roof_shape": "roof_shape_unknown_reason",
    "facade_material": "facade_material_unknown_reason",
    "building_function": "building_function_unknown_reason",
    "age_class": "age_class_unknown_reason",
    "structure": "structure_source",
}
MATERIALS = ("concrete", "brick", "steel", "wood", "total")


def _mix(frame: pd.DataFrame, column: str) -> str:
    if column not in frame:
        return "—"
    values = frame[column].astype(object).where(frame[column].notna(), "").replace("", "unknown")
    counts = values.value_counts()
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _reasons(frame: pd.DataFrame, column: str) -> str:
    if column not in frame:
        return "—"
    values = frame[column].astype(object).where(frame[column].notna(), "")
    counts = values[values != ""].value_counts()
    return ", ".join(f"{k[:60]} {v}" for k, v in counts.items()) or "none"


def rows(frame: pd.DataFrame) -> dict[str, str]:
    """One text cell per quantity of a table."""
    out: dict[str, str] = {"buildings": str(len(frame))}
    for column, reason in CLASSES.items():
        out[column] = _mix(frame, column)
        out[f"{column}: why unknown / source"] = _reasons(frame, reason)
    gfa = frame["gfa_m2"].sum() if "gfa_m2" in frame else np.nan
    out["GFA (m²)"] = f"{gfa:,.0f}"
    if "height_m" in frame:
        h = frame["height_m"]
        out["height median (p05–p95 band width median)"] = (
            f"{h.median():.1f} m ({(frame['height_p95'] - frame['height_p05']).median():.1f} m)")
    if {"structure", "function"} <= set(frame.columns):
        keys = frame["function"].astype(str) + "/" + frame["structure"].astype(str)
        mi = (frame["mass_total_kg"] / frame["gfa_m2"]).round(0)
        by = pd.DataFrame({"key": keys, "mi": mi}).groupby("key")["mi"].agg(["count", "median", "nunique"])
        out["intensity used (function/structure: n, median kg/m², distinct values)"] = "; ".join(
            f"{k}: {int(r['count'])}, {r['median']:,.0f}, {int(r['nunique'])}" for k, r in by.iterrows())
        out["distinct total intensities"] = str(int(mi.nunique()))
    for m in MATERIALS:
        col = f"mass_{m}_kg"
        if col in frame:
            t, lo, hi = (frame[c].sum() / 1e6 for c in (col, f"{col}_p05", f"{col}_p95"))
            out[f"{m} (kt, sum of p05–p95)"] = f"{t:,.1f} ({lo:,.1f}–{hi:,.1f})"
    if "mass_total_kg" in frame and gfa > 0:
        out["stock per m² GFA (kg/m², p05–p95)"] = "{:,.0f} ({:,.0f}–{:,.0f})".format(
            *(frame[c].sum() / gfa for c in ("mass_total_kg", "mass_total_kg_p05", "mass_total_kg_p95")))
        rel = (frame["mass_total_kg_p95"] - frame["mass_total_kg_p05"]) / frame["mass_total_kg"]
        out["per-building total range / estimate (median)"] = f"{rel.median():.2f}"
    if "embodied_co2e_kg" in frame:
        out["CO2e (kt, sum of p05–p95)"] = "{:,.1f} ({:,.1f}–{:,.1f})".format(
            *(frame[c].sum() / 1e6 for c in ("embodied_co2e_kg", "embodied_co2e_kg_p05", "embodied_co2e_kg_p95")))
    if "solar_kwh_per_year" in frame:
        s = frame["solar_kwh_per_year"] / frame["footprint_area_m2"]
        out["solar (MWh/yr total; kWh/m² footprint p05/median/p95)"] = "{:,.0f}; {:.0f}/{:.0f}/{:.0f}".format(
            frame["solar_kwh_per_year"].sum() / 1e3, *np.nanpercentile(s, [5, 50, 95]))
        out["solar source"] = _mix(frame, "solar_source")
    return out


def side_by_side(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    a, b = rows(before), rows(after)
    keys = list(dict.fromkeys([*a, *b]))
    return pd.DataFrame({"before": [a.get(k, "—") for k in keys], "after": [b.get(k, "—") for k in keys]},
                        index=keys)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)
    table = side_by_side(gpd.read_parquet(args.before), gpd.read_parquet(args.after))
    if args.markdown:
        print("| | before | after |\n|---|---|---|")
        for k, r in table.iterrows():
            print(f"| {k} | {r['before']} | {r['after']} |")
    else:
        with pd.option_context("display.max_colwidth", None, "display.width", 250):
            print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
