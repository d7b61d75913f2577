"""Model-server adapter (KServe predictor, TorchServe handler) for every classifier of this package.

The server's generic contract is a module with ``load_model(version_dir[, device])`` and
``predict_proba(model, x)``. Here both go through the classifier library, so the served
``probability`` tensor is *calibrated*: ``softmax(logits / T)`` for single-label models
(roof material, roof shape) and one ``sigmoid(logits / T)`` per label for multi-label models
(façade material), with ``T`` and ``multi_label`` from the version's ``config.json``.
Clients decode these probabilities as they are (no second temperature).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn


def load_model(version_dir: str | Path, device: str = "cpu") -> nn.Module:
    """Load a shipped classifier folder; its config rides along as ``model.config``."""
    from models.classifiers import load_classifier

    model, config = load_classifier(version_dir)
    model.config = config
    return model.to(device).eval()


def predict_proba(model: Any, x: np.ndarray) -> np.ndarray:
    """Calibrated probabilities ``(N, C)`` of chips ``(N, 3, S, S)`` (see the module docstring)."""
    from models.classifiers import predict_proba as calibrated

    return calibrated(model, x, getattr(model, "config", None))


def target_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM explains (the last convolutional block of the classifier body)."""
    from models.classifiers import target_layer as last_block

    return last_block(model)
