"""Where the running system lives: endpoints, credentials and service addresses.

One :class:`Settings` object describes every address the code talks to. Locally it comes
from the stack file that ``urbanfabric stack up`` writes (``.stack/stack.json``); in a
cluster there is no stack file and environment variables supply every field. Environment
variables always win over the file, so the same code runs in both places unchanged.

Environment variables (each optional):

=================================  =========================================
``URBANFABRIC_HOME``               repository root (default: found from this file)
``URBANFABRIC_STACK_DIR``          stack directory (default ``<root>/.stack``)
``URBANFABRIC_STACK_FILE``         stack file (default ``<stack dir>/stack.json``)
``URBANFABRIC_S3_ENDPOINT``        ``host:port`` of the S3 API (no scheme)
``URBANFABRIC_S3_ACCESS_KEY``      S3 access key
``URBANFABRIC_S3_SECRET_KEY``      S3 secret key
``URBANFABRIC_S3_REGION``          S3 region (default ``us-east-1``)
``URBANFABRIC_S3_SECURE``          ``1``/``true`` for HTTPS (default plain HTTP)
``URBANFABRIC_BUCKET``             bucket for all project data
``URBANFABRIC_KAFKA``              Kafka bootstrap servers, ``host:port[,host:port]``
``PREFECT_API_URL``                Prefect API, ``http://host:port/api``
``URBANFABRIC_MODELSERVER_REST``   model server REST base URL
``URBANFABRIC_MODELSERVER_GRPC``   model server gRPC ``host:port``
``URBANFABRIC_<SERVICE>_ADDR``     gRPC ``host:port`` of a service, e.g.
                                   ``URBANFABRIC_SEGMENTATION_ADDR``
``URBANFABRIC_SERVICE_TOKEN``      key that signs service-to-service tokens
                                   (gRPC services, model server)
``URBANFABRIC_KAFKA_USERNAME``     Kafka SASL user (empty: no SASL)
``URBANFABRIC_KAFKA_PASSWORD``     Kafka SASL password
``URBANFABRIC_KAFKA_MECHANISM``    SASL mechanism (default ``SCRAM-SHA-512``)
``PREFECT_API_AUTH_STRING``        Prefect API basic auth, ``user:password``
=================================  =========================================

The secret fields are left out of ``repr`` so that logging a ``Settings`` leaks nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

#: The six gRPC services, in pipeline order.
SERVICE_NAMES: tuple[str, ...] = (
    "acquisition",
    "calibration",
    "segmentation",
    "materials",
    "attributes",
    "intensity",
)

#: Default gRPC ports when neither a stack file nor the environment names an address.
_DEFAULT_SERVICE_PORTS: dict[str, int] = {
    name: 50051 + i for i, name in enumerate(SERVICE_NAMES)
}

#: Scalar field → environment variable that overrides it.
_ENV_FIELDS: dict[str, str] = {
    "s3_endpoint": "URBANFABRIC_S3_ENDPOINT",
    "s3_access_key": "URBANFABRIC_S3_ACCESS_KEY",
    "s3_secret_key": "URBANFABRIC_S3_SECRET_KEY",
    "s3_region": "URBANFABRIC_S3_REGION",
    "s3_secure": "URBANFABRIC_S3_SECURE",
    "bucket": "URBANFABRIC_BUCKET",
    "kafka_bootstrap": "URBANFABRIC_KAFKA",
    "prefect_api_url": "PREFECT_API_URL",
    "modelserver_rest": "URBANFABRIC_MODELSERVER_REST",
    "modelserver_grpc": "URBANFABRIC_MODELSERVER_GRPC",
    "model_store": "URBANFABRIC_MODEL_STORE",
    "service_token": "URBANFABRIC_SERVICE_TOKEN",
    "kafka_username": "URBANFABRIC_KAFKA_USERNAME",
    "kafka_password": "URBANFABRIC_KAFKA_PASSWORD",
    "kafka_mechanism": "URBANFABRIC_KAFKA_MECHANISM",
    "prefect_auth": "PREFECT_API_AUTH_STRING",
}


def service_env_var(name: str) -> str:
    """Environment variable that overrides the address of service ``name``."""
    return f"URBANFABRIC_{name.upper()}_ADDR"


def repo_root() -> Path:
    """The repository root.

    ``URBANFABRIC_HOME`` if set, else the nearest directory above this module that holds a
    ``pyproject.toml``, else the current directory (an installed wheel has no repo root).
    """
    home = os.environ.get("URBANFABRIC_HOME")
    if home:
        return Path(home).resolve()
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd().resolve()


def stack_dir() -> Path:
    """Directory that holds the local stack's state, data and logs."""
    override = os.environ.get("URBANFABRIC_STACK_DIR")
    return Path(override).resolve() if override else repo_root() / ".stack"


def stack_file() -> Path:
    """Path of the stack file (it may not exist)."""
    override = os.environ.get("URBANFABRIC_STACK_FILE")
    return Path(override).resolve() if override else stack_dir() / "stack.json"


def _parse_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Every endpoint and credential the code needs.

    Attributes:
        s3_endpoint: ``host:port`` of the S3 API, without scheme.
        s3_access_key: S3 access key.
        s3_secret_key: S3 secret key.
        s3_region: S3 region name.
        s3_secure: Whether the S3 API speaks HTTPS.
        bucket: Bucket holding all project data.
        kafka_bootstrap: Kafka bootstrap servers.
        prefect_api_url: Prefect API URL (ends in ``/api``).
        modelserver_rest: Model server REST base URL (``http://host:port``).
        modelserver_grpc: Model server gRPC ``host:port``.
        model_store: ``s3://bucket/prefix`` holding the served model versions
            (``<model_dir>/<version>/…``, uploaded from the registry at ``stack up``); empty:
            read configs and weights from the repository tree.
        services: Service name → gRPC ``host:port`` for the six services.
        service_token: Key signing service-to-service bearer tokens (empty: none sent).
        kafka_username: Kafka SASL user (empty: plain connection, no SASL).
        kafka_password: Kafka SASL password.
        kafka_mechanism: Kafka SASL mechanism.
        prefect_auth: Prefect API basic-auth string ``user:password`` (empty: none).
        source: Where the values came from (stack file path or ``"env"``); informational.
    """

    s3_endpoint: str = "127.0.0.1:8333"
    s3_access_key: str = ""
    s3_secret_key: str = field(default="", repr=False)
    s3_region: str = "us-east-1"
    s3_secure: bool = False
    bucket: str = "urbanfabric"
    kafka_bootstrap: str = "127.0.0.1:9092"
    prefect_api_url: str = "http://127.0.0.1:4200/api"
    modelserver_rest: str = "http://127.0.0.1:8080"
    modelserver_grpc: str = "127.0.0.1:8081"
    model_store: str = ""
    services: dict[str, str] = field(
        default_factory=lambda: {
            name: f"127.0.0.1:{port}" for name, port in _DEFAULT_SERVICE_PORTS.items()
        }
    )
    service_token: str = field(default="", repr=False)
    kafka_username: str = ""
    kafka_password: str = field(default="", repr=False)
    kafka_mechanism: str = "SCRAM-SHA-512"
    prefect_auth: str = field(default="", repr=False)
    source: str = field(default="defaults", compare=False)

    def __hash__(self) -> int:
        # The dataclass hash would fail on the services dict; hash its items instead so
        # settings can key caches (e.g. one gRPC channel per settings).
        scalars = tuple(getattr(self, f.name) for f in fields(self) if f.compare and f.name != "services")
        return hash((scalars, tuple(sorted(self.services.items()))))

    @property
    def s3_endpoint_url(self) -> str:
        """The S3 endpoint with scheme, as boto3 / s3fs want it."""
        scheme = "https" if self.s3_secure else "http"
        return f"{scheme}://{self.s3_endpoint}"

    def kafka_options(self) -> dict[str, Any]:
        """kafka-python client keyword arguments: the bootstrap servers, plus SASL when a
        Kafka user is set (``SASL_PLAINTEXT``: the broker listens on loopback or a cluster
        network; SCRAM never sends the password itself)."""
        options: dict[str, Any] = {"bootstrap_servers": self.kafka_bootstrap}
        if self.kafka_username:
            options.update(
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism=self.kafka_mechanism,
                sasl_plain_username=self.kafka_username,
                sasl_plain_password=self.kafka_password,
            )
        return options

    def service_addr(self, name: str) -> str:
        """gRPC ``host:port`` of service ``name``.

        Raises:
            KeyError: ``name`` is not a known service.
        """
        return self.services[name]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "mapping") -> Settings:
        """Build settings from a mapping with the field names as keys (unknown keys ignored)."""
        known = {f.name for f in fields(cls)} - {"source"}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        if "s3_secure" in values and isinstance(values["s3_secure"], str):
            values["s3_secure"] = _parse_bool(values["s3_secure"])
        if "services" in values:
            merged = cls().services
            merged.update({str(k): str(v) for k, v in dict(values["services"]).items()})
            values["services"] = merged
        return cls(**values, source=source)

    @classmethod
    def load(cls, path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Load settings: stack file first, then environment overrides.

        Args:
            path: Stack file to read; default :func:`stack_file`. A missing file is fine
                (cluster mode): the defaults and the environment are used.
            environ: Environment to read overrides from; default ``os.environ``.

        Returns:
            The settings.

        Raises:
            ValueError: The stack file exists but is not valid JSON.
        """
        env = os.environ if environ is None else environ
        file = Path(path) if path is not None else stack_file()
        base = cls()
        if file.is_file():
            try:
                data = json.loads(file.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"stack file {file} is not valid JSON: {exc}") from exc
            base = cls.from_mapping(data.get("settings", {}), source=str(file))
        return base.with_env(env)

    def with_env(self, environ: Mapping[str, str]) -> Settings:
        """A copy with every field that ``environ`` names overridden."""
        changes: dict[str, Any] = {}
        for name, var in _ENV_FIELDS.items():
            value = environ.get(var)
            if value:
                changes[name] = _parse_bool(value) if name == "s3_secure" else value
        services = dict(self.services)
        for name in set(services) | set(SERVICE_NAMES):
            value = environ.get(service_env_var(name))
            if value:
                services[name] = value
        if services != self.services:
            changes["services"] = services
        if not changes:
            return self
        source = "env" if self.source == "defaults" else f"{self.source}+env"
        return replace(self, **changes, source=source)

    def to_env(self) -> dict[str, str]:
        """Environment variables that reproduce these settings in another process."""
        env = {var: str(getattr(self, name)) for name, var in _ENV_FIELDS.items()}
        env["URBANFABRIC_S3_SECURE"] = "true" if self.s3_secure else "false"
        for name, addr in self.services.items():
            env[service_env_var(name)] = addr
        return env

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields (as stored under ``settings`` in the stack file)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "source"}
        out["services"] = dict(self.services)
        return out
