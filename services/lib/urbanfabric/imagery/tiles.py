"""The processing grid: which tiles cover an area.

Tiles are cells of a standard TileMatrixSet (``WebMercatorQuad`` by default, via morecantile),
so tile ids are stable across runs and machines, and neighbouring jobs share tile boundaries.
At zoom 16 a cell is ≈611 m wide (in EPSG:3857 units), i.e. 1024 px at the ≈0.6 m resolution of
zoom-18 imagery.

The grid follows the model (issue 20, item 0): the cells (and so tile ids, job layout,
ownership, seams and resume) never change, only the pixels of a cell's raster. Given the
segmentation model's training GSD, :func:`tile_px_for_gsd` picks the pixels per side so that a
pixel on the ground (EPSG:3857 metres × cos(latitude)) is within :data:`GRID_GSD_TOLERANCE` of it:
a zoom-16 cell at 24.5° N is 1024 px for a 0.54 m model and 1856 px for a 0.30 m one.
"""

from __future__ import annotations

from dataclasses import dataclass

import morecantile

from urbanfabric.errors import InvalidInput
from urbanfabric.io.rasters import metres_per_unit

DEFAULT_TMS = "WebMercatorQuad"
DEFAULT_ZOOM = 16
#: Pixels per tile side at the default imagery resolution (zoom 16 cell at zoom 18 pixels).
DEFAULT_TILE_PX = 1024
#: A tile's side in pixels is a multiple of this (the models' ``multiple_of``) where that keeps
#: ground pixels within the tolerance (±16 px: ≤ 1.6 % at ≥ 1024 px, ≤ 5 % at ≥ 320 px).
TILE_PX_STEP = 32
#: Largest relative difference between a tile's ground pixel and the model's GSD.
GRID_GSD_TOLERANCE = 0.05
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

    @property
    def size_px(self) -> int:
        """Pixels per side of the cell's raster (without halo)."""
        return round((self.bounds[2] - self.bounds[0]) / self.resolution)

    @property
    def ground_resolution_m(self) -> float:
        """Ground size of a pixel at the cell's centre, in metres."""
        from rasterio.warp import transform

        _, (lat,) = transform(self.crs, "EPSG:4326", [(self.bounds[0] + self.bounds[2]) / 2],
                              [(self.bounds[1] + self.bounds[3]) / 2])
        return self.resolution * metres_per_unit(self.crs, lat)


def tile_px_for_gsd(cell_width: float, scale: float, gsd_m: float) -> int:
    """Pixels per side of a cell ``cell_width`` CRS units wide (``scale`` ground metres per
    unit) whose ground pixel is nearest to ``gsd_m``: a multiple of :data:`TILE_PX_STEP` when
    that is within :data:`GRID_GSD_TOLERANCE`, else of a smaller power of two (small rasters
    of coarse models, far north).

    Raises:
        InvalidInput: the GSD is not positive, or so coarse that the cell cannot reach it
            within the tolerance (field ``gsd_m``).
    """
    if not gsd_m > 0:
        raise InvalidInput("gsd_m", f"must be positive, got {gsd_m}")
    ground = cell_width * scale
    step = TILE_PX_STEP
    while True:
        px = max(step, round(ground / gsd_m / step) * step)
        if abs(ground / px / gsd_m - 1) <= GRID_GSD_TOLERANCE:
            return px
        if step == 1:
            raise InvalidInput("gsd_m", f"a {ground:.0f} m cell cannot be cut into {gsd_m} m pixels within "
                                        f"{GRID_GSD_TOLERANCE:.0%} ({px} px give {ground / px:.3f} m); "
                                        "use a lower zoom")
        step //= 2


def grid_gsd(source_gsd_m: float | None, model_gsd_m: float,
             model_range_m: tuple[float, float] | None = None) -> float:
    """The ground pixel a job's tiles are cut at, for a model trained at ``model_range_m``
    (the finest and coarsest GSD of its training sets) that prefers ``model_gsd_m``.

    Imagery inside the range is read at its own GSD (the model saw pixels that size, and no
    resampling is best); finer imagery is averaged down to the range's fine end, coarser
    imagery upsampled to its coarse end. Without a range (one training GSD) or without a
    known source GSD: ``model_gsd_m``. Upsampling only where the source is coarser than every
    training set: on Xiamen val (0.54 m), ``footprint-unet:v5`` scores 0.32 read at 0.54 m and
    0.13 upsampled to 0.30 m (docs/results.md, "Imagery at the model's GSD").
    """
    if not source_gsd_m or not model_range_m:
        return model_gsd_m
    lo, hi = model_range_m
    return min(max(source_gsd_m, lo), hi)


def tiles_for_area(
    bbox_wgs84: tuple[float, float, float, float],
    zoom: int = DEFAULT_ZOOM,
    tile_px: int = DEFAULT_TILE_PX,
    tms_name: str = DEFAULT_TMS,
    gsd_m: float | None = None,
) -> list[Tile]:
    """All grid cells intersecting a lon/lat bounding box, ordered row by row.

    Each cell's raster is ``tile_px`` pixels per side, or, with ``gsd_m`` (the segmentation
    model's training GSD), :func:`tile_px_for_gsd` of the cell's own latitude: a job spanning
    latitudes keeps every tile within :data:`GRID_GSD_TOLERANCE` of the model.

    Raises:
        InvalidInput: the bounding box is empty or outside valid coordinates (field ``area``);
            ``gsd_m`` cannot be reached (field ``gsd_m``).
    """
    west, south, east, north = bbox_wgs84
    if not (-180 <= west < east <= 180 and -85.06 <= south < north <= 85.06):
        raise InvalidInput("area", f"not a valid lon/lat bounding box: {bbox_wgs84}")
    tms = morecantile.tms.get(tms_name)
    crs = f"EPSG:{tms.crs.to_epsg()}"
    out = []
    px_by_row: dict[int, int] = {}
    for t in tms.tiles(west, south, east, north, [zoom]):
        g = tms.bounds(t)
        # morecantile includes cells that only touch the box or overlap it by a rounding
        # sliver: skip cells sharing less than ~0.1 m with it.
        if min(g.right, east) - max(g.left, west) < SLIVER_DEG or \
                min(g.top, north) - max(g.bottom, south) < SLIVER_DEG:
            continue
        b = tms.xy_bounds(t)
        if gsd_m and t.y not in px_by_row:  # one latitude per row of cells: computed once
            px_by_row[t.y] = tile_px_for_gsd(b.right - b.left, metres_per_unit(crs, (g.bottom + g.top) / 2), gsd_m)
        res = (b.right - b.left) / (px_by_row[t.y] if gsd_m else tile_px)
        out.append(Tile(tms_name, t.z, t.x, t.y, (b.left, b.bottom, b.right, b.top), crs, res))
    return out

