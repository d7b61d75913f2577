"""Health checks for stack components. Each raises :class:`NotReady` while unhealthy.

Checks are quick (about a second at most) because the runner polls them and ``status``
calls each once. Client libraries are imported lazily so ``status`` stays fast.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from urbanfabric.stack.component import HealthCheck, NotReady, ProcInfo, StackContext


def http_get(url: str, timeout_s: float = 1.5, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``url`` bypassing any proxy; returns (status, body). Raises NotReady on no answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read() if exc.fp else b""
    except (urllib.error.URLError, OSError) as exc:
        raise NotReady(f"GET {url}: {exc}") from exc


def prefect_auth_header(auth_string: str) -> dict[str, str]:
    """The ``Authorization`` header Prefect's API wants for ``user:password`` ({} if none)."""
    import base64

    if not auth_string:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


def http_ok(component: str | None, port: str, path: str) -> HealthCheck:
    """Healthy when GET ``http://127.0.0.1:<component's port>/<path>`` answers 200
    (``component`` None: the process's own component, for definitions shared by replicas)."""

    def check(ctx: StackContext, proc: ProcInfo) -> None:
        url = f"http://{ctx.addr(component or proc.name, port)}/{path.lstrip('/')}"
        status, body = http_get(url)
        if status != 200:
            raise NotReady(f"GET {url} -> {status} {body[:200]!r}")

    return check


#: Object the object-store probe writes and reads back (in the project bucket).
PROBE_KEY = ".stack/probe"


def _minio(ctx: StackContext, read_timeout_s: float = 2.0) -> tuple[Any, Any]:
    import urllib3
    from minio import Minio

    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1.0, read=read_timeout_s), retries=False)
    client = Minio(
        ctx.addr("objectstore", "s3"),
        access_key=ctx.access_key,
        secret_key=ctx.secret_key,
        region=ctx.region,
        secure=False,
        http_client=http,
    )
    return client, http


def s3_roundtrip(ctx: StackContext) -> None:
    """Read the previous probe object, write a new one and read it back.

    SeaweedFS answers ``ListBuckets`` before its volume server has re-registered the
    volumes with the master: for a few seconds after a restart reads of existing objects
    fail with HTTP 500 ("volume N not found") and writes hang. Only a real read and write
    show that the store serves data.

    Raises:
        NotReady: Any step failed.
    """
    import io

    from minio.error import S3Error

    client, http = _minio(ctx)
    payload = f"{time.time():.6f}".encode()
    try:
        try:
            client.get_object(ctx.bucket, PROBE_KEY).read()
        except S3Error as exc:
            if exc.code != "NoSuchKey":
                raise
        client.put_object(ctx.bucket, PROBE_KEY, io.BytesIO(payload), len(payload))
        if client.get_object(ctx.bucket, PROBE_KEY).read() != payload:
            raise NotReady("probe object read back different bytes")
    except NotReady:
        raise
    except Exception as exc:  # S3Error, urllib3 timeouts/refusals
        raise NotReady(f"S3 read/write probe: {exc.__class__.__name__}: {exc}") from exc
    finally:
        http.clear()


def s3_health(ctx: StackContext, proc: ProcInfo) -> None:
    """Healthy when an authenticated ``ListBuckets`` succeeds and, once the project bucket
    exists, a read/write probe in it succeeds (see :func:`s3_roundtrip`)."""
    del proc
    client, http = _minio(ctx)
    try:
        names = {b.name for b in client.list_buckets()}
    except Exception as exc:
        raise NotReady(f"ListBuckets: {exc.__class__.__name__}: {exc}") from exc
    finally:
        http.clear()
    if ctx.bucket in names:
        s3_roundtrip(ctx)


def kafka_admin(ctx: StackContext, proc: ProcInfo) -> None:
    """Healthy when a kafka-python admin client connects and lists topics."""
    del proc
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            **ctx.settings.kafka_options(),
            request_timeout_ms=2000,
            bootstrap_timeout_ms=2000,
            client_id="urbanfabric-stack-health",
        )
    except (KafkaError, OSError, ValueError) as exc:
        raise NotReady(f"kafka admin: {exc.__class__.__name__}: {exc}") from exc
    try:
        admin.list_topics()
    except (KafkaError, OSError) as exc:
        raise NotReady(f"kafka list_topics: {exc}") from exc
    finally:
        admin.close()


def grpc_serving_for(component: str) -> HealthCheck:
    """Health check: gRPC ``grpc.health.v1.Health/Check`` on ``component``'s ``grpc`` port."""

    def check(ctx: StackContext, proc: ProcInfo) -> None:
        del proc
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        target = ctx.addr(component, "grpc")
        with grpc.insecure_channel(target) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1.5)
            except grpc.RpcError as exc:
                raise NotReady(f"gRPC health {target}: {exc.code().name}") from exc
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise NotReady(f"gRPC health {target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")

    return check


def alive_for(seconds: float) -> HealthCheck:
    """Healthy once the process has stayed up ``seconds`` (for workers without a port)."""

    def check(ctx: StackContext, proc: ProcInfo) -> None:
        del ctx
        from urbanfabric.stack.procs import is_running

        if not is_running(proc.pid, proc.start_ticks):
            raise NotReady("process exited")
        age = time.time() - proc.started_at
        if age < seconds:
            raise NotReady(f"up {age:.1f}s of {seconds:.0f}s")

    return check


def prefect_deployment(flow: str, deployment: str) -> HealthCheck:
    """Healthy when this process serves Prefect deployment ``flow/deployment``.

    The deployment record outlives its runner in Prefect's database, so existence alone says
    nothing: require status ``READY`` and a ``last_polled`` after this process started.
    """

    def check(ctx: StackContext, proc: ProcInfo) -> None:
        from datetime import datetime

        url = f"{ctx.settings.prefect_api_url}/deployments/name/{flow}/{deployment}"
        status, body = http_get(url, headers=prefect_auth_header(ctx.prefect_auth))
        if status != 200:
            raise NotReady(f"deployment {flow}/{deployment} not registered (GET -> {status})")
        try:
            record = json.loads(body)
            polled = record.get("last_polled")
            polled_at = datetime.fromisoformat(polled.replace("Z", "+00:00")).timestamp() if polled else 0.0
        except (json.JSONDecodeError, AttributeError, ValueError) as exc:
            raise NotReady(f"deployment {flow}/{deployment}: unreadable reply ({exc})") from exc
        if record.get("status") != "READY":
            raise NotReady(f"deployment {flow}/{deployment} is {record.get('status')}")
        if polled_at < proc.started_at - 1.0:  # 1 s of clock-rounding slack
            raise NotReady(f"deployment {flow}/{deployment} last polled before this runner started")

    return check
