"""In-memory stand-ins used only by unit tests of the core (the e2e tests use the real stack)."""

from __future__ import annotations

from urbanfabric.errors import NotFound


class MemoryStore:
    """The subset of :class:`urbanfabric.io.object_store.ObjectStore` the core uses, in a dict."""

    def __init__(self, bucket: str = "test") -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}

    def s3_uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> str:
        self.objects[key] = bytes(data)
        return self.s3_uri(key)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise NotFound(f"no object {key}") from None

    def exists(self, key: str) -> bool:
        return key in self.objects

    def list(self, prefix: str = "", recursive: bool = True) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))


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
