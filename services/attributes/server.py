"""Attributes service: a thin gRPC adapter over :mod:`urbanfabric.attributes.batch`."""

from __future__ import annotations


import geopandas as gpd
from functools import lru_cache

from urbanfabric.attributes import age, function, height
from urbanfabric.attributes.batch import AttributeModels, predict_attributes
from urbanfabric.attributes.context import AreaFrame
from urbanfabric.settings import Settings
from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.runtime.attribute_messages import attribute_messages, attributes_report
from urbanfabric.runtime.grpc_service import Registration, require, rpc, run_service
from urbanfabric.io.model_repository import model_exists, version_folder
from urbanfabric.io.object_store import ObjectStore, parse_s3_uri
from urbanfabric.io.geoparquet import read_geoparquet
from urbanfabric.io.rasters import read_raster
from urbanfabric.attributes.chip_reader import MultiRasterChipReader, ard_chip_reader
from urbanfabric.attributes.image_evidence import SunGeometry
from urbanfabric.attributes.measured import read_height_source
from urbanfabric.v1 import attributes_pb2 as pb
from urbanfabric.v1 import attributes_pb2_grpc as pb_grpc

SERVICE = "attributes"
#: Used when a request names no function / age model (skipped if not shipped).
DEFAULT_FUNCTION_MODEL = ("building_function", "v2")
DEFAULT_AGE_MODEL = ("building_age", "v3")


def _shipped(field: str, name: str, version: str):
    path = version_folder(name, version)  # the model store's copy when there is one
    if not path.is_dir():
        raise NotFound(f"{field}: {name}:{version} is not shipped")
    return path


@lru_cache(maxsize=4)
def height_model(name: str, version: str) -> height.HeightModel:
    return height.HeightModel.load(_shipped("model_version", name, version))


@lru_cache(maxsize=4)
def function_model(name: str, version: str) -> function.FunctionModel:
    return function.FunctionModel.load(_shipped("function_model", name, version))


@lru_cache(maxsize=4)
def age_model(name: str, version: str) -> age.AgeModel:
    return age.AgeModel.load(_shipped("age_model", name, version))


def models_for(request: pb.PredictAttributesRequest) -> AttributeModels:
    """Models a request names; an unnamed function / age model is the shipped default, or
    none when that default is not shipped (an explicitly named one must exist)."""
    names = [f"{request.height_model.name}:{request.height_model.version}"]
    loaded = {}
    for key, ref, default, loader in (
        ("function", request.function_model, DEFAULT_FUNCTION_MODEL, function_model),
        ("age", request.age_model, DEFAULT_AGE_MODEL, age_model),
    ):
        if ref.name:
            loaded[key] = loader(ref.name, ref.version)
            names.append(f"{ref.name}:{ref.version}")
        elif model_exists(*default):
            loaded[key] = loader(*default)
            names.append(":".join(default))
        else:
            loaded[key] = None
    return AttributeModels(height_model(request.height_model.name, request.height_model.version),
                           loaded["function"], loaded["age"], tuple(names))


def _sun(request: pb.PredictAttributesRequest) -> SunGeometry | None:
    """The imagery's sun geometry when the request gives its azimuth."""
    if not request.HasField("sun_azimuth_deg"):
        return None
    el = request.sun_elevation_deg if request.HasField("sun_elevation_deg") else None
    if el is not None and not 0 < el <= 90:
        raise InvalidInput("sun_elevation_deg", f"must be in (0, 90], got {el}")
    return SunGeometry(request.sun_azimuth_deg % 360.0, el)


def area_frame(request: pb.PredictAttributesRequest) -> AreaFrame | None:
    """The job's area when the request gives it (checked: field ``area.*``)."""
    if not request.HasField("area"):
        return None
    return AreaFrame(request.area.center_lon, request.area.center_lat, request.area.radius_m)


class AttributesServicer(pb_grpc.AttributesServiceServicer):
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def _measured(self, request: pb.PredictAttributesRequest) -> gpd.GeoDataFrame | None:
        """The request's measured heights (GeoParquet or GeoJSON), or None."""
        if not request.measured_heights.uri:
            return None
        blob = self.store.get_bytes(parse_s3_uri(request.measured_heights.uri)[1])
        if blob[:4] == b"PAR1":
            return read_geoparquet(blob)
        return read_height_source(blob, "measured_heights")

    def _context(self, request: pb.PredictAttributesRequest) -> gpd.GeoDataFrame | None:
        """The job's footprints around the batch (neighbours only), or None."""
        if not request.context_footprints.uri:
            return None
        return read_geoparquet(self.store.get_bytes(parse_s3_uri(request.context_footprints.uri)[1]))

    def _images(self, request: pb.PredictAttributesRequest,
                models: AttributeModels) -> tuple[MultiRasterChipReader | None, list[str]]:
        """A chip reader over the request's ARD images, only for height models using imagery;
        unreadable images are skipped and named."""
        if not request.images or not models.height.image_feature_names:
            return None, []
        rasters, why = [], {}
        for ref in request.images:
            try:
                rasters.append((ref.uri, read_raster(self.store.get_bytes(parse_s3_uri(ref.uri)[1]))))
            except (InvalidInput, NotFound, OSError) as exc:
                why[ref.uri] = str(exc)
        reader, unusable = ard_chip_reader(rasters)
        why.update(unusable)
        # Named in the request's order, whichever way each image failed.
        return reader, [f"{ref.uri} ({why[ref.uri]})" for ref in request.images if ref.uri in why]

    @rpc(SERVICE)
    def PredictAttributes(self, request: pb.PredictAttributesRequest, context) -> pb.PredictAttributesResponse:
        require(request, "job.job_id", "footprints.uri", "height_model.name", "height_model.version")
        if request.storey_height_m < 0:
            raise InvalidInput("storey_height_m", "must be ≥ 0")
        models = models_for(request)
        footprints = read_geoparquet(self.store.get_bytes(parse_s3_uri(request.footprints.uri)[1]))
        if footprints.empty:
            return pb.PredictAttributesResponse(report=pb.AttributesReport(models=models.names))
        if "building_id" not in footprints.columns:
            raise InvalidInput("footprints", "has no building_id column")
        images, unreadable = self._images(request, models)
        sun = _sun(request)
        # Without sun metadata, the shadow direction of the whole tiles (more pixels, more
        # shadows than one batch's chips).
        azimuth = images.scene_shadow_azimuth() if images is not None and sun is None else None
        table, rep = predict_attributes(footprints, models,
                                        storey_height_m=request.storey_height_m or None,
                                        images=images, sun=sun, shadow_azimuth_deg=azimuth,
                                        measured=self._measured(request),
                                        measured_unit=request.measured_heights_unit or "m",
                                        context=self._context(request), area_frame=area_frame(request))
        if unreadable:
            # Images skipped: say so per building instead of "no imagery given".
            table.loc[table["height_source_reason"] == "no imagery given",
                      "height_source_reason"] = "imagery unusable: " + "; ".join(unreadable)
        return pb.PredictAttributesResponse(buildings=attribute_messages(table, footprints),
                                            report=attributes_report(rep, footprints, list(models.names)))


def main() -> None:
    run_service(SERVICE, __doc__, lambda: [Registration(
        AttributesServicer(ObjectStore(Settings.load())), pb_grpc.add_AttributesServiceServicer_to_server, "urbanfabric.v1.AttributesService")])


if __name__ == "__main__":
    main()
