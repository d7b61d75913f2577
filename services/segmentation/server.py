"""Segmentation service: a thin gRPC adapter over :mod:`urbanfabric.footprints.segmentation`.

The network runs in the model server (KServe, Open Inference Protocol V2); this service cuts
the tile into windows, sends them in batches, blends the answers, and vectorizes.
"""

from __future__ import annotations

import os

import numpy as np
from affine import Affine

from urbanfabric.imagery import landcover
from urbanfabric.footprints import segmentation
from urbanfabric.footprints.tta import TTA, with_tta
from urbanfabric.runtime.service_clients import model_client
from urbanfabric.settings import Settings
from urbanfabric.runtime.convert import combine_from_proto, tile_from_proto, tta_from_proto
from urbanfabric.footprints.ensemble import EnsembleCombine
from urbanfabric.footprints.ensemble import combine as combine_members
from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.runtime.grpc_service import Registration, require, rpc, run_service
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.runtime.model_client import ModelClient
from urbanfabric.io.model_repository import model_config
from urbanfabric.io.rasters import COG_MEDIA_TYPE, Raster, cog_bytes, read_raster
from urbanfabric.io.object_store import ObjectStore, gdal_env, parse_s3_uri
from urbanfabric.io.geoparquet import PARQUET_MEDIA_TYPE, geoparquet_bytes
from urbanfabric.v1 import common_pb2
from urbanfabric.v1 import segmentation_pb2 as pb
from urbanfabric.v1 import segmentation_pb2_grpc as pb_grpc

SERVICE = "segmentation"
WINDOW = int(os.environ.get("URBANFABRIC_SEG_WINDOW", "512"))
OVERLAP = int(os.environ.get("URBANFABRIC_SEG_OVERLAP", "128"))


def model_threshold(name: str, version: str, tta: TTA = TTA.NONE) -> float:
    """The probability threshold chosen on validation data (0.5 when the config has none).

    Segmentation configs keep it under ``output.threshold``; a top-level ``threshold`` is
    accepted too. Averaging views smooths the probability, so the best cut under test-time
    augmentation can differ: ``output.threshold_by_tta`` (written by ``footprint_eval
    --threshold-from val --record-threshold``) holds the one chosen on val under each TTA.
    """
    try:
        config = model_config(name, version)
    except NotFound:
        return 0.5
    output = config.get("output") or {}
    by_tta = output.get("threshold_by_tta") or {}
    if tta.value in by_tta:
        return float(by_tta[tta.value])
    return float(config.get("threshold", output.get("threshold", 0.5)))


class SegmentationServicer(pb_grpc.SegmentationServiceServicer):
    def __init__(self, store: ObjectStore, models: ModelClient) -> None:
        self.store = store
        self.models = models

    @rpc(SERVICE)
    def Segment(self, request: pb.SegmentRequest, context) -> pb.SegmentResponse:
        require(request, "job.job_id", "ard.uri", "model.name", "model.version")
        tile = tile_from_proto(request.tile)
        tta = tta_from_proto(request.tta)
        how = combine_from_proto(request.ensemble_combine)
        if not 0 <= request.threshold < 1:
            raise InvalidInput("threshold", "must be in [0, 1)")
        members = [request.model, *request.ensemble]
        for m in members:
            if not m.name or not m.version:
                raise InvalidInput("ensemble", "every member needs a name and a version")
            if not self.models.ready(m.name, m.version):
                raise NotFound(f"model_version: {m.name}:{m.version} is not served")
        ard = read_raster(self.store.get_bytes(parse_s3_uri(request.ard.uri)[1]))
        if ard.data.shape[0] != 3:
            raise InvalidInput("ard", f"expected 3 bands (RGB), got {ard.data.shape[0]}")

        def member_probability(ref: common_pb2.ModelRef) -> np.ndarray:
            def patch_model(batch: np.ndarray) -> np.ndarray:
                return self.models.infer(ref.name, ref.version, batch)

            return segmentation.predict_tiled(ard.data, with_tta(patch_model, tta),
                                              window=WINDOW, overlap=OVERLAP)

        if len(members) == 1:
            prob = member_probability(request.model)
            threshold = request.threshold or model_threshold(request.model.name, request.model.version, tta)
        else:
            # The "probability" of a vote is the share of members voting building; of a mean,
            # the mean probability, cut at the request's threshold or the members' mean one.
            prob, threshold = combine_members(
                [member_probability(m) for m in members],
                [model_threshold(m.name, m.version, tta) for m in members],
                how, request.min_votes,
                request.threshold if how is EnsembleCombine.MEAN and request.threshold else None,
            )
        if request.landcover.raster.uri:
            prob = self._landcover_filtered(prob, ard, request.landcover)
        # Drop the halo: it only gave the model context at the tile border.
        h = request.halo_px
        if h:
            prob = prob[h:-h, h:-h]
        transform = ard.transform @ Affine.translation(h, h)
        footprints = segmentation.polygonize(
            prob, transform, str(ard.crs), threshold=threshold,
            min_area_m2=request.min_area_m2 or segmentation.DEFAULT_MIN_AREA_M2,
            simplify_tolerance_m=request.simplify_tolerance_m or segmentation.DEFAULT_SIMPLIFY_M,
            tile_id=tile.tile_id,
        )
        layout = JobLayout(request.job.job_id)
        valid = np.isfinite(prob)
        bands = np.stack([
            np.where(valid, np.round(np.nan_to_num(prob) * 100), 255),
            np.where(valid, np.nan_to_num(prob) >= threshold, 255),
        ]).astype(np.uint8)
        self.store.put_bytes(layout.mask(tile.tile_id), cog_bytes(Raster(bands, transform, ard.crs, 255), resampling="nearest"))
        self.store.put_bytes(layout.tile_footprints(tile.tile_id), geoparquet_bytes(footprints))
        return pb.SegmentResponse(
            mask=common_pb2.ObjectRef(uri=self.store.s3_uri(layout.mask(tile.tile_id)), media_type=COG_MEDIA_TYPE),
            footprints=common_pb2.ObjectRef(
                uri=self.store.s3_uri(layout.tile_footprints(tile.tile_id)), media_type=PARQUET_MEDIA_TYPE
            ),
            footprint_count=len(footprints),
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
        return segmentation.landcover_filter(prob, cover, classes, urban)


def _build() -> list[Registration]:
    settings = Settings.load()
    servicer = SegmentationServicer(ObjectStore(settings), model_client(settings))
    return [Registration(servicer, pb_grpc.add_SegmentationServiceServicer_to_server, "urbanfabric.v1.SegmentationService")]


def main() -> None:
    run_service(SERVICE, __doc__, _build)


if __name__ == "__main__":
    main()
