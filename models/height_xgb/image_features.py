"""Image evidence features for the Xiamen height labels, from the z18 slippy tiles.

The 707 RGB tiles (``footprints/xiamen-z18/tiles/18/x/y.webp``, EPSG:3857, 0.597 m per
Mercator unit ≈ 0.54 ground m) are assembled into one mosaic (missing tiles are nodata), and
:class:`urbanfabric.attributes.chip_reader.RasterChipReader` cuts each footprint's chip from
it — the same reader the pipeline uses on ARD rasters, so buildings on a tile edge see their
neighbouring tiles. Features are cached (``--cache``) keyed by the label file's sha256.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import affine
import geopandas as gpd
import numpy as np
import pandas as pd
from PIL import Image

from urbanfabric.attributes.chip_reader import RasterChipReader
from urbanfabric.attributes.image_evidence import (
    CHIP_MARGIN_M,
    image_evidence_features,
    shadow_asymmetry,
)

TILES = Path("footprints/xiamen-z18/tiles")
EARTH_R = 6378137.0


def xiamen_mosaic(data_root: Path, zoom: int = 18) -> RasterChipReader:
    """All Xiamen tiles as one NaN-padded EPSG:3857 raster reader."""
    paths = sorted((data_root / TILES / str(zoom)).glob("*/*.webp"))
    xs = np.array([int(p.parent.name) for p in paths])
    ys = np.array([int(p.stem) for p in paths])
    x0, y0 = xs.min(), ys.min()
    w, h = (xs.max() - x0 + 1) * 256, (ys.max() - y0 + 1) * 256
    mosaic = np.zeros((3, h, w), np.uint8)
    valid = np.zeros((h, w), bool)
    for p, x, y in zip(paths, xs, ys):
        with Image.open(p) as im:
            a = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
        r, c = (y - y0) * 256, (x - x0) * 256
        mosaic[:, r:r + 256, c:c + 256] = a
        valid[r:r + 256, c:c + 256] = True
    res = 2 * math.pi * EARTH_R / 2**zoom / 256
    transform = affine.Affine(res, 0, -math.pi * EARTH_R + x0 * 256 * res,
                              0, -res, math.pi * EARTH_R - y0 * 256 * res)
    return RasterChipReader(mosaic, transform, "EPSG:3857", valid=valid)


def xiamen_image_features(gdf: gpd.GeoDataFrame, data_root: Path, label_sha: str,
                          cache: Path | None, batch: int = 200) -> tuple[pd.DataFrame, np.ndarray,
                                                                         dict[str, Any]]:
    """Image features (``image_evidence_features``) of every row of ``gdf``, cached."""
    key = hashlib.sha256(f"{label_sha}:{len(gdf)}:v2".encode()).hexdigest()[:16]
    if cache is not None:
        f = cache / f"xiamen_image_features_{key}.parquet"
        if f.is_file():
            t = pd.read_parquet(f)
            info = json.loads((cache / f"xiamen_image_features_{key}.json").read_text())
            return t.drop(columns="image_reason"), t["image_reason"].to_numpy(object), info
    reader = xiamen_mosaic(data_root)
    # One scene: estimate the shadow direction once from all chips (largest 300 footprints).
    # One scene: the shadow direction from the whole mosaic (no sun metadata for these tiles).
    geoms = gpd.GeoSeries(gdf.geometry.values, crs=gdf.crs)
    data = np.where(reader.valid[None], reader.data, np.nan).astype(np.float32)
    lat = float(geoms.to_crs(4326).union_all().centroid.y)
    curve = shadow_asymmetry(data, reader.transform.a * math.cos(math.radians(lat)))
    az = float(np.argmax(curve) * 5.0)
    est = {"method": "shadow_asymmetry over the mosaic", "curve": curve.round(5).tolist()}
    tables, reasons = [], []
    for s in range(0, len(gdf), batch):
        chips = reader.chips(geoms.iloc[s:s + batch], CHIP_MARGIN_M)
        t, r, _ = image_evidence_features(chips, shadow_azimuth_deg=az)
        tables.append(t)
        reasons.append(r)
    table = pd.concat(tables, ignore_index=True)
    reason = np.concatenate(reasons)
    info = {"shadow_azimuth_deg": az, "estimate": est,
            "n_with_features": int((reason == "").sum()),
            "reasons": {k: int(v) for k, v in zip(*np.unique(reason, return_counts=True))}}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        table.assign(image_reason=reason).to_parquet(
            cache / f"xiamen_image_features_{key}.parquet")
        (cache / f"xiamen_image_features_{key}.json").write_text(json.dumps(info, indent=2))
    return table, reason, info
