"""Building attributes from footprints: features, height and floors.

Implements the geometric-attribute step of the CMAB study (``cmab-multi-attribute-buildings.txt``,
sections "Building height" and "Building function"): per-footprint morphology, neighbourhood,
block, street, location and point-of-interest features feed a *bootstrap-aggregated XGBoost*
regressor. N models are trained on bootstrap samples of the training set; the height estimate
is the mean of the members and the members' 5th/95th percentiles give an uncertainty band
(``height_p05`` / ``height_p95`` in the buildings table).

The same :func:`footprint_features` prepares training data (``models/height_xgb/train.py``,
``models/building_age/train.py``) and pipeline footprints, so models see identical inputs in
training and inference. A model selects its columns by name (``meta.json``), so adding
features never changes what an older model reads; existing names keep their meaning.

All geometry is computed in one local metric CRS (``GeoDataFrame.estimate_utm_crs``) for the
whole input; callers process an area tile by tile, so one UTM zone per call is adequate.
Orientation is measured against UTM grid east, which differs from true east by the grid
convergence (< 3° inside a zone) — negligible for a model feature. Optional context layers
(roads, POIs, centres) are reprojected to that CRS; when a layer is not given, the columns
that need it are NaN (XGBoost routes NaN down a learnt default branch), never an error.

FEATURES (columns of :func:`footprint_features`, in this order). "Needs" names the optional
argument without which the column is NaN. "Centroid" is the footprint's centroid; "r-disc" a
disc of radius r around it.

================================  =====  =====================================================
name                              unit   definition
================================  =====  =====================================================
*Morphology (v1)*
``area_m2``                       m²     footprint area (holes excluded)
``perimeter_m``                   m      length of all rings (exterior and holes)
``compactness``                   –      isoperimetric quotient 4πA/P²; 1 for a disc, π/4 for a
                                         square, 0.698 for a 1:2 rectangle
``elongation``                    –      1 − short/long side of the minimum rotated rectangle
                                         (MRR); 0 for a square, → 1 for a thin slab
``orientation_deg``               deg    direction of the MRR's long side, counter-clockwise
                                         from grid east, in [0, 180)
``n_vertices``                    –      distinct vertices over all rings (closing points not
                                         counted)
``convexity``                     –      A / area of the convex hull; 1 for convex shapes
``rectangularity``                –      A / area of the MRR; 1 for rectangles
*Neighbourhood (v1)*
``n_within_50m``                  –      other footprints whose nearest edge is ≤ 50 m away
``n_within_100m``                 –      same, ≤ 100 m
``n_within_200m``                 –      same, ≤ 200 m
``area_within_50m_m2``            m²     summed area of the footprints counted in n_within_50m
``area_within_100m_m2``           m²     same for 100 m
``area_within_200m_m2``           m²     same for 200 m
``nn_dist_m``                     m      edge-to-edge distance to the nearest other footprint
                                         (0 when touching; NaN when the input has one)
``mean_neighbour_area_m2``        m²     area_within_100m / n_within_100m (NaN, no neighbour)
``area_ratio_100m``               –      area_m2 / mean_neighbour_area_m2 (NaN, no neighbour)
``area_rank_50m``                 –      share of the footprints within 50 m that are smaller
                                         than this one (1 with no neighbour)
``n_touching``                    –      other footprints within 1 m (adjoining parts/terraces)
``shared_perimeter_frac``         –      share of the perimeter lying within 1 m of another
                                         footprint, in [0, 1]
``max_touching_area_m2``          m²     area of the largest footprint within 1 m (0 if none)
*Morphology (v2)*
``mrr_long_m``                    m      long side of the MRR
``mrr_short_m``                   m      short side of the MRR (≈ building depth)
``n_holes``                       –      interior rings (courtyards)
``n_parts``                       –      polygons in a MultiPolygon (1 for a Polygon)
``hole_area_frac``                –      courtyard area / (area + courtyard area)
``fractal_dim``                   –      2·ln(P/4)/ln(A) (1 for a square of 1 m² … →2 for
                                         very ragged outlines); NaN for A ≤ 1 m²
``mean_edge_m``                   m      perimeter / n_vertices
``centroid_offset_rel``           –      distance centroid → MRR centre / √A (0 for symmetric
                                         shapes, larger for L/U shapes)
*Neighbourhood and density (v2)*
``coverage_50m``                  –      (A + area_within_50m) / (A + P·r + πr²), r = 50 m:
                                         built share of the footprint's r-buffer (Steiner
                                         area; whole neighbour areas count, so it can exceed 1
                                         slightly)
``coverage_100m``                 –      same, r = 100 m
``coverage_200m``                 –      same, r = 200 m
``mean_neighbour_area_50m_m2``    m²     area_within_50m / n_within_50m (NaN, no neighbour)
``mean_neighbour_area_200m_m2``   m²     area_within_200m / n_within_200m (NaN, no neighbour)
``std_neighbour_area_100m_m2``    m²     standard deviation of the areas within 100 m
``n_within_400m``                 –      other centroids within 400 m of the centroid
*Nearest neighbours by centroid (v2)*
``knn1_dist_m``                   m      centroid distance to the nearest other centroid
``knn3_mean_dist_m``              m      mean centroid distance to the 3 nearest
``knn5_mean_dist_m``              m      mean centroid distance to the 5 nearest
``nn_area_m2``                    m²     area of the centroid-nearest footprint
``knn5_mean_area_m2``             m²     mean area of the 5 centroid-nearest footprints
``nn_orientation_diff_deg``       deg    |orientation − nearest's orientation| folded to [0, 90]
``knn5_orientation_diff_deg``     deg    mean of the same over the 5 nearest
*Neighbour heights (v2; needs ``neighbour_heights``)*
``nb_height_mean_100m``           m      mean known height of the *other* footprints within
                                         100 m (NaN when none is known)
``nb_height_n_100m``              –      number of those with a known height
*Street relation (v2; needs ``roads``; with a ``highway`` column, NON_STREET_HIGHWAYS rows
such as footways and paths are ignored)*
``dist_to_road_m``                m      footprint edge to the nearest road centreline
``street_facing``                 0/1    1 when dist_to_road_m ≤ STREET_FACING_M (20 m)
``dist_to_major_road_m``          m      same for major roads (``highway`` motorway, trunk,
                                         primary, secondary and their links; NaN without that
                                         column or without any major road)
``road_orientation_diff_deg``     deg    angle between the MRR long side and the nearest road's
                                         direction at its closest point, in [0, 90]
``road_length_100m_m``            m      road centreline length inside the 100 m-disc
``road_length_200m_m``            m      same, 200 m-disc
``n_intersections_200m``          –      road junctions (noded nodes of degree ≥ 3) within
                                         200 m of the centroid
*Street block (v2; needs ``roads``: blocks are the faces of the noded road network)*
``block_area_m2``                 m²     area of the block holding the centroid (NaN outside
                                         any closed block)
``block_n_buildings``             –      footprints whose centroid lies in the same block
``block_coverage``                –      their summed area / block area (can exceed 1 when
                                         footprints reach over the block's edge)
``block_mean_building_area_m2``   m²     their mean area
*Location (v2)*
``dist_to_area_centroid_m``       m      centroid to the centroid of all input footprints
``dist_to_area_centroid_rel``     –      the same / its maximum over the input (0 centre, 1
                                         edge); depends on the extent passed in
``dist_to_centre_m``              m      to the nearest of the given centres (needs
                                         ``centres``: any geometries, e.g. CBD points)
``city_class``                    –      the ``city_class`` argument (CMAB's administrative
                                         level 1–5, or any integer code); NaN when not given
*Points of interest (v2; needs ``pois``)*
``poi_n_100m``                    –      POIs within 100 m of the centroid
``poi_n_300m``                    –      POIs within 300 m
``poi_nn_dist_m``                 m      centroid to the nearest POI
``poi_food_300m`` …               –      POIs of each POI_CATEGORIES class within 300 m
``poi_transport_300m``                   (food, shop, office, education, health, transport;
                                         needs a ``category`` column holding those names)
================================  =====  =====================================================

The adjacency and relative-size columns go beyond the usual morphology set: where a building is
drawn as several height parts (tower on a podium, terrace rows), adjacency and relative size
carry much of the height signal that footprints hold. In development runs (5 members, three
random block splits of Xiamen) they raised held-out R² from 0.07–0.17 to 0.19–0.29; the shipped
models' numbers are in ``models/height_xgb/*/MODEL_CARD.md``.

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
from pyproj import CRS
from scipy.spatial import cKDTree

from urbanfabric.errors import InvalidInput, NotFound

#: Categories counted by the ``poi_<category>_300m`` columns (values of a POI ``category``).
POI_CATEGORIES: tuple[str, ...] = ("food", "shop", "office", "education", "health", "transport")

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
    # v2 morphology
    ("mrr_long_m", "m", "long side of the MRR"),
    ("mrr_short_m", "m", "short side of the MRR"),
    ("n_holes", "1", "interior rings"),
    ("n_parts", "1", "polygons in the geometry"),
    ("hole_area_frac", "1", "hole area / (area + hole area)"),
    ("fractal_dim", "1", "2 ln(P/4) / ln(A)"),
    ("mean_edge_m", "m", "perimeter / n_vertices"),
    ("centroid_offset_rel", "1", "centroid to MRR centre / sqrt(A)"),
    # v2 neighbourhood
    ("coverage_50m", "1", "built share of the 50 m buffer"),
    ("coverage_100m", "1", "built share of the 100 m buffer"),
    ("coverage_200m", "1", "built share of the 200 m buffer"),
    ("mean_neighbour_area_50m_m2", "m2", "mean area of footprints within 50 m"),
    ("mean_neighbour_area_200m_m2", "m2", "mean area of footprints within 200 m"),
    ("std_neighbour_area_100m_m2", "m2", "std of areas of footprints within 100 m"),
    ("n_within_400m", "1", "other centroids within 400 m"),
    # v2 nearest neighbours by centroid
    ("knn1_dist_m", "m", "centroid distance to nearest centroid"),
    ("knn3_mean_dist_m", "m", "mean centroid distance to 3 nearest"),
    ("knn5_mean_dist_m", "m", "mean centroid distance to 5 nearest"),
    ("nn_area_m2", "m2", "area of the centroid-nearest footprint"),
    ("knn5_mean_area_m2", "m2", "mean area of the 5 centroid-nearest"),
    ("nn_orientation_diff_deg", "deg", "orientation difference to the nearest, [0, 90]"),
    ("knn5_orientation_diff_deg", "deg", "mean orientation difference to the 5 nearest"),
    # v2 neighbour heights (optional)
    ("nb_height_mean_100m", "m", "mean known height of other footprints within 100 m"),
    ("nb_height_n_100m", "1", "other footprints within 100 m with a known height"),
    # v2 street relation (optional roads)
    ("dist_to_road_m", "m", "edge distance to the nearest road"),
    ("street_facing", "1", "dist_to_road_m <= STREET_FACING_M"),
    ("dist_to_major_road_m", "m", "edge distance to the nearest major road"),
    ("road_orientation_diff_deg", "deg", "MRR long side vs nearest road direction, [0, 90]"),
    ("road_length_100m_m", "m", "road length within 100 m of the centroid"),
    ("road_length_200m_m", "m", "road length within 200 m of the centroid"),
    ("n_intersections_200m", "1", "road junctions within 200 m of the centroid"),
    ("block_area_m2", "m2", "area of the street block holding the centroid"),
    ("block_n_buildings", "1", "footprints in the same block"),
    ("block_coverage", "1", "built share of the block"),
    ("block_mean_building_area_m2", "m2", "mean footprint area in the block"),
    # v2 location
    ("dist_to_area_centroid_m", "m", "centroid to the centroid of all input footprints"),
    ("dist_to_area_centroid_rel", "1", "dist_to_area_centroid_m / its maximum"),
    ("dist_to_centre_m", "m", "centroid to the nearest given centre"),
    ("city_class", "1", "administrative / city class code"),
    # v2 points of interest (optional)
    ("poi_n_100m", "1", "POIs within 100 m of the centroid"),
    ("poi_n_300m", "1", "POIs within 300 m of the centroid"),
    ("poi_nn_dist_m", "m", "centroid to the nearest POI"),
    *((f"poi_{c}_300m", "1", f"POIs of category {c!r} within 300 m") for c in POI_CATEGORIES),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f[0] for f in FEATURES)
#: The 21 columns height_xgb v1 was trained on (kept for reference and tests).
V1_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES[:21]

#: Radii (m) of the neighbourhood counts; the largest bounds the single tree query.
NEIGHBOUR_RADII_M: tuple[float, ...] = (50.0, 100.0, 200.0)
#: Footprints closer than this count as adjoining (digitised shared walls rarely coincide).
TOUCH_M = 1.0
#: A footprint this close to a road centreline faces the street (half a two-lane street plus a
#: front yard; OSM carries centrelines, not kerbs).
STREET_FACING_M = 20.0
#: OSM ``highway`` values counted as major roads.
MAJOR_HIGHWAYS: frozenset[str] = frozenset(
    {"motorway", "trunk", "primary", "secondary", "motorway_link", "trunk_link", "primary_link",
     "secondary_link"}
)

#: OSM ``highway`` values that are not streets (paths through yards and parks would make every
#: building "street-facing" and cut blocks into slivers); rows with these values are ignored.
NON_STREET_HIGHWAYS: frozenset[str] = frozenset(
    {"footway", "path", "cycleway", "steps", "bridleway", "corridor", "track", "trail",
     "elevator", "platform", "proposed", "construction", "abandoned", "razed", "via_ferrata",
     "bus_stop", "street_lamp", "crossing"}
)

#: Query footprints in chunks so the (query, neighbour) pair arrays stay bounded in memory
#: in dense cities (a 200 m radius can hold several hundred neighbours per building).
_CHUNK = 20_000


def _validated_metric_geometries(footprints: gpd.GeoDataFrame) -> tuple[np.ndarray, CRS]:
    """Check the input; return its polygons, made valid, in a local UTM CRS, and that CRS."""
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
    crs = footprints.estimate_utm_crs()
    metric = footprints.geometry.to_crs(crs)
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
    return out, crs


def prepare_footprints(
    footprints: gpd.GeoDataFrame, default_crs: Any = None
) -> tuple[gpd.GeoDataFrame, dict[str, Any]]:
    """Repair what can be repaired, drop what cannot, and count both (bad-input policy).

    :func:`footprint_features` is strict (one bad row fails the call); run this first on
    untrusted input so a batch goes on without its bad rows:

    * no CRS: ``default_crs`` is set when given (counted in ``crs_assumed``), else
      InvalidInput — guessing a CRS silently would put buildings in the wrong place;
    * null / empty geometry, points or lines: dropped (``dropped_empty``,
      ``dropped_not_polygonal``);
    * invalid polygons: ``make_valid`` (structure method); collections keep their polygonal
      parts (``repaired``); nothing left with area: dropped (``dropped_no_area``).

    Any CRS is accepted (features are computed in the local UTM zone). The returned frame
    keeps the surviving rows and their index; ``report["dropped_index"]`` lists the rest.

    Raises:
        InvalidInput: ``field="footprints"`` for a non-GeoDataFrame or a missing CRS without
            ``default_crs``.
    """
    if not isinstance(footprints, gpd.GeoDataFrame):
        raise InvalidInput("footprints", "expected a geopandas.GeoDataFrame")
    report: dict[str, Any] = {"n_in": len(footprints), "crs_assumed": 0, "repaired": 0,
                              "dropped_empty": 0, "dropped_not_polygonal": 0,
                              "dropped_no_area": 0}
    frame = footprints
    if frame.crs is None:
        if default_crs is None:
            raise InvalidInput("footprints", "has no CRS; set one (e.g. EPSG:4326) first")
        frame = frame.set_crs(default_crs)
        report["crs_assumed"] = len(frame)
    g = np.asarray(frame.geometry.values, dtype=object).copy()
    empty = shapely.is_missing(g) | shapely.is_empty(g)
    poly = np.isin(shapely.get_type_id(g), [3, 6]) & ~empty
    report["dropped_empty"] = int(empty.sum())
    report["dropped_not_polygonal"] = int((~empty & ~poly).sum())
    invalid = poly & ~shapely.is_valid(g)
    if invalid.any():
        fixed = shapely.make_valid(g[invalid], method="structure", keep_collapsed=False)
        # A repair can return a collection (polygon + dangling line): keep the polygons.
        parts, owner = shapely.get_parts(fixed, return_index=True)
        keep = np.isin(shapely.get_type_id(parts), [3, 6])
        merged = np.full(len(fixed), None, dtype=object)
        for i in np.unique(owner[keep]):
            ps = parts[keep & (owner == i)]
            merged[i] = ps[0] if len(ps) == 1 else shapely.multipolygons(
                shapely.get_parts(ps))
        g[invalid] = merged
        report["repaired"] = int(invalid.sum())
    with np.errstate(invalid="ignore"):
        no_area = poly & (shapely.is_missing(g) | ~(shapely.area(np.where(
            shapely.is_missing(g), shapely.Point(), g)) > 0))
    report["dropped_no_area"] = int(no_area.sum())
    keep_rows = poly & ~no_area
    out = frame.set_geometry(gpd.GeoSeries(g, index=frame.index, crs=frame.crs))[keep_rows]
    report["n_out"] = len(out)
    report["dropped_index"] = [str(i) for i in frame.index[~keep_rows]]
    return out, report


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


def _pair_distances(
    geoms: np.ndarray, b: np.ndarray, rep: np.ndarray, q: np.ndarray, nb: np.ndarray
) -> np.ndarray:
    """Edge-to-edge distances of pairs (q, nb), exact wherever a caller can tell the difference.

    The callers use distances only through the thresholds TOUCH_M and NEIGHBOUR_RADII_M and
    through each footprint's minimum. The exact distance lies between a lower bound (the gap
    between the bounding boxes) and an upper bound (the distance between points inside each
    polygon); GEOS is asked only for pairs where a threshold falls inside those bounds or that
    could be a nearest neighbour. Other pairs get their upper bound, which sits on the same
    side of every threshold as the exact value and is never below the footprint's minimum.
    On 12k Boulder houses this skips about half of the exact polygon distances.
    """
    gx = np.maximum(0.0, np.maximum(b[nb, 0] - b[q, 2], b[q, 0] - b[nb, 2]))
    gy = np.maximum(0.0, np.maximum(b[nb, 1] - b[q, 3], b[q, 1] - b[nb, 3]))
    lower = np.hypot(gx, gy)
    upper = np.hypot(rep[q, 0] - rep[nb, 0], rep[q, 1] - rep[nb, 1])
    exact = np.zeros(len(q), dtype=bool)
    for r in (TOUCH_M, *NEIGHBOUR_RADII_M):
        exact |= (lower <= r) & (upper > r)
    # Candidates for a nearest neighbour: lower bound within the best upper bound seen.
    n = len(b)
    best = np.full(n, np.inf)
    np.minimum.at(best, q, upper)
    np.minimum.at(best, nb, upper)
    exact |= (lower <= best[q]) | (lower <= best[nb])
    d = upper.copy()
    d[exact] = shapely.distance(geoms[q[exact]], geoms[nb[exact]])
    return d


def _neighbourhood(
    geoms: np.ndarray, area: np.ndarray, heights: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Counts/areas of neighbours within each radius, adjacency, nearest-neighbour distance.

    ``heights`` (NaN = unknown) adds the mean known height of the other footprints in 100 m.
    """
    n = len(geoms)
    rmax = max(NEIGHBOUR_RADII_M)
    tree = shapely.STRtree(geoms)
    b = shapely.bounds(geoms)
    # Candidates: footprints whose envelope meets the envelope grown by rmax. A plain bbox
    # query plus one exact distance per pair is cheaper than a 'dwithin' query followed by
    # the distances we need anyway for the smaller radii.
    reach = shapely.box(b[:, 0] - rmax, b[:, 1] - rmax, b[:, 2] + rmax, b[:, 3] + rmax)
    rep = shapely.get_coordinates(shapely.point_on_surface(geoms))
    counts = {r: np.zeros(n, dtype=np.int64) for r in NEIGHBOUR_RADII_M}
    sums = {r: np.zeros(n, dtype=np.float64) for r in NEIGHBOUR_RADII_M}
    sq100 = np.zeros(n, dtype=np.float64)
    smaller_50 = np.zeros(n, dtype=np.int64)
    n_touch = np.zeros(n, dtype=np.int64)
    shared = np.zeros(n, dtype=np.float64)
    max_touch = np.zeros(n, dtype=np.float64)
    nn = np.full(n, np.inf)
    h_known = None if heights is None else np.isfinite(heights)
    h_sum = np.zeros(n, dtype=np.float64)
    h_cnt = np.zeros(n, dtype=np.int64)
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        q, nb = tree.query(reach[lo:hi])
        q = q + lo
        # Each unordered pair once (in the chunk of its smaller index); distance is symmetric.
        keep = q < nb
        q, nb = q[keep], nb[keep]
        d = _pair_distances(geoms, b, rep, q, nb)
        near = d <= rmax
        i = np.concatenate([q[near], nb[near]])  # both directions of every close pair
        j = np.concatenate([nb[near], q[near]])
        dd = np.concatenate([d[near], d[near]])
        for r in NEIGHBOUR_RADII_M:
            m = dd <= r
            counts[r] += np.bincount(i[m], minlength=n)
            sums[r] += np.bincount(i[m], weights=area[j[m]], minlength=n)
            if r == 100.0:
                sq100 += np.bincount(i[m], weights=area[j[m]] ** 2, minlength=n)
                if h_known is not None:
                    mk = m & h_known[j]
                    h_sum += np.bincount(i[mk], weights=heights[j[mk]], minlength=n)
                    h_cnt += np.bincount(i[mk], minlength=n)
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

    def mean_nb(r: float) -> np.ndarray:
        c = counts[r]
        return np.where(c > 0, sums[r] / np.maximum(c, 1), np.nan)

    out["mean_neighbour_area_m2"] = mean_nb(100.0)
    out["area_ratio_100m"] = area / out["mean_neighbour_area_m2"]
    out["area_rank_50m"] = np.where(
        counts[50.0] > 0, smaller_50 / np.maximum(counts[50.0], 1), 1.0
    )
    out["n_touching"] = n_touch
    # Several neighbours can cover the same stretch of boundary (corners): cap at 1.
    perimeter = shapely.length(geoms)
    out["shared_perimeter_frac"] = np.minimum(shared / perimeter, 1.0)
    out["max_touching_area_m2"] = max_touch
    for r in NEIGHBOUR_RADII_M:
        # Steiner formula: area of the r-buffer of a convex shape (a lower bound otherwise).
        out[f"coverage_{int(r)}m"] = (area + sums[r]) / (area + perimeter * r + np.pi * r * r)
    out["mean_neighbour_area_50m_m2"] = mean_nb(50.0)
    out["mean_neighbour_area_200m_m2"] = mean_nb(200.0)
    c100 = counts[100.0]
    var = np.where(c100 > 0, sq100 / np.maximum(c100, 1) - out["mean_neighbour_area_m2"] ** 2,
                   np.nan)
    out["std_neighbour_area_100m_m2"] = np.sqrt(np.maximum(var, 0.0))
    if heights is None:
        out["nb_height_mean_100m"] = np.full(n, np.nan)
        out["nb_height_n_100m"] = np.full(n, np.nan)
    else:
        out["nb_height_mean_100m"] = np.where(h_cnt > 0, h_sum / np.maximum(h_cnt, 1), np.nan)
        out["nb_height_n_100m"] = h_cnt.astype(np.float64)
    return out


def _fold_angle(d: np.ndarray) -> np.ndarray:
    """Difference of two undirected directions (deg) folded to [0, 90]."""
    d = np.abs(d) % 180.0
    return np.minimum(d, 180.0 - d)


def _centroid_knn(
    cxy: np.ndarray, area: np.ndarray, angle: np.ndarray
) -> dict[str, np.ndarray]:
    """Nearest-neighbour statistics on centroids (k-d tree) and the 400 m centroid count."""
    n = len(cxy)
    out = {k: np.full(n, np.nan) for k in (
        "knn1_dist_m", "knn3_mean_dist_m", "knn5_mean_dist_m", "nn_area_m2",
        "knn5_mean_area_m2", "nn_orientation_diff_deg", "knn5_orientation_diff_deg")}
    tree = cKDTree(cxy)
    out["n_within_400m"] = tree.query_ball_point(cxy, 400.0, return_length=True).astype(
        np.float64) - 1.0
    if n < 2:
        return out
    k = min(6, n)
    dist, idx = tree.query(cxy, k=k)
    # Column 0 is the point itself unless another centroid coincides; drop self by index.
    self_first = idx[:, 0] == np.arange(n)
    nd = np.where(self_first[:, None], dist[:, 1:], dist[:, :-1])
    ni = np.where(self_first[:, None], idx[:, 1:], idx[:, :-1])
    m = ni.shape[1]
    out["knn1_dist_m"] = nd[:, 0]
    out["knn3_mean_dist_m"] = nd[:, : min(3, m)].mean(axis=1) if m >= 3 else np.full(n, np.nan)
    out["knn5_mean_dist_m"] = nd.mean(axis=1) if m >= 5 else np.full(n, np.nan)
    out["nn_area_m2"] = area[ni[:, 0]]
    out["nn_orientation_diff_deg"] = _fold_angle(angle - angle[ni[:, 0]])
    if m >= 5:
        out["knn5_mean_area_m2"] = area[ni].mean(axis=1)
        out["knn5_orientation_diff_deg"] = _fold_angle(angle[:, None] - angle[ni]).mean(axis=1)
    return out


def _layer_geoms(layer: gpd.GeoDataFrame | gpd.GeoSeries, name: str, crs: CRS) -> np.ndarray:
    """Non-empty geometries of an optional context layer, in the footprints' metric CRS."""
    if not isinstance(layer, (gpd.GeoDataFrame, gpd.GeoSeries)):
        raise InvalidInput(name, "expected a geopandas.GeoDataFrame or GeoSeries")
    if layer.crs is None:
        raise InvalidInput(name, "has no CRS; set one first")
    g = np.asarray(gpd.GeoSeries(layer.geometry, crs=layer.crs).to_crs(crs).values, dtype=object)
    return g[~(shapely.is_missing(g) | shapely.is_empty(g))]


def _street_features(
    geoms: np.ndarray, cxy: np.ndarray, area: np.ndarray, angle: np.ndarray,
    roads: gpd.GeoDataFrame, crs: CRS,
) -> dict[str, np.ndarray]:
    """Street relation and street-block columns (see the module table)."""
    n = len(geoms)
    nan = np.full(n, np.nan)
    keys = ("dist_to_road_m", "street_facing", "dist_to_major_road_m",
            "road_orientation_diff_deg", "road_length_100m_m", "road_length_200m_m",
            "n_intersections_200m", "block_area_m2", "block_n_buildings", "block_coverage",
            "block_mean_building_area_m2")
    out = {k: nan.copy() for k in keys}
    is_major = None
    if isinstance(roads, gpd.GeoDataFrame) and "highway" in roads.columns:
        hw = roads["highway"].astype(str).to_numpy()
        roads = roads[~np.isin(hw, list(NON_STREET_HIGHWAYS))]
        hw = roads["highway"].astype(str).to_numpy()
        geo = np.asarray(roads.geometry.values, dtype=object)
        ok = ~(shapely.is_missing(geo) | shapely.is_empty(geo))
        is_major = np.isin(hw[ok], list(MAJOR_HIGHWAYS))
    g = _layer_geoms(roads, "roads", crs)
    # Lines only: a road drawn as an area contributes its outline.
    lines = np.where(shapely.get_dimensions(g) == 2, shapely.boundary(g), g) if len(g) else g
    parts, owner = shapely.get_parts(lines, return_index=True)
    keep = shapely.get_type_id(parts) == 1  # LineString
    parts, owner = parts[keep], owner[keep]
    if len(parts) == 0:
        return out
    tree = shapely.STRtree(parts)
    (qi, ri), dist = tree.query_nearest(geoms, return_distance=True, all_matches=False)
    d = np.full(n, np.nan)
    d[qi] = dist
    near = np.full(n, -1)
    near[qi] = ri
    out["dist_to_road_m"] = d
    out["street_facing"] = (d <= STREET_FACING_M).astype(np.float64)
    if is_major is not None and is_major[owner].any():
        mparts = parts[is_major[owner]]
        (qm, _), dm = shapely.STRtree(mparts).query_nearest(
            geoms, return_distance=True, all_matches=False)
        dmaj = np.full(n, np.nan)
        dmaj[qm] = dm
        out["dist_to_major_road_m"] = dmaj
    # Direction of the nearest road at the point closest to the centroid (±5 m along it).
    cpts = shapely.points(cxy)
    road = parts[near]
    s = shapely.line_locate_point(road, cpts)
    L = shapely.length(road)
    p0 = shapely.get_coordinates(shapely.line_interpolate_point(road, np.clip(s - 5, 0, L)))
    p1 = shapely.get_coordinates(shapely.line_interpolate_point(road, np.clip(s + 5, 0, L)))
    road_angle = np.degrees(np.arctan2(p1[:, 1] - p0[:, 1], p1[:, 0] - p0[:, 0]))
    out["road_orientation_diff_deg"] = _fold_angle(angle - road_angle)
    # Road length inside centroid discs: pairs (building, road part) from one tree query.
    for r in (100.0, 200.0):
        disc = shapely.buffer(cpts, r, quad_segs=8)
        bi, pj = tree.query(disc, predicate="intersects")
        seg = shapely.length(shapely.intersection(parts[pj], disc[bi]))
        out[f"road_length_{int(r)}m_m"] = np.bincount(bi, weights=seg, minlength=n)
    # Junctions and blocks need a noded network (OSM ways cross without sharing a node).
    noded = shapely.get_parts(shapely.node(shapely.multilinestrings(parts)))
    ends = np.concatenate([shapely.get_coordinates(shapely.get_point(noded, 0)),
                           shapely.get_coordinates(shapely.get_point(noded, -1))])
    _, inv, deg = np.unique(np.round(ends, 2), axis=0, return_inverse=True, return_counts=True)
    junction = np.unique(np.round(ends, 2)[deg[inv.ravel()] >= 3], axis=0)
    out["n_intersections_200m"] = (
        cKDTree(junction).query_ball_point(cxy, 200.0, return_length=True).astype(np.float64)
        if len(junction) else np.zeros(n)
    )
    blocks = shapely.get_parts(shapely.polygonize(noded))
    if len(blocks):
        (bi, bj) = shapely.STRtree(blocks).query(cpts, predicate="within")
        which = np.full(n, -1)
        which[bi] = bj  # faces do not overlap; a centroid on an edge keeps one
        inb = which >= 0
        nb_cnt = np.bincount(which[inb], minlength=len(blocks))
        nb_area = np.bincount(which[inb], weights=area[inb], minlength=len(blocks))
        barea = shapely.area(blocks)
        w = which[inb]
        out["block_area_m2"][inb] = barea[w]
        out["block_n_buildings"][inb] = nb_cnt[w]
        out["block_coverage"][inb] = nb_area[w] / barea[w]
        out["block_mean_building_area_m2"][inb] = nb_area[w] / nb_cnt[w]
    return out


def _poi_features(
    cxy: np.ndarray, pois: gpd.GeoDataFrame, crs: CRS
) -> dict[str, np.ndarray]:
    """POI counts around the centroid, overall and per POI_CATEGORIES class."""
    n = len(cxy)
    out = {k: np.full(n, np.nan) for k in
           ("poi_n_100m", "poi_n_300m", "poi_nn_dist_m",
            *(f"poi_{c}_300m" for c in POI_CATEGORIES))}
    g = _layer_geoms(pois, "pois", crs)
    if len(g) == 0:
        out["poi_n_100m"] = np.zeros(n)
        out["poi_n_300m"] = np.zeros(n)
        return out
    # Areas (malls, campuses) count at their centroid.
    pxy = shapely.get_coordinates(shapely.centroid(g))
    tree = cKDTree(pxy)
    out["poi_n_100m"] = tree.query_ball_point(cxy, 100.0, return_length=True).astype(float)
    out["poi_n_300m"] = tree.query_ball_point(cxy, 300.0, return_length=True).astype(float)
    out["poi_nn_dist_m"] = tree.query(cxy, k=1)[0]
    if isinstance(pois, gpd.GeoDataFrame) and "category" in pois.columns:
        geo = np.asarray(pois.geometry.values, dtype=object)
        ok = ~(shapely.is_missing(geo) | shapely.is_empty(geo))
        cat = pois["category"].astype(str).str.lower().to_numpy()[ok]
        for c in POI_CATEGORIES:
            sel = cat == c
            out[f"poi_{c}_300m"] = (
                cKDTree(pxy[sel]).query_ball_point(cxy, 300.0, return_length=True).astype(float)
                if sel.any() else np.zeros(n)
            )
    return out


def _empty_features(index: pd.Index) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=np.float64) for c in FEATURE_NAMES}, index=index)


def footprint_features(
    footprints: gpd.GeoDataFrame,
    *,
    roads: gpd.GeoDataFrame | None = None,
    pois: gpd.GeoDataFrame | None = None,
    centres: gpd.GeoDataFrame | gpd.GeoSeries | None = None,
    city_class: int | None = None,
    neighbour_heights: np.ndarray | Sequence[float] | None = None,
) -> pd.DataFrame:
    """Morphology, neighbourhood, street, location and POI features of footprints (FEATURES).

    Args:
        footprints: (Multi)Polygon footprints in any CRS that is set. Invalid polygons are
            repaired (``make_valid``, structure method) before measuring.
        roads: optional road centrelines (any CRS); an optional ``highway`` column (OSM values)
            marks major roads. Without it the street and block columns are NaN.
        pois: optional points of interest (areas count at their centroid); an optional
            ``category`` column with POI_CATEGORIES values fills the per-category counts.
        centres: optional city / district centres (any geometries) for ``dist_to_centre_m``.
        city_class: optional administrative level / city class code, copied to ``city_class``.
        neighbour_heights: optional known heights (m) aligned with ``footprints``, NaN where
            unknown; fills ``nb_height_*`` (a building's own height never counts).

    Returns:
        One row per footprint, columns ``FEATURE_NAMES`` (float64), index equal to
        ``footprints.index``.

    Raises:
        InvalidInput: ``field="footprints"`` for a missing CRS, null/empty or non-polygonal
            geometries; the layer's name for a context layer that is not a GeoDataFrame with
            a CRS; ``field="neighbour_heights"`` for a length mismatch.
    """
    if isinstance(footprints, gpd.GeoDataFrame) and len(footprints) == 0:
        return _empty_features(footprints.index)
    geoms, crs = _validated_metric_geometries(footprints)
    n = len(geoms)
    heights = None
    if neighbour_heights is not None:
        heights = np.asarray(neighbour_heights, dtype=np.float64).ravel()
        if heights.shape[0] != n:
            raise InvalidInput("neighbour_heights", f"{heights.shape[0]} values for {n} rows")
    local = _localised(geoms)
    area = shapely.area(local)
    perimeter = shapely.length(local)
    long_side, short_side, angle = _mrr_sides(local)
    hull_area = shapely.area(shapely.convex_hull(local))
    n_vert = _vertex_count(local)
    parts, part_of = shapely.get_parts(local, return_index=True)
    n_holes = np.bincount(part_of, weights=shapely.get_num_interior_rings(parts), minlength=n)
    shell_area = np.bincount(
        part_of, weights=shapely.area(shapely.polygons(shapely.get_exterior_ring(parts))),
        minlength=n)
    mrr_centre = shapely.get_coordinates(shapely.centroid(shapely.oriented_envelope(local)))
    cent_local = shapely.get_coordinates(shapely.centroid(local))
    with np.errstate(divide="ignore", invalid="ignore"):
        fractal = np.where(area > 1.0, 2.0 * np.log(perimeter / 4.0) / np.log(area), np.nan)
    cols: dict[str, np.ndarray] = {
        "area_m2": area,
        "perimeter_m": perimeter,
        "compactness": 4.0 * np.pi * area / perimeter**2,
        "elongation": 1.0 - short_side / long_side,
        "orientation_deg": angle,
        "n_vertices": n_vert,
        "convexity": area / hull_area,
        "rectangularity": area / (long_side * short_side),
        "mrr_long_m": long_side,
        "mrr_short_m": short_side,
        "n_holes": n_holes,
        "n_parts": np.bincount(part_of, minlength=n),
        "hole_area_frac": np.clip(1.0 - area / shell_area, 0.0, 1.0),
        "fractal_dim": fractal,
        "mean_edge_m": perimeter / n_vert,
        "centroid_offset_rel": np.hypot(*(cent_local - mrr_centre).T) / np.sqrt(area),
    }
    cols.update(_neighbourhood(geoms, area, heights))
    cxy = shapely.get_coordinates(shapely.centroid(geoms))
    cols.update(_centroid_knn(cxy, area, angle))
    d_area = np.hypot(*(cxy - cxy.mean(axis=0)).T)
    cols["dist_to_area_centroid_m"] = d_area
    cols["dist_to_area_centroid_rel"] = d_area / d_area.max() if d_area.max() > 0 else d_area * 0
    cols["dist_to_centre_m"] = np.full(n, np.nan)
    if centres is not None:
        cg = _layer_geoms(centres, "centres", crs)
        if len(cg):
            (qi, _), dist = shapely.STRtree(cg).query_nearest(
                shapely.points(cxy), return_distance=True, all_matches=False)
            cols["dist_to_centre_m"][qi] = dist
    cols["city_class"] = np.full(n, np.nan if city_class is None else float(city_class))
    if roads is not None:
        cols.update(_street_features(geoms, cxy, area, angle, roads, crs))
    if pois is not None:
        cols.update(_poi_features(cxy, pois, crs))
    df = pd.DataFrame(cols, index=footprints.index).reindex(columns=list(FEATURE_NAMES))
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
        data = _as_matrix(X, self.feature_names)
        target = np.asarray(y, dtype=np.float64).ravel()
        if target.shape[0] != data.shape[0]:
            raise InvalidInput("y", f"{target.shape[0]} heights for {data.shape[0]} rows")
        if not np.isfinite(target).all() or (target <= 0).any() or (target > 1000).any():
            # A label of -3 m or 2 km is a data error, not a building: clean first
            # (urbanfabric.attributes.measured_heights.clean_heights drops and counts such rows).
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
        mean = p.mean(axis=0)
        if self.band:
            lo = np.minimum(lo, np.maximum(mean * (1.0 + self.band["q_lo"]), MIN_HEIGHT_M))
            hi = np.maximum(hi, mean * (1.0 + self.band["q_hi"]))
        return mean, np.minimum(lo, mean), np.maximum(hi, mean)

    def calibrate_band(self, X: pd.DataFrame | np.ndarray, y: np.ndarray | pd.Series,
                       coverage: float = 0.90) -> dict[str, Any]:
        """Fit the band on held-out buildings (split conformal on relative residuals).

        Relative residuals ``(y − mean) / mean`` of buildings the members never saw give the
        quantiles ``q_lo`` / ``q_hi`` (e.g. 5th / 95th for 90 %) with the finite-sample
        correction of split conformal prediction; scatter grows with height, hence relative.

        Args:
            X: features of calibration buildings (not used in training, and not the test set).
            y: their true heights (m).
            coverage: target share of true heights inside the band.

        Returns:
            The stored ``band`` dict.
        """
        target = np.asarray(y, dtype=np.float64).ravel()
        mean = self.member_predictions(X).mean(axis=0)
        if target.shape != mean.shape or len(target) < 20:
            raise InvalidInput("y", f"need ≥ 20 calibration heights matching X, got {len(target)}")
        rel = (target - mean) / mean
        n = len(rel)
        alpha = (1.0 - coverage) / 2.0
        # Split-conformal finite-sample levels: ceil((n+1)(1−α))/n, clipped to [0, 1].
        q_hi_level = min(1.0, np.ceil((n + 1) * (1.0 - alpha)) / n)
        q_lo_level = max(0.0, np.floor((n + 1) * alpha) / n)
        self.band = {
            "method": "split-conformal relative residuals",
            "coverage_target": coverage,
            "q_lo": float(min(np.quantile(rel, q_lo_level), 0.0)),
            "q_hi": float(max(np.quantile(rel, q_hi_level), 0.0)),
            "n_calibration": int(n),
        }
        return self.band

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
