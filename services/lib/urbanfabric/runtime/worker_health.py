"""Liveness, readiness and metrics of a Kafka task worker over HTTP.

``/livez``: the poll loop is turning (it polled within ``stall_s``), or the task it is busy with
started less than ``task_timeout_s`` ago — a worker stuck longer than Kafka's max poll
interval has lost its partitions anyway and is better restarted. ``/readyz``: it polled the
broker successfully and its last poll did not fail (the chart's readiness probe, the local
stack's health check). ``/metrics``: Prometheus text of the process.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class WorkerHealth:
    """What the poll loop reports (``polled``, ``poll_failed``, ``task_started``/``task_done``)
    and what the probes read."""

    def __init__(self, stall_s: float = 60.0, task_timeout_s: float = 900.0) -> None:
        self.stall_s = stall_s
        self.task_timeout_s = task_timeout_s
        self.last_poll = 0.0
        self.poll_ok = False
        self.task_since = 0.0
        self._lock = threading.Lock()

    def polled(self) -> None:
        with self._lock:
            self.last_poll, self.poll_ok = time.monotonic(), True

    def poll_failed(self) -> None:
        with self._lock:
            self.last_poll, self.poll_ok = time.monotonic(), False

    def task_started(self) -> None:
        with self._lock:
            self.task_since = time.monotonic()

    def task_done(self) -> None:
        with self._lock:
            self.task_since = 0.0
            self.last_poll = time.monotonic()

    def live(self) -> tuple[bool, str]:
        now = time.monotonic()
        with self._lock:
            if self.task_since:
                age = now - self.task_since
                return age < self.task_timeout_s, f"busy with a task for {age:.0f} s"
            if not self.last_poll:
                return True, "starting"
            idle = now - self.last_poll
            return idle < self.stall_s, f"last poll {idle:.0f} s ago"

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            if not self.last_poll:
                return False, "not polled yet"
            return self.poll_ok or bool(self.task_since), "polling" if self.poll_ok else "last poll failed"

    def serve(self, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
        """Answer the probes on ``host:port`` from a daemon thread; returns the server."""
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path == "/metrics":
                    self._answer(200, generate_latest(), CONTENT_TYPE_LATEST)
                    return
                check = {"/livez": health.live, "/readyz": health.ready}.get(self.path)
                if check is None:
                    self._answer(404, b"not found\n")
                    return
                ok, detail = check()
                self._answer(200 if ok else 503, f"{'ok' if ok else 'not ok'}: {detail}\n".encode())

            def _answer(self, code: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # probes every few seconds: no access log
                pass

        server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=server.serve_forever, name="worker-health", daemon=True).start()
        return server
