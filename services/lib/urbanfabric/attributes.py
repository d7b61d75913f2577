"""Building attributes from footprints: morphology features, height and floors.

Implements the geometric-attribute step of the CMAB study (``cmab-multi-attribute-buildings.txt``,
section "Building height"): per-footprint morphology and neighbourhood features feed a
*bootstrap-aggregated XGBoost* regressor. N models are trained on bootstrap samples of the
training set; the height estimate is the mean of the members and the members' 5th/95th
percentiles give an uncertainty band (``height_p05`` / ``height_p95`` in the buildings table).

The same :func:`footprint_features` prepares training data (``models/height_xgb/train.py``)
and pipeline footprints, so the model sees identical inputs in training and inference.

All geometry is computed in one local metric CRS (``GeoDataFrame.estimate_utm_crs``) for the
whole input; callers process an area tile by tile, so one UTM zone per call is adequate.
Orientation is measured against UTM grid east, which differs from true east by the grid
convergence (< 3° inside a zone) — negligible for a model feature.

FEATURES (columns of :func:`footprint_features`, in this order):

=========================  =====  ======================================================
name                       unit   definition
=========================  =====  ======================================================
``area_m2``                m²     footprint area (holes excluded)
``perimeter_m``            m      length of all rings (exterior and holes)
``compactness``            –      isoperimetric quotient 4πA/P²; 1 for a disc, π/4 for a
                                  square, 0.698 for a 1:2 rectangle
``elongation``             –      1 − short/long side of the minimum rotated rectangle
                                  (MRR); 0 for a square, → 1 for a thin slab
``orientation_deg``        deg    direction of the MRR's long side, counter-clockwise from
                                  grid east, in [0, 180)
``n_vertices``             –      distinct vertices over all rings (closing points not
                                  counted)
``convexity``              –      A / area of the convex hull; 1 for convex shapes
``rectangularity``         –      A / area of the MRR; 1 for rectangles
``n_within_50m``           –      other footprints whose nearest edge is ≤ 50 m away
``n_within_100m``          –      same, ≤ 100 m
``n_within_200m``          –      same, ≤ 200 m
``area_within_50m_m2``     m²     summed area of the footprints counted in n_within_50m
``area_within_100m_m2``    m²     same for 100 m
``area_within_200m_m2``    m²     same for 200 m
``nn_dist_m``              m      edge-to-edge distance to the nearest other footprint
                                  (0 when touching; NaN when the input has one footprint)
``mean_neighbour_area_m2`` m²     area_within_100m / n_within_100m (NaN with no neighbour)
``area_ratio_100m``        –      area_m2 / mean_neighbour_area_m2 (NaN with no neighbour)
``area_rank_50m``          –      share of the footprints within 50 m that are smaller than
                                  this one (1 with no neighbour)
``n_touching``             –      other footprints within 1 m (adjoining parts / terraces)
``shared_perimeter_frac``  –      share of the perimeter lying within 1 m of another
                                  footprint, in [0, 1]
``max_touching_area_m2``   m²     area of the largest footprint within 1 m (0 if none)
=========================  =====  ======================================================

The last five go beyond the usual morphology set: where a building is drawn as several height
parts (tower on a podium, terrace rows), adjacency and relative size carry much of the height
signal that footprints hold. In development runs (5 members, three random block splits of
Xiamen) they raised held-out R² from 0.07–0.17 to 0.19–0.29; the shipped model's numbers are
in ``models/height_xgb/MODEL_CARD.md``.

Neighbourhood features only see the footprints passed in: buildings near the edge of the input
have truncated neighbourhoods, so pass a margin of context around an area of interest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xgboost as xgb

from urbanfabric.errors import InvalidInput, NotFound

#: (name, unit, one-line definition) of every feature; the module docstring has the long form.
FEATURES: tuple[tuple[str, str, str], ...] = (
    ("area_m2", "m2", "footprint area"),
    ("perimeter_m", "m", "length of all rings"),
    ("compactness", "1", "4*pi*A/P^2"),
    ("elongation", "1", "1 - short/long side of the minimum rotated rectangle"),
    ("orientation_deg", "deg", "long side of the MRR, ccw from grid east, [0, 180)"),
    ("n_vertices", "1", "distinct vertices over all rings"),
    ("convexity", "1", "A / convex hull area"),
    ("rectangularity", "1", "A / MRR area"),
    ("n_within_50m", "1", "other footprints with nearest edge <= 50 m"),
    ("n_within_100m", "1", "other footprints with nearest edge <= 100 m"),
    ("n_within_200m", "1", "other footprints with nearest edge <= 200 m"),
    ("area_within_50m_m2", "m2", "summed area of footprints within 50 m"),
    ("area_within_100m_m2", "m2", "summed area of footprints within 100 m"),
    ("area_within_200m_m2", "m2", "summed area of footprints within 200 m"),
    ("nn_dist_m", "m", "edge-to-edge distance to the nearest other footprint"),
    ("mean_neighbour_area_m2", "m2", "mean area of footprints within 100 m"),
    ("area_ratio_100m", "1", "area / mean area of footprints within 100 m"),
    ("area_rank_50m", "1", "share of footprints within 50 m that are smaller"),
    ("n_touching", "1", "other footprints within 1 m"),
    ("shared_perimeter_frac", "1", "share of perimeter within 1 m of another footprint"),
    ("max_touching_area_m2", "m2", "largest footprint within 1 m"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f[0] for f in FEATURES)

#: Radii (m) of the neighbourhood counts; the largest bounds the single tree query.
NEIGHBOUR_RADII_M: tuple[float, ...] = (50.0, 100.0, 200.0)
#: Footprints closer than this count as adjoining (digitised shared walls rarely coincide).
TOUCH_M = 1.0

#: Query footprints in chunks so the (query, neighbour) pair arrays stay bounded in memory
#: in dense cities (a 200 m radius can hold several hundred neighbours per building).
_CHUNK = 20_000


def _validated_metric_geometries(footprints: gpd.GeoDataFrame) -> np.ndarray:
    """Check the input and return its polygons, made valid, in a local UTM CRS."""
    if not isinstance(footprints, gpd.GeoDataFrame):
        raise InvalidInput("footprints", "expected a geopandas.GeoDataFrame")
    if footprints.crs is None:
        raise InvalidInput("footprints", "has no CRS; set one (e.g. EPSG:4326) first")
    geoms = footprints.geometry.values
    bad = shapely.is_missing(np.asarray(geoms)) | shapely.is_empty(np.asarray(geoms))
    if bad.any():
        raise InvalidInput(
            "footprints",
            f"{int(bad.sum())} null or empty geometries (first at index "
            f"{footprints.index[np.flatnonzero(bad)[0]]!r})",
        )
    kinds = set(footprints.geom_type.unique())
    if not kinds <= {"Polygon", "MultiPolygon"}:
        raise InvalidInput("footprints", f"only (Multi)Polygons allowed, got {sorted(kinds)}")
    metric = footprints.geometry.to_crs(footprints.estimate_utm_crs())
    out = np.asarray(metric.values, dtype=object)
    invalid = ~shapely.is_valid(out)
    if invalid.any():
        # Digitised footprints often self-touch; 'structure' repair keeps them polygonal.
        out[invalid] = shapely.make_valid(out[invalid], method="structure", keep_collapsed=False)
        empty = shapely.is_empty(out)
        if empty.any():
            raise InvalidInput(
                "footprints",
                f"{int(empty.sum())} geometries have no area after repair (first at index "
                f"{footprints.index[np.flatnonzero(empty)[0]]!r})",
            )
    return out


def _localised(geoms: np.ndarray) -> np.ndarray:
    """Each geometry shifted so its bounding box starts at (0, 0).

    GEOS's minimum rotated rectangle loses ~1e-4 m at UTM magnitudes (5e6 m northings); shape
    measures are translation invariant, so they are computed on shifted copies.
    """
    coords, owner = shapely.get_coordinates(geoms, return_index=True)
    origin = shapely.bounds(geoms)[:, :2]
    out = geoms.copy()
    shapely.set_coordinates(out, coords - origin[owner])
    return out


def _vertex_count(geoms: np.ndarray) -> np.ndarray:
    """Distinct vertices per geometry: coordinates minus one closing point per ring."""
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    rings_per_part = shapely.get_num_interior_rings(parts) + 1
    rings = np.bincount(part_of, weights=rings_per_part, minlength=len(geoms))
    return shapely.get_num_coordinates(geoms) - rings.astype(np.int64)


def _mrr_sides(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Long side, short side and long-side angle (deg, [0,180)) of each minimum rotated rectangle."""
    mrr = shapely.oriented_envelope(geoms)
    coords, owner = shapely.get_coordinates(mrr, return_index=True)
    counts = np.bincount(owner, minlength=len(geoms))
    if (counts < 4).any():  # a degenerate MRR is a line or point: only for zero-area input
        raise InvalidInput("footprints", "a footprint has a degenerate (zero-area) envelope")
    start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    e1 = coords[start + 1] - coords[start]
    e2 = coords[start + 2] - coords[start + 1]
    l1 = np.hypot(e1[:, 0], e1[:, 1])
    l2 = np.hypot(e2[:, 0], e2[:, 1])
    long_edge = np.where((l1 >= l2)[:, None], e1, e2)
    angle = np.degrees(np.arctan2(long_edge[:, 1], long_edge[:, 0])) % 180.0
    # 179.9999… and 0 are the same direction; fold float noise so the range is [0, 180).
    angle = np.where(np.isclose(angle, 180.0), 0.0, angle)
    return np.maximum(l1, l2), np.minimum(l1, l2), angle


def _neighbourhood(geoms: np.ndarray, area: np.ndarray) -> dict[str, np.ndarray]:
    """Counts/areas of neighbours within each radius, adjacency, nearest-neighbour distance."""
    n = len(geoms)
    rmax = max(NEIGHBOUR_RADII_M)
    tree = shapely.STRtree(geoms)
    b = shapely.bounds(geoms)
    # Candidates: footprints whose envelope meets the envelope grown by rmax. A plain bbox
    # query plus one exact distance per pair is cheaper than a 'dwithin' query followed by
    # the distances we need anyway for the smaller radii.
    reach = shapely.box(b[:, 0] - rmax, b[:, 1] - rmax, b[:, 2] + rmax, b[:, 3] + rmax)
    counts = {r: np.zeros(n, dtype=np.int64) for r in NEIGHBOUR_RADII_M}
    sums = {r: np.zeros(n, dtype=np.float64) for r in NEIGHBOUR_RADII_M}
    smaller_50 = np.zeros(n, dtype=np.int64)
    n_touch = np.zeros(n, dtype=np.int64)
    shared = np.zeros(n, dtype=np.float64)
    max_touch = np.zeros(n, dtype=np.float64)
    nn = np.full(n, np.inf)
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        q, nb = tree.query(reach[lo:hi])
        q = q + lo
        # Each unordered pair once (in the chunk of its smaller index); distance is symmetric.
        keep = q < nb
        q, nb = q[keep], nb[keep]
        d = shapely.distance(geoms[q], geoms[nb])
        near = d <= rmax
        i = np.concatenate([q[near], nb[near]])  # both directions of every close pair
        j = np.concatenate([nb[near], q[near]])
        dd = np.concatenate([d[near], d[near]])
        for r in NEIGHBOUR_RADII_M:
            m = dd <= r
            counts[r] += np.bincount(i[m], minlength=n)
            sums[r] += np.bincount(i[m], weights=area[j[m]], minlength=n)
        m = (dd <= 50.0) & (area[j] < area[i])
        smaller_50 += np.bincount(i[m], minlength=n)
        np.minimum.at(nn, i, dd)
        t = dd <= TOUCH_M
        it, jt = i[t], j[t]
        if len(it):
            n_touch += np.bincount(it, minlength=n)
            np.maximum.at(max_touch, it, area[jt])
            # Boundary of footprint i that runs within TOUCH_M of neighbour j.
            halo = shapely.buffer(geoms[jt], TOUCH_M, quad_segs=2)
            seg = shapely.length(shapely.intersection(shapely.boundary(geoms[it]), halo))
            shared += np.bincount(it, weights=seg, minlength=n)
    lonely = np.flatnonzero(np.isinf(nn))
    if n > 1 and len(lonely):
        # Nothing within rmax: fall back to a nearest-neighbour query for these few.
        (qi, _), dist = tree.query_nearest(geoms[lonely], exclusive=True, return_distance=True)
        np.minimum.at(nn, lonely[qi], dist)
    nn[np.isinf(nn)] = np.nan
    out: dict[str, np.ndarray] = {}
    for r in NEIGHBOUR_RADII_M:
        out[f"n_within_{int(r)}m"] = counts[r]
    for r in NEIGHBOUR_RADII_M:
        out[f"area_within_{int(r)}m_m2"] = sums[r]
    out["nn_dist_m"] = nn
    mean_nb = np.where(counts[100.0] > 0, sums[100.0] / np.maximum(counts[100.0], 1), np.nan)
    out["mean_neighbour_area_m2"] = mean_nb
    out["area_ratio_100m"] = area / mean_nb
    out["area_rank_50m"] = np.where(
        counts[50.0] > 0, smaller_50 / np.maximum(counts[50.0], 1), 1.0
    )
    out["n_touching"] = n_touch
    # Several neighbours can cover the same stretch of boundary (corners): cap at 1.
    out["shared_perimeter_frac"] = np.minimum(shared / shapely.length(geoms), 1.0)
    out["max_touching_area_m2"] = max_touch
    return out


def footprint_features(footprints: gpd.GeoDataFrame) -> pd.DataFrame:
    """Morphology and neighbourhood features of building footprints (see FEATURES).

    Args:
        footprints: (Multi)Polygon footprints in any CRS that is set. Invalid polygons are
            repaired (``make_valid``, structure method) before measuring.

    Returns:
        One row per footprint, columns ``FEATURE_NAMES`` (float64), index equal to
        ``footprints.index``.

    Raises:
        InvalidInput: ``field="footprints"`` for a missing CRS, null/empty or non-polygonal
            geometries.
    """
    if isinstance(footprints, gpd.GeoDataFrame) and len(footprints) == 0:
        return pd.DataFrame(
            {c: pd.Series(dtype=np.float64) for c in FEATURE_NAMES}, index=footprints.index
        )
    geoms = _validated_metric_geometries(footprints)
    local = _localised(geoms)
    area = shapely.area(local)
    perimeter = shapely.length(local)
    long_side, short_side, angle = _mrr_sides(local)
    hull_area = shapely.area(shapely.convex_hull(local))
    cols: dict[str, np.ndarray] = {
        "area_m2": area,
        "perimeter_m": perimeter,
        "compactness": 4.0 * np.pi * area / perimeter**2,
        "elongation": 1.0 - short_side / long_side,
        "orientation_deg": angle,
        "n_vertices": _vertex_count(local),
        "convexity": area / hull_area,
        "rectangularity": area / (long_side * short_side),
    }
    cols.update(_neighbourhood(geoms, area))
    df = pd.DataFrame(cols, index=footprints.index)[list(FEATURE_NAMES)]
    return df.astype(np.float64)


# --------------------------------------------------------------------------------------------
# Height: bootstrap-aggregated XGBoost
# --------------------------------------------------------------------------------------------

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


def _as_matrix(X: pd.DataFrame | np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
    """Columns of ``X`` in the model's feature order, as float32 (what XGBoost uses)."""
    if isinstance(X, pd.DataFrame):
        missing = [c for c in feature_names if c not in X.columns]
        if missing:
            raise InvalidInput("features", f"missing columns {missing}")
        return X[list(feature_names)].to_numpy(dtype=np.float32)
    arr = np.asarray(X, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != len(feature_names):
        raise InvalidInput(
            "features", f"expected shape (n, {len(feature_names)}), got {arr.shape}"
        )
    return arr


#: Lowest height a prediction may take (one low storey).
MIN_HEIGHT_M = 2.5


class HeightModel:
    """Bootstrap-aggregated XGBoost height regressor (CMAB "Building height").

    Each of ``n_models`` members is an XGBoost model fitted on a bootstrap sample (rows drawn
    with replacement) of the training set, early-stopped on its own out-of-bag rows. The
    prediction is the members' mean; the members' 5th/95th percentiles are the band.

    The band is the *ensemble spread*: it reflects how much the estimate depends on the
    training sample, not the scatter of individual buildings around it, so it covers far
    fewer than 90 % of true heights (see the model card for the measured share).

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
            InvalidInput: on shape mismatch, non-finite or non-positive heights.
        """
        if isinstance(X, pd.DataFrame):
            self.feature_names = tuple(str(c) for c in X.columns)
        data = _as_matrix(X, self.feature_names)
        target = np.asarray(y, dtype=np.float64).ravel()
        if target.shape[0] != data.shape[0]:
            raise InvalidInput("y", f"{target.shape[0]} heights for {data.shape[0]} rows")
        if not np.isfinite(target).all() or (self.log_target and (target <= 0).any()):
            raise InvalidInput("y", "heights must be finite and > 0")
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
        data = _as_matrix(X, self.feature_names)
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
        return p.mean(axis=0), lo, hi

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
        for name in meta["members"]:
            b = xgb.Booster()
            b.load_model(str(d / name))
            model.members.append(b)
        return model


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
