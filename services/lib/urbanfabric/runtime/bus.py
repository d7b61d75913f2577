"""The Kafka task bus: topics, producers, consumers and the at-least-once task worker.

Delivery is at-least-once. A worker processes a task, writes its outputs under deterministic
keys, then writes a commit marker holding the serialized result, publishes the result, and only
then commits the Kafka offset. A re-delivered task whose marker exists is answered from the
marker without redoing work. A message that cannot be parsed or validated, or whose
dependencies stay down longer than the retry budget (``URBANFABRIC_RETRY_BUDGET_S``, 180 s),
goes to the dead-letter topic with the reason — it never blocks its partition, and no
per-message error stops the worker (``urbanfabric dlq`` lists and replays dead letters).

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
from kafka.errors import KafkaError
from prometheus_client import Counter, Histogram

from urbanfabric.settings import Settings
from urbanfabric.errors import InvalidInput, NotFound, Unavailable, UrbanfabricError
from urbanfabric.io.object_store import ObjectStore
from urbanfabric.runtime.worker_health import WorkerHealth
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
        **settings.kafka_options(),
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
        **settings.kafka_options(),
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
    """Consume tasks of one kind as a member of a consumer group.

    Per-message errors never stop the worker. A message that does not parse or validate
    (including a key its ids would build) is dead-lettered at once. A dependency that is down
    (:class:`Unavailable`; the object store or the broker refusing a call) is retried with
    exponential backoff (capped at ``max_backoff_s``) for ``retry_budget_s`` — long enough to
    ride out a service restart — and only then reported FAILED and dead-lettered. Should even
    reporting fail past the budget, the offset is not committed and the message is read again.
    """

    def __init__(self, settings: Settings, spec: TaskSpec, group: str | None = None,
                 retry_budget_s: float | None = None, backoff_s: float = 1.0, max_backoff_s: float = 15.0) -> None:
        self.settings = settings
        self.spec = spec
        self.group = group or f"urbanfabric-{spec.name}"
        self.store = ObjectStore(settings)
        self.retry_budget_s = float(os.environ.get("URBANFABRIC_RETRY_BUDGET_S", 180)) \
            if retry_budget_s is None else retry_budget_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._stop = False

    def stop(self, *_: Any) -> None:
        """Finish the current task, then leave the group (SIGTERM handler)."""
        self._stop = True

    def _pause(self, attempt: int) -> None:
        time.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))

    def _retrying(self, call: Callable[[], Any], what: str) -> Any:
        """``call()``, retried on transient infrastructure errors within the retry budget."""
        start, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            try:
                return call()
            except (Unavailable, KafkaError, OSError) as exc:
                if time.monotonic() - start >= self.retry_budget_s or self._stop:
                    raise Unavailable(f"{what}: {exc}") from exc
                log.warning("%s failed, retrying: %s", what, exc, extra={"attempt": attempt})
                self._pause(attempt)

    def _send(self, prod: KafkaProducer, topic: str, key: bytes | None, value: bytes) -> None:
        self._retrying(lambda: prod.send(topic, key=key, value=value).get(timeout=30), f"send to {topic}")

    def _dead_letter(self, prod: KafkaProducer, record: Any, err: common_pb2.Error, attempts: int) -> None:
        letter = tasks_pb2.DeadLetter(
            topic=record.topic, partition=record.partition, offset=record.offset,
            key=record.key or b"", payload=record.value or b"", error=err, attempts=attempts,
        )
        self._send(prod, DLQ, record.key, letter.SerializeToString())
        log.error("dead-lettered", extra={"topic": record.topic, "offset": record.offset,
                                          "error": err.message, "field": err.field})

    def _parse(self, record: Any) -> tuple[Any, str]:
        """The task and its marker key; InvalidInput for anything malformed."""
        spec = self.spec
        task = spec.task_type()
        try:
            task.ParseFromString(record.value or b"")
        except DecodeError as exc:
            raise InvalidInput("payload", f"not a {spec.task_type.__name__}: {exc}") from None
        spec.validate(task)
        return task, spec.marker_key(task)

    def process(self, record: Any, prod: KafkaProducer) -> str:
        """Handle one record; returns the outcome label.

        Raises:
            Unavailable: the result could not be stored or published within the retry budget
                (the caller must not commit the offset).
        """
        spec = self.spec
        try:
            task, marker = self._parse(record)
        except (InvalidInput, ValueError) as exc:
            err = exc if isinstance(exc, InvalidInput) else InvalidInput("payload", str(exc))
            self._dead_letter(prod, record, error_message(err), attempts=1)
            return "malformed"
        done = self._retrying(lambda: self.store.get_bytes(marker) if self.store.exists(marker) else None,
                              "marker check")
        if done is not None:
            # Already done (a re-delivery, or a resumed job): report the stored result again,
            # as an answer to this task's run, and do nothing else.
            stored = spec.result_type.FromString(done)
            stored.job.CopyFrom(task.job)
            self._send(prod, spec.result_topic, spec.result_key(task).encode(), stored.SerializeToString())
            return "duplicate"
        result = self._handle(record, task, prod)
        payload = result.SerializeToString()
        if getattr(result, "status", None) in (tasks_pb2.TASK_STATUS_SUCCEEDED, tasks_pb2.TASK_STATUS_EMPTY):
            # Marker last: outputs are complete once it exists.
            self._retrying(lambda: self.store.put_bytes(marker, payload), "marker write")
        self._send(prod, spec.result_topic, spec.result_key(task).encode(), payload)
        return "failed" if getattr(result, "status", None) == tasks_pb2.TASK_STATUS_FAILED else "ok"

    def _handle(self, record: Any, task: Any, prod: KafkaProducer) -> Message:
        """The task's result: its handler's, or a FAILED one (dead-lettered unless the input
        itself is wrong)."""
        spec = self.spec
        start, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            try:
                return spec.handle(task)
            except Unavailable as exc:
                if time.monotonic() - start >= self.retry_budget_s or self._stop:
                    self._dead_letter(prod, record, error_message(exc), attempt)
                    return spec.failed(task, error_message(exc))
                log.warning("retrying after %s", exc, extra={"attempt": attempt})
                self._pause(attempt)
            except (UrbanfabricError, RuntimeError) as exc:
                # Permanent for this input: report it, do not retry.
                return spec.failed(task, error_message(exc))
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the worker
                log.exception("task crashed")
                self._dead_letter(prod, record, error_message(exc), attempt)
                return spec.failed(task, error_message(exc))

    def run(self, health_port: int | None = None, host: str = "127.0.0.1") -> None:
        """Poll, process, commit — until SIGTERM. With ``health_port``, answer ``/livez``,
        ``/readyz`` and ``/metrics`` there (:class:`WorkerHealth`)."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        health = WorkerHealth(task_timeout_s=_int_env("URBANFABRIC_KAFKA_MAX_POLL_MS", 900000) / 1000)
        if health_port is not None:
            health.serve(health_port, host)
        prod = producer(self.settings)
        cons = consumer(self.settings, self.group, self.spec.topic)
        log.info("ready", extra={"group": self.group, "topic": self.spec.topic, "health_port": health_port})
        try:
            while not self._stop:
                try:
                    batches = cons.poll(timeout_ms=500, max_records=1)
                    health.polled()
                except KafkaError as exc:  # the broker is restarting: wait, do not exit
                    health.poll_failed()
                    log.warning("poll failed: %s", exc)
                    self._pause(3)
                    continue
                for tp, records in batches.items():
                    for record in records:
                        start = time.perf_counter()
                        health.task_started()
                        try:
                            outcome = self.process(record, prod)
                        except Exception:  # noqa: BLE001 - never exit on one message
                            # Not reported: read it again rather than lose it.
                            log.exception("task not reported; will be read again",
                                          extra={"offset": record.offset, "partition": record.partition})
                            TASKS.labels(self.spec.name, "requeued").inc()
                            cons.seek(tp, record.offset)
                            health.task_done()
                            self._pause(4)
                            continue
                        health.task_done()
                        TASKS.labels(self.spec.name, outcome).inc()
                        TASK_SECONDS.labels(self.spec.name).observe(time.perf_counter() - start)
                        try:
                            cons.commit()
                        except KafkaError as exc:
                            # A rebalance or a broker restart: the record may come again, and
                            # its marker then answers it without redoing the work.
                            log.warning("commit failed: %s", exc, extra={"offset": record.offset})
                        log.info("task %s", outcome, extra={"offset": record.offset,
                                                            "partition": record.partition})
        finally:
            cons.close()
            prod.flush()
            prod.close()
            log.info("stopped")


def worker_main(name: str, spec: Callable[[Settings], TaskSpec], argv: list[str] | None = None) -> None:
    """The command line of a Kafka worker: ``[--health-port N] [--host H]``, then run."""
    import argparse

    from urbanfabric.runtime import logs

    parser = argparse.ArgumentParser(prog=f"python -m services.workers.{name.replace('-', '_')}")
    parser.add_argument("--health-port", type=int, default=None,
                        help="serve /livez, /readyz and /metrics on this port (default: none)")
    parser.add_argument("--host", default="127.0.0.1", help="address of the health port (0.0.0.0 in a pod)")
    args = parser.parse_args(argv)
    logs.configure(name)
    settings = Settings.load()
    TaskWorker(settings, spec(settings)).run(health_port=args.health_port, host=args.host)
