"""Building worker: consumes BuildingBatches and calls Materials → Attributes → Intensity.

The three answers and the batch's footprints become one part of the buildings table
(:func:`urbanfabric.outputs.buildings_table.assemble`, which owns the columns), stored as one
GeoParquet per batch in the declared schema (:mod:`urbanfabric.outputs.schema`).
"""

from __future__ import annotations

import time

import geopandas as gpd
from urbanfabric.runtime import bus
from urbanfabric.runtime.connections import call, stub
from urbanfabric.settings import Settings
from urbanfabric.errors import InvalidInput
from urbanfabric.runtime.grpc_service import DEFAULT_DEADLINES, batch_deadline
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.object_store import ObjectStore, parse_s3_uri
from urbanfabric.io.geoparquet import PARQUET_MEDIA_TYPE, read_geoparquet
from urbanfabric.stock.derived_intensity import KeyMapping
from urbanfabric.stock.roof_planes import main_axis_deg
from urbanfabric.outputs.buildings_table import UNKNOWN, assemble, batch_parquet_bytes
from urbanfabric.v1 import attributes_pb2, intensity_pb2, materials_pb2, tasks_pb2

#: The default size rule (no xgboost or scipy in the worker image for it).
_SIZE_RULE = KeyMapping()


def function_prior(floors: int, area_m2: float) -> str:
    """RASMI function class from size alone, for buildings no function model saw: the size rule
    :meth:`urbanfabric.stock.derived_intensity.KeyMapping.function` with its defaults (RS small
    and low, else RM; never NR) — the rule :func:`urbanfabric.attributes.function.rasmi_function`
    applies to buildings of unknown function."""
    return str(_SIZE_RULE.function([floors], [area_m2])[0])


def rasmi_function_of(a) -> str:
    """RASMI function of one BuildingAttributes: the key the attributes service derived from
    the predicted function (residential → RS/RM by size, any other class → NR;
    :func:`urbanfabric.attributes.function.rasmi_function`), else — no function model ran — the
    documented size-only fallback :func:`function_prior` (RS/RM, never NR)."""
    return a.rasmi_function or function_prior(a.floors, a.footprint_area_m2)


def stock_inputs(footprints: gpd.GeoDataFrame, attrs, roofs, facades=()) -> list[intensity_pb2.StockInput]:
    """What the intensity stage gets per building: area, floors, height band, roof, location.

    The location (a point inside the footprint, WGS84), the roof shape and the footprint's
    main axis drive the solar potential. An "unknown" roof or façade material or roof shape
    goes as "" (unknown to the intensity stage too).
    """
    roof_by_id = {r.building_id: "" if r.material == UNKNOWN else r.material for r in roofs}
    shape_by_id = {r.building_id: "" if r.shape == UNKNOWN else r.shape for r in roofs}
    facade_by_id = {f.building_id: "" if f.material == UNKNOWN else f.material for f in facades}
    where: dict[str, tuple[float, float]] = {}
    axis: dict[str, float] = {}
    if len(footprints) and "building_id" in footprints.columns:
        geo = footprints if footprints.crs is None or footprints.crs.to_epsg() == 4326 \
            else footprints.to_crs(4326)
        pts = geo.geometry.representative_point()
        where = dict(zip(geo["building_id"], zip(pts.x, pts.y)))
        axis = dict(zip(geo["building_id"], main_axis_deg(geo.geometry, geo.crs)))
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
            roof_shape=shape_by_id.get(a.building_id, ""),
        ))
        # A function or age model that abstained (out of its domain, issue 18) gives the stock
        # no evidence: the structure model and the draws use their priors for it.
        if a.year_built == a.year_built and a.year_built > 0 and not a.age_class_unknown_reason:  # not NaN
            inputs[-1].year_built = float(a.year_built)
        residential = [c.probability for c in a.function_probabilities if c.label == "residential"]
        if residential and residential[0] == residential[0] and not a.function_unknown_reason:
            inputs[-1].p_residential = float(residential[0])
        bearing = axis.get(a.building_id, float("nan"))
        if bearing == bearing:  # not NaN: set the optional field
            inputs[-1].main_axis_deg = float(bearing)
    return inputs


def validate(task: tasks_pb2.BuildingBatch) -> None:
    for path, value in (("job.job_id", task.job.job_id), ("batch_id", task.batch_id),
                        ("footprints.uri", task.footprints.uri), ("region", task.region),
                        ("height_model.name", task.height_model.name)):
        if not value:
            raise InvalidInput(path, "is required")


def make_handler(settings: Settings):
    store = ObjectStore(settings)
    mat, att, ity = (stub(settings, s) for s in ("materials", "attributes", "intensity"))

    def handle(task: tasks_pb2.BuildingBatch) -> tasks_pb2.BuildingBatchResult:
        result = tasks_pb2.BuildingBatchResult(job=task.job, batch_id=task.batch_id)
        footprints = read_geoparquet(store.get_bytes(parse_s3_uri(task.footprints.uri)[1]))
        deadline = batch_deadline(len(footprints))
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
        answer = call(att.PredictAttributes, attributes_pb2.PredictAttributesRequest(
            job=task.job, batch_id=task.batch_id, footprints=task.footprints,
            height_model=task.height_model, age_model=task.age_model, images=task.images,
            measured_heights=task.measured_heights,
            measured_heights_unit=task.measured_heights_unit,
            context_footprints=task.context_footprints,
            area=task.area if task.HasField("area") else None), deadline)
        result.stage_seconds["attributes"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        attrs, attribute_models = answer.buildings, list(answer.report.models)
        inputs = stock_inputs(footprints, attrs, roofs, facades)
        stock = call(ity.EstimateStock, intensity_pb2.EstimateStockRequest(
            job=task.job, batch_id=task.batch_id, buildings=inputs, region=task.region,
            structure_model=task.structure_model),
            DEFAULT_DEADLINES["fast"]).buildings
        result.stage_seconds["intensity"] = time.perf_counter() - t2
        table = assemble(footprints, roofs, attrs, stock, task, task.job.job_id, facades, attribute_models)
        layout = JobLayout(task.job.job_id)
        key = layout.batch_buildings(task.batch_id)
        store.put_bytes(key, batch_parquet_bytes(table, key))
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
    bus.worker_main("building-worker", spec)


if __name__ == "__main__":
    main()
