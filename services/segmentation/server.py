"""Segmentation service: a thin gRPC adapter over :mod:`urbanfabric.footprints.tile_segmentation`.

The network runs in the model server (KServe, Open Inference Protocol V2); the core cuts the
tile into windows, sends them in batches through the model client, blends and combines the
answers, and vectorizes. This adapter validates, converts, calls ``segment_tile`` and stores.
"""

from __future__ import annotations

import os

import numpy as np

from urbanfabric.errors import NotFound
from urbanfabric.footprints import polygons
from urbanfabric.footprints.options import SegmentationOptions
from urbanfabric.io.model_repository import split_model_ref
from urbanfabric.footprints.tile_segmentation import segment_tile
from urbanfabric.footprints.windows import DEFAULT_MAX_WINDOW, WindowLayout
from urbanfabric.imagery import landcover
from urbanfabric.io.geoparquet import PARQUET_MEDIA_TYPE, geoparquet_bytes
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.object_store import ObjectStore, gdal_env, parse_s3_uri
from urbanfabric.io.rasters import COG_MEDIA_TYPE, Raster, cog_bytes, read_raster
from urbanfabric.runtime.convert import options_from_proto, tile_from_proto
from urbanfabric.runtime.grpc_service import Registration, require, rpc, run_service
from urbanfabric.runtime.model_client import ModelClient
from urbanfabric.runtime.connections import model_client
from urbanfabric.settings import Settings
from urbanfabric.v1 import common_pb2
from urbanfabric.v1 import segmentation_pb2 as pb
from urbanfabric.v1 import segmentation_pb2_grpc as pb_grpc

SERVICE = "segmentation"
WINDOW = int(os.environ.get("URBANFABRIC_SEG_WINDOW", "512"))
OVERLAP = int(os.environ.get("URBANFABRIC_SEG_OVERLAP", "128"))
#: Window layout (issue 22, item 6): ``fixed`` (WINDOW px windows) or ``fit`` (one window per
#: tile up to MAX_WINDOW px; docs/results.md, "Segmentation window layout").
LAYOUT = WindowLayout.parse(os.environ.get("URBANFABRIC_SEG_LAYOUT", "fixed"))
MAX_WINDOW = int(os.environ.get("URBANFABRIC_SEG_MAX_WINDOW", str(DEFAULT_MAX_WINDOW)))


class SegmentationServicer(pb_grpc.SegmentationServiceServicer):
    def __init__(self, store: ObjectStore, models: ModelClient) -> None:
        self.store = store
        self.models = models

    @rpc(SERVICE)
    def Segment(self, request: pb.SegmentRequest, context) -> pb.SegmentResponse:
        require(request, "job.job_id", "ard.uri", "options.model.name", "options.model.version")
        tile = tile_from_proto(request.tile)
        options = options_from_proto(request.options, SegmentationOptions, "options")
        for ref in options.members:
            # served() raises Unavailable (retried) while the model server restarts.
            if not self.models.served(*split_model_ref(ref)):
                raise NotFound(f"model_version: {ref} is not served")
        ard = read_raster(self.store.get_bytes(parse_s3_uri(request.ard.uri)[1]))
        landcover_filter = (lambda prob: self._landcover_filtered(prob, ard, request.landcover)) \
            if request.landcover.raster.uri else None
        seg = segment_tile(ard, tile.tile_id, options, self.models.infer, halo_px=request.halo_px,
                           landcover=landcover_filter, window=WINDOW, overlap=OVERLAP,
                           layout=LAYOUT, max_window=MAX_WINDOW)
        layout = JobLayout(request.job.job_id)
        self.store.put_bytes(layout.mask(tile.tile_id), cog_bytes(seg.mask(), resampling="nearest"))
        self.store.put_bytes(layout.tile_footprints(tile.tile_id), geoparquet_bytes(seg.footprints))
        return pb.SegmentResponse(
            mask=common_pb2.ObjectRef(uri=self.store.s3_uri(layout.mask(tile.tile_id)), media_type=COG_MEDIA_TYPE),
            footprints=common_pb2.ObjectRef(uri=self.store.s3_uri(layout.tile_footprints(tile.tile_id)),
                                            media_type=PARQUET_MEDIA_TYPE),
            footprint_count=len(seg.footprints),
        )

    def _landcover_filtered(self, prob: np.ndarray, ard: Raster, spec: common_pb2.LandCoverFilter) -> np.ndarray:
        """``prob`` with building pixels on non-building land cover set to 0 (GBM rules)."""
        classes = landcover.parse_classes(spec.classes or "esa-worldcover")
        rows, cols = prob.shape
        grid = landcover.Grid(ard.transform, cols, rows, str(ard.crs))
        with gdal_env(self.store.settings):
            cover = landcover.read_onto(spec.raster.uri, grid, "landcover.raster")
            urban = (landcover.read_onto(spec.settlement.uri, grid, "landcover.settlement") > 0
                     if spec.settlement.uri else None)
        return polygons.landcover_filter(prob, cover, classes, urban)


def _build() -> list[Registration]:
    settings = Settings.load()
    servicer = SegmentationServicer(ObjectStore(settings), model_client(settings))
    return [Registration(servicer, pb_grpc.add_SegmentationServiceServicer_to_server, "urbanfabric.v1.SegmentationService")]


def main() -> None:
    run_service(SERVICE, __doc__, _build)


if __name__ == "__main__":
    main()
