"""models.classifiers.probe and the texture-statistics head: CV choice, folded head, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.classifiers import build_classifier
from models.classifiers.probe import _fit, _logits, cross_validate, view_features
from models.classifiers.train import set_head

torch.set_num_threads(1)


def _views(n_per_class: int, n_classes: int, dim: int, signal: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(2 views, N, dim) features with class means ``signal`` apart, and labels."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    centres = rng.normal(size=(n_classes, dim)) * signal
    base = centres[y] + rng.normal(size=(len(y), dim))
    return np.stack([base + 0.1 * rng.normal(size=base.shape) for _ in range(2)]), y


def test_cross_validation_finds_signal_and_not_noise() -> None:
    feats, y = _views(12, 3, 16, signal=2.0)
    groups = [f"g{i}" for i in range(len(y))]
    res = cross_validate(feats, y, groups, 3, folds=4, grid=(0.01, 1.0))
    assert set(res.cv_scores) == {0.01, 1.0} and res.c in (0.01, 1.0)
    assert res.oof_logits.shape == (36, 3)
    assert max(res.cv_scores.values()) > 0.9
    # Labels shuffled: out-of-fold predictions must fall to about chance (1/3).
    noise = cross_validate(feats, np.random.default_rng(1).permutation(y), groups, 3, folds=4, grid=(0.01,))
    assert noise.cv_scores[0.01] < 0.6


def test_cross_validation_keeps_groups_together() -> None:
    # Two views of one "source tile" share a group; a leak would let CV memorise the twin.
    feats, y = _views(10, 2, 8, signal=0.0, seed=3)
    twins = np.concatenate([feats, feats], axis=1)
    y2 = np.concatenate([y, y])
    groups = [f"g{i}" for i in range(len(y))] * 2
    res = cross_validate(twins, y2, groups, 2, folds=5, grid=(100.0,))
    assert res.cv_scores[100.0] < 0.8  # memorised twins would score ~1.0


def test_cross_validation_names_the_bad_field() -> None:
    feats, y = _views(2, 2, 4, signal=1.0)
    with pytest.raises(ValueError, match="folds"):
        cross_validate(feats, y, ["a", "b", "c", "d"], 2, folds=5)
    with pytest.raises(ValueError, match="grid"):
        cross_validate(feats, y, ["a", "b", "c", "d"], 2, folds=2, grid=())


def test_the_folded_head_computes_the_fitted_model() -> None:
    model = build_classifier("lite0_texture", 3).eval()
    x = np.random.default_rng(0).random((6, 3, 72, 72), dtype=np.float32)
    feats = view_features(model, x, 64, "flips")
    assert feats.shape == (4, 6, model.backbone.feature_dim)
    params = _fit(feats, np.array([0, 1, 2, 0, 1, 2]), 3, 1.0, 0.5)
    set_head(model.backbone.get_classifier(), *params)
    from models.classifiers.train import logits_of

    got = logits_of(model, x, 64, "flips")
    assert np.allclose(got, _logits(feats, *params), atol=1e-3)


def test_texture_head_reads_mean_and_spread_of_the_late_blocks() -> None:
    net = build_classifier("lite0_texture", 2).eval().backbone
    late = list(net.blocks)[net.FIRST_BLOCK :]
    assert net.feature_dim == 2 * sum(int(b[-1].conv_pwl.out_channels) for b in late) == 1488
    maps: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: maps.append(o)) for b in late]
    with torch.no_grad():
        z = net.forward_features(torch.rand(2, 3, 96, 96))
        logits = net(torch.rand(2, 3, 96, 96))
    for h in hooks:
        h.remove()
    want = torch.cat([t for m in maps[: len(late)] for t in (m.mean((2, 3)), m.std((2, 3)))], 1)
    assert torch.allclose(z, want)
    assert logits.shape == (2, 2)


def test_probe_ships_a_version_the_serving_code_loads(tmp_path) -> None:
    from models.classifiers import load_classifier, predict_proba
    from models.classifiers.card import render
    from models.classifiers.data import DATA_ROOT
    from models.classifiers.probe import run

    if not (DATA_ROOT / "roofs" / "caribbean-material").is_dir():
        pytest.skip("../shared/data/roofs/caribbean-material absent")
    r = run("roof_material", "lite0_texture", tta="none", chip_size=64, folds=2, out=tmp_path, grid=(0.01,),
            log=lambda *_: None)
    assert r["training"]["chosen_c"] == 0.01 and r["test"]["n"] > 0 and r["val_split"]["n"] > 0
    model, cfg = load_classifier(tmp_path)
    assert cfg["arch"] == "lite0_texture" and cfg["training"]["recipe"] == "probe"
    p = predict_proba(model, np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32), cfg)
    assert p.shape == (3, 5) and np.allclose(p.sum(1), 1.0, atol=1e-5)
    card = render(tmp_path)
    assert "2-fold cross-validation" in card and "chosen C = 0.01" in card
