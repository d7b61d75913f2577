"""Fine-tune the building-age model from a few corrected construction years (issue 21, item 3).

The served model (:class:`urbanfabric.attributes.age.AgeModel`, ``building-age:v3``) is five
bagged XGBoost regressors of the year (their mean is the table's ``year_built``) with a
split-conformal year band (``year_built_p05`` / ``p95``), a classifier of CMAB's five age
classes with a temperature, and an out-of-domain score on the footprint features.

Recipe: continued boosting (:mod:`models.common.continued_boosting`, as for height): the year
members with the parent's absolute-error objective, a low learning rate and shallow trees; the
class model a few more rounds on the labels' age classes (the parent's class weighting). Kept
from the parent: the conformal year band (refitting it needs more held-out
labels than a review gives) and the temperature. The labelled buildings join the reference of
the out-of-domain score (the new trees have seen them).

The learning-curve experiment calls ``fine_tune`` with 0–200 labels; with none it answers the
parent itself.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from urbanfabric.attributes.age import CLS_PARAMS, REG_PARAMS, AgeModel, age_class, balanced_weights
from urbanfabric.attributes.features import feature_matrix
from urbanfabric.outputs.learning import LabelledRows
from urbanfabric.uncertainty import NeighbourDistance

from models.common.continued_boosting import NO_SUBSAMPLING, grown, grown_members

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
    small = {"eta": ETA, "max_depth": MAX_DEPTH, "min_child_weight": MIN_CHILD_WEIGHT}
    model = copy.copy(parent)
    model.members = grown_members(parent.members, {**REG_PARAMS, **small}, data, years, names, ROUNDS, seed)
    cls = age_class(years)
    model.classifier = grown(parent.classifier, {**CLS_PARAMS, **small, **NO_SUBSAMPLING, "seed": seed}, data, cls,
                             names, CLASS_ROUNDS, balanced_weights(cls, parent.class_weight_power))
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
