"""Accuracy and seams of the segmentation window layouts, the way the pipeline cuts tiles.

Issue 22, item 6: the ``fit`` layout (:func:`urbanfabric.footprints.windows.plan_windows`) runs a
zoom-16 tile with its halo as one window instead of 3 × 3 windows of 512 px. This script checks
that it loses neither accuracy nor seam agreement, on held-out test scenes large enough to hold
several tiles (the Dubai test tile t8: 9 scenes of 1479 × 2149 px; the SpaceNet test strip is
900 × 336 px and crowdai/xiamen test chips are 300 px or 256 px, smaller than one tile, so the
pipeline never cuts them and they are not used).

Each scene is IQR-scaled once (as the pipeline's "IQR per city"; the same ARD for both layouts),
then cut as the pipeline cuts an area: 1024 px tile cores on a grid (the last row and column
shifted inside the scene), each read with ``--halo`` px of context (reflect outside the scene),
segmented with ``segment_tile``'s window call under each layout, the halo cropped and the cores
stitched. Scored with the project's scorer (``models.footprint_eval.score_mask``: pixel IoU / F1
micro-averaged over the split, SpaceNet instance F1 at IoU ≥ 0.5) at the model's validation
threshold. Seams: for every pair of neighbouring tiles, the pixels within 4 px of their shared
core border are predicted by both tiles (one as core, one as halo); reported as the share of
those pixels on which the two tiles' building masks agree and the mean |Δp|.

    PYTHONPATH=.:services/lib nice -n 10 .venv/bin/python bench/segmentation_layout_accuracy.py \\
        --model footprint-unet:v7 --layouts fixed,fit --halo 128 --threads 2

``--dataset xiamen-blocks`` is the pipeline's own geometry on its own imagery: the Xiamen z18
sample (707 of the 29 × 31 tiles of 256 px) mosaicked onto the zoom-16 grid (72 blocks of
1024 px, missing tiles are nodata), IQR-scaled once over the mosaic, and every zoom-16 block that
holds a tile of ``--split`` segmented with its real neighbours as halo. Scored on that split's
256 px tiles only (pixel counts summed, instances per tile, as ``footprint_eval`` scores
xiamen); seams between every pair of neighbouring blocks. For the U-Net v5–v8 (trained on
crowdai, dubai and spacenet) every Xiamen tile is held out, so ``val`` can choose and
``test`` (the set's ``csv_evaluation`` tiles) reports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "services/lib")]

import numpy as np  # noqa: E402

from bench._util import save  # noqa: E402
from models.common.metrics import ConfusionAtThresholds, InstanceScores, mask_instances  # noqa: E402
from models.footprint_eval.__main__ import score_mask  # noqa: E402
from models.footprint_unet import datasets as D  # noqa: E402
from urbanfabric.footprints import windows  # noqa: E402
from urbanfabric.footprints.tile_segmentation import model_threshold  # noqa: E402
from urbanfabric.imagery.calibration import iqr_scale  # noqa: E402
from urbanfabric.runtime.model_client import InferenceProtocol, ModelClient  # noqa: E402

CORE = 1024
BAND = 4


def tile_starts(length: int, core: int = CORE) -> list[int]:
    """Core starts on a ``core`` grid; the last one shifted to end at the scene's edge."""
    if length <= core:
        return [0]
    starts = list(range(0, length - core, core))
    starts.append(length - core)
    return starts


def scene_tiles(ard: np.ndarray, halo: int, predict) -> tuple[np.ndarray, dict]:
    """Stitched core probability and each tile's full (core + halo) probability."""
    _, rows, cols = ard.shape
    padded = np.pad(ard, ((0, 0), (halo, halo), (halo, halo)), mode="reflect")
    out = np.full((rows, cols), np.nan, np.float32)
    tiles = {}
    for r in tile_starts(rows):
        for c in tile_starts(cols):
            h, w = min(CORE, rows), min(CORE, cols)
            block = padded[:, r : r + h + 2 * halo, c : c + w + 2 * halo]
            prob = predict(block)
            tiles[(r, c)] = prob
            out[r : r + h, c : c + w] = prob[halo : halo + h, halo : halo + w]
    return out, tiles


def seam_pairs(tiles: dict, halo: int, threshold: float, complete_grid: bool = True) -> tuple[int, int, float]:
    """(agreeing pixels, border pixels, sum |Δp|) over every neighbouring pair's shared border.

    Pixels that are nodata (NaN) in either tile are left out.
    """
    agree = total = 0
    dsum = 0.0
    keys = sorted(tiles)
    rows = sorted({k[0] for k in keys})
    cols = sorted({k[1] for k in keys})

    def add(pa: np.ndarray, pb: np.ndarray) -> None:
        nonlocal agree, total, dsum
        ok = np.isfinite(pa) & np.isfinite(pb)
        pa, pb = pa[ok], pb[ok]
        agree += int(np.count_nonzero((pa >= threshold) == (pb >= threshold)))
        total += pa.size
        dsum += float(np.abs(pa - pb).sum())

    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if (r, c) not in tiles:
                continue
            a = tiles[(r, c)]
            side = a.shape[0] - 2 * halo
            if j + 1 < len(cols) and (r, cols[j + 1]) in tiles and (complete_grid or cols[j + 1] - c == side):
                c2 = cols[j + 1]
                b = tiles[(r, c2)]
                xa = halo + (c2 - c)  # border column in a's frame
                add(a[halo : halo + side, xa - BAND : xa + BAND], b[halo : halo + side, halo - BAND : halo + BAND])
            if i + 1 < len(rows) and (rows[i + 1], c) in tiles and (complete_grid or rows[i + 1] - r == side):
                r2 = rows[i + 1]
                b = tiles[(r2, c)]
                ya = halo + (r2 - r)
                add(a[ya - BAND : ya + BAND, halo : halo + side], b[halo - BAND : halo + BAND, halo : halo + side])
    return agree, total, dsum


def xiamen_blocks(split: str, halo: int, predict, cache: Path, max_blocks: int = 0) -> tuple[list, dict]:
    """(list of (name, prob 256², mask 256²) for the split's tiles, the blocks' probabilities)."""
    from models.footprint_unet import data as xiamen_data
    from models.footprint_unet.datasets import _XIAMEN_SPLIT

    data_dir = D.DEFAULT_ROOT / "xiamen-z18"
    tiles = {(t.x, t.y): t for s in ("training", "validation", "evaluation")
             for t in xiamen_data.read_split(data_dir, s)}
    wanted = {(t.x, t.y) for t in xiamen_data.read_split(data_dir, _XIAMEN_SPLIT[split])}
    x0 = min(x for x, _ in tiles) // 4 * 4
    y0 = min(y for _, y in tiles) // 4 * 4
    nx = (max(x for x, _ in tiles) // 4 * 4 + 4 - x0) // 4
    ny = (max(y for _, y in tiles) // 4 * 4 + 4 - y0) // 4
    image = np.zeros((3, ny * 1024 + 2 * halo, nx * 1024 + 2 * halo), np.uint8)
    for (x, y), t in tiles.items():
        r, c = halo + (y - y0) * 256, halo + (x - x0) * 256
        image[:, r : r + 256, c : c + 256] = xiamen_data.load_image(data_dir, t)
    ard = iqr_scale(image, nodata=0)  # NaN where no tile: fed as 0, comes back NaN
    blocks = {}
    for by in range(ny):
        for bx in range(nx):
            if not any((x0 + 4 * bx + i, y0 + 4 * by + j) in wanted for i in range(4) for j in range(4)):
                continue
            if max_blocks and len(blocks) == max_blocks:
                break
            path = cache / f"block_{by}_{bx}.npy"
            if path.exists():
                blocks[(by * 1024, bx * 1024)] = np.load(path).astype(np.float32)
                continue
            r, c = by * 1024, bx * 1024
            prob = predict(ard[:, r : r + 1024 + 2 * halo, c : c + 1024 + 2 * halo])
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, prob.astype(np.float16))
            blocks[(r, c)] = prob
    scored = []
    for (x, y) in sorted(wanted):
        by, bx = (y - y0) // 4, (x - x0) // 4
        if (by * 1024, bx * 1024) not in blocks:  # beyond --max-blocks
            continue
        prob = blocks[(by * 1024, bx * 1024)]
        r, c = halo + (y - y0) % 4 * 256, halo + (x - x0) % 4 * 256
        scored.append((f"18/{x}/{y}", prob[r : r + 256, c : c + 256], xiamen_data.load_mask(data_dir, tiles[(x, y)])))
    return scored, blocks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="footprint-unet:v7")
    p.add_argument("--layouts", default="fixed,fit")
    p.add_argument("--halo", type=int, default=128)
    p.add_argument("--max-window", type=int, default=windows.DEFAULT_MAX_WINDOW)
    p.add_argument("--dataset", default="dubai")
    p.add_argument("--split", default="test")
    p.add_argument("--scenes", type=int, default=0, help="first N scenes (0 = all)")
    p.add_argument("--max-blocks", type=int, default=0,
                   help="xiamen-blocks: the first N blocks (row by row) holding tiles of the split (0 = all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-area-px", type=float, default=20.0)
    p.add_argument("--cache-dir", type=Path, default=Path("/work/cache-segeff/layout"))
    p.add_argument("--out-name", default="segmentation_layout_accuracy")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    name, version = args.model.split(":")
    client = ModelClient(InferenceProtocol.EMBEDDED)
    threshold = model_threshold(name, version)
    scenes = [] if args.dataset == "xiamen-blocks" else D.load(args.dataset, args.split)
    if args.scenes:
        scenes = scenes[: args.scenes]
    weights = ROOT / "models" / name.replace("-", "_") / version / "model.pt"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    runs = []
    for layout in [v for v in args.layouts.split(",") if v]:
        conf = ConfusionAtThresholds((threshold,))
        inst = InstanceScores()
        agree = total = 0
        dsum = 0.0
        model_px = 0
        t0 = time.perf_counter()

        def predict(block: np.ndarray, layout: str = layout) -> np.ndarray:
            nonlocal model_px
            plan = windows.plan_windows(block.shape[1], block.shape[2], 512, 128, layout, args.max_window)
            model_px += plan.model_pixels
            return windows.predict_tiled(block, lambda b: client.infer(name, version, b), window=512,
                                         overlap=128, batch_size=4, layout=layout, max_window=args.max_window)

        out_px = 0
        per_scene: list[list[int]] = []
        if args.dataset == "xiamen-blocks":
            cache = args.cache_dir / f"{digest}-{layout}-{args.max_window}-h{args.halo}" / "xiamen-blocks"
            scored, blocks = xiamen_blocks(args.split, args.halo, predict, cache, args.max_blocks)
            for _, prob, mask in scored:
                out_px += prob.size
                pred = np.nan_to_num(prob, nan=0.0) >= threshold
                c, i = score_mask(pred, mask, args.min_area_px, mask_instances(mask))
                per_scene.append([int(c.tp[0]), int(c.fp[0]), int(c.fn[0])])
                for a in ("tp", "fp", "fn", "tn"):
                    getattr(conf, a)[:] += getattr(c, a)
                inst = inst + i
            agree, total, dsum = seam_pairs(blocks, args.halo, threshold, complete_grid=False)
            side = CORE + 2 * args.halo
            model_px = len(blocks) * windows.plan_windows(side, side, 512, 128, layout, args.max_window).model_pixels
            out_px = len(blocks) * CORE * CORE  # model pixels per block-core pixel
            scenes = scored
        for scene in ([] if args.dataset == "xiamen-blocks" else scenes):
            key = args.cache_dir / f"{digest}-{layout}-{args.max_window}-h{args.halo}" / args.dataset / args.split
            path = key / (scene.name.replace("/", "_") + ".npz")
            if path.exists():
                z = np.load(path)
                prob = z["prob"].astype(np.float32)
                tiles = {tuple(int(v) for v in k.split("_")[1:]): z[k].astype(np.float32) for k in z.files if k.startswith("t_")}
                model_px += int(z["model_px"])
            else:
                before = model_px
                ard = np.nan_to_num(iqr_scale(scene.image), nan=0.0).astype(np.float32)
                prob, tiles = scene_tiles(ard, args.halo, predict)
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, prob=prob.astype(np.float16), model_px=model_px - before,
                         **{f"t_{r}_{c}": t.astype(np.float16) for (r, c), t in tiles.items()})
            out_px += prob.size
            pred = np.nan_to_num(prob, nan=0.0) >= threshold
            c, i = score_mask(pred, scene.mask, args.min_area_px, mask_instances(scene.mask))
            per_scene.append([int(c.tp[0]), int(c.fp[0]), int(c.fn[0])])
            for a in ("tp", "fp", "fn", "tn"):
                getattr(conf, a)[:] += getattr(c, a)
            inst = inst + i
            ag, tot, ds = seam_pairs(tiles, args.halo, threshold)
            agree, total, dsum = agree + ag, total + tot, dsum + ds
        px = conf.scores(0)
        run = {"layout": layout, "halo": args.halo, "max_window": args.max_window, "model": args.model,
               "threshold": threshold, "dataset": args.dataset, "split": args.split, "scenes": len(scenes),
               "megapixels": out_px / 1e6, "model_pixels_per_scene_pixel": model_px / out_px,
               "pixel": {k: px[k] for k in ("iou", "f1", "precision", "recall")},
               "instance_iou50": inst.as_dict(),
               "seam": {"border_pixels": total, "mask_agreement": agree / max(total, 1),
                        "mean_abs_dp": dsum / max(total, 1)},
               "seconds": time.perf_counter() - t0, "per_scene_tp_fp_fn": per_scene}
        runs.append(run)
        print(json.dumps({k: v for k, v in run.items() if k != "per_scene_tp_fp_fn"}), flush=True)
    result = {"command": "python " + " ".join(sys.argv), "runs": runs}
    if len(runs) > 1:
        result["paired_bootstrap"] = [paired_bootstrap(runs[0], r) for r in runs[1:]]
        for b in result["paired_bootstrap"]:
            print(json.dumps(b), flush=True)
    save(args.out_name, result)


def paired_bootstrap(base: dict, other: dict, draws: int = 2000, seed: int = 0) -> dict:
    """ΔIoU (other − base, micro over scenes) with a 95 % interval from resampling scenes
    (the same scenes for both layouts in every draw)."""
    a = np.asarray(base["per_scene_tp_fp_fn"], dtype=np.float64)
    b = np.asarray(other["per_scene_tp_fp_fn"], dtype=np.float64)

    def iou(x: np.ndarray) -> np.ndarray:
        tp, fp, fn = x[..., 0], x[..., 1], x[..., 2]
        return tp / np.maximum(tp + fp + fn, 1)

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(draws, len(a)))
    delta = iou(b[idx].sum(axis=1)) - iou(a[idx].sum(axis=1))
    return {"base": base["layout"], "other": other["layout"], "scenes": len(a),
            "delta_iou": float(iou(b.sum(axis=0)) - iou(a.sum(axis=0))),
            "delta_iou_95": [float(np.percentile(delta, 2.5)), float(np.percentile(delta, 97.5))]}


if __name__ == "__main__":
    main()
