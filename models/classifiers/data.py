"""The three training tasks as in-memory image sets with leakage-free train/val/test splits.

Every image becomes a square float32 0–1 array at ``round(chip * PAD)`` px (random crops for
training come out of the margin; evaluation resizes the whole image to the chip size):

- **roof_material** (``roofs/caribbean-material``, 5 classes, one image per roof): images go
  through the pipeline's input path (:func:`urbanfabric.imagery.calibration.iqr_scale`). The published
  train/ (97) and val/ (126) folders have very different class mixes (train: 4 ``incomplete``
  and 2 ``other``; val: 33 and 9), so we pool them and split by roof id, stratified by
  class, 50/20/30 → train/val/test (``split="pooled"``, default); ``split="published"`` keeps
  train/ for training and cuts val/ into val/test halves, for comparison with v1.
- **roof_shape** (``roofs/roof-shape``, hip/gable/flat): crops of the same source tile share
  neighbourhood and imaging, so the split is by ``source_image`` (grouped 70/15/15).
- **facade_<city>** (``facades/nyc``, ``facades/tokyo``): multi-label (one 0/1 column per
  material, plus ``null`` = no usable façade in view). Files are Roboflow exports
  (``m-<id>-L_jpg.rf.<hash>.jpg``); copies of one source photo share ``m-<id>-L``, which is
  the split group (grouped 60/20/20). Street-level JPEGs are scaled by /255, not IQR-scaled.

Splits are deterministic (seeded) and depend only on ids and labels, never on model output.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

#: Margin kept around the evaluation view so training crops can move (stored side = chip * PAD).
PAD = 1.15
DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"

#: Labels the two façade sets share (cross-city training/testing uses only these).
SHARED_FACADE_LABELS = ("brick", "null", "other", "stucco")


@dataclass
class ImageSet:
    """Images of one task with labels and split assignment.

    Attributes:
        task: task name.
        classes: class (single-label) or label (multi-label) names in output order.
        multi_label: ``y`` is ``(N, C)`` 0/1 instead of ``(N,)`` indices.
        images: ``(N, 3, P, P)`` float16 0–1 at the padded size.
        y: labels.
        ids: sample ids (file names).
        groups: split groups (roof id, source tile, source photo).
        split: ``"train" | "val" | "test"`` per sample.
        rotate: random 90° rotations are valid augmentations (overhead views).
        input_note: how the 0–1 input was made (goes into the model config).
    """

    task: str
    classes: list[str]
    multi_label: bool
    images: np.ndarray
    y: np.ndarray
    ids: list[str]
    groups: list[str]
    split: np.ndarray
    rotate: bool
    input_note: str
    meta: dict[str, object] = field(default_factory=dict)

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(images, y)`` of one split."""
        m = self.split == name
        return self.images[m], self.y[m]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per split, positives (multi-label) or members (single-label) per class."""
        out: dict[str, dict[str, int]] = {}
        for s in ("train", "val", "test"):
            y = self.y[self.split == s]
            n = np.nansum(y, 0) if self.multi_label else np.bincount(y, minlength=len(self.classes))
            out[s] = {"n": int((self.split == s).sum()), **{c: int(v) for c, v in zip(self.classes, n)}}
        return out


def _square(rgb: np.ndarray, side: int) -> np.ndarray:
    """``(3, r, c)`` float → ``(3, side, side)`` bilinear (aspect not kept, like the pipeline)."""
    from urbanfabric.materials.chips import resize_chip

    return resize_chip(rgb.astype(np.float32), side)


def _load_rgb(path: Path) -> np.ndarray:
    return np.moveaxis(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32), -1, 0)


def _iqr(rgb: np.ndarray) -> np.ndarray:
    from urbanfabric.imagery.calibration import iqr_scale

    return iqr_scale(rgb)


def _split_groups(
    groups: list[str], strata: list[str], fractions: tuple[float, float, float], seed: int
) -> np.ndarray:
    """Assign whole groups to train/val/test, per stratum, in the given fractions."""
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[str]] = {}
    first_stratum: dict[str, str] = {}
    for g, s in zip(groups, strata):
        if g not in first_stratum:
            first_stratum[g] = s
            by_stratum.setdefault(s, []).append(g)
    assign: dict[str, str] = {}
    for s in sorted(by_stratum):
        gs = sorted(by_stratum[s])
        rng.shuffle(gs)
        n = len(gs)
        n_val = max(1, round(n * fractions[1])) if n >= 3 else 0
        n_test = max(1, round(n * fractions[2])) if n >= 3 else (1 if n == 2 else 0)
        for i, g in enumerate(gs):
            assign[g] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return np.array([assign[g] for g in groups])


def roof_material(chip: int, root: Path | None = None, split: str = "pooled", seed: int = 0) -> ImageSet:
    """Caribbean roof-material set (see module docstring for the split)."""
    root = Path(root) if root else DATA_ROOT / "roofs" / "caribbean-material"
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    side = round(chip * PAD)
    imgs, ys, ids, origin = [], [], [], []
    for part in ("train", "val"):
        for k, c in enumerate(classes):
            for f in sorted((root / part / c).glob("*.png")):
                imgs.append(_square(_iqr(_load_rgb(f)), side))
                ys.append(k)
                ids.append(f.stem)
                origin.append(part)
    y = np.array(ys, dtype=np.int64)
    if split == "pooled":
        sp = _split_groups(ids, [classes[v] for v in y], (0.5, 0.2, 0.3), seed)
    elif split == "published":
        sp = np.array(origin, dtype=object)
        val_idx = np.flatnonzero(sp == "val")
        halves = _split_groups([ids[i] for i in val_idx], [classes[y[i]] for i in val_idx], (0.0, 0.5, 0.5), seed)
        halves[halves == "train"] = "val"  # tiny strata: keep them for calibration rather than training
        sp[val_idx] = halves
        sp = sp.astype(str)
    else:
        raise ValueError(f"split must be 'pooled' or 'published', got {split!r}")
    return ImageSet(
        "roof_material", classes, False, np.stack(imgs).astype(np.float16), y, ids, ids, sp, True,
        "urbanfabric.imagery.calibration.iqr_scale per image, 0-1 float32 (pipeline: per tile)",
        {"data": str(root), "split_scheme": split},
    )


def roof_shape(chip: int, root: Path | None = None, seed: int = 0) -> ImageSet:
    """Roof-shape crops (hip/gable/flat), split by source tile."""
    root = Path(root) if root else DATA_ROOT / "roofs" / "roof-shape"
    labels: dict[str, str] = json.loads((root / "labels.json").read_text())
    meta = json.loads((root / "crop_metadata.json").read_text())
    classes = sorted(set(labels.values()))
    names = sorted(labels)
    side = round(chip * PAD)
    imgs = [_square(_iqr(_load_rgb(root / "crops" / n)), side) for n in names]
    y = np.array([classes.index(labels[n]) for n in names], dtype=np.int64)
    groups = [meta[n]["source_image"] for n in names]
    # Stratify tiles by the label of their first crop: keeps class mixes similar across splits.
    sp = _split_groups(groups, [labels[n] for n in names], (0.7, 0.15, 0.15), seed)
    return ImageSet(
        "roof_shape", classes, False, np.stack(imgs).astype(np.float16), y, names, groups, sp, True,
        "urbanfabric.imagery.calibration.iqr_scale per crop, 0-1 float32", {"data": str(root)},
    )


_PHOTO = re.compile(r"^(.*?)_jpg\.rf\.")


def facade(city: str, chip: int, root: Path | None = None, seed: int = 0, labels: tuple[str, ...] | None = None) -> ImageSet:
    """Multi-label façade set of one city; ``labels`` restricts/reorders the label columns."""
    root = Path(root) if root else DATA_ROOT / "facades" / city
    with (root / "_classes.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    header = [h.strip() for h in rows[0]]
    cols = list(labels) if labels else header[1:]
    missing = [c for c in cols if c not in header]
    if missing:
        raise ValueError(f"{root}: no label columns {missing}")
    idx = [header.index(c) for c in cols]
    side = round(chip * PAD)
    names, ys, imgs = [], [], []
    for r in sorted(rows[1:]):
        names.append(r[0].strip())
        ys.append([int(r[i]) for i in idx])
        imgs.append(_square(_load_rgb(root / names[-1]) / 255.0, side))
    groups = [(_PHOTO.match(n) or re.match(r"(.*)", n)).group(1) for n in names]
    y = np.array(ys, dtype=np.float32)
    # Stratify by the rarest positive label of a photo so small labels reach every split.
    freq = y.sum(0)
    strata = [cols[int(np.argmin(np.where(row > 0, freq, np.inf)))] if row.any() else "none" for row in y]
    sp = _split_groups(groups, strata, (0.6, 0.2, 0.2), seed)
    return ImageSet(
        f"facade_{city}", cols, True, np.stack(imgs).astype(np.float16), y, names, groups, sp, False,
        "RGB / 255, 0-1 float32 (street-level JPEG, no IQR scaling)", {"data": str(root), "city": city},
    )


def facade_both(chip: int, seed: int = 0) -> ImageSet:
    """NYC and Tokyo together over the union of their labels (each city keeps its own split).

    A label one city does not annotate (``metal``/``wood`` in NYC, ``rustication``/``siding``
    in Tokyo) is ``NaN`` for that city's images: unknown, left out of loss and metrics, never
    counted as a negative.
    """
    parts = [facade(c, chip, seed=seed) for c in ("nyc", "tokyo")]
    labels = sorted({c for p in parts for c in p.classes})
    ys = []
    for p in parts:
        y = np.full((len(p.y), len(labels)), np.nan, dtype=np.float32)
        for j, c in enumerate(p.classes):
            y[:, labels.index(c)] = p.y[:, j]
        ys.append(y)
    cities = [p.meta["city"] for p in parts for _ in p.ids]
    return ImageSet(
        "facade_both", labels, True, np.concatenate([p.images for p in parts]), np.concatenate(ys),
        [i for p in parts for i in p.ids], [f"{p.meta['city']}/{g}" for p in parts for g in p.groups],
        np.concatenate([p.split for p in parts]), False, parts[0].input_note,
        {"data": ", ".join(str(p.meta["data"]) for p in parts), "cities": np.array(cities)},
    )


def load_task(task: str, chip: int, seed: int = 0) -> ImageSet:
    """``roof_material`` | ``roof_material_published`` | ``roof_shape`` | ``facade_nyc`` | ``facade_tokyo`` | ``facade_both``."""
    if task == "facade_both":
        return facade_both(chip, seed=seed)
    if task == "roof_material":
        return roof_material(chip, seed=seed)
    if task == "roof_material_published":
        return roof_material(chip, split="published", seed=seed)
    if task == "roof_shape":
        return roof_shape(chip, seed=seed)
    if task.startswith("facade_"):
        return facade(task.removeprefix("facade_"), chip, seed=seed)
    raise ValueError(f"unknown task {task!r}")
