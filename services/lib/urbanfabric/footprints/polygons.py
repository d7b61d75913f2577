"""Building probability → footprint polygons, and the land-cover post-filter before them.

* :func:`polygonize` turns the probability map into footprint polygons (connected
  components → polygons, then either Douglas–Peucker simplification or, with a regularisation
  tolerance, merged neighbours split (:mod:`urbanfabric.footprints.splitting`) and outlines
  regularised (:mod:`urbanfabric.footprints.regularise`); minimum-area filter) with a
  confidence per footprint (mean probability inside it) and a stable :func:`building_id`.
* :func:`landcover_filter` is GBM's "Post-Processing" hook: building pixels on excluded
  land-cover classes are dropped, with a weak rule set inside urban areas and a strict one
  outside.

The probability map comes from :func:`urbanfabric.footprints.windows.predict_tiled` (one model)
or :func:`urbanfabric.footprints.ensemble.combine` (several); pieces of a building split by a
tile border are joined afterwards by :func:`urbanfabric.footprints.seams.merge_seams`.
"""

from __future__ import annotations


import hashlib

import geopandas as gpd
import numpy as np
import rasterio.features
from affine import Affine
from scipy import ndimage
import shapely
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from urbanfabric.errors import InvalidInput
from urbanfabric.footprints import regularise as reg
from urbanfabric.footprints.splitting import split_touching


DEFAULT_MIN_AREA_M2 = 10.0
DEFAULT_SIMPLIFY_M = 0.75


#: GBM "Post-Processing" land-cover rules with FROM-GLC10 class names: inside urban areas
#: (WSF) only vegetation classes veto a building pixel; outside, everything but impervious.
LANDCOVER_URBAN_EXCLUDE = ("cropland", "grass", "shrub")
LANDCOVER_RURAL_EXCLUDE = ("cropland", "forest", "grass", "shrub", "water", "bare", "snow", "cloud")


def landcover_filter(
    building: np.ndarray,
    landcover: np.ndarray,
    classes: dict[int, str],
    urban: np.ndarray | None = None,
    urban_exclude: tuple[str, ...] = LANDCOVER_URBAN_EXCLUDE,
    rural_exclude: tuple[str, ...] = LANDCOVER_RURAL_EXCLUDE,
) -> np.ndarray:
    """Drop building pixels on land-cover classes that cannot hold buildings (urban-aware).

    Args:
        building: ``(H, W)`` probability or vote-share map; filtered pixels become 0 (NaN kept).
        landcover: ``(H, W)`` integer class codes on the same grid.
        classes: code → class name (e.g. FROM-GLC10's ``{10: "cropland", 80: "impervious", …}``).
        urban: ``(H, W)`` bool settlement mask (e.g. WSF); ``None`` treats everything as urban
            (the weak rule set), the safe choice when no settlement layer is available.
        urban_exclude: class names vetoing buildings inside urban areas.
        rural_exclude: class names vetoing buildings outside urban areas.

    Returns:
        A filtered copy of ``building``.
    """
    if np.shape(landcover) != np.shape(building):
        raise InvalidInput("landcover", f"shape {np.shape(landcover)} != {np.shape(building)}")
    if urban is not None and np.shape(urban) != np.shape(building):
        raise InvalidInput("urban", f"shape {np.shape(urban)} != {np.shape(building)}")
    codes_urban = [c for c, name in classes.items() if name in urban_exclude]
    codes_rural = [c for c, name in classes.items() if name in rural_exclude]
    in_urban = np.ones(np.shape(building), bool) if urban is None else np.asarray(urban, bool)
    veto = (in_urban & np.isin(landcover, codes_urban)) | (~in_urban & np.isin(landcover, codes_rural))
    out = np.array(building, dtype=np.float32, copy=True)
    out[veto & np.isfinite(out)] = 0.0
    return out


def building_id(x: float, y: float) -> str:
    """Stable id from a footprint's representative point (EPSG:4326, ~1 cm rounding)."""
    digest = hashlib.sha1(f"{x:.7f},{y:.7f}".encode()).hexdigest()[:16]
    return f"b{digest}"


def polygonize(
    prob: np.ndarray,
    transform: Affine,
    crs: str,
    threshold: float = 0.5,
    min_area_m2: float = DEFAULT_MIN_AREA_M2,
    simplify_tolerance_m: float = DEFAULT_SIMPLIFY_M,
    tile_id: str = "",
    regularise_tolerance_m: float = 0.0,
    split_touching_buildings: bool = False,
) -> gpd.GeoDataFrame:
    """Footprint polygons from a probability map.

    ``regularise_tolerance_m`` > 0 regularises every outline within that distance
    (:func:`urbanfabric.footprints.regularise.regularise_outline`) instead of the plain
    Douglas–Peucker at ``simplify_tolerance_m``; ``split_touching_buildings`` first splits
    buildings merged in the mask where the probability dips between them
    (:func:`urbanfabric.footprints.splitting.split_touching`), and their shared walls stay
    shared. Either way the geometries are valid and do not overlap.

    Returns a GeoDataFrame in EPSG:4326 with ``building_id``, ``footprint_confidence``,
    ``footprint_area_m2``, ``footprint_source`` ("segmented"), ``tile_id`` and ``on_border``
    (the polygon touches the raster edge, so it may continue in the next tile).
    """
    if not 0 < threshold < 1:
        raise InvalidInput("threshold", f"must be in (0, 1), got {threshold}")
    if regularise_tolerance_m < 0:
        raise InvalidInput("regularise_tolerance_m", f"must be >= 0, got {regularise_tolerance_m}")
    p = np.nan_to_num(prob, nan=0.0)
    mask = p >= threshold
    columns = ["building_id", "footprint_confidence", "footprint_area_m2", "footprint_source",
               "tile_id", "on_border"]
    rows, cols = prob.shape
    pixel_m = _pixel_size_m(transform, crs, rows, cols)
    if split_touching_buildings and regularise_tolerance_m > 0:
        # Split walls are only kept shared by the regularised path (the plain simplification
        # would move each side of a wall on its own).
        min_core_px = int(min_area_m2 / max(pixel_m, 1e-6) ** 2 / 4)
        labels, n = split_touching(p, threshold, min_core_px)
    else:
        labels, n = ndimage.label(mask)
    if n == 0:
        return gpd.GeoDataFrame(columns=columns, geometry=[], crs="EPSG:4326")
    confidence = ndimage.mean(p, labels, index=np.arange(1, n + 1))
    geoms, values = [], []
    for geom, value in rasterio.features.shapes(labels.astype(np.int32), mask=labels > 0,
                                                transform=transform, connectivity=4):
        geoms.append(shape(geom))
        values.append(int(value))
    frame = gpd.GeoDataFrame({"_label": values}, geometry=geoms, crs=crs)
    # Work in metres for simplification, regularisation and area.
    metric = frame.to_crs(frame.estimate_utm_crs())
    left, top = transform @ (0, 0)
    right, bottom = transform @ (cols, rows)
    tile_box = gpd.GeoSeries([box(left, bottom, right, top)],
                             crs=crs).to_crs(metric.crs).iloc[0]
    if regularise_tolerance_m > 0:
        blocks, _ = ndimage.label(mask)
        block_of = ndimage.maximum(blocks, labels, index=np.arange(1, n + 1)).astype(np.int64)
        metric = _regularised(metric, block_of, regularise_tolerance_m, pixel_m, tile_box)
    else:
        metric["geometry"] = metric.geometry.simplify(simplify_tolerance_m, preserve_topology=True)
    metric["footprint_confidence"] = confidence[metric["_label"].to_numpy() - 1].astype(float)
    metric = metric[metric.geometry.is_valid & ~metric.geometry.is_empty]
    metric["footprint_area_m2"] = metric.geometry.area
    metric = metric[metric["footprint_area_m2"] >= min_area_m2]
    metric["on_border"] = metric.geometry.distance(tile_box.exterior) < 2 * abs(transform.a)
    if regularise_tolerance_m > 0:
        metric = _robust_to_reprojection(metric)
    out = metric.to_crs("EPSG:4326")
    if regularise_tolerance_m > 0:
        # A sliver valid in metres can collapse in degrees (a zero-width hole): repair it there.
        broken = ~out.geometry.is_valid
        if broken.any():
            out.loc[broken, "geometry"] = [reg.largest_part(reg.polygonal(g)) for g in out.geometry[broken]]
            out = out[~out.geometry.is_empty]
    pts = out.geometry.representative_point()
    out["building_id"] = [building_id(p.x, p.y) for p in pts]
    out["footprint_source"] = "segmented"
    out["tile_id"] = tile_id
    return out[columns + ["geometry"]].reset_index(drop=True)


def _robust_to_reprojection(metric: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Outlines that touch themselves exactly (a pixel corner on a diagonal edge) closed by 1 mm.

    Such a touch is valid, but the degrees of the table (and the metres a later stage
    reprojects to) round it into a crossing; a closing by a millimetre (mitred) merges the touch.
    """
    back = metric.to_crs("EPSG:4326").to_crs(metric.crs)
    fragile = ~(back.geometry.is_valid.to_numpy() & metric.geometry.is_valid.to_numpy())
    if not fragile.any():
        return metric
    metric = metric.copy()
    metric.loc[fragile, "geometry"] = [
        reg.largest_part(reg.polygonal(g.buffer(1e-3, join_style="mitre").buffer(-1e-3, join_style="mitre")))
        for g in metric.geometry[fragile]]
    return metric


def _pixel_size_m(transform: Affine, crs: str, rows: int, cols: int) -> float:
    """Ground size of one pixel (metres) at the raster's centre."""
    cx, cy = transform @ (cols / 2, rows / 2)
    px = gpd.GeoSeries([box(cx, cy, cx + abs(transform.a), cy + abs(transform.e))], crs=crs)
    return float(np.sqrt(px.to_crs(px.estimate_utm_crs()).area.iloc[0]))


def _regularised(metric: gpd.GeoDataFrame, block_of: np.ndarray, tolerance_m: float, pixel_m: float,
                 tile_box: BaseGeometry) -> gpd.GeoDataFrame:
    """One row per building label: its block's outline regularised, cut along shared walls.

    A block whose walls do not survive (a building would keep under half its traced area) is
    kept as one building, the label with the most area. Neighbouring blocks a pixel apart may
    reach into each other after regularisation: the overlap goes to the one whose traced
    outline covers more of it.
    """
    pieces = metric.dissolve(by="_label", as_index=False)
    pieces["_block"] = block_of[pieces["_label"].to_numpy() - 1]
    out_labels: list[int] = []
    out_geoms: list[BaseGeometry] = []
    for _, group in pieces.groupby("_block", sort=False):
        raw = list(group.geometry)
        labels = group["_label"].tolist()
        outline = raw[0] if len(raw) == 1 else shapely.union_all(raw)
        block = reg.regularise_outline(reg.largest_part(reg.polygonal(outline)), tolerance_m)
        if len(raw) == 1:
            out_labels.append(labels[0])
            out_geoms.append(block.polygon)
            continue
        split = reg.split_block(block.polygon, [reg.largest_part(g) for g in raw], tolerance_m, pixel_m,
                                block.axis_deg)
        if all(s.area >= 0.5 * r.area for s, r in zip(split, raw)):
            out_labels.extend(labels)
            out_geoms.extend(split)
        else:
            out_labels.append(labels[int(np.argmax([r.area for r in raw]))])
            out_geoms.append(block.polygon)
    # A hole under a hundredth of a pixel is a sliver of snapping, not a courtyard (and may
    # collapse to a line in degrees); one touching the shell may cross it once reprojected.
    out_geoms = [reg.without_small_holes(g, (pixel_m / 10) ** 2, pixel_m / 10) for g in out_geoms]
    raw_of = dict(zip(pieces["_label"], pieces.geometry))
    # Last, so that nothing after it can bring an overlap back.
    out_geoms = reg.without_overlaps(out_geoms, [raw_of[k] for k in out_labels])
    result = gpd.GeoDataFrame({"_label": out_labels}, geometry=out_geoms, crs=metric.crs)
    # Outlines never reach past the tile: the neighbour's piece continues there.
    crosses = ~result.geometry.within(tile_box)
    if crosses.any():
        result.loc[crosses, "geometry"] = [reg.largest_part(reg.polygonal(g.intersection(tile_box)))
                                          for g in result.geometry[crosses]]
    return result
