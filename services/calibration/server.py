"""Calibration service: a thin gRPC adapter over :mod:`urbanfabric.imagery.calibration`."""

from __future__ import annotations

from urbanfabric.imagery import calibration
from urbanfabric.settings import Settings
from urbanfabric.runtime.grpc_service import Registration, require, rpc, run_service
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.rasters import COG_MEDIA_TYPE, Raster, cog_bytes, read_raster
from urbanfabric.io.object_store import ObjectStore, parse_s3_uri
from urbanfabric.v1 import calibration_pb2 as pb
from urbanfabric.v1 import calibration_pb2_grpc as pb_grpc
from urbanfabric.v1 import common_pb2

SERVICE = "calibration"


class CalibrationServicer(pb_grpc.CalibrationServiceServicer):
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @rpc(SERVICE)
    def Calibrate(self, request: pb.CalibrateRequest, context) -> pb.CalibrateResponse:
        require(request, "job.job_id", "tile_id", "raw.uri")
        raw = read_raster(self.store.get_bytes(parse_s3_uri(request.raw.uri)[1]))
        nodata = raw.nodata if raw.nodata is not None else None
        area = None
        if request.area_stats.uri:
            # Calibration per city: one set of statistics for every tile of the area.
            blob = self.store.get_bytes(parse_s3_uri(request.area_stats.uri)[1])
            area = calibration.BandStats.from_json(blob.decode("utf-8"))
        ard, stats = calibration.calibrate_tile(raw.data, request.tile_id, area,
                                                k=request.k or calibration.DEFAULT_K, nodata=nodata)
        key = JobLayout(request.job.job_id).ard(request.tile_id)
        self.store.put_bytes(key, cog_bytes(Raster(ard, raw.transform, raw.crs, float("nan"))))
        return pb.CalibrateResponse(
            ard=common_pb2.ObjectRef(uri=self.store.s3_uri(key), media_type=COG_MEDIA_TYPE),
            stats=[pb.BandQuartiles(band=i + 1, q1=q1, q3=q3)
                   for i, (q1, q3) in enumerate(zip(stats.q1, stats.q3))],
        )


def main() -> None:
    run_service(SERVICE, __doc__, lambda: [Registration(
        CalibrationServicer(ObjectStore(Settings.load())), pb_grpc.add_CalibrationServiceServicer_to_server, "urbanfabric.v1.CalibrationService")])


if __name__ == "__main__":
    main()
