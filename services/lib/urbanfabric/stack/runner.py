"""Start, inspect and stop the local stack described by a list of components.

State lives in ``<stack dir>/stack.json`` (written atomically, mode 0600 because it holds
the generated S3 keys): the allocated ports, the credentials, the :class:`Settings` other
processes load, and per running component its pid, start time and log file. Ports and
credentials persist across ``down``/``up`` so data kept in the object store stays readable
and addresses stay stable; pids are removed when a component stops.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from urbanfabric import settings as config
from urbanfabric.stack import procs
from urbanfabric.stack.component import Component, NotReady, ProcInfo, StackContext
from urbanfabric.stack.definition import COMPONENTS, with_worker_replicas

STATE_VERSION = 1
_LOG_TAIL_LINES = 40


class StackError(Exception):
    """The stack could not be started, checked or stopped as asked."""


@dataclass
class ComponentStatus:
    """One row of ``stack status``."""

    name: str
    state: str  # "healthy", "unhealthy", "dead" or "not started"
    pid: int | None
    alive: bool
    healthy: bool
    detail: str
    rss_bytes: int
    uptime_s: float | None
    ready_s: float | None
    endpoint: str
    log: str
    restarts: int = 0

    @property
    def down(self) -> bool:
        """Started but not alive or not healthy."""
        return self.state in {"unhealthy", "dead"}


def _topological(components: Sequence[Component]) -> list[Component]:
    """Dependency order, keeping the list order where dependencies allow."""
    by_name = {c.name: c for c in components}
    if len(by_name) != len(components):
        raise StackError("duplicate component names")
    for comp in components:
        missing = [d for d in comp.depends_on if d not in by_name]
        if missing:
            raise StackError(f"component {comp.name} depends on unknown {missing}")
    ordered: list[Component] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def visit(comp: Component) -> None:
        if comp.name in placed:
            return
        if comp.name in visiting:
            raise StackError(f"dependency cycle through {comp.name}")
        visiting.add(comp.name)
        for dep in comp.depends_on:
            visit(by_name[dep])
        visiting.discard(comp.name)
        placed.add(comp.name)
        ordered.append(comp)

    for comp in components:
        visit(comp)
    return ordered


def _random_key(length: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _tail(path: Path, offset: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


@dataclass
class _Starting:
    """A component the scheduler is waiting on."""

    comp: Component
    info: ProcInfo
    log_offset: int
    t0: float
    limit_s: float
    existing: bool = False
    last: str = "no health check ran yet"


class Stack:
    """The local stack in one stack directory.

    Args:
        root: Repository root the Python components run from; default
            :func:`urbanfabric.settings.repo_root`.
        stack_dir: State/data/log directory; default ``$URBANFABRIC_STACK_DIR`` or
            ``<root>/.stack``.
        components: The component list; default :data:`COMPONENTS`.
        out: Where progress lines go; default stdout.
        workers: Processes of each Kafka worker (:func:`with_worker_replicas`); default the
            number the recorded stack was started with, else 1.
        supervise: after ``up``, start a supervisor process that restarts crashed components
            with backoff (:mod:`urbanfabric.stack.supervisor`); ``down`` stops it first.
    """

    def __init__(
        self,
        root: Path | None = None,
        stack_dir: Path | None = None,
        components: Sequence[Component] = COMPONENTS,
        out: TextIO | None = None,
        workers: int | None = None,
        supervise: bool = False,
    ) -> None:
        self.supervise = supervise
        self.root = (root or config.repo_root()).resolve()
        if stack_dir is not None:
            self.stack_dir = Path(stack_dir).resolve()
        elif os.environ.get("URBANFABRIC_STACK_DIR"):
            self.stack_dir = config.stack_dir()
        else:
            self.stack_dir = self.root / ".stack"
        if workers is None:
            workers = int(self.load_state().get("workers", 1))
        try:
            self.workers = workers
            self.components = _topological(with_worker_replicas(components, workers))
        except ValueError as exc:
            raise StackError(str(exc)) from None
        self.by_name = {c.name: c for c in self.components}
        self.out = out or sys.stdout
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def state_file(self) -> Path:
        """The stack file (``Settings.load`` reads it via ``URBANFABRIC_STACK_FILE``)."""
        return self.stack_dir / "stack.json"

    # -- state -----------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        print(message, file=self.out, flush=True)

    @contextmanager
    def _locked(self, wait_s: float = 10.0) -> Iterator[None]:
        """Serialise up/down/revive on one stack directory across processes (the supervisor
        holds the lock for a moment every round, so wait a little for it)."""
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        with open(self.stack_dir / ".lock", "w") as lock:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StackError(f"another 'stack up/down' is running on {self.stack_dir}") from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load_state(self) -> dict[str, Any]:
        """The stack file's content ({} when there is none)."""
        try:
            return dict(json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise StackError(f"{self.state_file} is corrupt ({exc}); remove it after checking no process runs") from exc

    def _save_state(self, state: dict[str, Any], ctx: StackContext) -> None:
        state.update(
            version=STATE_VERSION,
            root=str(self.root),
            stack_dir=str(self.stack_dir),
            settings=ctx.settings.to_dict(),
            updated_at=time.time(),
        )
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_file)

    def _context(self, state: dict[str, Any], allocate: bool = True) -> StackContext:
        creds = state.setdefault("credentials", {})
        if not creds.get("access_key"):
            creds["access_key"] = "UF" + _random_key(18, string.ascii_uppercase + string.digits)
            creds["secret_key"] = _random_key(40, string.ascii_letters + string.digits)
            creds["region"] = "us-east-1"
        # Secrets added after the S3 keys (stacks recorded before them get theirs now).
        alnum = string.ascii_letters + string.digits
        creds.setdefault("service_token", _random_key(48, alnum))
        creds.setdefault("prefect_auth", "urbanfabric:" + _random_key(32, alnum))
        bucket = os.environ.get("URBANFABRIC_BUCKET") or state.get("bucket") or "urbanfabric"
        state["bucket"] = bucket
        ports: dict[str, dict[str, int]] = state.setdefault("ports", {})
        if allocate:
            for comp in self.components:
                if comp.ports and set(ports.get(comp.name, {})) != set(comp.ports):
                    ports[comp.name] = self._allocate(comp, ports)
        return StackContext(
            root=self.root,
            stack_dir=self.stack_dir,
            ports=ports,
            access_key=creds["access_key"],
            secret_key=creds["secret_key"],
            region=creds.get("region", "us-east-1"),
            bucket=bucket,
            service_token=creds["service_token"],
            prefect_auth=creds["prefect_auth"],
        )

    @staticmethod
    def _allocate(comp: Component, ports: dict[str, dict[str, int]]) -> dict[str, int]:
        """Fresh free ports for ``comp`` (derived ports placed at base + offset)."""
        taken = [p for name, group in ports.items() if name != comp.name for p in group.values()]
        group: dict[str, int] = {}
        for name in comp.ports:
            if name in comp.derived_ports:
                continue
            offsets = [off for base, off in comp.derived_ports.values() if base == name]
            port = procs.free_ports(1, [*taken, *group.values()], offsets=offsets)[0]
            group[name] = port
            for derived, (base, off) in comp.derived_ports.items():
                if base == name:
                    group[derived] = port + off
        missing = [d for d, (base, _) in comp.derived_ports.items() if base not in group]
        if missing:
            raise StackError(f"{comp.name}: derived ports {missing} name an unknown base port")
        return {name: group[name] for name in comp.ports}

    def resolve(self, only: Iterable[str] | None) -> list[Component]:
        """The components to start for ``only`` (plus their dependencies), in start order."""
        if only is None:
            return list(self.components)
        names = {n.strip() for n in only if n.strip()}
        unknown = sorted(names - set(self.by_name))
        if unknown:
            raise StackError(f"unknown component(s) {unknown}; known: {', '.join(self.by_name)}")
        needed: set[str] = set()
        stack = list(names)
        while stack:
            name = stack.pop()
            if name not in needed:
                needed.add(name)
                stack.extend(self.by_name[name].depends_on)
        return [c for c in self.components if c.name in needed]

    def context(self) -> StackContext:
        """The context of the recorded stack (no allocation; for status and tests)."""
        return self._context(self.load_state(), allocate=False)

    def settings(self) -> config.Settings:
        """The settings this stack provides.

        Raises:
            StackError: No stack was ever brought up in this directory.
        """
        state = self.load_state()
        if not state:
            raise StackError(f"no stack file at {self.state_file}; run 'urbanfabric stack up' first")
        return self._context(state, allocate=False).settings

    # -- environment -----------------------------------------------------------------------
    def child_env(self, ctx: StackContext, comp: Component) -> dict[str, str]:
        """The environment of ``comp``: inherited, plus the stack's addresses and keys."""
        from urbanfabric.io.object_store import aws_environ

        settings = ctx.settings
        env = dict(os.environ)
        env.update(aws_environ(settings))
        env.update(settings.to_env())
        no_proxy = {h for h in env.get("NO_PROXY", env.get("no_proxy", "")).split(",") if h}
        no_proxy |= {"127.0.0.1", "localhost"}
        env.update(
            URBANFABRIC_HOME=str(self.root),
            URBANFABRIC_STACK_DIR=str(self.stack_dir),
            URBANFABRIC_STACK_FILE=str(self.state_file),
            PYTHONPATH=f"{self.root}{os.pathsep}{self.root / 'services' / 'lib'}",
            PYTHONUNBUFFERED="1",
            PREFECT_API_URL=settings.prefect_api_url,
            PREFECT_HOME=str(ctx.data_dir("prefect")),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
            NO_PROXY=",".join(sorted(no_proxy)),
            no_proxy=",".join(sorted(no_proxy)),
        )
        # Everything listens on 127.0.0.1 and the sample data is a local folder: the local stack
        # lets imagery come from loopback and from local paths under the sample data and the
        # temporary folder, not from anywhere (/etc, the stack's own secrets); link-local stays
        # refused (io/source_policy; strict in the chart).
        from urbanfabric.io.model_repository import SHARED_DATA

        env.setdefault("URBANFABRIC_SOURCE_ALLOW_PRIVATE", "1")
        env.setdefault("URBANFABRIC_SOURCE_LOCAL_ROOTS", os.pathsep.join([str(SHARED_DATA), tempfile.gettempdir()]))
        env.update(comp.build_env(ctx))
        return env

    # -- up --------------------------------------------------------------------------------
    def up(self, only: Iterable[str] | None = None, timeout_s: float | None = None, parallel: int = 3) -> None:
        """Start ``only`` (default: everything) with dependencies, each once healthy.

        A component starts as soon as all its dependencies are healthy, so independent ones
        (the Prefect server and the object store, say) start side by side; at most
        ``parallel`` are starting at once (the machine may have few cores). Components already
        running are kept (and waited for). On any failure everything this call started is
        stopped again and :class:`StackError` carries the reason and the log tail.

        Args:
            only: Component names; their dependencies are added.
            timeout_s: Health timeout per component (default: each component's own).
            parallel: Most components starting at the same time (>= 1).

        Raises:
            StackError: A precheck, start, health check or bootstrap step failed.
        """
        selected = self.resolve(only)
        with self._locked():
            state = self.load_state()
            ctx = self._context(state)
            records: dict[str, Any] = state.setdefault("components", {})
            for name in list(records):
                if not procs.is_running(records[name]["pid"], records[name]["start_ticks"]):
                    del records[name]  # died since it was recorded
            to_start = [c for c in selected if c.name not in records]
            problems = [f"{c.name}: {msg}" for c in to_start if c.precheck and (msg := c.precheck(ctx))]
            if problems:
                raise StackError("cannot start:\n  " + "\n  ".join(problems))
            self._free_ports_for(ctx, state, to_start)
            state["workers"] = max(self.workers, int(state.get("workers", 1)))
            self._save_state(state, ctx)
            started: list[str] = []
            t_all = time.monotonic()
            try:
                self._schedule(selected, ctx, state, started, timeout_s, max(1, parallel))
            except BaseException as exc:
                names = ", ".join(reversed(started)) or "nothing"
                self._say(f"stopping what this run started: {names}")
                try:
                    self._stop(list(reversed(started)), state, ctx)
                except StackError as stop_exc:  # report, but keep the original failure
                    self._say(f"while stopping: {stop_exc}")
                if isinstance(exc, (StackError, KeyboardInterrupt)):
                    raise
                raise StackError(f"{exc.__class__.__name__}: {exc}") from exc
            if self.supervise:
                self._start_supervisor(state, ctx)
            self._say(f"stack up in {time.monotonic() - t_all:.1f} s; settings in {self.state_file}")

    def _free_ports_for(self, ctx: StackContext, state: dict[str, Any], comps: Sequence[Component]) -> None:
        """Re-allocate the ports of components to start whose ports got taken meanwhile."""
        for comp in comps:
            ports = ctx.ports.get(comp.name, {})
            if all(procs.port_is_free(p) for p in ports.values()):
                continue
            ctx.ports[comp.name] = self._allocate(comp, ctx.ports)
            self._say(f"{comp.name}: recorded ports busy, moved to {ctx.ports[comp.name]}")
        state["ports"] = ctx.ports

    def _schedule(
        self,
        selected: Sequence[Component],
        ctx: StackContext,
        state: dict[str, Any],
        started: list[str],
        timeout_s: float | None,
        parallel: int,
    ) -> None:
        """Start ``selected`` as their dependencies become healthy; return when all are."""
        records: dict[str, Any] = state["components"]
        ready: set[str] = set()
        waiting = list(selected)
        active: dict[str, _Starting] = {}
        while waiting or active:
            for comp in list(waiting):
                if len(active) >= parallel:
                    break
                if not all(dep in ready for dep in comp.depends_on):
                    continue
                waiting.remove(comp)
                limit = timeout_s if timeout_s is not None else comp.timeout_s
                if comp.name in records:
                    info = ProcInfo(**records[comp.name])
                    active[comp.name] = _Starting(comp, info, 0, time.monotonic(), limit, existing=True)
                else:
                    active[comp.name] = self._spawn(comp, ctx, state, started, limit)
            if not active:
                raise StackError(f"cannot order {[c.name for c in waiting]}: dependencies never became ready")
            progressed = False
            for name, job in list(active.items()):
                if not self._poll_health(job, ctx):
                    continue
                progressed = True
                del active[name]
                ready.add(name)
                if job.existing:
                    self._say(f"{name:<16} already running (pid {job.info.pid})")
                    continue
                if job.comp.after_start:
                    try:
                        job.comp.after_start(ctx)
                    except Exception as exc:
                        raise StackError(
                            f"{name}: healthy, but its bootstrap step failed: {exc.__class__.__name__}: {exc}\n"
                            f"--- last lines of {job.info.log} ---\n{_tail(Path(job.info.log), job.log_offset)}"
                        ) from exc
                job.info.ready_s = round(time.monotonic() - job.t0, 2)
                records[name] = job.info.to_dict()
                self._save_state(state, ctx)
                endpoint = job.comp.build_endpoint(ctx)
                self._say(f"{name:<16} ready in {job.info.ready_s:5.1f} s  pid {job.info.pid:<7} {endpoint}")
            if not progressed:
                time.sleep(0.2)

    def _spawn(
        self,
        comp: Component,
        ctx: StackContext,
        state: dict[str, Any],
        started: list[str],
        limit_s: float,
    ) -> _Starting:
        t0 = time.monotonic()
        if comp.prepare:
            comp.prepare(ctx)
        argv = comp.build_argv(ctx)
        log = ctx.log_path(comp.name)
        offset = log.stat().st_size if log.exists() else 0
        proc = procs.spawn(argv, self.child_env(ctx, comp), log, self.root)
        self._procs[comp.name] = proc
        stat = procs.read_stat(proc.pid)
        info = ProcInfo(
            pid=proc.pid,
            start_ticks=stat.start_ticks if stat else 0,
            started_at=time.time(),
            log=str(log),
            argv=argv,
            name=comp.name,
        )
        state["components"][comp.name] = info.to_dict()
        started.append(comp.name)
        self._save_state(state, ctx)
        return _Starting(comp, info, offset, t0, limit_s)

    def _poll_health(self, job: _Starting, ctx: StackContext) -> bool:
        """One health check of a starting component.

        Returns:
            True when healthy, False when not yet.

        Raises:
            StackError: The process exited, or the health timeout passed.
        """
        name, info = job.comp.name, job.info
        # Poll our own child first: it reaps with the exit status (is_running would reap it
        # too, but without keeping the code).
        proc = self._procs.get(name)
        code = proc.poll() if proc else None
        if code is not None or not procs.is_running(info.pid, info.start_ticks):
            how = f"exited with code {code}" if code is not None else "exited"
            raise StackError(
                f"{name} {how} before becoming healthy (last check: {job.last})\n"
                f"--- last lines of {info.log} ---\n{_tail(Path(info.log), job.log_offset)}"
            )
        try:
            job.comp.health(ctx, info)
            return True
        except NotReady as exc:
            job.last = str(exc)
        except Exception as exc:  # a check that crashes is a failed check, with the reason kept
            job.last = f"{exc.__class__.__name__}: {exc}"
        if time.monotonic() - job.t0 > job.limit_s:
            raise StackError(
                f"{name} not healthy after {job.limit_s:.0f} s (last check: {job.last})\n"
                f"--- last lines of {info.log} ---\n{_tail(Path(info.log), job.log_offset)}"
            )
        return False

    # -- status ----------------------------------------------------------------------------
    def status(self) -> list[ComponentStatus]:
        """Every component: pid, liveness, health (one quick check), RSS, uptime."""
        state = self.load_state()
        if not state:
            return [
                ComponentStatus(c.name, "not started", None, False, False, "", 0, None, None, "", "")
                for c in self.components
            ]
        ctx = self._context(state, allocate=False)
        records = state.get("components", {})
        rows = []
        for comp in self.components:
            endpoint = comp.build_endpoint(ctx) if comp.name in ctx.ports or not comp.ports else ""
            record = records.get(comp.name)
            if record is None:
                rows.append(ComponentStatus(comp.name, "not started", None, False, False, "", 0, None, None, endpoint, ""))
                continue
            info = ProcInfo(**record)
            alive = procs.is_running(info.pid, info.start_ticks)
            healthy, detail = False, "process not running"
            rss = 0
            if alive:
                rss = procs.rss_bytes(procs.session_members(info.pid))
                try:
                    comp.health(ctx, info)
                    healthy, detail = True, "ok"
                except NotReady as exc:
                    detail = str(exc)
                except Exception as exc:
                    detail = f"{exc.__class__.__name__}: {exc}"
            rows.append(
                ComponentStatus(
                    name=comp.name,
                    state="healthy" if healthy else ("unhealthy" if alive else "dead"),
                    pid=info.pid,
                    alive=alive,
                    healthy=healthy,
                    detail=detail,
                    rss_bytes=rss,
                    uptime_s=round(time.time() - info.started_at, 1) if alive else None,
                    ready_s=info.ready_s,
                    endpoint=endpoint,
                    log=info.log,
                    restarts=info.restarts,
                )
            )
        return rows

    # -- down ------------------------------------------------------------------------------
    def down(self) -> None:
        """Stop every recorded component, dependents first, and check nothing is left.

        Raises:
            StackError: Some process survived SIGKILL (its pids are in the message).
        """
        with self._locked():
            state = self.load_state()
            if not state:
                self._say("no stack recorded; nothing to stop")
                return
            ctx = self._context(state, allocate=False)
            self._stop_supervisor(state, ctx)
            records = state.get("components", {})
            order = [c.name for c in reversed(self.components) if c.name in records]
            order += [n for n in records if n not in order]  # recorded by an older component list
            if not order:
                self._say("nothing running")
            self._stop(order, state, ctx)

    def _stop(self, names: Sequence[str], state: dict[str, Any], ctx: StackContext) -> None:
        """Stop ``names``: dependents before what they depend on, independent ones together."""
        from concurrent.futures import ThreadPoolExecutor

        records: dict[str, Any] = state.setdefault("components", {})
        remaining = [n for n in names if n in records]
        leftovers: dict[str, list[int]] = {}
        while remaining:
            # A component stops once nothing still running depends on it (SIGTERM lets the
            # workers commit their Kafka offsets while the broker is still there).
            wave = [
                n
                for n in remaining
                if not any(n in self.by_name[m].depends_on for m in remaining if m != n and m in self.by_name)
            ] or remaining[:1]
            with ThreadPoolExecutor(max_workers=len(wave)) as pool:
                results = dict(zip(wave, pool.map(self._stop_one, wave, [records[n] for n in wave]), strict=True))
            for name in wave:
                left, took = results[name]
                remaining.remove(name)
                if left:
                    leftovers[name] = left
                    continue
                comp = self.by_name.get(name)
                if comp and comp.cleanup:
                    for path in comp.cleanup(ctx):
                        try:
                            if path.is_socket() or path.suffix == ".sock":
                                path.unlink(missing_ok=True)
                        except OSError:
                            pass
                del records[name]
                self._say(f"{name:<16} stopped in {took:4.1f} s")
            self._save_state(state, ctx)
        if leftovers:
            raise StackError(f"processes survived SIGKILL: {leftovers}")

    def _stop_one(self, name: str, record: dict[str, Any]) -> tuple[list[int], float]:
        """Stop one component's session. Returns (pids left alive, seconds taken)."""
        comp = self.by_name.get(name)
        t0 = time.monotonic()
        left = procs.stop_session(record["pid"], record["start_ticks"], comp.stop_grace_s if comp else 10.0)
        proc = self._procs.pop(name, None)
        if proc is not None:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        return left, time.monotonic() - t0

    # -- supervision -----------------------------------------------------------------------
    def revive(self, max_backoff_s: float = 60.0) -> list[str]:
        """Restart every recorded component whose process died, each no sooner than its
        backoff allows (1, 2, 4 … ``max_backoff_s`` seconds after the previous restart).
        Returns the names restarted. Health is not awaited: ``status`` shows it, and the
        other components retry their calls meanwhile."""
        try:
            lock = self._locked(wait_s=0.0)
            lock.__enter__()
        except StackError:
            return []  # an up/down is running: it owns the stack this round
        try:
            state = self.load_state()
            records: dict[str, Any] = state.get("components", {})
            if not records:
                return []
            ctx = self._context(state, allocate=False)
            restarted: list[str] = []
            now = time.time()
            for comp in self.components:
                record = records.get(comp.name)
                if record is None:
                    continue
                info = ProcInfo(**record)
                if procs.is_running(info.pid, info.start_ticks) or now < info.next_restart_at:
                    continue
                self._spawn(comp, ctx, state, [], comp.timeout_s)
                fresh = state["components"][comp.name]
                fresh["restarts"] = info.restarts + 1
                fresh["next_restart_at"] = now + min(max_backoff_s, 2.0 ** info.restarts)
                self._save_state(state, ctx)
                restarted.append(comp.name)
            return restarted
        finally:
            lock.__exit__(None, None, None)

    def _start_supervisor(self, state: dict[str, Any], ctx: StackContext) -> None:
        record = state.get("supervisor")
        if record and procs.is_running(record["pid"], record["start_ticks"]):
            return
        argv = [ctx.python, "-m", "urbanfabric.stack", "--stack-dir", str(self.stack_dir), "supervise",
                "--workers", str(self.workers)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.root), str(self.root / "services" / "lib")])}
        proc = procs.spawn(argv, env, self.stack_dir / "logs" / "supervisor.log", self.root)
        stat = procs.read_stat(proc.pid)
        state["supervisor"] = {"pid": proc.pid, "start_ticks": stat.start_ticks if stat else 0}
        self._save_state(state, ctx)
        self._say(f"{'supervisor':<16} restarts crashed components  pid {proc.pid}")

    def _stop_supervisor(self, state: dict[str, Any], ctx: StackContext) -> None:
        record = state.pop("supervisor", None)
        if record:
            procs.stop_session(record["pid"], record["start_ticks"], 5.0)
            self._save_state(state, ctx)


def status_rows_as_dicts(rows: Sequence[ComponentStatus]) -> list[dict[str, Any]]:
    """JSON-ready form of :meth:`Stack.status`."""
    return [asdict(r) for r in rows]
