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
    return run_flow(settings, DEPLOYMENT, parameters, timeout_s)


def run_flow(settings: Settings, deployment: str, parameters: dict[str, Any], timeout_s: float = 1800
             ) -> tuple[str, Any]:
    """A flow run of ``deployment`` (``flow/deployment``) through the stack's Prefect API, waited for."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    # Prefect fixes its settings when first imported; a context override (not os.environ)
    # makes sure this call talks to the stack's server, whatever the process saw before.
    with temporary_settings({PREFECT_API_URL: settings.prefect_api_url,
                             PREFECT_API_AUTH_STRING: settings.prefect_auth or None}):
        run: Any = run_deployment(deployment, parameters=parameters, timeout=timeout_s, poll_interval=2)
    return str(run.id), run.state


def export(store: ObjectStore, job_id: str, dest: Path, table_format: str = "parquet") -> list[Path]:
    """Copy a finished job's outputs to a local folder (:func:`urbanfabric.outputs.export.export_job`:
    table, grids, maps, report, STAC with relative hrefs). A job written before ``map.html``
    was an output gets one built here from the exported table (urbanfabric.outputs.webmap).

    The export copies everything the job wrote, including ``viewer.html`` and
    ``buildings.pmtiles`` (the tile viewer, written at any size).

    Raises:
        InvalidInput: unknown ``table_format``, or the job has no complete outputs.
    """
    from urbanfabric.outputs.export import export_job

    result = export_job(store, job_id, dest, table_format)
    written = list(result.files)
    from urbanfabric.outputs.job_outputs import WEBMAP_MAX_BUILDINGS

    doc = json.loads((dest / "job.json").read_text())
    small = int((doc.get("summary") or {}).get("buildings", 0)) <= WEBMAP_MAX_BUILDINGS
    if not (dest / "map.html").exists() and (dest / "viewer.html").exists() and not small:
        # The job chose the tile viewer (too many buildings for a self-contained map.html).
        print(f"no map.html (a large job): open {dest / 'viewer.html'} with `urbanfabric open {dest}`, which "
              "serves the folder on 127.0.0.1", file=sys.stderr)
    elif not (dest / "map.html").exists() and table_format == "parquet" and small:
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
        top = sorted({p.relative_to(dest).parts[0] for p in files if p.is_relative_to(dest)})
        print(f"\n== exported to {dest}/: " + ", ".join(top))
        print(f"== report: {dest / 'report.html'}")
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
