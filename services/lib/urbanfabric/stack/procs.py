"""Process plumbing for the local stack: spawn in a session, identify, inspect, stop.

Every component runs as the leader of its own session (``setsid``), so the session id
names the whole tree it spawns (Prefect's server starts more processes). Processes are
identified by pid *and* start time read from ``/proc``, so a recycled pid is never mistaken
for ours and never signalled. Linux only (``/proc``), which is what the local stack targets.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the stack uses."""

    pid: int
    state: str
    pgid: int
    sid: int
    start_ticks: int


def read_stat(pid: int) -> ProcStat | None:
    """Parse ``/proc/<pid>/stat``; None when the process does not exist."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    rest = raw[raw.rindex(")") + 2 :].split()
    return ProcStat(pid=pid, state=rest[0], pgid=int(rest[2]), sid=int(rest[3]), start_ticks=int(rest[19]))


def reap(pid: int) -> None:
    """Collect ``pid`` if it is an exited child of this process (no-op otherwise)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def is_running(pid: int, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` is a live (non-zombie) process, and the same one if ``start_ticks``."""
    reap(pid)
    stat = read_stat(pid)
    if stat is None or stat.state in {"Z", "X"}:
        return False
    return start_ticks is None or stat.start_ticks == start_ticks


def session_members(sid: int) -> list[int]:
    """Live processes whose session id is ``sid``."""
    members = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name))
        if stat is not None and stat.sid == sid and stat.state not in {"Z", "X"}:
            members.append(stat.pid)
    return sorted(members)


def rss_bytes(pids: Iterable[int]) -> int:
    """Sum of resident set sizes of ``pids`` (missing processes count 0)."""
    total = 0
    for pid in pids:
        try:
            for line in (_PROC / str(pid) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def spawn(argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a session leader with stdout+stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(argv)}\n".encode())
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def _signal_session(sid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(sid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    # Members that moved to another process group are still in the session: signal them too.
    for pid in session_members(sid):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_session(sid: int, leader_start_ticks: int | None, grace_s: float) -> list[int]:
    """SIGTERM session ``sid``, wait up to ``grace_s``, SIGKILL what is left.

    Does nothing when the leader is not ours any more (pid reused) and no member is left.

    Returns:
        Pids still alive after SIGKILL and a short wait (should be empty).
    """
    leader_ours = is_running(sid, leader_start_ticks)
    if not leader_ours and not session_members(sid):
        return []
    _signal_session(sid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        reap(sid)
        if not session_members(sid):
            return []
        time.sleep(0.1)
    _signal_session(sid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        reap(sid)
        left = session_members(sid)
        if not left:
            return []
        time.sleep(0.1)
    return session_members(sid)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(count: int, taken: Iterable[int] = (), host: str = "127.0.0.1", offsets: Sequence[int] = ()) -> list[int]:
    """Pick ``count`` distinct free ports below the kernel's ephemeral range.

    Ports handed out by binding port 0 come from the ephemeral range, where the kernel also
    places outgoing connections; a client socket could grab one before the server binds it.
    Picking from below that range avoids the clash.

    Args:
        count: How many ports.
        taken: Ports not to hand out (already allocated elsewhere).
        host: Interface to check.
        offsets: For each picked port ``p``, ``p + offset`` must be free too (for programs
            that derive a second port from the first).
    """
    import random

    low_eph, _ = _ephemeral_range()
    low, high = (20000, low_eph - 1) if low_eph > 21000 else (10000, 19999)
    high -= max(offsets, default=0)
    if high <= low:
        raise RuntimeError(f"no room for port offsets {list(offsets)} below {low_eph}")
    avoid = set(taken)
    rng = random.Random()
    picked: list[int] = []
    for _ in range(count * 100):
        if len(picked) == count:
            break
        port = rng.randint(low, high)
        group = [port, *(port + o for o in offsets)]
        if any(p in avoid or p in picked for p in group):
            continue
        if all(port_is_free(p, host) for p in group):
            picked.append(port)
            avoid.update(group)
    if len(picked) < count:
        raise RuntimeError(f"could not find {count} free ports in {low}-{high}")
    return picked
