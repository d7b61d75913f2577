"""Model time of one tile at the old grid (1024 px) and at a 0.30 m model's (1856 px at 24.5° N).

Issue 20, item 0: the tile raster follows the model's GSD, so finer models cost more per tile
(the same ground). Both sizes run in one process, alternating, so their ratio is measured under
the same load; the windows are the pipeline's (512 px, 128 px overlap, 128 px halo)::

    OMP_NUM_THREADS=1 PYTHONPATH=.:services/lib nice -n 19 .venv/bin/python bench/grid_tile_time.py --rounds 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from models.footprint_unet.net import load_model, predict_proba
from urbanfabric.footprints.windows import plan_windows, predict_tiled

HALO = 128


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/footprint_unet/v5"))
    p.add_argument("--sizes", default="1024,1856", help="tile sides (px, without halo)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    seconds: dict[int, float] = dict.fromkeys(sizes, 0.0)
    for r in range(args.rounds):
        for core in sizes:
            side = core + 2 * HALO
            image = rng.random((3, side, side), dtype=np.float32)
            t0 = time.perf_counter()
            predict_tiled(image, lambda b: predict_proba(model, b, batch_size=2), window=512, overlap=128,
                          batch_size=2)
            took = time.perf_counter() - t0
            seconds[core] += took
            print(f"round {r + 1}: {core} px tile: {took:.1f} s "
                  f"({plan_windows(side, side).model_pixels / 1e6:.2f} M model pixels)", flush=True)
    base = seconds[sizes[0]]
    for core in sizes:
        print(f"{core} px: {seconds[core]:.1f} s over {args.rounds} rounds, {seconds[core] / base:.2f}× {sizes[0]} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
