"""Building construction age: two routes (issue 5, item 5; CMAB "Building age").

(a) :func:`first_built_year` — *first appearance* of impervious / built-up surface at the
    footprint in a stack of yearly rasters (GAIA-style, CMAB's method). No training data; the
    answer is bounded by the stack: a footprint already built in the first year is
    ``censored`` (built then *or earlier*), one never built gets NaN. CMAB notes that
    impervious surface often precedes the building, so this route dates early (8.7 years
    earlier than housing-trade records on average in their check). Products that encode the
    first year in one band (GAIA) become a stack with :func:`stack_from_epoch_raster`.

(b) :class:`AgeModel` — XGBoost on ``footprint_features`` where labelled years exist (e.g.
    Boulder ``year_built``): bagged regressors give the year and a p05–p95 band; a multi-class
    classifier gives probabilities of CMAB's five age classes.

Age classes (CMAB "Building quality and age": "time division points are 1985, 1990, 2000,
2010, and 2018"). GAIA's first epoch is 1985, so a cut year is read as the *inclusive* upper
end of its class: ``≤1985``, ``1986–1990``, ``1991–2000``, ``2001–2010``, ``2011–2018``; years
after 2018 fall in the last class (its label then reads "2011+").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xgboost as xgb

from urbanfabric.attributes.features import FEATURE_NAMES, feature_matrix
from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.io.model_registry import weights_path
from urbanfabric.uncertainty import DomainModel, NeighbourDistance, split_conformal_limits, tempered

#: Inclusive upper years of CMAB's age classes (the last one is open-ended).
AGE_CLASS_BREAKS: tuple[int, ...] = (1985, 1990, 2000, 2010, 2018)
AGE_CLASS_LABELS: tuple[str, ...] = ("<=1985", "1986-1990", "1991-2000", "2001-2010", "2011+")


def age_class(years: np.ndarray | Sequence[float]) -> np.ndarray:
    """CMAB age class index 0–4 of each year (see module docstring); −1 for NaN.

    Example: 1985 → 0, 1986 → 1, 2000 → 2, 2018 → 4, 2024 → 4.
    """
    y = np.asarray(years, dtype=np.float64)
    cls = np.searchsorted(np.asarray(AGE_CLASS_BREAKS[:-1], dtype=np.float64), y, side="left")
    return np.where(np.isfinite(y), cls, -1).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Route (a): first appearance in a yearly impervious-surface stack
# --------------------------------------------------------------------------------------------

RasterLike = str | Path | tuple[np.ndarray, Any, Any]


def _read_raster(r: RasterLike) -> tuple[np.ndarray, Any, Any]:
    """(array float64 with NaN for nodata, affine transform, CRS) of a path or a tuple."""
    if isinstance(r, tuple):
        arr, transform, crs = r
        return np.asarray(arr, dtype=np.float64), transform, crs
    import rasterio

    p = Path(r)
    if not p.is_file():
        raise NotFound(f"no raster at {p}")
    with rasterio.open(p) as ds:
        return ds.read(1, masked=True).astype(np.float64).filled(np.nan), ds.transform, ds.crs


def _built_mask(
    fp: gpd.GeoDataFrame, arr: np.ndarray, transform: Any, crs: Any, threshold: float,
    method: str, min_share: float,
) -> np.ndarray:
    """Per footprint: 1.0 built, 0.0 not built, NaN no data, for one year's raster."""
    from rasterio.features import rasterize

    g = fp.geometry.to_crs(crs)
    n = len(g)
    built = arr >= threshold
    valid = np.isfinite(arr)
    if method == "centroid":
        c = shapely.get_coordinates(shapely.centroid(np.asarray(g.values, dtype=object)))
        inv = ~transform
        col = inv.a * c[:, 0] + inv.b * c[:, 1] + inv.c
        row = inv.d * c[:, 0] + inv.e * c[:, 1] + inv.f
        row = np.floor(row).astype(np.int64)
        col = np.floor(col).astype(np.int64)
        inside = (row >= 0) & (row < arr.shape[0]) & (col >= 0) & (col < arr.shape[1])
        out = np.full(n, np.nan)
        r, k = row[inside], col[inside]
        out[inside] = np.where(valid[r, k], built[r, k].astype(np.float64), np.nan)
        return out
    labels = rasterize(((geom, i + 1) for i, geom in enumerate(g)), out_shape=arr.shape,
                       transform=transform, fill=0, dtype="int32", all_touched=True)
    sel = (labels > 0) & valid
    lab = labels[sel] - 1
    cnt = np.bincount(lab, minlength=n)
    share = np.bincount(lab, weights=built[sel].astype(np.float64), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, (share / cnt >= min_share).astype(np.float64), np.nan)


def gaia_value_to_year(value: np.ndarray) -> np.ndarray:
    """GAIA (Gong et al. 2020) pixel value → first impervious year: 1 → 2018 … 34 → 1985;
    0 (never impervious) and other values → NaN."""
    v = np.asarray(value, dtype=np.float64)
    return np.where((v >= 1) & (v <= 34), 2019.0 - v, np.nan)


def stack_from_epoch_raster(
    raster: RasterLike,
    value_to_year: Any = gaia_value_to_year,
    years: Sequence[int] | None = None,
) -> dict[int, tuple[np.ndarray, Any, Any]]:
    """Yearly 0/1 built masks from one raster that encodes the year of first imperviousness.

    Products like GAIA ship a single band whose value is the epoch a pixel turned impervious;
    :func:`first_built_year` wants a stack. Pixels whose value maps to NaN are *never built*
    (0), not nodata — the product says so for every pixel it covers.

    Args:
        raster: path or ``(array, transform, crs)``.
        value_to_year: maps pixel values to years (NaN = never built); GAIA's by default.
        years: the years of the stack; default every year from the earliest to the latest
            found in the raster.

    Returns:
        ``{year: (mask, transform, crs)}`` with mask 1.0 where first year ≤ year.
    """
    arr, transform, crs = _read_raster(raster)
    first = value_to_year(np.where(np.isfinite(arr), arr, 0))
    found = first[np.isfinite(first)]
    if years is None:
        if found.size == 0:
            raise InvalidInput("raster", "no pixel maps to a year")
        years = range(int(found.min()), int(found.max()) + 1)
    with np.errstate(invalid="ignore"):
        return {int(y): ((first <= y).astype(np.float64), transform, crs) for y in years}


def first_built_year(
    footprints: gpd.GeoDataFrame,
    rasters_by_year: Mapping[int, RasterLike],
    threshold: float = 0.5,
    method: str = "centroid",
    min_share: float = 0.5,
    persistent: bool = True,
) -> pd.DataFrame:
    """Year of first appearance of built-up surface at each footprint (route a).

    Args:
        footprints: (Multi)Polygons in any CRS that is set.
        rasters_by_year: ``{year: raster}``; a raster is a single-band GeoTIFF path or an
            ``(array, affine transform, crs)`` tuple. Values ≥ ``threshold`` mean built /
            impervious (0/1 masks, or fractions); NaN / nodata means unknown. Rasters may
            differ in grid and CRS.
        threshold: value at or above which a pixel counts as built.
        method: ``"centroid"`` — the pixel under the footprint's centroid (CMAB); ``"share"``
            — built when at least ``min_share`` of the pixels touching the footprint are.
        min_share: see ``method``.
        persistent: count a year only when the footprint stays built in every later year
            with data (yearly classifications flicker; GAIA itself is monotone). With False,
            the first built year wins.

    Returns:
        DataFrame indexed like ``footprints``: ``year_first_built`` (float; NaN when never
        built or no data), ``censored`` (True when already built in the first year with
        data: built *then or earlier*), ``n_years_with_data``.

    Raises:
        InvalidInput: no rasters, no footprint CRS, or an unknown ``method``.
    """
    if not rasters_by_year:
        raise InvalidInput("rasters_by_year", "no rasters given")
    if method not in ("centroid", "share"):
        raise InvalidInput("method", f"expected 'centroid' or 'share', got {method!r}")
    if footprints.crs is None:
        raise InvalidInput("footprints", "has no CRS")
    years = sorted(int(y) for y in rasters_by_year)
    n = len(footprints)
    stack = np.full((len(years), n), np.nan)
    for k, year in enumerate(years):
        arr, transform, crs = _read_raster(rasters_by_year[year])
        stack[k] = _built_mask(footprints, arr, transform, crs, threshold, method, min_share)
    has = np.isfinite(stack)
    built = np.where(has, stack, 0.0) > 0.5
    yr = np.asarray(years, dtype=np.float64)
    first = np.full(n, np.nan)
    if persistent:
        # Built at year k and never observed unbuilt afterwards (scan from the last year).
        unbuilt_later = np.zeros(n, dtype=bool)
        ok = np.zeros((len(years), n), dtype=bool)
        for k in range(len(years) - 1, -1, -1):
            ok[k] = built[k] & ~unbuilt_later
            unbuilt_later |= has[k] & ~built[k]
        cand = ok
    else:
        cand = built
    any_c = cand.any(axis=0)
    first[any_c] = yr[np.argmax(cand, axis=0)[any_c]]
    first_data = np.where(has.any(axis=0), yr[np.argmax(has, axis=0)], np.nan)
    return pd.DataFrame({
        "year_first_built": first,
        "censored": np.isfinite(first) & (first == first_data),
        "n_years_with_data": has.sum(axis=0).astype(np.int64),
    }, index=footprints.index)


# --------------------------------------------------------------------------------------------
# Route (b): XGBoost on footprint features
# --------------------------------------------------------------------------------------------

FORMAT_VERSION = 1
#: The out-of-domain statistics' file in a version folder (``meta.json`` ``ood.file``).
DOMAIN_FILE = "domain.npz"

REG_PARAMS: dict[str, Any] = {
    "objective": "reg:absoluteerror",  # the median year: robust to a few mislabelled years
    "eta": 0.2, "max_depth": 4, "min_child_weight": 5.0, "subsample": 0.8,
    "colsample_bytree": 0.8, "lambda": 1.0, "tree_method": "hist",
}
CLS_PARAMS: dict[str, Any] = {
    "objective": "multi:softprob", "num_class": len(AGE_CLASS_LABELS), "eta": 0.2,
    "max_depth": 3, "min_child_weight": 2.0, "subsample": 0.8, "colsample_bytree": 0.8,
    "lambda": 1.0, "tree_method": "hist", "eval_metric": "mlogloss",
}


def balanced_weights(cls: np.ndarray, power: float = 0.25) -> np.ndarray:
    """Sample weights (n_c)^-power normalised to mean 1: power 1 fully balances the classes,
    0 leaves them as drawn; 0.25 (default) trades majority-class accuracy for minority recall."""
    counts = np.bincount(cls, minlength=len(AGE_CLASS_LABELS)).astype(np.float64)
    w = np.where(counts[cls] > 0, counts[cls], 1.0) ** -power
    return w / w.mean()


class AgeModel:
    """Construction year (bagged XGBoost regressors) and age-class probabilities (classifier).

    ``predict`` returns the members' mean year with a p05–p95 interval and the classifier's
    probabilities of the five AGE_CLASS_LABELS. Without a ``year_band`` the interval is the
    members' 5th/95th percentiles (ensemble spread, as for height — not a calibrated interval:
    it held 16–20 % of true years on held-out Boulder blocks). A version with a ``year_band``
    (split-conformal residuals in years on held-out blocks, :meth:`calibrate_band`;
    building-age:v3) widens it to ``[mean + q_lo, mean + q_hi]``, never narrower than the spread.
    """

    def __init__(self, class_weight_power: float = 0.25) -> None:
        self.feature_names: tuple[str, ...] = FEATURE_NAMES
        self.members: list[xgb.Booster] = []
        self.classifier: xgb.Booster | None = None
        #: Calibration temperature of the age-class probabilities (meta.json ``temperature``).
        self.temperature = 1.0
        #: Out-of-domain statistics (meta.json ``ood``), None without.
        self.domain: DomainModel | None = None
        self.class_weight_power = class_weight_power
        self.info: dict[str, Any] = {}
        #: Split-conformal year interval (meta.json ``year_band``): {"q_lo", "q_hi",
        #: "coverage_target", "n_calibration", …}; empty = ensemble spread only.
        self.year_band: dict[str, Any] = {}

    def fit(
        self, X: pd.DataFrame, years: np.ndarray | pd.Series, n_models: int = 5, seed: int = 0,
        num_boost_round: int = 300, early_stopping_rounds: int = 30, nthread: int = 1,
    ) -> AgeModel:
        """Fit ``n_models`` bootstrap regressors (early-stopped on out-of-bag rows) and the
        class model (early-stopped on a random 15 % of the rows, then refitted on all).

        Raises:
            InvalidInput: non-finite years, length mismatch, n_models < 1.
        """
        if isinstance(X, pd.DataFrame):
            self.feature_names = tuple(str(c) for c in X.columns)
        data = feature_matrix(X, self.feature_names)
        y = np.asarray(years, dtype=np.float64).ravel()
        if y.shape[0] != data.shape[0]:
            raise InvalidInput("years", f"{y.shape[0]} years for {data.shape[0]} rows")
        if not np.isfinite(y).all():
            raise InvalidInput("years", "years must be finite")
        if n_models < 1:
            raise InvalidInput("n_models", "must be >= 1")
        names = list(self.feature_names)
        rng = np.random.default_rng(seed)
        n = len(y)
        self.members, rounds = [], []
        for k in range(n_models):
            idx = rng.integers(0, n, size=n)
            oob = np.setdiff1d(np.arange(n), idx)
            dtr = xgb.DMatrix(data[idx], label=y[idx], feature_names=names)
            evals = [(xgb.DMatrix(data[oob], label=y[oob], feature_names=names), "oob")]
            b = xgb.train({**REG_PARAMS, "nthread": nthread, "seed": seed * 1000 + k,
                           "base_score": float(np.median(y[idx]))}, dtr,
                          num_boost_round=num_boost_round, evals=evals,
                          early_stopping_rounds=early_stopping_rounds, verbose_eval=False)
            b = b[: b.best_iteration + 1]
            rounds.append(b.num_boosted_rounds())
            self.members.append(b)
        cls = age_class(y)
        w = balanced_weights(cls, self.class_weight_power)
        perm = rng.permutation(n)
        val, tr = perm[: max(1, n * 15 // 100)], perm[max(1, n * 15 // 100):]
        cp = {**CLS_PARAMS, "nthread": nthread, "seed": seed}
        probe = xgb.train(cp, xgb.DMatrix(data[tr], label=cls[tr], weight=w[tr],
                                          feature_names=names),
                          num_boost_round=num_boost_round,
                          evals=[(xgb.DMatrix(data[val], label=cls[val], weight=w[val],
                                              feature_names=names), "val")],
                          early_stopping_rounds=early_stopping_rounds, verbose_eval=False)
        n_cls_rounds = probe.best_iteration + 1
        self.classifier = xgb.train(cp, xgb.DMatrix(data, label=cls, weight=w,
                                                    feature_names=names),
                                    num_boost_round=n_cls_rounds)
        self.info = {"n_train": int(n), "seed": int(seed), "trees_per_member": rounds,
                     "classifier_rounds": int(n_cls_rounds),
                     "class_counts": np.bincount(cls, minlength=5).tolist()}
        return self

    def predict(
        self, X: pd.DataFrame | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(year_mean, year_p05, year_p95, class_proba (n, 5))``."""
        if not self.members or self.classifier is None:
            raise NotFound("AgeModel is not fitted; fit() or load() first")
        data = feature_matrix(X, self.feature_names)
        dm = xgb.DMatrix(data, feature_names=list(self.feature_names))
        p = np.stack([m.predict(dm) for m in self.members]).astype(np.float64)
        proba = tempered(self.classifier.predict(dm).reshape(len(data), len(AGE_CLASS_LABELS)), self.temperature)
        if p.shape[1] == 0:
            e = np.zeros(0)
            return e, e.copy(), e.copy(), proba.astype(np.float64)
        lo, hi = np.percentile(p, [5.0, 95.0], axis=0)
        mean = p.mean(axis=0)
        if self.year_band:
            lo = np.minimum(lo, mean + float(self.year_band["q_lo"]))
            hi = np.maximum(hi, mean + float(self.year_band["q_hi"]))
        return mean, np.minimum(lo, mean), np.maximum(hi, mean), proba.astype(np.float64)

    def calibrate_band(self, X: pd.DataFrame | np.ndarray, years: np.ndarray | pd.Series,
                       coverage: float = 0.90) -> dict[str, Any]:
        """Fit the year interval on held-out buildings (split conformal, residuals in years).

        The residuals ``year − mean`` of buildings the members never saw give ``q_lo`` /
        ``q_hi`` with split conformal's finite-sample ranks
        (:func:`urbanfabric.uncertainty.split_conformal_limits`; Lei et al. 2018). Calibrate
        on blocks apart from the training *and* the test blocks, so a test coverage is an
        honest estimate for unseen places of the same city. Additive years: the error of a
        year does not grow with the year, and residuals scaled by the ensemble spread gave a
        band a third wider for similar coverage, leaving one val block out at a time
        (``models/building_age/conformal.py``; docs/results.md, "Age").

        Raises:
            InvalidInput: fewer than 20 calibration years, non-finite years, length mismatch.
        """
        y = np.asarray(years, dtype=np.float64).ravel()
        mean = self.predict(X)[0]  # the band never moves the mean
        if y.shape != mean.shape or len(y) < 20:
            raise InvalidInput("years", f"need ≥ 20 calibration years matching X, got {len(y)}")
        if not np.isfinite(y).all():
            raise InvalidInput("years", "calibration years must be finite")
        q_lo, q_hi = split_conformal_limits(y - mean, coverage)
        self.year_band = {"method": "split-conformal year residuals (years)",
                          "coverage_target": float(coverage), "q_lo": min(q_lo, 0.0),
                          "q_hi": max(q_hi, 0.0), "n_calibration": int(len(y))}
        return self.year_band

    def ood_scores(self, X: pd.DataFrame | np.ndarray) -> np.ndarray | None:
        """Out-of-domain score per row, or None when the version has no statistics."""
        if self.domain is None:
            return None
        return self.domain.score(feature_matrix(X, self.feature_names))

    def save(self, directory: str | Path) -> Path:
        """Write ``year_XX.json`` members, ``classes.json`` and ``meta.json``."""
        if not self.members or self.classifier is None:
            raise NotFound("AgeModel has nothing to save")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("year_*.json"):  # a smaller ensemble must not leave stale members
            old.unlink()
        files = []
        for k, m in enumerate(self.members):
            files.append(f"year_{k:02d}.json")
            m.save_model(str(d / files[-1]))
        self.classifier.save_model(str(d / "classes.json"))
        meta = {
            "format_version": FORMAT_VERSION, "kind": "bagged-xgboost-age",
            "feature_names": list(self.feature_names), "members": files,
            "classifier": "classes.json", "class_labels": list(AGE_CLASS_LABELS),
            "class_breaks_inclusive": list(AGE_CLASS_BREAKS),
            "class_weight_power": self.class_weight_power,
            "reg_params": REG_PARAMS, "cls_params": CLS_PARAMS,
            "xgboost_version": xgb.__version__, "info": self.info,
        }
        if self.year_band:
            meta["year_band"] = self.year_band
        # What load() reads back: a version saved from a calibrated one (a fine-tune of the
        # served v3) keeps its temperature and out-of-domain score.
        if self.temperature != 1.0:
            meta["temperature"] = float(self.temperature)
        if self.domain is not None:
            self.domain.save(d / DOMAIN_FILE)
            meta["ood"] = {"file": DOMAIN_FILE, "score": "neighbour_distance" if isinstance(self.domain, NeighbourDistance)
                           else "feature_density",
                           "threshold": float(self.domain.threshold)}
        (d / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> AgeModel:
        """Load a model written by :meth:`save`.

        Raises:
            NotFound: no ``meta.json``. InvalidInput: unknown format version.
        """
        d = Path(directory)
        if not (d / "meta.json").is_file():
            raise NotFound(f"no AgeModel at {d} (meta.json missing)")
        meta = json.loads((d / "meta.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise InvalidInput("model", f"unsupported format_version {meta.get('format_version')}")
        m = cls(class_weight_power=float(meta.get("class_weight_power", 0.25)))
        m.feature_names = tuple(meta["feature_names"])
        m.info = meta.get("info", {})
        m.year_band = dict(meta.get("year_band") or {})
        # The folder's own trees, or those of the version it reuses (registry: weights_from).
        for name in meta["members"]:
            b = xgb.Booster()
            b.load_model(str(weights_path(d, name)))
            m.members.append(b)
        c = xgb.Booster()
        c.load_model(str(weights_path(d, meta["classifier"])))
        m.classifier = c
        from urbanfabric.attributes.function import calibration_of

        m.temperature, m.domain = calibration_of(d, meta)
        return m
