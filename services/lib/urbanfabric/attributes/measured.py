"""A user's measured heights joined to the job's footprints (issue 18, "measured heights").

Sources the loaders of :mod:`urbanfabric.attributes.measurements` read (CityJSON/CityGML
exports, OSM ``height`` / ``building:levels``, a GeoJSON field, DSM − DTM) give polygons with
``height_m``. :func:`join_measured_heights` assigns each footprint the height of the measured
polygon overlapping it most, when that overlap covers at least ``min_overlap`` of the
footprint — a measured height is then used instead of the model (``height_source =
measured``) with a tight band (:data:`MEASURED_REL_ERROR`).

Bad input is rejected with the field named, never silently misread: a source without a CRS,
a unit other than metres or feet, a geographic CRS used as if it were metric is reprojected
(footprint overlap is computed in the footprints' local UTM CRS), and heights outside
2–500 m after unit conversion are dropped and counted.
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from urbanfabric.attributes.measurements import MAX_HEIGHT_M, MIN_HEIGHT_M
from urbanfabric.errors import InvalidInput

#: Metres per unit of the units a height source may use.
UNITS_M: dict[str, float] = {"m": 1.0, "metre": 1.0, "meter": 1.0, "ft": 0.3048,
                             "foot": 0.3048, "feet": 0.3048}
#: Relative half-width of a measured height's band (survey / LiDAR heights to the roof top
#: typically agree within a few per cent; OSM levels × storey height are looser).
MEASURED_REL_ERROR = 0.05
#: Smallest share of a footprint a measured polygon must cover to lend it its height.
MIN_OVERLAP = 0.5


def join_measured_heights(
    footprints: gpd.GeoDataFrame, measured: gpd.GeoDataFrame, *, unit: str = "m",
    min_overlap: float = MIN_OVERLAP,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Measured height per footprint (NaN where none overlaps enough).

    Args:
        footprints: the job's footprints (any projected or geographic CRS).
        measured: polygons with a ``height_m`` column in ``unit``.
        unit: unit of ``height_m`` (``m`` or ``ft``).
        min_overlap: share of the footprint's area the measured polygon must cover.

    Returns:
        ``(heights_m, report)``: heights aligned with ``footprints``; the report counts rows
        used, dropped (missing / out of range) and footprints matched.

    Raises:
        InvalidInput: ``height_source.crs`` missing, ``height_source.unit`` unknown,
            ``height_source`` without a ``height_m`` column, ``min_overlap`` outside (0, 1].
    """
    if unit.lower() not in UNITS_M:
        raise InvalidInput("height_source.unit",
                           f"unknown unit {unit!r}; use one of {sorted(set(UNITS_M))}")
    if not 0 < min_overlap <= 1:
        raise InvalidInput("min_overlap", f"must be in (0, 1], got {min_overlap}")
    if "height_m" not in measured.columns:
        raise InvalidInput("height_source", "has no height_m column")
    if measured.crs is None:
        raise InvalidInput("height_source.crs", "has no CRS; cannot place its heights")
    if footprints.crs is None:
        raise InvalidInput("footprints", "has no CRS")
    h = measured["height_m"].to_numpy(dtype=np.float64) * UNITS_M[unit.lower()]
    geoms = np.asarray(measured.geometry.values, dtype=object)
    polygonal = np.isin(shapely.get_type_id(geoms), [3, 6]) & ~shapely.is_empty(geoms)
    with np.errstate(invalid="ignore"):
        in_range = np.isfinite(h) & (h >= MIN_HEIGHT_M) & (h <= MAX_HEIGHT_M)
    report: dict[str, Any] = {
        "n_source": len(measured), "unit": unit, "source_crs": measured.crs.to_string(),
        "dropped_not_polygonal": int((~polygonal).sum()),
        "dropped_missing_height": int((polygonal & ~np.isfinite(h)).sum()),
        "dropped_out_of_range": int((polygonal & np.isfinite(h) & ~in_range).sum()),
    }
    out = np.full(len(footprints), np.nan)
    use = polygonal & in_range
    if not use.any() or len(footprints) == 0:
        report["n_matched"] = 0
        return out, report
    metric = footprints.estimate_utm_crs()
    fp = footprints.geometry.to_crs(metric).make_valid()
    src = gpd.GeoSeries(geoms[use], crs=measured.crs).to_crs(metric).make_valid()
    src_h = h[use]
    fp_idx, src_idx = src.sindex.query(fp.values, predicate="intersects")
    if len(fp_idx):
        inter = shapely.area(shapely.intersection(fp.values[fp_idx], src.values[src_idx]))
        share = inter / np.maximum(shapely.area(fp.values[fp_idx]), 1e-9)
        ok = share >= min_overlap
        # Largest overlap wins per footprint.
        order = np.lexsort((-share[ok], fp_idx[ok]))
        f_ok, s_ok = fp_idx[ok][order], src_idx[ok][order]
        first = np.r_[True, f_ok[1:] != f_ok[:-1]] if len(f_ok) else np.zeros(0, bool)
        out[f_ok[first]] = src_h[s_ok[first]]
    report["n_matched"] = int(np.isfinite(out).sum())
    return out, report


def read_height_source(blob: bytes, name: str = "measured_heights") -> gpd.GeoDataFrame:
    """Polygons with ``height_m`` from the bytes of a user's height source.

    * CityJSON (``"type": "CityJSON"``) → :func:`measurements.load_cityjson` (roof max −
      ground, metres);
    * GeoJSON / any OGR vector with ``height_m`` → as is;
    * OSM-tagged vectors (``height`` / ``building:levels`` columns) →
      :func:`measurements.load_osm_buildings` (``height``, else levels × 3 m).

    Raises:
        InvalidInput: ``field=name`` when the bytes are none of these.
    """
    import json
    import tempfile
    from pathlib import Path

    from urbanfabric.attributes.measurements import load_cityjson, load_osm_buildings

    head = blob[:4096].lstrip()
    with tempfile.TemporaryDirectory() as tmp:
        if head.startswith(b"{") and b'"CityJSON"' in blob:
            try:
                doc_type = json.loads(blob).get("type")
            except ValueError as exc:
                raise InvalidInput(name, f"not valid JSON ({exc})") from exc
            if doc_type == "CityJSON":
                path = Path(tmp) / "source.city.json"
                path.write_bytes(blob)
                return load_cityjson(path)
        path = Path(tmp) / "source.geojson"
        path.write_bytes(blob)
        try:
            gdf = gpd.read_file(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable vector: name the field
            raise InvalidInput(name, f"not a readable vector file ({exc})") from exc
        if "height_m" in gdf.columns:
            return gdf
        if {"height", "building:levels"} & set(gdf.columns):
            return load_osm_buildings(path)
    raise InvalidInput(name, "has no height_m, height or building:levels column")
