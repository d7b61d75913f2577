"""Scoring through the pipeline's grid (issue 20, item 0): a scene is read the way a job reads it.

Each labelled scene is put on the ground where its data set lies (:data:`PLACES`), written as
per-band COGs with a STAC item (:func:`urbanfabric.imagery.acquisition.stac_item`), and read
onto the zoom-16 Web-Mercator tile grid by the pipeline's own
:func:`urbanfabric.imagery.acquisition.load_tile` (stackstac, the job's resampling). The model
predicts on that raster; the probability is brought back onto the scene's own pixels
(bilinear) and scored there against the published labels, so every grid is scored on the same
pixels as the native one.

Grids (``--grid``):

* ``native``: no grid, the scene as published (the training and validation setting);
* ``z16-1024``: the pipeline before item 0: 1024 px per zoom-16 cell (≈ 0.6 m × cos(latitude)),
  ``nearest``;
* ``model``: the pipeline now: the cell's pixels from the scene's GSD and the model's
  ``input.gsd_m`` / ``gsd_range_m`` (:func:`urbanfabric.imagery.tiles.grid_gsd`,
  :func:`~urbanfabric.imagery.tiles.tile_px_for_gsd`), ``auto`` resampling;
* a number, e.g. ``0.4``: the pipeline's grid at that GSD with ``auto`` (to choose a model's
  GSD on val); ``0.4:nearest`` names another resampling.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datetime as dt

import morecantile
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, reproject

from models.footprint_unet import datasets as D
from urbanfabric.imagery import acquisition
from urbanfabric.imagery.tiles import DEFAULT_TILE_PX, Tile, grid_gsd, tile_px_for_gsd
from urbanfabric.io.rasters import Raster, cog_bytes, metres_per_unit

NATIVE = "native"
BEFORE = "z16-1024"
MODEL = "model"
ZOOM = 16
WEB_MERCATOR = "EPSG:3857"
_R = 6378137.0


@dataclass(frozen=True)
class Place:
    """Where a data set's scenes are put: ground GSD (m) and latitude (°); ``None`` GSD = the
    scene carries its own georeference (see :func:`scene_raster`)."""

    gsd_m: float | None
    lat: float
    note: str


#: crowdAI's sample chips carry no coordinates; they are put at Xiamen's latitude (the demo's),
#: where the old grid's pixel is 0.54 m. Dubai's GSD is unpublished, so it has no place.
PLACES = {
    "xiamen": Place(None, 24.48, "the tiles' own zoom-18 bounds (0.543 m)"),
    "crowdai": Place(0.30, 24.48, "0.30 m (data README), no coordinates: put at 24.48° N"),
    "spacenet": Place(None, 33.75, "the GeoTIFF's own UTM 16N grid (0.5 m), reprojected by the read"),
}


def scene_raster(scene: D.Scene, root: Path) -> Raster:
    """The scene's image with a georeference (its own, or from :data:`PLACES`)."""
    if scene.dataset not in PLACES:
        raise SystemExit(f"--grid: {scene.dataset} has no known GSD or place; score it with --grid native")
    if scene.dataset == "xiamen":
        z, x, y = (int(v) for v in scene.name.split("/"))
        b = morecantile.tms.get("WebMercatorQuad").xy_bounds(morecantile.Tile(x, y, z))
        res = (b.right - b.left) / scene.image.shape[2]
        return Raster(scene.image, Affine(res, 0, b.left, 0, -res, b.top), CRS.from_string(WEB_MERCATOR), 0)
    if scene.dataset == "spacenet":
        with rasterio.open(root / "spacenet-atlanta" / "sample_geotiff.tif") as src:
            transform, crs = src.transform, src.crs
        c0 = int(scene.name.rsplit("cols", 1)[1].split("-")[0])
        return Raster(scene.image, transform * Affine.translation(c0, 0), crs, 0)
    place = PLACES[scene.dataset]
    res = place.gsd_m / math.cos(math.radians(place.lat))
    # Off the grid's pixel edges on purpose (13.37 m, 7.71 m from a cell corner): real scenes are.
    y0 = _R * math.log(math.tan(math.pi / 4 + math.radians(place.lat) / 2))
    return Raster(scene.image, Affine(res, 0, 13.37, 0, -res, y0 + 7.71), CRS.from_string(WEB_MERCATOR), 0)


def grid_tile(raster: Raster, grid: str, model_gsd: float | None,
              model_range: tuple[float, float] | None = None) -> tuple[Tile, str]:
    """The zoom-16 cell under the scene, its pixels as ``grid`` wants (``model``: the job's
    :func:`~urbanfabric.imagery.tiles.grid_gsd` of the scene's GSD and the model's), its bounds
    grown to the grid's pixel edges around the scene; and the resampling the job would use."""
    tms = morecantile.tms.get("WebMercatorQuad")
    left, bottom, right, top = rasterio.warp.transform_bounds(raster.crs, WEB_MERCATOR, *raster.bounds)
    lon, lat = rasterio.warp.transform(WEB_MERCATOR, "EPSG:4326", [(left + right) / 2], [(bottom + top) / 2])
    cell = tms.tile(lon[0], lat[0], ZOOM)
    b = tms.xy_bounds(cell)
    width = b.right - b.left
    if grid == BEFORE:
        px, resampling = DEFAULT_TILE_PX, "nearest"
    else:
        value, _, resampling = grid.partition(":")
        if value == MODEL:
            if not model_gsd:
                raise SystemExit("--grid model: the model's config has no input.gsd_m")
            gsd = grid_gsd(raster.ground_resolution_m(), model_gsd, model_range)
        else:
            gsd = float(value)
        px = tile_px_for_gsd(width, metres_per_unit(WEB_MERCATOR, lat[0]), gsd)
        resampling = resampling or acquisition.AUTO_RESAMPLING
    res = width / px

    def edge(value: float, origin: float, up: bool) -> float:
        # Scenes already on the grid's pixel edges (Xiamen's z18 tiles) must not gain a pixel
        # from rounding: 1e-6 px of slack.
        n = (value - origin) / res
        return (math.ceil(n - 1e-6) if up else math.floor(n + 1e-6)) * res + origin

    snap = (edge(left, b.left, False), edge(bottom, b.bottom, False), edge(right, b.left, True), edge(top, b.bottom, True))
    return Tile("WebMercatorQuad", ZOOM, cell.x, cell.y, snap, WEB_MERCATOR, res), resampling


def read_on_grid(raster: Raster, tile: Tile, resampling: str) -> Raster:
    """The scene read onto ``tile`` by the pipeline's :func:`acquisition.load_tile`."""
    with tempfile.TemporaryDirectory(prefix="gridded-") as tmp:
        hrefs = {}
        for band, name in enumerate(acquisition.BAND_ASSETS):
            path = Path(tmp) / f"{name}.tif"
            single = Raster(raster.data[band:band + 1], raster.transform, raster.crs, raster.nodata)
            path.write_bytes(cog_bytes(single))
            hrefs[name] = str(path)
        item = acquisition.stac_item("scene", raster, hrefs, dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        if raster.data.dtype != np.uint8:
            for asset in item.assets.values():
                asset.extra_fields["raster:bands"] = [{"data_type": str(raster.data.dtype)}]
        return acquisition.load_tile([item], tile, 0, resampling=resampling, ordered=True)


def back_to_scene(prob: np.ndarray, gridded: Raster, raster: Raster) -> np.ndarray:
    """A grid probability on the scene's own pixels (bilinear; 0 where the grid has none)."""
    out = np.full(raster.data.shape[1:], np.nan, np.float32)
    reproject(np.nan_to_num(prob, nan=0.0).astype(np.float32), out, src_transform=gridded.transform,
              src_crs=gridded.crs, dst_transform=raster.transform, dst_crs=raster.crs,
              resampling=Resampling.bilinear, dst_nodata=np.nan)
    return np.nan_to_num(out, nan=0.0)


def gridded_scene(scene: D.Scene, root: Path, grid: str, model_gsd: float | None,
                  model_range: tuple[float, float] | None = None) -> tuple[D.Scene, Raster, Raster]:
    """The scene as the model sees it on ``grid`` (its mask only gives the window size),
    the gridded raster and the scene's own raster (to map the answer back)."""
    raster = scene_raster(scene, root)
    tile, resampling = grid_tile(raster, grid, model_gsd, model_range)
    gridded = read_on_grid(raster, tile, resampling)
    dummy = np.zeros(gridded.data.shape[1:], np.uint8)
    return D.Scene(scene.dataset, scene.name, scene.group, gridded.data, dummy), gridded, raster


def bootstrap_iou(counts: list[tuple[int, int, int]], reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the micro pixel IoU, scenes drawn with replacement (percentiles)."""
    arr = np.asarray(counts, dtype=np.float64)
    if len(arr) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    draws = arr[rng.integers(0, len(arr), size=(reps, len(arr)))].sum(axis=1)
    iou = draws[:, 0] / np.maximum(draws.sum(axis=1), 1)
    lo, hi = np.percentile(iou, [2.5, 97.5])
    return float(lo), float(hi)
