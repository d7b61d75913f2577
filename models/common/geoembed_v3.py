"""The aerial self-supervised ResNet-18 of the ``geoembed`` wheel (``weights/v3.npz``) in torch.

The MIT-licensed ``geoembed`` package runs its encoders on OpenCL (``netcl``), which this project
does not install: it is installed with ``--no-deps`` and only its weights file is read, located
through the import system *without importing the package* (importing it would need netcl).

Layout of ``v3.npz`` (105 arrays, 13.28 M parameters), as read from the file:

- ``bb.stem.0`` a 3×3 convolution 3→64 at stride 1 (no max-pool: a "CIFAR-style" stem, the
  tiles it was trained on are 128 px at ≈ 0.10–0.15 m), ``bb.stem.1`` its BatchNorm;
- ``bb.layer1``…``bb.layer4``: two basic blocks each (``conv1``/``bn1``/``conv2``/``bn2``, and
  ``short.0``/``short.1`` a 1×1 projection + BatchNorm where the block changes width or
  stride), 64/128/256/512 channels at strides 1/2/4/8;
- ``fc``: the embedding head, ``512·4·4 → 256`` on a 4×4 average-pooled map, stored
  ``(in, out)``; outputs are L2-normalised;
- scalars ``embed_dim``, ``base_channels``, ``pool_size``.

Inputs are RGB scaled to [-1, 1] (``(x - 0.5) / 0.5`` of 0..1 values). The module is written from
that layout (the names here match the file's so loading is a strict state-dict load); the U-Net
of :mod:`models.footprint_unet.net` uses :meth:`AerialResNet.features`, a classifier
:meth:`AerialResNet.embed`.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Per-channel input normalisation the weights expect (0..1 RGB → [-1, 1]).
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)
#: Channels of the stem and the four stages, and each stage's stride relative to the input.
STAGE_CHANNELS = (64, 64, 128, 256, 512)
STAGE_STRIDES = (1, 1, 2, 4, 8)


class BasicBlock(nn.Module):
    """Two 3×3 conv + BN, with a 1×1 conv + BN shortcut when width or stride changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + (self.short(x) if self.short is not None else x))


class AerialResNet(nn.Module):
    """geoembed v3's backbone (+ its embedding head), names as in ``v3.npz`` without ``bb.``."""

    def __init__(self, base: int = 64, embed_dim: int = 256, pool_size: int = 4) -> None:
        super().__init__()
        self.pool_size = pool_size
        self.stem = nn.Sequential(nn.Conv2d(3, base, 3, 1, 1, bias=False), nn.BatchNorm2d(base), nn.ReLU(inplace=True))
        widths = (base, base * 2, base * 4, base * 8)
        cin = base
        for i, cout in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            self.add_module(f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.fc = nn.Linear(widths[-1] * pool_size * pool_size, embed_dim)
        self.out_channels = (base, *widths)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stem and stage outputs at strides 1, 1, 2, 4, 8 (``x`` already normalised to [-1, 1])."""
        feats = [self.stem(x)]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            feats.append(layer(feats[-1]))
        return feats

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 256-d unit embedding of each image (the wheel's own output); H, W multiples of 32."""
        feat = self.features(x)[-1]
        pooled = F.adaptive_avg_pool2d(feat, self.pool_size).flatten(1)
        return F.normalize(self.fc(pooled), dim=1, eps=1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


def weights_path() -> Path:
    """``geoembed/weights/v3.npz`` of the installed wheel, found without importing ``geoembed``."""
    spec = importlib.util.find_spec("geoembed")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the geoembed wheel is not installed (pip install --no-deps geoembed==1.1.2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "v3.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is absent from the installed geoembed wheel")
    return path


def state_dict_from_npz(path: Path | None = None) -> OrderedDict[str, torch.Tensor]:
    """The file's arrays as an :class:`AerialResNet` state dict (``fc.weight`` transposed to
    torch's ``(out, in)``; BatchNorm step counters added)."""
    arrays = np.load(path or weights_path(), allow_pickle=False)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key in arrays.files:
        if key in ("embed_dim", "base_channels", "pool_size"):
            continue
        value = torch.from_numpy(np.array(arrays[key], dtype=np.float32))
        name = key.removeprefix("bb.")
        out[name] = value.t().contiguous() if name == "fc.weight" else value
        if name.endswith("running_var"):
            out[name.replace("running_var", "num_batches_tracked")] = torch.tensor(0, dtype=torch.long)
    return out


def load_v3(path: Path | None = None) -> AerialResNet:
    """geoembed v3 (the wheel's ``v3.npz``, or ``path`` in its layout) loaded strictly, eval mode.

    Raises:
        RuntimeError: the file's arrays do not match the network (names or shapes).
    """
    arrays = np.load(path or weights_path(), allow_pickle=False)
    model = AerialResNet(int(arrays["base_channels"][0]), int(arrays["embed_dim"][0]), int(arrays["pool_size"][0]))
    model.load_state_dict(state_dict_from_npz(path), strict=True)
    return model.eval()
