"""Kafka payloads a worker may be handed: garbage, the wrong message, missing fields, ids that
would leave the job's folder.

The real tile and building worker specs (their validation and object keys) run inside
``bus.TaskWorker.process``; only the stage call is replaced. Each bad record is dead-lettered
with ``error.field`` naming the problem, nothing is written to the store, and the worker then
handles a good task as usual.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.workers import building_worker, tile_worker
from tests.fakes import MemoryStore, RecordingProducer
from urbanfabric.runtime import bus
from urbanfabric.settings import Settings
from urbanfabric.v1 import tasks_pb2


def _tile_task(**ids: str) -> tasks_pb2.TileTask:
    t = tasks_pb2.TileTask()
    t.job.job_id, t.job.run_id = ids.get("job_id", "j1"), "r1"
    t.tile.tile_id = ids.get("tile_id", "16-54267-28168")
    t.source.catalog_uri = ids.get("catalog_uri", "s3://urbanfabric/sources/x/catalog.json")
    return t


def _batch_task(**ids: str) -> tasks_pb2.BuildingBatch:
    t = tasks_pb2.BuildingBatch()
    t.job.job_id, t.job.run_id = ids.get("job_id", "j1"), "r1"
    t.batch_id = ids.get("batch_id", "b00001")
    t.footprints.uri = ids.get("uri", "s3://urbanfabric/jobs/j1/batches/b00001/footprints.parquet")
    t.region = ids.get("region", "ASIA_CHN")
    t.height_model.name = ids.get("height", "height-xgb")
    return t


def _worker(kind: str) -> tuple[bus.TaskWorker, list]:
    settings = Settings.load()
    spec = (tile_worker if kind == "tiles" else building_worker).spec(settings)
    calls: list = []

    def handle(task):
        calls.append(task)
        if kind == "tiles":
            return tasks_pb2.TileResult(job=task.job, tile=task.tile, status=tasks_pb2.TASK_STATUS_SUCCEEDED)
        return tasks_pb2.BuildingBatchResult(job=task.job, batch_id=task.batch_id,
                                             status=tasks_pb2.TASK_STATUS_SUCCEEDED)

    spec.handle = handle
    w = bus.TaskWorker.__new__(bus.TaskWorker)
    w.spec, w.store, w._stop = spec, MemoryStore(), False
    w.retry_budget_s, w.backoff_s, w.max_backoff_s = 0.05, 0.01, 0.01
    return w, calls


def _record(value: bytes, topic: str = bus.TILES):
    return SimpleNamespace(topic=topic, partition=0, offset=11, key=b"k", value=value)


GOOD = {"tiles": lambda: _tile_task().SerializeToString(), "buildings": lambda: _batch_task().SerializeToString()}

TRAVERSALS = ["../../etc", "..", ".", "a/b", "a\\b", "/abs", "x" * 300, "a\x00b", "tile\n", " ", "%2e%2e", "é/"]

CASES: list[tuple[str, str, bytes, str]] = [
    ("tiles-empty", "tiles", b"", "job.job_id"),
    ("tiles-garbage", "tiles", b"\xff\xfe\xfd not protobuf", "payload"),
    ("tiles-truncated", "tiles", _tile_task().SerializeToString()[:7], "payload"),
    ("tiles-json", "tiles", b'{"job": {"job_id": "j1"}}', "payload"),
    ("tiles-batch-message", "tiles", _batch_task().SerializeToString(), "payload"),
    ("tiles-no-tile-id", "tiles", _tile_task(tile_id="").SerializeToString(), "tile.tile_id"),
    ("tiles-no-source", "tiles", _tile_task(catalog_uri="").SerializeToString(), "source.catalog_uri"),
    ("buildings-empty", "buildings", b"", "job.job_id"),
    ("buildings-garbage", "buildings", b"\x08\x96\x01\xff\xff\xff\xff", "payload"),
    ("buildings-no-batch-id", "buildings", _batch_task(batch_id="").SerializeToString(), "batch_id"),
    ("buildings-no-footprints", "buildings", _batch_task(uri="").SerializeToString(), "footprints.uri"),
    ("buildings-no-region", "buildings", _batch_task(region="").SerializeToString(), "region"),
    ("buildings-no-height-model", "buildings", _batch_task(height="").SerializeToString(), "height_model.name"),
]
for i, bad in enumerate(TRAVERSALS):
    CASES.append((f"tiles-job-id-{i}", "tiles", _tile_task(job_id=bad).SerializeToString(), "job.job_id"))
    CASES.append((f"tiles-tile-id-{i}", "tiles", _tile_task(tile_id=bad).SerializeToString(), "tile.tile_id"))
    CASES.append((f"buildings-batch-id-{i}", "buildings", _batch_task(batch_id=bad).SerializeToString(), "batch_id"))


@pytest.mark.parametrize(("kind", "payload", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_record_is_dead_lettered_naming_the_field_and_the_worker_goes_on(kind, payload, field):
    w, calls = _worker(kind)
    prod = RecordingProducer()
    assert w.process(_record(payload), prod) == "malformed"
    topic, _, sent = prod.sent[0]
    letter = tasks_pb2.DeadLetter.FromString(sent)
    assert topic == bus.DLQ and letter.error.field == field, letter.error
    assert letter.offset == 11 and not calls and not w.store.list()
    assert w.process(_record(GOOD[kind]()), prod) == "ok" and len(calls) == 1
