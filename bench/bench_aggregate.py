"""Peak memory and time of the ``aggregate`` step vs building count, old vs new (issue 22, item 4).

The demo's real buildings table (181 buildings with every column the stack writes) is
replicated across space — copies on a grid 0.02° apart, so 100 k buildings span several zoom-10
partitions — and cut into batch result files of 250 buildings (the spec's default batch size),
stored in a folder-backed object store (so the store itself costs no memory). Each run is a
fresh subprocess; its peak RSS is its ``VmHWM`` and is reported with the peak after imports
(the step's own growth is the difference).

* **old** — the pre-issue-22 ``write_job_outputs``: every batch concatenated into one table
  (``combine_batches``), one ``buildings.parquet``, grids, summary, a matplotlib map of every
  polygon, the report;
* **new** — :func:`urbanfabric.outputs.job_outputs.write_job_outputs`: the partitioned dataset,
  per-partition grids summed into the job's, merged summaries, the fixed-canvas map, STAC
  (with and without the single-file copy).

Run: ``PYTHONPATH=.:services/lib OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_aggregate.py
--sizes 10000 100000 --table /work/before18/buildings.parquet`` (``--modes new
--max-rows-per-file 10000 --name aggregate_memory_cap10k``: the new path with a smaller file cap)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BATCH = 250
JOB = "20261205T000000Z-benchagg"


class DirStore:
    """The object-store calls the aggregate step makes, on a local folder."""

    def __init__(self, root: Path, bucket: str = "urbanfabric") -> None:
        self.root, self.bucket = Path(root), bucket

    def _path(self, key: str) -> Path:
        if key.startswith("s3://"):
            key = key.split("/", 3)[3]
        return self.root / key

    def s3_uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> str:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return self.s3_uri(key)

    def put_file(self, key: str, path, content_type: str = "") -> str:
        return self.put_bytes(key, Path(path).read_bytes())

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str = "", recursive: bool = True) -> list[str]:
        base = self._path(prefix)
        root = base if base.is_dir() else base.parent
        keys = [p.relative_to(self.root).as_posix() for p in root.rglob("*") if p.is_file()] if root.exists() else []
        return sorted(k for k in keys if k.startswith(prefix))

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for k in keys:
            self._path(k).unlink()
        return len(keys)


def prepare(table_path: Path, n: int, folder: Path) -> list[str]:
    """Batch result files of ``n`` replicated buildings under ``folder`` (cached)."""
    import geopandas as gpd
    import numpy as np
    import pandas as pd
    from shapely import affinity
    from urbanfabric.io.geoparquet import geoparquet_bytes
    from urbanfabric.io.job_layout import JobLayout

    listing = folder / "batches.json"
    if listing.exists():
        return json.loads(listing.read_text())
    store = DirStore(folder)
    base = gpd.read_parquet(table_path)
    copies = int(np.ceil(n / len(base)))
    side = int(np.ceil(np.sqrt(copies)))
    frames = []
    for c in range(copies):
        dx, dy = (c % side) * 0.02, (c // side) * 0.02
        f = base.copy()
        f["geometry"] = [affinity.translate(g, dx, dy) for g in f.geometry]
        f["building_id"] = f["building_id"].astype(str) + f"-r{c}"
        frames.append(f)
    whole = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True).iloc[:n], geometry="geometry", crs=base.crs)
    whole = whole.iloc[np.argsort(whole.geometry.hilbert_distance().to_numpy(), kind="stable")]
    uris = []
    layout = JobLayout(JOB)
    for i in range(0, len(whole), BATCH):
        uris.append(store.put_bytes(layout.batch_buildings(f"{i // BATCH:05d}"),
                                    geoparquet_bytes(whole.iloc[i:i + BATCH])))
    listing.write_text(json.dumps(uris))
    return uris


def old_aggregate(store: DirStore, uris: list[str]) -> int:
    """The aggregate step before issue 22 (one table, one file, one figure of every polygon)."""
    from urbanfabric.io.geoparquet import geoparquet_bytes, read_geoparquet
    from urbanfabric.io.job_layout import JobLayout
    from urbanfabric.io.object_store import parse_s3_uri
    from urbanfabric.outputs import grids, report, static_map
    from urbanfabric.outputs.buildings_table import combine_batches
    from urbanfabric.outputs.summary import summarize

    layout = JobLayout(JOB)
    buildings = combine_batches([read_geoparquet(store.get_bytes(parse_s3_uri(u)[1])) for u in uris])
    store.put_bytes(layout.buildings, geoparquet_bytes(buildings))
    grids.write_grids(store, JOB, buildings)
    summary = summarize(JOB, buildings, {}, {})
    store.put_bytes(layout.map_png, static_map.map_png(buildings, f"urbanfabric job {JOB}", []))
    store.put_bytes(layout.report, report.report_md(summary, {}).encode())
    return summary.buildings


def new_aggregate(store: DirStore, uris: list[str], single_file: bool) -> int:
    from urbanfabric.outputs.job_outputs import write_job_outputs
    from urbanfabric.outputs.partitions import MAX_ROWS_PER_FILE, PartitionOptions

    max_rows = int(os.environ.get("BENCH_MAX_ROWS_PER_FILE", MAX_ROWS_PER_FILE))
    return write_job_outputs(store, JOB, uris, [], {}, {},
                             options=PartitionOptions(single_file=single_file, max_rows_per_file=max_rows)).buildings


def child(mode: str, folder: Path, _out: Path) -> None:
    """One measured run in this (fresh) process; prints a JSON line."""
    import geopandas  # noqa: F401 - imports counted in the baseline, as in the flow runner
    import matplotlib.pyplot  # noqa: F401
    import rasterio  # noqa: F401
    import urbanfabric.outputs.job_outputs  # noqa: F401

    def rss() -> float:
        # VmHWM: this process's own high-water mark (getrusage's ru_maxrss survives exec and
        # would start at the parent's peak, which built the 100 k table).
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc/self/status")

    uris = json.loads((folder / "batches.json").read_text())
    store = DirStore(folder)  # batches read from here; outputs/ replaced by each run
    store.delete_prefix(f"jobs/{JOB}/outputs/")
    base = rss()
    t0 = time.perf_counter()
    n = old_aggregate(store, uris) if mode == "old" else new_aggregate(store, uris, mode == "new")
    print(json.dumps({"mode": mode, "buildings": n, "seconds": round(time.perf_counter() - t0, 1),
                      "rss_after_imports_mib": round(base, 1), "peak_rss_mib": round(rss(), 1)}))


def run_child(script: str, *args: str) -> dict:
    """``script --child ARGS`` in a fresh process (its own peak RSS); its last line as JSON."""
    res = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True,
                         env=os.environ.copy(), check=False)
    if res.returncode:
        print(res.stderr[-3000:], file=sys.stderr)
        raise SystemExit(res.returncode)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--table", type=Path, default=Path("/work/before18/buildings.parquet"))
    ap.add_argument("--cache", type=Path, default=Path("/work/cache-parts/bench-aggregate"))
    ap.add_argument("--modes", nargs="+", default=["old", "new", "new-no-single-file"])
    ap.add_argument("--child", nargs=3, metavar=("MODE", "FOLDER", "OUT"))
    ap.add_argument("--max-rows-per-file", type=int, default=None,
                    help="part-file cap of the new path (default outputs.partitions.MAX_ROWS_PER_FILE)")
    ap.add_argument("--name", default="aggregate_memory", help="results file under bench/results/")
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    import shutil

    if args.max_rows_per_file:
        os.environ["BENCH_MAX_ROWS_PER_FILE"] = str(args.max_rows_per_file)
    rows = []
    for n in args.sizes:
        folder = args.cache / f"n{n}"
        prepare(args.table, n, folder)
        for mode in args.modes:
            out = folder / "jobs" / JOB / "outputs"
            row = run_child(__file__, mode, str(folder), str(out))
            row["growth_mib"] = round(row["peak_rss_mib"] - row["rss_after_imports_mib"], 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(out, ignore_errors=True)
    by = {(r["mode"], r["buildings"]): r for r in rows}
    for n in args.sizes:
        old, new = by.get(("old", n)), by.get(("new", n))
        if old and new:
            print(f"{n} buildings: peak RSS new/old = {new['peak_rss_mib'] / old['peak_rss_mib']:.2f}, "
                  f"growth new/old = {new['growth_mib'] / max(old['growth_mib'], 1e-9):.2f}")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench._util import save

    print(save(args.name, {"rows": rows, "table": str(args.table), "batch": BATCH,
                           "max_rows_per_file": args.max_rows_per_file}))


if __name__ == "__main__":
    main()
