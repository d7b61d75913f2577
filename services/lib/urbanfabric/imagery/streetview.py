"""Street-level imagery: where the views are, and which of them show a given building.

Sources implement :class:`StreetViewSource` (one method, ``views_in_bbox``). Two ship here:

* :class:`LocalCatalog` — a GeoJSON (Point features) or CSV file of views with a compass
  heading, capture time and image URI; for surveys, Baidu/KartaView exports, test data.
* :class:`MapillaryV4` — the Mapillary Graph API v4 ``images`` endpoint
  (``images?bbox=…&fields=id,computed_compass_angle,geometry,thumb_1024_url,captured_at``),
  token from ``MAPILLARY_ACCESS_TOKEN``.

View selection follows CMAB (``cmab-multi-attribute-buildings.txt``, "Technical
Validation"): the observation point is the point of the building outline nearest to the view;
vector 1 is the view's heading, vector 2 points from the view to the observation point; a view
is kept when the angle θ between them is 45°–135° (the building is on the right of the camera)
or −45°–−135° (on the left). Views facing the building head-on or from behind see it obliquely
or not at all.

Entry point for the façade classifier::

    views_for_buildings(
        buildings: geopandas.GeoDataFrame,   # polygons, any CRS; an id column
        source: StreetViewSource,
        *,
        max_distance_m: float = 50.0,        # view → outline distance
        max_views: int = 3,                  # per building, nearest first
        min_angle: float = 45.0,             # |θ| range kept, degrees
        max_angle: float = 135.0,
        id_column: str = "building_id",
    ) -> pandas.DataFrame

    one row per (building, view), nearest first within a building, columns:
    building_id, view_id, image_uri, captured_at, source, distance_m,
    angle_deg (θ, signed: + right, − left), side ("right" | "left"),
    look_bearing_deg (compass bearing from the view to the observation point, to crop a
    panorama), heading_deg, rank (0 = nearest).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import geopandas as gpd
import pandas as pd
from shapely.geometry import Point
from shapely.ops import nearest_points

from urbanfabric.errors import InvalidInput, Unavailable

COLUMNS = ["building_id", "view_id", "image_uri", "captured_at", "source", "distance_m",
           "angle_deg", "side", "look_bearing_deg", "heading_deg", "rank"]


@dataclass(frozen=True)
class StreetView:
    """One street-level image at a point, looking along a compass heading."""

    view_id: str
    lon: float
    lat: float
    #: Camera direction, degrees clockwise from north (Mapillary ``computed_compass_angle``).
    heading_deg: float
    image_uri: str
    captured_at: dt.datetime | None = None
    source: str = ""


@runtime_checkable
class StreetViewSource(Protocol):
    """Anything that lists the views inside a lon/lat bounding box."""

    name: str

    def views_in_bbox(self, bbox: tuple[float, float, float, float]) -> list[StreetView]:
        """Views whose position lies in ``(west, south, east, north)`` (EPSG:4326)."""
        ...


def _parse_time(value: object) -> dt.datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, int | float):  # Mapillary: milliseconds since the epoch
        return dt.datetime.fromtimestamp(float(value) / 1000.0, tz=dt.UTC)
    stamp = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def _in_bbox(v: StreetView, bbox: tuple[float, float, float, float]) -> bool:
    w, s, e, n = bbox
    return w <= v.lon <= e and s <= v.lat <= n


class LocalCatalog:
    """Views from a GeoJSON (Point features) or CSV file.

    GeoJSON properties / CSV columns: ``id``, ``heading`` (degrees from north), ``image_uri``,
    optional ``captured_at`` (ISO 8601); CSV files also need ``lon`` and ``lat``. Relative
    image URIs are kept as written (resolved by whoever opens the image).

    Raises:
        InvalidInput: the file cannot be parsed or a view lacks a field (field ``streetview``).
    """

    def __init__(self, views: Iterable[StreetView], name: str = "local") -> None:
        self.name = name
        self.views = list(views)

    @classmethod
    def from_text(cls, text: str, fmt: str, name: str = "local") -> LocalCatalog:
        views = []
        try:
            if fmt == "geojson":
                for k, feat in enumerate(json.loads(text)["features"]):
                    p = feat.get("properties") or {}
                    lon, lat = feat["geometry"]["coordinates"][:2]
                    views.append(StreetView(str(p.get("id", k)), float(lon), float(lat), float(p["heading"]),
                                            str(p["image_uri"]), _parse_time(p.get("captured_at")), name))
            elif fmt == "csv":
                for k, row in enumerate(csv.DictReader(io.StringIO(text))):
                    views.append(StreetView(row.get("id") or str(k), float(row["lon"]), float(row["lat"]),
                                            float(row["heading"]), row["image_uri"],
                                            _parse_time(row.get("captured_at")), name))
            else:
                raise InvalidInput("streetview", f"unknown catalog format {fmt!r} (geojson or csv)")
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidInput("streetview", f"bad {fmt} view catalog: {type(exc).__name__}: {exc}") from exc
        return cls(views, name)

    @classmethod
    def from_path(cls, path: str) -> LocalCatalog:
        fmt = "csv" if path.lower().endswith(".csv") else "geojson"
        try:
            with open(path, encoding="utf-8") as fh:
                return cls.from_text(fh.read(), fmt, name=os.path.basename(path))
        except OSError as exc:
            raise InvalidInput("streetview", f"cannot read {path}: {exc}") from exc

    def views_in_bbox(self, bbox: tuple[float, float, float, float]) -> list[StreetView]:
        return [v for v in self.views if _in_bbox(v, bbox)]


class MapillaryV4:
    """Mapillary Graph API v4 image search.

    Args:
        token: client access token (``MLY|…``); defaults to ``$MAPILLARY_ACCESS_TOKEN``.
        base_url: API root (a local server in tests).
        cell_deg: bounding boxes larger than this are queried cell by cell (the API refuses
            large boxes and caps each answer).
        limit: images asked per request (API maximum 2000).
        timeout_s: per request.
    """

    name = "mapillary"
    FIELDS = "id,computed_compass_angle,geometry,thumb_1024_url,captured_at"

    def __init__(self, token: str | None = None, base_url: str = "https://graph.mapillary.com",
                 cell_deg: float = 0.01, limit: int = 2000, timeout_s: float = 30.0) -> None:
        self.token = token if token is not None else os.environ.get("MAPILLARY_ACCESS_TOKEN", "")
        self.base_url = base_url.rstrip("/")
        self.cell_deg = cell_deg
        self.limit = limit
        self.timeout_s = timeout_s

    def _get(self, url: str) -> dict:
        if not self.token:
            raise InvalidInput("MAPILLARY_ACCESS_TOKEN", "a Mapillary client token is required")
        req = urllib.request.Request(url, headers={"Authorization": f"OAuth {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")[:300]
            if exc.code in (400, 401, 403):
                raise InvalidInput("MAPILLARY_ACCESS_TOKEN" if exc.code != 400 else "bbox",
                                   f"Mapillary refused the request ({exc.code}): {body}") from exc
            raise Unavailable(f"Mapillary answered {exc.code}: {body}") from exc
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
            raise Unavailable(f"Mapillary unreachable: {exc}") from exc

    def _cells(self, bbox: tuple[float, float, float, float]) -> Iterable[tuple[float, float, float, float]]:
        w, s, e, n = bbox
        nx = max(1, math.ceil((e - w) / self.cell_deg))
        ny = max(1, math.ceil((n - s) / self.cell_deg))
        for i in range(nx):
            for j in range(ny):
                yield (w + (e - w) * i / nx, s + (n - s) * j / ny,
                       w + (e - w) * (i + 1) / nx, s + (n - s) * (j + 1) / ny)

    def views_in_bbox(self, bbox: tuple[float, float, float, float]) -> list[StreetView]:
        seen: dict[str, StreetView] = {}
        for cell in self._cells(bbox):
            query = urllib.parse.urlencode({"bbox": ",".join(f"{v:.7f}" for v in cell),
                                            "fields": self.FIELDS, "limit": self.limit})
            url: str | None = f"{self.base_url}/images?{query}"
            while url:
                page = self._get(url)
                for rec in page.get("data", []):
                    angle = rec.get("computed_compass_angle")
                    geom = rec.get("geometry") or {}
                    if angle is None or geom.get("type") != "Point":
                        continue  # no usable direction or position: cannot be matched
                    lon, lat = geom["coordinates"][:2]
                    seen[str(rec["id"])] = StreetView(str(rec["id"]), float(lon), float(lat), float(angle),
                                                      rec.get("thumb_1024_url", ""),
                                                      _parse_time(rec.get("captured_at")), self.name)
                url = (page.get("paging") or {}).get("next")
        return [v for v in seen.values() if _in_bbox(v, bbox)]


def signed_angle(heading_deg: float, bearing_deg: float) -> float:
    """θ = bearing − heading, in (−180°, 180°]: positive when the target is to the right."""
    theta = (bearing_deg - heading_deg + 180.0) % 360.0 - 180.0
    return 180.0 if theta == -180.0 else theta


def views_for_buildings(
    buildings: gpd.GeoDataFrame,
    source: StreetViewSource,
    *,
    max_distance_m: float = 50.0,
    max_views: int = 3,
    min_angle: float = 45.0,
    max_angle: float = 135.0,
    id_column: str = "building_id",
) -> pd.DataFrame:
    """The street views that face each building (CMAB rule), nearest first.

    See the module docstring for the columns. Buildings without a qualifying view have no row.

    Raises:
        InvalidInput: no CRS on ``buildings``, a missing id column, or bad limits.
    """
    if buildings.crs is None:
        raise InvalidInput("buildings", "footprints need a coordinate reference system")
    if id_column not in buildings.columns:
        raise InvalidInput("id_column", f"{id_column!r} is not a column of the buildings")
    if max_distance_m <= 0 or max_views <= 0 or not 0 <= min_angle <= max_angle <= 180:
        raise InvalidInput("views", "need max_distance_m > 0, max_views > 0, 0 ≤ min_angle ≤ max_angle ≤ 180")
    if buildings.empty:
        return pd.DataFrame(columns=COLUMNS)
    wgs = buildings.to_crs("EPSG:4326")
    # Views up to max_distance beyond the buildings' extent (≈ metres → degrees, generous).
    pad = max_distance_m / 111_000.0 / max(math.cos(math.radians(float(wgs.total_bounds[3]))), 0.1)
    w, s, e, n = wgs.total_bounds
    views = source.views_in_bbox((w - pad, s - pad, e + pad, n + pad))
    if not views:
        return pd.DataFrame(columns=COLUMNS)
    metric = wgs.estimate_utm_crs()
    shapes = wgs.to_crs(metric)
    pts = gpd.GeoSeries([Point(v.lon, v.lat) for v in views], crs="EPSG:4326").to_crs(metric)
    near_b, near_v = pts.sindex.query(shapes.geometry, predicate="dwithin", distance=max_distance_m)
    rows = []
    for b, k in zip(near_b, near_v):
        poly, view, p = shapes.geometry.iloc[b], views[k], pts.iloc[k]
        if poly.contains(p):
            continue  # a view inside the outline shows the interior or a courtyard
        _, obs = nearest_points(p, poly.exterior if poly.geom_type == "Polygon" else poly.boundary)
        dist = p.distance(obs)
        bearing = math.degrees(math.atan2(obs.x - p.x, obs.y - p.y)) % 360.0
        theta = signed_angle(view.heading_deg, bearing)
        if not min_angle <= abs(theta) <= max_angle:
            continue
        rows.append({"building_id": buildings[id_column].iloc[b], "view_id": view.view_id,
                     "image_uri": view.image_uri, "captured_at": view.captured_at, "source": view.source,
                     "distance_m": float(dist), "angle_deg": float(theta),
                     "side": "right" if theta > 0 else "left", "look_bearing_deg": float(bearing),
                     "heading_deg": view.heading_deg})
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.DataFrame(rows).sort_values(["building_id", "distance_m"], kind="stable")
    out["rank"] = out.groupby("building_id").cumcount()
    return out[out["rank"] < max_views].reset_index(drop=True)[COLUMNS]


def views_frame(views: Iterable[StreetView]) -> gpd.GeoDataFrame:
    """Views as a GeoDataFrame (EPSG:4326), e.g. to map coverage."""
    views = list(views)
    frame = pd.DataFrame([asdict(v) for v in views])
    geom = gpd.points_from_xy(frame["lon"], frame["lat"]) if len(frame) else []
    return gpd.GeoDataFrame(frame, geometry=geom, crs="EPSG:4326")


def views_from_catalog(footprints: gpd.GeoDataFrame, text: str, catalog_uri: str,
                       max_views: int = 3) -> list[tuple[str, list[str]]]:
    """The views facing each building, from a view catalog's text (GeoJSON, or CSV when the URI
    ends in ``.csv``); image URIs relative to the catalog are resolved against its folder."""
    fmt = "csv" if catalog_uri.lower().endswith(".csv") else "geojson"
    catalog = LocalCatalog.from_text(text, fmt, name=catalog_uri)
    frame = views_for_buildings(footprints, catalog, max_views=max_views)
    base = catalog_uri.rsplit("/", 1)[0]

    def resolve(uri: str) -> str:
        return uri if "://" in uri else f"{base}/{uri.removeprefix('./')}"

    return [(str(bid), [resolve(u) for u in group["image_uri"]])
            for bid, group in frame.groupby("building_id", sort=False)]
