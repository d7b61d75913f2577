"""Object storage: one small API over any S3 service (SeaweedFS locally, MinIO/S3 in a cluster).

:class:`ObjectStore` covers what the pipeline needs (bytes, files, listing, prefixes, and a
conditional ``put_if_absent`` used for commit markers). Keys are plain keys in the settings'
bucket; every method also accepts a full ``s3://bucket/key`` URI.

Other readers need the same endpoint in their own configuration:

* :func:`gdal_env` — GDAL/rasterio/rioxarray/stackstac reading ``s3://`` COGs;
* :func:`arrow_filesystem` — pyarrow/geopandas reading and writing GeoParquet.

Errors: a missing key or bucket raises :class:`urbanfabric.errors.NotFound`; a refused or
dropped connection or a 5xx reply raises :class:`urbanfabric.errors.Unavailable`.
"""

from __future__ import annotations

import builtins
import io
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error, ServerError

from urbanfabric.settings import Settings
from urbanfabric.errors import InvalidInput, NotFound, Unavailable

if TYPE_CHECKING:  # heavy imports only for type checkers
    import pyarrow.fs

_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "NoSuchVersion"}
#: urllib3 retries for the minio client: few and fast, so a dead endpoint fails in seconds.
_RETRIES = urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504])


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``.

    Raises:
        InvalidInput: ``uri`` is not an ``s3://`` URI with a bucket.
    """
    if not uri.startswith("s3://"):
        raise InvalidInput("uri", f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise InvalidInput("uri", f"no bucket in {uri!r}")
    return bucket, key


def s3_uri(bucket: str, key: str) -> str:
    """Build ``s3://bucket/key``."""
    return f"s3://{bucket}/{key.lstrip('/')}"


@contextmanager
def _translate_errors(what: str) -> Iterator[None]:
    """Map SDK and transport errors onto the project's error classes."""
    try:
        yield
    except S3Error as exc:
        if exc.code in _MISSING_CODES:
            raise NotFound(f"{what}: {exc.code}") from exc
        raise
    except ServerError as exc:
        raise Unavailable(f"{what}: object store answered HTTP {exc.status_code}") from exc
    except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
        raise Unavailable(f"{what}: object store unreachable ({exc.__class__.__name__}: {exc})") from exc


class ObjectStore:
    """Read and write objects in one bucket of an S3 service.

    Args:
        settings: Endpoint and credentials; default :meth:`Settings.load`.
        bucket: Bucket to use; default ``settings.bucket``.
        timeout_s: Connect and read timeout of each request.
    """

    def __init__(self, settings: Settings | None = None, bucket: str | None = None, timeout_s: float = 10.0) -> None:
        self.settings = settings or Settings.load()
        self.bucket = bucket or self.settings.bucket
        self._timeout_s = timeout_s
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout_s, 3.0), read=timeout_s),
            retries=_RETRIES,
            maxsize=16,
        )
        self.client = Minio(
            self.settings.s3_endpoint,
            access_key=self.settings.s3_access_key,
            secret_key=self.settings.s3_secret_key,
            region=self.settings.s3_region,
            secure=self.settings.s3_secure,
            http_client=http,
        )
        self._boto: Any = None

    # -- locations --------------------------------------------------------------------------
    def _loc(self, key: str) -> tuple[str, str]:
        if key.startswith("s3://"):
            bucket, obj = parse_s3_uri(key)
        else:
            bucket, obj = self.bucket, key
        obj = obj.lstrip("/")
        if not obj:
            raise InvalidInput("key", "empty object key")
        return bucket, obj

    def s3_uri(self, key: str) -> str:
        """``s3://<bucket>/<key>`` for a key in this store's bucket."""
        return s3_uri(self.bucket, key)

    parse_s3_uri = staticmethod(parse_s3_uri)

    # -- buckets ----------------------------------------------------------------------------
    def ensure_bucket(self, bucket: str | None = None) -> bool:
        """Create the bucket if it does not exist.

        Returns:
            True when the bucket was created, False when it existed.
        """
        name = bucket or self.bucket
        with _translate_errors(f"bucket {name}"):
            if self.client.bucket_exists(name):
                return False
            try:
                self.client.make_bucket(name)
            except S3Error as exc:  # another process created it between the two calls
                if exc.code in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    return False
                raise
            return True

    # -- objects ----------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Write ``data`` to ``key`` (overwrites). Returns the ``s3://`` URI."""
        bucket, obj = self._loc(key)
        with _translate_errors(f"put {bucket}/{obj}"):
            self.client.put_object(bucket, obj, io.BytesIO(data), len(data), content_type=content_type)
        return s3_uri(bucket, obj)

    def get_bytes(self, key: str) -> bytes:
        """Read the whole object at ``key``.

        Raises:
            NotFound: The object or bucket does not exist.
        """
        bucket, obj = self._loc(key)
        with _translate_errors(f"get {bucket}/{obj}"):
            response = self.client.get_object(bucket, obj)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def put_file(self, key: str, path: Path | str, content_type: str = "application/octet-stream") -> str:
        """Upload a local file (multipart when large). Returns the ``s3://`` URI.

        Raises:
            FileNotFoundError: ``path`` does not exist.
        """
        local = Path(path)
        if not local.is_file():
            raise FileNotFoundError(str(local))
        bucket, obj = self._loc(key)
        with _translate_errors(f"put {bucket}/{obj}"):
            self.client.fput_object(bucket, obj, str(local), content_type=content_type)
        return s3_uri(bucket, obj)

    def get_file(self, key: str, path: Path | str) -> Path:
        """Download ``key`` to ``path`` (parent directories are created)."""
        bucket, obj = self._loc(key)
        local = Path(path)
        local.parent.mkdir(parents=True, exist_ok=True)
        with _translate_errors(f"get {bucket}/{obj}"):
            self.client.fget_object(bucket, obj, str(local))
        return local

    def exists(self, key: str) -> bool:
        """Whether an object exists at ``key`` (a missing bucket counts as missing)."""
        bucket, obj = self._loc(key)
        try:
            with _translate_errors(f"stat {bucket}/{obj}"):
                self.client.stat_object(bucket, obj)
        except NotFound:
            return False
        return True

    def list(self, prefix: str = "", recursive: bool = True) -> builtins.list[str]:
        """Keys under ``prefix``, sorted (directory placeholders when not recursive end in /)."""
        if prefix.startswith("s3://"):
            bucket, prefix = parse_s3_uri(prefix)
        else:
            bucket = self.bucket
        with _translate_errors(f"list {bucket}/{prefix}"):
            return sorted(o.object_name for o in self.client.list_objects(bucket, prefix=prefix, recursive=recursive))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``. Returns how many were deleted.

        Raises:
            InvalidInput: ``prefix`` is empty (refusing to empty a whole bucket by accident).
        """
        if prefix.startswith("s3://"):
            bucket, prefix = parse_s3_uri(prefix)
        else:
            bucket = self.bucket
        if not prefix.strip("/"):
            raise InvalidInput("prefix", "refusing to delete a whole bucket")
        keys = self.list(s3_uri(bucket, prefix))
        if not keys:
            return 0
        with _translate_errors(f"delete {bucket}/{prefix}"):
            errors = list(self.client.remove_objects(bucket, (DeleteObject(k) for k in keys)))
        if errors:
            raise Unavailable(f"delete {bucket}/{prefix}: {len(errors)} objects not deleted: {errors[0]}")
        return len(keys)

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Write ``key`` only if no object exists there (``If-None-Match: *``).

        Atomic on the server: of many concurrent callers exactly one gets True. Use it for
        commit markers and first-writer-wins results.

        Returns:
            True when this call created the object, False when it already existed.
        """
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

        bucket, obj = self._loc(key)
        client = self._boto_client()
        # 409 ConditionalRequestConflict means another conditional write was in flight: retry
        # so the caller learns the final outcome instead of a transient conflict.
        for attempt in range(5):
            try:
                client.put_object(Bucket=bucket, Key=obj, Body=data, ContentType=content_type, IfNoneMatch="*")
                return True
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                code = exc.response.get("Error", {}).get("Code", "")
                if status == 412 or code == "PreconditionFailed":
                    return False
                if status == 409 and attempt < 4:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if code in _MISSING_CODES:
                    raise NotFound(f"put_if_absent {bucket}/{obj}: {code}") from exc
                if status is not None and status >= 500:
                    raise Unavailable(f"put_if_absent {bucket}/{obj}: HTTP {status}") from exc
                raise
            except (EndpointConnectionError, BotoCoreError) as exc:
                raise Unavailable(f"put_if_absent {bucket}/{obj}: {exc}") from exc
        raise Unavailable(f"put_if_absent {bucket}/{obj}: conflicting writes did not settle")

    def _boto_client(self) -> Any:
        # minio's public put_object cannot send If-None-Match (it turns unknown headers into
        # user metadata), so the conditional write goes through boto3, created lazily.
        if self._boto is None:
            import boto3
            from botocore.config import Config

            self._boto = boto3.client(
                "s3",
                endpoint_url=self.settings.s3_endpoint_url,
                aws_access_key_id=self.settings.s3_access_key,
                aws_secret_access_key=self.settings.s3_secret_key,
                region_name=self.settings.s3_region,
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=min(self._timeout_s, 3.0),
                    read_timeout=self._timeout_s,
                ),
            )
        return self._boto


def aws_environ(settings: Settings) -> dict[str, str]:
    """The ``AWS_*`` variables that point GDAL, boto3 and s3fs at the settings' endpoint.

    GDAL reads ``AWS_S3_ENDPOINT`` (``host:port``, no scheme) with ``AWS_HTTPS`` and
    ``AWS_VIRTUAL_HOSTING``; boto3/s3fs read ``AWS_ENDPOINT_URL``.
    """
    return {
        "AWS_ACCESS_KEY_ID": settings.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key,
        "AWS_REGION": settings.s3_region,
        "AWS_DEFAULT_REGION": settings.s3_region,
        "AWS_S3_ENDPOINT": settings.s3_endpoint,
        "AWS_ENDPOINT_URL": settings.s3_endpoint_url,
        "AWS_HTTPS": "YES" if settings.s3_secure else "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }


@contextmanager
def gdal_env(settings: Settings | None = None, **gdal_options: Any) -> Iterator[Any]:
    """Let rasterio / rioxarray / stackstac read ``s3://`` paths from the object store.

    ``rasterio.Env`` refuses raw AWS keys and stackstac opens files in its own threads with
    its own ``Env``, so the credentials and endpoint go into ``os.environ`` for the duration
    of the block (restored afterwards) and a ``rasterio.Env`` carrying the endpoint options
    is entered. Compute lazy (dask/stackstac) results inside the block. ``os.environ`` is
    process-wide: do not nest blocks with different settings across threads.

    Args:
        settings: Endpoint and credentials; default :meth:`Settings.load`.
        **gdal_options: Extra GDAL configuration options.

    Yields:
        The active ``rasterio.Env``.
    """
    import rasterio

    cfg = settings or Settings.load()
    new_vars = aws_environ(cfg)
    saved = {name: os.environ.get(name) for name in new_vars}
    os.environ.update(new_vars)
    options: dict[str, Any] = {
        "AWS_S3_ENDPOINT": cfg.s3_endpoint,
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_HTTPS": "YES" if cfg.s3_secure else "NO",
        # Listing the "directory" of every opened COG costs a request per open for nothing.
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        # Writing to /vsis3/ needs a local temp file for random-access writes (GTiff).
        "CPL_VSIL_USE_TEMP_FILE_FOR_RANDOM_WRITE": "YES",
    }
    options.update(gdal_options)
    try:
        with rasterio.Env(**options) as env:
            yield env
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def arrow_filesystem(settings: Settings | None = None) -> pyarrow.fs.S3FileSystem:
    """A ``pyarrow.fs.S3FileSystem`` on the object store (paths are ``bucket/key``).

    Pass it explicitly (``pq.read_table(path, filesystem=fs)``,
    ``gdf.to_parquet(path, filesystem=fs)``): ``storage_options`` alone ignores the endpoint.
    """
    from pyarrow import fs

    cfg = settings or Settings.load()
    return fs.S3FileSystem(
        access_key=cfg.s3_access_key,
        secret_key=cfg.s3_secret_key,
        region=cfg.s3_region,
        endpoint_override=cfg.s3_endpoint,
        scheme="https" if cfg.s3_secure else "http",
        force_virtual_addressing=False,
        connect_timeout=3.0,
        request_timeout=30.0,
    )


def arrow_path(uri: str) -> str:
    """``s3://bucket/key`` → ``bucket/key``, the path form pyarrow filesystems take."""
    bucket, key = parse_s3_uri(uri)
    return f"{bucket}/{key}"
