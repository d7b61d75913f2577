"""Orchestration memory and time vs job size, through the real local stack (issue 22).

The footprints path (no imagery): real Boulder footprints (12,168, ``age/boulder``) replicated
side by side (shifted copies, :func:`bench.bench_buildings.replicate`) to N buildings, written
as one GeoParquet, mapped by a ``map-area`` run started through the Prefect API exactly as a
user would. While it runs, every stack component's resident memory (its whole process session:
the flow runner includes the flow-run subprocess) is sampled with psutil every 0.5 s.

Old vs new: ``--repo`` names the checkout the stack runs from (e.g. a ``git worktree`` of
main before the change); each checkout gets its own stack (one at a time, started and stopped
here).

    nice -n 10 .venv/bin/python bench/orchestration_scale.py --sizes 10000 100000 \\
        --repo new=/work/h-stream --repo old=/work/cache-stream/old

Writes ``bench/results/orchestration_scale.json`` (and one file per label/size as it goes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "services/lib")]

import geopandas as gpd  # noqa: E402
import psutil  # noqa: E402

from bench._util import save  # noqa: E402
from bench.bench_buildings import replicate  # noqa: E402
from urbanfabric.io.model_repository import SHARED_DATA  # noqa: E402

BOULDER = SHARED_DATA / "age/boulder/boulder_buildings.gpkg"
CACHE = Path(os.environ.get("BENCH_CACHE", "/work/cache-stream"))
#: Components whose memory the table reports (services and the broker are listed too).
MAIN = ("flows", "tile_worker", "building_worker")


def footprints_file(n: int) -> Path:
    """Boulder footprints replicated to ``n`` buildings, as GeoParquet (cached)."""
    path = CACHE / f"boulder-{n}.parquet"
    if not path.exists():
        base = gpd.read_file(BOULDER)[["geometry"]]
        base = base[base.geometry.notna()].reset_index(drop=True)
        frame = replicate(base, n).to_crs(4326)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, row_group_size=50_000)
    return path


class Sampler(threading.Thread):
    """Peak RSS per stack component (sum over its process session), sampled every ``every`` s."""

    def __init__(self, components: dict[str, int], every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.components, self.every = components, every
        self.peak: dict[str, float] = {k: 0.0 for k in components}
        self.timeline: list[tuple[float, dict[str, float]]] = []  # (unix time, MiB per component)
        self._stop_flag = threading.Event()

    def sample(self) -> dict[str, float]:
        by_sid: dict[int, float] = {}
        for p in psutil.process_iter(["pid"]):
            try:
                sid = os.getsid(p.pid)
                by_sid[sid] = by_sid.get(sid, 0.0) + p.memory_info().rss / 2**20
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
        return {name: by_sid.get(pid, 0.0) for name, pid in self.components.items()}

    def run(self) -> None:
        while not self._stop_flag.is_set():
            now = self.sample()
            self.timeline.append((time.time(), now))
            for k, v in now.items():
                self.peak[k] = max(self.peak[k], v)
            self._stop_flag.wait(self.every)

    def stop(self) -> None:
        self._stop_flag.set()
        self.join()


def _stack(repo: Path, stack_dir: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{repo}:{repo}/services/lib", "OMP_NUM_THREADS": "1"}
    # The stack inherits this process's niceness (a second `nice -n 10` here put it at 19, level
    # with every other background job on the machine).
    subprocess.run([str(repo / ".venv/bin/python"), "-m", "urbanfabric.stack",
                    "--stack-dir", str(stack_dir), *args], cwd=repo, env=env, check=True)


def batches_finished_at(log: Path, since: float) -> float | None:
    """Unix time of the flow runner's last log line about building batches (old: "batches N/N
    done", new: "building batches: …") after ``since``: the end of the buildings stage, before
    ``aggregate`` (whose memory belongs to issue 22 item 4, not to the orchestration)."""
    import datetime as dt

    day = dt.datetime.fromtimestamp(since).date()
    last = None
    for line in log.read_text(errors="replace").splitlines():
        if "batches" not in line or "|" not in line:
            continue
        try:
            clock = dt.datetime.strptime(line.split("|", 1)[0].strip(), "%H:%M:%S.%f").time()
        except ValueError:
            continue
        t = dt.datetime.combine(day, clock).timestamp()
        if t >= since - 1:
            last = t
    return last


def run_job(stack_file: Path, footprints: Path, batch_size: int, worker_replicas: int = 1) -> dict:
    """One map-area run on the footprints; wall time, peak RSS per component, the job summary."""
    from urbanfabric.cli.demo import run_map_area
    from urbanfabric.io.job_layout import JobLayout
    from urbanfabric.io.object_store import ObjectStore
    from urbanfabric.runtime.jobs import new_job_id
    from urbanfabric.settings import Settings

    settings = Settings.load(stack_file)
    doc = json.loads(stack_file.read_text())
    comps = {name: rec["pid"] for name, rec in doc.get("components", {}).items() if rec.get("pid")}
    sampler = Sampler(comps)
    baseline = sampler.sample()
    sampler.start()
    job_id = new_job_id()
    started = time.time()
    t0 = time.perf_counter()
    run_id, state = run_map_area(settings, {"spec": {
        "footprints": str(footprints), "imagery": None, "region": "OECD_USA", "job_id": job_id,
        "batch_size": batch_size, "batch_timeout_s": 3600, "worker_replicas": worker_replicas}},
        timeout_s=4 * 3600)
    wall = time.perf_counter() - t0
    sampler.stop()
    job = json.loads(ObjectStore(settings).get_bytes(JobLayout(job_id).job_json))
    summary = job.get("summary", {})
    cut = batches_finished_at(stack_file.parent / "logs/flows.log", started)
    before = [s for t, s in sampler.timeline if cut is None or t <= cut]
    pre_aggregate = {k: max((s[k] for s in before), default=0.0) for k in MAIN}
    return {"job_id": job_id, "state": state.type.value, "message": state.message, "wall_s": wall,
            "baseline_rss_mib": baseline, "peak_rss_mib": sampler.peak,
            "peak_rss_before_aggregate_mib": pre_aggregate,
            "aggregate_s": (started + wall - cut) if cut else None,
            "timeline": [(round(t - started, 1), {k: round(v) for k, v in s.items() if k in MAIN})
                         for t, s in sampler.timeline[:: max(1, len(sampler.timeline) // 400)]],
            "stage_seconds": summary.get("stage_seconds"), "buildings": summary.get("buildings"),
            "summary_keys": sorted(summary)}


def table(results: dict) -> str:
    """Markdown table of the runs, new/old ratios where both ran."""
    runs = results["runs"]
    lines = ["| checkout | buildings | wall s | buildings/s | aggregate s | flow runner MiB: idle → peak "
             "before aggregate | flow runner peak MiB (whole run) | tile worker MiB | building worker MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, r in runs.items():
        label, n = key.split("/")
        pre, peak, base = r["peak_rss_before_aggregate_mib"], r["peak_rss_mib"], r["baseline_rss_mib"]
        lines.append(f"| {label} | {int(n):,} | {r['wall_s']:.0f} | {r['buildings_per_s']:.0f} | "
                     f"{(r['aggregate_s'] or 0):.0f} | {base['flows']:.0f} → {pre['flows']:.0f} | {peak['flows']:.0f} | "
                     f"{peak['tile_worker']:.0f} | {peak['building_worker']:.0f} |")
    for n in results["sizes"]:
        old, new = runs.get(f"old/{n}"), runs.get(f"new/{n}")
        if old and new:
            lines.append(f"| new/old | {n:,} | {new['wall_s'] / old['wall_s']:.2f} | "
                         f"{new['buildings_per_s'] / old['buildings_per_s']:.2f} | "
                         f"{(new['aggregate_s'] or 0) / (old['aggregate_s'] or 1):.2f} | "
                         f"{new['peak_rss_before_aggregate_mib']['flows'] / old['peak_rss_before_aggregate_mib']['flows']:.2f} | "
                         f"{new['peak_rss_mib']['flows'] / old['peak_rss_mib']['flows']:.2f} | "
                         f"{new['peak_rss_mib']['tile_worker'] / old['peak_rss_mib']['tile_worker']:.2f} | "
                         f"{new['peak_rss_mib']['building_worker'] / old['peak_rss_mib']['building_worker']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--repo", action="append", default=[], help="label=path of a checkout to run the stack from")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--out", default="orchestration_scale", help="name of the results file under bench/results")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--table", action="store_true", help="print the table of the last results and stop")
    args = p.parse_args()
    if args.table:
        from bench._util import RESULTS

        print(table(json.loads((RESULTS / f"{args.out}.json").read_text())))
        return
    results: dict = {"sizes": args.sizes, "batch_size": args.batch_size, "runs": {}}
    files = {n: footprints_file(n) for n in args.sizes}
    for n in args.sizes:
        for spec in args.repo:
            label, _, path = spec.partition("=")
            repo = Path(path).resolve()
            stack_dir = CACHE / f"stack-{label}"
            # A fresh stack per run: the flow runner's memory after one run is not the next
            # run's baseline (freed memory stays with the process).
            print(f"== {label}: stack up from {repo}", flush=True)
            _stack(repo, stack_dir, "up", "--workers", str(args.workers))
            try:
                print(f"== {label}: {n} buildings", flush=True)
                r = run_job(stack_dir / "stack.json", files[n], args.batch_size, args.workers)
                r["buildings_per_s"] = n / r["wall_s"]
                results["runs"][f"{label}/{n}"] = r
                print(json.dumps({k: r[k] for k in ("state", "wall_s", "buildings_per_s", "aggregate_s",
                                                    "peak_rss_before_aggregate_mib", "peak_rss_mib")},
                                 default=str), flush=True)
                save(args.out, results)
            finally:
                _stack(repo, stack_dir, "down")


if __name__ == "__main__":
    main()
