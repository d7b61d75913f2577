"""``urbanfabric demo``: start the stack, map the sample area through Prefect, export, stop.

The run is started exactly as a user would from the Prefect UI: a flow run of the
``map-area/map-area`` deployment created through the Prefect API, executed by the stack's flow
runner, which publishes work to Kafka for the workers.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from urbanfabric.settings import Settings
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.object_store import ObjectStore

#: Four zoom-16 tiles (≈1.2 km × 1.1 km) in the middle of the Xiamen sample imagery.
SAMPLE_AREA = {"west": 118.0975342, "south": 24.4771500, "east": 118.1085205, "north": 24.4871486}
DEPLOYMENT = "map-area/map-area"


def run_map_area(settings: Settings, parameters: dict[str, Any], timeout_s: float = 1800) -> tuple[str, Any]:
    """Create a flow run of the deployment through the Prefect API and wait for it."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    # Prefect fixes its settings when first imported; a context override (not os.environ)
    # makes sure this call talks to the stack's server, whatever the process saw before.
    with temporary_settings({PREFECT_API_URL: settings.prefect_api_url,
                             PREFECT_API_AUTH_STRING: settings.prefect_auth or None}):
        run: Any = run_deployment(DEPLOYMENT, parameters=parameters, timeout=timeout_s, poll_interval=2)
    return str(run.id), run.state


def export(store: ObjectStore, job_id: str, dest: Path) -> list[Path]:
    """Copy a job's outputs (and a GeoJSON for quick viewing) to a local folder.

    The single-file ``buildings.parquet`` is copied when the job wrote it (the default, a
    convenience copy); otherwise the partitioned ``buildings/`` dataset is copied as it is and no
    GeoJSON is made (a job that skipped the copy is too big for one GeoJSON). The interactive
    ``map.html`` is copied when the job wrote one (``outputs/map.html``) and otherwise built here
    from the exported table (urbanfabric.outputs.webmap; issue 23).
    """
    import geopandas as gpd

    layout = JobLayout(job_id)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    single = store.exists(layout.buildings)
    files = [(layout.map_png, "map.png"), (layout.report, "report.md"), (layout.job_json, "job.json")]
    if single:
        files.insert(0, (layout.buildings, "buildings.parquet"))
    else:
        dataset = f"{layout.outputs}/buildings/"
        files += [(k, "buildings/" + k[len(dataset):]) for k in store.list(dataset)]
    for key, name in files:
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.get_bytes(key))
        written.append(path)
    if single:
        gdf = gpd.read_parquet(dest / "buildings.parquet")
        gdf.to_file(dest / "buildings.geojson", driver="GeoJSON")
        written.append(dest / "buildings.geojson")
    map_key = f"{layout.outputs}/map.html"
    if store.exists(map_key):
        (dest / "map.html").write_bytes(store.get_bytes(map_key))
        written.append(dest / "map.html")
    else:
        from urbanfabric.cli.open_map import build_map

        try:
            written.append(build_map(dest, rebuild=True))
        except Exception as exc:  # noqa: BLE001 - the table and report are exported either way
            print(f"map.html not built: {type(exc).__name__}: {exc}", file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> int:
    from urbanfabric.stack.commands import main as stack_main

    keep = os.environ.get("KEEP", "") not in ("", "0")
    out = Path(os.environ.get("OUT", "out"))
    t0 = time.time()
    print("== starting the local stack", flush=True)
    if stack_main(["up"]) != 0:
        print("stack failed to start; see .stack/logs/", file=sys.stderr)
        stack_main(["down"])
        return 1
    rc = 1
    try:
        settings = Settings.load()
        print(f"== stack up in {time.time() - t0:.0f} s; running map-area on the sample area", flush=True)
        from urbanfabric.runtime.jobs import new_job_id

        job_id = new_job_id()
        params = {"spec": {"area": SAMPLE_AREA, "imagery": "sample:xiamen-z18", "job_id": job_id}}
        t1 = time.time()
        run_id, state = run_map_area(settings, params)
        if not state.is_completed():
            print(f"flow run {run_id} ended {state.type.value}: {state.message}", file=sys.stderr)
            return 1
        store = ObjectStore(settings)
        summary = json.loads(store.get_bytes(JobLayout(job_id).job_json))["summary"]
        print(f"== flow run {run_id} completed in {time.time() - t1:.0f} s\n")
        from urbanfabric.outputs.summary import Summary

        print(Summary(**summary).text())
        dest = out / job_id
        files = export(store, job_id, dest)
        latest = out / "latest"
        if latest.is_symlink() or latest.exists():
            latest.unlink() if latest.is_symlink() else shutil.rmtree(latest)
        latest.symlink_to(job_id)
        print(f"\n== exported to {dest}/: " + ", ".join(p.name for p in files))
        if (dest / "map.html").exists():
            print(f"== interactive map: {dest / 'map.html'}   (open it with: urbanfabric open {job_id})")
        rc = 0
    finally:
        if keep:
            s = Settings.load()
            ui = s.prefect_api_url.removesuffix("/api")
            print(f"\nKEEP=1: the stack stays up. Prefect UI: {ui}   stop with: make down")
        else:
            print("== stopping the stack", flush=True)
            stack_main(["down"])
    print(f"== demo finished in {time.time() - t0:.0f} s")
    return rc
