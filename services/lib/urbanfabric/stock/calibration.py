"""Calibrated stock intervals: a per-material widening of the material-intensity range, fitted
on measured buildings of places the table was not checked on (issue 18, item 4).

The RASMI percentiles say where 90 % of the *records behind a key* lie; measured buildings of
a new place scatter wider (EU-ECB: 77 % of building totals inside p05–p95). The widening is a
conformal scale factor on the log mass ratio (split conformal prediction, Vovk et al. 2005; Lei
et al., JASA 2018; the scale-factor form of Romano et al., "Conformalized Quantile Regression",
NeurIPS 2019). For a building with measured intensity ``m`` (kg/m² GFA) and the table's
``p05 ≤ p50 ≤ p95`` for its key, the nonconformity score is how far the range would have to be
stretched around the median, on a log scale, to reach ``m``::

    s = log(m / p50) / log(p95 / p50)   if m > p50
    s = log(p50 / m) / log(p50 / p05)   if m < p50           (0 when m = p50)

and the factor ``a`` is the ``⌈(n+1)·0.9⌉``-th smallest score of ``n`` calibration records
(:func:`conformal_factor`). Every intensity draw ``x`` of that material is then mapped to
``p50 · (x / p50)^a`` (:func:`stretch`): quantiles go through a monotone map, so the stretched
p05 / p95 are ``p50 · (p05/p50)^a`` and ``p50 · (p95/p50)^a`` and a building is covered exactly
when ``s ≤ a``; ``a > 1`` widens, ``a < 1`` narrows, the median (the point estimate) stays.
Totals and CO2e are summed per draw after the stretch, so their ranges widen consistently.

The factors live in ``urbanfabric/data/stock_calibration.json`` (written by
``models/material_intensity/calibrate_stock.py``, with its data, command and held-out scores);
``StockOptions.calibrated`` switches them off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from urbanfabric.errors import InvalidInput

#: The shipped calibration file (urbanfabric/data).
CALIBRATION_FILE = "stock_calibration.json"
FORMAT_VERSION = 1


def interval_scores(measured: np.ndarray, p05: np.ndarray, p50: np.ndarray, p95: np.ndarray) -> np.ndarray:
    """Nonconformity score per record (module docstring): the log-scale stretch of
    ``[p05, p95]`` around ``p50`` that just reaches ``measured``; ``inf`` when no stretch can
    (a positive value above a range whose p95 equals its p50, or below a positive p50 whose
    p05 equals it; with p50 = 0, anything above p95); 0 inside a half-range whose end is 0 (the stretched end stays 0, every
    positive value above it is covered)."""
    m, lo, mid, hi = (np.asarray(a, dtype=np.float64) for a in (measured, p05, p50, p95))
    if not (np.isfinite(m).all() and (m > 0).all()):
        raise InvalidInput("measured", "intensities must be finite and > 0")
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(hi > mid, np.log(m / mid) / np.log(hi / mid), np.inf)
        down = np.where(lo <= 0, 0.0, np.where(lo < mid, np.log(mid / m) / np.log(mid / lo), np.inf))
    s = np.where(m > mid, up, np.where(m < mid, down, 0.0))
    # p50 = 0: the draws are not stretched, so the raw range covers or nothing does.
    return np.where(mid <= 0, np.where(m <= hi, 0.0, np.inf), s)


def conformal_factor(scores: np.ndarray, coverage: float = 0.90) -> float:
    """The ``⌈(n+1)·coverage⌉``-th smallest score (split conformal, one-sided score): a new
    exchangeable record is covered with probability ≥ ``coverage``. ``inf`` when ``n`` is too
    small for that rank or the rank lands on an uncoverable record.

    Raises:
        InvalidInput: no score, or coverage outside (0, 1).
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    s = s[~np.isnan(s)]
    if not len(s):
        raise InvalidInput("scores", "no calibration scores")
    if not 0.0 < coverage < 1.0:
        raise InvalidInput("coverage", f"must lie in (0, 1), got {coverage}")
    k = int(np.ceil((len(s) + 1) * coverage - 1e-9))
    return float(s[k - 1]) if k <= len(s) else float("inf")


def stretch(x: np.ndarray, p50: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """``p50 · (x / p50)^factor`` (x, p50 ≥ 0; broadcast): the intensity draws after the
    widening. ``x = 0`` stays 0; where ``p50 = 0`` the draws are left as they are."""
    x = np.asarray(x, dtype=np.float64)
    p50 = np.asarray(p50, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = p50 * np.power(x / p50, factor)
    return np.where((p50 > 0) & (x > 0), out, x)


@dataclass(frozen=True)
class StockCalibration:
    """Per-material widening factors of one MI table source.

    Attributes:
        source: the table source the factors were fitted for (``rasmi``).
        factors: factor per material; materials not listed get ``default_factor``.
        default_factor: the factor fitted on every material's records pooled.
        coverage_target: the nominal coverage the factors were fitted for.
        provenance: data, command, held-out scores (``stock_calibration.json``).
    """

    source: str
    factors: dict[str, float]
    default_factor: float
    coverage_target: float = 0.90
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name, a in {**self.factors, "default": self.default_factor}.items():
            if not (np.isfinite(a) and 0 < a <= 20):
                raise InvalidInput("stock_calibration", f"factor of {name} must be in (0, 20], got {a}")

    def factor_of(self, materials: tuple[str, ...] | list[str]) -> np.ndarray:
        """The factors in ``materials`` order."""
        return np.array([self.factors.get(m, self.default_factor) for m in materials], dtype=np.float64)

    @classmethod
    def load(cls, path: str | Path | None = None) -> dict[str, StockCalibration]:
        """Calibrations per table source from a JSON file (default: the shipped one).

        Raises:
            InvalidInput: unknown format version or a bad factor (field ``stock_calibration``).
        """
        p = Path(path) if path is not None else Path(str(resources.files("urbanfabric") / "data" / CALIBRATION_FILE))
        doc = json.loads(p.read_text())
        if doc.get("format_version") != FORMAT_VERSION:
            raise InvalidInput("stock_calibration", f"unsupported format_version {doc.get('format_version')}")
        out = {}
        for source, block in doc["sources"].items():
            out[source] = cls(source=source, factors={k: float(v) for k, v in block["factors"].items()},
                              default_factor=float(block["default_factor"]),
                              coverage_target=float(doc["coverage_target"]),
                              provenance={k: v for k, v in doc.items() if k != "sources"})
        return out


def shipped_calibration(source: str) -> StockCalibration | None:
    """The shipped calibration of a table source, or None when the file has none for it."""
    try:
        return StockCalibration.load().get(source)
    except FileNotFoundError:
        return None
