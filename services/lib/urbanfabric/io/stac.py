"""STAC catalogs stored in the object store, and searching any imagery source.

pystac reads and writes ``s3://`` hrefs through :class:`ObjectStoreStacIO`, so a static catalog
lives next to the COGs it describes and any STAC tool pointed at the bucket can browse it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import pystac
import pystac_client
import rasterio
from pyproj import Transformer
from pystac.stac_io import DefaultStacIO
from shapely.geometry import box, mapping

from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.io.rasters import COG_MEDIA_TYPE
from urbanfabric.io.object_store import ObjectStore, parse_s3_uri


class ObjectStoreStacIO(DefaultStacIO):
    """pystac I/O that handles ``s3://`` hrefs with the project's object store."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__()
        self.store = store

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        href = str(source)
        if href.startswith("s3://"):
            return self.store.get_bytes(parse_s3_uri(href)[1]).decode("utf-8")
        return super().read_text(source, *args, **kwargs)

    def write_text(self, dest: Any, txt: str, *args: Any, **kwargs: Any) -> None:
        href = str(dest)
        if href.startswith("s3://"):
            self.store.put_bytes(parse_s3_uri(href)[1], txt.encode("utf-8"))
            return
        super().write_text(dest, txt, *args, **kwargs)


def read_catalog(uri: str, store: ObjectStore) -> pystac.Catalog:
    """Open a static catalog (``s3://…/catalog.json`` or a local path)."""
    return pystac.Catalog.from_file(uri, stac_io=ObjectStoreStacIO(store))


# --- Searching imagery sources -------------------------------------------------------------
#
# A job names its imagery in one of three ways, and all three end up as a list of STAC items
# that the acquisition stage loads with stackstac:
#
# * a STAC API (``https://…/stac`` or any URL not ending in ``.json``): searched with
#   pystac-client by bounding box, date range and collections;
# * a static catalog (``catalog.json`` / ``collection.json``, ``s3://``, ``http(s)://`` or a
#   local path): read with pystac and filtered the same way;
# * a plain list of COG URLs: each file's header becomes an item (bounds, CRS, bands from the
#   colour interpretation), so users without a catalog are not turned away.

#: Item datetime range given to COGs that carry no acquisition date: "valid any time".
UNDATED = ("1900-01-01T00:00:00Z", "2100-01-01T00:00:00Z")
#: GDAL colour interpretation → STAC ``eo`` common band name.
_COLOR_NAMES = {"red": "red", "green": "green", "blue": "blue", "gray": "pan", "undefined": ""}


def source_kind(uri: str) -> str:
    """``"api"`` for a STAC API root, ``"static"`` for a catalog/collection JSON file."""
    if uri.startswith(("http://", "https://")) and not uri.split("?")[0].endswith(".json"):
        return "api"
    return "static"


def _parse_datetime(value: str | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``"2019"``, ``"2019-01-01/2019-12-31"``, ``"../2020-01-01"`` → (start, end), UTC."""
    if not value:
        return None, None

    def one(text: str, end: bool) -> dt.datetime | None:
        if text in ("", ".."):
            return None
        if len(text) == 4 and text.isdigit():
            year = int(text)
            return dt.datetime(year + (1 if end else 0), 1, 1, tzinfo=dt.UTC)
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)

    start, _, stop = value.partition("/")
    if not stop:
        return one(start, False), one(start, True) if len(start) == 4 else one(start, False)
    return one(start, False), one(stop, True)


def item_interval(item: pystac.Item) -> tuple[dt.datetime, dt.datetime]:
    """An item's acquisition time as an interval (a single datetime gives a zero-length one)."""
    if item.datetime is not None:
        return item.datetime, item.datetime
    start = pystac.utils.str_to_datetime(item.properties.get("start_datetime", UNDATED[0]))
    end = pystac.utils.str_to_datetime(item.properties.get("end_datetime", UNDATED[1]))
    return start, end


def _in_range(item: pystac.Item, start: dt.datetime | None, end: dt.datetime | None) -> bool:
    lo, hi = item_interval(item)
    return (start is None or hi >= start) and (end is None or lo < end)


def filter_items(items: Iterable[pystac.Item], bbox: Sequence[float] | None = None,
                 datetime: str | None = None, collections: Sequence[str] | None = None) -> list[pystac.Item]:
    """Items intersecting a lon/lat bbox, overlapping a date range and in the collections."""
    start, end = _parse_datetime(datetime)
    area = box(*bbox) if bbox is not None else None
    return [i for i in items
            if (area is None or (i.bbox is not None and box(*i.bbox).intersects(area)))
            and _in_range(i, start, end)
            and (not collections or i.collection_id in collections)]


def search_items(
    uri: str,
    store: ObjectStore | None = None,
    bbox: Sequence[float] | None = None,
    datetime: str | None = None,
    collections: Sequence[str] | None = None,
    max_items: int = 1000,
) -> list[pystac.Item]:
    """Items of a STAC API or static catalog matching a lon/lat bbox, date range, collections.

    Args:
        uri: STAC API root URL or static ``catalog.json``/``collection.json``.
        store: object store for ``s3://`` catalogs.
        bbox: ``(west, south, east, north)`` in EPSG:4326.
        datetime: a year (``"2019"``) or RFC 3339 interval (``"2019-01-01/2019-12-31"``).
        collections: collection ids to search (all when empty).
        max_items: upper bound on items returned by an API search.

    Raises:
        NotFound: the catalog or API cannot be read (field ``imagery``).
    """
    if source_kind(uri) == "api":
        start, end = _parse_datetime(datetime)
        try:
            client = pystac_client.Client.open(uri)
            search = client.search(
                bbox=list(bbox) if bbox is not None else None,
                datetime=[start, end] if (start or end) else None,
                collections=list(collections) if collections else None,
                max_items=max_items,
            )
            return list(search.items())
        except (pystac_client.exceptions.APIError, OSError, ValueError) as exc:
            raise NotFound(f"imagery: cannot search the STAC API at {uri}: {exc}") from exc
    io = ObjectStoreStacIO(store) if store is not None else DefaultStacIO()
    try:
        root = pystac.read_file(uri, stac_io=io)
    except NotFound:
        raise
    except (OSError, ValueError, pystac.STACError) as exc:
        raise NotFound(f"imagery: cannot read a STAC catalog at {uri}: {exc}") from exc
    items = [root] if isinstance(root, pystac.Item) else list(cast(pystac.Catalog, root).get_items(recursive=True))
    return filter_items(items, bbox, datetime, collections)


def items_from_cogs(hrefs: Sequence[str]) -> list[pystac.Item]:
    """One STAC item per COG, built from the file headers (for sources without a catalog).

    Each item has one multi-band ``data`` asset whose ``eo:bands`` common names come from the
    file's colour interpretation (RGB GeoTIFFs declare red/green/blue), plus the projection
    fields stackstac reads. A ``TIFFTAG_DATETIME`` tag becomes the item datetime; files
    without one are undated (valid for any date filter).

    Raises:
        InvalidInput: a file cannot be opened (field ``imagery``, naming the URL) or has no CRS
            (field ``crs``).
    """
    items: list[pystac.Item] = []
    for href in hrefs:
        try:
            with rasterio.open(href) as ds:
                crs, bounds, transform = ds.crs, ds.bounds, ds.transform
                shape, count, dtype = (ds.height, ds.width), ds.count, ds.dtypes[0]
                colors = [c.name for c in ds.colorinterp]
                stamp = ds.tags().get("TIFFTAG_DATETIME")
                res = ds.res[0]
        except rasterio.errors.RasterioIOError as exc:
            raise InvalidInput("imagery", f"cannot open COG {href}: {exc}") from exc
        if crs is None:
            raise InvalidInput("crs", f"COG {href} has no coordinate reference system")
        to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        w, s, e, n = to_wgs84.transform_bounds(*bounds)
        when = None
        if stamp:
            when = dt.datetime.strptime(stamp, "%Y:%m:%d %H:%M:%S").replace(tzinfo=dt.UTC)
        props: dict[str, Any] = {
            "proj:epsg": crs.to_epsg(),
            "proj:shape": list(shape),
            "proj:transform": list(transform)[:6],
            "proj:bbox": list(bounds),
        }
        if crs.is_projected:
            props["gsd"] = float(res)
        if when is None:
            props["start_datetime"], props["end_datetime"] = UNDATED
        stem = Path(urlparse(href).path).stem or f"cog-{len(items)}"
        item = pystac.Item(id=stem, geometry=mapping(box(w, s, e, n)), bbox=[w, s, e, n],
                           datetime=when, properties=props)
        bands = [{"name": f"b{i + 1}", "common_name": _COLOR_NAMES.get(c, "")} for i, c in enumerate(colors)]
        item.add_asset("data", pystac.Asset(href=href, media_type=COG_MEDIA_TYPE, roles=["data"],
                                            extra_fields={"eo:bands": bands,
                                                          "raster:bands": [{"data_type": dtype}] * count}))
        items.append(item)
    return items


# --- A job's outputs as a STAC collection (issue 22, item 4) ---------------------------------


@dataclass
class OutputItem:
    """One STAC item of a job's outputs: a buildings partition, a grid, the report."""

    id: str
    bbox: tuple[float, float, float, float]
    #: asset name → (href, media type, roles, title)
    assets: dict[str, tuple[str, str, list[str], str]]
    properties: dict[str, Any] = field(default_factory=dict)


def output_collection(job_id: str, items: Sequence[OutputItem], bbox: tuple[float, float, float, float],
                      created: dt.datetime, description: str = "") -> pystac.Collection:
    """A collection itemising every output of a job (one item per partition and per grid or
    report asset), asset hrefs absolute ``s3://`` URIs."""
    collection = pystac.Collection(
        id=f"urbanfabric-{job_id}",
        description=description or f"Outputs of urbanfabric job {job_id}: buildings partitions "
                                   "(GeoParquet 1.1), stock / CO2e / solar grids (COG), map and report.",
        extent=pystac.Extent(pystac.SpatialExtent([list(bbox)]), pystac.TemporalExtent([[created, created]])),
        license="other", title=f"urbanfabric job {job_id}")
    for spec in items:
        item = pystac.Item(id=spec.id, geometry=mapping(box(*spec.bbox)), bbox=list(spec.bbox),
                           datetime=created, properties=dict(spec.properties))
        for name, (href, media_type, roles, title) in spec.assets.items():
            item.add_asset(name, pystac.Asset(href=href, media_type=media_type, roles=roles, title=title))
        collection.add_item(item)
    return collection


def save_collection(collection: pystac.Collection, root_uri: str, store: ObjectStore | Any) -> str:
    """Validate (:func:`check_collection`), then write ``collection.json`` and its items under
    ``root_uri`` (self-contained: relative links); returns the collection's URI."""
    collection.normalize_hrefs(root_uri.rstrip("/"))
    check_collection(collection)
    collection.save(pystac.CatalogType.SELF_CONTAINED, stac_io=ObjectStoreStacIO(store))
    return f"{root_uri.rstrip('/')}/collection.json"


def check_collection(collection: pystac.Collection) -> int:
    """Validate a collection and its items against the STAC 1.1 JSON schemas vendored with
    pystac (no network needed: no extension schemas are used); returns the items checked.

    Raises:
        pystac.errors.STACValidationError: an object does not validate.
    """
    collection.validate()
    n = 0
    for item in collection.get_items(recursive=True):
        item.validate()
        n += 1
    return n


def relocate_collection(collection: pystac.Collection, root: Path, local_path: Any) -> int:
    """Make a job's collection describe a local copy of its outputs under ``root``.

    Every asset href goes through ``local_path`` (href → the copied file, or ``None`` when the
    file was not copied: that asset is dropped, and an item left without assets too), then
    becomes relative to its item, and the catalog's own links relative
    (:attr:`pystac.CatalogType.SELF_CONTAINED`), so the folder can be moved, zipped or served
    as it is. The result is validated (:func:`check_collection`) and saved as
    ``root/stac/collection.json``; returns the items kept.

    Raises:
        pystac.errors.STACValidationError: the relocated collection does not validate.
    """
    for item in list(collection.get_items(recursive=True)):
        for name, asset in list(item.assets.items()):
            path = local_path(asset.href)
            if path is None or not Path(path).exists():
                del item.assets[name]
            else:
                asset.href = str(Path(path).resolve())
        if not item.assets:
            collection.remove_item(item.id)
    stac_dir = (root / "stac").resolve()
    collection.normalize_hrefs(str(stac_dir))
    for item in collection.get_items(recursive=True):
        item.make_asset_hrefs_relative()
    n = check_collection(collection)
    collection.save(pystac.CatalogType.SELF_CONTAINED)
    return n
