"""Segmentation: calibrated tile → building probability → footprint polygons.

* :func:`predict_tiled` runs any patch model over a tile in overlapping windows and blends the
  windows with a smooth weight, so window borders leave no seams (Global Building Map,
  "Inference"). The model is a plain callable; the service passes one that calls the model
  server, tests pass a fake.
* :func:`polygonize` turns the probability map into simplified footprint polygons
  (connected components → polygons, Douglas–Peucker simplification, minimum-area filter) with a
  confidence per footprint (mean probability inside it).
* :func:`~urbanfabric.footprints.tta.with_tta` wraps a patch model in test-time
  augmentation before it goes to :func:`predict_tiled`.
* :func:`~urbanfabric.footprints.ensemble.combine` (or :func:`~urbanfabric.footprints.ensemble.ensemble_vote` and
  :func:`~urbanfabric.footprints.ensemble.ensemble_mean`) combines N members' probability maps, by a vote (GBM "Model Ensemble":
  building where at least k of N members say so) or by their mean, into one map that
  :func:`polygonize` thresholds like a probability; :func:`landcover_filter` is the optional
  post-filter hook (GBM "Post-Processing": drop building pixels on excluded land-cover classes,
  a weak rule set inside urban areas and a strict one outside).
* Pieces of one building split by a tile border are joined afterwards by
  :func:`urbanfabric.footprints.seams.merge_seams`.
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
from urbanfabric.footprints.tta import PatchModel

DEFAULT_MIN_AREA_M2 = 10.0
DEFAULT_SIMPLIFY_M = 0.75


def _window_weight(size: int) -> np.ndarray:
    """2-D blending weight: high in the window centre, small but non-zero at its edges."""
    ramp = np.hanning(size + 2)[1:-1].astype(np.float32)
    w = np.outer(ramp, ramp)
    return np.maximum(w, 1e-3)


def _starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def predict_tiled(
    image: np.ndarray,
    model: PatchModel,
    window: int = 512,
    overlap: int = 128,
    batch_size: int = 4,
) -> np.ndarray:
    """Building probability of a whole ``(3, H, W)`` image from overlapping windows.

    Args:
        image: ARD, float32 0–1; NaN (nodata) is fed to the model as 0 and stays NaN.
        model: patch model; windows are ``window`` pixels square (must suit the model,
            e.g. a multiple of 32 for a U-Net).
        window: window side in pixels.
        overlap: pixels shared by neighbouring windows; blended with a Hann weight.
        batch_size: windows per model call.

    Returns:
        ``(H, W)`` float32 probability, NaN where the input was nodata.
    """
    if image.ndim != 3:
        raise InvalidInput("image", f"expected (bands, rows, cols), got {image.shape}")
    _, rows, cols = image.shape
    nodata = np.isnan(image).all(axis=0)
    filled = np.nan_to_num(image, nan=0.0).astype(np.float32)
    # Pad small images up to one window so every call has the model's shape.
    pr, pc = max(window - rows, 0), max(window - cols, 0)
    if pr or pc:
        filled = np.pad(filled, ((0, 0), (0, pr), (0, pc)), mode="reflect")
    H, W = filled.shape[1:]
    stride = window - overlap
    weight = _window_weight(window)
    acc = np.zeros((H, W), np.float32)
    norm = np.zeros((H, W), np.float32)
    windows = [(r, c) for r in _starts(H, window, stride) for c in _starts(W, window, stride)]
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        batch = np.stack([filled[:, r : r + window, c : c + window] for r, c in chunk])
        probs = np.asarray(model(batch), dtype=np.float32)
        if probs.shape != (len(chunk), window, window):
            raise InvalidInput("model", f"returned shape {probs.shape} for {batch.shape}")
        for (r, c), p in zip(chunk, probs):
            acc[r : r + window, c : c + window] += p * weight
            norm[r : r + window, c : c + window] += weight
    prob = (acc / norm)[:rows, :cols]
    prob[nodata] = np.nan
    return prob


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
