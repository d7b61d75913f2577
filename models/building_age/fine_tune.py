"""Fine-tune the building-age model from a few corrected construction years (issue 21, item 3).

The served model (:class:`urbanfabric.attributes.age.AgeModel`, ``building-age:v3``) is five
bagged XGBoost regressors of the year (their mean is the table's ``year_built``) with a
split-conformal year band (``year_built_p05`` / ``p95``), a classifier of CMAB's five age
classes with a temperature, and an out-of-domain score on the footprint features.

Recipe: continued boosting, as for height (``models/height_xgb/fine_tune.py``). Every year
member keeps its trees and grows a few more on its own bootstrap sample of the labelled
buildings (the parent's absolute-error objective, a low learning rate, shallow trees); the
classifier grows a few more rounds on the labels' age classes (the parent's class weighting).
The parent's knowledge stays in its trees; the new ones correct it where the local labels
disagree. Kept from the parent: the conformal year band (refitting it needs more held-out
labels than a review gives) and the temperature. The labelled buildings join the reference of
the out-of-domain score (the new trees have seen them).

Plain functions with one signature for every ``k`` (the learning-curve experiment calls them
with 0–200 labels): ``k = 0`` returns the parent unchanged.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from urbanfabric.attributes.age import CLS_PARAMS, REG_PARAMS, AgeModel, age_class, balanced_weights
from urbanfabric.attributes.features import feature_matrix
from urbanfabric.outputs.learning import LabelledRows
from urbanfabric.uncertainty import NeighbourDistance

#: Trees added per year member, their learning rate and depth, and the smallest leaf (in rows):
#: chosen on the validation cells of the learning curve's pool
#: (``python -m bench.learning_curves.recipe_search year_built``; docs/results.md, "Learning
#: curves"). Height's 30 rounds at 0.05 (depth 2) overfitted Boulder's pool blocks; the gentlest
#: of the grid was the least harmful there, and none beat the parent: Boulder's held-out blocks
#: are the training city, with no shift to learn.
ROUNDS = 10
ETA = 0.02
MAX_DEPTH = 3
MIN_CHILD_WEIGHT = 2.0
#: Rounds added to the age-class model (same learning rate and depth).
CLASS_ROUNDS = 10


def load(version_dir: Path) -> AgeModel:
    return AgeModel.load(version_dir)


def classes(model: AgeModel) -> list[str]:
    return []


def predict(model: AgeModel, inputs: Any) -> np.ndarray:
    """Construction years: the members' mean, the ``year_built`` the attributes stage reports."""
    return model.predict(inputs)[0]


def _grown(booster: xgb.Booster, params: dict[str, Any], data: np.ndarray, label: np.ndarray,
           names: list[str], rounds: int, weight: np.ndarray | None = None) -> xgb.Booster:
    dtrain = xgb.DMatrix(data, label=label, weight=weight, feature_names=names)
    return xgb.train(params, dtrain, num_boost_round=rounds, xgb_model=booster.copy(), verbose_eval=False)


def fine_tune(parent: AgeModel, rows: LabelledRows, seed: int = 0) -> tuple[AgeModel, dict[str, Any]]:
    """A new model: each year member boosted :data:`ROUNDS` more rounds on a bootstrap sample of
    ``rows`` (years), the class model :data:`CLASS_ROUNDS` more on their age classes; and what
    was done."""
    if len(rows) == 0:
        return parent, {"k": 0, "recipe": "none: no labels, the parent unchanged"}
    if parent.classifier is None:
        raise ValueError("the parent age model has no class model; load a saved version")
    names = list(parent.feature_names)
    data = feature_matrix(rows.inputs, parent.feature_names)
    years = np.asarray(rows.labels, dtype=np.float64)
    small = {"eta": ETA, "max_depth": MAX_DEPTH, "min_child_weight": MIN_CHILD_WEIGHT,
             # No row / column subsampling: the bootstrap already varies the members, and
             # XGBoost's sampler does not reseed on continued training (runs would differ).
             "subsample": 1.0, "colsample_bytree": 1.0, "nthread": 1}
    reg = {**REG_PARAMS, **small}
    rng = np.random.default_rng(seed)
    model = copy.copy(parent)
    model.members = []
    for k, member in enumerate(parent.members):
        idx = rng.integers(0, len(rows), size=len(rows))
        model.members.append(_grown(member, {**reg, "seed": seed * 1000 + k}, data[idx], years[idx], names, ROUNDS))
    cls = age_class(years)
    model.classifier = _grown(parent.classifier, {**CLS_PARAMS, **small, "seed": seed}, data, cls, names,
                              CLASS_ROUNDS, balanced_weights(cls, parent.class_weight_power))
    if isinstance(parent.domain, NeighbourDistance) and parent.domain.standardiser is not None:
        model.domain = parent.domain.widened(data)
    model.info = {**parent.info, "fine_tune": {"k": len(rows), "seed": seed, "rounds_added": ROUNDS,
                                               "class_rounds_added": CLASS_ROUNDS}}
    before = np.abs(predict(parent, rows.inputs) - years).mean()
    after = np.abs(predict(model, rows.inputs) - years).mean()
    info = {"k": len(rows), "seed": seed,
            "recipe": f"continued boosting: {ROUNDS} more trees per year member (eta {ETA}, depth {MAX_DEPTH}, "
                      f"min_child_weight {MIN_CHILD_WEIGHT}, the parent's absolute-error objective) on a bootstrap "
                      f"sample of the labels, {CLASS_ROUNDS} more rounds of the age-class model; the parent's "
                      "conformal year band and temperature kept",
            "train_mae_years": {"parent": float(before), "new": float(after)}}
    return model, info


def save(model: AgeModel, out_dir: Path, training: dict[str, Any]) -> list[Path]:
    """Write the members, the class model, the out-of-domain statistics and ``meta.json`` (with
    this ``training`` block in its ``info``)."""
    model.info = {**model.info, "training": training}
    folder = model.save(out_dir)
    return sorted(p for p in folder.iterdir() if p.is_file())
