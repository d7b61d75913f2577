"""Materials service: a thin gRPC adapter over :mod:`urbanfabric.materials`.

Roof chips are cut here from the calibrated tiles; the classifier runs in the model server.
"""

from __future__ import annotations


import numpy as np

from urbanfabric import materials
from urbanfabric.clients import model_client
from urbanfabric.config import Settings
from urbanfabric.grpc_service import Registration, require, rpc, run_service
from urbanfabric.modelclient import ModelClient
from urbanfabric.paths import model_config
from urbanfabric.rasters import read_raster
from urbanfabric.storage import ObjectStore, parse_s3_uri
from urbanfabric.tables import read_geoparquet
from urbanfabric.v1 import materials_pb2 as pb
from urbanfabric.v1 import materials_pb2_grpc as pb_grpc

SERVICE = "materials"


class MaterialsServicer(pb_grpc.MaterialsServiceServicer):
    def __init__(self, store: ObjectStore, models: ModelClient) -> None:
        self.store = store
        self.models = models
        self.taxonomy = materials.RoofTaxonomy.load()

    @rpc(SERVICE)
    def ClassifyRoofs(self, request: pb.ClassifyRoofsRequest, context) -> pb.ClassifyRoofsResponse:
        require(request, "job.job_id", "footprints.uri", "model.name", "model.version")
        name, version = request.model.name, request.model.version
        cfg = model_config(name, version)
        classes, size = list(cfg["classes"]), int(cfg.get("chip_size", 128))
        footprints = read_geoparquet(self.store.get_bytes(parse_s3_uri(request.footprints.uri)[1]))
        n = len(footprints)
        chips = np.zeros((n, 3, size, size), np.float32)
        found = np.zeros(n, bool)
        for i, ref in enumerate(request.images):
            if found.all():
                break
            image = read_raster(self.store.get_bytes(parse_s3_uri(ref.uri)[1]))
            todo = ~found
            c, has = materials.roof_chips(
                image.data, image.transform, footprints.geometry[todo].to_crs(image.crs),
                size=size, crs=image.crs,
            )
            idx = np.flatnonzero(todo)[has]
            chips[idx] = c[has]
            found[idx] = True
        roofs = [pb.RoofMaterial(building_id=str(b), has_imagery=False)
                 for b in footprints["building_id"]]
        if found.any():
            probs = self.models.infer_batched(name, version, chips[found], batch_size=64)
            for i, pred in zip(np.flatnonzero(found), materials.decode(probs, classes, self.taxonomy)):
                roofs[i] = pb.RoofMaterial(
                    building_id=str(footprints["building_id"].iloc[i]),
                    material=pred.cls,
                    probability=pred.probability,
                    taxonomy_code=str(pred.bbr_code),
                    has_imagery=True,
                )
        return pb.ClassifyRoofsResponse(roofs=roofs)


def _build() -> list[Registration]:
    settings = Settings.load()
    servicer = MaterialsServicer(ObjectStore(settings), model_client(settings))
    return [Registration(servicer, pb_grpc.add_MaterialsServiceServicer_to_server, "urbanfabric.v1.MaterialsService")]


def main() -> None:
    run_service(SERVICE, __doc__, _build)


if __name__ == "__main__":
    main()
