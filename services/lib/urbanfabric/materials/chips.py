"""Chips for the material classifiers: one square, fixed-size image per building.

:func:`roof_chips` cuts a chip per footprint from an analysis-ready (ARD) tile, i.e. an image
already scaled to 0–1 by :func:`urbanfabric.imagery.calibration.iqr_scale`. The same resampling,
:func:`resize_chip`, turns the training images into chips, so the classifier sees identical
inputs in training and inference. :func:`image_chip` does the same for a street-level view.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

import affine
import geopandas
import numpy as np
import shapely
import torch
import torch.nn.functional as F

from urbanfabric.errors import InvalidInput, NotFound, parse_choice


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


#: Least share of valid (non-nodata) pixels under a footprint's box for its chip to count.
MIN_VALID_SHARE = 0.5


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
        overlap the image, or has less than :data:`MIN_VALID_SHARE` valid pixels under its
        bounding box (those chips are mostly zeros and must not be classified).

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
    bounds = np.where(usable[:, None], shapely.bounds(np.where(usable, geoms, np.array(None))), 0.0)

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
        # A roof under mostly nodata (a scene edge, a cloud mask) is a chip of zeros, not a roof.
        if np.isfinite(image[:, r0:r1, c0:c1]).all(axis=0).mean() < MIN_VALID_SHARE:
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


#: Fewest image pixels a footprint must cover to be classified from its chip (a 4 × 4 roof;
#: ≈ 2 × 2 m at the 0.5 m imagery the roof models were trained on).
MIN_FOOTPRINT_PIXELS = 16


def chips_from_rasters(
    footprints: geopandas.GeoDataFrame,
    rasters: list[tuple[str, Callable[[], Any]]],
    size: int,
    margin: float = 0.15,
    mode: ChipMode | str = ChipMode.CONTEXT,
    accept: Callable[[Any], str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Roof chips of every footprint from several ARD images; the first image covering one wins.

    An image that cannot be read (corrupt, missing) is skipped and remembered, so the batch
    goes on; buildings no readable image covers, and footprints smaller than
    :data:`MIN_FOOTPRINT_PIXELS` in every image, get a reason instead of a chip.

    Args:
        footprints: ``building_id`` + geometry (any CRS; reprojected per image).
        rasters: ``(name, load)`` pairs; ``load()`` returns a
            :class:`urbanfabric.io.rasters.Raster` with ARD data (0–1, NaN nodata) or raises
            (``InvalidInput``/``NotFound``/``OSError``) when the image is unreadable.
        size: chip side.
        margin: see :func:`roof_chips`.
        mode: see :func:`roof_chips` (a model's ``chip_mode``).
        accept: returns why an image is outside the model's domain ("" = usable), e.g.
            :func:`imagery_domain_check`; buildings only such images cover get
            ``out_of_domain: <why>``.

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
    small_px = np.full(n, np.nan)  # footprint area in pixels of the finest image too coarse for it
    out_of_domain: dict[int, str] = {}
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
        why = accept(image) if accept is not None else ""
        why = f"out_of_domain: {why}" if why else ""
        shape = np.shape(image.data)
        if not why and (len(shape) != 3 or shape[0] != 3):
            # A panchromatic, 4-band or otherwise different image: not what the classifiers read.
            bands = shape[0] if len(shape) == 3 else 1
            why = f"bad imagery: {name} has {bands} band{'s' * (bands != 1)}; the roof models read 3 (RGB)"
        if why:  # the model never saw imagery like this: no chip, a reason
            left, bottom, right, top = image.bounds
            covered = np.flatnonzero(todo)[fps.intersects(shapely.box(left, bottom, right, top)).to_numpy()]
            for i in covered:
                out_of_domain.setdefault(int(i), why)
            continue
        # A roof of a few pixels upsampled to the model's chip is noise, not evidence.
        px = fps.area.to_numpy() / abs(image.transform.a * image.transform.e)
        tiny = px < MIN_FOOTPRINT_PIXELS
        if tiny.any():
            at = np.flatnonzero(todo)[tiny]
            small_px[at] = np.fmax(small_px[at], px[tiny])
            todo[at] = False
            fps = fps[~tiny]
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
        elif i in out_of_domain:
            reasons.append(out_of_domain[i])
        elif np.isfinite(small_px[i]):
            reasons.append(f"footprint too small for a chip: {small_px[i]:.1f} pixels in the imagery "
                           f"(needs at least {MIN_FOOTPRINT_PIXELS})")
        elif unreadable:
            reasons.append(f"no readable imagery covers the footprint; unreadable: {'; '.join(unreadable)}")
        elif not rasters:
            reasons.append("no imagery: no images were given for the batch")
        else:
            reasons.append("no imagery covers the footprint (outside the images, or mostly nodata under it)")
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


def building_chip(footprints: geopandas.GeoDataFrame, building_id: str,
                  rasters: list[tuple[str, Callable[[], Any]]], size: int,
                  mode: ChipMode | str = ChipMode.CONTEXT) -> np.ndarray:
    """The chip of one building of a footprints table, cut as :func:`chips_from_rasters` cuts
    it for classification (what an explanation of that building must look at).

    Raises:
        NotFound: ``building_id`` is not in the table (field ``building.building_id``).
        InvalidInput: no chip can be cut from the images (field ``building.images``).
    """
    one = footprints[footprints["building_id"].astype(str) == building_id]
    if one.empty:
        raise NotFound(f"building.building_id: {building_id!r} is not in the footprints")
    chips, reasons = chips_from_rasters(one, rasters, size, mode=mode)
    if reasons[0]:
        raise InvalidInput("building.images", f"building {building_id}: {reasons[0]}")
    return chips[0]


def imagery_domain_check(config: dict[str, Any]) -> Callable[[Any], str] | None:
    """The ``accept`` test of a model whose config states the imagery it was trained on
    (``imagery_domain: {gsd_m: [lo, hi], tolerance: f, source: …}``): an image whose ground
    pixel size lies outside [lo / f, hi × f] is refused with the sizes named. None when the
    config states no domain."""
    domain = config.get("imagery_domain")
    if not domain or "gsd_m" not in domain:
        return None
    lo, hi = (float(v) for v in domain["gsd_m"])
    f = float(domain.get("tolerance", 1.0))

    def check(image: Any) -> str:
        try:
            gsd = float(image.ground_resolution_m())
        except InvalidInput:
            return ""  # a geographic raster: no metric pixel size to compare
        if lo / f <= gsd <= hi * f:
            return ""
        return (f"imagery of {gsd:.2f} m per pixel; the model was trained on {lo:g}–{hi:g} m "
                f"({domain.get('source', 'its card')})")

    return check

