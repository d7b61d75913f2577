"""Land-cover post-filter inputs: class schemes and a land-cover raster read onto a tile grid.

GBM ("Post-Processing") removed building pixels that a 10 m land-cover map puts on classes
that cannot hold buildings, with rules that depend on whether the pixel lies in a settlement
(WSF): inside settlements only vegetation vetoes, outside everything but impervious does.
The rules themselves are :func:`urbanfabric.footprints.polygons.landcover_filter`; this module gives
it its inputs:

* :data:`SCHEMES` maps the codes of common land-cover products to the rule vocabulary
  (``cropland``, ``forest``, ``grass``, ``shrub``, ``water``, ``bare``, ``snow``,
  ``impervious``, ``wetland``, ``tundra``); :func:`parse_classes` also takes an explicit
  ``code=name,…`` list for any other product.
* :func:`read_onto` reads a land-cover (or settlement) raster — a local path, URL or
  ``s3://`` object — resampled with nearest neighbour onto a tile's grid, so a 10 m map lines
  up with 0.3 m imagery pixel by pixel.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from urbanfabric.errors import InvalidInput

#: Code → rule class name of two global 10 m land-cover products.
SCHEMES: dict[str, dict[int, str]] = {
    # ESA WorldCover 10 m (2020/2021) legend.
    "esa-worldcover": {10: "forest", 20: "shrub", 30: "grass", 40: "cropland", 50: "impervious", 60: "bare",
                       70: "snow", 80: "water", 90: "wetland", 95: "forest", 100: "tundra"},
    # FROM-GLC10 (Gong et al. 2019), the product GBM filtered with.
    "from-glc10": {10: "cropland", 20: "forest", 30: "grass", 40: "shrub", 50: "wetland", 60: "water",
                   70: "tundra", 80: "impervious", 90: "bare", 100: "snow"},
}


def parse_classes(text: str) -> dict[int, str]:
    """A scheme name from :data:`SCHEMES`, or ``"code=name,code=name,…"``.

    Raises:
        InvalidInput: unknown scheme or a malformed pair (field ``landcover.classes``).
    """
    text = text.strip()
    if text in SCHEMES:
        return dict(SCHEMES[text])
    out: dict[int, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        code, sep, name = pair.partition("=")
        if not sep or not name.strip():
            raise InvalidInput("landcover.classes", f"{pair!r} is not code=name (or use one of {sorted(SCHEMES)})")
        try:
            out[int(code)] = name.strip()
        except ValueError:
            raise InvalidInput("landcover.classes", f"code {code!r} is not an integer") from None
    if not out:
        raise InvalidInput("landcover.classes", f"empty; give a scheme ({sorted(SCHEMES)}) or code=name pairs")
    return out


@dataclass(frozen=True)
class Grid:
    """The pixel grid a raster is read onto (a tile's ARD grid, halo included)."""

    transform: Affine
    width: int
    height: int
    crs: str


@contextmanager
def _opened(path: str, field: str) -> Iterator[rasterio.DatasetReader]:
    """``path`` opened once, with a CRS, or :class:`InvalidInput` naming ``field``."""
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InvalidInput(field, f"{path} has no coordinate reference system")
            yield src
    except rasterio.errors.RasterioIOError as exc:
        raise InvalidInput(field, f"cannot read {path}: {exc}") from exc


def check(path: str, field: str = "landcover.raster") -> None:
    """Fail early on a raster that cannot be opened or has no CRS (before tiles are sent).

    Raises:
        InvalidInput: as :func:`read_onto`.
    """
    with _opened(path, field):
        pass


def read_onto(path: str, grid: Grid, field: str = "landcover.raster") -> np.ndarray:
    """Band 1 of ``path`` on ``grid``, nearest neighbour; pixels it does not cover are -1.

    Open ``s3://`` paths inside :func:`urbanfabric.io.object_store.gdal_env`.

    Raises:
        InvalidInput: unreadable raster or one without a CRS (``field`` names the input).
    """
    with _opened(path, field) as src:
        # Outside the source the VRT writes its nodata; a source without nodata gets 255,
        # which no scheme here uses as a class.
        nodata = src.nodata if src.nodata is not None else 255
        with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                       resampling=Resampling.nearest, nodata=nodata) as vrt:
            data = vrt.read(1, masked=True)
    return np.ma.filled(data.astype(np.int32), -1)
