"""The fault table of docs/reliability.md (issue 19, item 3): kill -9 components of the local
stack during a job and compare the job's buildings table with a fault-free run's.

Three jobs on the same input, on the running local stack (`urbanfabric stack up`):

1. **baseline** — no fault;
2. **components** — while it runs, each component in ``--kill`` is sent SIGKILL in turn (its
   whole process group), the next only after the supervisor has brought the previous one back
   to healthy; tile-stage components are killed while tiles are being processed, the others
   while building batches are;
3. **flow runner** — the flow-run process (``flows``) is killed mid-job; after the supervisor
   restarts it, the job is resumed with the same ``job_id`` (finished tiles and batches are not
   redone).

Each faulted table is compared with the baseline: same building ids, no duplicates, and every
column equal (numbers bit for bit). Input: the 4,562 Xiamen footprints with heights plus a
copy shifted 0.04° east (off the imagery: those tiles are EMPTY), with ``--on-imagery`` (600)
of the originals kept, so ≥ 5,000 buildings and ≥ 16 tiles; the imagery of the sample source
gives those roofs their chips and heights their image evidence.

    PYTHONPATH=.:services/lib .venv/bin/python bench/faults.py --json bench/results/faults.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from urbanfabric.cli.demo import DEPLOYMENT, run_map_area
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.object_store import ObjectStore
from urbanfabric.runtime.jobs import new_job_id
from urbanfabric.settings import Settings
from urbanfabric.stack import Stack

XIAMEN = Path(os.environ.get("URBANFABRIC_SHARED_DATA", "/work/shared/data")) / "footprints/xiamen-z18/buildings.json"
TILE_STAGE = ("tile_worker", "acquisition", "calibration", "segmentation")
DEFAULT_KILLS = ("tile_worker", "acquisition", "calibration", "building_worker", "materials", "attributes",
                 "intensity", "modelserver", "kafka", "objectstore")


@dataclass
class Kill:
    component: str
    at_s: float = float("nan")          # seconds after the job started
    back_after_s: float = float("nan")  # until the supervisor had it healthy again
    progress: str = ""
    injected: bool = False


@dataclass
class Outcome:
    name: str
    job_id: str
    state: str
    wall_s: float
    rows: int = 0
    duplicates: int = 0
    missing_vs_baseline: int = 0
    extra_vs_baseline: int = 0
    differing_cells: int = 0
    differing_columns: list[str] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    note: str = ""


def footprints_file(dest: Path, on_imagery: int) -> Path:
    """``on_imagery`` of the Xiamen footprints (a fixed sample: image evidence and roof chips
    cost ≈ 0.2 s per building on this machine) and all of them shifted off the imagery (cheap:
    no chip, the reason says so), as GeoParquet."""
    base = gpd.read_file(XIAMEN)[["geometry"]]
    shifted = base.copy()
    base = base.sample(n=min(on_imagery, len(base)), random_state=0).sort_index()
    shifted["geometry"] = shifted.geometry.translate(xoff=0.04)
    out = gpd.GeoDataFrame(pd.concat([base, shifted], ignore_index=True), geometry="geometry", crs=base.crs)
    path = dest / "fault_footprints.parquet"
    out.to_parquet(path)
    return path


def progress(store: ObjectStore, job_id: str) -> tuple[int, int]:
    """(tiles done, batches done) from the workers' markers."""
    root = JobLayout(job_id).root
    keys = store.list(f"{root}/")
    tiles = sum(1 for k in keys if "/tiles/" in k and k.endswith("_SUCCESS"))
    batches = sum(1 for k in keys if "/buildings/batch=" in k and k.endswith("_SUCCESS"))
    return tiles, batches


def kill(stack: Stack, name: str, timeout_s: float = 240) -> float:
    """SIGKILL a component's process group; seconds until it is healthy again (NaN: never)."""
    row = {r.name: r for r in stack.status()}[name]
    if not row.pid:
        return float("nan")
    os.killpg(row.pid, signal.SIGKILL)
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        time.sleep(1)
        now = {r.name: r for r in stack.status()}[name]
        if now.healthy and now.pid != row.pid:
            return time.time() - t0
    return float("nan")


def table(store: ObjectStore, job_id: str) -> gpd.GeoDataFrame:
    return gpd.read_parquet(io.BytesIO(store.get_bytes(JobLayout(job_id).buildings)))


def compare(outcome: Outcome, got: gpd.GeoDataFrame, base: gpd.GeoDataFrame) -> None:
    outcome.rows = len(got)
    outcome.duplicates = int(got["building_id"].duplicated().sum())
    ids, want = set(got["building_id"]), set(base["building_id"])
    outcome.missing_vs_baseline, outcome.extra_vs_baseline = len(want - ids), len(ids - want)
    a = base.drop_duplicates("building_id").set_index("building_id")
    b = got.drop_duplicates("building_id").set_index("building_id")
    common = a.index.intersection(b.index)
    a, b = a.loc[common], b.loc[common]
    cells, cols = 0, []
    for col in a.columns:
        if col == "job_id":  # differs by construction
            continue
        if col == "geometry":
            same = a.geometry.geom_equals_exact(b.geometry, 0).to_numpy()
        else:
            x, y = a[col].to_numpy(), b[col].to_numpy()
            try:
                same = (x == y) | (pd.isna(x) & pd.isna(y))
            except (TypeError, ValueError):
                same = np.array([str(p) == str(q) for p, q in zip(x, y)])
        n = int((~np.asarray(same, dtype=bool)).sum())
        if n:
            cells += n
            cols.append(col)
    outcome.differing_cells, outcome.differing_columns = cells, cols


def spec(job_id: str, footprints: Path) -> dict[str, Any]:
    return {"spec": {"footprints": str(footprints), "imagery": "sample:xiamen-z18", "job_id": job_id,
                     "batch_size": 250}}


def run_job(settings: Settings, name: str, footprints: Path) -> tuple[Outcome, float]:
    job_id = new_job_id()
    t0 = time.time()
    _, state = run_map_area(settings, spec(job_id, footprints), timeout_s=3600)
    return Outcome(name, job_id, state.type.value, round(time.time() - t0, 1)), t0


def components_run(settings: Settings, stack: Stack, store: ObjectStore, footprints: Path,
                   kills: list[str]) -> Outcome:
    job_id = new_job_id()
    box: dict[str, Any] = {}

    def go() -> None:
        box["t0"] = time.time()
        _, box["state"] = run_map_area(settings, spec(job_id, footprints), timeout_s=3600)
        box["t1"] = time.time()

    th = threading.Thread(target=go, daemon=True)
    th.start()
    while "t0" not in box:
        time.sleep(0.2)
    done: list[Kill] = []
    for name in kills:
        k = Kill(name)
        tile_stage = name in TILE_STAGE
        while th.is_alive():
            tiles, batches = progress(store, job_id)
            # Tile-stage parts die while tiles are in flight; the rest once batches flow.
            if (tile_stage and tiles >= 1) or (not tile_stage and batches >= 1):
                break
            time.sleep(1)
        if not th.is_alive():
            k.progress = "job had finished"
            done.append(k)
            continue
        tiles, batches = progress(store, job_id)
        k.at_s, k.progress, k.injected = round(time.time() - box["t0"], 1), f"{tiles} tiles, {batches} batches done", True
        print(f"kill -9 {name} at {k.at_s} s ({k.progress})", flush=True)
        k.back_after_s = round(kill(stack, name), 1)
        print(f"  {name} healthy again after {k.back_after_s} s", flush=True)
        done.append(k)
    th.join()
    out = Outcome("components", job_id, box["state"].type.value, round(box["t1"] - box["t0"], 1), kills=done)
    return out


def flow_runner_run(settings: Settings, stack: Stack, store: ObjectStore, footprints: Path) -> Outcome:
    """Kill the flow runner once batches flow, then resume the job with its id."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    job_id = new_job_id()
    t0 = time.time()
    with temporary_settings({PREFECT_API_URL: settings.prefect_api_url,
                             PREFECT_API_AUTH_STRING: settings.prefect_auth or None}):
        run_deployment(DEPLOYMENT, parameters=spec(job_id, footprints), timeout=0)
    k = Kill("flows")
    while time.time() - t0 < 1800:
        tiles, batches = progress(store, job_id)
        if batches >= 1:
            break
        time.sleep(1)
    tiles, batches = progress(store, job_id)
    k.at_s, k.progress, k.injected = round(time.time() - t0, 1), f"{tiles} tiles, {batches} batches done", True
    print(f"kill -9 flows at {k.at_s} s ({k.progress})", flush=True)
    k.back_after_s = round(kill(stack, "flows"), 1)
    print(f"  flows healthy again after {k.back_after_s} s; resuming {job_id}", flush=True)
    _, state = run_map_area(settings, spec(job_id, footprints), timeout_s=3600)
    return Outcome("flow runner", job_id, state.type.value, round(time.time() - t0, 1), kills=[k],
                   note="resumed with the same job_id after the restart")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kill", default=",".join(DEFAULT_KILLS), help="components to kill in the components run")
    ap.add_argument("--skip-flow-runner", action="store_true")
    ap.add_argument("--on-imagery", type=int, default=600, help="footprints kept on the imagery")
    ap.add_argument("--baseline-job", default="", help="reuse a finished fault-free job of the same input")
    ap.add_argument("--baseline-wall-s", type=float, default=float("nan"), help="its wall time, when job.json lacks it")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    stack = Stack()
    if not all(r.healthy for r in stack.status()):
        print("the local stack is not up and healthy: run `urbanfabric stack up` first", file=sys.stderr)
        return 2
    settings = Settings.load()
    store = ObjectStore(settings)
    with tempfile.TemporaryDirectory() as tmp:
        fp = footprints_file(Path(tmp), args.on_imagery)
        print(f"input: {len(gpd.read_parquet(fp)):,} footprints", flush=True)
        if args.baseline_job:
            # A fault-free job on the same input that already ran (its wall time from job.json).
            doc = json.loads(store.get_bytes(JobLayout(args.baseline_job).job_json))
            base = Outcome("baseline", args.baseline_job, doc.get("status", "").upper().replace("SUCCEEDED", "COMPLETED"),
                           round(float(doc["finished"]) - float(doc["started"]), 1) if "finished" in doc
                           else args.baseline_wall_s)
        else:
            base, _ = run_job(settings, "baseline", fp)
        print(f"baseline: {base.state} in {base.wall_s} s", flush=True)
        ref = table(store, base.job_id)
        base.rows = len(ref)
        base.duplicates = int(ref["building_id"].duplicated().sum())
        outcomes = [base]
        faulted = [components_run(settings, stack, store, fp, [k for k in args.kill.split(",") if k])]
        if not args.skip_flow_runner:
            faulted.append(flow_runner_run(settings, stack, store, fp))
        for o in faulted:
            if o.state == "COMPLETED":
                compare(o, table(store, o.job_id), ref)
            outcomes.append(o)
    print("| run | state | wall s | extra s | rows | duplicates | missing | extra | differing cells |")
    print("|---|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        extra = "" if o is base else f"{o.wall_s - base.wall_s:+.1f}"
        print(f"| {o.name} | {o.state} | {o.wall_s} | {extra} | {o.rows} | {o.duplicates} | "
              f"{o.missing_vs_baseline} | {o.extra_vs_baseline} | {o.differing_cells} {o.differing_columns or ''} |")
    print("\n| killed | at s | progress then | healthy again after s |")
    print("|---|---|---|---|")
    for o in faulted:
        for k in o.kills:
            print(f"| {k.component} | {k.at_s} | {k.progress} | {k.back_after_s} |")
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2, default=str) + "\n")
    ok = all(o.state == "COMPLETED" and not (o.duplicates or o.missing_vs_baseline or o.extra_vs_baseline
                                             or o.differing_cells) for o in outcomes)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
