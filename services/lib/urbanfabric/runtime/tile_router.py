"""Buildings chained per tile (issue 22, item 3): a small router between the tile and the
building stages.

As tile results arrive (:func:`urbanfabric.runtime.jobs.run_windowed` folds them here), a tile
whose mapped neighbours are all done has its seams resolved by the one hook
:func:`urbanfabric.footprints.tile_owned.resolve_tile_seams`, and the buildings it owns are
written to ``footprints/owned/tile=<id>/`` (:meth:`JobLayout.tile_owned`). The building stage
then reads owned tiles one at a time (:func:`urbanfabric.runtime.jobs.cell_batches`): no
global gather, no global merge. The router holds the footprints of the tiles on the frontier
only (done, with a neighbour not yet resolved).
"""

from __future__ import annotations

import logging
from typing import Any

import geopandas as gpd

from urbanfabric.footprints.tile_owned import neighbour_ids, resolve_tile_seams
from urbanfabric.footprints.user_footprints import clip_to_area
from urbanfabric.imagery.tiles import Tile
from urbanfabric.io.geoparquet import geoparquet_bytes, read_geoparquet
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.object_store import parse_s3_uri
from urbanfabric.runtime.jobs import TileTally
from urbanfabric.v1 import tasks_pb2

log = logging.getLogger(__name__)


def _empty() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"building_id": [], "on_border": [], "tile_id": []}, geometry=[], crs="EPSG:4326")


class TileRouter:
    """Folds tile results (into ``tally``) and resolves each tile's owned buildings as soon as
    its neighbourhood is complete.

    Attributes:
        owned: tile id → buildings it owns (written), for every resolved tile.
        peak_frontier: most tiles' footprints held at once.
    """

    def __init__(self, store: Any, job_id: str, tiles: list[Tile], tally: TileTally,
                 bbox: tuple[float, float, float, float] | None = None) -> None:
        self.store, self.layout, self.tally, self.bbox = store, JobLayout(job_id), tally, bbox
        self.order = {t.tile_id: i for i, t in enumerate(tiles)}
        self.done: set[str] = set()
        self.resolved: set[str] = set()
        self.frames: dict[str, gpd.GeoDataFrame] = {}
        self.owned: dict[str, int] = {}
        self.peak_frontier = 0

    def _mapped_neighbours(self, tile_id: str) -> list[str]:
        return [n for n in neighbour_ids(tile_id) if n in self.order]

    def __call__(self, result: tasks_pb2.TileResult) -> None:
        self.tally(result)
        tid = result.tile.tile_id
        if tid not in self.order or tid in self.done:
            return
        self.done.add(tid)
        ok = result.status == tasks_pb2.TASK_STATUS_SUCCEEDED and result.footprints.uri
        self.frames[tid] = read_geoparquet(self.store.get_bytes(parse_s3_uri(result.footprints.uri)[1])) \
            if ok else _empty()
        self.peak_frontier = max(self.peak_frontier, len(self.frames))
        for t in [tid, *self._mapped_neighbours(tid)]:
            if t in self.done and t not in self.resolved and all(n in self.done for n in self._mapped_neighbours(t)):
                self._resolve(t)
        for t in [k for k in self.frames if k in self.resolved
                  and all(n in self.resolved for n in self._mapped_neighbours(k))]:
            del self.frames[t]

    def _resolve(self, tile_id: str) -> None:
        own = self.frames[tile_id]
        neighbours = {n: self.frames[n] for n in self._mapped_neighbours(tile_id)}
        # The one hook: today the local merge + representative point in the core.
        owned = resolve_tile_seams(tile_id, own, neighbours, self.order)
        if self.bbox is not None and len(owned):
            owned = clip_to_area(owned, self.bbox)
        if len(owned):
            self.store.put_bytes(self.layout.tile_owned(tile_id), geoparquet_bytes(owned))
        self.owned[tile_id] = len(owned)
        self.resolved.add(tile_id)

    def read_owned(self, tile_id: str) -> gpd.GeoDataFrame:
        """The buildings a resolved tile owns (empty when it owns none)."""
        if not self.owned.get(tile_id):
            return _empty()
        return read_geoparquet(self.store.get_bytes(self.layout.tile_owned(tile_id)))
