"""The learning loop on the demo area, recorded (issue 21, items 3–4): review → corrections →
``urbanfabric learn`` per attribute (wall time, held-out verdict) → ``run --job J --refresh``.

    flock /tmp/uf-e2e.lock nice -n 19 env OMP_NUM_THREADS=1 PYTHONPATH=.:services/lib \\
        .venv/bin/python -m bench.learning_loop [--job JOB] [--keep] [--out bench/results/learning_loop.json]

Starts the local stack (unless ``--job`` names a job of a running one), maps the demo area, then:

* ``height``: the Xiamen sample's own measured heights (``footprints/xiamen-z18/buildings.json``,
  ``H``) as a corrections file joined by footprint overlap — real labels, though from the city
  height-xgb v4 was trained in;
* ``roof_material`` / ``roof_shape``: no labels exist for Xiamen roofs, so the reviewed buildings
  are all labelled with the class the served model predicts least — stand-in labels: their
  verdicts measure the plumbing, their wall times are real.

Each fine-tune is timed by the step itself (inputs, fine-tune + comparison, registration) and as a
whole; the refresh re-maps the job with the new versions (tiles resumed, batches redone).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import geopandas as gpd
import pandas as pd

from urbanfabric.cli.main import main as cli
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.model_repository import SHARED_DATA
from urbanfabric.io.object_store import ObjectStore
from urbanfabric.settings import Settings

CLASSES = {"roof_material": ["concrete_cement", "healthy_metal", "incomplete", "irregular_metal", "other"],
           "roof_shape": ["flat", "gable", "hip"]}


def _timed(argv: list[str]) -> tuple[int, float]:
    t0 = time.perf_counter()
    rc = cli(argv)
    return rc, time.perf_counter() - t0


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
    record: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
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
        corrections = {"height": measured_heights(job, work, store)}
        for attribute in ("roof_material", "roof_shape"):
            corrections[attribute] = stand_in_corrections(job, attribute, work, args.n)
        record["learn"] = {}
        refreshed = []
        for attribute, path in corrections.items():
            out = work / f"learn_{attribute}.json"
            rc, wall = _timed(["learn", job, "--attribute", attribute, "--corrections", str(path), "--json", str(out)])
            result = json.loads(out.read_text()) if out.exists() else {}
            record["learn"][attribute] = {"exit": rc, "wall_s": round(wall, 1), "labels": len(pd.read_parquet(path)),
                                          "seconds": result.get("seconds"), "version": result.get("version"),
                                          "comparison": {k: v for k, v in (result.get("comparison") or {}).items()
                                                         if k != "heldout_ids"},
                                          "without_inputs": len(result.get("without_inputs") or {})}
            if rc == 0:
                refreshed.append(attribute)
        if refreshed:
            rc, wall = _timed(["run", "--job", job, "--refresh", ",".join(refreshed)])
            doc = json.loads(store.get_bytes(JobLayout(job).job_json))
            after = gpd.read_parquet(store.get_file(JobLayout(job).buildings, work / "after.parquet"))
            record["refresh"] = {"attributes": refreshed, "exit": rc, "wall_s": round(wall, 1),
                                 "tiles": doc.get("qa", {}).get("tiles"), "batches": doc.get("qa", {}).get("batches"),
                                 "model_versions": json.loads(after["model_versions"].iloc[0]),
                                 "height_median_m": [float(before["height_m"].median()),
                                                     float(after["height_m"].median())],
                                 "roof_material_known": [int((before["roof_material"] != "unknown").sum()),
                                                          int((after["roof_material"] != "unknown").sum())]}
    finally:
        if started and not args.keep:
            stack(["down"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
