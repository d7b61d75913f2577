"""Seams owned by tiles (urbanfabric.footprints.ownership) against the global merge_seams.

Synthetic buildings in real places and CRSs are cut by real zoom-16 WebMercatorQuad cells the
way segmentation cuts them (one piece per tile, ``on_border`` when a piece reaches the tile
edge); every tile then resolves its seams from its own footprints and its neighbours' border
pieces only, and the union over tiles is compared with ``merge_seams`` over everything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import geopandas as gpd
import morecantile
import pandas as pd
import pytest
import shapely
from shapely.geometry import Polygon, box
from urbanfabric.errors import InvalidInput
from urbanfabric.footprints.ownership import (
    TileKey,
    border_pieces,
    join_border_pieces,
    neighbour_tile_ids,
    owner_tile_id,
    resolve_tile_seams,
    tile_buildings,
    utm_crs,
)
from urbanfabric.footprints.polygons import building_id
from urbanfabric.footprints.seams import merge_seams

TMS = morecantile.tms.get("WebMercatorQuad")
Z = 16
#: A piece this close to its tile's edge (degrees, ≈ 1 m) is on the border, as polygonize marks it.
EDGE_DEG = 1e-5


def _lonlat_box(key: TileKey) -> tuple[float, float, float, float]:
    b = TMS.bounds(morecantile.Tile(key.x, key.y, key.z))
    return b.left, b.bottom, b.right, b.top


def _key(lon: float, lat: float) -> TileKey:
    t = TMS.tile(lon, lat, Z)
    return TileKey("WebMercatorQuad", Z, t.x, t.y)


def _block(centre: TileKey, r: int = 1) -> list[TileKey]:
    return [k for ring in range(r + 1) for k in centre.ring(ring)]


def cut(buildings: Iterable[Polygon], keys: Sequence[TileKey]) -> dict[str, gpd.GeoDataFrame]:
    """Per-tile footprints: each building cut by each tile (lon may run past 180 for the
    antimeridian; pieces come back in −180…180), with polygonize's columns."""
    buildings = list(buildings)
    out: dict[str, gpd.GeoDataFrame] = {}
    for key in keys:
        w, s, e, n = _lonlat_box(key)
        rows = []
        for i, b in enumerate(buildings):
            for shift in (0.0, 360.0):
                cell = box(w + shift, s, e + shift, n)
                piece = b.intersection(cell)
                if piece.is_empty or piece.area == 0:
                    continue
                on_border = piece.distance(cell.exterior) < EDGE_DEG
                piece = shapely.affinity.translate(piece, -shift)
                p = piece.representative_point()
                rows.append({"building_id": building_id(p.x, p.y), "footprint_confidence": 0.5 + 0.01 * (i % 40),
                             "footprint_area_m2": 0.0, "footprint_source": "segmented", "tile_id": key.tile_id,
                             "on_border": bool(on_border), "geometry": piece})
        frame = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326") if rows else \
            gpd.GeoDataFrame(columns=["building_id", "footprint_confidence", "footprint_area_m2", "footprint_source",
                                      "tile_id", "on_border"], geometry=[], crs="EPSG:4326")
        out[key.tile_id] = frame
    return out


def _concat(frames: Iterable[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return gpd.GeoDataFrame(columns=["building_id", "on_border", "tile_id"], geometry=[], crs="EPSG:4326")
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:4326")


def resolve_all(tiles: dict[str, gpd.GeoDataFrame], with_fetch: bool = True) -> gpd.GeoDataFrame:
    """Every tile resolves its seams from its own footprints and its neighbours' border pieces."""
    borders = {t: border_pieces(f) for t, f in tiles.items()}

    def fetch(ids: Sequence[str]) -> gpd.GeoDataFrame:
        return _concat(borders.get(i, gpd.GeoDataFrame()) for i in ids)

    if with_fetch:  # as a tile worker would: footprints read on demand, tile by tile
        return _concat(tile_buildings(t, tiles.get) for t in tiles)
    return _concat(resolve_tile_seams(t, f, fetch(neighbour_tile_ids(t))) for t, f in tiles.items())


def _by_id(frame: gpd.GeoDataFrame) -> dict[str, shapely.Geometry]:
    assert frame["building_id"].is_unique, "a building was claimed by two tiles"
    return dict(zip(frame["building_id"], frame.geometry))


def assert_same_as_global(tiles: dict[str, gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    local = resolve_all(tiles)
    merged = merge_seams(_concat(tiles.values()))
    a, b = _by_id(merged), _by_id(local)
    assert sorted(a) == sorted(b)
    for bid in a:
        assert a[bid].equals_exact(b[bid], tolerance=1e-9), bid
    return local


def _rect_m(lon: float, lat: float, west_m: float, east_m: float, south_m: float, north_m: float) -> Polygon:
    """A rectangle given in metres around a lon/lat point (local equirectangular)."""
    dlon = 1 / (111_320 * math.cos(math.radians(lat)))
    dlat = 1 / 110_574
    return box(lon + west_m * dlon, lat + south_m * dlat, lon + east_m * dlon, lat + north_m * dlat)


# Xiamen, where the seam test area of docs/results.md lies (UTM 50N).
XIAMEN = _key(118.1100, 24.4800)


def test_neighbours_are_the_eight_around_and_wrap_the_antimeridian():
    assert sorted(neighbour_tile_ids(XIAMEN.tile_id)) == sorted(
        f"WebMercatorQuad-16-{XIAMEN.x + dx}-{XIAMEN.y + dy}"
        for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0))
    east_end = TileKey("WebMercatorQuad", Z, 2**Z - 1, 30000)
    assert "WebMercatorQuad-16-0-30000" in neighbour_tile_ids(east_end.tile_id)
    assert len(neighbour_tile_ids("WebMercatorQuad-16-5-0")) == 5   # the grid's top row
    assert len(TileKey.parse(XIAMEN.tile_id).ring(2)) == 16


def test_a_point_on_a_shared_edge_or_corner_belongs_to_exactly_one_tile():
    w, s, e, n = _lonlat_box(XIAMEN)
    east = TileKey(XIAMEN.tms, Z, XIAMEN.x + 1, XIAMEN.y)
    south_east = TileKey(XIAMEN.tms, Z, XIAMEN.x + 1, XIAMEN.y + 1)
    mid_lat = (s + n) / 2
    assert owner_tile_id(e, mid_lat, "WebMercatorQuad", Z) == east.tile_id          # [west, east)
    assert owner_tile_id(e - 1e-9, mid_lat, "WebMercatorQuad", Z) == XIAMEN.tile_id
    assert owner_tile_id(e, s, "WebMercatorQuad", Z) == south_east.tile_id          # corner of four
    assert owner_tile_id((w + e) / 2, s, "WebMercatorQuad", Z) == \
        TileKey(XIAMEN.tms, Z, XIAMEN.x, XIAMEN.y + 1).tile_id                     # (south, north]


def test_buildings_across_a_shared_edge_equal_the_global_merge():
    _w, s, e, n = _lonlat_box(XIAMEN)
    lat = (s + n) / 2
    buildings = [
        _rect_m(e, lat, -9, 11, 0, 12),          # across the east edge, mostly east
        _rect_m(e, lat + 0.001, -15, 4, 0, 10),  # mostly west
        _rect_m(e, lat - 0.001, -6, 6, 0, 10),   # centred on the edge
        _rect_m(e, lat + 0.002, -30, -20, 0, 10),  # interior, 20 m from the edge
        _rect_m(e, lat + 0.0025, -1.2, -0.2, 0, 10),  # next to the edge, not across (on_border alone)
    ]
    tiles = cut(buildings, _block(XIAMEN))
    local = assert_same_as_global(tiles)
    assert len(local) == 5
    # Each building is whole in exactly one tile: the one holding its representative point.
    for tile_id, bid, geom in zip(local["tile_id"], local["building_id"], local.geometry):
        p = geom.representative_point()
        assert bid == building_id(p.x, p.y)


def test_a_building_on_the_corner_of_four_tiles_is_one_building_owned_once():
    _w, s, e, _n = _lonlat_box(XIAMEN)
    tiles = cut([_rect_m(e, s, -8, 7, -6, 9), _rect_m(e, s + 0.003, -5, 5, -2, 2)], _block(XIAMEN, 2))
    pieces = sum(len(f) for f in tiles.values())
    assert pieces == 6
    local = assert_same_as_global(tiles)
    assert len(local) == 2


def test_a_building_larger_than_the_halo_is_joined_by_widening_the_view():
    w, s, e, n = _lonlat_box(XIAMEN)
    width = (e - w) * 111_320 * math.cos(math.radians(24.48))
    # 2.6 tiles long: from the middle of XIAMEN to past the east edge of its second neighbour east.
    long_one = _rect_m((w + e) / 2, (s + n) / 2, 0, 2.6 * width, 0, 15)
    keys = [TileKey(XIAMEN.tms, Z, XIAMEN.x + dx, XIAMEN.y + dy) for dx in range(-1, 5) for dy in (-1, 0, 1)]
    # And a chain: one building across the first neighbour, stopping 2.5 m short of its far edge,
    # and a second one from that edge on — the buffer (2 × 1.5 m) makes them one building.
    e1 = _lonlat_box(TileKey(XIAMEN.tms, Z, XIAMEN.x + 1, XIAMEN.y))[2]
    lat2 = (s + n) / 2 - 0.001
    chain = [_rect_m(e1, lat2, -width - 20, -2.5, 0, 10), _rect_m(e1, lat2, 0, 8, 0, 10)]
    tiles = cut([long_one, *chain], keys)
    assert sum(len(f) for f in tiles.values()) == 7
    local = assert_same_as_global(tiles)
    assert len(local) == 2
    assert local["footprint_area_m2"].max() == pytest.approx(2.6 * width * 15, rel=0.01)
    with pytest.raises(InvalidInput, match="reach past ring 1"):
        resolve_all(tiles, with_fetch=False)


def test_a_tile_with_no_buildings_returns_an_empty_frame():
    empty = cut([], [XIAMEN])[XIAMEN.tile_id]
    assert resolve_tile_seams(XIAMEN.tile_id, empty, empty).empty
    _w, s, _e, n = _lonlat_box(XIAMEN)
    # Its neighbours hold a building at their shared edge: none of it is the empty tile's.
    east = TileKey(XIAMEN.tms, Z, XIAMEN.x + 1, XIAMEN.y)
    ee = TileKey(XIAMEN.tms, Z, XIAMEN.x + 2, XIAMEN.y)
    tiles = cut([_rect_m(_lonlat_box(east)[2], (s + n) / 2, -5, 5, 0, 8)], [XIAMEN, east, ee])
    assert tiles[XIAMEN.tile_id].empty
    got = resolve_tile_seams(XIAMEN.tile_id, tiles[XIAMEN.tile_id], border_pieces(tiles[east.tile_id]))
    assert got.empty
    assert len(assert_same_as_global(tiles)) == 1


def test_pieces_from_outside_the_view_or_a_bad_tile_id_are_refused():
    _w, s, _e, _n = _lonlat_box(XIAMEN)
    far = TileKey(XIAMEN.tms, Z, XIAMEN.x + 3, XIAMEN.y)
    tiles = cut([_rect_m(_lonlat_box(far)[0], s + 0.002, -5, 5, 0, 8)], [far])
    with pytest.raises(InvalidInput, match="outside ring 1"):
        join_border_pieces(XIAMEN.tile_id, tiles[far.tile_id])
    with pytest.raises(InvalidInput, match="tile_id"):
        resolve_tile_seams("WebMercatorQuad-16-x-3", tiles[far.tile_id], tiles[far.tile_id])
    with pytest.raises(InvalidInput, match="outside the zoom-16 grid"):
        TileKey.parse(f"WebMercatorQuad-16-{2**16}-3")


def _zone(crs) -> int:
    return int(crs.to_epsg())


def test_tiles_on_both_sides_of_a_utm_zone_line_compute_the_same_building():
    # 6° E is the line between UTM zones 31 and 32; at 50.5° N (Belgium/Germany).
    line = _key(6.0, 50.5)
    w, s, e, n = _lonlat_box(line)
    assert w < 6.0 < e
    west, east = TileKey(line.tms, Z, line.x - 1, line.y), TileKey(line.tms, Z, line.x + 1, line.y)
    lat = (s + n) / 2
    in_31 = _rect_m(w, lat, -10, 12, 0, 14)          # across the west edge of the zone-line tile
    in_32 = _rect_m(e, lat, -12, 10, 0, 14)          # across its east edge
    tiles = cut([in_31, in_32], _block(line, 2))
    local = resolve_all(tiles)
    assert len(local) == 2 and local["building_id"].is_unique
    owners = {owner_tile_id(*g.representative_point().coords[0], "WebMercatorQuad", Z) for g in local.geometry}
    assert owners <= {west.tile_id, line.tile_id, east.tile_id}
    # Each building is measured in its own zone: its area matches the true one there to < 1 %.
    for geom, area in zip(local.geometry, local["footprint_area_m2"]):
        crs = utm_crs(geom.bounds)
        assert _zone(crs) in (32631, 32632)
        true = gpd.GeoSeries([in_31 if geom.intersects(in_31) else in_32], crs="EPSG:4326").to_crs(crs).area.iloc[0]
        assert area == pytest.approx(true, rel=0.01)
    assert {_zone(utm_crs(g.bounds)) for g in local.geometry} == {32631, 32632}
    # Whichever tile resolves the west building, it is the same building (same id, same geometry).
    views = {}
    for t in (west, line):
        pieces = _concat(border_pieces(tiles[k.tile_id]) for k in _block(t) if k.tile_id in tiles)
        views[t.tile_id] = join_border_pieces(t.tile_id, pieces).owned
    claimed = _concat(views.values())
    assert (claimed["building_id"].isin(local["building_id"])).all()


def test_a_building_across_the_antimeridian_is_one_building_split_at_180():
    # Taveuni, Fiji: 180° runs across the island at ≈ 16.8° S.
    west = _key(179.9999, -16.8)
    east = TileKey(west.tms, Z, 0, west.y)
    assert west.x == 2**Z - 1 and east.tile_id in neighbour_tile_ids(west.tile_id)
    s, n = _lonlat_box(west)[1], _lonlat_box(west)[3]
    lat = (s + n) / 2
    across = _rect_m(180.0, lat, -9, 13, 0, 12)       # lon up to 180.0001: cut by both tiles
    beside = _rect_m(180.0, lat + 0.001, 20, 35, 0, 10)  # wholly east of 180 (in tile 0)
    beside = shapely.affinity.translate(beside, -360)
    tiles = cut([across, beside], _block(west))
    assert len(tiles[west.tile_id]) == 1 and len(tiles[east.tile_id]) == 2
    local = resolve_all(tiles)
    assert len(local) == 2 and local["building_id"].is_unique
    big = local.loc[local["footprint_area_m2"].idxmax()]
    assert big.geometry.geom_type == "MultiPolygon" and len(big.geometry.geoms) == 2
    assert big.geometry.bounds[0] == pytest.approx(-180) and big.geometry.bounds[2] == pytest.approx(180)
    assert big["footprint_area_m2"] == pytest.approx(22 * 12, rel=0.01)
    assert _zone(utm_crs(big.geometry.bounds)) in (32760, 32701)
    # The global merge measures this area in a zone centred near 0° (UTM 30S) and returns a
    # "building" whose outline runs once around the globe.
    merged = merge_seams(_concat(tiles.values()))
    assert _concat(tiles.values()).estimate_utm_crs().to_epsg() == 32730
    assert (merged.geometry.bounds["maxx"] - merged.geometry.bounds["minx"]).max() > 359
    assert all(part.bounds[2] - part.bounds[0] < 1e-3 for g in local.geometry       # ours: metres wide
               for part in getattr(g, "geoms", [g]))


def test_resolve_keeps_interior_footprints_unchanged_and_refuses_foreign_rows():
    w, s, e, n = _lonlat_box(XIAMEN)
    tiles = cut([_rect_m((w + e) / 2, (s + n) / 2, 0, 10, 0, 10)], [XIAMEN])
    own = tiles[XIAMEN.tile_id]
    assert not own["on_border"].any()
    got = resolve_tile_seams(XIAMEN.tile_id, own, own.iloc[0:0])
    assert got["building_id"].tolist() == own["building_id"].tolist()
    assert got.geometry.iloc[0].equals(own.geometry.iloc[0])
    with pytest.raises(InvalidInput, match="footprints.tile_id"):
        resolve_tile_seams(f"WebMercatorQuad-16-{XIAMEN.x + 1}-{XIAMEN.y}", own, own.iloc[0:0])


@pytest.mark.data
def test_real_imagery_per_tile_footprints_equal_the_global_merge():
    """3 × 3 zoom-16 cells of the real Xiamen z18 imagery, each segmented on its own with a
    128 px halo from its neighbours (``segment_tile``, city calibration), by a near-free
    stand-in model whose blobs (bright, smooth pixels) cross tile borders far more often than
    buildings do; per-tile ownership must equal the global merge exactly."""
    import numpy as np
    from scipy import ndimage
    from urbanfabric.footprints.options import SegmentationOptions
    from urbanfabric.footprints.tile_segmentation import segment_tile
    from urbanfabric.imagery import acquisition, calibration
    from urbanfabric.io.model_repository import SHARED_DATA
    from urbanfabric.io.rasters import Raster

    tile_dir = SHARED_DATA / "footprints/xiamen-z18/tiles"
    if not tile_dir.is_dir():
        pytest.skip(f"needs the Xiamen sample imagery under {tile_dir}")
    centre = _key(118.1100, 24.4800)
    keys = _block(centre)
    wanted = {(k.x + dx, k.y + dy) for k in keys for dx in (-1, 0, 1) for dy in (-1, 0, 1)}
    blocks = {}
    for block_id, raster in acquisition.mosaic_xyz_blocks(tile_dir, 18):
        _, bx, by = map(int, block_id.split("-"))
        if (bx, by) in wanted:
            blocks[bx, by] = raster
    assert all((k.x, k.y) in blocks for k in keys)
    stats = calibration.area_stats((blocks[k.x, k.y].data for k in keys), nodata=0)

    def stand_in(name: str, version: str, batch: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(batch.mean(axis=1), size=(1, 9, 9)).astype(np.float32)

    halo = 128
    options = SegmentationOptions(model="stand-in:v1", threshold=0.55)
    tiles = {}
    for k in keys:
        grown = acquisition.block_with_halo(blocks, k.x, k.y, halo)
        ard, _ = calibration.calibrate_tile(grown.data, k.tile_id, stats, nodata=0)
        seg = segment_tile(Raster(ard, grown.transform, grown.crs, float("nan")), k.tile_id, options,
                           stand_in, halo_px=halo)
        tiles[k.tile_id] = seg.footprints
    assert sum(int(f["on_border"].sum()) for f in tiles.values()) >= 50
    local = assert_same_as_global(tiles)
    assert len(local) >= 100


def test_neighbours_interior_footprints_never_join_even_when_passed():
    _w, s, e, n = _lonlat_box(XIAMEN)
    lat = (s + n) / 2
    # A building across the east edge (mostly west), and 2 m east of it an interior footprint.
    tiles = cut([_rect_m(e, lat, -16, 4, 0, 10), _rect_m(e, lat, 6, 10, 0, 10)], _block(XIAMEN))
    east = f"WebMercatorQuad-16-{XIAMEN.x + 1}-{XIAMEN.y}"
    assert tiles[east]["on_border"].tolist().count(False) == 1
    whole = _concat(tiles[t] for t in neighbour_tile_ids(XIAMEN.tile_id))      # interior rows too
    a = resolve_tile_seams(XIAMEN.tile_id, tiles[XIAMEN.tile_id], whole)
    b = resolve_tile_seams(XIAMEN.tile_id, tiles[XIAMEN.tile_id], border_pieces(whole))
    assert a["building_id"].tolist() == b["building_id"].tolist()
    assert len(assert_same_as_global(tiles)) == 2
