"""The tile viewer (issue 23, item 2): urbanfabric.outputs.viewer, the loopback range server
(urbanfabric.cli.serve) and, where Playwright and Chromium are installed, the page itself."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import urllib.error
import urllib.request

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box
from urbanfabric.cli.serve import serve_in_background
from urbanfabric.errors import InvalidInput
from urbanfabric.outputs import viewer
from urbanfabric.outputs.vector_tiles import TileSpill

UNROUTABLE_BASEMAP = "http://127.0.0.1:9/{z}/{x}/{y}.png"  # fails at once, as offline


def _site(folder, n: int = 120, attribute: str = "height"):
    """A folder with buildings.pmtiles and viewer.html of ``n`` buildings in Xiamen."""
    rng = np.random.default_rng(0)
    x, y = 118.08 + rng.random(n) * 0.004, 24.47 + rng.random(n) * 0.004
    table = gpd.GeoDataFrame({
        "building_id": [f"b{i:03d}" for i in range(n)], "height_m": rng.uniform(3, 70, n),
        "height_p05": 2.0, "height_p95": 90.0, "floors": 4, "footprint_area_m2": 300.0,
        "roof_material": rng.choice(["metal", "unknown"], n), "roof_material_unknown_reason": None,
        "building_function": "residential", "mass_total_kg": 4e5, "mass_total_kg_p05": 2e5,
        "mass_total_kg_p95": 8e5,
    }, geometry=[box(a, b, a + 1.5e-4, b + 1e-4) for a, b in zip(x, y)], crs=4326)
    spill = TileSpill(folder / "spill.sqlite")
    spill.add(table)
    stats = spill.write(folder / viewer.ARCHIVE_NAME)
    config = viewer.viewer_config(stats, "test job", attribute, basemap_url=UNROUTABLE_BASEMAP,
                                  attribution="urbanfabric job test")
    (folder / "viewer.html").write_bytes(viewer.viewer_html(config))
    return stats, config


def test_vendored_files_match_their_digests_and_the_readme():
    readme = (viewer.ASSETS / "README.md").read_text()
    for name, digest in viewer.VIEWER_SHA256.items():
        assert hashlib.sha256((viewer.ASSETS / name).read_bytes()).hexdigest() == digest
        assert re.search(rf"\| {re.escape(name)} \|.*\| {digest} \|", readme), name
    for licence in ("MAPLIBRE_LICENSE", "PMTILES_LICENSE"):
        assert "Redistribution and use" in (viewer.ASSETS / licence).read_text()


def test_the_page_inlines_everything_but_the_basemap(tmp_path):
    stats, config = _site(tmp_path)
    page = (tmp_path / "viewer.html").read_text()
    assert "{{" not in page and "sourceMappingURL" not in page
    assert "maplibregl" in page and "pmtiles" in page and "window.ufViewer" in page
    data = json.loads(re.search(r'<script id="uf-config" type="application/json">(.*?)</script>', page, re.DOTALL)
                      .group(1))
    assert data == json.loads(json.dumps(config))
    assert data["archive"] == "buildings.pmtiles" and data["layer"] == "buildings"
    assert data["colourings"]["roof_material"]["classes"] == ["metal"]  # "unknown" is the grey class
    assert data["colourings"]["height"]["edges"][:3] == [0.0, 6.0, 10.0]
    assert {p["value"] for p in data["popup"]} >= {"id", "height_m", "floors", "function", "roof_material",
                                                     "stock_t_m2", "stock_rel90"}
    assert data["buildings"] == stats.buildings == 120
    assert not re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=", page)  # nothing loaded from elsewhere


def test_a_bad_colouring_names_the_field(tmp_path):
    with pytest.raises(InvalidInput, match="attribute"):
        _site(tmp_path, attribute="colour")


def test_the_loopback_server_answers_byte_ranges(tmp_path):
    data = bytes(range(256)) * 40
    (tmp_path / "a.pmtiles").write_bytes(data)
    server, url = serve_in_background(tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:")
        req = urllib.request.Request(url + "a.pmtiles", headers={"Range": "bytes=100-199"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 206 and resp.read() == data[100:200]
            assert resp.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
            assert resp.headers["Content-Type"] == "application/vnd.pmtiles"
        req = urllib.request.Request(url + "a.pmtiles", headers={"Range": "bytes=-16"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.read() == data[-16:]
        with urllib.request.urlopen(url + "a.pmtiles", timeout=10) as resp:
            assert resp.status == 200 and resp.read() == data
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(url + "a.pmtiles",
                                                          headers={"Range": f"bytes={len(data)}-"}), timeout=10)
        assert err.value.code == 416
    finally:
        server.shutdown()
        server.server_close()


def test_export_copies_the_viewer_its_archive_and_the_job_grids(tmp_path, capsys):
    from urbanfabric.cli.demo import export
    from urbanfabric.io.geoparquet import geoparquet_bytes
    from urbanfabric.io.job_layout import JobLayout

    from tests.fakes import MemoryStore

    _site(tmp_path / "site")
    layout = JobLayout("job-4")
    store = MemoryStore("urbanfabric")
    table = gpd.GeoDataFrame({"building_id": ["a"]}, geometry=[box(118, 24, 118.001, 24.001)], crs=4326)
    for key, data in {layout.buildings: geoparquet_bytes(table), layout.map_png: b"png", layout.report: b"# r",
                      layout.job_json: b'{"job_id": "job-4", "summary": {"buildings": 250000}}',
                      layout.success: b"",
                      f"{layout.outputs}/grids/mass_total_kg_100m.tif": b"cog",
                      f"{layout.outputs}/grids/quadkey=1/mass_total_kg_100m.tif": b"partition cog",
                      f"{layout.outputs}/viewer.html": (tmp_path / "site" / "viewer.html").read_bytes(),
                      f"{layout.outputs}/buildings.pmtiles": (tmp_path / "site" / "buildings.pmtiles").read_bytes(),
                      }.items():
        store.put_bytes(key, data)
    dest = tmp_path / "out"
    files = {p.relative_to(dest).as_posix() for p in export(store, "job-4", dest)}
    assert {"viewer.html", "buildings.pmtiles", "grids/mass_total_kg_100m.tif"} <= files
    assert "map.html" not in files  # the job chose the viewer (too many buildings for map.html)
    assert "urbanfabric open" in capsys.readouterr().err


def test_open_serves_the_viewer_of_a_job_without_map_html(tmp_path, capsys, monkeypatch):
    import http.server

    from urbanfabric.cli.main import main

    _site(tmp_path)
    served = []

    def serve_forever(self, *args, **kwargs):  # stands in for the blocking loop: check, then Ctrl-C
        served.append(self.server_address)
        raise KeyboardInterrupt

    monkeypatch.setattr(http.server.ThreadingHTTPServer, "serve_forever", serve_forever)
    assert main(["open", str(tmp_path), "--no-browser"]) == 0
    out = capsys.readouterr().out
    assert served and served[0][0] == "127.0.0.1"
    assert f"http://127.0.0.1:{served[0][1]}/viewer.html" in out
    (tmp_path / "viewer.html").unlink()  # an export of an older job: a table, no viewer
    gpd.GeoDataFrame({"building_id": ["a"]}, geometry=[box(118, 24, 118.001, 24.001)],
                     crs=4326).to_parquet(tmp_path / "buildings.parquet")
    assert main(["open", str(tmp_path), "--viewer", "--no-browser"]) == 2
    assert "no viewer.html" in capsys.readouterr().err


def _browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright not installed")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("headless Chromium (Debian's chromium) not installed")
    return sync_api, chromium


# WebGL in a headless browser is software-rendered (SwiftShader): slow on 2 shared cores.
BROWSER_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def test_headless_chromium_draws_every_building_and_opens_a_popup(tmp_path):
    """Served over loopback as a static host would: the tiles load by range requests, every
    building in view is drawn, a popup shows the attributes, and the failing basemap is named."""
    sync_api, chromium = _browser()
    _site(tmp_path)
    server, url = serve_in_background(tmp_path)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 900, "height": 700})
            page.goto(url + "viewer.html#uf-selftest")
            page.wait_for_selector("#uf-selftest", state="attached", timeout=150_000)
            result = json.loads(page.inner_text("#uf-selftest"))
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    assert result["state"] == "ready", result
    assert result["ids"] == 120  # the whole (small) area is in view at the fitted zoom
    assert re.match(r"buildingb\d{3}height", result["popup"]) and "(2–90)" in result["popup"]
    assert result["basemap_note"] is True and "unknown / not estimated" in result["legend"]


def test_a_job_seen_whole_below_the_tiles_shows_its_building_count_grid(tmp_path):
    """The viewer overlays the job's grid COGs (previews, linked for download); below z12 the
    building-count grid stands in for the buildings until the reader picks grids."""
    from urbanfabric.outputs import grids

    sync_api, chromium = _browser()
    rng = np.random.default_rng(1)
    x, y = 118.08 + rng.random(300) * 0.02, 24.47 + rng.random(300) * 0.02
    table = gpd.GeoDataFrame({"building_id": [f"g{i}" for i in range(300)], "height_m": 10.0},
                             geometry=[box(a, b, a + 1e-4, b + 1e-4) for a, b in zip(x, y)], crs=4326)
    cog = tmp_path / "grids" / "buildings_250m.tif"
    cog.parent.mkdir()
    count = grids.rasterize_sums(table, 250, [])[grids.COUNT_LAYER]
    cog.write_bytes(grids.cog_with_tags(count, grids.grid_tags("job", grids.COUNT_LAYER, {}, 250)))
    overlays = viewer.grid_overlays([("grids/buildings_250m.tif", cog)])
    assert overlays[0]["name"] == "buildings (250 m cells)" and overlays[0]["href"] == "grids/buildings_250m.tif"
    (west, north), _, (east, south), _ = overlays[0]["coordinates"]
    assert west < 118.08 + 1e-3 and east > 118.10 and south < 24.47 + 1e-3 and north > 24.49
    spill = TileSpill(tmp_path / "spill.sqlite")
    spill.add(table)
    config = viewer.viewer_config(spill.write(tmp_path / viewer.ARCHIVE_NAME), "grid job", grids=overlays,
                                  basemap_url=UNROUTABLE_BASEMAP)
    (tmp_path / "viewer.html").write_bytes(viewer.viewer_html(config))
    server, url = serve_in_background(tmp_path)
    state = "[ufViewer.map.getLayoutProperty('grid-0', 'visibility'), document.querySelector(\"input[data-grid='0']\").checked]"
    jump = "z => new Promise(r => { ufViewer.map.once('zoomend', () => r(null)); ufViewer.map.jumpTo({zoom: z}); })"
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 900, "height": 700})
            page.goto(url + "viewer.html")
            page.wait_for_function("window.ufViewer && window.ufViewer.state === 'ready'", timeout=150_000)
            page.evaluate(jump, 10)
            at10 = page.evaluate(state)
            page.evaluate(jump, 14)
            at14 = page.evaluate(state)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    assert at10 == ["visible", True] and at14 == ["none", False]


def test_opened_from_disk_the_page_asks_for_the_archive_and_reads_it_locally(tmp_path):
    sync_api, chromium = _browser()
    _site(tmp_path)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.goto((tmp_path / "viewer.html").as_uri())
        page.wait_for_function("window.ufViewer && window.ufViewer.state === 'needs-file'", timeout=150_000)
        assert page.is_visible("#uf-open") and "opened from disk" in page.inner_text("#uf-open")
        page.set_input_files("#uf-file", str(tmp_path / viewer.ARCHIVE_NAME))
        page.wait_for_function("window.ufViewer.state === 'ready'", timeout=150_000)
        drawn = page.evaluate("window.ufViewer.map.queryRenderedFeatures({layers: ['buildings']}).length")
        browser.close()
    assert drawn >= 120
