"""What a stack component is: a command, its environment, a health check and dependencies.

A :class:`Component` is pure description. ``argv`` and ``env`` are either callables taking
the :class:`StackContext` or sequences/mappings of ``str.format`` templates with the fields
``{python}``, ``{root}``, ``{stack_dir}``, ``{data_dir}`` (the component's own directory)
and ``{ports[NAME]}`` (the component's allocated ports), so most entries need no code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from urbanfabric.settings import SERVICE_NAMES, Settings

LOCALHOST = "127.0.0.1"


class NotReady(Exception):
    """Raised by a health check while the component is not (yet) healthy."""


@dataclass
class ProcInfo:
    """What the runner knows about one started component process."""

    pid: int
    start_ticks: int
    started_at: float
    log: str
    argv: list[str]
    ready_s: float | None = None
    #: The component this process runs (replicas share a definition, not a name).
    name: str = ""
    #: Times the supervisor restarted it, and when it may restart it next (backoff).
    restarts: int = 0
    next_restart_at: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (stored in the stack file)."""
        return dict(vars(self))


@dataclass
class StackContext:
    """Everything a component needs to build its command line and check its health."""

    root: Path
    stack_dir: Path
    ports: dict[str, dict[str, int]]
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    bucket: str = "urbanfabric"
    python: str = field(default_factory=lambda: sys.executable)
    #: Per-stack secrets generated at the first ``stack up`` (see runner): the key signing
    #: service tokens and the Prefect API basic-auth string.
    service_token: str = field(default="", repr=False)
    prefect_auth: str = field(default="", repr=False)

    def port(self, component: str, name: str) -> int:
        """Allocated port ``name`` of ``component``."""
        return self.ports[component][name]

    def addr(self, component: str, name: str) -> str:
        """``127.0.0.1:<port>`` of ``component``'s port ``name``."""
        return f"{LOCALHOST}:{self.port(component, name)}"

    def data_dir(self, component: str) -> Path:
        """The component's own state directory under the stack directory."""
        return self.stack_dir / component

    def log_path(self, component: str) -> Path:
        """Where the component's stdout and stderr go."""
        return self.stack_dir / "logs" / f"{component}.log"

    @property
    def settings(self) -> Settings:
        """The :class:`Settings` this stack provides (what the stack file records)."""
        services = {name: self.addr(name, "grpc") for name in SERVICE_NAMES if name in self.ports}
        defaults = Settings()
        return Settings(
            s3_endpoint=self.addr("objectstore", "s3") if "objectstore" in self.ports else defaults.s3_endpoint,
            s3_access_key=self.access_key,
            s3_secret_key=self.secret_key,
            s3_region=self.region,
            bucket=self.bucket,
            kafka_bootstrap=self.addr("kafka", "kafka") if "kafka" in self.ports else defaults.kafka_bootstrap,
            prefect_api_url=(
                f"http://{self.addr('prefect', 'http')}/api" if "prefect" in self.ports else defaults.prefect_api_url
            ),
            modelserver_rest=(
                f"http://{self.addr('modelserver', 'http')}" if "modelserver" in self.ports else defaults.modelserver_rest
            ),
            modelserver_grpc=(
                self.addr("modelserver", "grpc") if "modelserver" in self.ports else defaults.modelserver_grpc
            ),
            services={**defaults.services, **services},
            model_store=f"s3://{self.bucket}/models" if "objectstore" in self.ports else "",
            service_token=self.service_token,
            prefect_auth=self.prefect_auth,
            source="stack",
        )

    def template_fields(self, component: str) -> dict[str, object]:
        """Fields available to ``str.format`` templates of ``component``."""
        return {
            "python": self.python,
            "root": str(self.root),
            "stack_dir": str(self.stack_dir),
            "data_dir": str(self.data_dir(component)),
            "ports": self.ports.get(component, {}),
        }


ArgvSpec = Sequence[str] | Callable[[StackContext], Sequence[str]]
EnvSpec = Mapping[str, str] | Callable[[StackContext], Mapping[str, str]]
HealthCheck = Callable[[StackContext, ProcInfo], None]
Hook = Callable[[StackContext], None]


@dataclass(frozen=True)
class Component:
    """One process of the local stack.

    Attributes:
        name: Unique name (also the log file name and the ``--only`` key).
        argv: Command line (templates or a callable).
        health: Raises :class:`NotReady` until the component serves; must be quick (< 2 s).
        depends_on: Components that must be healthy before this one starts.
        ports: Names of the ports to allocate for it (``{ports[NAME]}`` in templates).
        env: Extra environment on top of the common stack environment.
        prepare: Runs before the start (write config files, make directories).
        after_start: Runs once healthy (create buckets, topics); must be idempotent.
        precheck: Returns an error message when the component cannot start (missing module).
        cleanup: Files to delete after the component stopped (sockets it leaves behind).
        timeout_s: How long to wait for health.
        stop_grace_s: How long SIGTERM gets before SIGKILL.
        endpoint: Template of the address shown by ``status``.
        derived_ports: Port name → (base port name, offset) for ports the program computes
            from another one instead of honouring its flag; allocated as base + offset.
    """

    name: str
    argv: ArgvSpec
    health: HealthCheck
    depends_on: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    env: EnvSpec = field(default_factory=dict)
    prepare: Hook | None = None
    after_start: Hook | None = None
    precheck: Callable[[StackContext], str | None] | None = None
    cleanup: Callable[[StackContext], Sequence[Path]] | None = None
    timeout_s: float = 30.0
    stop_grace_s: float = 10.0
    endpoint: str | None = None
    derived_ports: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    def build_argv(self, ctx: StackContext) -> list[str]:
        """The command line for ``ctx``."""
        if callable(self.argv):
            return [str(a) for a in self.argv(ctx)]
        fields_ = ctx.template_fields(self.name)
        return [a.format(**fields_) for a in self.argv]

    def build_env(self, ctx: StackContext) -> dict[str, str]:
        """The component-specific environment for ``ctx``."""
        if callable(self.env):
            return {k: str(v) for k, v in self.env(ctx).items()}
        fields_ = ctx.template_fields(self.name)
        return {k: v.format(**fields_) for k, v in self.env.items()}

    def build_endpoint(self, ctx: StackContext) -> str:
        """The address ``status`` shows ("" when none)."""
        if not self.endpoint:
            return ""
        return self.endpoint.format(**ctx.template_fields(self.name))
