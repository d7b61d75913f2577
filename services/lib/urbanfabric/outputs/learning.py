"""The learning loop's decision: hold out a spatially separate part of the corrections, fine-tune the
served model on the rest, compare old and new on the held-out part, keep the new one only if it
is better (issue 21, item 3).

The science of updating a model from its parent lives with each model's training code
(``models/<name>/fine_tune.py``, loaded by name through
:func:`urbanfabric.io.model_repository.fine_tune_module`); this module only splits, compares and
decides, so every attribute is judged the same way and the learning-curve experiment (issue 21,
item 5) can call the same per-attribute ``fine_tune(parent, rows, seed)`` with any ``k``.

Hold-out: whole grid cells (metres, the labels' UTM zone), never random rows: neighbouring
buildings look alike (same street, same roofs, same imagery), so a random split would let the
new model be judged on the near-twins of what it was trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from urbanfabric.errors import InvalidInput

#: Share of the labels held out for the comparison.
HOLDOUT_FRACTION = 0.2
#: Fewest labels on each side of the split: fewer cannot fit, or cannot judge, anything.
MIN_SIDE = 4
#: About this many labels per hold-out cell: small enough to pick a fifth of them in several
#: places, large enough that a cell is a neighbourhood, not one building.
LABELS_PER_CELL = 4


@dataclass
class LabelledRows:
    """Labelled buildings of one attribute with what the model reads for each.

    ``inputs`` is row-aligned with ``labels``: chips ``(N, C, S, S)`` for the image classifiers,
    a feature table (one row per building) for the tabular models. ``x_m`` / ``y_m`` are the
    buildings' representative points in metres (one UTM zone), for the spatial hold-out.
    """

    building_id: np.ndarray
    labels: np.ndarray
    inputs: Any
    x_m: np.ndarray
    y_m: np.ndarray
    #: What the inputs came from, for the model code (``gsd_m``: the images' ground pixel sizes).
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows: np.ndarray) -> LabelledRows:
        """The rows selected by a boolean mask or an index array."""
        idx = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows)
        inputs = self.inputs.iloc[idx] if isinstance(self.inputs, pd.DataFrame) else self.inputs[idx]
        return LabelledRows(self.building_id[idx], self.labels[idx], inputs, self.x_m[idx], self.y_m[idx],
                            dict(self.meta))


class FineTuneCode(Protocol):
    """What a model's ``models/<name>/fine_tune.py`` provides (plain functions, any ``k``).

    ``predict`` answers class probabilities ``(N, C)`` in ``classes(model)`` order for a class
    attribute, heights / years ``(N,)`` for a numeric one.
    """

    def load(self, version_dir: Path) -> Any: ...

    def fine_tune(self, parent: Any, rows: LabelledRows, seed: int = 0) -> tuple[Any, dict[str, Any]]: ...

    def predict(self, model: Any, inputs: Any) -> np.ndarray: ...

    def classes(self, model: Any) -> list[str]: ...

    def save(self, model: Any, out_dir: Path, training: dict[str, Any]) -> list[Path]: ...


def spatial_holdout(x_m: np.ndarray, y_m: np.ndarray, fraction: float = HOLDOUT_FRACTION, seed: int = 0,
                    min_side: int = MIN_SIDE) -> tuple[np.ndarray, float]:
    """Held-out rows (boolean mask) made of whole grid cells, and the cell size in metres.

    Cells are squares sized for about :data:`LABELS_PER_CELL` labels over the labels' extent;
    cells are drawn in a seeded random order and added until at least ``fraction`` of the rows
    are held out. Both sides keep at least ``min_side`` rows.

    Raises:
        InvalidInput: too few labels for two sides, or all of them in too few cells to
            separate (field ``label``, with the counts).
    """
    x, y = np.asarray(x_m, dtype=float), np.asarray(y_m, dtype=float)
    n = len(x)
    if n < 2 * min_side:
        raise InvalidInput("label", f"{n} labels are too few to hold any out: the comparison needs at least "
                                    f"{min_side} held-out and {min_side} training labels ({2 * min_side} in all)")
    width = max(float(np.ptp(x)), float(np.ptp(y)), 1.0)
    side = width / max(1.0, math.sqrt(n / LABELS_PER_CELL))
    cx = np.floor((x - x.min()) / side).astype(np.int64)
    cy = np.floor((y - y.min()) / side).astype(np.int64)
    cell = cx * 1_000_003 + cy
    cells, counts = np.unique(cell, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(cells))
    target = max(min_side, int(math.ceil(fraction * n)))
    held = np.zeros(n, dtype=bool)
    taken = 0
    for i in order:
        if taken >= target:
            break
        if n - taken - counts[i] < min_side:  # this cell would leave too few to train on
            continue
        held |= cell == cells[i]
        taken += int(counts[i])
    if taken < min_side:
        raise InvalidInput("label", f"the {n} labels lie in {len(cells)} place(s) of {side:.0f} m; none can be held "
                                    f"out whole while {min_side} stay for training: label buildings spread over "
                                    "more of the area")
    return held, side


@dataclass
class Comparison:
    """Parent and candidate scored on the same held-out labels, and the verdict."""

    metric: str
    parent: dict[str, float]
    candidate: dict[str, float]
    better: bool
    reason: str
    n_heldout: int
    n_train: int
    cell_m: float
    heldout_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "parent": self.parent, "candidate": self.candidate, "better": self.better,
                "reason": self.reason, "n_heldout": self.n_heldout, "n_train": self.n_train,
                "holdout_cell_m": round(self.cell_m, 1), "heldout_ids": self.heldout_ids}


def class_scores(labels: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Accuracy, macro-F1 over the classes present, and mean negative log-likelihood."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index.get(str(v), -1) for v in labels])
    p = np.asarray(proba, dtype=float)
    if len(y) == 0 or p.shape != (len(y), len(classes)) or not np.isfinite(p).all():
        raise InvalidInput("prediction", f"the model answered {p.shape} probabilities for {len(y)} "
                                         f"labels of {len(classes)} classes (or non-finite ones)")
    pred = p.argmax(axis=1)
    f1s = []
    for k in np.unique(y[y >= 0]):
        tp = float(((pred == k) & (y == k)).sum())
        denom = float((pred == k).sum() + (y == k).sum())
        f1s.append(2 * tp / denom if denom else 0.0)
    picked = np.where(y >= 0, p[np.arange(len(y)), np.maximum(y, 0)], 0.0)
    return {"accuracy": float((pred == y).mean()), "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
            "nll": float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())}


def numeric_scores(labels: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Mean absolute error, root mean squared error and mean bias (prediction − label)."""
    y, p = np.asarray(labels, dtype=float), np.asarray(pred, dtype=float).ravel()
    if len(y) == 0 or p.shape != y.shape or not np.isfinite(p).all():
        raise InvalidInput("prediction", f"the model answered {p.shape} values for {len(y)} labels (or non-finite ones)")
    err = p - y
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())), "bias": float(err.mean())}


def decide(kind: str, parent: dict[str, float], candidate: dict[str, float]) -> tuple[str, bool, str]:
    """Whether the candidate is better: ``(metric, better, why)``.

    Classes: higher accuracy, or the same accuracy with a lower NLL (on a few dozen held-out
    labels accuracy ties often; NLL then says whose probabilities are closer). Numbers: a lower
    MAE. Anything else, including a tie, keeps the parent: a version no better than the one
    served is not worth serving.
    """
    if kind == "class":
        a0, a1, l0, l1 = parent["accuracy"], candidate["accuracy"], parent["nll"], candidate["nll"]
        if a1 > a0:
            return "accuracy", True, f"held-out accuracy {a0:.3f} → {a1:.3f}"
        if a1 == a0 and l1 < l0:
            return "nll", True, f"held-out accuracy unchanged ({a1:.3f}), NLL {l0:.3f} → {l1:.3f}"
        return "accuracy", False, (f"held-out accuracy {a0:.3f} → {a1:.3f}, NLL {l0:.3f} → {l1:.3f}: "
                                   "not better than the served version")
    m0, m1 = parent["mae"], candidate["mae"]
    if m1 < m0:
        return "mae", True, f"held-out MAE {m0:.3g} → {m1:.3g}"
    return "mae", False, f"held-out MAE {m0:.3g} → {m1:.3g}: not better than the served version"


def compare(kind: str, code: FineTuneCode, parent: Any, candidate: Any, heldout: LabelledRows) -> tuple[
        dict[str, float], dict[str, float], str, bool, str]:
    """Score both models on the held-out rows and decide (:func:`decide`)."""
    if kind == "class":
        s0 = class_scores(heldout.labels, code.predict(parent, heldout.inputs), code.classes(parent))
        s1 = class_scores(heldout.labels, code.predict(candidate, heldout.inputs), code.classes(candidate))
    else:
        s0 = numeric_scores(heldout.labels, code.predict(parent, heldout.inputs))
        s1 = numeric_scores(heldout.labels, code.predict(candidate, heldout.inputs))
    metric, better, why = decide(kind, s0, s1)
    return s0, s1, metric, better, why


def fine_tune_and_compare(code: FineTuneCode, parent_dir: Path, rows: LabelledRows, kind: str, *, seed: int = 0,
                          fraction: float = HOLDOUT_FRACTION) -> tuple[Any, Comparison, dict[str, Any]]:
    """Split, fine-tune the parent on the training side, score both on the held-out side.

    Returns:
        ``(candidate model, comparison, fine-tune info)``: the caller registers the candidate
        only when ``comparison.better``.

    Raises:
        InvalidInput: too few or too clustered labels (:func:`spatial_holdout`); labels of a
            class the parent does not know (field ``label``, naming them).
    """
    parent = code.load(parent_dir)
    if kind == "class":
        known = set(code.classes(parent))
        unknown = sorted({str(v) for v in rows.labels} - known)
        if unknown:
            raise InvalidInput("label", f"classes the model does not know: {', '.join(unknown)} "
                                        f"(it knows {', '.join(code.classes(parent))})")
    held, cell = spatial_holdout(rows.x_m, rows.y_m, fraction, seed)
    train, heldout = rows.subset(~held), rows.subset(held)
    candidate, info = code.fine_tune(parent, train, seed=seed)
    s0, s1, metric, better, why = compare(kind, code, parent, candidate, heldout)
    comparison = Comparison(metric, s0, s1, better, why, len(heldout), len(train), cell,
                            [str(b) for b in heldout.building_id])
    return candidate, comparison, info
