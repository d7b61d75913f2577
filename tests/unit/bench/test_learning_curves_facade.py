"""The façade learning-curve set-up: Tokyo split by capture runs, the review's façade columns."""

from __future__ import annotations

import numpy as np

from bench.learning_curves import facade_material as facade
from urbanfabric.outputs.learning import LabelledRows


def _rows(capture: list[int], labels: list[str], chips: np.ndarray | None = None) -> LabelledRows:
    n = len(capture)
    inputs = chips if chips is not None else np.zeros((n, 1))
    return LabelledRows(np.array([f"m-{c}-L_{i}" for i, c in enumerate(capture)]), np.array(labels), inputs,
                        np.array(capture, dtype=float), np.zeros(n))


def test_capture_runs_are_consecutive_and_keep_copies_of_a_photo_together() -> None:
    capture = np.array([40, 3, 7, 7, 12, 30, 31, 5])
    runs = facade.capture_runs(capture, run=3)
    assert runs.tolist() == [2, 0, 0, 0, 1, 1, 1, 0]  # 3, 5, 7, 7 (copies stay) | 12, 30, 31 | 40


def test_the_test_set_is_whole_runs_with_the_labels_mix_of_the_set() -> None:
    rng = np.random.default_rng(0)
    capture = sorted(rng.choice(5000, size=200, replace=False).tolist())
    # Labels come in streets (runs of 10): a random draw of runs can miss a label's streets.
    labels = [["brick", "null", "other", "stucco"][(i // 10) % 4] for i in range(200)]
    rows = _rows(capture, labels)
    test = facade.split_by_runs(rows, share=0.3)
    runs = facade.capture_runs(rows.x_m)
    assert not set(runs[test]) & set(runs[~test])
    assert 50 <= test.sum() <= 70
    _, counts = np.unique(rows.labels[test], return_counts=True)
    assert len(counts) == 4 and counts.min() >= 10


def test_folds_deal_whole_runs() -> None:
    rng = np.random.default_rng(2)
    capture = sorted(rng.choice(5000, size=150, replace=False).tolist())
    rows = _rows(capture, [["brick", "null", "stucco"][(i // 10) % 3] for i in range(150)])
    fold = facade.fold_by_runs(rows, folds=3)
    runs = facade.capture_runs(rows.x_m)
    assert sorted(set(fold.tolist())) == [0, 1, 2]
    assert all(len(set(fold[runs == r].tolist())) == 1 for r in np.unique(runs))
    assert all(40 <= (fold == f).sum() <= 60 for f in range(3))


def test_review_table_has_the_served_facade_columns(tmp_path) -> None:
    from models.classifiers import build_classifier, fine_tune, save_classifier
    from models.classifiers.io import predict_logits_features
    from urbanfabric.outputs.review import review_attribute, score_rows
    from urbanfabric.uncertainty import NeighbourDistance

    net = build_classifier("efficientnet_lite0", 3).eval()
    chips = np.random.default_rng(1).random((6, 3, 32, 32), dtype=np.float32)
    folder = tmp_path / "v1"
    save_classifier(net, {"classes": ["brick", "null", "stucco"], "multi_label": True, "chip_size": 32,
                          "thresholds": {"brick": 0.5, "null": 0.0, "stucco": 0.5},
                          "taxonomy": {"name": "t", "codes": {"brick": 1, "null": None, "stucco": None}},
                          "ood": {"file": "domain.npz", "score": "neighbour_distance"}}, folder)
    reference = NeighbourDistance.fit(predict_logits_features(net, chips)[1], k=1)
    reference.threshold = 10.0
    reference.save(folder / "domain.npz")
    model = fine_tune.load(folder)
    table = facade.review_table(model, _rows(list(range(6)), ["brick"] * 6, chips))
    assert {"facade_material_probability", "facade_material_ood_score", "p_facade_material_brick",
            "p_facade_material_stucco"} <= set(table.columns)
    assert "p_facade_material_null" not in table.columns
    rows = _rows(list(range(6)), ["brick"] * 6, chips)
    assert not any(c.startswith("p_") for c in facade.review_table(model, rows, per_label=False).columns)
    # A null threshold of 0 drops every view as a non-building scene: no probability kept, so the
    # review puts these first ("nobody knows anything about it yet").
    assert table["facade_material_probability"].isna().all() and table["facade_material_ood_score"].notna().all()
    table["building_id"] = [str(i) for i in range(6)]
    assert (score_rows(table, review_attribute("facade_material"))["uncertainty"] == 1.0).all()
