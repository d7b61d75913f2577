"""Fine-tune the bagged XGBoost height model from a few corrected heights (issue 21, item 3).

Recipe: continued boosting. Every member of the parent keeps its trees and grows a few more,
fitted to the residuals of its own bootstrap sample of the labelled buildings, with a low
learning rate and shallow trees. The parent's knowledge stays in its trees; the new trees only
correct it where the local labels disagree (a city whose storeys are taller, a district the
parent underestimates). The parent's conformal band is kept (refitting it needs more held-out
labels than a review gives); the band's coverage is measured again on the held-out labels by
the comparison.

Plain functions with one signature for every ``k`` (the learning-curve experiment calls them
with 0–200 labels): ``k = 0`` returns the parent unchanged.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from urbanfabric.attributes.features import feature_matrix
from urbanfabric.attributes.height import HeightModel
from urbanfabric.outputs.learning import LabelledRows

from models.common.continued_boosting import grown_members

#: Trees added per member, their learning rate and depth, and the smallest leaf (in rows):
#: small, because the labels are tens, not thousands.
ROUNDS = 30
ETA = 0.05
MAX_DEPTH = 2
MIN_CHILD_WEIGHT = 2.0


def load(version_dir: Path) -> HeightModel:
    return HeightModel.load(version_dir)


def classes(model: HeightModel) -> list[str]:
    return []


def predict(model: HeightModel, inputs: Any) -> np.ndarray:
    """Heights (m): the members' mean, as the attributes stage reports them."""
    return model.predict(inputs)[0]


def fine_tune(parent: HeightModel, rows: LabelledRows, seed: int = 0) -> tuple[HeightModel, dict[str, Any]]:
    """A new model: each parent member boosted :data:`ROUNDS` more rounds on a bootstrap sample
    of ``rows`` (heights in metres); and what was done."""
    if len(rows) == 0:
        return parent, {"k": 0, "recipe": "none: no labels, the parent unchanged"}
    data = feature_matrix(rows.inputs, parent.feature_names)
    target = np.asarray(rows.labels, dtype=np.float64)
    t = np.log(target) if parent.log_target else target
    params = {**parent.params, "eta": ETA, "max_depth": MAX_DEPTH, "min_child_weight": MIN_CHILD_WEIGHT}
    model = copy.copy(parent)
    model.members = grown_members(parent.members, params, data, t, list(parent.feature_names), ROUNDS, seed)
    model.info = {**parent.info, "fine_tune": {"k": len(rows), "seed": seed, "rounds_added": ROUNDS}}
    before = np.abs(parent.predict(rows.inputs)[0] - target).mean()
    after = np.abs(model.predict(rows.inputs)[0] - target).mean()
    info = {"k": len(rows), "seed": seed,
            "recipe": f"continued boosting: {ROUNDS} more trees per member (eta {ETA}, depth {MAX_DEPTH}, "
                      f"min_child_weight {MIN_CHILD_WEIGHT}) on a bootstrap sample of the labels; the parent's "
                      "band kept",
            "train_mae_m": {"parent": float(before), "new": float(after)}}
    return model, info


def save(model: HeightModel, out_dir: Path, training: dict[str, Any]) -> list[Path]:
    """Write the members and ``meta.json`` (with this ``training`` block in its ``info``)."""
    model.info = {**model.info, "training": training}
    folder = model.save(out_dir)
    return sorted(p for p in folder.iterdir() if p.is_file())
