"""Images from other sensors and cities than a classifier trained on: the shifted side of the
out-of-domain AUROC (issue 18, item 2; ``models.classifiers.domain``).

Every source gives raw RGB windows ``(3, h, w)`` (0–255 float) around buildings, cut the way the
pipeline cuts a roof chip (footprint box + 15 % margin per side, squared) where the source has
footprints, else a fixed grid of windows. :func:`chips_for` scales them the way the model's
training images were scaled (IQR per image for overhead models, /255 for street-level ones,
:func:`urbanfabric.materials.chips.input_scaling`) and resamples them to the chip size. Every
choice is deterministic (sorted files, every k-th building), so the AUROC can be re-run.

Sources (``../shared/data``; see its README): ``xiamen`` (z18 satellite tiles, ≈0.54 m, with
the building polygons), ``crowdai`` (≈0.3 m satellite, COCO polygons), ``dubai`` (satellite
mosaics, grid windows), ``spacenet_atlanta`` (0.5 m panchromatic, its single band repeated
three times, with footprints), ``zanzibar_drone`` (7.75 cm drone orthophoto, grid windows),
``roof_shape`` and ``caribbean`` (the other roof task's crops), ``facades`` (street-level photos).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from models.classifiers.data import DATA_ROOT

MARGIN = 0.15
#: Most windows taken per source (every k-th building or grid cell beyond it).
MAX_PER_SOURCE = 300


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.moveaxis(np.asarray(img.convert("RGB"), dtype=np.float32), -1, 0)


def _box_window(image: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray | None:
    """The square, margin-enlarged window around a pixel box (zeros off the image)."""
    side = max(x1 - x0, y1 - y0) * (1 + 2 * MARGIN)
    if side < 4:
        return None
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    c0, r0 = int(math.floor(cx - side / 2)), int(math.floor(cy - side / 2))
    c1, r1 = int(math.ceil(cx + side / 2)), int(math.ceil(cy + side / 2))
    _, rows, cols = image.shape
    out = np.zeros((3, r1 - r0, c1 - c0), np.float32)
    sr0, sr1, sc0, sc1 = max(r0, 0), min(r1, rows), max(c0, 0), min(c1, cols)
    if sr1 <= sr0 or sc1 <= sc0:
        return None
    out[:, sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0] = image[:, sr0:sr1, sc0:sc1]
    return out


def _grid(image: np.ndarray, side: int) -> Iterator[np.ndarray]:
    _, rows, cols = image.shape
    for r in range(0, rows - side + 1, side):
        for c in range(0, cols - side + 1, side):
            yield image[:, r : r + side, c : c + side]


def _thin(items: list[np.ndarray], limit: int = MAX_PER_SOURCE) -> list[np.ndarray]:
    if len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def xiamen(root: Path = DATA_ROOT) -> list[np.ndarray]:
    """Building windows from the Xiamen z18 tiles (buildings whose box lies in one tile)."""
    base = root / "footprints" / "xiamen-z18"
    n = 2.0**18 * 256

    def px(lon: float, lat: float) -> tuple[float, float]:
        s = math.sin(math.radians(lat))
        return (lon + 180.0) / 360.0 * n, (0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * n

    feats = json.loads((base / "buildings.json").read_text())["features"]
    by_tile: dict[tuple[int, int], list[tuple[float, float, float, float]]] = {}
    for f in feats:
        ring = f["geometry"]["coordinates"][0] if f["geometry"]["type"] == "Polygon" else f["geometry"]["coordinates"][0][0]
        pts = [px(lon, lat) for lon, lat in ring]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        tx, ty = int(min(xs) // 256), int(min(ys) // 256)
        if int(max(xs) // 256) != tx or int(max(ys) // 256) != ty:
            continue
        by_tile.setdefault((tx, ty), []).append((min(xs) - tx * 256, min(ys) - ty * 256,
                                                 max(xs) - tx * 256, max(ys) - ty * 256))
    out = []
    for (tx, ty) in sorted(by_tile):
        path = base / "tiles" / "18" / str(tx) / f"{ty}.webp"
        if not path.is_file():
            continue
        image = _rgb(path)
        for box in by_tile[(tx, ty)]:
            w = _box_window(image, *box)
            if w is not None:
                out.append(w)
    return _thin(out)


def crowdai(root: Path = DATA_ROOT) -> list[np.ndarray]:
    """Building windows from the crowdAI chips (COCO polygons)."""
    base = root / "footprints" / "crowdai" / "train"
    doc = json.loads((base / "annotation.json").read_text())
    files = {im["id"]: im["file_name"] for im in doc["images"]}
    out = []
    cache: dict[int, np.ndarray] = {}
    for ann in sorted(doc["annotations"], key=lambda a: a["id"]):
        seg = np.asarray(ann["segmentation"][0], dtype=np.float64).reshape(-1, 2)
        if ann["image_id"] not in cache:
            cache[ann["image_id"]] = _rgb(base / "images" / files[ann["image_id"]])
        w = _box_window(cache[ann["image_id"]], seg[:, 0].min(), seg[:, 1].min(), seg[:, 0].max(), seg[:, 1].max())
        if w is not None:
            out.append(w)
    return _thin(out)


def dubai(root: Path = DATA_ROOT) -> list[np.ndarray]:
    """192 px grid windows of the Dubai satellite mosaics."""
    base = root / "footprints" / "dubai" / "Semantic segmentation dataset"
    out = []
    for f in sorted(base.glob("*/image/*.jpg")) + sorted(base.glob("image/*.jpg")):
        out.extend(list(_grid(_rgb(f), 192))[:4])
    return _thin(out)


def spacenet_atlanta(root: Path = DATA_ROOT) -> list[np.ndarray]:
    """Building windows of the 0.5 m panchromatic Atlanta chip, its band repeated as RGB."""
    import rasterio
    import shapely.geometry

    base = root / "footprints" / "spacenet-atlanta"
    with rasterio.open(base / "sample_geotiff.tif") as src:
        pan = src.read(1).astype(np.float32)
        inv = ~src.transform
    image = np.repeat(pan[None], 3, axis=0)
    doc = json.loads((base / "geotiff_labels.geojson").read_text())
    out = []
    for f in doc["features"]:
        if not f.get("geometry"):
            continue
        x0, y0, x1, y1 = shapely.geometry.shape(f["geometry"]).bounds
        c0, r1 = inv * (x0, y0)
        c1, r0 = inv * (x1, y1)
        w = _box_window(image, min(c0, c1), min(r0, r1), max(c0, c1), max(r0, r1))
        if w is not None:
            out.append(w)
    return _thin(out + list(_grid(image, 100)))


def zanzibar_drone(root: Path = DATA_ROOT) -> list[np.ndarray]:
    """125 px grid windows (≈10 m, one roof) of the 7.75 cm Zanzibar drone orthophoto."""
    import rasterio

    path = root / "footprints" / "zanzibar-drone" / "input" / "training" / "images" / "tanzania_sample.tif"
    with rasterio.open(path) as src:
        image = src.read([1, 2, 3]).astype(np.float32)
    return _thin(list(_grid(image, 125)))


def roof_shape_crops(root: Path = DATA_ROOT) -> list[np.ndarray]:
    """The roof-shape data set's aerial crops (every k-th)."""
    files = sorted((root / "roofs" / "roof-shape" / "crops").glob("*"))
    return [_rgb(f) for f in _thin_paths(files)]


def caribbean_crops(root: Path = DATA_ROOT) -> list[np.ndarray]:
    """The Caribbean drone roof-material crops."""
    files = sorted((root / "roofs" / "caribbean-material").glob("*/*/*.png"))
    return [_rgb(f) for f in _thin_paths(files)]


def facade_photos(root: Path = DATA_ROOT) -> list[np.ndarray]:
    """Street-level façade photos of NYC and Tokyo."""
    files = sorted((root / "facades").glob("*/*.jpg"))
    return [_rgb(f) for f in _thin_paths(files)]


def _thin_paths(files: list[Path], limit: int = MAX_PER_SOURCE) -> list[Path]:
    if len(files) <= limit:
        return files
    step = len(files) / limit
    return [files[int(i * step)] for i in range(limit)]


SOURCES: dict[str, Callable[[], list[np.ndarray]]] = {
    "xiamen": xiamen,
    "crowdai": crowdai,
    "dubai": dubai,
    "spacenet_atlanta": spacenet_atlanta,
    "zanzibar_drone": zanzibar_drone,
    "roof_shape": roof_shape_crops,
    "caribbean": caribbean_crops,
    "facades": facade_photos,
}


def chips_for(windows: list[np.ndarray], size: int, scaling: str) -> np.ndarray:
    """Windows → ``(N, 3, size, size)`` 0–1 chips scaled as the model's training images."""
    from urbanfabric.imagery.calibration import iqr_scale
    from urbanfabric.materials.chips import resize_chip

    out = np.zeros((len(windows), 3, size, size), np.float32)
    for i, w in enumerate(windows):
        scaled = iqr_scale(w) if scaling == "iqr" else w / 255.0
        out[i] = np.clip(np.nan_to_num(resize_chip(np.asarray(scaled, np.float32), size), nan=0.0), 0.0, 1.0)
    return out
