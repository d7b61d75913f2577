"""Attributes service: a thin gRPC adapter over :mod:`urbanfabric.attributes`."""

from __future__ import annotations

from functools import lru_cache

from urbanfabric import attributes
from urbanfabric.config import Settings
from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.grpc_service import Registration, require, rpc, run_service
from urbanfabric.paths import model_dir
from urbanfabric.storage import ObjectStore, parse_s3_uri
from urbanfabric.tables import read_geoparquet
from urbanfabric.v1 import attributes_pb2 as pb
from urbanfabric.v1 import attributes_pb2_grpc as pb_grpc

SERVICE = "attributes"
DEFAULT_STOREY_M = 3.0


@lru_cache(maxsize=4)
def height_model(name: str, version: str) -> attributes.HeightModel:
    path = model_dir(name, version)
    if not path.is_dir():
        raise NotFound(f"model_version: {name}:{version} is not shipped")
    return attributes.HeightModel.load(path)


class AttributesServicer(pb_grpc.AttributesServiceServicer):
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @rpc(SERVICE)
    def PredictAttributes(self, request: pb.PredictAttributesRequest, context) -> pb.PredictAttributesResponse:
        require(request, "job.job_id", "footprints.uri", "height_model.name", "height_model.version")
        if request.storey_height_m < 0:
            raise InvalidInput("storey_height_m", "must be ≥ 0")
        model = height_model(request.height_model.name, request.height_model.version)
        footprints = read_geoparquet(self.store.get_bytes(parse_s3_uri(request.footprints.uri)[1]))
        if footprints.empty:
            return pb.PredictAttributesResponse()
        features = attributes.footprint_features(footprints)
        mean, p05, p95 = model.predict(features)
        floors = attributes.floors_from_height(mean, request.storey_height_m or DEFAULT_STOREY_M)
        return pb.PredictAttributesResponse(
            buildings=[
                pb.BuildingAttributes(
                    building_id=str(bid), footprint_area_m2=float(a), height_m=float(h),
                    height_p05=float(lo), height_p95=float(hi), floors=int(f),
                )
                for bid, a, h, lo, hi, f in zip(
                    footprints["building_id"], features["area_m2"], mean, p05, p95, floors
                )
            ]
        )


def main() -> None:
    run_service(SERVICE, __doc__, lambda: [Registration(
        AttributesServicer(ObjectStore(Settings.load())), pb_grpc.add_AttributesServiceServicer_to_server, "urbanfabric.v1.AttributesService")])


if __name__ == "__main__":
    main()
