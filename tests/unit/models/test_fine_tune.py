"""The per-model fine-tune functions (issue 21): labelled rows in, fitted model and metrics out, a seed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.classifiers import build_classifier, save_classifier
from models.classifiers import fine_tune as classifier_ft
from models.building_age import fine_tune as age_ft
from models.height_xgb import fine_tune as height_ft
from urbanfabric.attributes.age import AgeModel
from urbanfabric.attributes.height import HeightModel
from urbanfabric.io.model_repository import fine_tune_module
from urbanfabric.outputs.learning import LabelledRows


def _rows(labels, inputs) -> LabelledRows:  # noqa: ANN001
    n = len(labels)
    return LabelledRows(np.array([f"b{i}" for i in range(n)]), np.asarray(labels), inputs,
                        np.arange(n, dtype=float), np.zeros(n))


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("roof") / "v1"
    net = build_classifier("efficientnet_lite0", 3).eval()
    net.temperature = 1.3
    save_classifier(net, {"classes": ["flat", "gable", "hip"], "chip_size": 32, "tta": "none"}, folder)
    return folder


def _chips(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bright chips are "flat", dark ones "gable": a pattern the frozen features can carry."""
    rng = np.random.default_rng(seed)
    labels = np.array(["flat", "gable"] * (n // 2))
    level = np.where(labels == "flat", 0.8, 0.2)[:, None, None, None]
    return (level + rng.normal(0, 0.05, (n, 3, 32, 32))).clip(0, 1).astype(np.float32), labels


def test_classifier_head_fine_tune_learns_the_labels_and_saves_a_servable_version(classifier_dir, tmp_path):
    code = fine_tune_module("roof-material")
    assert code is classifier_ft
    parent = code.load(classifier_dir)
    chips, labels = _chips(24, 0)
    model, info = code.fine_tune(parent, _rows(labels, chips), seed=0)
    assert info["k"] == 24 and info["train_nll"]["new"] < info["train_nll"]["parent"]
    test, truth = _chips(12, 1)
    acc = lambda m: float((np.array(code.classes(m))[code.predict(m, test).argmax(1)] == truth).mean())  # noqa: E731
    assert acc(model) >= 0.9 and acc(model) > acc(parent)
    # The backbone is untouched: only the head moved.
    pb, mb = parent.backbone.state_dict(), model.backbone.state_dict()
    head = {k for k in pb if k.startswith("classifier.")}
    assert all(np.allclose(pb[k].numpy(), mb[k].numpy()) for k in pb if k not in head)
    files = code.save(model, tmp_path / "v1-ft1", {"parent": "roof-material:v1"})
    again = code.load(tmp_path / "v1-ft1")
    assert np.allclose(code.predict(again, test), code.predict(model, test), atol=2e-3)  # fp16 weights
    config = json.loads((tmp_path / "v1-ft1" / "config.json").read_text())
    assert config["training"]["parent"] == "roof-material:v1" and config["temperature"] == info["temperature"]["new"]
    assert {f.name for f in files} == {"model.pt", "config.json"}


def test_no_labels_is_the_parent(classifier_dir):
    parent = classifier_ft.load(classifier_dir)
    empty = _rows(np.array([], dtype=str), np.zeros((0, 3, 32, 32), np.float32))
    assert classifier_ft.fine_tune(parent, empty)[0] is parent


def test_height_continued_boosting_moves_towards_the_labels_and_is_seeded(tmp_path):
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"area_m2": rng.uniform(50, 500, 300), "perimeter_m": rng.uniform(30, 90, 300)})
    parent = HeightModel().fit(X, 3 + X["area_m2"] / 50, n_models=4, num_boost_round=40)
    Xk = X.iloc[:40].reset_index(drop=True)
    taller = (3 + Xk["area_m2"] / 50) * 1.5  # the same shapes, taller storeys
    model, info = height_ft.fine_tune(parent, _rows(taller.to_numpy(), Xk), seed=0)
    assert info["train_mae_m"]["new"] < 0.5 * info["train_mae_m"]["parent"]
    assert len(model.members) == 4 and len(parent.members[0].get_dump()) < len(model.members[0].get_dump())
    again, _ = height_ft.fine_tune(parent, _rows(taller.to_numpy(), Xk), seed=0)
    assert np.allclose(height_ft.predict(model, Xk), height_ft.predict(again, Xk))
    height_ft.save(model, tmp_path / "v1-ft1", {"parent": "height-xgb:v1"})
    loaded = HeightModel.load(tmp_path / "v1-ft1")
    assert np.allclose(loaded.predict(Xk)[0], model.predict(Xk)[0], atol=1e-4)
    assert loaded.info["training"]["parent"] == "height-xgb:v1"
    assert height_ft.fine_tune(parent, _rows(np.array([]), Xk.iloc[:0]))[0] is parent


def test_the_corrections_imagery_joins_the_versions_domain(tmp_path):
    """A parent that abstains on the corrections' imagery (its stated pixel sizes, its feature
    reference) does not abstain on it once fine-tuned on it; the saved version keeps that."""
    from models.classifiers.io import predict_logits_features
    from urbanfabric.uncertainty import NeighbourDistance

    folder = tmp_path / "v1"
    net = build_classifier("efficientnet_lite0", 2).eval()
    save_classifier(net, {"classes": ["flat", "gable"], "chip_size": 32,
                          "imagery_domain": {"gsd_m": [0.02, 0.15], "tolerance": 2.0},
                          "ood": {"file": "domain.npz", "score": "neighbour_distance"}}, folder)
    far = np.random.default_rng(5).random((10, 3, 32, 32), dtype=np.float32) * 0.1  # dark "drone" chips
    _, feats = predict_logits_features(net, far)
    reference = NeighbourDistance.fit(feats, k=1)
    chips, labels = _chips(16, 2)
    _, before = predict_logits_features(net, chips)
    # The cut halfway to the nearest corrections chip: the parent calls every one out of domain.
    assert reference.score(before).min() > 0.005
    reference.threshold = reference.score(before).min() / 2
    reference.save(folder / "domain.npz")
    parent = classifier_ft.load(folder)
    rows = _rows(labels, chips)
    rows.meta["gsd_m"] = [0.54]
    assert parent.domain.out_of_domain(parent.domain.score(before)).all()
    model, _ = classifier_ft.fine_tune(parent, rows, seed=0)
    assert model.config["imagery_domain"]["gsd_m"] == [0.02, 0.54]
    assert not model.domain.out_of_domain(model.domain.score(before)).any()
    classifier_ft.save(model, tmp_path / "v1-ft1", {})
    again = classifier_ft.load(tmp_path / "v1-ft1")
    assert not again.domain.out_of_domain(again.domain.score(before)).any()
    assert parent.domain.reference.shape[0] == 10  # the parent is untouched


@pytest.fixture(scope="module")
def facade_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("facade") / "v1"
    net = build_classifier("efficientnet_lite0", 3).eval()
    net.temperature = 1.2
    save_classifier(net, {"classes": ["brick", "null", "stucco"], "multi_label": True, "chip_size": 32,
                          "tta": "none", "thresholds": {"brick": 0.5, "null": 0.8, "stucco": 0.5},
                          "training": {"task": "facade_both"}}, folder)
    return folder


def test_facade_multi_label_head_fine_tune_learns_per_label_without_rotating_photos(facade_dir):
    code = fine_tune_module("facade-material")
    parent = code.load(facade_dir)
    assert classifier_ft.fine_tune_views(parent.config) == "none"  # a façade photo has an up
    assert classifier_ft.fine_tune_views({"training": {"task": "roof_shape"}, "tta": "flips"}) == "d4"
    chips, labels = _chips(24, 3)
    labels = np.where(labels == "flat", "brick", "stucco")
    model, info = code.fine_tune(parent, _rows(labels, chips), seed=0)
    assert "binary cross-entropy" in info["recipe"] and "none views" in info["recipe"]
    assert info["train_nll"]["new"] < info["train_nll"]["parent"]
    assert info["class_counts"] == {"brick": 12, "stucco": 12}
    test, truth = _chips(12, 4)
    truth = np.where(truth == "flat", "brick", "stucco")
    p = code.predict(model, test)
    assert p.shape == (12, 3) and ((p >= 0) & (p <= 1)).all()  # one sigmoid per label
    assert float((np.array(code.classes(model))[p.argmax(1)] == truth).mean()) >= 0.9
    assert model.config["thresholds"] == parent.config["thresholds"]


def test_facade_labels_may_name_several_materials_and_must_be_known(facade_dir):
    parent = classifier_ft.load(facade_dir)
    y = classifier_ft.targets(parent, np.array(["brick,stucco", "null"]))
    assert y.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match="wood"):
        classifier_ft.fine_tune(parent, _rows(np.array(["wood", "brick"]), _chips(2, 0)[0]))

def test_age_continued_boosting_moves_towards_the_labels_keeps_the_band_and_saves_what_load_reads(tmp_path):
    from urbanfabric.uncertainty import NeighbourDistance

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"area_m2": rng.uniform(50, 500, 400), "perimeter_m": rng.uniform(30, 90, 400)})
    parent = AgeModel().fit(X, 1950 + X["area_m2"] / 10, n_models=3, seed=0, num_boost_round=40)
    parent.calibrate_band(X.iloc[300:], (1950 + X["area_m2"] / 10).iloc[300:])
    parent.temperature = 1.2
    parent.domain = NeighbourDistance.fit(X.to_numpy()[:300], k=5, tabular=True, names=tuple(X.columns))
    threshold = parent.domain.choose_threshold(X.to_numpy()[300:], keep=0.95)
    parent.save(tmp_path / "v1")
    parent = age_ft.load(tmp_path / "v1")
    code = fine_tune_module("building_age")
    assert code is age_ft
    # A place built 25 years later for the same shapes, and beyond the parent's shapes.
    Xk = pd.DataFrame({"area_m2": rng.uniform(600, 900, 60), "perimeter_m": rng.uniform(100, 150, 60)})
    later = (1975 + Xk["area_m2"] / 10).to_numpy()
    model, info = age_ft.fine_tune(parent, _rows(later, Xk), seed=0)
    # The shipped recipe is gentle (10 rounds at eta 0.02): a step towards the labels, not a refit.
    assert info["train_mae_years"]["new"] < 0.9 * info["train_mae_years"]["parent"]
    assert np.all(age_ft.predict(model, Xk) > age_ft.predict(parent, Xk))
    assert len(model.members) == 3 and len(parent.members[0].get_dump()) < len(model.members[0].get_dump())
    assert len(parent.classifier.get_dump()) < len(model.classifier.get_dump())
    again, _ = age_ft.fine_tune(parent, _rows(later, Xk), seed=0)
    assert np.allclose(age_ft.predict(model, Xk), age_ft.predict(again, Xk))
    # The band and temperature are the parent's; the labelled places are now in the domain.
    assert model.year_band == parent.year_band and model.temperature == 1.2
    flagged = lambda m: m.domain.out_of_domain(m.domain.score(Xk.to_numpy())).mean()  # noqa: E731
    assert flagged(parent) > 0.5 and flagged(model) < 0.2
    files = age_ft.save(model, tmp_path / "v1-ft1", {"parent": "building-age:v1"})
    assert {f.name for f in files} >= {"meta.json", "classes.json", "domain.npz", "year_00.json"}
    loaded = AgeModel.load(tmp_path / "v1-ft1")
    for a, b in zip(loaded.predict(Xk), model.predict(Xk)):
        assert np.allclose(a, b, atol=1e-3)
    assert loaded.info["training"]["parent"] == "building-age:v1" and loaded.temperature == pytest.approx(1.2)
    assert loaded.domain.threshold == threshold and len(loaded.domain.reference) == 360
    assert age_ft.fine_tune(parent, _rows(np.array([]), Xk.iloc[:0]))[0] is parent
