"""Scene choice for one tile: band mapping, cloud cover, year fallback, basemap, checks.

Follows the Global Building Map acquisition rules (``global-building-map.txt``, "Data"):
only scenes with a cloud/haze share under 10 % are used; when the wanted year has none, the
previous year is tried, and when no year has a clear scene a (lower quality) basemap source
is used instead. Chosen scenes are mosaicked, best scene on top.

Every source names its bands differently (``B04`` in Sentinel-2, ``red`` in our own catalogs,
band 1 of a ``visual`` RGB COG in others). :func:`band_assets` maps the bands a model expects
onto each scene, either through an explicit per-source mapping or the STAC ``eo:bands``
common names, and fails naming the scene when a band is missing.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pystac
import rasterio
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from urbanfabric.errors import EmptyArea, InvalidInput
from urbanfabric.imagery.tiles import GRID_GSD_TOLERANCE
from urbanfabric.io.stac import item_interval

#: GBM: scenes with more than 10 % cloud and haze are rejected.
DEFAULT_MAX_CLOUD = 0.10
#: Imagery whose GSD differs from the model's by more than this factor gets a warning.
GSD_TOLERANCE = 2.0


@dataclass(frozen=True)
class SceneFilter:
    """How to pick scenes for a tile.

    Attributes:
        year: preferred acquisition year; ``None`` takes any date (most recent first).
        fallback_years: earlier years tried, one by one, when ``year`` has no clear scene.
        max_cloud: largest accepted ``eo:cloud_cover`` as a share (0–1); scenes without the
            property (aerial orthophotos, basemaps) count as clear.
    """

    year: int | None = None
    fallback_years: int = 1
    max_cloud: float = DEFAULT_MAX_CLOUD

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_cloud <= 1.0:
            raise InvalidInput("max_cloud_cover", f"must be a share in [0, 1], got {self.max_cloud}")
        if self.fallback_years < 0:
            raise InvalidInput("fallback_years", "must be ≥ 0")


@dataclass
class SceneChoice:
    """Scenes chosen for a tile, in mosaic order (the last one is drawn on top)."""

    items: list[pystac.Item]
    #: ``""`` (wanted year or any date), ``"year:<Y>"`` (an earlier year), ``"basemap"``.
    fallback: str = ""
    #: scene id → why it was not used.
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.items]


def cloud_share(item: pystac.Item) -> float | None:
    """``eo:cloud_cover`` (percent in STAC) as a 0–1 share; ``None`` when not given."""
    value = item.properties.get("eo:cloud_cover")
    return None if value is None else float(value) / 100.0


def _in_year(item: pystac.Item, year: int) -> bool:
    lo, hi = item_interval(item)
    start = dt.datetime(year, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC)
    return hi >= start and lo < end


def _rank(item: pystac.Item) -> tuple[float, float]:
    """Clearest first, then most recent."""
    lo, _ = item_interval(item)
    return (cloud_share(item) or 0.0, -lo.timestamp())


def _cover(pool: list[pystac.Item], area: BaseGeometry) -> list[pystac.Item]:
    """Greedy, best first: every scene that shows part of the area no better scene shows.

    Returned worst first, so the best scene is drawn on top of the mosaic.
    """
    chosen, covered = [], None
    for item in sorted(pool, key=_rank):
        footprint = shape(item.geometry) if item.geometry else box(*(item.bbox or ()))
        if covered is not None and covered.covers(footprint.intersection(area)):
            continue  # adds nothing the better scenes do not already show
        chosen.append(item)
        covered = footprint if covered is None else unary_union([covered, footprint])
    return chosen[::-1]


def choose_scenes(
    items: Sequence[pystac.Item],
    area_wgs84: tuple[float, float, float, float],
    scene_filter: SceneFilter | None = None,
    basemap: Sequence[pystac.Item] = (),
    tile_id: str = "",
) -> SceneChoice:
    """Pick the scenes to mosaic for an area (a tile plus halo, lon/lat bbox).

    Raises:
        EmptyArea: no scene of the source (nor of the basemap) intersects the area.
        InvalidInput: scenes exist but all are too cloudy and there is no basemap (field
            ``max_cloud_cover``, naming the tile).
    """
    # The default filter applies before the cloud check (without one, a scene with a cloud
    # cover field raised AttributeError here).
    f = scene_filter = scene_filter or SceneFilter()
    area = box(*area_wgs84)
    hits = [i for i in items if i.bbox is not None and box(*i.bbox).intersects(area)]
    rejected: dict[str, str] = {}
    clear = []
    for item in hits:
        share = cloud_share(item)
        if share is not None and share > f.max_cloud:
            rejected[item.id] = f"cloud cover {share:.0%} > {f.max_cloud:.0%}"
        else:
            clear.append(item)
    years: list[int | None] = [None] if f.year is None else [f.year - k for k in range(f.fallback_years + 1)]
    for k, year in enumerate(years):
        pool = clear if year is None else [i for i in clear if _in_year(i, year)]
        if pool:
            chosen = _cover(pool, area)
            for item in clear:
                if item not in chosen and item.id not in rejected:
                    rejected[item.id] = "not needed" if item in pool else f"not from {year}"
            return SceneChoice(chosen, f"year:{year}" if k else "", rejected)
    base = [i for i in basemap if i.bbox is not None and box(*i.bbox).intersects(area)]
    if base:
        for item in clear:
            rejected.setdefault(item.id, f"not from {', '.join(str(y) for y in years)}")
        return SceneChoice(_cover(base, area), "basemap", rejected)
    where = f"tile {tile_id}" if tile_id else f"area {area_wgs84}"
    if not hits:
        raise EmptyArea("tile", f"{where} does not intersect any imagery item")
    why = "; ".join(f"{k}: {v}" for k, v in list(rejected.items())[:5]) or "no scene in the wanted years"
    raise InvalidInput("max_cloud_cover", f"no usable scene for {where} ({why}) and no basemap source")


# --- Band mapping --------------------------------------------------------------------------


@dataclass(frozen=True)
class BandRef:
    """Where one model band lives in a scene: an asset, and a band in it for multi-band files."""

    asset: str
    band: int | None = None  # 1-based band index inside a multi-band asset


def _asset_bands(asset: pystac.Asset) -> list[dict[str, Any]]:
    # STAC 1.0 eo extension (``eo:bands``) or STAC 1.1 ``bands`` with ``eo:common_name``.
    if "eo:bands" in asset.extra_fields:
        return list(asset.extra_fields["eo:bands"])
    return [{"name": b.get("name"), "common_name": b.get("eo:common_name")}
            for b in asset.extra_fields.get("bands", [])]


def band_assets(
    item: pystac.Item, wanted: Sequence[str], mapping: Mapping[str, str] | None = None, tile_id: str = ""
) -> dict[str, BandRef]:
    """Map the bands a model expects (e.g. red, green, blue) onto a scene's assets.

    Args:
        item: the scene.
        wanted: band names in model order.
        mapping: per-source band mapping, model band → ``"asset"`` or ``"asset#N"`` (band N of
            a multi-band asset), e.g. ``{"red": "B04", "green": "B03", "blue": "B02"}`` or
            ``{"red": "visual#1", …}``. Without it, assets named like the band, then ``eo:bands``
            common names, are used.
        tile_id: for the error message.

    Raises:
        InvalidInput: a band the model expects is missing (field ``bands``, naming the scene
            and tile).
    """
    out: dict[str, BandRef] = {}
    for name in wanted:
        ref = None
        if mapping and name in mapping:
            key, _, num = mapping[name].partition("#")
            if key in item.assets:
                ref = BandRef(key, int(num) if num else None)
        elif name in item.assets:
            ref = BandRef(name)
        else:
            for key, asset in item.assets.items():
                bands = _asset_bands(asset)
                names = [(b.get("common_name") or "", b.get("name") or "") for b in bands]
                idx = next((j for j, (common, own) in enumerate(names) if name in (common, own)), None)
                if idx is not None:
                    ref = BandRef(key, None if len(bands) == 1 else idx + 1)
                    break
        if ref is None:
            where = f" (tile {tile_id})" if tile_id else ""
            how = f"mapped to {mapping[name]!r}" if mapping and name in mapping else "by name or eo:bands"
            raise InvalidInput("bands", f"scene {item.id}{where} has no {name!r} band {how}; "
                               f"assets: {sorted(item.assets)}; the model expects {list(wanted)}")
        out[name] = ref
    return out


def gdal_href(href: str, band: int | None) -> str:
    """An href GDAL opens as one band: ``vrt://`` selects a band of a multi-band file."""
    if band is None:
        return href
    inner = href
    if href.startswith("s3://"):
        inner = "/vsis3/" + href[len("s3://"):]
    elif href.startswith(("http://", "https://")):
        inner = "/vsicurl/" + href
    return f"vrt://{inner}?bands={band}"


def stack_dicts(items: Sequence[pystac.Item], wanted: Sequence[str],
                mapping: Mapping[str, str] | None = None, tile_id: str = "") -> list[dict[str, Any]]:
    """Item dicts for stackstac whose assets are renamed to the model's band names."""
    out = []
    for item in items:
        refs = band_assets(item, wanted, mapping, tile_id)
        d = item.to_dict(transform_hrefs=False)
        assets = {}
        for name, ref in refs.items():
            asset = dict(d["assets"][ref.asset])
            href = asset["href"]
            if "://" not in href and not href.startswith("/"):
                # Relative to the item's file (static catalogs); URLs and paths stay as they are.
                href = item.assets[ref.asset].get_absolute_href() or href
            asset["href"] = gdal_href(href, ref.band)
            # One band per asset now: drop band lists describing the whole file.
            for key in ("eo:bands", "raster:bands", "bands"):
                if ref.band is not None and key in asset:
                    asset[key] = [asset[key][ref.band - 1]] if len(asset[key]) >= ref.band else []
            assets[name] = asset
        d["assets"] = assets
        out.append(d)
    return out


# --- Checks that name the tile ------------------------------------------------------------


def item_gsd(item: pystac.Item) -> float | None:
    """Ground sampling distance of a scene in metres, when known.

    Web-Mercator scenes (our own sample catalogs among them) are measured from their
    ``proj:transform`` times cos(latitude): their pixels are ``1/cos(lat)`` ground metres larger
    on the map than on the ground, and their ``gsd`` property was written in map units.
    Other scenes: ``gsd``, else the pixel size of a projected ``proj:transform``.
    """
    transform = item.properties.get("proj:transform")
    epsg = item.properties.get("proj:epsg")
    if transform and epsg == 3857 and item.bbox is not None:
        return abs(float(transform[0])) * math.cos(math.radians((item.bbox[1] + item.bbox[3]) / 2))
    if item.properties.get("gsd"):
        return float(item.properties["gsd"])
    if transform and epsg and epsg != 4326:
        return abs(float(transform[0]))
    return None


def grid_resampling(items: Sequence[pystac.Item], grid_gsd_m: float) -> str:
    """The resampling that suits the direction from the finest scene onto a grid of
    ``grid_gsd_m`` (:data:`~urbanfabric.imagery.tiles.GRID_GSD_TOLERANCE` decides "about the
    same"):

    * scene finer than the grid (downsampling): ``average``, every source pixel counts and
      nothing aliases;
    * scene coarser (upsampling): ``bilinear``, no blocks;
    * about the same size: ``nearest``, pixels pass one to one. Bilinear there blurs every
      pixel with its neighbours at sub-pixel offsets: on crowdAI val (0.30 m onto a 0.30 m
      grid) ``footprint-unet:v5`` scored 0.699 with nearest, 0.677 with bilinear
      (docs/results.md, "Imagery at the model's GSD").

    Scenes of unknown GSD: ``nearest`` (the earlier default).
    """
    known = [g for g in (item_gsd(i) for i in items) if g]
    if not known:
        return "nearest"
    finest = min(known)
    if finest < grid_gsd_m / (1 + GRID_GSD_TOLERANCE):
        return "average"
    if finest > grid_gsd_m * (1 + GRID_GSD_TOLERANCE):
        return "bilinear"
    return "nearest"


def gsd_warnings(items: Sequence[pystac.Item], model_gsd: float | None, tile_id: str) -> list[str]:
    """Warnings for scenes whose GSD is more than :data:`GSD_TOLERANCE` × off the model's,
    saying what the grid does with them."""
    if not model_gsd:
        return []
    out = []
    for item in items:
        gsd = item_gsd(item)
        if not gsd or max(gsd / model_gsd, model_gsd / gsd) <= GSD_TOLERANCE:
            continue
        if gsd > model_gsd:
            out.append(f"tile {tile_id}: scene {item.id} has a {gsd:.2f} m GSD, {gsd / model_gsd:.1f}× coarser "
                       f"than the model's {model_gsd:.2f} m: it is upsampled (bilinear) onto the model's grid, "
                       f"which adds no detail; buildings narrower than ≈ {2 * gsd:.0f} m are likely missed and "
                       f"outlines follow the coarse pixels — use imagery near {model_gsd:.2f} m or a model "
                       f"trained at this GSD")
        else:
            out.append(f"tile {tile_id}: scene {item.id} has a {gsd:.2f} m GSD, {model_gsd / gsd:.1f}× finer "
                       f"than the model's {model_gsd:.2f} m: it is averaged down onto the model's grid; "
                       f"detail finer than {model_gsd:.2f} m is not used")
    return out


@functools.lru_cache(maxsize=4096)
def _file_crs(href: str) -> rasterio.crs.CRS | None:
    """The CRS in a file's header (cached: neighbouring tiles share scenes, files do not change)."""
    with rasterio.open(href) as ds:
        return ds.crs


def check_crs(item: pystac.Item, dicts: Mapping[str, Any], tile_id: str) -> None:
    """Fail when a scene's metadata CRS disagrees with its files (or neither has one).

    stackstac places pixels using the item's ``proj:*`` fields: a file in another CRS than its
    metadata says would be placed at the wrong spot without any error.

    Raises:
        InvalidInput: field ``crs``, naming the scene and tile.
    """
    declared = item.properties.get("proj:epsg") or item.properties.get("proj:code")
    # One header read per scene: every band asset of a scene shares its grid's CRS.
    for name, asset in list(dicts["assets"].items())[:1]:
        try:
            actual = _file_crs(asset["href"])
        except rasterio.errors.RasterioIOError:
            continue  # unreadable assets are reported by the read itself, naming the asset
        if actual is None:
            raise InvalidInput("crs", f"scene {item.id} (tile {tile_id}): asset {name} has no CRS")
        if declared is not None:
            code = declared if isinstance(declared, int) else str(declared).split(":")[-1]
            if actual.to_epsg() != int(code):
                raise InvalidInput("crs", f"scene {item.id} (tile {tile_id}): metadata says EPSG:{code} "
                                   f"but asset {name} is in {actual.to_string()}")
