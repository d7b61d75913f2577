"""Training-data loaders for real building heights (issue 5, item 2).

Every loader returns a GeoDataFrame in EPSG:4326 with at least

* ``geometry``       — the building footprint, a (Multi)Polygon;
* ``height_m``       — height above ground in metres (NaN where the source has none);
* ``height_source``  — where the number came from (see each loader), so mixed training sets
                       can be weighted or filtered by label quality;
* ``year_built``     — construction year (float, NaN where absent) when the source has one.

Loaders keep every building they can read, labels as found; :func:`clean_heights` then
repairs or drops bad rows (invalid geometry, height ≤ 0, absurd heights) and reports the
counts — training code calls it, so rejections show up in the model's metrics.

Height definition (CityJSON): **highest roof point minus ground level**. ``height_m = z_max −
ground`` where ``z_max`` is the highest vertex of the building (all its parts) at the most
detailed LoD present, and ``ground`` is the source's terrain attribute when it has one
(3D BAG ``h_maaiveld`` / ``b3_h_maaiveld``, Rotterdam ``TerrainHeight``) and otherwise the lowest
vertex. Roof max (not eaves or a roof-area median) matches what the height models are scored
against in CMAB (Baidu heights are to the top) and what OSM ``height`` means. 3D BAG's own
``b3_h_dak_max`` is used when present (same definition, computed from the point cloud).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from urbanfabric.errors import InvalidInput, NotFound

WGS84 = "EPSG:4326"
#: Floor-to-floor height used to turn OSM ``building:levels`` into metres.
DEFAULT_STOREY_M = 3.0
#: Training labels outside this range are rejected by :func:`clean_heights` (the tallest
#: building is 828 m; a "building" under 2 m is a shed, a wall or a digitising error).
MIN_HEIGHT_M = 2.0
MAX_HEIGHT_M = 500.0

_COLUMNS = ("height_m", "height_source", "year_built")


def _frame(rows: list[dict[str, Any]], geoms: list[Any], crs: Any) -> gpd.GeoDataFrame:
    df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(_COLUMNS))
    for c in _COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    df["height_m"] = df["height_m"].astype(np.float64)
    df["year_built"] = df["year_built"].astype(np.float64)
    gdf = gpd.GeoDataFrame(df, geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs)
    return gdf.to_crs(WGS84)


def _horizontal(crs: CRS) -> CRS:
    """The horizontal part of a compound CRS (EPSG:7415 = RD New + NAP height)."""
    return crs.sub_crs_list[0] if crs.is_compound else crs


# --------------------------------------------------------------------------------------------
# CityJSON
# --------------------------------------------------------------------------------------------

#: Building construction-year attributes, most specific first.
_YEAR_KEYS = ("oorspronkelijk_bouwjaar", "yearOfConstruction", "year_built", "bouwjaar")


def _cityjson_crs(doc: dict[str, Any], crs: Any) -> CRS:
    if crs is not None:
        return _horizontal(CRS.from_user_input(crs))
    ref = (doc.get("metadata") or {}).get("referenceSystem")
    m = re.search(r"EPSG(?:/0/|::?)(\d+)", str(ref or ""))
    if not m:
        raise InvalidInput(
            "crs", "the CityJSON file names no referenceSystem; pass crs= (e.g. EPSG:28992)"
        )
    return _horizontal(CRS.from_epsg(int(m.group(1))))


def _lod_key(lod: Any) -> float:
    try:
        return float(lod)
    except (TypeError, ValueError):
        return -1.0


def _surfaces(geom: dict[str, Any]) -> Iterable[tuple[list[list[int]], str | None]]:
    """(rings, semantic type) of every surface of a CityJSON geometry."""
    kind, b = geom["type"], geom["boundaries"]
    sem = geom.get("semantics") or {}
    types = [s.get("type") for s in sem.get("surfaces", [])]
    values = sem.get("values")

    def sem_of(v: Any) -> str | None:
        return types[v] if isinstance(v, int) and 0 <= v < len(types) else None

    if kind in ("MultiSurface", "CompositeSurface"):
        for k, surf in enumerate(b):
            yield surf, sem_of(values[k] if values is not None else None)
    elif kind == "Solid":
        for si, shell in enumerate(b):
            for k, surf in enumerate(shell):
                yield surf, sem_of(values[si][k] if values is not None else None)
    elif kind in ("MultiSolid", "CompositeSolid"):
        for di, solid in enumerate(b):
            for si, shell in enumerate(solid):
                for k, surf in enumerate(shell):
                    v = values[di][si][k] if values is not None else None
                    yield surf, sem_of(v)


def _object_geometry(
    obj: dict[str, Any], verts: np.ndarray
) -> tuple[list[Any], float, float, str] | None:
    """Footprint polygons, z_max, z_min and LoD of one city object's most detailed geometry."""
    geoms = [g for g in obj.get("geometry", []) if g.get("type") != "GeometryInstance"]
    if not geoms:
        return None
    g = max(geoms, key=lambda x: _lod_key(x.get("lod")))
    surfs = list(_surfaces(g))
    idx = [i for rings, _ in surfs for r in rings for i in r]
    if not idx:
        return None
    z = verts[idx, 2]
    zmax, zmin = float(z.max()), float(z.min())

    def poly(rings: list[list[int]]) -> Any:
        shells = [verts[r, :2] for r in rings if len(r) >= 3]
        if not shells:
            return None
        p = shapely.Polygon(shells[0], shells[1:])
        return p if p.is_valid else shapely.make_valid(p)

    # Footprint, in order of preference: semantic ground surfaces; faces lying at the lowest
    # level (LoD1 blocks have no semantics); the 2D shadow of every face.
    ground = [s for s, t in surfs if t == "GroundSurface"]
    if not ground:
        ground = [s for s, _ in surfs
                  if np.all(np.abs(verts[[i for r in s for i in r], 2] - zmin) < 0.05)]
    polys = [p for p in (poly(s) for s in ground) if p is not None and p.area > 1e-6]
    if not polys:
        polys = [p for p in (poly(s) for s, _ in surfs) if p is not None and p.area > 1e-6]
    return polys, zmax, zmin, str(g.get("lod"))


def _num(v: Any) -> float:
    try:
        out = float(v)
    except (TypeError, ValueError):
        return np.nan
    return out if np.isfinite(out) else np.nan


def load_cityjson(path: str | Path, crs: Any = None) -> gpd.GeoDataFrame:
    """Buildings of a CityJSON file (v1.0–2.0) with footprint and height.

    One row per top-level ``Building`` (its ``BuildingPart`` children are merged into it:
    footprint = union, roof = highest part, ground = lowest). Height as in the module
    docstring. ``height_source`` is ``"cityjson:3dbag-attr"`` when 3D BAG's ``b3_h_dak_max``
    is used, else ``"cityjson:lod<lod>:zmax-<ground>"`` with ``<ground>`` ``attr`` (terrain
    attribute) or ``zmin`` (lowest vertex).

    Extra columns: ``id`` (city-object id), ``lod``, ``ground_m``, ``roof_max_m`` (absolute,
    source vertical datum), and the eaves height ``height_eaves_m`` where the file has one
    (Den Haag ``RelativeEavesHeight``), else NaN.

    Args:
        path: the CityJSON file.
        crs: horizontal CRS of the vertices when the file has no ``referenceSystem``
            (3D BAG / Dutch files: EPSG:28992). Overrides the file's when given.

    Raises:
        NotFound: no such file.
        InvalidInput: ``field="crs"`` when neither the file nor ``crs`` gives a CRS;
            ``field="path"`` when the file is not CityJSON.
    """
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"no CityJSON file at {p}")
    doc = json.loads(p.read_text())
    if doc.get("type") != "CityJSON":
        raise InvalidInput("path", f"{p.name} is not a CityJSON document")
    src_crs = _cityjson_crs(doc, crs)
    verts = np.asarray(doc.get("vertices", []), dtype=np.float64).reshape(-1, 3)
    tr = doc.get("transform")
    if tr:
        verts = verts * np.asarray(tr["scale"]) + np.asarray(tr["translate"])
    objs: dict[str, dict[str, Any]] = doc["CityObjects"]
    rows: list[dict[str, Any]] = []
    geoms: list[Any] = []
    for oid, obj in objs.items():
        if obj.get("type") != "Building" or obj.get("parents"):
            continue
        members = [obj] + [objs[c] for c in obj.get("children", []) if c in objs
                           and objs[c].get("type") == "BuildingPart"]
        parts = [r for r in (_object_geometry(m, verts) for m in members) if r is not None]
        if not parts:
            continue
        polys = [pg for r in parts for pg in r[0]]
        if not polys:
            continue
        footprint = shapely.union_all(polys)
        footprint = shapely.make_valid(footprint) if not footprint.is_valid else footprint
        polys_only = [q for q in shapely.get_parts(footprint) if q.geom_type == "Polygon"]
        if not polys_only:
            continue
        footprint = polys_only[0] if len(polys_only) == 1 else shapely.MultiPolygon(polys_only)
        zmax = max(r[1] for r in parts)
        zmin = min(r[2] for r in parts)
        lod = max((r[3] for r in parts), key=_lod_key)
        attrs: dict[str, Any] = {}
        for m in members:  # the parent's attributes win over its parts'
            for k, v in (m.get("attributes") or {}).items():
                attrs.setdefault(k, v)
        ground_attr = next((
            _num(attrs[k]) for k in ("b3_h_maaiveld", "h_maaiveld", "TerrainHeight")
            if k in attrs and np.isfinite(_num(attrs[k]))), np.nan)
        if np.isfinite(_num(attrs.get("b3_h_dak_max"))) and np.isfinite(ground_attr):
            height, source = _num(attrs["b3_h_dak_max"]) - ground_attr, "cityjson:3dbag-attr"
            roof = _num(attrs["b3_h_dak_max"])
        elif np.isfinite(ground_attr):
            height, source, roof = zmax - ground_attr, f"cityjson:lod{lod}:zmax-attr", zmax
        else:
            height, source, roof = zmax - zmin, f"cityjson:lod{lod}:zmax-zmin", zmax
        eaves = [_num((m.get("attributes") or {}).get("RelativeEavesHeight")) for m in members]
        eaves = [e for e in eaves if np.isfinite(e)]
        year = next((_num(attrs[k]) for k in _YEAR_KEYS if k in attrs), np.nan)
        rows.append({
            "id": oid, "height_m": height, "height_source": source, "year_built": year,
            "lod": lod, "ground_m": ground_attr if np.isfinite(ground_attr) else zmin,
            "roof_max_m": roof, "height_eaves_m": max(eaves) if eaves else np.nan,
        })
        geoms.append(footprint)
    return _frame(rows, geoms, src_crs)


# --------------------------------------------------------------------------------------------
# OSM GeoJSON
# --------------------------------------------------------------------------------------------

_HEIGHT_RE = re.compile(r"^\s*([0-9]+(?:[.,][0-9]+)?)\s*(m|ft|feet|')?\s*$", re.IGNORECASE)
_YEAR_RE = re.compile(r"(1[0-9]{3}|20[0-9]{2})")


def parse_osm_height(value: Any) -> float:
    """Metres from an OSM ``height`` tag (``"12"``, ``"12.5 m"``, ``"40 ft"``); NaN if not."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    if isinstance(value, (int, float)):
        return float(value)
    m = _HEIGHT_RE.match(str(value))
    if not m:
        return np.nan
    v = float(m.group(1).replace(",", "."))
    unit = (m.group(2) or "m").lower()
    return v * 0.3048 if unit in ("ft", "feet", "'") else v


def load_osm_buildings(
    path: str | Path, storey_height: float = DEFAULT_STOREY_M
) -> gpd.GeoDataFrame:
    """OSM buildings (GeoJSON / any OGR file with OSM tags as columns) with heights.

    ``height_m`` is the ``height`` tag when it parses (``height_source="osm:height"``), else
    ``building:levels`` × ``storey_height`` (``"osm:levels"``; roof levels are not added),
    else NaN (``""``). ``year_built`` is the first four-digit year in ``start_date`` (or
    ``building:year`` / ``construction_date``). Non-polygonal features are dropped.

    Raises:
        NotFound: no such file.
        InvalidInput: ``field="storey_height"`` for a non-positive storey height.
    """
    if not storey_height > 0:
        raise InvalidInput("storey_height", f"must be > 0, got {storey_height}")
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"no OSM file at {p}")
    gdf = gpd.read_file(p)
    gdf = gdf[gdf.geom_type.isin(["Polygon", "MultiPolygon"])].copy()
    if gdf.crs is None:
        gdf = gdf.set_crs(WGS84)  # GeoJSON is WGS84 by definition
    n = len(gdf)

    def col(name: str) -> pd.Series:
        return gdf[name] if name in gdf.columns else pd.Series([None] * n, index=gdf.index)

    h = np.array([parse_osm_height(v) for v in col("height")], dtype=np.float64)
    levels = np.array([parse_osm_height(v) for v in col("building:levels")], dtype=np.float64)
    src = np.where(np.isfinite(h), "osm:height", np.where(np.isfinite(levels), "osm:levels", ""))
    height = np.where(np.isfinite(h), h, levels * storey_height)
    year = np.full(n, np.nan)
    for key in ("building:year", "construction_date", "start_date"):
        for i, v in enumerate(col(key)):
            m = _YEAR_RE.search(str(v)) if v is not None else None
            if m and np.isnan(year[i]):
                year[i] = float(m.group(1))
    out = gdf.assign(height_m=height, height_source=src, year_built=year)
    return out.to_crs(WGS84)


# --------------------------------------------------------------------------------------------
# Footprint file with a height field
# --------------------------------------------------------------------------------------------


def load_footprint_heights(
    path: str | Path,
    height_field: str = "H",
    year_field: str | None = None,
    source: str | None = None,
) -> gpd.GeoDataFrame:
    """Footprints with a numeric height attribute (e.g. Xiamen ``buildings.json`` ``H``).

    Args:
        path: any OGR-readable polygon file.
        height_field: column holding the height in metres.
        year_field: optional column with the construction year.
        source: ``height_source`` value; default ``"field:<height_field>"``.

    Raises:
        NotFound: no such file.
        InvalidInput: ``field="height_field"`` / ``"year_field"`` when the column is missing.
    """
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"no footprint file at {p}")
    gdf = gpd.read_file(p)
    if height_field not in gdf.columns:
        raise InvalidInput("height_field", f"{height_field!r} not in {list(gdf.columns)}")
    if year_field is not None and year_field not in gdf.columns:
        raise InvalidInput("year_field", f"{year_field!r} not in {list(gdf.columns)}")
    if gdf.crs is None:
        gdf = gdf.set_crs(WGS84)
    gdf = gdf.assign(
        height_m=pd.to_numeric(gdf[height_field], errors="coerce").astype(np.float64),
        height_source=source or f"field:{height_field}",
        year_built=(pd.to_numeric(gdf[year_field], errors="coerce").astype(np.float64)
                    if year_field else np.nan),
    )
    return gdf.to_crs(WGS84)


# --------------------------------------------------------------------------------------------
# DSM − DTM rasters
# --------------------------------------------------------------------------------------------


def _group_percentile(labels: np.ndarray, values: np.ndarray, n: int, q: float) -> np.ndarray:
    """Per-label q-th percentile (linear interpolation, as numpy's default); NaN if empty."""
    order = np.lexsort((values, labels))
    lab, val = labels[order], values[order]
    counts = np.bincount(lab, minlength=n)
    start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    out = np.full(n, np.nan)
    has = counts > 0
    pos = (counts[has] - 1) * (q / 100.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, counts[has] - 1)
    frac = pos - lo
    s = start[has]
    out[has] = val[s + lo] * (1 - frac) + val[s + hi] * frac
    return out


def heights_from_dsm_dtm(
    footprints: gpd.GeoDataFrame,
    dsm_path: str | Path,
    dtm_path: str | Path,
    percentile: float = 90.0,
) -> gpd.GeoDataFrame:
    """Height above ground inside each footprint from a surface and a terrain model.

    The normalised DSM (DSM − DTM, the DTM resampled bilinearly onto the DSM grid when the
    grids differ) is sampled at every pixel whose centre lies inside the footprint; the
    height is the ``percentile``-th of those values. A high percentile (default 90) rather
    than the maximum: the top pixels hold antennas, chimneys, trees overhanging the edge and
    co-registration errors; the median would report the eaves of pitched roofs.

    Footprints that overlap share pixels by drawing order (the later one wins). Footprints
    holding no pixel centre get NaN and ``n_pixels = 0``.

    Returns:
        ``footprints`` (reprojected to EPSG:4326) plus ``height_m``, ``height_source``
        (``"dsm-dtm:p<percentile>"``), ``n_pixels`` and ``year_built`` (NaN).

    Raises:
        NotFound: a raster is missing.
        InvalidInput: ``field="footprints"`` without a CRS; ``field="percentile"`` outside
            [0, 100].
    """
    import rasterio
    from rasterio.features import rasterize
    from rasterio.warp import Resampling, reproject

    if not 0 <= percentile <= 100:
        raise InvalidInput("percentile", f"must be in [0, 100], got {percentile}")
    if footprints.crs is None:
        raise InvalidInput("footprints", "has no CRS")
    for pth in (dsm_path, dtm_path):
        if not Path(pth).is_file():
            raise NotFound(f"no raster at {pth}")
    with rasterio.open(dsm_path) as dsm_ds:
        dsm = dsm_ds.read(1, masked=True).astype(np.float64).filled(np.nan)
        transform, rcrs, shape = dsm_ds.transform, dsm_ds.crs, dsm_ds.shape
    with rasterio.open(dtm_path) as dtm_ds:
        if dtm_ds.transform == transform and dtm_ds.shape == shape and dtm_ds.crs == rcrs:
            dtm = dtm_ds.read(1, masked=True).astype(np.float64).filled(np.nan)
        else:
            dtm = np.full(shape, np.nan)
            src = dtm_ds.read(1, masked=True).astype(np.float64).filled(np.nan)
            reproject(src, dtm, src_transform=dtm_ds.transform, src_crs=dtm_ds.crs,
                      dst_transform=transform, dst_crs=rcrs, src_nodata=np.nan,
                      dst_nodata=np.nan, resampling=Resampling.bilinear)
    ndsm = dsm - dtm
    fp = footprints.to_crs(rcrs)
    n = len(fp)
    ok = ~(fp.geometry.isna() | fp.geometry.is_empty).to_numpy()
    labels = rasterize(
        ((g, i + 1) for i, g in enumerate(fp.geometry) if ok[i]),
        out_shape=shape, transform=transform, fill=0, dtype="int32", all_touched=False,
    ) if ok.any() else np.zeros(shape, dtype=np.int32)
    sel = (labels > 0) & np.isfinite(ndsm)
    lab = labels[sel] - 1
    vals = ndsm[sel]
    out = footprints.copy()
    out["height_m"] = _group_percentile(lab, vals, n, percentile)
    out["n_pixels"] = np.bincount(lab, minlength=n)
    out["height_source"] = f"dsm-dtm:p{percentile:g}"
    out["year_built"] = np.nan
    return out.to_crs(WGS84)


# --------------------------------------------------------------------------------------------
# Cleaning
# --------------------------------------------------------------------------------------------


def clean_heights(
    gdf: gpd.GeoDataFrame, min_m: float = MIN_HEIGHT_M, max_m: float = MAX_HEIGHT_M
) -> tuple[gpd.GeoDataFrame, dict[str, int]]:
    """Repair invalid footprints and drop rows unusable as height labels.

    Dropped, each counted in the report: null/empty geometry, non-polygonal geometry,
    geometry with no area after repair, missing height, height outside [min_m, max_m]
    (e.g. −3 m or 800 m). Invalid polygons are repaired (``make_valid``, structure method)
    and counted as ``repaired``.

    Returns:
        ``(clean, report)``; report keys: ``n_in``, ``n_out``, ``repaired``,
        ``dropped_geometry``, ``dropped_missing_height``, ``dropped_out_of_range``.
    """
    report = {"n_in": len(gdf), "repaired": 0, "dropped_geometry": 0,
              "dropped_missing_height": 0, "dropped_out_of_range": 0}
    g = np.asarray(gdf.geometry.values, dtype=object)
    bad = shapely.is_missing(g) | shapely.is_empty(g)
    bad |= ~np.isin(shapely.get_type_id(g), [3, 6])  # Polygon, MultiPolygon
    g = g.copy()
    invalid = ~bad & ~shapely.is_valid(g)
    if invalid.any():
        fixed = shapely.make_valid(g[invalid], method="structure", keep_collapsed=False)
        g[invalid] = fixed
        report["repaired"] = int(invalid.sum())
    bad |= ~bad & (shapely.area(g) <= 0)
    report["dropped_geometry"] = int(bad.sum())
    h = gdf["height_m"].to_numpy(dtype=np.float64)
    missing = ~bad & ~np.isfinite(h)
    report["dropped_missing_height"] = int(missing.sum())
    with np.errstate(invalid="ignore"):
        out_of_range = ~bad & ~missing & ((h < min_m) | (h > max_m))
    report["dropped_out_of_range"] = int(out_of_range.sum())
    keep = ~(bad | missing | out_of_range)
    out = gdf.copy()
    out = out.set_geometry(gpd.GeoSeries(g, crs=gdf.crs, index=gdf.index))
    out = out[keep]
    report["n_out"] = len(out)
    return out, report
