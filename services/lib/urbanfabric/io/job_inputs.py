"""A job's own inputs, read or staged before any work starts: the user's files (local paths
or ``s3://`` objects) that the flow checks and every service must be able to read.

Local files are uploaded under the job's ``inputs/`` folder (:class:`JobLayout`), so a service
in the cluster reads the same bytes the user named on their machine. Every failure is an
:class:`InvalidInput` naming the job-spec field.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import geopandas as gpd

from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.object_store import ObjectStore, parse_s3_uri


def read_input(store: ObjectStore, path: str, field: str) -> tuple[bytes, str]:
    """Bytes and name of a local file or an ``s3://`` object named by job-spec field ``field``."""
    if path.startswith("s3://"):
        try:
            return store.get_bytes(parse_s3_uri(path)[1]), path
        except NotFound:
            raise InvalidInput(field, f"no object at {path}") from None
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(field, f"{path} is not a readable file")
    return p.read_bytes(), p.name


def stage_input(store: ObjectStore, job_id: str, path: str, field: str, name: str) -> str:
    """The ``s3://`` URI services read ``path`` from: the object itself (checked to exist), or
    a local file uploaded as ``jobs/<job>/inputs/<name>``."""
    if path.startswith("s3://"):
        if not store.exists(parse_s3_uri(path)[1]):
            raise InvalidInput(field, f"no object at {path}")
        return path
    blob, _ = read_input(store, path, field)
    key = JobLayout(job_id).input(name)
    store.put_bytes(key, blob)
    return store.s3_uri(key)


@contextmanager
def local_copy(store: ObjectStore, path: str, field: str) -> Iterator[str]:
    """A local path for readers that need a file: ``path`` itself, or an ``s3://`` object
    fetched into a temporary folder removed afterwards."""
    if not path.startswith("s3://"):
        yield path
        return
    key = parse_s3_uri(path)[1]
    if not store.exists(key):
        raise InvalidInput(field, f"no object at {path}")
    with tempfile.TemporaryDirectory() as tmp:
        # Downloaded to disk in pieces, never held in memory whole.
        local = store.get_file(key, Path(tmp) / Path(key).name)
        yield str(local)


def read_districts(store: ObjectStore, uri: str, id_column: str) -> gpd.GeoDataFrame:
    """District polygons for per-district totals (GeoParquet or any GDAL vector format).

    Raises:
        InvalidInput: unreadable (``districts``), no CRS (``districts``) or no ``id_column``
            (``district_id``).
    """
    blob, _ = read_input(store, uri, "districts")
    try:
        frame = gpd.read_parquet(io.BytesIO(blob)) if uri.endswith((".parquet", ".geoparquet")) \
            else gpd.read_file(io.BytesIO(blob))
    except Exception as exc:  # noqa: BLE001 - GDAL/pyarrow raise many types
        raise InvalidInput("districts", f"cannot read {uri!r}: {exc}") from exc
    if id_column not in frame.columns:
        raise InvalidInput("district_id", f"{id_column!r} is not a column of {uri!r}")
    if frame.crs is None:
        raise InvalidInput("districts", f"{uri!r} has no coordinate reference system")
    return frame
