"""Buildings chained per tile (issue 22, item 3): a small router between the tile and the
building stages.

As tile results arrive (:func:`urbanfabric.runtime.jobs.run_windowed` folds them here), a tile
whose mapped neighbours are all done has its seams resolved by
:func:`urbanfabric.footprints.ownership.resolve_tile_seams`, and the buildings it owns are
written to ``footprints/owned/tile=<id>/`` (:meth:`JobLayout.tile_owned`). The building stage
then reads owned tiles one at a time (:func:`urbanfabric.runtime.jobs.cell_batches`): no
global gather, no global merge. The router holds the footprints of the tiles on the frontier
only (done, with a neighbour not yet resolved); a building larger than the 3 × 3 block reads
the border pieces of farther tiles from the store, and waits (the tile stays pending) while one
of them is still being mapped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import pandas as pd

from urbanfabric.footprints.ownership import border_pieces, neighbour_tile_ids, resolve_tile_seams
from urbanfabric.footprints.user_footprints import clip_to_area
from urbanfabric.imagery.tiles import Tile
from urbanfabric.io.geoparquet import geoparquet_bytes, read_geoparquet
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.object_store import parse_s3_uri
from urbanfabric.runtime.jobs import TileTally
from urbanfabric.v1 import tasks_pb2

log = logging.getLogger(__name__)


class _NotYetMapped(Exception):
    """A building reaches a job tile that has not reported yet: resolve the tile later."""


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
        self.pending: set[str] = set()
        self.deferrals = 0  # tiles put off for a building larger than the halo
        self.peak_frontier = 0

    def _mapped_neighbours(self, tile_id: str) -> list[str]:
        return [n for n in neighbour_tile_ids(tile_id) if n in self.order]

    def _ready(self, tile_id: str) -> bool:
        return tile_id in self.done and tile_id not in self.resolved and \
            all(n in self.done for n in self._mapped_neighbours(tile_id))

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
        for t in dict.fromkeys([tid, *self._mapped_neighbours(tid), *sorted(self.pending)]):
            if self._ready(t):
                self._resolve(t)
        for t in [k for k in self.frames if k in self.resolved
                  and all(n in self.resolved for n in self._mapped_neighbours(k))]:
            del self.frames[t]

    def _footprints(self, tile_id: str) -> gpd.GeoDataFrame:
        """A done tile's footprints: held on the frontier, else read back from the store."""
        if tile_id in self.frames:
            return self.frames[tile_id]
        key = self.layout.tile_footprints(tile_id)
        return read_geoparquet(self.store.get_bytes(key)) if self.store.exists(key) else _empty()

    def _border(self, tile_ids: Sequence[str]) -> gpd.GeoDataFrame:
        frames = []
        for t in tile_ids:
            if t not in self.order:
                continue  # not mapped by this job: no pieces there
            if t not in self.done:
                raise _NotYetMapped(t)
            got = self._footprints(t)
            if len(got):
                frames.append(border_pieces(got))
        frames = [f for f in frames if len(f)]
        if not frames:
            return _empty()
        return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:4326")

    def _resolve(self, tile_id: str) -> None:
        own = self.frames[tile_id]
        try:
            owned = resolve_tile_seams(tile_id, own, self._border(self._mapped_neighbours(tile_id)),
                                       fetch_border=self._border)
        except _NotYetMapped:
            self.pending.add(tile_id)  # a building larger than the halo: wait for its far tiles
            self.deferrals += 1
            return
        self.pending.discard(tile_id)
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
