from types import SimpleNamespace

import pytest

from tests.fakes import MemoryStore, RecordingProducer
from urbanfabric.runtime import bus
from urbanfabric.errors import InvalidInput, Unavailable
from urbanfabric.v1 import tasks_pb2


def _worker(handle, store):
    spec = bus.TaskSpec(
        name="tiles", topic=bus.TILES, result_topic=bus.TILE_RESULTS,
        task_type=tasks_pb2.TileTask, result_type=tasks_pb2.TileResult,
        marker_key=lambda t: f"jobs/{t.job.job_id}/tiles/{t.tile.tile_id}/_SUCCESS",
        result_key=lambda t: t.job.job_id, handle=handle,
        failed=lambda t, e: tasks_pb2.TileResult(job=t.job, tile=t.tile, status=tasks_pb2.TASK_STATUS_FAILED, error=e),
        validate=lambda t: None if t.job.job_id else (_ for _ in ()).throw(InvalidInput("job.job_id", "is required")),
    )
    w = bus.TaskWorker.__new__(bus.TaskWorker)
    w.spec, w.store, w.max_attempts, w.backoff_s, w._stop = spec, store, 3, 0.0, False
    return w


def _record(task: tasks_pb2.TileTask | bytes):
    value = task if isinstance(task, bytes) else task.SerializeToString()
    return SimpleNamespace(topic=bus.TILES, partition=0, offset=7, key=b"k", value=value)


def _task():
    t = tasks_pb2.TileTask()
    t.job.job_id, t.tile.tile_id = "j1", "t1"
    return t


def _ok(task):
    return tasks_pb2.TileResult(job=task.job, tile=task.tile, status=tasks_pb2.TASK_STATUS_SUCCEEDED)


def test_success_writes_marker_then_result_and_redelivery_is_not_redone():
    store, prod, calls = MemoryStore(), RecordingProducer(), []
    w = _worker(lambda t: calls.append(t) or _ok(t), store)
    assert w.process(_record(_task()), prod) == "ok"
    assert store.exists("jobs/j1/tiles/t1/_SUCCESS")
    assert w.process(_record(_task()), prod) == "duplicate"
    assert len(calls) == 1
    assert [topic for topic, _, _ in prod.sent] == [bus.TILE_RESULTS, bus.TILE_RESULTS]
    assert prod.sent[0][2] == prod.sent[1][2]


def test_malformed_message_goes_to_dead_letter_topic():
    store, prod = MemoryStore(), RecordingProducer()
    w = _worker(_ok, store)
    assert w.process(_record(b"\xff\xff not protobuf"), prod) == "malformed"
    topic, _, payload = prod.sent[0]
    letter = tasks_pb2.DeadLetter.FromString(payload)
    assert topic == bus.DLQ and letter.offset == 7 and letter.error.field == "payload"


def test_missing_field_is_dead_lettered_with_the_field_name():
    store, prod = MemoryStore(), RecordingProducer()
    w = _worker(_ok, store)
    assert w.process(_record(tasks_pb2.TileTask()), prod) == "malformed"
    assert tasks_pb2.DeadLetter.FromString(prod.sent[0][2]).error.field == "job.job_id"


def test_retryable_errors_are_retried_then_reported_and_dead_lettered():
    store, prod, attempts = MemoryStore(), RecordingProducer(), []

    def flaky(task):
        attempts.append(1)
        raise Unavailable("model server down")

    w = _worker(flaky, store)
    assert w.process(_record(_task()), prod) == "failed"
    assert len(attempts) == 3
    topics = [t for t, _, _ in prod.sent]
    assert topics == [bus.DLQ, bus.TILE_RESULTS]
    assert not store.exists("jobs/j1/tiles/t1/_SUCCESS")  # no marker: a later retry redoes it


@pytest.mark.parametrize("exc", [InvalidInput("ard", "bad"), RuntimeError("INTERNAL: boom"), ZeroDivisionError()])
def test_permanent_errors_become_failed_results_without_crashing(exc):
    store, prod = MemoryStore(), RecordingProducer()

    def broken(task):
        raise exc

    w = _worker(broken, store)
    assert w.process(_record(_task()), prod) == "failed"
    result = tasks_pb2.TileResult.FromString(prod.sent[-1][2])
    assert result.status == tasks_pb2.TASK_STATUS_FAILED and result.error.message
