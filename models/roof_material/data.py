"""Roof images of a class-per-folder data set, normalised like pipeline chips, plus augmentation.

Every image goes through the pipeline's own input path: :func:`urbanfabric.imagery.calibration.iqr_scale`
on the chip (bands, rows, cols), then :func:`urbanfabric.materials.chips.resize_chip` to the chip
size. Augmentations act on the IQR-scaled image before the final resize.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from urbanfabric.imagery.calibration import iqr_scale
from urbanfabric.materials.chips import resize_chip


@dataclass(frozen=True)
class Sample:
    """One labelled roof image; ``building_id`` is the file stem (one image per building)."""

    path: Path
    label: int
    building_id: str


def class_names(root: str | Path, split: str = "train") -> list[str]:
    """Sorted class folder names of ``root/split``."""
    return sorted(p.name for p in (Path(root) / split).iterdir() if p.is_dir())


def list_samples(root: str | Path, split: str, classes: list[str]) -> list[Sample]:
    """All images of ``root/split/<class>/`` for the given classes, sorted by path.

    Raises:
        FileNotFoundError: the split folder does not exist.
    """
    base = Path(root) / split
    if not base.is_dir():
        raise FileNotFoundError(base)
    out: list[Sample] = []
    for label, name in enumerate(classes):
        folder = base / name
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif", ".tiff"}:
                    out.append(Sample(f, label, f.stem))
    return out


def load_scaled(path: str | Path) -> np.ndarray:
    """Image file → IQR-scaled ``(3, rows, cols)`` float32 in 0–1 at native resolution."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return iqr_scale(np.moveaxis(rgb, -1, 0))


def eval_chip(scaled: np.ndarray, size: int) -> np.ndarray:
    """Deterministic chip of an IQR-scaled image: the whole image resized to ``size``."""
    return resize_chip(scaled, size)


def augment(scaled: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Random training chip of an IQR-scaled image.

    Random resized crop (50–100 % of the area, aspect 3:4–4:3), optional loss of resolution
    (the training images are ~drone resolution, pipeline orthophotos are coarser), rot90 and
    flips (roofs have no "up"), and mild photometric jitter that mimics differing per-band
    IQR scaling between a chip and a whole tile.
    """
    _, h, w = scaled.shape
    area = h * w * rng.uniform(0.5, 1.0)
    ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    ch = round(min(h, math.sqrt(area / ratio)))
    cw = round(min(w, math.sqrt(area * ratio)))
    ch, cw = max(ch, 1), max(cw, 1)
    r0 = int(rng.integers(0, h - ch + 1))
    c0 = int(rng.integers(0, w - cw + 1))
    x = scaled[:, r0 : r0 + ch, c0 : c0 + cw]

    if rng.random() < 0.3:
        low = max(8, round(size * rng.uniform(0.35, 0.8)))
        x = resize_chip(x, low)
    x = resize_chip(x, size)

    x = np.rot90(x, k=int(rng.integers(0, 4)), axes=(1, 2))
    if rng.random() < 0.5:
        x = x[:, :, ::-1]

    x = x * rng.uniform(0.8, 1.2)  # brightness
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.8, 1.2) + mean  # contrast
    gray = x.mean(axis=0, keepdims=True)
    x = (x - gray) * rng.uniform(0.7, 1.3) + gray  # saturation
    x = x * rng.uniform(0.93, 1.07, size=(3, 1, 1))  # per-band gain
    return np.clip(x, 0.0, 1.0).astype(np.float32)
