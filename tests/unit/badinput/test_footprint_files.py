"""Bring-your-own footprint files that are broken, empty, foreign or hostile.

Each must give ``InvalidInput`` on ``footprints`` (or a sub-field), never a traceback from
GDAL/pyarrow, and the reader must go on reading a good file afterwards.
"""

from __future__ import annotations

import io
import json

import geopandas as gpd
import pytest
from shapely.geometry import Point, Polygon, box

from urbanfabric.errors import InvalidInput
from urbanfabric.footprints.user_footprints import load_footprints

GOOD = box(118.080, 24.470, 118.0802, 24.4702)


def _geojson(features: list[dict], crs: str | None = None) -> bytes:
    doc: dict = {"type": "FeatureCollection", "features": features}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    return json.dumps(doc).encode()


def _feature(geom: dict | None, **props) -> dict:
    return {"type": "Feature", "geometry": geom, "properties": props}


def _parquet(frame: gpd.GeoDataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


def _good_parquet() -> bytes:
    return _parquet(gpd.GeoDataFrame({"a": [1]}, geometry=[GOOD], crs="EPSG:4326"))


SQUARE = {"type": "Polygon", "coordinates": [[[118.08, 24.47], [118.0802, 24.47], [118.0802, 24.4702],
                                              [118.08, 24.4702], [118.08, 24.47]]]}

CASES: list[tuple[str, bytes, str]] = [
    ("empty.geojson", b"", "footprints"),
    ("garbage.geojson", b"\x00\x01\x02 not json at all", "footprints"),
    ("truncated.geojson", _geojson([_feature(SQUARE)])[:40], "footprints"),
    ("latin1.geojson", "{\"type\": \"FeatureCollection\", \"name\": \"Z\xfcrich\", \"features\": [".encode("latin-1"),
     "footprints"),
    ("no-features.geojson", _geojson([]), "footprints"),
    ("points.geojson", _geojson([_feature({"type": "Point", "coordinates": [118.08, 24.47]})]), "footprints"),
    ("lines.geojson", _geojson([_feature({"type": "LineString", "coordinates": [[118.08, 24.47], [118.09, 24.48]]})]),
     "footprints"),
    ("null-geometry.geojson", _geojson([_feature(None, name="x")]), "footprints"),
    ("collapsed.geojson", _geojson([_feature({"type": "Polygon", "coordinates": [[[118.08, 24.47], [118.08, 24.47],
                                                                                  [118.08, 24.47], [118.08, 24.47]]]})]),
     "footprints"),
    ("metres-as-degrees.geojson", _geojson([_feature({"type": "Polygon", "coordinates": [[[600000, 2710000],
                                                                                          [600010, 2710000],
                                                                                          [600010, 2710010],
                                                                                          [600000, 2710000]]]})]),
     "footprints.crs"),
    ("latitude-out-of-range.geojson", _geojson([_feature({"type": "Polygon", "coordinates": [[[10, 95], [10.1, 95],
                                                                                              [10.1, 95.1], [10, 95]]]})]),
     "footprints.crs"),
    ("nan.geojson", b'{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},'
                    b'"geometry":{"type":"Polygon","coordinates":[[[NaN,1],[2,2],[2,1],[NaN,1]]]}}]}', "footprints"),
    ("footprints.shp", b"\x00\x00\x27\x0a", "footprints"),
    ("footprints.csv", b"wkt\nPOLYGON((0 0,1 0,1 1,0 0))\n", "footprints"),
    ("no-extension", _geojson([_feature(SQUARE)]), "footprints"),
    ("empty.parquet", b"", "footprints"),
    ("truncated.parquet", _good_parquet()[:100], "footprints"),
    ("not-geo.parquet", b"PAR1" + b"\x00" * 64 + b"PAR1", "footprints"),
    ("no-crs.parquet", _parquet(gpd.GeoDataFrame({"a": [1]}, geometry=[GOOD], crs=None)), "footprints"),
    ("points.parquet", _parquet(gpd.GeoDataFrame({"a": [1]}, geometry=[Point(118.08, 24.47)], crs="EPSG:4326")),
     "footprints"),
    ("broken.osm.pbf", b"\x00\x00\x00\x0dnot a pbf block", "footprints"),
    ("self-touching-only-slivers.geojson",
     _geojson([_feature({"type": "Polygon", "coordinates": [[[118.08, 24.47], [118.08000001, 24.47],
                                                             [118.08, 24.47000001], [118.08, 24.47]]]})]),
     "footprints"),
]


@pytest.mark.parametrize(("name", "blob", "field"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_footprint_file_names_the_field_and_the_reader_goes_on(name, blob, field):
    with pytest.raises(InvalidInput) as err:
        load_footprints(blob, name)
    assert err.value.field == field, str(err.value)
    assert "Traceback" not in str(err.value)
    good = load_footprints(_geojson([_feature(SQUARE)]), "good.geojson")
    assert len(good) == 1


def test_a_bowtie_is_repaired_not_rejected():
    bowtie = Polygon([(118.08, 24.47), (118.0802, 24.4702), (118.0802, 24.47), (118.08, 24.4702)])
    blob = _parquet(gpd.GeoDataFrame({"a": [1]}, geometry=[bowtie], crs="EPSG:4326"))
    out = load_footprints(blob, "bowtie.parquet")
    assert len(out) == 1 and out.geometry.is_valid.all()
