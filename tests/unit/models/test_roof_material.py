"""Unit tests of models.roof_material: build, forward, save/load round trip, shipped v1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from urbanfabric.materials.roofs import RoofTaxonomy, decode

from models.roof_material.model import build_model, load_model, predict_proba, save_model
from models.roof_material.train import class_weights

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[3]
V1 = REPO / "models/roof_material/v1"
CLASSES = ["concrete_cement", "healthy_metal", "incomplete", "irregular_metal", "other"]


@pytest.fixture(scope="module")
def random_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model({"classes": CLASSES, "chip_size": 64}, pretrained=False).eval()


def test_forward_random_weights(random_model: torch.nn.Module) -> None:
    chips = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    probs = predict_proba(random_model, chips, batch_size=2)
    assert probs.shape == (3, len(CLASSES)) and probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5) and (probs >= 0).all()
    preds = decode(probs, CLASSES, RoofTaxonomy.load())
    assert len(preds) == 3 and all(p.cls in CLASSES for p in preds)
    with pytest.raises(ValueError):
        predict_proba(random_model, chips[:, :2])


def test_save_load_roundtrip_fp16(random_model: torch.nn.Module, tmp_path: Path) -> None:
    save_model(random_model, {"classes": CLASSES, "chip_size": 64}, tmp_path)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    loaded = load_model(tmp_path)
    assert not loaded.training
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(2, 3, 64, 64)
    # fp16 storage costs a little precision, nothing more.
    assert np.allclose(predict_proba(loaded, x), predict_proba(random_model, x), atol=2e-2)


def test_class_weights_balanced() -> None:
    w = class_weights(np.array([0, 0, 0, 1]), 3, power=1.0)
    assert w.tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])
    assert class_weights(np.array([0, 1]), 2, power=0.0).tolist() == [1.0, 1.0]


@pytest.mark.skipif(not (V1 / "model.pt").is_file(), reason="no shipped models/roof_material/v1 yet (train it first)")
def test_shipped_v1() -> None:
    config = json.loads((V1 / "config.json").read_text())
    assert sorted(config["classes"]) == sorted(RoofTaxonomy.load().classes)
    assert (V1 / "model.pt").stat().st_size < 10e6
    model = load_model(V1)
    s = int(config["chip_size"])
    probs = predict_proba(model, torch.rand(2, 3, s, s))
    assert probs.shape == (2, len(config["classes"]))
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
