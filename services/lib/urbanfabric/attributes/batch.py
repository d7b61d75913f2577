"""All building attributes for one batch of footprints: the core of the attributes service.

Order (issue 5): repair / reject bad footprints (:func:`attributes.prepare_footprints`) →
features once (:func:`attributes.footprint_features`) → height with its p05/p95 band
(:class:`attributes.HeightModel`) → function with class probabilities
(:class:`function.FunctionModel`) → floors from height with the storey height of the
predicted function (:func:`function.floors_for_function`) → construction year with its band
and the CMAB age class with probabilities (:class:`age.AgeModel`).

The function and age models are optional: without one the columns are empty strings / NaN and
floors use 3 m storeys — never zeros standing in for "unknown". A model version with
out-of-domain statistics (issue 18) scores every footprint (``*_ood_score``); above its
threshold the class is empty ("unknown") with ``*_unknown_reason`` = ``out_of_domain: …`` and its
probabilities kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from urbanfabric.attributes.age import AGE_CLASS_LABELS, AgeModel
from urbanfabric.attributes.context import AreaFrame
from urbanfabric.attributes.height import HeightModel
from urbanfabric.attributes.measured import MEASURED_REL_ERROR, join_measured_heights
from urbanfabric.attributes.image_evidence import (
    CHIP_MARGIN_M,
    IMAGE_FEATURE_NAMES,
    ChipReader,
    SunGeometry,
    image_evidence_features,
)
from urbanfabric.attributes.features import footprint_features, prepare_footprints
from urbanfabric.errors import InvalidInput
from urbanfabric.uncertainty import OUT_OF_DOMAIN
from urbanfabric.attributes.function import (
    FUNCTION_CLASSES,
    UNKNOWN,
    FunctionModel,
    floors_for_function,
    rasmi_function,
    storey_heights,
)

#: Columns of :func:`predict_attributes`' table (besides the input index).
COLUMNS: tuple[str, ...] = (
    "footprint_area_m2", "height_m", "height_p05", "height_p95", "function",
    "function_probability", *(f"p_function_{c}" for c in FUNCTION_CLASSES), "storey_height_m",
    "floors", "rasmi_function", "year_built", "year_built_p05", "year_built_p95", "age_class",
    "age_class_probability", *(f"p_age_{k}" for k in range(len(AGE_CLASS_LABELS))),
    "height_source", "height_source_reason",
    "function_unknown_reason", "function_ood_score", "age_class_unknown_reason", "age_class_ood_score",
)

#: The reason of a footprint whose features lie outside a tabular model's training data (one
#: text for all, so the report can count them; the score is in ``*_ood_score``).
TABULAR_OUT_OF_DOMAIN = (f"{OUT_OF_DOMAIN}: the footprint's features lie further from the model's "
                         "training buildings than the threshold chosen on validation")


def _abstain(scores: np.ndarray | None, threshold: float, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scores, out of domain?, reasons)`` of one tabular model over a batch (NaN / False / ""
    without statistics)."""
    if scores is None:
        return np.full(n, np.nan), np.zeros(n, bool), np.full(n, "", dtype=object)
    ood = np.asarray(scores, dtype=np.float64) > threshold
    return np.asarray(scores, dtype=np.float64), ood, np.where(ood, TABULAR_OUT_OF_DOMAIN, "").astype(object)

#: ``height_source`` values.
HEIGHT_FROM_IMAGE = "model_image"
HEIGHT_FROM_FOOTPRINT = "model_footprint"
HEIGHT_MEASURED = "measured"
NO_IMAGE_SOURCE = "no imagery given"


@dataclass
class AttributeModels:
    """The models one prediction uses; ``names`` records ``name:version`` of each."""

    height: HeightModel
    function: FunctionModel | None = None
    age: AgeModel | None = None
    names: tuple[str, ...] = ()


def predict_attributes(
    footprints: gpd.GeoDataFrame,
    models: AttributeModels,
    *,
    storey_height_m: float | None = None,
    storey_table: Mapping[str, float] | None = None,
    default_crs: Any = None,
    images: ChipReader | None = None,
    sun: SunGeometry | None = None,
    measured: gpd.GeoDataFrame | None = None,
    measured_unit: str = "m",
    shadow_azimuth_deg: float | None = None,
    context: gpd.GeoDataFrame | None = None,
    area_frame: AreaFrame | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Predict every attribute of every usable footprint.

    Args:
        footprints: (Multi)Polygons in any CRS; bad rows are repaired or dropped and counted.
        models: height (required), function and age (optional) models.
        storey_height_m: one storey height for every building (overrides the per-function
            table); ``None`` or 0 uses the table.
        storey_table: per-function storey heights over
            :data:`urbanfabric.attributes.function.DEFAULT_STOREY_HEIGHT_M`.
        default_crs: CRS assumed for input without one (else InvalidInput).
        images: chip reader over the batch's imagery; used only when the height model has
            image inputs (``img_*``). Buildings without a usable chip get NaN image features,
            the model's morphology-only path and band, ``height_source = model_footprint``
            and the reason in ``height_source_reason``.
        sun: the imagery's sun geometry when known (else the shadow direction is estimated).
        shadow_azimuth_deg: the scene's shadow direction when estimated beforehand (e.g. over
            whole ARD tiles); else estimated from the batch's chips.
        measured: the user's measured heights (polygons with ``height_m`` in
            ``measured_unit``); a footprint covered ≥ 50 % by one takes its height
            (``height_source = measured``, band ± :data:`measured.MEASURED_REL_ERROR`).

    Returns:
        ``(table, report)``: one row per kept footprint (its input index), columns COLUMNS;
        ``report`` is :func:`prepare_footprints`' report plus ``models``.

    Raises:
        InvalidInput: ``storey_height_m`` < 0, or the input cannot be read as footprints.
    """
    if storey_height_m is not None and storey_height_m < 0:
        raise InvalidInput("storey_height_m", f"must be >= 0, got {storey_height_m}")
    kept, report = prepare_footprints(footprints, default_crs=default_crs)
    report["models"] = list(models.names)
    n = len(kept)
    out = pd.DataFrame(index=kept.index, columns=list(COLUMNS))
    if n == 0:
        return out, report
    X = footprint_features(kept, context=context, area_frame=area_frame)
    Xh, reasons, img_info = _with_image_evidence(X, kept, models.height, images, sun,
                                                 shadow_azimuth_deg)
    report["image_evidence"] = img_info
    h, lo, hi = models.height.predict(Xh)
    source = np.where(reasons == "", HEIGHT_FROM_IMAGE, HEIGHT_FROM_FOOTPRINT).astype(object)
    if measured is not None:
        mh, report["measured_heights"] = join_measured_heights(kept, measured, unit=measured_unit)
        got = np.isfinite(mh)
        h, lo, hi = (np.where(got, mh, h), np.where(got, mh * (1 - MEASURED_REL_ERROR), lo),
                     np.where(got, mh * (1 + MEASURED_REL_ERROR), hi))
        source[got] = HEIGHT_MEASURED
        reasons = np.where(got, "", reasons)
    out["height_source"] = source
    out["height_source_reason"] = reasons
    out["footprint_area_m2"] = X["area_m2"].to_numpy()
    out["height_m"], out["height_p05"], out["height_p95"] = h, lo, hi
    func = np.full(n, UNKNOWN, dtype=object)
    fprob = np.full(n, np.nan)
    proba = np.full((n, len(FUNCTION_CLASSES)), np.nan)
    fscore, fout, freason = _abstain(None, np.inf, n)
    if models.function is not None:
        proba = models.function.predict_proba(X)
        k = proba.argmax(axis=1)
        func = np.asarray(FUNCTION_CLASSES, dtype=object)[k]
        fprob = proba[np.arange(n), k]
        # Out of the model's domain: no class (floors and the RASMI key fall back as for an
        # unknown function), the probabilities kept beside the score and the reason.
        fscore, fout, freason = _abstain(models.function.ood_scores(X), _threshold(models.function), n)
        func[fout] = UNKNOWN
    out["function"] = func
    out["function_probability"] = fprob
    out["function_unknown_reason"] = freason
    out["function_ood_score"] = fscore
    for j, c in enumerate(FUNCTION_CLASSES):
        out[f"p_function_{c}"] = proba[:, j]
    if storey_height_m:
        table = {c: float(storey_height_m) for c in (*FUNCTION_CLASSES, UNKNOWN)}
    else:
        table = dict(storey_table or {})
    out["storey_height_m"] = storey_heights(func, table)
    out["floors"] = floors_for_function(h, func, table)
    out["rasmi_function"] = np.where(
        func == UNKNOWN, "", rasmi_function(func, out["floors"].to_numpy(), X["area_m2"].to_numpy()))
    yr = np.full((3, n), np.nan)
    cls = np.full(n, "", dtype=object)
    cprob = np.full(n, np.nan)
    aproba = np.full((n, len(AGE_CLASS_LABELS)), np.nan)
    ascore, aout, areason = _abstain(None, np.inf, n)
    if models.age is not None:
        mean, ylo, yhi, aproba = models.age.predict(X)
        yr = np.stack([mean, ylo, yhi])
        k = aproba.argmax(axis=1)
        cls = np.asarray(AGE_CLASS_LABELS, dtype=object)[k]
        cprob = aproba[np.arange(n), k]
        ascore, aout, areason = _abstain(models.age.ood_scores(X), _threshold(models.age), n)
        cls[aout] = ""
    out["year_built"], out["year_built_p05"], out["year_built_p95"] = yr
    out["age_class_unknown_reason"] = areason
    out["age_class_ood_score"] = ascore
    out["age_class"] = cls
    out["age_class_probability"] = cprob
    for j in range(len(AGE_CLASS_LABELS)):
        out[f"p_age_{j}"] = aproba[:, j]
    return out, report


def _threshold(model: Any) -> float:
    """A tabular model's out-of-domain threshold (``inf`` without statistics)."""
    domain = getattr(model, "domain", None)
    return float(domain.threshold) if domain is not None else float("inf")


def _with_image_evidence(
    X: pd.DataFrame, kept: gpd.GeoDataFrame, model: HeightModel, images: ChipReader | None,
    sun: SunGeometry | None, shadow_azimuth_deg: float | None = None,
) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Footprint features plus the height model's image inputs, and the reason per row.

    A footprint-only model gets the reason ``"height model uses no imagery"`` for every row.
    """
    n = len(X)
    if not model.image_feature_names:
        return X, np.full(n, "height model uses no imagery", dtype=object), {}
    if images is None:
        img = pd.DataFrame(np.nan, index=X.index, columns=list(IMAGE_FEATURE_NAMES))
        return pd.concat([X, img], axis=1), np.full(n, NO_IMAGE_SOURCE, dtype=object), {}
    table, reasons, info = image_evidence(kept.geometry, images, sun, shadow_azimuth_deg)
    table.index = X.index
    return pd.concat([X, table[list(IMAGE_FEATURE_NAMES)]], axis=1), reasons, info


def image_evidence(footprints: gpd.GeoSeries, images: ChipReader, sun: SunGeometry | None = None,
                   shadow_azimuth_deg: float | None = None) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """The height model's image inputs of each footprint (a chip around it, then shadow,
    texture and roof offset), the reason per row, and what was estimated; a NaN azimuth counts
    as none given. One path for the attributes stage and for fine-tuning on a job's buildings."""
    chips = images.chips(footprints, CHIP_MARGIN_M)
    az = shadow_azimuth_deg if shadow_azimuth_deg is not None and np.isfinite(
        shadow_azimuth_deg) else None
    return image_evidence_features(chips, sun, shadow_azimuth_deg=az)
