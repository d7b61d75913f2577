"""A worker's probes: ready once it polled, live while the loop turns or a task is young."""

from __future__ import annotations

import urllib.error
import urllib.request

from urbanfabric.runtime.worker_health import WorkerHealth


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_probes_follow_the_poll_loop() -> None:
    health = WorkerHealth(stall_s=60, task_timeout_s=900)
    server = health.serve(0)
    port = server.server_address[1]
    try:
        assert _get(port, "/readyz")[0] == 503  # not polled yet
        assert _get(port, "/livez")[0] == 200  # starting
        health.polled()
        assert _get(port, "/readyz") == (200, "ok: polling\n")
        health.poll_failed()  # broker restarting
        assert _get(port, "/readyz")[0] == 503 and _get(port, "/livez")[0] == 200
        health.task_started()
        assert _get(port, "/livez")[1].startswith("ok: busy with a task")
        assert _get(port, "/metrics")[0] == 200 and _get(port, "/nope")[0] == 404
    finally:
        server.shutdown()


def test_a_stalled_loop_or_a_task_past_the_poll_interval_is_not_live() -> None:
    health = WorkerHealth(stall_s=0.0, task_timeout_s=0.0)
    health.polled()
    assert not health.live()[0]  # no poll since (stall_s 0)
    health.task_started()
    assert not health.live()[0]  # the task outlived Kafka's max poll interval
    health.task_done()
    health.stall_s = 60
    assert health.live()[0]
