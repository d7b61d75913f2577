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

from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer

from urbanfabric.errors import InvalidInput
from urbanfabric.attributes.context import AreaFrame
from urbanfabric.attributes.neighbourhood import centroid_knn, neighbourhood_features
from urbanfabric.attributes.street_context import POI_CATEGORIES, layer_geometries, poi_features, street_features


#: Categories counted by the ``poi_<category>_300m`` columns (values of a POI ``category``).

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


def _context_geometries(context: gpd.GeoDataFrame | None, crs: CRS) -> np.ndarray:
    """The usable polygons of a context layer in ``crs`` (made valid; others dropped)."""
    if context is None or len(context) == 0:
        return np.empty(0, dtype=object)
    if context.crs is None:
        raise InvalidInput("context", "has no CRS")
    geoms = np.asarray(context.geometry.to_crs(crs).values, dtype=object)
    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    geoms = geoms[ok]
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        geoms[invalid] = shapely.make_valid(geoms[invalid], method="structure", keep_collapsed=False)
    polygonal = np.isin(shapely.get_type_id(geoms), (3, 6)) & ~shapely.is_empty(geoms)
    return geoms[polygonal]


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
    context: gpd.GeoDataFrame | None = None,
    area_frame: AreaFrame | None = None,
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
        context: optional footprints around these ones (any CRS; not among them) that count
            as neighbours but get no row (:mod:`urbanfabric.attributes.context`); rows that are
            not usable polygons are left out of it.
        area_frame: the mapped area's centre and radius for ``dist_to_area_centroid_*``;
            without it the area is the footprints given (their mean centroid and farthest
            centroid), as in training over a whole city.

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
    cxy = shapely.get_coordinates(shapely.centroid(geoms))
    ctx = _context_geometries(context, crs)
    if len(ctx):
        # Neighbours beyond the batch count, but only the batch's own rows are returned.
        c_area = shapely.area(ctx)
        c_angle = _mrr_sides(_localised(ctx))[2]
        c_heights = None if heights is None else np.concatenate([heights, np.full(len(ctx), np.nan)])
        cols.update(neighbourhood_features(np.concatenate([geoms, ctx]), np.concatenate([area, c_area]),
                                           c_heights, n_query=n))
        cols.update(centroid_knn(np.concatenate([cxy, shapely.get_coordinates(shapely.centroid(ctx))]),
                                 np.concatenate([area, c_area]), np.concatenate([angle, c_angle]), n_query=n))
    else:
        cols.update(neighbourhood_features(geoms, area, heights))
        cols.update(centroid_knn(cxy, area, angle))
    if area_frame is not None:
        centre = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(
            area_frame.center_lon, area_frame.center_lat)
        d_area = np.hypot(cxy[:, 0] - centre[0], cxy[:, 1] - centre[1])
        cols["dist_to_area_centroid_m"] = d_area
        cols["dist_to_area_centroid_rel"] = np.minimum(d_area / area_frame.radius_m, 1.0)
    else:
        d_area = np.hypot(*(cxy - cxy.mean(axis=0)).T)
        cols["dist_to_area_centroid_m"] = d_area
        cols["dist_to_area_centroid_rel"] = d_area / d_area.max() if d_area.max() > 0 else d_area * 0
    cols["dist_to_centre_m"] = np.full(n, np.nan)
    if centres is not None:
        cg = layer_geometries(centres, "centres", crs)
        if len(cg):
            (qi, _), dist = shapely.STRtree(cg).query_nearest(
                shapely.points(cxy), return_distance=True, all_matches=False)
            cols["dist_to_centre_m"][qi] = dist
    cols["city_class"] = np.full(n, np.nan if city_class is None else float(city_class))
    if roads is not None:
        cols.update(street_features(geoms, cxy, area, angle, roads, crs))
    if pois is not None:
        cols.update(poi_features(cxy, pois, crs))
    df = pd.DataFrame(cols, index=footprints.index).reindex(columns=list(FEATURE_NAMES))
    return df.astype(np.float64)


def feature_matrix(X: pd.DataFrame | np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
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
