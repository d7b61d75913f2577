"""A building's features do not depend on the batch it is in: with its context (the job's
footprints around the batch) and the job's area frame, batched features equal the features of
the whole set; without them they do not (the bug this fixes)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from urbanfabric.attributes.context import CONTEXT_M, AreaFrame, CellContext, context_bounds, select_context
from urbanfabric.attributes.features import footprint_features
from urbanfabric.errors import InvalidInput
from urbanfabric.runtime.jobs import iter_batches

#: A 1.2 km × 1.2 km patch of Xiamen (lon/lat).
W, S = 118.090, 24.470


def _town(n: int = 900, seed: int = 0) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    x = W + rng.uniform(0, 0.012, n)
    y = S + rng.uniform(0, 0.011, n)
    dx, dy = rng.uniform(6e-5, 3e-4, n), rng.uniform(6e-5, 3e-4, n)
    geoms = [box(a, b, a + c, b + d) for a, b, c, d in zip(x, y, dx, dy)]
    return gpd.GeoDataFrame({"building_id": [f"b{i:04d}" for i in range(n)]}, geometry=geoms, crs="EPSG:4326")


def _batched(town: gpd.GeoDataFrame, size: int, with_context: bool) -> pd.DataFrame:
    frame = AreaFrame.from_bbox(tuple(town.total_bounds))
    parts = []
    for b in iter_batches(town, size):
        ctx = select_context(b, town) if with_context else None
        f = footprint_features(b, context=ctx, area_frame=frame)
        f.index = b["building_id"].to_numpy()
        parts.append(f)
    return pd.concat(parts).loc[town["building_id"].to_numpy()]


def test_batched_features_with_context_equal_the_whole_sets() -> None:
    town = _town()
    whole = footprint_features(town, area_frame=AreaFrame.from_bbox(tuple(town.total_bounds)))
    whole.index = town["building_id"].to_numpy()
    batched = _batched(town, 100, with_context=True)
    pd.testing.assert_frame_equal(batched, whole, check_exact=False, rtol=1e-9, atol=1e-6)


def test_without_context_the_batch_edge_loses_its_neighbours() -> None:
    town = _town()
    whole = footprint_features(town, area_frame=AreaFrame.from_bbox(tuple(town.total_bounds)))
    whole.index = town["building_id"].to_numpy()
    batched = _batched(town, 100, with_context=False)
    assert (batched["n_within_200m"] < whole["n_within_200m"]).mean() > 0.3
    assert (batched["n_within_400m"] <= whole["n_within_400m"]).all()


def test_context_excludes_the_batch_and_reaches_far_enough() -> None:
    town = _town()
    batch = town.iloc[:50]
    ctx = select_context(batch, town)
    assert not set(ctx["building_id"]) & set(batch["building_id"])
    w, s, e, n = context_bounds(tuple(batch.total_bounds))
    metric = town.to_crs(town.estimate_utm_crs())
    near = metric.distance(metric.iloc[:50].union_all()) <= CONTEXT_M - 1.0
    near_ids = set(town.loc[near.to_numpy(), "building_id"]) - set(batch["building_id"])
    assert near_ids <= set(ctx["building_id"])
    assert (w, s) < tuple(batch.total_bounds[:2])


def test_cell_context_reads_only_nearby_cells_and_gives_the_same_context() -> None:
    from urbanfabric.footprints.user_footprints import cell_keys

    town = _town()
    town["cell"] = cell_keys(town.geometry.representative_point(), 16)
    cells = {c: g.drop(columns="cell") for c, g in town.groupby("cell")}
    read: list[str] = []

    def reader(c: str) -> gpd.GeoDataFrame:
        read.append(c)
        return cells[c]

    source = CellContext(cells, reader, cache=4)
    batch = town.iloc[:40].drop(columns="cell")
    got = source(batch)
    want = select_context(batch, town.drop(columns="cell"))
    assert set(got["building_id"]) == set(want["building_id"])
    assert 0 < len(set(read)) <= len(cells)
    source(batch)
    assert source.read.cache_info().currsize <= 4


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"center_lon": 200.0, "center_lat": 0.0, "radius_m": 10.0}, "area.center_lon"),
    ({"center_lon": 0.0, "center_lat": float("nan"), "radius_m": 10.0}, "area.center_lat"),
    ({"center_lon": 0.0, "center_lat": 0.0, "radius_m": -1.0}, "area.radius_m"),
])
def test_a_bad_area_frame_names_its_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        AreaFrame(**kwargs)
    assert err.value.field == field
