"""Footprints that users bring: GeoJSON, GeoParquet or an OSM extract.

Most cities already have footprints (cadastre, OSM, Overture); with them a job skips the tile
stages. This module reads them into the same columns the segmentation stage produces, so every
later stage treats both alike.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
from geopandas.io.arrow import _arrow_to_geopandas

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
    if lower.endswith((".geojson", ".json", ".gpkg", ".fgb")):
        return gpd.read_file(io.BytesIO(blob)), "user"
    raise InvalidInput("footprints", f"unsupported footprint file {name!r} "
                       "(use .geojson, .parquet/.geoparquet, .fgb, .gpkg or .osm.pbf)")


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

    The whole file is read into memory: for small files and tests. A job streams its file
    with :func:`iter_footprint_chunks` and :func:`normalise_chunk` instead.

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
    out = normalise_chunk(frame, source, name)
    if out.empty:
        raise InvalidInput("footprints", f"{name!r} holds no polygon of at least {MIN_AREA_M2} m²")
    return out


def normalise_chunk(frame: gpd.GeoDataFrame, source: str, name: str = "the footprint file") -> gpd.GeoDataFrame:
    """One chunk of a user file in the pipeline's footprint columns (EPSG:4326): polygons of at
    least :data:`MIN_AREA_M2`, made valid, ids from the representative point, duplicates (same
    point) dropped. An empty frame when nothing in the chunk qualifies.

    Raises:
        InvalidInput: the chunk has no CRS (field ``footprints``).
    """
    if frame.crs is None:
        raise InvalidInput("footprints", "the footprint file has no coordinate reference system")
    frame = frame[frame.geometry.notna() & frame.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    if frame.empty:
        return _empty()
    frame = frame.to_crs("EPSG:4326")
    check_lonlat_bounds(frame, name)
    frame = frame.assign(geometry=frame.geometry.make_valid())
    metric = frame.geometry.to_crs(frame.estimate_utm_crs())
    # Degenerate polygons (collapsed rings in OSM extracts) are not buildings.
    keep = (metric.area >= MIN_AREA_M2).to_numpy()
    frame, metric = frame[keep], metric[keep]
    if frame.empty:
        return _empty()
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


def _empty() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({c: [] for c in COLUMNS}, geometry=[], crs="EPSG:4326")


#: Rows read at a time from a user file (one chunk is all the reader holds).
CHUNK_ROWS = 50_000


def footprint_source(name: str) -> str:
    """``footprint_source`` of a file: ``osm`` for OSM extracts, else ``user``.

    Raises:
        InvalidInput: not a supported format (field ``footprints``).
    """
    lower = name.lower()
    if lower.endswith((".osm.pbf", ".osm")):
        return "osm"
    if lower.endswith((".parquet", ".geoparquet", ".geojson", ".json", ".gpkg", ".fgb")):
        return "user"
    raise InvalidInput("footprints", f"unsupported footprint file {name!r} "
                       "(use .geojson, .parquet/.geoparquet, .fgb, .gpkg or .osm.pbf)")


def iter_footprint_chunks(path: str, chunk_rows: int = CHUNK_ROWS) -> Iterator[gpd.GeoDataFrame]:
    """A local footprint file, ``chunk_rows`` rows at a time, never whole: GeoParquet through
    pyarrow record batches (row groups are read piecewise), every GDAL format (GeoJSON,
    FlatGeobuf, GeoPackage, OSM ``multipolygons``) through pyogrio's Arrow stream.

    Raises:
        InvalidInput: unsupported or unreadable file, no CRS (field ``footprints``).
    """
    source = footprint_source(path)
    lower = path.lower()
    try:
        if lower.endswith((".parquet", ".geoparquet")):
            yield from _parquet_chunks(path, chunk_rows)
            return
        layer = "multipolygons" if source == "osm" else None
        with pyogrio.open_arrow(path, layer=layer, batch_size=chunk_rows, use_pyarrow=True) as (meta, reader):
            crs = meta.get("crs")
            geom = meta.get("geometry_name") or "wkb_geometry"
            for batch in reader:
                table = pa.Table.from_batches([batch])
                frame = gpd.GeoDataFrame(
                    table.drop_columns([geom]).to_pandas(),
                    geometry=gpd.GeoSeries.from_wkb(table.column(geom).to_numpy(zero_copy_only=False),
                                                    on_invalid="ignore"),
                    crs=crs)
                if source == "osm":
                    frame = frame[frame["building"].notna()] if "building" in frame.columns else frame.iloc[:0]
                yield frame
    except InvalidInput:
        raise
    except Exception as exc:  # noqa: BLE001 - GDAL/pyarrow raise many types for bad files
        raise InvalidInput("footprints", f"cannot read {path!r}: {exc}") from exc


def _parquet_chunks(path: str, chunk_rows: int) -> Iterator[gpd.GeoDataFrame]:
    pf = pq.ParquetFile(path)
    raw = (pf.schema_arrow.metadata or {}).get(b"geo")
    if raw is None:
        raise InvalidInput("footprints", f"{path!r} is not GeoParquet (no 'geo' metadata)")
    geo = json.loads(raw)
    for batch in pf.iter_batches(batch_size=chunk_rows):
        table = pa.Table.from_batches([batch]).replace_schema_metadata(pf.schema_arrow.metadata)
        yield _arrow_to_geopandas(table, geo)


def cell_keys(points: gpd.GeoSeries, zoom: int) -> np.ndarray:
    """Web-Mercator tile (``"z-x-y"``) of each lon/lat point at ``zoom``: the spatial partition
    a building goes to (zoom 14: cells of ≈2.4 km at the equator)."""
    x = np.asarray(points.x, dtype=float)
    y = np.clip(np.asarray(points.y, dtype=float), -85.0511, 85.0511)
    n = 2 ** zoom
    tx = np.clip(np.floor((x + 180.0) / 360.0 * n), 0, n - 1).astype(np.int64)
    lat = np.radians(y)
    ty = np.clip(np.floor((1.0 - np.log(np.tan(lat) + 1.0 / np.cos(lat)) / np.pi) / 2.0 * n), 0, n - 1)
    return np.array([f"{zoom}-{a}-{b}" for a, b in zip(tx, ty.astype(np.int64))], dtype=object)


def partition_chunk(chunk: gpd.GeoDataFrame, zoom: int) -> Iterator[tuple[str, gpd.GeoDataFrame]]:
    """A normalised chunk split by the cell of each building's representative point (the point
    its id is made from, so duplicates always meet in the same cell)."""
    if chunk.empty:
        return
    keys = cell_keys(chunk.geometry.representative_point(), zoom)
    for key in sorted(set(keys)):
        yield key, chunk[keys == key].reset_index(drop=True)


def clip_to_area(footprints: gpd.GeoDataFrame, bbox: tuple[float, float, float, float]) -> gpd.GeoDataFrame:
    """Footprints whose representative point lies in a lon/lat box (each building once)."""
    pts = footprints.geometry.representative_point()
    w, s, e, n = bbox
    inside = (pts.x >= w) & (pts.x < e) & (pts.y >= s) & (pts.y < n)
    return footprints[np.asarray(inside)].reset_index(drop=True)


__all__ = ["COLUMNS", "cell_keys", "check_lonlat_bounds", "clip_to_area", "iter_footprint_chunks", "load_footprints", "normalise_chunk",
           "partition_chunk"]
