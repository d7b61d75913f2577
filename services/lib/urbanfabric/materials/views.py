"""Several street-level views of one building → one façade answer, with non-building views dropped.

The façade classifier has a ``null`` output: "this view shows no usable façade" (trees,
cars, fences, the street). It doubles as the non-building view filter: a view whose calibrated
P(null) reaches the model's ``null`` threshold (chosen on validation data) is dropped before
aggregation. ``models/classifiers/results`` and the façade model card report what the filter
removes (precision/recall of dropping null views on the test split).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NULL_LABEL = "null"


@dataclass(frozen=True)
class FacadeAnswer:
    """Aggregated façade prediction of one building.

    Attributes:
        probabilities: mean calibrated probability per material label over the kept views
            (``null`` excluded); empty when no view was usable.
        materials: labels whose mean probability reaches their threshold, most probable first.
        views_used: number of views aggregated.
        views_dropped: number of views the non-building filter removed.
        unknown_reason: ``""`` when there is an answer; otherwise why there is none.
    """

    probabilities: dict[str, float]
    materials: list[str]
    views_used: int
    views_dropped: int
    unknown_reason: str = ""
    dropped_null_probability: list[float] = field(default_factory=list)


def aggregate_views(
    probs: np.ndarray, classes: list[str], thresholds: list[float] | dict[str, float]
) -> FacadeAnswer:
    """Combine the calibrated per-view probabilities of one building into one answer.

    Views with P(null) ≥ the ``null`` threshold are dropped (non-building views); the other
    views' probabilities are averaged per material (the mean of calibrated probabilities is
    itself calibrated when views err independently, and one confident bad view cannot
    dominate as it would with a max); a material is reported when its mean reaches its own
    threshold.

    Args:
        probs: ``(V, C)`` calibrated sigmoid probabilities of the V views of one building
            (``models.classifiers.predict_proba`` with the model's config).
        classes: label names of the columns (the model config's ``classes``).
        thresholds: per-label thresholds (list in column order or ``{label: t}``; the model
            config's ``thresholds``).

    Returns:
        The building's answer; ``unknown_reason`` says why when nothing can be said (no views,
        or every view dropped by the filter).

    Raises:
        ValueError: shapes of ``probs``/``classes``/``thresholds`` disagree.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ValueError(f"probs must be (views, {len(classes)}), got {probs.shape}")
    thr = [float(thresholds[c]) for c in classes] if isinstance(thresholds, dict) else [float(t) for t in thresholds]
    if len(thr) != len(classes):
        raise ValueError(f"{len(thr)} thresholds for {len(classes)} classes")
    if len(probs) == 0:
        return FacadeAnswer({}, [], 0, 0, "no street-level view faces the building")
    keep = np.ones(len(probs), dtype=bool)
    dropped_p: list[float] = []
    if NULL_LABEL in classes:
        j = classes.index(NULL_LABEL)
        keep = probs[:, j] < thr[j]
        dropped_p = probs[~keep, j].round(4).tolist()
    n_drop = int((~keep).sum())
    if not keep.any():
        return FacadeAnswer({}, [], 0, n_drop, f"no usable façade view: all {n_drop} views look like non-building scenes",
                            dropped_p)
    mean = probs[keep].mean(0)
    mats = {c: float(mean[k]) for k, c in enumerate(classes) if c != NULL_LABEL}
    chosen = sorted((c for k, c in enumerate(classes) if c != NULL_LABEL and mean[k] >= thr[k]), key=lambda c: -mats[c])
    return FacadeAnswer(mats, chosen, int(keep.sum()), n_drop, "", dropped_p)
