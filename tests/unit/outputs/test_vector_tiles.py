"""The buildings as web tiles (issue 23, item 2): urbanfabric.outputs.vector_tiles and .mvt,
read back with the ``pmtiles`` reader and decoded with ``mapbox_vector_tile``."""

from __future__ import annotations

import geopandas as gpd
import mapbox_vector_tile
import numpy as np
import pytest
import shapely
from pmtiles.tile import Compression, TileType, zxy_to_tileid
from shapely.geometry import Polygon, box
from urbanfabric.errors import InvalidInput
from urbanfabric.outputs import mvt, vector_tiles
from urbanfabric.outputs.vector_tiles import (
    TileOptions,
    TileSpill,
    archive_metadata,
    archive_tiles,
    read_tile,
)

REASON = "out_of_domain: imagery of 0.54 m per pixel; the model was trained on 0.02–0.15 m"
#: Xiamen in UTM 50N; x0 lies 5 m west of a z16 tile edge, so building 0 straddles it.
X0, Y0 = 790_000.0, 2_710_000.0


def _table(n: int = 60, seed: int = 0) -> gpd.GeoDataFrame:
    """``n`` buildings over ≈ 1.2 km: one across a z16 tile edge, one with a courtyard, one sliver
    of 0.5 m², one with unknown height and roof material."""
    rng = np.random.default_rng(seed)
    edge = _z16_edge_x()
    geoms = [box(edge - 5, Y0, edge + 15, Y0 + 12),  # across the edge
             Polygon([(X0, Y0 + 300), (X0 + 40, Y0 + 300), (X0 + 40, Y0 + 340), (X0, Y0 + 340)],
                     [[(X0 + 10, Y0 + 310), (X0 + 10, Y0 + 330), (X0 + 30, Y0 + 330), (X0 + 30, Y0 + 310)]]),
             box(X0 + 200, Y0 + 200, X0 + 201, Y0 + 200.5)]  # 0.5 m²: a speck below z16
    for _ in range(n - len(geoms)):
        x, y = X0 + rng.uniform(0, 1200), Y0 + rng.uniform(400, 1200)
        geoms.append(box(x, y, x + rng.uniform(8, 40), y + rng.uniform(8, 30)))
    area = np.array([g.area for g in geoms])
    height = rng.uniform(3, 80, n)
    height[3] = np.nan
    frame = gpd.GeoDataFrame({
        "building_id": [f"b{i:03d}" for i in range(n)],
        "footprint_area_m2": area, "height_m": height, "height_p05": height * 0.7, "height_p95": height * 1.4,
        "height_source_reason": [None, None, None, "no_estimate: no imagery over the footprint"] + [None] * (n - 4),
        "floors": np.maximum(1, np.nan_to_num(height) // 3),
        "building_function": rng.choice(["residential", "commercial", "industrial"], n),
        "roof_material": ["unknown"] * 4 + list(rng.choice(["metal", "concrete_cement"], n - 4)),
        "roof_material_unknown_reason": [REASON] * 4 + [None] * (n - 4),
        "mass_total_kg": area * 1500.0, "mass_total_kg_p05": area * 800.0, "mass_total_kg_p95": area * 2600.0,
        "mass_total_kg_mc_p50": area * 1400.0, "embodied_co2e_kg": area * 300.0,
    }, geometry=geoms, crs="EPSG:32650")
    frame.loc[3, ["mass_total_kg", "mass_total_kg_p05", "mass_total_kg_p95", "mass_total_kg_mc_p50"]] = np.nan
    return frame


def _z16_edge_x() -> float:
    """The UTM x (at Y0) of the z16 tile edge just east of X0."""
    lonlat = gpd.GeoSeries([shapely.Point(X0, Y0)], crs="EPSG:32650").to_crs(4326).iloc[0]
    n = 1 << 16
    edge_lon = (np.floor((lonlat.x + 180) / 360 * n) + 1) / n * 360 - 180
    pt = gpd.GeoSeries([shapely.Point(edge_lon, lonlat.y)], crs=4326).to_crs("EPSG:32650").iloc[0]
    return float(pt.x)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    table = _table()
    path = tmp_path_factory.mktemp("tiles") / "buildings.pmtiles"
    spill = TileSpill(path.with_suffix(".sqlite"))
    spill.add(table.iloc[:25])  # two frames: the step adds one partition slice at a time
    spill.add(table.iloc[25:])
    stats = spill.write(path, "test job", "urbanfabric test")
    return path, stats, table


def _features(path, zoom: int) -> dict[tuple[int, int], list[dict]]:
    out = {}
    for (z, x, y), _ in archive_tiles(path):
        if z == zoom:
            out[(x, y)] = read_tile(path, z, x, y)["buildings"]["features"]
    return out


def test_the_archive_reads_back_with_every_building_id_at_the_max_zoom(archive):
    path, stats, table = archive
    header, meta = archive_metadata(path)
    assert header["tile_type"] == TileType.MVT and header["tile_compression"] == Compression.GZIP
    assert (header["min_zoom"], header["max_zoom"]) == (12, 16) and header["clustered"]
    assert meta["vector_layers"][0]["id"] == "buildings" and "stock_t_m2" in meta["vector_layers"][0]["fields"]
    ids = {f["properties"]["id"] for feats in _features(path, 16).values() for f in feats}
    assert ids == set(table["building_id"])
    assert stats.features_per_zoom[16] == len(table) and stats.dropped_per_zoom[16] == stats.capped_per_zoom[16] == 0
    assert stats.tiles == header["addressed_tiles_count"] and stats.bytes == path.stat().st_size


def test_a_building_across_a_tile_edge_is_in_both_tiles_clipped(archive):
    path, _, _ = archive
    holders = [(xy, f) for xy, feats in _features(path, 16).items() for f in feats if f["properties"]["id"] == "b000"]
    assert len(holders) == 2
    for _, f in holders:  # clipped to the tile plus its 64-unit buffer
        xs = [p[0] for p in f["geometry"]["coordinates"][0]]
        assert -vector_tiles.BUFFER <= min(xs) and max(xs) <= vector_tiles.EXTENT + vector_tiles.BUFFER


def test_properties_are_rounded_and_unknowns_are_absent_with_their_reason(archive):
    path, _, table = archive
    feats = {f["properties"]["id"]: f for fs in _features(path, 16).values() for f in fs}
    b5 = table.iloc[5]
    p = feats["b005"]["properties"]
    assert p["height_m"] == pytest.approx(b5["height_m"], rel=5e-3)
    assert p["floors"] == b5["floors"] and p["function"] == b5["building_function"]
    assert p["stock_t_m2"] == pytest.approx(1.5, rel=1e-3)  # 1500 kg per m² of footprint
    assert p["stock_rel90"] == pytest.approx((2600 - 800) / 1400, rel=5e-3)
    assert p["mass_t_p05"] <= p["mass_t"] <= p["mass_t_p95"]
    unknown = feats["b003"]["properties"]
    assert "height_m" not in unknown and unknown["height_why"].startswith("no_estimate")
    assert unknown["roof_material"] == "unknown" and unknown["roof_material_why"] == REASON
    assert "mass_t" not in unknown and "stock_t_m2" not in unknown


def test_a_courtyard_stays_a_hole_with_the_spec_s_winding(archive):
    path, _, _ = archive
    feats = {f["properties"]["id"]: f for fs in _features(path, 16).values() for f in fs}
    rings = feats["b001"]["geometry"]["coordinates"]
    assert feats["b001"]["geometry"]["type"] == "Polygon" and len(rings) == 2

    def surveyor(ring):  # the spec's area in tile coordinates (y down): exterior > 0, hole < 0
        xy = np.asarray(ring, dtype=float)
        return float(np.sum(xy[:-1, 0] * xy[1:, 1] - xy[1:, 0] * xy[:-1, 1]) / 2)

    assert surveyor(rings[0]) > 0 > surveyor(rings[1])
    outer, hole = Polygon(rings[0]), Polygon(rings[1])
    assert hole.area / outer.area == pytest.approx(400 / 1600, rel=0.05)  # 20 m of 40 m


def test_specks_are_dropped_below_the_max_zoom_and_counted(archive):
    path, stats, table = archive
    at12 = {f["properties"]["id"] for fs in _features(path, 12).values() for f in fs}
    assert "b002" not in at12 and at12 == set(table["building_id"]) - {"b002"}
    assert stats.dropped_per_zoom[12] == 1 and stats.features_per_zoom[12] == len(table) - 1
    _, meta = archive_metadata(path)
    assert meta["urbanfabric"]["dropped_per_zoom"]["12"] == 1


def test_a_full_tile_keeps_its_largest_buildings(tmp_path):
    table = _table()
    spill = TileSpill(tmp_path / "s.sqlite", TileOptions(max_features_per_tile=5))
    spill.add(table)
    stats = spill.write(tmp_path / "b.pmtiles")
    z12 = _features(tmp_path / "b.pmtiles", 12)
    assert sum(len(f) for f in z12.values()) == 5 * len(z12)
    kept = {f["properties"]["id"] for fs in z12.values() for f in fs}
    largest = set(table.assign(a=table.geometry.area).nlargest(5, "a")["building_id"])
    assert len(z12) == 1 and kept == largest
    assert stats.dropped_per_zoom[12] == 1 and stats.capped_per_zoom[12] == len(table) - 1 - 5


def test_a_clipped_piece_with_a_line_keeps_only_its_polygon():
    """Clipping an outline along a tile's buffered edge can give a polygon plus a line (a
    GeometryCollection, which MVT cannot hold); the spill keeps the polygon."""
    from shapely.geometry import GeometryCollection, LineString

    e = vector_tiles.EXTENT
    piece = GeometryCollection([box(e * 5 + 10, e * 7 + 10, e * 5 + 90, e * 7 + 50),
                                LineString([(e * 5 + 100, e * 7 + 10), (e * 5 + 100, e * 7 + 60)])])
    rows = TileSpill._pieces(16, np.array([piece], dtype=object), np.array([3]), np.array([3200.0]),
                             np.array([5]), np.array([7]), True)
    assert len(rows) == 1 and rows[0][2] == 3
    assert shapely.from_wkb(rows[0][4]).equals(box(10, 10, 90, 50))


def test_bad_input_names_the_field(tmp_path):
    spill = TileSpill(tmp_path / "s.sqlite")
    with pytest.raises(InvalidInput, match="buildings"):
        spill.add(gpd.GeoDataFrame({"building_id": ["a"]}, geometry=[box(0, 0, 1, 1)]))
    with pytest.raises(InvalidInput, match="buildings"):
        spill.write(tmp_path / "b.pmtiles")
    assert not (tmp_path / "b.pmtiles").exists()
    with pytest.raises(InvalidInput, match="tiles.zoom"):
        TileOptions(min_zoom=17)


def test_tile_ids_match_the_pmtiles_reference():
    rng = np.random.default_rng(1)
    for z in (0, 1, 5, 12, 16, 20):
        x, y = rng.integers(0, 1 << z, 50), rng.integers(0, 1 << z, 50)
        assert vector_tiles.tile_ids(z, x, y).tolist() == [zxy_to_tileid(z, int(a), int(b)) for a, b in zip(x, y)]


def test_the_encoder_round_trips_through_the_reference_decoder():
    square = box(10, 10, 110, 60)
    repeats = Polygon([(200, 200), (200, 200), (260, 200), (260, 260), (200, 260)])  # a repeated vertex
    multi = shapely.MultiPolygon([box(300, 300, 320, 320), box(400, 300, 450, 340)])
    flat = Polygon([(500, 500), (600, 500), (550, 500)])  # zero area: left out
    geoms = np.array([square, repeats, multi, flat], dtype=object)
    columns = {"name": ["a", None, "c", "d"], "h": np.array([1.5, np.nan, 3.0, 4.0]),
               "big": np.array([123456.0, 2.0, 3.0, 4.0])}
    tile = mapbox_vector_tile.decode(mvt.encode_layer("L", geoms, [7, 8, 9, 10], columns),
                                     default_options={"y_coord_down": True})
    feats = {f["id"]: f for f in tile["L"]["features"]}
    assert sorted(feats) == [7, 8, 9]
    assert shapely.geometry.shape(feats[7]["geometry"]).equals(square)
    assert shapely.geometry.shape(feats[8]["geometry"]).equals(box(200, 200, 260, 260))
    assert shapely.geometry.shape(feats[9]["geometry"]).equals(multi)
    assert feats[7]["properties"] == {"name": "a", "h": 1.5, "big": 123456.0}
    assert feats[8]["properties"] == {"big": 2.0}  # unknowns carry no tag
    assert tile["L"]["extent"] == 4096


def test_varints_match_protobuf():
    from mapbox_vector_tile.Mapbox import vector_tile_pb2

    values = np.array([0, 1, 127, 128, 300, 16383, 16384, 2 ** 21, 2 ** 28 + 5])
    blob, lengths = mvt._varints(values)
    reference = []
    for v in values.tolist():  # a Feature with only its id: b"\x08" + the varint
        feature = vector_tile_pb2.tile.feature(id=v)
        reference.append(feature.SerializeToString()[1:])
    assert blob == b"".join(reference) == b"".join(mvt.varint(int(v)) for v in values)
    assert lengths.tolist() == [len(r) for r in reference]
