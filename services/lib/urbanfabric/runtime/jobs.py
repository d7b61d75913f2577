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
from collections.abc import Callable, Iterable
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
    cons = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
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
    layout = JobLayout(job.job_id)
    # In tile order, not in the order results arrived: a building several tiles' imagery covers
    # gets its roof chip from the same tile in every run (it flipped roof classes between runs).
    ards = sorted((r for r in tile_results if r.ard.uri), key=lambda r: r.tile.tile_id)
    tile_boxes = gpd.GeoSeries.from_xy([], [], crs="EPSG:4326")
    if ards:
        boxes = [box(r.tile.bounds.min_x, r.tile.bounds.min_y, r.tile.bounds.max_x, r.tile.bounds.max_y)
                 for r in ards]
        tile_boxes = gpd.GeoSeries(boxes, crs=ards[0].tile.bounds.crs).to_crs("EPSG:4326")
    out = []
    for i, frame in enumerate(batches):
        batch_id = f"{i:05d}"
        key = layout.batch_footprints(batch_id)
        store.put_bytes(key, geoparquet_bytes(frame))
        images = []
        if len(tile_boxes):
            hit = tile_boxes.intersects(frame.geometry.union_all().envelope)
            images = [common_pb2.ObjectRef(uri=ards[j].ard.uri, media_type=ards[j].ard.media_type)
                      for j in np.flatnonzero(hit.to_numpy())]
        out.append((batch_id, tasks_pb2.BuildingBatch(
            job=job, batch_id=batch_id,
            footprints=common_pb2.ObjectRef(uri=store.s3_uri(key), media_type=PARQUET_MEDIA_TYPE),
            images=images, roof_model=roof_model, height_model=height_model, region=region,
            roof_shape_model=roof_shape_model, facade_model=facade_model,
            street_views=common_pb2.ObjectRef(uri=street_views) if street_views else None,
            measured_heights=common_pb2.ObjectRef(uri=measured_heights) if measured_heights else None,
            measured_heights_unit=measured_heights_unit, structure_model=structure_model)))
    return out
