"""Model-server adapter (KServe predictor, TorchServe handler) for every classifier of this package.

The server's generic contract is a module with ``load_model(version_dir[, device])`` and
``predict_proba(model, x)``. Here both go through the classifier library, so the served
``probability`` tensor is *calibrated*: ``softmax(logits / T)`` for single-label models
(roof material, roof shape) and one ``sigmoid(logits / T)`` per label for multi-label models
(façade material), with ``T`` and ``multi_label`` from the version's ``config.json``.
Clients decode these probabilities as they are (no second temperature).

A version whose config has an ``ood`` block (``{"file": "domain.npz", ...}``; written by
:mod:`models.classifiers.domain`) also scores each chip's distance from the training images
(:func:`predict_proba_ood`): the model server sends it as a second output tensor ``ood_score``.
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
    model.domain = load_domain_stats(version_dir, config)
    return model.to(device).eval()


def load_domain_stats(version_dir: str | Path, config: dict[str, Any]) -> Any:
    """The version's out-of-domain statistics (``config["ood"]["file"]``), or None without.

    Raises:
        FileNotFoundError: the config names a statistics file the folder lacks.
    """
    block = config.get("ood") or {}
    if not block.get("file"):
        return None
    from urbanfabric.uncertainty import load_domain

    path = Path(version_dir) / str(block["file"])
    if not path.is_file():
        raise FileNotFoundError(f"{version_dir}: config names out-of-domain statistics {path.name}, which are missing")
    return load_domain(path)


def predict_proba_ood(model: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities ``(N, C)`` and out-of-domain scores ``(N,)`` of chips.

    One forward pass per view: the logits come from the mean pre-logit features of the views
    (:func:`models.classifiers.io.predict_logits_features`), the score from the same features.

    Raises:
        ValueError: the model has no out-of-domain statistics (``model.domain``).
    """
    from models.classifiers.io import predict_logits_features, probabilities

    domain = getattr(model, "domain", None)
    if domain is None:
        raise ValueError("this classifier version has no out-of-domain statistics")
    config = getattr(model, "config", None) or {}
    logits, features = predict_logits_features(model, x, tta=str(config.get("tta", "none")))
    if logits.size == 0:
        return np.zeros((0, len(config.get("classes", []))), np.float32), np.zeros(0, np.float32)
    probs = probabilities(logits, float(config.get("temperature", 1.0)), bool(config.get("multi_label", False)))
    return probs, domain.score(features).astype(np.float32)


def predict_proba(model: Any, x: np.ndarray) -> np.ndarray:
    """Calibrated probabilities ``(N, C)`` of chips ``(N, 3, S, S)`` (see the module docstring)."""
    from models.classifiers import predict_proba as calibrated

    return calibrated(model, x, getattr(model, "config", None))


def target_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM explains (the last convolutional block of the classifier body)."""
    from models.classifiers import target_layer as last_block

    return last_block(model)
