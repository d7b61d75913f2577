"""The processing grid: which tiles cover an area.

Tiles are cells of a standard TileMatrixSet (``WebMercatorQuad`` by default, via morecantile),
so tile ids are stable across runs and machines, and neighbouring jobs share tile boundaries.
At zoom 16 a cell is ≈611 m wide, i.e. 1024 px at the ≈0.6 m resolution of zoom-18 imagery.
"""

from __future__ import annotations

from dataclasses import dataclass

import morecantile

from urbanfabric.errors import InvalidInput

DEFAULT_TMS = "WebMercatorQuad"
DEFAULT_ZOOM = 16
#: Pixels per tile side at the default imagery resolution (zoom 16 cell at zoom 18 pixels).
DEFAULT_TILE_PX = 1024
#: Overlaps thinner than this (degrees, ≈0.1 m) do not make a cell part of an area.
SLIVER_DEG = 1e-6


@dataclass(frozen=True)
class Tile:
    """One cell of the processing grid, in the TileMatrixSet's CRS."""

    tms: str
    z: int
    x: int
    y: int
    bounds: tuple[float, float, float, float]
    crs: str
    resolution: float

    @property
    def tile_id(self) -> str:
        return f"{self.tms}-{self.z}-{self.x}-{self.y}"


def tiles_for_area(
    bbox_wgs84: tuple[float, float, float, float],
    zoom: int = DEFAULT_ZOOM,
    tile_px: int = DEFAULT_TILE_PX,
    tms_name: str = DEFAULT_TMS,
) -> list[Tile]:
    """All grid cells intersecting a lon/lat bounding box, ordered row by row.

    Raises:
        InvalidInput: the bounding box is empty or outside valid coordinates (field ``area``).
    """
    west, south, east, north = bbox_wgs84
    if not (-180 <= west < east <= 180 and -85.06 <= south < north <= 85.06):
        raise InvalidInput("area", f"not a valid lon/lat bounding box: {bbox_wgs84}")
    tms = morecantile.tms.get(tms_name)
    crs = f"EPSG:{tms.crs.to_epsg()}"
    out = []
    for t in tms.tiles(west, south, east, north, [zoom]):
        g = tms.bounds(t)
        # morecantile includes cells that only touch the box or overlap it by a rounding
        # sliver: skip cells sharing less than ~0.1 m with it.
        if min(g.right, east) - max(g.left, west) < SLIVER_DEG or \
                min(g.top, north) - max(g.bottom, south) < SLIVER_DEG:
            continue
        b = tms.xy_bounds(t)
        res = (b.right - b.left) / tile_px
        out.append(Tile(tms_name, t.z, t.x, t.y, (b.left, b.bottom, b.right, b.top), crs, res))
    return out

