"""Spatial folds of the height validation: whole blocks per fold, unlabelled rows in none."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
from shapely.geometry import box

from models.height_xgb.validate import _blocks, deal_folds, metrics_for


def test_blocks_shrink_until_enough_and_folds_never_split_a_block():
    geoms = [box(500_000 + i * 37.0, 5_000_000 + (i % 7) * 41.0,
                 500_010 + i * 37.0, 5_000_010 + (i % 7) * 41.0) for i in range(60)]
    gdf = gpd.GeoDataFrame(geometry=geoms, crs="EPSG:32633")
    blocks, block_m = _blocks(gdf)
    assert len(np.unique(blocks)) >= 10 and 50.0 <= block_m < 500.0
    y = np.full(60, 9.0)
    y[:5] = np.nan
    src = {"name": "x", "block": blocks, "y": y}
    deal_folds([src], 5, seed=0)
    for b in np.unique(blocks[5:]):
        assert len(set(src["fold"][(blocks == b) & np.isfinite(y)])) == 1
    assert set(src["fold"][np.isfinite(y)]) == set(range(5))


def test_relative_error_range_and_coverage():
    y = np.array([10.0, 20.0, 40.0])
    p = np.array([[11.0, 20.0, 20.0], [9.0, 15.0, 10.0], [12.0, 25.0, 30.0]])
    m = metrics_for(y, p)
    assert m["band_coverage_p05_p95"] == 2 / 3
    assert m["relative_error_median"] == 0.1
    assert m["n"] == 3 and m["rmse_m"] > 0
