"""The intensity service's messages ↔ the stock core's arrays (:func:`urbanfabric.stock.buildings.
building_stock`), so the RPC itself only validates, calls and answers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from urbanfabric.errors import InvalidInput
from urbanfabric.stock.structure import STRUCTURE_CLASSES
from urbanfabric.v1 import intensity_pb2 as pb


def _known(values: list[float]) -> np.ndarray:
    """proto3's zero means "not given": NaN."""
    arr = np.array(values, dtype=np.float64)
    return np.where(arr > 0, arr, np.nan)


def stock_arrays(buildings: Sequence[pb.StockInput]) -> dict[str, Any]:
    """``building_stock`` keyword arguments from the request's buildings.

    Raises:
        InvalidInput: a building without ``building_id`` or ``function`` (field ``buildings[i].…``).
    """
    for i, b in enumerate(buildings):
        for name in ("building_id", "function"):
            if not getattr(b, name):
                raise InvalidInput(f"buildings[{i}].{name}", "is required")
    lon = np.array([b.longitude for b in buildings], dtype=np.float64)
    lat = np.array([b.latitude for b in buildings], dtype=np.float64)
    nowhere = (lon == 0) & (lat == 0)  # proto3 default: location not given
    lon[nowhere], lat[nowhere] = np.nan, np.nan
    return {
        "footprint_area_m2": np.array([b.footprint_area_m2 for b in buildings], dtype=np.float64),
        "function": [b.function for b in buildings], "structure": [b.structure for b in buildings],
        "roof_material": [b.roof_material for b in buildings],
        "facade_material": [b.facade_material for b in buildings],
        "floors": _known([b.floors for b in buildings]), "height_m": _known([b.height_m for b in buildings]),
        "height_p05": _known([b.height_p05 for b in buildings]),
        "height_p95": _known([b.height_p95 for b in buildings]),
        "longitude": lon, "latitude": lat, "roof_shape": [b.roof_shape for b in buildings],
        "main_axis_deg": np.array([b.main_axis_deg if b.HasField("main_axis_deg") else np.nan
                                   for b in buildings], dtype=np.float64),
        "year_built": _known([b.year_built for b in buildings]),
        "residential_p": np.array([b.p_residential if b.HasField("p_residential") else np.nan
                                   for b in buildings], dtype=np.float64),
    }


def stock_messages(stock: pd.DataFrame, buildings: Sequence[pb.StockInput],
                   materials: Sequence[str]) -> list[pb.BuildingStock]:
    """One ``BuildingStock`` per row of ``building_stock``'s table (in request order)."""
    cols = {c: stock[c].to_numpy() for c in stock.columns}
    out = []
    for i, b in enumerate(buildings):
        def v(name: str, i: int = i) -> float:
            return float(cols[name][i])

        totals = {f"{base}{suffix}": v(f"{base}{suffix}") for base in ("mass_total_kg", "embodied_co2e_kg")
                  for suffix in ("", "_p05", "_p95", "_mc_p50")}
        out.append(pb.BuildingStock(
            building_id=b.building_id, gfa_m2=v("gfa_m2"), structure=str(cols["structure"][i]),
            function=str(cols["function"][i]), floors_used=int(cols["floors_used"][i]),
            masses=[pb.MaterialMass(material=m, kg=v(f"mass_{m}_kg"), kg_p05=v(f"mass_{m}_kg_p05"),
                                    kg_p95=v(f"mass_{m}_kg_p95"), kg_mc_p50=v(f"mass_{m}_kg_mc_p50"))
                    for m in materials],
            **totals,
            solar_kwh_per_year=v("solar_kwh_per_year"), pvout_kwh_per_kwp_day=v("pvout_kwh_per_kwp_day"),
            fallback=str(cols["fallback"][i]), solar_source=str(cols["solar_source"][i]),
            solar_kwp=v("solar_kwp"), structure_source=str(cols["structure_source"][i]),
            structure_probability=v("structure_probability"),
            p_structure=[] if math.isnan(v("p_structure_C")) else [v(f"p_structure_{c}") for c in STRUCTURE_CLASSES],
            valid=not math.isnan(v("mass_total_kg")),
        ))
    return out
