"""The KServe model server of the stack, bound to one chosen address (loopback by default).

Loopback binding — why and how: kserve 0.21 hard-codes its listen addresses with no option
to change them: ``kserve.protocol.rest.server.RESTServer`` builds
``uvicorn.Config(host="0.0.0.0", …)`` and ``kserve.protocol.grpc.server.GRPCServer.start``
calls ``add_insecure_port(f"[::]:{port}")``. The local stack must listen on 127.0.0.1 only,
so :class:`BoundModelServer` overrides :meth:`kserve.ModelServer.start` (single-worker path)
and

* builds KServe's own ``RESTServer`` and then sets ``config.host`` on its uvicorn config
  before ``serve()`` runs — uvicorn reads ``config.host`` only when it binds its socket in
  ``Server.startup``, so this changes nothing else;
* uses :class:`BoundGRPCServer`, a ``GRPCServer`` whose ``start`` is upstream's with the
  listen address made a parameter (and without the per-call INFO logging interceptor).
  gRPC opens a dual-stack socket, so ``ss -ltn`` shows it as ``[::ffff:127.0.0.1]:PORT``:
  the IPv4 loopback address, nothing else.

Checked with ``ss -ltnp``: ``127.0.0.1:HTTP`` and ``[::ffff:127.0.0.1]:GRPC``, no ``0.0.0.0``
/ ``*`` listener (tests/integration/test_model_server.py asserts the same with psutil).

One more override, for speed: :class:`RawTensorDataPlane` keeps binary-extension REST
tensors as bytes (KServe's decoder converts them to Python lists, ≈ 0.6 s per 512² tile).

Authentication: with a signing key every REST path but the health probes (and every gRPC call
but ``ServerLive`` / ``ServerReady``) needs ``authorization: Bearer <token>``
(:mod:`urbanfabric.runtime.auth`): :class:`TokenGate` wraps KServe's ASGI app for REST and
:class:`urbanfabric.runtime.auth.AsyncServerTokenCheck` intercepts gRPC. ``/metrics`` stays open
for the Prometheus scrape (counters only, no data).

Everything else (FastAPI app, V1/V2 routes, ``/metrics``, gRPC servicer, signal handling,
error-to-status mapping) is KServe's unchanged. In a cluster pass ``--host 0.0.0.0``.

Metrics: ``GET /metrics`` on the HTTP port serves the Prometheus default registry: KServe's
per-stage histograms ``request_preprocess_seconds`` / ``request_predict_seconds`` /
``request_postprocess_seconds`` (label ``model_name``, REST and gRPC requests alike) plus
``urbanfabric_model_*`` from :mod:`urbanfabric.runtime.model_runner`.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent import futures
from typing import Any

import orjson
from grpc import aio
from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING, INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput
from kserve.logging import logger as kserve_logger
from kserve.model import BaseKServeModel
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from kserve.protocol.rest.server import RESTServer

from urbanfabric.runtime import auth

log = logging.getLogger("urbanfabric.modelserver")

#: Default gRPC message limit (MB): a 16×3×512×512 FP32 batch is 50 MB; KServe's default 8 MB
#: would cap batches at two 512² tiles.
DEFAULT_GRPC_MAX_MB = 256


def _grpc_host(host: str) -> str:
    """gRPC wants IPv6 literals bracketed (``[::1]:port``)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class RawTensorDataPlane(DataPlane):
    """KServe's DataPlane, but binary REST tensors stay bytes until the model reads them.

    kserve 0.21 ``InferRequest.from_bytes`` turns every binary-extension input into a Python
    list (``set_data_from_numpy(..., binary_data=False)``): ≈ 0.6 s for one 3×512×512 FP32
    tile here, ten times the inference. This decoder keeps the bytes as the input's raw data
    — exactly what the gRPC path does with ``raw_input_contents`` — so ``as_numpy()`` is a
    ``frombuffer``. JSON ``data`` inputs and everything else go through KServe unchanged.
    """

    def decode_inference_request(
        self, body: bytes | Any, headers: dict[str, str], model_name: str
    ) -> InferRequest:
        """Decode a V2 REST body; binary-extension bodies without the list round trip."""
        if not isinstance(body, bytes):
            return super().decode_inference_request(body, headers, model_name)
        json_length = headers.get(INFERENCE_CONTENT_LENGTH_HEADER)
        if json_length is None:
            raise InvalidInput(f"binary body without a {INFERENCE_CONTENT_LENGTH_HEADER} header")
        try:
            json_length_i = int(json_length)
            doc = orjson.loads(body[:json_length_i])
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise InvalidInput(f"unrecognized request format: {exc}") from exc
        offset = json_length_i
        inputs: list[InferInput] = []
        for item in doc.get("inputs", []):
            params = item.get("parameters") or None
            tensor = InferInput(
                name=item["name"], shape=item["shape"], datatype=item["datatype"],
                parameters=params,
            )
            size = params.get("binary_data_size") if params else None
            if size is not None:
                if offset + int(size) > len(body):
                    raise InvalidInput(f"input {tensor.name!r}: body shorter than binary_data_size")
                tensor._raw_data = body[offset : offset + int(size)]
                offset += int(size)
            elif item.get("data") is not None:
                tensor.data = item["data"]
            else:
                raise InvalidInput(f"'data' field is missing for input {tensor.name!r}")
            inputs.append(tensor)
        outputs = [
            RequestedOutput(name=o["name"], parameters=o.get("parameters"))
            for o in doc.get("outputs") or []
        ] or None
        return InferRequest(
            model_name=model_name,
            infer_inputs=inputs,
            request_id=doc.get("id"),
            parameters=doc.get("parameters"),
            request_outputs=outputs,
        )


#: REST paths served without a token: the probes and the Prometheus scrape.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics", "/v2/health/live/",
                        "/v2/health/ready/"})
#: gRPC methods served without a token (the V2 probes).
OPEN_GRPC = ("/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady")


class TokenGate:
    """ASGI middleware: refuse HTTP requests without a valid bearer token (401, JSON error)."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path", "") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"authorization"), None)
        reason = auth.check(self.key, header)
        if reason is None:
            await self.app(scope, receive, send)
            return
        body = orjson.dumps({"error": f"unauthenticated: {reason}"})
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class BoundGRPCServer(GRPCServer):
    """KServe's V2 gRPC server listening on ``host:port`` instead of ``[::]:port``."""

    def __init__(self, host: str, *args: Any, token_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._host = host
        self._token_key = token_key

    async def start(self, max_workers: int) -> None:
        """Upstream ``GRPCServer.start`` (kserve 0.21) with the listen address parameterised."""
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            # Upstream also adds LoggingInterceptor: one INFO line per call, i.e. per tile.
            interceptors=(
                *([auth.AsyncServerTokenCheck(self._token_key, OPEN_GRPC)] if self._token_key else []),
                ExceptionToStatusInterceptor(),
            ),
            options=[
                ("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                (
                    "grpc.max_receive_message_length",
                    self._kwargs.get("grpc_max_receive_message_length"),
                ),
                # Without this a second server could silently share the port (SO_REUSEPORT).
                ("grpc.so_reuseport", 0),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        listen_addr = f"{_grpc_host(self._host)}:{self._port}"
        if self._server.add_insecure_port(listen_addr) == 0:
            raise OSError(f"gRPC cannot bind {listen_addr}")
        kserve_logger.info("Starting gRPC server on %s with %s workers", listen_addr, max_workers)
        await self._server.start()
        await self._server.wait_for_termination()


class BoundModelServer(ModelServer):
    """``kserve.ModelServer`` whose REST and gRPC servers listen on ``host`` only."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        grpc_max_message_mb: int = DEFAULT_GRPC_MAX_MB,
        token_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the server.

        Args:
            host: listen address for both servers (``127.0.0.1`` locally, ``0.0.0.0`` in pods).
            grpc_max_message_mb: gRPC send/receive message limit.
            token_key: key the callers' bearer tokens must be signed with; None: no checking.
            **kwargs: passed to ``kserve.ModelServer`` (``http_port``, ``grpc_port``, …).
        """
        if kwargs.get("workers", 1) != 1:
            # The multi-process REST path forks uvicorn workers KServe builds itself; the
            # host override below only covers the single-process server.
            raise ValueError("BoundModelServer supports workers=1 only")
        super().__init__(**kwargs)
        self.host = host
        # Same registry, faster binary REST decoding (RESTServer/GRPCServer take it in start).
        self.dataplane = RawTensorDataPlane(model_registry=self.registered_models)
        self.grpc_max_message_bytes = grpc_max_message_mb * 1024 * 1024
        self.token_key = token_key

    def start(self, models: list[BaseKServeModel]) -> None:
        """Register ``models`` and serve REST + gRPC on ``self.host`` until signalled.

        Mirrors ``kserve.ModelServer.start`` (0.21, single worker) except for the addresses.
        """
        # Same semantics as upstream: raises NoModelReady if models were given but none is
        # ready; an empty list starts a server with no models.
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            access_log_format=self.access_log_format,
            workers=self.workers,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
        )
        # RESTServer hard-codes host="0.0.0.0"; uvicorn only reads it when binding.
        self._rest_server.config.host = self.host
        if self.token_key:
            # uvicorn loads the app from config.app when it starts; RESTServer.start adds
            # KServe's routes to that same FastAPI object first, so the gate wraps all of them.
            from kserve.model_server import app as kserve_app

            self._rest_server.config.app = TokenGate(kserve_app, self.token_key)
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            grpc_options = {
                "grpc_max_send_message_length": self.grpc_max_message_bytes,
                "grpc_max_receive_message_length": self.grpc_max_message_bytes,
            }
            self._grpc_server = BoundGRPCServer(
                self.host,
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs=grpc_options,
                grace_period=self.grace_period,
                token_key=self.token_key,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        log.info(
            "model server listening: http://%s:%s (V2 REST, /metrics), %s:%s (V2 gRPC)",
            self.host,
            self.http_port,
            _grpc_host(self.host),
            self.grpc_port if self.enable_grpc else "-",
        )
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())
