"""Footprints that users bring: GeoJSON, GeoParquet or an OSM extract.

Most cities already have footprints (cadastre, OSM, Overture); with them a job skips the tile
stages. This module reads them into the same columns the segmentation stage produces, so every
later stage treats both alike.
"""

from __future__ import annotations

import io
import tempfile

import geopandas as gpd
import numpy as np

from urbanfabric.errors import InvalidInput
from urbanfabric.footprints.polygons import building_id

MIN_AREA_M2 = 1.0
COLUMNS = ["building_id", "footprint_confidence", "footprint_area_m2", "footprint_source",
           "tile_id", "on_border"]


def _read(blob: bytes, name: str) -> tuple[gpd.GeoDataFrame, str]:
    lower = name.lower()
    if lower.endswith((".parquet", ".geoparquet")):
        return gpd.read_parquet(io.BytesIO(blob)), "user"
    if lower.endswith(".osm.pbf") or lower.endswith(".osm"):
        with tempfile.NamedTemporaryFile(suffix=".osm.pbf" if lower.endswith(".pbf") else ".osm") as tmp:
            tmp.write(blob)
            tmp.flush()
            frame = gpd.read_file(tmp.name, layer="multipolygons", engine="pyogrio", on_invalid="ignore")
        if "building" in frame.columns:
            frame = frame[frame["building"].notna()]
        return frame, "osm"
    if lower.endswith((".geojson", ".json", ".gpkg")):
        return gpd.read_file(io.BytesIO(blob)), "user"
    raise InvalidInput("footprints", f"unsupported footprint file {name!r} "
                       "(use .geojson, .parquet/.geoparquet, .gpkg or .osm.pbf)")


def check_lonlat_bounds(frame: gpd.GeoDataFrame, name: str) -> None:
    """Refuse coordinates that cannot be longitudes/latitudes after reprojection to EPSG:4326 —
    typically projected metres in a file that declares (or defaults to) lon/lat.

    Raises:
        InvalidInput: on ``footprints.crs``, with the bounds found.
    """
    w, s, e, n = (float(v) for v in frame.total_bounds)
    if not all(np.isfinite((w, s, e, n))) or w < -180 or e > 180 or s < -90 or n > 90:
        raise InvalidInput("footprints.crs", f"{name!r}: coordinates ({w:.6g}, {s:.6g}) … ({e:.6g}, {n:.6g}) are "
                           f"not longitudes/latitudes in its declared CRS {frame.crs}; "
                           "state the file's real CRS (projected metres need their EPSG code)")


def load_footprints(blob: bytes, name: str) -> gpd.GeoDataFrame:
    """Read a user footprint file into the pipeline's footprint columns (EPSG:4326).

    Raises:
        InvalidInput: unreadable file, no CRS, or no polygon (field ``footprints``).
    """
    try:
        frame, source = _read(blob, name)
    except InvalidInput:
        raise
    except Exception as exc:  # noqa: BLE001 - GDAL/pyarrow raise many types for bad files
        raise InvalidInput("footprints", f"cannot read {name!r}: {exc}") from exc
    if frame.crs is None:
        raise InvalidInput("footprints", f"{name!r} has no coordinate reference system")
    frame = frame[frame.geometry.notna() & frame.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    if frame.empty:
        raise InvalidInput("footprints", f"{name!r} holds no polygon")
    frame = frame.to_crs("EPSG:4326")
    check_lonlat_bounds(frame, name)
    frame = frame.assign(geometry=frame.geometry.make_valid())
    metric = frame.geometry.to_crs(frame.estimate_utm_crs())
    # Degenerate polygons (collapsed rings in OSM extracts) are not buildings.
    keep = (metric.area >= MIN_AREA_M2).to_numpy()
    frame, metric = frame[keep], metric[keep]
    if frame.empty:
        raise InvalidInput("footprints", f"{name!r} holds no polygon of at least {MIN_AREA_M2} m²")
    pts = frame.geometry.representative_point()
    out = gpd.GeoDataFrame(
        {
            "building_id": [building_id(p.x, p.y) for p in pts],
            "footprint_confidence": 1.0,
            "footprint_area_m2": metric.area.to_numpy(),
            "footprint_source": source,
            "tile_id": "",
            "on_border": False,
        },
        geometry=frame.geometry.to_numpy(),
        crs="EPSG:4326",
    )
    # Duplicate polygons (same representative point) would double-count stock.
    out = out.drop_duplicates("building_id").reset_index(drop=True)
    return out


def clip_to_area(footprints: gpd.GeoDataFrame, bbox: tuple[float, float, float, float]) -> gpd.GeoDataFrame:
    """Footprints whose representative point lies in a lon/lat box (each building once)."""
    pts = footprints.geometry.representative_point()
    w, s, e, n = bbox
    inside = (pts.x >= w) & (pts.x < e) & (pts.y >= s) & (pts.y < n)
    return footprints[np.asarray(inside)].reset_index(drop=True)


__all__ = ["COLUMNS", "check_lonlat_bounds", "clip_to_area", "load_footprints"]
