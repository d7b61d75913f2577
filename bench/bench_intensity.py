"""Material stock with Monte-Carlo ranges: vectorised vs a naive per-building loop.

    python bench/bench_intensity.py [--n 1000000] [--chunk 100000] [--draws 100] [--naive 2000]

Inputs are realistic: the real Xiamen footprints (areas) with heights and 5–95 % bands from
the shipped height model (``height-xgb:v1``), replicated to ``--n`` buildings with a small
random jitter (±10 % log-normal on area and height, so copies are not identical), structures
drawn from the four RASMI classes, function from the worker's size rule, region ASIA_CHN.
``MaterialIntensityTable.simulate_stock`` runs chunk by chunk (the chunk's table is then
dropped, as the building worker writes one part per batch).

The naive reference loops over a sample of buildings in Python, computing each building's
point estimate and its Monte-Carlo quantiles (``np.quantile``) from the same draws; its
numbers must equal the vectorised ones (checked, max relative difference reported). A
second vectorised run on a worst-case input (tall buildings with very wide height bands, so
almost every building has its own floors pattern and nothing is shared) shows the floor of
the throughput.

Reports buildings per second (wall clock and process CPU time: the machine is shared),
peak memory (peak RSS of the process, and the numpy peak of one chunk via tracemalloc).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]),
                str(Path(__file__).resolve().parents[1] / "services/lib")]

import geopandas as gpd
import numpy as np
from urbanfabric.attributes import features, height
from urbanfabric.stock.vocabulary import LEVELS
from urbanfabric.stock.intensity import MaterialIntensityTable, default_table
from urbanfabric.stock.monte_carlo import StockOptions
from urbanfabric.io.model_repository import SHARED_DATA, model_dir

from bench._util import peak_rss_mib, save

REGION = "ASIA_CHN"


def real_inputs() -> dict[str, np.ndarray]:
    """Areas and height bands of the real Xiamen footprints from the shipped height model."""
    raw = json.loads((SHARED_DATA / "footprints/xiamen-z18/buildings.json").read_text())
    frame = gpd.GeoDataFrame.from_features(raw["features"] if isinstance(raw, dict) else raw,
                                           crs="EPSG:4326")
    frame = frame.to_crs(frame.estimate_utm_crs())
    feats = features.footprint_features(frame)
    h, lo, hi = height.HeightModel.load(model_dir("height-xgb", "v1")).predict(feats)
    return {"area": feats["area_m2"].to_numpy(), "h": np.asarray(h), "lo": np.asarray(lo),
            "hi": np.asarray(hi)}


def replicate(base: dict[str, np.ndarray], n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n buildings resampled from the real ones, area and height jittered by ±10 %."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(base["area"]), n)
    area = base["area"][pick] * rng.lognormal(0, 0.1, n)
    scale = rng.lognormal(0, 0.1, n)  # one factor for height and band: keeps the band shape
    h, lo, hi = (base[k][pick] * scale for k in ("h", "lo", "hi"))
    floors = height.floors_from_height(h).astype(np.float64)
    func = np.where((floors <= 2) & (area < 250), "RS", "RM").astype(object)
    struct = rng.choice(np.array(["C", "M", "S", "T"], dtype=object), n)
    return {"area": area, "h": h, "lo": lo, "hi": hi, "floors": floors, "function": func,
            "structure": struct}


def worst_case(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Tall buildings with very wide bands: (almost) every floors pattern is distinct."""
    rng = np.random.default_rng(seed)
    h = rng.uniform(10, 300, n)
    return {"area": rng.lognormal(5, 0.8, n), "h": h, "lo": h * rng.uniform(0.4, 0.9, n),
            "hi": h * rng.uniform(1.1, 2.5, n), "floors": np.maximum(np.floor(h / 3 + .5), 1),
            "function": np.full(n, "RM", dtype=object),
            "structure": rng.choice(np.array(["C", "M", "S", "T"], dtype=object), n)}


def run(table: MaterialIntensityTable, data: dict[str, np.ndarray], sl: slice,
        opt: StockOptions):
    return table.simulate_stock(data["area"][sl], data["function"][sl], data["structure"][sl],
                                REGION, floors=data["floors"][sl], height_m=data["h"][sl],
                                height_p05=data["lo"][sl], height_p95=data["hi"][sl],
                                options=opt,
                                structure_p=data["structure_p"][sl] if "structure_p" in data else None)


def vectorised(table: MaterialIntensityTable, data: dict[str, np.ndarray], chunk: int,
               opt: StockOptions) -> dict:
    n = len(data["area"])
    total_kg, wall, cpu = 0.0, 0.0, 0.0
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        w0, c0 = time.perf_counter(), time.process_time()
        out = run(table, data, sl, opt)
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        total_kg += float(out["mass_total_kg"].sum())
        del out
    return {"buildings": n, "wall_s": wall, "cpu_s": cpu, "buildings_per_s": n / wall,
            "buildings_per_cpu_s": n / cpu, "total_mass_t": total_kg / 1000}


def naive(table: MaterialIntensityTable, data: dict[str, np.ndarray], m: int,
          opt: StockOptions) -> tuple[dict, np.ndarray]:
    """Per-building Python loop over the same draws; returns timing and its results."""
    r = table.regions.index(REGION)
    draws = table.draws(r, opt)
    stratum, v = opt.stratum_of_draw(), opt.height_levels()
    p50 = list(LEVELS).index("p50")
    res = np.empty((m, draws.shape[1], 4))
    w0, c0 = time.perf_counter(), time.process_time()
    for b in range(m):
        f = table.functions.index(data["function"][b])
        s = table.structures.index(data["structure"][b])
        gfa = data["area"][b] * data["floors"][b]
        mi = table._qcube[f, s, r, :, p50]
        point = gfa * mi
        q = np.interp(v, [0.05, 0.5, 0.95], [data["lo"][b], data["h"][b], data["hi"][b]])
        floors = np.maximum(np.floor(q / opt.storey_height_m + 0.5), 1)[stratum]
        sample = data["area"][b] * floors * draws[f * len(table.structures) + s]
        res[b, :, 0] = np.concatenate([point, [point.sum(), point @ table.carbon_factors]])
        res[b, :, 1:] = np.quantile(sample, [0.05, 0.5, 0.95], axis=1).T
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"buildings": m, "wall_s": wall, "cpu_s": cpu, "buildings_per_s": m / wall,
            "buildings_per_cpu_s": m / cpu}, res


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--chunk", type=int, default=100_000)
    p.add_argument("--draws", type=int, default=100)
    p.add_argument("--naive", type=int, default=2_000)
    p.add_argument("--worst", type=int, default=100_000)
    args = p.parse_args()
    table = default_table()
    opt = StockOptions(draws=args.draws)
    base = real_inputs()
    data = replicate(base, args.n)
    run(table, data, slice(0, 1000), opt)  # warm-up: draws cached, code paths loaded
    gc.collect()
    rss_before = peak_rss_mib()

    fast = vectorised(table, data, args.chunk, opt)
    fast["peak_rss_mib"] = peak_rss_mib()
    tracemalloc.start()
    run(table, data, slice(0, args.chunk), opt)
    fast["numpy_peak_per_chunk_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()

    slow, ref = naive(table, data, args.naive, opt)
    out = run(table, data, slice(0, args.naive), opt)
    series = [f"mass_{m}_kg" for m in table.materials] + ["mass_total_kg", "embodied_co2e_kg"]
    got = np.stack([out[[s, f"{s}_p05", f"{s}_mc_p50", f"{s}_p95"]].to_numpy()
                    for s in series], axis=1)
    diff = float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-9)))

    # The structure sampled per draw from structure-type:v1's probabilities (issue 18), on the
    # same buildings: the price of carrying the structure's uncertainty into the ranges.
    from urbanfabric.stock.structure import StructureModel

    model = StructureModel.load(model_dir("structure-type", "v1"))
    modelled = {**data, "structure_p": model.predict_proba(data["floors"], data["function"],
                                                           np.full(args.n, np.nan), [REGION] * args.n)}
    sampled = vectorised(table, modelled, args.chunk, opt)

    worst = worst_case(args.worst)
    hard = vectorised(table, worst, args.chunk, opt)
    save("intensity", {
        "command": "python " + " ".join(sys.argv),
        "draws": args.draws, "region": REGION,
        "inputs": f"{len(base['area'])} Xiamen footprints + height-xgb:v1 bands, "
                  f"resampled to {args.n} with ±10% jitter",
        "vectorised": fast,
        "naive_loop": slow,
        "speedup_wall": fast["buildings_per_s"] / slow["buildings_per_s"],
        "max_rel_diff_vectorised_vs_naive": diff,
        "worst_case_distinct_patterns": hard,
        "structure_sampled": sampled,
        "structure_sampled_vs_fixed_wall": sampled["buildings_per_s"] / fast["buildings_per_s"],
        "rss_before_mib": rss_before,
    })


if __name__ == "__main__":
    main()
