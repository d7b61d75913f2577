"""The demo's buildings costed with the roof lookup, structure-type:v1 and v2, offline.

Usage (from the repository root)::

    PYTHONPATH=.:services/lib .venv/bin/python bench/structure_demo.py /work/before18/buildings.parquet \
        [--region ASIA_CHN] [--json bench/results/structure_demo.json] [--raw-intensity-ranges]

Runs :func:`urbanfabric.stock.buildings.building_stock` (the intensity service's core, no
stack) over one buildings table's rows with everything but the structure held fixed — the
table's footprint area, RASMI function, floors, height band, year, roof and façade classes,
and P(residential) where the function model's top class is residential (its probability;
otherwise unknown) — three times: the roof/façade lookup (``structure_model=None``, what the
demo used before issue 18), structure-type:v1 and v2. Prints per variant the structure mix
(most likely class), the mean probabilities, the intensities used by the point estimate,
and the stock with its range (sum of per-building p05 / p95) per m² of GFA; then one
building's range with the structure fixed, sampled from v1 / v2, or uniform (``one_building``).
``--raw-intensity-ranges`` uses RASMI's raw ranges (``StockOptions(calibrated=False)``, what
``bench/results/structure_demo.json`` was made with, before the stock calibration of issue 18
item 4); without it the shipped calibration widens them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from urbanfabric.io.model_repository import MODELS_DIR
from urbanfabric.stock.buildings import building_stock
from urbanfabric.stock.derived_intensity import KeyMapping
from urbanfabric.stock.intensity import default_table
from urbanfabric.stock.monte_carlo import StockOptions
from urbanfabric.stock.solar import SolarOptions
from urbanfabric.stock.structure import STRUCTURE_CLASSES, StructureModel


def inputs(frame: pd.DataFrame) -> dict:
    """building_stock keyword arguments from a buildings table (unknown → NaN / "")."""
    n = len(frame)
    text = lambda c: [("" if v in (None, "unknown") or v != v else str(v)) for v in frame[c]]  # noqa: E731
    res = frame["building_function"].astype(str).eq("residential").to_numpy()
    return {
        "footprint_area_m2": frame["footprint_area_m2"].to_numpy(float), "function": list(frame["function"]),
        "structure": [""] * n, "roof_material": text("roof_material"), "facade_material": text("facade_material"),
        "floors": frame["floors"].to_numpy(float), "height_m": frame["height_m"].to_numpy(float),
        "height_p05": frame["height_p05"].to_numpy(float), "height_p95": frame["height_p95"].to_numpy(float),
        "longitude": np.full(n, np.nan), "latitude": np.full(n, np.nan),
        "year_built": frame["year_built"].to_numpy(float),
        "residential_p": np.where(res, frame["building_function_probability"].to_numpy(float), np.nan),
    }


def summary(stock: pd.DataFrame) -> dict:
    """Structure mix, intensities used, stock and its range per m² of GFA."""
    gfa = float(stock["gfa_m2"].sum())
    key = stock["function"] + "/" + stock["structure"]
    mi = (stock["mass_total_kg"] / stock["gfa_m2"]).round(0)
    used = {k: {"buildings": int(v), "kg_per_m2": sorted({float(x) for x in mi[key == k]})}
            for k, v in key.value_counts().items()}
    width = (stock["mass_total_kg_p95"] - stock["mass_total_kg_p05"]) / stock["mass_total_kg"]
    out = {"structure_mix": dict(Counter(stock["structure"])), "intensities_used": used, "gfa_m2": gfa,
           "per_building_range_over_estimate_median": float(width.median())}
    if "p_structure_C" in stock and stock["p_structure_C"].notna().any():
        out["mean_p_structure"] = {c: round(float(stock[f"p_structure_{c}"].mean()), 3) for c in STRUCTURE_CLASSES}
        out["structure_probability_median"] = float(stock["structure_probability"].median())
    for base in ("mass_total_kg", "embodied_co2e_kg", "mass_concrete_kg", "mass_brick_kg", "mass_steel_kg",
                 "mass_wood_kg"):
        out[base] = {s or "estimate": float(stock[base + s].sum()) for s in ("", "_p05", "_mc_p50", "_p95")}
    out["kg_per_m2_gfa"] = {k: v / gfa for k, v in out["mass_total_kg"].items()}
    return out


def one_building(table, models: dict[str, StructureModel], region: str,
                 options: StockOptions | None = None) -> list[dict]:
    """One NR building (1,000 m² footprint, built 1978) at 4 and 9 floors: total and CO2e
    kg/m² of GFA (p05 / p95) with the structure fixed to C, sampled from v1 / v2, or uniform."""
    rows = []
    for floors in (4.0, 9.0):
        fl = np.array([floors])
        variants = {"fixed C": None, "uniform": np.full((1, 4), 0.25)}
        variants.update({k: m.predict_proba(fl, ["NR"], [1978.0], [region]) for k, m in models.items()})
        for name, prob in variants.items():
            r = table.simulate_stock(np.array([1000.0]), ["NR"], ["C"], region, floors=fl, structure_p=prob,
                                     options=options).iloc[0]
            rows.append({"floors": floors, "structure": name,
                         "p": None if prob is None else [round(float(x), 3) for x in prob[0]],
                         "total_kg_m2": [round(float(r[f"mass_total_kg{s}"] / r["gfa_m2"])) for s in ("_p05", "", "_p95")],
                         "range_over_estimate": round(float((r["mass_total_kg_p95"] - r["mass_total_kg_p05"])
                                                            / r["mass_total_kg"]), 2),
                         "co2e_kg_m2": [round(float(r[f"embodied_co2e_kg{s}"] / r["gfa_m2"])) for s in ("_p05", "_p95")]})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", type=Path)
    p.add_argument("--region", default="ASIA_CHN")
    p.add_argument("--json", type=Path)
    p.add_argument("--raw-intensity-ranges", action="store_true", help="StockOptions(calibrated=False)")
    args = p.parse_args(argv)
    options = StockOptions(calibrated=not args.raw_intensity_ranges)
    frame = pd.read_parquet(args.table)
    table, kw = default_table(), inputs(frame)
    results: dict = {}
    models = {v: StructureModel.load(MODELS_DIR / f"structure_type/{v}") for v in ("v1", "v2")}
    for name, model in (("roof_lookup", None), ("structure-type:v1", models["v1"]),
                        ("structure-type:v2", models["v2"])):
        stock = building_stock(table, KeyMapping(), args.region, options=options, solar_options=SolarOptions(),
                               pvout=None, structure_model=model, **kw)
        results[name] = summary(stock)
    results["one_building"] = one_building(table, models, args.region, options)
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
