"""Attribute throughput: footprint features + height + age predictions per building batch,
on the real Boulder footprints tiled (shifted copies) to N buildings, next to a naive
per-building loop.

    PYTHONPATH=.:services/lib .venv/bin/python bench/bench_attributes.py [--n 100000]
        [--batch 20000] [--naive 300]

Reports buildings per second per step, peak memory, and the naive loop's rate (plain Python
over footprints: shapely per geometry, neighbours by testing every other footprint) measured
on ``--naive`` buildings — it is O(n²), so its rate is for that size only and falls with n.
Batches are tiles of the replicated set: neighbourhood features see only their own batch.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]),
                str(Path(__file__).resolve().parents[1] / "services/lib")]

import geopandas as gpd  # noqa: E402
import shapely  # noqa: E402

from bench._util import peak_rss_mib, save  # noqa: E402
from bench.bench_buildings import replicate  # noqa: E402
from urbanfabric import age, attributes  # noqa: E402
from urbanfabric.paths import SHARED_DATA  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def naive_features(frame: gpd.GeoDataFrame) -> list[dict[str, float]]:
    """A per-building loop computing a subset of the features (morphology + 100 m counts)."""
    geoms = list(frame.geometry)
    rows = []
    for g in geoms:
        mrr = g.minimum_rotated_rectangle
        xs, ys = mrr.exterior.coords.xy
        sides = [math.hypot(xs[k + 1] - xs[k], ys[k + 1] - ys[k]) for k in range(2)]
        n100, a100 = 0, 0.0
        for h in geoms:
            if h is not g and g.distance(h) <= 100.0:
                n100 += 1
                a100 += h.area
        rows.append({"area": g.area, "perimeter": g.length,
                     "elongation": 1 - min(sides) / max(sides),
                     "convexity": g.area / g.convex_hull.area, "n100": n100, "a100": a100})
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=20_000)
    p.add_argument("--naive", type=int, default=300)
    args = p.parse_args()
    base = gpd.read_file(SHARED_DATA / "age/boulder/boulder_buildings.gpkg")
    frame = replicate(base[["geometry"]], args.n)
    height = attributes.HeightModel.load(REPO / "models/height_xgb/v1")
    age_dir = REPO / "models/building_age/v1"
    age_model = age.AgeModel.load(age_dir) if (age_dir / "meta.json").is_file() else None
    t = {"features": 0.0, "height": 0.0, "age": 0.0}
    for i in range(0, len(frame), args.batch):
        part = frame.iloc[i : i + args.batch]
        t0 = time.perf_counter()
        feats = attributes.footprint_features(part)
        t1 = time.perf_counter()
        h, _, _ = height.predict(feats)
        attributes.floors_from_height(h)
        t2 = time.perf_counter()
        if age_model is not None:
            age_model.predict(feats)
        t3 = time.perf_counter()
        t["features"] += t1 - t0
        t["height"] += t2 - t1
        t["age"] += t3 - t2
    total = sum(t.values())
    sample = frame.iloc[: args.naive]
    t0 = time.perf_counter()
    naive_features(sample)
    t_naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    attributes.footprint_features(sample)
    t_vec_small = time.perf_counter() - t0
    assert shapely.geos_version  # the vectorised path runs on GEOS via shapely 2
    save("attributes", {
        "command": "python " + " ".join(sys.argv), "buildings": args.n, "batch": args.batch,
        "source": "age/boulder/boulder_buildings.gpkg tiled", "seconds": t,
        "buildings_per_second": {k: args.n / v for k, v in t.items() if v > 0},
        "buildings_per_second_all_steps": args.n / total, "peak_rss_mib": peak_rss_mib(),
        "naive_loop": {"buildings": args.naive, "seconds": t_naive,
                       "buildings_per_second": args.naive / t_naive,
                       "vectorised_same_buildings_per_second": args.naive / t_vec_small,
                       "note": "naive computes 6 of the 69 features; O(n^2) neighbour search"},
    })


if __name__ == "__main__":
    main()
