"""The bounded window of a job's stages (issue 22, item 1): never more than ``window`` tasks
unanswered, each task folded once, finished tasks of a resumed job not published again, and a
stage that stops answering reported instead of waited on for ever. Fakes only: a list as the
topic, a worker that answers after a delay."""

from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry import box

from tests.fakes import MemoryStore
from urbanfabric.errors import InvalidInput, Unavailable
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.runtime import jobs
from urbanfabric.v1 import common_pb2, tasks_pb2

JOB = common_pb2.JobRef(job_id="j", run_id="r")


class FakeStage:
    """A topic pair and one worker: a published task is answered ``lag`` receive calls later
    (``duplicates``: answered twice; ``lost``: never answered)."""

    def __init__(self, lag: int = 2, duplicates: frozenset[str] = frozenset(), lost: frozenset[str] = frozenset()):
        self.lag, self.duplicates, self.lost = lag, duplicates, lost
        self.pending: list[tuple[int, str]] = []
        self.tick = 0
        self.sent: list[str] = []
        self.in_flight_seen = 0
        self.answered: set[str] = set()

    def send(self, key: str, msg: tasks_pb2.BuildingBatch) -> None:
        assert msg.batch_id == key
        self.sent.append(key)
        if key not in self.lost:
            self.pending.append((self.tick + self.lag, key))
        self.in_flight_seen = max(self.in_flight_seen, len(self.sent) - len(self.answered))

    def receive(self) -> list[tasks_pb2.BuildingBatchResult]:
        self.tick += 1
        due = [k for t, k in self.pending if t <= self.tick]
        self.pending = [(t, k) for t, k in self.pending if t > self.tick]
        out = []
        for k in due:
            self.answered.add(k)
            r = tasks_pb2.BuildingBatchResult(job=JOB, batch_id=k, building_count=10,
                                              status=tasks_pb2.TASK_STATUS_SUCCEEDED)
            out += [r, r] if k in self.duplicates else [r]
        # An earlier run's answer, and another job's, are on the topic too.
        out.append(tasks_pb2.BuildingBatchResult(job=JOB, batch_id="not-ours"))
        return out


def _tasks(n: int, built: list[str] | None = None):
    for i in range(n):
        key = f"{i:05d}"
        if built is None:
            yield key, tasks_pb2.BuildingBatch(job=JOB, batch_id=key)
        else:
            def make(k: str = key) -> tasks_pb2.BuildingBatch:
                built.append(k)
                return tasks_pb2.BuildingBatch(job=JOB, batch_id=k)
            yield key, make


@pytest.mark.parametrize("window", [1, 3, 8])
def test_at_most_window_tasks_are_in_flight_and_every_task_is_folded_once(window: int) -> None:
    stage = FakeStage(lag=3, duplicates=frozenset({"00002", "00007"}))
    tally = jobs.BatchTally()
    counts = jobs.run_windowed(_tasks(40), stage.send, stage.receive, lambda r: r.batch_id, tally,
                               window, idle_timeout_s=60)
    assert stage.in_flight_seen == window and counts.max_in_flight == window
    assert counts.published == counts.done == 40 and counts.resumed == 0
    assert tally.buildings == 400  # duplicates and other runs' results are not counted
    assert [r.batch_id for r in tally.finish()] == [f"{i:05d}" for i in range(40)]


def test_tasks_are_built_lazily_and_finished_ones_are_not_built_or_published() -> None:
    store = MemoryStore()
    layout = JobLayout("j")
    for done in ("00001", "00004"):
        store.put_bytes(layout.batch_done(done), tasks_pb2.BuildingBatchResult(
            batch_id=done, building_count=7, status=tasks_pb2.TASK_STATUS_SUCCEEDED).SerializeToString())
    built: list[str] = []
    stage = FakeStage(lag=1)
    tally = jobs.BatchTally()
    source = _tasks(6, built)
    counts = jobs.run_windowed(source, stage.send, stage.receive, lambda r: r.batch_id, tally, 2,
                               idle_timeout_s=60,
                               resumed=jobs.stored_result(store, layout.batch_done, tasks_pb2.BuildingBatchResult))
    assert built == stage.sent == ["00000", "00002", "00003", "00005"]
    assert counts.resumed == 2 and counts.done == 6 and tally.buildings == 4 * 10 + 2 * 7


def test_the_source_is_not_read_ahead_of_the_window() -> None:
    pulled: list[int] = []

    def source():
        for i in range(10):
            pulled.append(i)
            yield f"{i:05d}", tasks_pb2.BuildingBatch(job=JOB, batch_id=f"{i:05d}")

    stage = FakeStage(lag=5)
    seen: list[tuple[int, int]] = []

    def fold(r) -> None:
        seen.append((len(pulled), len(stage.answered)))

    jobs.run_windowed(source(), stage.send, stage.receive, lambda r: r.batch_id, fold, 2, idle_timeout_s=60)
    # When the first answer arrives, only window (+ the one waiting for a slot) tasks were read.
    assert seen[0][0] <= 3


def test_a_stage_that_stops_answering_is_reported_naming_the_tasks() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    stage = FakeStage(lag=1, lost=frozenset({"00003"}))
    with pytest.raises(Unavailable, match=r"1 task\(s\) in flight got no result for 30 s: \['00003'\]"):
        jobs.run_windowed(_tasks(5), stage.send, stage.receive, lambda r: r.batch_id, jobs.BatchTally(), 2,
                          idle_timeout_s=30, clock=clock)


def test_window_size_and_bad_counts() -> None:
    assert jobs.window_size(3, 4) == 12 and jobs.window_size(1) == jobs.IN_FLIGHT_PER_WORKER
    with pytest.raises(InvalidInput, match="worker_replicas"):
        jobs.window_size(0)
    with pytest.raises(InvalidInput, match="in_flight_per_worker"):
        jobs.window_size(2, 0)
    with pytest.raises(InvalidInput, match="window"):
        jobs.run_windowed([], print, list, str, print, 0, 1)
    stage = FakeStage()
    with pytest.raises(InvalidInput, match="published twice"):
        jobs.run_windowed([("a", tasks_pb2.BuildingBatch(batch_id="a"))] * 2, stage.send, stage.receive,
                          lambda r: r.batch_id, print, 4, 60)


def _tile(tile_id: str, status: int, code: int = 0, warnings: tuple[str, ...] = ()) -> tasks_pb2.TileResult:
    r = tasks_pb2.TileResult(job=JOB, status=status, warnings=list(warnings))
    r.tile.tile_id = tile_id
    r.stage_seconds["segmentation"] = 2.0
    r.footprints.uri = f"s3://b/{tile_id}.parquet"
    if code:
        r.error.code = code
        r.error.message = "bad"
    return r


def test_tile_tally_keeps_lean_results_and_applies_the_split_rules() -> None:
    results = [_tile("16-2", tasks_pb2.TASK_STATUS_SUCCEEDED, warnings=("scene fallback",)),
               _tile("16-1", tasks_pb2.TASK_STATUS_EMPTY),
               _tile("16-3", tasks_pb2.TASK_STATUS_FAILED, common_pb2.ERROR_CODE_INVALID_ARGUMENT)]
    tally = jobs.TileTally()
    for r in results:
        tally(r)
    kept, warnings = tally.finish()
    _, ref_warnings = jobs.split_tile_results(results)
    assert [r.tile.tile_id for r in kept] == ["16-1", "16-2"]
    ordered = jobs.TileTally({"16-2": 0, "16-1": 1})
    for r in results:
        ordered(r)
    assert [r.tile.tile_id for r in ordered.finish()[0]] == ["16-2", "16-1"]
    assert sorted(warnings) == sorted(ref_warnings)
    assert tally.stage_seconds == {"segmentation": 6.0}
    assert all(not r.stage_seconds and not r.warnings for r in kept)  # folded, not kept
    assert kept[1].footprints.uri == "s3://b/16-2.parquet"
    fault = jobs.TileTally()
    fault(_tile("16-1", tasks_pb2.TASK_STATUS_SUCCEEDED))
    fault(_tile("16-4", tasks_pb2.TASK_STATUS_FAILED, common_pb2.ERROR_CODE_INTERNAL))
    with pytest.raises(RuntimeError, match="1 tile.s. failed; 16-4: bad"):
        fault.finish()


def test_batch_tally_fails_the_job_naming_the_first_failed_batch() -> None:
    tally = jobs.BatchTally()
    tally(tasks_pb2.BuildingBatchResult(batch_id="00001", status=tasks_pb2.TASK_STATUS_SUCCEEDED))
    tally(tasks_pb2.BuildingBatchResult(batch_id="00002", status=tasks_pb2.TASK_STATUS_FAILED,
                                        error=common_pb2.Error(field="footprints", message="broken")))
    with pytest.raises(RuntimeError, match="1 building batch.es. failed; batch 00002: footprints: broken"):
        tally.finish()


def _frame(n: int, x0: float = 0.0) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"building_id": [f"b{x0}-{i}" for i in range(n)]},
                            geometry=[box(x0 + i * 1e-4, 0, x0 + i * 1e-4 + 5e-5, 5e-5) for i in range(n)],
                            crs="EPSG:4326")


def test_iter_batches_gives_the_batches_of_make_batches() -> None:
    frame = _frame(23).sample(frac=1.0, random_state=1)
    old = jobs.make_batches(frame, 5)
    new = list(jobs.iter_batches(frame, 5))
    assert [list(b["building_id"]) for b in old] == [list(b["building_id"]) for b in new]


def test_cell_batches_read_one_cell_at_a_time_top_up_partial_batches_and_keep_stable_ids() -> None:
    cells = {"14-2-1": _frame(7, 0.0), "14-1-1": _frame(3, 1.0), "14-9-9": _frame(0, 2.0)}
    reads: list[str] = []

    def read(cell: str) -> gpd.GeoDataFrame:
        reads.append(cell)
        return cells[cell]

    it = jobs.cell_batches(cells, read, 4)
    first = next(it)
    # 14-1-1's 3 buildings wait for one of 14-2-1's: the first batch is full.
    assert first[0] == "14-2-1-0000" and reads == ["14-1-1", "14-2-1"] and len(first[1]) == 4
    rest = list(it)
    assert [(k, len(f)) for k, f in rest] == [("14-2-1-0001", 4), ("14-2-1-0002", 2)]
    ids = [i for _, f in [first, *rest] for i in f["building_id"]]
    assert sorted(ids) == sorted([*cells["14-2-1"]["building_id"], *cells["14-1-1"]["building_id"]])
    assert [k for k, _ in jobs.cell_batches(cells, read, 4)] == ["14-2-1-0000", "14-2-1-0001", "14-2-1-0002"]
    assert jobs.cell_order("14-1-1") < jobs.cell_order("14-2-1") < jobs.cell_order("14-9-9")


def test_a_partial_batch_is_not_topped_up_from_a_distant_cell() -> None:
    cells = {"14-1-1": _frame(3, 0.0), "14-2-2": _frame(3, 1.0), "14-9-9": _frame(3, 2.0)}
    out = [(k, len(f)) for k, f in jobs.cell_batches(cells, cells.__getitem__, 4)]
    # 14-1-1 and 14-2-2 touch (corner): one full batch; 14-9-9 is far: its own batch.
    assert out == [("14-2-2-0000", 4), ("14-2-2-0001", 2), ("14-9-9-0000", 3)]
