"""The tile viewer of a job (issue 23, item 2): ``viewer.html`` beside ``buildings.pmtiles``.

One HTML page with MapLibre GL JS 5.24.1 and the pmtiles 4.5.0 browser build inlined (vendored
from npm, BSD-3-Clause, see ``viewer_assets/README.md``) that draws the job's vector-tile
archive (urbanfabric.outputs.vector_tiles) at any size of job: buildings coloured by a chosen
attribute with a legend, a popup with each building's attributes and their ranges (an unknown
says why), the job's grids as toggleable overlays with a link to each COG, and an attribution
naming the basemap, the imagery and the model versions.

Where it works: the archive is read by HTTP range requests, so the page needs the folder served
over HTTP (any static host; ``urbanfabric open`` serves it on 127.0.0.1). Opened straight from
disk (``file://``), browsers refuse those reads; the page then asks for ``buildings.pmtiles``
through a file picker and reads it locally. Only the basemap needs a network, and the page says
so when its tiles fail.

The page also offers ``window.ufViewer`` = {``map``, ``ready`` (resolves once the buildings are
drawn), ``state``, ``layerId`` (``"buildings"``), ``popupSelector``, ``setAttribute(key)``,
``openPopup(buildingId)``} for scripts and headless browsers.

Pure: the archive's stats, grid COGs and options in, HTML bytes out; no store, no network.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from urbanfabric.errors import InvalidInput
from urbanfabric.outputs import webmap
from urbanfabric.outputs.vector_tiles import LAYER, TileArchiveStats

ASSETS = Path(__file__).with_name("viewer_assets")
#: Digests of the vendored files (viewer_assets/README.md gives their provenance).
VIEWER_SHA256 = {
    "maplibre-gl.js": "a9c9e2aa36d4d5b63b131f27c1272f1a28883eeecc0eddd1e0dbfae4033bc7c9",
    "maplibre-gl.css": "ab1e70d59ec40465bae7e7030da2f3ccf28133fd502e62bd598eefbadfd7a732",
    "pmtiles.js": "caf981bc46f6327ee7e65d5dc964d89d38a69f60edca2bd4c5c890c21b554c6c",
}
#: The archive's name beside the page (the page loads it by this relative URL).
ARCHIVE_NAME = "buildings.pmtiles"

#: Popup lines: (label, property, unit, low property, high property, reason property, integer).
POPUP: tuple[tuple[str, str, str, str, str, str, bool], ...] = (
    ("building", "id", "", "", "", "", False),
    ("height", "height_m", "m", "height_p05", "height_p95", "height_why", False),
    ("floors", "floors", "", "", "", "", True),
    ("function", "function", "", "", "", "function_why", False),
    ("roof material", "roof_material", "", "", "", "roof_material_why", False),
    ("footprint area", "area_m2", "m²", "", "", "", False),
    ("material stock", "mass_t", "t", "mass_t_p05", "mass_t_p95", "", False),
    ("stock per m² of footprint", "stock_t_m2", "t/m²", "", "", "", False),
    ("stock 90 % interval / median", "stock_rel90", "×", "", "", "", False),
    ("embodied CO2e", "co2e_t", "t", "", "", "", False),
)


@dataclass(frozen=True)
class Colouring:
    """A colouring of the tiles: a property binned at ``edges`` or matched against ``classes``."""

    key: str
    title: str
    prop: str
    classes: list[str]
    colours: list[str]
    edges: list[float] | None = None
    unknown: str = "unknown / not estimated"

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "property": self.prop, "classes": self.classes, "colours": self.colours,
                "edges": self.edges, "unknown": self.unknown}


def _binned(key: str, title: str, prop: str, edges: Sequence[float], unit: str) -> Colouring:
    labels = [f"{a:g}–{b:g} {unit}".strip() for a, b in pairwise(edges)] + [f"≥ {edges[-1]:g} {unit}".strip()]
    n = len(labels)
    colours = [webmap.PALETTE[round(i * (len(webmap.PALETTE) - 1) / max(1, n - 1))] for i in range(n)]
    return Colouring(key, title, prop, labels, colours, [float(e) for e in edges])


def _categorical(key: str, title: str, prop: str, counts: dict[str, int]) -> Colouring:
    known = [c for c, _ in sorted(counts.items(), key=lambda kv: -kv[1]) if c != "unknown"][: len(webmap.CATEGORICAL)]
    return Colouring(key, title, prop, known, webmap.CATEGORICAL[: len(known)],
                     unknown="unknown (see the popup for why)" if len(known) < len(webmap.CATEGORICAL)
                     else "unknown or other")


def colourings(classes: dict[str, dict[str, int]]) -> dict[str, Colouring]:
    """The colourings the viewer offers: the bins of map.html (urbanfabric.outputs.webmap.BINS)
    on the tiles' properties, and the classes the archive holds for function and roof material."""
    out: dict[str, Colouring] = {}
    for key, (title, edges, unit) in webmap.BINS.items():
        out[key] = _binned(key, title, {"height": "height_m", "stock_per_m2": "stock_t_m2",
                                        "uncertainty": "stock_rel90"}[key], edges, unit)
    out["roof_material"] = _categorical("roof_material", "roof material", "roof_material",
                                        classes.get("roof_material", {}))
    out["function"] = _categorical("function", "building function", "function", classes.get("function", {}))
    return out


def vendored_assets() -> dict[str, str]:
    """The vendored MapLibre and pmtiles files, checked against :data:`VIEWER_SHA256`."""
    out = {}
    for name, expected in VIEWER_SHA256.items():
        data = (ASSETS / name).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise RuntimeError(f"{ASSETS / name}: sha256 {digest}, expected {expected} (see viewer_assets/README.md)")
        # The source-map comment would point at a file the export does not carry.
        out[name] = re.sub(r"//# sourceMappingURL=\S+\s*$", "", data.decode("utf-8"))
    return out


def grid_overlays(cogs: Iterable[tuple[str, Path]], max_px: int = 1024) -> list[dict[str, Any]]:
    """Overlays of the job's grid COGs (``(relative href, local path)``), each read at an overview
    of at most ``max_px`` pixels (a country-sized grid costs no more than a city's), coloured in
    quantile bins as map.html colours them, with the COG's href for download."""
    from urbanfabric.io.rasters import read_raster

    out = []
    for href, path in cogs:
        blob = Path(path).read_bytes()
        layer = webmap.grid_layers_from_cogs([(Path(href).stem, blob)])[0]
        preview = webmap.GridLayer(layer.name, read_raster(blob, max_size=max_px), layer.unit)
        overlay = webmap.grid_overlay(preview, max_px)
        if overlay is None:
            continue
        (south, west), (north, east) = overlay["bounds"]
        overlay["coordinates"] = [[west, north], [east, north], [east, south], [west, south]]
        overlay["href"] = href
        out.append(overlay)
    return out


def viewer_config(stats: TileArchiveStats, title: str = "urbanfabric buildings", attribute: str = "height",
                  grids: Sequence[dict[str, Any]] = (), attribution: str = "",
                  basemap_url: str = webmap.OSM_TILES, basemap_attribution: str = webmap.OSM_ATTRIBUTION,
                  archive: str = ARCHIVE_NAME) -> dict[str, Any]:
    """The JSON the page reads.

    Raises:
        InvalidInput: ``attribute`` is not one of the colourings, or the archive has no bounds.
    """
    cols = colourings(stats.classes)
    if attribute not in cols:
        raise InvalidInput("attribute", f"{attribute!r} is not one of {sorted(cols)}")
    if stats.bounds is None:
        raise InvalidInput("buildings", "the archive has no bounds (no buildings)")
    west, south, east, north = stats.bounds
    return {
        "title": title, "archive": archive, "layer": LAYER,
        "bounds": [[west, south], [east, north]],
        "min_zoom": stats.min_zoom, "max_zoom": stats.max_zoom, "buildings": stats.buildings,
        "attribute": attribute, "colourings": {k: c.as_dict() for k, c in cols.items()},
        "unknown_colour": webmap.UNKNOWN_COLOUR,
        "popup": [{"label": label, "value": prop, "unit": unit, "low": low, "high": high, "why": why,
                   "integer": integer} for label, prop, unit, low, high, why, integer in POPUP],
        "grids": list(grids),
        "basemap": {"url": basemap_url, "attribution": basemap_attribution},
        "attribution": attribution,
    }


def viewer_html(config: dict[str, Any]) -> bytes:
    """The self-contained ``viewer.html`` (UTF-8): MapLibre, pmtiles, the page's script and ``config``."""
    assets = vendored_assets()
    page = (ASSETS / "viewer.html.tmpl").read_text(encoding="utf-8")
    payload = json.dumps(config, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    title = str(config["title"]).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    values = {"TITLE": title, "MAPLIBRE_CSS": assets["maplibre-gl.css"], "MAPLIBRE_JS": assets["maplibre-gl.js"],
              "PMTILES_JS": assets["pmtiles.js"], "CONFIG": payload}
    # One pass, so nothing inside an inserted file is taken for a placeholder.
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: values[m.group(1)], page).encode("utf-8")
