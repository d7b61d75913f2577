"""Roof materials and shapes: class taxonomies and the calls decoded from classifier output.

* :class:`RoofTaxonomy` maps classifier classes to a roof-covering code list; the default is
  the Danish BBR field ``byg033`` (tagdækningsmateriale), shipped as
  ``urbanfabric/data/bbr_roof_map.csv``. Classes without a matching BBR material map to the
  BBR "other material" code *in that file*, so every mapping is explicit and reviewable.
* :func:`decode` turns class probabilities into :class:`RoofPrediction` records;
  :func:`decode_calls` into :class:`MaterialCall` records that say ``unknown`` with a reason
  instead of guessing.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas
import numpy as np

from urbanfabric.materials.chips import ChipMode, chips_from_rasters, imagery_domain_check
from urbanfabric.errors import InvalidInput
from urbanfabric.uncertainty import OUT_OF_DOMAIN


#: Default class → BBR mapping shipped with the package.
DEFAULT_TAXONOMY_PATH = Path(__file__).parents[1] / "data" / "bbr_roof_map.csv"

#: BBR byg033 code 90 "Andet materiale" (other material): where unmatched classes go.
BBR_OTHER_CODE = 90


@dataclass(frozen=True)
class TaxonomyEntry:
    """One row of a class → taxonomy mapping."""

    model_class: str
    code: int
    label: str
    note: str


@dataclass(frozen=True)
class RoofTaxonomy:
    """Classifier class → roof-covering code (default: Danish BBR ``byg033``).

    Every classifier class must be listed in the mapping file; a class that is not listed
    is an error rather than a silent fallback, so a retrained model with new classes cannot
    produce codes nobody reviewed.
    """

    name: str
    entries: dict[str, TaxonomyEntry]

    @classmethod
    def load(cls, path: str | Path | None = None) -> RoofTaxonomy:
        """Read a mapping CSV with columns ``model_class, bbr_code, bbr_label_en, note``.

        Args:
            path: CSV file; the shipped BBR mapping when omitted.

        Raises:
            InvalidInput: missing columns, a non-integer code or a duplicated class.
        """
        path = Path(path) if path is not None else DEFAULT_TAXONOMY_PATH
        entries: dict[str, TaxonomyEntry] = {}
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            needed = {"model_class", "bbr_code", "bbr_label_en", "note"}
            if reader.fieldnames is None or not needed <= set(reader.fieldnames):
                raise InvalidInput("path", f"{path} needs columns {sorted(needed)}, has {reader.fieldnames}")
            for row in reader:
                name = row["model_class"].strip()
                try:
                    code = int(row["bbr_code"])
                except ValueError as exc:
                    raise InvalidInput("path", f"{path}: class {name!r} has non-integer code {row['bbr_code']!r}") from exc
                if name in entries:
                    raise InvalidInput("path", f"{path}: class {name!r} listed twice")
                entries[name] = TaxonomyEntry(name, code, row["bbr_label_en"].strip(), row["note"].strip())
        return cls(name="bbr_byg033" if path == DEFAULT_TAXONOMY_PATH else path.stem, entries=entries)

    @property
    def classes(self) -> list[str]:
        """The classes the mapping covers, in file order."""
        return list(self.entries)

    def _entry(self, model_class: str) -> TaxonomyEntry:
        try:
            return self.entries[model_class]
        except KeyError:
            raise InvalidInput(
                "cls", f"class {model_class!r} is not in the {self.name} mapping ({self.classes})"
            ) from None

    def code(self, model_class: str) -> int:
        """Taxonomy code of a classifier class.

        Raises:
            InvalidInput: the class is not in the mapping.
        """
        return self._entry(model_class).code

    def label(self, model_class: str) -> str:
        """Human-readable taxonomy label of a classifier class."""
        return self._entry(model_class).label


@dataclass(frozen=True)
class RoofPrediction:
    """Roof material of one building: top class, its probability and its taxonomy code."""

    cls: str
    probability: float
    bbr_code: int


def decode(probs: np.ndarray, classes: list[str], taxonomy: RoofTaxonomy) -> list[RoofPrediction]:
    """Top class per row of a ``(N, C)`` probability matrix.

    Args:
        probs: class probabilities (e.g. softmax output), columns in ``classes`` order.
        classes: class names of the model.
        taxonomy: mapping to taxonomy codes; must cover every class.

    Raises:
        InvalidInput: shape mismatch, non-finite probabilities, or an unmapped class.
    """
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise InvalidInput("probs", f"expected (N, {len(classes)}), got shape {probs.shape}")
    if not np.isfinite(probs).all():
        raise InvalidInput("probs", "contains NaN or infinite values")
    codes = [taxonomy.code(c) for c in classes]  # fail early on an unmapped class
    top = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    return [RoofPrediction(classes[k], float(probs[i, k]), codes[k]) for i, k in enumerate(top)]


#: Material (or shape) of a building the stage could not classify; a reason always comes with it.
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Taxonomy:
    """Class → code mapping of one classifier, with explicit unknowns.

    ``codes[c] is None`` means the mapping lists ``c`` but gives it no code on purpose (e.g.
    stucco has no BBR byg032 wall code): the class is reported with an empty code. A class not
    in ``codes`` at all is *outside* the taxonomy: the building is reported "unknown".
    """

    name: str
    codes: dict[str, int | None]

    @classmethod
    def for_model(cls, config: dict[str, Any], default: RoofTaxonomy | None = None) -> Taxonomy:
        """The model config's ``taxonomy`` block, else ``default`` (the BBR roof CSV), else none.

        Args:
            config: a shipped model's ``config.json`` (``taxonomy: {name, codes}``).
            default: mapping for models whose config has none (roof-material v1).
        """
        block = config.get("taxonomy") or {}
        if block.get("codes") is not None:
            codes = {str(k): (None if v is None else int(v)) for k, v in block["codes"].items()}
            return cls(str(block.get("name", "model")), codes)
        if default is not None:
            return cls(default.name, {c: e.code for c, e in default.entries.items()})
        return cls("none", {})

    def outside(self, model_class: str) -> str:
        """The unknown reason when ``model_class`` is outside the taxonomy, else ``""``."""
        if self.codes and model_class not in self.codes:
            return f"class {model_class!r} is outside the {self.name} taxonomy"
        return ""

    def code_text(self, model_class: str) -> str:
        """The class's code as text; empty when it has none (or there is no taxonomy)."""
        code = self.codes.get(model_class)
        return "" if code is None else str(code)


@dataclass(frozen=True)
class MaterialCall:
    """One building's answer from one classifier.

    Attributes:
        building_id: the building.
        material: top class, or :data:`UNKNOWN` (then ``unknown_reason`` says why).
        probability: calibrated probability of the top class (0 when nothing was classified).
        taxonomy_code: code of ``material`` in the taxonomy; empty when unknown or uncoded.
        model_class: the model's top class even when it is outside the taxonomy.
        probabilities: calibrated probability per class (empty when nothing was classified).
        unknown_reason: why ``material`` is unknown; empty otherwise.
        ood_score: how far the chip lies from the training images (NaN when the model has no
            out-of-domain statistics or there was no chip). Above the model's threshold the
            call is ``unknown`` with an ``out_of_domain`` reason, its probabilities kept.
    """

    building_id: str
    material: str
    probability: float
    taxonomy_code: str
    model_class: str
    probabilities: dict[str, float]
    unknown_reason: str = ""
    ood_score: float = float("nan")


def unknown(building_id: str, reason: str) -> MaterialCall:
    """An explicit "unknown" answer with its reason."""
    if not reason:
        raise ValueError("an unknown answer needs a reason")
    return MaterialCall(building_id, UNKNOWN, 0.0, "", "", {}, reason)


#: The reason of a chip whose out-of-domain score passes the model's threshold (one text for
#: every such building, so the report can count them; the score itself is in the table).
FEATURES_OUT_OF_DOMAIN = (f"{OUT_OF_DOMAIN}: the chip's features lie further from the training images "
                          "than the threshold chosen on validation")


def out_of_domain_threshold(config: dict[str, Any]) -> float:
    """The model's out-of-domain threshold (``config["ood"]["threshold"]``); ``inf`` without one."""
    block = config.get("ood") or {}
    value = block.get("threshold")
    return float(value) if value is not None else float("inf")


def decode_calls(
    building_ids: list[str],
    probs: np.ndarray,
    classes: list[str],
    taxonomy: Taxonomy,
    reasons: list[str] | None = None,
    ood_scores: np.ndarray | None = None,
    ood_threshold: float = float("inf"),
) -> list[MaterialCall]:
    """Top class per building, every unknown with its reason.

    Args:
        building_ids: one per row of ``probs``.
        probs: ``(N, C)`` calibrated probabilities; rows of buildings with a reason are ignored.
        classes: class names in column order.
        taxonomy: class → code mapping; a top class outside it makes the building unknown.
        reasons: per building, why it could not be classified (``""`` = it could).
        ood_scores: per building, the out-of-domain score (NaN = none).
        ood_threshold: a score above it makes the building ``unknown`` with
            :data:`FEATURES_OUT_OF_DOMAIN`, its probabilities and top model class kept.

    Raises:
        InvalidInput: shape mismatch or non-finite probabilities of a classified building.
    """
    probs = np.asarray(probs, dtype=np.float64)
    n = len(building_ids)
    reasons = list(reasons) if reasons is not None else [""] * n
    scores = np.full(n, np.nan) if ood_scores is None else np.asarray(ood_scores, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (n, len(classes)) or len(reasons) != n or scores.shape != (n,):
        raise InvalidInput("probs", f"expected ({n}, {len(classes)}), {n} reasons and {n} scores, "
                                    f"got {probs.shape}, {len(reasons)}, {scores.shape}")
    out: list[MaterialCall] = []
    for i, bid in enumerate(building_ids):
        if reasons[i]:
            out.append(unknown(bid, reasons[i]))
            continue
        row = probs[i]
        if not np.isfinite(row).all():
            raise InvalidInput("probs", f"building {bid}: NaN or infinite probabilities")
        k = int(row.argmax())
        top = classes[k]
        per_class = {c: float(p) for c, p in zip(classes, row)}
        score = float(scores[i])
        why = FEATURES_OUT_OF_DOMAIN if score > ood_threshold else taxonomy.outside(top)
        material = UNKNOWN if why else top
        out.append(MaterialCall(bid, material, float(row[k]), "" if why else taxonomy.code_text(top),
                                top, per_class, why, score))
    return out


#: One batched call of a served classifier: chips ``(N, C, S, S)`` → calibrated probabilities
#: ``(N, K)``, or ``(probabilities, out-of-domain scores (N,))`` for a model that scores them.
Classify = Callable[[np.ndarray], "np.ndarray | tuple[np.ndarray, np.ndarray]"]


def split_outputs(answer: np.ndarray | tuple[np.ndarray, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities, scores)`` of a :data:`Classify` answer (scores NaN when it gave none)."""
    if isinstance(answer, tuple):
        probs, scores = answer
        return np.asarray(probs), np.asarray(scores, dtype=np.float64).reshape(n)
    return np.asarray(answer), np.full(n, np.nan)


def classify_roofs(footprints: geopandas.GeoDataFrame, rasters: list[tuple[str, Callable[[], Any]]],
                   config: dict[str, Any], classify: Classify, taxonomy: Taxonomy) -> list[MaterialCall]:
    """One roof classifier (material or shape) over one batch of buildings: a chip per building
    from the first ARD image covering it, one batched call for the buildings with a chip, and a
    call per building (``unknown`` with its reason where there was no chip, the chip lies out of
    the model's domain, or no confident class)."""
    ids = [str(b) for b in footprints["building_id"]]
    classes, size = list(config["classes"]), int(config.get("chip_size", 128))
    batch, reasons = chips_from_rasters(footprints, rasters, size, mode=ChipMode.of(config),
                                        accept=imagery_domain_check(config))
    ok = np.flatnonzero([not r for r in reasons])
    probs = np.zeros((len(ids), len(classes)), np.float32)
    scores = np.full(len(ids), np.nan)
    if len(ok):
        probs[ok], scores[ok] = split_outputs(classify(batch[ok]), len(ok))
    return decode_calls(ids, probs, classes, taxonomy, reasons, scores, out_of_domain_threshold(config))
