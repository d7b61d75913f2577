"""Size and build time of the interactive ``map.html`` (issue 23) at 10 k and 100 k buildings.

    python bench/bench_webmap.py TABLE [--n 10000 100000] [--out DIR]

TABLE is a real job's ``buildings.parquet`` (the demo's 181 Xiamen buildings, with every
attribute, unknown reasons and Monte-Carlo ranges). It is replicated on a grid of copies shifted
by the table's own extent (so copies do not overlap) up to ``--n`` buildings, the 100 m grids of
the replicated table are overlaid (total stock, CO2e, solar, count), and ``write_webmap`` builds
the page. Reports wall time, HTML size (and gzip size, what a web server would send) and bytes
per building; the HTML files are left in ``--out`` for opening in a browser.
"""

from __future__ import annotations

import argparse
import gzip
import math
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]),
                str(Path(__file__).resolve().parents[1] / "services/lib")]

import geopandas as gpd
import pandas as pd
from shapely import affinity

from urbanfabric.outputs.grids import rasterize_sums
from urbanfabric.outputs.webmap import GridLayer, WebmapOptions, tiles_footprint, write_webmap


def replicate(table: gpd.GeoDataFrame, n: int) -> gpd.GeoDataFrame:
    """``n`` buildings: copies of ``table`` side by side (metric CRS), ids made unique."""
    metric = table.estimate_utm_crs()
    base = table.to_crs(metric)
    minx, miny, maxx, maxy = base.total_bounds
    w, h = maxx - minx + 50, maxy - miny + 50
    copies = math.ceil(n / len(base))
    side = math.ceil(math.sqrt(copies))
    parts = []
    for k in range(copies):
        dx, dy = (k % side) * w, (k // side) * h
        part = base.copy()
        part["geometry"] = [affinity.translate(g, dx, dy) for g in part.geometry]
        part["building_id"] = part["building_id"].astype(str) + f"-{k}"
        parts.append(part)
    out = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=metric).iloc[:n]
    return out.to_crs(4326)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("table")
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--out", default="/tmp/webmap-bench")
    ap.add_argument("--simplify-m", type=float, nargs="+", default=[0.5])
    args = ap.parse_args()
    table = gpd.read_parquet(args.table)
    for n in args.n:
        big = replicate(table, n)
        t0 = time.perf_counter()
        grids = rasterize_sums(big, 100, [c for c in ("mass_total_kg", "embodied_co2e_kg", "solar_kwh_per_year")
                                          if c in big.columns])
        layers = [GridLayer(f"{k} (100 m cells)", r) for k, r in grids.items()]
        grids_s = time.perf_counter() - t0
        for tol in args.simplify_m:
            t1 = time.perf_counter()
            path = write_webmap(big, layers, Path(args.out) / f"map_{n}_{tol:g}m.html",
                                WebmapOptions(imagery_footprint=tiles_footprint(big["tile_id"]), simplify_m=tol))
            t2 = time.perf_counter()
            raw = path.read_bytes()
            gz = len(gzip.compress(raw, 6))
            print(f"n={n:>7}  simplify {tol:g} m  grids {grids_s:5.1f} s  map {t2 - t1:5.1f} s  "
                  f"html {len(raw) / 1e6:6.1f} MB (gzip {gz / 1e6:5.1f} MB)  {len(raw) / n:5.0f} B/building"
                  f"  -> {path}", flush=True)


if __name__ == "__main__":
    main()
