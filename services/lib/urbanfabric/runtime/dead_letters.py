"""The dead-letter topic, read and replayed: what the workers set aside and why.

A worker dead-letters a message it cannot parse or validate, or whose dependencies stayed down
past the retry budget (:class:`urbanfabric.runtime.bus.TaskWorker`). Each letter keeps the
original topic, partition, offset, key and payload, the error and the attempts. Replaying sends
the payload back to its topic unchanged; a task already done is answered from its commit
marker, so replaying twice redoes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

from urbanfabric.runtime import bus
from urbanfabric.settings import Settings
from urbanfabric.v1 import common_pb2, tasks_pb2

#: Task message type per task topic, to show which job, tile or batch a letter belongs to.
TASK_TYPES = {bus.TILES: tasks_pb2.TileTask, bus.BUILDINGS: tasks_pb2.BuildingBatch}


@dataclass(frozen=True)
class Letter:
    """One dead-lettered message, decoded as far as it decodes."""

    dlq_offset: int
    letter: tasks_pb2.DeadLetter
    job_id: str
    item: str  # tile id or batch id ("" when the payload does not parse)

    @property
    def reason(self) -> str:
        err = self.letter.error
        code = common_pb2.ErrorCode.Name(err.code).removeprefix("ERROR_CODE_").lower()
        return f"{code}: {err.field + ': ' if err.field else ''}{err.message}"


def _describe(offset: int, letter: tasks_pb2.DeadLetter) -> Letter:
    task_type = TASK_TYPES.get(letter.topic)
    job_id = item = ""
    if task_type is not None:
        task = task_type()
        try:
            task.ParseFromString(letter.payload)
            job_id = task.job.job_id
            item = task.tile.tile_id if letter.topic == bus.TILES else task.batch_id
        except Exception:  # noqa: BLE001 - a letter is often there because it does not parse
            pass
    return Letter(offset, letter, job_id, item)


def read_letters(settings: Settings, job_id: str = "", idle_s: float = 3.0) -> list[Letter]:
    """Every letter on the dead-letter topic (optionally of one job), oldest first.

    Reads from the beginning without joining a consumer group (nothing is committed) and stops
    once no record arrived for ``idle_s``.
    """
    cons = KafkaConsumer(**settings.kafka_options(), group_id=None,
                         enable_auto_commit=False, consumer_timeout_ms=int(idle_s * 1000))
    try:
        parts = cons.partitions_for_topic(bus.DLQ) or set()
        cons.assign([TopicPartition(bus.DLQ, p) for p in sorted(parts)])
        cons.seek_to_beginning()
        out = []
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            for records in cons.poll(timeout_ms=500).values():
                for r in records:
                    last = time.monotonic()
                    out.append(_describe(r.offset, tasks_pb2.DeadLetter.FromString(r.value)))
    finally:
        cons.close()
    out = [x for x in out if not job_id or x.job_id == job_id]
    return sorted(out, key=lambda x: (x.letter.topic, x.letter.partition, x.letter.offset))


def replay(settings: Settings, letters: list[Letter]) -> int:
    """Send each letter's payload back to its original topic with its key; returns the count."""
    prod = bus.producer(settings)
    try:
        for x in letters:
            prod.send(x.letter.topic, key=x.letter.key or None, value=x.letter.payload).get(timeout=30)
    finally:
        prod.flush()
        prod.close()
    return len(letters)
