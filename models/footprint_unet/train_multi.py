"""Train a footprint network on several shared data sets (location splits), CPU, resumable.

Example (the v2 run)::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.footprint_unet.train_multi \
        --datasets crowdai,dubai,spacenet --arch Unet --target binary \
        --init-from models/footprint_unet/v1 --out models/footprint_unet/v2 \
        --ckpt-dir .train/footprint_unet_v2 --minutes 30

Each step draws a batch of random 256² crops: a data set by ``--weights``, then a training
scene with probability proportional to its pixels (see :mod:`models.footprint_unet.datasets`
for the splits). ``--target sdt`` trains the 11-class truncated signed-distance head (GBM
"Training") with cross-entropy + soft Dice on the building probability; ``binary`` trains one
logit with BCE + soft Dice. Every ``--ckpt-minutes`` the run validates on the *val* splits,
picks the threshold that maximises the mean per-data-set IoU, saves a resumable checkpoint and
exports fp16 weights + ``config.json`` to ``--out`` when that mean improved.
"""

from __future__ import annotations

import argparse
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.common.device import amp_dtype, resolve_device
from models.common.metrics import ConfusionAtThresholds
from models.footprint_unet import datasets as D
from models.footprint_unet.data import augment
from models.footprint_unet.net import DEFAULT_CONFIG, ENCODERS, build_model, logits_to_proba, predict_proba
from models.footprint_unet.targets import SDT_CLASSES, SDT_TRUNCATION_PX, TARGETS, signed_distance_classes
from models.footprint_unet.train import THRESHOLDS, _atomic_save, dice_loss, export, lr_at, start_run
from urbanfabric.imagery.calibration import iqr_scale

LOG = logging.getLogger("footprint_unet.train_multi")
CROP = 256
VAL_WINDOW = 512


def arch_config(arch: str, target: str, encoder: str = "lite0") -> dict[str, Any]:
    """Architecture keys of ``config.json`` for a decoder family, target and encoder (:data:`ENCODERS`)."""
    cfg = dict(DEFAULT_CONFIG)
    cfg.update({k: v for k, v in ENCODERS[encoder].items() if k != "encoder_init"})
    cfg["architecture"] = arch
    cfg["classes"] = 1 if target == "binary" else SDT_CLASSES
    if arch != "Unet":
        cfg.pop("decoder_channels")
    if arch == "DeepLabV3Plus":
        cfg["aspp_channels"] = 128
    cfg["target"] = (
        {"kind": "binary"} if target == "binary"
        else {"kind": "sdt", "classes": SDT_CLASSES, "truncation_px": SDT_TRUNCATION_PX,
              "building_classes": f"> {SDT_CLASSES // 2}"}
    )
    return cfg


def init_from(model: torch.nn.Module, version_dir: Path) -> int:
    """Copy every tensor of a shipped version whose name and shape match; returns the count."""
    state = torch.load(Path(version_dir) / "model.pt", map_location="cpu", weights_only=True)
    own = model.state_dict()
    matched = {k: v.float() for k, v in state.items() if k in own and own[k].shape == v.shape}
    own.update(matched)
    model.load_state_dict(own)
    return len(matched)


def make_batch(
    scenes: dict[str, list[D.Scene]], weights: dict[str, float], batch: int, target: str,
    rng: np.random.Generator, scale: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``(B,3,256,256)``, binary masks ``(B,1,…)`` and targets (mask or distance classes).

    ``scale`` is the zoom range of :func:`datasets.random_crop` (scale augmentation).
    """
    names = [n for n in weights if scenes.get(n)]
    p = np.array([weights[n] for n in names], dtype=float)
    p /= p.sum()
    xs, ms = [], []
    for _ in range(batch):
        ds = scenes[names[int(rng.choice(len(names), p=p))]]
        sizes = np.array([s.pixels for s in ds], dtype=float)
        scene = ds[int(rng.choice(len(ds), p=sizes / sizes.sum()))]
        image, mask = D.random_crop(scene, CROP, rng, scale)
        image, mask = augment(iqr_scale(image), mask, rng)
        xs.append(image)
        ms.append(mask)
    x = torch.from_numpy(np.stack(xs))
    m = torch.from_numpy(np.stack(ms).astype(np.float32))[:, None]
    if target == "binary":
        y = m
    else:
        y = torch.from_numpy(np.stack([signed_distance_classes(k) for k in ms]))
    return x, m, y


#: Binary-target losses: BCE + soft Dice, or BCE + the Lovász hinge (Berman et al., "The
#: Lovász-Softmax loss: a tractable surrogate for the optimization of the intersection-over-union
#: measure in neural networks", CVPR 2018), which optimises per-image IoU directly; used to
#: fine-tune a converged BCE + Dice model towards the pixel-IoU metric.
BINARY_LOSSES = ("bce_dice", "bce_lovasz")


def loss_fn(logits: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, loss: str = "bce_dice") -> torch.Tensor:
    """BCE + Dice / Lovász (one logit) or cross-entropy over distance classes + Dice on building prob."""
    if logits.shape[1] == 1:
        bce = F.binary_cross_entropy_with_logits(logits, target)
        if loss == "bce_lovasz":
            from segmentation_models_pytorch.losses import LovaszLoss

            return bce + LovaszLoss("binary", per_image=True)(logits, target)
        return bce + dice_loss(logits, target)
    ce = F.cross_entropy(logits, target)
    prob = logits_to_proba(logits)[:, None]
    inter = (prob * mask).sum()
    dice = 1.0 - (2.0 * inter + 1.0) / (prob.sum() + mask.sum() + 1.0)
    return ce + dice


def scene_probability(model: torch.nn.Module, scene: D.Scene, tta: str = "none") -> np.ndarray:
    """Building probability of a whole scene: IQR per scene, Hann-blended 512 px windows.

    ``tta`` (:class:`urbanfabric.footprints.tta.TTA`) averages each window over flipped/rotated views.
    """
    from urbanfabric.footprints.windows import predict_tiled
    from urbanfabric.footprints.tta import with_tta

    image = iqr_scale(scene.image)
    # Small scenes get one window of their own size (rounded up to 32) instead of padding to 512.
    window = min(VAL_WINDOW, -(-max(scene.mask.shape) // 32) * 32)
    patch_model = with_tta(lambda b: predict_proba(model, b, batch_size=2), tta)
    return predict_tiled(image, patch_model, window=window, overlap=64, batch_size=2)


def validate(model: torch.nn.Module, val: dict[str, list[D.Scene]]) -> dict[str, ConfusionAtThresholds]:
    """Per-data-set pixel confusion over the val scenes at :data:`THRESHOLDS`."""
    out = {}
    for name, scenes in val.items():
        conf = ConfusionAtThresholds(THRESHOLDS)
        for scene in scenes:
            conf.update(scene_probability(model, scene), scene.mask)
        out[name] = conf
    return out


def pick_threshold(confs: dict[str, ConfusionAtThresholds]) -> dict[str, Any]:
    """Threshold maximising the mean IoU over data sets, with the per-data-set scores there."""
    names = sorted(confs)
    mean_iou = [np.mean([confs[n].scores(i)["iou"] for n in names]) for i in range(len(THRESHOLDS))]
    best = int(np.argmax(mean_iou))
    per = {n: confs[n].scores(best) for n in names}
    return {"threshold": THRESHOLDS[best], "iou": float(mean_iou[best]),
            "threshold_chosen_on": "val splits, max mean pixel IoU over data sets",
            "mean_iou_over_datasets": float(mean_iou[best]), "per_dataset": per}


def _zoom_range(text: str) -> tuple[float, float]:
    """``"LOW,HIGH"`` → a validated zoom range for ``--scale-aug``."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scale-aug wants LOW,HIGH (e.g. 0.67,1.5), got {text!r}") from None
    try:
        return D.check_zoom_range((low, high))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--scale-aug: {e}") from None


class BatchStream(torch.utils.data.IterableDataset):
    """Endless :func:`make_batch` batches; each loader worker draws from its own seeded stream,
    so crop sampling and augmentation keep a GPU fed instead of the training loop's thread."""

    def __init__(self, scenes: dict[str, list[D.Scene]], weights: dict[str, float], batch: int, target: str,
                 seed: int, scale: tuple[float, float] | None) -> None:
        super().__init__()
        self.scenes, self.weights, self.batch, self.target, self.seed, self.scale = (
            scenes, weights, batch, target, seed, scale)

    def __iter__(self):  # noqa: ANN204 - an iterator of batches
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info is not None else 0])
        while True:
            yield make_batch(self.scenes, self.weights, self.batch, self.target, rng, self.scale)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="crowdai,dubai,spacenet", help="comma list of " + ",".join(D.DATASETS))
    p.add_argument("--weights", default="", help="comma list of sampling weights (default equal)")
    p.add_argument("--val-datasets", default="", help="data sets validated on (default: --datasets with a val split)")
    p.add_argument("--root", type=Path, default=D.DEFAULT_ROOT)
    p.add_argument("--arch", choices=("Unet", "DeepLabV3Plus", "FPN"), default="Unet")
    p.add_argument("--encoder", choices=tuple(ENCODERS), default="lite0",
                   help="pretrained encoder: EfficientNet-Lite0 / -Lite2 (ImageNet) or geoembed-v3 (aerial, U-Net only)")
    p.add_argument("--target", choices=TARGETS, default="binary")
    p.add_argument("--loss", choices=BINARY_LOSSES, default="bce_dice", help="binary target only")
    p.add_argument("--init-from", type=Path, default=None, help="version dir to copy matching tensors from")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", default="", help="config name (default: footprint_unet or footprint_deeplab)")
    p.add_argument("--ckpt-dir", type=Path, required=True)
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--ckpt-minutes", type=float, default=6.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-floor", type=float, default=3e-5)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default="auto",
                   help="mixed precision on CUDA (auto: bf16 where the GPU supports it, else fp16)")
    p.add_argument("--loader-workers", type=int, default=0,
                   help="processes building batches ahead of the GPU (0: in the loop, reproducible step by step)")
    p.add_argument("--val-limit", type=int, default=0, help="validate on at most this many scenes per data set (0: all)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--scale-aug", type=_zoom_range, default=None, metavar="LOW,HIGH",
                   help="random zoom range per crop, e.g. 0.67,1.5 (default: native resolution only)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = start_run("models.footprint_unet.train_multi", args, argv)
    names = [n for n in args.datasets.split(",") if n]
    w = [float(v) for v in args.weights.split(",")] if args.weights else [1.0] * len(names)
    weights = dict(zip(names, w))
    train = {n: D.load(n, "train", args.root) for n in names}
    val_names = [n for n in (args.val_datasets.split(",") if args.val_datasets else names) if n]
    val = {n: s[: args.val_limit] if args.val_limit else s for n in val_names if (s := D.load(n, "val", args.root))}
    LOG.info("train scenes %s; val scenes %s", {n: len(s) for n, s in train.items()},
             {n: len(s) for n, s in val.items()})

    torch.manual_seed(args.seed)
    if args.encoder == "geoembed-v3" and args.arch != "Unet":
        raise SystemExit(f"--encoder geoembed-v3 needs --arch Unet, got --arch {args.arch}")
    arch = arch_config(args.arch, args.target, args.encoder)
    model = build_model(arch, imagenet_encoder=True)
    if args.init_from:
        LOG.info("init from %s: %d tensors", args.init_from, init_from(model, args.init_from))
    device = resolve_device(args.device)
    autocast = amp_dtype(args.amp, device)
    model = model.to(device=device, memory_format=torch.channels_last)
    # fp16 needs loss scaling (bf16 does not); a disabled scaler is a no-op.
    scaler = torch.amp.GradScaler("cuda", enabled=autocast == torch.float16)
    LOG.info("device %s, mixed precision %s, loader workers %d, batch %d", device, autocast or "off",
             args.loader_workers, args.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step, best, trained_s = 0, -1.0, 0.0
    ckpt_path = args.ckpt_dir / "ckpt.pt"
    rng = np.random.default_rng(args.seed)
    if args.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, best, trained_s = ckpt["step"], ckpt["best"], ckpt["trained_s"]
        # Provenance: a resumed run still starts from what the first run was initialised with.
        args.init_from = args.init_from or (Path(ckpt["init_from"]) if ckpt.get("init_from") else None)
        rng = np.random.default_rng(args.seed + step)
        LOG.info("resumed step=%d best=%.4f trained=%.1f min", step, best, trained_s / 60)
    total_s = trained_s + args.minutes * 60.0
    run_start = last_ckpt = time.monotonic()
    deadline = run_start + args.minutes * 60.0
    name = args.name or {"Unet": "footprint_unet", "DeepLabV3Plus": "footprint_deeplab", "FPN": "footprint_fpn"}[args.arch]

    def checkpoint(final: bool = False) -> None:
        nonlocal best, last_ckpt
        t0 = time.monotonic()
        res = pick_threshold(validate(model, val))
        model.train()
        elapsed = trained_s + (time.monotonic() - run_start)
        LOG.info("validate step=%d mean_iou=%.4f thr=%.2f %s (%.0f s)", step, res["iou"], res["threshold"],
                 {n: round(s["iou"], 4) for n, s in res["per_dataset"].items()}, time.monotonic() - t0)
        if res["iou"] > best:
            best = float(res["iou"])
            info = {
                "step": step, "trained_minutes": round(elapsed / 60, 1), "batch_size": args.batch_size,
                "crop_px": CROP, "device": str(device), "mixed_precision": str(autocast or "off"),
                "optimizer": f"AdamW lr={args.lr} wd={args.weight_decay} cosine to {args.lr_floor}",
                "loss": ({"bce_dice": "BCE + soft Dice", "bce_lovasz": "BCE + Lovász hinge (per image)"}[args.loss]
                         if args.target == "binary" else "cross-entropy (11 distance classes) + soft Dice"),
                "encoder_init": ENCODERS[args.encoder]["encoder_init"],
                "init_from": str(args.init_from) if args.init_from else None,
                "augmentation": "random 256 px crops"
                + (f", zoom {args.scale_aug[0]}–{args.scale_aug[1]} (log-uniform)" if args.scale_aug else "")
                + ", rot90, flips, brightness/contrast/per-band gain jitter after IQR scaling",
                "data": {"root": str(args.root), "datasets": weights,
                         "train_scenes": {n: len(s) for n, s in train.items()},
                         "val_scenes": {n: len(s) for n, s in val.items()},
                         "splits": "by location, models/footprint_unet/datasets.py"},
                "command": command,
                "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "torch": torch.__version__,
            }
            export(model, args.out, arch, res, info, name=name)
            LOG.info("exported %s (mean val IoU %.4f)", args.out, best)
        _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                      "best": best, "trained_s": elapsed,
                      "init_from": str(args.init_from) if args.init_from else None}, ckpt_path)
        LOG.info("checkpoint saved %s%s", ckpt_path, " (final)" if final else "")
        last_ckpt = time.monotonic()

    model.train()
    window_loss, window_n, window_t = 0.0, 0, time.monotonic()
    batches = None
    if args.loader_workers > 0:
        stream = BatchStream(train, weights, args.batch_size, args.target, args.seed + step, args.scale_aug)
        batches = iter(torch.utils.data.DataLoader(
            stream, batch_size=None, num_workers=args.loader_workers, pin_memory=device.type == "cuda",
            persistent_workers=True, prefetch_factor=4))
    while True:
        x, m, y = next(batches) if batches is not None else make_batch(
            train, weights, args.batch_size, args.target, rng, args.scale_aug)
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        m, y = m.to(device, non_blocking=True), y.to(device, non_blocking=True)
        frac = (trained_s + time.monotonic() - run_start) / total_s
        for group in opt.param_groups:
            group["lr"] = lr_at(frac, args.lr, args.lr_floor, "cosine")
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            logits = model(x)
        loss = loss_fn(logits.float(), m, y, args.loss)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        step += 1
        window_loss += loss.detach().item()
        window_n += 1
        if step % args.log_every == 0:
            now = time.monotonic()
            LOG.info("step=%d loss=%.4f lr=%.2e sec/step=%.2f elapsed=%.1f min", step, window_loss / window_n,
                     opt.param_groups[0]["lr"], (now - window_t) / window_n, (now - run_start) / 60)
            window_loss, window_n, window_t = 0.0, 0, now
        now = time.monotonic()
        if now >= deadline or (args.max_steps and step >= args.max_steps):
            break
        if now - last_ckpt >= args.ckpt_minutes * 60:
            checkpoint()
            window_t = time.monotonic()
            window_loss, window_n = 0.0, 0
    checkpoint(final=True)
    LOG.info("done: step=%d best mean val IoU=%.4f", step, best)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
