"""Where imagery may be read from: a guard against server-side request forgery.

A job names its imagery (a STAC API, a static catalog, COG URLs, a basemap, a folder of tiles
to register), and the acquisition service and the flow open what it names — and every asset
href inside a catalog. Unchecked, a caller could make a service fetch cloud-metadata endpoints
(``http://169.254.169.254/…``), reach internal hosts, or read local files (``/etc/…``,
GDAL's ``/vsi…`` paths). :class:`SourcePolicy` allows only its schemes and, for web URLs, its
hosts (any public host when none are listed), refuses names that resolve to loopback,
private or reserved addresses unless told otherwise, refuses link-local ones (cloud metadata)
always, and admits local paths only under its ``local_roots``.

The chart's default is strict; the local stack, where every part listens on 127.0.0.1 and the
sample data is a local folder, allows private addresses and local paths under the shared
sample data and the temporary folder (its user owns the machine). Set with ``URBANFABRIC_SOURCE_SCHEMES`` (``s3,https,http``),
``URBANFABRIC_SOURCE_HOSTS`` (comma-separated; empty: any public host),
``URBANFABRIC_SOURCE_ALLOW_PRIVATE`` (``1`` to allow) and ``URBANFABRIC_SOURCE_LOCAL_ROOTS``
(``os.pathsep``-separated folders).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from urbanfabric.errors import InvalidInput


@dataclass(frozen=True)
class SourcePolicy:
    """What a job may name as imagery (see the module docstring)."""

    schemes: tuple[str, ...] = ("s3", "https", "http")
    hosts: tuple[str, ...] = ()
    allow_private: bool = False
    local_roots: tuple[Path, ...] = ()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SourcePolicy:
        env = os.environ if environ is None else environ

        def items(name: str, sep: str = ",") -> tuple[str, ...]:
            return tuple(x.strip() for x in env.get(name, "").split(sep) if x.strip())

        return cls(
            schemes=tuple(s.lower() for s in items("URBANFABRIC_SOURCE_SCHEMES")) or cls.schemes,
            hosts=tuple(h.lower() for h in items("URBANFABRIC_SOURCE_HOSTS")),
            allow_private=env.get("URBANFABRIC_SOURCE_ALLOW_PRIVATE", "").lower() in {"1", "true", "yes"},
            local_roots=tuple(Path(p).resolve() for p in items("URBANFABRIC_SOURCE_LOCAL_ROOTS", os.pathsep)),
        )

    def check(self, uri: str, field: str) -> str:
        """``uri`` if the policy allows reading it, else :class:`InvalidInput` naming ``field``."""
        if not uri:
            return uri
        if uri.startswith("/vsi") or "/vsi" in uri.split("?")[0]:
            raise InvalidInput(field, "GDAL virtual file system paths are not accepted")
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        if scheme in ("", "file") or len(scheme) == 1:  # a path (one letter: a Windows drive)
            self.check_local(parts.path if scheme == "file" else uri, field)
            return uri
        if scheme not in self.schemes:
            raise InvalidInput(field, f"scheme {scheme!r} is not allowed (allowed: {', '.join(self.schemes)})")
        if scheme == "s3":
            return uri  # the project's own object store, with its credentials
        host = (parts.hostname or "").lower()
        if not host:
            raise InvalidInput(field, f"no host in {uri!r}")
        if self.hosts and host not in self.hosts:
            raise InvalidInput(field, f"host {host!r} is not in the allowed imagery hosts")
        for address in _addresses(host, parts.port or (443 if scheme == "https" else 80)):
            # Link-local stays refused even where private addresses are allowed (the local
            # stack): it is where cloud metadata services answer (169.254.169.254).
            if _link_local(address):
                raise InvalidInput(field, f"host {host!r} resolves to a link-local address ({address})")
            if not self.allow_private and _internal(address):
                raise InvalidInput(field, f"host {host!r} resolves to an internal address ({address})")
        return uri

    def check_local(self, path: str | Path, field: str) -> Path:
        """``path`` resolved, if it lies under one of ``local_roots``."""
        resolved = Path(path).resolve()
        if not any(resolved == root or root in resolved.parents for root in self.local_roots):
            raise InvalidInput(field, "local paths are not accepted here" if not self.local_roots
                               else f"{path} is outside the allowed local folders")
        return resolved

    def check_items(self, items: Iterable[Any], field: str) -> list[Any]:
        """The STAC items, if every asset href they carry is allowed (a catalog may point anywhere)."""
        out = list(items)
        for item in out:
            for asset in getattr(item, "assets", {}).values():
                self.check(str(asset.get_absolute_href() or asset.href), f"{field} (asset of {item.id})")
        return out


def _addresses(host: str, port: int) -> list[str]:
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)})
    except socket.gaierror:
        return []  # unresolvable: the read itself will fail with a clear error


def _link_local(address: str) -> bool:
    return ipaddress.ip_address(address.split("%")[0]).is_link_local


def _internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    return ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_reserved or ip.is_multicast \
        or ip.is_unspecified
