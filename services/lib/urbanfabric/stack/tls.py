"""The object store's locks: a per-stack CA for SeaweedFS's gRPC ports and its ``security.toml``.

``weed mini`` opens, besides S3, its master, volume and filer ports (HTTP and gRPC). Unguarded,
anyone on the machine could read or overwrite every object through the filer
(``GET http://127.0.0.1:<filer>/buckets/urbanfabric/...``) without the S3 keys. The stack
closes them with SeaweedFS's own settings, written at ``stack up`` into the object store's
directory (mode 0600), which ``weed`` reads as ``$HOME/.seaweedfs/security.toml``:

* ``jwt.filer_signing`` and ``jwt.filer_signing.read``: the filer serves HTTP reads and writes
  only with a JWT signed by a key that only the S3 gateway holds;
* ``jwt.signing``: volume servers accept writes only with a JWT from the master;
* ``grpc``: every gRPC port (master, volume, filer, S3, admin) wants mutual TLS with a
  certificate of this stack's CA; the CA key is not kept, only the one leaf certificate.

So the only way in is authenticated S3 (tests/integration/test_security.py tries the others).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from pathlib import Path

#: gRPC roles that get the stack certificate in ``security.toml``.
_GRPC_ROLES = ("master", "volume", "filer", "s3", "admin", "worker", "msg_broker", "msg_agent", "client")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def stack_certificate(directory: Path, days: int = 3650) -> tuple[Path, Path, Path]:
    """``(ca.pem, cert.pem, key.pem)`` in ``directory``, made once: a throwaway CA signs one
    certificate for 127.0.0.1 / localhost used by both ends of every gRPC connection (SeaweedFS
    checks the CA, not host names). The CA's private key is discarded after signing."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_path, cert_path, key_path = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    if ca_path.is_file() and cert_path.is_file() and key_path.is_file():
        return ca_path, cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    now = datetime.datetime.now(datetime.timezone.utc)
    until = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "urbanfabric stack CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "urbanfabric-objectstore")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(ca_path, ca.public_bytes(serialization.Encoding.PEM))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def weed_security(home: Path) -> Path:
    """Write ``home/.seaweedfs/security.toml`` (0600, new JWT keys on each call) and the stack
    certificate beside it; returns the file. Run ``weed`` with ``HOME=home``."""
    conf_dir = home / ".seaweedfs"
    ca, cert, key = stack_certificate(conf_dir / "tls")
    lines = [
        "[jwt.signing]", f'key = "{secrets.token_hex(32)}"', "expires_after_seconds = 10", "",
        "[jwt.filer_signing]", f'key = "{secrets.token_hex(32)}"', "expires_after_seconds = 10", "",
        "[jwt.filer_signing.read]", f'key = "{secrets.token_hex(32)}"', "expires_after_seconds = 10", "",
        "[access]", "ui = false", "",
        "[filer.expose_directory_metadata]", "enabled = false", "",
        "[grpc]", f'ca = "{ca}"', "",
    ]
    for role in _GRPC_ROLES:
        lines += [f"[grpc.{role}]", f'cert = "{cert}"', f'key = "{key}"', ""]
    path = conf_dir / "security.toml"
    _write_private(path, "\n".join(lines).encode())
    return path
