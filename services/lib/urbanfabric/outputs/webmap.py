"""A self-contained interactive map of a job's buildings (issue 23, item 1): ``map.html``.

One HTML file that opens offline: Leaflet 1.9.4 (vendored, BSD-2, see ``webmap_assets/README.md``)
and its CSS are inlined, and so is the data. Buildings are drawn on a canvas, coloured by a
chosen attribute (height, material stock per m² of footprint, roof material, relative width
of the stock's 90 % interval), switchable in the page, with a legend; a click opens a popup
with the building's attributes, their 5–95 % ranges and the reason an attribute is unknown.
The stock / CO2e / solar grids (the job's COGs) are toggleable image overlays, the imagery
footprint and the requested area are outlines, and the attribution names the basemap, the
imagery and the model versions. The basemap (OpenStreetMap tiles) needs a network; when its
tiles fail to load the page says so and everything else keeps working.

Size at 100 k buildings: geometry is simplified (default 0.5 m) and written as integer
micro-degree deltas, popup values are rounded to three significant digits and repeated strings
(unknown reasons, classes) are interned, so a building costs ≈ 150–250 bytes (docs/results.md,
"Interactive map (issue 23)").

Pure: a GeoDataFrame, grid rasters and options in, HTML bytes out; no store, no network.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from urbanfabric.errors import InvalidInput
from urbanfabric.io.rasters import Raster

ASSETS = Path(__file__).with_name("webmap_assets")
#: Digests of the vendored Leaflet files (webmap_assets/README.md gives their provenance).
LEAFLET_SHA256 = {
    "leaflet.js": "db49d009c841f5ca34a888c96511ae936fd9f5533e90d8b2c4d57596f4e5641a",
    "leaflet.css": "a7837102824184820dfa198d1ebcd109ff6d0ff9a2672a074b9a1b4d147d04c6",
}
OSM_TILES = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
OSM_ATTRIBUTION = "&copy; <a href='https://www.openstreetmap.org/copyright'>OpenStreetMap</a> contributors"
#: Micro-degrees: coordinates are integers in this unit (≈ 0.11 m of latitude).
COORD_SCALE = 1e6
UNKNOWN_COLOUR = "#9e9e9e"
#: Sequential palette (viridis, 7 steps) for binned numeric attributes and grids.
PALETTE = ["#440154", "#443983", "#31688e", "#21918c", "#35b779", "#90d743", "#fde725"]
#: Categorical palette (Tableau 10) for classes such as roof material.
CATEGORICAL = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
               "#ff9da7", "#9c755f", "#bab0ac"]


@dataclass(frozen=True)
class PopupField:
    """One line of the popup: a column, optionally its 5–95 % range, probability and unknown reason."""

    label: str
    column: str
    unit: str = ""
    scale: float = 1.0
    low: str = ""
    high: str = ""
    probability: str = ""
    reason: str = ""
    #: Whole numbers shown as they are (years), not to three significant digits.
    integer: bool = False


#: The popup's lines, in order; a field whose column is absent is left out.
POPUP_FIELDS: tuple[PopupField, ...] = (
    PopupField("building", "building_id"),
    PopupField("footprint", "footprint_source", probability="footprint_confidence"),
    PopupField("footprint area", "footprint_area_m2", "m²"),
    PopupField("height", "height_m", "m", low="height_p05", high="height_p95", reason="height_source_reason"),
    PopupField("height source", "height_source"),
    PopupField("floors", "floors", integer=True),
    PopupField("function", "building_function", probability="building_function_probability",
               reason="building_function_unknown_reason"),
    PopupField("year built", "year_built", low="year_built_p05", high="year_built_p95", integer=True),
    PopupField("age class", "age_class", probability="age_class_probability", reason="age_class_unknown_reason"),
    PopupField("roof material", "roof_material", probability="roof_material_probability",
               reason="roof_material_unknown_reason"),
    PopupField("roof shape", "roof_shape", probability="roof_shape_probability", reason="roof_shape_unknown_reason"),
    PopupField("facade material", "facade_material", probability="facade_material_probability",
               reason="facade_material_unknown_reason"),
    PopupField("structure", "structure", probability="structure_probability"),
    PopupField("floor area", "gfa_m2", "m²"),
    PopupField("material stock", "mass_total_kg", "t", 1e-3, "mass_total_kg_p05", "mass_total_kg_p95"),
    PopupField("embodied CO2e", "embodied_co2e_kg", "t", 1e-3, "embodied_co2e_kg_p05", "embodied_co2e_kg_p95"),
    PopupField("rooftop solar", "solar_kwh_per_year", "MWh/yr", 1e-3, reason="fallback"),
)


@dataclass(frozen=True)
class Colouring:
    """A colouring of the buildings: per-building class index (-1 = unknown) and its legend."""

    key: str
    title: str
    classes: list[str]
    colours: list[str]
    index: np.ndarray
    unknown_label: str = "unknown / not estimated"


@dataclass(frozen=True)
class GridLayer:
    """A grid to overlay: a one-band raster (any CRS; NaN = no buildings) with its name and unit."""

    name: str
    raster: Raster
    unit: str = ""


@dataclass
class WebmapOptions:
    """What the map shows and how compactly.

    Attributes:
        attribute: the colouring shown first (``height``, ``stock_per_m2``, ``roof_material``,
            ``uncertainty``); the page can switch to the others.
        title: the page title.
        simplify_m: Douglas–Peucker tolerance (m) for the outlines; 0 keeps every vertex.
        imagery_footprint: outline(s) of the imagery used, EPSG:4326.
        area: the requested area, EPSG:4326.
        attribution: extra attribution HTML (imagery source, model versions).
        basemap_url: an XYZ tile URL template, or "" for no basemap.
        basemap_attribution: its attribution HTML.
        grid_max_px: longest side of a grid overlay image (pixels).
    """

    attribute: str = "height"
    title: str = "urbanfabric buildings"
    simplify_m: float = 0.5
    imagery_footprint: BaseGeometry | None = None
    area: BaseGeometry | None = None
    attribution: str = ""
    basemap_url: str = OSM_TILES
    basemap_attribution: str = OSM_ATTRIBUTION
    grid_max_px: int = 1024
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- colourings


def _binned(key: str, title: str, values: np.ndarray, edges: Sequence[float], unit: str) -> Colouring:
    """Bin ``values`` at ``edges`` (ascending, open-ended last bin); NaN → unknown."""
    finite = np.isfinite(values)
    idx = np.full(len(values), -1, dtype=np.int64)
    idx[finite] = np.clip(np.searchsorted(np.asarray(edges), values[finite], side="right") - 1, 0, len(edges) - 1)
    labels = [f"{_fmt(a)}–{_fmt(b)} {unit}".strip() for a, b in zip(edges[:-1], edges[1:])]
    labels.append(f"≥ {_fmt(edges[-1])} {unit}".strip())
    colours = [PALETTE[round(i * (len(PALETTE) - 1) / max(1, len(labels) - 1))] for i in range(len(labels))]
    return Colouring(key, title, labels, colours, idx)


def _categorical(key: str, title: str, values: pd.Series) -> Colouring:
    v = values.astype("object").where(values.notna(), None)
    known = [c for c in v.dropna().astype(str).value_counts().index if c != "unknown"]
    known = known[: len(CATEGORICAL)]
    lookup = {c: i for i, c in enumerate(known)}
    idx = np.array([lookup.get(str(x), -1) if x is not None else -1 for x in v], dtype=np.int64)
    return Colouring(key, title, known, CATEGORICAL[: len(known)], idx,
                     unknown_label="unknown (see the popup for why)" if len(known) < 10 else "unknown or other")


def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    if name not in table.columns:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=np.float64)


#: The binned colourings: key → (title, bin edges, unit); shared with the tile viewer (viewer.py).
BINS: dict[str, tuple[str, list[float], str]] = {
    "height": ("height (m)", [0, 6, 10, 15, 25, 40, 60], "m"),
    "stock_per_m2": ("material stock per m² of footprint (t/m²)", [0, 1, 2, 4, 8, 16, 32], "t/m²"),
    "uncertainty": ("stock uncertainty: 90 % interval / median", [0, 0.5, 1, 2, 3, 5], "×"),
}


def colourings(table: pd.DataFrame) -> dict[str, Colouring]:
    """The colourings the page offers, for the columns the table has.

    ``stock_per_m2`` is the total material stock (t) per m² of footprint; ``uncertainty`` is the
    width of its 90 % interval relative to the Monte-Carlo median, (p95 − p05) / p50 (RASMI
    intensity ranges, Fishman et al. 2024, propagated by stock.monte_carlo).
    """
    out: dict[str, Colouring] = {}
    if "height_m" in table.columns:
        out["height"] = _binned("height", BINS["height"][0], _column(table, "height_m"), *BINS["height"][1:])
    if "mass_total_kg" in table.columns and "footprint_area_m2" in table.columns:
        area = _column(table, "footprint_area_m2")
        with np.errstate(divide="ignore", invalid="ignore"):
            per = np.where(area > 0, _column(table, "mass_total_kg") / 1000.0 / area, np.nan)
        out["stock_per_m2"] = _binned("stock_per_m2", BINS["stock_per_m2"][0], per, *BINS["stock_per_m2"][1:])
    if "roof_material" in table.columns:
        out["roof_material"] = _categorical("roof_material", "roof material", table["roof_material"])
    if {"mass_total_kg_p05", "mass_total_kg_p95"} <= set(table.columns):
        mid = _column(table, "mass_total_kg_mc_p50")
        mid = np.where(np.isfinite(mid), mid, _column(table, "mass_total_kg"))
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(mid > 0, (_column(table, "mass_total_kg_p95") - _column(table, "mass_total_kg_p05")) / mid,
                           np.nan)
        out["uncertainty"] = _binned("uncertainty", BINS["uncertainty"][0], rel, *BINS["uncertainty"][1:])
    return out


# ----------------------------------------------------------------------------- encoding


def _fmt(x: float) -> str:
    return f"{x:g}"


def _round3(x: float) -> float | int:
    """Three significant digits (ints stay ints): enough for a popup, short in JSON."""
    if x == 0 or not math.isfinite(x):
        return 0
    r = round(x, -int(math.floor(math.log10(abs(x)))) + 2)
    return int(r) if float(r).is_integer() else r


class _Strings:
    """Interned strings: each distinct string is written once, rows refer to it by index."""

    def __init__(self) -> None:
        self.table: list[str] = []
        self._ids: dict[str, int] = {}

    def __call__(self, s: str) -> int:
        if s not in self._ids:
            self._ids[s] = len(self.table)
            self.table.append(s)
        return self._ids[s]


def _cell(value: Any, scale: float, strings: _Strings, integer: bool = False) -> Any:
    """A popup value: None, a rounded number, or a string index wrapped as ``[i]``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return [strings("yes" if value else "no")]
    if isinstance(value, (int, float, np.integer, np.floating)):
        v = float(value) * scale
        if not math.isfinite(v):
            return None
        return int(round(v)) if integer else _round3(v)
    text = str(value)
    if text in ("", "nan", "None"):
        return None
    return [strings(text)]


def _numbers(values: np.ndarray, integer: bool, decimals: int | None) -> list[float | int | None]:
    """Numbers for JSON: NaN → None; whole numbers, ``decimals`` places, or three significant digits."""
    out: list[float | int | None] = []
    for x in values.tolist():
        if x != x or x in (math.inf, -math.inf):
            out.append(None)
        elif integer:
            out.append(int(round(x)))
        else:
            y = round(x, decimals) if decimals is not None else float(f"{x:.3g}")
            out.append(int(y) if y.is_integer() else y)
    return out


def _encode_geometries(geoms: np.ndarray, origin: tuple[int, int]) -> list[list[list[list[int]]]]:
    """Per building, its polygons' rings as ``[x0, y0, dx1, dy1, ...]`` integer micro-degrees
    (each ring's first vertex relative to ``origin``, the closing vertex dropped); vectorised."""
    if not len(geoms):
        return []
    polys = np.asarray(geoms, dtype=object).copy()
    single = shapely.get_type_id(polys) == 3  # Polygon -> a one-part MultiPolygon, one per row
    if single.any():
        polys[single] = shapely.multipolygons(polys[single][:, np.newaxis])
    kind, coords, (ring_off, part_off, geom_off) = shapely.to_ragged_array(polys)
    q = np.round(coords * COORD_SCALE).astype(np.int64) - np.asarray(origin, dtype=np.int64)
    d = q.copy()
    d[1:] -= q[:-1]
    starts = ring_off[:-1]
    d[starts] = q[starts]
    flat = d.tolist()
    rings = [[v for pair in flat[a:b - 1] for v in pair] for a, b in zip(ring_off[:-1].tolist(), ring_off[1:].tolist())]
    parts = [rings[a:b] for a, b in zip(part_off[:-1].tolist(), part_off[1:].tolist())]
    return [parts[a:b] for a, b in zip(geom_off[:-1].tolist(), geom_off[1:].tolist())]


def grid_overlay(layer: GridLayer, max_px: int) -> dict[str, Any] | None:
    """Reproject a grid to Web Mercator and colour it (quantile bins) as a PNG data URL."""
    from PIL import Image
    from rasterio.warp import Resampling, calculate_default_transform, reproject, transform_bounds

    r = layer.raster
    src = np.asarray(r.data, dtype=np.float64)
    src = src[0] if src.ndim == 3 else src
    if r.nodata is not None and not (isinstance(r.nodata, float) and math.isnan(r.nodata)):
        src = np.where(src == r.nodata, np.nan, src)
    rows, cols = src.shape
    left, bottom, right, top = r.bounds
    dst_t, w, h = calculate_default_transform(r.crs, "EPSG:3857", cols, rows, left, bottom, right, top)
    if w is None or h is None:
        return None
    k = max(1.0, max(w, h) / max_px)
    w, h = max(1, int(w / k)), max(1, int(h / k))
    dst_t = dst_t @ dst_t.scale(k, k) if k > 1 else dst_t
    dst = np.full((h, w), np.nan)
    reproject(src, dst, src_transform=r.transform, src_crs=r.crs, dst_transform=dst_t, dst_crs="EPSG:3857",
              resampling=Resampling.nearest, src_nodata=np.nan, dst_nodata=np.nan)
    vals = dst[np.isfinite(dst)]
    if not len(vals):
        return None
    edges = np.unique(np.quantile(vals, np.linspace(0, 1, len(PALETTE) + 1)[:-1]))
    idx = np.clip(np.searchsorted(edges, np.nan_to_num(dst, nan=edges[0]), side="right") - 1, 0, len(edges) - 1)
    rgb = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in PALETTE], dtype=np.uint8)
    steps = [round(i * (len(PALETTE) - 1) / max(1, len(edges) - 1)) for i in range(len(edges))]
    rgba = np.zeros((h, w, 4), dtype=np.uint8)
    rgba[..., :3] = rgb[np.asarray(steps)[idx]]
    rgba[..., 3] = np.where(np.isfinite(dst), 190, 0)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", optimize=True)
    x0, y1 = dst_t @ (0, 0)
    x1, y0 = dst_t @ (w, h)
    west, south, east, north = transform_bounds("EPSG:3857", "EPSG:4326", x0, y0, x1, y1)
    factor, unit = _DISPLAY_UNITS.get(layer.unit, (1.0, layer.unit))
    labels = [f"≥ {_round3(float(e) * factor):,} {unit}".strip() for e in edges]
    return {"name": layer.name, "png": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(),
            "bounds": [[south, west], [north, east]], "classes": labels,
            "colours": [PALETTE[s] for s in steps]}


#: Grid units shown in larger units in the legend.
_DISPLAY_UNITS = {"kg": (1e-3, "t"), "kgCO2e": (1e-3, "t CO2e"), "kWh/year": (1e-3, "MWh/year")}


def _outline(geom: BaseGeometry | None) -> list[list[list[float]]]:
    """Polygon rings as ``[[lat, lon], ...]`` lists for Leaflet."""
    if geom is None or geom.is_empty:
        return []
    parts = list(geom.geoms) if hasattr(geom, "geoms") else [geom]
    return [[[round(y, 6), round(x, 6)] for x, y in p.exterior.coords] for p in parts if p.geom_type == "Polygon"]


def tiles_footprint(tile_ids: Iterable[str]) -> BaseGeometry | None:
    """Union of the Web Mercator tiles named ``WebMercatorQuad-<z>-<x>-<y>`` (EPSG:4326)."""
    boxes = []
    for tid in set(tile_ids):
        m = re.fullmatch(r"WebMercatorQuad-(\d+)-(\d+)-(\d+)", str(tid))
        if not m:
            continue
        z, x, y = (int(g) for g in m.groups())
        n = 2.0 ** z

        def lat(t: float) -> float:
            return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * t / n))))

        boxes.append(box(x / n * 360 - 180, lat(y + 1), (x + 1) / n * 360 - 180, lat(y)))
    return shapely.union_all(boxes) if boxes else None


def leaflet_assets() -> tuple[str, str]:
    """The vendored Leaflet JS and CSS, checked against :data:`LEAFLET_SHA256`."""
    out = []
    for name in ("leaflet.js", "leaflet.css"):
        data = (ASSETS / name).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != LEAFLET_SHA256[name]:
            raise RuntimeError(f"{ASSETS / name}: sha256 {digest}, expected {LEAFLET_SHA256[name]} "
                               "(see webmap_assets/README.md)")
        # The source-map comment would point at a file the export does not carry.
        out.append(re.sub(r"//# sourceMappingURL=\S+\s*$", "", data.decode("utf-8")))
    return out[0], out[1]


def map_data(buildings: gpd.GeoDataFrame, grids: Sequence[GridLayer] = (),
             options: WebmapOptions | None = None) -> dict[str, Any]:
    """The JSON the page draws: buildings (compact), colourings, grids, outlines, attribution.

    Raises:
        InvalidInput: the table has no CRS or no geometry, or ``options.attribute`` is not offered.
    """
    opts = options or WebmapOptions()
    if buildings.crs is None:
        raise InvalidInput("buildings", "has no CRS")
    table = buildings[~buildings.geometry.isna() & ~buildings.geometry.is_empty]
    geoms = table.geometry
    if opts.simplify_m > 0 and len(table):
        metric = table.estimate_utm_crs()
        geoms = geoms.to_crs(metric).simplify(opts.simplify_m, preserve_topology=True).to_crs(4326)
    else:
        geoms = geoms.to_crs(4326)
    cols = colourings(table)
    if cols and opts.attribute not in cols:
        raise InvalidInput("attribute", f"{opts.attribute!r} is not one of {sorted(cols)}")
    fields = [f for f in POPUP_FIELDS if f.column in table.columns]
    strings = _Strings()
    if len(table):
        minx, miny, maxx, maxy = geoms.total_bounds
        origin = (int(round(minx * COORD_SCALE)), int(round(miny * COORD_SCALE)))
    else:
        minx = miny = maxx = maxy = 0.0
        origin = (0, 0)
    geometry = _encode_geometries(geoms.values, origin)
    columns: list[dict[str, Any]] = []

    def slot(column: str, scale: float = 1.0, integer: bool = False, probability: bool = False) -> int | None:
        if not column or column not in table.columns:
            return None
        values = table[column].tolist()
        as_text = any(isinstance(v, str) for v in values)
        if as_text and table[column].nunique() > len(values) // 2:  # ids: interning would not pay
            columns.append({"s": False, "v": [None if v is None or v != v else str(v) for v in values]})
            return len(columns) - 1
        if not as_text:
            nums = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64) * scale
            columns.append({"s": False, "v": _numbers(nums, integer, 2 if probability else None)})
            return len(columns) - 1
        cells = [_cell(str(v) if as_text and isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v) else v, scale, strings, integer) for v in values]
        # String indexes + 1; 0 = none (shorter than null).
        columns.append({"s": True, "v": [c[0] + 1 if isinstance(c, list) else 0 for c in cells]})
        return len(columns) - 1

    field_slots = [{"label": f.label, "unit": f.unit, "integer": f.integer,
                    "value": slot(f.column, f.scale, f.integer), "low": slot(f.low, f.scale, f.integer),
                    "high": slot(f.high, f.scale, f.integer), "probability": slot(f.probability, probability=True),
                    "reason": slot(f.reason)} for f in fields]
    overlays = [o for o in (grid_overlay(g, opts.grid_max_px) for g in grids) if o is not None]
    return {
        "title": opts.title,
        "origin": list(origin), "scale": COORD_SCALE,
        "bounds": [[miny, minx], [maxy, maxx]],
        "fields": field_slots, "columns": columns,
        "strings": strings.table, "geometry": geometry,
        "colourings": {k: {"title": c.title, "classes": c.classes, "colours": c.colours,
                           "unknown": c.unknown_label, "index": [int(i) for i in c.index]}
                       for k, c in cols.items()},
        "attribute": opts.attribute if cols else "",
        "grids": overlays,
        "footprint": _outline(opts.imagery_footprint), "area": _outline(opts.area),
        "basemap": {"url": opts.basemap_url, "attribution": opts.basemap_attribution},
        "attribution": opts.attribution,
        "unknown_colour": UNKNOWN_COLOUR,
    }


def webmap_html(buildings: gpd.GeoDataFrame, grids: Sequence[GridLayer] = (),
                options: WebmapOptions | None = None) -> bytes:
    """The self-contained ``map.html`` (UTF-8 bytes): Leaflet, the page's script and the data inline."""
    data = map_data(buildings, grids, options)
    js, css = leaflet_assets()
    page = (ASSETS / "map.html.tmpl").read_text(encoding="utf-8")
    # "</" would end the <script> element early; JSON allows "<\/".
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    title = (data["title"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    for key, value in (("{{TITLE}}", title), ("{{LEAFLET_CSS}}", css), ("{{LEAFLET_JS}}", js),
                       ("{{DATA}}", payload)):
        page = page.replace(key, value, 1)
    return page.encode("utf-8")


def grid_layers_from_cogs(blobs: Iterable[tuple[str, bytes]]) -> list[GridLayer]:
    """Grid layers from the job's COGs (``(name, bytes)``; name and unit from the COG tags)."""
    from rasterio.io import MemoryFile

    from urbanfabric.io.rasters import read_raster

    out = []
    for name, blob in blobs:
        with MemoryFile(blob) as mem, mem.open() as src:
            tags = src.tags()
        raster = read_raster(blob)
        label = f"{tags.get('layer', name)} ({tags.get('cell_size_m', '?')} m cells)"
        out.append(GridLayer(label, raster, tags.get("units", "")))
    return out


def write_webmap(buildings: gpd.GeoDataFrame, grids: Sequence[GridLayer], dest: Path | str,
                 options: WebmapOptions | None = None) -> Path:
    """Write ``map.html`` at ``dest`` (a file path, or a folder to hold ``map.html``)."""
    path = Path(dest)
    if path.is_dir() or not path.suffix:
        path.mkdir(parents=True, exist_ok=True)
        path = path / "map.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(webmap_html(buildings, grids, options))
    return path


#: Grids the job map overlays by default: the additive totals (same sums as the job's COGs).
MAP_GRID_LAYERS: dict[str, str] = {"mass_total_kg": "kg", "embodied_co2e_kg": "kgCO2e",
                                   "solar_kwh_per_year": "kWh/year"}
MAP_CELL_SIZES: tuple[int, ...] = (100, 250)


def table_grids(buildings: gpd.GeoDataFrame, cell_sizes: Sequence[float] = MAP_CELL_SIZES,
                layers: dict[str, str] | None = None) -> list[GridLayer]:
    """Grid overlays computed from the table with :func:`urbanfabric.outputs.grids.rasterize_sums`.

    The same per-cell sums (and building count) as the job's COG grids, so a map built from an
    exported table (which does not carry the COGs) shows the same grids.
    """
    from urbanfabric.outputs.grids import COUNT_LAYER, rasterize_sums

    if buildings.empty or buildings.crs is None:
        return []
    units = {k: v for k, v in (layers or MAP_GRID_LAYERS).items() if k in buildings.columns}
    out = []
    for size in cell_sizes:
        for name, raster in rasterize_sums(buildings, size, list(units)).items():
            unit = "buildings" if name == COUNT_LAYER else units.get(name, "")
            out.append(GridLayer(f"{name} ({size:g} m cells)", raster, unit))
    return out


def _area_geometry(area: Any) -> BaseGeometry | None:
    """The job spec's area (``[w, s, e, n]``, a bbox dict or GeoJSON) as a geometry, if it reads."""
    try:
        if isinstance(area, (list, tuple)) and len(area) == 4:
            return box(*(float(v) for v in area))
        if isinstance(area, dict) and {"west", "south", "east", "north"} <= set(area):
            return box(float(area["west"]), float(area["south"]), float(area["east"]), float(area["north"]))
        if isinstance(area, dict) and "type" in area:
            return shapely.geometry.shape(area.get("geometry", area))
    except (TypeError, ValueError, AttributeError):
        return None
    return None


def options_for_job(job_id: str, parameters: dict[str, Any] | None, buildings: gpd.GeoDataFrame,
                    attribute: str = "height", simplify_m: float = 0.5,
                    imagery_footprint: BaseGeometry | None = None) -> WebmapOptions:
    """Map options for a job: title, requested area, imagery footprint and an attribution naming
    the imagery, the footprints and the model versions.

    ``imagery_footprint`` (EPSG:4326) is the imagery actually read (the aggregate step knows
    every tile); without it, the union of the tiles that hold buildings (their ``tile_id``).
    """
    params = parameters or {}
    bits = []
    if params.get("imagery"):
        bits.append(f"imagery: {params['imagery']}")
    if params.get("footprints"):
        bits.append(f"footprints: {params['footprints']}")
    if "model_versions" in buildings.columns and len(buildings):
        try:
            versions = json.loads(str(buildings["model_versions"].dropna().iloc[0]))
            bits.append("models: " + ", ".join(str(v) for v in versions.values()))
        except (ValueError, IndexError, AttributeError):
            pass
    attribution = "urbanfabric job " + job_id + ("; " + "; ".join(bits) if bits else "")
    attribution = attribution.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    footprint = imagery_footprint
    if footprint is None and "tile_id" in buildings.columns:
        footprint = tiles_footprint(buildings["tile_id"].dropna())
    return WebmapOptions(attribute=attribute, title=f"urbanfabric job {job_id}", simplify_m=simplify_m,
                         imagery_footprint=footprint, area=_area_geometry(params.get("area")),
                         attribution=attribution)


def map_columns() -> set[str]:
    """Every column ``map.html`` reads (colourings, popup, grids, attribution, imagery outline):
    the aggregate step reads only these from the table (a third of its bytes), not all of it."""
    popup = {c for f in POPUP_FIELDS for c in (f.column, f.low, f.high, f.probability, f.reason) if c}
    return {"geometry", "height_m", "footprint_area_m2", "roof_material", "mass_total_kg", "mass_total_kg_p05",
            "mass_total_kg_p95", "mass_total_kg_mc_p50", "model_versions", "tile_id", *MAP_GRID_LAYERS, *popup}


def job_map_html(buildings: gpd.GeoDataFrame, job_id: str, parameters: dict[str, Any] | None = None,
                 attribute: str = "height", simplify_m: float = 0.5,
                 tile_ids: Iterable[str] | None = None) -> bytes:
    """``map.html`` of a finished job: the buildings, the grids (from the table) and the job's
    options. The one call for the ``aggregate`` step (store the bytes as ``outputs/map.html``);
    ``tile_ids`` (``WebMercatorQuad-z-x-y``, every tile the job read) draw the imagery footprint
    exactly, including tiles without buildings."""
    footprint = tiles_footprint(tile_ids) if tile_ids is not None else None
    opts = options_for_job(job_id, parameters, buildings, attribute, simplify_m, footprint)
    return webmap_html(buildings, table_grids(buildings), opts)
