r"""The buildings table: its columns, one batch's rows, and the job's whole table.

One row per footprint (``building_id``, geometry, tile) with every attribute: roof material and
shape and façade materials (each ``unknown`` with ``*_unknown_reason`` when not classified),
height with its band, floors, function and age, and from the stock stage the structure, GFA,
per-material masses (point estimate and Monte-Carlo p05 / median / p95), total mass, embodied
CO2e, rooftop solar potential and the fallbacks used (``fallback``). Each column's type, unit and
meaning are declared once in :mod:`urbanfabric.outputs.schema` (docs/schema.md is generated from
it); :func:`batch_parquet_bytes` writes a batch's rows in that schema.

The stage answers come in as any objects with the attributes the :class:`typing.Protocol`\ s
below name — the services' protobuf messages satisfy them as they are, so this module needs
no protobuf.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from typing import Protocol

import geopandas as gpd
import pandas as pd
import pyarrow.parquet as pq

from urbanfabric.errors import InvalidInput
from urbanfabric.io.geoparquet import geoparquet_bytes
from urbanfabric.outputs.partitions import ROW_GROUP_ROWS, parquet_file_bytes
from urbanfabric.outputs.schema import typed
from urbanfabric.stock.structure import STRUCTURE_CLASSES as STRUCTURE_CODES


class ModelRef(Protocol):
    name: str
    version: str


class RoofCall(Protocol):
    building_id: str
    material: str
    probability: float
    taxonomy_code: str
    unknown_reason: str
    shape: str
    shape_probability: float
    shape_unknown_reason: str


class FacadeCall(Protocol):
    building_id: str
    material: str
    probability: float
    taxonomy_code: str
    materials: Sequence[str]
    views_used: int
    unknown_reason: str


class BuildingAttributes(Protocol):
    building_id: str
    height_m: float
    height_p05: float
    height_p95: float
    floors: int
    function: str
    function_probability: float
    storey_height_m: float
    year_built: float
    year_built_p05: float
    year_built_p95: float
    age_class: str
    age_class_probability: float


class MaterialMass(Protocol):
    material: str
    kg: float
    kg_p05: float
    kg_mc_p50: float
    kg_p95: float


class BuildingStock(Protocol):
    building_id: str
    function: str
    structure: str
    gfa_m2: float
    masses: Iterable[MaterialMass]
    solar_kwh_per_year: float
    pvout_kwh_per_kwp_day: float
    fallback: str
    solar_source: str
    solar_kwp: float
    structure_source: str
    structure_probability: float
    p_structure: Sequence[float]


class BatchModels(Protocol):
    """Which models made a batch's rows (a ``BuildingBatch`` task has these fields)."""

    roof_model: ModelRef
    roof_shape_model: ModelRef
    facade_model: ModelRef
    height_model: ModelRef
    structure_model: ModelRef
    region: str


#: What the materials service answers for a building it could not classify (with a reason).
UNKNOWN = "unknown"
ROOF_COLUMNS = ["roof_material", "roof_material_probability", "roof_material_code",
                "roof_material_unknown_reason", "roof_shape", "roof_shape_probability",
                "roof_shape_unknown_reason", "roof_material_ood_score", "roof_shape_ood_score"]
FACADE_COLUMNS = ["facade_material", "facade_material_probability", "facade_material_code",
                  "facade_materials", "facade_views_used", "facade_material_unknown_reason",
                  "facade_material_ood_score"]
#: Issue 18: the reason prefix of an out-of-domain abstention; such a value is unknown, but the
#: model's probability stays in the table beside its out-of-domain score.
OUT_OF_DOMAIN = "out_of_domain"


def _age_model(names: Sequence[str]) -> str | None:
    """The age model among the attributes service's models, by its registry name
    (``building_age:v3`` → ``building-age:v3``), or None when it ran none."""
    for ref in names:
        name, _, version = str(ref).partition(":")
        if name.replace("_", "-") == "building-age":
            return f"building-age:{version}"
    return None


def _kept_probability(value: str, reason: str, probability: float) -> float | None:
    """The probability column: for a value, and for an out-of-domain abstention (kept)."""
    if value not in ("", UNKNOWN) or (reason or "").startswith(OUT_OF_DOMAIN):
        return probability
    return None


def _score(call: object, name: str) -> float | None:
    """An out-of-domain score of an answer; None when absent or NaN (no statistics)."""
    value = getattr(call, name, None)
    return None if value is None or value != value else float(value)


def assemble(footprints: gpd.GeoDataFrame, roofs: Iterable[RoofCall], attrs: Iterable[BuildingAttributes],
             stock: Iterable[BuildingStock], models: BatchModels, job_id: str,
             facades: Iterable[FacadeCall] = (), attribute_models: Sequence[str] = ()) -> gpd.GeoDataFrame:
    """One row per footprint with every attribute (the buildings table, docs/architecture.md).

    ``attribute_models``: the ``name:version`` of each model the attributes service ran (its
    report's ``models``); the age model among them is recorded in ``model_versions`` (``age``),
    so that a fine-tune knows its parent.
    """
    out = footprints.copy()
    roof = pd.DataFrame([
        {"building_id": r.building_id, "roof_material": r.material or None,
         "roof_material_probability": _kept_probability(r.material, r.unknown_reason, r.probability),
         "roof_material_code": r.taxonomy_code or None,
         "roof_material_unknown_reason": r.unknown_reason or None,
         "roof_shape": r.shape or None,
         "roof_shape_probability": _kept_probability(r.shape, r.shape_unknown_reason, r.shape_probability),
         "roof_shape_unknown_reason": r.shape_unknown_reason or None,
         "roof_material_ood_score": _score(r, "ood_score"),
         "roof_shape_ood_score": _score(r, "shape_ood_score")}
        for r in roofs
    ], columns=["building_id", *ROOF_COLUMNS])
    facade = pd.DataFrame([
        {"building_id": f.building_id, "facade_material": f.material or None,
         "facade_material_probability": _kept_probability(f.material, f.unknown_reason, f.probability),
         "facade_material_code": f.taxonomy_code or None,
         "facade_materials": ",".join(f.materials) or None,
         "facade_views_used": f.views_used,
         "facade_material_unknown_reason": f.unknown_reason or None,
         "facade_material_ood_score": _score(f, "ood_score")}
        for f in facades
    ], columns=["building_id", *FACADE_COLUMNS])
    att = pd.DataFrame([
        {"building_id": a.building_id, "height_m": a.height_m, "height_p05": a.height_p05,
         "height_p95": a.height_p95, "floors": a.floors,
         # Issue 5 columns: "" / NaN when the attributes service ran no such model.
         "building_function": a.function or None,
         "building_function_probability": a.function_probability if a.function or getattr(
             a, "function_unknown_reason", "") else None,
         # proto3 reads an unset double as 0: year 0 is "no age model", not a year.
         "storey_height_m": a.storey_height_m or None, "year_built": a.year_built or None,
         "year_built_p05": a.year_built_p05 or None, "year_built_p95": a.year_built_p95 or None,
         "age_class": a.age_class or None,
         "age_class_probability": a.age_class_probability if a.age_class or getattr(
             a, "age_class_unknown_reason", "") else None,
         # Issue 18: where the height comes from, and why image evidence was not used.
         "height_source": getattr(a, "height_source", "") or None,
         "height_source_reason": getattr(a, "height_source_reason", "") or None,
         # Issue 18: out-of-domain abstention of function and age (probabilities kept above).
         "building_function_unknown_reason": getattr(a, "function_unknown_reason", "") or None,
         "building_function_ood_score": _score(a, "function_ood_score"),
         "age_class_unknown_reason": getattr(a, "age_class_unknown_reason", "") or None,
         "age_class_ood_score": _score(a, "age_class_ood_score")}
        for a in attrs
    ])
    rows = []
    for b in stock:
        # mass_<m>_kg is the point estimate (p50 intensity × GFA); _p05 / _mc_p50 / _p95 are
        # Monte-Carlo quantiles over the intensity range and the height band.
        row = {"building_id": b.building_id, "function": b.function or None,
               "structure": b.structure, "gfa_m2": b.gfa_m2}
        for m in b.masses:
            row[f"mass_{m.material}_kg"] = m.kg
            row[f"mass_{m.material}_kg_p05"] = m.kg_p05
            row[f"mass_{m.material}_kg_mc_p50"] = m.kg_mc_p50
            row[f"mass_{m.material}_kg_p95"] = m.kg_p95
        for base in ("mass_total_kg", "embodied_co2e_kg"):
            for suffix in ("", "_p05", "_mc_p50", "_p95"):
                row[base + suffix] = getattr(b, base + suffix)
        row["solar_kwh_per_year"] = b.solar_kwh_per_year
        row["pvout_kwh_per_kwp_day"] = b.pvout_kwh_per_kwp_day
        row["fallback"] = b.fallback
        row["solar_source"] = b.solar_source or None
        row["solar_kwp"] = b.solar_kwp
        # The structure's own uncertainty (the draws sample it): NaN where no model ran.
        row["structure_source"] = b.structure_source or None
        row["structure_probability"] = b.structure_probability if b.structure_source else None
        probs: list[float | None] = list(b.p_structure) or [None] * len(STRUCTURE_CODES)
        for code, value in zip(STRUCTURE_CODES, probs):
            row[f"p_structure_{code}"] = value
        rows.append(row)
    sto = pd.DataFrame(rows)
    # Roof and façade columns are always present (empty when no model ran): a stable schema.
    for part in (roof, facade, att, sto):
        if "building_id" in part.columns:
            out = out.merge(part, on="building_id", how="left", validate="one_to_one")
    out["model_versions"] = json.dumps({
        "roof": f"{models.roof_model.name}:{models.roof_model.version}" if models.roof_model.name else None,
        "roof_shape": f"{models.roof_shape_model.name}:{models.roof_shape_model.version}"
        if models.roof_shape_model.name else None,
        "facade": f"{models.facade_model.name}:{models.facade_model.version}" if models.facade_model.name else None,
        "height": f"{models.height_model.name}:{models.height_model.version}",
        "age": _age_model(attribute_models),
        "structure": f"{models.structure_model.name}:{models.structure_model.version}"
        if models.structure_model.name else None,
        "intensity": f"rasmi-20230905:{models.region}:mc100",
    })
    out["job_id"] = job_id
    return gpd.GeoDataFrame(out, geometry="geometry", crs=footprints.crs)


def batch_parquet_bytes(rows: gpd.GeoDataFrame, source: str = "the batch") -> bytes:
    """A batch's rows as GeoParquet 1.1 in the declared schema (types, units, descriptions).

    GeoPandas encodes the geometry, its CRS and the bbox covering; the columns are then cast
    through :func:`urbanfabric.outputs.schema.typed` (a batch is a few hundred rows: the second
    encoding costs little).

    Raises:
        InvalidInput: a column the schema does not declare, or a value its type cannot hold.
    """
    table = typed(pq.read_table(io.BytesIO(geoparquet_bytes(rows))), source)
    return parquet_file_bytes(table, ROW_GROUP_ROWS)


def combine_batches(parts: Sequence[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """The job's table from its batches' rows: one row per building, Hilbert-sorted (EPSG:4326).

    Raises:
        InvalidInput: a building appears in two batches (field ``batches``); nothing is written.
    """
    buildings = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs="EPSG:4326") \
        if parts else gpd.GeoDataFrame(geometry=[], crs="EPSG:4326")
    if len(buildings) and buildings["building_id"].duplicated().any():
        raise InvalidInput("batches", "a building appears in two batches; refusing to write the table")
    if len(buildings):
        buildings = buildings.iloc[buildings.geometry.hilbert_distance().argsort()].reset_index(drop=True)
    return buildings
