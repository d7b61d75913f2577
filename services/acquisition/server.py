"""Acquisition service: a thin gRPC adapter over :mod:`urbanfabric.acquisition`."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path


from urbanfabric import acquisition
from urbanfabric.config import Settings
from urbanfabric.convert import tile_from_proto
from urbanfabric.errors import InvalidInput
from urbanfabric.grpc_service import Registration, require, rpc, run_service
from urbanfabric.layout import JobLayout
from urbanfabric.rasters import COG_MEDIA_TYPE, cog_bytes
from urbanfabric.stac import read_catalog
from urbanfabric.storage import ObjectStore
from urbanfabric.v1 import acquisition_pb2 as pb
from urbanfabric.v1 import acquisition_pb2_grpc as pb_grpc
from urbanfabric.v1 import common_pb2

SERVICE = "acquisition"


class AcquisitionServicer(pb_grpc.AcquisitionServiceServicer):
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._items: dict[str, list] = {}
        self._lock = threading.Lock()

    def _catalog_items(self, uri: str) -> list:
        # Catalogs are immutable once registered: read each one once per process.
        with self._lock:
            if uri not in self._items:
                self._items[uri] = acquisition.catalog_items(read_catalog(uri, self.store))
            return self._items[uri]

    @rpc(SERVICE)
    def RegisterSource(self, request: pb.RegisterSourceRequest, context) -> pb.RegisterSourceResponse:
        require(request, "source_id", "path")
        if request.format != pb.SOURCE_FORMAT_XYZ_TILES:
            raise InvalidInput("format", "only SOURCE_FORMAT_XYZ_TILES is supported so far")
        path = Path(request.path)
        if not path.is_dir():
            raise InvalidInput("path", f"{path} is not a folder the service can read")
        when = dt.datetime.fromisoformat(request.datetime) if request.datetime else None
        uri, count, bbox = acquisition.register_xyz_source(
            self.store, request.source_id, path, request.zoom or 18, when
        )
        with self._lock:
            self._items.pop(uri, None)
        return pb.RegisterSourceResponse(
            catalog=common_pb2.ObjectRef(uri=uri, media_type="application/json"),
            item_count=count,
            bounds=common_pb2.GeoBounds(
                min_x=bbox[0], min_y=bbox[1], max_x=bbox[2], max_y=bbox[3], crs="EPSG:4326"
            ),
        )

    @rpc(SERVICE)
    def FetchTile(self, request: pb.FetchTileRequest, context) -> pb.FetchTileResponse:
        require(request, "job.job_id", "source.catalog_uri")
        tile = tile_from_proto(request.tile)
        if request.halo_px < 0:
            raise InvalidInput("halo_px", "must be ≥ 0")
        items = self._catalog_items(request.source.catalog_uri)
        assets = tuple(a for a in request.source.asset.split(",") if a) or acquisition.BAND_ASSETS
        raster = acquisition.load_tile(items, tile, request.halo_px, assets)
        valid = float((raster.data != acquisition.RAW_NODATA).any(axis=0).mean())
        key = JobLayout(request.job.job_id).raw(tile.tile_id)
        self.store.put_bytes(key, cog_bytes(raster))
        return pb.FetchTileResponse(
            raw=common_pb2.ObjectRef(uri=self.store.s3_uri(key), media_type=COG_MEDIA_TYPE),
            valid_fraction=valid,
            width=int(raster.data.shape[2]),
            height=int(raster.data.shape[1]),
        )


def main() -> None:
    run_service(SERVICE, __doc__, lambda: [Registration(
        AcquisitionServicer(ObjectStore(Settings.load())), pb_grpc.add_AcquisitionServiceServicer_to_server, "urbanfabric.v1.AcquisitionService")])


if __name__ == "__main__":
    main()
