"""Building-stage throughput: footprint features + bagged-XGBoost height + material stock,
on the real Xiamen footprints replicated (shifted copies) to N buildings.

    python bench/bench_buildings.py [--n 50000] [--batch 5000]

Reports buildings per second per step and peak memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "services/lib")]

import geopandas as gpd  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench._util import peak_rss_mib, save  # noqa: E402
from urbanfabric.attributes import features, height  # noqa: E402
from urbanfabric.stock import intensity  # noqa: E402
from urbanfabric.io.model_repository import SHARED_DATA, model_dir  # noqa: E402


def replicate(base: gpd.GeoDataFrame, n: int) -> gpd.GeoDataFrame:
    """Shifted copies of a real footprint set, side by side, until there are n buildings."""
    metric = base.to_crs(base.estimate_utm_crs())
    w, s, e, nn = metric.total_bounds
    copies, k = [], 0
    while sum(len(c) for c in copies) < n:
        dx, dy = (k % 10) * (e - w + 200), (k // 10) * (nn - s + 200)
        copies.append(metric.geometry.translate(dx, dy))
        k += 1
    geoms = pd.concat(copies, ignore_index=True).iloc[:n]
    return gpd.GeoDataFrame({"building_id": [f"b{i}" for i in range(n)]}, geometry=geoms.values, crs=metric.crs)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=5_000)
    args = p.parse_args()
    raw = json.loads((SHARED_DATA / "footprints/xiamen-z18/buildings.json").read_text())
    base = gpd.GeoDataFrame.from_features(raw["features"] if "features" in raw else raw, crs="EPSG:4326")
    frame = replicate(base, args.n)
    model = height.HeightModel.load(model_dir("height-xgb", "v1"))
    table = intensity.default_table()
    t = {"features": 0.0, "height": 0.0, "stock": 0.0}
    for i in range(0, len(frame), args.batch):
        part = frame.iloc[i : i + args.batch]
        t0 = time.perf_counter()
        feats = features.footprint_features(part)
        t1 = time.perf_counter()
        h, lo, hi = model.predict(feats)
        floors = height.floors_from_height(h)
        t2 = time.perf_counter()
        gfa = intensity.gfa(feats["area_m2"].to_numpy(), floors)
        table.estimate_stock(gfa, np.where(floors <= 2, "RS", "RM"), "C", "ASIA_CHN")
        t3 = time.perf_counter()
        t["features"] += t1 - t0
        t["height"] += t2 - t1
        t["stock"] += t3 - t2
    total = sum(t.values())
    save("buildings", {
        "command": "python " + " ".join(sys.argv), "buildings": args.n, "batch": args.batch,
        "seconds": t, "buildings_per_second": {k: args.n / v for k, v in t.items()},
        "buildings_per_second_all_steps": args.n / total, "peak_rss_mib": peak_rss_mib(),
    })


if __name__ == "__main__":
    main()
