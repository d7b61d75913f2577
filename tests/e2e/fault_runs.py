"""Fault runs on the local stack (issue 19, item 3): jobs during which components are sent
``kill -9``, and the comparison of their buildings table with a fault-free run's.

Shared by the CI fault test (``tests/e2e/test_faults.py``) and the longer bench
(``bench/faults.py``). Two jobs cover every component:

- **segmented** — an area of 16 zoom-16 tiles of the Xiamen sample imagery, segmented (no
  footprints given): the tile worker, acquisition, calibration, segmentation and the model
  server all work in its tile stage, and are killed there;
- **footprints** — ≥ 5,000 footprints: Xiamen footprints on those 16 tiles (their roofs get
  image chips and image evidence) plus copies shifted west off the imagery (no tile is
  fetched for them; each row says why it has no chip): the building worker, materials, attributes, intensity, the
  broker and the object store are killed while its building batches flow, and its flow runner
  is killed in a third run that is then resumed with the same ``job_id``.

A faulted table must equal its fault-free table: same building ids, none twice, every value of
every column but ``job_id`` equal (numbers bit for bit, geometry exactly).
"""

from __future__ import annotations

import io
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import geopandas as gpd
import numpy as np
import pandas as pd

from urbanfabric.cli.demo import DEPLOYMENT, run_map_area
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.model_repository import SHARED_DATA
from urbanfabric.io.object_store import ObjectStore
from urbanfabric.runtime.jobs import new_job_id
from urbanfabric.settings import Settings

XIAMEN = SHARED_DATA / "footprints/xiamen-z18"
#: Killed while tiles are in flight (segmentation first: it is the reason for this job).
TILE_KILLS = ("segmentation", "modelserver", "tile_worker", "acquisition", "calibration")
#: Killed while building batches flow.
BUILDING_KILLS = ("building_worker", "materials", "attributes", "intensity", "kafka", "objectstore")
#: The 4 × 4 zoom-16 tiles (x, y) of the sample with the fewest labelled buildings among those
#: whose every tile has imagery (137 of their 256 zoom-18 tiles; 660 labelled footprints).
SEGMENTED_TILES = (54264, 28165, 4, 4)
#: The sample imagery starts at this longitude (west edge of zoom-16 column 54264) and spans
#: ≈ 0.044° (8 columns): copies shifted west by SHIFT_DEG have no imagery.
IMAGERY_WEST = 54264 / 2**16 * 360 - 180
SHIFT_DEG = 0.045


def tile_box(x0: int, y0: int, cols: int, rows: int, zoom: int = 16) -> dict[str, float]:
    """The lon/lat box of zoom-``zoom`` tiles x0…x0+cols-1, y0…y0+rows-1, shrunk by ≈ 1 cm so
    that no neighbouring tile is touched."""
    n = 2.0 ** zoom

    def lat(y: int) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y / n))))

    eps = 1e-7
    return {"west": x0 / n * 360 - 180 + eps, "east": (x0 + cols) / n * 360 - 180 - eps,
            "north": lat(y0) - eps, "south": lat(y0 + rows) + eps}


SEGMENTED_AREA = tile_box(*SEGMENTED_TILES)


def sample_missing() -> str | None:
    """Why the fault jobs cannot run here (None: they can)."""
    for path in (XIAMEN / "buildings.json", XIAMEN / "tiles"):
        if not path.exists():
            return f"sample data not available: {path}"
    return None


def register_sample_imagery(settings: Settings, store: ObjectStore) -> None:
    """Register the sample source through the acquisition service as the flow would on first
    use, so that no baseline pays for the one-time registration."""
    from urbanfabric.imagery.samples import SAMPLE_SOURCES, catalog_key
    from urbanfabric.runtime.connections import call, stub
    from urbanfabric.v1 import acquisition_pb2

    if store.exists(catalog_key("xiamen-z18")):
        return
    folder, zoom = SAMPLE_SOURCES["xiamen-z18"]
    call(stub(settings, "acquisition").RegisterSource, acquisition_pb2.RegisterSourceRequest(
        source_id="xiamen-z18", path=str(SHARED_DATA / folder), zoom=zoom,
        format=acquisition_pb2.SOURCE_FORMAT_XYZ_TILES), 600)


def footprints_file(dest: Path, on_imagery: int = 200, total: int = 5000) -> Path:
    """``on_imagery`` Xiamen footprints lying inside :data:`SEGMENTED_AREA` (a fixed sample)
    plus copies of all of them shifted west off the imagery — by one sample width, then the
    easternmost again by two — up to at least ``total``, as GeoParquet.

    The copies are also moved north so that their lowest point is above the area's south edge:
    the job's box (the footprints' extent) then meets only the imagery tiles of the area's
    4 columns and the row above it, so the tile stage has ≈ 18 tiles with imagery to fetch and
    calibrate, not the sample's 70."""
    raw = gpd.read_file(XIAMEN / "buildings.json")[["geometry"]]
    raw = raw[raw.geometry.notna() & ~raw.geometry.is_empty].reset_index(drop=True)
    b, a = raw.geometry.bounds, SEGMENTED_AREA
    inside = raw[(b.minx > a["west"]) & (b.maxx < a["east"]) & (b.miny > a["south"]) & (b.maxy < a["north"])]
    on = inside.sample(n=min(on_imagery, len(inside)), random_state=0).sort_index()
    dy = a["south"] - b.miny.min() + 0.001
    first = raw.copy()
    first["geometry"] = first.geometry.translate(xoff=-SHIFT_DEG, yoff=dy)
    need = max(0, total - len(on) - len(first))
    east_first = raw.loc[b.maxx.sort_values(ascending=False, kind="stable").index[:need]]
    second = east_first.copy()
    second["geometry"] = second.geometry.translate(xoff=-2 * SHIFT_DEG, yoff=dy)
    out = gpd.GeoDataFrame(pd.concat([on, first, second], ignore_index=True), geometry="geometry", crs=raw.crs)
    # The copies are off the imagery, west of it, and north of the area's south edge.
    assert out.geometry.bounds["maxx"].iloc[len(on):].max() < IMAGERY_WEST
    assert out.geometry.bounds["miny"].min() > a["south"]
    path = dest / "fault_footprints.parquet"
    out.to_parquet(path)
    return path


def segmented_spec(job_id: str) -> dict[str, Any]:
    """The segmented job. Its faults are in the tile stage; the roof models are left out so
    that its ≈ 500 buildings do not pay for roof chips (the footprints job runs them), while
    the height model (v4) still reads each building's image evidence from the tile stage's ARD."""
    return {"spec": {"area": SEGMENTED_AREA, "imagery": "sample:xiamen-z18", "job_id": job_id,
                     "models": {"roof_material": "", "roof_shape": ""}}}


def footprints_spec(footprints: Path) -> Callable[[str], dict[str, Any]]:
    def spec(job_id: str) -> dict[str, Any]:
        return {"spec": {"footprints": str(footprints), "imagery": "sample:xiamen-z18", "job_id": job_id,
                         "batch_size": 250}}
    return spec


@dataclass
class Kill:
    component: str
    at_s: float = float("nan")          # seconds after the job started
    back_after_s: float = float("nan")  # until the supervisor had it healthy again
    tiles_done: int = 0
    batches_done: int = 0
    injected: bool = False

    @property
    def progress(self) -> str:
        return f"{self.tiles_done} tiles, {self.batches_done} batches done" if self.injected else "job had finished"


@dataclass
class Outcome:
    name: str
    job_id: str
    state: str
    wall_s: float
    baseline_wall_s: float = float("nan")
    rows: int = 0
    duplicates: int = 0
    missing_vs_baseline: int = 0
    extra_vs_baseline: int = 0
    differing_cells: int = 0
    differing_columns: list[str] = field(default_factory=list)
    imagery_tiles: int = 0
    kills: list[Kill] = field(default_factory=list)
    note: str = ""

    @property
    def extra_s(self) -> float:
        return self.wall_s - self.baseline_wall_s

    @property
    def same_table(self) -> bool:
        return self.state == "COMPLETED" and not (self.duplicates or self.missing_vs_baseline
                                                  or self.extra_vs_baseline or self.differing_cells)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "extra_s": round(self.extra_s, 1),
                "kills": [{**asdict(k), "progress": k.progress} for k in self.kills]}


def progress(store: ObjectStore, job_id: str) -> tuple[int, int]:
    """(tiles done, batches done) from the workers' markers."""
    keys = store.list(f"{JobLayout(job_id).root}/")
    tiles = sum(1 for k in keys if "/tiles/" in k and k.endswith("_SUCCESS"))
    batches = sum(1 for k in keys if "/buildings/batch=" in k and k.endswith("_SUCCESS"))
    return tiles, batches


def imagery_tiles(store: ObjectStore, job_id: str) -> int:
    """Tiles of the job that had imagery (calibrated: an ARD was written)."""
    return sum(1 for k in store.list(f"{JobLayout(job_id).root}/tiles/") if k.endswith("/ard.tif"))


def kill(stack: Any, name: str, timeout_s: float = 240) -> float:
    """SIGKILL a component's process group; seconds until it is healthy again (NaN: never)."""
    row = {r.name: r for r in stack.status()}[name]
    if not row.pid:
        return float("nan")
    os.killpg(row.pid, signal.SIGKILL)
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        time.sleep(0.5)
        now = {r.name: r for r in stack.status()}[name]
        if now.healthy and now.pid != row.pid:
            return time.time() - t0
    return float("nan")


def table(store: ObjectStore, job_id: str) -> gpd.GeoDataFrame:
    return gpd.read_parquet(io.BytesIO(store.get_bytes(JobLayout(job_id).buildings)))


def compare(outcome: Outcome, got: gpd.GeoDataFrame, base: gpd.GeoDataFrame) -> None:
    """Fill ``outcome``'s counts: rows, duplicate ids, ids lost or added, and the cells (of
    every column but ``job_id``) that differ from ``base`` on the common ids."""
    outcome.rows = len(got)
    outcome.duplicates = int(got["building_id"].duplicated().sum())
    ids, want = set(got["building_id"]), set(base["building_id"])
    outcome.missing_vs_baseline, outcome.extra_vs_baseline = len(want - ids), len(ids - want)
    a = base.drop_duplicates("building_id").set_index("building_id")
    b = got.drop_duplicates("building_id").set_index("building_id")
    common = a.index.intersection(b.index)
    a, b = a.loc[common], b.loc[common]
    cells, cols = 0, []
    for col in sorted(set(a.columns) | set(b.columns)):
        if col == "job_id":  # differs by construction
            continue
        if col not in a.columns or col not in b.columns:
            cells, cols = cells + len(common), [*cols, col]
            continue
        if col == a.geometry.name:
            same = a.geometry.geom_equals_exact(b.geometry, 0).to_numpy()
        else:
            x, y = a[col].to_numpy(), b[col].to_numpy()
            try:
                same = (x == y) | (pd.isna(x) & pd.isna(y))
            except (TypeError, ValueError):  # lists, dicts, arrays in a cell
                same = np.array([str(p) == str(q) for p, q in zip(x, y)])
        n = int((~np.asarray(same, dtype=bool)).sum())
        if n:
            cells += n
            cols.append(col)
    outcome.differing_cells, outcome.differing_columns = cells, cols


def start(settings: Settings, parameters: dict[str, Any]) -> None:
    """Create a flow run of the map-area deployment (as the UI does), without waiting."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: settings.prefect_api_url,
                             PREFECT_API_AUTH_STRING: settings.prefect_auth or None}):
        run_deployment(DEPLOYMENT, parameters=parameters, timeout=0)


def _run(settings: Settings, parameters: dict[str, Any], timeout_s: float) -> str:
    """Run the deployment and wait; the final state's type (COMPLETED, FAILED, …)."""
    _, state = run_map_area(settings, parameters, timeout_s=timeout_s)
    return str(state.type.value)


def run_job(settings: Settings, store: ObjectStore, name: str, spec: Callable[[str], dict[str, Any]],
            timeout_s: float = 3600) -> Outcome:
    """A fault-free job, timed."""
    job_id = new_job_id()
    t0 = time.time()
    state = _run(settings, spec(job_id), timeout_s)
    out = Outcome(name, job_id, state, round(time.time() - t0, 1))
    if state == "COMPLETED":
        ref = table(store, job_id)
        out.rows, out.duplicates = len(ref), int(ref["building_id"].duplicated().sum())
        out.imagery_tiles = imagery_tiles(store, job_id)
    return out


def faulted_run(settings: Settings, stack: Any, store: ObjectStore, name: str,
                spec: Callable[[str], dict[str, Any]], kills: tuple[str, ...], baseline: Outcome,
                timeout_s: float = 3600) -> Outcome:
    """The job again; each of ``kills`` is sent SIGKILL in turn, the next once the supervisor
    has the previous one healthy again. Tile-stage parts die once a tile is done, the others
    once a batch is; a kill is not injected when the job had finished by then."""
    job_id = new_job_id()
    t0 = time.time()
    box: dict[str, str] = {}
    waiter = threading.Thread(target=lambda: box.setdefault("state", _run(settings, spec(job_id), timeout_s)),
                              daemon=True)
    waiter.start()
    done: list[Kill] = []
    for component in kills:
        k = Kill(component)
        in_tiles = component in TILE_KILLS
        while waiter.is_alive():
            tiles, batches = progress(store, job_id)
            if (in_tiles and tiles >= 1) or (not in_tiles and batches >= 1):
                break
            time.sleep(0.5)
        if waiter.is_alive():
            k.tiles_done, k.batches_done = progress(store, job_id)
            k.at_s, k.injected = round(time.time() - t0, 1), True
            print(f"kill -9 {component} at {k.at_s} s ({k.progress})", flush=True)
            k.back_after_s = round(kill(stack, component), 1)
            print(f"  {component} healthy again after {k.back_after_s} s", flush=True)
        done.append(k)
    waiter.join()
    out = Outcome(name, job_id, box["state"], round(time.time() - t0, 1), baseline_wall_s=baseline.wall_s,
                  kills=done)
    _finish(out, store, baseline)
    return out


def flow_runner_run(settings: Settings, stack: Any, store: ObjectStore, spec: Callable[[str], dict[str, Any]],
                    baseline: Outcome, timeout_s: float = 3600) -> Outcome:
    """Kill the flow runner once batches flow, then resume the job with its id."""
    job_id = new_job_id()
    t0 = time.time()
    start(settings, spec(job_id))
    k = Kill("flows")
    while time.time() - t0 < timeout_s and progress(store, job_id)[1] < 1:
        time.sleep(0.5)
    k.tiles_done, k.batches_done = progress(store, job_id)
    k.at_s, k.injected = round(time.time() - t0, 1), True
    print(f"kill -9 flows at {k.at_s} s ({k.progress})", flush=True)
    k.back_after_s = round(kill(stack, "flows"), 1)
    print(f"  flows healthy again after {k.back_after_s} s; resuming {job_id}", flush=True)
    state = _run(settings, spec(job_id), timeout_s)
    out = Outcome("flow runner killed, job resumed", job_id, state, round(time.time() - t0, 1),
                  baseline_wall_s=baseline.wall_s, kills=[k], note="resumed with the same job_id after the restart")
    _finish(out, store, baseline)
    return out


def _finish(out: Outcome, store: ObjectStore, baseline: Outcome) -> None:
    if out.state == "COMPLETED":
        compare(out, table(store, out.job_id), table(store, baseline.job_id))
        out.imagery_tiles = imagery_tiles(store, out.job_id)


def markdown(outcomes: list[Outcome]) -> str:
    """The two tables of docs/reliability.md ("Faults") for these runs."""
    lines = ["| run | state | wall s | extra s vs its baseline | tiles with imagery | rows | duplicates | "
             "missing | extra | differing cells |", "|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        extra = "—" if math.isnan(o.baseline_wall_s) else f"{o.extra_s:+.1f}"
        diff = f"{o.differing_cells} {o.differing_columns}" if o.differing_cells else "0"
        lines.append(f"| {o.name} | {o.state} | {o.wall_s} | {extra} | {o.imagery_tiles} | {o.rows} | "
                     f"{o.duplicates} | {o.missing_vs_baseline} | {o.extra_vs_baseline} | {diff} |")
    lines += ["", "| run | killed | at s | progress then | healthy again after s |", "|---|---|---|---|---|"]
    for o in outcomes:
        for k in o.kills:
            lines.append(f"| {o.name} | {k.component} | {k.at_s} | {k.progress} | {k.back_after_s} |")
    return "\n".join(lines)
