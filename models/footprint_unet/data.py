"""Building-footprint training data: RoboSat-style slippy-map tiles with binary masks.

Layout of a dataset directory (e.g. ``../shared/data/footprints/xiamen-z18``)::

    tiles/<z>/<x>/<y>.webp     RGB imagery, 256×256
    masks/<z>/<x>/<y>.png      palette PNG, 0 = background, 1 = building
    csv_training.tiles         one "x,y,z" per line (also csv_validation / csv_evaluation)

Every image goes through :func:`urbanfabric.imagery.calibration.iqr_scale` per tile, exactly as the
pipeline prepares ARD patches before inference, so training and serving inputs agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from urbanfabric.imagery.calibration import iqr_scale

SPLITS = ("training", "validation", "evaluation")


@dataclass(frozen=True)
class TileId:
    """A slippy-map tile address."""

    x: int
    y: int
    z: int


def read_split(data_dir: Path, split: str) -> list[TileId]:
    """Tile ids of one split, in file order.

    Args:
        data_dir: dataset root.
        split: one of :data:`SPLITS`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    ids = []
    for line in (Path(data_dir) / f"csv_{split}.tiles").read_text().splitlines():
        line = line.strip()
        if line:
            x, y, z = (int(v) for v in line.split(","))
            ids.append(TileId(x, y, z))
    return ids


def load_image(data_dir: Path, tile: TileId) -> np.ndarray:
    """Raw RGB tile as uint8 ``(3, H, W)``."""
    path = Path(data_dir) / "tiles" / str(tile.z) / str(tile.x) / f"{tile.y}.webp"
    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB")).transpose(2, 0, 1))


def load_mask(data_dir: Path, tile: TileId) -> np.ndarray:
    """Binary building mask as uint8 ``(H, W)`` with values 0/1."""
    path = Path(data_dir) / "masks" / str(tile.z) / str(tile.x) / f"{tile.y}.png"
    with Image.open(path) as im:
        # Palette PNG: the stored indices are the labels; convert("L") would map colours.
        mask = np.asarray(im if im.mode in ("P", "L", "1") else im.convert("L"))
    return (mask > 0).astype(np.uint8)


def augment(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random dihedral transform plus mild brightness/contrast jitter.

    Jitter is applied after IQR scaling: the scaling itself removes most linear radiometric
    differences, so what remains to simulate is the small residual variation of ARD.

    Args:
        image: float32 ``(3, H, W)`` in 0..1 (already IQR-scaled).
        mask: ``(H, W)`` labels.
        rng: random generator.

    Returns:
        Augmented copies (image still clipped to 0..1).
    """
    k = int(rng.integers(4))
    image, mask = np.rot90(image, k, axes=(1, 2)), np.rot90(mask, k)
    if rng.random() < 0.5:
        image, mask = image[:, :, ::-1], mask[:, ::-1]
    contrast = rng.uniform(0.85, 1.15)
    brightness = rng.uniform(-0.08, 0.08)
    gain = rng.uniform(0.95, 1.05, size=(3, 1, 1))  # slight per-band colour shift
    mean = image.mean(axis=(1, 2), keepdims=True)
    image = (image - mean) * contrast * gain + mean + brightness
    return np.clip(image, 0.0, 1.0).astype(np.float32), np.ascontiguousarray(mask)


class FootprintTiles(Dataset):
    """Tiles of one split as ``(image float32 (3,H,W) 0..1, mask float32 (1,H,W) 0/1)``.

    Raw tiles are cached in memory as uint8 (≈ 200 KB each) after first read; scaling and
    augmentation run per access.
    """

    def __init__(
        self, data_dir: Path | str, split: str, augment: bool = False, seed: int = 0
    ) -> None:
        """Index a split.

        Args:
            data_dir: dataset root.
            split: ``training``, ``validation`` or ``evaluation``.
            augment: apply :func:`augment` (training only).
            seed: seed of the augmentation generator.
        """
        self.data_dir = Path(data_dir)
        self.split = split
        self.tiles = read_split(self.data_dir, split)
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.tiles)

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Cached raw uint8 image ``(3,H,W)`` and mask ``(H,W)``."""
        if index not in self._cache:
            tile = self.tiles[index]
            self._cache[index] = (load_image(self.data_dir, tile), load_mask(self.data_dir, tile))
        return self._cache[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raw_image, mask = self.raw(index)
        image = iqr_scale(raw_image)
        if self.augment:
            image, mask = augment(image, mask, self.rng)
        return (
            torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)[None]),
        )
