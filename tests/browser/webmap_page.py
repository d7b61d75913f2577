"""A job's ``map.html`` as a user meets it in a browser: where a building is drawn, a click on it,
and the popup it opens. Shared by tests/browser, the end-to-end test and docs/screenshots.py.

The page (outputs/webmap_assets/map.html.tmpl) offers ``window.ufMap`` (the Leaflet map) and
``window.ufBuildings`` (the buildings layer) for this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import geopandas as gpd
    from playwright.sync_api import Page

POPUP = ".leaflet-popup-content"


def wait_ready(page: Page) -> None:
    """Until the page's script has drawn the buildings layer."""
    page.wait_for_function("() => window.ufMap && window.ufBuildings")


def screen_xy(page: Page, lon: float, lat: float) -> tuple[float, float]:
    """The viewport pixel where (lon, lat) is drawn."""
    x, y = page.evaluate(
        """([lat, lon]) => { const p = ufMap.latLngToContainerPoint([lat, lon]);
                             const r = ufMap.getContainer().getBoundingClientRect();
                             return [p.x + r.left, p.y + r.top]; }""", [lat, lon])
    return float(x), float(y)


def click_building(page: Page, lon: float, lat: float, timeout_ms: float = 5000) -> str:
    """Click at (lon, lat) as a user would; the text of the popup that opens.

    An open popup is closed first with its × button, since it may cover the spot.

    Raises:
        playwright.sync_api.TimeoutError: no popup opened (nothing clickable there).
    """
    close = page.locator(".leaflet-popup-close-button")
    if close.count():
        close.click()
        page.locator(".leaflet-popup").wait_for(state="detached", timeout=timeout_ms)
    page.mouse.click(*screen_xy(page, lon, lat))
    popup = page.locator(POPUP)
    popup.wait_for(state="visible", timeout=timeout_ms)
    return popup.inner_text()


def building_to_click(buildings: gpd.GeoDataFrame) -> tuple[str, float, float]:
    """A building worth a popup: with a height, ≥ 200 m², nearest the middle of the buildings
    (deterministic, away from the page's corners and controls); its id and a lon/lat inside it.

    Raises:
        ValueError: the table has no buildings.
    """
    b = buildings.to_crs(4326)
    if b.empty:
        raise ValueError("no buildings to click")
    area = b["footprint_area_m2"] if "footprint_area_m2" in b.columns else b.to_crs(b.estimate_utm_crs()).area
    pick = b[(area >= 200) & b.get("height_m", area).notna()]
    pick = pick if len(pick) else b
    minx, miny, maxx, maxy = b.total_bounds
    inside = pick.geometry.representative_point()
    i = ((inside.x - (minx + maxx) / 2) ** 2 + (inside.y - (miny + maxy) / 2) ** 2).to_numpy().argmin()
    return str(pick["building_id"].iloc[i]), float(inside.iloc[i].x), float(inside.iloc[i].y)
