"""The local stack runner: ordering, failure handling, settings, and a real up/status/down."""

from __future__ import annotations

import io
import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from urbanfabric.settings import SERVICE_NAMES, Settings, service_env_var
from urbanfabric.stack import COMPONENTS, TOPICS, Component, NotReady, Stack, StackError
from urbanfabric.stack.commands import main
from urbanfabric.stack.definition import tansu_binary, weed_binary
from urbanfabric.stack.health import alive_for
from urbanfabric.stack.procs import is_running, session_members

REPO = Path(__file__).resolve().parents[2]


def _quiet_stack(stack_dir: Path, components: tuple[Component, ...] = COMPONENTS) -> Stack:
    return Stack(root=REPO, stack_dir=stack_dir, components=components, out=io.StringIO())


# -- pure logic ------------------------------------------------------------------------------
def test_resolve_adds_dependencies_in_start_order(tmp_path: Path) -> None:
    stack = _quiet_stack(tmp_path)
    assert [c.name for c in stack.resolve(["kafka"])] == ["objectstore", "kafka"]
    names = [c.name for c in stack.resolve(["flows"])]
    assert names.index("objectstore") < names.index("kafka") < names.index("tile_worker") < names.index("flows")
    assert names.index("prefect") < names.index("flows")
    assert set(SERVICE_NAMES) <= set(names)
    assert [c.name for c in stack.resolve(None)] == [c.name for c in COMPONENTS]
    with pytest.raises(StackError, match="unknown component"):
        stack.resolve(["nope"])


def test_cycles_and_unknown_dependencies_are_rejected(tmp_path: Path) -> None:
    a = Component("a", argv=["true"], health=alive_for(0), depends_on=("b",))
    b = Component("b", argv=["true"], health=alive_for(0), depends_on=("a",))
    with pytest.raises(StackError, match="cycle"):
        _quiet_stack(tmp_path, (a, b))
    with pytest.raises(StackError, match="unknown"):
        _quiet_stack(tmp_path, (a,))


def test_topics_match_the_bus() -> None:
    bus = pytest.importorskip("urbanfabric.runtime.bus")
    assert set(TOPICS) == {bus.TILES, bus.TILE_RESULTS, bus.BUILDINGS, bus.BUILDING_RESULTS, bus.DLQ}


def test_settings_from_stack_file_with_env_overrides(tmp_path: Path) -> None:
    file = tmp_path / "stack.json"
    file.write_text(
        json.dumps(
            {
                "settings": {
                    "s3_endpoint": "127.0.0.1:1111",
                    "s3_access_key": "AK",
                    "s3_secret_key": "SK",
                    "kafka_bootstrap": "127.0.0.1:2222",
                    "services": {"segmentation": "127.0.0.1:3333"},
                }
            }
        )
    )
    loaded = Settings.load(file, environ={})
    assert (loaded.s3_endpoint, loaded.s3_access_key, loaded.kafka_bootstrap) == ("127.0.0.1:1111", "AK", "127.0.0.1:2222")
    assert loaded.service_addr("segmentation") == "127.0.0.1:3333"
    assert set(loaded.services) == set(SERVICE_NAMES)  # the rest keep defaults

    env = {"URBANFABRIC_KAFKA": "broker:9092", "PREFECT_API_URL": "http://p/api", service_env_var("materials"): "m:1"}
    overridden = Settings.load(file, environ=env)
    assert overridden.kafka_bootstrap == "broker:9092"
    assert overridden.prefect_api_url == "http://p/api"
    assert overridden.service_addr("materials") == "m:1"
    assert overridden.s3_endpoint == "127.0.0.1:1111"

    # No stack file (a cluster): the environment alone configures everything.
    cluster = Settings.load(tmp_path / "absent.json", environ=loaded.to_env())
    assert cluster.to_dict() == loaded.to_dict()


def test_failed_component_reports_log_and_stops_what_was_started(tmp_path: Path) -> None:
    sleeper = Component(
        "sleeper", argv=["{python}", "-c", "import time; time.sleep(120)"], health=alive_for(0.2), timeout_s=10
    )
    crasher = Component(
        "crasher",
        argv=["{python}", "-c", "import sys; print('boom-marker', flush=True); sys.exit(3)"],
        health=alive_for(5),
        depends_on=("sleeper",),
        timeout_s=10,
    )
    stack = _quiet_stack(tmp_path, (sleeper, crasher))
    with pytest.raises(StackError) as err:
        stack.up()
    message = str(err.value)
    assert "crasher exited with code 3" in message and "boom-marker" in message
    sleeper_pid = json.loads((tmp_path / "stack.json").read_text()).get("components", {}).get("sleeper")
    assert sleeper_pid is None  # stopped and removed from the record
    assert "sleeper" in stack.out.getvalue()  # type: ignore[attr-defined]


def test_unhealthy_component_times_out_and_is_stopped(tmp_path: Path) -> None:
    def never(ctx: object, proc: object) -> None:
        raise NotReady("still warming up")

    stuck = Component("stuck", argv=["{python}", "-c", "import time; time.sleep(120)"], health=never, timeout_s=0.5)
    stack = _quiet_stack(tmp_path, (stuck,))
    with pytest.raises(StackError, match="not healthy after .* still warming up"):
        stack.up()
    assert not any(r.alive for r in stack.status())
    assert main(["--stack-dir", str(tmp_path), "status"]) == 1


def test_cli_rejects_unknown_component(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "--stack-dir", str(tmp_path), "--only", "nope"]) == 1
    assert "unknown component" in capsys.readouterr().err
    assert main(["bogus"]) == 2


def test_worker_replicas_start_are_recorded_and_stop_together(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    sleep = ["{python}", "-c", "import time; time.sleep(120)"]
    worker = Component("tile_worker", argv=sleep, health=alive_for(0.2), timeout_s=10)
    flows = Component("flows", argv=sleep, health=alive_for(0.2), depends_on=("tile_worker",), timeout_s=10)
    stack = Stack(root=REPO, stack_dir=tmp_path, components=(worker, flows), out=io.StringIO(), workers=3)
    assert [c.name for c in stack.components] == ["tile_worker", "tile_worker-2", "tile_worker-3", "flows"]
    stack.up()
    try:
        # A later command (status, down) learns the replica count from the stack file.
        again = Stack(root=REPO, stack_dir=tmp_path, components=(worker, flows), out=io.StringIO())
        rows = {r.name: r for r in again.status()}
        assert {"tile_worker", "tile_worker-2", "tile_worker-3"} <= set(rows)
        assert all(rows[n].alive for n in rows) and len({rows[n].pid for n in rows}) == 4
    finally:
        again.down()
    assert not any(r.alive for r in stack.status())
    assert main(["up", "--stack-dir", str(tmp_path / "x"), "--workers", "9"]) == 1
    assert "workers: between 1 and 4" in capsys.readouterr().err


def test_revive_restarts_a_killed_component_with_backoff_and_counts_it(tmp_path: Path) -> None:
    import signal

    sleeper = Component("sleeper", argv=["{python}", "-c", "import time; time.sleep(120)"],
                        health=alive_for(0.2), timeout_s=10)
    stack = _quiet_stack(tmp_path, (sleeper,))
    stack.up()
    try:
        assert stack.revive() == []  # alive: nothing to do
        first = stack.status()[0].pid
        os.killpg(first, signal.SIGKILL)
        deadline = time.time() + 5
        while is_running(first, json.loads((tmp_path / "stack.json").read_text())["components"]["sleeper"]["start_ticks"]):
            assert time.time() < deadline
            time.sleep(0.05)
        assert stack.revive() == ["sleeper"]
        row = stack.status()[0]
        assert row.alive and row.pid != first and row.restarts == 1
        os.killpg(row.pid, signal.SIGKILL)
        time.sleep(0.3)
        assert stack.revive() == []  # within its 1 s backoff: not yet
        time.sleep(1.0)
        assert stack.revive() == ["sleeper"] and stack.status()[0].restarts == 2
    finally:
        stack.down()


def test_the_supervisor_process_is_started_by_up_and_stopped_first_by_down(tmp_path: Path) -> None:
    sleeper = Component("sleeper", argv=["{python}", "-c", "import time; time.sleep(120)"],
                        health=alive_for(0.2), timeout_s=10)
    stack = Stack(root=REPO, stack_dir=tmp_path, components=(sleeper,), out=io.StringIO(), supervise=True)
    stack.up()
    record = json.loads((tmp_path / "stack.json").read_text())["supervisor"]
    assert is_running(record["pid"], record["start_ticks"])
    stack.down()
    assert not is_running(record["pid"], record["start_ticks"])
    assert "supervisor" not in json.loads((tmp_path / "stack.json").read_text())


# -- the real thing --------------------------------------------------------------------------
@pytest.mark.skipif(weed_binary() is None or tansu_binary() is None, reason="weed or tansu binary not installed")
def test_up_status_kafka_roundtrip_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient

    stack = _quiet_stack(tmp_path)
    stack.up(only=["kafka"])
    pids: list[int] = []
    try:
        record = json.loads((tmp_path / "stack.json").read_text())
        pids = [c["pid"] for c in record["components"].values()]
        assert sorted(record["components"]) == ["kafka", "objectstore"]
        assert (tmp_path / "stack.json").stat().st_mode & 0o077 == 0  # holds keys: owner only

        # status: both healthy (CLI exit 0), everything else not started.
        assert main(["--stack-dir", str(tmp_path), "status", "--json"]) == 0
        rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["components"]}
        assert rows["objectstore"]["state"] == rows["kafka"]["state"] == "healthy"
        assert rows["objectstore"]["rss_bytes"] > 0
        assert rows["prefect"]["state"] == "not started"

        # a second up keeps the running processes
        stack.up(only=["kafka"])
        again = json.loads((tmp_path / "stack.json").read_text())
        assert [c["pid"] for c in again["components"].values()] == pids

        settings = Settings.load(tmp_path / "stack.json", environ={})
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        try:
            assert set(TOPICS) <= set(admin.list_topics())
        finally:
            admin.close()

        value = uuid.uuid4().hex.encode()
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        producer.send(TOPICS[0], key=b"tile", value=value, partition=0).get(timeout=10)
        producer.close()
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
        partition = TopicPartition(TOPICS[0], 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        seen: list[bytes] = []
        deadline = time.monotonic() + 15
        while value not in seen and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                seen.extend(r.value for r in records)
        consumer.close()
        assert value in seen
    finally:
        stack.down()

    assert pids and not any(is_running(pid) or session_members(pid) for pid in pids)
    assert json.loads((tmp_path / "stack.json").read_text())["components"] == {}
    assert not list((tmp_path / "objectstore").glob("*.sock"))
    ports = json.loads((tmp_path / "stack.json").read_text())["ports"]["objectstore"].values()
    assert not [p for port in ports for p in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]
    assert main(["--stack-dir", str(tmp_path), "status"]) == 1  # nothing running


def test_python_m_entry_point(tmp_path: Path) -> None:
    import subprocess

    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'services' / 'lib'}"}
    done = subprocess.run(
        [sys.executable, "-m", "urbanfabric.stack", "status", "--stack-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "not running" in done.stdout
