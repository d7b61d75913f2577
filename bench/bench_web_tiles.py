"""Size, time and memory of the web tiles (``buildings.pmtiles``, issue 23 item 2) at 10 k and 100 k buildings.

    PYTHONPATH=.:services/lib OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_web_tiles.py \\
        [--sizes 10000 100000] [--with-map]

Buildings: the 4,562 real Xiamen footprints of ``../shared/data/footprints/xiamen-z18/buildings.json``
(their measured height ``H``), replicated side by side (bench_webmap.replicate) up to each size,
with attributes made from the height and area as the pipeline would fill them (floors = H / 3,
stock 1.2 t per m² of floor area with a 0.5–2× interval, a function, an unknown roof material
with its reason) — synthetic attributes on real outlines, so tile sizes are those of real
shapes and of the stack's columns. Each size runs in a fresh subprocess that streams the table
in the aggregate step's slices (``FRAME_ROWS``) into :class:`TileSpill` and writes the archive;
it reports the wall time of both phases, the archive's size (and per building), tiles, the
largest tile, the features per zoom, and the peak RSS (``VmHWM``) over the one after imports.
``--with-map`` also builds the self-contained ``map.html`` of the same buildings in the same
process, for a same-machine ratio (wall times on the shared 2-core machine are noisy);
``--browser`` times the viewer in headless Chromium (the page served on loopback).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "services/lib")]

FOOTPRINTS = ROOT.parent / "shared/data/footprints/xiamen-z18/buildings.json"


def _vmhwm() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def table(n: int):
    """``n`` buildings: the Xiamen footprints replicated, attributes from their heights."""
    import geopandas as gpd
    import numpy as np

    from bench.bench_webmap import replicate

    base = gpd.read_file(FOOTPRINTS)
    base = base[base.geometry.notna() & ~base.geometry.is_empty].reset_index(drop=True)
    base["building_id"] = [f"x{i:05d}" for i in range(len(base))]
    out = replicate(base, n).reset_index(drop=True)
    rng = np.random.default_rng(0)
    h = out["H"].astype(float).to_numpy()
    area = out.to_crs(out.estimate_utm_crs()).area.to_numpy()
    floors = np.maximum(1, np.round(h / 3))
    mass = area * floors * 1200.0
    return gpd.GeoDataFrame({
        "building_id": out["building_id"], "footprint_area_m2": area, "height_m": h,
        "height_p05": h * 0.7, "height_p95": h * 1.4, "floors": floors,
        "building_function": rng.choice(["residential", "commercial", "industrial", "public"], len(out)),
        "roof_material": "unknown",
        "roof_material_unknown_reason": "out_of_domain: imagery of 0.54 m per pixel; the model was trained on 0.02–0.15 m",
        "mass_total_kg": mass, "mass_total_kg_p05": mass * 0.5, "mass_total_kg_p95": mass * 2.0,
        "mass_total_kg_mc_p50": mass * 0.95, "embodied_co2e_kg": mass * 0.25,
    }, geometry=out.geometry.values, crs=4326)


def browser_load(folder: Path, stats) -> dict:
    """Milliseconds from navigation to ``ufViewer.ready`` (the tiles in view drawn) in headless
    Chromium over the loopback server, at the fitted view and after a jump to z14 and z16 at the
    centre; and the buildings drawn there."""
    from playwright.sync_api import sync_playwright

    from urbanfabric.cli.serve import serve_in_background
    from urbanfabric.outputs.viewer import viewer_config, viewer_html

    (folder / "viewer.html").write_bytes(viewer_html(viewer_config(
        stats, "bench", basemap_url="")))  # no basemap: "idle" then means the buildings are drawn
    server, url = serve_in_background(folder)
    out: dict = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            t0 = time.perf_counter()
            page.goto(url + "viewer.html")
            page.wait_for_function("window.ufViewer && window.ufViewer.state === 'ready'", timeout=120_000)
            out["fitted_ready_ms"] = round((time.perf_counter() - t0) * 1000)
            out["fitted_zoom"] = round(page.evaluate("ufViewer.map.getZoom()"), 1)
            for z in (14, 16):
                t0 = time.perf_counter()
                page.evaluate(f"""new Promise(r => {{ const m = ufViewer.map;
                    m.once('idle', () => r(null)); m.jumpTo({{center: m.getCenter(), zoom: {z}}}); }})""")
                out[f"z{z}_idle_ms"] = round((time.perf_counter() - t0) * 1000)
                out[f"z{z}_drawn"] = page.evaluate("ufViewer.map.queryRenderedFeatures({layers: ['buildings']}).length")
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return out


def child(n: int, with_map: bool, browser: bool = False) -> dict:
    import geopandas  # noqa: F401 - imports counted in the baseline, as in the flow runner
    from urbanfabric.outputs.partitions import FRAME_ROWS
    from urbanfabric.outputs.vector_tiles import TileSpill

    buildings = table(n)
    base = _vmhwm()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        spill = TileSpill(Path(tmp) / "tiles.sqlite")
        for start in range(0, len(buildings), FRAME_ROWS):
            spill.add(buildings.iloc[start:start + FRAME_ROWS])
        t1 = time.perf_counter()
        stats = spill.write(Path(tmp) / "buildings.pmtiles")
        t2 = time.perf_counter()
        peak = _vmhwm()
        row = {"buildings": len(buildings), "add_s": round(t1 - t0, 1), "write_s": round(t2 - t1, 1),
               "total_s": round(t2 - t0, 1), "archive_mb": round(stats.bytes / 1e6, 2),
               "bytes_per_building": round(stats.bytes / len(buildings)), "tiles": stats.tiles,
               "largest_tile_kb": round(stats.largest_tile_bytes / 1e3, 1), "largest_tile_zoom": stats.largest_tile_zoom,
               "features_per_zoom": stats.features_per_zoom, "dropped_per_zoom": stats.dropped_per_zoom,
               "capped_per_zoom": stats.capped_per_zoom,
               "rss_after_table_mib": round(base, 1), "peak_rss_mib": round(peak, 1),
               "growth_mib": round(peak - base, 1)}
        if browser:
            row["browser"] = browser_load(Path(tmp), stats)
        if with_map:
            from urbanfabric.outputs.webmap import job_map_html

            t3 = time.perf_counter()
            html = job_map_html(buildings, "bench")
            row["map_html_s"] = round(time.perf_counter() - t3, 1)
            row["map_html_mb"] = round(len(html) / 1e6, 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--with-map", action="store_true", help="also build map.html of the same buildings")
    ap.add_argument("--browser", action="store_true",
                    help="also time the viewer in headless Chromium (needs Playwright and Debian's chromium)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--name", default="web_tiles", help="results file under bench/results/")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.with_map, args.browser)))
        return
    if not FOOTPRINTS.exists():
        raise SystemExit(f"{FOOTPRINTS} is absent (the shared sample data); nothing to measure")
    rows = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(n)] + (["--with-map"] if args.with_map else []) \
            + (["--browser"] if args.browser else [])
        res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), check=False)
        if res.returncode:
            print(res.stderr[-3000:], file=sys.stderr)
            raise SystemExit(res.returncode)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    from bench._util import save

    print(save(args.name, {"rows": rows, "footprints": str(FOOTPRINTS)}))


if __name__ == "__main__":
    main()
