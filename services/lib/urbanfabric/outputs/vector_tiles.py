"""The buildings as web tiles (issue 23, item 2): one PMTiles archive of Mapbox Vector Tiles.

``outputs/buildings.pmtiles`` holds one layer, ``buildings``, on the Web Mercator tile pyramid
from :data:`MIN_ZOOM` to :data:`MAX_ZOOM` (z12–z16: a z16 tile is the job's processing tile,
≈ 611 m at the equator, so one tile unit of the 4096-unit extent is ≈ 0.15 m there; browsers
over-zoom the z16 tiles beyond). Every building is in the z16 tiles; lower zooms keep the
outline simplified by one tile unit and drop what would be a speck (< :data:`MIN_AREA_UNITS`
tile units², ≈ 23 m² at z12 on the equator), and a tile holds at most
:data:`MAX_FEATURES_PER_TILE` buildings, the largest first, so a dense city stays drawable at
z12 (the counts dropped are in the archive's metadata).

Each feature carries the attributes a popup and a colouring need (:func:`feature_properties`):
id, height with its 5–95 % range, floors, function, roof material (each unknown with its
reason), material stock total and per m² of footprint with its 90 % interval, the interval's
width relative to the median (the uncertainty colouring) and embodied CO2e; numbers are rounded
to three significant digits, which is what a popup shows and keeps tiles small.

Memory stays bounded like the rest of the aggregate step: :meth:`TileSpill.add` takes one frame
of buildings at a time, cuts it into tiles at every zoom and spills the pieces (tile-local integer
coordinates, WKB) to a local SQLite file; :meth:`TileSpill.write` then reads them back one tile at
a time in tile-id order, encodes (``mapbox-vector-tile``), gzips and appends each tile to the
archive (``pmtiles`` writer, which keeps only the tile directory in memory).
"""

from __future__ import annotations

import gzip
import math
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.errors import GEOSException

from urbanfabric.errors import InvalidInput
from urbanfabric.outputs.mvt import encode_layer
from urbanfabric.outputs.partitions import MAX_LAT

#: The archive's zoom range (z16 = the job's processing tiles).
MIN_ZOOM = 12
MAX_ZOOM = 16
#: Tile units across a tile (the MVT default).
EXTENT = 4096
#: Tile units a feature is kept beyond its tile's edge, so outlines do not stop at the seam.
BUFFER = 64
#: Below the max zoom, buildings smaller than this (tile units²) are dropped: a speck of 2 × 2
#: units (≈ 5 × 5 m at z12 on the equator) draws as a dot at best.
MIN_AREA_UNITS = 4.0
#: Below the max zoom, outlines are simplified by this many tile units (Douglas–Peucker).
SIMPLIFY_UNITS = 1.0
#: Most buildings in one tile (the largest kept): bounds a tile's size (≈ 60 bytes a building
#: gzipped) where a z12 tile covers a whole dense city.
MAX_FEATURES_PER_TILE = 20_000
#: The layer name MapLibre styles refer to.
LAYER = "buildings"
#: Media type of the archive (no IANA registration; the one the PMTiles tools use).
PMTILES_MEDIA_TYPE = "application/vnd.pmtiles"


@dataclass(frozen=True)
class TileOptions:
    """The pyramid: zoom range and the per-tile limits."""

    min_zoom: int = MIN_ZOOM
    max_zoom: int = MAX_ZOOM
    max_features_per_tile: int = MAX_FEATURES_PER_TILE
    min_area_units: float = MIN_AREA_UNITS
    simplify_units: float = SIMPLIFY_UNITS

    def __post_init__(self) -> None:
        if not 0 <= self.min_zoom <= self.max_zoom <= 22:
            raise InvalidInput("tiles.zoom", f"need 0 ≤ min_zoom ≤ max_zoom ≤ 22, got {self.min_zoom}–{self.max_zoom}")
        if self.max_features_per_tile < 1:
            raise InvalidInput("tiles.max_features_per_tile", "must be positive")


@dataclass
class TileArchiveStats:
    """What :meth:`TileSpill.write` wrote: counts for the metadata, the viewer and results.md."""

    buildings: int = 0
    tiles: int = 0
    bytes: int = 0
    min_zoom: int = MIN_ZOOM
    max_zoom: int = MAX_ZOOM
    bounds: tuple[float, float, float, float] | None = None
    #: Buildings per zoom that are in at least one tile (every building at the max zoom).
    features_per_zoom: dict[int, int] = field(default_factory=dict)
    #: Buildings dropped at a zoom for being specks, and pieces past a tile's cap.
    dropped_per_zoom: dict[int, int] = field(default_factory=dict)
    capped_per_zoom: dict[int, int] = field(default_factory=dict)
    largest_tile_bytes: int = 0
    largest_tile_zoom: int = 0
    #: Class counts of the categorical properties (legends).
    classes: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"buildings": self.buildings, "tiles": self.tiles, "bytes": self.bytes,
                "min_zoom": self.min_zoom, "max_zoom": self.max_zoom,
                "bounds": list(self.bounds) if self.bounds else None,
                "features_per_zoom": {str(z): n for z, n in self.features_per_zoom.items()},
                "dropped_per_zoom": {str(z): n for z, n in self.dropped_per_zoom.items()},
                "capped_per_zoom": {str(z): n for z, n in self.capped_per_zoom.items()},
                "largest_tile_bytes": self.largest_tile_bytes, "largest_tile_zoom": self.largest_tile_zoom}


# ----------------------------------------------------------------------------- properties

#: The feature properties: name → (column, scale, kind). ``kind`` is ``str``, ``int`` or ``num``
#: (three significant digits). Derived ones (stock per m², its relative interval) follow.
PROPERTY_COLUMNS: dict[str, tuple[str, float, str]] = {
    "id": ("building_id", 1.0, "str"),
    "height_m": ("height_m", 1.0, "num"),
    "height_p05": ("height_p05", 1.0, "num"),
    "height_p95": ("height_p95", 1.0, "num"),
    "height_why": ("height_source_reason", 1.0, "str"),
    "floors": ("floors", 1.0, "int"),
    "function": ("building_function", 1.0, "str"),
    "function_why": ("building_function_unknown_reason", 1.0, "str"),
    "roof_material": ("roof_material", 1.0, "str"),
    "roof_material_why": ("roof_material_unknown_reason", 1.0, "str"),
    "area_m2": ("footprint_area_m2", 1.0, "num"),
    "mass_t": ("mass_total_kg", 1e-3, "num"),
    "mass_t_p05": ("mass_total_kg_p05", 1e-3, "num"),
    "mass_t_p95": ("mass_total_kg_p95", 1e-3, "num"),
    "co2e_t": ("embodied_co2e_kg", 1e-3, "num"),
}
#: Derived: material stock (t) per m² of footprint, and the width of the stock's 90 % interval
#: relative to its Monte-Carlo median, (p95 − p05) / p50 (the map.html "uncertainty" colouring).
DERIVED_PROPERTIES = ("stock_t_m2", "stock_rel90")
#: Properties whose classes the legend lists.
CATEGORICAL_PROPERTIES = ("function", "roof_material")


def _round3(values: np.ndarray) -> np.ndarray:
    """Three significant digits, element-wise (NaN stays NaN)."""
    out = np.asarray(values, dtype=np.float64).copy()
    ok = np.isfinite(out) & (out != 0)
    digits = 2 - np.floor(np.log10(np.abs(out[ok])))
    out[ok] = np.round(out[ok] * 10.0 ** digits) / 10.0 ** digits
    return out


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)


#: Every property, in the spill's column order.
PROPERTIES: tuple[str, ...] = (*PROPERTY_COLUMNS, *DERIVED_PROPERTIES)
#: The properties that hold text (the rest are numbers).
TEXT_PROPERTIES = frozenset(k for k, (_, _, kind) in PROPERTY_COLUMNS.items() if kind == "str")


def _text(values: pd.Series) -> list[str | None]:
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) in ("", "nan", "None")
            else str(v) for v in values.tolist()]


def feature_properties(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """The tile properties of a frame's buildings, column-wise in :data:`PROPERTIES` order:
    text (``None`` = unknown) or numbers (``None`` = unknown; MVT has no null, so an unknown is
    no tag and the viewer says "unknown")."""
    n = len(frame)
    cols: dict[str, list[Any]] = {}
    for name, (column, scale, kind) in PROPERTY_COLUMNS.items():
        if column not in frame.columns:
            cols[name] = [None] * n
        elif kind == "str":
            cols[name] = _text(frame[column])
        else:
            v = _numeric(frame, column) * scale
            cols[name] = (np.round(v) if kind == "int" else _round3(v)).tolist()
    area = _numeric(frame, "footprint_area_m2")
    mass = _numeric(frame, "mass_total_kg")
    mid = _numeric(frame, "mass_total_kg_mc_p50")
    mid = np.where(np.isfinite(mid), mid, mass)
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["stock_t_m2"] = _round3(np.where(area > 0, mass / 1000.0 / area, np.nan)).tolist()
        rel = (_numeric(frame, "mass_total_kg_p95") - _numeric(frame, "mass_total_kg_p05")) / mid
        cols["stock_rel90"] = _round3(np.where(mid > 0, rel, np.nan)).tolist()
    for name in PROPERTIES:
        if name not in TEXT_PROPERTIES:
            cols[name] = [None if v is None or not math.isfinite(v) else v for v in cols[name]]
    return cols


# ----------------------------------------------------------------------------- geometry


def _world_units(geoms: np.ndarray, zoom: int) -> np.ndarray:
    """Lon/lat geometries → Web Mercator tile units at ``zoom`` (x right, y down; origin at the
    north-west corner of the world; tile (x, y) spans [x·EXTENT, (x+1)·EXTENT))."""
    size = float(EXTENT * (1 << zoom))

    def project(xy: np.ndarray) -> np.ndarray:
        lat = np.radians(np.clip(xy[:, 1], -MAX_LAT, MAX_LAT))
        x = (xy[:, 0] + 180.0) / 360.0 * size
        y = (1.0 - np.arcsinh(np.tan(lat)) / math.pi) / 2.0 * size
        return np.column_stack([x, y])

    return shapely.transform(geoms, project)


def _polygonal(geom: Any) -> Any:
    """Only the polygons of a geometry (clipping or rounding may leave lines and points beside
    them), made valid; an empty polygon when none is left."""
    if geom is None or geom.is_empty:
        return shapely.Polygon()
    polys = [p for p in shapely.get_parts(shapely.get_parts(geom)) if p.geom_type == "Polygon"]
    if not polys:
        return shapely.Polygon()
    try:
        valid = shapely.make_valid(shapely.MultiPolygon(polys) if len(polys) > 1 else polys[0])
    except GEOSException:
        return shapely.Polygon()
    parts = [p for p in shapely.get_parts(shapely.get_parts(valid)) if p.geom_type == "Polygon"]
    return shapely.MultiPolygon(parts) if len(parts) > 1 else (parts[0] if parts else shapely.Polygon())


def tile_ids(z: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """PMTiles tile ids of tiles (z, x, y): lower zooms first, Hilbert order within a zoom
    (``pmtiles.tile.zxy_to_tileid``, vectorised; a unit test holds them equal)."""
    x = np.asarray(x, dtype=np.int64).copy()
    y = np.asarray(y, dtype=np.int64).copy()
    acc = np.full(x.shape, ((1 << (2 * z)) - 1) // 3, dtype=np.int64)
    for a in range(z - 1, -1, -1):
        s = 1 << a
        rx, ry = x & s, y & s
        acc += ((3 * rx) ^ ry) << a
        flip = (ry == 0) & (rx != 0)
        x = np.where(flip, s - 1 - x, x)
        y = np.where(flip, s - 1 - y, y)
        swap = ry == 0
        x, y = np.where(swap, y, x), np.where(swap, x, y)
    return acc


# ----------------------------------------------------------------------------- spill and write


class TileSpill:
    """Buildings cut into tiles, spilled to local SQLite until :meth:`write` builds the archive.

    ``add`` frames in any order (each building once: its properties are stored once and its
    pieces per tile and zoom); memory holds one frame and, in ``write``, one tile.
    """

    def __init__(self, path: Path | str, options: TileOptions | None = None) -> None:
        self.options = options or TileOptions()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            f"CREATE TABLE props (fid INTEGER PRIMARY KEY, {', '.join(f'p{i}' for i in range(len(PROPERTIES)))});"
            "CREATE TABLE pieces (tile INTEGER NOT NULL, zoom INTEGER NOT NULL, fid INTEGER NOT NULL,"
            " area REAL NOT NULL, wkb BLOB NOT NULL);")
        self.buildings = 0
        self._bounds: list[float] | None = None
        self._dropped: Counter[int] = Counter()
        self._classes: dict[str, Counter[str]] = {k: Counter() for k in CATEGORICAL_PROPERTIES}

    @property
    def bounds(self) -> tuple[float, float, float, float] | None:
        b = self._bounds
        return (b[0], b[1], b[2], b[3]) if b else None

    def add(self, frame: gpd.GeoDataFrame) -> None:
        """Cut one frame of buildings (any CRS) into tiles at every zoom and spill the pieces.

        Raises:
            InvalidInput: the frame has no CRS (field ``buildings``).
        """
        if frame.crs is None:
            raise InvalidInput("buildings", "has no CRS: cannot place buildings on web tiles")
        frame = frame[~frame.geometry.isna() & ~frame.geometry.is_empty]
        if frame.empty:
            return
        lonlat = frame.geometry.to_crs(4326)
        b = [float(v) for v in lonlat.total_bounds]
        self._bounds = b if self._bounds is None else [min(self._bounds[0], b[0]), min(self._bounds[1], b[1]),
                                                       max(self._bounds[2], b[2]), max(self._bounds[3], b[3])]
        props = feature_properties(frame)
        fids = np.arange(self.buildings, self.buildings + len(frame), dtype=np.int64)
        self.buildings += len(frame)
        self._db.executemany(f"INSERT INTO props VALUES (?{', ?' * len(PROPERTIES)})",
                             zip(fids.tolist(), *(props[k] for k in PROPERTIES)))
        for key in CATEGORICAL_PROPERTIES:
            self._classes[key].update(v for v in props[key] if v is not None)
        top = _world_units(lonlat.values.to_numpy() if hasattr(lonlat.values, "to_numpy")
                           else np.asarray(lonlat.values), self.options.max_zoom)
        top_area = shapely.area(top)
        for zoom in range(self.options.min_zoom, self.options.max_zoom + 1):
            self._add_zoom(zoom, top, top_area, fids)

    def _add_zoom(self, zoom: int, top: np.ndarray, top_area: np.ndarray, fids: np.ndarray) -> None:
        opts = self.options
        shrink = float(1 << (opts.max_zoom - zoom))
        area = top_area / shrink ** 2
        at_top = zoom == opts.max_zoom
        keep = np.ones(len(top), dtype=bool) if at_top else area >= opts.min_area_units
        self._dropped[zoom] += int((~keep).sum())
        geoms = top[keep] if at_top else shapely.transform(top[keep], lambda xy: xy / shrink)
        ids, area = fids[keep], area[keep]
        if not at_top and opts.simplify_units > 0:
            geoms = shapely.simplify(geoms, opts.simplify_units, preserve_topology=True)
        bounds = shapely.bounds(geoms)
        tx0 = np.floor((bounds[:, 0] - BUFFER) / EXTENT).astype(np.int64)
        tx1 = np.floor((bounds[:, 2] + BUFFER) / EXTENT).astype(np.int64)
        ty0 = np.floor((bounds[:, 1] - BUFFER) / EXTENT).astype(np.int64)
        ty1 = np.floor((bounds[:, 3] + BUFFER) / EXTENT).astype(np.int64)
        # Most buildings lie inside one tile's buffered box; the rest are clipped to each tile's.
        one = (tx0 == tx1) & (ty0 == ty1)
        pieces, which, txs, tys = [geoms[one]], [np.flatnonzero(one)], [tx0[one]], [ty0[one]]
        for i in np.flatnonzero(~one):
            gx, gy = np.meshgrid(np.arange(tx0[i], tx1[i] + 1), np.arange(ty0[i], ty1[i] + 1))
            xs, ys = gx.ravel(), gy.ravel()
            clipped = shapely.intersection(geoms[i], shapely.box(xs * EXTENT - BUFFER, ys * EXTENT - BUFFER,
                                                                 (xs + 1) * EXTENT + BUFFER, (ys + 1) * EXTENT + BUFFER))
            hit = ~shapely.is_empty(clipped)
            pieces.append(clipped[hit])
            which.append(np.full(int(hit.sum()), i))
            txs.append(xs[hit])
            tys.append(ys[hit])
        w = np.concatenate(which)
        rows = self._pieces(zoom, np.concatenate(pieces), ids[w], area[w], np.concatenate(txs),
                            np.concatenate(tys), at_top)
        self._db.executemany("INSERT INTO pieces VALUES (?, ?, ?, ?, ?)", rows)

    @staticmethod
    def _pieces(zoom: int, geoms: np.ndarray, ids: np.ndarray, area: np.ndarray, tx: np.ndarray, ty: np.ndarray,
                at_top: bool) -> list[tuple[int, int, int, float, bytes]]:
        """Rows of the spill: tile-local integer outlines of ``geoms`` in tiles (tx, ty)."""
        if not len(geoms):
            return []
        coords, index = shapely.get_coordinates(geoms, return_index=True)
        coords = np.rint(coords - np.column_stack([tx * EXTENT, ty * EXTENT])[index])
        local = shapely.set_coordinates(geoms.copy(), coords)
        # Rounding to whole units can fold a thin part over itself or flatten it, and clipping
        # can leave a collection (a polygon and a line along the tile edge): those few are
        # repaired one by one (``set_precision`` on every outline would cost ≈ 0.1 ms each).
        polygonal = np.isin(shapely.get_type_id(local), (3, 6))  # Polygon, MultiPolygon
        bad = ~polygonal | ~shapely.is_valid(local) | (shapely.area(local) <= 0)
        tiles = tile_ids(zoom, tx, ty).tolist()
        wkb = shapely.to_wkb(local)
        for i in np.flatnonzero(bad):
            g = _polygonal(local[i])
            if g.is_empty or g.area <= 0:
                if not at_top:
                    wkb[i] = None
                    continue
                # At the max zoom every building stays findable: a sliver that rounds away
                # becomes one tile unit (≈ 0.15 m) at its representative point.
                p = shapely.point_on_surface(geoms[i])
                x, y = math.floor(p.x - tx[i] * EXTENT), math.floor(p.y - ty[i] * EXTENT)
                g = shapely.box(x, y, x + 1, y + 1)
            wkb[i] = shapely.to_wkb(g)
        return [(t, zoom, int(f), float(a), w) for t, f, a, w in zip(tiles, ids.tolist(), area.tolist(), wkb)
                if w is not None]

    def write(self, dest: Path | str, name: str = "urbanfabric buildings", attribution: str = "",
              description: str = "") -> TileArchiveStats:
        """Encode every tile and write the archive at ``dest``; the spill is removed.

        Raises:
            InvalidInput: nothing was added (field ``buildings``): an archive needs a tile.
        """
        from pmtiles.tile import Compression, TileType, tileid_to_zxy
        from pmtiles.writer import Writer

        if not self.buildings or self._bounds is None:
            raise InvalidInput("buildings", "no buildings: a tile archive needs at least one")
        opts = self.options
        stats = TileArchiveStats(buildings=self.buildings, min_zoom=opts.min_zoom, max_zoom=opts.max_zoom,
                                 bounds=self.bounds,
                                 classes={k: dict(c.most_common()) for k, c in self._classes.items() if c})
        self._db.execute("CREATE INDEX pieces_by_tile ON pieces (tile, area DESC)")
        capped: Counter[int] = Counter()
        # A flag per building and zoom (a byte each: 5 MB for a million buildings), not a set of ids.
        seen = {z: np.zeros(self.buildings, dtype=bool) for z in range(opts.min_zoom, opts.max_zoom + 1)}
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as f:
            writer = Writer(f)
            for tile, rows in self._tiles():
                zoom = tileid_to_zxy(tile)[0]
                if len(rows) > opts.max_features_per_tile:
                    capped[zoom] += len(rows) - opts.max_features_per_tile
                    rows = rows[: opts.max_features_per_tile]
                fids, wkb, *values = zip(*rows)
                seen[zoom][list(fids)] = True
                columns = {k: list(v) if k in TEXT_PROPERTIES else np.array(v, dtype=np.float64)
                           for k, v in zip(PROPERTIES, values)}
                data = gzip.compress(encode_layer(LAYER, shapely.from_wkb(wkb), fids, columns, EXTENT),
                                     compresslevel=6, mtime=0)
                if len(data) > stats.largest_tile_bytes:
                    stats.largest_tile_bytes, stats.largest_tile_zoom = len(data), zoom
                writer.write_tile(tile, data)
                stats.tiles += 1
            west, south, east, north = stats.bounds or (0.0, 0.0, 0.0, 0.0)
            e7 = 10_000_000
            header = {"tile_type": TileType.MVT, "tile_compression": Compression.GZIP,
                      "min_lon_e7": int(west * e7), "min_lat_e7": int(south * e7),
                      "max_lon_e7": int(east * e7), "max_lat_e7": int(north * e7),
                      "center_zoom": opts.max_zoom - 1, "center_lon_e7": int((west + east) / 2 * e7),
                      "center_lat_e7": int((south + north) / 2 * e7)}
            stats.features_per_zoom = {z: int(s.sum()) for z, s in seen.items()}
            stats.dropped_per_zoom = {z: int(self._dropped[z]) for z in seen}
            stats.capped_per_zoom = {z: int(capped[z]) for z in seen}
            writer.finalize(header, self._metadata(name, attribution, description, stats))
        self.close()
        stats.bytes = dest.stat().st_size
        return stats

    def _tiles(self) -> Iterator[tuple[int, list[tuple[Any, ...]]]]:
        """(tile id, its rows (fid, WKB, *properties) largest first), one tile at a time, in tile-id order."""
        props = ", ".join(f"props.p{i}" for i in range(len(PROPERTIES)))
        cursor = self._db.execute(f"SELECT pieces.tile, pieces.fid, pieces.wkb, {props} FROM pieces "
                                  "JOIN props ON props.fid = pieces.fid ORDER BY pieces.tile, pieces.area DESC")
        current: int | None = None
        rows: list[tuple[Any, ...]] = []
        for row in cursor:
            if row[0] != current:
                if current is not None:
                    yield current, rows
                current, rows = row[0], []
            rows.append(row[1:])
        if current is not None:
            yield current, rows

    def _metadata(self, name: str, attribution: str, description: str, stats: TileArchiveStats) -> dict[str, Any]:
        fields = {k: ("String" if v[2] == "str" else "Number") for k, v in PROPERTY_COLUMNS.items()}
        fields.update({k: "Number" for k in DERIVED_PROPERTIES})
        return {"name": name, "format": "pbf", "type": "overlay", "attribution": attribution,
                "description": description or "urbanfabric buildings: outlines and estimated attributes",
                "vector_layers": [{"id": LAYER, "fields": fields, "minzoom": stats.min_zoom,
                                   "maxzoom": stats.max_zoom}],
                "urbanfabric": {**{k: v for k, v in stats.as_dict().items() if k != "bytes"}, "classes": stats.classes,
                                "max_features_per_tile": self.options.max_features_per_tile,
                                "min_area_units": self.options.min_area_units,
                                "simplify_units": self.options.simplify_units}}

    def close(self) -> None:
        """Close and remove the spill (also after a failure)."""
        try:
            self._db.close()
        finally:
            self.path.unlink(missing_ok=True)


def read_tile(path: Path | str, z: int, x: int, y: int) -> dict[str, Any] | None:
    """Decode one tile of an archive (``None`` when absent): the reader tests and tools use."""
    import mapbox_vector_tile
    from pmtiles.reader import MmapSource, Reader

    with open(path, "rb") as f:
        data = Reader(MmapSource(f)).get(z, x, y)
    if data is None:
        return None
    return mapbox_vector_tile.decode(gzip.decompress(data), default_options={"y_coord_down": True})


def archive_metadata(path: Path | str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, metadata) of an archive."""
    from pmtiles.reader import MmapSource, Reader

    with open(path, "rb") as f:
        reader = Reader(MmapSource(f))
        return reader.header(), reader.metadata()


def archive_tiles(path: Path | str) -> Iterator[tuple[tuple[int, int, int], bytes]]:
    """Every (z, x, y) and its gzipped tile bytes, in tile-id order."""
    from pmtiles.reader import MmapSource, all_tiles

    with open(path, "rb") as f:
        yield from all_tiles(MmapSource(f))
