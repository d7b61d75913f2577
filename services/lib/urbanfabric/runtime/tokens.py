"""The service tokens themselves: minting and checking ``Bearer uf1.<expiry>.<mac>``.

Standard library only, so that the TorchServe archives can carry this one file (as
``urbanfabric_tokens.py``, see :mod:`services.torchserve.package`) and their handler checks
tokens with the same code as the project's servers. :mod:`urbanfabric.runtime.auth` adds the
gRPC interceptors around it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

#: Metadata key / HTTP header carrying the token.
HEADER = "authorization"
#: How long a minted token stays valid.
TOKEN_TTL_S = 300.0
#: Clock skew tolerated between two processes (tokens from further in the future are refused).
_SKEW_S = 30.0
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
