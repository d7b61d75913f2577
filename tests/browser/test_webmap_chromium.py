"""A job's ``map.html`` in headless Chromium, offline (issue 23, item 1): the buildings layer,
a click on a building and its popup, the layer switcher, the colouring and the basemap note.

The page is made by ``outputs.webmap.job_map_html`` from a small table in a real projected CRS
(UTM 50N, Xiamen); clicks go to the pixel where the building's own coordinates land, so a
popup only opens when the canvas hit-test finds that building.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Point, Polygon, box
from urbanfabric.outputs import webmap

from tests.browser.chromium import launch, missing_reason, open_page
from tests.browser.webmap_page import POPUP, click_building, screen_xy, wait_ready

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")

OOD = "out_of_domain: imagery of 0.54 m per pixel; the model was trained on 0.02–0.15 m"


#: South-west corner of the fixture (UTM 50N): 118.0985 E, 24.4785 N, in the Xiamen sample's tile.
X0, Y0 = 611_317.0, 2_707_647.0


def _table() -> gpd.GeoDataFrame:
    """Five buildings in UTM 50N: two classified, one with unknown height and roof, an L-shape
    and a small one, inside the demo's tile; the gaps between them are wide enough to click into."""
    x0, y0 = X0, Y0
    l_shape = Polygon([(x0 + 70, y0), (x0 + 100, y0), (x0 + 100, y0 + 10), (x0 + 80, y0 + 10),
                       (x0 + 80, y0 + 30), (x0 + 70, y0 + 30)])
    geoms = [box(x0, y0, x0 + 20, y0 + 12), box(x0 + 35, y0, x0 + 50, y0 + 30),
             box(x0 + 100, y0 + 60, x0 + 114, y0 + 74), l_shape, box(x0 + 10, y0 + 55, x0 + 18, y0 + 63)]
    nan = np.nan
    return gpd.GeoDataFrame({
        "building_id": ["b-low", "b-tower", "b-unknown", "b-ell", "b-shed"],
        "footprint_source": ["segmented"] * 5,
        "footprint_confidence": [0.91, 0.87, 0.55, 0.78, 0.62],
        "footprint_area_m2": [240.0, 450.0, 196.0, 500.0, 64.0],
        "height_m": [7.5, 42.0, nan, 11.0, 3.2],
        "height_p05": [5.0, 30.0, nan, 8.0, 2.5],
        "height_p95": [11.0, 61.0, nan, 15.0, 4.1],
        "height_source_reason": [None, None, "no_estimate: no imagery over the footprint", None, None],
        "floors": [2, 13, nan, 3, 1],
        "building_function": ["residential", "office", "unknown", "industrial", "other"],
        "building_function_probability": [0.72, 0.64, 0.31, 0.58, 0.4],
        "roof_material": ["concrete_cement", "metal", "unknown", "metal", "tile"],
        "roof_material_probability": [0.81, 0.66, 0.0, 0.7, 0.52],
        "roof_material_unknown_reason": [None, None, OOD, None, None],
        "mass_total_kg": [300_000.0, 9_000_000.0, nan, 1_200_000.0, 40_000.0],
        "mass_total_kg_p05": [100_000.0, 5_000_000.0, nan, 700_000.0, 20_000.0],
        "mass_total_kg_mc_p50": [280_000.0, 8_500_000.0, nan, 1_100_000.0, 38_000.0],
        "mass_total_kg_p95": [900_000.0, 20_000_000.0, nan, 2_500_000.0, 90_000.0],
        "embodied_co2e_kg": [60_000.0, 2_100_000.0, nan, 250_000.0, 8_000.0],
        "solar_kwh_per_year": [21_000.0, 40_000.0, nan, 55_000.0, 5_000.0],
        "tile_id": ["WebMercatorQuad-16-54267-28169"] * 5,
    }, geometry=geoms, crs="EPSG:32650")


TABLE = _table()
#: Where to click each building: a point inside it, in lon/lat.
INSIDE = TABLE.geometry.representative_point().to_crs(4326)


@pytest.fixture(scope="module")
def map_url(tmp_path_factory) -> str:
    params = {"area": [118.0975, 24.4771, 118.1085, 24.4871], "imagery": "sample:xiamen-z18"}
    path = tmp_path_factory.mktemp("webmap") / "map.html"
    path.write_bytes(webmap.job_map_html(TABLE, "job-browser", params))
    return path.resolve().as_uri()


@pytest.fixture(scope="module")
def browser():
    with launch() as b:
        yield b


@pytest.fixture
def opened(browser, map_url):
    with open_page(browser, map_url) as o:
        wait_ready(o.page)
        yield o


def _click_building(page, i: int) -> str:
    """Click inside building ``i``; the text of the popup that opens."""
    pt = INSIDE.iloc[i]
    return click_building(page, pt.x, pt.y)


def test_buildings_layer_holds_every_building_and_is_listed(opened) -> None:
    page = opened.page
    assert page.evaluate("ufBuildings.getLayers().length") == len(TABLE)
    assert page.evaluate("ufMap.hasLayer(ufBuildings)")
    label = page.locator(".leaflet-control-layers-overlays label", has_text="buildings").first
    assert label.locator("input").is_checked()
    # Every building is inside the view fitted at load.
    inside = page.evaluate("ufBuildings.getLayers().every(l => ufMap.getBounds().contains(l.getBounds()))")
    assert inside is True
    assert opened.errors == []


def test_click_opens_that_buildings_popup_with_its_attributes(opened) -> None:
    text = _click_building(opened.page, 1)
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    assert lines[0] == "building b-tower"
    assert "height 42 m (30–61)" in lines
    assert "roof material metal p=0.66" in lines
    assert "function office p=0.64" in lines
    assert "material stock 9,000 t (5,000–20,000)" in lines
    assert "floors 13" in lines
    # Another building: the popup follows the click.
    assert _click_building(opened.page, 3).splitlines()[0].split() == ["building", "b-ell"]
    assert opened.errors == []


def test_unknown_attributes_show_why(opened) -> None:
    text = " ".join(_click_building(opened.page, 2).split())
    assert text.startswith("building b-unknown")
    assert "height unknown why: no_estimate: no imagery over the footprint" in text
    assert f"roof material unknown why: {OOD}" in text


def test_click_between_buildings_opens_nothing(opened) -> None:
    page = opened.page
    gap = Point(X0 + 60, Y0 + 45)
    assert not TABLE.geometry.buffer(5).contains(gap).any()
    gap = gpd.GeoSeries([gap], crs=TABLE.crs).to_crs(4326)[0]
    page.mouse.click(*screen_xy(page, gap.x, gap.y))
    page.wait_for_timeout(300)
    assert page.locator(POPUP).count() == 0


def test_hiding_the_buildings_layer_stops_popups(opened) -> None:
    page = opened.page
    page.locator(".leaflet-control-layers-overlays label", has_text="buildings").first.locator("input").uncheck()
    assert page.evaluate("ufMap.hasLayer(ufBuildings)") is False
    pt = INSIDE.iloc[1]
    page.mouse.click(*screen_xy(page, pt.x, pt.y))
    page.wait_for_timeout(300)
    assert page.locator(POPUP).count() == 0


def test_colouring_switch_recolours_and_relabels(opened) -> None:
    page = opened.page
    legend = page.locator("#uf-legend")
    assert "height (m)" in legend.inner_text()
    before = page.evaluate("ufBuildings.getLayers().map(l => l.options.fillColor)")
    page.select_option("#uf-attr", "roof_material")
    text = legend.inner_text()
    assert "roof material" in text and "metal" in text and "concrete_cement" in text
    after = page.evaluate("ufBuildings.getLayers().map(l => l.options.fillColor)")
    assert after != before
    assert after[1] == after[3]  # both metal roofs share a colour
    assert after[2] == webmap.UNKNOWN_COLOUR


def test_grid_overlay_toggles_with_its_legend(opened) -> None:
    page = opened.page
    page.locator(".leaflet-control-layers-overlays label", has_text="grid: mass_total_kg (100 m cells)") \
        .locator("input").check()
    assert page.locator("img.leaflet-image-layer").count() == 1
    assert "grid: mass_total_kg (100 m cells)" in page.locator("#uf-legend").inner_text()


def test_offline_basemap_note_is_shown(opened) -> None:
    note = opened.page.locator("#uf-basemap-note")
    note.wait_for(state="visible", timeout=5000)
    assert "tile.openstreetmap.org" in note.inner_text()
