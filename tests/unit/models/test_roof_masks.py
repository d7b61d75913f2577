"""Roof chips in every chip mode: footprint masks for the labelled crops, 4-channel classifiers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.classifiers import build_classifier, load_classifier, predict_proba, save_classifier
from models.classifiers.data import ImageSet
from models.classifiers.roof_masks import apply_chip_mode, pick_component
from models.classifiers.train import augment

torch.set_num_threads(1)


def _set(n: int = 4, side: int = 16) -> ImageSet:
    rng = np.random.default_rng(0)
    images = rng.random((n, 3, side, side)).astype(np.float16)
    return ImageSet("roof_shape", ["flat", "gable", "hip"], False, images, np.arange(n) % 3,
                    [f"c{i}.jpg" for i in range(n)], ["t"] * n, np.array(["train"] * n), True, "iqr", {})


def test_pick_component_takes_the_one_covering_the_box() -> None:
    prob = np.zeros((20, 20), np.float32)
    prob[2:6, 2:6] = 0.9  # a neighbour
    prob[10:18, 10:18] = 0.8  # the building
    mask, fallback = pick_component(prob, 0.5, (9, 19, 9, 19))
    assert not fallback
    assert mask[12, 12] and not mask[3, 3] and mask.sum() == 64


def test_pick_component_falls_back_to_the_box() -> None:
    prob = np.zeros((20, 20), np.float32)
    prob[0:3, 0:3] = 0.9  # nothing touches the box
    mask, fallback = pick_component(prob, 0.5, (10, 15, 5, 12))
    assert fallback and mask.sum() == 5 * 7 and mask[10:15, 5:12].all()


def test_apply_chip_mode_masks_or_stacks() -> None:
    ds = _set()
    masks = np.zeros((4, 1, 16, 16), np.float16)
    masks[:, :, 4:12, 4:12] = 1
    assert apply_chip_mode(ds, masks, "context") is ds
    masked = apply_chip_mode(ds, masks, "masked")
    assert masked.images.shape == (4, 3, 16, 16)
    assert not masked.images[:, :, 0, 0].any()
    np.testing.assert_array_equal(masked.images[:, :, 8, 8], ds.images[:, :, 8, 8])
    both = apply_chip_mode(ds, masks, "context+mask")
    assert both.images.shape == (4, 4, 16, 16) and both.meta["chip_mode"] == "context+mask"
    np.testing.assert_array_equal(both.images[:, :3], ds.images)
    with pytest.raises(ValueError, match="do not match"):
        apply_chip_mode(ds, masks[:2], "masked")


def test_augment_keeps_the_mask_channel_binary() -> None:
    gen = torch.Generator().manual_seed(1)  # its own draws: the result must not hang on test order
    x = torch.rand(3, 4, 20, 20, generator=gen)
    x[:, 3] = (torch.rand(3, 20, 20, generator=gen) > 0.5).float()
    out = augment(x, 16, rotate=True, gen=torch.Generator().manual_seed(0))
    assert out.shape == (3, 4, 16, 16)
    # Resampling blurs edges, but jitter never scales the channel: its maximum stays 1 or 0
    # (up to float rounding of the rotation's interpolation weights).
    peaks = out[:, 3].amax(dim=(1, 2)).numpy()
    assert np.all(np.isclose(peaks, 0.0, atol=1e-6) | np.isclose(peaks, 1.0, atol=1e-6)), peaks


def test_four_channel_lite0_starts_as_the_rgb_net_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rgb = build_classifier("efficientnet_lite0", 3).eval()
    torch.manual_seed(0)
    four = build_classifier("efficientnet_lite0", 3, in_channels=4).eval()
    x = torch.rand(2, 3, 64, 64)
    mask = (torch.rand(2, 1, 64, 64) > 0.5).float()
    with torch.no_grad():
        # Zero-initialised mask weights: the widened net computes what the RGB net does.
        assert torch.allclose(rgb(x), four(torch.cat([x, mask], 1)), atol=1e-5)
        four.backbone.conv_stem.weight[:, 3] = 0.5  # "trained": the mask now matters
        ref = torch.softmax(four(torch.cat([x, mask], 1)), 1).numpy()
    save_classifier(four, {"classes": ["flat", "gable", "hip"], "chip_size": 64, "chip_mode": "context+mask"}, tmp_path)
    loaded, cfg = load_classifier(tmp_path)
    assert loaded.mean.shape[1] == 4 and cfg["chip_mode"] == "context+mask"
    got = predict_proba(loaded, torch.cat([x, mask], 1).numpy(), cfg)
    assert np.allclose(got, ref, atol=2e-2)
    with pytest.raises(ValueError, match="in_channels"):
        build_classifier("resnet50", 3, in_channels=4)


def test_four_channel_models_are_explainable() -> None:
    from urbanfabric.materials import explain as E

    model = build_classifier("efficientnet_lite0", 3, in_channels=4).eval()
    chip = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    maps = [E.explain(model, chip, m) for m in E.Method]
    assert all(m.heatmap.shape == (64, 64) for m in maps)
    assert E.panel_png(chip, maps)[:4] == b"\x89PNG"
    with pytest.raises(Exception, match=r"expected \(4, S, S\)"):
        E.explain(model, chip[:3])
