"""Building function: labels from OSM tags / land use, an XGBoost classifier, floors per function.

CMAB ("Building function") labels every building inside an area-of-interest plot with the
plot's function and predicts it from morphology, block, location and POI features with
XGBoost. Where no AOI product exists we take labels from OpenStreetMap, in a configurable
order of sources (:class:`FunctionMapping`):

1. the building's own ``building=*`` value (``apartments`` → residential, ``office`` →
   office, …; ``yes`` says nothing and falls through),
2. other tags on the building polygon (``amenity``, ``shop``, ``office``, ``tourism``),
3. the majority class of the POIs (points) inside the footprint,
4. the land-use polygon holding the footprint's representative point (``landuse=*``),

first source that maps wins; a building no source maps stays unlabelled (``""``) and is not
used for training. The default mapping tables are :data:`DEFAULT_TAG_CLASSES` and
:data:`DEFAULT_LANDUSE_CLASSES`; pass a :class:`FunctionMapping` (or load one from JSON) to
change them.

Classes (:data:`FUNCTION_CLASSES`): ``residential``, ``commercial`` (retail, food, hotels),
``office``, ``industrial`` (factories, warehouses), ``public`` (education, health, worship,
civic, culture, transport stations) and ``other`` (sheds, garages, utility, roofs, …).

:class:`FunctionModel` is one multi-class XGBoost (``multi:softprob``) on
:func:`urbanfabric.attributes.features.footprint_features` columns with class weights; it returns the
probability of every class, so callers see how sure it is. :func:`floors_for_function` turns
height into floors with a storey height per function (:data:`DEFAULT_STOREY_HEIGHT_M`), and
:func:`rasmi_function` maps the class to the RASMI material-intensity key (RS / RM / NR).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xgboost as xgb

from urbanfabric.attributes.features import FEATURE_NAMES, feature_matrix
from urbanfabric.attributes.height import floors_from_height
from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.io.model_registry import weights_path
from urbanfabric.uncertainty import DomainModel, load_domain, tempered

FUNCTION_CLASSES: tuple[str, ...] = (
    "residential", "commercial", "office", "industrial", "public", "other")
UNKNOWN = ""

_R, _C, _O, _I, _P, _X = FUNCTION_CLASSES

#: OSM tag key → {value → class}. ``building`` values follow the OSM wiki's building list;
#: ``*`` maps every other value of that key (``shop=*`` is always commercial).
DEFAULT_TAG_CLASSES: dict[str, dict[str, str]] = {
    "building": {
        **dict.fromkeys(("apartments", "residential", "house", "detached", "semidetached_house",
                         "terrace", "dormitory", "bungalow", "cabin", "farm", "houseboat",
                         "static_caravan", "flats"), _R),
        **dict.fromkeys(("retail", "commercial", "kiosk", "supermarket", "hotel", "shop",
                         "mall", "restaurant"), _C),
        **dict.fromkeys(("office",), _O),
        **dict.fromkeys(("industrial", "warehouse", "factory", "manufacture", "hangar",
                         "storage_tank", "depot"), _I),
        **dict.fromkeys(("public", "civic", "government", "school", "university", "college",
                         "kindergarten", "hospital", "church", "chapel", "cathedral", "mosque",
                         "temple", "synagogue", "religious", "train_station", "transportation",
                         "museum", "fire_station", "sports_hall", "stadium", "library",
                         "townhall", "clinic"), _P),
        **dict.fromkeys(("garage", "garages", "shed", "roof", "hut", "greenhouse", "glasshouse",
                         "utility", "service", "carport", "barn", "farm_auxiliary", "tower",
                         "pavilion", "ship", "bunker", "parking", "toilets", "stable",
                         "boathouse", "transformer_tower", "water_tower"), _X),
    },
    "amenity": {
        **dict.fromkeys(("school", "university", "college", "kindergarten", "hospital",
                         "clinic", "doctors", "library", "townhall", "place_of_worship",
                         "police", "fire_station", "courthouse", "community_centre",
                         "arts_centre", "theatre", "social_facility", "public_building",
                         "dentist", "post_office"), _P),
        **dict.fromkeys(("restaurant", "cafe", "bar", "pub", "fast_food", "bank", "pharmacy",
                         "marketplace", "nightclub", "cinema", "ice_cream", "food_court"), _C),
        **dict.fromkeys(("parking", "fuel", "toilets"), _X),
    },
    "shop": {"*": _C},
    "office": {"*": _O},
    "tourism": {"hotel": _C, "hostel": _C, "guest_house": _C, "motel": _C,
                "museum": _P, "gallery": _P},
}

#: ``landuse`` value → class (OSM landuse=commercial is "predominantly offices and
#: businesses": we read it as commercial; ``civic`` / ``civil`` / ``education`` as public).
DEFAULT_LANDUSE_CLASSES: dict[str, str] = {
    "residential": _R, "commercial": _C, "retail": _C, "industrial": _I, "port": _I,
    "railway": _I, "civic": _P, "civil": _P, "education": _P, "religious": _P,
    "military": _P, "institutional": _P, "farmyard": _X, "greenhouse_horticulture": _X,
    "garages": _X, "allotments": _X,
}

#: Label sources in priority order (see the module docstring).
LABEL_SOURCES: tuple[str, ...] = ("building", "building_tags", "pois", "landuse")

#: Floor-to-floor height (m) per function for floors from height. Typical values: dwellings
#: 2.8–3.0 m, offices 3.5–4 m, shops/public buildings 4 m, sheds and halls one tall storey.
DEFAULT_STOREY_HEIGHT_M: dict[str, float] = {
    _R: 3.0, _C: 4.0, _O: 3.6, _I: 5.0, _P: 4.0, _X: 3.0, UNKNOWN: 3.0}


@dataclass
class FunctionMapping:
    """Where labels come from and how tags map to FUNCTION_CLASSES (configurable).

    Load from JSON with :meth:`load` (keys: ``tag_classes``, ``landuse_classes``,
    ``sources``; missing keys keep the defaults).
    """

    tag_classes: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_TAG_CLASSES.items()})
    landuse_classes: Mapping[str, str] = field(
        default_factory=lambda: dict(DEFAULT_LANDUSE_CLASSES))
    sources: Sequence[str] = LABEL_SOURCES

    def __post_init__(self) -> None:
        bad = {f"{k}={v}": c for k, t in self.tag_classes.items() for v, c in t.items()
               if c not in FUNCTION_CLASSES}
        bad.update({f"landuse={v}": c for v, c in self.landuse_classes.items()
                    if c not in FUNCTION_CLASSES})
        if bad:
            raise InvalidInput("mapping", f"classes {bad} are not in {list(FUNCTION_CLASSES)}")
        unknown = [s for s in self.sources if s not in LABEL_SOURCES]
        if unknown:
            raise InvalidInput("mapping", f"unknown label sources {unknown}")

    @classmethod
    def load(cls, path: str | Path) -> FunctionMapping:
        """Read a JSON mapping (unknown keys are an error)."""
        cfg = json.loads(Path(path).read_text())
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInput("mapping", f"unknown keys {sorted(unknown)}")
        return cls(**cfg)

    def tag_class(self, key: str, value: Any) -> str:
        """Class of one tag (``""`` when it does not map)."""
        if not isinstance(value, str) or not value:
            return UNKNOWN
        table = self.tag_classes.get(key, {})
        v = value.strip().lower().split(";")[0]
        return table.get(v, table.get("*", UNKNOWN))


# --------------------------------------------------------------------------------------------
# OSM reading (GDAL's OSM driver through geopandas: no extra dependency)
# --------------------------------------------------------------------------------------------

_HSTORE = re.compile(r'"((?:[^"\\]|\\.)*)"=>"((?:[^"\\]|\\.)*)"')
#: Keys read from ``other_tags`` into columns (GDAL's default osmconf has no column for them).
_EXTRA_KEYS = ("building:levels", "building:use", "height", "start_date", "highway",
               "public_transport", "railway", "healthcare")


def parse_other_tags(value: Any) -> dict[str, str]:
    """GDAL's ``other_tags`` hstore text (``"k"=>"v","k2"=>"v2"``) as a dict."""
    if not isinstance(value, str):
        return {}
    return {k.replace('\\"', '"'): v.replace('\\"', '"') for k, v in _HSTORE.findall(value)}


def _with_tags(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    if "other_tags" not in frame.columns:
        return frame
    tags = [parse_other_tags(v) for v in frame["other_tags"]]
    out = frame.copy()
    for k in _EXTRA_KEYS:
        if k not in out.columns:
            out[k] = [t.get(k) for t in tags]
    for k in ("amenity", "shop", "office", "tourism", "craft"):
        vals = [t.get(k) for t in tags]
        out[k] = out[k].where(out[k].notna(), vals) if k in out.columns else vals
    return out


@dataclass
class OsmLayers:
    """Layers read from one OSM extract (all EPSG:4326) and what was dropped."""

    buildings: gpd.GeoDataFrame
    landuse: gpd.GeoDataFrame
    pois: gpd.GeoDataFrame
    roads: gpd.GeoDataFrame
    report: dict[str, int]


def poi_category(row: Mapping[str, Any]) -> str:
    """POI category of :data:`urbanfabric.attributes.street_context.POI_CATEGORIES` from OSM tags (or "")."""
    a = row.get("amenity")
    if a in ("restaurant", "cafe", "bar", "pub", "fast_food", "food_court", "ice_cream"):
        return "food"
    if a in ("school", "university", "college", "kindergarten", "library"):
        return "education"
    if a in ("hospital", "clinic", "doctors", "dentist", "pharmacy") or row.get("healthcare"):
        return "health"
    if isinstance(row.get("shop"), str):
        return "shop"
    if isinstance(row.get("office"), str):
        return "office"
    if row.get("public_transport") or row.get("railway") in ("station", "halt", "tram_stop") \
            or row.get("highway") == "bus_stop":
        return "transport"
    return ""


def read_osm_layers(path: str | Path) -> OsmLayers:
    """Buildings, land use, POIs and roads of an ``.osm.pbf`` / ``.osm`` extract.

    Ways whose rings GDAL cannot close come back without geometry; they are dropped and
    counted (``report["dropped_invalid_geometry"]``). POIs are tagged points (``amenity``,
    ``shop``, ``office``, ``tourism``, ``craft``) with a ``category`` column
    (:func:`poi_category`); roads are ``highway`` lines.

    Raises:
        NotFound: no such file.
    """
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"no OSM extract at {p}")
    poly = _with_tags(gpd.read_file(p, layer="multipolygons", on_invalid="ignore"))
    ok = ~(poly.geometry.isna() | poly.geometry.is_empty)
    report = {"multipolygons": len(poly), "dropped_invalid_geometry": int((~ok).sum())}
    poly = poly[ok]
    b = poly[poly["building"].notna()].reset_index(drop=True)
    lu = poly[poly["landuse"].notna()].reset_index(drop=True)
    pts = _with_tags(gpd.read_file(p, layer="points"))
    keys = [k for k in ("amenity", "shop", "office", "tourism", "craft") if k in pts.columns]
    tagged = pts[pts[keys].notna().any(axis=1)].reset_index(drop=True) if keys else pts.iloc[:0]
    tagged = tagged.assign(category=[poi_category(r) for r in tagged.to_dict("records")])
    lines = gpd.read_file(p, layer="lines")
    roads = lines[lines["highway"].notna()].reset_index(drop=True) \
        if "highway" in lines.columns else lines.iloc[:0]
    report.update(buildings=len(b), landuse=len(lu), pois=len(tagged), roads=len(roads))
    return OsmLayers(b, lu, tagged, roads, report)


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def function_labels(
    buildings: gpd.GeoDataFrame,
    *,
    landuse: gpd.GeoDataFrame | None = None,
    pois: gpd.GeoDataFrame | None = None,
    mapping: FunctionMapping | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Function label and the source that gave it, per building (``""`` = unlabelled).

    Args:
        buildings: footprints with OSM tag columns (``building``, ``amenity``, ``shop``, …;
            missing columns count as untagged).
        landuse: polygons with a ``landuse`` column (any CRS; reprojected).
        pois: points with OSM tag columns (``amenity``, ``shop``, ``office``, …).
        mapping: tag tables and source order; defaults to :class:`FunctionMapping`.

    Returns:
        ``(labels, sources)``: object arrays, one entry per building; ``sources`` holds the
        LABEL_SOURCES name that decided.
    """
    m = mapping or FunctionMapping()
    n = len(buildings)
    per_source: dict[str, np.ndarray] = {}

    def tag_col(frame: pd.DataFrame, key: str) -> np.ndarray:
        if key not in frame.columns:
            return np.full(len(frame), UNKNOWN, dtype=object)
        return np.array([m.tag_class(key, v) for v in frame[key]], dtype=object)

    per_source["building"] = tag_col(buildings, "building")
    own = np.full(n, UNKNOWN, dtype=object)
    for key in ("amenity", "shop", "office", "tourism"):
        c = tag_col(buildings, key)
        own = np.where(own == UNKNOWN, c, own)
    per_source["building_tags"] = own
    per_source["pois"] = np.full(n, UNKNOWN, dtype=object)
    per_source["landuse"] = np.full(n, UNKNOWN, dtype=object)
    geoms = np.asarray(buildings.geometry.values, dtype=object)
    if pois is not None and len(pois) and n:
        pc = np.full(len(pois), UNKNOWN, dtype=object)
        for key in ("amenity", "shop", "office", "tourism"):
            pc = np.where(pc == UNKNOWN, tag_col(pois, key), pc)
        pg = np.asarray(pois.to_crs(buildings.crs).geometry.values, dtype=object)
        keep = pc != UNKNOWN
        if keep.any():
            bi, pj = shapely.STRtree(pg[keep]).query(geoms, predicate="intersects")
            votes = pd.DataFrame({"b": bi, "c": pc[keep][pj]})
            if len(votes):
                # Majority per building; ties go to the first class in FUNCTION_CLASSES order.
                counts = votes.value_counts().unstack(fill_value=0)
                counts = counts.reindex(columns=[c for c in FUNCTION_CLASSES
                                                 if c in counts.columns])
                per_source["pois"][counts.index.to_numpy()] = counts.idxmax(axis=1).to_numpy()
    if landuse is not None and len(landuse) and n and "landuse" in landuse.columns:
        lc = np.array([m.landuse_classes.get(str(v).strip().lower(), UNKNOWN)
                       for v in landuse["landuse"]], dtype=object)
        lg = np.asarray(landuse.to_crs(buildings.crs).geometry.values, dtype=object)
        keep = lc != UNKNOWN
        if keep.any():
            pts = shapely.point_on_surface(geoms)
            bi, lj = shapely.STRtree(lg[keep]).query(pts, predicate="within")
            # Nested land-use polygons: the smallest one is the most specific.
            order = np.argsort(-shapely.area(lg[keep][lj]))
            per_source["landuse"][bi[order]] = lc[keep][lj[order]]
    labels = np.full(n, UNKNOWN, dtype=object)
    sources = np.full(n, UNKNOWN, dtype=object)
    for s in m.sources:
        fill = (labels == UNKNOWN) & (per_source[s] != UNKNOWN)
        labels[fill] = per_source[s][fill]
        sources[fill] = s
    return labels, sources


# --------------------------------------------------------------------------------------------
# Classifier
# --------------------------------------------------------------------------------------------

FORMAT_VERSION = 1
#: Shallow trees and a large minimum leaf weight: a few thousand labels, six classes.
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "multi:softprob", "num_class": len(FUNCTION_CLASSES), "eta": 0.1,
    "max_depth": 4, "min_child_weight": 3.0, "subsample": 0.8, "colsample_bytree": 0.8,
    "lambda": 1.0, "tree_method": "hist", "eval_metric": "mlogloss",
}


def class_weights(codes: np.ndarray, power: float) -> np.ndarray:
    """Sample weights (class count)^−power, mean 1 (power 1 balances the classes fully)."""
    counts = np.bincount(codes, minlength=len(FUNCTION_CLASSES)).astype(np.float64)
    w = np.maximum(counts[codes], 1.0) ** -power
    return w / w.mean()


def encode(labels: Sequence[str] | np.ndarray) -> np.ndarray:
    """Class index of each label.

    Raises:
        InvalidInput: ``field="labels"`` for a label outside FUNCTION_CLASSES.
    """
    lab = np.asarray(labels, dtype=object)
    idx = {c: i for i, c in enumerate(FUNCTION_CLASSES)}
    bad = sorted({str(v) for v in lab if v not in idx})
    if bad:
        raise InvalidInput("labels", f"unknown function classes {bad}")
    return np.array([idx[v] for v in lab], dtype=np.int64)


class FunctionModel:
    """Multi-class XGBoost over FUNCTION_CLASSES on footprint features (CMAB "Building
    function"). ``predict_proba`` gives every class's probability; ``predict`` the argmax.

    Args:
        params: XGBoost parameters merged over DEFAULT_PARAMS.
        class_weight_power: 0 = classes as drawn, 1 = fully balanced.
    """

    def __init__(self, params: dict[str, Any] | None = None,
                 class_weight_power: float = 0.5) -> None:
        self.params: dict[str, Any] = {**DEFAULT_PARAMS, **(params or {})}
        self.class_weight_power = class_weight_power
        self.feature_names: tuple[str, ...] = FEATURE_NAMES
        self.booster: xgb.Booster | None = None
        #: Calibration temperature of the class probabilities (meta.json ``temperature``).
        self.temperature = 1.0
        #: Out-of-domain statistics (meta.json ``ood``), None without.
        self.domain: DomainModel | None = None
        self.info: dict[str, Any] = {}

    def fit(self, X: pd.DataFrame, labels: Sequence[str] | np.ndarray, seed: int = 0,
            num_boost_round: int = 400, early_stopping_rounds: int = 30,
            nthread: int = 1, groups: np.ndarray | None = None) -> FunctionModel:
        """Fit on labelled rows; rounds chosen by early stopping on a held-back 20 %.

        Args:
            X: feature table (its columns become ``feature_names``).
            labels: FUNCTION_CLASSES names.
            groups: optional spatial group per row (e.g. a block id): the early-stopping rows
                are whole groups, so the round count is not tuned on neighbours of training
                rows. Without it the 20 % is drawn row by row.

        Raises:
            InvalidInput: unknown labels, length mismatch, fewer than 10 rows.
        """
        if isinstance(X, pd.DataFrame):
            self.feature_names = tuple(str(c) for c in X.columns)
        data = feature_matrix(X, self.feature_names)
        y = encode(labels)
        if len(y) != len(data):
            raise InvalidInput("labels", f"{len(y)} labels for {len(data)} rows")
        if len(y) < 10:
            raise InvalidInput("labels", f"need at least 10 labelled buildings, got {len(y)}")
        rng = np.random.default_rng(seed)
        if groups is None:
            val = rng.random(len(y)) < 0.2
        else:
            g = np.asarray(groups).astype(str)
            ug = rng.permutation(np.unique(g))
            val = np.isin(g, ug[: max(1, len(ug) // 5)])
            if val.all() or not val.any():
                val = rng.random(len(y)) < 0.2
        w = class_weights(y, self.class_weight_power)
        names = list(self.feature_names)
        p = {**self.params, "nthread": nthread, "seed": seed}
        probe = xgb.train(p, xgb.DMatrix(data[~val], label=y[~val], weight=w[~val],
                                         feature_names=names),
                          num_boost_round=num_boost_round,
                          evals=[(xgb.DMatrix(data[val], label=y[val], weight=w[val],
                                              feature_names=names), "val")],
                          early_stopping_rounds=early_stopping_rounds, verbose_eval=False)
        rounds = probe.best_iteration + 1
        self.booster = xgb.train(p, xgb.DMatrix(data, label=y, weight=w, feature_names=names),
                                 num_boost_round=rounds)
        self.info = {"n_train": len(y), "seed": int(seed), "rounds": int(rounds),
                     "class_counts": dict(zip(FUNCTION_CLASSES,
                                              np.bincount(y, minlength=6).tolist()))}
        return self

    def predict_proba(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Probabilities, shape (n, len(FUNCTION_CLASSES)), columns in FUNCTION_CLASSES order."""
        if self.booster is None:
            raise NotFound("FunctionModel is not fitted; fit() or load() first")
        data = feature_matrix(X, self.feature_names)
        if len(data) == 0:
            return np.zeros((0, len(FUNCTION_CLASSES)))
        dm = xgb.DMatrix(data, feature_names=list(self.feature_names))
        return tempered(self.booster.predict(dm).reshape(len(data), -1).astype(np.float64), self.temperature)

    def ood_scores(self, X: pd.DataFrame | np.ndarray) -> np.ndarray | None:
        """Out-of-domain score per row (distance of its features to the training data's), or
        None when the version has no statistics (``meta.json`` ``ood``)."""
        if self.domain is None:
            return None
        return self.domain.score(feature_matrix(X, self.feature_names))

    def predict(self, X: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(class names, probability of that class)`` per row."""
        p = self.predict_proba(X)
        k = p.argmax(axis=1)
        return np.asarray(FUNCTION_CLASSES, dtype=object)[k], p[np.arange(len(p)), k]

    def save(self, directory: str | Path) -> Path:
        """Write ``classifier.json`` (XGBoost JSON) and ``meta.json``."""
        if self.booster is None:
            raise NotFound("FunctionModel has nothing to save")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(d / "classifier.json"))
        meta = {"format_version": FORMAT_VERSION, "kind": "xgboost-function",
                "classes": list(FUNCTION_CLASSES), "feature_names": list(self.feature_names),
                "params": self.params, "class_weight_power": self.class_weight_power,
                "xgboost_version": xgb.__version__, "info": self.info}
        (d / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> FunctionModel:
        """Load a model written by :meth:`save`.

        Raises:
            NotFound: no ``meta.json``. InvalidInput: unknown format or class list.
        """
        d = Path(directory)
        if not (d / "meta.json").is_file():
            raise NotFound(f"no FunctionModel at {d} (meta.json missing)")
        meta = json.loads((d / "meta.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise InvalidInput("model", f"unsupported format_version {meta.get('format_version')}")
        if tuple(meta["classes"]) != FUNCTION_CLASSES:
            raise InvalidInput("model", f"classes {meta['classes']} differ from this code's")
        m = cls(params=meta["params"], class_weight_power=float(meta["class_weight_power"]))
        m.feature_names = tuple(meta["feature_names"])
        m.info = meta.get("info", {})
        m.booster = xgb.Booster()
        # The folder's own trees, or those of the version it reuses (registry: weights_from).
        m.booster.load_model(str(weights_path(d, "classifier.json")))
        m.temperature, m.domain = calibration_of(d, meta)
        return m


def calibration_of(directory: Path, meta: dict[str, Any]) -> tuple[float, DomainModel | None]:
    """A tabular model version's temperature and out-of-domain statistics from its ``meta.json``
    (``temperature``; ``ood: {file, threshold, …}``, written by ``models/common/tabular_domain.py``).

    Raises:
        NotFound: the meta names a statistics file the folder lacks.
    """
    temperature = float(meta.get("temperature", 1.0))
    block = meta.get("ood") or {}
    if not block.get("file"):
        return temperature, None
    path = Path(directory) / str(block["file"])
    if not path.is_file():
        raise NotFound(f"model_version: {directory} names out-of-domain statistics {path.name}, which are missing")
    return temperature, load_domain(path)


# --------------------------------------------------------------------------------------------
# Floors and the RASMI key
# --------------------------------------------------------------------------------------------


def storey_heights(functions: Sequence[str] | np.ndarray,
                   table: Mapping[str, float] | None = None) -> np.ndarray:
    """Storey height (m) per building from its function (unknown → the ``""`` entry).

    Raises:
        InvalidInput: ``field="storey_height"`` for a non-positive table value.
    """
    t = {**DEFAULT_STOREY_HEIGHT_M, **(table or {})}
    bad = {k: v for k, v in t.items() if not v > 0}
    if bad:
        raise InvalidInput("storey_height", f"must be > 0, got {bad}")
    f = np.asarray(functions, dtype=object)
    return np.array([t.get(v, t[UNKNOWN]) for v in f], dtype=np.float64)


def floors_for_function(height_m: Sequence[float] | np.ndarray,
                        functions: Sequence[str] | np.ndarray,
                        table: Mapping[str, float] | None = None) -> np.ndarray:
    """Floors = round(height / storey height of the building's function), at least 1."""
    h = np.asarray(height_m, dtype=np.float64)
    s = storey_heights(functions, table)
    if h.shape != s.shape:
        raise InvalidInput("functions", f"{s.shape[0]} functions for {h.shape[0]} heights")
    if len(h) == 0:
        return np.zeros(0, dtype=np.int64)
    # floors_from_height validates heights; apply it per distinct storey height.
    out = np.empty(len(h), dtype=np.int64)
    for v in np.unique(s):
        m = s == v
        out[m] = floors_from_height(h[m], float(v))
    return out


def rasmi_function(functions: Sequence[str] | np.ndarray, floors: Sequence[float] | np.ndarray,
                   area_m2: Sequence[float] | np.ndarray, single_family_max_floors: int = 2,
                   single_family_max_area_m2: float = 250.0) -> np.ndarray:
    """RASMI key per building: residential → RS (small and low) or RM; any other known
    function → NR; unknown (``""``) → the size rule alone (RS / RM), never NR.

    The size rule is :meth:`urbanfabric.stock.derived_intensity.KeyMapping.function` with its defaults.
    """
    f = np.asarray(functions, dtype=object)
    fl = np.asarray(floors, dtype=np.float64)
    a = np.asarray(area_m2, dtype=np.float64)
    size = np.where((fl <= single_family_max_floors) & (a < single_family_max_area_m2),
                    "RS", "RM").astype(object)
    nonres = np.isin(f, [c for c in FUNCTION_CLASSES if c != "residential"])
    return np.where(nonres, "NR", size)
