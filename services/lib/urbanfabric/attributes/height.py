"""Building height and floors: a bootstrap-aggregated XGBoost regressor over footprint features
(CMAB "Building height"; see docs/references.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.attributes.features import FEATURE_NAMES, feature_matrix


#: Bumped when the on-disk layout of a saved HeightModel changes.
FORMAT_VERSION = 1

#: Member hyper-parameters. Shallow trees with a large minimum leaf weight: footprints carry a
#: weak height signal, deeper trees fit noise (depth 3 matched depth 4–6 on held-out Xiamen
#: blocks) and make the shipped JSON members larger. Members already differ by bootstrap
#: sample; row/column subsampling decorrelates them further.
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "reg:squarederror",
    "eta": 0.15,
    "max_depth": 3,
    "min_child_weight": 10.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "lambda": 1.0,
    "tree_method": "hist",
}


#: Lowest height a prediction may take (one low storey).
MIN_HEIGHT_M = 2.5


class HeightModel:
    """Bootstrap-aggregated XGBoost height regressor (CMAB "Building height").

    Each of ``n_models`` members is an XGBoost model fitted on a bootstrap sample (rows drawn
    with replacement) of the training set, early-stopped on its own out-of-bag rows. The
    prediction is the members' mean; the members' 5th/95th percentiles are the band.

    The raw band is the *ensemble spread*: it reflects how much the estimate depends on the
    training sample, not the scatter of individual buildings around it, so alone it covers
    far fewer than 90 % of true heights. A model with a calibrated ``band`` (split-conformal
    relative residuals on held-out blocks, :meth:`calibrate_band`) widens it to the
    buildings' scatter: ``[mean·(1+q_lo), mean·(1+q_hi)]``, never narrower than the spread.

    Args:
        params: XGBoost parameters merged over ``DEFAULT_PARAMS``.
        log_target: fit members on log(height) instead of metres. Off by default: the
            back-transformed mean is biased low (≈ −3 to −6 m on held-out Xiamen blocks), which
            would bias summed floor area and material stock; squared error on metres targets
            the conditional mean. Predictions are always returned in metres.
    """

    def __init__(self, params: dict[str, Any] | None = None, log_target: bool = False) -> None:
        self.params: dict[str, Any] = {**DEFAULT_PARAMS, **(params or {})}
        self.log_target = log_target
        self.feature_names: tuple[str, ...] = FEATURE_NAMES
        self.members: list[xgb.Booster] = []
        self.info: dict[str, Any] = {}
        #: Split-conformal band: {"q_lo", "q_hi", "coverage_target", "n_calibration", …}.
        self.band: dict[str, Any] = {}

    def fit(
        self,
        X: pd.DataFrame,
        y: np.ndarray | pd.Series,
        n_models: int = 20,
        seed: int = 0,
        num_boost_round: int = 400,
        early_stopping_rounds: int = 30,
        nthread: int = 1,
    ) -> HeightModel:
        """Fit ``n_models`` members on bootstrap samples.

        Args:
            X: feature table; with a DataFrame its columns define ``feature_names``.
            y: heights in metres (> 0 when ``log_target``).
            n_models: ensemble size (CMAB used 100; 20 keeps the shipped model small).
            seed: seeds the bootstrap draws and each member's XGBoost RNG.
            num_boost_round: upper bound on trees per member.
            early_stopping_rounds: stop a member when its out-of-bag RMSE stalls this long.
            nthread: XGBoost threads per member (the machine is shared; keep it small).

        Returns:
            self, fitted.

        Raises:
            InvalidInput: on shape mismatch, non-finite, non-positive or > 1000 m heights.
        """
        if isinstance(X, pd.DataFrame):
            self.feature_names = tuple(str(c) for c in X.columns)
        data = feature_matrix(X, self.feature_names)
        target = np.asarray(y, dtype=np.float64).ravel()
        if target.shape[0] != data.shape[0]:
            raise InvalidInput("y", f"{target.shape[0]} heights for {data.shape[0]} rows")
        if not np.isfinite(target).all() or (target <= 0).any() or (target > 1000).any():
            # A label of -3 m or 2 km is a data error, not a building: clean first
            # (urbanfabric.attributes.measurements.clean_heights drops and counts such rows).
            bad = int((~np.isfinite(target) | (target <= 0) | (target > 1000)).sum())
            raise InvalidInput("y", f"{bad} heights not finite or outside (0, 1000] m; "
                               "run heights.clean_heights first")
        if n_models < 1:
            raise InvalidInput("n_models", "must be >= 1")
        t = np.log(target) if self.log_target else target
        rng = np.random.default_rng(seed)
        n = data.shape[0]
        params = {**self.params, "nthread": nthread}
        self.members = []
        rounds = []
        for k in range(n_models):
            idx = rng.integers(0, n, size=n)
            oob = np.setdiff1d(np.arange(n), idx, assume_unique=False)
            dtrain = xgb.DMatrix(data[idx], label=t[idx], feature_names=list(self.feature_names))
            evals = []
            if len(oob) > 0:
                evals = [(xgb.DMatrix(data[oob], label=t[oob],
                                      feature_names=list(self.feature_names)), "oob")]
            booster = xgb.train(
                {**params, "seed": seed * 1000 + k},
                dtrain,
                num_boost_round=num_boost_round,
                evals=evals,
                early_stopping_rounds=early_stopping_rounds if evals else None,
                verbose_eval=False,
            )
            if evals:
                # Keep only the trees up to the best out-of-bag iteration: smaller, no overfit.
                booster = booster[: booster.best_iteration + 1]
            rounds.append(booster.num_boosted_rounds())
            self.members.append(booster)
        self.info = {
            "n_train": int(n),
            "seed": int(seed),
            "trees_per_member": rounds,
        }
        return self

    def member_predictions(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Heights (m) predicted by every member, shape (n_models, n)."""
        if not self.members:
            raise NotFound("HeightModel has no members; fit() or load() first")
        data = feature_matrix(X, self.feature_names)
        dm = xgb.DMatrix(data, feature_names=list(self.feature_names))
        preds = np.stack([m.predict(dm) for m in self.members]).astype(np.float64)
        # A squared-error member can extrapolate below any real height for tiny sheds: clamp
        # at one low storey, the smallest thing the footprint layers call a building.
        return np.maximum(np.exp(preds) if self.log_target else preds, MIN_HEIGHT_M)

    def predict(self, X: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Height estimate and band.

        Args:
            X: feature table (``footprint_features`` output).

        Returns:
            ``(mean, p05, p95)`` in metres, each shape (n,): members' mean and their 5th /
            95th percentiles (linear interpolation).
        """
        p = self.member_predictions(X)
        if p.shape[1] == 0:
            empty = np.zeros(0)
            return empty, empty.copy(), empty.copy()
        lo, hi = np.percentile(p, [5.0, 95.0], axis=0)
        mean = p.mean(axis=0)
        if self.band:
            no_image = self.rows_without_image(X)
            for rows, band in ((~no_image, self.band),
                               (no_image, self.band.get("no_image") or self.band)):
                if not rows.any():
                    continue
                blo, bhi = _band_limits(mean[rows], band)
                lo[rows] = np.minimum(lo[rows], np.maximum(blo, MIN_HEIGHT_M))
                hi[rows] = np.maximum(hi[rows], bhi)
        return mean, np.minimum(lo, mean), np.maximum(hi, mean)

    @property
    def image_feature_names(self) -> tuple[str, ...]:
        """The model's image-evidence inputs (``img_*`` columns); empty for footprint-only."""
        return tuple(c for c in self.feature_names if c.startswith("img_"))

    def rows_without_image(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Rows whose image-evidence inputs are all missing (the morphology-only path)."""
        cols = self.image_feature_names
        n = len(X)
        if not cols:
            return np.ones(n, dtype=bool)
        data = feature_matrix(X, self.feature_names)
        idx = [self.feature_names.index(c) for c in cols]
        return np.asarray(~np.isfinite(data[:, idx]).any(axis=1), dtype=bool)

    def calibrate_band(self, X: pd.DataFrame | np.ndarray, y: np.ndarray | pd.Series,
                       coverage: float = 0.90, method: str = "relative") -> dict[str, Any]:
        """Fit the band on held-out buildings (split conformal).

        Residuals of buildings the members never saw give the quantiles ``q_lo`` / ``q_hi``
        (e.g. 5th / 95th for 90 %) with the finite-sample correction of split conformal
        prediction (Vovk et al. 2005; Lei et al. 2018); scatter grows with height, hence
        relative (``(y − mean) / mean``, band ``mean·(1+q)``) or log (``log(y / mean)``,
        band ``mean·exp(q)``) residuals. Calibrate on blocks apart from the training *and*
        the test blocks, so the test coverage is an honest estimate for unseen places.

        Args:
            X: features of calibration buildings (not used in training, and not the test set).
            y: their true heights (m).
            coverage: target share of true heights inside the band.
            method: ``"relative"`` or ``"log"``.

        Returns:
            The band dict (the caller stores it in ``band`` or ``band["no_image"]``).
        """
        if method not in ("relative", "log"):
            raise InvalidInput("method", f"must be 'relative' or 'log', got {method!r}")
        target = np.asarray(y, dtype=np.float64).ravel()
        mean = self.member_predictions(X).mean(axis=0)
        if target.shape != mean.shape or len(target) < 20:
            raise InvalidInput("y", f"need ≥ 20 calibration heights matching X, got {len(target)}")
        if not (np.isfinite(target).all() and (target > 0).all()):
            raise InvalidInput("y", "calibration heights must be finite and > 0")
        res = np.log(target / mean) if method == "log" else (target - mean) / mean
        n = len(res)
        alpha = (1.0 - coverage) / 2.0
        # Split-conformal finite-sample levels: ceil((n+1)(1−α))/n, clipped to [0, 1].
        q_hi_level = min(1.0, np.ceil((n + 1) * (1.0 - alpha)) / n)
        q_lo_level = max(0.0, np.floor((n + 1) * alpha) / n)
        band = {
            "method": f"split-conformal {method} residuals",
            "coverage_target": coverage,
            "q_lo": float(min(np.quantile(res, q_lo_level), 0.0)),
            "q_hi": float(max(np.quantile(res, q_hi_level), 0.0)),
            "n_calibration": int(n),
        }
        self.band = band
        return band

    def save(self, directory: str | Path) -> Path:
        """Write ``member_XX.json`` (XGBoost JSON) per member and ``meta.json``.

        Returns:
            The directory written.
        """
        if not self.members:
            raise NotFound("HeightModel has no members to save")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        files = []
        for k, m in enumerate(self.members):
            name = f"member_{k:02d}.json"
            m.save_model(str(d / name))
            files.append(name)
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": "bagged-xgboost-height",
            "feature_names": list(self.feature_names),
            "log_target": self.log_target,
            "params": self.params,
            "members": files,
            "xgboost_version": xgb.__version__,
            "info": self.info,
            "band": self.band,
        }
        (d / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> HeightModel:
        """Load a model written by :meth:`save`.

        Raises:
            NotFound: the directory or ``meta.json`` does not exist.
            InvalidInput: ``field="model"`` for an unknown format version.
        """
        d = Path(directory)
        meta_path = d / "meta.json"
        if not meta_path.is_file():
            raise NotFound(f"no HeightModel at {d} (meta.json missing)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise InvalidInput("model", f"unsupported format_version {meta.get('format_version')}")
        model = cls(params=meta["params"], log_target=bool(meta["log_target"]))
        model.feature_names = tuple(meta["feature_names"])
        model.info = meta.get("info", {})
        model.band = meta.get("band", {})
        for name in meta["members"]:
            b = xgb.Booster()
            b.load_model(str(d / name))
            model.members.append(b)
        return model


def _band_limits(mean: np.ndarray, band: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Lower / upper limits of a calibrated band around ``mean``."""
    if "log" in str(band.get("method", "")):
        return mean * np.exp(band["q_lo"]), mean * np.exp(band["q_hi"])
    return mean * (1.0 + band["q_lo"]), mean * (1.0 + band["q_hi"])


def floors_from_height(h: np.ndarray | Sequence[float], storey_height: float = 3.0) -> np.ndarray:
    """Number of floors from height: ``round(h / storey_height)``, at least 1.

    Args:
        h: heights in metres.
        storey_height: floor-to-floor height in metres (3 m is the common default for
            residential stock; use ~4 m for offices and retail).

    Returns:
        int64 array, same shape as ``h``, every value >= 1.

    Raises:
        InvalidInput: ``field="height"`` for non-finite or negative heights,
            ``field="storey_height"`` for a non-positive storey height.
    """
    if not storey_height > 0:
        raise InvalidInput("storey_height", f"must be > 0, got {storey_height}")
    arr = np.asarray(h, dtype=np.float64)
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise InvalidInput("height", "heights must be finite and >= 0")
    # floor(x + 0.5) rounds halves up (np.rint would round 1.5 storeys to 2 but 2.5 to 2).
    return np.maximum(np.floor(arr / storey_height + 0.5), 1).astype(np.int64)
