"""Roof-material stage: cut roof chips from calibrated imagery and decode classifier output.

The stage has three parts, all plain typed Python:

* :func:`roof_chips` cuts one square, fixed-size chip per building footprint from an
  analysis-ready (ARD) tile, i.e. an image already scaled to 0–1 by
  :func:`urbanfabric.imagery.calibration.iqr_scale`. The same resampling, :func:`resize_chip`, turns
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
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import affine
import geopandas
import numpy as np
import shapely
import torch
import torch.nn.functional as F

from urbanfabric.errors import InvalidInput, parse_choice

#: Default class → BBR mapping shipped with the package.
DEFAULT_TAXONOMY_PATH = Path(__file__).parents[1] / "data" / "bbr_roof_map.csv"

#: BBR byg033 code 90 "Andet materiale" (other material): where unmatched classes go.
BBR_OTHER_CODE = 90


class ChipMode(str, Enum):
    """What a roof chip shows around the footprint (a model's ``config.json`` ``chip_mode``).

    The materials study masks the roof out of its crop; our labelled roof sets are loose crops
    with neighbours, ground and shadow in view. ``models.classifiers.train --chip-mode``
    trains each mode and ``docs/results.md`` compares them on the roof-shape test split.
    """

    #: RGB of the whole square window (footprint plus margin); the classifier sees neighbours.
    CONTEXT = "context"
    #: RGB with every pixel outside the footprint polygon set to 0.
    MASKED = "masked"
    #: RGB context plus a fourth channel, 1 inside the footprint and 0 outside.
    CONTEXT_MASK = "context+mask"

    @property
    def channels(self) -> int:
        """Channels of a chip in this mode."""
        return 4 if self is ChipMode.CONTEXT_MASK else 3

    @classmethod
    def parse(cls, value: ChipMode | str) -> ChipMode:
        """A mode from its name; an unknown name is an :class:`InvalidInput` on ``chip_mode``."""
        return parse_choice(cls, value, field="chip_mode")

    @classmethod
    def of(cls, config: dict[str, Any]) -> ChipMode:
        """The mode a model config asks for (``context`` when it does not say)."""
        return cls.parse(config.get("chip_mode", cls.CONTEXT.value))


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
    mode: ChipMode | str = ChipMode.CONTEXT,
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
        mode: :class:`ChipMode`: keep the context, zero it (pixel centres outside the
            polygon), or keep it and add the footprint as a fourth channel.
        crs: the image's CRS; when given, ``footprints.crs`` must equal it.

    Returns:
        ``chips`` float32 ``(N, C, size, size)`` in 0–1, C = ``mode.channels`` (nodata and
        off-image pixels are 0),
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
    mode = ChipMode.parse(mode)

    n = len(footprints)
    chips = np.zeros((n, mode.channels, size, size), dtype=np.float32)
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
        crop = np.zeros((mode.channels, h, w), dtype=np.float32)  # off-image pixels stay 0
        sr0, sr1 = max(or0[i], 0), min(or1[i], rows)
        sc0, sc1 = max(oc0[i], 0), min(oc1[i], cols)
        crop[:3, sr0 - or0[i] : sr1 - or0[i], sc0 - oc0[i] : sc1 - oc0[i]] = image[:, sr0:sr1, sc0:sc1]
        np.nan_to_num(crop, copy=False, nan=0.0, posinf=0.0, neginf=0.0)

        if mode is not ChipMode.CONTEXT:
            cc, rr = np.meshgrid(np.arange(oc0[i], oc1[i]) + 0.5, np.arange(or0[i], or1[i]) + 0.5)
            xs = transform.a * cc + transform.c
            ys = transform.e * rr + transform.f
            inside = shapely.contains_xy(geoms[i], xs, ys).astype(np.float32)
            if mode is ChipMode.MASKED:
                crop *= inside[None]
            else:
                crop[3] = inside

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


# ---- unknowns, never silent ---------------------------------------------------------------

#: Material (or shape) of a building the stage could not classify; a reason always comes with it.
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Taxonomy:
    """Class → code mapping of one classifier, with explicit unknowns.

    ``codes[c] is None`` means the mapping lists ``c`` but gives it no code on purpose (e.g.
    stucco has no BBR byg032 wall code): the class is reported with an empty code. A class not
    in ``codes`` at all is *outside* the taxonomy: the building is reported "unknown".
    """

    name: str
    codes: dict[str, int | None]

    @classmethod
    def for_model(cls, config: dict[str, Any], default: RoofTaxonomy | None = None) -> Taxonomy:
        """The model config's ``taxonomy`` block, else ``default`` (the BBR roof CSV), else none.

        Args:
            config: a shipped model's ``config.json`` (``taxonomy: {name, codes}``).
            default: mapping for models whose config has none (roof-material v1).
        """
        block = config.get("taxonomy") or {}
        if block.get("codes") is not None:
            codes = {str(k): (None if v is None else int(v)) for k, v in block["codes"].items()}
            return cls(str(block.get("name", "model")), codes)
        if default is not None:
            return cls(default.name, {c: e.code for c, e in default.entries.items()})
        return cls("none", {})

    def outside(self, model_class: str) -> str:
        """The unknown reason when ``model_class`` is outside the taxonomy, else ``""``."""
        if self.codes and model_class not in self.codes:
            return f"class {model_class!r} is outside the {self.name} taxonomy"
        return ""

    def code_text(self, model_class: str) -> str:
        """The class's code as text; empty when it has none (or there is no taxonomy)."""
        code = self.codes.get(model_class)
        return "" if code is None else str(code)


@dataclass(frozen=True)
class MaterialCall:
    """One building's answer from one classifier.

    Attributes:
        building_id: the building.
        material: top class, or :data:`UNKNOWN` (then ``unknown_reason`` says why).
        probability: calibrated probability of the top class (0 when nothing was classified).
        taxonomy_code: code of ``material`` in the taxonomy; empty when unknown or uncoded.
        model_class: the model's top class even when it is outside the taxonomy.
        probabilities: calibrated probability per class (empty when nothing was classified).
        unknown_reason: why ``material`` is unknown; empty otherwise.
    """

    building_id: str
    material: str
    probability: float
    taxonomy_code: str
    model_class: str
    probabilities: dict[str, float]
    unknown_reason: str = ""


def unknown(building_id: str, reason: str) -> MaterialCall:
    """An explicit "unknown" answer with its reason."""
    if not reason:
        raise ValueError("an unknown answer needs a reason")
    return MaterialCall(building_id, UNKNOWN, 0.0, "", "", {}, reason)


def decode_calls(
    building_ids: list[str],
    probs: np.ndarray,
    classes: list[str],
    taxonomy: Taxonomy,
    reasons: list[str] | None = None,
) -> list[MaterialCall]:
    """Top class per building, every unknown with its reason.

    Args:
        building_ids: one per row of ``probs``.
        probs: ``(N, C)`` calibrated probabilities; rows of buildings with a reason are ignored.
        classes: class names in column order.
        taxonomy: class → code mapping; a top class outside it makes the building unknown.
        reasons: per building, why it could not be classified (``""`` = it could).

    Raises:
        InvalidInput: shape mismatch or non-finite probabilities of a classified building.
    """
    probs = np.asarray(probs, dtype=np.float64)
    n = len(building_ids)
    reasons = list(reasons) if reasons is not None else [""] * n
    if probs.ndim != 2 or probs.shape != (n, len(classes)) or len(reasons) != n:
        raise InvalidInput("probs", f"expected ({n}, {len(classes)}) and {n} reasons, got {probs.shape}, {len(reasons)}")
    out: list[MaterialCall] = []
    for i, bid in enumerate(building_ids):
        if reasons[i]:
            out.append(unknown(bid, reasons[i]))
            continue
        row = probs[i]
        if not np.isfinite(row).all():
            raise InvalidInput("probs", f"building {bid}: NaN or infinite probabilities")
        k = int(row.argmax())
        top = classes[k]
        per_class = {c: float(p) for c, p in zip(classes, row)}
        why = taxonomy.outside(top)
        material = UNKNOWN if why else top
        out.append(MaterialCall(bid, material, float(row[k]), "" if why else taxonomy.code_text(top),
                                top, per_class, why))
    return out


def chips_from_rasters(
    footprints: geopandas.GeoDataFrame,
    rasters: list[tuple[str, Callable[[], Any]]],
    size: int,
    margin: float = 0.15,
    mode: ChipMode | str = ChipMode.CONTEXT,
) -> tuple[np.ndarray, list[str]]:
    """Roof chips of every footprint from several ARD images; the first image covering one wins.

    An image that cannot be read (corrupt, missing) is skipped and remembered, so the batch
    goes on; buildings no readable image covers get a reason instead of a chip.

    Args:
        footprints: ``building_id`` + geometry (any CRS; reprojected per image).
        rasters: ``(name, load)`` pairs; ``load()`` returns a
            :class:`urbanfabric.io.rasters.Raster` with ARD data (0–1, NaN nodata) or raises
            (``InvalidInput``/``NotFound``/``OSError``) when the image is unreadable.
        size: chip side.
        margin: see :func:`roof_chips`.
        mode: see :func:`roof_chips` (a model's ``chip_mode``).

    Returns:
        ``chips`` ``(N, C, size, size)`` float32 and per building ``reason`` (``""`` when it
        got a chip).
    """
    from urbanfabric.errors import NotFound

    n = len(footprints)
    mode = ChipMode.parse(mode)
    chips = np.zeros((n, mode.channels, size, size), np.float32)
    found = np.zeros(n, bool)
    unreadable: list[str] = []
    geoms = np.asarray(footprints.geometry.values, dtype=object)
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms) if n else np.zeros(0, bool)
    for name, load in rasters:
        todo = ~found & ~empty
        if not todo.any():
            break
        try:
            image = load()
        except (InvalidInput, NotFound, OSError) as exc:
            unreadable.append(f"{name} ({exc})")
            continue
        fps = footprints.geometry[todo]
        if fps.crs is not None and image.crs is not None:
            fps = fps.to_crs(image.crs)
        c, has = roof_chips(image.data, image.transform, fps, size=size, margin=margin, mode=mode)
        idx = np.flatnonzero(todo)[has]
        chips[idx] = c[has]
        found[idx] = True
    reasons = []
    for i in range(n):
        if found[i]:
            reasons.append("")
        elif empty[i]:
            reasons.append("empty footprint geometry")
        elif unreadable:
            reasons.append(f"no readable imagery covers the footprint; unreadable: {'; '.join(unreadable)}")
        elif not rasters:
            reasons.append("no imagery: no images were given for the batch")
        else:
            reasons.append("no imagery covers the footprint (outside the images or only nodata)")
    return chips, reasons


def input_scaling(config: dict[str, Any]) -> str:
    """How a model's training images were scaled to 0–1: ``"iqr"`` (overhead) or ``"unit"`` (/255).

    Read from ``config["normalisation"]["input"]``: street-level models (façades) say
    ``RGB / 255``; overhead models are IQR-scaled like pipeline ARD.
    """
    note = str((config.get("normalisation") or {}).get("input", ""))
    return "unit" if "/ 255" in note or "/255" in note else "iqr"


def image_chip(blob: bytes, size: int, scaling: str = "iqr") -> np.ndarray:
    """An image file (PNG, JPEG, TIFF bytes) → a ``(3, size, size)`` 0–1 chip.

    ``scaling`` ``"iqr"`` applies :func:`urbanfabric.imagery.calibration.iqr_scale` to the whole image
    (like roof training images), ``"unit"`` divides by 255 (street-level views).

    Raises:
        InvalidInput: the bytes are not a readable image (field ``image``).
    """
    import io

    from PIL import Image, UnidentifiedImageError

    from urbanfabric.imagery.calibration import iqr_scale

    try:
        with Image.open(io.BytesIO(blob)) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInput("image", f"not a readable image ({exc})") from exc
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 1:
        raise InvalidInput("image", f"empty image of shape {rgb.shape}")
    bands = np.moveaxis(rgb, -1, 0)
    scaled = iqr_scale(bands) if scaling == "iqr" else bands / 255.0
    return np.clip(np.nan_to_num(resize_chip(scaled, size), nan=0.0), 0.0, 1.0).astype(np.float32)


# ---- façades: several street-level views per building --------------------------------------

#: Label of the façade sets meaning "no usable façade in view" (trees, cars, fences).
NULL_LABEL = "null"


@dataclass(frozen=True)
class FacadeCall:
    """Façade materials of one building, aggregated over its usable views.

    Attributes:
        building_id: the building.
        material: label with the highest aggregated probability, or :data:`UNKNOWN`.
        probability: its aggregated probability.
        taxonomy_code: its outer-wall code (empty when the taxonomy gives none).
        materials: every label whose aggregated probability passes its threshold.
        probabilities: aggregated probability per material label (``null`` excluded).
        views_total: views given for the building.
        views_used: views that were readable and passed the non-building filter.
        unknown_reason: why ``material`` is unknown; empty otherwise.
    """

    building_id: str
    material: str
    probability: float
    taxonomy_code: str
    materials: list[str]
    probabilities: dict[str, float]
    views_total: int
    views_used: int
    unknown_reason: str = ""


def decode_facades(
    building_ids: list[str],
    views: dict[str, list[np.ndarray | str]],
    labels: list[str],
    taxonomy: Taxonomy,
    thresholds: list[float] | None = None,
    no_view_reason: str = "no street-level view of the building",
) -> list[FacadeCall]:
    """Aggregate each building's views into its façade materials; unknowns with reasons.

    The non-building view filter and the aggregation are
    :func:`models.classifiers.views.aggregate_views` (views whose ``null`` probability reaches
    the ``null`` threshold are dropped, the rest averaged, labels kept at their thresholds);
    this function adds unreadable views, the top material and its taxonomy code.

    Args:
        building_ids: buildings of the batch, in output order.
        views: per building, one entry per view: its calibrated per-label probabilities
            ``(C,)``, or a string saying why the view could not be classified (unreadable).
        labels: label names in column order (may include :data:`NULL_LABEL`).
        taxonomy: label → outer-wall code; a top label outside it makes the building unknown.
        thresholds: per-label decision thresholds (default 0.5 each).
        no_view_reason: the reason given to buildings without any view.
    """
    from models.classifiers.views import aggregate_views

    thr = list(thresholds) if thresholds is not None else [0.5] * len(labels)
    if len(thr) != len(labels):
        raise InvalidInput("thresholds", f"expected {len(labels)} values, got {len(thr)}")
    out: list[FacadeCall] = []
    for bid in building_ids:
        given = views.get(bid, [])
        bad = [v for v in given if isinstance(v, str)]
        probs = np.array([v for v in given if not isinstance(v, str)], dtype=np.float64).reshape(-1, len(labels))
        if not given:
            out.append(FacadeCall(bid, UNKNOWN, 0.0, "", [], {}, 0, 0, no_view_reason))
            continue
        answer = aggregate_views(probs, labels, thr)
        if answer.unknown_reason or not answer.probabilities:
            parts = [answer.unknown_reason] if len(probs) else []
            if bad:
                parts.append(f"{len(bad)} of {len(given)} views unreadable: {'; '.join(bad)}")
            why = "; ".join(p for p in parts if p)
            why = why if why.startswith("no usable") else f"no usable view: {why}"
            out.append(FacadeCall(bid, UNKNOWN, 0.0, "", [], {}, len(given), 0, why))
            continue
        top = max(answer.probabilities, key=answer.probabilities.get)
        why = taxonomy.outside(top)
        out.append(FacadeCall(
            bid, UNKNOWN if why else top, answer.probabilities[top], "" if why else taxonomy.code_text(top),
            list(answer.materials), dict(answer.probabilities), len(given), answer.views_used, why,
        ))
    return out
