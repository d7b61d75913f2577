"""Cloud-Optimized GeoTIFF input and output.

Tiles are small (a few MB), so services read a COG by fetching the object whole and opening it
in memory; that keeps GDAL's S3 configuration out of every stage but acquisition (stackstac).
COGs are written with GDAL's COG driver: 512 px internal tiles, overviews, DEFLATE, nodata set.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile

from urbanfabric.errors import InvalidInput

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def metres_per_unit(crs: Any, lat_deg: float) -> float:
    """Ground metres per CRS unit at latitude ``lat_deg`` (``crs``: rasterio or pyproj).

    Web Mercator stretches distances by 1/cos(latitude); a projected CRS in metres (or feet)
    uses its unit factor. A geographic CRS has no square metric pixels: InvalidInput.
    """
    crs = CRS.from_user_input(crs)
    if crs.is_geographic:
        raise InvalidInput("image.crs", f"{crs.to_string()} is geographic; this needs a projected "
                           "raster (square pixels in metres)")
    try:
        factor = float(crs.linear_units_factor[1])
    except Exception:  # noqa: BLE001 - a CRS without a linear unit: assume metres
        factor = 1.0
    if crs.to_epsg() == 3857 or "Pseudo-Mercator" in crs.to_wkt():
        return factor * math.cos(math.radians(lat_deg))
    return factor


@dataclass
class Raster:
    """A georeferenced ``(bands, rows, cols)`` array."""

    data: np.ndarray
    transform: Affine
    crs: CRS
    nodata: float | None = None

    @property
    def resolution(self) -> float:
        return abs(self.transform.a)

    def ground_resolution_m(self) -> float:
        """Pixel size on the ground (m) at the raster's centre (Web Mercator scaled back)."""
        from rasterio.warp import transform

        left, bottom, right, top = self.bounds
        _, (lat,) = transform(self.crs, "EPSG:4326", [(left + right) / 2], [(bottom + top) / 2])
        return self.resolution * metres_per_unit(self.crs, lat)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        rows, cols = self.data.shape[-2:]
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (cols, rows)
        return (min(left, right), min(top, bottom), max(left, right), max(top, bottom))


def cog_bytes(raster: Raster, blocksize: int = 512, resampling: str = "average") -> bytes:
    """Encode a raster as COG bytes (GDAL COG driver; overviews, DEFLATE, internal tiles)."""
    data = raster.data
    if data.ndim != 3:
        raise InvalidInput("data", f"expected (bands, rows, cols), got {data.shape}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.tif"
        profile = {
            "driver": "COG",
            "width": data.shape[2],
            "height": data.shape[1],
            "count": data.shape[0],
            "dtype": data.dtype.name,
            "crs": raster.crs,
            "transform": raster.transform,
            "nodata": raster.nodata,
            "compress": "DEFLATE",
            # Floating-point predictor for float ARD, horizontal differencing for integers.
            "predictor": 3 if np.issubdtype(data.dtype, np.floating) else 2,
            "blocksize": blocksize,
            "overview_resampling": resampling,
            "BIGTIFF": "IF_SAFER",
        }
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
        return path.read_bytes()


def read_raster(blob: bytes, max_size: int | None = None) -> Raster:
    """Decode GeoTIFF bytes into a :class:`Raster`.

    Args:
        blob: the GeoTIFF (COG) bytes.
        max_size: when given, read at most this many pixels along the longer side (GDAL picks
            the COG overview, so a preview costs a fraction of a full read).

    Raises:
        InvalidInput: the bytes are not a readable GeoTIFF (field ``image``).
    """
    if not blob:
        raise InvalidInput("image", "no bytes: an empty object is not a GeoTIFF")
    try:
        with MemoryFile(blob) as mem, mem.open() as src:
            if max_size is None or max(src.width, src.height) <= max_size:
                return Raster(src.read(), src.transform, src.crs, src.nodata)
            scale = max(src.width, src.height) / max_size
            shape = (src.count, max(1, round(src.height / scale)), max(1, round(src.width / scale)))
            data = src.read(out_shape=shape, resampling=rasterio.enums.Resampling.average)
            transform = src.transform * rasterio.Affine.scale(src.width / shape[2], src.height / shape[1])
            return Raster(data, transform, src.crs, src.nodata)
    except (rasterio.errors.RasterioError, ValueError) as exc:
        raise InvalidInput("image", f"not a readable GeoTIFF ({exc})") from exc
