"""Building probability → footprint polygons, and the land-cover post-filter before them.

* :func:`polygonize` turns the probability map into simplified footprint polygons (connected
  components → polygons, Douglas–Peucker simplification, minimum-area filter) with a
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
from shapely.geometry import box, shape

from urbanfabric.errors import InvalidInput


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
) -> gpd.GeoDataFrame:
    """Footprint polygons from a probability map.

    Returns a GeoDataFrame in EPSG:4326 with ``building_id``, ``footprint_confidence``,
    ``footprint_area_m2``, ``footprint_source`` ("segmented"), ``tile_id`` and ``on_border``
    (the polygon touches the raster edge, so it may continue in the next tile).
    """
    if not 0 < threshold < 1:
        raise InvalidInput("threshold", f"must be in (0, 1), got {threshold}")
    mask = np.nan_to_num(prob, nan=0.0) >= threshold
    labels, n = ndimage.label(mask)
    columns = ["building_id", "footprint_confidence", "footprint_area_m2", "footprint_source",
               "tile_id", "on_border"]
    if n == 0:
        return gpd.GeoDataFrame(columns=columns, geometry=[], crs="EPSG:4326")
    confidence = ndimage.mean(np.nan_to_num(prob, nan=0.0), labels, index=np.arange(1, n + 1))
    geoms, conf = [], []
    for geom, value in rasterio.features.shapes(labels.astype(np.int32), mask=labels > 0,
                                                transform=transform, connectivity=4):
        geoms.append(shape(geom))
        conf.append(float(confidence[int(value) - 1]))
    rows, cols = prob.shape
    frame = gpd.GeoDataFrame({"footprint_confidence": conf}, geometry=geoms, crs=crs)
    # Merge the pieces of one component (rare: holes split by 4-connectivity) and work in
    # metres for simplification and area.
    metric = frame.to_crs(frame.estimate_utm_crs())
    left, top = transform @ (0, 0)
    right, bottom = transform @ (cols, rows)
    edge = gpd.GeoSeries([box(left, bottom, right, top).exterior], crs=crs).to_crs(metric.crs)
    metric["geometry"] = metric.geometry.simplify(simplify_tolerance_m, preserve_topology=True)
    metric = metric[metric.geometry.is_valid & ~metric.geometry.is_empty]
    metric["footprint_area_m2"] = metric.geometry.area
    metric = metric[metric["footprint_area_m2"] >= min_area_m2]
    metric["on_border"] = metric.geometry.distance(edge.iloc[0]) < 2 * abs(transform.a)
    out = metric.to_crs("EPSG:4326")
    pts = out.geometry.representative_point()
    out["building_id"] = [building_id(p.x, p.y) for p in pts]
    out["footprint_source"] = "segmented"
    out["tile_id"] = tile_id
    return out[columns + ["geometry"]].reset_index(drop=True)
