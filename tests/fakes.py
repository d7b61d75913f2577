"""In-memory stand-ins used only by unit tests of the core (the e2e tests use the real stack)."""

from __future__ import annotations

from pathlib import Path

from urbanfabric.errors import NotFound


class MemoryStore:
    """The subset of :class:`urbanfabric.io.object_store.ObjectStore` the core uses, in a dict."""

    def __init__(self, bucket: str = "test") -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}

    def s3_uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _key(self, key: str) -> str:
        """A key in this bucket; ``s3://<bucket>/…`` URIs are accepted, as the real store does."""
        if key.startswith("s3://"):
            bucket, _, key = key.removeprefix("s3://").partition("/")
            if bucket != self.bucket:
                raise NotFound(f"no bucket {bucket}")
        return key

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> str:
        self.objects[self._key(key)] = bytes(data)
        return self.s3_uri(self._key(key))

    def put_file(self, key: str, path, content_type: str = "") -> str:
        return self.put_bytes(key, Path(path).read_bytes())

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.objects[self._key(key)]
        except KeyError:
            raise NotFound(f"no object {key}") from None

    def get_file(self, key: str, path) -> Path:
        local = Path(path)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(self.get_bytes(key))
        return local

    def exists(self, key: str) -> bool:
        try:
            return self._key(key) in self.objects
        except NotFound:
            return False

    def list(self, prefix: str = "", recursive: bool = True) -> list[str]:
        prefix = self._key(prefix)
        return sorted(k for k in self.objects if k.startswith(prefix))

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for k in keys:
            del self.objects[k]
        return len(keys)


class RecordingProducer:
    """Collects what a worker publishes."""

    class _Future:
        def get(self, timeout: float | None = None) -> None:
            return None

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> "_Future":
        self.sent.append((topic, key, value))
        return self._Future()
