"""The learning-curve driver (bench/learning_curves/core.py) on a fake numeric model."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from bench.learning_curves import core
from urbanfabric.outputs.learning import LabelledRows


class MeanModel:
    """Predicts one height for every building: the mean of the labels it was tuned on."""

    def __init__(self, value: float) -> None:
        self.value = value


FAKE = SimpleNamespace(
    load=lambda d: MeanModel(0.0),
    classes=lambda m: [],
    predict=lambda m, inputs: np.full(len(inputs), m.value),
    fine_tune=lambda parent, rows, seed=0: (MeanModel(float(np.mean(rows.labels))), {"k": len(rows)}),
    save=lambda m, d, t: [],
)


def rows(n: int, offset: float, rng: np.random.Generator) -> LabelledRows:
    return LabelledRows(np.arange(n).astype(str), 10.0 + rng.normal(0, 1, n), np.zeros((n, 1)),
                        offset + rng.uniform(0, 1000, n), rng.uniform(0, 1000, n))


def band_table(model: Any, r: LabelledRows) -> pd.DataFrame:
    # The band widens with x: the uncertainty arm must pick the rows of largest x.
    return pd.DataFrame({"height_m": np.full(len(r), 10.0), "height_p05": np.full(len(r), 5.0),
                         "height_p95": 10.0 + r.x_m / 100.0})


def test_both_arms_every_k_and_seed_and_the_review_picks_the_least_certain() -> None:
    rng = np.random.default_rng(0)
    exp = core.Experiment("height", FAKE, MeanModel(0.0), rows(300, 0.0, rng), rows(50, 5000.0, rng), band_table,
                          ks=(0, 10, 40), seeds=(0, 1))
    out = core.run(exp, progress=lambda s: None)
    assert out["parent"]["mae"] > 9.0
    assert len(out["records"]) == 2 * 2 * 2
    assert {(r["arm"], r["k"], r["seed"]) for r in out["records"]} == {
        (a, k, s) for a in core.ARMS for k in (10, 40) for s in (0, 1)}
    for r in out["records"]:
        assert r["mae"] < 2.0  # the fake learns the labels' mean
    u = [r for r in out["records"] if r["arm"] == "uncertainty"]
    rand = [r for r in out["records"] if r["arm"] == "random"]
    assert min(r["mean_pool_uncertainty"] for r in u) > max(r["mean_pool_uncertainty"] for r in rand)
    summary = out["summary"]
    assert [row["k"] for row in summary] == [0, 10, 40]
    assert summary[0]["uncertainty"]["mean"] == out["parent"]["mae"]
    assert core.labels_for_gain(summary, "numeric") == {"uncertainty": 10, "random": 10}
    assert "| 40 |" in core.markdown(out)


def test_random_arm_is_seeded_and_without_repeats() -> None:
    rng = np.random.default_rng(1)
    held = rows(100, 0.0, rng)
    a = core.pick("random", held, np.zeros(100), 30, seed=3)
    b = core.pick("random", held, np.zeros(100), 30, seed=3)
    assert (a == b).all() and len(set(a.tolist())) == 30
    assert len(core.pick("uncertainty", held, np.linspace(0, 1, 100), 200, seed=0)) == 100


class Cut:
    """A footprint "model" that is its test IoU; a fine-tune adds the building share of its labels."""

    def __init__(self, iou: float) -> None:
        self.iou = iou


FOOTPRINT_FAKE = SimpleNamespace(
    load=lambda d: Cut(0.1), classes=lambda m: [], predict=lambda m, inputs: np.zeros(len(inputs)),
    fine_tune=lambda parent, rows, seed=0: (Cut(parent.iou + float((rows.labels == 1).mean())), {}),
    save=lambda m, d, t: [],
)


def test_footprint_kind_scores_with_the_experiments_own_score_iou_higher_is_better() -> None:
    rng = np.random.default_rng(2)
    n = 120
    masks = np.full((n, 4, 4), 255, dtype=np.uint8)
    masks[:, :2] = 0
    masks[n // 2:, :2, :2] = 1  # the least confident half hold building pixels
    pool = LabelledRows(np.arange(n).astype(str), masks, np.zeros((n, 3, 4, 4)), rng.uniform(0, 1000, n),
                        rng.uniform(0, 1000, n))
    test = LabelledRows(np.arange(5).astype(str), masks[:5], np.zeros((5, 3, 4, 4)), np.zeros(5), np.zeros(5))
    confidence = np.where(np.arange(n) < n // 2, 0.9, 0.2)

    def table(model: Any, r: LabelledRows) -> pd.DataFrame:
        return pd.DataFrame({"footprint_confidence": confidence[r.building_id.astype(int)],
                             "footprint_source": "segmented"})

    exp = core.Experiment("footprint", FOOTPRINT_FAKE, Cut(0.1), pool, test, table, ks=(0, 20), seeds=(0, 1),
                          score=lambda e, m: {"iou": m.iou})
    assert exp.kind == "footprint" and core.primary_metric("footprint") == ("iou", True)
    out = core.run(exp, progress=lambda s: None)
    assert out["parent"] == {"iou": 0.1}
    assert out["records"][0]["labels"].keys() == {"building_px", "background_px"}
    row = out["summary"][1]
    assert row["uncertainty"]["mean"] > row["random"]["mean"] and row["gain_over_random"] > 0
    assert row["seeds_better"] == "2/2"
    assert "uncertainty iou" in core.markdown(out)
    assert core.primary_metric("numeric") == ("mae", False) and core.primary_metric("class") == ("accuracy", True)
