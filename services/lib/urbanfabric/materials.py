"""Roof-material stage: cut roof chips from calibrated imagery and decode classifier output.

The stage has three parts, all plain typed Python:

* :func:`roof_chips` cuts one square, fixed-size chip per building footprint from an
  analysis-ready (ARD) tile, i.e. an image already scaled to 0–1 by
  :func:`urbanfabric.calibration.iqr_scale`. The same resampling, :func:`resize_chip`, turns
  the training images into chips, so the classifier sees identical inputs in training and
  inference.
* :class:`RoofTaxonomy` maps classifier classes to a roof-covering code list; the default is
  the Danish BBR field ``byg033`` (tagdækningsmateriale), shipped as
  ``urbanfabric/data/bbr_roof_map.csv``. Classes without a matching BBR material map to the
  BBR "other material" code *in that file*, so every mapping is explicit and reviewable.
* :func:`decode` turns class probabilities into :class:`RoofPrediction` records.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import affine
import geopandas
import numpy as np
import shapely
import torch
import torch.nn.functional as F

from urbanfabric.errors import InvalidInput

#: Default class → BBR mapping shipped with the package.
DEFAULT_TAXONOMY_PATH = Path(__file__).with_name("data") / "bbr_roof_map.csv"

#: BBR byg033 code 90 "Andet materiale" (other material): where unmatched classes go.
BBR_OTHER_CODE = 90


def resize_chip(chip: np.ndarray, size: int) -> np.ndarray:
    """Resample a ``(bands, rows, cols)`` chip to ``(bands, size, size)``.

    Bilinear with antialiasing, so downscaling a large roof averages pixels instead of
    skipping them. Non-square input is stretched; :func:`roof_chips` always crops square
    windows, training images may not be square.

    Args:
        chip: float array, NaN-free.
        size: output side in pixels.

    Returns:
        float32 array ``(bands, size, size)``.
    """
    if chip.ndim != 3 or chip.shape[1] == 0 or chip.shape[2] == 0:
        raise InvalidInput("chip", f"expected non-empty (bands, rows, cols), got shape {chip.shape}")
    t = torch.from_numpy(np.ascontiguousarray(chip, dtype=np.float32))[None]
    out = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[0].numpy()


def _pixel_windows(
    bounds: np.ndarray, transform: affine.Affine
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """World-coordinate boxes ``(N, 4)`` → pixel boxes col0, row0, col1, row1 (floats).

    Written out for a north-up grid (checked by the caller), vectorised over all boxes.
    """
    minx, miny, maxx, maxy = bounds.T
    cols = ((minx - transform.c) / transform.a, (maxx - transform.c) / transform.a)
    rows = ((maxy - transform.f) / transform.e, (miny - transform.f) / transform.e)
    # Negative pixel sizes (rows growing southwards) swap the ends: sort them.
    return np.minimum(*cols), np.minimum(*rows), np.maximum(*cols), np.maximum(*rows)


def roof_chips(
    image: np.ndarray,
    transform: affine.Affine,
    footprints: geopandas.GeoSeries,
    size: int = 128,
    margin: float = 0.15,
    mask_outside: bool = False,
    *,
    crs: Any | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut one square roof chip per footprint from an ARD image.

    Each chip is the footprint's bounding box enlarged by ``margin`` (a fraction of the box
    side, on every side), squared around its centre in map units (the longer side wins),
    then resampled to ``size × size`` with :func:`resize_chip`. Window geometry is
    computed for all footprints at once; cropping and resampling run per chip because the
    windows differ in size.

    Args:
        image: ARD ``(3, rows, cols)`` float32 in 0–1; NaN marks nodata.
        transform: pixel → map affine of ``image`` (north-up, no rotation).
        footprints: building polygons in the image's CRS.
        size: chip side in pixels.
        margin: bounding-box enlargement per side, as a fraction of the box side (context
            around the roof helps the classifier; the training images are loose crops).
        mask_outside: zero every pixel whose centre lies outside the footprint polygon.
        crs: the image's CRS; when given, ``footprints.crs`` must equal it.

    Returns:
        ``chips`` float32 ``(N, 3, size, size)`` in 0–1 (nodata and off-image pixels are 0),
        and ``has_imagery`` bool ``(N,)``: False where the footprint is empty, does not
        overlap the image, or has only nodata pixels under its bounding box (those chips
        are all zeros and must not be classified).

    Raises:
        InvalidInput: malformed image, transform, size, margin or CRS mismatch.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise InvalidInput("image", f"expected (3, rows, cols), got shape {image.shape}")
    if transform.b != 0 or transform.d != 0:
        raise InvalidInput("transform", "rotated or sheared grids are not supported")
    if transform.a == 0 or transform.e == 0:
        raise InvalidInput("transform", "pixel size must be non-zero")
    if size < 1:
        raise InvalidInput("size", f"must be >= 1, got {size}")
    if not margin >= 0:
        raise InvalidInput("margin", f"must be >= 0, got {margin}")
    if crs is not None and footprints.crs is not None and footprints.crs != crs:
        raise InvalidInput("footprints", f"CRS {footprints.crs} differs from the image CRS {crs}")

    n = len(footprints)
    chips = np.zeros((n, 3, size, size), dtype=np.float32)
    has_imagery = np.zeros(n, dtype=bool)
    if n == 0:
        return chips, has_imagery

    geoms = np.asarray(footprints.values, dtype=object)
    usable = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    bounds = np.where(usable[:, None], shapely.bounds(np.where(usable, geoms, None)), 0.0)

    # Square, margin-enlarged window in map units, centred on the bounding box.
    cx = (bounds[:, 0] + bounds[:, 2]) / 2
    cy = (bounds[:, 1] + bounds[:, 3]) / 2
    side = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]) * (1 + 2 * margin)
    # A degenerate (zero-area) box still gets one pixel of context.
    side = np.maximum(side, max(abs(transform.a), abs(transform.e)))
    half = side / 2
    outer = np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)
    oc0, or0, oc1, or1 = _pixel_windows(outer, transform)
    ic0, ir0, ic1, ir1 = _pixel_windows(bounds, transform)

    # Integer windows covering the float windows (at least one pixel each way).
    oc0, or0 = np.floor(oc0).astype(np.int64), np.floor(or0).astype(np.int64)
    oc1 = np.maximum(np.ceil(oc1).astype(np.int64), oc0 + 1)
    or1 = np.maximum(np.ceil(or1).astype(np.int64), or0 + 1)
    ic0, ir0 = np.floor(ic0).astype(np.int64), np.floor(ir0).astype(np.int64)
    ic1 = np.maximum(np.ceil(ic1).astype(np.int64), ic0 + 1)
    ir1 = np.maximum(np.ceil(ir1).astype(np.int64), ir0 + 1)

    _, rows, cols = image.shape
    overlaps = usable & (ic1 > 0) & (ir1 > 0) & (ic0 < cols) & (ir0 < rows)

    for i in np.flatnonzero(overlaps):
        # Footprint box clipped to the image: any finite pixel there means imagery exists.
        r0, r1 = max(ir0[i], 0), min(ir1[i], rows)
        c0, c1 = max(ic0[i], 0), min(ic1[i], cols)
        if not np.isfinite(image[:, r0:r1, c0:c1]).any():
            continue
        has_imagery[i] = True

        h, w = int(or1[i] - or0[i]), int(oc1[i] - oc0[i])
        crop = np.zeros((3, h, w), dtype=np.float32)  # off-image pixels stay 0
        sr0, sr1 = max(or0[i], 0), min(or1[i], rows)
        sc0, sc1 = max(oc0[i], 0), min(oc1[i], cols)
        crop[:, sr0 - or0[i] : sr1 - or0[i], sc0 - oc0[i] : sc1 - oc0[i]] = image[:, sr0:sr1, sc0:sc1]
        np.nan_to_num(crop, copy=False, nan=0.0, posinf=0.0, neginf=0.0)

        if mask_outside:
            cc, rr = np.meshgrid(np.arange(oc0[i], oc1[i]) + 0.5, np.arange(or0[i], or1[i]) + 0.5)
            xs = transform.a * cc + transform.c
            ys = transform.e * rr + transform.f
            inside = shapely.contains_xy(geoms[i], xs, ys)
            crop *= inside[None].astype(np.float32)

        chips[i] = resize_chip(crop, size)

    np.clip(chips, 0.0, 1.0, out=chips)
    return chips, has_imagery


@dataclass(frozen=True)
class TaxonomyEntry:
    """One row of a class → taxonomy mapping."""

    model_class: str
    code: int
    label: str
    note: str


@dataclass(frozen=True)
class RoofTaxonomy:
    """Classifier class → roof-covering code (default: Danish BBR ``byg033``).

    Every classifier class must be listed in the mapping file; a class that is not listed
    is an error rather than a silent fallback, so a retrained model with new classes cannot
    produce codes nobody reviewed.
    """

    name: str
    entries: dict[str, TaxonomyEntry]

    @classmethod
    def load(cls, path: str | Path | None = None) -> RoofTaxonomy:
        """Read a mapping CSV with columns ``model_class, bbr_code, bbr_label_en, note``.

        Args:
            path: CSV file; the shipped BBR mapping when omitted.

        Raises:
            InvalidInput: missing columns, a non-integer code or a duplicated class.
        """
        path = Path(path) if path is not None else DEFAULT_TAXONOMY_PATH
        entries: dict[str, TaxonomyEntry] = {}
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            needed = {"model_class", "bbr_code", "bbr_label_en", "note"}
            if reader.fieldnames is None or not needed <= set(reader.fieldnames):
                raise InvalidInput("path", f"{path} needs columns {sorted(needed)}, has {reader.fieldnames}")
            for row in reader:
                name = row["model_class"].strip()
                try:
                    code = int(row["bbr_code"])
                except ValueError as exc:
                    raise InvalidInput("path", f"{path}: class {name!r} has non-integer code {row['bbr_code']!r}") from exc
                if name in entries:
                    raise InvalidInput("path", f"{path}: class {name!r} listed twice")
                entries[name] = TaxonomyEntry(name, code, row["bbr_label_en"].strip(), row["note"].strip())
        return cls(name="bbr_byg033" if path == DEFAULT_TAXONOMY_PATH else path.stem, entries=entries)

    @property
    def classes(self) -> list[str]:
        """The classes the mapping covers, in file order."""
        return list(self.entries)

    def _entry(self, model_class: str) -> TaxonomyEntry:
        try:
            return self.entries[model_class]
        except KeyError:
            raise InvalidInput(
                "cls", f"class {model_class!r} is not in the {self.name} mapping ({self.classes})"
            ) from None

    def code(self, model_class: str) -> int:
        """Taxonomy code of a classifier class.

        Raises:
            InvalidInput: the class is not in the mapping.
        """
        return self._entry(model_class).code

    def label(self, model_class: str) -> str:
        """Human-readable taxonomy label of a classifier class."""
        return self._entry(model_class).label


@dataclass(frozen=True)
class RoofPrediction:
    """Roof material of one building: top class, its probability and its taxonomy code."""

    cls: str
    probability: float
    bbr_code: int


def decode(probs: np.ndarray, classes: list[str], taxonomy: RoofTaxonomy) -> list[RoofPrediction]:
    """Top class per row of a ``(N, C)`` probability matrix.

    Args:
        probs: class probabilities (e.g. softmax output), columns in ``classes`` order.
        classes: class names of the model.
        taxonomy: mapping to taxonomy codes; must cover every class.

    Raises:
        InvalidInput: shape mismatch, non-finite probabilities, or an unmapped class.
    """
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise InvalidInput("probs", f"expected (N, {len(classes)}), got shape {probs.shape}")
    if not np.isfinite(probs).all():
        raise InvalidInput("probs", "contains NaN or infinite values")
    codes = [taxonomy.code(c) for c in classes]  # fail early on an unmapped class
    top = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    return [RoofPrediction(classes[k], float(probs[i, k]), codes[k]) for i, k in enumerate(top)]
