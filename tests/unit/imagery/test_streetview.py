"""Street-level views: local catalog, Mapillary v4 adapter (against a local HTTP server that
answers with v4-format JSON), and the CMAB 45°–135° view selection."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import geopandas as gpd
import pytest
from shapely.geometry import Point, box

from urbanfabric.errors import InvalidInput
from urbanfabric.imagery.streetview import (
    LocalCatalog,
    MapillaryV4,
    StreetViewSource,
    signed_angle,
    views_for_buildings,
)

UTM = "EPSG:32650"
CX, CY = 611_500.0, 2_707_700.0  # a 20 m square building in Xiamen (UTM 50N)
DATA = Path(__file__).parent / "data" / "mapillary_v4_images.json"


def _buildings():
    return gpd.GeoDataFrame({"building_id": ["b1", "far"]},
                            geometry=[box(CX - 10, CY - 10, CX + 10, CY + 10), box(CX + 900, CY, CX + 920, CY + 20)],
                            crs=UTM)


def _geojson(tmp_path):
    views = {  # id: (x, y, heading)
        "south-looking-east": (CX, CY - 20, 90.0),    # building on its left, 10 m
        "south-looking-north": (CX, CY - 20, 0.0),    # facing it head-on: rejected
        "west-looking-north": (CX - 40, CY, 0.0),     # building on its right, 30 m
        "far-east": (CX + 90, CY, 180.0),             # 80 m away: beyond 50 m
        "north-looking-west": (CX, CY + 15, 270.0),   # on its left, 5 m: nearest
        "inside": (CX, CY, 90.0),                     # inside the outline: skipped
    }
    pts = gpd.GeoSeries([Point(x, y) for x, y, _ in views.values()], crs=UTM).to_crs("EPSG:4326")
    feats = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [p.x, p.y]},
              "properties": {"id": k, "heading": h, "image_uri": f"img/{k}.jpg", "captured_at": "2023-05-01T10:00:00Z"}}
             for (k, (_, _, h)), p in zip(views.items(), pts)]
    path = tmp_path / "views.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return str(path)


def test_signed_angle_wraps_and_tells_sides():
    assert signed_angle(90, 0) == -90 and signed_angle(0, 90) == 90
    assert signed_angle(350, 80) == 90 and signed_angle(10, 280) == -90 and signed_angle(0, 180) == 180


def test_views_facing_the_building_nearest_first(tmp_path):
    catalog = LocalCatalog.from_path(_geojson(tmp_path))
    assert isinstance(catalog, StreetViewSource)
    out = views_for_buildings(_buildings(), catalog, max_distance_m=50, max_views=3)
    assert list(out["view_id"]) == ["north-looking-west", "south-looking-east", "west-looking-north"]
    assert set(out["building_id"]) == {"b1"}
    assert list(out["side"]) == ["left", "left", "right"]
    assert out["distance_m"].tolist() == pytest.approx([5, 10, 30], abs=0.05)
    assert out["angle_deg"].abs().tolist() == pytest.approx([90, 90, 90], abs=0.5)
    assert out["look_bearing_deg"].tolist() == pytest.approx([180, 0, 90], abs=0.5)
    assert list(out["rank"]) == [0, 1, 2]
    two = views_for_buildings(_buildings(), catalog, max_views=2)
    assert list(two["view_id"]) == ["north-looking-west", "south-looking-east"]
    # A narrower angle window keeps only exactly-sideways views; a wider one admits head-on ones.
    wide = views_for_buildings(_buildings(), catalog, min_angle=0, max_angle=180, max_views=10)
    assert "south-looking-north" in set(wide["view_id"]) and "inside" not in set(wide["view_id"])


def test_csv_catalog_and_bad_catalogs(tmp_path):
    csv_path = tmp_path / "views.csv"
    csv_path.write_text("id,lon,lat,heading,image_uri,captured_at\nv1,118.1,24.48,45,a.jpg,\n")
    views = LocalCatalog.from_path(str(csv_path)).views_in_bbox((118.0, 24.0, 119.0, 25.0))
    assert [v.view_id for v in views] == ["v1"] and views[0].captured_at is None
    (tmp_path / "bad.csv").write_text("id,lon,lat\nv1,118.1,24.48\n")
    with pytest.raises(InvalidInput) as err:
        LocalCatalog.from_path(str(tmp_path / "bad.csv"))
    assert err.value.field == "streetview" and "heading" in err.value.message
    with pytest.raises(InvalidInput):
        views_for_buildings(_buildings().set_crs(None, allow_override=True), LocalCatalog([]))


@pytest.fixture
def mapillary_server():
    """A local HTTP server answering like graph.mapillary.com/images, recording requests."""
    pages = json.loads(DATA.read_text())
    seen: list[tuple[str, dict, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server API
            url = urlparse(self.path)
            seen.append((url.path, parse_qs(url.query), self.headers.get("Authorization", "")))
            if self.headers.get("Authorization") != "OAuth MLY|test-token":
                body, code = {"error": {"message": "Invalid OAuth access token", "code": 190}}, 401
            elif url.path != "/images":
                body, code = {"error": {"message": "unknown path"}}, 404
            elif "page=2" in url.query:
                body, code = pages["page2"], 200
            else:
                page = json.loads(json.dumps(pages["page1"]).replace("__BASE__", base))
                body, code = page, 200
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base, seen
    server.shutdown()
    server.server_close()


def test_mapillary_v4_adapter_queries_bbox_and_fields_and_pages(mapillary_server, monkeypatch):
    base, seen = mapillary_server
    monkeypatch.setenv("MAPILLARY_ACCESS_TOKEN", "MLY|test-token")
    source = MapillaryV4(base_url=base)
    assert isinstance(source, StreetViewSource)
    out = views_for_buildings(_buildings().iloc[:1], source)
    path, query, auth = seen[0]
    assert path == "/images" and auth == "OAuth MLY|test-token"
    assert query["fields"] == ["id,computed_compass_angle,geometry,thumb_1024_url,captured_at"]
    w, s, e, n = map(float, query["bbox"][0].split(","))
    centre = gpd.GeoSeries([Point(CX, CY)], crs=UTM).to_crs("EPSG:4326").iloc[0]
    assert w < centre.x < e and s < centre.y < n and e - w < 0.01
    assert len(seen) == 2 and seen[1][1] == {"page": ["2"]}  # followed paging.next
    # 1001: south, looking east → left side; 1002: head-on → rejected; 1003: west, looking
    # north → right side; 1004 has no compass angle → unusable.
    assert list(out["view_id"]) == ["1001", "1003"]
    assert out["image_uri"].iloc[0] == "https://scontent.example/1001.jpg"
    assert out["captured_at"].iloc[0].year == 2020 and list(out["source"]) == ["mapillary", "mapillary"]


def test_mapillary_needs_a_valid_token(mapillary_server, monkeypatch):
    base, _ = mapillary_server
    monkeypatch.delenv("MAPILLARY_ACCESS_TOKEN", raising=False)
    with pytest.raises(InvalidInput) as err:
        MapillaryV4(base_url=base).views_in_bbox((118.1, 24.47, 118.11, 24.48))
    assert err.value.field == "MAPILLARY_ACCESS_TOKEN"
    with pytest.raises(InvalidInput) as err:
        MapillaryV4(token="MLY|wrong", base_url=base).views_in_bbox((118.1, 24.47, 118.11, 24.48))
    assert "401" in err.value.message
