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
from urbanfabric.footprints.ownership import border_pieces, neighbour_tile_ids, resolve_tile_seams
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


def _neighbour_border(pieces, tile_id: str) -> gpd.GeoDataFrame:
    frames = [border_pieces(pieces[n]) for n in neighbour_tile_ids(tile_id) if n in pieces and len(pieces[n])]
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:4326")


def test_neighbouring_tiles_own_disjoint_buildings() -> None:
    tiles = tiles_for_area(AREA)
    pieces = _pieces(tiles, _buildings(tiles))
    t, u = tiles[6].tile_id, tiles[7].tile_id
    owned = resolve_tile_seams(t, pieces[t], _neighbour_border(pieces, t))
    others = resolve_tile_seams(u, pieces[u], _neighbour_border(pieces, u))
    assert len(owned) and len(others) and not set(owned["building_id"]) & set(others["building_id"])
    assert (owned["tile_id"] == t).mean() > 0.5


def test_a_building_longer_than_the_halo_waits_for_its_far_tiles() -> None:
    """A row of buildings joined by the buffer across three tiles: the tile owning it needs the
    border pieces two tiles away; the router reads them from the store and, while a far tile has
    not reported, keeps the tile pending instead of guessing."""
    tiles = tiles_for_area(AREA)
    order = [t.tile_id for t in tiles]
    rows = sorted({t.y for t in tiles})
    row = [t for t in tiles if t.y == rows[1]]
    assert len(row) >= 4
    b0 = TMS.bounds(morecantile.Tile(row[0].x, row[0].y, row[0].z))
    b3 = TMS.bounds(morecantile.Tile(row[3].x, row[3].y, row[3].z))
    mid = (b0.bottom + b0.top) / 2
    long_one = box(b0.right - 2e-4, mid, b3.left + 2e-4, mid + 1e-4)  # crosses tiles 1 and 2 whole
    pieces = _pieces(tiles, [long_one, *_buildings(tiles, n=50, seed=5)])
    expected = _global(pieces, order, AREA)
    arrival = [t for t in order if t != row[3].tile_id] + [row[3].tile_id]
    router, owned = _route(pieces, tiles, AREA, arrival)
    assert sorted(owned["building_id"]) == sorted(expected["building_id"])
    assert router.deferrals >= 1 and not router.pending and set(router.owned) == set(order)


def test_the_per_tile_seam_check_finds_what_the_global_check_finds() -> None:
    """The job's seam QA without its whole table: on resolved tiles nothing is cut, as globally;
    on raw pieces (seams never joined) the same cut pairs and flush ids as the global check."""
    from urbanfabric.footprints.ownership import tile_seam_defects
    from urbanfabric.footprints.seams import seam_defects

    tiles = tiles_for_area(AREA)
    order = [t.tile_id for t in tiles]
    pieces = _pieces(tiles, _buildings(tiles, seed=1))
    router, owned = _route(pieces, tiles, AREA, order)
    resolved = tile_seam_defects(tiles, router.read_owned)
    whole = seam_defects(owned, tiles)
    assert resolved.cut_pairs == whole.cut_pairs and resolved.flush == whole.flush
    assert resolved.near_border == whole.near_border > 0 and len(resolved.cut_pairs) < 5
    raw_whole = seam_defects(pd.concat([p for p in pieces.values() if len(p)], ignore_index=True), tiles)
    raw = tile_seam_defects(tiles, lambda t: pieces.get(t))
    assert len(raw_whole.cut_pairs) > 20
    assert raw.cut_pairs == raw_whole.cut_pairs and raw.flush == raw_whole.flush
    assert raw.near_border == raw_whole.near_border
