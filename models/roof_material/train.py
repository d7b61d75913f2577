"""Train the roof-material classifier on a class-per-folder data set (train/ split only).

Usage (repository root)::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.roof_material.train \
        --data ../shared/data/roofs/caribbean-material --out models/roof_material/v1

    # model selection without touching val/: stratified k-fold on train/, by building
    PYTHONPATH=.:services/lib .venv/bin/python -m models.roof_material.train \
        --data ../shared/data/roofs/caribbean-material --out .train/roof_cv --cv 4

Recipe (few samples): ImageNet EfficientNet-Lite0 (``efficientnet_lite0`` padding variant).
Stage 1 fits the classifier head as a class-weighted logistic regression on frozen pooled
features of the plain chip and ``--head-views`` augmented views of every image. Optional stage 2
(``--ft-epochs N``) fine-tunes the last backbone blocks with BatchNorm statistics frozen
(batches are tiny), cosine-decayed learning rate, class-weighted cross-entropy with label
smoothing. Augmentation: :mod:`models.roof_material.data`. The val/ split is never read here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.roof_material.data import augment, class_names, eval_chip, list_samples, load_scaled
from models.roof_material.model import RoofClassifier, build_model, predict_proba, save_model


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run."""

    arch: str = "efficientnet_lite0"  # beat tf_efficientnet_lite0 in a train/ CV linear probe
    chip_size: int = 128
    head_views: int = 8  # augmented views per image for the head fit (plus the plain chip)
    head_c: float = 0.01  # inverse L2 strength of the logistic-regression head
    ft_epochs: int = 0
    ft_blocks: int = 2  # last backbone blocks unfrozen in stage 2 (plus conv_head/bn2)
    batch_size: int = 16
    lr_ft: float = 1e-4
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    class_weight_power: float = 1.0  # 1 = balanced (inverse frequency), 0 = none
    drop_rate: float = 0.3
    seed: int = 0


def class_weights(labels: np.ndarray, n_classes: int, power: float) -> torch.Tensor:
    """Inverse-frequency loss weights ``(n / (C · n_c))^power``; absent classes get 0."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, (len(labels) / (n_classes * np.maximum(counts, 1))) ** power, 0.0)
    return torch.tensor(w, dtype=torch.float32)


def _freeze_bn(model: nn.Module) -> None:
    """Keep BatchNorm running statistics fixed (ImageNet's), batches are too small to update them."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _set_trainable(model: RoofClassifier, ft_blocks: int) -> list[nn.Parameter]:
    """Unfreeze the head and, for ``ft_blocks > 0``, the last blocks; return backbone params."""
    bb = model.backbone
    for p in bb.parameters():
        p.requires_grad_(False)
    for p in bb.get_classifier().parameters():
        p.requires_grad_(True)
    body: list[nn.Parameter] = []
    if ft_blocks > 0:
        for module in [*bb.blocks[-ft_blocks:], bb.conv_head, bb.bn2]:
            for p in module.parameters():
                p.requires_grad_(True)
                body.append(p)
    return body


def _run_epoch(
    model: RoofClassifier,
    images: list[np.ndarray],
    labels: np.ndarray,
    cfg: TrainConfig,
    opt: torch.optim.Optimizer,
    loss_fn: nn.Module,
    rng: np.random.Generator,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
) -> float:
    """One pass over the shuffled training images with fresh augmentations; mean loss."""
    model.train()
    _freeze_bn(model)
    order = rng.permutation(len(images))
    total, seen = 0.0, 0
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        x = torch.from_numpy(np.stack([augment(images[i], cfg.chip_size, rng) for i in idx]))
        y = torch.from_numpy(labels[idx]).long()
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        total += loss.detach().item() * len(idx)
        seen += len(idx)
    return total / max(seen, 1)


@torch.inference_mode()
def pooled_features(model: RoofClassifier, chips: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Backbone output before the classifier (``(N, 1280)``), eval mode."""
    model.eval()
    bb = model.backbone
    out = []
    for i in range(0, len(chips), batch_size):
        x = (torch.from_numpy(chips[i : i + batch_size]) - model.mean) / model.std
        out.append(bb.forward_head(bb.forward_features(x), pre_logits=True))
    return torch.cat(out).numpy()


def fit_head(
    model: RoofClassifier,
    images: list[np.ndarray],
    labels: np.ndarray,
    n_classes: int,
    cfg: TrainConfig,
    rng: np.random.Generator,
) -> dict[str, float]:
    """Fit the classifier head as an L2-regularised logistic regression on frozen features.

    With ~100 images an SGD-trained head swings from epoch to epoch; the convex fit converges
    to one solution. Features of ``cfg.head_views`` augmented views plus the plain chip of each
    image are standardised, and the standardisation is folded into the linear layer.

    Returns:
        timings: seconds per feature pass over all images (augmentation + forward) and for
        the logistic-regression solve.
    """
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    feats = [pooled_features(model, np.stack([eval_chip(im, cfg.chip_size) for im in images]))]
    for _ in range(cfg.head_views):
        feats.append(pooled_features(model, np.stack([augment(im, cfg.chip_size, rng) for im in images])))
    pass_s = (time.perf_counter() - t0) / len(feats)
    x = np.concatenate(feats).astype(np.float64)
    y = np.tile(labels, len(feats))
    t0 = time.perf_counter()
    mu, sd = x.mean(0), x.std(0) + 1e-6
    w = class_weights(labels, n_classes, cfg.class_weight_power).numpy()
    lr = LogisticRegression(
        C=cfg.head_c, max_iter=5000, class_weight={int(c): float(w[c]) for c in np.unique(labels)}
    ).fit((x - mu) / sd, y)
    coef = np.zeros((n_classes, x.shape[1]))
    bias = np.full(n_classes, -20.0)  # a class absent from the training labels is never predicted
    present = lr.classes_.astype(int)
    if len(present) == 2:  # sklearn's binary form: one row for the positive class
        coef[present[1]], bias[present[1]] = lr.coef_[0], lr.intercept_[0]
        bias[present[0]] = 0.0
    else:
        coef[present], bias[present] = lr.coef_, lr.intercept_
    weight = coef / sd
    clf = model.backbone.get_classifier()
    with torch.no_grad():
        clf.weight.copy_(torch.from_numpy(weight).float())
        clf.bias.copy_(torch.from_numpy(bias - weight @ mu).float())
    return {"head_feature_pass_s": pass_s, "head_solve_s": time.perf_counter() - t0}


def fit(
    images: list[np.ndarray],
    labels: np.ndarray,
    classes: list[str],
    cfg: TrainConfig,
    on_epoch: Callable[[str, int, RoofClassifier], None] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[RoofClassifier, dict[str, Any]]:
    """Train a fresh ImageNet-initialised classifier; returns the model and timing info.

    Args:
        images: IQR-scaled ``(3, rows, cols)`` images at native resolution.
        labels: class index per image.
        classes: class names (defines the head size).
        cfg: hyper-parameters.
        on_epoch: called after every epoch with (stage, epoch, model), e.g. to score folds.
        log: progress printer.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_model(
        {"arch": cfg.arch, "classes": classes, "chip_size": cfg.chip_size, "drop_rate": cfg.drop_rate},
        pretrained=True,
    )
    weights = class_weights(labels, len(classes), cfg.class_weight_power)
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)
    epoch_s: list[float] = []

    t0 = time.perf_counter()
    head_times = fit_head(model, images, labels, len(classes), cfg, rng)
    head_s = time.perf_counter() - t0
    log(f"head: logistic regression on {cfg.head_views + 1} views/image ({head_s:.1f} s)")
    if on_epoch:
        on_epoch("head", 1, model)
    head = list(model.backbone.get_classifier().parameters())

    if cfg.ft_epochs > 0:
        body = _set_trainable(model, cfg.ft_blocks)
        opt = torch.optim.AdamW(
            [{"params": body, "lr": cfg.lr_ft}, {"params": head, "lr": cfg.lr_ft * 3}],
            weight_decay=cfg.weight_decay,
        )
        steps = cfg.ft_epochs * -(-len(images) // cfg.batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        for ep in range(cfg.ft_epochs):
            t0 = time.perf_counter()
            loss = _run_epoch(model, images, labels, cfg, opt, loss_fn, rng, sched)
            epoch_s.append(time.perf_counter() - t0)
            log(f"finetune epoch {ep + 1}/{cfg.ft_epochs} loss {loss:.4f} ({epoch_s[-1]:.1f} s)")
            if on_epoch:
                on_epoch("ft", ep + 1, model)

    model.eval()
    info = {
        "head_fit_s": head_s,
        **head_times,
        "ft_epochs": len(epoch_s),
        "sec_per_epoch_mean": float(np.mean(epoch_s)) if epoch_s else 0.0,
        "sec_total": float(np.sum(epoch_s)),
        "images_per_epoch": len(images),
    }
    return model, info


def cross_validate(
    images: list[np.ndarray], labels: np.ndarray, classes: list[str], cfg: TrainConfig, folds: int
) -> dict[str, Any]:
    """Stratified k-fold on the training split (one image per building, so folds split buildings).

    Scores every epoch on the held-out fold, so the epoch schedule of the final run can be
    chosen without looking at val/.
    """
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold

    # Folds may hold fewer members than a rare class has: sklearn warns, the split is still valid.
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=cfg.seed)
    per_epoch: dict[str, list[dict[str, float]]] = {}
    oof: dict[str, np.ndarray] = {}
    last_key = [""]
    for k, (tr, te) in enumerate(skf.split(np.zeros(len(labels)), labels)):
        held = np.stack([eval_chip(images[i], cfg.chip_size) for i in te])

        def score(
            stage: str, epoch: int, model: RoofClassifier, held: np.ndarray = held, te: np.ndarray = te
        ) -> None:
            pred = predict_proba(model, held).argmax(1)
            key = f"{stage}{epoch:03d}"
            last_key[0] = key
            per_epoch.setdefault(key, []).append(
                {
                    "acc": float(accuracy_score(labels[te], pred)),
                    "macro_f1": float(f1_score(labels[te], pred, average="macro", labels=range(len(classes)), zero_division=0)),
                    "n": len(te),
                }
            )
            oof.setdefault(key, np.zeros(len(labels), dtype=np.int64))[te] = pred

        fit([images[i] for i in tr], labels[tr], classes, cfg, on_epoch=score, log=lambda s: None)
        last = per_epoch[last_key[0]][-1]
        print(f"fold {k + 1}/{folds}: last-epoch acc {last['acc']:.3f} macro-F1 {last['macro_f1']:.3f}", flush=True)

    summary = {}
    for key, rows in sorted(per_epoch.items()):
        w = np.array([r["n"] for r in rows], dtype=np.float64)
        summary[key] = {
            "acc": float(np.average([r["acc"] for r in rows], weights=w)),
            "macro_f1_mean_over_folds": float(np.mean([r["macro_f1"] for r in rows])),
            "pooled_macro_f1": float(f1_score(labels, oof[key], average="macro", zero_division=0)),
        }
    return {"folds": folds, "config": asdict(cfg), "per_epoch": summary}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder with train/<class>/*.png")
    p.add_argument("--out", required=True, help="version folder to write (model.pt, config.json)")
    p.add_argument("--cv", type=int, default=0, help="run k-fold CV on train/ instead, write cv.json")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    for name, field in TrainConfig.__dataclass_fields__.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(field.default), default=field.default)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(**{k: getattr(args, k) for k in TrainConfig.__dataclass_fields__})

    classes = class_names(args.data, "train")
    samples = list_samples(args.data, "train", classes)
    images = [load_scaled(s.path) for s in samples]
    labels = np.array([s.label for s in samples], dtype=np.int64)
    print(f"train/: {len(samples)} images, per class {dict(zip(classes, np.bincount(labels, minlength=len(classes)).tolist()))}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.cv:
        result = cross_validate(images, labels, classes, cfg, args.cv)
        (out / "cv.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        best = max(result["per_epoch"].items(), key=lambda kv: kv[1]["pooled_macro_f1"])
        print(f"best epoch by pooled CV macro-F1: {best[0]} {best[1]}")
        return 0

    model, info = fit(images, labels, classes, cfg)
    config = {
        "arch": cfg.arch,
        "classes": classes,
        "chip_size": cfg.chip_size,
        "drop_rate": cfg.drop_rate,
        "training": {
            "command": "python -m models.roof_material.train " + " ".join(sys.argv[1:] if argv is None else argv),
            "data": str(args.data),
            "split": "train",
            "n_images": len(samples),
            "per_class": dict(zip(classes, np.bincount(labels, minlength=len(classes)).tolist())),
            "hyperparameters": asdict(cfg),
            "threads": args.threads,
            "torch": torch.__version__,
            **info,
        },
    }
    save_model(model, config, out)
    size_mb = (out / "model.pt").stat().st_size / 1e6
    print(
        f"wrote {out}/model.pt ({size_mb:.2f} MB); head fit {info['head_fit_s']:.1f} s "
        f"({info['head_feature_pass_s']:.1f} s per feature pass over {len(images)} images), "
        f"fine-tuning {info['sec_per_epoch_mean']:.1f} s/epoch x {info['ft_epochs']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
