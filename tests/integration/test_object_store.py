"""ObjectStore, GDAL and Arrow access against a real SeaweedFS started by the stack code."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from urbanfabric.settings import Settings
from urbanfabric.errors import InvalidInput, NotFound, Unavailable
from urbanfabric.stack import Stack
from urbanfabric.stack.definition import weed_binary
from urbanfabric.stack.procs import free_ports
from urbanfabric.io.object_store import (
    ObjectStore,
    arrow_filesystem,
    arrow_path,
    gdal_env,
    parse_s3_uri,
    s3_uri,
)

pytestmark = pytest.mark.skipif(weed_binary() is None, reason="SeaweedFS 'weed' binary not installed")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A fresh object store in a temporary stack directory, stopped afterwards."""
    stack = Stack(stack_dir=tmp_path_factory.mktemp("stack"), out=open(os.devnull, "w"))
    stack.up(only=["objectstore"])
    try:
        yield stack.settings()
    finally:
        stack.down()


@pytest.fixture()
def store(settings: Settings) -> ObjectStore:
    return ObjectStore(settings)


def _key(request: pytest.FixtureRequest, name: str) -> str:
    return f"t/{request.node.name}/{name}"


def test_bytes_roundtrip_exists_and_list(store: ObjectStore, request: pytest.FixtureRequest) -> None:
    a, b = _key(request, "a.bin"), _key(request, "sub/b.bin")
    assert not store.exists(a)
    uri = store.put_bytes(a, b"\x00hello")
    store.put_bytes(b, b"world")
    assert uri == f"s3://{store.bucket}/{a}"
    assert store.get_bytes(a) == b"\x00hello"
    assert store.get_bytes(uri) == b"\x00hello"  # full URIs work as keys
    assert store.exists(a) and store.exists(b)
    assert store.list(f"t/{request.node.name}/") == [a, b]
    assert store.delete_prefix(f"t/{request.node.name}/") == 2
    assert not store.exists(a)
    assert store.list(f"t/{request.node.name}/") == []


def test_files_roundtrip(store: ObjectStore, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(300_000))
    key = _key(request, "f.bin")
    store.put_file(key, src)
    out = store.get_file(key, tmp_path / "deep" / "out.bin")
    assert out.read_bytes() == src.read_bytes()
    with pytest.raises(FileNotFoundError):
        store.put_file(key, tmp_path / "missing.bin")


def test_missing_key_and_bucket_raise_not_found(store: ObjectStore, settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        store.get_bytes("t/never/written")
    with pytest.raises(NotFound):
        store.get_file("t/never/written", tmp_path / "x")
    with pytest.raises(NotFound):
        ObjectStore(settings, bucket="no-such-bucket-uf").get_bytes("k")
    assert not ObjectStore(settings, bucket="no-such-bucket-uf").exists("k")


def test_ensure_bucket_is_idempotent(settings: Settings) -> None:
    store = ObjectStore(settings, bucket="uf-extra")
    assert store.ensure_bucket() is True
    assert store.ensure_bucket() is False


def test_put_if_absent_first_writer_wins(store: ObjectStore, request: pytest.FixtureRequest) -> None:
    key = _key(request, "_SUCCESS")
    assert store.put_if_absent(key, b"first") is True
    assert store.put_if_absent(key, b"second") is False
    assert store.get_bytes(key) == b"first"


def test_put_if_absent_race_has_exactly_one_winner(store: ObjectStore, request: pytest.FixtureRequest) -> None:
    key = _key(request, "marker")
    writers = 8
    barrier = threading.Barrier(writers)
    results: dict[int, bool] = {}

    def write(i: int) -> None:
        own = ObjectStore(store.settings)  # one client per writer, as separate workers would have
        barrier.wait()
        results[i] = own.put_if_absent(key, f"writer-{i}".encode())

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winners = [i for i, won in results.items() if won]
    assert len(results) == writers
    assert len(winners) == 1, results
    assert store.get_bytes(key) == f"writer-{winners[0]}".encode()


def test_delete_prefix_refuses_whole_bucket(store: ObjectStore) -> None:
    with pytest.raises(InvalidInput):
        store.delete_prefix("")
    with pytest.raises(InvalidInput):
        store.delete_prefix("/")


def test_uri_helpers() -> None:
    assert parse_s3_uri("s3://b/k/x.tif") == ("b", "k/x.tif")
    assert parse_s3_uri(s3_uri("b", "/k")) == ("b", "k")
    assert arrow_path("s3://b/k/x.parquet") == "b/k/x.parquet"
    for bad in ("http://b/k", "s3:///k", "b/k"):
        with pytest.raises(InvalidInput):
            parse_s3_uri(bad)


def test_unreachable_store_raises_unavailable(settings: Settings) -> None:
    (port,) = free_ports(1)
    dead = Settings.from_mapping({**settings.to_dict(), "s3_endpoint": f"127.0.0.1:{port}"})
    store = ObjectStore(dead, timeout_s=1.0)
    with pytest.raises(Unavailable):
        store.get_bytes("k")
    with pytest.raises(Unavailable):
        store.put_if_absent("k", b"x")


def test_gdal_reads_cog_from_store(store: ObjectStore, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    np = pytest.importorskip("numpy")
    rasterio = pytest.importorskip("rasterio")
    from affine import Affine

    data = np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64)
    local = tmp_path / "tile.tif"
    profile = {
        "driver": "COG",
        "width": 64,
        "height": 64,
        "count": 1,
        "dtype": "uint16",
        "crs": "EPSG:3857",
        "transform": Affine(10, 0, 0, 0, -10, 640),
    }
    with rasterio.open(local, "w", **profile) as dst:
        dst.write(data)
    uri = store.put_file(_key(request, "tile.tif"), local)
    before = os.environ.get("AWS_S3_ENDPOINT")
    with gdal_env(store.settings):
        assert os.environ["AWS_S3_ENDPOINT"] == store.settings.s3_endpoint
        with rasterio.open(uri) as src:
            assert src.read(1, window=((8, 16), (0, 8))).tolist() == data[0, 8:16, 0:8].tolist()
    assert os.environ.get("AWS_S3_ENDPOINT") == before  # environment restored


def test_arrow_filesystem_parquet_roundtrip(store: ObjectStore, request: pytest.FixtureRequest) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    fs = arrow_filesystem(store.settings)
    path = arrow_path(store.s3_uri(_key(request, "t.parquet")))
    table = pa.table({"id": [1, 2, 3], "h": [3.5, 7.0, 12.25]})
    pq.write_table(table, path, filesystem=fs)
    assert pq.read_table(path, filesystem=fs).equals(table)
    assert store.exists(_key(request, "t.parquet"))


def test_models_check_as_the_chart_hook_runs_it(settings: Settings) -> None:
    """`stack up` published the served versions; the chart's check passes on them and names
    every served version for a prefix that holds none (exit 1, no traceback)."""
    import subprocess
    import sys

    from urbanfabric.io.model_registry import load_registry

    env = {**os.environ, **settings.to_env()}
    command = [sys.executable, "-m", "urbanfabric.cli.main", "models", "check"]
    ok = subprocess.run(command, env={**env, "URBANFABRIC_MODEL_STORE": f"s3://{settings.bucket}/models"},
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    empty = subprocess.run(command, env={**env, "URBANFABRIC_MODEL_STORE": f"s3://{settings.bucket}/nothing"},
                           capture_output=True, text=True, timeout=120)
    assert empty.returncode == 1 and "Traceback" not in empty.stderr
    assert all(m.ref in empty.stderr for m in load_registry().served)
