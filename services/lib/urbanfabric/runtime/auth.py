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

import hashlib
import hmac
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc

#: Metadata key / HTTP header carrying the token.
HEADER = "authorization"
#: How long a minted token stays valid.
TOKEN_TTL_S = 300.0
#: Clock skew tolerated between two processes (tokens from further in the future are refused).
_SKEW_S = 30.0
#: Longest deadline a gRPC service accepts (the tile calls' default is 300 s).
MAX_DEADLINE_S = 900.0
#: RPC method prefixes that need no token (probes).
OPEN_METHODS: tuple[str, ...] = ("/grpc.health.v1.Health/",)
#: Environment variable holding the signing key, and the one that turns checking off.
KEY_ENV = "URBANFABRIC_SERVICE_TOKEN"
INSECURE_ENV = "URBANFABRIC_ALLOW_UNAUTHENTICATED"
_PREFIX = "uf1"


class MissingKey(RuntimeError):
    """A server was asked to start without a signing key and without the explicit opt-out."""


def server_key(key: str | None = None) -> str | None:
    """The key a server checks tokens against: ``key``, else ``$URBANFABRIC_SERVICE_TOKEN``.

    Returns None (no checking) only when ``$URBANFABRIC_ALLOW_UNAUTHENTICATED`` is ``1``.

    Raises:
        MissingKey: no key and no opt-out; the message names both variables.
    """
    key = key or os.environ.get(KEY_ENV, "")
    if key:
        return key
    if os.environ.get(INSECURE_ENV, "").strip().lower() in {"1", "true", "yes"}:
        return None
    raise MissingKey(
        f"{KEY_ENV} is not set: servers refuse to start without a signing key "
        f"(set {INSECURE_ENV}=1 to run without authentication, for development only)"
    )


def _mac(key: str, expiry: int) -> str:
    return hmac.new(key.encode(), f"{_PREFIX}.{expiry}".encode(), hashlib.sha256).hexdigest()


def mint(key: str, now: float | None = None, ttl_s: float = TOKEN_TTL_S) -> str:
    """A token valid until ``now + ttl_s``."""
    expiry = int((time.time() if now is None else now) + ttl_s)
    return f"{_PREFIX}.{expiry}.{_mac(key, expiry)}"


def check(key: str, header: str | None, now: float | None = None) -> str | None:
    """Why ``header`` (``Bearer <token>``) is refused under ``key``; None when it is valid."""
    if not header:
        return "missing bearer token"
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return "authorization is not a bearer token"
    prefix, _, rest = token.strip().partition(".")
    expiry_text, _, mac = rest.partition(".")
    if prefix != _PREFIX or not expiry_text.isdigit() or not mac:
        return "malformed token"
    expiry = int(expiry_text)
    if not hmac.compare_digest(mac, _mac(key, expiry)):
        return "bad token signature"
    t = time.time() if now is None else now
    if expiry < t:
        return "token expired"
    if expiry > t + TOKEN_TTL_S + _SKEW_S:
        return "token expiry too far in the future"
    return None


class TokenSource:
    """Mints tokens for one key, reusing each for most of its life (one HMAC per minute)."""

    def __init__(self, key: str) -> None:
        self._key = key
        self._token = ""
        self._renew_at = 0.0

    def header(self) -> str:
        """``Bearer <token>`` for the next call."""
        now = time.time()
        if now >= self._renew_at:
            self._token = mint(self._key, now)
            self._renew_at = now + TOKEN_TTL_S / 5
        return f"Bearer {self._token}"

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata carrying the token."""
        return ((HEADER, self.header()),)


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
