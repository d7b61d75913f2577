"""Fixed-bin histograms that merge by adding counts (per-partition summaries → the job's).

The report's height and age charts and its p05–p95 of heights and years come from these, so
the aggregate step never rereads a building: each partition's ``_summary.json`` holds the
counts on the same bins, and the job's histogram is their sum. A histogram is a plain dict
(JSON in ``_summary.json`` and ``job.json``)::

    {"start": 0.0, "step": 1.0, "counts": [...], "below": 0, "above": 0, "missing": 3}
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: Building heights: 1 m bins from 0 to 300 m (the tallest predicted heights are ≈ 170 m here;
#: the model caps at 300 m), so a p05 / p95 read off the bins is within half a metre.
HEIGHT_BINS = (0.0, 1.0, 300)
#: Construction years: 1-year bins from 1800 to 2029.
YEAR_BINS = (1800.0, 1.0, 230)


def histogram(values: Iterable[float] | np.ndarray, start: float, step: float, bins: int) -> dict:
    """Counts of ``values`` on ``bins`` bins of width ``step`` from ``start``; NaN are ``missing``."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    x = v[ok]
    idx = np.floor((x - start) / step).astype(np.int64)
    inside = (idx >= 0) & (idx < bins)
    counts = np.bincount(idx[inside], minlength=bins)
    return {"start": float(start), "step": float(step), "counts": [int(c) for c in counts],
            "below": int((idx < 0).sum()), "above": int((idx >= bins).sum()), "missing": int((~ok).sum())}


def merge_histograms(parts: Iterable[dict | None]) -> dict | None:
    """The sum of histograms on the same bins (``None`` parts skipped; ``None`` if there is none).

    Raises:
        ValueError: two parts have different bins.
    """
    out: dict | None = None
    for h in parts:
        if not h:
            continue
        if out is None:
            out = {**h, "counts": list(h["counts"])}
            continue
        if (h["start"], h["step"], len(h["counts"])) != (out["start"], out["step"], len(out["counts"])):
            raise ValueError("histograms on different bins cannot be merged")
        out["counts"] = [a + b for a, b in zip(out["counts"], h["counts"])]
        for k in ("below", "above", "missing"):
            out[k] = out.get(k, 0) + h.get(k, 0)
    return out


def total(h: dict | None) -> int:
    """Values counted (inside the bins, below and above; not the missing ones)."""
    return 0 if not h else int(sum(h["counts"]) + h.get("below", 0) + h.get("above", 0))


def quantile(h: dict | None, q: float) -> float | None:
    """The ``q`` quantile (0–1), linear inside its bin; values below / above the bins count at
    the first / last edge. ``None`` for an empty histogram."""
    n = total(h)
    if not h or n == 0:
        return None
    counts = np.array([h.get("below", 0), *h["counts"], h.get("above", 0)], dtype=np.float64)
    cum = np.cumsum(counts)
    target = q * n
    i = int(np.searchsorted(cum, target, side="left"))
    i = min(i, len(counts) - 1)
    lo = h["start"] + (i - 1) * h["step"]  # bin i-1 of the histogram proper (0 = below)
    if i == 0:
        return float(h["start"])
    if i == len(counts) - 1:
        return float(h["start"] + len(h["counts"]) * h["step"])
    before = cum[i - 1]
    frac = (target - before) / counts[i] if counts[i] else 0.0
    return float(lo + frac * h["step"])


def edges(h: dict) -> np.ndarray:
    """The bins' edges (``len(counts) + 1`` values)."""
    return h["start"] + h["step"] * np.arange(len(h["counts"]) + 1)
