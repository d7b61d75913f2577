"""Scale-out through the real local stack (issue 22, "Scale-out"): one vs two replicas of each
Kafka worker on the same job, and replicas leaving and joining mid-run.

Three jobs on the same footprints (real Boulder footprints replicated, no imagery, as
:mod:`bench.orchestration_scale`), each stack started fresh from this checkout:

1. ``workers=1`` — one tile worker and one building worker (the reference table);
2. ``workers=2`` — two of each, in one consumer group sharing the topics' partitions, the
   flow's window scaled with them (``worker_replicas`` 2);
3. ``churn`` — on the same two-replica stack, ``building_worker-2`` is sent SIGKILL once a
   quarter of the batches are done (it leaves the group; the stack's supervisor restarts it
   and it joins again), and ``building_worker`` once 60 % are: Kafka rebalances the partitions
   twice while batches are in flight.

Each two-replica table is compared with the one-replica table: same building ids, no
duplicates, every value equal (values do not depend on which replica or batch computed them).
On this 2-core machine the replicas share the cores and the three services behind them, so the
one-vs-two ratio says what the orchestration costs or gains, not what a cluster would do.

    PYTHONPATH=.:services/lib nice -n 10 .venv/bin/python bench/scale_out.py --n 50000

Writes ``bench/results/scale_out.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "services/lib")]

import geopandas as gpd  # noqa: E402

from bench._util import save  # noqa: E402
from tests.e2e.fault_runs import Outcome, compare, kill  # noqa: E402
from urbanfabric.stack import Stack  # noqa: E402
from bench.orchestration_scale import CACHE, MAIN, Sampler, _stack, footprints_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: (replica, share of batches done when it is killed)
CHURN = (("building_worker-2", 0.25), ("building_worker", 0.60))


def _batches_done(store: Any, job_id: str) -> int:
    """Batch markers written so far (``fault_runs.progress`` also counts tiles over the whole job
    prefix; this lists the buildings prefix only, as it is polled every 0.5 s)."""
    from urbanfabric.io.job_layout import JobLayout

    prefix = f"{JobLayout(job_id).root}/buildings/"
    return sum(1 for k in store.list(prefix) if k.endswith("_SUCCESS"))


def run(stack_file: Path, footprints: Path, n: int, batch_size: int, replicas: int,
        churn: bool) -> tuple[dict, gpd.GeoDataFrame]:
    """One map-area job; its wall time, peak memory per component, kills, and its table."""
    from urbanfabric.cli.demo import run_map_area
    from urbanfabric.io.job_layout import JobLayout
    from urbanfabric.io.object_store import ObjectStore
    from urbanfabric.runtime.jobs import new_job_id
    from urbanfabric.settings import Settings

    settings = Settings.load(stack_file)
    store = ObjectStore(settings)
    doc = json.loads(stack_file.read_text())
    comps = {name: rec["pid"] for name, rec in doc.get("components", {}).items() if rec.get("pid")}
    sampler = Sampler(comps)
    sampler.start()
    job_id = new_job_id()
    box: dict[str, Any] = {}

    def go() -> None:
        t0 = time.perf_counter()
        _, box["state"] = run_map_area(settings, {"spec": {
            "footprints": str(footprints), "imagery": None, "region": "OECD_USA", "job_id": job_id,
            "batch_size": batch_size, "batch_timeout_s": 3600, "worker_replicas": replicas}}, timeout_s=4 * 3600)
        box["wall_s"] = time.perf_counter() - t0

    job = threading.Thread(target=go, daemon=True)
    job.start()
    kills: list[dict] = []
    expected = -(-n // batch_size)  # at least this many batches (cells cut them smaller)
    for name, share in CHURN if churn else ():
        while job.is_alive() and _batches_done(store, job_id) < share * expected:
            time.sleep(0.5)
        if not job.is_alive():
            kills.append({"component": name, "injected": False, "note": "job had finished"})
            continue
        done = _batches_done(store, job_id)
        print(f"kill -9 {name} after {done} batches", flush=True)
        back = kill(Stack(stack_dir=stack_file.parent), name)  # SIGKILL, then until healthy again
        print(f"  {name} back in the group after {back:.1f} s", flush=True)
        kills.append({"component": name, "injected": True, "batches_done_then": done, "back_after_s": round(back, 1)})
    job.join()
    sampler.stop()
    state = box["state"]
    summary = json.loads(store.get_bytes(JobLayout(job_id).job_json)).get("summary", {})
    table = gpd.read_parquet(io.BytesIO(store.get_bytes(JobLayout(job_id).buildings)))
    result = {"job_id": job_id, "state": state.type.value, "wall_s": box["wall_s"],
              "buildings_per_s": len(table) / box["wall_s"], "rows": len(table),
              "peak_rss_mib": {k: round(sampler.peak.get(k, 0.0)) for k in sampler.peak},
              "peak_rss_main_mib": {k: round(sampler.peak.get(k, 0.0)) for k in MAIN},
              "stage_seconds": summary.get("stage_seconds"), "kills": kills}
    return result, table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000, help="buildings (Boulder footprints replicated)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--out", default="scale_out")
    args = p.parse_args()
    fp = footprints_file(args.n)
    results: dict = {"n": args.n, "batch_size": args.batch_size, "runs": {}}
    reference: gpd.GeoDataFrame | None = None
    for replicas, runs in ((1, (False,)), (2, (False, True))):
        stack_dir = CACHE / f"stack-scale-{replicas}"
        _stack(REPO, stack_dir, "up", "--workers", str(replicas))
        try:
            for churn in runs:
                name = "churn" if churn else f"workers={replicas}"
                print(f"== {name}: {args.n:,} buildings", flush=True)
                r, table = run(stack_dir / "stack.json", fp, args.n, args.batch_size, replicas, churn)
                if reference is None:
                    reference = table
                else:
                    o = Outcome(name, r["job_id"], r["state"], r["wall_s"])
                    compare(o, table, reference)
                    r.update(duplicates=o.duplicates, missing_vs_reference=o.missing_vs_baseline,
                             extra_vs_reference=o.extra_vs_baseline, differing_cells=o.differing_cells,
                             differing_columns=o.differing_columns)
                results["runs"][name] = r
                print(json.dumps({k: v for k, v in r.items() if k != "stage_seconds"}, default=str), flush=True)
                save(args.out, results)
        finally:
            _stack(REPO, stack_dir, "down")
    base = results["runs"]["workers=1"]["wall_s"]
    for name, r in results["runs"].items():
        r["wall_vs_one_replica"] = r["wall_s"] / base
    save(args.out, results)
    print(table_md(results))
    bad = [n for n, r in results["runs"].items()
           if r["state"] != "COMPLETED" or r.get("duplicates") or r.get("missing_vs_reference")
           or r.get("extra_vs_reference") or r.get("differing_cells")]
    return 1 if bad else 0


def table_md(results: dict) -> str:
    lines = ["| run | wall s | buildings/s | × one replica (wall) | rows | duplicates | missing | extra | "
             "differing cells | kills (batches done then → back in s) | building worker(s) peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        kills = "; ".join(f"{k['component']} ({k.get('batches_done_then', '–')} → {k.get('back_after_s', '–')})"
                          for k in r["kills"]) or "—"
        workers = sum(v for k, v in r["peak_rss_mib"].items() if k.startswith("building_worker"))
        lines.append(f"| {name} | {r['wall_s']:.0f} | {r['buildings_per_s']:.0f} | "
                     f"{r.get('wall_vs_one_replica', 1.0):.2f} | {r['rows']:,} | {r.get('duplicates', 0)} | "
                     f"{r.get('missing_vs_reference', 0)} | {r.get('extra_vs_reference', 0)} | "
                     f"{r.get('differing_cells', 0)} | {kills} | {workers:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
