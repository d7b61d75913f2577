"""Service-to-service authentication: short-lived signed bearer tokens.

Every process of one deployment shares a signing key (``URBANFABRIC_SERVICE_TOKEN``; the local
stack generates one at ``stack up`` into its 0600 stack file, a cluster mounts it from a
Secret). A caller never sends the key: it sends ``authorization: Bearer uf1.<expiry>.<mac>``,
an HMAC-SHA256 of the expiry under the key, valid for :data:`TOKEN_TTL_S`. A token that leaks
(a proxy log, a core dump) is worthless minutes later, and the key itself is never on the wire.

Servers check the header with :class:`ServerTokenCheck` (gRPC services),
:class:`AsyncServerTokenCheck` (the model server's gRPC port) and :func:`refusal` (the model
server's REST app). Health checks stay open, so probes and ``stack status`` need no secret;
they reveal nothing but "serving".

The same interceptor enforces the deadline rule of the gRPC services: every call names a
deadline, at most :data:`MAX_DEADLINE_S` away, so no call can hold a handler thread forever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import grpc

from urbanfabric.runtime.tokens import (  # noqa: F401  (the names callers use as auth.*)
    HEADER,
    INSECURE_ENV,
    KEY_ENV,
    TOKEN_TTL_S,
    MissingKey,
    TokenSource,
    check,
    mint,
    server_key,
)

#: Longest deadline a gRPC service accepts (the tile calls' default is 300 s).
MAX_DEADLINE_S = 900.0
#: RPC method prefixes that need no token (probes).
OPEN_METHODS: tuple[str, ...] = ("/grpc.health.v1.Health/",)


def _header_of(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for name, value in metadata or ():
        if name == HEADER:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _refuse(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        del request
        context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class ServerTokenCheck(grpc.ServerInterceptor):
    """Refuse calls without a valid token (UNAUTHENTICATED) or without a bounded deadline
    (INVALID_ARGUMENT), before the request is even read. Health checks pass."""

    def __init__(self, key: str, max_deadline_s: float = MAX_DEADLINE_S) -> None:
        self._key = key
        self._max_deadline_s = max_deadline_s

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        method = details.method or ""
        if method.startswith(OPEN_METHODS):
            return continuation(details)
        reason = check(self._key, _header_of(details.invocation_metadata))
        if reason:
            return _refuse(grpc.StatusCode.UNAUTHENTICATED, f"{method}: {reason}")
        return _deadline_guard(continuation(details), self._max_deadline_s)


def _deadline_guard(handler: Any, max_deadline_s: float) -> Any:
    """Wrap a unary-unary handler so calls without a deadline, or with one beyond
    ``max_deadline_s``, are refused (the services have unary methods only)."""
    if handler is None or handler.unary_unary is None:
        return handler
    inner = handler.unary_unary

    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        remaining = context.time_remaining()
        if remaining is None or remaining > max_deadline_s:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"deadline: every call needs one of at most {max_deadline_s:.0f} s",
            )
        return inner(request, context)

    return grpc.unary_unary_rpc_method_handler(
        guarded,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class AsyncServerTokenCheck(grpc.aio.ServerInterceptor):
    """The token check for a ``grpc.aio`` server (the model server). ``open_methods``: RPC
    name prefixes served without a token (the V2 liveness and readiness calls)."""

    def __init__(self, key: str, open_methods: tuple[str, ...] = ()) -> None:
        self._key = key
        self._open = open_methods

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        method = details.method or ""
        if method.startswith(self._open):
            return await continuation(details)
        reason = check(self._key, _header_of(details.invocation_metadata))
        if reason:
            message = f"{method}: {reason}"

            async def abort(request: Any, context: grpc.aio.ServicerContext) -> Any:
                del request
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

            return grpc.unary_unary_rpc_method_handler(abort)
        return await continuation(details)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class ClientToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds a fresh token to every call of a channel, whatever its kind."""

    def __init__(self, key: str) -> None:
        self._tokens = TokenSource(key)

    def _signed(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [m for m in (details.metadata or ()) if m[0] != HEADER]
        metadata.extend(self._tokens.metadata())
        return _CallDetails(details, metadata)

    def intercept_unary_unary(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._signed(details), request)

    def intercept_unary_stream(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._signed(details), request)

    def intercept_stream_unary(self, continuation: Any, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._signed(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._signed(details), requests)


def authenticated(channel: grpc.Channel, key: str) -> grpc.Channel:
    """``channel`` sending tokens signed with ``key`` (unchanged when ``key`` is empty)."""
    return grpc.intercept_channel(channel, ClientToken(key)) if key else channel
