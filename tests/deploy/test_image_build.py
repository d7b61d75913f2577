"""Build project images with the one Dockerfile and start them, without a daemon: buildah
(Debian's package) with chroot isolation and vfs storage, on a Debian base made by
tests/deploy/image_base.sh (Docker Hub, where python:3.11.13-slim-bookworm lives, is out of
reach here; the Dockerfile installs Python from apt on any other base).

Opt-in, as it takes minutes: ``make test-image`` (URBANFABRIC_IMAGE_BUILD=1). Skipped without
buildah, without root, or without the base image, each with its reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import deploy_support as ds
import pytest

BASE = os.environ.get("URBANFABRIC_IMAGE_BASE", "localhost/urbanfabric-base:bookworm")
STORAGE = ["--storage-driver", os.environ.get("BUILDAH_STORAGE_DRIVER", "vfs")]


def buildah(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["buildah", *STORAGE, *args], capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def builder() -> None:
    if os.environ.get("URBANFABRIC_IMAGE_BUILD") != "1":
        pytest.skip("image builds take minutes: run `make test-image` (URBANFABRIC_IMAGE_BUILD=1)")
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed (apt-get install -y buildah debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("buildah's chroot isolation needs root here (no user namespaces)")
    if buildah("inspect", "--type", "image", BASE, check=False).returncode != 0:
        pytest.skip(f"base image {BASE} is missing: run tests/deploy/image_base.sh")


def build(service: str, *extra: str) -> str:
    tag = f"localhost/urbanfabric-{service}:test"
    run = buildah("bud", "--isolation", "chroot", "--layers", "--build-arg", f"SERVICE={service}",
                  "--build-arg", f"BASE_IMAGE={BASE}", *extra, "-t", tag, "-f", str(ds.DOCKERFILE), str(ds.ROOT),
                  timeout=1800, check=False)
    assert run.returncode == 0, run.stderr[-4000:]
    return tag


@pytest.fixture
def container() -> Iterator[Any]:
    made: list[str] = []

    def start(image: str) -> str:
        made.append(buildah("from", image).stdout.strip())
        return made[-1]

    yield start
    for name in made:
        buildah("rm", name, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_service_image_builds_and_serves(builder: None, container: Any) -> None:
    """calibration: the image's config is the recipe's, and its ENTRYPOINT, started with the
    chart's arguments, answers gRPC health (SERVING for its service) and /metrics."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    image = build("calibration")
    config = json.loads(buildah("inspect", "--type", "image", image).stdout)["OCIv1"]["config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["python", "-m", "services.entrypoint"]
    assert "URBANFABRIC_SERVICE=calibration" in config["Env"]
    assert set(config["ExposedPorts"]) == {"50052/tcp", "9090/tcp"}
    ctr = container(image)
    port, metrics = free_port(), free_port()
    # buildah run does not apply the ENTRYPOINT: run it as the image would, with arguments.
    proc = subprocess.Popen(["buildah", *STORAGE, "run", "--isolation", "chroot", ctr, "--",
                             *config["Entrypoint"], "--host", "127.0.0.1", "--port", str(port),
                             "--metrics-port", str(metrics)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        status, deadline = None, time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                try:
                    status = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service="urbanfabric.v1.CalibrationService"), timeout=2).status
                    break
                except grpc.RpcError:
                    time.sleep(1)
        assert status == health_pb2.HealthCheckResponse.SERVING, proc.stdout.read() if proc.poll() is not None else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as reply:
            assert reply.status == 200 and b"urbanfabric_rpc_seconds" in reply.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_seed_image_carries_weights_only_from_the_weights_context(builder: None, container: Any) -> None:
    """The release workflow's `--build-context weights=models` puts the served weights in the
    seed image (every one matching models/registry.yaml); without it the image has no *.pt."""
    probe = ("import pathlib; from urbanfabric.io.model_registry import stale_local_weights as s; "
             "print(len(list(pathlib.Path('/app/models').rglob('*.pt'))), s())")
    with_weights = container(build("seed", "--build-context", "weights=models"))
    out = buildah("run", "--isolation", "chroot", with_weights, "--", "python", "-c", probe, timeout=120).stdout.split(" ", 1)
    assert int(out[0]) > 0 and out[1].strip() == "[]", out
    bare = container(build("seed"))
    out = buildah("run", "--isolation", "chroot", bare, "--", "python", "-c", probe, timeout=120).stdout.split(" ", 1)
    assert int(out[0]) == 0, out
