"""Fine-tune a served image classifier from a few corrected labels (issue 21, item 3).

Recipe: the backbone stays frozen and only the linear head moves, starting from the parent's
head, at a low learning rate with an L2 pull back towards the parent's weights. With tens of
labels a whole-network update would overfit the labelled roofs; a head update changes how the
parent's features are read without changing the features themselves — so the parent's
out-of-domain statistics (computed on those features) stay valid and are kept. An overhead
chip enters as its eight ``d4`` views (rotations and flips: a roof seen from above has no "up");
a street-level photo has an up, so it enters as the views the version is served with (its
``tta``; :func:`fine_tune_views`). The temperature is refitted on out-of-fold logits (two folds,
each head fitted on the other), then the final head is fitted on all rows.

Single-label classifiers (roofs) fit the head with cross-entropy; multi-label ones (façades: one
sigmoid per label) with binary cross-entropy summed over the labels. A multi-label correction
names the building's label, or several joined by commas (``"brick,stucco"``, as the buildings
table's ``facade_materials``); every label it does not name is taken as absent (a reviewer who
calls a façade brick says it is not stucco). The per-label decision thresholds stay the
parent's: a few dozen labels cannot choose eight thresholds.

Plain functions with one signature for every ``k`` (the learning-curve experiment calls them
with 0–200 labels): :func:`fine_tune` takes the parent and labelled rows and returns the model
and its metrics; ``k = 0`` returns the parent unchanged.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from urbanfabric.outputs.learning import LabelledRows

#: Optimiser steps over the (small) feature set; full batch.
STEPS = 150
#: Adam learning rate of the head (the parent's head is the start, so small steps).
LEARNING_RATE = 3e-3
#: Weight of the L2 pull of the head towards the parent's head.
ANCHOR = 1e-2


def load(version_dir: Path) -> Any:
    """The classifier with its config and out-of-domain statistics (as the model server loads it)."""
    from models.classifiers.serving import load_model

    return load_model(version_dir)


def classes(model: Any) -> list[str]:
    return list(model.config["classes"])


def predict(model: Any, inputs: np.ndarray) -> np.ndarray:
    """Calibrated probabilities ``(N, C)``, as served (the version's temperature and ``tta``)."""
    from models.classifiers.serving import predict_proba

    return predict_proba(model, inputs)


def fine_tune_views(config: dict[str, Any]) -> str:
    """The views each labelled chip enters the fit as (:data:`models.classifiers.io.CHIP_TTA`).

    ``d4`` for overhead chips; for a task whose valid views exclude rotations
    (:data:`models.classifiers.tta.CANDIDATES`: street-level façades) the version's own ``tta``.
    """
    from models.classifiers.tta import CANDIDATES

    task = str((config.get("training") or {}).get("task", ""))
    valid = CANDIDATES.get(task)
    if valid is not None and "d4" not in valid:
        return str(config.get("tta", "none"))
    return "d4"


def targets(model: Any, labels: np.ndarray) -> torch.Tensor:
    """Class indices ``(N,)`` (single-label) or 0/1 rows ``(N, C)`` (multi-label) of the labels.

    Raises:
        ValueError: a label the model does not know (named).
    """
    names = classes(model)
    multi = bool(model.config.get("multi_label", False))
    parts = [[p.strip() for p in str(v).split(",")] if multi else [str(v)] for v in labels]
    unknown = sorted({p for row in parts for p in row} - set(names))
    if unknown:
        raise ValueError(f"labels the model does not know: {unknown}")
    if not multi:
        return torch.as_tensor([names.index(row[0]) for row in parts], dtype=torch.long)
    y = torch.zeros(len(parts), len(names))
    for i, row in enumerate(parts):
        y[i, [names.index(p) for p in row]] = 1.0
    return y


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per row; for 0/1 label rows, the labels' binary cross-entropies summed per row."""
    if y.dim() == 1:
        return torch.nn.functional.cross_entropy(logits, y)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum") / len(y)


def _view_features(model: Any, chips: np.ndarray, views: str = "d4") -> torch.Tensor:
    """Pre-logit features ``(V, N, D)`` of every view of each chip (frozen backbone)."""
    from models.classifiers.io import chip_views

    backbone = model.backbone
    x = torch.as_tensor(chips, dtype=torch.float32)
    out = []
    with torch.inference_mode():
        for v in chip_views(x, views):
            parts = [backbone.forward_head(backbone.forward_features((v[i:i + 64] - model.mean) / model.std),
                                           pre_logits=True).float() for i in range(0, len(v), 64)]
            out.append(torch.cat(parts))
    return torch.stack(out)


def _fit_head(weight: torch.Tensor, bias: torch.Tensor, feats: torch.Tensor, y: torch.Tensor,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A head fitted to the views' features, started from and pulled towards ``(weight, bias)``."""
    torch.manual_seed(seed)
    w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    opt = torch.optim.Adam([w, b], lr=LEARNING_RATE)
    x = feats.reshape(-1, feats.shape[-1])
    target = y.repeat(feats.shape[0], *([1] * (y.dim() - 1)))
    for _ in range(STEPS):
        opt.zero_grad()
        loss = _loss(x @ w.T + b, target)
        loss = loss + ANCHOR * ((w - weight).pow(2).sum() + (b - bias).pow(2).sum())
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


def fine_tune(parent: Any, rows: LabelledRows, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """A new classifier: the parent's backbone with a head fitted on ``rows`` and a refitted
    temperature; and what was done (counts, temperature, training loss before and after).

    Raises:
        ValueError: a label the parent does not know, or a classifier without a feature hook.
    """
    from models.classifiers.io import has_features
    from models.classifiers.metrics import fit_temperature

    names = classes(parent)
    y = targets(parent, rows.labels)
    multi = y.dim() == 2
    if len(rows) == 0:
        return parent, {"k": 0, "recipe": "none: no labels, the parent unchanged"}
    if not has_features(parent):
        raise ValueError(f"{parent.arch}: no pre-logit features, so no head-only fine-tune")
    head = parent.backbone.get_classifier()
    weight, bias = head.weight.detach().float(), head.bias.detach().float()
    views = fine_tune_views(parent.config)
    feats = _view_features(parent, rows.inputs, views)
    # Out-of-fold logits for the temperature: each fold's head never saw the rows it scores.
    fold = np.random.default_rng(seed).permutation(len(rows)) % 2
    oof = torch.zeros(len(rows), len(names))
    for f in (0, 1):
        train, test = torch.as_tensor(fold != f), torch.as_tensor(fold == f)
        if train.sum() == 0 or test.sum() == 0:
            continue
        w, b = _fit_head(weight, bias, feats[:, train], y[train], seed + f)
        oof[test] = (feats[:, test].mean(0) @ w.T + b)
    temperature = (fit_temperature(oof.numpy(), y.numpy(), multi) if len(rows) >= 4
                   else float(parent.config["temperature"]))
    w, b = _fit_head(weight, bias, feats, y, seed)
    model = copy.deepcopy(parent)
    new_head = model.backbone.get_classifier()
    with torch.no_grad():
        new_head.weight.copy_(w)
        new_head.bias.copy_(b)
    model.temperature = temperature
    model.config = {**parent.config, "temperature": temperature}
    _widen_domain(model, rows)
    mean_feats = feats.mean(0)

    def nll(w_: torch.Tensor, b_: torch.Tensor, t: float) -> float:
        return float(_loss((mean_feats @ w_.T + b_) / t, y))

    loss = "binary cross-entropy per label" if multi else "cross-entropy"
    info = {"k": len(rows), "recipe": f"head only (frozen backbone), {loss}, Adam lr {LEARNING_RATE}, {STEPS} "
                                      f"full-batch steps over {views} views, L2 {ANCHOR} towards the parent's "
                                      "head; temperature refitted on two-fold out-of-fold logits",
            "seed": seed, "temperature": {"parent": float(parent.config["temperature"]), "new": temperature},
            "train_nll": {"parent": nll(weight, bias, float(parent.config["temperature"])),
                          "new": nll(w, b, temperature)},
            "class_counts": {c: n for i, c in enumerate(names)
                             if (n := int(y[:, i].sum() if multi else (y == i).sum()))}}
    return model, info


def _widen_domain(model: Any, rows: LabelledRows) -> None:
    """The corrections' imagery is now imagery the version has learned from: its ground pixel
    sizes join the version's stated imagery domain, and the labelled chips join the reference
    set of the out-of-domain score (the backbone, hence the features, are the parent's), so the
    new version does not abstain on the very kind of roof it was corrected on."""
    from models.classifiers.io import predict_logits_features
    from urbanfabric.uncertainty import NeighbourDistance

    gsd = [float(v) for v in rows.meta.get("gsd_m", [])]
    domain = model.config.get("imagery_domain")
    if gsd and domain and "gsd_m" in domain:
        lo, hi = (float(v) for v in domain["gsd_m"])
        model.config["imagery_domain"] = {**domain, "gsd_m": [min(lo, *gsd), max(hi, *gsd)],
                                          "widened_by": f"{len(rows)} corrections on imagery of "
                                                        f"{min(gsd):.2f}–{max(gsd):.2f} m per pixel"}
    ood = model.config.get("ood") or {}
    if isinstance(getattr(model, "domain", None), NeighbourDistance) and model.domain.standardiser is None:
        _, feats = predict_logits_features(model, rows.inputs, tta=str(model.config.get("tta", "none")))
        model.domain = model.domain.widened(feats)
        model.config["ood"] = {**ood, "fitted_on": f"{ood.get('fitted_on', 'train features')}; plus the "
                                                   f"{len(rows)} corrections' chips"}


def save(model: Any, out_dir: Path, training: dict[str, Any]) -> list[Path]:
    """Write the version folder: ``model.pt``, ``config.json`` (the parent's, with the new
    temperature and this ``training`` block) and the parent's out-of-domain statistics."""
    from models.classifiers.io import save_classifier

    out_dir = Path(out_dir)
    config = {k: v for k, v in model.config.items() if k not in ("arch",)}
    config["training"] = training
    save_classifier(model, config, out_dir)
    files = [out_dir / "model.pt", out_dir / "config.json"]
    stats = (model.config.get("ood") or {}).get("file")
    if stats and getattr(model, "domain", None) is not None:
        model.domain.save(out_dir / stats)  # the parent's, widened by the corrections
        files.append(out_dir / stats)
    json.loads((out_dir / "config.json").read_text())  # written whole, or this raises
    return files
