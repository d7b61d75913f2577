"""Street and point-of-interest context of footprints, from OSM layers a user passes in.

Computed in one local metric CRS by :func:`urbanfabric.attributes.features.footprint_features`
(the column list and its meaning are documented there).
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS
from scipy.spatial import cKDTree

from urbanfabric.errors import InvalidInput
from urbanfabric.attributes.neighbourhood import fold_angle

#: Categories of the per-category POI counts (the ``category`` column of a POI layer).
POI_CATEGORIES: tuple[str, ...] = ("food", "shop", "office", "education", "health", "transport")


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


def layer_geometries(layer: gpd.GeoDataFrame | gpd.GeoSeries, name: str, crs: CRS) -> np.ndarray:
    """Non-empty geometries of an optional context layer, in the footprints' metric CRS."""
    if not isinstance(layer, (gpd.GeoDataFrame, gpd.GeoSeries)):
        raise InvalidInput(name, "expected a geopandas.GeoDataFrame or GeoSeries")
    if layer.crs is None:
        raise InvalidInput(name, "has no CRS; set one first")
    g = np.asarray(gpd.GeoSeries(layer.geometry, crs=layer.crs).to_crs(crs).values, dtype=object)
    return g[~(shapely.is_missing(g) | shapely.is_empty(g))]


def street_features(
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
    g = layer_geometries(roads, "roads", crs)
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
    out["road_orientation_diff_deg"] = fold_angle(angle - road_angle)
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


def poi_features(
    cxy: np.ndarray, pois: gpd.GeoDataFrame, crs: CRS
) -> dict[str, np.ndarray]:
    """POI counts around the centroid, overall and per POI_CATEGORIES class."""
    n = len(cxy)
    out = {k: np.full(n, np.nan) for k in
           ("poi_n_100m", "poi_n_300m", "poi_nn_dist_m",
            *(f"poi_{c}_300m" for c in POI_CATEGORIES))}
    g = layer_geometries(pois, "pois", crs)
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
