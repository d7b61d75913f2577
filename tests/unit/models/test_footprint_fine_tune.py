"""The footprint segmenter's fine-tune from reviewed buildings (models/footprint_unet/fine_tune.py):
a random-weight U-Net, 64 px chips, a few steps (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("segmentation_models_pytorch")

from models.footprint_unet import fine_tune as ft  # noqa: E402
from models.footprint_unet.net import DEFAULT_CONFIG, build_model  # noqa: E402
from urbanfabric.io.model_repository import fine_tune_module  # noqa: E402
from urbanfabric.outputs.learning import LabelledRows  # noqa: E402

torch.set_num_threads(1)


def _parent() -> ft.Segmenter:
    torch.manual_seed(0)
    return ft.Segmenter(build_model().eval(), {**DEFAULT_CONFIG, "output": {"threshold": 0.5}})


def _rows(k: int) -> LabelledRows:
    """k chips whose centre square is a labelled building, a ring of background around it,
    and the rest unlabelled."""
    rng = np.random.default_rng(0)
    chips = rng.random((k, 3, 64, 64), dtype=np.float32)
    labels = np.full((k, 64, 64), ft.IGNORE, dtype=np.uint8)
    labels[:, 16:48, 16:48] = 0
    labels[:, 24:40, 24:40] = 1
    return LabelledRows(np.arange(k).astype(str), labels, chips, np.arange(k, dtype=float), np.zeros(k))


def test_no_labels_is_the_parent_and_the_module_is_registered() -> None:
    parent = _parent()
    assert ft.fine_tune(parent, _rows(0))[0] is parent
    assert fine_tune_module("footprint-unet") is ft


def test_unlabelled_pixels_carry_no_loss() -> None:
    labels = torch.full((1, 8, 8), ft.IGNORE, dtype=torch.uint8)
    labels[0, :2, :2] = 1
    labels[0, 2:4, :2] = 0
    a, b = torch.zeros(1, 8, 8), torch.zeros(1, 8, 8)
    b[0, 4:, 4:] = 9.0  # differs only where nothing is labelled
    assert float(ft.masked_loss(a, labels)) == pytest.approx(float(ft.masked_loss(b, labels)))
    assert float(ft.masked_loss(a, torch.full((1, 8, 8), ft.IGNORE, dtype=torch.uint8))) == pytest.approx(0.0)


def test_decoder_moves_towards_the_labels_encoder_and_parent_stay(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(ft, "STEPS", 15)
    monkeypatch.setattr(ft, "LEARNING_RATE", 1e-2)
    parent = _parent()
    before = {k: v.clone() for k, v in parent.net.state_dict().items()}
    rows = _rows(4)
    model, info = ft.fine_tune(parent, rows, seed=0)
    assert info["k"] == 4 and model.threshold == 0.5
    for k, v in parent.net.state_dict().items():
        assert torch.equal(v, before[k]), f"the parent changed: {k}"
    new = model.net.state_dict()
    assert all(torch.equal(new[k], before[k]) for k in new if ".encoder." in k)
    assert any(not torch.equal(new[k], before[k]) for k in new if ".decoder." in k)
    inside = rows.labels == 1
    p0, p1 = ft.predict(parent, rows.inputs), ft.predict(model, rows.inputs)
    assert p1[inside].mean() > p0[inside].mean()
    files = ft.save(model, tmp_path / "v9", {"k": 4})
    assert {f.name for f in files} == {"model.pt", "config.json"}
    again = ft.load(tmp_path / "v9")
    assert again.config["training"] == {"k": 4} and again.threshold == 0.5
    # fp16 on disk, as every shipped version: the same map up to rounding.
    assert np.abs(ft.predict(again, rows.inputs) - p1).mean() < 1e-2


def test_labels_must_match_the_chips() -> None:
    rows = _rows(2)
    bad = LabelledRows(rows.building_id, rows.labels[:, :32, :32], rows.inputs, rows.x_m, rows.y_m)
    with pytest.raises(ValueError, match="labels"):
        ft.fine_tune(_parent(), bad)
