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


def test_temperature_scaling_lowers_nll_of_overconfident_logits() -> None:
    from models.classifiers import metrics as M

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    logits = rng.normal(size=(400, 3))
    logits[np.arange(400), y] += 1.0  # some signal
    logits *= 6.0  # far too confident
    t = M.fit_temperature(logits, y)
    rep = M.calibration_report(logits, y, t, multi_label=False)
    assert t > 2.0
    assert rep["nll_after"] < rep["nll_before"] and rep["ece_after"] < rep["ece_before"]


def test_multi_label_metrics_leave_unannotated_labels_out() -> None:
    from models.classifiers import metrics as M

    y = np.array([[1, np.nan], [0, np.nan], [1, 1], [0, 0]], dtype=np.float32)
    p = np.array([[0.9, 0.9], [0.1, 0.9], [0.8, 0.7], [0.2, 0.1]])
    m = M.multi_label(y, p, ["a", "b"], [0.5, 0.5])
    assert m["per_label"]["b"]["n_annotated"] == 2 and m["per_label"]["b"]["f1"] == 1.0  # NaN rows not false positives
    assert m["macro_f1"] == 1.0 and m["exact_match"] == 1.0
    assert M.nll(np.zeros((4, 2)), y, multi_label=True) == pytest.approx(np.log(2))


def test_aggregate_views_drops_null_views_and_averages_the_rest() -> None:
    from urbanfabric.materials.facades import aggregate_views

    classes = ["brick", "null", "stucco"]
    thr = {"brick": 0.5, "null": 0.6, "stucco": 0.4}
    views = np.array([[0.9, 0.1, 0.2], [0.7, 0.2, 0.5], [0.0, 0.95, 0.9]])  # third view: a tree
    a = aggregate_views(views, classes, thr)
    assert a.views_used == 2 and a.views_dropped == 1 and not a.unknown_reason
    assert a.probabilities["brick"] == pytest.approx(0.8) and a.probabilities["stucco"] == pytest.approx(0.35)
    assert a.materials == ["brick"]
    none = aggregate_views(views[2:], classes, thr)
    assert none.materials == [] and "no usable façade" in none.unknown_reason
    assert "no street-level view" in aggregate_views(np.zeros((0, 3)), classes, thr).unknown_reason


def test_facade_taxonomy_keeps_unknowns_explicit() -> None:
    from models.classifiers.taxonomy import taxonomy_for

    tax = taxonomy_for("facade_both", ["brick", "metal", "null", "stucco", "wood"])
    assert tax["name"] == "bbr_byg032"
    assert tax["codes"]["brick"] == 1 and tax["codes"]["metal"] == 8 and tax["codes"]["wood"] == 5
    assert tax["codes"]["stucco"] is None and tax["codes"]["null"] is None
    assert set(tax["unknown"]) == {"null", "stucco"}
    with pytest.raises(ValueError, match="not in"):
        taxonomy_for("facade_nyc", ["adobe"])
    assert set(taxonomy_for("roof_shape", ["flat", "hip"])["codes"].values()) == {None}


def test_grouped_split_never_puts_one_group_in_two_splits() -> None:
    from models.classifiers.data import _split_groups

    rng = np.random.default_rng(3)
    groups = [f"tile{int(g)}" for g in rng.integers(0, 40, 300)]
    strata = [["hip", "gable", "flat"][int(g[4:]) % 3] for g in groups]
    split = _split_groups(groups, strata, (0.7, 0.15, 0.15), seed=0)
    seen: dict[str, set[str]] = {}
    for g, s in zip(groups, split):
        seen.setdefault(g, set()).add(str(s))
    assert all(len(v) == 1 for v in seen.values())
    assert {"train", "val", "test"} <= set(split.tolist())


def test_training_step_runs_and_ships_a_loadable_model(tmp_path: Path) -> None:
    from models.classifiers.data import ImageSet
    from models.classifiers.train import TrainConfig, assess, fit, ship

    rng = np.random.default_rng(0)
    n = 24
    y = np.tile([0, 1], n // 2)
    imgs = rng.random((n, 3, 36, 36)).astype(np.float16) * 0.3
    imgs[y == 1, 0] += 0.6  # red = class 1
    split = np.array(["train"] * 12 + ["val"] * 6 + ["test"] * 6)
    ds = ImageSet("roof_shape", ["flat", "hip"], False, imgs, y, [str(i) for i in range(n)],
                  [str(i) for i in range(n)], split, True, "test")
    cfg = TrainConfig(arch="mobilenet_v3_small", chip_size=32, max_epochs=2, minutes=1, batch_size=8)
    model, info = fit(ds, cfg, log=lambda s: None)
    result = {"training": info, **assess(model, ds, cfg)}
    assert result["test"]["n"] == 6 and result["calibration"]["val"]["temperature"] > 0
    ship(model, ds, result, cfg, tmp_path / "v1", "test")
    loaded, cfg2 = load_classifier(tmp_path / "v1")
    assert cfg2["classes"] == ["flat", "hip"] and cfg2["taxonomy"]["name"] == "plain"
    assert cfg2["temperature"] == pytest.approx(result["calibration"]["val"]["temperature"])


@pytest.mark.parametrize("folder", ["models/roof_material/v2", "models/roof_shape/v1", "models/roof_shape/v2", "models/roof_shape/v3", "models/facade_material/v1"])
def test_shipped_models_load_with_calibration_and_taxonomy(folder: str) -> None:
    d = Path(folder)
    if not (d / "config.json").exists():
        pytest.skip(f"{folder} not shipped")
    model, cfg = load_classifier(d)  # roof_shape/v3 loads v2's weights (models/registry.yaml)
    assert cfg["temperature"] > 0 and set(cfg["taxonomy"]["codes"]) == set(cfg["classes"])
    if cfg["multi_label"]:
        assert set(cfg["thresholds"]) == set(cfg["classes"])
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["test"]["n"] > 0 and "calibration" in metrics
    p = predict_proba(model, np.full((1, 3, cfg["chip_size"], cfg["chip_size"]), 0.5, dtype=np.float32), cfg)
    assert p.shape == (1, len(cfg["classes"])) and np.all((p >= 0) & (p <= 1))


class _Corner(torch.nn.Module):
    """Logits from the top-left corner only: a net with a favourite orientation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = x[:, 0, :2, :2].mean((1, 2))
        return torch.stack([corner, 1 - corner], 1)


def test_chip_views_are_the_valid_symmetries() -> None:
    from models.classifiers.io import CHIP_TTA, chip_views

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    sizes = {t: len(chip_views(x, t)) for t in CHIP_TTA}
    assert sizes == {"none": 1, "hflip": 2, "flips": 4, "d4": 8}
    d4 = {v.numpy().tobytes() for v in chip_views(x, "d4")}
    assert len(d4) == 8 and x.flip(3).numpy().tobytes() in d4 and x.flip(2).numpy().tobytes() in d4
    # A façade is only ever mirrored left-right, never turned upside down.
    assert torch.equal(chip_views(x, "hflip")[1], x.flip(3))
    with pytest.raises(ValueError, match="tta"):
        chip_views(x, "rot45")


def test_tta_logits_average_the_views_and_serving_follows_the_config() -> None:
    from models.classifiers.io import predict_logits

    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, :2, :2] = 1.0  # evidence in the top-left corner only
    net = _Corner().eval()
    assert predict_logits(net, x)[0, 0] == pytest.approx(1.0)
    # Under the 4 flips the corner is seen once: the mean of (1, 0, 0, 0).
    assert predict_logits(net, x, tta="flips")[0, 0] == pytest.approx(0.25)
    plain = predict_proba(net, x.numpy(), {"temperature": 1.0})
    flips = predict_proba(net, x.numpy(), {"temperature": 1.0, "tta": "flips"})
    assert flips[0, 0] < plain[0, 0]


def test_tta_is_adopted_only_beyond_one_standard_error() -> None:
    from models.classifiers.tta import choose

    # n = 100, s = 0.7: one SE is 0.046.
    assert choose({"none": 0.70, "flips": 0.73, "d4": 0.72}, 100)[0] == "none"
    chosen, se = choose({"none": 0.70, "flips": 0.73, "d4": 0.76}, 100)
    assert chosen == "d4" and se == pytest.approx(0.0458, abs=1e-3)
    assert choose({"none": 0.70, "flips": 0.60}, 10)[0] == "none"


def test_unknown_tta_in_a_config_fails_at_load(tmp_path: Path) -> None:
    model = build_classifier("shufflenet_v2_x1_0", 2).eval()
    save_classifier(model, {"arch": "shufflenet_v2_x1_0", "classes": ["a", "b"], "tta": "rot45"}, tmp_path / "v1")
    with pytest.raises(ValueError, match="tta"):
        load_classifier(tmp_path / "v1")
