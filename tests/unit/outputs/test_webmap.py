"""The interactive map (issue 23, item 1): urbanfabric.outputs.webmap."""

from __future__ import annotations

import hashlib
import html as html_lib
import json
import re
import shutil
import subprocess

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from urbanfabric.errors import InvalidInput
from urbanfabric.outputs import webmap
from urbanfabric.outputs.grids import rasterize_sums

REASON = "out_of_domain: imagery of 0.54 m per pixel; the model was trained on 0.02–0.15 m"


def _table() -> gpd.GeoDataFrame:
    """Three buildings in UTM 50N (Xiamen), one with an unknown height and roof material."""
    x0, y0 = 790_000.0, 2_710_000.0
    geoms = [box(x0, y0, x0 + 20, y0 + 10), box(x0 + 40, y0, x0 + 55, y0 + 30),
             box(x0 + 100, y0 + 80, x0 + 112.3, y0 + 91.7)]
    return gpd.GeoDataFrame({
        "building_id": ["b1", "b2", "b3"],
        "footprint_area_m2": [200.0, 450.0, 143.9],
        "height_m": [7.5, 42.0, np.nan],
        "height_p05": [5.0, 30.0, np.nan],
        "height_p95": [11.0, 61.0, np.nan],
        "height_source_reason": [None, None, "no_estimate: no imagery over the footprint"],
        "roof_material": ["concrete_cement", "metal", "unknown"],
        "roof_material_probability": [0.81, 0.66, 0.0],
        "roof_material_unknown_reason": [None, None, REASON],
        "mass_total_kg": [300_000.0, 9_000_000.0, np.nan],
        "mass_total_kg_p05": [100_000.0, 5_000_000.0, np.nan],
        "mass_total_kg_mc_p50": [280_000.0, 8_500_000.0, np.nan],
        "mass_total_kg_p95": [900_000.0, 20_000_000.0, np.nan],
        "tile_id": ["WebMercatorQuad-16-54267-28169"] * 3,
    }, geometry=geoms, crs="EPSG:32650")


def _data(html: bytes) -> dict:
    m = re.search(rb'<script id="uf-data" type="application/json">(.*?)</script>', html, re.S)
    assert m, "no data block"
    return json.loads(m.group(1))


def _popup(data: dict, label: str, i: int) -> dict:
    """The popup line ``label`` of building ``i``: its slots resolved (strings looked up)."""
    field = next(f for f in data["fields"] if f["label"] == label)
    out = {}
    for slot in ("value", "low", "high", "probability", "reason"):
        k = field[slot]
        if k is None:
            continue
        col = data["columns"][k]
        v = col["v"][i]
        out[slot] = (data["strings"][v - 1] if v else None) if col["s"] else v
    return out


def test_vendored_leaflet_matches_its_digests() -> None:
    for name, digest in webmap.LEAFLET_SHA256.items():
        assert hashlib.sha256((webmap.ASSETS / name).read_bytes()).hexdigest() == digest


def test_html_is_self_contained_with_legend_popups_and_basemap_note() -> None:
    table = _table()
    grids = rasterize_sums(table, 100, ["mass_total_kg"])
    layers = [webmap.GridLayer("mass_total_kg (100 m cells)", grids["mass_total_kg"], "kg")]
    opts = webmap.WebmapOptions(attribute="roof_material", attribution="imagery: sample:xiamen-z18",
                                imagery_footprint=webmap.tiles_footprint(table.tile_id))
    html = webmap.webmap_html(table, layers, opts)
    text = html.decode()
    # Offline: no external script or stylesheet; Leaflet is inline.
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+stylesheet", text)
    assert "sourceMappingURL" not in text
    assert "L.map(" in text and ".leaflet-container" in text
    # The visible note for a missing basemap, wired to tile errors.
    assert 'id="uf-basemap-note"' in text and "tileerror" in text and "Basemap unavailable" in text
    data = _data(html)
    # Legend: the chosen colouring with its classes, plus the others to switch to.
    assert data["attribute"] == "roof_material"
    assert set(data["colourings"]) == {"height", "stock_per_m2", "roof_material", "uncertainty"}
    roof = data["colourings"]["roof_material"]
    assert roof["classes"] == ["concrete_cement", "metal"] or roof["classes"] == ["metal", "concrete_cement"]
    assert roof["index"][2] == -1  # "unknown" is not a class, it is the grey unknown entry
    height = data["colourings"]["height"]
    assert height["index"] == [1, 5, -1]  # 7.5 m in 6–10, 42 m in 40–60, NaN unknown
    # Popups: ranges and unknown reasons.
    assert _popup(data, "height", 1) == {"value": 42, "low": 30, "high": 61, "reason": None}
    assert _popup(data, "height", 2)["reason"] == "no_estimate: no imagery over the footprint"
    assert _popup(data, "roof material", 2) == {"value": "unknown", "probability": 0, "reason": REASON}
    assert _popup(data, "roof material", 0)["probability"] == 0.81
    # Tonnes, with the 5–95 % range.
    assert _popup(data, "material stock", 1) == {"value": 9000, "low": 5000, "high": 20000}
    # Grid overlay and imagery footprint.
    assert len(data["grids"]) == 1 and data["grids"][0]["png"].startswith("data:image/png;base64,")
    assert data["footprint"] and data["attribution"] == "imagery: sample:xiamen-z18"


def test_geometry_round_trips_to_wgs84() -> None:
    table = _table()
    data = webmap.map_data(table, options=webmap.WebmapOptions(simplify_m=0))
    ring = data["geometry"][1][0][0]
    x, y = data["origin"]
    pts = []
    for i in range(0, len(ring), 2):
        x += ring[i]
        y += ring[i + 1]
        pts.append((x / data["scale"], y / data["scale"]))
    expect = np.asarray(table.to_crs(4326).geometry.iloc[1].exterior.coords)[:-1]
    assert np.allclose(pts, expect, atol=2e-6)


def test_unknown_attribute_and_missing_crs_are_named() -> None:
    with pytest.raises(InvalidInput, match="attribute"):
        webmap.map_data(_table(), options=webmap.WebmapOptions(attribute="colour"))
    with pytest.raises(InvalidInput, match="CRS"):
        webmap.map_data(_table().set_crs(None, allow_override=True))


def test_no_basemap_shows_the_note_from_the_start(tmp_path) -> None:
    path = webmap.write_webmap(_table(), [], tmp_path, webmap.WebmapOptions(basemap_url=""))
    assert path.name == "map.html"
    data = _data(path.read_bytes())
    assert data["basemap"]["url"] == ""


def test_tiles_footprint_covers_the_tile() -> None:
    fp = webmap.tiles_footprint(["WebMercatorQuad-16-54267-28169", "not-a-tile"])
    assert fp is not None
    west, south, east, north = fp.bounds
    # morecantile: WebMercatorQuad tile (54267, 28169, 16) has these bounds.
    assert (west, south, east, north) == pytest.approx((118.09753418, 24.47715001, 118.10302734, 24.48214939))


def test_job_map_has_grids_area_footprint_and_attribution() -> None:
    table = _table()
    table["model_versions"] = '{"roof": "roof-material:v4", "height": "height-xgb:v4"}'
    params = {"area": [118.0975, 24.4771, 118.1085, 24.4871], "imagery": "sample:xiamen-z18"}
    data = _data(webmap.job_map_html(table, "job-1", params))
    assert data["title"] == "urbanfabric job job-1"
    assert "imagery: sample:xiamen-z18" in data["attribution"] and "height-xgb:v4" in data["attribution"]
    names = [g["name"] for g in data["grids"]]
    assert "mass_total_kg (100 m cells)" in names and "buildings (250 m cells)" in names
    count = next(g for g in data["grids"] if g["name"] == "buildings (100 m cells)")
    assert count["classes"][0].endswith("buildings")
    assert len(data["area"]) == 1 and len(data["footprint"]) == 1
    # The aggregate step passes every tile read, including one without buildings.
    both = _data(webmap.job_map_html(table, "job-1", params, tile_ids=["WebMercatorQuad-16-54267-28169",
                                                                       "WebMercatorQuad-16-54268-28169"]))
    lons = [p[1] for ring in both["footprint"] for p in ring]
    assert max(lons) == pytest.approx(118.108521, abs=1e-6)


def test_empty_table_still_makes_a_page() -> None:
    data = _data(webmap.job_map_html(_table().iloc[:0], "job-0", {}))
    assert data["geometry"] == [] and data["grids"] == []


def test_cli_open_builds_map_in_an_exported_folder(tmp_path, capsys) -> None:
    from urbanfabric.cli.main import main

    _table().to_parquet(tmp_path / "buildings.parquet")
    (tmp_path / "job.json").write_text(json.dumps({"job_id": "job-2", "parameters": {"imagery": "x"}}))
    assert main(["open", str(tmp_path), "--no-browser"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(tmp_path / "map.html")
    assert _data((tmp_path / "map.html").read_bytes())["title"] == "urbanfabric job job-2"
    assert main(["open", str(tmp_path / "missing"), "--no-browser"]) == 2


def test_mixed_polygons_and_multipolygons_encode_one_entry_per_building() -> None:
    from shapely.geometry import MultiPolygon

    geoms = np.array([box(1, 2, 1.001, 2.002),
                      MultiPolygon([box(1, 2, 1.001, 2.001), box(1.01, 2.01, 1.011, 2.011)]),
                      box(1, 2, 1.002, 2.002)], dtype=object)
    enc = webmap._encode_geometries(geoms, (1_000_000, 2_000_000))
    assert [len(g) for g in enc] == [1, 2, 1]  # polygons per building, not all rows merged
    assert enc[2] == [[[2000, 0, 0, 2000, -2000, 0, 0, -2000]]]
    assert enc[1][1][0][:2] == [11000, 10000]  # each ring starts from the origin


class _MemoryStore:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_bytes(self, key: str) -> bytes:
        return self.objects[key]

    def exists(self, key: str) -> bool:
        return key in self.objects

    def list(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))


def test_export_builds_map_html_or_copies_the_jobs(tmp_path) -> None:
    from urbanfabric.cli.demo import export
    from urbanfabric.io.geoparquet import geoparquet_bytes
    from urbanfabric.io.job_layout import JobLayout

    layout = JobLayout("job-3")
    objects = {layout.buildings: geoparquet_bytes(_table()), layout.map_png: b"png", layout.report: b"# r",
               layout.job_json: json.dumps({"job_id": "job-3", "parameters": {}}).encode()}
    files = export(_MemoryStore(objects), "job-3", tmp_path / "a")  # type: ignore[arg-type]
    assert tmp_path / "a" / "map.html" in files
    assert _data((tmp_path / "a" / "map.html").read_bytes())["title"] == "urbanfabric job job-3"
    objects[f"{layout.outputs}/map.html"] = b"<html>the job's own</html>"
    export(_MemoryStore(objects), "job-3", tmp_path / "b")  # type: ignore[arg-type]
    assert (tmp_path / "b" / "map.html").read_bytes() == b"<html>the job's own</html>"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium (Debian's chromium) not installed")
def test_headless_chromium_finds_buildings_popup_and_basemap_note(tmp_path) -> None:
    """Loads map.html in headless Chromium; the page's #uf-selftest hook opens a popup and reports.

    The basemap URL points at an unroutable address, so its tiles fail as they would offline.
    """
    opts = webmap.WebmapOptions(basemap_url="http://127.0.0.1:9/{z}/{x}/{y}.png")
    path = webmap.write_webmap(_table(), [], tmp_path, opts)
    out = subprocess.run(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", path.resolve().as_uri() + "#uf-selftest"],
        capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="uf-selftest">(\{.*?\})</pre>', out.stdout, re.S)
    assert m, f"no self-test output; stderr: {out.stderr[-2000:]}"
    result = json.loads(html_lib.unescape(m.group(1)))
    assert result["buildings"] == 3
    assert result["popup"].startswith("buildingb1") and "7.5 m (5–11)" in result["popup"]
    assert result["basemap_note"] is True
    assert "unknown / not estimated" in result["legend"]
