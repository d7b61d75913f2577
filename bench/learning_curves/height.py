"""Learning curve of ``height`` (issue 21, item 5): European cities the served model never saw.

The served height model (``height-xgb:v4``, the job spec's default) trained on Xiamen only
(``models/height_xgb/v4/MODEL_CARD.md``): 2,785 buildings of 38 blocks, with image evidence from
Xiamen's z18 tiles. The labelled European buildings in ``../shared/data/heights`` are the new
place: Helsinki OSM (height tag, else ``building:levels`` × 3 m, as ``models.height_xgb.train``
reads them) and the CityJSON samples (Delft, Zürich, Rotterdam, Den Haag, 3D BAG; measured
heights after ``clean_heights``).

Pool and test are separated by place: every file's buildings fall in ``CELL_M`` squares (its
local UTM), half of each file's cells (seed 0) are the test, the others the pool — whole
neighbourhoods, never random rows. Features as the attributes stage computes them
(:func:`urbanfabric.attributes.features.footprint_features`, each file's footprints the context
of one another, the file's extent the area frame); there is no imagery for these cities, so the
image inputs are NaN (the stage's "no imagery given": v4's morphology-only path and band).

The pool holds fewer than 250 labels: the curve stops where the held labels end (``k`` is then
the number held, the same rows for both arms).

    PYTHONPATH=.:services/lib OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python -m bench.learning_curves.height
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from bench.learning_curves import core
from urbanfabric.attributes.features import footprint_features
from urbanfabric.attributes.height import HeightModel
from urbanfabric.attributes.image_evidence import IMAGE_FEATURE_NAMES
from urbanfabric.io.model_repository import SHARED_DATA, fine_tune_module, model_dir
from urbanfabric.outputs.learning import LabelledRows

PARENT = ("height-xgb", "v4")
#: Side of the squares that separate pool from test (a few streets).
CELL_M = 200.0


def cities() -> list[tuple[str, gpd.GeoDataFrame, np.ndarray]]:
    """``(name, all footprints of the file, heights in m or NaN)`` per labelled European file."""
    from models.height_xgb.train import CITYJSON, HELSINKI, load_helsinki
    from urbanfabric.attributes.measurements import clean_heights, load_cityjson

    out = []
    if (SHARED_DATA / HELSINKI).is_file():
        gdf, heights, _ = load_helsinki(SHARED_DATA / HELSINKI)
        out.append(("helsinki-osm", gdf, heights))
    for rel, crs in CITYJSON:
        if (SHARED_DATA / rel).is_file():
            gdf, _ = clean_heights(load_cityjson(SHARED_DATA / rel, crs=crs))
            out.append((rel.rsplit("/", 1)[1].split(".")[0], gdf.reset_index(drop=True),
                        gdf["height_m"].to_numpy(dtype=np.float64)))
    if not out:
        raise FileNotFoundError(f"{SHARED_DATA / 'heights'}: no labelled heights here (see its README.md)")
    return out


def city_rows(name: str, gdf: gpd.GeoDataFrame, heights: np.ndarray) -> tuple[LabelledRows, np.ndarray]:
    """The file's labelled buildings as the model reads them, and each one's cell."""
    X = footprint_features(gdf[["geometry"]].reset_index(drop=True))
    for column in IMAGE_FEATURE_NAMES:  # no imagery: the stage's NaN image inputs
        X[column] = np.nan
    centre = gdf.geometry.representative_point().to_crs(gdf.estimate_utm_crs())
    x, y = centre.x.to_numpy(), centre.y.to_numpy()
    cells = np.array([f"{name}:{int(np.floor(a / CELL_M))}:{int(np.floor(b / CELL_M))}" for a, b in zip(x, y)])
    keep = np.isfinite(heights) & (heights > 0)
    ids = np.array([f"{name}:{i}" for i in range(len(gdf))])
    rows = LabelledRows(ids, heights.astype(np.float64), X.reset_index(drop=True), x, y)
    return rows.subset(keep), cells[keep]


def review_table(parent: HeightModel, rows: LabelledRows) -> pd.DataFrame:
    """The attributes stage's height columns: the members' mean and the (no-image) band."""
    h, lo, hi = parent.predict(rows.inputs)
    return pd.DataFrame({"height_m": h, "height_p05": lo, "height_p95": hi})


def _concat(parts: list[LabelledRows]) -> LabelledRows:
    # Each city's metres are its own UTM zone; the picks' spread only compares nearby points,
    # so the cities are set apart by 10,000 km steps in x.
    return LabelledRows(np.concatenate([p.building_id for p in parts]), np.concatenate([p.labels for p in parts]),
                        pd.concat([p.inputs for p in parts], ignore_index=True),
                        np.concatenate([p.x_m + 1e7 * i for i, p in enumerate(parts)]),
                        np.concatenate([p.y_m for p in parts]))


def experiment(ks: Sequence[int] = core.KS, seeds: Sequence[int] = core.SEEDS) -> core.Experiment:
    from models.common.tabular_domain import halves

    pools, tests, per_city = [], [], {}
    for name, gdf, heights in cities():
        rows, cells = city_rows(name, gdf, heights)
        test = halves(cells, np.ones(len(rows), dtype=bool), seed=0)
        pools.append(rows.subset(~test))
        tests.append(rows.subset(test))
        per_city[name] = {"pool": int((~test).sum()), "test": int(test.sum()),
                          "cells": len(np.unique(cells)), "test_cells": len(np.unique(cells[test]))}
    code = fine_tune_module(PARENT[0])
    parent = code.load(model_dir(*PARENT))
    pool, test = _concat(pools), _concat(tests)
    setup: dict[str, Any] = {
        "parent": ":".join(PARENT),
        "parent_trained_on": "Xiamen only (38 of 57 500 m blocks, with z18 image evidence)",
        "pool": f"{len(pool)} labelled buildings in half of each file's {CELL_M:.0f} m cells",
        "test": f"{len(test)} labelled buildings in the other half of the cells",
        "per_city": per_city,
        "separation": f"whole {CELL_M:.0f} m cells (each file's local UTM), half of each file's cells by seed 0",
        "features": "footprint_features with each file's footprints as context; no imagery (image inputs NaN: "
                    "v4's morphology-only path and band)",
        "labels": "Helsinki: OSM height tag, else building:levels x 3 m; CityJSON: measured heights (clean_heights)",
    }
    return core.Experiment("height", code, parent, pool, test, review_table, setup, ks, seeds)


if __name__ == "__main__":
    # The runner's run: the same experiment and defaults, and the command kept in the result.
    from bench.learning_curves.__main__ import main

    raise SystemExit(main(["height"]))
