"""The learning loop on the demo area, recorded (issue 21, items 3–4): review → corrections → a run
of the Prefect ``fine-tune`` deployment per attribute (wall time, held-out verdict, version) →
``urbanfabric run --job J --refresh …`` (a ``map-area`` flow run) → what changed in the table.

    flock /tmp/uf-e2e.lock nice -n 19 env OMP_NUM_THREADS=1 PYTHONPATH=.:services/lib \\
        .venv/bin/python -m bench.learning_loop [--job JOB] [--keep] [--out bench/results/learning_loop.json]

Starts the local stack (unless ``--job`` names a job of a running one), maps the demo area, then:

* ``height``: the Xiamen sample's own measured heights (``footprints/xiamen-z18/buildings.json``,
  ``H``) as a corrections file joined by footprint overlap — real labels, though from the city
  height-xgb v4 was trained in;
* ``roof_material`` / ``roof_shape``: no labels exist for Xiamen roofs, so the reviewed buildings
  are all labelled with the class the served model predicts least — stand-in labels: their
  verdicts measure the plumbing, their wall times are real.

The corrections go to the object store next to the job and the fine-tune runs as the deployment a
user starts from the Prefect UI (``fine-tune/fine-tune``, executed by the stack's flow runner). Each
fine-tune is timed by the step itself (inputs, fine-tune + comparison, registration: read back from
the run's logs), by Prefect (the flow run's start to end) and by this script (the call, with
scheduling and polling); the refresh re-maps the job with the new versions (tiles resumed, batches
redone), and each refreshed column is compared building by building with the table before.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import geopandas as gpd
import pandas as pd

from urbanfabric.cli.main import main as cli
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.model_repository import SHARED_DATA
from urbanfabric.io.object_store import ObjectStore
from urbanfabric.settings import Settings

#: The buildings-table column each fine-tuned attribute writes.
COLUMNS = {"height": "height_m", "roof_material": "roof_material", "roof_shape": "roof_shape"}
CLASSES = {"roof_material": ["concrete_cement", "healthy_metal", "incomplete", "irregular_metal", "other"],
           "roof_shape": ["flat", "gable", "hip"]}


def _timed(argv: list[str]) -> tuple[int, float]:
    t0 = time.perf_counter()
    rc = cli(argv)
    return rc, time.perf_counter() - t0


def flow_run_result(settings: Settings, run_id: str, wait_s: float = 30) -> tuple[dict, float | None]:
    """The ``fine-tune`` flow run's result line (:data:`flows.fine_tune.RESULT_LINE`) read back from
    its logs through the Prefect API, and the run's own duration as Prefect recorded it (start to end,
    without the scheduling and polling around it)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from flows.fine_tune import RESULT_LINE

    with temporary_settings({PREFECT_API_URL: settings.prefect_api_url,
                             PREFECT_API_AUTH_STRING: settings.prefect_auth or None}), \
            get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
        seconds = (run.end_time - run.start_time).total_seconds() if run.start_time and run.end_time else None
        deadline = time.monotonic() + wait_s
        while True:  # the runner ships its logs in batches: the last one may come a moment later
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(run_id)])))
            lines = [log.message for log in logs if log.message.startswith(RESULT_LINE)]
            if lines or time.monotonic() > deadline:
                break
            time.sleep(2)
    return (json.loads(lines[-1][len(RESULT_LINE):]) if lines else {}), seconds


def fine_tune_through_prefect(settings: Settings, store: ObjectStore, job: str, attribute: str,
                              corrections: Path) -> dict:
    """A run of the ``fine-tune/fine-tune`` deployment (what a user starts from the Prefect UI) on
    the corrections put next to the job in the object store; its verdict, version and timings."""
    from urbanfabric.cli.demo import run_flow

    key = f"{JobLayout(job).root}/review/{attribute}/corrections.parquet"
    store.put_file(key, str(corrections))
    t0 = time.perf_counter()
    run_id, state = run_flow(settings, "fine-tune/fine-tune", {"job_id": job, "attribute": attribute,
                                                               "corrections": f"s3://{settings.bucket}/{key}"}, 1800)
    wall = time.perf_counter() - t0
    result, flow_s = flow_run_result(settings, run_id)
    comparison = dict(result.get("comparison") or {})
    heldout = [str(b) for b in comparison.pop("heldout_ids", [])]
    return {"heldout_ids": heldout,"flow_run": run_id, "state": state.type.value, "message": None if state.is_completed() else state.message,
            "wall_s": round(wall, 1), "flow_run_s": None if flow_s is None else round(flow_s, 1),
            "labels": len(pd.read_parquet(corrections)), "seconds": result.get("seconds"),
            "parent": result.get("parent"), "version": result.get("version"),
            "registered": bool(result.get("registered")), "comparison": comparison or None,
            "without_inputs": len(result.get("without_inputs") or {})}


def table_change(before: pd.DataFrame, after: pd.DataFrame, column: str, labelled: set[str] | None = None) -> dict:
    """What a refresh changed in one column, building by building (joined on ``building_id``)."""
    joined = before[["building_id", column]].merge(after[["building_id", column]], on="building_id",
                                                   suffixes=("_before", "_after"))
    old, new = joined[f"{column}_before"], joined[f"{column}_after"]
    out: dict = {"buildings": len(joined)}
    if labelled is not None:
        out["labelled_buildings"] = int(joined["building_id"].astype(str).isin(labelled).sum())
    if pd.api.types.is_numeric_dtype(old) and pd.api.types.is_numeric_dtype(new):
        both = old.notna() & new.notna()
        diff = (new - old)[both]
        out.update(changed=int((diff.abs() > 1e-6).sum()), mean_change=float(diff.mean()),
                   mean_abs_change=float(diff.abs().mean()), median=[float(old.median()), float(new.median())],
                   became_missing=int((old.notna() & new.isna()).sum()),
                   became_known=int((old.isna() & new.notna()).sum()))
        return out
    old, new = old.fillna("null").astype(str), new.fillna("null").astype(str)
    out.update(changed=int((old != new).sum()), counts=[old.value_counts().to_dict(), new.value_counts().to_dict()],
               transitions={f"{a} → {b}": int(n) for (a, b), n in
                            pd.crosstab(old, new).stack().items() if a != b and n})
    return out


def heldout_in_table(table: pd.DataFrame, corrections: pd.DataFrame, heldout: list[str], column: str) -> dict:
    """The fine-tune's held-out buildings scored on a job table's own values (what the served model
    wrote there), to set beside the comparison the fine-tune made on its inputs."""
    labels = corrections.assign(building_id=corrections["building_id"].astype(str)).set_index("building_id")["label"]
    rows = table.assign(building_id=table["building_id"].astype(str)).set_index("building_id")
    ids = [b for b in heldout if b in rows.index and b in labels.index]
    got, want = rows.loc[ids, column], labels.loc[ids]
    if column == "height_m":
        err = (got.astype(float) - want.astype(float)).dropna()
        return {"n": len(ids), "scored": len(err), "mae": float(err.abs().mean()), "bias": float(err.mean())}
    known = got.notna() & (got.astype(str) != "unknown")
    return {"n": len(ids), "unknown": int((~known).sum()),
            "accuracy": float((got.astype(str) == want.astype(str)).mean()) if ids else None,
            "accuracy_of_known": float((got[known].astype(str) == want[known].astype(str)).mean())
            if known.any() else None}


def stand_in_corrections(job: str, attribute: str, work: Path, n: int) -> Path:
    folder = work / attribute
    assert cli(["review", job, "--attribute", attribute, "--n", str(n), "--out", str(folder)]) == 0
    rows = pd.read_csv(folder / "review.csv", dtype={"building_id": str})
    counts = rows["prediction"].value_counts()
    rows["label"] = min(CLASSES[attribute], key=lambda c: counts.get(c, 0))
    rows.to_csv(folder / "review.csv", index=False)
    assert cli(["corrections", "check", str(folder / "review.csv"), "--job", job]) == 0
    return folder / "corrections.parquet"


def measured_heights(job: str, work: Path, store: ObjectStore) -> Path:
    table = gpd.read_parquet(store.get_file(JobLayout(job).buildings, work / "buildings.parquet"))
    west, south, east, north = table.total_bounds
    sample = gpd.read_file(SHARED_DATA / "footprints" / "xiamen-z18" / "buildings.json")
    sample = sample.cx[west:east, south:north][["H", "geometry"]]
    folder = work / "height"
    folder.mkdir(parents=True, exist_ok=True)
    sample.to_file(folder / "xiamen_heights.geojson", driver="GeoJSON")
    rc = cli(["corrections", "check", str(folder / "xiamen_heights.geojson"), "--job", job, "--attribute", "height",
              "--label-column", "H", "--out", str(folder)])
    assert rc in (0, 1), rc  # 1: some rows set aside (no building overlaps them, or two match one)
    return folder / "corrections.parquet"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--job", help="a mapped job of the running stack (default: start the stack, map the demo area)")
    p.add_argument("--keep", action="store_true", help="leave the stack up")
    p.add_argument("--n", type=int, default=200, help="buildings per review package")
    p.add_argument("--work", type=Path, default=Path("out/learning_loop"))
    p.add_argument("--out", type=Path, default=Path("bench/results/learning_loop.json"))
    args = p.parse_args()
    from urbanfabric.stack.commands import main as stack

    started = args.job is None
    # Wall times on a shared machine move with its load: say what it was.
    record: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    if started:
        t0 = time.perf_counter()
        assert stack(["up"]) == 0
        record["stack_up_s"] = round(time.perf_counter() - t0, 1)
    try:
        settings = Settings.load()
        store = ObjectStore(settings)
        job = args.job
        if job is None:
            from urbanfabric.cli.demo import SAMPLE_AREA, run_map_area
            from urbanfabric.runtime.jobs import new_job_id

            job = new_job_id()
            t0 = time.perf_counter()
            _, state = run_map_area(settings, {"spec": {"job_id": job, "area": SAMPLE_AREA,
                                                         "imagery": "sample:xiamen-z18"}})
            assert state.is_completed(), state.message
            record["map_s"] = round(time.perf_counter() - t0, 1)
        record["job"] = job
        work = args.work / job
        before = gpd.read_parquet(store.get_file(JobLayout(job).buildings, work / "before.parquet"))
        record["buildings"] = len(before)
        record["model_versions_before"] = json.loads(before["model_versions"].iloc[0])
        corrections = {"height": measured_heights(job, work, store)}
        for attribute in ("roof_material", "roof_shape"):
            corrections[attribute] = stand_in_corrections(job, attribute, work, args.n)
        record["fine_tune"] = {}
        refreshed: list[str] = []
        heldout: dict[str, list[str]] = {}
        for attribute, path in corrections.items():
            got = fine_tune_through_prefect(settings, store, job, attribute, path)
            heldout[attribute] = got.pop("heldout_ids")
            record["fine_tune"][attribute] = got
            print(attribute, json.dumps(got, default=str), flush=True)
            if got["registered"]:
                refreshed.append(attribute)
        if refreshed:
            rc, wall = _timed(["run", "--job", job, "--refresh", ",".join(refreshed)])
            doc = json.loads(store.get_bytes(JobLayout(job).job_json))
            after = gpd.read_parquet(store.get_file(JobLayout(job).buildings, work / "after.parquet"))
            labelled = {a: set(pd.read_parquet(p)["building_id"].astype(str)) for a, p in corrections.items()}
            record["refresh"] = {"attributes": refreshed, "exit": rc, "wall_s": round(wall, 1),
                                 "tiles": doc.get("qa", {}).get("tiles"), "batches": doc.get("qa", {}).get("batches"),
                                 "model_versions": json.loads(after["model_versions"].iloc[0]),
                                 "changes": {a: table_change(before, after, COLUMNS[a], labelled[a])
                                             for a in refreshed},
                                 "heldout_in_table": {a: [heldout_in_table(t, pd.read_parquet(corrections[a]),
                                                                           heldout[a], COLUMNS[a])
                                                          for t in (before, after)] for a in refreshed}}
            for attribute in set(refreshed) & set(CLASSES):
                label = str(pd.read_parquet(corrections[attribute])["label"].iloc[0])
                mine = [t[t["building_id"].astype(str).isin(labelled[attribute])] for t in (before, after)]
                record["refresh"]["changes"][attribute]["stand_in_label"] = label
                record["refresh"]["changes"][attribute]["labelled_share_of_label"] = [
                    float((t[COLUMNS[attribute]] == label).mean()) for t in mine]
        record["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except BaseException as exc:  # the record says where it stopped: nothing partial looks complete
        record["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if started and not args.keep:
            stack(["down"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2, default=str) + "\n")
        print(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
