"""The buildings table as a Hive-partitioned GeoParquet 1.1 dataset, written partition by partition.

Layout under ``jobs/<job>/outputs/buildings/`` (issue 22, item 4)::

    quadkey=<key>/part-00000.parquet   GeoParquet 1.1: WKB geometry, ``bbox`` covering column,
                                       Hilbert-sorted, row groups of ``row_group_rows`` rows,
                                       the declared schema (urbanfabric.outputs.schema)
    quadkey=<key>/_summary.json        the partition's counts and sums (urbanfabric.outputs.summary)

The partition key is the Bing-Maps / Web-Mercator quadkey of a coarse tile (zoom 10 by
default: ≈ 39 km at the equator, ≈ 22 km at 55° N) holding the centre of a building's bbox — the
scheme of the Microsoft building footprints (``quadkey=`` folders) and, with its own grid, of
Overture. DuckDB (``read_parquet('…/*/*.parquet', hive_partitioning = true)``), pyarrow /
GeoPandas datasets and GDAL read the folder as it is; names starting with ``_`` are skipped by
all three.

Memory stays bounded by one batch plus one output file, never the whole job: a first pass
streams the batches' result files once and spills each batch's rows, split by partition, to
local Arrow files (:class:`PartitionSpill`); a second pass writes each partition from only its
own spilled pieces (:func:`partition_chunks`), at most ``max_rows_per_file`` rows per part file
(consecutive batches: neighbours in Hilbert order).
"""

from __future__ import annotations

import io
import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyarrow import feather

from urbanfabric.errors import InvalidInput
from urbanfabric.outputs.schema import buildings_schema, typed

#: Quadkey zoom of a partition (≈ 39 km tiles at the equator).
PARTITION_ZOOM = 10
#: Rows per Parquet row group: ≈ 5–20 MB uncompressed, so a bbox-filtered range read fetches little.
ROW_GROUP_ROWS = 10_000
#: Rows per part file (bounds the writer's memory in dense partitions: ≈ 1.8 KB a row in Arrow).
MAX_ROWS_PER_FILE = 50_000
#: Rows converted to pandas at a time for summaries, grids and the map (the Arrow table of a
#: part file is compact; its pandas copy is several times larger).
FRAME_ROWS = 10_000
#: Web-Mercator latitude limit.
MAX_LAT = 85.05112878
#: The Hive partition column.
PARTITION_COLUMN = "quadkey"


@dataclass(frozen=True)
class PartitionOptions:
    """How the buildings dataset is cut and written (``JobSpec.outputs``)."""

    zoom: int = PARTITION_ZOOM
    row_group_rows: int = ROW_GROUP_ROWS
    max_rows_per_file: int = MAX_ROWS_PER_FILE
    #: Also write the single-file ``outputs/buildings.parquet`` (a convenience copy for small jobs).
    single_file: bool = True
    #: Also write the web tiles (``outputs/buildings.pmtiles``, ``viewer.html``): a view of the table.
    web_tiles: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.zoom <= 20:
            raise InvalidInput("outputs.partition_zoom", f"must be 1–20, got {self.zoom}")
        if self.row_group_rows < 1 or self.max_rows_per_file < 1:
            raise InvalidInput("outputs.row_group_rows", "row-group and file sizes must be positive")


def quadkey_codes(lon: np.ndarray, lat: np.ndarray, zoom: int) -> np.ndarray:
    """Integer quadkeys (base-4 digits packed, most significant first) of lon/lat points."""
    n = 1 << zoom
    lat = np.clip(np.asarray(lat, dtype=np.float64), -MAX_LAT, MAX_LAT)
    x = np.floor((np.asarray(lon, dtype=np.float64) + 180.0) / 360.0 * n)
    y = np.floor((1.0 - np.arcsinh(np.tan(np.radians(lat))) / math.pi) / 2.0 * n)
    x = np.clip(x, 0, n - 1).astype(np.int64)
    y = np.clip(y, 0, n - 1).astype(np.int64)
    code = np.zeros_like(x)
    for i in range(zoom - 1, -1, -1):
        digit = ((x >> i) & 1) | (((y >> i) & 1) << 1)
        code = code * 4 + digit
    return code


def quadkey_text(code: int, zoom: int) -> str:
    """The quadkey string (digits 0–3, ``zoom`` long) of an integer code."""
    return "".join(str((int(code) >> (2 * i)) & 3) for i in range(zoom - 1, -1, -1))


def quadkey_bounds(key: str) -> tuple[float, float, float, float]:
    """(west, south, east, north) of a quadkey's tile in degrees: the place a warning names."""
    x = y = 0
    for ch in key:
        d = int(ch)
        x, y = x * 2 + (d & 1), y * 2 + (d >> 1)
    n = 1 << len(key)

    def lat(row: int) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))

    return x / n * 360 - 180, lat(y + 1), (x + 1) / n * 360 - 180, lat(y)


def area_quadkeys(bbox: tuple[float, float, float, float], zoom: int, limit: int = 100_000) -> list[str]:
    """The partition keys whose tiles intersect a lon/lat box (at most ``limit``)."""
    w, s, e, n = bbox
    corners = quadkey_codes(np.array([w, e]), np.array([n, s]), zoom)
    x0, y0 = _tile_xy(int(corners[0]), zoom)
    x1, y1 = _tile_xy(int(corners[1]), zoom)
    if (x1 - x0 + 1) * (y1 - y0 + 1) > limit:
        return []
    out = []
    for y in range(y0, y1 + 1):
        for x in range(x0, x1 + 1):
            out.append(quadkey_text(_xy_code(x, y, zoom), zoom))
    return sorted(out)


def _tile_xy(code: int, zoom: int) -> tuple[int, int]:
    x = y = 0
    for i in range(zoom - 1, -1, -1):
        d = (code >> (2 * i)) & 3
        x, y = x * 2 + (d & 1), y * 2 + (d >> 1)
    return x, y


def _xy_code(x: int, y: int, zoom: int) -> int:
    code = 0
    for i in range(zoom - 1, -1, -1):
        code = code * 4 + (((x >> i) & 1) | (((y >> i) & 1) << 1))
    return code


def partition_path(root: str, key: str) -> str:
    """``<root>/quadkey=<key>``."""
    return f"{root}/{PARTITION_COLUMN}={key}"


# --- Arrow helpers ------------------------------------------------------------------------


def read_batch_table(blob: bytes, source: str) -> pa.Table:
    """A batch's GeoParquet as an Arrow table with a ``bbox`` covering column.

    Raises:
        InvalidInput: not a GeoParquet file, or a row without a geometry (field ``batches``,
            naming the file).
    """
    try:
        table = pq.read_table(io.BytesIO(blob))
    except Exception as exc:
        raise InvalidInput("batches", f"{source}: not a readable GeoParquet file ({exc})") from exc
    if "geometry" not in table.column_names:
        raise InvalidInput("batches", f"{source}: no geometry column")
    if "bbox" not in table.column_names:
        table = table.append_column("bbox", bbox_array(table["geometry"]))
    if table["bbox"].null_count:
        raise InvalidInput("batches", f"{source}: {table['bbox'].null_count} building(s) without a geometry")
    return table


def bbox_array(wkb: pa.ChunkedArray) -> pa.StructArray:
    """The GeoParquet 1.1 ``bbox`` struct (xmin, ymin, xmax, ymax) of WKB geometries."""
    geoms = shapely.from_wkb(wkb.to_numpy(zero_copy_only=False))
    b = shapely.bounds(geoms)
    return pa.StructArray.from_arrays([pa.array(b[:, i]) for i in range(4)],
                                      names=["xmin", "ymin", "xmax", "ymax"])


def _bbox_columns(table: pa.Table) -> tuple[np.ndarray, ...]:
    bbox = table["bbox"].combine_chunks()
    return tuple(bbox.field(k).to_numpy(zero_copy_only=False) for k in ("xmin", "ymin", "xmax", "ymax"))


def to_frame(table: pa.Table) -> gpd.GeoDataFrame:
    """A partition chunk as a GeoDataFrame (EPSG:4326, without the bbox column)."""
    geoms = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
    rest = table.drop_columns([c for c in ("geometry", "bbox") if c in table.column_names])
    return gpd.GeoDataFrame(rest.to_pandas(), geometry=geoms, crs="EPSG:4326")


# --- Pass 1: spill the batches by partition -----------------------------------------------


@dataclass
class PartitionSpill:
    """The batches' rows split by partition into local Arrow files, streamed one batch at a time."""

    folder: Path
    zoom: int = PARTITION_ZOOM
    pieces: dict[str, list[tuple[Path, int]]] = field(default_factory=dict)
    geo: dict | None = None
    bounds: tuple[float, float, float, float] | None = None
    rows: int = 0

    def add(self, table: pa.Table, source: str) -> None:
        """Split one batch's rows by partition key and spill them (the batch is then dropped).

        Raises:
            InvalidInput: the batch has a column the table's definition does not declare, or
                values its declared type cannot hold (urbanfabric.outputs.schema).
        """
        if self.geo is None and table.schema.metadata and b"geo" in table.schema.metadata:
            self.geo = json.loads(table.schema.metadata[b"geo"])
        table = typed(table, source)  # every piece in the declared schema: partitions concatenate
        if not len(table):
            return
        xmin, ymin, xmax, ymax = _bbox_columns(table)
        b = (float(xmin.min()), float(ymin.min()), float(xmax.max()), float(ymax.max()))
        self.bounds = b if self.bounds is None else (min(self.bounds[0], b[0]), min(self.bounds[1], b[1]),
                                                     max(self.bounds[2], b[2]), max(self.bounds[3], b[3]))
        codes = quadkey_codes((xmin + xmax) / 2, (ymin + ymax) / 2, self.zoom)
        for code in np.unique(codes):
            key = quadkey_text(int(code), self.zoom)
            rows = np.flatnonzero(codes == code)
            piece = table.take(pa.array(rows)).replace_schema_metadata(None)
            pieces = self.pieces.setdefault(key, [])
            path = self.folder / key / f"{len(pieces):06d}.arrow"
            path.parent.mkdir(parents=True, exist_ok=True)
            feather.write_feather(piece, path, compression="lz4")
            pieces.append((path, len(rows)))
        self.rows += len(table)

    def schema(self) -> pa.Schema:
        """One schema for every file, whatever the batches held: the declared one."""
        return buildings_schema()

    def partition_keys(self) -> list[str]:
        return sorted(self.pieces)

    def drop(self, key: str) -> None:
        """Remove a written partition's spilled pieces."""
        shutil.rmtree(self.folder / key, ignore_errors=True)


# --- Pass 2: write one partition ----------------------------------------------------------


def _geo_metadata(template: dict | None, table: pa.Table, bounds: bool = True) -> bytes:
    """GeoParquet 1.1 ``geo`` metadata for a file: the batches' (covering, CRS) with this file's
    bbox and geometry types."""
    geo: dict[str, Any] = json.loads(json.dumps(template)) if template else {
        "version": "1.1.0", "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "geometry_types": [],
                                 "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}}}}
    geo["version"] = "1.1.0"
    col = geo["columns"].setdefault("geometry", {"encoding": "WKB"})
    col.setdefault("covering", {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}})
    if bounds and len(table):
        xmin, ymin, xmax, ymax = _bbox_columns(table)
        col["bbox"] = [float(xmin.min()), float(ymin.min()), float(xmax.max()), float(ymax.max())]
        kinds = shapely.get_type_id(shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False)))
        names = {0: "Point", 1: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString",
                 6: "MultiPolygon", 7: "GeometryCollection"}
        col["geometry_types"] = sorted({names[int(k)] for k in np.unique(kinds) if int(k) in names})
    else:
        col.pop("bbox", None)
        col["geometry_types"] = []
    return json.dumps(geo).encode()


def hilbert_sorted(table: pa.Table) -> pa.Table:
    """Rows in Hilbert-curve order of their geometries (over the table's own extent)."""
    if len(table) < 2:
        return table
    geoms = gpd.GeoSeries(shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False)), crs="EPSG:4326")
    return table.take(pa.array(np.argsort(geoms.hilbert_distance().to_numpy(), kind="stable")))


def with_geo(table: pa.Table, template: dict | None, bounds: bool = True) -> pa.Table:
    """``table`` carrying GeoParquet ``geo`` metadata."""
    meta = dict(table.schema.metadata or {})
    meta[b"geo"] = _geo_metadata(template, table, bounds)
    return table.replace_schema_metadata(meta)


def parquet_file_bytes(table: pa.Table, row_group_rows: int) -> bytes:
    """One GeoParquet file: ZSTD, statistics on (the bbox columns' min/max prune row groups)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_rows, compression="zstd", write_statistics=True)
    return buf.getvalue()


def partition_chunks(spill: PartitionSpill, key: str, schema: pa.Schema,
                     max_rows: int = MAX_ROWS_PER_FILE) -> Iterator[pa.Table]:
    """A partition's rows, Hilbert-sorted, in files of at most ``max_rows`` rows (plus one batch).

    Raises:
        InvalidInput: a building id appears twice in the partition (field ``batches``).
    """
    seen: set[str] = set()
    group: list[Path] = []
    count = 0
    pieces = spill.pieces.get(key, [])
    for i, (path, n) in enumerate(pieces):
        group.append(path)
        count += n
        if count >= max_rows or i == len(pieces) - 1:
            table = pa.concat_tables([feather.read_table(p).cast(schema) for p in group])
            ids = table["building_id"].to_pylist() if "building_id" in table.column_names else []
            dup = seen.intersection(ids) or (len(set(ids)) < len(ids))
            if dup:
                raise InvalidInput("batches", f"a building appears in two batches (partition quadkey={key}); "
                                              "refusing to write the table")
            seen.update(ids)
            del ids
            ordered = hilbert_sorted(table)
            del table  # only the sorted copy lives while the caller writes it
            yield ordered
            del ordered
            group, count = [], 0


class SingleFileWriter:
    """The convenience copy ``outputs/buildings.parquet``, appended partition by partition
    (rows ordered by partition key, Hilbert order inside each file)."""

    def __init__(self, path: Path, schema: pa.Schema, template: dict | None, row_group_rows: int) -> None:
        self.path = path
        geo = _geo_metadata(template, schema.empty_table(), bounds=False)
        self.schema = schema.with_metadata({**(schema.metadata or {}), b"geo": geo})
        self.row_group_rows = row_group_rows
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd", write_statistics=True)

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table.replace_schema_metadata(self.schema.metadata),
                                row_group_size=self.row_group_rows)

    def close(self) -> None:
        self.writer.close()
