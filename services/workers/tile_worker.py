"""Tile worker: consumes TileTasks and calls Acquisition → Calibration → Segmentation.

Run several of these: they share the ``urbanfabric-tiles`` consumer group, so Kafka spreads the
tiles of a job across them.
"""

from __future__ import annotations

import time

from urbanfabric.runtime import bus
from urbanfabric.runtime.connections import call, stub
from urbanfabric.settings import Settings
from urbanfabric.errors import EmptyArea, InvalidInput
from urbanfabric.runtime.grpc_service import DEFAULT_DEADLINES
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.v1 import acquisition_pb2, calibration_pb2, segmentation_pb2, tasks_pb2

#: Tiles with less imagery than this are reported EMPTY instead of being segmented.
MIN_VALID_FRACTION = 0.01


def validate(task: tasks_pb2.TileTask) -> None:
    for path, value in (("job.job_id", task.job.job_id), ("tile.tile_id", task.tile.tile_id),
                        ("source.catalog_uri", task.source.catalog_uri)):
        if not value:
            raise InvalidInput(path, "is required")


def make_handler(settings: Settings):
    acq, cal, seg = (stub(settings, s) for s in ("acquisition", "calibration", "segmentation"))
    deadline = DEFAULT_DEADLINES["tile"]

    def handle(task: tasks_pb2.TileTask) -> tasks_pb2.TileResult:
        result = tasks_pb2.TileResult(job=task.job, tile=task.tile)
        t0 = time.perf_counter()
        try:
            fetched = call(acq.FetchTile, acquisition_pb2.FetchTileRequest(
                job=task.job, tile=task.tile, source=task.source, halo_px=task.halo_px), deadline)
        except EmptyArea:
            result.status = tasks_pb2.TASK_STATUS_EMPTY
            return result
        result.raw.CopyFrom(fetched.raw)
        result.warnings.extend(fetched.warnings)
        result.stage_seconds["acquisition"] = time.perf_counter() - t0
        if fetched.valid_fraction < MIN_VALID_FRACTION:
            result.status = tasks_pb2.TASK_STATUS_EMPTY
            return result
        t1 = time.perf_counter()
        calibrated = call(cal.Calibrate, calibration_pb2.CalibrateRequest(
            job=task.job, tile_id=task.tile.tile_id, raw=fetched.raw, area_stats=task.area_stats), deadline)
        result.ard.CopyFrom(calibrated.ard)
        result.stage_seconds["calibration"] = time.perf_counter() - t1
        if task.segment:
            t2 = time.perf_counter()
            segmented = call(seg.Segment, segmentation_pb2.SegmentRequest(
                job=task.job, tile=task.tile, ard=calibrated.ard, halo_px=task.halo_px,
                landcover=task.landcover, options=task.segmentation), deadline)
            result.mask.CopyFrom(segmented.mask)
            result.footprints.CopyFrom(segmented.footprints)
            result.footprint_count = segmented.footprint_count
            result.stage_seconds["segmentation"] = time.perf_counter() - t2
        result.status = tasks_pb2.TASK_STATUS_SUCCEEDED
        return result

    return handle


def spec(settings: Settings) -> bus.TaskSpec:
    def failed(task: tasks_pb2.TileTask, err) -> tasks_pb2.TileResult:
        return tasks_pb2.TileResult(job=task.job, tile=task.tile, status=tasks_pb2.TASK_STATUS_FAILED, error=err)

    return bus.TaskSpec(
        name="tiles",
        topic=bus.TILES,
        result_topic=bus.TILE_RESULTS,
        task_type=tasks_pb2.TileTask,
        result_type=tasks_pb2.TileResult,
        marker_key=lambda t: JobLayout(t.job.job_id).tile_done(t.tile.tile_id),
        result_key=lambda t: t.job.job_id,
        handle=make_handler(settings),
        failed=failed,
        validate=validate,
    )


def main() -> None:
    bus.worker_main("tile-worker", spec)


if __name__ == "__main__":
    main()
