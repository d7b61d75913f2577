"""Footprint masks for the labelled roof crops, so roof chips can be trained in every chip mode.

The issue asks to mask the roof chip outside the footprint polygon, with the context kept as
a channel or not, and to measure both. The labelled roof sets come without polygons: the
roof-shape crops (``roofs/roof-shape``) were cut around connected components of a building
mask that is not shipped, with ``crop_metadata.json`` giving the unpadded box of that building
inside the crop. We therefore draw each crop's footprint the way the pipeline does at run
time, with a shipped footprint model:

1. IQR-scale the crop (the pipeline's calibration), resample it by ``scale`` (these crops are
   ≈ 0.1 m aerial photos; the footprint models were trained at ≈ 0.3 m, and half resolution
   gave the cleanest masks on a visual check of eight crops), predict the building
   probability, bring it back to the crop's size and threshold it at the model's threshold;
2. keep the connected component that covers most of the building's box; if none touches the
   box, the box itself is the footprint (counted as a fallback and reported).

:func:`apply_chip_mode` then turns the ``context`` image set into ``masked`` (RGB × mask) or
``context+mask`` (RGB + mask channel) — the same three inputs
:func:`urbanfabric.materials.chips.roof_chips` cuts from a footprint polygon in the pipeline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from models.classifiers.data import ImageSet, _load_rgb, _square
from urbanfabric.imagery.calibration import iqr_scale
from urbanfabric.materials.chips import ChipMode
from urbanfabric.io.model_registry import weights_path


def _building_box(meta: dict[str, object]) -> tuple[int, int, int, int]:
    """The building's box inside its padded crop: row0, row1, col0, col1."""
    x, y, w, h = meta["bbox"]  # type: ignore[misc]
    px, py, _, _ = meta["bbox_padded"]  # type: ignore[misc]
    c0, r0 = int(x) - int(px), int(y) - int(py)
    return r0, r0 + int(h), c0, c0 + int(w)


def pick_component(prob: np.ndarray, threshold: float, box: tuple[int, int, int, int]) -> tuple[np.ndarray, bool]:
    """The thresholded component that covers most of ``box``; the box itself when none does.

    Returns:
        ``(mask, fallback)``: bool mask of the crop's shape, and whether the box was used.
    """
    r0, r1, c0, c1 = box
    labels, n = ndimage.label(prob >= threshold)
    inside = labels[max(r0, 0) : r1, max(c0, 0) : c1]
    counts = np.bincount(inside.ravel(), minlength=n + 1)
    counts[0] = 0
    if n == 0 or counts.max() == 0:
        mask = np.zeros(prob.shape, bool)
        mask[max(r0, 0) : r1, max(c0, 0) : c1] = True
        return mask, True
    return labels == int(counts.argmax()), False


def footprint_masks(
    root: Path, names: list[str], model_dir: Path, scale: float = 0.5
) -> tuple[list[np.ndarray], dict[str, float]]:
    """Footprint masks of roof-shape crops at their native size, and a quality summary.

    Args:
        root: the ``roofs/roof-shape`` folder (``crops/``, ``crop_metadata.json``).
        names: crop file names.
        model_dir: a shipped footprint model (``models/footprint_unet/v4``).
        scale: resampling factor applied before prediction.

    Returns:
        masks (bool, one per crop) and ``{"fallback_share", "box_cover_mean", "mask_in_box_mean"}``:
        how often the box was used, how much of the box the mask covers, and how much of the
        mask lies inside the box (low = neighbours merged in).
    """
    from models.footprint_unet.net import load_model, predict_proba, read_config

    meta = json.loads((root / "crop_metadata.json").read_text())
    model = load_model(model_dir)
    threshold = float(read_config(model_dir)["output"]["threshold"])
    masks, fallbacks, cover, purity = [], 0, [], []
    for name in names:
        x = iqr_scale(_load_rgb(root / "crops" / name))
        h, w = x.shape[1:]
        small = F.interpolate(torch.from_numpy(x)[None], scale_factor=scale, mode="bilinear", antialias=True)[0]
        prob = predict_proba(model, small.numpy()[None], batch_size=1)
        prob = F.interpolate(torch.from_numpy(prob)[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        box = _building_box(meta[name])
        mask, fell_back = pick_component(prob.numpy(), threshold, box)
        fallbacks += fell_back
        r0, r1, c0, c1 = box
        in_box = mask[max(r0, 0) : r1, max(c0, 0) : c1].sum()
        cover.append(in_box / max((r1 - max(r0, 0)) * (c1 - max(c0, 0)), 1))
        purity.append(in_box / max(mask.sum(), 1))
        masks.append(mask)
    return masks, {"fallback_share": fallbacks / max(len(names), 1), "box_cover_mean": float(np.mean(cover)),
                   "mask_in_box_mean": float(np.mean(purity))}


def padded_masks(ds: ImageSet, model_dir: Path, scale: float, cache: Path) -> tuple[np.ndarray, dict[str, float]]:
    """Masks of a roof-shape image set at its padded size ``(N, 1, P, P)``, cached on disk.

    The cache key covers the footprint weights, the scale and the crop list, so new weights
    or data never reuse old masks.
    """
    weights = hashlib.sha256(weights_path(model_dir, "model.pt").read_bytes()).hexdigest()[:12]
    key = hashlib.sha256(f"{weights}|{scale}|{ds.images.shape[-1]}|{'|'.join(ds.ids)}".encode()).hexdigest()[:16]
    path = cache / f"roof_shape_masks_{key}.npz"
    if path.exists():
        z = np.load(path)
        return z["masks"], json.loads(str(z["summary"]))
    root = Path(str(ds.meta["data"]))
    masks, summary = footprint_masks(root, ds.ids, Path(model_dir), scale)
    side = ds.images.shape[-1]
    out = np.stack([_square(m[None].astype(np.float32), side) for m in masks]).astype(np.float16)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, masks=out, summary=json.dumps(summary))
    return out, summary


def apply_chip_mode(ds: ImageSet, masks: np.ndarray, mode: ChipMode | str) -> ImageSet:
    """The image set as ``mode`` chips: RGB (context), RGB × mask (masked), or RGB + mask.

    Args:
        ds: a 3-channel set (context chips).
        masks: ``(N, 1, P, P)`` 0–1 footprint masks aligned with ``ds.images``.
        mode: the chip mode.
    """
    mode = ChipMode.parse(mode)
    if masks.shape[0] != ds.images.shape[0] or masks.shape[2:] != ds.images.shape[2:]:
        raise ValueError(f"masks {masks.shape} do not match images {ds.images.shape}")
    if mode is ChipMode.CONTEXT:
        return ds
    rgb = ds.images.astype(np.float32)
    m = masks.astype(np.float32)
    images = rgb * m if mode is ChipMode.MASKED else np.concatenate([rgb, m], axis=1)
    return dataclasses.replace(ds, images=images.astype(np.float16),
                               input_note=f"{ds.input_note}; chip_mode {mode.value}",
                               meta={**ds.meta, "chip_mode": mode.value})


def save_examples(ds: ImageSet, masks: np.ndarray, path: Path, n: int = 8) -> Path:
    """A strip of crops with their masks outlined (for the docs), every ``len/n``-th crop."""
    idx = np.linspace(0, len(ds.ids) - 1, n).astype(int)
    tiles = []
    for i in idx:
        rgb = np.clip(ds.images[i].astype(np.float32), 0, 1)
        m = masks[i, 0].astype(np.float32) >= 0.5
        edge = m ^ ndimage.binary_erosion(m, iterations=2)
        img = (np.moveaxis(rgb, 0, -1) * 255).astype(np.uint8)
        masked = (img * m[..., None]).astype(np.uint8)
        img[edge] = (255, 40, 40)
        tiles.append(np.concatenate([img, masked], axis=0))
    Image.fromarray(np.concatenate(tiles, axis=1)).save(path)
    return path
