"""Roof-material classifier: ImageNet EfficientNet-Lite0 with a small class head.

The model takes roof chips exactly as :func:`urbanfabric.materials.chips.roof_chips` produces them
(``(N, 3, S, S)`` float32 in 0–1, IQR-scaled ARD) and applies the ImageNet mean/std
standardisation itself, so callers never normalise and training and serving cannot drift
apart. A shipped version is a folder with ``model.pt`` (fp16 state dict, to stay small) and
``config.json`` (classes, chip size, normalisation, architecture).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

#: ImageNet channel statistics the EfficientNet-Lite0 weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_CONFIG: dict[str, Any] = {
    "arch": "efficientnet_lite0",
    "classes": ["concrete_cement", "healthy_metal", "incomplete", "irregular_metal", "other"],
    "chip_size": 128,
    "drop_rate": 0.3,
    "normalisation": {
        "input": "urbanfabric.imagery.calibration.iqr_scale (per chip in training, per tile in the pipeline), 0-1 float32",
        "resize": "urbanfabric.materials.chips.resize_chip (bilinear, antialias)",
        "in_model": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
    },
}


class RoofClassifier(nn.Module):
    """EfficientNet-Lite0 classifier over 0–1 chips (standardisation inside the model)."""

    def __init__(self, backbone: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.backbone = backbone
        # Not persistent: the statistics live in config.json, not in the (fp16) weights file.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, C)`` of 0–1 chips ``(N, 3, S, S)``."""
        return self.backbone((chips - self.mean) / self.std)


def build_model(config: dict[str, Any], pretrained: bool = False) -> RoofClassifier:
    """Create the classifier described by ``config``.

    Args:
        config: needs ``classes``; optional ``arch``, ``drop_rate``, ``normalisation``
            (defaults from :data:`DEFAULT_CONFIG`).
        pretrained: load the ImageNet backbone weights (training); random init otherwise
            (loading shipped weights, tests).
    """
    from models.common.imagenet import efficientnet_lite0

    cfg = {**DEFAULT_CONFIG, **config}
    norm = cfg["normalisation"]["in_model"]
    backbone = efficientnet_lite0(
        pretrained=pretrained,
        arch=cfg["arch"],
        num_classes=len(cfg["classes"]),
        drop_rate=float(cfg["drop_rate"]),
    )
    return RoofClassifier(backbone, tuple(norm["mean"]), tuple(norm["std"]))


def load_config(version_dir: str | Path) -> dict[str, Any]:
    """Read ``config.json`` of a shipped model version."""
    return json.loads((Path(version_dir) / "config.json").read_text(encoding="utf-8"))


def load_model(version_dir: str | Path) -> nn.Module:
    """Load a shipped version (``config.json`` + fp16 ``model.pt``) as a float32 eval model.

    Goes through :func:`models.classifiers.load_classifier`, so any architecture of the shared
    classifier library loads (v1: EfficientNet-Lite0; v2: whatever the comparison shipped) and
    the module carries the calibration temperature that :func:`predict_proba` applies.

    Raises:
        FileNotFoundError: the folder lacks ``config.json`` or ``model.pt``.
    """
    from models.classifiers import load_classifier

    model, _ = load_classifier(version_dir)
    return model


def save_model(model: RoofClassifier, config: dict[str, Any], version_dir: str | Path) -> None:
    """Write ``model.pt`` (floating tensors as fp16) and ``config.json`` into ``version_dir``."""
    version_dir = Path(version_dir)
    version_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half() if v.is_floating_point() else v.detach() for k, v in model.state_dict().items()}
    torch.save(state, version_dir / "model.pt")
    (version_dir / "config.json").write_text(json.dumps({**DEFAULT_CONFIG, **config}, indent=2) + "\n", encoding="utf-8")


def predict_proba(model: nn.Module, chips: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Calibrated softmax class probabilities ``(N, C)`` of chips ``(N, 3, S, S)`` float32 in 0–1.

    Logits are divided by ``model.temperature`` (temperature scaling fitted on validation data;
    1.0 for v1 and for models without the attribute). Runs in eval mode in batches, so memory
    stays bounded for large building batches (:func:`models.classifiers.io.predict_logits`).
    """
    from models.classifiers.io import predict_logits, probabilities

    logits = predict_logits(model, chips, batch_size)
    if len(logits) == 0:
        n_cls = model.backbone.num_classes if hasattr(model, "backbone") else 0
        return np.zeros((0, n_cls), dtype=np.float32)
    return probabilities(logits, float(getattr(model, "temperature", 1.0)))
