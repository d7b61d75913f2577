import json

import geopandas as gpd
import pytest
from shapely.geometry import box

from urbanfabric.errors import InvalidInput
from urbanfabric.footprints.user_footprints import clip_to_area, load_footprints
from urbanfabric.io.geoparquet import geoparquet_bytes


def _frame():
    o = (600000, 2710000)  # UTM 50N, near Xiamen
    return gpd.GeoDataFrame({"name": ["a", "b", "a-dup"]},
                            geometry=[box(*o, o[0] + 10, o[1] + 20), box(o[0] + 30, o[1], o[0] + 40, o[1] + 10),
                                      box(*o, o[0] + 10, o[1] + 20)],
                            crs="EPSG:32650")


def test_geojson_and_geoparquet_give_the_same_footprints():
    frame = _frame()
    from_json = load_footprints(frame.to_crs(4326).to_json().encode(), "fp.geojson")
    from_parquet = load_footprints(geoparquet_bytes(frame), "fp.parquet")
    assert len(from_json) == 2  # the duplicate polygon is dropped: it would double-count stock
    assert sorted(from_json["building_id"]) == sorted(from_parquet["building_id"])
    assert sorted(from_json["footprint_area_m2"].round(1)) == [100.0, 200.0]
    assert (from_json["footprint_source"] == "user").all() and from_json.crs.to_epsg() == 4326


def test_osm_extract_buildings(helsinki_osm):
    pbf = sorted(helsinki_osm.glob("*.osm.pbf"))
    if not pbf:
        pytest.skip("no .osm.pbf in the Helsinki sample")
    fp = load_footprints(pbf[0].read_bytes(), pbf[0].name)
    assert len(fp) > 10 and (fp["footprint_source"] == "osm").all()
    assert fp["footprint_area_m2"].between(1, 1e6).all()


@pytest.mark.parametrize("blob,name,msg", [
    (b"{not json", "bad.geojson", "cannot read"),
    (json.dumps({"type": "FeatureCollection", "features": []}).encode(), "empty.geojson", "no polygon"),
    (b"x", "footprints.csv", "unsupported"),
])
def test_bad_footprint_files_name_the_field(blob, name, msg):
    with pytest.raises(InvalidInput) as err:
        load_footprints(blob, name)
    assert err.value.field == "footprints" and msg in str(err.value)


def test_clip_keeps_each_building_once():
    fp = load_footprints(_frame().to_crs(4326).to_json().encode(), "fp.geojson")
    w, s, e, n = fp.total_bounds
    mid = (w + e) / 2
    left, right = clip_to_area(fp, (w - 1, s - 1, mid, n + 1)), clip_to_area(fp, (mid, s - 1, e + 1, n + 1))
    assert len(left) + len(right) == len(fp)


def test_osm_extract_streams_to_the_same_buildings(helsinki_osm):
    from urbanfabric.footprints.user_footprints import iter_footprint_chunks, normalise_chunk

    pbf = sorted(helsinki_osm.glob("*.osm.pbf"))
    if not pbf:
        pytest.skip("no .osm.pbf in the Helsinki sample")
    whole = load_footprints(pbf[0].read_bytes(), pbf[0].name)
    parts = [normalise_chunk(c, "osm") for c in iter_footprint_chunks(str(pbf[0]), chunk_rows=500)]
    ids = {i for p in parts for i in p["building_id"]}
    assert ids == set(whole["building_id"])
