"""Train one classifier for one task on the train split; select and calibrate on val; score test.

Usage (repository root)::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.classifiers.train \
        --task roof_shape --arch efficientnet_lite0 --minutes 12 --out models/roof_shape/v1

    # façade, trained on NYC and tested on all of Tokyo (shared labels only)
    PYTHONPATH=.:services/lib .venv/bin/python -m models.classifiers.train \
        --task facade_nyc --cross-city tokyo --arch efficientnet_lite0 --minutes 6

    # roof chips masked outside the footprint, or with the footprint as a 4th channel
    PYTHONPATH=.:services/lib .venv/bin/python -m models.classifiers.train \
        --task roof_shape --chip-mode context+mask --minutes 8

What each split is used for (never anything else):

- **train**: gradient steps only.
- **val**: choosing the epoch (best validation score is kept), fitting the temperature
  (NLL on val logits) and, for multi-label tasks, the per-label thresholds.
- **test**: the reported numbers; read once, after everything above is fixed. In cross-city
  runs, the whole other city is the test set.

Training: AdamW, learning rate on a cosine over the budget (time or epochs, whichever ends
first), class-weighted cross-entropy with label smoothing (single-label) or BCE with
positive-weights per label (multi-label), heavy augmentation (random resized crops,
resolution loss, rot90/flips for overhead views, photometric jitter). ImageNet weights only
where available offline (EfficientNet-Lite0); every other arch trains from scratch.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import pickle
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from urbanfabric.materials.chips import ChipMode

from models.classifiers import metrics as M
from models.classifiers.data import SHARED_FACADE_LABELS, ImageSet, facade, load_task
from models.classifiers.io import predict_logits, save_classifier
from models.classifiers.nets import PRETRAINED_ARCHS, ClassifierNet, build_classifier
from models.classifiers.roof_masks import apply_chip_mode, padded_masks
from models.common.device import amp_dtype, resolve_device

CACHE = Path(__file__).resolve().parents[2] / ".train" / "classifiers" / "cache"


@dataclass
class TrainConfig:
    """Hyper-parameters of one run (the comparison uses the same for every arch)."""

    arch: str = "efficientnet_lite0"
    chip_size: int = 128
    minutes: float = 5.0
    max_epochs: int = 60
    batch_size: int = 32
    lr_pretrained: float = 1e-3
    lr_scratch: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    class_weight_power: float = 0.5
    drop_rate: float = 0.2
    probe_views: int = 4  # ImageNet archs: linear-probe warm start on this many augmented views (+ plain)
    probe_c: float = 0.05
    seed: int = 0
    # Roof chips: context | masked | context+mask (urbanfabric.materials.chips.ChipMode); the labelled
    # roof crops have no polygons, so masks come from this footprint model (models.classifiers.roof_masks).
    chip_mode: str = "context"
    footprint_model: str = "models/footprint_unet/v4"
    mask_scale: float = 0.5
    # Test-time augmentation for calibration and test (models.classifiers.io.CHIP_TTA; epochs are
    # still chosen on plain val logits); shipped in config.json so serving averages the same views.
    # models.classifiers.tta chooses it on val for an already shipped version.
    tta: str = "none"
    # Where and how it trains (models.train_gpu sets these on a GPU): device (auto|cpu|cuda[:N]),
    # mixed precision on CUDA (auto|off|bf16|fp16), processes augmenting chips ahead of the
    # device (0: in the loop, the CPU recipe's exact random stream), a step cap (smoke tests).
    device: str = "cpu"
    amp: str = "auto"
    loader_workers: int = 0
    max_steps: int = 0


def cached_task(task: str, chip: int, seed: int = 0, labels: tuple[str, ...] | None = None) -> ImageSet:
    """:func:`load_task` (or a label-restricted façade set) through a pickle cache in ``.train/``."""
    key = f"{task}_{chip}_{seed}" + ("_" + "-".join(labels) if labels else "")
    path = CACHE / f"{key}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    if labels:
        ds = facade(task.removeprefix("facade_"), chip, seed=seed, labels=labels)
    else:
        ds = load_task(task, chip, seed=seed)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(ds))
    return ds


def eval_view(x: torch.Tensor, size: int) -> torch.Tensor:
    """Whole padded images resized to the chip size (what inference sees)."""
    return F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def augment(x: torch.Tensor, size: int, rotate: bool, gen: torch.Generator) -> torch.Tensor:
    """Random training chips ``(B, C, size, size)`` from padded images ``(B, C, P, P)``."""
    out = []
    p = x.shape[-1]

    def u(a: float, b: float) -> float:
        return a + (b - a) * float(torch.rand(1, generator=gen))

    for img in x.float():
        area = p * p * u(0.45, 1.0)
        ratio = math.exp(u(math.log(3 / 4), math.log(4 / 3)))
        h = max(8, min(p, round(math.sqrt(area / ratio))))
        w = max(8, min(p, round(math.sqrt(area * ratio))))
        r0 = int(torch.randint(0, p - h + 1, (1,), generator=gen))
        c0 = int(torch.randint(0, p - w + 1, (1,), generator=gen))
        c = img[None, :, r0 : r0 + h, c0 : c0 + w]
        if u(0, 1) < 0.3:  # loss of resolution: training photos are sharper than pipeline chips
            low = max(8, round(size * u(0.35, 0.8)))
            c = F.interpolate(c, size=(low, low), mode="bilinear", antialias=True, align_corners=False)
        c = F.interpolate(c, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        if rotate:
            c = torch.rot90(c, int(torch.randint(0, 4, (1,), generator=gen)), dims=(1, 2))
        if u(0, 1) < 0.5:
            c = c.flip(2)
        # Photometric jitter on RGB only: a footprint-mask channel (context+mask chips) rides
        # along through the crops, flips and rotations but keeps its 0/1 values.
        c, extra = c[:3], c[3:]
        c = c * u(0.8, 1.2)
        m = c.mean()
        c = (c - m) * u(0.8, 1.2) + m
        g = c.mean(0, keepdim=True)
        c = (c - g) * u(0.7, 1.3) + g
        c = c * torch.tensor([u(0.93, 1.07) for _ in range(3)]).view(3, 1, 1)
        out.append(torch.cat([c, extra]).clamp(0, 1))
    return torch.stack(out)


class AugmentedChips(torch.utils.data.Dataset):
    """Training chips augmented in loader processes. Each (epoch, image) draws from its own seed,
    so a batch does not depend on how many workers made it; set :attr:`epoch` before iterating."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, rotate: bool, seed: int) -> None:
        self.images, self.labels, self.size, self.rotate, self.seed = images, labels, size, rotate, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(i))) & 0x7FFF_FFFF_FFFF)
        chip = augment(torch.from_numpy(self.images[i : i + 1]), self.size, self.rotate, gen)[0]
        return chip, torch.from_numpy(np.asarray(self.labels[i]))


class MaskedBCE(nn.Module):
    """BCE-with-logits over annotated (sample, label) pairs only (``NaN`` target = unknown)."""

    def __init__(self, pos_weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("pos_weight", pos_weight)  # a buffer, so .to(device) moves it

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(target)
        loss = F.binary_cross_entropy_with_logits(
            logits, torch.nan_to_num(target), pos_weight=self.pos_weight, reduction="none")
        return loss[known].sum() / known.sum().clamp(min=1)


def _loss(ds: ImageSet, y_train: np.ndarray, cfg: TrainConfig) -> nn.Module:
    if ds.multi_label:
        pos = np.nansum(y_train, 0)
        neg = (~np.isnan(y_train)).sum(0) - pos
        pw = np.clip(neg / np.maximum(pos, 1), 1.0, 5.0)
        return MaskedBCE(torch.tensor(pw, dtype=torch.float32))
    counts = np.bincount(y_train, minlength=len(ds.classes)).astype(np.float64)
    w = (counts.sum() / np.maximum(counts, 1)) ** cfg.class_weight_power
    w = w / (w * counts).sum() * counts.sum()
    return nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32), label_smoothing=cfg.label_smoothing)


def val_score(ds: ImageSet, logits: np.ndarray, y: np.ndarray) -> float:
    """Model-selection score on val: mean of accuracy and macro-F1 (single), mAP (multi)."""
    if len(y) == 0:
        return 0.0
    if ds.multi_label:
        return float(M.multi_label(y, M.probs_of(logits, 1.0, True), ds.classes, [0.5] * len(ds.classes))["mean_average_precision"])
    return single_label_score(logits, y, ds.classes)["score"]


def single_label_score(logits: np.ndarray, y: np.ndarray, classes: list) -> dict[str, float]:
    """The single-label selection score (mean of accuracy and macro-F1 over every class), with
    its parts and ``n``; :func:`val_score` and the probe's cross-validation both use it."""
    m = M.single_label(y, M.probs_of(logits, 1.0, False), classes)
    return {"n": int(len(y)), "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "score": 0.5 * (m["accuracy"] + m["macro_f1"])}


def logits_of(model: nn.Module, images: np.ndarray, size: int, tta: str = "none") -> np.ndarray:
    """Logits of padded images through the evaluation view (mean over the ``tta`` views)."""
    if len(images) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return predict_logits(model, eval_view(torch.from_numpy(images.astype(np.float32)), size), tta=tta)


@torch.inference_mode()
def pooled_features(model: ClassifierNet, chips: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Pre-logit pooled features of a timm backbone (ImageNet standardisation applied)."""
    model.eval()
    out = []
    for i in range(0, len(chips), batch_size):
        x = (chips[i : i + batch_size].to(model.mean.device) - model.mean) / model.std
        out.append(model.backbone.forward_head(model.backbone.forward_features(x), pre_logits=True).float().cpu())
    return torch.cat(out).numpy().astype(np.float64)


def softmax_head(z: np.ndarray, y: np.ndarray, n_out: int, c: float, class_weight_power: float) -> tuple[np.ndarray, np.ndarray]:
    """Class-weighted L2 multinomial logistic regression: ``(coef (n_out, D), bias (n_out,))``.

    Class weights are ``(n / n_class) ** class_weight_power``; a class absent from ``y`` gets
    bias -20, so it is never predicted.
    """
    from sklearn.linear_model import LogisticRegression

    counts = np.bincount(y, minlength=n_out).astype(np.float64)
    w = (counts.sum() / np.maximum(counts, 1)) ** class_weight_power
    lr = LogisticRegression(C=c, max_iter=3000, class_weight={int(k): float(w[k]) for k in np.unique(y)}).fit(z, y)
    coef, bias = np.zeros((n_out, z.shape[1])), np.full(n_out, -20.0)
    present = lr.classes_.astype(int)
    if len(present) == 2:
        coef[present[1]], bias[present[1]], bias[present[0]] = lr.coef_[0], lr.intercept_[0], 0.0
    else:
        coef[present], bias[present] = lr.coef_, lr.intercept_
    return coef, bias


def linear_probe(model: ClassifierNet, ds: ImageSet, cfg: TrainConfig, gen: torch.Generator) -> None:
    """Set the head to an L2 logistic regression on frozen features (plain + augmented views).

    With ~100–800 images a convex fit of the head is a far better start than a random head;
    fine-tuning then moves the whole network from there. Class-weighted (single-label,
    ``class_weight_power``) or one balanced regression per label on annotated images
    (multi-label). Feature standardisation is folded into the linear layer.
    """
    from sklearn.linear_model import LogisticRegression

    xtr, ytr = ds.part("train")
    base = torch.from_numpy(xtr.astype(np.float32))
    feats = [pooled_features(model, eval_view(base, cfg.chip_size))]
    for _ in range(cfg.probe_views):
        feats.append(pooled_features(model, augment(base, cfg.chip_size, ds.rotate, gen)))
    x = np.concatenate(feats)
    mu, sd = standardiser(x)
    z = (x - mu) / sd
    n_out = len(ds.classes)
    coef, bias = np.zeros((n_out, x.shape[1])), np.zeros(n_out)
    if ds.multi_label:
        y = np.tile(ytr, (len(feats), 1))
        for j in range(n_out):
            k = ~np.isnan(y[:, j])
            yj = y[k, j].astype(int)
            if len(set(yj.tolist())) < 2:
                bias[j] = -4.0 if yj.sum() == 0 else 4.0
                continue
            lr = LogisticRegression(C=cfg.probe_c, max_iter=3000, class_weight="balanced").fit(z[k], yj)
            coef[j], bias[j] = lr.coef_[0], lr.intercept_[0]
    else:
        coef, bias = softmax_head(z, np.tile(ytr, len(feats)), n_out, cfg.probe_c, cfg.class_weight_power)
    set_head(model.backbone.get_classifier(), coef, bias, mu, sd)


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature ``(mean, spread)`` of ``x (N, D)`` for ``z = (x - mean) / spread``.

    The spread is floored at a tenth of the mean spread: near-constant features would
    otherwise get huge weights once the standardisation is folded into the head.
    """
    return x.mean(0), np.maximum(x.std(0), 0.1 * x.std(0).mean()) + 1e-6


def set_head(head: nn.Linear, coef: np.ndarray, bias: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> None:
    """Load a linear model fitted on standardised features into ``head`` (raw features in)."""
    weight = coef / sd
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight).float())
        head.bias.copy_(torch.from_numpy(bias - weight @ mu).float())


def fit(
    ds: ImageSet, cfg: TrainConfig, log: Any = print, ckpt_dir: Path | None = None, resume: bool = False,
) -> tuple[ClassifierNet, dict[str, Any]]:
    """Train on ``ds``'s train split, keep the epoch with the best val score.

    With ``ckpt_dir`` a resumable checkpoint (weights, optimiser, best epoch, history) is written
    after every epoch; ``resume`` continues from it, its budget added to the time already spent.

    Returns:
        The model (best epoch, on the training device, eval mode, temperature still 1.0) and a
        history dict.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    autocast = amp_dtype(cfg.amp, device)
    pretrained = cfg.arch in PRETRAINED_ARCHS
    model = build_classifier(cfg.arch, len(ds.classes), pretrained=pretrained, drop_rate=cfg.drop_rate,
                             in_channels=ds.images.shape[1]).to(device)
    xtr, ytr = ds.part("train")
    xva, yva = ds.part("val")
    loss_fn = _loss(ds, ytr, cfg).to(device)
    # fp16 needs loss scaling (bf16 does not); a disabled scaler is a no-op.
    scaler = torch.amp.GradScaler("cuda", enabled=autocast == torch.float16)
    lr = cfg.lr_pretrained if pretrained else cfg.lr_scratch
    # ImageNet backbones get a 5x smaller rate than the fresh head so the features survive.
    head = [p for n, p in model.backbone.named_parameters() if n.startswith(("classifier", "fc"))]
    body = [p for n, p in model.backbone.named_parameters() if not n.startswith(("classifier", "fc"))]
    body_lr = lr / 5 if pretrained else lr
    opt = torch.optim.AdamW([{"params": body, "lr": body_lr, "base": body_lr}, {"params": head, "lr": lr, "base": lr}],
                            weight_decay=cfg.weight_decay)
    budget = cfg.minutes * 60.0
    t_start = time.perf_counter()
    best: tuple[float, float, dict[str, torch.Tensor]] = (-1.0, 0, copy.deepcopy(model.state_dict()))
    history: list[dict[str, Any]] = []
    epoch: float = 0
    steps = 0
    ckpt_path = ckpt_dir / "ckpt.pt" if ckpt_dir else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        best, history, epoch, steps = ckpt["best"], ckpt["history"], ckpt["epoch"], ckpt["steps"]
        budget += ckpt["elapsed_s"]
        t_start -= ckpt["elapsed_s"]  # the cosine continues where the cut-off run left it
        log(f"[{ds.task} {cfg.arch}] resumed epoch {epoch} (best val {best[0]:.3f} at epoch {best[1]})")
    elif pretrained and cfg.probe_views >= 0 and hasattr(model.backbone, "forward_head"):
        linear_probe(model, ds, cfg, gen)
        score = val_score(ds, logits_of(model, xva, cfg.chip_size), yva)
        history.append({"epoch": 0, "train_loss": float("nan"), "val_score": score,
                        "elapsed_s": time.perf_counter() - t_start})
        log(f"[{ds.task} {cfg.arch}] linear probe: val {score:.3f} ({history[-1]['elapsed_s']:.0f} s)")
        best = (score, 0, copy.deepcopy(model.state_dict()))
    n = len(xtr)
    loader = None
    if cfg.loader_workers > 0:
        chips = AugmentedChips(xtr, ytr, cfg.chip_size, ds.rotate, cfg.seed)
    # After a linear probe, fine-tune with BatchNorm statistics frozen and without head dropout:
    # the probe's head is fitted to eval-mode features, and batch statistics of 32 augmented
    # chips or dropped features shift them enough to wreck it (first-epoch loss ~5, not ~1).
    probed = bool(history) and history[0]["epoch"] == 0
    if probed and hasattr(model.backbone, "drop_rate"):
        model.backbone.drop_rate = 0.0

    def out_of_budget() -> bool:
        return time.perf_counter() - t_start > budget or bool(cfg.max_steps and steps >= cfg.max_steps)

    while epoch < cfg.max_epochs and not out_of_budget():
        model.train()
        if probed:
            for mod in model.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.eval()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        n_seen = n
        # BatchNorm needs two samples: a last batch of one is left out.
        batches = [order[i : i + cfg.batch_size] for i in range(0, n, cfg.batch_size) if n - i >= 2]
        if cfg.loader_workers > 0:
            chips.epoch = int(epoch)
            loader = iter(torch.utils.data.DataLoader(chips, batch_sampler=[b.tolist() for b in batches],
                                                      num_workers=cfg.loader_workers,
                                                      pin_memory=device.type == "cuda"))
        for b, idx in enumerate(batches):
            i = b * cfg.batch_size
            frac = max((time.perf_counter() - t_start) / budget, (epoch + i / n) / cfg.max_epochs)
            for g in opt.param_groups:
                g["lr"] = g["base"] * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
            if i and out_of_budget():  # slow nets: the budget may end mid-epoch
                n_seen = i
                break
            if loader is not None:
                xb, yb = next(loader)
            else:
                xb = augment(torch.from_numpy(xtr[idx.numpy()]), cfg.chip_size, ds.rotate, gen)
                yb = torch.from_numpy(ytr[idx.numpy()])
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                logits = model(xb)
            loss = loss_fn(logits.float(), yb)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            steps += 1
            total += loss.item() * len(idx)
        loader = None
        epoch += 1 if n_seen == n else n_seen / n  # a cut-short last epoch counts as its fraction
        score = val_score(ds, logits_of(model, xva, cfg.chip_size), yva)
        history.append({"epoch": round(epoch, 2), "train_loss": total / max(n_seen, 1), "val_score": score,
                        "elapsed_s": time.perf_counter() - t_start})
        log(f"[{ds.task} {cfg.arch}] epoch {epoch:.2f} loss {total / max(n_seen, 1):.4f} val {score:.3f} ({history[-1]['elapsed_s']:.0f} s)")
        if score > best[0]:
            best = (score, round(epoch, 2), copy.deepcopy(model.state_dict()))
        if ckpt_path is not None:
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "best": best, "history": history,
                        "epoch": epoch, "steps": steps, "elapsed_s": time.perf_counter() - t_start},
                       ckpt_path.with_suffix(".tmp"))
            ckpt_path.with_suffix(".tmp").replace(ckpt_path)  # a cut-off write never replaces a good one
    model.load_state_dict(best[2])
    model.eval()  # still on its training device: calibration and scoring run there too
    return model, {"epochs": round(epoch, 2), "best_epoch": best[1], "best_val_score": best[0], "pretrained": pretrained,
                   "train_s": time.perf_counter() - t_start, "steps": steps, "device": str(device),
                   "mixed_precision": str(autocast or "off"), "loader_workers": cfg.loader_workers,
                   "history": history}


def assess(
    model: ClassifierNet, ds: ImageSet, cfg: TrainConfig, test: ImageSet | None = None
) -> dict[str, Any]:
    """Calibrate on val (temperature, thresholds), then score the test split (or ``test`` set whole).

    Sets ``model.temperature``. Returns metrics for val and test plus the calibration report.
    """
    xva, yva = ds.part("val")
    lva = logits_of(model, xva, cfg.chip_size, cfg.tta)
    if test is None:
        xte, yte = ds.part("test")
    else:
        xte, yte = test.images, test.y
    lte = logits_of(model, xte, cfg.chip_size, cfg.tta)
    t = M.fit_temperature(lva, yva, ds.multi_label)
    model.temperature = t
    out: dict[str, Any] = {
        "calibration": {"val": M.calibration_report(lva, yva, t, ds.multi_label),
                        "test": M.calibration_report(lte, yte, t, ds.multi_label)},
    }
    pva = M.probs_of(lva, t, ds.multi_label)
    pte = M.probs_of(lte, t, ds.multi_label)
    if ds.multi_label:
        thr = M.best_thresholds(yva, pva)
        out["thresholds"] = dict(zip(ds.classes, thr))
        out["val"] = M.multi_label(yva, pva, ds.classes, thr)
        out["test"] = M.multi_label(yte, pte, ds.classes, thr)
        if "null" in ds.classes:
            out["null_filter"] = null_filter_report(yte, pte, ds.classes, thr)
        if test is None and "cities" in ds.meta:  # façades of several cities: per-city test numbers
            cities = np.asarray(ds.meta["cities"])[ds.split == "test"]
            out["test_by_city"] = {}
            for city in sorted(set(cities.tolist())):
                m = cities == city
                out["test_by_city"][city] = M.multi_label(yte[m], pte[m], ds.classes, thr)
                if "null" in ds.classes:
                    out["test_by_city"][city]["null_filter"] = null_filter_report(yte[m], pte[m], ds.classes, thr)
    else:
        out["val"] = M.single_label(yva, pva, ds.classes)
        out["test"] = M.single_label(yte, pte, ds.classes)
    return out


def null_filter_report(y: np.ndarray, probs: np.ndarray, classes: list[str], thresholds: list[float]) -> dict[str, Any]:
    """What dropping views with P(null) ≥ threshold removes (precision/recall of the drop)."""
    j = classes.index("null")
    drop = probs[:, j] >= thresholds[j]
    is_null = y[:, j] > 0
    others = [k for k in range(len(classes)) if k != j]
    kept_materials = np.nansum(y[~drop][:, others])
    lost_materials = np.nansum(y[drop][:, others])
    return {
        "threshold": float(thresholds[j]),
        "views": int(len(y)),
        "null_views": int(is_null.sum()),
        "dropped": int(drop.sum()),
        "drop_precision": float((drop & is_null).sum() / max(drop.sum(), 1)),
        "drop_recall": float((drop & is_null).sum() / max(is_null.sum(), 1)),
        "material_labels_lost": int(lost_materials),
        "material_labels_kept": int(kept_materials),
    }


def prepared_task(
    task: str, cfg: TrainConfig, labels: tuple[str, ...] | None = None, log: Any = print
) -> tuple[ImageSet, dict[str, Any] | None]:
    """The task's images as the model sees them (chip mode applied) and the masks' summary."""
    ds = cached_task(task, cfg.chip_size, cfg.seed, labels)
    if ChipMode.parse(cfg.chip_mode) is ChipMode.CONTEXT:
        return ds, None
    if task != "roof_shape":
        raise ValueError(f"--chip-mode {cfg.chip_mode} needs footprint masks: only roof_shape crops have building boxes")
    masks, masks_summary = padded_masks(ds, Path(cfg.footprint_model), cfg.mask_scale, CACHE)
    log(f"[{task}] footprint masks from {cfg.footprint_model}: {masks_summary}")
    return apply_chip_mode(ds, masks, cfg.chip_mode), masks_summary


def run(
    task: str, cfg: TrainConfig, out: str | Path | None = None, cross_city: str | None = None,
    command: str = "", log: Any = print, ckpt_dir: Path | None = None, resume: bool = False,
) -> dict[str, Any]:
    """Train, calibrate and score one arch on one task; optionally ship the model to ``out``
    (``ckpt_dir``/``resume``: see :func:`fit`)."""
    if resolve_device(cfg.device).type == "cpu":
        torch.set_num_threads(1)  # the CPU is shared (a GPU run keeps its cores for loading and scoring)
    labels = SHARED_FACADE_LABELS if cross_city else None
    ds, masks_summary = prepared_task(task, cfg, labels, log)
    other = cached_task(f"facade_{cross_city}", cfg.chip_size, cfg.seed, labels) if cross_city else None
    model, info = fit(ds, cfg, log, ckpt_dir, resume)
    result: dict[str, Any] = {
        "task": task, "arch": cfg.arch, "classes": ds.classes, "multi_label": ds.multi_label,
        "split_counts": ds.counts(), "config": asdict(cfg), "training": {k: v for k, v in info.items()},
    }
    if masks_summary is not None:
        result["footprint_masks"] = masks_summary
    result.update(assess(model, ds, cfg))
    if other is not None:
        result["cross_city"] = {"test_city": cross_city, "n": int(len(other.y)), **assess(model, ds, cfg, test=other)}
        result["cross_city"].pop("val", None)
        model.temperature = result["calibration"]["val"]["temperature"]
    model.cpu()  # shipped weights load anywhere
    if out:
        ship(model, ds, result, cfg, out, command)
    return result


def ship(model: ClassifierNet, ds: ImageSet, result: dict[str, Any], cfg: TrainConfig, out: str | Path, command: str) -> None:
    """Write the version folder (weights, config with calibration/taxonomy, metrics.json)."""
    from models.classifiers.taxonomy import taxonomy_for

    config = {
        "arch": cfg.arch,
        "classes": ds.classes,
        "multi_label": ds.multi_label,
        "chip_size": cfg.chip_size,
        "chip_mode": cfg.chip_mode,
        "temperature": model.temperature,
        "tta": cfg.tta,
        "drop_rate": cfg.drop_rate,
        "taxonomy": taxonomy_for(ds.task, ds.classes),
        "normalisation": {
            "input": ds.input_note,
            "resize": "whole image to chip_size x chip_size, bilinear with antialias (urbanfabric.materials.chips.resize_chip)",
        },
        "training": {"command": command, "task": ds.task, "data": ds.meta.get("data"),
                     "split_counts": ds.counts(), "hyperparameters": asdict(cfg),
                     **{k: v for k, v in result["training"].items() if k != "history"}, "torch": torch.__version__},
    }
    if ds.multi_label:
        config["thresholds"] = result["thresholds"]
    save_classifier(model, config, out)
    (Path(out) / "metrics.json").write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")


def report(r: dict[str, Any], json_path: str | None) -> None:
    """Print the summary line of a training result and write its JSON where asked."""
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(r, indent=2, default=float) + "\n", encoding="utf-8")
    print(summary_line(r))


def summary_line(r: dict[str, Any]) -> str:
    """One line of headline numbers."""
    t = r["test"]
    c = r["calibration"]["test"]
    head = (f"acc {t['accuracy']:.3f} macro-F1 {t['macro_f1']:.3f}" if not r["multi_label"]
            else f"macro-F1 {t['macro_f1']:.3f} micro-F1 {t['micro_f1']:.3f} mAP {t['mean_average_precision']:.3f}")
    s = (f"{r['task']} {r['arch']}: test n={t['n']} {head}; T={c['temperature']:.2f} "
         f"NLL {c['nll_before']:.3f}->{c['nll_after']:.3f} ECE {c['ece_before']:.3f}->{c['ece_after']:.3f}")
    if "cross_city" in r:
        x = r["cross_city"]["test"]
        s += f"; cross-city {r['cross_city']['test_city']} n={x['n']} macro-F1 {x['macro_f1']:.3f}"
    return s


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True,
                   choices=["roof_material", "roof_material_published", "roof_shape", "facade_nyc", "facade_tokyo", "facade_both"])
    p.add_argument("--out", default=None, help="version folder to ship (model.pt, config.json, metrics.json)")
    p.add_argument("--cross-city", default=None, choices=["nyc", "tokyo"], help="façade: test on this other city")
    p.add_argument("--json", default=None, help="write the result JSON here")
    for name, f in TrainConfig.__dataclass_fields__.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = p.parse_args(argv)
    cfg = TrainConfig(**{k: getattr(args, k) for k in TrainConfig.__dataclass_fields__})
    command = "python -m models.classifiers.train " + " ".join(sys.argv[1:] if argv is None else argv)
    report(run(args.task, cfg, args.out, args.cross_city, command), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
