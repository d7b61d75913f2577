"""Buildings chained per tile (issue 22, item 3): the router resolves each tile's seams from its
own and its neighbours' footprints and keeps the buildings it owns; together the tiles keep
exactly the buildings (count and ids) of the global pass (merge over the whole area, then the
area clip) — whatever order the tiles finish in, and without holding every tile at once."""

from __future__ import annotations

import random

import geopandas as gpd
import morecantile
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from tests.fakes import MemoryStore
from urbanfabric.footprints.polygons import building_id
from urbanfabric.footprints.seams import merge_seams
from urbanfabric.footprints.tile_owned import neighbour_ids, resolve_tile_seams
from urbanfabric.footprints.user_footprints import clip_to_area
from urbanfabric.imagery.tiles import tiles_for_area
from urbanfabric.io.geoparquet import geoparquet_bytes
from urbanfabric.runtime import jobs
from urbanfabric.runtime.tile_router import TileRouter
from urbanfabric.v1 import common_pb2, tasks_pb2

TMS = morecantile.tms.get("WebMercatorQuad")
#: 4 × 3 zoom-16 tiles of the Xiamen sample area.
AREA = (118.0975, 24.4770, 118.1190, 24.4915)


def _pieces(tiles, buildings: list) -> dict[str, gpd.GeoDataFrame]:
    """Each building cut by the tile cores, as polygonize leaves them (on_border: touches the
    core's edge); tile id → its footprints."""
    out = {}
    rng = random.Random(3)
    for t in tiles:
        b = TMS.bounds(morecantile.Tile(t.x, t.y, t.z))
        core = box(b.left, b.bottom, b.right, b.top)
        rows = []
        for g in buildings:
            piece = g.intersection(core)
            if piece.is_empty or piece.area < 1e-12:
                continue
            p = piece.representative_point()
            rows.append({"building_id": building_id(p.x, p.y), "footprint_confidence": rng.uniform(0.5, 1),
                         "footprint_area_m2": 0.0, "footprint_source": "segmented", "tile_id": t.tile_id,
                         "on_border": piece.distance(core.exterior) < 1e-7, "geometry": piece})
        out[t.tile_id] = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326") if rows else \
            gpd.GeoDataFrame({"building_id": [], "on_border": [], "tile_id": []}, geometry=[], crs="EPSG:4326")
    return out


def _buildings(tiles, n: int = 400, seed: int = 0) -> list:
    """Boxes of 8–40 m, many across the internal borders and corners, a few in a row that the
    buffer joins into one building."""
    rng = np.random.default_rng(seed)
    w, s, e, nn = AREA
    out = [box(x, y, x + dx, y + dy) for x, y, dx, dy in zip(
        rng.uniform(w, e, n), rng.uniform(s, nn, n), rng.uniform(8e-5, 4e-4, n), rng.uniform(8e-5, 4e-4, n))]
    # Buildings sitting on every border and corner.
    for t in tiles:
        b = TMS.bounds(morecantile.Tile(t.x, t.y, t.z))
        out += [box(b.right - 1e-4, b.top - 1e-4, b.right + 1.5e-4, b.top + 1.2e-4),
                box(b.right - 2e-4, (b.bottom + b.top) / 2, b.right + 2e-4, (b.bottom + b.top) / 2 + 1e-4)]
    return out


def _global(pieces: dict[str, gpd.GeoDataFrame], order: list[str], bbox) -> gpd.GeoDataFrame:
    frames = [pieces[t] for t in order if len(pieces[t])]
    found = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:4326")
    return clip_to_area(merge_seams(found), bbox)


def _route(pieces, tiles, bbox, arrival: list[str], mapped: set[str] | None = None):
    store = MemoryStore()
    mapped_tiles = [t for t in tiles if mapped is None or t.tile_id in mapped]
    router = TileRouter(store, "j", mapped_tiles, jobs.TileTally(), bbox)
    for tid in arrival:
        r = tasks_pb2.TileResult(job=common_pb2.JobRef(job_id="j"), status=tasks_pb2.TASK_STATUS_SUCCEEDED)
        r.tile.tile_id = tid
        if len(pieces[tid]):
            r.footprints.uri = store.put_bytes(f"jobs/j/footprints/tile={tid}/part-0.parquet",
                                               geoparquet_bytes(pieces[tid]))
        router(r)
    owned = [router.read_owned(t) for t in sorted(router.owned)]
    return router, pd.concat([o for o in owned if len(o)], ignore_index=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiles_own_exactly_the_buildings_of_the_global_merge(seed: int) -> None:
    tiles = tiles_for_area(AREA)
    assert len(tiles) >= 9
    order = [t.tile_id for t in tiles]
    pieces = _pieces(tiles, _buildings(tiles, seed=seed))
    assert sum(int(p["on_border"].sum()) for p in pieces.values()) > 50
    expected = _global(pieces, order, AREA)
    arrival = order[:]
    random.Random(seed).shuffle(arrival)
    router, owned = _route(pieces, tiles, AREA, arrival)
    assert len(owned) == len(expected)
    assert sorted(owned["building_id"]) == sorted(expected["building_id"])
    assert owned["building_id"].is_unique
    assert set(router.owned) == set(order) and not router.frames  # every tile resolved, nothing held


def test_row_by_row_arrival_holds_a_frontier_not_the_area() -> None:
    tiles = tiles_for_area(AREA)
    order = [t.tile_id for t in tiles]
    pieces = _pieces(tiles, _buildings(tiles))
    router, _ = _route(pieces, tiles, AREA, order)
    columns = len({t.x for t in tiles})
    assert router.peak_frontier <= 3 * columns < len(tiles)


def test_a_building_whose_point_lies_in_an_unmapped_cell_is_kept_by_its_largest_piece() -> None:
    tiles = tiles_for_area(AREA)
    order = [t.tile_id for t in tiles]
    gone = order[5]  # e.g. no imagery there: not mapped, no footprints
    mapped = set(order) - {gone}
    pieces = _pieces(tiles, _buildings(tiles, seed=4))
    pieces[gone] = pieces[gone].iloc[:0]
    expected = _global(pieces, [t for t in order if t in mapped], AREA)
    _, owned = _route(pieces, tiles, AREA, [t for t in order if t in mapped], mapped)
    assert sorted(owned["building_id"]) == sorted(expected["building_id"])


def test_resolve_tile_seams_is_the_one_hook_and_keeps_only_the_tiles_buildings() -> None:
    tiles = tiles_for_area(AREA)
    pieces = _pieces(tiles, _buildings(tiles))
    t = tiles[6].tile_id
    order = {x.tile_id: i for i, x in enumerate(tiles)}
    neighbours = {n: pieces[n] for n in neighbour_ids(t) if n in pieces}
    owned = resolve_tile_seams(t, pieces[t], neighbours, order)
    u = tiles[7].tile_id
    others = resolve_tile_seams(u, pieces[u], {n: pieces[n] for n in neighbour_ids(u) if n in pieces}, order)
    assert len(owned) and len(others) and not set(owned["building_id"]) & set(others["building_id"])
    assert (owned["tile_id"] == t).mean() > 0.5
