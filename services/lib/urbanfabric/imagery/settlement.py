"""Settlement mask: process only the grid cells where people have built.

The Global Building Map processed only 0.2° cells that hold settlement according to the
Global Urban Footprint, and a whole cell as soon as a single GUF pixel in it is built-up
(``global-building-map.txt``, "Data"). :class:`SettlementMask` does the same for grid
tiles, from a vector layer (any polygons) or a raster (non-zero, non-nodata = settled).
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.errors
from pyproj import Transformer
from rasterio.windows import Window, from_bounds
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from urbanfabric.errors import InvalidInput
from urbanfabric.imagery.tiles import Tile


class SettlementMask:
    """Where settlements are: a vector layer or a raster, tested per grid cell."""

    def __init__(self, *, shapes: gpd.GeoSeries | None = None, raster_path: str | None = None) -> None:
        if (shapes is None) == (raster_path is None):
            raise InvalidInput("settlement_mask", "give either polygons or a raster")
        self.shapes = shapes
        self.raster_path = raster_path
        if shapes is not None:
            shapes.sindex  # build the spatial index once, up front

    @classmethod
    def from_path(cls, path: str) -> SettlementMask:
        """A GeoTIFF/COG (``.tif``, ``.tiff``, ``.vrt``) is a raster mask; anything GDAL/OGR
        reads as vector (GeoJSON, GeoPackage, GeoParquet, Shapefile) is a vector mask.

        Raises:
            InvalidInput: the file cannot be read or has no CRS (field ``settlement_mask``).
        """
        suffix = Path(path.split("?")[0]).suffix.lower()
        if suffix in (".tif", ".tiff", ".vrt"):
            try:
                with rasterio.open(path) as ds:
                    if ds.crs is None:
                        raise InvalidInput("settlement_mask", f"{path} has no coordinate reference system")
            except rasterio.errors.RasterioIOError as exc:
                raise InvalidInput("settlement_mask", f"cannot read raster {path}: {exc}") from exc
            return cls(raster_path=path)
        try:
            frame = gpd.read_parquet(path) if suffix in (".parquet", ".geoparquet") else gpd.read_file(path)
        except Exception as exc:
            raise InvalidInput("settlement_mask", f"cannot read {path}: {exc}") from exc
        if frame.crs is None:
            raise InvalidInput("settlement_mask", f"{path} has no coordinate reference system")
        return cls(shapes=frame.geometry)

    @classmethod
    def from_geometries(cls, geoms: list[BaseGeometry], crs: str = "EPSG:4326") -> SettlementMask:
        return cls(shapes=gpd.GeoSeries(geoms, crs=crs))

    def intersects(self, tile: Tile) -> bool:
        """True when any settlement lies in the cell (one settled raster pixel is enough)."""
        if self.shapes is not None:
            cell = gpd.GeoSeries([box(*tile.bounds)], crs=tile.crs).to_crs(self.shapes.crs).iloc[0]
            hits = self.shapes.sindex.query(cell, predicate="intersects")
            return len(hits) > 0
        with rasterio.open(self.raster_path) as ds:
            left, bottom, right, top = Transformer.from_crs(tile.crs, ds.crs, always_xy=True) \
                .transform_bounds(*tile.bounds)
            window = from_bounds(left, bottom, right, top, ds.transform).round_offsets().round_lengths()
            window = window.intersection(Window(0, 0, ds.width, ds.height)) \
                if _overlaps(window, ds.width, ds.height) else None
            if window is None or window.width < 1 or window.height < 1:
                return False
            data = ds.read(1, window=window, masked=True)
            return bool(np.ma.any(data != 0))


def _overlaps(window: Window, width: int, height: int) -> bool:
    return (window.col_off < width and window.row_off < height
            and window.col_off + window.width > 0 and window.row_off + window.height > 0)


def filter_settled(tiles: list[Tile], mask: SettlementMask | None) -> tuple[list[Tile], int]:
    """Keep the tiles that intersect the settlement mask; returns ``(kept, skipped_count)``."""
    if mask is None:
        return tiles, 0
    kept = [t for t in tiles if mask.intersects(t)]
    return kept, len(tiles) - len(kept)
