"""Footprint training/evaluation scenes from the shared data sets, split by location.

Every data set is read into :class:`Scene` objects: one source image (uint8 ``(3, H, W)``), its
binary building mask (uint8 ``(H, W)``) and a *location group*. Splits are assigned per group,
never per chip, so no source tile, image or area is shared between training and test:

=================  ===========================================  =========================================
data set           location group                               split (train / val / test)
=================  ===========================================  =========================================
``xiamen``         its own slippy-map tile                      the set's ``csv_training/validation/
                                                                evaluation.tiles`` (random per tile)
``dubai``          the source tile ``tN`` of ``image_part_XtN``  t1 t3 t4 t5 t6 t7 / t2 / t8
``crowdai``        the chip (no coordinates in the sample)      12 / 4 / 4 chips by a hash of the name
``spacenet``       one 900×900 scene, split in space            columns 0–499 / none / 564–899
                                                                (a 64 px = 32 m gap is left unused)
=================  ===========================================  =========================================

Resolution (:data:`NATIVE_GSD_M`): xiamen ≈ 0.54 m, spacenet 0.5 m, crowdai ≈ 0.3 m; dubai's GSD
is not published (villas of ≈ 15 m span ≈ 8–12 px, so ≈ 1.2–2 m) and varies by tile. All are
kept at their native resolution: the sample crowdai chips are 300 px, and resampling them to
0.5 m would leave 180 px chips, below the 256 px training crop. A model trained on several
GSDs records them (:func:`training_gsd`, ``input`` of its config) and the pipeline reads
imagery inside that range at its own GSD, outside it at the nearest end (issue 20, item 0;
:func:`urbanfabric.imagery.tiles.grid_gsd`).

SpaceNet's chip is panchromatic uint16; it is repeated to three bands. All images go through
:func:`urbanfabric.imagery.calibration.iqr_scale` per chip, like the pipeline's ARD patches.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.footprint_unet import data as xiamen_data

#: Each data set's ground sampling distance in metres (data README, module docstring); Dubai's
#: is not published (``None``: ≈ 1.2–2 m judging by villa sizes, and varying by tile).
NATIVE_GSD_M: dict[str, float | None] = {"xiamen": 0.54, "crowdai": 0.30, "spacenet": 0.50, "dubai": None}


def training_gsd(datasets: list[str]) -> dict:
    """The ``input`` fields a model trained on ``datasets`` (at their native GSDs) records:
    ``training_gsd_m`` per data set, ``gsd_range_m`` (finest and coarsest known; the pipeline
    reads imagery inside it at its own GSD) and ``gsd_m`` (the finest: the target for finer
    imagery, and for imagery of unknown GSD); see :func:`urbanfabric.imagery.tiles.grid_gsd`."""
    per_set = {ds: NATIVE_GSD_M.get(ds) for ds in datasets}
    known = sorted(g for g in per_set.values() if g)
    if not known:
        return {"training_gsd_m": per_set}
    out: dict = {"gsd_m": known[0], "training_gsd_m": per_set}
    if known[-1] > known[0]:
        out["gsd_range_m"] = [known[0], known[-1]]
    return out


SPLITS = ("train", "val", "test")
DATASETS = ("xiamen", "dubai", "crowdai", "spacenet")
DEFAULT_ROOT = Path("../shared/data/footprints")

#: Dubai's RGB-coded class colour for "Building" (``classes.json``).
DUBAI_BUILDING_RGB = (0x3C, 0x10, 0x98)
DUBAI_SPLIT = {"t2": "val", "t8": "test"}  # all other source tiles train
SPACENET_TRAIN_COLS = (0, 500)
SPACENET_TEST_COLS = (564, 900)
_XIAMEN_SPLIT = {"train": "training", "val": "validation", "test": "evaluation"}


@dataclass
class Scene:
    """One labelled image of a data set.

    Attributes:
        dataset: data set name (one of :data:`DATASETS`).
        name: image name, unique within the data set.
        group: location group; all scenes of a group share one split.
        image: uint8 or uint16 ``(3, H, W)`` raw image.
        mask: uint8 ``(H, W)`` 0/1 building mask.
    """

    dataset: str
    name: str
    group: str
    image: np.ndarray
    mask: np.ndarray

    @property
    def pixels(self) -> int:
        return int(self.mask.size)


def _hash_fraction(text: str) -> float:
    """Deterministic number in [0, 1) from a name (stable across runs and machines)."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) / 2**32


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def load_xiamen(root: Path, split: str) -> list[Scene]:
    """Xiamen z18 tiles of a split (the set's own per-tile split)."""
    data_dir = root / "xiamen-z18"
    scenes = []
    for tile in xiamen_data.read_split(data_dir, _XIAMEN_SPLIT[split]):
        name = f"{tile.z}/{tile.x}/{tile.y}"
        scenes.append(Scene("xiamen", name, name, xiamen_data.load_image(data_dir, tile),
                            xiamen_data.load_mask(data_dir, tile)))
    return scenes


def dubai_split(group: str) -> str:
    """Split of a Dubai source tile (``t1`` … ``t8``)."""
    return DUBAI_SPLIT.get(group, "train")


def load_dubai(root: Path, split: str) -> list[Scene]:
    """Dubai images whose source tile falls in ``split``; Building (#3C1098) → 1."""
    base = root / "dubai" / "Semantic segmentation dataset"
    scenes = []
    for path in sorted((base / "image").glob("image_part_*t*.jpg")):
        group = "t" + path.stem.rsplit("t", 1)[1]
        if dubai_split(group) != split:
            continue
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
        with Image.open(base / "mask" / f"{path.stem}.png") as im:
            rgb = np.asarray(im.convert("RGB"))
        mask = np.all(rgb == np.array(DUBAI_BUILDING_RGB, dtype=np.uint8), axis=-1).astype(np.uint8)
        if mask.shape != image.shape[1:]:
            raise ValueError(f"{path.name}: mask {mask.shape} != image {image.shape[1:]}")
        scenes.append(Scene("dubai", path.stem, group, np.ascontiguousarray(image), mask))
    return scenes


def crowdai_split(file_name: str) -> str:
    """Split of a crowdAI chip: 60 / 20 / 20 % by a hash of its file name."""
    f = _hash_fraction("crowdai:" + file_name)
    return "train" if f < 0.6 else ("val" if f < 0.8 else "test")


def rasterize_coco(annotations: list[dict], height: int, width: int) -> np.ndarray:
    """Binary mask from COCO polygon ``segmentation`` lists (the bbox field is not used)."""
    from PIL import ImageDraw

    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for ann in annotations:
        seg = ann.get("segmentation")
        if not isinstance(seg, list):  # RLE (iscrowd) never occurs in the sample
            raise ValueError(f"annotation {ann.get('id')}: only polygon segmentations supported")
        for poly in seg:
            pts = list(zip(poly[0::2], poly[1::2]))
            if len(pts) >= 3:
                draw.polygon(pts, fill=1, outline=1)
    return np.asarray(canvas, dtype=np.uint8)


def load_crowdai(root: Path, split: str) -> list[Scene]:
    """crowdAI mapping-challenge chips of a split with rasterized COCO polygons."""
    base = root / "crowdai" / "train"
    coco = json.loads((base / "annotation.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    scenes = []
    for info in sorted(coco["images"], key=lambda i: i["file_name"]):
        if crowdai_split(info["file_name"]) != split:
            continue
        with Image.open(base / "images" / info["file_name"]) as im:
            image = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
        mask = rasterize_coco(by_image.get(info["id"], []), info["height"], info["width"])
        name = Path(info["file_name"]).stem
        scenes.append(Scene("crowdai", name, name, np.ascontiguousarray(image), mask))
    return scenes


def load_spacenet(root: Path, split: str) -> list[Scene]:
    """The SpaceNet Atlanta chip cut into a training and a test strip with a gap between."""
    import rasterio
    import rasterio.features
    from shapely.geometry import shape

    if split == "val":
        return []
    base = root / "spacenet-atlanta"
    with rasterio.open(base / "sample_geotiff.tif") as src:
        pan = src.read(1)
        transform, out_shape = src.transform, (src.height, src.width)
    features = json.loads((base / "geotiff_labels.geojson").read_text())["features"]
    shapes = [(shape(f["geometry"]), 1) for f in features if f.get("geometry")]
    mask = rasterio.features.rasterize(shapes, out_shape=out_shape, transform=transform,
                                       fill=0, dtype="uint8")
    c0, c1 = SPACENET_TRAIN_COLS if split == "train" else SPACENET_TEST_COLS
    image = np.repeat(pan[None, :, c0:c1], 3, axis=0)
    return [Scene("spacenet", f"atlanta_cols{c0}-{c1}", "atlanta", np.ascontiguousarray(image),
                  np.ascontiguousarray(mask[:, c0:c1]))]


_LOADERS = {"xiamen": load_xiamen, "dubai": load_dubai, "crowdai": load_crowdai,
            "spacenet": load_spacenet}


def load(dataset: str, split: str, root: Path | str = DEFAULT_ROOT) -> list[Scene]:
    """Scenes of one data set and split.

    Args:
        dataset: one of :data:`DATASETS`.
        split: ``train``, ``val`` or ``test``.
        root: the shared ``footprints`` folder.

    Raises:
        ValueError: unknown data set or split.
        FileNotFoundError: the data set is not under ``root``.
    """
    _check_split(split)
    if dataset not in _LOADERS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    return _LOADERS[dataset](Path(root), split)


def check_zoom_range(scale: tuple[float, float]) -> tuple[float, float]:
    """``scale`` if it is a valid zoom range ``0 < low <= high``, else :class:`ValueError`."""
    low, high = scale
    if not 0 < low <= high:
        raise ValueError(f"scale must be 0 < low <= high, got {scale}")
    return low, high


def random_crop(
    scene: Scene, size: int, rng: np.random.Generator, scale: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size``² crop (reflect-padded where the scene is smaller), optionally rescaled.

    Args:
        scene: the source scene.
        size: output side in pixels.
        rng: random generator.
        scale: ``(low, high)`` zoom range: a zoom ``z`` is drawn log-uniformly, a
            ``size / z`` square is cut and resized to ``size`` (bilinear with antialiasing for
            the image, nearest for the mask). ``z > 1`` magnifies (buildings look bigger, as at
            a finer GSD). ``None`` keeps the native resolution.

    Returns:
        ``image (3, size, size)`` (float32 when rescaled, else the scene's dtype) and the
        uint8 ``mask (size, size)``.
    """
    zoom = 1.0
    if scale is not None:
        low, high = check_zoom_range(scale)
        zoom = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    src = max(1, int(round(size / zoom)))
    image, mask = scene.image, scene.mask
    h, w = mask.shape
    if h < src or w < src:
        ph, pw = max(src - h, 0), max(src - w, 0)
        mode = "reflect" if ph < h and pw < w else "symmetric"
        image = np.pad(image, ((0, 0), (0, ph), (0, pw)), mode=mode)
        mask = np.pad(mask, ((0, ph), (0, pw)), mode=mode)
        h, w = mask.shape
    r = int(rng.integers(0, h - src + 1))
    c = int(rng.integers(0, w - src + 1))
    image, mask = image[:, r : r + src, c : c + src], mask[r : r + src, c : c + src]
    if src == size:
        return image, mask
    return _resize(image, mask, size)


def _resize(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a crop to ``size``²: antialiased bilinear image, nearest mask."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.array(image, dtype=np.float32))[None]
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    m = torch.from_numpy(np.array(mask, dtype=np.uint8))[None, None]  # a copy: crops of read-only arrays
    m = F.interpolate(m.float(), size=(size, size), mode="nearest")[0, 0]
    return out.numpy(), m.numpy().astype(np.uint8)
