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
    w.spec, w.store, w._stop = spec, store, False
    # A budget of many backoffs, so that a loaded CI machine still fits several attempts.
    w.retry_budget_s, w.backoff_s, w.max_backoff_s = 0.5, 0.01, 0.01
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
    assert len(attempts) >= 3  # retried with backoff until the budget ran out
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


@pytest.mark.parametrize("job_id", ["../../x", "a/b", "", ".hidden", "x" * 200])
def test_an_id_that_would_leave_the_job_folder_is_dead_lettered_and_the_worker_goes_on(job_id):
    from urbanfabric.io.job_layout import JobLayout

    store, prod = MemoryStore(), RecordingProducer()
    w = _worker(_ok, store)
    w.spec.marker_key = lambda t: JobLayout(t.job.job_id).tile_done(t.tile.tile_id)
    w.spec.validate = lambda t: None
    task = _task()
    task.job.job_id = job_id
    assert w.process(_record(task), prod) == "malformed"
    letter = tasks_pb2.DeadLetter.FromString(prod.sent[0][2])
    assert letter.error.field == "job.job_id" and not store.list()
    assert w.process(_record(_task()), prod) == "ok"  # the next message is handled as usual


class _FlakyStore(MemoryStore):
    """Refuses the first ``n`` calls, as an object store that is restarting."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.refusals = n

    def exists(self, key: str) -> bool:
        if self.refusals:
            self.refusals -= 1
            raise Unavailable("object store restarting")
        return super().exists(key)


def test_a_restarting_object_store_is_waited_for_not_reported_as_a_failure():
    store, prod = _FlakyStore(2), RecordingProducer()
    w = _worker(_ok, store)
    w.retry_budget_s = 5.0
    assert w.process(_record(_task()), prod) == "ok"
    assert store.exists("jobs/j1/tiles/t1/_SUCCESS")


def test_a_store_down_past_the_budget_raises_so_the_offset_is_not_committed():
    store, prod = _FlakyStore(10_000), RecordingProducer()
    w = _worker(_ok, store)
    with pytest.raises(Unavailable, match="marker check"):
        w.process(_record(_task()), prod)
    assert not prod.sent  # nothing reported: the message will be read again


def test_a_send_that_times_out_is_retried():
    from kafka.errors import KafkaTimeoutError

    class Broker(RecordingProducer):
        fails = 2

        def send(self, topic, key=None, value=b""):
            if self.fails:
                self.fails -= 1
                raise KafkaTimeoutError("broker restarting")
            return super().send(topic, key, value)

    store, prod = MemoryStore(), Broker()
    w = _worker(_ok, store)
    w.retry_budget_s = 5.0
    assert w.process(_record(_task()), prod) == "ok"
    assert [t for t, _, _ in prod.sent] == [bus.TILE_RESULTS]


def test_a_resumed_run_gets_the_stored_result_as_an_answer_to_its_own_run():
    store, prod = MemoryStore(), RecordingProducer()
    w = _worker(_ok, store)
    first = _task()
    first.job.run_id = "run-a"
    assert w.process(_record(first), prod) == "ok"
    again = _task()
    again.job.run_id = "run-b"  # the same job resumed: a new run
    assert w.process(_record(again), prod) == "duplicate"
    answers = [tasks_pb2.TileResult.FromString(v) for _, _, v in prod.sent]
    assert [a.job.run_id for a in answers] == ["run-a", "run-b"]
    assert answers[1].status == tasks_pb2.TASK_STATUS_SUCCEEDED
