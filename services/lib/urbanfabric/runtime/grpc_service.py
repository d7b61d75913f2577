"""What every urbanfabric gRPC service shares: one way to serve, validate, log and measure.

A service module is a thin adapter: it decorates each servicer method with :func:`rpc`, which

* rejects calls whose deadline has already passed,
* maps the core's typed errors to gRPC status codes (``InvalidInput`` → INVALID_ARGUMENT with
  the field named, ``NotFound`` → NOT_FOUND, ``Unavailable`` → UNAVAILABLE, anything else →
  INTERNAL) so a bad request never takes the service down,
* logs one structured line per call with ``job_id`` / ``tile_id`` / ``batch_id``,
* records Prometheus metrics per service and method (calls by code, latency histogram).

:func:`serve` adds gRPC health checking (SERVING once started, NOT_SERVING while draining),
exposes ``/metrics`` over HTTP, and stops gracefully on SIGTERM. It is secure by default:

* every call but the health checks needs a signed bearer token (:mod:`urbanfabric.runtime.auth`)
  and a deadline of at most ``auth.MAX_DEADLINE_S``; a server without a signing key refuses
  to start unless ``URBANFABRIC_ALLOW_UNAUTHENTICATED=1`` says otherwise;
* requests above ``max_message_bytes`` (64 MiB) are refused with RESOURCE_EXHAUSTED;
* server reflection (it lists every method to anyone) is on only when
  ``URBANFABRIC_GRPC_REFLECTION=1`` (development).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram, start_http_server

from urbanfabric.errors import InvalidInput, NotFound, Unavailable
from urbanfabric.runtime import auth

log = logging.getLogger(__name__)

RPC_CALLS = Counter(
    "urbanfabric_rpc_calls_total", "RPCs handled, by outcome.", ["service", "method", "code"]
)
RPC_SECONDS = Histogram(
    "urbanfabric_rpc_seconds",
    "RPC handling time.",
    ["service", "method"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

#: Largest request or reply a service accepts (a 512² float tile is 3 MiB).
MAX_MESSAGE_BYTES = 64 << 20
#: Turns server reflection on (development only: it lists every method to any caller).
REFLECTION_ENV = "URBANFABRIC_GRPC_REFLECTION"
_UNSET = object()

#: Default deadline clients put on calls, by kind of work (seconds).
DEFAULT_DEADLINES = {"fast": 30.0, "tile": 300.0}
#: A building batch's roof and attribute calls get this many seconds per building, never less
#: than the "tile" deadline: with imagery a building costs ≈ 0.1–0.2 s
#: of those services on 2 busy cores (roof chips, image evidence), so a batch of 1,000 needs
#: more than 300 s there while a batch of 250 never does.
BATCH_SECONDS_PER_BUILDING = 0.5


def batch_deadline(buildings: int) -> float:
    """Deadline of a building batch's materials and attributes calls (seconds)."""
    return max(DEFAULT_DEADLINES["tile"], BATCH_SECONDS_PER_BUILDING * buildings)

_STATUS = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
)


def context_ids(request: Any) -> dict[str, str]:
    """Pull job/tile/batch ids out of a request for log records."""
    ids: dict[str, str] = {}
    job_id = str(getattr(getattr(request, "job", None), "job_id", "") or "")
    if job_id:
        ids["job_id"] = job_id
    tile_id = str(getattr(getattr(request, "tile", None), "tile_id", "") or "")
    if tile_id:
        ids["tile_id"] = tile_id
    elif getattr(request, "tile_id", ""):
        ids["tile_id"] = request.tile_id
    if getattr(request, "batch_id", ""):
        ids["batch_id"] = request.batch_id
    return ids


def require(request: Any, *fields: str) -> None:
    """Raise :class:`InvalidInput` naming the first empty field (dotted paths allowed)."""
    for path in fields:
        value: Any = request
        for part in path.split("."):
            value = getattr(value, part)
        if value in ("", 0, None) or (hasattr(value, "__len__") and len(value) == 0):
            raise InvalidInput(path, "is required")


def rpc(service: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a servicer method: deadlines, error mapping, logging, metrics."""

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        name = method.__name__

        @functools.wraps(method)
        def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            ids = context_ids(request)
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                RPC_CALLS.labels(service, name, "DEADLINE_EXCEEDED").inc()
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before start")
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return method(self, request, context)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a status, never a crash
                code = next((c for t, c in _STATUS if isinstance(exc, t)), grpc.StatusCode.INTERNAL)
                if code is grpc.StatusCode.INTERNAL:
                    log.exception("%s failed", name, extra=ids)
                else:
                    log.warning("%s rejected: %s", name, exc, extra={**ids, "code": code.name})
                context.abort(code, str(exc))
            finally:
                elapsed = time.perf_counter() - start
                RPC_SECONDS.labels(service, name).observe(elapsed)
                RPC_CALLS.labels(service, name, code.name).inc()
                if code is grpc.StatusCode.OK:
                    log.info("%s ok", name, extra={**ids, "seconds": round(elapsed, 3)})

        return handler

    return wrap


@dataclass
class Registration:
    """A servicer and the generated function that adds it to a server."""

    servicer: Any
    add_to_server: Callable[[Any, grpc.Server], None]
    full_name: str  # e.g. "urbanfabric.v1.AcquisitionService"


def serve(
    service: str,
    registrations: Iterable[Registration],
    port: int,
    host: str = "127.0.0.1",
    metrics_port: int = 0,
    max_workers: int = 4,
    block: bool = True,
    token_key: Any = _UNSET,
    reflection_on: bool | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> grpc.Server:
    """Start a gRPC server with health, authentication and metrics; block until SIGTERM/SIGINT.

    Args:
        service: short name used in logs and metrics.
        registrations: servicers to add.
        port: gRPC port (0 picks a free one; see the returned server's ``bound_port``).
        host: bind address; loopback by default, ``0.0.0.0`` in a container.
        metrics_port: Prometheus ``/metrics`` HTTP port; 0 picks a free one.
        max_workers: concurrent RPCs.
        block: wait for termination (False returns the started server, for tests).
        token_key: signing key the callers' tokens must match; default
            ``$URBANFABRIC_SERVICE_TOKEN`` (:func:`auth.server_key`); None: no checking.
        reflection_on: serve reflection; default ``$URBANFABRIC_GRPC_REFLECTION``.
        max_message_bytes: largest request / reply.

    Raises:
        auth.MissingKey: no signing key and no explicit opt-out.
    """
    regs = list(registrations)
    key = auth.server_key() if token_key is _UNSET else token_key
    interceptors = [auth.ServerTokenCheck(key)] if key else []
    if reflection_on is None:
        reflection_on = os.environ.get(REFLECTION_ENV, "").strip().lower() in {"1", "true", "yes"}
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        interceptors=interceptors,
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", max_message_bytes)],
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for reg in regs:
        reg.add_to_server(reg.servicer, server)
    names = [r.full_name for r in regs] + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    if reflection_on:
        names.append(reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    server.bound_port = bound
    metrics_server, _ = start_http_server(metrics_port, addr=host)
    server.metrics_port = metrics_server.server_port
    server.start()
    for name in ["", *[r.full_name for r in regs]]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving",
        extra={"port": bound, "metrics_port": server.metrics_port, "services": names,
               "authentication": "bearer token" if key else "OFF (development)"},
    )
    if not block:
        return server

    stopped = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("draining", extra={"signal": signum})
        health_servicer.enter_graceful_shutdown()
        server.stop(grace=10).wait()
        metrics_server.shutdown()
        stopped.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stopped.wait()
    return server


def main_args(description: str) -> Any:
    """Common command-line arguments of a service entry point."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--metrics-port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=4)
    return parser.parse_args()


def run_service(service: str, description: str, build: Callable[[], list[Registration]]) -> None:
    """Entry point of a service: parse the common flags, log JSON, build servicers, serve.

    ``build`` runs after logging is configured, so errors while loading models or settings
    are logged like everything else.
    """
    from urbanfabric.runtime import logs

    args = main_args(description)
    logs.configure(service)
    try:
        key = auth.server_key()
    except auth.MissingKey as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    serve(service, build(), port=args.port, host=args.host, metrics_port=args.metrics_port,
          max_workers=args.workers, token_key=key)
