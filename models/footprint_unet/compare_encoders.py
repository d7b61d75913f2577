"""Compare footprint encoders under one training budget (issue 20, item 2).

Each encoder of :data:`models.footprint_unet.net.ENCODERS` is trained with the same recipe and
the same budget — the same number of optimiser steps of the same batch of 256 px crops drawn
from the same seeded stream (crowdAI + Dubai + SpaceNet, the v5–v8 place splits), from its own
pretrained weights with a fresh decoder — then exported with its val-picked threshold and scored
once on val and test (pixel and instance scores, :mod:`models.footprint_eval`). The budget is
counted in steps, not minutes, because on a shared machine minutes buy different amounts of
compute from one run to the next; what a step costs is reported beside it, and ``--cost``
measures each encoder's forward time per megapixel in one process, interleaved, so the ratios
are comparable::

    PYTHONPATH=.:services/lib python -m models.footprint_unet.compare_encoders train --encoder lite2 --steps 100
    PYTHONPATH=.:services/lib python -m models.footprint_unet.compare_encoders cost
    PYTHONPATH=.:services/lib python -m models.footprint_unet.compare_encoders table

Results land in ``--out`` (``<encoder>/result.json``, ``cost.json``); ``table`` prints the
Markdown table of docs/results.md from them.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.footprint_unet import datasets as D
from models.footprint_unet import train_multi
from models.footprint_unet.net import ENCODERS, build_model, predict_proba

LOG = logging.getLogger("footprint_unet.compare_encoders")
DEFAULT_OUT = Path(".train/encoders")
#: The recipe of the shipped members (docs/development.md), minus ``--init-from v1``: every
#: encoder starts from its own pretrained weights, so none inherits another's training.
RECIPE = ["--datasets", "crowdai,dubai,spacenet", "--weights", "1,1,0.3", "--arch", "Unet", "--target", "binary"]
EVAL_DATASETS = ["crowdai", "dubai"]  # spacenet has no val split


def train_and_score(encoder: str, steps: int, batch: int, out: Path, threads: int, seed: int) -> dict[str, Any]:
    """Train one encoder for ``steps`` steps, export it, score val and test; returns the record."""
    from models.footprint_eval.__main__ import evaluate

    run = out / encoder
    argv = [*RECIPE, "--encoder", encoder, "--seed", str(seed), "--batch-size", str(batch),
            "--threads", str(threads), "--max-steps", str(steps), "--out", str(run / "export"),
            "--ckpt-dir", str(run), "--log-every", "10",
            # the step budget ends the run; minutes only bound it, and one checkpoint at the end
            # validates and exports (so the learning rate stays at its peak: equal for all)
            "--minutes", "600", "--ckpt-minutes", "600"]
    torch.set_num_threads(threads)
    t0 = time.monotonic()
    rc = train_multi.main(argv)
    train_s = time.monotonic() - t0
    if rc != 0 or not (run / "export" / "config.json").is_file():
        raise SystemExit(f"training {encoder} failed (rc {rc})")
    t0 = time.monotonic()
    report = evaluate([run / "export"], EVAL_DATASETS, ["val", "test"], D.DEFAULT_ROOT)
    config = json.loads((run / "export" / "config.json").read_text())
    record = {
        "encoder": encoder, "steps": steps, "batch_size": batch, "seed": seed, "threads": threads,
        "train_seconds": round(train_s, 1), "seconds_per_step": round(train_s / steps, 2),
        "eval_seconds": round(time.monotonic() - t0, 1),
        "parameters": sum(p.numel() for p in build_model(config).parameters()),
        "threshold": config["output"]["threshold"],
        "scores": {ds: {split: e["models"][next(iter(e["models"]))] for split, e in splits.items()}
                   for ds, splits in report["results"].items()},
        "command": "PYTHONPATH=.:services/lib python -m models.footprint_unet.train_multi " + shlex.join(argv),
    }
    (run / "result.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def forward_cost(encoders: list[str], window: int = 512, batch: int = 2, rounds: int = 3,
                 threads: int = 1) -> dict[str, Any]:
    """Seconds per megapixel of each encoder's U-Net forward pass (windows of real imagery,
    batches of ``batch``), rounds interleaved across encoders so load changes hit all alike."""
    torch.set_num_threads(threads)
    scenes = [s for s in D.load("dubai", "val") if min(s.mask.shape) >= window]
    if scenes:
        from urbanfabric.imagery.calibration import iqr_scale

        x = np.stack([iqr_scale(scenes[i % len(scenes)].image[:, :window, :window]) for i in range(batch)])
    else:  # no sample data: texture does not change the cost of a dense network
        x = np.random.default_rng(0).random((batch, 3, window, window)).astype(np.float32)
    models = {e: build_model(train_multi.arch_config("Unet", "binary", e)).eval() for e in encoders}
    for m in models.values():
        predict_proba(m, x[:1], batch_size=1)  # warm-up
    times: dict[str, list[float]] = {e: [] for e in encoders}
    for _ in range(rounds):
        for e, m in models.items():
            t0 = time.perf_counter()
            predict_proba(m, x, batch_size=batch)
            times[e].append(time.perf_counter() - t0)
    mpx = batch * window * window / 1e6
    base = min(times[encoders[0]])
    return {"window": window, "batch": batch, "rounds": rounds, "threads": threads, "torch": torch.__version__,
            "encoders": {e: {"s_per_mpx": round(min(t) / mpx, 3), "relative_to_first": round(min(t) / base, 2),
                             "parameters": sum(p.numel() for p in models[e].parameters())}
                         for e, t in times.items()}}


def table(out: Path) -> str:
    """Markdown rows from ``<encoder>/result.json`` and ``cost.json``."""
    cost = json.loads((out / "cost.json").read_text())["encoders"] if (out / "cost.json").is_file() else {}
    lines = [("| encoder, seed | params (M) | steps × batch | s/step (train) | val thr | val IoU crowdai | val IoU dubai | "
              "**val mean** | test IoU crowdai | test IoU dubai | test inst. F1 crowdai / dubai | forward s/Mpx (×lite0) |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for enc in ENCODERS:
        path = out / enc / "result.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        s = r["scores"]
        iou = {(ds, sp): s[ds][sp]["pixel"]["iou"] for ds in EVAL_DATASETS for sp in ("val", "test")}
        f1 = [s[ds]["test"]["instance_iou50"]["f1"] for ds in EVAL_DATASETS]
        c = cost.get(enc)
        lines.append(
            f"| {enc}, seed {r['seed']} | {r['parameters'] / 1e6:.1f} | {r['steps']} × {r['batch_size']} | {r['seconds_per_step']:.1f} | "
            f"{r['threshold']:.2f} | {iou['crowdai', 'val']:.3f} | {iou['dubai', 'val']:.3f} | "
            f"**{(iou['crowdai', 'val'] + iou['dubai', 'val']) / 2:.3f}** | {iou['crowdai', 'test']:.3f} | "
            f"{iou['dubai', 'test']:.3f} | {f1[0]:.3f} / {f1[1]:.3f} | "
            + (f"{c['s_per_mpx']:.2f} (×{c['relative_to_first']:.1f})" if c else "—") + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train, export and score one encoder")
    t.add_argument("--encoder", choices=tuple(ENCODERS), required=True)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("cost", help="forward seconds per Mpx of every encoder, interleaved")
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--threads", type=int, default=1)
    sub.add_parser("table", help="print the comparison table")
    for s in (t, c, sub.choices["table"]):
        s.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cmd == "train":
        record = train_and_score(args.encoder, args.steps, args.batch_size, args.out, args.threads, args.seed)
        LOG.info("result: %s", json.dumps(record))
    elif args.cmd == "cost":
        cost = forward_cost(list(ENCODERS), rounds=args.rounds, threads=args.threads)
        cost["command"] = "python -m models.footprint_unet.compare_encoders " + shlex.join(
            argv if argv is not None else sys.argv[1:])
        (args.out / "cost.json").write_text(json.dumps(cost, indent=2) + "\n")
        LOG.info("cost: %s", json.dumps(cost))
    else:
        print(table(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
