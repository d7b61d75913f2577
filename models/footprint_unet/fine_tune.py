"""Fine-tune a served footprint segmenter from a few reviewed buildings (issue 21, items 3 and 5).

A labelled row is one reviewed building: the image chip around it and what the reviewer's
answer says about the chip's pixels (``labels``, uint8 ``(S, S)``):

* ``1`` — inside the building's corrected outline (``building`` / ``wrong_outline`` with the
  outline redrawn);
* ``0`` — background the answer vouches for: the reviewed footprint's neighbourhood outside the
  corrected outline (all of it for ``not_building``);
* :data:`IGNORE` (255) — pixels the answer says nothing about (the rest of the chip, other
  buildings nobody labelled). They carry no loss: an unlabelled pixel is not background.

Recipe: anchored to the parent. The encoder (ImageNet + the parent's training) stays frozen,
batch-norm statistics included; the decoder and the segmentation head move from the parent's
weights with AdamW at a low learning rate for a fixed, small number of steps on flipped and
rotated views of the chips, with an L2 pull back towards the parent's decoder. The loss is BCE
plus soft Dice over the labelled pixels only. The parent's probability threshold is kept
(re-choosing it needs held-out pixels a review does not give). ``k = 0`` returns the parent.

Plain functions with one signature for every ``k`` (the learning-curve experiment calls them
with 0–200 buildings): :func:`fine_tune` takes the parent and labelled rows, returns the model
and what was done.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from urbanfabric.outputs.learning import LabelledRows

#: Label value of pixels the review says nothing about (no loss).
IGNORE = 255
#: Optimiser steps, batch size, learning rate and L2 pull towards the parent: set once before
#: the learning curve ran, not tuned on it (small steps from the parent; ≈ 1 min for 60 steps
#: of 8 chips of 96 px on 2 shared CPU cores).
STEPS = 60
BATCH = 8
LEARNING_RATE = 3e-4
ANCHOR = 1e-3


@dataclass
class Segmenter:
    """A footprint network with its ``config.json`` (threshold in ``output.threshold``)."""

    net: torch.nn.Module
    config: dict[str, Any]

    @property
    def threshold(self) -> float:
        return float(self.config["output"]["threshold"])


def load(version_dir: Path) -> Segmenter:
    """The version as the model server loads it (float32, eval mode) with its config."""
    from models.footprint_unet.net import load_model, read_config

    return Segmenter(load_model(version_dir), read_config(version_dir))


def classes(model: Segmenter) -> list[str]:
    return []


def predict(model: Segmenter, inputs: np.ndarray) -> np.ndarray:
    """Building probabilities ``(N, H, W)`` of IQR-scaled chips ``(N, 3, H, W)`` (extra
    channels after the first three, e.g. the reviewed footprint's mask, are not read)."""
    from models.footprint_unet.net import predict_proba

    return predict_proba(model.net, np.asarray(inputs)[:, :3], batch_size=4)


def _trainable(net: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The decoder's and the head's parameters (smp names; the geoembed U-Net uses the same)."""
    inner = net.net
    return [p for name in ("decoder", "segmentation_head") for p in getattr(inner, name).parameters()]


def _views(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random ``d4`` view of the batch (overhead imagery has no "up")."""
    k = int(rng.integers(0, 4))
    x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
    if rng.random() < 0.5:
        x, y = torch.flip(x, (-1,)), torch.flip(y, (-1,))
    return x, y


def masked_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice over the labelled pixels (``labels`` 0/1, :data:`IGNORE` elsewhere)."""
    known = (labels != IGNORE).float()
    target = (labels == 1).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=known, reduction="sum") / known.sum().clamp(min=1)
    prob = torch.sigmoid(logits) * known
    dice = 1.0 - (2.0 * (prob * target).sum() + 1.0) / (prob.sum() + (target * known).sum() + 1.0)
    return bce + dice


def fine_tune(parent: Segmenter, rows: LabelledRows, seed: int = 0) -> tuple[Segmenter, dict[str, Any]]:
    """A new segmenter: the parent's decoder and head tuned :data:`STEPS` steps on ``rows``
    (chips ``(N, ≥3, S, S)``, labels ``(N, S, S)`` as the module docstring says)."""
    if len(rows) == 0:
        return parent, {"k": 0, "recipe": "none: no labels, the parent unchanged"}
    chips = torch.as_tensor(np.asarray(rows.inputs)[:, :3], dtype=torch.float32).nan_to_num(0.0)
    labels = torch.as_tensor(np.asarray(rows.labels), dtype=torch.uint8)
    if labels.shape != (chips.shape[0], *chips.shape[2:]):
        raise ValueError(f"labels {tuple(labels.shape)} do not match chips {tuple(chips.shape)}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = copy.deepcopy(parent.net).float()
    net.eval()  # frozen encoder: its batch-norm statistics stay the parent's
    params = _trainable(net)
    anchor = [p.detach().clone() for p in params]
    for p in net.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    net.net.decoder.train()
    net.net.segmentation_head.train()
    opt = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=0.0)
    t0 = time.perf_counter()
    losses = []
    for _ in range(STEPS):
        idx = torch.as_tensor(rng.choice(len(rows), size=min(BATCH, len(rows)), replace=len(rows) < BATCH))
        x, y = _views(chips[idx], labels[idx], rng)
        loss = masked_loss(net(x)[:, 0], y)
        pull = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
        opt.zero_grad()
        (loss + ANCHOR * pull).backward()
        opt.step()
        losses.append(float(loss.detach()))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    config = {**parent.config, "fine_tune": {"k": len(rows), "seed": seed, "steps": STEPS,
                                             "learning_rate": LEARNING_RATE, "anchor": ANCHOR}}
    info = {"k": len(rows), "seed": seed, "seconds": round(time.perf_counter() - t0, 2),
            "recipe": f"decoder + head only, {STEPS} AdamW steps of {BATCH} chips (lr {LEARNING_RATE}, L2 pull "
                      f"{ANCHOR} to the parent), BCE + soft Dice on the labelled pixels, d4 views; encoder "
                      "frozen; the parent's threshold kept",
            "loss": {"first": float(np.mean(losses[:5])), "last": float(np.mean(losses[-5:]))}}
    return Segmenter(net, config), info


def save(model: Segmenter, out_dir: Path, training: dict[str, Any]) -> list[Path]:
    """Write ``model.pt`` (fp16, as shipped) and ``config.json`` (with this ``training`` block),
    loadable by :func:`models.footprint_unet.net.load_model`."""
    import hashlib

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / "model.pt"
    torch.save({k: v.half() for k, v in model.net.state_dict().items()}, weights)
    config = {**model.config, "training": training,
              "weights": {"file": "model.pt", "dtype": "float16",
                          "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    return [weights, out_dir / "config.json"]
