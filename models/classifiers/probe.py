"""Frozen-backbone classifiers for tiny labelled sets: a linear head chosen by cross-validation.

With ~150 labelled roofs (roof material: 223 in all, 6 ``other``) fine-tuning a CNN overfits
by its eighth epoch, and a single 44-image val split moves by ±0.07 per standard error, so
choosing anything on it is mostly noise. This recipe spends the labels differently:

1. every train **and** val image goes through the frozen ImageNet backbone once per view of
   the model's ``tta`` set (``d4`` = the 8 rotations/flips of an overhead chip);
2. the head is a class-weighted L2 logistic regression on those features (every view a
   sample), and its strength ``C`` is chosen by stratified, grouped k-fold cross-validation
   over train+val: the score is the mean of accuracy and macro-F1 of the out-of-fold
   predictions, each the mean logit over the image's views (what serving computes);
3. the temperature is fitted on the out-of-fold logits at the chosen ``C`` (held-out logits
   from models that never saw the image, like a val split, but over all of train+val);
4. the head is refitted on all of train+val at that ``C`` and folded into the network;
5. the **test** split is scored once, after all of the above.

The result is an ordinary classifier version folder (``model.pt``, ``config.json`` with
``tta``, ``metrics.json``): the model server, the materials service and the Explain RPC
load it like any other.

Usage (repository root)::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.classifiers.probe \\
        --task roof_material --arch lite0_texture --tta d4 --out models/roof_material/v3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.classifiers import metrics as M
from models.classifiers.data import ImageSet
from models.classifiers.io import chip_views
from models.classifiers.nets import PRETRAINED_ARCHS, ClassifierNet, build_classifier
from models.classifiers.train import (
    TrainConfig,
    cached_task,
    eval_view,
    logits_of,
    pooled_features,
    report,
    set_head,
    ship,
    single_label_score,
    softmax_head,
    standardiser,
)

#: Regularisation strengths tried by cross-validation (inverse L2 weight on standardised features).
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


@dataclass(frozen=True)
class ProbeResult:
    """What cross-validation chose, with the evidence.

    Attributes:
        c: the chosen regularisation strength.
        cv_scores: mean of accuracy and macro-F1 of the out-of-fold predictions, per ``C``.
        oof_logits: out-of-fold logits ``(N, n_classes)`` at the chosen ``C``.
    """

    c: float
    cv_scores: dict[float, float]
    oof_logits: np.ndarray


def view_features(model: ClassifierNet, images: np.ndarray, chip_size: int, tta: str) -> np.ndarray:
    """Frozen features ``(V, N, D)`` of padded images, one slice per view of ``tta``."""
    x = eval_view(torch.from_numpy(images.astype(np.float32)), chip_size)
    return np.stack([pooled_features(model, v) for v in chip_views(x, tta)])


def _fit(feats: np.ndarray, y: np.ndarray, n_out: int, c: float, power: float) -> tuple[np.ndarray, ...]:
    x = feats.reshape(-1, feats.shape[-1])
    mu, sd = standardiser(x)
    coef, bias = softmax_head((x - mu) / sd, np.tile(y, len(feats)), n_out, c, power)
    return coef, bias, mu, sd


def _logits(feats: np.ndarray, coef: np.ndarray, bias: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Mean logit over views, as serving averages them."""
    return np.mean([((f - mu) / sd) @ coef.T + bias for f in feats], axis=0)


def cross_validate(
    feats: np.ndarray, y: np.ndarray, groups: list[str], n_out: int, folds: int = 5,
    grid: tuple[float, ...] = C_GRID, class_weight_power: float = 0.5, seed: int = 0,
) -> ProbeResult:
    """Choose ``C`` by stratified grouped k-fold CV on ``feats (V, N, D)``.

    Raises:
        ValueError: fewer images than folds, or an empty grid.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if not grid:
        raise ValueError("grid: need at least one C")
    if len(y) < folds:
        raise ValueError(f"folds: {folds} folds need at least {folds} images, got {len(y)}")
    splits = list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))
    scores: dict[float, float] = {}
    oof: dict[float, np.ndarray] = {}
    for c in grid:
        logits = np.zeros((len(y), n_out))
        for fit_idx, held in splits:
            logits[held] = _logits(feats[:, held], *_fit(feats[:, fit_idx], y[fit_idx], n_out, c, class_weight_power))
        scores[c] = single_label_score(logits, y, list(range(n_out)))["score"]
        oof[c] = logits
    best = max(grid, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    return ProbeResult(best, scores, oof[best])


def run(task: str, arch: str, tta: str = "d4", chip_size: int = 128, folds: int = 5, class_weight_power: float = 0.5,
        seed: int = 0, out: str | Path | None = None, command: str = "", log: Any = print,
        grid: tuple[float, ...] = C_GRID) -> dict[str, Any]:
    """Fit, calibrate and score a frozen-backbone classifier on one single-label task.

    Raises:
        ValueError: a multi-label task, or an arch without offline ImageNet weights.
    """
    if arch not in PRETRAINED_ARCHS:
        raise ValueError(f"arch: a frozen backbone needs ImageNet weights; choose from {sorted(PRETRAINED_ARCHS)}")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ds: ImageSet = cached_task(task, chip_size, seed)
    if ds.multi_label:
        raise ValueError(f"task: {task} is multi-label; this recipe fits a softmax head")
    n_out = len(ds.classes)
    model = build_classifier(arch, n_out, pretrained=True, drop_rate=0.0).eval()
    fit_mask = ds.split != "test"
    y_fit, groups = ds.y[fit_mask], [g for g, m in zip(ds.groups, fit_mask) if m]
    feats = view_features(model, ds.images[fit_mask], chip_size, tta)
    log(f"[{task} {arch}] features {feats.shape} of train+val ({time.perf_counter() - t0:.0f} s)")
    cv = cross_validate(feats, y_fit, groups, n_out, folds, grid, class_weight_power, seed)
    log(f"[{task} {arch}] CV score per C: {json.dumps({str(k): round(v, 3) for k, v in cv.cv_scores.items()})}; chose C={cv.c}")
    # The out-of-fold predictions on the val split's images only: comparable with the val score
    # of a model fine-tuned on the train split (models.classifiers.train).
    on_val = ds.split[fit_mask] == "val"
    val_split = single_label_score(cv.oof_logits[on_val], y_fit[on_val], ds.classes)
    log(f"[{task} {arch}] out-of-fold score on the val split's {val_split['n']} images: {val_split['score']:.3f}")
    temperature = M.fit_temperature(cv.oof_logits, y_fit, False)
    set_head(model.backbone.get_classifier(), *_fit(feats, y_fit, n_out, cv.c, class_weight_power))
    model.temperature = temperature
    # Test, once, through the network itself (the folded head), as serving computes it.
    xte, yte = ds.part("test")
    lte = logits_of(model, xte, chip_size, tta)
    cfg = TrainConfig(arch=arch, chip_size=chip_size, minutes=0.0, max_epochs=0, probe_views=0, probe_c=cv.c,
                      class_weight_power=class_weight_power, drop_rate=0.0, seed=seed, tta=tta)
    result: dict[str, Any] = {
        "task": task, "arch": arch, "classes": ds.classes, "multi_label": False, "split_counts": ds.counts(),
        "config": {**cfg.__dict__, "recipe": "frozen backbone, CV-chosen linear head (models.classifiers.probe)",
                   "folds": folds},
        "training": {"recipe": "probe", "folds": folds, "cv_scores": cv.cv_scores, "chosen_c": cv.c,
                     "fit_images": int(fit_mask.sum()), "train_s": time.perf_counter() - t0, "pretrained": True},
        "calibration": {"val": {**M.calibration_report(cv.oof_logits, y_fit, temperature, False),
                                "note": "out-of-fold logits over train+val"},
                        "test": M.calibration_report(lte, yte, temperature, False)},
        "val": {**M.single_label(y_fit, M.probs_of(cv.oof_logits, temperature, False), ds.classes),
                "note": "out-of-fold predictions over train+val"},
        "val_split": val_split,
        "test": M.single_label(yte, M.probs_of(lte, temperature, False), ds.classes),
    }
    if out:
        ship(model, ds, result, cfg, out, command)
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=["roof_material", "roof_material_published", "roof_shape"])
    p.add_argument("--arch", default="lite0_texture", choices=sorted(PRETRAINED_ARCHS))
    p.add_argument("--tta", default="d4", help="views averaged in fitting and serving (models.classifiers.io.CHIP_TTA)")
    p.add_argument("--chip-size", type=int, default=128)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--class-weight-power", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="version folder to ship")
    p.add_argument("--json", default=None, help="write the result JSON here")
    args = p.parse_args(argv)
    command = "python -m models.classifiers.probe " + " ".join(sys.argv[1:] if argv is None else argv)
    report(run(args.task, args.arch, args.tta, args.chip_size, args.folds, args.class_weight_power, args.seed,
               args.out, command), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
