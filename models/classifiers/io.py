"""Version folders of shipped classifiers: ``config.json`` + fp16 ``model.pt``.

``config.json`` keys (readers must tolerate extra keys):

- ``arch``: key of :data:`models.classifiers.nets.ARCHS`.
- ``classes``: output names in logit order.
- ``multi_label``: ``true`` → one sigmoid per class; ``false`` (default) → softmax.
- ``chip_size``: input side ``S`` in pixels; inputs are ``(N, 3, S, S)`` float32 in 0–1.
- ``temperature``: calibration temperature (default 1.0): probabilities are
  ``softmax(logits / T)`` or ``sigmoid(logits / T)``.
- ``tta``: test-time augmentation (default ``none``): logits are averaged over the chip's
  views (:data:`CHIP_TTA`: ``hflip`` for street-level photos, ``flips`` / ``d4`` for overhead
  roofs) *before* the temperature, which was fitted on the same averaged logits.
- ``thresholds``: multi-label only, per-class decision threshold on calibrated probabilities.
- ``taxonomy``: ``{"name": ..., "codes": {class: code or null}, ...}``; ``null`` = no code
  (explicitly unknown, never forced into a neighbouring code).
- ``normalisation``: ``{"input": how 0–1 chips are made, "resize": ..., "in_model": {mean, std}}``.
- ``drop_rate``, ``training``, ``metrics``: provenance only.

Roof-material v1 (written by :mod:`models.roof_material.model`) predates this module; it has no
``multi_label``/``temperature`` and loads with the defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.classifiers.nets import IMAGENET_MEAN, IMAGENET_STD, ClassifierNet, build_classifier
from urbanfabric.io.model_registry import weights_path

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"

#: Test-time views of a chip: ``hflip`` mirrors left-right only (a façade photo upside down
#: is not a façade photo); ``flips`` adds up-down flips and ``d4`` all 8 symmetries of the
#: square, valid for roofs seen from above, which have no preferred orientation.
CHIP_TTA = ("none", "hflip", "flips", "d4")


def chip_views(x: torch.Tensor, tta: str = "none") -> list[torch.Tensor]:
    """The views of a chip batch ``(N, C, S, S)`` that ``tta`` averages over (identity first).

    Raises:
        ValueError: ``tta`` not in :data:`CHIP_TTA`.
    """
    if tta == "none":
        return [x]
    if tta == "hflip":
        return [x, x.flip(3)]
    if tta == "flips":
        return [x, x.flip(3), x.flip(2), x.flip(2).flip(3)]
    if tta == "d4":
        return [torch.rot90(v, k, dims=(2, 3)) for v in (x, x.transpose(2, 3)) for k in range(4)]
    raise ValueError(f"tta must be one of {', '.join(CHIP_TTA)}, got {tta!r}")


def read_config(model_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a version folder with defaults filled in.

    Raises:
        FileNotFoundError: no ``config.json``.
        ValueError: ``arch`` or ``classes`` missing, or an unknown ``tta`` (caught at load
            time, not on the first request).
    """
    path = Path(model_dir) / CONFIG_FILE
    cfg = json.loads(path.read_text(encoding="utf-8"))
    for key in ("arch", "classes"):
        if key not in cfg:
            raise ValueError(f"{path}: missing {key!r}")
    cfg.setdefault("tta", "none")
    if cfg["tta"] not in CHIP_TTA:
        raise ValueError(f"{path}: tta must be one of {', '.join(CHIP_TTA)}, got {cfg['tta']!r}")
    cfg.setdefault("multi_label", False)
    cfg.setdefault("temperature", 1.0)
    cfg.setdefault("chip_size", 128)
    cfg.setdefault("drop_rate", 0.2)
    cfg.setdefault("normalisation", {"in_model": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}})
    return cfg


def load_classifier(model_dir: str | Path) -> tuple[ClassifierNet, dict[str, Any]]:
    """Load a shipped classifier as a float32 module in eval mode, and its config.

    The module returns raw logits; ``module.temperature`` carries the calibration
    temperature that :func:`predict_proba` applies.

    Raises:
        FileNotFoundError: ``config.json`` or ``model.pt`` missing.
        ValueError: bad config; RuntimeError: weights do not match the arch.
    """
    model_dir = Path(model_dir)
    cfg = read_config(model_dir)
    norm = cfg["normalisation"].get("in_model", {"mean": IMAGENET_MEAN, "std": IMAGENET_STD})
    model = build_classifier(
        cfg["arch"], len(cfg["classes"]), pretrained=False, drop_rate=float(cfg["drop_rate"]),
        mean=tuple(norm["mean"]), std=tuple(norm["std"]), in_channels=len(norm["mean"]),
    )
    # The folder's own weights, or the ones it reuses (models/registry.yaml: weights_from).
    state = torch.load(weights_path(model_dir, WEIGHTS_FILE), map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    model.temperature = float(cfg["temperature"])
    return model.float().eval(), cfg


def save_classifier(model: ClassifierNet, config: dict[str, Any], model_dir: str | Path) -> Path:
    """Write ``model.pt`` (floating tensors as fp16) and ``config.json``; returns the folder.

    ``config`` must hold at least ``classes``; ``arch`` defaults to ``model.arch`` and
    ``temperature`` to ``model.temperature``.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, model_dir / WEIGHTS_FILE)
    mean = model.mean.flatten().tolist()
    std = model.std.flatten().tolist()
    cfg = {
        "arch": model.arch,
        "multi_label": False,
        "temperature": float(model.temperature),
        **config,
    }
    cfg.setdefault("normalisation", {})
    cfg["normalisation"] = {**cfg["normalisation"], "in_model": {"mean": mean, "std": std}}
    (model_dir / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return model_dir


def probabilities(logits: torch.Tensor | np.ndarray, temperature: float = 1.0, multi_label: bool = False) -> np.ndarray:
    """Softmax (or per-label sigmoid) of ``logits / temperature`` as float32 numpy."""
    z = torch.as_tensor(logits, dtype=torch.float32) / float(temperature)
    p = torch.sigmoid(z) if multi_label else torch.softmax(z, dim=1)
    return p.numpy().astype(np.float32)


@torch.inference_mode()
def predict_logits(
    model: nn.Module, chips: np.ndarray | torch.Tensor, batch_size: int = 64, tta: str = "none"
) -> np.ndarray:
    """Raw logits ``(N, C)`` of 0–1 chips ``(N, 3, S, S)`` (4 channels for context+mask models).

    With ``tta`` (:data:`CHIP_TTA`) the logits are the mean over the chip's views; each view is
    run in batches of ``batch_size``, so memory does not grow with the number of views.

    Raises:
        ValueError: chips not ``(N, channels, S, S)``, or an unknown ``tta``.
    """
    x = torch.as_tensor(chips, dtype=torch.float32)
    channels = int(getattr(model, "mean", torch.zeros(1, 3)).shape[1])  # 4: context+mask chips
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"chips must be (N, {channels}, S, S), got {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    try:
        views = []
        # chips come on the CPU; a model may be on a GPU (a parameter-free one stays where chips are)
        device = next((p.device for p in model.parameters()), x.device)
        for v in chip_views(x, tta):
            views.append([model(v[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(v), batch_size)])
    finally:
        model.train(was_training)
    if not views[0]:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.stack([torch.cat(out) for out in views]).mean(0).numpy().astype(np.float32)


def has_features(model: nn.Module) -> bool:
    """Whether the classifier exposes pre-logit features (timm backbones: EfficientNet-Lite0, texture)."""
    backbone = getattr(model, "backbone", None)
    return hasattr(backbone, "forward_features") and hasattr(backbone, "forward_head")


@torch.inference_mode()
def predict_logits_features(
    model: nn.Module, chips: np.ndarray | torch.Tensor, batch_size: int = 64, tta: str = "none"
) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``(N, C)`` and pre-logit features ``(N, D)`` of 0–1 chips, both averaged over the
    ``tta`` views (:data:`CHIP_TTA`).

    The head is linear, so the mean of the views' logits is the head applied to the mean of
    their features: the logits equal :func:`predict_logits`' (up to float rounding) at no extra
    forward pass, and the features are what the out-of-domain score
    (:class:`urbanfabric.uncertainty.FeatureDensity`) compares with the training chips'.

    Raises:
        ValueError: the model has no feature hook (:func:`has_features`), or bad chips.
    """
    if not has_features(model):
        raise ValueError(f"{type(model).__name__} exposes no pre-logit features")
    x = torch.as_tensor(chips, dtype=torch.float32)
    channels = int(model.mean.shape[1])
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"chips must be (N, {channels}, S, S), got {tuple(x.shape)}")
    backbone = model.backbone
    was_training = model.training
    model.eval()
    try:
        total: torch.Tensor | None = None
        views = chip_views(x, tta)
        for v in views:
            parts = []
            for i in range(0, len(v), batch_size):
                z = (v[i : i + batch_size] - model.mean) / model.std
                parts.append(backbone.forward_head(backbone.forward_features(z), pre_logits=True).float())
            feats = torch.cat(parts) if parts else torch.zeros((0, 0))
            total = feats if total is None else total + feats
        assert total is not None
        mean = total / len(views)
        logits = backbone.get_classifier()(mean)
    finally:
        model.train(was_training)
    return logits.numpy().astype(np.float32), mean.numpy().astype(np.float32)


def predict_proba(
    model: nn.Module, chips: np.ndarray | torch.Tensor, config: dict[str, Any] | None = None, batch_size: int = 64
) -> np.ndarray:
    """Calibrated probabilities ``(N, C)`` of chips ``(N, 3, S, S)`` float32 in 0–1.

    Args:
        model: a classifier from :func:`load_classifier` (or any logits module).
        chips: input batch.
        config: the model's config; its ``temperature``, ``multi_label`` and ``tta`` win over
            the module's ``temperature`` attribute. Without it: softmax with
            ``model.temperature`` (1.0 if absent).
        batch_size: inference batch size (bounds memory).
    """
    temperature = float(getattr(model, "temperature", 1.0))
    multi, tta = False, "none"
    if config is not None:
        temperature = float(config.get("temperature", temperature))
        multi = bool(config.get("multi_label", False))
        tta = str(config.get("tta", "none"))
    logits = predict_logits(model, chips, batch_size, tta)
    if logits.size == 0:
        return logits
    return probabilities(logits, temperature, multi)
