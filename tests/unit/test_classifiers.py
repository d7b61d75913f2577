"""models.classifiers: build/save/load round trip, Grad-CAM layers, calibration, view aggregation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.classifiers import ARCHS, build_classifier, load_classifier, predict_proba, save_classifier, target_layer

torch.set_num_threads(1)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_arch_gives_logits_and_a_spatial_target_layer(arch: str) -> None:
    model = build_classifier(arch, 3).eval()
    seen: list[torch.Size] = []
    hook = target_layer(model).register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    hook.remove()
    assert out.shape == (2, 3)
    assert len(seen) == 1 and len(seen[0]) == 4 and seen[0][0] == 2


def test_pretrained_only_where_weights_exist() -> None:
    with pytest.raises(ValueError, match="no offline ImageNet weights"):
        build_classifier("resnet50", 2, pretrained=True)
    with pytest.raises(ValueError, match="unknown arch"):
        build_classifier("vgg11", 2)


def test_save_load_round_trip_keeps_outputs_and_temperature(tmp_path: Path) -> None:
    model = build_classifier("shufflenet_v2_x1_0", 4).eval()
    model.temperature = 2.0
    save_classifier(model, {"classes": list("abcd"), "chip_size": 64, "multi_label": True}, tmp_path)
    loaded, cfg = load_classifier(tmp_path)
    assert cfg["temperature"] == 2.0 and cfg["multi_label"] is True and cfg["arch"] == "shufflenet_v2_x1_0"
    x = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        ref = torch.sigmoid(model(torch.from_numpy(x)) / 2.0).numpy()
    got = predict_proba(loaded, x, cfg)
    assert np.allclose(got, ref, atol=2e-2)  # fp16 weights on disk
    assert not np.allclose(got.sum(1), 1.0)  # sigmoid, not softmax


def test_roof_material_v1_loads_through_the_shared_api() -> None:
    v1 = Path("models/roof_material/v1")
    if not (v1 / "model.pt").exists():
        pytest.skip("roof-material v1 weights absent")
    model, cfg = load_classifier(v1)
    assert cfg["temperature"] == 1.0 and not cfg["multi_label"]
    p = predict_proba(model, np.random.default_rng(1).random((2, 3, 64, 64), dtype=np.float32), cfg)
    assert p.shape == (2, len(json.loads((v1 / "config.json").read_text())["classes"]))
    assert np.allclose(p.sum(1), 1.0, atol=1e-5)
