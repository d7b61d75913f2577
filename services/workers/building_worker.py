"""Building worker: consumes BuildingBatches and calls Materials → Attributes → Intensity.

It joins the three answers with the batch's footprints into one GeoParquet part per batch:
roof material and shape and façade materials (each "unknown" with ``*_unknown_reason`` when
not classified), height with its band, floors, and from the intensity stage the structure,
GFA, per-material masses (point estimate and Monte-Carlo p05 / median / p95), total mass,
embodied CO2e, rooftop solar potential and the fallbacks used (``fallback``).
"""

from __future__ import annotations

import json
import time

import geopandas as gpd
import pandas as pd
from urbanfabric.runtime import bus, logs
from urbanfabric.runtime.service_clients import call, stub
from urbanfabric.settings import Settings
from urbanfabric.errors import InvalidInput
from urbanfabric.runtime.grpc_service import DEFAULT_DEADLINES
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.object_store import ObjectStore, parse_s3_uri
from urbanfabric.io.geoparquet import PARQUET_MEDIA_TYPE, geoparquet_bytes, read_geoparquet
from urbanfabric.v1 import attributes_pb2, intensity_pb2, materials_pb2, tasks_pb2

#: What the materials service answers for a building it could not classify (with a reason).
UNKNOWN = "unknown"
ROOF_COLUMNS = ["roof_material", "roof_material_probability", "roof_material_code",
                "roof_material_unknown_reason", "roof_shape", "roof_shape_probability",
                "roof_shape_unknown_reason"]
FACADE_COLUMNS = ["facade_material", "facade_material_probability", "facade_material_code",
                  "facade_materials", "facade_views_used", "facade_material_unknown_reason"]


def function_prior(floors: int, area_m2: float) -> str:
    """RASMI function class from size alone: a stand-in until the function model (issue 5).

    Small low buildings are taken as single-family residential (RS), the rest as multi-family
    residential (RM); non-residential (NR) needs the function classifier and is never guessed.
    (:meth:`urbanfabric.stock.derived_intensity.KeyMapping.function` with its defaults, per building.)
    """
    return "RS" if floors <= 2 and area_m2 < 250 else "RM"


def rasmi_function_of(a) -> str:
    """RASMI function of one BuildingAttributes: the key the attributes service derived from
    the predicted function (residential → RS/RM by size, any other class → NR;
    :func:`urbanfabric.attributes.function.rasmi_function`), else — no function model ran — the
    documented size-only fallback :func:`function_prior` (RS/RM, never NR)."""
    return a.rasmi_function or function_prior(a.floors, a.footprint_area_m2)


def stock_inputs(footprints: gpd.GeoDataFrame, attrs, roofs, facades=()) -> list[intensity_pb2.StockInput]:
    """What the intensity stage gets per building: area, floors, height band, roof, location.

    The location (a point inside the footprint, WGS84) drives the solar potential. An
    "unknown" roof or façade material goes as "" (unknown to the intensity stage too).
    """
    roof_by_id = {r.building_id: "" if r.material == UNKNOWN else r.material for r in roofs}
    facade_by_id = {f.building_id: "" if f.material == UNKNOWN else f.material for f in facades}
    where: dict[str, tuple[float, float]] = {}
    if len(footprints) and "building_id" in footprints.columns:
        geo = footprints if footprints.crs is None or footprints.crs.to_epsg() == 4326 \
            else footprints.to_crs(4326)
        pts = geo.geometry.representative_point()
        where = dict(zip(geo["building_id"], zip(pts.x, pts.y)))
    inputs = []
    for a in attrs:
        lon, lat = where.get(a.building_id, (0.0, 0.0))  # 0, 0 = unknown to the service
        inputs.append(intensity_pb2.StockInput(
            building_id=a.building_id, footprint_area_m2=a.footprint_area_m2, floors=a.floors,
            function=rasmi_function_of(a),
            roof_material=roof_by_id.get(a.building_id, ""),
            facade_material=facade_by_id.get(a.building_id, ""),
            height_m=a.height_m, height_p05=a.height_p05, height_p95=a.height_p95,
            longitude=float(lon), latitude=float(lat),
        ))
    return inputs


def validate(task: tasks_pb2.BuildingBatch) -> None:
    for path, value in (("job.job_id", task.job.job_id), ("batch_id", task.batch_id),
                        ("footprints.uri", task.footprints.uri), ("region", task.region),
                        ("height_model.name", task.height_model.name)):
        if not value:
            raise InvalidInput(path, "is required")


def assemble(footprints: gpd.GeoDataFrame, roofs, attrs, stock, task: tasks_pb2.BuildingBatch,
             facades=()) -> gpd.GeoDataFrame:
    """One row per footprint with every attribute (the buildings table, docs/architecture.md)."""
    out = footprints.copy()
    roof = pd.DataFrame([
        {"building_id": r.building_id, "roof_material": r.material or None,
         "roof_material_probability": r.probability if r.material not in ("", UNKNOWN) else None,
         "roof_material_code": r.taxonomy_code or None,
         "roof_material_unknown_reason": r.unknown_reason or None,
         "roof_shape": r.shape or None,
         "roof_shape_probability": r.shape_probability if r.shape not in ("", UNKNOWN) else None,
         "roof_shape_unknown_reason": r.shape_unknown_reason or None}
        for r in roofs
    ], columns=["building_id", *ROOF_COLUMNS])
    facade = pd.DataFrame([
        {"building_id": f.building_id, "facade_material": f.material or None,
         "facade_material_probability": f.probability if f.material not in ("", UNKNOWN) else None,
         "facade_material_code": f.taxonomy_code or None,
         "facade_materials": ",".join(f.materials) or None,
         "facade_views_used": f.views_used,
         "facade_material_unknown_reason": f.unknown_reason or None}
        for f in facades
    ], columns=["building_id", *FACADE_COLUMNS])
    att = pd.DataFrame([
        {"building_id": a.building_id, "height_m": a.height_m, "height_p05": a.height_p05,
         "height_p95": a.height_p95, "floors": a.floors,
         # Issue 5 columns: "" / NaN when the attributes service ran no such model.
         "building_function": a.function or None,
         "building_function_probability": a.function_probability if a.function else None,
         # proto3 reads an unset double as 0: year 0 is "no age model", not a year.
         "storey_height_m": a.storey_height_m or None, "year_built": a.year_built or None,
         "year_built_p05": a.year_built_p05 or None, "year_built_p95": a.year_built_p95 or None,
         "age_class": a.age_class or None,
         "age_class_probability": a.age_class_probability if a.age_class else None}
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
        rows.append(row)
    sto = pd.DataFrame(rows)
    # Roof and façade columns are always present (empty when no model ran): a stable schema.
    for part in (roof, facade, att, sto):
        if "building_id" in part.columns:
            out = out.merge(part, on="building_id", how="left", validate="one_to_one")
    out["model_versions"] = json.dumps({
        "roof": f"{task.roof_model.name}:{task.roof_model.version}" if task.roof_model.name else None,
        "roof_shape": f"{task.roof_shape_model.name}:{task.roof_shape_model.version}"
        if task.roof_shape_model.name else None,
        "facade": f"{task.facade_model.name}:{task.facade_model.version}" if task.facade_model.name else None,
        "height": f"{task.height_model.name}:{task.height_model.version}",
        "intensity": f"rasmi-20230905:{task.region}:mc100",
    })
    out["job_id"] = task.job.job_id
    return gpd.GeoDataFrame(out, geometry="geometry", crs=footprints.crs)


def make_handler(settings: Settings):
    store = ObjectStore(settings)
    mat, att, ity = (stub(settings, s) for s in ("materials", "attributes", "intensity"))
    deadline = DEFAULT_DEADLINES["tile"]

    def handle(task: tasks_pb2.BuildingBatch) -> tasks_pb2.BuildingBatchResult:
        result = tasks_pb2.BuildingBatchResult(job=task.job, batch_id=task.batch_id)
        footprints = read_geoparquet(store.get_bytes(parse_s3_uri(task.footprints.uri)[1]))
        roofs, facades = [], []
        t0 = time.perf_counter()
        # Without images the service still answers: every roof "unknown", with the reason.
        if task.roof_model.name:
            roofs = call(mat.ClassifyRoofs, materials_pb2.ClassifyRoofsRequest(
                job=task.job, batch_id=task.batch_id, footprints=task.footprints,
                images=task.images, model=task.roof_model, shape_model=task.roof_shape_model), deadline).roofs
        if task.facade_model.name:
            facades = call(mat.ClassifyFacades, materials_pb2.ClassifyFacadesRequest(
                job=task.job, batch_id=task.batch_id, footprints=task.footprints,
                views=task.facade_views, street_views=task.street_views, model=task.facade_model),
                deadline).facades
        result.stage_seconds["materials"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        attrs = call(att.PredictAttributes, attributes_pb2.PredictAttributesRequest(
            job=task.job, batch_id=task.batch_id, footprints=task.footprints,
            height_model=task.height_model), deadline).buildings
        result.stage_seconds["attributes"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        inputs = stock_inputs(footprints, attrs, roofs, facades)
        stock = call(ity.EstimateStock, intensity_pb2.EstimateStockRequest(
            job=task.job, batch_id=task.batch_id, buildings=inputs, region=task.region),
            DEFAULT_DEADLINES["fast"]).buildings
        result.stage_seconds["intensity"] = time.perf_counter() - t2
        table = assemble(footprints, roofs, attrs, stock, task, facades)
        layout = JobLayout(task.job.job_id)
        key = layout.batch_buildings(task.batch_id)
        store.put_bytes(key, geoparquet_bytes(table))
        result.buildings.uri = store.s3_uri(key)
        result.buildings.media_type = PARQUET_MEDIA_TYPE
        result.building_count = len(table)
        result.status = tasks_pb2.TASK_STATUS_SUCCEEDED
        return result

    return handle


def spec(settings: Settings) -> bus.TaskSpec:
    def failed(task: tasks_pb2.BuildingBatch, err) -> tasks_pb2.BuildingBatchResult:
        return tasks_pb2.BuildingBatchResult(job=task.job, batch_id=task.batch_id,
                                             status=tasks_pb2.TASK_STATUS_FAILED, error=err)

    return bus.TaskSpec(
        name="buildings",
        topic=bus.BUILDINGS,
        result_topic=bus.BUILDING_RESULTS,
        task_type=tasks_pb2.BuildingBatch,
        result_type=tasks_pb2.BuildingBatchResult,
        marker_key=lambda t: JobLayout(t.job.job_id).batch_done(t.batch_id),
        result_key=lambda t: t.job.job_id,
        handle=make_handler(settings),
        failed=failed,
        validate=validate,
    )


def main() -> None:
    logs.configure("building-worker")
    settings = Settings.load()
    bus.TaskWorker(settings, spec(settings)).run()


if __name__ == "__main__":
    main()
