"""Attribute throughput: repair + features + ALL predictions (height with p05/p95, function
with probabilities, floors per function, age year band + class) per building batch, on the
real Boulder footprints tiled (shifted copies) to N buildings, next to a naive per-building
loop.

    PYTHONPATH=.:services/lib nice -n 10 .venv/bin/python bench/bench_attributes.py \\
        [--n 1000000] [--batch 50000] [--naive 300]

Reports buildings per second per step and for all steps, peak memory, and the load average
before / after (the machine is shared). The naive loop handles ``--naive`` buildings one at a
time: 6 plain-shapely features with an O(n²) neighbour scan over the sample, then every model
called on that one building's (vectorised) feature row; its rate is measured on the sample and
extrapolated to N (it falls further with n: the neighbour scan is quadratic).
Batches are tiles of the replicated set: neighbourhood features see only their own batch.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]),
                str(Path(__file__).resolve().parents[1] / "services/lib")]

import geopandas as gpd
import numpy as np
from urbanfabric.attributes import age, features, function, height
from urbanfabric.io.model_repository import SHARED_DATA

from bench._util import peak_rss_mib, save
from bench.bench_buildings import replicate

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


def naive_predictions(feats, height, func, age_model) -> None:
    """Every model called once per building (one-row inputs), floors per building."""
    for i in range(len(feats)):
        row = feats.iloc[i : i + 1]
        h, _, _ = height.predict(row)
        f = func.predict_proba(row)
        name = function.FUNCTION_CLASSES[int(f.argmax())]
        function.floors_for_function(h, [name])
        age_model.predict(row)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=50_000)
    p.add_argument("--naive", type=int, default=300)
    p.add_argument("--threads", type=int, default=2, help="XGBoost threads per prediction")
    args = p.parse_args()
    load_before = os.getloadavg()
    base = gpd.read_file(SHARED_DATA / "age/boulder/boulder_buildings.gpkg")
    frame = replicate(base[["geometry"]], args.n)
    height_model = height.HeightModel.load(REPO / "models/height_xgb/v1")
    func = function.FunctionModel.load(REPO / "models/building_function/v1")
    age_model = age.AgeModel.load(REPO / "models/building_age/v1")
    for b in (*height_model.members, func.booster, *age_model.members, age_model.classifier):
        b.set_param({"nthread": args.threads})
    t = dict.fromkeys(("repair", "features", "height", "function_floors", "age"), 0.0)
    n_out = 0
    for i in range(0, len(frame), args.batch):
        part = frame.iloc[i : i + args.batch]
        t0 = time.perf_counter()
        part, _ = features.prepare_footprints(part)
        t1 = time.perf_counter()
        feats = features.footprint_features(part)
        t2 = time.perf_counter()
        h, _, _ = height_model.predict(feats)
        t3 = time.perf_counter()
        proba = func.predict_proba(feats)
        names = np.asarray(function.FUNCTION_CLASSES, dtype=object)[proba.argmax(axis=1)]
        function.floors_for_function(h, names)
        t4 = time.perf_counter()
        age_model.predict(feats)
        t5 = time.perf_counter()
        for k, a, b in (("repair", t0, t1), ("features", t1, t2), ("height", t2, t3),
                        ("function_floors", t3, t4), ("age", t4, t5)):
            t[k] += b - a
        n_out += len(part)
    total = sum(t.values())
    sample = frame.iloc[: args.naive]
    t0 = time.perf_counter()
    naive_features(sample)
    t_nf = time.perf_counter() - t0
    feats_small = features.footprint_features(sample)
    t0 = time.perf_counter()
    naive_predictions(feats_small, height, func, age_model)
    t_np = time.perf_counter() - t0
    t0 = time.perf_counter()
    features.footprint_features(sample)
    t_vec_small = time.perf_counter() - t0
    per_building = (t_nf + t_np) / args.naive
    save("attributes", {
        "command": "python " + " ".join(sys.argv), "buildings": args.n, "batch": args.batch,
        "buildings_kept_after_repair": n_out,
        "source": "age/boulder/boulder_buildings.gpkg tiled",
        "models": ["height_xgb/v1 (20 members)", "building_function/v1", "building_age/v1"],
        "xgboost_threads": args.threads,
        "seconds": t, "buildings_per_second": {k: args.n / v for k, v in t.items() if v > 0},
        "buildings_per_second_all_steps": args.n / total, "peak_rss_mib": peak_rss_mib(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "naive_loop": {"buildings": args.naive, "seconds_features": t_nf,
                       "seconds_predictions": t_np,
                       "buildings_per_second": 1.0 / per_building,
                       "extrapolated_seconds_for_n": per_building * args.n,
                       "vectorised_features_same_buildings_per_second": args.naive / t_vec_small,
                       "note": "naive computes 6 of the 69 features with an O(n^2) neighbour "
                               "scan over the sample, then calls each model per building; "
                               "rate measured on the sample, extrapolated linearly to n "
                               "(optimistic: the scan is quadratic)"},
    })
    print(f"{args.n / total:,.0f} buildings/s all steps; naive {1 / per_building:,.0f}/s; "
          f"peak {peak_rss_mib():,.0f} MiB; load {load_before} -> {os.getloadavg()}")


if __name__ == "__main__":
    main()
