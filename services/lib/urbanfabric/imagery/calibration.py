"""Radiometric calibration to analysis-ready data (ARD).

Implements the robust per-band scaling of the Global Building Map study
(``global-building-map.txt``, section "Analysis-Ready Data"): each band's bulk is located with
the inter-quartile range, values are clipped to ``[0, Q3 + k·IQR]`` so only extreme values are
cut, and the result is normalised to 0–1. Using the IQR instead of a fixed percentile adapts
how much is discarded to each band's histogram.

The same function prepares training chips and pipeline tiles, so the models see identical
inputs in training and inference.

Statistics come either from each patch (the default) or once for a whole city
(:class:`AreaStats`: exact histograms for 8/16-bit imagery, a bounded sample otherwise, so
memory stays flat however large the area), which keeps neighbouring tiles on one scale.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from urbanfabric.errors import InvalidInput

#: Tukey's fence: values above Q3 + 1.5·IQR count as extreme.
DEFAULT_K = 1.5


@dataclass(frozen=True)
class BandStats:
    """Robust statistics of each band: first and third quartile."""

    q1: tuple[float, ...]
    q3: tuple[float, ...]

    def upper(self, k: float = DEFAULT_K) -> np.ndarray:
        """Upper clip value per band, ``Q3 + k·IQR`` (never below Q3, never zero)."""
        q1 = np.asarray(self.q1, dtype=np.float64)
        q3 = np.asarray(self.q3, dtype=np.float64)
        up = q3 + k * np.maximum(q3 - q1, 0.0)
        return np.where(up > 0, up, 1.0)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BandStats:
        """Statistics written by :meth:`to_json`.

        Raises:
            InvalidInput: not such a document (field ``stats``).
        """
        try:
            doc = json.loads(text)
            stats = cls(tuple(float(v) for v in doc["q1"]), tuple(float(v) for v in doc["q3"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput("stats", f"not a band statistics document: {exc}") from exc
        if len(stats.q1) != len(stats.q3) or not stats.q1:
            raise InvalidInput("stats", "q1 and q3 need one value per band")
        return stats


def band_stats(image: np.ndarray, nodata: float | None = None) -> BandStats:
    """Quartiles of each band of a ``(bands, rows, cols)`` array, ignoring ``nodata`` and NaN.

    Raises:
        InvalidInput: the array is not 3-D or has no valid pixel.
    """
    if image.ndim != 3:
        raise InvalidInput("image", f"expected (bands, rows, cols), got shape {image.shape}")
    q1s, q3s = [], []
    for b, band in enumerate(image):
        valid = band[np.isfinite(band)] if np.issubdtype(band.dtype, np.floating) else band.ravel()
        if nodata is not None:
            valid = valid[valid != nodata]
        if valid.size == 0:
            raise InvalidInput("image", f"band {b} has no valid pixel")
        q1, q3 = np.percentile(valid, [25, 75])
        q1s.append(float(q1))
        q3s.append(float(q3))
    return BandStats(tuple(q1s), tuple(q3s))


def iqr_scale(
    image: np.ndarray,
    stats: BandStats | None = None,
    k: float = DEFAULT_K,
    nodata: float | None = None,
) -> np.ndarray:
    """Scale a ``(bands, rows, cols)`` image to 0–1 float32 with per-band IQR clipping.

    Args:
        image: raw pixel values, any numeric dtype.
        stats: precomputed statistics (e.g. over a whole city); computed from ``image`` when
            omitted (per-patch scaling).
        k: fence multiplier; the clip range is ``[0, Q3 + k·IQR]``.
        nodata: raw value marking missing pixels; they become NaN in the output.

    Returns:
        float32 array of the same shape, values in [0, 1] (NaN where nodata).
    """
    stats = stats or band_stats(image, nodata=nodata)
    if len(stats.q1) != image.shape[0]:
        raise InvalidInput("stats", f"{len(stats.q1)} bands of statistics for {image.shape[0]} bands")
    upper = stats.upper(k)[:, None, None]
    out = np.clip(image.astype(np.float32), 0.0, upper) / upper
    out = out.astype(np.float32)
    if nodata is not None:
        # A pixel is missing when every band holds the nodata value.
        out[:, (image == nodata).all(axis=0)] = np.nan
    return out


def calibrate_tile(
    image: np.ndarray,
    tile_id: str,
    stats: BandStats | None = None,
    k: float = DEFAULT_K,
    nodata: float | None = None,
) -> tuple[np.ndarray, BandStats]:
    """:func:`iqr_scale` for one pipeline tile, per patch or with area statistics.

    Returns:
        ``(ard, stats_used)``.

    Raises:
        InvalidInput: the tile holds no valid pixel (field ``tile``, naming it), or the area
            statistics do not match its bands (field ``stats``).
    """
    if image.ndim == 3 and not _has_valid(image, nodata):
        raise InvalidInput("tile", f"{tile_id} holds only nodata: nothing to calibrate")
    used = stats or band_stats(image, nodata=nodata)
    return iqr_scale(image, used, k=k, nodata=nodata), used


def _has_valid(image: np.ndarray, nodata: float | None) -> bool:
    valid = np.isfinite(image) if np.issubdtype(image.dtype, np.floating) else np.ones(image.shape, bool)
    if nodata is not None:
        valid &= image != nodata
    return bool(valid.any())


class AreaStats:
    """Per-band quartiles over a whole area (a city), fed one tile at a time.

    8- and 16-bit integer imagery is counted into exact per-band histograms (65,536 bins at
    most), so the quartiles equal those of all pixels pooled. Other data types keep a uniform
    random sample of at most ``sample_per_tile`` valid pixels per band and tile. Either way
    memory does not grow with the area.
    """

    def __init__(self, nodata: float | None = None, sample_per_tile: int = 65_536, seed: int = 0) -> None:
        self.nodata = nodata
        self.sample_per_tile = sample_per_tile
        self._rng = np.random.default_rng(seed)
        self._hist: list[np.ndarray] | None = None
        self._samples: list[list[np.ndarray]] | None = None
        self.tiles = 0
        self._dtype: np.dtype | None = None

    def add(self, image: np.ndarray) -> None:
        """Count one ``(bands, rows, cols)`` tile (nodata and NaN ignored)."""
        if image.ndim != 3:
            raise InvalidInput("image", f"expected (bands, rows, cols), got shape {image.shape}")
        exact = image.dtype in (np.uint8, np.uint16)
        if self._dtype is None:
            self._dtype = image.dtype
        elif image.dtype != self._dtype:
            # A uint16 tile counted into uint8 histograms would silently lose every value > 255.
            raise InvalidInput("image", f"tiles of one area must share a data type: {image.dtype} after {self._dtype}")
        if self._hist is None and self._samples is None:
            if exact:
                self._hist = [np.zeros(np.iinfo(image.dtype).max + 1, np.int64) for _ in image]
            else:
                self._samples = [[] for _ in image]
        n = len(self._hist) if self._hist is not None else len(self._samples or [])
        if image.shape[0] != n:
            raise InvalidInput("image", f"{image.shape[0]} bands after {n}-band tiles")
        for b, band in enumerate(image):
            valid = band[np.isfinite(band)] if np.issubdtype(band.dtype, np.floating) else band.ravel()
            if self.nodata is not None:
                valid = valid[valid != self.nodata]
            if self._hist is not None and exact:
                counts = np.bincount(valid, minlength=len(self._hist[b]))
                self._hist[b] += counts[: len(self._hist[b])]
            else:
                if self._samples is None:  # integer tiles first, float later: keep it simple
                    raise InvalidInput("image", "tiles of one area must share a data type")
                if valid.size > self.sample_per_tile:
                    valid = self._rng.choice(valid, self.sample_per_tile, replace=False)
                self._samples[b].append(valid.astype(np.float64))
        self.tiles += 1

    def stats(self) -> BandStats:
        """Quartiles of everything added so far.

        Raises:
            InvalidInput: no valid pixel was seen (field ``area``).
        """
        q1s, q3s = [], []
        if self._hist is not None:
            for b, hist in enumerate(self._hist):
                if hist.sum() == 0:
                    raise InvalidInput("area", f"band {b} has no valid pixel in {self.tiles} tile(s)")
                q1s.append(_hist_percentile(hist, 25))
                q3s.append(_hist_percentile(hist, 75))
        elif self._samples is not None:
            for b, parts in enumerate(self._samples):
                pooled = np.concatenate(parts) if parts else np.empty(0)
                if pooled.size == 0:
                    raise InvalidInput("area", f"band {b} has no valid pixel in {self.tiles} tile(s)")
                q1, q3 = np.percentile(pooled, [25, 75])
                q1s.append(float(q1))
                q3s.append(float(q3))
        else:
            raise InvalidInput("area", "no tile was added")
        return BandStats(tuple(q1s), tuple(q3s))


def _hist_percentile(hist: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear method) of the values a histogram counts."""
    cum = np.cumsum(hist)
    n = int(cum[-1])
    rank = (n - 1) * q / 100.0
    lo, frac = int(np.floor(rank)), rank - np.floor(rank)
    # The value of order statistic r is the first bin whose cumulative count exceeds r.
    v_lo = int(np.searchsorted(cum, lo, side="right"))
    v_hi = int(np.searchsorted(cum, min(lo + 1, n - 1), side="right"))
    return float(v_lo + frac * (v_hi - v_lo))


def area_stats(images: Iterable[np.ndarray], nodata: float | None = None) -> BandStats:
    """Quartiles over all tiles of an area, streamed (see :class:`AreaStats`)."""
    acc = AreaStats(nodata=nodata)
    for image in images:
        acc.add(image)
    return acc.stats()
