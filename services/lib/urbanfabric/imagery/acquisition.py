"""Acquisition: imagery sources → STAC catalog → raw tile rasters.

Two steps, both plain Python:

1. :func:`register_xyz_source` turns a folder of slippy-map tiles (the sample imagery) into
   COGs, one per zoom-16 block, plus a static STAC catalog in the object store.
2. :func:`load_tile` loads one grid tile, with a halo of context pixels, from STAC items with
   stackstac (reprojection/resampling to the tile grid, mosaic of overlapping items).

Users with their own imagery point a job at any static STAC catalog whose items carry a COG
asset; step 1 is only for sources that are not yet catalogued.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import morecantile
import numpy as np
import pystac
import stackstac
from affine import Affine
from PIL import Image
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.enums import Resampling
from shapely.geometry import box, mapping

from urbanfabric.imagery import scenes
from urbanfabric.io.source_policy import SourcePolicy
from urbanfabric.io import stac
from urbanfabric.imagery.calibration import AreaStats, BandStats
from urbanfabric.errors import EmptyArea, InvalidInput, NotFound
from urbanfabric.imagery.tiles import Tile
from urbanfabric.io.rasters import COG_MEDIA_TYPE, Raster, cog_bytes
from urbanfabric.io.stac import ObjectStoreStacIO
from urbanfabric.io.object_store import ObjectStore

log = logging.getLogger(__name__)

#: One single-band COG asset per band: stackstac reads exactly one band per asset, and
#: per-band assets are how STAC describes multispectral imagery anyway.
BAND_ASSETS = ("red", "green", "blue")
#: ``resampling`` value that picks the method from the direction (source finer or coarser).
AUTO_RESAMPLING = "auto"
#: Raw imagery nodata: 0 in every band (the sample tiles have no true-black pixels of interest).
RAW_NODATA = 0


def _tile_files(tile_dir: Path, zoom: int) -> dict[tuple[int, int], Path]:
    files: dict[tuple[int, int], Path] = {}
    for path in (tile_dir / str(zoom)).glob("*/*.*"):
        try:
            files[(int(path.parent.name), int(path.stem))] = path
        except ValueError:
            continue
    return files


def mosaic_xyz_blocks(
    tile_dir: Path, zoom: int, block_zoom: int = 16
) -> Iterator[tuple[str, Raster]]:
    """Group slippy-map tiles ``<dir>/<zoom>/<x>/<y>.<ext>`` into one raster per block.

    Yields ``(block_id, raster)`` in EPSG:3857; pixels of missing tiles are nodata (0).

    Raises:
        NotFound: the folder holds no tile of that zoom.
    """
    files = _tile_files(Path(tile_dir), zoom)
    if not files:
        raise NotFound(f"no zoom-{zoom} tiles under {tile_dir}")
    tms = morecantile.tms.get("WebMercatorQuad")
    factor = 2 ** (zoom - block_zoom)
    blocks: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for x, y in files:
        blocks[(x // factor, y // factor)].append((x, y))
    for (bx, by), members in sorted(blocks.items()):
        first = Image.open(files[members[0]])
        size = first.size[0]
        mosaic = np.zeros((3, size * factor, size * factor), dtype=np.uint8)
        for x, y in members:
            try:
                rgb = np.asarray(Image.open(files[(x, y)]).convert("RGB")).transpose(2, 0, 1)
            except OSError as exc:
                log.warning("skipping unreadable tile %s: %s", files[(x, y)], exc)
                continue
            r, c = (y - by * factor) * size, (x - bx * factor) * size
            mosaic[:, r : r + size, c : c + size] = rgb
        b = tms.xy_bounds(morecantile.Tile(bx, by, block_zoom))
        res = (b.right - b.left) / (size * factor)
        transform = Affine(res, 0, b.left, 0, -res, b.top)
        yield f"{block_zoom}-{bx}-{by}", Raster(mosaic, transform, CRS.from_epsg(3857), RAW_NODATA)


def block_with_halo(blocks: Mapping[tuple[int, int], Raster], x: int, y: int, halo_px: int) -> Raster:
    """Block ``(x, y)`` of :func:`mosaic_xyz_blocks` grown by ``halo_px`` on every side, the halo
    cut from its ≤ 8 neighbouring blocks (nodata where a neighbour is missing), with the grown
    transform: what a tile worker sees of local blocks without a STAC reprojection."""
    centre = blocks[x, y]
    size = centre.data.shape[1]
    canvas = np.full((centre.data.shape[0], size + 2 * halo_px, size + 2 * halo_px), RAW_NODATA,
                     dtype=centre.data.dtype)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            b = blocks.get((x + dx, y + dy))
            if b is None:
                continue
            r0, c0 = halo_px + dy * size, halo_px + dx * size
            rs, cs = max(r0, 0), max(c0, 0)
            re, ce = min(r0 + size, canvas.shape[1]), min(c0 + size, canvas.shape[2])
            if rs < re and cs < ce:
                canvas[:, rs:re, cs:ce] = b.data[:, rs - r0:re - r0, cs - c0:ce - c0]
    return Raster(canvas, centre.transform @ Affine.translation(-halo_px, -halo_px), centre.crs, RAW_NODATA)


def stac_item(
    block_id: str, raster: Raster, hrefs: dict[str, str], when: dt.datetime
) -> pystac.Item:
    """A STAC item with one COG asset per band and the projection fields stackstac reads."""
    left, bottom, right, top = raster.bounds
    to_wgs84 = Transformer.from_crs(raster.crs, "EPSG:4326", always_xy=True)
    w, s = to_wgs84.transform(left, bottom)
    e, n = to_wgs84.transform(right, top)
    item = pystac.Item(
        id=block_id,
        geometry=mapping(box(w, s, e, n)),
        bbox=[w, s, e, n],
        datetime=when,
        properties={
            # stackstac 0.5.1 reads proj:epsg (not pystac 1.15's proj:code).
            "proj:epsg": raster.crs.to_epsg(),
            "proj:shape": list(raster.data.shape[-2:]),
            "proj:transform": list(raster.transform)[:6],
            "proj:bbox": [left, bottom, right, top],
            "gsd": raster.resolution,
        },
    )
    for name, href in hrefs.items():
        item.add_asset(name, pystac.Asset(href=href, media_type=COG_MEDIA_TYPE, roles=["data"]))
    return item


def register_xyz_source(
    store: ObjectStore,
    source_id: str,
    tile_dir: Path,
    zoom: int,
    when: dt.datetime | None = None,
) -> tuple[str, int, tuple[float, float, float, float]]:
    """Write COGs and a static STAC catalog of a slippy-map tile folder to the object store.

    Returns:
        ``(catalog_uri, item_count, bbox_wgs84)``.
    """
    if not source_id or "/" in source_id:
        raise InvalidInput("source_id", "must be a non-empty name without '/'")
    when = when or dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    root = f"sources/{source_id}"
    catalog = pystac.Catalog(id=source_id, description=f"Imagery source {source_id}")
    bboxes = []
    for block_id, raster in mosaic_xyz_blocks(Path(tile_dir), zoom):
        hrefs = {}
        for band, name in enumerate(BAND_ASSETS):
            key = f"{root}/cogs/{block_id}/{name}.tif"
            single = Raster(raster.data[band : band + 1], raster.transform, raster.crs, raster.nodata)
            store.put_bytes(key, cog_bytes(single))
            hrefs[name] = store.s3_uri(key)
        item = stac_item(block_id, raster, hrefs, when)
        catalog.add_item(item)
        bboxes.append(item.bbox)
    catalog.normalize_hrefs(store.s3_uri(root))
    catalog.save(pystac.CatalogType.ABSOLUTE_PUBLISHED, stac_io=ObjectStoreStacIO(store))
    arr = np.asarray(bboxes)
    bbox = (arr[:, 0].min(), arr[:, 1].min(), arr[:, 2].max(), arr[:, 3].max())
    return store.s3_uri(f"{root}/catalog.json"), len(bboxes), (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))


def catalog_items(catalog: pystac.Catalog) -> list[pystac.Item]:
    """All items of a catalog (recursively)."""
    return list(catalog.get_items(recursive=True))


def catalog_bbox(items: list[pystac.Item]) -> tuple[float, float, float, float]:
    """Union lon/lat bounding box of items."""
    if not items:
        raise NotFound("catalog has no items")
    arr = np.asarray([i.bbox for i in items])
    return (arr[:, 0].min(), arr[:, 1].min(), arr[:, 2].max(), arr[:, 3].max())


def items_for_tile(items: list[pystac.Item], tile: Tile, halo_px: int = 0) -> list[pystac.Item]:
    """Items whose footprint intersects the tile (with halo)."""
    left, bottom, right, top = _halo_bounds(tile, halo_px)
    to_wgs84 = Transformer.from_crs(tile.crs, "EPSG:4326", always_xy=True)
    w, s = to_wgs84.transform(left, bottom)
    e, n = to_wgs84.transform(right, top)
    area = box(w, s, e, n)
    return [i for i in items if i.bbox is not None and box(*i.bbox).intersects(area)]


def source_gsd(items: list[pystac.Item]) -> float | None:
    """The median ground GSD (m) of the scenes that state one (:func:`scenes.item_gsd`)."""
    known = [g for g in (scenes.item_gsd(i) for i in items) if g]
    return float(np.median(known)) if known else None


def _halo_bounds(tile: Tile, halo_px: int) -> tuple[float, float, float, float]:
    pad = halo_px * tile.resolution
    left, bottom, right, top = tile.bounds
    return (left - pad, bottom - pad, right + pad, top + pad)


def area_wgs84(tile: Tile, halo_px: int = 0) -> tuple[float, float, float, float]:
    """A tile's (plus halo) lon/lat bounding box."""
    to_wgs84 = Transformer.from_crs(tile.crs, "EPSG:4326", always_xy=True)
    w, s, e, n = to_wgs84.transform_bounds(*_halo_bounds(tile, halo_px))
    return (w, s, e, n)


def _stack_dtype(dicts: list[dict]) -> str:
    """uint16 when any chosen asset declares more than 8 bits (satellite DNs), else uint8."""
    for d in dicts:
        for asset in d["assets"].values():
            for band in asset.get("raster:bands", []) or []:
                if band.get("data_type") in ("uint16", "int16", "uint32", "int32"):
                    return "uint16"
    return "uint8"


def load_tile(
    items: list[pystac.Item],
    tile: Tile,
    halo_px: int = 0,
    assets: tuple[str, ...] = BAND_ASSETS,
    *,
    bands: Mapping[str, str] | None = None,
    resampling: str = AUTO_RESAMPLING,
    ordered: bool = False,
) -> Raster:
    """Load a tile plus halo from STAC items with stackstac, mosaicking overlapping items.

    The result is on the tile's grid (its CRS and resolution), with the model's bands in
    ``assets`` order; uint8 (uint16 for deeper sources), nodata 0. Pixels outside all items
    are nodata.

    Args:
        items: candidate scenes (those not touching the tile are ignored).
        tile: grid cell; its CRS and resolution are the target grid.
        halo_px: context pixels around the cell.
        assets: the bands the model expects, in order.
        bands: per-source band mapping (see :func:`urbanfabric.imagery.scenes.band_assets`).
        resampling: GDAL resampling when the source grid differs (``nearest``, ``bilinear``,
            ``cubic``, ``average``…), or ``auto``: the one that suits the direction
            (:func:`urbanfabric.imagery.scenes.grid_resampling`: ``average`` when downsampling,
            ``bilinear`` when upsampling, ``nearest`` at about the same size).
        ordered: the items are already in mosaic order (last on top); otherwise they are
            sorted by date, the most recent on top.

    Raises:
        EmptyArea: no item intersects the tile.
        InvalidInput: a scene lacks a band (``bands``), its CRS is wrong (``crs``), or an asset
            cannot be read (``image``); the message names the tile.
    """
    chosen = items_for_tile(items, tile, halo_px)
    if not chosen:
        raise EmptyArea("tile", f"{tile.tile_id} does not intersect any imagery item")
    if resampling == AUTO_RESAMPLING:
        resampling = scenes.grid_resampling(chosen, tile.ground_resolution_m)
    try:
        method = Resampling[resampling]
    except KeyError:
        raise InvalidInput("resampling", f"unknown resampling {resampling!r}; one of "
                           f"{[AUTO_RESAMPLING] + [r.name for r in Resampling][:12]}") from None
    if not ordered:
        chosen = sorted(chosen, key=lambda i: scenes.item_interval(i)[0])
    dicts = scenes.stack_dicts(chosen, assets, bands, tile.tile_id)
    for item, d in zip(chosen, dicts):
        scenes.check_crs(item, d, tile.tile_id)
    bounds = _halo_bounds(tile, halo_px)
    epsg = int(tile.crs.split(":")[1])
    dtype = _stack_dtype(dicts)
    stack = stackstac.stack(
        dicts,
        assets=list(assets),
        epsg=epsg,
        resolution=tile.resolution,
        bounds=bounds,
        snap_bounds=False,
        dtype=dtype,
        fill_value=np.dtype(dtype).type(RAW_NODATA),
        rescale=False,
        chunksize=2048,
        resampling=method,
        sortby_date=False,
        # stackstac's default reads a 404 as nodata: a broken asset link must be reported.
        errors_as_nodata=(),
    )
    # (time, band, y, x): later items win where they overlap earlier ones.
    try:
        mosaic = stackstac.mosaic(stack, dim="time", nodata=RAW_NODATA).compute(scheduler="threads")
    except RuntimeError as exc:
        # stackstac wraps GDAL read errors ("Error opening '<href>': RasterioIOError(…)").
        # A corrupt or unreadable asset is bad input, not a service fault.
        if "Error opening" in str(exc) or "Error reading" in str(exc):
            raise InvalidInput("image", f"unreadable imagery for tile {tile.tile_id}: {exc}") from exc
        raise
    except AssertionError as exc:
        # stackstac 0.5 asserts instead of filling when a read window holds no asset at all
        # (seen for coarse area-statistics reads of a cell between two imagery blocks).
        if "reader_table" in str(exc):
            raise EmptyArea("tile", f"{tile.tile_id}: no imagery asset to read in this cell") from exc
        raise
    data = np.asarray(mosaic.values)
    if data.ndim == 2:
        data = data[None]
    transform = Affine(tile.resolution, 0, bounds[0], 0, -tile.resolution, bounds[3])
    return Raster(data.astype(dtype), transform, CRS.from_string(tile.crs), RAW_NODATA)


@dataclass
class FetchedTile:
    """A loaded tile and what the job report should say about it."""

    raster: Raster
    scenes: list[str]
    fallback: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def valid_fraction(self) -> float:
        """Share of pixels holding imagery in at least one band."""
        return float((self.raster.data != RAW_NODATA).any(axis=0).mean())


def fetch_tile(
    items: list[pystac.Item],
    tile: Tile,
    halo_px: int = 0,
    assets: tuple[str, ...] = BAND_ASSETS,
    *,
    bands: Mapping[str, str] | None = None,
    scene_filter: scenes.SceneFilter | None = None,
    basemap: list[pystac.Item] | None = None,
    resampling: str = AUTO_RESAMPLING,
    model_gsd: float | None = None,
) -> FetchedTile:
    """Choose scenes for a tile (cloud cover, year, basemap fallback), mosaic and check them.

    Raises:
        EmptyArea: nothing covers the tile.
        InvalidInput: no usable scene, a missing band, a CRS mismatch, an unreadable asset,
            or a tile without any valid pixel (field ``tile``) — each message names the tile.
    """
    choice = scenes.choose_scenes(items, area_wgs84(tile, halo_px), scene_filter or scenes.SceneFilter(),
                                  basemap or [], tile.tile_id)
    raster = load_tile(choice.items, tile, halo_px, assets, bands=bands, resampling=resampling,
                       ordered=True)
    fetched = FetchedTile(raster, choice.ids, choice.fallback,
                          scenes.gsd_warnings(choice.items, model_gsd, tile.tile_id))
    if fetched.valid_fraction == 0.0:
        raise InvalidInput("tile", f"{tile.tile_id}: the scenes {choice.ids} hold only nodata here")
    if choice.fallback:
        fetched.warnings.append(f"tile {tile.tile_id}: no clear scene in the wanted year; "
                                f"used {choice.fallback} ({', '.join(choice.ids)})")
    return fetched


def area_statistics(
    items: list[pystac.Item],
    tiles: list[Tile],
    sample_factor: float = 8.0,
    **fetch_options: Any,
) -> tuple[BandStats, int, list[str]]:
    """Band quartiles over a whole area, for calibration per city (GBM "Analysis-Ready Data").

    Every tile is read ``sample_factor`` times coarser than its grid (from COG overviews, so
    a city costs a small fraction of a full read) and counted into one streamed
    :class:`~urbanfabric.imagery.calibration.AreaStats`; memory does not grow with the area.

    Args:
        items: candidate scenes.
        tiles: the area's grid cells.
        sample_factor: how much coarser than the tile grid to read.
        fetch_options: passed to :func:`fetch_tile` (bands, scene_filter, basemap, resampling).

    Returns:
        ``(stats, tiles_used, skipped)`` where ``skipped`` names each unreadable tile and why.

    Raises:
        InvalidInput: no tile could be read (field ``area``).
    """
    acc = AreaStats(nodata=RAW_NODATA)
    skipped = []
    for tile in tiles:
        coarse = dataclasses.replace(tile, resolution=tile.resolution * sample_factor)
        try:
            # Quartiles of pixel values need samples of them: averaging 8 × 8 pixels would
            # narrow the spread, so the coarse read is always nearest.
            fetched = fetch_tile(items, coarse, **{**fetch_options, "resampling": "nearest"})
        except InvalidInput as exc:  # EmptyArea included: nothing to count there
            skipped.append(f"{tile.tile_id}: {exc}")
            continue
        acc.add(fetched.raster.data)
    if acc.tiles == 0:
        raise InvalidInput("area", f"no readable tile among {len(tiles)}: {'; '.join(skipped[:3])}")
    return acc.stats(), acc.tiles, skipped


def source_items(
    imagery: str,
    store: ObjectStore | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    collections: list[str] | None = None,
    policy: SourcePolicy | None = None,
) -> tuple[str, list[str], list[pystac.Item]]:
    """Resolve a job's ``imagery`` string to ``(catalog_uri, cog_uris, items)``, every URI and
    asset href allowed by ``policy`` (default :meth:`SourcePolicy.from_env`).

    Accepted: ``s3://…/catalog.json`` or any static catalog URL/path; a STAC API root
    ``http(s)://…`` (searched over ``bbox``); ``cogs:<url>,<url>,…`` (a plain COG list).

    Raises:
        InvalidInput: an empty COG list (field ``imagery``).
        NotFound: the catalog or API cannot be read.
    """
    policy = policy or SourcePolicy.from_env()
    if imagery.startswith("cogs:"):
        cogs = [u.strip() for u in imagery[len("cogs:"):].split(",") if u.strip()]
        if not cogs:
            raise InvalidInput("imagery", "'cogs:' needs at least one COG URL")
        for cog in cogs:
            policy.check(cog, "imagery")
        return "", cogs, policy.check_items(stac.items_from_cogs(cogs), "imagery")
    policy.check(imagery, "imagery")
    items = stac.search_items(imagery, store, bbox=bbox, collections=collections)
    return imagery, [], policy.check_items(items, "imagery")
