"""Acquisition service: a thin gRPC adapter over :mod:`urbanfabric.imagery.acquisition`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from pathlib import Path

from urbanfabric.imagery import acquisition, scenes
from urbanfabric.io import stac
from urbanfabric.settings import Settings
from urbanfabric.runtime.convert import tile_from_proto
from urbanfabric.errors import InvalidInput
from urbanfabric.runtime.grpc_service import Registration, require, rpc, run_service
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.rasters import COG_MEDIA_TYPE, cog_bytes
from urbanfabric.io.source_policy import SourcePolicy
from urbanfabric.io.stac import read_catalog
from urbanfabric.io.object_store import ObjectStore
from urbanfabric.v1 import acquisition_pb2 as pb
from urbanfabric.v1 import acquisition_pb2_grpc as pb_grpc
from urbanfabric.v1 import calibration_pb2, common_pb2

SERVICE = "acquisition"


class AcquisitionServicer(pb_grpc.AcquisitionServiceServicer):
    def __init__(self, store: ObjectStore, policy: SourcePolicy | None = None) -> None:
        self.store = store
        self.policy = policy or SourcePolicy.from_env()
        self._items: dict[str, list] = {}
        self._lock = threading.Lock()

    def _catalog_items(self, uri: str) -> list:
        # Catalogs are immutable once registered: read each one once per process.
        with self._lock:
            if uri not in self._items:
                self._items[uri] = acquisition.catalog_items(read_catalog(uri, self.store))
            return self._items[uri]

    def _items_near(self, uri: str, cogs: list[str], collections: list[str],
                    bbox: tuple[float, float, float, float], field: str = "source.catalog_uri") -> list:
        """Scenes of a source near a lon/lat box (STAC API searched per request, static
        catalogs and COG lists read once per process), each href allowed by the policy."""
        self.policy.check(uri, field)
        for i, cog in enumerate(cogs):
            self.policy.check(cog, f"source.cog_uris[{i}]")
        return self.policy.check_items(self._read_items(uri, cogs, collections, bbox), field)

    def _read_items(self, uri: str, cogs: list[str], collections: list[str],
                    bbox: tuple[float, float, float, float]) -> list:
        if cogs:
            key = "cogs:" + ",".join(cogs)
            with self._lock:
                if key not in self._items:
                    self._items[key] = stac.items_from_cogs(cogs)
                return self._items[key]
        if stac.source_kind(uri) == "api":
            return stac.search_items(uri, bbox=bbox, collections=collections)
        return self._catalog_items(uri)

    def _fetch_options(self, source: common_pb2.ImagerySource, bbox: tuple[float, float, float, float]) -> dict:
        """Core keyword arguments from an ImagerySource (band mapping, scene filter, basemap)."""
        fallback = 1 if source.fallback_years == 0 else max(source.fallback_years, 0)
        options = {
            "bands": dict(source.bands) or None,
            "scene_filter": scenes.SceneFilter(year=source.year or None, fallback_years=fallback,
                                               max_cloud=source.max_cloud_cover or scenes.DEFAULT_MAX_CLOUD),
            "resampling": source.resampling or acquisition.AUTO_RESAMPLING,
        }
        if source.basemap_uri:
            options["basemap"] = self._items_near(source.basemap_uri, [], [], bbox, "source.basemap_uri")
        return options

    @staticmethod
    def _assets(source: common_pb2.ImagerySource) -> tuple[str, ...]:
        return tuple(a for a in source.asset.split(",") if a) or acquisition.BAND_ASSETS

    def _source_items(self, source: common_pb2.ImagerySource, tile, halo_px: int) -> list:
        if not (source.catalog_uri or source.cog_uris):
            raise InvalidInput("source.catalog_uri", "give a catalog / STAC API URI or cog_uris")
        self.policy.check(source.basemap_uri, "source.basemap_uri")  # before anything is read
        bbox = acquisition.area_wgs84(tile, halo_px)
        return self._items_near(source.catalog_uri, list(source.cog_uris), list(source.collections), bbox)

    @rpc(SERVICE)
    def RegisterSource(self, request: pb.RegisterSourceRequest, context) -> pb.RegisterSourceResponse:
        require(request, "source_id", "path")
        if request.format != pb.SOURCE_FORMAT_XYZ_TILES:
            raise InvalidInput("format", "only SOURCE_FORMAT_XYZ_TILES is supported so far")
        path = self.policy.check_local(request.path, "path")
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
        require(request, "job.job_id")
        tile = tile_from_proto(request.tile)
        if request.halo_px < 0:
            raise InvalidInput("halo_px", "must be ≥ 0")
        source = request.source
        items = self._source_items(source, tile, request.halo_px)
        fetched = acquisition.fetch_tile(
            items, tile, request.halo_px, self._assets(source),
            model_gsd=source.expected_gsd_m or None,
            **self._fetch_options(source, acquisition.area_wgs84(tile, request.halo_px)))
        raster = fetched.raster
        key = JobLayout(request.job.job_id).raw(tile.tile_id)
        self.store.put_bytes(key, cog_bytes(raster))
        return pb.FetchTileResponse(
            raw=common_pb2.ObjectRef(uri=self.store.s3_uri(key), media_type=COG_MEDIA_TYPE),
            valid_fraction=fetched.valid_fraction,
            width=int(raster.data.shape[2]),
            height=int(raster.data.shape[1]),
            scene_ids=fetched.scenes,
            fallback=fetched.fallback,
            warnings=fetched.warnings,
        )

    @rpc(SERVICE)
    def AreaStatistics(self, request: pb.AreaStatisticsRequest, context) -> pb.AreaStatisticsResponse:
        require(request, "job.job_id")
        if not request.tiles:
            raise InvalidInput("tiles", "at least one tile is required")
        if request.sample_resolution < 0:
            raise InvalidInput("sample_resolution", "must be ≥ 0")
        tiles = [tile_from_proto(t) for t in request.tiles]
        source = request.source
        west = min(t.bounds[0] for t in tiles), min(t.bounds[1] for t in tiles)
        east = max(t.bounds[2] for t in tiles), max(t.bounds[3] for t in tiles)
        box = dataclasses.replace(tiles[0], bounds=(*west, *east))
        items = self._source_items(source, box, 0)
        factor = request.sample_resolution / tiles[0].resolution if request.sample_resolution else 8.0
        stats, used, skipped = acquisition.area_statistics(
            items, tiles, max(factor, 1.0), assets=self._assets(source),
            **self._fetch_options(source, acquisition.area_wgs84(box, 0)))
        key = f"{JobLayout(request.job.job_id).root}/calibration/area_stats.json"
        self.store.put_bytes(key, stats.to_json().encode())
        return pb.AreaStatisticsResponse(
            stats=common_pb2.ObjectRef(uri=self.store.s3_uri(key), media_type="application/json"),
            bands=[calibration_pb2.BandQuartiles(band=i + 1, q1=q1, q3=q3)
                   for i, (q1, q3) in enumerate(zip(stats.q1, stats.q3))],
            tiles_used=used,
            skipped=skipped,
        )


def main() -> None:
    run_service(SERVICE, __doc__, lambda: [Registration(
        AcquisitionServicer(ObjectStore(Settings.load())), pb_grpc.add_AcquisitionServiceServicer_to_server, "urbanfabric.v1.AcquisitionService")])


if __name__ == "__main__":
    main()
