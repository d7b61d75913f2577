"""A mapping job's orchestration steps, as plain functions the Prefect flow calls.

``flows/map_area.py`` wires these into Prefect tasks; keeping them here means the logic is
tested without Prefect, and the local and cluster runs execute the same code.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import geopandas as gpd
import numpy as np
import pandas as pd
from google.protobuf.message import Message
from kafka import KafkaConsumer, TopicPartition
from shapely.geometry import box

from urbanfabric.runtime import bus
from urbanfabric.settings import Settings
from urbanfabric.footprints.options import SegmentationOptions
from urbanfabric.attributes.context import AreaFrame
from urbanfabric.runtime.convert import options_to_proto, tile_to_proto
from urbanfabric.errors import EmptyArea, InvalidInput, Unavailable
from urbanfabric.imagery.tiles import Tile
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.object_store import ObjectStore, parse_s3_uri
from urbanfabric.io.geoparquet import PARQUET_MEDIA_TYPE, geoparquet_bytes, read_geoparquet
from urbanfabric.v1 import common_pb2, tasks_pb2

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Message)



def new_run_id() -> str:
    """A fresh id for one run of a job (:attr:`JobRef.run_id`)."""
    return uuid.uuid4().hex[:16]


def new_job_id() -> str:
    """Sortable, unique job id: ``<UTC timestamp>-<8 hex>``."""
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def parse_model(ref: str, field_name: str) -> common_pb2.ModelRef:
    """``"name:version"`` → ModelRef (InvalidInput naming the parameter otherwise)."""
    name, sep, version = ref.partition(":")
    if not (name and sep and version):
        raise InvalidInput(field_name, f"expected 'name:version', got {ref!r}")
    return common_pb2.ModelRef(name=name, version=version)


def check_area(area: tuple[float, float, float, float], imagery_bbox: tuple[float, float, float, float],
               source: str) -> None:
    """Fail early, naming the area, when it does not overlap the source's imagery."""
    w, s, e, n = area
    iw, is_, ie, in_ = imagery_bbox
    if e <= iw or w >= ie or n <= is_ or s >= in_:
        raise EmptyArea("area", f"{area} does not intersect the imagery of {source} "
                        f"(which covers {tuple(round(v, 5) for v in imagery_bbox)})")


def error_text(err: common_pb2.Error) -> str:
    """``"field: message"`` (or just the message) of a result's error."""
    return f"{err.field}: {err.message}" if err.field else err.message


def check_refresh(store: ObjectStore, job_id: str) -> None:
    """A job to re-map (the spec's ``refresh``) must have been mapped before.

    Raises:
        InvalidInput: no such job in the store (field ``job_id``).
    """
    if not store.exists(JobLayout(job_id).job_json):
        raise InvalidInput("job_id", f"no job {job_id} to re-map in the object store (refresh needs a job "
                                     "that was mapped before)")


def forget_buildings(store: ObjectStore, job_id: str) -> int:
    """Before a job's buildings are re-mapped (the spec's ``refresh``): its batch results and its
    outputs go, so every batch is redone with the spec's models and no row of the earlier table
    survives beside the new ones; tiles, footprints and staged inputs stay and are reused."""
    layout = JobLayout(job_id)
    return store.delete_prefix(f"{layout.root}/buildings/") + store.delete_prefix(f"{layout.outputs}/")


def write_job(store: ObjectStore, job_id: str, doc: dict[str, Any]) -> None:
    store.put_bytes(JobLayout(job_id).job_json, json.dumps(doc, indent=2, default=str).encode())


def publish(settings: Settings, topic: str, messages: Iterable[tuple[str, Message]]) -> int:
    """Publish messages (key, payload) with acks=all; returns how many were sent."""
    prod = bus.producer(settings)
    try:
        futures = [prod.send(topic, key=k.encode(), value=m.SerializeToString()) for k, m in messages]
        for f in futures:
            f.get(timeout=30)
        return len(futures)
    finally:
        prod.close()


def collect(
    settings: Settings,
    topic: str,
    result_type: type[R],
    job: common_pb2.JobRef,
    expected: set[str],
    key_of: Callable[[R], str],
    timeout_s: float,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, R]:
    """Wait for one result per expected task of a job, read from the result topic.

    The consumer assigns all partitions itself (no group join: fast on every broker) and
    reads from the beginning, keeping only this run's results (``job.job_id`` and
    ``job.run_id``: a resumed job never counts an earlier run's failures); the last result
    per task wins (a re-delivered task may report twice).

    Raises:
        Unavailable: not every result arrived within ``timeout_s`` (the message lists which).
    """
    cons = KafkaConsumer(**settings.kafka_options(), enable_auto_commit=False,
                         group_id=None, consumer_timeout_ms=1000)
    try:
        parts = cons.partitions_for_topic(topic) or {0}
        cons.assign([TopicPartition(topic, p) for p in parts])
        cons.seek_to_beginning()
        results: dict[str, R] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not expected <= results.keys():
            for _tp, records in cons.poll(timeout_ms=500).items():
                for rec in records:
                    msg = result_type()
                    try:
                        msg.ParseFromString(rec.value or b"")
                    except Exception:  # noqa: BLE001 - someone else's garbage on the topic
                        continue
                    if (msg.job.job_id, msg.job.run_id) == (job.job_id, job.run_id) and key_of(msg) in expected:
                        results[key_of(msg)] = msg
                        if progress:
                            progress(len(results), len(expected))
        missing = expected - results.keys()
        if missing:
            raise Unavailable(f"{len(missing)} of {len(expected)} results missing after "
                              f"{timeout_s:.0f} s on {topic}: {sorted(missing)[:5]}")
        return results
    finally:
        cons.close()


def tile_tasks(job: common_pb2.JobRef, tiles: list[Tile], source: common_pb2.ImagerySource,
               segmentation: SegmentationOptions, halo_px: int, segment: bool,
               area_stats: common_pb2.ObjectRef | None = None,
               landcover: common_pb2.LandCoverFilter | None = None,
               ) -> list[tuple[str, tasks_pb2.TileTask]]:
    """One TileTask per tile, carrying the job's segmentation options whole; ``area_stats``
    (JSON band quartiles of the whole area) switches calibration to per city; ``landcover``
    post-filters the segmentation."""
    options = options_to_proto(segmentation, common_pb2.SegmentationOptions)
    return [
        (t.tile_id, tasks_pb2.TileTask(job=job, tile=tile_to_proto(t), source=source, halo_px=halo_px,
                                       segment=segment, area_stats=area_stats, landcover=landcover,
                                       segmentation=options))
        for t in tiles
    ]


def split_tile_results(results: Iterable[tasks_pb2.TileResult]) -> tuple[list[tasks_pb2.TileResult], list[str]]:
    """Tile results to keep, and warnings for the job report (bad input stays local).

    A tile that failed on bad input (an all-nodata tile, a scene without the model's bands,
    a CRS mismatch, a broken asset link: INVALID_ARGUMENT) is skipped with a warning naming it,
    and the rest of the area is still mapped. Empty tiles (next to no imagery) get a warning
    too. Each result's own warnings (scene fallback, GSD far from the model's) are passed on.

    Raises:
        RuntimeError: a tile failed for another reason (a service fault), or every tile
            failed on bad input (nothing would be mapped); the message names the first.
    """
    results = list(results)
    failed = [r for r in results if r.status == tasks_pb2.TASK_STATUS_FAILED]
    faults = [r for r in failed if r.error.code != common_pb2.ERROR_CODE_INVALID_ARGUMENT]
    mapped = any(r.status == tasks_pb2.TASK_STATUS_SUCCEEDED for r in results)
    if faults or (failed and not mapped):
        first = (faults or failed)[0]
        raise RuntimeError(f"{len(failed)} tile(s) failed; {first.tile.tile_id}: {error_text(first.error)}")
    warnings = [f"tile {r.tile.tile_id} skipped: {error_text(r.error)}" for r in failed]
    warnings += [f"tile {r.tile.tile_id}: no imagery (under 1 % valid pixels), nothing mapped there"
                 for r in results if r.status == tasks_pb2.TASK_STATUS_EMPTY]
    for r in results:
        warnings.extend(r.warnings)
    return [r for r in results if r.status != tasks_pb2.TASK_STATUS_FAILED], warnings


def gather_footprints(store: ObjectStore, results: Iterable[tasks_pb2.TileResult]) -> gpd.GeoDataFrame:
    """All tiles' footprints in one frame (EPSG:4326)."""
    frames = [read_geoparquet(store.get_bytes(parse_s3_uri(r.footprints.uri)[1]))
              for r in results if r.status == tasks_pb2.TASK_STATUS_SUCCEEDED and r.footprints.uri]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return gpd.GeoDataFrame(columns=["building_id"], geometry=[], crs="EPSG:4326")
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:4326")


def make_batches(footprints: gpd.GeoDataFrame, batch_size: int) -> list[gpd.GeoDataFrame]:
    """Split footprints into batches of neighbours (Hilbert order), so a batch needs few tiles."""
    if batch_size <= 0:
        raise InvalidInput("batch_size", "must be positive")
    if footprints.empty:
        return []
    order = np.argsort(footprints.geometry.hilbert_distance(), kind="stable")
    ordered = footprints.iloc[order].reset_index(drop=True)
    return [ordered.iloc[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def batch_tasks(store: ObjectStore, job: common_pb2.JobRef, batches: list[gpd.GeoDataFrame],
                tile_results: list[tasks_pb2.TileResult], roof_model: common_pb2.ModelRef,
                height_model: common_pb2.ModelRef, region: str,
                roof_shape_model: common_pb2.ModelRef | None = None,
                facade_model: common_pb2.ModelRef | None = None,
                street_views: str = "", measured_heights: str = "", measured_heights_unit: str = "m",
                structure_model: common_pb2.ModelRef | None = None) -> list[tuple[str, tasks_pb2.BuildingBatch]]:
    """Write each batch's footprints and build its BuildingBatch with the ARD tiles it needs.

    ``roof_shape_model`` / ``facade_model`` (optional) ride along to the building worker, with
    ``street_views`` (s3:// URI of a view catalog); without it façades come back "unknown";
    ``structure_model`` reaches the intensity stage (none: the roof/façade lookup).
    """
    template = batch_template(job, roof_model, height_model, region, roof_shape_model, facade_model,
                              street_views, measured_heights, measured_heights_unit, structure_model)
    images = ImageIndex(tile_results)
    return [(f"{i:05d}", batch_task(store, template, f"{i:05d}", frame, images)) for i, frame in enumerate(batches)]


def batch_template(job: common_pb2.JobRef, roof_model: common_pb2.ModelRef,
                   height_model: common_pb2.ModelRef, region: str,
                   roof_shape_model: common_pb2.ModelRef | None = None,
                   facade_model: common_pb2.ModelRef | None = None,
                   street_views: str = "", measured_heights: str = "", measured_heights_unit: str = "m",
                   structure_model: common_pb2.ModelRef | None = None,
                   area: AreaFrame | None = None,
                   age_model: common_pb2.ModelRef | None = None) -> tasks_pb2.BuildingBatch:
    """The fields every BuildingBatch of a job shares (models, region, user inputs, the job's
    area frame); ``age_model`` None or empty: the attributes service's default."""
    frame = common_pb2.AreaFrame(center_lon=area.center_lon, center_lat=area.center_lat,
                                 radius_m=area.radius_m) if area is not None else None
    return tasks_pb2.BuildingBatch(area=frame,
        job=job, roof_model=roof_model, height_model=height_model, region=region,
        roof_shape_model=roof_shape_model, facade_model=facade_model,
        street_views=common_pb2.ObjectRef(uri=street_views) if street_views else None,
        measured_heights=common_pb2.ObjectRef(uri=measured_heights) if measured_heights else None,
        measured_heights_unit=measured_heights_unit, structure_model=structure_model, age_model=age_model)


class ImageIndex:
    """The ARD tiles of a job, to find the ones a batch of footprints needs."""

    def __init__(self, tile_results: Iterable[tasks_pb2.TileResult]) -> None:
        # In tile order, not in the order results arrived: a building several tiles' imagery
        # covers gets its roof chip from the same tile in every run (it flipped roof classes
        # between runs).
        self.ards = sorted((r for r in tile_results if r.ard.uri), key=lambda r: r.tile.tile_id)
        self.boxes = gpd.GeoSeries.from_xy([], [], crs="EPSG:4326")
        if self.ards:
            b = [box(r.tile.bounds.min_x, r.tile.bounds.min_y, r.tile.bounds.max_x, r.tile.bounds.max_y)
                 for r in self.ards]
            self.boxes = gpd.GeoSeries(b, crs=self.ards[0].tile.bounds.crs).to_crs("EPSG:4326")

    def refs(self, frame: gpd.GeoDataFrame) -> list[common_pb2.ObjectRef]:
        """ARD references of the tiles that intersect the envelope of ``frame`` (tile order)."""
        if not len(self.boxes) or frame.empty:
            return []
        hit = self.boxes.intersects(frame.geometry.union_all().envelope)
        return [common_pb2.ObjectRef(uri=self.ards[j].ard.uri, media_type=self.ards[j].ard.media_type)
                for j in np.flatnonzero(hit.to_numpy())]


def batch_task(store: ObjectStore, template: tasks_pb2.BuildingBatch, batch_id: str, frame: gpd.GeoDataFrame,
               images: ImageIndex, context: gpd.GeoDataFrame | None = None) -> tasks_pb2.BuildingBatch:
    """Write one batch's footprints (and its context: the job's footprints around it) and build
    its BuildingBatch (``template`` + id, footprints, context, images)."""
    layout = JobLayout(template.job.job_id)
    key = layout.batch_footprints(batch_id)
    store.put_bytes(key, geoparquet_bytes(frame))
    msg = tasks_pb2.BuildingBatch()
    msg.CopyFrom(template)
    msg.batch_id = batch_id
    msg.footprints.CopyFrom(common_pb2.ObjectRef(uri=store.s3_uri(key), media_type=PARQUET_MEDIA_TYPE))
    if context is not None and len(context):
        ckey = layout.batch_context(batch_id)
        store.put_bytes(ckey, geoparquet_bytes(context))
        msg.context_footprints.CopyFrom(common_pb2.ObjectRef(uri=store.s3_uri(ckey), media_type=PARQUET_MEDIA_TYPE))
    msg.images.extend(images.refs(frame))
    return msg


# --- Bounded orchestration (issue 22, item 1) -------------------------------------------------
#
# A stage publishes its tasks through a window: at most ``window`` tasks are published and not
# yet answered, the next task is only built (and its inputs written) when a slot frees up, and a
# result is folded into counts and small totals the moment it arrives. The flow's memory does
# not grow with the area; a country is just a longer stream. A task whose commit marker already
# exists (a resumed job) is answered from the marker and never published again.

#: Tasks in flight per worker replica: enough to keep every replica busy while the flow reads
#: results (the workers take one record at a time), small enough to bound the flow's memory.
IN_FLIGHT_PER_WORKER = 4


def window_size(worker_replicas: int, in_flight_per_worker: int = IN_FLIGHT_PER_WORKER) -> int:
    """Tasks a stage keeps in flight: ``in_flight_per_worker`` × ``worker_replicas`` (≥ 1).

    Raises:
        InvalidInput: a count below one (field ``worker_replicas`` / ``in_flight_per_worker``).
    """
    if worker_replicas < 1:
        raise InvalidInput("worker_replicas", "must be at least 1")
    if in_flight_per_worker < 1:
        raise InvalidInput("in_flight_per_worker", "must be at least 1")
    return worker_replicas * in_flight_per_worker


class WindowCounts:
    """What a windowed stage did: counts only, never payloads."""

    def __init__(self) -> None:
        self.published = 0
        self.resumed = 0
        self.done = 0
        self.max_in_flight = 0

    def as_dict(self) -> dict[str, int]:
        return {"published": self.published, "resumed": self.resumed, "done": self.done,
                "max_in_flight": self.max_in_flight}


def run_windowed(
    tasks: Iterable[tuple[str, Message | Callable[[], Message]]],
    send: Callable[[str, Message], None],
    receive: Callable[[], Iterable[R]],
    key_of: Callable[[R], str],
    on_result: Callable[[R], None],
    window: int,
    idle_timeout_s: float,
    resumed: Callable[[str], R | None] | None = None,
    progress: Callable[[WindowCounts], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> WindowCounts:
    """Publish ``tasks`` with at most ``window`` unanswered, folding each result as it comes.

    ``tasks`` is consumed lazily: a task (and whatever object its message points to) is only
    built when there is room for it; a task given as a function is only built (called) when it
    is not already done. ``resumed(key)`` returns a task's stored result (its
    worker's commit marker) when it is already done; such a task is folded without being
    published. ``receive()`` returns the results that arrived since the last call (it may
    block briefly); a result whose key is not in flight (an earlier run's, or a re-delivered
    task's second answer) is ignored, so each task is folded exactly once.

    Raises:
        Unavailable: no result arrived for ``idle_timeout_s`` while tasks were in flight (the
            message names some of them).
    """
    if window < 1:
        raise InvalidInput("window", "must be at least 1")
    counts = WindowCounts()
    in_flight: set[str] = set()
    last_progress = clock()

    def drain(until: int) -> None:
        nonlocal last_progress
        while len(in_flight) > until:
            got = False
            for msg in receive():
                key = key_of(msg)
                if key not in in_flight:
                    continue
                in_flight.discard(key)
                counts.done += 1
                got = True
                on_result(msg)
                if progress:
                    progress(counts)
            now = clock()
            if got:
                last_progress = now
            elif now - last_progress > idle_timeout_s:
                raise Unavailable(f"{len(in_flight)} task(s) in flight got no result for "
                                  f"{idle_timeout_s:.0f} s: {sorted(in_flight)[:5]}")

    for key, msg in tasks:
        stored = resumed(key) if resumed else None
        if stored is not None:
            counts.resumed += 1
            counts.done += 1
            on_result(stored)
            continue
        if key in in_flight:
            raise InvalidInput("task key", f"{key!r} is published twice in one run")
        drain(window - 1)
        send(key, msg() if callable(msg) else msg)
        in_flight.add(key)
        counts.published += 1
        counts.max_in_flight = max(counts.max_in_flight, len(in_flight))
        if len(in_flight) == 1:
            last_progress = clock()
    drain(0)
    return counts


class ResultStream:
    """One run's results on a result topic, read incrementally (one consumer for the stage).

    The consumer assigns every partition itself (no group join) and reads from the beginning,
    keeping only messages of this run (``job.job_id`` and ``job.run_id``), exactly as
    :func:`collect` does — but it hands results out as they come instead of keeping them.
    """

    def __init__(self, settings: Settings, topic: str, result_type: type[R], job: common_pb2.JobRef,
                 poll_ms: int = 500) -> None:
        self.result_type = result_type
        self.job = (job.job_id, job.run_id)
        self.poll_ms = poll_ms
        self.consumer = KafkaConsumer(**settings.kafka_options(), enable_auto_commit=False,
                                      group_id=None, consumer_timeout_ms=1000)
        parts = self.consumer.partitions_for_topic(topic) or {0}
        self.consumer.assign([TopicPartition(topic, p) for p in parts])
        self.consumer.seek_to_beginning()

    def __call__(self) -> list[R]:
        out: list[R] = []
        for _tp, records in self.consumer.poll(timeout_ms=self.poll_ms).items():
            for rec in records:
                msg = self.result_type()
                try:
                    msg.ParseFromString(rec.value or b"")
                except Exception:  # noqa: BLE001 - someone else's garbage on the topic
                    continue
                if (msg.job.job_id, msg.job.run_id) == self.job:
                    out.append(msg)
        return out

    def close(self) -> None:
        self.consumer.close()


class Publisher:
    """An acks=all producer that sends one task at a time (the window bounds what is pending)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.producer = bus.producer(settings)

    def __call__(self, key: str, message: Message) -> None:
        self.producer.send(self.topic, key=key.encode(), value=message.SerializeToString()).get(timeout=30)

    def close(self) -> None:
        self.producer.close()


def stored_result(store: ObjectStore, marker_of: Callable[[str], str],
                  result_type: type[R]) -> Callable[[str], R | None]:
    """``resumed`` for :func:`run_windowed`: a task's result from its worker's commit marker
    (``marker_of(key)``; the worker writes the serialized result there, last)."""

    def load(key: str) -> R | None:
        marker = marker_of(key)
        if not store.exists(marker):
            return None
        return result_type.FromString(store.get_bytes(marker))

    return load


def lean_tile_result(result: tasks_pb2.TileResult) -> tasks_pb2.TileResult:
    """What the flow keeps of a tile result: its id, bounds, status and output references
    (stage seconds and warnings are folded into totals as the result arrives)."""
    return tasks_pb2.TileResult(job=result.job, tile=result.tile, status=result.status, error=result.error,
                                ard=result.ard, footprints=result.footprints,
                                footprint_count=result.footprint_count)


def iter_batches(footprints: gpd.GeoDataFrame, batch_size: int) -> Iterator[gpd.GeoDataFrame]:
    """:func:`make_batches`, one batch at a time (same order, same batches)."""
    if batch_size <= 0:
        raise InvalidInput("batch_size", "must be positive")
    if footprints.empty:
        return
    order = np.argsort(footprints.geometry.hilbert_distance(), kind="stable")
    for i in range(0, len(order), batch_size):
        yield footprints.iloc[order[i : i + batch_size]].reset_index(drop=True)


def iter_tile_tasks(job: common_pb2.JobRef, tiles: Iterable[Tile], source: common_pb2.ImagerySource,
                    segmentation: SegmentationOptions, halo_px: int, segment: bool,
                    area_stats: common_pb2.ObjectRef | None = None,
                    landcover: common_pb2.LandCoverFilter | None = None,
                    ) -> Iterator[tuple[str, tasks_pb2.TileTask]]:
    """:func:`tile_tasks`, one at a time."""
    options = options_to_proto(segmentation, common_pb2.SegmentationOptions)
    for t in tiles:
        yield t.tile_id, tasks_pb2.TileTask(job=job, tile=tile_to_proto(t), source=source, halo_px=halo_px,
                                            segment=segment, area_stats=area_stats, landcover=landcover,
                                            segmentation=options)


class TileTally:
    """Tile results folded as they arrive: stage seconds and warnings summed, a lean copy
    (:func:`lean_tile_result`) of each result kept; :meth:`finish` applies the rules of
    :func:`split_tile_results`."""

    def __init__(self, order: dict[str, int] | None = None) -> None:
        #: tile id → position in the job's tile order (kept results come back in that order).
        self.order = order or {}
        self.kept: list[tasks_pb2.TileResult] = []
        self.failed: list[tasks_pb2.TileResult] = []
        self.warnings: list[str] = []
        self.stage_seconds: dict[str, float] = {}
        self.mapped = False

    def __call__(self, r: tasks_pb2.TileResult) -> None:
        for k, v in r.stage_seconds.items():
            self.stage_seconds[k] = self.stage_seconds.get(k, 0.0) + v
        self.warnings.extend(r.warnings)
        if r.status == tasks_pb2.TASK_STATUS_FAILED:
            self.failed.append(lean_tile_result(r))
            return
        self.mapped |= r.status == tasks_pb2.TASK_STATUS_SUCCEEDED
        if r.status == tasks_pb2.TASK_STATUS_EMPTY:
            self.warnings.append(f"tile {r.tile.tile_id}: no imagery (under 1 % valid pixels), nothing mapped there")
        self.kept.append(lean_tile_result(r))

    def finish(self) -> tuple[list[tasks_pb2.TileResult], list[str]]:
        """Kept (lean) results and the job's warnings.

        Raises:
            RuntimeError: as :func:`split_tile_results`.
        """
        faults = [r for r in self.failed if r.error.code != common_pb2.ERROR_CODE_INVALID_ARGUMENT]
        if faults or (self.failed and not self.mapped):
            first = (faults or self.failed)[0]
            raise RuntimeError(f"{len(self.failed)} tile(s) failed; {first.tile.tile_id}: {error_text(first.error)}")
        skipped = [f"tile {r.tile.tile_id} skipped: {error_text(r.error)}" for r in self.failed]
        end = len(self.order)
        return (sorted(self.kept, key=lambda r: (self.order.get(r.tile.tile_id, end), r.tile.tile_id)),
                skipped + self.warnings)


class BatchTally:
    """Building batch results folded as they arrive: the part's URI, counts and stage seconds;
    :meth:`finish` fails the job when a batch failed (as :func:`collect` callers did)."""

    def __init__(self) -> None:
        self.parts: list[tasks_pb2.BuildingBatchResult] = []
        self.failed: list[tasks_pb2.BuildingBatchResult] = []
        self.buildings = 0
        self.stage_seconds: dict[str, float] = {}

    def __call__(self, r: tasks_pb2.BuildingBatchResult) -> None:
        for k, v in r.stage_seconds.items():
            self.stage_seconds[k] = self.stage_seconds.get(k, 0.0) + v
        if r.status != tasks_pb2.TASK_STATUS_SUCCEEDED:
            self.failed.append(tasks_pb2.BuildingBatchResult(batch_id=r.batch_id, status=r.status, error=r.error))
            return
        self.buildings += r.building_count
        self.parts.append(tasks_pb2.BuildingBatchResult(batch_id=r.batch_id, buildings=r.buildings,
                                                        building_count=r.building_count, status=r.status))

    def finish(self) -> list[tasks_pb2.BuildingBatchResult]:
        """The batches' lean results, in batch order.

        Raises:
            RuntimeError: a batch failed (the message names the first).
        """
        if self.failed:
            first = self.failed[0]
            raise RuntimeError(f"{len(self.failed)} building batch(es) failed; batch {first.batch_id}: "
                               f"{error_text(first.error)}")
        return sorted(self.parts, key=lambda r: r.batch_id)


def cell_order(cell: str) -> tuple[int, int]:
    """Sort key of a ``"z-x-y"`` cell (or a ``<tms>-z-x-y`` tile id): zoom, then its Morton
    (Z-order) index, so consecutive cells are mostly neighbours."""
    z, x, y = (int(v) for v in cell.rsplit("-", 3)[-3:])
    code = 0
    for bit in range(z):
        code |= ((x >> bit) & 1) << (2 * bit) | ((y >> bit) & 1) << (2 * bit + 1)
    return z, code


def _adjacent(a: str, b: str) -> bool:
    """Whether two cells (``z-x-y`` or ``<tms>-z-x-y``) of one zoom touch (edge or corner)."""
    za, xa, ya = (int(v) for v in a.rsplit("-", 3)[-3:])
    zb, xb, yb = (int(v) for v in b.rsplit("-", 3)[-3:])
    return za == zb and abs(xa - xb) <= 1 and abs(ya - yb) <= 1


def cell_batches(cells: Iterable[str], read: Callable[[str], gpd.GeoDataFrame],
                 batch_size: int) -> Iterator[tuple[str, gpd.GeoDataFrame]]:
    """Batches of neighbours, one spatial cell at a time (cells in Z-order, Hilbert order inside
    each); a cell's last, partial batch is topped up from the next cell when that cell touches
    it (a batch never spans distant places, so it needs few image tiles). Batch ids
    ``<cell>-<nnnn>`` (the cell that completes the batch) are stable, so a resumed job finds
    its finished batches.

    Raises:
        InvalidInput: ``batch_size`` below one.
    """
    if batch_size <= 0:
        raise InvalidInput("batch_size", "must be positive")
    carry: gpd.GeoDataFrame | None = None
    last, i = "", 0
    for cell in sorted(cells, key=cell_order):
        frame = read(cell)
        if frame.empty:
            continue
        if carry is not None and len(carry) and not _adjacent(last, cell):
            yield f"{last}-{i:04d}", carry.reset_index(drop=True)
            carry = None
        last, i = cell, 0
        frame = frame.iloc[np.argsort(frame.geometry.hilbert_distance(), kind="stable")]
        if carry is not None and len(carry):
            frame = gpd.GeoDataFrame(pd.concat([carry, frame], ignore_index=True), geometry="geometry",
                                     crs=frame.crs)
        full = len(frame) // batch_size * batch_size
        for start in range(0, full, batch_size):
            yield f"{cell}-{i:04d}", frame.iloc[start : start + batch_size].reset_index(drop=True)
            i += 1
        carry = frame.iloc[full:]
    if carry is not None and len(carry):
        yield f"{last}-{i:04d}", carry.reset_index(drop=True)
