"""The README's and docs' screenshots, taken with headless Chromium (tests/browser/chromium.py).

Each target is optional; one whose page is missing is skipped with a message, the others
are still taken:

  map      <job>/map.html opened offline, a building clicked, its popup open
           -> docs/img/webmap_demo.png
  prefect  the running stack's Prefect UI: the deployments list and the map-area run form
           -> docs/img/prefect-deployments.png, docs/img/prefect-run-form.png
  viewer   <job>/viewer.html (the PMTiles viewer) served on loopback by urbanfabric.cli.serve,
           a building clicked, its popup open -> docs/img/viewer_demo.png
  report   <job>/report.html -> docs/img/report_demo.png

From a fresh demo job, with the stack kept up for the Prefect pages (docs/development.md):

  make screenshots   # KEEP=1 make demo, then this script, then make down

Exit status: 0 when every target was taken or skipped for a missing page, 1 when a page was
there but did not show what the screenshot is for (the message says what).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "services" / "lib")]

from tests.browser.chromium import launch, missing_reason, open_page
from tests.browser.webmap_page import POPUP, building_to_click, screen_xy, wait_ready

TARGETS = ("map", "prefect", "viewer", "report")
#: How long a click may take to open its popup (a busy machine draws slowly).
POPUP_TIMEOUT_MS = 10_000


class Skip(Exception):
    """The target's page is not there (not an error: the message says what to do)."""


class Failed(Exception):
    """The page is there but did not show what the screenshot is for."""


def _save_png(png: bytes, dest: Path) -> Path:
    """Write a screenshot, re-encoded with zlib's best effort (README images stay small)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buf, format="PNG", optimize=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(buf.getvalue())
    return dest


# ----------------------------------------------------------------------------- a building clicked


def _popup_building(job: Path) -> tuple[str, float, float]:
    """The building to click (webmap_page.building_to_click) from the job's table."""
    import geopandas as gpd

    table = job / "buildings.parquet"
    if not table.is_file():
        raise Skip(f"{table} not found (the demo exports it beside map.html)")
    try:
        return building_to_click(gpd.read_parquet(table))
    except ValueError as exc:
        raise Failed(f"{table}: {exc}") from exc


def _clicked_popup(page, building_id: str, x: float, y: float, selector: str, where: Path) -> None:
    """Click at (x, y) and check that the popup that opens is ``building_id``'s."""
    from playwright.sync_api import Error as PlaywrightError

    page.mouse.click(x, y)
    popup = page.locator(selector).first
    try:
        popup.wait_for(state="visible", timeout=POPUP_TIMEOUT_MS)
    except PlaywrightError as exc:  # a timeout
        raise Failed(f"clicking building {building_id} in {where} opened no popup") from exc
    if building_id not in popup.inner_text():
        raise Failed(f"the popup after clicking {building_id} shows another building: {popup.inner_text()[:80]!r}")


# ----------------------------------------------------------------------------- map.html


def shoot_map(browser, job: Path, out: Path) -> list[Path]:
    page_path = job / "map.html"
    if not page_path.is_file():
        raise Skip(f"{page_path} not found (made by the aggregate step; `urbanfabric open {job}` builds it)")
    building_id, lon, lat = _popup_building(job)
    with open_page(browser, page_path.resolve().as_uri(), 1280, 900, offline=True) as (page, errors):
        wait_ready(page)
        page.locator("#uf-basemap-note").wait_for(state="visible", timeout=10_000)
        x, y = screen_xy(page, lon, lat)
        _clicked_popup(page, building_id, x, y, POPUP, page_path)
        page.wait_for_timeout(400)  # the popup's auto-pan animation
        # Leaflet keeps a popup inside the map, not clear of the page's own boxes: move the view
        # so the popup sits below the basemap note and left of the layer list and legend.
        page.evaluate("""() => {
            const box = s => document.querySelector(s).getBoundingClientRect();
            const p = box('.leaflet-popup'), note = box('#uf-basemap-note'), layers = box('.leaflet-control-layers');
            ufMap.panBy([(p.left + p.right) / 2 - layers.left / 2, p.top - (note.bottom + 8)], {animate: false}); }""")
        if errors:
            raise Failed(f"{page_path}: script errors {errors}")
        return [_save_png(page.screenshot(), out / "webmap_demo.png")]


# ----------------------------------------------------------------------------- Prefect UI


def _prefect_api() -> str:
    from urbanfabric.settings import Settings

    api = Settings.load().prefect_api_url.rstrip("/")
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=5) as r:
            r.read()
    except OSError as exc:
        raise Skip(f"Prefect is not answering at {api} ({exc}); start the stack first "
                   "(`KEEP=1 make demo` or `make up`)") from exc
    return api


def shoot_prefect(browser, job: Path, out: Path) -> list[Path]:
    api = _prefect_api()
    ui = api.removesuffix("/api")
    try:
        with urllib.request.urlopen(f"{api}/deployments/name/map-area/map-area", timeout=10) as r:
            deployment = json.loads(r.read())
    except OSError as exc:
        raise Failed(f"the stack's Prefect has no map-area/map-area deployment ({exc})") from exc
    written = []
    with open_page(browser, f"{ui}/deployments", 1400, 900, offline=False) as (page, _):
        page.get_by_text("map-area", exact=True).first.wait_for(state="visible")
        page.wait_for_load_state("networkidle")
        written.append(_save_png(page.screenshot(), out / "prefect-deployments.png"))
    run_form = f"{ui}/deployments/deployment/{deployment['id']}/run"
    with open_page(browser, run_form, 1400, 1400, offline=False) as (page, _):
        page.get_by_text("Parameters", exact=True).first.wait_for(state="visible")
        page.wait_for_load_state("networkidle")
        written.append(_save_png(page.screenshot(), out / "prefect-run-form.png"))
    return written


# ----------------------------------------------------------------------------- viewer, report


def shoot_viewer(browser, job: Path, out: Path) -> list[Path]:
    page_path = job / "viewer.html"
    if not page_path.is_file():
        raise Skip(f"{page_path} not found (the PMTiles viewer; exported with the job once it exists)")
    try:  # the project's loopback server with byte ranges, which pmtiles.js needs
        from urbanfabric.cli.serve import serve_in_background  # type: ignore[import-not-found]
    except ImportError as exc:
        raise Skip("urbanfabric.cli.serve (the loopback range server the viewer needs) is not in this "
                   "checkout") from exc
    from playwright.sync_api import Error as PlaywrightError

    building_id, lon, lat = _popup_building(job)
    server, base = serve_in_background(job)
    try:
        with open_page(browser, base.rstrip("/") + "/viewer.html", 1280, 900, offline=False) as (page, errors):
            # window.ufViewer (outputs/viewer.py): state "ready" once the buildings are drawn.
            try:
                page.wait_for_function("() => window.ufViewer && window.ufViewer.state === 'ready'", timeout=90_000)
            except PlaywrightError as exc:  # a timeout
                state = page.evaluate("() => window.ufViewer ? window.ufViewer.state : 'no window.ufViewer'")
                raise Failed(f"{page_path} did not get ready in 90 s (state: {state}; errors: {errors})") from exc
            x, y = page.evaluate("""([lon, lat]) => { const m = ufViewer.map, p = m.project([lon, lat]);
                                     const r = m.getContainer().getBoundingClientRect();
                                     return [p.x + r.left, p.y + r.top]; }""", [lon, lat])
            _clicked_popup(page, building_id, x, y, page.evaluate("ufViewer.popupSelector"), page_path)
            page.wait_for_timeout(500)
            if errors:
                raise Failed(f"{page_path}: script errors {errors}")
            return [_save_png(page.screenshot(), out / "viewer_demo.png")]
    finally:
        server.shutdown()
        server.server_close()


def shoot_report(browser, job: Path, out: Path) -> list[Path]:
    page_path = job / "report.html"
    if not page_path.is_file():
        raise Skip(f"{page_path} not found (the HTML report; exported with the job once it exists)")
    with open_page(browser, page_path.resolve().as_uri(), 1100, 1500, offline=True) as (page, errors):
        page.wait_for_load_state("load")
        if errors:
            raise Failed(f"{page_path}: script errors {errors}")
        return [_save_png(page.screenshot(), out / "report_demo.png")]


SHOOTERS: dict[str, Callable[..., list[Path]]] = {
    "map": shoot_map, "prefect": shoot_prefect, "viewer": shoot_viewer, "report": shoot_report}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", type=Path, default=ROOT / "out" / "latest",
                    help="an exported job folder (default out/latest, the last demo's)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="where the PNGs go (default docs/img)")
    ap.add_argument("targets", nargs="*", default=list(TARGETS), metavar="TARGET",
                    help=f"any of {', '.join(TARGETS)} (default: all)")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        ap.error(f"targets: {', '.join(unknown)} not among {', '.join(TARGETS)}")
    reason = missing_reason()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    from playwright.sync_api import Error as PlaywrightError

    job = args.job.resolve() if args.job.exists() else args.job
    failed = 0
    with launch() as browser:
        for target in args.targets:
            try:
                for path in SHOOTERS[target](browser, job, args.out):
                    print(f"{target}: wrote {path}")
            except Skip as why:
                print(f"{target}: skipped: {why}")
            except Failed as why:
                print(f"{target}: FAILED: {why}", file=sys.stderr)
                failed += 1
            except PlaywrightError as exc:  # a page that never showed what we waited for (a timeout)
                print(f"{target}: FAILED: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
