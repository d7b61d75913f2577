"""kill -9 of every component during a job leaves its buildings table unchanged (issue 19, item 3).

The CI-sized fault test on the running local stack (``tests/e2e/fault_runs.py`` says which
job kills what): a segmented job over 16 imagery tiles with the tile-stage parts killed
(segmentation and the model server among them), a ≥ 5,000-building footprints job with the
building-stage parts, the broker and the object store killed, and the same footprints job with
its flow runner killed and then resumed by id. Each faulted table is compared with its
fault-free run's: same ids, no duplicates, every value equal. The extra time of each faulted
run is printed; ``URBANFABRIC_FAULTS_JSON=path`` also writes the runs there
(``bench/faults.py`` runs the same jobs outside pytest).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.e2e import fault_runs as fr
from urbanfabric.io.object_store import ObjectStore
from urbanfabric.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(fr.sample_missing() is not None,
                                                  reason=fr.sample_missing() or "")]

RUNS: list[fr.Outcome] = []
#: Read at import: the stack fixture drops URBANFABRIC_* variables it does not know.
JSON_OUT = os.environ.get("URBANFABRIC_FAULTS_JSON", "")


@pytest.fixture(scope="module")
def faults(stack):
    """The stack, its object store and the sample imagery registered; writes the runs' tables
    (printed, and as JSON where asked) after the module."""
    store = ObjectStore(stack)
    fr.register_sample_imagery(stack, store)
    yield stack, Stack(), store
    if RUNS:
        print("\n" + fr.markdown(RUNS))
        if JSON_OUT:
            Path(JSON_OUT).write_text(
                json.dumps([o.as_dict() for o in RUNS], indent=2, default=str) + "\n")


def _baseline(settings, store, name, spec) -> fr.Outcome:
    base = fr.run_job(settings, store, name, spec)
    RUNS.append(base)
    assert base.state == "COMPLETED", f"the fault-free {name} job did not complete: {base.state}"
    assert base.duplicates == 0
    return base


def _assert_same_table(out: fr.Outcome, base: fr.Outcome) -> None:
    RUNS.append(out)
    print(f"{out.name}: {out.state} in {out.wall_s} s, {out.extra_s:+.1f} s vs the fault-free run "
          f"({base.wall_s} s)")
    not_injected = [k.component for k in out.kills if not k.injected]
    assert not not_injected, f"the job finished before these were killed: {not_injected}"
    assert all(k.back_after_s == k.back_after_s for k in out.kills), \
        f"not healthy again: {[k.component for k in out.kills if k.back_after_s != k.back_after_s]}"
    assert out.state == "COMPLETED", f"{out.name}: the job ended {out.state}"
    assert (out.rows, out.duplicates, out.missing_vs_baseline, out.extra_vs_baseline) == (base.rows, 0, 0, 0), \
        f"{out.name}: {out.rows} rows ({base.rows} without faults), {out.duplicates} duplicated, " \
        f"{out.missing_vs_baseline} lost, {out.extra_vs_baseline} added"
    assert out.differing_cells == 0, f"{out.name}: {out.differing_cells} values differ in {out.differing_columns}"


@pytest.fixture(scope="module")
def footprints_job(faults, tmp_path_factory):
    settings, _, store = faults
    spec = fr.footprints_spec(fr.footprints_file(tmp_path_factory.mktemp("faults")))
    base = _baseline(settings, store, "footprints, fault-free", spec)
    assert base.rows >= 5000, base.rows
    return spec, base


def test_killing_each_tile_stage_part_leaves_the_segmented_table_unchanged(faults):
    settings, stack, store = faults
    base = _baseline(settings, store, "segmented, fault-free", fr.segmented_spec)
    assert base.imagery_tiles >= 16 and base.rows > 0, (base.imagery_tiles, base.rows)
    out = fr.faulted_run(settings, stack, store, "segmented, 5 tile-stage parts killed", fr.segmented_spec,
                         fr.TILE_KILLS, base)
    _assert_same_table(out, base)
    # The segmentation service died with tiles still to segment, not after the tile stage.
    first = out.kills[0]
    assert first.component == "segmentation" and first.batches_done == 0 and first.tiles_done < base.imagery_tiles


def test_killing_each_building_stage_part_the_broker_and_the_store_leaves_the_table_unchanged(faults,
                                                                                               footprints_job):
    settings, stack, store = faults
    spec, base = footprints_job
    out = fr.faulted_run(settings, stack, store, "footprints, 6 parts killed", spec, fr.BUILDING_KILLS, base)
    _assert_same_table(out, base)


def test_a_job_whose_flow_runner_was_killed_resumes_to_the_same_table(faults, footprints_job):
    settings, stack, store = faults
    spec, base = footprints_job
    _assert_same_table(fr.flow_runner_run(settings, stack, store, spec, base), base)


def test_the_comparison_sees_a_lost_a_doubled_and_a_changed_building():
    """The check itself can fail: each kind of damage a fault could do is counted."""
    import geopandas as gpd
    from shapely.geometry import box

    base = gpd.GeoDataFrame({"building_id": ["a", "b", "c"], "height_m": [3.0, float("nan"), 9.0],
                             "job_id": ["j1"] * 3}, geometry=[box(0, 0, 1, 1), box(1, 0, 2, 1), box(2, 0, 3, 1)],
                            crs="EPSG:4326")
    same = base.assign(job_id="j2")
    out = fr.Outcome("same", "j2", "COMPLETED", 1.0)
    fr.compare(out, same, base)
    assert out.same_table
    damaged = gpd.GeoDataFrame(
        {"building_id": ["a", "a", "c", "d"], "height_m": [3.0, 3.0, 9.000001, 1.0], "job_id": ["j2"] * 4},
        geometry=[box(0, 0, 1, 1), box(0, 0, 1, 1), box(2, 0, 3, 1.000001), box(5, 5, 6, 6)], crs="EPSG:4326")
    fr.compare(out, damaged, base)
    assert (out.rows, out.duplicates, out.missing_vs_baseline, out.extra_vs_baseline) == (4, 1, 1, 1)
    assert out.differing_cells == 2 and out.differing_columns == ["geometry", "height_m"]
    assert not out.same_table
