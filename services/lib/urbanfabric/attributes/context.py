"""A batch's surroundings: what makes its attributes independent of how a job was batched.

Several footprint features describe a building's neighbourhood (neighbours within 50–200 m,
the five nearest centroids, centroids within 400 m: :mod:`urbanfabric.attributes.neighbourhood`)
or its place in the mapped area (distance to the area's centre). Computed over one batch of
footprints only, a building near the batch's edge loses half its neighbours, and "the area" is
the batch — so the same building got another height, year and function when the batch size or
the seam mode changed (measured on 3,000 Boulder buildings: batches of 250 moved heights by
4.6 m on average and changed 94 % of the construction years; ``docs/results.md``, "Attributes
independent of batching").

A batch therefore travels with

* its **context**: the job's other footprints within :data:`CONTEXT_M` of the batch (features
  are computed over batch + context, rows are returned for the batch only), and
* the job's **area frame** (:class:`AreaFrame`): the centre and radius of the job's area, the
  reference of ``dist_to_area_centroid_*`` — the whole mapped area, as in training where the
  area was the whole city.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache

import geopandas as gpd
import morecantile
import numpy as np
import pandas as pd
from shapely.geometry import box

from urbanfabric.errors import InvalidInput

#: Reach of the context (m): the widest neighbourhood feature is the 400 m centroid count
#: (``n_within_400m``); the geometry-distance counts reach 200 m. The five nearest centroids of
#: a building in open country can lie farther: those few keep the nearest found within it.
CONTEXT_M = 410.0
_M_PER_DEG_LAT = 110_574.0


@dataclass(frozen=True)
class AreaFrame:
    """The mapped area's centre (lon, lat, degrees) and radius (m, centre to its farthest
    corner): ``dist_to_area_centroid_m`` is measured from the centre and ``…_rel`` divides by
    the radius (clipped to 1)."""

    center_lon: float
    center_lat: float
    radius_m: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.center_lon) and -180.0 <= self.center_lon <= 180.0):
            raise InvalidInput("area.center_lon", f"must be a longitude, got {self.center_lon}")
        if not (math.isfinite(self.center_lat) and -90.0 <= self.center_lat <= 90.0):
            raise InvalidInput("area.center_lat", f"must be a latitude, got {self.center_lat}")
        if not (math.isfinite(self.radius_m) and self.radius_m > 0):
            raise InvalidInput("area.radius_m", f"must be positive, got {self.radius_m}")

    @classmethod
    def from_bbox(cls, bbox: tuple[float, float, float, float]) -> AreaFrame:
        """The frame of a lon/lat box (west, south, east, north)."""
        w, s, e, n = bbox
        lon, lat = (w + e) / 2.0, (s + n) / 2.0
        half_w = (e - w) / 2.0 * _M_PER_DEG_LAT * math.cos(math.radians(lat))
        half_h = (n - s) / 2.0 * _M_PER_DEG_LAT
        return cls(lon, lat, max(math.hypot(half_w, half_h), 1.0))


def context_bounds(bounds: tuple[float, float, float, float], reach_m: float = CONTEXT_M,
                   ) -> tuple[float, float, float, float]:
    """A lon/lat box grown by ``reach_m`` on every side (a superset of everything within reach)."""
    w, s, e, n = bounds
    dlat = reach_m / _M_PER_DEG_LAT
    coslat = max(math.cos(math.radians(max(abs(s), abs(n)) + dlat)), 1e-6)
    dlon = reach_m / (_M_PER_DEG_LAT * coslat)
    return (w - dlon, max(s - dlat, -90.0), e + dlon, min(n + dlat, 90.0))


def select_context(batch: gpd.GeoDataFrame, candidates: gpd.GeoDataFrame,
                   reach_m: float = CONTEXT_M, exclude: Collection[str] | None = None) -> gpd.GeoDataFrame:
    """The candidates within ``reach_m`` of a batch's box that are not in the batch.

    Args:
        batch: the batch's footprints (EPSG:4326, ``building_id``).
        candidates: footprints around it (EPSG:4326, ``building_id``); any superset will do.
        reach_m: how far around the batch.
        exclude: more ids to leave out (default: the batch's).

    Returns:
        ``building_id`` and ``geometry`` of the context (EPSG:4326), in the candidates' order.
    """
    if batch.empty or candidates.empty:
        return candidates.iloc[0:0][["building_id", "geometry"]]
    w, s, e, n = context_bounds(tuple(batch.total_bounds), reach_m)
    hit = candidates.sindex.query(box(w, s, e, n), predicate="intersects")
    near = candidates.iloc[np.sort(hit)]
    skip = set(map(str, batch["building_id"])) | set(map(str, exclude or ()))
    keep = ~near["building_id"].astype(str).isin(skip).to_numpy()
    return near.loc[keep, ["building_id", "geometry"]].reset_index(drop=True)


class CellContext:
    """Context read from a job's spatial cells (the staged cells of a user's file, or the tiles'
    owned buildings) instead of one table of the whole job: the cells near a batch are read on
    demand and a few are kept, so memory does not grow with the job.

    Args:
        cells: the job's cell keys, ``"z-x-y"`` or ``"<tms>-z-x-y"`` (Web-Mercator tiles, one zoom).
        read: a cell's footprints (EPSG:4326, ``building_id``).
        cache: cells kept in memory (batches come in Z-order, so neighbours repeat).

    Attributes:
        read: ``read`` behind that cache; the batches can be cut from it too, so a cell is read
            once for its batches and its neighbours' context.
    """

    def __init__(self, cells: Iterable[str], read: Callable[[str], gpd.GeoDataFrame], cache: int = 16) -> None:
        self.cells = set(cells)
        self.read = lru_cache(maxsize=cache)(read)
        first = next(iter(self.cells), "")
        parts = first.rsplit("-", 3)
        self.prefix = parts[0] + "-" if len(parts) == 4 else ""
        self.zoom = int(parts[-3]) if first else 0

    def __call__(self, batch: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        """The context of one batch (see :func:`select_context`)."""
        if batch.empty or not self.cells:
            return batch.iloc[0:0][["building_id", "geometry"]]
        # A building lives in the cell of its representative point; its polygon may reach
        # farther, so cells are searched one more reach around.
        w, s, e, n = context_bounds(tuple(batch.total_bounds), 2 * CONTEXT_M)
        tms = morecantile.tms.get("WebMercatorQuad")
        keys = [f"{self.prefix}{t.z}-{t.x}-{t.y}" for t in tms.tiles(w, s, e, n, [self.zoom])]
        frames = [f for f in (self.read(k) for k in keys if k in self.cells) if len(f)]
        if not frames:
            return batch.iloc[0:0][["building_id", "geometry"]]
        near = gpd.GeoDataFrame(pd.concat([f[["building_id", "geometry"]] for f in frames], ignore_index=True),
                                geometry="geometry", crs="EPSG:4326")
        return select_context(batch, near)


__all__ = ["CONTEXT_M", "AreaFrame", "CellContext", "context_bounds", "select_context"]
