"""Do a building's attributes depend on the batch it is in? Real Boulder footprints through the
attributes core (the service's models: height-xgb v4, building-function v2, building-age v3),
once as one batch and once in Hilbert batches of 250 and 1000 buildings, with and without each
batch's context (the other footprints within 410 m) and the job's area frame.

    PYTHONPATH=.:services/lib python bench/batch_independence.py [--n 3000]

Writes bench/results/batch_independence.json: per batch size and mode, the share of buildings
whose height, floors, function or year differ from the one-batch run, and the wall time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "services/lib"),
                str(Path(__file__).resolve().parents[1] / "services")]

import geopandas as gpd  # noqa: E402
import pandas as pd  # noqa: E402

from bench._util import machine, save  # noqa: E402
from urbanfabric.attributes.batch import predict_attributes  # noqa: E402
from urbanfabric.attributes.context import AreaFrame, select_context  # noqa: E402
from urbanfabric.io.model_repository import SHARED_DATA  # noqa: E402
from urbanfabric.runtime.jobs import iter_batches  # noqa: E402
from urbanfabric.v1 import attributes_pb2 as pb  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--sizes", type=int, nargs="+", default=[250, 1000])
    args = p.parse_args()
    src = SHARED_DATA / "age/boulder/boulder_buildings.gpkg"
    if not src.is_file():
        sys.exit(f"skipped: {src} is absent (shared sample data)")
    server = importlib.import_module("attributes.server")
    req = pb.PredictAttributesRequest()
    req.height_model.name, req.height_model.version = "height-xgb", "v4"
    models = server.models_for(req)
    g = gpd.read_file(src).to_crs(4326)[["geometry"]].iloc[: args.n].copy()
    g["building_id"] = [f"b{i}" for i in range(len(g))]
    frame = AreaFrame.from_bbox(tuple(g.total_bounds))
    t0 = time.perf_counter()
    whole, _ = predict_attributes(g, models, area_frame=frame)
    whole_s = time.perf_counter() - t0
    whole.index = g["building_id"].to_numpy()
    rows = []
    for size in args.sizes:
        for mode in ("batch alone (before)", "with context and area frame"):
            parts, n_ctx, t0 = [], 0, time.perf_counter()
            for b in iter_batches(g, size):
                ctx = select_context(b, g) if mode.startswith("with") else None
                n_ctx += 0 if ctx is None else len(ctx)
                t, _ = predict_attributes(b, models, context=ctx, area_frame=frame if ctx is not None else None)
                t.index = b["building_id"].to_numpy()
                parts.append(t)
            wall = time.perf_counter() - t0
            got = pd.concat(parts).loc[whole.index]
            dh = (got["height_m"] - whole["height_m"]).abs()
            rows.append({
                "batch_size": size, "mode": mode, "wall_s": round(wall, 2),
                "context_per_batch": round(n_ctx / max(1, -(-len(g) // size)), 1),
                "height_abs_diff_mean_m": round(float(dh.mean()), 3), "height_abs_diff_max_m": round(float(dh.max()), 3),
                "height_differs_pct": round(100 * float((dh > 0.01).mean()), 1),
                "floors_differ_pct": round(100 * float((got["floors"] != whole["floors"]).mean()), 1),
                "function_differs_pct": round(100 * float((got["function"] != whole["function"]).mean()), 1),
                "year_differs_pct": round(100 * float(((got["year_built"] - whole["year_built"]).abs() > 0.01).mean()), 1),
            })
            print(rows[-1], flush=True)
    save("batch_independence", {"benchmark": "batch_independence", "machine": machine(), "buildings": len(g),
                                "one_batch_wall_s": round(whole_s, 2), "rows": rows})


if __name__ == "__main__":
    main()
