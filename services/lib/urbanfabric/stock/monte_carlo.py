"""The Monte-Carlo design of the stock estimate: options, and the piecewise-linear quantile
functions its draws go through (see :class:`StockOptions`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from urbanfabric.errors import InvalidInput
from urbanfabric.stock.vocabulary import LEVELS, STRUCTURES
from urbanfabric.stock.structure import ROOF_FALLBACK_STRUCTURE


@dataclass(frozen=True)
class StockOptions:
    """Monte-Carlo design and fallback rules of :meth:`MaterialIntensityTable.simulate_stock`.

    Sampling. Every building gets ``draws`` joint draws of (height, MI of every material).
    The draws' probability levels are fixed by ``seed`` and shared by all buildings (common
    random numbers), so a building's result depends only on its own inputs and the seed —
    not on the batch it travels in or its position there (re-delivered or re-batched work
    gives identical numbers). MI: per material a Latin-hypercube sample of ``draws`` levels
    through the piecewise-linear inverse CDF of the table's percentiles (p0 … p100);
    materials are independent unless ``material_correlation`` > 0 (one-factor Gaussian
    copula). Height: ``height_strata`` stratified levels ((i + ½) / strata: 0.05 … 0.95 for
    10) of a piecewise-linear quantile function through (0.05, p05), (0.5, height),
    (0.95, p95); each stratum takes ``draws / strata`` of the MI draws. Floors per draw are
    ``max(1, round(height / storey_height_m))`` as in :func:`urbanfabric.attributes.features.
    floors_from_height`, so the floor count stays an integer. Output percentiles use numpy's
    linear method on the ``draws`` products GFA × MI (and their sums for the totals and CO2e).

    Attributes:
        draws: Monte-Carlo draws per building.
        seed: seed of the draw levels.
        height_strata: distinct height levels (≤ draws).
        material_correlation: rank correlation (0 … 1) of the materials' MI draws; 0 treats
            them as independent, 1 as comonotonic (the deterministic estimate's assumption).
        storey_height_m: floor-to-floor height for height → floors.
        height_band: (low, high) multipliers of the height when its band is missing.
        default_structure: structure for unknown structure classes.
        max_area_m2: footprints larger than this are rejected (the largest buildings on
            earth are ≈ 0.5 km²; anything above 1 km² is a merged blob, not a building).
        max_height_m: heights above this are treated as missing (tallest building 828 m).
        single_family_max_floors: RES with at most this many floors counts as RS.
        chunk: distinct (type, floors pattern) combinations sorted at once (memory bound).
        calibrated: widen (or narrow) each material's MI range by the table's calibration
            factors (:mod:`urbanfabric.stock.calibration`, fitted leave-one-country-out on
            measured buildings so the p05–p95 of a new place covers ≈ 90 %); False = the
            table's raw percentiles. No effect on a table without a calibration.
    """

    draws: int = 100
    seed: int = 0
    height_strata: int = 10
    material_correlation: float = 0.0
    storey_height_m: float = 3.0
    height_band: tuple[float, float] = (0.7, 1.4)
    default_structure: str = ROOF_FALLBACK_STRUCTURE
    max_area_m2: float = 1e6
    max_height_m: float = 1000.0
    single_family_max_floors: int = 2
    chunk: int = 256
    calibrated: bool = True

    def __post_init__(self) -> None:
        if self.draws < 2:
            raise InvalidInput("draws", f"need at least 2 draws, got {self.draws}")
        if not 1 <= self.height_strata <= self.draws:
            raise InvalidInput("height_strata", f"must be in 1..draws, got {self.height_strata}")
        if not 0.0 <= self.material_correlation <= 1.0:
            raise InvalidInput("material_correlation", "must be in [0, 1]")
        if not self.storey_height_m > 0:
            raise InvalidInput("storey_height_m", "must be > 0")
        lo, hi = self.height_band
        if not 0 < lo <= 1 <= hi:
            raise InvalidInput("height_band", f"need 0 < low <= 1 <= high, got {self.height_band}")
        if self.default_structure not in STRUCTURES:
            raise InvalidInput("default_structure", f"not one of {list(STRUCTURES)}")

    def mi_levels(self, n_materials: int) -> np.ndarray:
        """Probability levels (materials, draws) of the MI draws, reproducible from ``seed``."""
        rng = np.random.default_rng(self.seed)
        d = self.draws
        u = np.stack([(rng.permutation(d) + rng.random(d)) / d for _ in range(n_materials)])
        rho = self.material_correlation
        if rho > 0:
            from scipy.special import ndtr, ndtri

            common = ndtri((rng.permutation(d) + rng.random(d)) / d)
            u = ndtr(np.sqrt(rho) * common + np.sqrt(1.0 - rho) * ndtri(u))
        return u

    def category_levels(self, stream: int) -> np.ndarray:
        """Stratified probability levels (draws,) for sampling a class per draw — the
        structure (stream 1) or the function (stream 2) — from its probabilities; shared by
        all buildings (common random numbers) and independent of the MI draws."""
        rng = np.random.default_rng([self.seed, 0xC1A55, stream])
        d = self.draws
        return (rng.permutation(d) + rng.random(d)) / d

    def height_levels(self) -> np.ndarray:
        """The stratified height probability levels, ascending."""
        return (np.arange(self.height_strata) + 0.5) / self.height_strata

    def stratum_of_draw(self) -> np.ndarray:
        """Height stratum of each draw (balanced: draws // strata draws per stratum)."""
        return np.arange(self.draws) * self.height_strata // self.draws


def sample_classes(p: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Class index per (building, draw): the inverse CDF of each row's probabilities ``p``
    (n, classes) at the shared ``levels`` (draws,) → (n, draws) int."""
    cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    cdf[:, -1] = 1.0
    return (levels[None, None, :] > cdf[:, :, None]).sum(axis=1).astype(np.int64)


def inverse_cdf(q: np.ndarray, levels: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Piecewise-linear inverse CDF through (levels, q[..., m, :]) at u[m, d] → (..., m, d)."""
    k = np.clip(np.searchsorted(levels, u, side="right") - 1, 0, len(levels) - 2)  # (M, D)
    w = (u - levels[k]) / (levels[k + 1] - levels[k])
    m = np.arange(q.shape[-2])[:, None]
    lo = q[..., m, k]
    hi = q[..., m, k + 1]
    return lo + w * (hi - lo)


def three_point_quantiles(p05: np.ndarray, p50: np.ndarray, p95: np.ndarray,
                           v: np.ndarray) -> np.ndarray:
    """Quantiles at levels v of the piecewise-linear distribution through three percentiles.

    Linear between (0.05, p05), (0.5, p50), (0.95, p95), the end segments continued beyond;
    clipped at 0. Returns (n, len(v)).
    """
    p05, p50, p95 = (np.asarray(a, dtype=np.float64)[:, None] for a in (p05, p50, p95))
    low = p05 + (v - 0.05) / 0.45 * (p50 - p05)
    high = p50 + (v - 0.5) / 0.45 * (p95 - p50)
    return np.maximum(np.where(v <= 0.5, low, high), 0.0)


def unique_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Representative row and inverse index of the distinct rows of an int matrix.

    Hashes each row to 64 bits (multiply-add with fixed odd constants, wrapping), finds the
    distinct hashes and then checks that every row equals its representative; on a hash
    collision it falls back to an exact ``np.unique(axis=0)``. Exact either way.
    """
    weights = np.random.default_rng(0x5EED).integers(1, 2**63, size=keys.shape[1],
                                                     dtype=np.uint64) | np.uint64(1)
    h = (keys.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    _, rep, inv = np.unique(h, return_index=True, return_inverse=True)
    if not np.array_equal(keys[rep[inv]], keys):
        _, rep, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return rep, inv.ravel()


def mixture_quantiles(q: np.ndarray) -> np.ndarray:
    """Percentiles (at :data:`LEVELS`) of the equal-weight mixture over regions.

    ``q``: (F, S, R, M, 7) piecewise-linear quantile functions. Each CDF is piecewise linear
    between its percentiles, so the mixture CDF is piecewise linear between the union of all
    regions' percentile values; it is evaluated there (right value and left limit, for point
    masses where percentiles coincide) and inverted exactly.
    """
    levels = np.array(list(LEVELS.values()))
    f_, s_, _, m_, _ = q.shape
    out = np.empty((f_, s_, m_, len(levels)))
    for i in range(f_):
        for j in range(s_):
            for k in range(m_):
                pts = q[i, j, :, k, :]  # (R, 7)
                grid = np.unique(pts)
                right = np.mean([_cdf(p, levels, grid, "right") for p in pts], axis=0)
                left = np.mean([_cdf(p, levels, grid, "left") for p in pts], axis=0)
                out[i, j, k] = [_invert(grid, left, right, lv) for lv in levels]
    return out


def _cdf(x: np.ndarray, levels: np.ndarray, g: np.ndarray, side: str) -> np.ndarray:
    """CDF (side="right") or its left limit ("left") of the quantile function (levels, x)."""
    if side == "right":
        k = np.searchsorted(x, g, side="right") - 1  # last point <= g
        below = k < 0
        k = np.clip(k, 0, len(x) - 2)
        span = x[k + 1] - x[k]
        val = levels[k] + np.where(span > 0, (g - x[k]) / np.where(span > 0, span, 1), 0) * (
            levels[k + 1] - levels[k])
        val = np.where(g >= x[-1], 1.0, val)
        return np.where(below, 0.0, np.clip(val, 0, 1))
    k = np.searchsorted(x, g, side="left")  # first point >= g
    val = np.empty_like(g, dtype=np.float64)
    first = k == 0
    after = k >= len(x)
    kk = np.clip(k, 1, len(x) - 1)
    span = x[kk] - x[kk - 1]
    val = levels[kk - 1] + np.where(span > 0, (g - x[kk - 1]) / np.where(span > 0, span, 1),
                                    1) * (levels[kk] - levels[kk - 1])
    val = np.where(first, 0.0, val)
    return np.where(after, 1.0, np.clip(val, 0, 1))


def _invert(grid: np.ndarray, left: np.ndarray, right: np.ndarray, level: float) -> float:
    """Smallest x with mixture CDF(x) >= level, CDF linear from right[i-1] to left[i]."""
    if level <= 0:
        return float(grid[0])
    i = int(np.searchsorted(right, level - 1e-12, side="left"))
    i = min(i, len(grid) - 1)
    if i == 0 or left[i] < level - 1e-12:
        return float(grid[i])  # inside the jump at grid[i] (or at the minimum)
    lo_f, hi_f = right[i - 1], left[i]
    if hi_f <= lo_f:
        return float(grid[i - 1])
    return float(grid[i - 1] + (level - lo_f) / (hi_f - lo_f) * (grid[i] - grid[i - 1]))
