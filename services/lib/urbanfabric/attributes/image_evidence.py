"""Image evidence for building height: shadow, roof texture and contrast features per footprint.

Footprint shape alone carries little height signal (held-out Xiamen blocks: R² ≈ 0.29, see
``docs/results.md``). A building's shadow does: on flat ground its length ``L`` along the
shadow direction relates to height by ``h ≈ L · tan(sun elevation)`` (the classic
shadow-based height estimate, e.g. Cheng & Thiel 1995; Liasis & Stavrou 2016 on VHR imagery;
CMAB's height model combines such image cues with morphology). Here the shadow is measured in
an RGB chip around each footprint, with no learned weights:

1. Luminance (mean of R, G, B) is stretched per chip to its 2nd–98th percentile, so the
   features do not depend on the sensor's radiometric scale (ARD 0–1 and uint8 tiles agree).
   "Dark" = stretched luminance below :data:`DARK_THRESHOLD`.
2. The chip is resampled into a frame whose first axis (``u``) points along the shadow
   direction (the sun azimuth + 180°). The direction comes from the scene's sun geometry
   when it is known (:class:`SunGeometry`), otherwise it is estimated from the imagery of the
   whole batch (:func:`estimate_shadow_azimuth`: the direction in which dark pixels beyond
   the footprints outnumber those on the opposite side most).
3. Per row across the footprint, the run of dark pixels starting at the footprint's down-sun
   edge is the shadow length of that row; the median over rows is ``img_shadow_len_m``. The
   integral of the dark share along ``u`` (down-sun minus up-sun) is a second, gap-tolerant
   length estimate that discounts dark ground (roads, trees) around the building.
4. Roof texture (gradient magnitude, local variance, edge density) and the roof's brightness
   against a 20 m ring around it.

Missing evidence is NaN with a reason (no imagery, nodata, wrong band count, footprint too
small for the chip), never a guessed number: the XGBoost height model treats NaN as missing
and falls back on the morphology path (``height_source = model_footprint``).

numpy / scipy only (the attributes service has no torch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import affine
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio import features as rio_features
from scipy import ndimage

from urbanfabric.errors import InvalidInput

#: Stretched luminance below this is shadow. Set by eye on the Xiamen tiles; 0.15 / 0.22 / 0.30
#: gave similar correlations with height on a random 400-building sample (see results.md).
DARK_THRESHOLD = 0.22
#: How far beyond the footprint shadows are followed (ground metres).
MAX_SHADOW_M = 150.0
#: Ring around the footprint for contrast / context statistics (ground metres).
RING_M = 20.0
#: Footprints covering fewer image pixels than this get no image features.
MIN_FOOTPRINT_PIXELS = 16
#: Share of the footprint's pixels that must hold valid imagery.
MIN_VALID_SHARE = 0.5
#: Largest footprint → roof offset searched (ground metres): relief displacement of tall
#: buildings in off-nadir imagery moves the roof away from the footprint, by h · tan(view angle).
MAX_OFFSET_M = 20.0
#: A shadow run may start this far beyond the footprint edge (ground metres).
ONSET_M = 8.0
#: Down-sun distance bins (ground metres) of the dark-share profile features.
PROFILE_BINS_M: tuple[float, ...] = (0.0, 10.0, 25.0, 50.0, 100.0, 150.0)
#: Margin a chip reader should add around each footprint's bounding box (ground metres).
CHIP_MARGIN_M = MAX_SHADOW_M + 10.0

#: Columns of :func:`image_evidence_features`, the model's image inputs (ground metres).
IMAGE_FEATURE_NAMES: tuple[str, ...] = (
    "img_shadow_len_m",
    "img_shadow_len_p75_m",
    "img_shadow_area_len_m",
    "img_upsun_area_len_m",
    "img_shadow_excess_m",
    "img_dark_0_10m",
    "img_dark_10_25m",
    "img_dark_25_50m",
    "img_dark_50_100m",
    "img_dark_100_150m",
    "img_excess_10_25m",
    "img_excess_25_50m",
    "img_excess_50_100m",
    "img_dark_ring_share",
    "img_roof_lum",
    "img_roof_lum_rel",
    "img_roof_contrast",
    "img_roof_grad_mean",
    "img_roof_grad_std",
    "img_ring_grad_mean",
    "img_roof_edge_density",
    "img_roof_local_var",
    "img_coverage",
    "img_roof_offset_m",
    "img_roof_offset_along_m",
    "img_roof_offset_score",
)

#: Reason strings (``image_reason`` column); "" = features computed.
REASON_NO_IMAGERY = "no imagery covers the footprint"
REASON_BANDS = "image has {n} bands, expected 3 (RGB)"
REASON_NODATA = "nodata under the footprint"
REASON_TOO_SMALL = "footprint too small for the image resolution"
REASON_EMPTY = "empty footprint"


@dataclass(frozen=True)
class SunGeometry:
    """Sun position at acquisition, from the scene metadata.

    Attributes:
        azimuth_deg: sun azimuth, degrees clockwise from north (shadows point the other way).
        elevation_deg: sun elevation above the horizon (degrees); ``None`` when unknown.
    """

    azimuth_deg: float
    elevation_deg: float | None = None

    @property
    def shadow_azimuth_deg(self) -> float:
        """Direction shadows point to (clockwise from north)."""
        return (self.azimuth_deg + 180.0) % 360.0


@dataclass
class ImageChip:
    """An RGB window around one footprint, as a chip reader returns it.

    Attributes:
        data: ``(bands, rows, cols)`` float array; NaN marks nodata. Any radiometric scale.
        transform: pixel → map affine of ``data`` (north-up, square pixels).
        footprint: the building polygon in the chip's CRS.
        metres_per_unit: ground metres per CRS unit (1 for UTM; cos(latitude) for Web
            Mercator, whose units are inflated away from the equator).
    """

    data: np.ndarray
    transform: affine.Affine
    footprint: Any
    metres_per_unit: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


class ChipReader(Protocol):
    """Source of image chips: one optional chip per footprint (``None`` = no imagery)."""

    def chips(self, footprints: gpd.GeoSeries, margin_m: float) -> list[ImageChip | None]:
        """Chips around ``footprints`` (any CRS), each ``margin_m`` ground metres wider than
        the footprint's bounding box on every side where imagery exists."""
        ...


@dataclass
class _Prepared:
    """A validated chip: stretched luminance, masks, and its pixel size in ground metres."""

    lum: np.ndarray
    valid: np.ndarray
    inside: np.ndarray
    px_m: float
    coverage: float


def _prepare(chip: ImageChip | None) -> tuple[_Prepared | None, str]:
    """Validate a chip and compute stretched luminance and the footprint mask."""
    if chip is None:
        return None, REASON_NO_IMAGERY
    geom = chip.footprint
    if geom is None or shapely.is_empty(geom) or not shapely.is_valid_input(geom):
        return None, REASON_EMPTY
    data = np.asarray(chip.data, dtype=np.float64)
    if data.ndim != 3 or data.shape[0] != 3:
        n = data.shape[0] if data.ndim == 3 else 0
        return None, REASON_BANDS.format(n=n)
    t = chip.transform
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        raise InvalidInput("transform", "image chips must be north-up with positive pixel size")
    if not math.isclose(t.a, -t.e, rel_tol=0.02):
        raise InvalidInput("transform", f"pixels must be square, got {t.a} × {-t.e}")
    if not chip.metres_per_unit > 0:
        raise InvalidInput("metres_per_unit", f"must be > 0, got {chip.metres_per_unit}")
    rows, cols = data.shape[1:]
    valid: np.ndarray = np.asarray(np.isfinite(data).all(axis=0))
    inside = rio_features.rasterize([(geom, 1)], out_shape=(rows, cols), transform=t,
                                    fill=0, dtype="uint8", all_touched=False).astype(bool)
    if inside.sum() < MIN_FOOTPRINT_PIXELS:
        return None, REASON_TOO_SMALL
    if valid[inside].mean() < MIN_VALID_SHARE:
        return None, REASON_NODATA
    lum = np.where(valid, data.mean(axis=0), np.nan)
    lo, hi = np.nanpercentile(lum, [2.0, 98.0])
    if not hi > lo:
        # A constant chip (fill value, blank tile) carries no evidence.
        return None, REASON_NODATA
    stretched = np.clip((lum - lo) / (hi - lo), 0.0, 1.0)
    return _Prepared(stretched, valid, inside, t.a * chip.metres_per_unit,
                     float(valid.mean())), ""


def _shadow_frame(p: _Prepared, shadow_azimuth_deg: float, max_m: float) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """Resample luminance, validity and footprint into a frame with ``u`` along the shadow.

    Returns ``(lum, valid, inside)`` of shape ``(n_v, n_u)``; columns run down-sun, one pixel
    per image pixel, from ``max_m`` up-sun of the footprint to ``max_m`` down-sun of it.
    """
    phi = math.radians(shadow_azimuth_deg)
    # Unit step along the shadow in (row, col): north-up rows grow southwards.
    dr, dc = -math.cos(phi), math.sin(phi)
    rr, cc = np.nonzero(p.inside)
    u = rr * dr + cc * dc
    v = rr * (-dc) + cc * dr
    k = int(math.ceil(max_m / p.px_m))
    ring = int(math.ceil(RING_M / p.px_m))
    us = np.arange(math.floor(u.min()) - k, math.ceil(u.max()) + k + 1)
    vs = np.arange(math.floor(v.min()) - ring, math.ceil(v.max()) + ring + 1)
    U, V = np.meshgrid(us, vs)
    row = U * dr - V * dc
    col = U * dc + V * dr
    coords = np.stack([row, col])
    lum = ndimage.map_coordinates(np.nan_to_num(p.lum, nan=0.5), coords, order=1, cval=0.5)
    valid = ndimage.map_coordinates(p.valid.astype(np.float32), coords, order=0, cval=0.0) > 0.5
    inside = ndimage.map_coordinates(p.inside.astype(np.float32), coords, order=0,
                                     cval=0.0) > 0.5
    return lum, valid, inside


def _directional(dark: np.ndarray, valid: np.ndarray, inside: np.ndarray, px_m: float,
                 max_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row dark runs and dark-share profile beyond the footprint's down-sun edge.

    Returns ``(run_px, profile, profile_valid)``: consecutive dark pixels from the edge per
    footprint row, and per offset ``k = 1..max_px`` the share of rows dark at ``edge + k``
    (NaN where no row has valid imagery there).
    """
    rows = np.flatnonzero(inside.any(axis=1))
    n_u = inside.shape[1]
    edge = n_u - 1 - np.argmax(inside[rows, ::-1], axis=1)
    offs = np.arange(1, max_px + 1)
    idx = edge[:, None] + offs[None, :]
    ok = idx < n_u
    idx_c = np.minimum(idx, n_u - 1)
    d = dark[rows[:, None], idx_c] & ok
    val = valid[rows[:, None], idx_c] & ok
    # Close single-pixel gaps (a lamp post, a bright car) along each run.
    d_closed = d | (np.roll(d, 1, axis=1) & np.roll(d, -1, axis=1))
    d_closed[:, 0] = d[:, 0]
    # The run starts at the first dark pixel within ONSET_M of the edge (footprints and roofs
    # are often offset by a few metres: the roof, not the footprint, casts the shadow).
    onset_px = max(1, int(round(ONSET_M / px_m)))
    has_onset = d_closed[:, :onset_px].any(axis=1)
    start = np.argmax(d_closed[:, :onset_px], axis=1)
    pos = np.arange(max_px)[None, :]
    not_dark = (~d_closed | ~val) & (pos >= start[:, None])
    run = np.where(not_dark.any(axis=1), np.argmax(not_dark, axis=1) - start, max_px - start)
    run = np.where(has_onset, run, 0)
    n_val = val.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        profile = np.where(n_val > 0, (d & val).sum(axis=0) / n_val, np.nan)
    return run.astype(np.float64), profile, n_val > 0


def _shadow_stats(p: _Prepared, shadow_azimuth_deg: float, dark_threshold: float,
                  max_m: float) -> dict[str, float]:
    lum, valid, inside = _shadow_frame(p, shadow_azimuth_deg, max_m)
    dark = (lum < dark_threshold) & valid & ~inside
    max_px = int(math.ceil(max_m / p.px_m))
    run, prof, _ = _directional(dark, valid, inside, p.px_m, max_px)
    # Up-sun: the same walk mirrored.
    _, prof_up, _ = _directional(dark[:, ::-1], valid[:, ::-1], inside[:, ::-1], p.px_m, max_px)
    dist_m = np.arange(1, max_px + 1) * p.px_m
    bins: dict[str, float] = {}
    for lo, hi in zip(PROFILE_BINS_M[:-1], PROFILE_BINS_M[1:]):
        sel = (dist_m > lo) & (dist_m <= hi)
        down = float(np.nanmean(prof[sel])) if np.isfinite(prof[sel]).any() else math.nan
        up = float(np.nanmean(prof_up[sel])) if np.isfinite(prof_up[sel]).any() else math.nan
        bins[f"img_dark_{lo:g}_{hi:g}m"] = down
        bins[f"img_excess_{lo:g}_{hi:g}m"] = down - up
    area_down = float(np.nansum(prof)) * p.px_m
    area_up = float(np.nansum(prof_up)) * p.px_m
    ring_px = int(math.ceil(RING_M / p.px_m))
    dist = ndimage.distance_transform_edt(~inside)
    ring = (dist > 0) & (dist <= ring_px) & valid
    near = (dist > 0) & (dist <= max(1.0, 10.0 / p.px_m)) & valid
    roof_lum = lum[inside & valid]
    ring_lum = lum[ring]
    return {
        "img_shadow_len_m": float(np.median(run)) * p.px_m,
        "img_shadow_len_p75_m": float(np.percentile(run, 75)) * p.px_m,
        "img_shadow_area_len_m": area_down,
        "img_upsun_area_len_m": area_up,
        "img_shadow_excess_m": area_down - area_up,
        **{k: v for k, v in bins.items() if k in IMAGE_FEATURE_NAMES},
        "img_dark_ring_share": float(dark[near].mean()) if near.any() else math.nan,
        "img_roof_lum": float(np.median(roof_lum)) if roof_lum.size else math.nan,
        "img_roof_lum_rel": (float(np.median(roof_lum) - np.median(ring_lum))
                             if roof_lum.size and ring_lum.size else math.nan),
    }


def _texture_stats(p: _Prepared) -> dict[str, float]:
    lum = np.nan_to_num(p.lum, nan=0.5)
    # Gradients per ground metre, so resolution changes do not rescale them.
    gx = ndimage.sobel(lum, axis=1) / (8.0 * p.px_m)
    gy = ndimage.sobel(lum, axis=0) / (8.0 * p.px_m)
    grad = np.hypot(gx, gy)
    core = ndimage.binary_erosion(p.inside, iterations=1) & p.valid
    if core.sum() < 4:
        core = p.inside & p.valid
    dist = ndimage.distance_transform_edt(~p.inside)
    ring = (dist > 1) & (dist <= RING_M / p.px_m) & p.valid
    mean = ndimage.uniform_filter(lum, 5)
    var = ndimage.uniform_filter(lum**2, 5) - mean**2
    g = grad[core]
    return {
        "img_roof_contrast": float(np.percentile(lum[core], 90) - np.percentile(lum[core], 10)),
        "img_roof_grad_mean": float(g.mean()),
        "img_roof_grad_std": float(g.std()),
        "img_ring_grad_mean": float(grad[ring].mean()) if ring.any() else math.nan,
        "img_roof_edge_density": float((g > 0.1).mean()),
        "img_roof_local_var": float(np.clip(var[core], 0, None).mean()),
        "img_coverage": p.coverage,
    }


def shadow_asymmetry(data: np.ndarray, px_m: float, *, step_deg: float = 5.0,
                     dark_threshold: float = DARK_THRESHOLD, bright_threshold: float = 0.6,
                     max_m: float = 40.0, work_px_m: float = 2.0) -> np.ndarray:
    """How strongly dark pixels follow bright ones, per direction, in one RGB image.

    Roofs and sunlit walls are bright and their shadows lie beside them on the side away from
    the sun. The cross-correlation ``C(Δ) = Σ bright(x) · dark(x + Δ)`` (FFT, image resampled to
    ``work_px_m``) is larger for offsets ``Δ`` along the shadow direction than against it; the
    returned curve is ``mean over |Δ| ≤ max_m of C(Δ) − C(−Δ)`` per azimuth
    ``0, step_deg, …`` (clockwise from north), normalised by the image's valid pixels.
    Needs no footprints, so it also works where footprints and roofs are offset.
    """
    from scipy import signal

    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise InvalidInput("image", f"expected (3, rows, cols), got shape {arr.shape}")
    lum = arr.mean(axis=0)
    valid = np.isfinite(lum)
    f = max(1, int(round(work_px_m / px_m)))
    rows, cols = (lum.shape[0] // f) * f, (lum.shape[1] // f) * f
    az = np.arange(0.0, 360.0, step_deg)
    if rows == 0 or cols == 0 or not valid.any():
        return np.full(len(az), np.nan)
    lum = np.nan_to_num(lum[:rows, :cols], nan=0.0).reshape(rows // f, f, cols // f, f).mean(
        axis=(1, 3))
    valid = valid[:rows, :cols].reshape(rows // f, f, cols // f, f).all(axis=(1, 3))
    if valid.sum() < 100:
        return np.full(len(az), np.nan)
    lo, hi = np.percentile(lum[valid], [2.0, 98.0])
    if not hi > lo:
        return np.full(len(az), np.nan)
    s = np.clip((lum - lo) / (hi - lo), 0.0, 1.0)
    dark = ((s < dark_threshold) & valid).astype(np.float64)
    bright = ((s > bright_threshold) & valid).astype(np.float64)
    dark -= dark[valid].mean() * valid
    bright -= bright[valid].mean() * valid
    c = signal.fftconvolve(dark, bright[::-1, ::-1], mode="same")
    cy, cx = c.shape[0] // 2, c.shape[1] // 2
    px = px_m * f
    steps = np.arange(max(1.0, 4.0 / px), max_m / px + 1e-9)
    out = np.zeros(len(az))
    for i, a in enumerate(np.radians(az)):
        dr, dc = -math.cos(a), math.sin(a)
        r1 = np.clip(np.round(cy + steps * dr).astype(int), 0, c.shape[0] - 1)
        c1 = np.clip(np.round(cx + steps * dc).astype(int), 0, c.shape[1] - 1)
        r2 = np.clip(np.round(cy - steps * dr).astype(int), 0, c.shape[0] - 1)
        c2 = np.clip(np.round(cx - steps * dc).astype(int), 0, c.shape[1] - 1)
        out[i] = (c[r1, c1].mean() - c[r2, c2].mean()) / valid.sum()
    return out


def _roof_offset(p: _Prepared, shadow_azimuth_deg: float) -> dict[str, float]:
    """Shift of the footprint outline that best matches the image's edges.

    Off-nadir imagery shows a roof displaced from its footprint by ``h · tan(view angle)``
    (relief displacement), and footprints drawn on roofs sit off the ground outline; either
    way the offset grows with height. The outline's pixels are shifted over a grid of up to
    :data:`MAX_OFFSET_M` and scored by mean gradient magnitude under them; the best shift is
    returned as length, component along the shadow direction, and score gain over no shift.
    """
    lum = np.nan_to_num(p.lum, nan=0.5)
    grad = np.hypot(ndimage.sobel(lum, axis=1), ndimage.sobel(lum, axis=0))
    edge = p.inside & ~ndimage.binary_erosion(p.inside)
    rr, cc = np.nonzero(edge)
    step = max(1, int(round(1.0 / p.px_m)))
    k = int(MAX_OFFSET_M / p.px_m)
    shifts = np.arange(-k, k + 1, step)
    gy, gx = np.meshgrid(shifts, shifts, indexing="ij")
    dy, dx = gy.ravel(), gx.ravel()
    keep = dy**2 + dx**2 <= k * k
    dy, dx = dy[keep], dx[keep]
    r = rr[None, :] + dy[:, None]
    c = cc[None, :] + dx[:, None]
    ok = (r >= 0) & (r < lum.shape[0]) & (c >= 0) & (c < lum.shape[1])
    g = np.where(ok, grad[np.clip(r, 0, lum.shape[0] - 1), np.clip(c, 0, lum.shape[1] - 1)],
                 np.nan)
    with np.errstate(invalid="ignore"):
        score = np.where(ok.mean(axis=1) > 0.8, np.nanmean(g, axis=1), -np.inf)
    best = int(np.argmax(score))
    zero = int(np.flatnonzero((dy == 0) & (dx == 0))[0])
    phi = math.radians(shadow_azimuth_deg)
    # Map offsets: x east = col, y north = −row.
    east, north = dx[best] * p.px_m, -dy[best] * p.px_m
    base = score[zero] if np.isfinite(score[zero]) and score[zero] > 0 else math.nan
    return {
        "img_roof_offset_m": float(math.hypot(east, north)),
        "img_roof_offset_along_m": float(east * math.sin(phi) + north * math.cos(phi)),
        "img_roof_offset_score": float(score[best] / base) if math.isfinite(base) else math.nan,
    }


def estimate_shadow_azimuth(chips: Sequence[ImageChip | None], *, step_deg: float = 5.0,
                            max_chips: int = 50) -> tuple[float, dict[str, Any]]:
    """Dominant shadow direction of a scene from its chips (no sun metadata).

    Sums :func:`shadow_asymmetry` over the ``max_chips`` largest usable chips and takes the
    direction with the largest asymmetry. Prefer the sun azimuth from the scene metadata, or
    :func:`shadow_asymmetry` over the whole scene, when available.

    Returns:
        ``(azimuth_deg, info)``; azimuth NaN with ``n_used = 0`` when no chip is usable.
    """
    usable = [c for c in chips if c is not None and np.asarray(c.data).ndim == 3
              and np.asarray(c.data).shape[0] == 3]
    usable.sort(key=lambda c: -int(np.asarray(c.data).shape[1] * np.asarray(c.data).shape[2]))
    total = np.zeros(int(round(360.0 / step_deg)))
    n = 0
    for c in usable[:max_chips]:
        curve = shadow_asymmetry(c.data, c.transform.a * c.metres_per_unit, step_deg=step_deg)
        if np.isfinite(curve).all():
            total += curve
            n += 1
    if n == 0:
        return math.nan, {"n_used": 0}
    return float(np.argmax(total) * step_deg), {"n_used": n, "step_deg": step_deg}


def image_evidence_features(
    chips: Sequence[ImageChip | None],
    sun: SunGeometry | None = None,
    *,
    shadow_azimuth_deg: float | None = None,
    dark_threshold: float = DARK_THRESHOLD,
    max_shadow_m: float = MAX_SHADOW_M,
) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Image features of every footprint's chip.

    Args:
        chips: one chip (or ``None``: no imagery) per footprint.
        sun: the scene's sun geometry when the metadata gives it; its azimuth fixes the
            shadow direction and its elevation turns shadow length into
            ``img_shadow_height_m`` (an extra column, not a model input).
        shadow_azimuth_deg: the shadow direction when already known (e.g. estimated once for
            a whole scene); otherwise estimated from these chips.
        dark_threshold: stretched luminance below which a pixel counts as shadow.
        max_shadow_m: longest shadow followed.

    Returns:
        ``(table, reasons, info)``: :data:`IMAGE_FEATURE_NAMES` plus ``img_shadow_height_m``
        per chip (NaN where the chip was unusable), the reason per chip (``""`` = computed),
        and ``info`` with the shadow azimuth used and how it was obtained.
    """
    n = len(chips)
    cols = [*IMAGE_FEATURE_NAMES, "img_shadow_height_m"]
    table = pd.DataFrame(np.full((n, len(cols)), np.nan), columns=cols)
    reasons = np.full(n, "", dtype=object)
    info: dict[str, Any] = {}
    if sun is not None:
        az, info["shadow_azimuth_source"] = sun.shadow_azimuth_deg, "sun geometry"
    elif shadow_azimuth_deg is not None:
        az, info["shadow_azimuth_source"] = float(shadow_azimuth_deg), "given"
    else:
        az, est = estimate_shadow_azimuth(chips)
        info["shadow_azimuth_source"] = "estimated from imagery"
        info["estimate"] = est
    info["shadow_azimuth_deg"] = az
    tan_el = (math.tan(math.radians(sun.elevation_deg))
              if sun is not None and sun.elevation_deg is not None else math.nan)
    values = np.full((n, len(cols)), np.nan)
    for i, chip in enumerate(chips):
        p, reason = _prepare(chip)
        if p is None:
            reasons[i] = reason
            continue
        if not math.isfinite(az):
            reasons[i] = "no shadow direction (no usable imagery in the batch)"
            continue
        f = {**_shadow_stats(p, az, dark_threshold, max_shadow_m), **_texture_stats(p),
             **_roof_offset(p, az)}
        f["img_shadow_height_m"] = f["img_shadow_len_m"] * tan_el
        values[i] = [f[c] for c in cols]
    table.loc[:, :] = values
    return table, reasons, info


def footprint_pixels(footprint: Any, transform: affine.Affine, shape: tuple[int, int]) -> int:
    """Pixels of ``shape`` whose centre falls in ``footprint`` (for reader-side checks)."""
    mask = rio_features.rasterize([(footprint, 1)], out_shape=shape, transform=transform,
                                  fill=0, dtype="uint8")
    return int(mask.sum())
