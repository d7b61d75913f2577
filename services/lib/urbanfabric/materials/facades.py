"""Façade materials: several street-level views per building, aggregated into one call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.materials.chips import image_chip, input_scaling
from urbanfabric.materials.views import aggregate_views
from urbanfabric.materials.roofs import Taxonomy, UNKNOWN


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


def decode_facades(
    building_ids: list[str],
    views: dict[str, list[np.ndarray | str]],
    labels: list[str],
    taxonomy: Taxonomy,
    thresholds: list[float] | None = None,
    no_view_reason: str = "no street-level view of the building",
) -> list[FacadeCall]:
    """Aggregate each building's views into its façade materials; unknowns with reasons.

    The non-building view filter and the aggregation are
    :func:`urbanfabric.materials.views.aggregate_views` (views whose ``null`` probability reaches
    the ``null`` threshold are dropped, the rest averaged, labels kept at their thresholds);
    this function adds unreadable views, the top material and its taxonomy code.

    Args:
        building_ids: buildings of the batch, in output order.
        views: per building, one entry per view: its calibrated per-label probabilities
            ``(C,)``, or a string saying why the view could not be classified (unreadable).
        labels: label names in column order (may include :data:`urbanfabric.materials.views.NULL_LABEL`).
        taxonomy: label → outer-wall code; a top label outside it makes the building unknown.
        thresholds: per-label decision thresholds (default 0.5 each).
        no_view_reason: the reason given to buildings without any view.
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
        answer = aggregate_views(probs, labels, thr)
        if answer.unknown_reason or not answer.probabilities:
            parts = [answer.unknown_reason] if len(probs) else []
            if bad:
                parts.append(f"{len(bad)} of {len(given)} views unreadable: {'; '.join(bad)}")
            why = "; ".join(p for p in parts if p)
            why = why if why.startswith("no usable") else f"no usable view: {why}"
            out.append(FacadeCall(bid, UNKNOWN, 0.0, "", [], {}, len(given), 0, why))
            continue
        top = max(answer.probabilities, key=lambda label: answer.probabilities[label])
        why = taxonomy.outside(top)
        out.append(FacadeCall(
            bid, UNKNOWN if why else top, answer.probabilities[top], "" if why else taxonomy.code_text(top),
            list(answer.materials), dict(answer.probabilities), len(given), answer.views_used, why,
        ))
    return out


def classify_facades(building_ids: list[str], entries: Sequence[tuple[str, Sequence[str]]],
                     read: Callable[[str], bytes], config: dict[str, Any],
                     classify: Callable[[np.ndarray], np.ndarray], taxonomy: Taxonomy,
                     no_view_reason: str) -> list[FacadeCall]:
    """Façade materials of a batch of buildings from their street-level views.

    Every view is read (``read(uri)``) and cut to a chip; an unreadable view becomes its reason,
    the rest go to the classifier in one batched call, and each building's views are aggregated
    by :func:`decode_facades`.

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
    if batch:
        for (bid, k), p in zip(slots, classify(np.stack(batch))):
            views[bid][k] = p
    return decode_facades(building_ids, views, labels, taxonomy, thresholds=config.get("thresholds"),
                          no_view_reason=no_view_reason)
