"""Façade materials: several street-level views per building, aggregated into one call.

The façade classifier has a ``null`` output: "this view shows no usable façade" (trees,
cars, fences, the street). It doubles as the non-building view filter: a view whose calibrated
P(null) reaches the model's ``null`` threshold (chosen on validation data) is dropped before
aggregation. ``models/classifiers/results`` and the façade model card report what the filter
removes (precision/recall of dropping null views on the test split).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.materials.chips import image_chip, input_scaling
from urbanfabric.materials.roofs import FEATURES_OUT_OF_DOMAIN, Taxonomy, UNKNOWN, out_of_domain_threshold, split_outputs


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



@dataclass(frozen=True)
class FacadeCall:
    """Façade materials of one building, aggregated over its usable views.

    Attributes:
        building_id: the building.
        material: label with the highest aggregated probability, or :data:`UNKNOWN`.
        probability: its aggregated probability.
        taxonomy_code: its outer-wall code (empty when the taxonomy gives none).
        materials: every label whose aggregated probability passes its threshold.
        probabilities: aggregated probability per material label (``null`` excluded).
        views_total: views given for the building.
        views_used: views that were readable and passed the non-building filter.
        unknown_reason: why ``material`` is unknown; empty otherwise.
        ood_score: the lowest out-of-domain score of the building's readable views (NaN when
            the model scores none). Views above the model's threshold are left out; when every
            view is, the building is ``unknown`` (``out_of_domain``) with the probabilities of
            all its views kept.
    """

    building_id: str
    material: str
    probability: float
    taxonomy_code: str
    materials: list[str]
    probabilities: dict[str, float]
    views_total: int
    views_used: int
    unknown_reason: str = ""
    ood_score: float = float("nan")


def decode_facades(
    building_ids: list[str],
    views: dict[str, list[np.ndarray | str]],
    labels: list[str],
    taxonomy: Taxonomy,
    thresholds: list[float] | None = None,
    no_view_reason: str = "no street-level view of the building",
    scores: dict[str, list[float]] | None = None,
    ood_threshold: float = float("inf"),
) -> list[FacadeCall]:
    """Aggregate each building's views into its façade materials; unknowns with reasons.

    The non-building view filter and the aggregation are
    :func:`urbanfabric.materials.facades.aggregate_views` (views whose ``null`` probability reaches
    the ``null`` threshold are dropped, the rest averaged, labels kept at their thresholds);
    this function adds unreadable views, the top material and its taxonomy code.

    Args:
        building_ids: buildings of the batch, in output order.
        views: per building, one entry per view: its calibrated per-label probabilities
            ``(C,)``, or a string saying why the view could not be classified (unreadable).
        labels: label names in column order (may include :data:`NULL_LABEL`).
        taxonomy: label → outer-wall code; a top label outside it makes the building unknown.
        thresholds: per-label decision thresholds (default 0.5 each).
        no_view_reason: the reason given to buildings without any view.
        scores: per building, the out-of-domain score of each readable view, in view order.
        ood_threshold: views scoring above it are out of the model's domain.
    """
    thr = list(thresholds) if thresholds is not None else [0.5] * len(labels)
    if len(thr) != len(labels):
        raise InvalidInput("thresholds", f"expected {len(labels)} values, got {len(thr)}")
    out: list[FacadeCall] = []
    for bid in building_ids:
        given = views.get(bid, [])
        bad = [v for v in given if isinstance(v, str)]
        probs = np.array([v for v in given if not isinstance(v, str)], dtype=np.float64).reshape(-1, len(labels))
        if not given:
            out.append(FacadeCall(bid, UNKNOWN, 0.0, "", [], {}, 0, 0, no_view_reason))
            continue
        view_scores = np.asarray((scores or {}).get(bid, [np.nan] * len(probs)), dtype=np.float64)
        best = float(np.nanmin(view_scores)) if np.isfinite(view_scores).any() else float("nan")
        inside = ~(view_scores > ood_threshold)
        if len(probs) and not inside.any():
            # Every view unlike the training photos: say so, keep what the model would have said.
            answer = aggregate_views(probs, labels, thr)
            top = max(answer.probabilities, key=lambda label: answer.probabilities[label]) if answer.probabilities else ""
            out.append(FacadeCall(bid, UNKNOWN, answer.probabilities.get(top, 0.0), "", [], dict(answer.probabilities),
                                  len(given), 0, FEATURES_OUT_OF_DOMAIN, best))
            continue
        answer = aggregate_views(probs[inside], labels, thr)
        if answer.unknown_reason or not answer.probabilities:
            parts = [answer.unknown_reason] if len(probs) else []
            if bad:
                parts.append(f"{len(bad)} of {len(given)} views unreadable: {'; '.join(bad)}")
            why = "; ".join(p for p in parts if p)
            why = why if why.startswith("no usable") else f"no usable view: {why}"
            out.append(FacadeCall(bid, UNKNOWN, 0.0, "", [], {}, len(given), 0, why, best))
            continue
        top = max(answer.probabilities, key=lambda label: answer.probabilities[label])
        why = taxonomy.outside(top)
        out.append(FacadeCall(
            bid, UNKNOWN if why else top, answer.probabilities[top], "" if why else taxonomy.code_text(top),
            list(answer.materials), dict(answer.probabilities), len(given), answer.views_used, why, best,
        ))
    return out


def classify_facades(building_ids: list[str], entries: Sequence[tuple[str, Sequence[str]]],
                     read: Callable[[str], bytes], config: dict[str, Any],
                     classify: Callable[[np.ndarray], Any], taxonomy: Taxonomy,
                     no_view_reason: str) -> list[FacadeCall]:
    """Façade materials of a batch of buildings from their street-level views.

    Every view is read (``read(uri)``) and cut to a chip; an unreadable view becomes its reason,
    the rest go to the classifier in one batched call, and each building's views are aggregated
    by :func:`decode_facades` (views whose out-of-domain score passes the model's threshold are
    left out; ``classify`` may answer probabilities or ``(probabilities, scores)``).

    Raises:
        InvalidInput: a view names a building that is not in the batch (``views.building_id``).
    """
    labels, size = list(config["classes"]), int(config.get("chip_size", 128))
    scaling = input_scaling(config)
    known = set(building_ids)
    views: dict[str, list[Any]] = {b: [] for b in building_ids}
    batch, slots = [], []
    for bid, uris in entries:
        if bid not in known:
            raise InvalidInput("views.building_id", f"{bid!r} is not in the footprints")
        for uri in uris:
            try:
                chip = image_chip(read(uri), size, scaling)
            except (InvalidInput, NotFound) as exc:
                views[bid].append(f"{uri}: {exc}")
                continue
            views[bid].append(None)
            slots.append((bid, len(views[bid]) - 1))
            batch.append(chip)
    scores: dict[str, list[float]] = {b: [] for b in building_ids}
    if batch:
        probs, view_scores = split_outputs(classify(np.stack(batch)), len(batch))
        for (bid, k), p, sc in zip(slots, probs, view_scores):
            views[bid][k] = p
            scores[bid].append(float(sc))
    return decode_facades(building_ids, views, labels, taxonomy, thresholds=config.get("thresholds"),
                          no_view_reason=no_view_reason, scores=scores,
                          ood_threshold=out_of_domain_threshold(config))
