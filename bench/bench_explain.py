"""Do the heatmaps point at the evidence? A deletion check on held-out roof images.

For every image of a class-per-folder split and every method, the chip's top class is
explained; then a quarter of the pixels is replaced by the chip's mean colour — the quarter
the heatmap scores highest, the quarter it scores lowest, and a random quarter — and the drop
of the explained class's probability is recorded. A map that follows the model's evidence
makes the top-quarter drop larger than the low-quarter drop (and than the random one).

    PYTHONPATH=.:services/lib .venv/bin/python -m bench.bench_explain \\
        --model roof-material:v1 --data ../shared/data/roofs/caribbean-material/val

Writes ``bench/results/explain_<model>.json``; times are per chip, one thread.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench._util import save


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="roof-material:v1")
    ap.add_argument("--data", default="../shared/data/roofs/caribbean-material/val", help="ROOT/<class>/*.png")
    ap.add_argument("--fraction", type=float, default=0.25, help="share of pixels hidden")
    ap.add_argument("--limit", type=int, default=0, help="images per class (0 = all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from urbanfabric.materials import explain as E
    from urbanfabric.materials.chips import image_chip, input_scaling
    from urbanfabric.io.model_repository import model_dir

    name, _, version = args.model.partition(":")
    ex = E.load_explainable(model_dir(name, version))
    files = []
    for cls in ex.classes:
        found = sorted((Path(args.data) / cls).glob("*")) if (Path(args.data) / cls).is_dir() else []
        files += found[: args.limit or None]
    rng = np.random.default_rng(0)
    drops = {m.value: {"top": [], "low": [], "random": []} for m in E.Method}
    seconds = {m.value: [] for m in E.Method}
    for f in files:
        chip = image_chip(f.read_bytes(), ex.chip_size, input_scaling(ex.config))
        flat = chip.reshape(3, -1)
        k = int(flat.shape[1] * args.fraction)
        rand = rng.permutation(flat.shape[1])[:k]
        for m in E.Method:
            t0 = time.perf_counter()
            exp = E.explain(ex.model, chip, m, classes=ex.classes, multi_label=ex.multi_label,
                            temperature=ex.temperature)
            seconds[m.value].append(time.perf_counter() - t0)
            order = np.argsort(exp.heatmap.ravel(), kind="stable")
            for part, idx in (("top", order[-k:]), ("low", order[:k]), ("random", rand)):
                hidden = flat.copy()
                hidden[:, idx] = flat.mean(axis=1, keepdims=True)
                with torch.no_grad():
                    logits = ex.model(torch.from_numpy(hidden.reshape(chip.shape))[None]).numpy()
                p = E.probabilities(logits, ex.multi_label, ex.temperature)[0, exp.target]
                drops[m.value][part].append(float(exp.scores[exp.target] - p))
    summary = {}
    for m, d in drops.items():
        top, low, rnd = (np.array(d[p]) for p in ("top", "low", "random"))
        summary[m] = {
            "mean_drop_top": round(float(top.mean()), 4), "mean_drop_low": round(float(low.mean()), 4),
            "mean_drop_random": round(float(rnd.mean()), 4),
            "share_top_gt_low": round(float((top > low).mean()), 3),
            "share_top_gt_random": round(float((top > rnd).mean()), 3),
            "seconds_per_chip": round(float(np.median(seconds[m])), 3),
        }
        print(f"{m:16s} drop top {summary[m]['mean_drop_top']:.3f} low {summary[m]['mean_drop_low']:.3f} "
              f"random {summary[m]['mean_drop_random']:.3f}  top>low {summary[m]['share_top_gt_low']:.2f} "
              f"top>random {summary[m]['share_top_gt_random']:.2f}  {summary[m]['seconds_per_chip']:.2f} s/chip")
    path = save(f"explain_{name}_{version}", {"model": args.model, "data": args.data, "n": len(files),
                                              "fraction": args.fraction, "methods": summary})
    print(f"n={len(files)}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
