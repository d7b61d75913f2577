"""Chip readers for :mod:`urbanfabric.attributes.image_evidence`: windows of a georeferenced
RGB raster (an ARD tile from the object store, or a mosaic of slippy-map tiles) around each
footprint, padded with NaN where the raster ends, so buildings on a tile edge keep the part of
their surroundings that exists (``img_coverage`` records how much).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import affine
import geopandas as gpd
import numpy as np
from pyproj import CRS, Transformer

from urbanfabric.attributes.image_evidence import ImageChip, shadow_asymmetry
from urbanfabric.errors import InvalidInput
from urbanfabric.io.rasters import Raster, metres_per_unit

class RasterChipReader:
    """Chips from one in-memory RGB raster.

    Args:
        data: ``(bands, rows, cols)`` array (any dtype); ``nodata`` values and NaN become NaN.
        transform: pixel → map affine (north-up).
        crs: the raster's CRS.
        nodata: the nodata value, if any.
        valid: optional ``(rows, cols)`` bool mask of pixels holding imagery (e.g. a mosaic
            with missing tiles).
    """

    def __init__(self, data: np.ndarray, transform: affine.Affine, crs: Any,
                 nodata: float | None = None, valid: np.ndarray | None = None) -> None:
        if data.ndim != 3:
            raise InvalidInput("image", f"expected (bands, rows, cols), got shape {data.shape}")
        self.data = data
        self.transform = transform
        self.crs = CRS.from_user_input(crs)
        self.nodata = nodata
        self.valid = valid

    def chips(self, footprints: gpd.GeoSeries, margin_m: float) -> list[ImageChip | None]:
        """One NaN-padded window per footprint; ``None`` where the window misses the raster."""
        if footprints.crs is None:
            raise InvalidInput("footprints", "has no CRS")
        geoms = footprints.to_crs(self.crs)
        to_ll = Transformer.from_crs(self.crs, 4326, always_xy=True)
        t = self.transform
        rows, cols = self.data.shape[1:]
        out: list[ImageChip | None] = []
        for g in geoms.values:
            if g is None or g.is_empty:
                out.append(None)
                continue
            minx, miny, maxx, maxy = g.bounds
            _, lat = to_ll.transform((minx + maxx) / 2, (miny + maxy) / 2)
            mpu = metres_per_unit(self.crs, lat)
            m = margin_m / mpu
            c0 = int(math.floor((minx - m - t.c) / t.a))
            c1 = int(math.ceil((maxx + m - t.c) / t.a))
            r0 = int(math.floor((maxy + m - t.f) / t.e))
            r1 = int(math.ceil((miny - m - t.f) / t.e))
            if c1 <= 0 or r1 <= 0 or c0 >= cols or r0 >= rows:
                out.append(None)
                continue
            chip = np.full((self.data.shape[0], r1 - r0, c1 - c0), np.nan, dtype=np.float32)
            rr0, rr1, cc0, cc1 = max(r0, 0), min(r1, rows), max(c0, 0), min(c1, cols)
            win = self.data[:, rr0:rr1, cc0:cc1].astype(np.float32)
            if self.nodata is not None:
                win[win == self.nodata] = np.nan
            if self.valid is not None:
                win[:, ~self.valid[rr0:rr1, cc0:cc1]] = np.nan
            chip[:, rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = win
            out.append(ImageChip(chip, t @ affine.Affine.translation(c0, r0), g, mpu))
        return out


class MultiRasterChipReader:
    """Chips from several rasters (a job's ARD tiles).

    The first raster with valid imagery under a footprint's window gives the chip; where the
    window runs off that raster, pixels of the other rasters on the same pixel grid (same CRS
    and resolution, e.g. neighbouring Web-Mercator tiles) fill it, so shadows crossing a tile
    edge are kept.
    """

    def __init__(self, readers: Sequence[RasterChipReader]) -> None:
        self.readers = list(readers)

    def chips(self, footprints: gpd.GeoSeries, margin_m: float) -> list[ImageChip | None]:
        """Chips per footprint, composited over the rasters sharing the first one's grid."""
        out: list[ImageChip | None] = [None] * len(footprints)
        for reader in self.readers:
            for i, c in enumerate(reader.chips(footprints, margin_m)):
                if c is None or not np.isfinite(c.data).all(axis=0).any():
                    continue
                first = out[i]
                if first is None:
                    out[i] = c
                elif (first.data.shape == c.data.shape
                      and first.transform.almost_equals(c.transform)):
                    hole = ~np.isfinite(first.data)
                    first.data[hole] = c.data[hole]
        return out

    def scene_shadow_azimuth(self, step_deg: float = 5.0) -> float:
        """Shadow direction of all rasters together (:func:`shadow_asymmetry`), NaN if none."""
        total = np.zeros(int(round(360.0 / step_deg)))
        n = 0
        for r in self.readers:
            to_ll = Transformer.from_crs(r.crs, 4326, always_xy=True)
            rows, cols = r.data.shape[1:]
            _, lat = to_ll.transform(*(r.transform * (cols / 2, rows / 2)))
            data = r.data.astype(np.float32)
            if r.nodata is not None:
                data[data == r.nodata] = np.nan
            curve = shadow_asymmetry(data, r.transform.a * metres_per_unit(r.crs, lat),
                                     step_deg=step_deg)
            if np.isfinite(curve).all():
                total += curve
                n += 1
        return float(np.argmax(total) * step_deg) if n else math.nan


def ard_chip_reader(rasters: Sequence[tuple[str, Raster]]
                    ) -> tuple[MultiRasterChipReader | None, list[tuple[str, str]]]:
    """A chip reader over a job's ARD tiles for image evidence, and ``(name, why)`` for each
    raster it cannot use: image evidence needs square metric pixels and RGB, so a geographic or
    other-band raster is named, not guessed at. None when no raster is usable."""
    readers, unusable = [], []
    for name, r in rasters:
        if r.crs is None or r.crs.is_geographic or r.data.shape[0] != 3:
            unusable.append((name, f"CRS {r.crs}, {r.data.shape[0]} bands: needs a projected RGB raster"))
            continue
        readers.append(RasterChipReader(r.data, r.transform, r.crs, r.nodata))
    return (MultiRasterChipReader(readers) if readers else None), unusable
