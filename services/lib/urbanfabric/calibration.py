"""Radiometric calibration to analysis-ready data (ARD).

Implements the robust per-band scaling of the Global Building Map study
(``global-building-map.txt``, section "Analysis-Ready Data"): each band's bulk is located with
the inter-quartile range, values are clipped to ``[0, Q3 + k·IQR]`` so only extreme values are
cut, and the result is normalised to 0–1. Using the IQR instead of a fixed percentile adapts
how much is discarded to each band's histogram.

The same function prepares training chips and pipeline tiles, so the models see identical
inputs in training and inference.
"""

from __future__ import annotations

from dataclasses import dataclass

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
