"""geoembed experiment helpers: centred chips at the mosaic edge, and the V3 weight loader
against the wheel's ``.npz`` key layout (synthetic weights; the wheel itself is not needed)."""

from __future__ import annotations

from pathlib import Path

import affine
import numpy as np
import torch
from urbanfabric.attributes.chip_reader import RasterChipReader

from models.height_xgb.geoembed_experiment import (
    GeoEmbedV3,
    centred_chips,
    load_geoembed_v3,
)


def test_centred_chip_pads_outside_the_mosaic_with_the_valid_mean():
    data = np.zeros((3, 100, 100), np.uint8)
    data[:, :, 50:] = 255
    valid = np.ones((100, 100), bool)
    valid[:, 90:] = False  # a missing tile
    reader = RasterChipReader(data, affine.Affine(1.0, 0, 0, 0, -1.0, 100.0), "EPSG:3857",
                              valid=valid)
    # centre at the image's top-left corner: only a quarter of the 64-px window is imaged
    x, share = centred_chips(reader, np.array([[0.0, 100.0], [50.0, 50.0], [95.0, 50.0]]), 64, 64)
    assert x.shape == (3, 3, 64, 64)
    assert share[0] == 0.25 and share[1] == 1.0
    assert np.isclose(share[2], (64 * (90 - 63)) / 64**2)
    assert x.min() >= -1.0 and x.max() <= 1.0
    # padded pixels carry the chip's valid mean (black here), not a hard 0 → −1 edge
    assert np.allclose(x[0], -1.0)
    # the 50-px white/black edge is at column 32 of the second chip
    assert np.allclose(x[1, :, :, :32], -1.0) and np.allclose(x[1, :, :, 32:], 1.0)
    down, _ = centred_chips(reader, np.array([[50.0, 50.0]]), 128, 64)
    up, _ = centred_chips(reader, np.array([[50.0, 50.0]]), 64, 128)
    assert down.shape == (1, 3, 64, 64)
    assert up.shape == (1, 3, 128, 128)


def _as_geoembed_npz(net: GeoEmbedV3, path: Path) -> None:
    """Write ``net`` in ``geoembed``'s v3.npz layout (``bb.*``, fc weight stored (in, out))."""
    sd = {k: v.numpy() for k, v in net.state_dict().items() if "num_batches" not in k}
    out: dict[str, np.ndarray] = {"embed_dim": np.array([256], np.int32),
                                  "base_channels": np.array([8], np.int32),
                                  "pool_size": np.array([4], np.int32)}
    for k, v in sd.items():
        if not k.startswith("fc."):
            out["bb." + k] = v
    out["fc.weight"] = sd["fc.weight"].T
    out["fc.bias"] = sd["fc.bias"]
    np.savez(path, **out)  # type: ignore[arg-type]


def test_v3_loader_reproduces_the_network_from_the_npz_layout(tmp_path):
    torch.manual_seed(0)
    net = GeoEmbedV3(base=8).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial running statistics
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    _as_geoembed_npz(net, tmp_path / "v3.npz")
    loaded = load_geoembed_v3(tmp_path / "v3.npz")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        a, b = net(x), loaded(x)
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(b.norm(dim=1), torch.ones(2))
