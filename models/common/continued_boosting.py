"""Continued boosting of a bagged XGBoost model from a few labels (issue 21): the recipe the
tabular fine-tunes share (``models/height_xgb/fine_tune.py``, ``models/building_age/fine_tune.py``).

Every member keeps its trees and grows ``rounds`` more on its own bootstrap sample of the labelled
rows, so the parent's knowledge stays and the new trees only correct it where the labels disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xgboost as xgb

#: No row / column subsampling: the bootstrap already varies the members, and XGBoost's sampler
#: does not reseed on continued training (runs would differ).
NO_SUBSAMPLING = {"subsample": 1.0, "colsample_bytree": 1.0, "nthread": 1}


def grown(booster: xgb.Booster, params: dict[str, Any], data: np.ndarray, label: np.ndarray, names: list[str],
          rounds: int, weight: np.ndarray | None = None) -> xgb.Booster:
    """A copy of ``booster`` with ``rounds`` more trees fitted to ``data`` / ``label``."""
    dtrain = xgb.DMatrix(data, label=label, weight=weight, feature_names=names)
    return xgb.train(params, dtrain, num_boost_round=rounds, xgb_model=booster.copy(), verbose_eval=False)


def grown_members(members: list[xgb.Booster], params: dict[str, Any], data: np.ndarray, label: np.ndarray,
                  names: list[str], rounds: int, seed: int) -> list[xgb.Booster]:
    """Each member grown on its own bootstrap sample of the rows (seeded: the same seed, the same model)."""
    rng = np.random.default_rng(seed)
    out = []
    for k, member in enumerate(members):
        idx = rng.integers(0, len(label), size=len(label))
        out.append(grown(member, {**params, **NO_SUBSAMPLING, "seed": seed * 1000 + k}, data[idx], label[idx],
                         names, rounds))
    return out
