"""Seams owned by tiles: each tile resolves the buildings cut at its borders without a global merge.

Tiles are segmented one by one, so a building that straddles a tile border is first found as
pieces, one per tile (the rows with ``on_border``). :func:`urbanfabric.footprints.seams.merge_seams`
joins them for the whole job at once (CMAB "Building rooftop": +1.5 m buffer, merge, −1.5 m), in
one UTM zone for the whole area. Here every tile does it for itself:

* a tile **owns** the buildings whose representative point lies in its core, by the grid's
  half-open rule (:func:`owner_tile_id`: ``floor`` of the point's grid coordinates, so a point on
  a shared edge or corner belongs to exactly one tile, the east/south one);
* its interior footprints (not ``on_border``) are its own as they are;
* its border pieces are joined with the border pieces of its ≤ 8 neighbours
  (:func:`join_border_pieces`) — the neighbours' pieces are the tile's halo: they give it the
  whole polygon of every building crossing its border. Only a building that reaches the outer
  edge of that 3 × 3 block (larger than the halo) needs more: the view grows by one ring of
  tiles at a time, border pieces only (:func:`resolve_tile_seams` with ``fetch_border``);
* every metric operation (buffer, union, area) runs in the local UTM zone of the pieces
  involved (:func:`utm_crs`, antimeridian-aware), never in one zone for the area, so tiles in
  different zones — or on both sides of the antimeridian — compute the very same building.

Because the pieces, their order (``tile_id``, ``building_id``), the operations and the CRS
are the ones ``merge_seams`` uses whenever the area lies in one UTM zone, the union over all
tiles of :func:`resolve_tile_seams` equals ``merge_seams`` of the whole job: the same buildings,
the same ``building_id`` (a hash of the representative point, see
:func:`urbanfabric.footprints.polygons.building_id`), the same geometry. Across zones it is the
local zone's answer (``merge_seams`` would use the area's centre zone, or a zone 180° away for
an area across the antimeridian).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import geopandas as gpd
import morecantile
import morecantile.errors
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import LineString, MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from urbanfabric.errors import InvalidInput
from urbanfabric.footprints.polygons import building_id
from urbanfabric.footprints.seams import SEAM_BUFFER_M, SeamReport, scan_borders, valid_lonlat
from urbanfabric.imagery.tiles import Tile

#: ``tile ids -> their border pieces`` (rows with ``on_border``, EPSG:4326, with ``tile_id``);
#: tiles that are not in the job (or have no border pieces) simply contribute no rows.
BorderSource = Callable[[Sequence[str]], gpd.GeoDataFrame]

#: Rings of neighbours a tile may look at for one building (ring 4: a 9 × 9 block, ≈ 5.5 km at
#: zoom 16). A chain of touching pieces longer than that raises instead of guessing.
MAX_RING = 4
#: Slack added to the 2 × buffer reach when deciding whether a piece could join one outside the view.
REACH_SLACK_M = 0.5
_M_PER_DEG_LAT = 110_574.0


@dataclass(frozen=True)
class TileKey:
    """A grid cell named by its tile id ``"{tms}-{z}-{x}-{y}"`` (:attr:`urbanfabric.imagery.tiles.Tile.tile_id`)."""

    tms: str
    z: int
    x: int
    y: int

    @classmethod
    def parse(cls, tile_id: str) -> TileKey:
        """Raises: InvalidInput (field ``tile_id``) when it is not ``tms-z-x-y`` of a known grid."""
        try:
            tms, z, x, y = tile_id.rsplit("-", 3)
            key = cls(tms, int(z), int(x), int(y))
        except ValueError:
            raise InvalidInput("tile_id", f"expected '<tms>-<z>-<x>-<y>', got {tile_id!r}") from None
        try:
            _tms(key.tms)
        except morecantile.errors.InvalidIdentifier:
            raise InvalidInput("tile_id", f"unknown TileMatrixSet {key.tms!r} in {tile_id!r}") from None
        if not (0 <= key.x < key.width and 0 <= key.y < key.height):
            raise InvalidInput("tile_id", f"{tile_id!r} is outside the zoom-{key.z} grid")
        return key

    @property
    def tile_id(self) -> str:
        return f"{self.tms}-{self.z}-{self.x}-{self.y}"

    @property
    def width(self) -> int:
        return int(_tms(self.tms).matrix(self.z).matrixWidth)

    @property
    def height(self) -> int:
        return int(_tms(self.tms).matrix(self.z).matrixHeight)

    def offset(self, other: TileKey) -> tuple[int, int]:
        """``(dx, dy)`` from this cell to ``other``; ``dx`` wraps across the antimeridian."""
        n = self.width
        dx = (other.x - self.x + n // 2) % n - n // 2
        return dx, other.y - self.y

    def ring(self, r: int) -> list[TileKey]:
        """The cells at Chebyshev distance exactly ``r`` (8 for ``r = 1``; fewer at the poles'
        edge of the grid); columns wrap across the antimeridian."""
        if r == 0:
            return [self]
        out: dict[tuple[int, int], TileKey] = {}
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if max(abs(dx), abs(dy)) != r:
                    continue
                y = self.y + dy
                if not 0 <= y < self.height:
                    continue
                x = (self.x + dx) % self.width
                if (x, y) != (self.x, self.y):
                    out.setdefault((x, y), TileKey(self.tms, self.z, x, y))
        return list(out.values())


@lru_cache(maxsize=8)
def _tms(name: str) -> morecantile.TileMatrixSet:
    return morecantile.tms.get(name)


@lru_cache(maxsize=8)
def _to_grid(name: str) -> Transformer:
    return Transformer.from_crs("EPSG:4326", f"EPSG:{_tms(name).crs.to_epsg()}", always_xy=True)


def neighbour_tile_ids(tile_id: str, ring: int = 1) -> list[str]:
    """Ids of the cells at ring ``ring`` around ``tile_id`` (the ≤ 8 neighbours for ring 1)."""
    return [k.tile_id for k in TileKey.parse(tile_id).ring(ring)]


def owner_tile_id(lon: float, lat: float, tms: str, z: int) -> str:
    """The one cell of the zoom-``z`` grid that owns a lon/lat point.

    Half-open: ``floor`` of the grid coordinates, so a point on the edge shared by two cells
    (or the corner of four) belongs to exactly one of them — the east one across a vertical
    edge, the south one across a horizontal edge (rows count from the north).
    """
    t = _tms(tms).tile(lon, lat, z)
    return f"{tms}-{t.z}-{t.x}-{t.y}"


def utm_crs(bounds: tuple[float, float, float, float]) -> CRS:
    """UTM zone (WGS 84) of the centre of lon/lat ``bounds``; bounds wider than 180° are taken
    as crossing the antimeridian (their centre is then near ±180°, not near 0°).

    For bounds in one zone this is the zone :meth:`geopandas.GeoSeries.estimate_utm_crs` returns.
    """
    return _crs(_utm_epsg(bounds))


def _utm_epsg(bounds: tuple[float, float, float, float]) -> int:
    west, south, east, north = bounds
    if east - west > 180:  # pieces on both sides of ±180°: measure them from the antimeridian
        west, east = east, west + 360
    lon = (west + east) / 2
    lon = (lon + 180) % 360 - 180
    lat = (south + north) / 2
    zone = math.floor((lon + 180) / 6) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


@lru_cache(maxsize=256)
def _crs(epsg: int) -> CRS:
    return CRS.from_epsg(epsg)


def _lonlat_bounds(geoms: Sequence[BaseGeometry]) -> tuple[float, float, float, float]:
    b = shapely.bounds(np.asarray(geoms, dtype=object))
    return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())


def _to_lonlat(geom: BaseGeometry, crs: CRS) -> BaseGeometry:
    """A metric geometry back to lon/lat, split at ±180° if it crosses the antimeridian."""
    out = gpd.GeoSeries([geom], crs=crs).to_crs("EPSG:4326").iloc[0]
    if out.is_empty or out.bounds[2] - out.bounds[0] <= 180:
        return out
    # Vertices east of ±180° came back as −180…; unwrap to 0…360, cut at 180, wrap the east part.
    unwrapped = shapely.transform(out, lambda c: np.column_stack([np.where(c[:, 0] < 0, c[:, 0] + 360, c[:, 0]), c[:, 1]]))
    west = unwrapped.intersection(box(0, -90, 180, 90))
    east = shapely.affinity.translate(unwrapped.intersection(box(180, -90, 360, 90)), -360)
    parts: list[Polygon] = []
    for g in (west, east):
        parts.extend(p for p in getattr(g, "geoms", [g]) if isinstance(p, Polygon) and not p.is_empty)
    return MultiPolygon(parts)


def border_pieces(footprints: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The rows a tile hands to its neighbours: its footprints with ``on_border`` (EPSG:4326).

    A tile worker can store this small frame next to the tile's footprints so that a neighbour
    resolving its seams reads only border pieces, never whole tiles.
    """
    if footprints.empty:
        return footprints.iloc[0:0]
    return footprints[footprints["on_border"].astype(bool)].reset_index(drop=True)


@dataclass(frozen=True)
class BorderJoin:
    """Result of :func:`join_border_pieces`.

    Attributes:
        owned: the joined buildings this tile owns (EPSG:4326, ``merge_seams`` columns).
        open_groups: groups that might belong to this tile but reach the outer edge of the
            view (a building larger than the halo): the view must grow by a ring to settle them.
        pieces: border pieces looked at.
    """

    owned: gpd.GeoDataFrame
    open_groups: int
    pieces: int


def _components(pairs: Sequence[tuple[int, int]], n: int) -> np.ndarray:
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    return np.array([find(i) for i in range(n)])


def _in_grid(piece: BaseGeometry, key: TileKey) -> tuple[BaseGeometry, float]:
    """A lon/lat piece in the grid's CRS, and the grid units per metre (largest in the piece:
    Web Mercator stretches metres by 1/cos(lat))."""
    to_xy = _to_grid(key.tms)
    xy = shapely.transform(piece, lambda c: np.column_stack(to_xy.transform(c[:, 0], c[:, 1])))
    lat = max(abs(piece.bounds[1]), abs(piece.bounds[3]))
    return xy, 1 / max(math.cos(math.radians(min(lat, 89.0))), 1e-6)


def _cell_box(key: TileKey) -> tuple[float, float, float, float]:
    b = _tms(key.tms).xy_bounds(morecantile.Tile(key.x, key.y, key.z))
    return b.left, b.bottom, b.right, b.top


def _near_cell(piece: BaseGeometry, key: TileKey, reach_m: float) -> bool:
    """Whether a lon/lat piece comes within ``reach_m`` of the core of cell ``key``."""
    xy, stretch = _in_grid(piece, key)
    left, bottom, right, top = _cell_box(key)
    world = _world_width(key.tms)
    # The cell seen from both sides of the antimeridian (a piece at −180° touches a cell at +180°).
    return any(xy.distance(box(left + k * world, bottom, right + k * world, top)) < reach_m * stretch
               for k in (-1, 0, 1))


@lru_cache(maxsize=8)
def _world_width(name: str) -> float:
    """Width of the whole grid in its CRS units (one turn of the Earth for WebMercatorQuad)."""
    tms = _tms(name)
    b = tms.xy_bbox
    return float(b.right - b.left)


def _near_outer_edge(piece: BaseGeometry, key: TileKey, sides: tuple[bool, bool, bool, bool], reach_m: float) -> bool:
    """Whether a lon/lat piece of cell ``key`` comes within ``reach_m`` of the flagged sides
    (west, east, north, south) of that cell — where it could touch a piece outside the view."""
    xy, stretch = _in_grid(piece, key)
    left, bottom, right, top = _cell_box(key)
    edges = (((left, bottom), (left, top)), ((right, bottom), (right, top)),
             ((left, top), (right, top)), ((left, bottom), (right, bottom)))
    return any(flag and xy.distance(shapely.LineString(e)) < reach_m * stretch for flag, e in zip(sides, edges))


def join_border_pieces(tile_id: str, pieces: gpd.GeoDataFrame, ring: int = 1,
                       buffer_m: float = SEAM_BUFFER_M) -> BorderJoin:
    """Join the border pieces of a tile and its neighbours; keep the buildings the tile owns.

    The local pass of :func:`urbanfabric.footprints.seams.merge_seams`: pieces whose
    ``buffer_m`` grown outlines intersect are one building; its outline is the union of the
    grown pieces shrunk back by ``buffer_m``, its attributes those of its largest piece, its
    ``footprint_confidence`` the area-weighted mean, its ``building_id`` the hash of its
    representative point. A building is kept when that point lies in this tile's core
    (:func:`owner_tile_id`).

    Args:
        tile_id: the tile resolving its seams (``tms-z-x-y``).
        pieces: border pieces (``on_border`` rows, EPSG:4326, with ``tile_id`` and
            ``building_id``; other rows are dropped) of this tile and of every cell within
            ``ring`` of it; pieces of cells farther away are refused.
        ring: how far the view reaches (1: the ≤ 8 neighbours).
        buffer_m: join distance (CMAB +1.5 m / −1.5 m).

    Returns:
        :class:`BorderJoin`: the owned buildings, and how many groups that might be this
        tile's reach the outer edge of the view (settle them with a wider ``ring``).

    Raises:
        InvalidInput: a piece has no ``tile_id`` of this grid or lies outside the view
            (field ``pieces.tile_id``), or the frame is not lon/lat (field ``pieces.crs``).
    """
    key = TileKey.parse(tile_id)
    if not pieces.empty and "on_border" in pieces.columns:
        pieces = border_pieces(pieces)
    if pieces.empty:
        return BorderJoin(pieces.iloc[0:0], 0, 0)
    if pieces.crs is None or not CRS(pieces.crs).equals(CRS("EPSG:4326")):
        raise InvalidInput("pieces.crs", f"expected EPSG:4326, got {pieces.crs}")
    # merge_seams' order (tile results arrive in any order): the kept row, the union and the
    # weighted confidence are then the same whichever tile computes them.
    pieces = pieces.drop_duplicates(["tile_id", "building_id"])
    pieces = pieces.sort_values(["tile_id", "building_id"], kind="stable").reset_index(drop=True)
    try:
        keys = [TileKey.parse(str(t)) for t in pieces["tile_id"]]
    except InvalidInput as exc:
        raise InvalidInput("pieces.tile_id", exc.message) from None
    offsets = []
    for k, t in zip(keys, pieces["tile_id"]):
        if (k.tms, k.z) != (key.tms, key.z):
            raise InvalidInput("pieces.tile_id", f"{t} is not on the grid of {tile_id}")
        dx, dy = key.offset(k)
        if max(abs(dx), abs(dy)) > ring:
            raise InvalidInput("pieces.tile_id", f"{t} is outside ring {ring} of {tile_id}")
        offsets.append((dx, dy))
    geoms = list(pieces.geometry)
    n = len(geoms)

    # Candidate pairs in lon/lat (unwrapped across ±180°), then the exact test — grown outlines
    # intersect — in the UTM zone of each pair, the same zone whichever tile asks.
    lons = _lonlat_bounds(geoms)
    wrap = lons[2] - lons[0] > 180
    flat = [shapely.transform(g, lambda c: np.column_stack([np.where(c[:, 0] < 0, c[:, 0] + 360, c[:, 0]), c[:, 1]]))
            if wrap else g for g in geoms]
    reach = 2 * buffer_m + REACH_SLACK_M
    lat_max = max(abs(lons[1]), abs(lons[3]))
    dlon = reach / (_M_PER_DEG_LAT * max(math.cos(math.radians(min(lat_max, 89.0))), 1e-6))
    dlat = reach / _M_PER_DEG_LAT
    tree = shapely.STRtree(flat)
    # Every piece in a zone at once (elementwise, so the numbers are those of a per-piece call).
    in_zone: dict[int, tuple[gpd.GeoSeries, gpd.GeoSeries]] = {}

    def zone(epsg: int) -> tuple[gpd.GeoSeries, gpd.GeoSeries]:
        if epsg not in in_zone:
            metric = pieces.geometry.to_crs(_crs(epsg))
            in_zone[epsg] = (metric, metric.buffer(buffer_m))
        return in_zone[epsg]

    pairs: list[tuple[int, int]] = []
    for i, g in enumerate(flat):
        x0, y0, x1, y1 = g.bounds
        for j in tree.query(box(x0 - dlon, y0 - dlat, x1 + dlon, y1 + dlat)):
            j = int(j)
            if j <= i:
                continue
            grown_pair = zone(_utm_epsg(_lonlat_bounds([geoms[i], geoms[j]])))[1]
            if grown_pair.iloc[i].intersects(grown_pair.iloc[j]):
                pairs.append((i, j))
    groups = _components(pairs, n)

    owned_rows = []
    open_groups = 0
    for root in dict.fromkeys(groups):  # first-seen order
        members = np.flatnonzero(groups == root)
        # The representative point lies within buffer_m of a piece (the outline is the union of
        # pieces grown by buffer_m, shrunk back): only a group with a piece that close to this
        # core can be this tile's — and such a piece is this tile's or a neighbour's.
        if not any(offsets[m] == (0, 0) or (max(abs(offsets[m][0]), abs(offsets[m][1])) == 1
                                            and _near_cell(geoms[m], key, buffer_m + REACH_SLACK_M))
                   for m in members):
            continue
        outer = False
        for m in members:
            dx, dy = offsets[m]
            if max(abs(dx), abs(dy)) == ring:
                sides = (dx == -ring, dx == ring, dy == -ring, dy == ring)
                if _near_outer_edge(geoms[m], keys[m], sides, reach):
                    outer = True
                    break
        if outer:
            open_groups += 1
            continue
        epsg = _utm_epsg(_lonlat_bounds([geoms[m] for m in members]))
        crs = _crs(epsg)
        metric, grown = zone(epsg)
        g = gpd.GeoDataFrame(pieces.iloc[members].drop(columns=pieces.geometry.name),
                             geometry=metric.iloc[members], crs=crs)
        if len(g) == 1:
            row = g.iloc[0].copy()
        else:
            union = gpd.GeoSeries(grown.iloc[members].values, crs=crs).union_all().buffer(-buffer_m)
            area = g.geometry.area.to_numpy()
            row = g.iloc[int(area.argmax())].copy()
            row["geometry"] = union
            row["footprint_confidence"] = float(np.average(g["footprint_confidence"], weights=area))
        if row["geometry"].is_empty:
            continue
        row["footprint_area_m2"] = row["geometry"].area
        row["geometry"] = valid_lonlat(_to_lonlat(row["geometry"], crs))
        p = row["geometry"].representative_point()
        if owner_tile_id(p.x, p.y, key.tms, key.z) != tile_id:
            continue
        row["building_id"] = building_id(p.x, p.y)
        owned_rows.append(row)
    if not owned_rows:
        return BorderJoin(pieces.iloc[0:0].reset_index(drop=True), open_groups, n)
    owned = gpd.GeoDataFrame(owned_rows, geometry="geometry", crs="EPSG:4326").reset_index(drop=True)
    return BorderJoin(owned, open_groups, n)


def resolve_tile_seams(tile_id: str, footprints: gpd.GeoDataFrame, neighbour_border: gpd.GeoDataFrame,
                       fetch_border: BorderSource | None = None, buffer_m: float = SEAM_BUFFER_M,
                       max_ring: int = MAX_RING) -> gpd.GeoDataFrame:
    """The buildings one tile owns, whole, with no global merge.

    Call it in the tile worker (or a small router) once the tile and its ≤ 8 neighbours have
    their footprints; the union over all tiles of a job is what
    :func:`urbanfabric.footprints.seams.merge_seams` gives for the whole job (same buildings,
    ``building_id`` and geometry when the job lies in one UTM zone), each building exactly once.

    Args:
        tile_id: the tile (``tms-z-x-y``).
        footprints: this tile's footprints as segmentation wrote them (EPSG:4326; columns of
            :func:`urbanfabric.footprints.polygons.polygonize`, ``on_border`` marks pieces that
            may continue in a neighbour). Empty for a tile with no buildings.
        neighbour_border: :func:`border_pieces` of the ≤ 8 neighbours (:func:`neighbour_tile_ids`),
            concatenated (their interior rows, if passed, are ignored); rows of tiles farther
            away are refused.
        fetch_border: border pieces of more tiles, asked for only when a building reaches the
            edge of the 3 × 3 block (larger than the halo) — one ring at a time, up to
            ``max_ring``. ``None``: such a building raises.
        buffer_m: join distance (CMAB +1.5 m / −1.5 m).
        max_ring: widest view (ring 4: 9 × 9 tiles).

    Returns:
        The tile's interior footprints unchanged, then the joined buildings whose
        representative point lies in its core (EPSG:4326, the input's columns). A tile whose
        border pieces all belong to neighbours' buildings returns only its interior ones.

    Raises:
        InvalidInput: bad ``tile_id`` or pieces of tiles outside the view (field named), or a
            building larger than the widest view or than the halo without ``fetch_border``
            (field ``footprints``, naming the tile).
    """
    TileKey.parse(tile_id)
    own = footprints if not footprints.empty else footprints.iloc[0:0]
    if not own.empty:
        if "on_border" not in own.columns:
            raise InvalidInput("footprints.on_border", f"tile {tile_id}: column missing")
        other = set(map(str, own["tile_id"])) - {tile_id} if "tile_id" in own.columns else set()
        if other:
            raise InvalidInput("footprints.tile_id", f"tile {tile_id} got rows of {sorted(other)[:3]}")
    inner = own[~own["on_border"].astype(bool)] if not own.empty else own
    # Interior footprints of neighbours never join (as in merge_seams): border pieces only.
    frames = [border_pieces(f) for f in (own, neighbour_border) if f is not None and not f.empty]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return inner.reset_index(drop=True)
    view = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:4326")
    key = TileKey.parse(tile_id)
    ring = 1
    while True:
        joined = join_border_pieces(tile_id, view, ring=ring, buffer_m=buffer_m)
        if not joined.open_groups:
            break
        if fetch_border is None or ring >= max_ring:
            why = "no fetch_border given" if fetch_border is None else f"wider than {2 * max_ring + 1} tiles"
            raise InvalidInput("footprints", f"tile {tile_id}: {joined.open_groups} building(s) reach past "
                                             f"ring {ring} of neighbours ({why})")
        ring += 1
        more = fetch_border([k.tile_id for k in key.ring(ring)])
        if more is not None and not more.empty:
            view = gpd.GeoDataFrame(pd.concat([view, border_pieces(more)], ignore_index=True),
                                    geometry="geometry", crs="EPSG:4326")
    if joined.owned.empty:
        return inner.reset_index(drop=True)
    out = pd.concat([inner, joined.owned], ignore_index=True) if not inner.empty else joined.owned
    return gpd.GeoDataFrame(out, geometry="geometry", crs="EPSG:4326").reset_index(drop=True)


#: ``tile id -> that tile's footprints`` (EPSG:4326, as segmentation wrote them), ``None`` for a
#: cell that is not part of the job or has no footprints (empty tile, skipped on bad input).
TileReader = Callable[[str], gpd.GeoDataFrame | None]


def tile_buildings(tile_id: str, read_footprints: TileReader, buffer_m: float = SEAM_BUFFER_M,
                   max_ring: int = MAX_RING) -> gpd.GeoDataFrame:
    """:func:`resolve_tile_seams` with the tile's and its neighbours' footprints read on demand.

    What a tile worker or router calls once the tile and its (in-job) neighbours are done::

        layout = JobLayout(job_id)
        def read(tid):   # None: not in the job / nothing there; raise Unavailable to retry later
            key = layout.tile_footprints(tid)
            return read_geoparquet(store.get_bytes(key)) if store.exists(key) else None
        buildings = clip_to_area(tile_buildings(tile_id, read), bbox)

    Only this tile's footprints and its neighbours' border pieces are read (ring 2 and beyond
    only for a building larger than the 3 × 3 block), so memory does not depend on the job.
    """
    own = read_footprints(tile_id)
    if own is None:
        own = gpd.GeoDataFrame(columns=["building_id", "on_border", "tile_id"], geometry=[], crs="EPSG:4326")

    def fetch(ids: Sequence[str]) -> gpd.GeoDataFrame:
        frames = []
        for other in ids:
            got = read_footprints(other)
            if got is not None and not got.empty:
                frames.append(border_pieces(got))
        frames = [f for f in frames if not f.empty]
        if not frames:
            return gpd.GeoDataFrame(geometry=[], crs="EPSG:4326")
        return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:4326")

    return resolve_tile_seams(tile_id, own, fetch(neighbour_tile_ids(tile_id)), fetch_border=fetch,
                              buffer_m=buffer_m, max_ring=max_ring)


def tile_seam_defects(tiles: Sequence[Tile], read_owned: TileReader, cache: int = 16) -> SeamReport:
    """The job's seam check (:func:`urbanfabric.footprints.seams.seam_defects`) from each tile's
    owned buildings, never the job's whole table.

    Each internal edge between two job tiles is checked over the buildings owned by those two
    tiles and by the tiles beside them along the edge (a building owned by a corner neighbour
    can reach the edge's end). ``borders`` counts edges one by one (the global check joins
    collinear edges into longer lines); the ids, cut pairs and flush ids are the global check's.

    Args:
        tiles: the job's tiles (one grid).
        read_owned: a tile's owned buildings (``None`` or empty when it owns none).
        cache: tiles' buildings kept in memory at once (tiles are visited row by row).
    """
    by_xy = {(t.x, t.y): t for t in tiles}
    read = lru_cache(maxsize=cache)(read_owned)

    def owned(t: Tile) -> gpd.GeoDataFrame | None:
        return read(t.tile_id)

    near: set[str] = set()
    cut: set[tuple[str, str]] = set()
    flush: set[str] = set()
    edges = 0
    for t in sorted(tiles, key=lambda k: (k.y, k.x)):
        for dx, dy in ((1, 0), (0, 1)):  # the east and the south edge: every edge once
            other = by_xy.get((t.x + dx, t.y + dy))
            if other is None:
                continue
            edges += 1
            w, s, e, n = (max(t.bounds[0], other.bounds[0]), max(t.bounds[1], other.bounds[1]),
                          min(t.bounds[2], other.bounds[2]), min(t.bounds[3], other.bounds[3]))
            line = LineString([(w, s), (e, n)])
            beside = [by_xy.get((k.x + dy * side, k.y + dx * side)) for k in (t, other) for side in (-1, 1)]
            frames = [f for f in (owned(k) for k in (t, other, *beside) if k is not None)
                      if f is not None and len(f)]
            if not frames:
                continue
            fp = gpd.GeoDataFrame(pd.concat([f[["building_id", "geometry"]] for f in frames], ignore_index=True),
                                  geometry="geometry", crs="EPSG:4326")
            a, b, c = scan_borders(fp, gpd.GeoSeries([line], crs=t.crs))
            near |= a
            cut |= b
            flush |= c
    return SeamReport(edges, len(near), sorted(cut), sorted(flush))


__all__ = ["MAX_RING", "BorderJoin", "BorderSource", "TileKey", "TileReader", "border_pieces",
           "join_border_pieces", "neighbour_tile_ids", "owner_tile_id", "resolve_tile_seams", "tile_buildings", "tile_seam_defects",
           "utm_crs"]
