"""Shared image classifiers: one API to build, save, load and explain every architecture.

Public API (the only way other code should touch shipped classifiers)::

    from models.classifiers import build_classifier, load_classifier, predict_proba, target_layer

    model, config = load_classifier("models/roof_material/v2")   # eval mode, float32
    probs = predict_proba(model, chips, config)                  # calibrated (temperature)
    layer = target_layer(model)                                  # last conv block, for Grad-CAM

Every module takes 0–1 float chips ``(N, 3, S, S)`` and returns logits ``(N, C)``;
ImageNet standardisation happens inside the module. See :mod:`models.classifiers.nets` for
the architectures and :mod:`models.classifiers.io` for the version-folder format.
"""

from models.classifiers.io import load_classifier, predict_proba, save_classifier
from models.classifiers.nets import ARCHS, PRETRAINED_ARCHS, ClassifierNet, build_classifier, target_layer

__all__ = [
    "ARCHS",
    "PRETRAINED_ARCHS",
    "ClassifierNet",
    "build_classifier",
    "load_classifier",
    "predict_proba",
    "save_classifier",
    "target_layer",
]
