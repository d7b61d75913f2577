"""A tiny buildings table in a real place (Copenhagen, EPSG:4326) for the review and corrections tests."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import shapely

#: 10 × 10 buildings of 12 m × 12 m, 60 m apart, in UTM zone 33N (Copenhagen).
SIDE, STEP, ORIGIN = 12.0, 60.0, (347_000.0, 6_172_000.0)
UTM = "EPSG:32633"
MODELS = json.dumps({"roof": "roof-material:v4", "roof_shape": "roof-shape:v4", "facade": None,
                     "height": "height-xgb:v4"})


def squares(n: int = 10) -> gpd.GeoDataFrame:
    """Building ``b<row><col>`` at grid cell (row, col), in UTM; row 0 / col 0 is the south-west corner."""
    ids, geoms, rows, cols = [], [], [], []
    for r in range(n):
        for c in range(n):
            x, y = ORIGIN[0] + c * STEP, ORIGIN[1] + r * STEP
            ids.append(f"b{r}{c}")
            geoms.append(shapely.box(x, y, x + SIDE, y + SIDE))
            rows.append(r)
            cols.append(c)
    return gpd.GeoDataFrame({"building_id": ids, "row": rows, "col": cols}, geometry=geoms, crs=UTM)


def table(seed: int = 0) -> gpd.GeoDataFrame:
    """The buildings table's review columns: roof shape sure (p ≈ 0.7–0.95) except in the
    south-west corner (rows/cols < 4 without the corner's own far edge: p ≈ 0.34–0.4, the least
    certain); heights and years with bands; a footprint confidence."""
    rng = np.random.default_rng(seed)
    t = squares()
    corner = (t["row"] < 4) & (t["col"] < 4)
    p = np.where(corner, rng.uniform(0.34, 0.40, len(t)), rng.uniform(0.55, 0.95, len(t)))
    t["roof_shape"] = rng.choice(["flat", "gable", "hip"], len(t))
    t["roof_shape_probability"] = p
    t["roof_shape_ood_score"] = np.nan
    t["roof_material"] = "unknown"
    t["roof_material_probability"] = None
    t["height_m"] = rng.uniform(5, 30, len(t))
    width = np.where(corner, 40.0, rng.uniform(2, 10, len(t)))
    t["height_p05"] = t["height_m"] - width / 2
    t["height_p95"] = t["height_m"] + width / 2
    t["year_built"] = rng.uniform(1900, 2010, len(t))
    t["year_built_p05"] = t["year_built"] - 10
    t["year_built_p95"] = t["year_built"] + 10
    t["footprint_source"] = "segmented"
    t["footprint_confidence"] = rng.uniform(0.5, 0.99, len(t))
    t["tile_id"] = "WebMercatorQuad-16-35000-20000"
    t["model_versions"] = MODELS
    return t.to_crs("EPSG:4326")


def parts(frame: gpd.GeoDataFrame, pieces: int = 3):  # type: ignore[no-untyped-def]
    """The table as a reader of ``pieces`` part files (as a partitioned job is read)."""
    chunks = np.array_split(np.arange(len(frame)), pieces)
    return lambda: (frame.iloc[c].copy() for c in chunks)


def classes(name: str, version: str) -> dict:
    """Model configs for the tests (the shipped roof-shape classes)."""
    return {"roof-shape": {"classes": ["flat", "gable", "hip"]},
            "roof-material": {"classes": ["concrete_cement", "healthy_metal", "incomplete", "irregular_metal",
                                          "other"]}}[name]
