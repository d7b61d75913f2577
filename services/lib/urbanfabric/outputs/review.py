"""Which buildings to show a person first: the least certain ones, spread over the area (issue 21).

A correction is worth most where the model is least sure, but the least sure buildings of a
job tend to sit together (one odd district, one cloudy tile); a package of 200 buildings from
one corner teaches a model little about the rest. Selection therefore has two steps:

1. **An uncertainty score in 0–1 per building** (:func:`score_rows`), from what the buildings
   table keeps for the attribute:

   * class attributes (roof material / shape, façade material): ``1 − margin`` between the two
     most probable classes. The margin comes from ``p_<attribute>_<class>`` columns when the
     table has them; otherwise only the top probability ``p`` is known, and the margin is
     bounded below by ``2p − 1`` (all other mass on one rival), so the score is
     ``min(1, 2 − 2p)`` — never smaller than the true ``1 − margin``.
   * height and year built: the relative width of the p05–p95 band, ``w = (p95 − p05) / s``
     (``s`` = the height; for a year, the building's age at :data:`REFERENCE_YEAR`, at least
     one year), squashed to ``w / (1 + w)``.
   * footprint: ``1 − footprint_confidence``.
   * a building with no prediction at all (the model did not run, abstained without keeping a
     probability) scores 1: nobody knows anything about it yet.

   Where the attribute has an out-of-domain score, its percentile rank within the job (the
   scores of different models are on different scales) is averaged with the above.
2. **Spreading** (:func:`spread_pick`): the ``pool_factor × n`` most uncertain buildings are
   binned into a grid of about ``n`` equal cells over their extent (in metres); cells are
   visited round-robin, each giving its most uncertain remaining building, cells with the
   least certain buildings first, until ``n`` are picked. Every pick is among the least
   certain (the pool), and no cell gives a second building before every non-empty cell gave one.

Plain pandas / numpy: the reading of a job's partitions and the files of a package are in
:mod:`urbanfabric.outputs.review_package`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from urbanfabric.errors import InvalidInput

#: The year a building's age is counted to, for the relative width of a year band.
REFERENCE_YEAR = 2025
#: How many candidates per pick the spreading chooses among (3 → the 600 least certain for 200).
POOL_FACTOR = 3
#: What a footprint reviewer answers (a wrong outline is best fixed by editing the geometry too).
FOOTPRINT_LABELS = ("building", "not_building", "wrong_outline")


@dataclass(frozen=True)
class ReviewAttribute:
    """Where an attribute lives in the buildings table and what a label for it looks like."""

    name: str
    #: ``class`` (a vocabulary), ``numeric`` (a band) or ``footprint`` (a confidence).
    kind: str
    value: str
    probability: str | None = None
    low: str | None = None
    high: str | None = None
    ood: str | None = None
    #: Key of the model in the table's ``model_versions`` JSON (where the classes come from).
    model_key: str | None = None
    #: Plausible range of a numeric label (inclusive).
    label_range: tuple[float, float] | None = None
    unit: str = ""

    @property
    def columns(self) -> list[str]:
        """The table columns the score needs (besides ``building_id`` and the geometry)."""
        return [c for c in (self.value, self.probability, self.low, self.high, self.ood) if c]


ATTRIBUTES: dict[str, ReviewAttribute] = {a.name: a for a in (
    ReviewAttribute("roof_material", "class", "roof_material", "roof_material_probability",
                    ood="roof_material_ood_score", model_key="roof"),
    ReviewAttribute("roof_shape", "class", "roof_shape", "roof_shape_probability",
                    ood="roof_shape_ood_score", model_key="roof_shape"),
    ReviewAttribute("facade_material", "class", "facade_material", "facade_material_probability",
                    ood="facade_material_ood_score", model_key="facade"),
    # 0.5 m (a shed) to 1000 m (taller than any building standing).
    ReviewAttribute("height", "numeric", "height_m", low="height_p05", high="height_p95",
                    label_range=(0.5, 1000.0), unit="m"),
    # The oldest standing buildings are about 5,000 years old; none is built after next year.
    ReviewAttribute("year_built", "numeric", "year_built", low="year_built_p05", high="year_built_p95",
                    ood="age_class_ood_score", label_range=(-3000.0, REFERENCE_YEAR + 5.0)),
    ReviewAttribute("footprint", "footprint", "footprint_source", "footprint_confidence"),
)}


def review_attribute(name: str) -> ReviewAttribute:
    """The attribute called ``name``; :class:`InvalidInput` (field ``attribute``) listing the names."""
    try:
        return ATTRIBUTES[name]
    except KeyError:
        raise InvalidInput("attribute", f"unknown {name!r}; one of {', '.join(ATTRIBUTES)}") from None


def class_vocabulary(table_models: Iterable[str], attribute: ReviewAttribute,
                     config: Callable[[str, str], dict]) -> tuple[str, ...]:
    """The classes a label may name: the union over the models that made the job's rows.

    ``table_models`` are the table's ``model_versions`` JSON strings; ``config(name, version)``
    gives a model's config (``io.model_repository.model_config``). Footprints have
    :data:`FOOTPRINT_LABELS`; numeric attributes have none (an empty tuple).

    Raises:
        InvalidInput: no row names the attribute's model (field ``model_versions``).
    """
    if attribute.kind == "footprint":
        return FOOTPRINT_LABELS
    if attribute.kind != "class":
        return ()
    classes: list[str] = []
    refs = {json.loads(m).get(attribute.model_key or "") for m in set(table_models) if m}
    refs.discard(None)
    if not refs:
        raise InvalidInput("model_versions", f"no row names a {attribute.model_key} model: the job has "
                                             f"no {attribute.name} predictions to review or correct")
    for ref in sorted(refs):
        name, _, version = str(ref).partition(":")
        for c in config(name, version).get("classes", []):
            if c not in classes:
                classes.append(c)
    return tuple(classes)


def _class_uncertainty(rows: pd.DataFrame, attribute: ReviewAttribute) -> tuple[np.ndarray, np.ndarray]:
    prefix = f"p_{attribute.name}_"
    full = [c for c in rows.columns if c.startswith(prefix)]
    if len(full) >= 2:
        p = np.sort(rows[full].to_numpy(dtype=float), axis=1)
        margin = p[:, -1] - p[:, -2]
        return 1.0 - margin, np.where(np.isnan(margin), "no_prediction", "margin")
    top = pd.to_numeric(rows[attribute.probability], errors="coerce").to_numpy(dtype=float) \
        if attribute.probability in rows else np.full(len(rows), np.nan)
    return np.minimum(1.0, 2.0 - 2.0 * top), np.where(np.isnan(top), "no_prediction", "top_probability")


def _band_uncertainty(rows: pd.DataFrame, attribute: ReviewAttribute) -> tuple[np.ndarray, np.ndarray]:
    def col(name: str | None) -> np.ndarray:
        if name is None or name not in rows:
            return np.full(len(rows), np.nan)
        return pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype=float)

    value, low, high = col(attribute.value), col(attribute.low), col(attribute.high)
    scale = np.maximum(REFERENCE_YEAR - value, 1.0) if attribute.name == "year_built" else np.abs(value)
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.where(scale > 0, (high - low) / scale, np.nan)
    width = np.maximum(width, 0.0)
    return width / (1.0 + width), np.where(np.isnan(width), "no_prediction", "interval_width")


def score_rows(rows: pd.DataFrame, attribute: ReviewAttribute) -> pd.DataFrame:
    """Per row: ``prediction``, ``confidence`` (its probability, or the band as text),
    ``uncertainty`` (0–1 before the out-of-domain rank), ``uncertainty_source`` and the raw
    ``ood_score`` (NaN when the model has none)."""
    if attribute.kind == "class":
        u, source = _class_uncertainty(rows, attribute)
        confidence = rows.get(attribute.probability)
    elif attribute.kind == "numeric":
        u, source = _band_uncertainty(rows, attribute)
        confidence = None
    else:
        conf = pd.to_numeric(rows.get(attribute.probability), errors="coerce").to_numpy(dtype=float) \
            if attribute.probability in rows else np.full(len(rows), np.nan)
        u, source = 1.0 - conf, np.where(np.isnan(conf), "no_prediction", "footprint_confidence")
        confidence = rows.get(attribute.probability)
    u = np.where(np.isnan(u), 1.0, np.clip(u, 0.0, 1.0))
    out = pd.DataFrame({"building_id": rows["building_id"].astype(str).to_numpy(),
                        "prediction": rows[attribute.value].to_numpy() if attribute.value in rows else None,
                        "uncertainty": u, "uncertainty_source": source}, index=rows.index)
    if attribute.kind == "numeric":
        out["p05"] = pd.to_numeric(rows.get(attribute.low), errors="coerce")
        out["p95"] = pd.to_numeric(rows.get(attribute.high), errors="coerce")
    else:
        out["probability"] = pd.to_numeric(confidence, errors="coerce") if confidence is not None else np.nan
    ood = rows.get(attribute.ood) if attribute.ood else None
    out["ood_score"] = pd.to_numeric(ood, errors="coerce") if ood is not None else np.nan
    return out


def with_ood_rank(scored: pd.DataFrame) -> pd.DataFrame:
    """``uncertainty`` averaged with the job-wide percentile rank of the out-of-domain score
    (rows without a score keep theirs). Call once on the whole job's scores."""
    out = scored.copy()
    has = out["ood_score"].notna()
    if has.sum() >= 2:
        rank = out.loc[has, "ood_score"].rank(pct=True, method="average")
        out.loc[has, "uncertainty"] = (out.loc[has, "uncertainty"] + rank) / 2.0
        out.loc[has, "uncertainty_source"] = out.loc[has, "uncertainty_source"] + "+ood_rank"
    return out


#: How a package chooses its buildings: the review's order, or a spread random sample (the
#: learning curves of issue 21 found the review's order no better than random labels for
#: fine-tuning; a random sample also measures the model's accuracy on the area without bias).
SELECTIONS = ("uncertainty", "random")


def check_selection(selection: str) -> str:
    """``selection`` if it is one of :data:`SELECTIONS`; else :class:`InvalidInput` (field ``select``)."""
    if selection not in SELECTIONS:
        raise InvalidInput("select", f"unknown {selection!r}; one of {', '.join(SELECTIONS)}")
    return selection


def pick_for_review(x_m: np.ndarray, y_m: np.ndarray, uncertainty: np.ndarray, n: int,
                    selection: str = "uncertainty", seed: int = 0) -> np.ndarray:
    """Positions of ``n`` buildings: ``uncertainty`` — the least certain, spread
    (:func:`spread_pick`); ``random`` — a seeded random sample stratified over the whole area
    (the same grid round-robin over all buildings, in random order within each cell).

    Raises:
        InvalidInput: an unknown ``selection`` (field ``select``).
    """
    if check_selection(selection) == "uncertainty":
        return spread_pick(x_m, y_m, uncertainty, n)
    total = len(uncertainty)
    order = np.random.default_rng(seed).random(total)
    return spread_pick(x_m, y_m, order, n, pool_factor=max(1, math.ceil(total / max(n, 1))))


def spread_pick(x_m: np.ndarray, y_m: np.ndarray, uncertainty: np.ndarray, n: int,
                pool_factor: int = POOL_FACTOR) -> np.ndarray:
    """Positions of ``n`` buildings: among the ``pool_factor × n`` least certain, one per grid
    cell round-robin (module docstring). ``x_m`` / ``y_m`` in metres (any metric CRS)."""
    total = len(uncertainty)
    if n <= 0 or total == 0:
        return np.empty(0, dtype=int)
    order = np.argsort(-np.asarray(uncertainty, dtype=float), kind="stable")
    pool = order[:min(total, max(n, pool_factor * n))]
    if len(pool) <= n:
        return pool
    x, y = np.asarray(x_m, dtype=float)[pool], np.asarray(y_m, dtype=float)[pool]
    side = max(1, math.ceil(math.sqrt(n)))
    span_x, span_y = max(np.ptp(x), 1e-9), max(np.ptp(y), 1e-9)
    cx = np.minimum(((x - x.min()) / span_x * side).astype(int), side - 1)
    cy = np.minimum(((y - y.min()) / span_y * side).astype(int), side - 1)
    cell = cy * side + cx
    # The pool is in descending uncertainty: a cell's list is too, and cells are met in the
    # order of their least certain building.
    queues: dict[int, list[int]] = {}
    for pos, c in zip(pool, cell):
        queues.setdefault(int(c), []).append(int(pos))
    picked: list[int] = []
    depth = 0
    while len(picked) < n:
        for q in queues.values():
            if depth < len(q):
                picked.append(q[depth])
                if len(picked) == n:
                    break
        depth += 1
    return np.asarray(picked, dtype=int)
