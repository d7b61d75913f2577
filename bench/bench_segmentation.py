"""Segmentation throughput and memory: streamed tiles vs a naive whole-image baseline.

Source: the real Xiamen z18 imagery (WebP tiles, ≈ 0.54 m ground sampling distance), read
as zoom-16 blocks of 1024 × 1024 px (16 tiles each). An area of N blocks is mapped two ways:

* **streamed** (the pipeline's way): block by block — read + decode one block, IQR-calibrate it
  with a 32 px halo, Hann-blended 512 px windows (128 px overlap) batched 4 per model call,
  polygonize, keep only the polygons; nothing but the current block is ever in memory.
* **naive**: read the whole area into one image, calibrate it at once, predict each 512 px
  window on its own (batch 1, no overlap, so seams are possible), polygonize the whole map.

Stage times are split into read + decode, calibration, model and polygonization; throughput is
megapixels/s and km²/hour at the source resolution. Each (mode, N) runs in a fresh process so
its peak RSS is its own::

    python bench/bench_segmentation.py --sweep 1,2,4,8            # both modes, growing area
    python bench/bench_segmentation.py --mode streamed --blocks 2  # one run, JSON on stdout
    python bench/bench_segmentation.py --protocol V2_GRPC ...      # through a running model server
    python bench/bench_segmentation.py --sweep 1,4,16 --model stand-in --out-name segmentation_memory
    python bench/bench_segmentation.py --tta-sweep none,flips,d4 --blocks 1 --model footprint-unet:v5

``--tta`` wraps the model in test-time augmentation (:func:`urbanfabric.footprints.tta.with_tta`, streamed
mode): the model stage should grow with the number of views and nothing else.

``--layout-sweep fixed,fit`` (issue 22, item 6) compares window layouts
(:func:`urbanfabric.footprints.windows.plan_windows`) in the streamed mode on the same blocks:
each layout ``--repeats`` times in fresh processes, interleaved (fixed, fit, fixed, fit, …) so
load changes hit both, each after one untimed warm-up call of its window shape; the minimum per
layout is reported with its ratio to the first layout's minimum, and the model pixels per output
pixel counted from the plan::

    python bench/bench_segmentation.py --layout-sweep fixed,fit --halo 128 --blocks 2 --repeats 3 \
        --model footprint-unet:v7 --threads 2 --out-name segmentation_layout_h128
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "services/lib")]

import numpy as np  # noqa: E402

from bench._util import peak_rss_mib, save  # noqa: E402
from urbanfabric.imagery import acquisition, calibration  # noqa: E402
from urbanfabric.footprints import polygons, windows  # noqa: E402
from urbanfabric.footprints.tta import TTA, with_tta  # noqa: E402
from urbanfabric.runtime.model_client import InferenceProtocol, ModelClient  # noqa: E402
from urbanfabric.io.model_repository import SHARED_DATA  # noqa: E402

HALO = 32
TILE_DIR = SHARED_DATA / "footprints/xiamen-z18/tiles"


def _client(protocol: InferenceProtocol) -> ModelClient:
    if protocol is InferenceProtocol.EMBEDDED:
        return ModelClient(protocol)
    from urbanfabric.settings import Settings

    s = Settings.load()
    return ModelClient(protocol, rest_url=s.modelserver_rest, grpc_addr=s.modelserver_grpc, timeout_s=300)


def _blocks(n: int):
    """The first ``n`` well-covered blocks, read lazily (the read happens on ``next``)."""
    count = 0
    for block_id, raster in acquisition.mosaic_xyz_blocks(TILE_DIR, 18):
        if (raster.data != 0).mean() < 0.9:
            continue
        yield block_id, raster
        count += 1
        if count == n:
            return


def _ground_km2(raster, pixels: int) -> float:
    """Ground area of ``pixels`` web-mercator pixels at the raster's latitude."""
    left, bottom, right, top = raster.bounds
    lat = math.degrees(math.atan(math.sinh(((top + bottom) / 2) / 6378137.0)))
    gsd = abs(raster.transform.a) * math.cos(math.radians(lat))
    return pixels * gsd * gsd / 1e6


def run_streamed(n: int, infer, threshold: float, window: int, overlap: int, halo: int = HALO,
                 layout: str = "fixed", max_window: int = windows.DEFAULT_MAX_WINDOW) -> dict:
    t = {"read_decode": 0.0, "calibration": 0.0, "model": 0.0, "polygonization": 0.0}
    pixels, km2, footprints, model_pixels = 0, 0.0, 0, 0
    it = _blocks(n)
    while True:
        t0 = time.perf_counter()
        try:
            _, raw = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        data = np.pad(raw.data, ((0, 0), (halo, halo), (halo, halo)), mode="reflect")
        ard = calibration.iqr_scale(data, nodata=0)
        t2 = time.perf_counter()
        prob = windows.predict_tiled(ard, infer, window=window, overlap=overlap, batch_size=4,
                                     layout=layout, max_window=max_window)
        t3 = time.perf_counter()
        model_pixels += windows.plan_windows(*ard.shape[1:], window, overlap, layout, max_window).model_pixels
        core = prob[halo:-halo, halo:-halo] if halo else prob
        fp = polygons.polygonize(core, raw.transform, str(raw.crs), threshold=threshold)
        t4 = time.perf_counter()
        for key, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            t[key] += dt
        pixels += raw.data.shape[1] * raw.data.shape[2]
        km2 += _ground_km2(raw, raw.data.shape[1] * raw.data.shape[2])
        footprints += len(fp)
        del raw, data, ard, prob  # only polygons (counted) outlive a block
    return {"stage_seconds": t, "pixels": pixels, "km2": km2, "footprints": footprints,
            "model_pixels": model_pixels, "model_pixels_per_output_pixel": model_pixels / max(pixels, 1)}


def run_naive(n: int, infer, threshold: float, window: int) -> dict:
    t = {"read_decode": 0.0, "calibration": 0.0, "model": 0.0, "polygonization": 0.0}
    t0 = time.perf_counter()
    rasters = [r for _, r in _blocks(n)]
    side = math.ceil(math.sqrt(len(rasters)))
    size = rasters[0].data.shape[1]
    rows = math.ceil(len(rasters) / side)
    image = np.zeros((3, rows * size, side * size), np.uint8)
    for i, r in enumerate(rasters):
        image[:, (i // side) * size : (i // side + 1) * size, (i % side) * size : (i % side + 1) * size] = r.data
    t1 = time.perf_counter()
    ard = calibration.iqr_scale(image, nodata=0)
    t2 = time.perf_counter()
    h, w = ard.shape[1:]
    prob = np.zeros((h, w), np.float32)
    for r in range(0, h, window):
        for c in range(0, w, window):
            patch = np.nan_to_num(ard[None, :, r : r + window, c : c + window], nan=0.0)
            prob[r : r + window, c : c + window] = infer(np.ascontiguousarray(patch))[0]
    t3 = time.perf_counter()
    # The mosaic is placed on the first block's grid (pixel geometry is what matters here).
    fp = polygons.polygonize(prob, rasters[0].transform, str(rasters[0].crs), threshold=threshold)
    t4 = time.perf_counter()
    for key, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
        t[key] += dt
    pixels = sum(r.data.shape[1] * r.data.shape[2] for r in rasters)
    return {"stage_seconds": t, "pixels": pixels, "km2": sum(_ground_km2(r, r.data.shape[1] * r.data.shape[2]) for r in rasters),
            "footprints": len(fp)}


def one_run(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    if args.model == "stand-in":
        # Memory-scaling runs only: a near-free model (bright, smooth pixels → "building") so
        # large areas fit the time budget; the real model's memory is per window, constant.
        from scipy import ndimage

        def infer(batch: np.ndarray) -> np.ndarray:
            bright = batch.mean(axis=1)
            return ndimage.uniform_filter(bright, size=(1, 9, 9)).astype(np.float32)
    else:
        name, version = args.model.split(":")
        client = _client(InferenceProtocol[args.protocol])

        def infer(batch: np.ndarray) -> np.ndarray:
            return client.infer(name, version, batch)

    if args.warmup:
        # One untimed call of the shape this layout sends (the first call of a shape is slower).
        plan = windows.plan_windows(1024 + 2 * args.halo, 1024 + 2 * args.halo, args.window, args.overlap,
                                    args.layout, args.max_window)
        infer(np.zeros((min(plan.count, 4), 3, plan.window, plan.window), np.float32))
    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    if args.mode == "streamed":
        res = run_streamed(args.blocks, with_tta(infer, args.tta), args.threshold, args.window,
                           args.overlap, args.halo, args.layout, args.max_window)
    else:
        res = run_naive(args.blocks, infer, args.threshold, args.window)
    wall = time.perf_counter() - t0
    mpx = res["pixels"] / 1e6
    return {"mode": args.mode, "blocks": args.blocks, "model": args.model, "protocol": args.protocol, "tta": args.tta,
            "layout": args.layout, "halo": args.halo, "max_window": args.max_window, "threads": args.threads,
            "wall_seconds": wall, "seconds_per_km2": wall / res["km2"],
            "model_seconds_per_km2": res["stage_seconds"]["model"] / res["km2"], **res, "megapixels": mpx, "megapixels_per_s": mpx / wall,
            "km2_per_hour": res["km2"] / wall * 3600,
            "peak_rss_mib": peak_rss_mib(), "peak_rss_mib_after_model_load": rss_before}


def _child_run(args: argparse.Namespace, mode: str, blocks: int, tta: str = "none", layout: str = "fixed") -> dict:
    """One (mode, blocks, tta, layout) run in a fresh process, so its peak RSS is its own."""
    cmd = [sys.executable, __file__, "--mode", mode, "--blocks", str(blocks), "--model", args.model,
           "--protocol", args.protocol, "--threshold", str(args.threshold), "--window", str(args.window),
           "--overlap", str(args.overlap), "--threads", str(args.threads), "--tta", tta,
           "--halo", str(args.halo), "--layout", layout, "--max-window", str(args.max_window)]
    if args.warmup:
        cmd.append("--warmup")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _summary(r: dict) -> str:
    return (f"{r['megapixels']:.1f} Mpx {r['wall_seconds']:.1f} s {r['megapixels_per_s']:.3f} Mpx/s "
            f"{r['km2_per_hour']:.1f} km²/h peak {r['peak_rss_mib']:.0f} MiB "
            + " ".join(f"{k}={v:.1f}" for k, v in r["stage_seconds"].items()))


def _load_average() -> list[str]:
    try:
        return open("/proc/loadavg").read().split()[:3]
    except OSError:
        return []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("streamed", "naive"), default="streamed")
    p.add_argument("--blocks", type=int, default=1, help="area in 1024² blocks")
    p.add_argument("--sweep", default="", help="comma list of block counts: run both modes for each")
    p.add_argument("--model", default="footprint-unet:v1",
                   help="name:version, or 'stand-in' (no network; memory scaling only)")
    p.add_argument("--protocol", default="EMBEDDED", choices=[x.name for x in InferenceProtocol])
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--overlap", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-name", default="segmentation_scaling", help="bench/results/<name>.json")
    p.add_argument("--tta", default="none", choices=[t.value for t in TTA],
                   help="test-time augmentation (streamed)")
    p.add_argument("--tta-sweep", default="", help="comma list of TTAs: one streamed run each (--blocks)")
    p.add_argument("--halo", type=int, default=HALO, help="context px on each side of a block (streamed)")
    p.add_argument("--layout", default="fixed", choices=[v.value for v in windows.WindowLayout],
                   help="window layout (streamed)")
    p.add_argument("--max-window", type=int, default=windows.DEFAULT_MAX_WINDOW, help="fit: largest window side")
    p.add_argument("--layout-sweep", default="", help="comma list of layouts: streamed runs, interleaved")
    p.add_argument("--repeats", type=int, default=1, help="--layout-sweep: runs per layout (min reported)")
    p.add_argument("--warmup", action="store_true", help="one untimed model call of the layout's shape first")
    args = p.parse_args()
    if args.layout_sweep:
        args.warmup = True
        layouts = [v for v in args.layout_sweep.split(",") if v]
        runs = []
        for rep in range(args.repeats):
            for layout in layouts:
                runs.append(_child_run(args, "streamed", args.blocks, args.tta, layout))
                print(f"rep {rep} layout={layout:5s} halo={args.halo} {_summary(runs[-1])}", flush=True)
        best = {}
        for layout in layouts:
            mine = [r for r in runs if r["layout"] == layout]
            best[layout] = {
                "runs": len(mine),
                "model_pixels_per_output_pixel": mine[0]["model_pixels_per_output_pixel"],
                "min_wall_seconds": min(r["wall_seconds"] for r in mine),
                "min_model_seconds": min(r["stage_seconds"]["model"] for r in mine),
                "min_seconds_per_km2": min(r["seconds_per_km2"] for r in mine),
                "min_model_seconds_per_km2": min(r["model_seconds_per_km2"] for r in mine),
                "max_peak_rss_mib": max(r["peak_rss_mib"] for r in mine),
                "footprints": mine[0]["footprints"],
            }
        base = best[layouts[0]]
        for layout, b in best.items():
            b["wall_ratio_to_" + layouts[0]] = b["min_wall_seconds"] / base["min_wall_seconds"]
            b["model_ratio_to_" + layouts[0]] = b["min_model_seconds"] / base["min_model_seconds"]
            b["model_pixel_ratio_to_" + layouts[0]] = (b["model_pixels_per_output_pixel"]
                                                     / base["model_pixels_per_output_pixel"])
            print(f"{layout:5s} " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in b.items()), flush=True)
        save(args.out_name if args.out_name != "segmentation_scaling" else "segmentation_layout",
             {"command": "python " + " ".join(sys.argv), "load_average": _load_average(), "best": best,
              "runs": runs})
        return
    if args.tta_sweep:
        runs = []
        for tta in [v for v in args.tta_sweep.split(",") if v]:
            runs.append(_child_run(args, "streamed", args.blocks, tta))
            print(f"tta={tta:5s} {_summary(runs[-1])}", flush=True)
        save(args.out_name if args.out_name != "segmentation_scaling" else "segmentation_tta",
             {"command": "python " + " ".join(sys.argv), "load_average": _load_average(), "runs": runs})
        return
    if not args.sweep:
        print(json.dumps(one_run(args), default=float))
        return
    runs = []
    for n in [int(v) for v in args.sweep.split(",") if v]:
        for mode in ("streamed", "naive"):
            runs.append(_child_run(args, mode, n))
            print(f"{mode:8s} N={n:2d} {_summary(runs[-1])}", flush=True)
    save(args.out_name, {"command": "python " + " ".join(sys.argv), "load_average": _load_average(), "runs": runs})


if __name__ == "__main__":
    main()
