"""The Kafka task bus: topics, producers, consumers and the at-least-once task worker.

Delivery is at-least-once. A worker processes a task, writes its outputs under deterministic
keys, then writes a commit marker holding the serialized result, publishes the result, and only
then commits the Kafka offset. A re-delivered task whose marker exists is answered from the
marker without redoing work. A message that cannot be parsed, or that keeps failing after
``max_attempts`` retryable errors, goes to the dead-letter topic with the reason — it never
blocks its partition.

Completion is tracked with result messages and object-store markers, never with offsets or
lag (the local Tansu broker reports wrong high watermarks; see RECIPES).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError, Message
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client import Counter, Histogram

from urbanfabric.settings import Settings
from urbanfabric.errors import InvalidInput, NotFound, Unavailable, UrbanfabricError
from urbanfabric.io.object_store import ObjectStore
from urbanfabric.v1 import common_pb2, tasks_pb2

log = logging.getLogger(__name__)

TILES = "urbanfabric.tiles.v1"
TILE_RESULTS = "urbanfabric.tile-results.v1"
BUILDINGS = "urbanfabric.buildings.v1"
BUILDING_RESULTS = "urbanfabric.building-results.v1"
DLQ = "urbanfabric.dlq.v1"

TASKS = Counter("urbanfabric_tasks_total", "Tasks handled, by outcome.", ["worker", "outcome"])
TASK_SECONDS = Histogram("urbanfabric_task_seconds", "Task handling time.", ["worker"],
                         buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))


def _int_env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def producer(settings: Settings) -> KafkaProducer:
    """An acks=all producer (a result is only reported once the broker has it)."""
    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        retries=5,
        linger_ms=5,
        request_timeout_ms=30000,
    )


def consumer(settings: Settings, group: str, *topics: str, offset_reset: str = "earliest") -> KafkaConsumer:
    """A manually committing group consumer with one record in flight (backpressure).

    Session timing is configurable: small values make group joins quick on the local broker
    (RECIPES quirk 1); a cluster can use Kafka's defaults.
    """
    return KafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset=offset_reset,
        max_poll_records=1,
        session_timeout_ms=_int_env("URBANFABRIC_KAFKA_SESSION_MS", 6000),
        heartbeat_interval_ms=_int_env("URBANFABRIC_KAFKA_HEARTBEAT_MS", 500),
        max_poll_interval_ms=_int_env("URBANFABRIC_KAFKA_MAX_POLL_MS", 900000),
    )


def error_message(exc: BaseException) -> common_pb2.Error:
    """The result-message form of an exception."""
    if isinstance(exc, InvalidInput):
        return common_pb2.Error(code=common_pb2.ERROR_CODE_INVALID_ARGUMENT, field=exc.field,
                                message=exc.message)
    if isinstance(exc, NotFound):
        return common_pb2.Error(code=common_pb2.ERROR_CODE_NOT_FOUND, message=str(exc))
    if isinstance(exc, Unavailable):
        return common_pb2.Error(code=common_pb2.ERROR_CODE_UNAVAILABLE, message=str(exc))
    return common_pb2.Error(code=common_pb2.ERROR_CODE_INTERNAL, message=f"{type(exc).__name__}: {exc}")


@dataclass
class TaskSpec:
    """How a worker treats one kind of task."""

    name: str
    topic: str
    result_topic: str
    task_type: type[Message]
    result_type: type[Message]
    #: Object-store key of the commit marker of a task.
    marker_key: Callable[[Any], str]
    #: Result key (Kafka) of a task: the job id, so a job's results stay in order.
    result_key: Callable[[Any], str]
    #: Does the work; returns the result message. Raises core errors.
    handle: Callable[[Any], Message]
    #: Builds a FAILED result for a task and an error.
    failed: Callable[[Any, common_pb2.Error], Message]
    validate: Callable[[Any], None] = field(default=lambda task: None)


class TaskWorker:
    """Consume tasks of one kind as a member of a consumer group."""

    def __init__(self, settings: Settings, spec: TaskSpec, group: str | None = None,
                 max_attempts: int = 3, backoff_s: float = 1.0) -> None:
        self.settings = settings
        self.spec = spec
        self.group = group or f"urbanfabric-{spec.name}"
        self.store = ObjectStore(settings)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._stop = False

    def stop(self, *_: Any) -> None:
        """Finish the current task, then leave the group (SIGTERM handler)."""
        self._stop = True

    def _dead_letter(self, prod: KafkaProducer, record: Any, err: common_pb2.Error, attempts: int) -> None:
        letter = tasks_pb2.DeadLetter(
            topic=record.topic, partition=record.partition, offset=record.offset,
            key=record.key or b"", payload=record.value or b"", error=err, attempts=attempts,
        )
        prod.send(DLQ, key=record.key, value=letter.SerializeToString()).get(timeout=30)
        log.error("dead-lettered", extra={"topic": record.topic, "offset": record.offset,
                                          "error": err.message, "field": err.field})

    def process(self, record: Any, prod: KafkaProducer) -> str:
        """Handle one record; returns the outcome label. Never raises for task errors."""
        spec = self.spec
        task = spec.task_type()
        try:
            task.ParseFromString(record.value or b"")
            spec.validate(task)
        except (DecodeError, InvalidInput) as exc:
            err = error_message(exc if isinstance(exc, InvalidInput) else InvalidInput("payload", f"not a {spec.task_type.__name__}: {exc}"))
            self._dead_letter(prod, record, err, attempts=1)
            return "malformed"
        marker = spec.marker_key(task)
        if self.store.exists(marker):
            # Already done (re-delivery): report the stored result again, do nothing else.
            prod.send(spec.result_topic, key=spec.result_key(task).encode(),
                      value=self.store.get_bytes(marker)).get(timeout=30)
            return "duplicate"
        attempt = 0
        while True:
            attempt += 1
            try:
                result = spec.handle(task)
                break
            except Unavailable as exc:
                if attempt >= self.max_attempts or self._stop:
                    result = spec.failed(task, error_message(exc))
                    self._dead_letter(prod, record, error_message(exc), attempt)
                    break
                log.warning("retrying after %s", exc, extra={"attempt": attempt})
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            except (UrbanfabricError, RuntimeError) as exc:
                # Permanent for this input: report it, do not retry.
                result = spec.failed(task, error_message(exc))
                break
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the worker
                log.exception("task crashed")
                result = spec.failed(task, error_message(exc))
                self._dead_letter(prod, record, error_message(exc), attempt)
                break
        payload = result.SerializeToString()
        if getattr(result, "status", None) == tasks_pb2.TASK_STATUS_SUCCEEDED or \
                getattr(result, "status", None) == tasks_pb2.TASK_STATUS_EMPTY:
            # Marker last: outputs are complete once it exists.
            self.store.put_bytes(marker, payload)
        prod.send(spec.result_topic, key=spec.result_key(task).encode(), value=payload).get(timeout=30)
        return "failed" if getattr(result, "status", None) == tasks_pb2.TASK_STATUS_FAILED else "ok"

    def run(self) -> None:
        """Poll, process, commit — until SIGTERM."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        prod = producer(self.settings)
        cons = consumer(self.settings, self.group, self.spec.topic)
        log.info("ready", extra={"group": self.group, "topic": self.spec.topic})
        try:
            while not self._stop:
                batches = cons.poll(timeout_ms=500, max_records=1)
                for _tp, records in batches.items():
                    for record in records:
                        start = time.perf_counter()
                        outcome = self.process(record, prod)
                        TASKS.labels(self.spec.name, outcome).inc()
                        TASK_SECONDS.labels(self.spec.name).observe(time.perf_counter() - start)
                        cons.commit()
                        log.info("task %s", outcome, extra={"offset": record.offset,
                                                            "partition": record.partition})
        finally:
            cons.close()
            prod.flush()
            prod.close()
            log.info("stopped")
