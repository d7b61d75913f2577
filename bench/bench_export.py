"""Time, peak memory and size of ``urbanfabric export`` per table format (issue 23, item 5).

A job's outputs are written once by the real aggregate step
(:func:`urbanfabric.outputs.job_outputs.write_job_outputs`) from replicated batch files (the
cache of ``bench/bench_aggregate.py``) into a folder-backed store; then each format is
exported in a fresh subprocess (its ``VmHWM`` is its peak) with
:func:`urbanfabric.outputs.export.export_job`, and the export's files are counted and sized.

Run: ``PYTHONPATH=.:services/lib OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_export.py
--size 100000 --table T.parquet --cache DIR`` (T: any buildings table, e.g. a demo export's)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_aggregate import JOB, DirStore, prepare, run_child


class FolderStore(DirStore):
    """bench_aggregate's folder-backed store plus the download the export makes."""

    def get_file(self, key: str, path: Path | str) -> Path:
        local = Path(path)
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(key), local)
        return local


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(fmt: str, folder: Path, dest: Path) -> None:
    import geopandas  # noqa: F401 - imports counted in the baseline
    import pyogrio  # noqa: F401
    from urbanfabric.outputs.export import export_job

    base = _peak_mib()
    t0 = time.perf_counter()
    result = export_job(FolderStore(folder), JOB, dest, fmt)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    files = [p for p in dest.rglob("*") if p.is_file()]
    print(json.dumps({"format": fmt, "seconds": round(seconds, 1), "files": len(files),
                      "folder_mib": round(sum(p.stat().st_size for p in files) / 2**20, 1),
                      "table_mib": round(sum(p.stat().st_size for p in ([result.table] if result.table.is_file()
                                                                         else result.table.rglob("*.parquet")))
                                         / 2**20, 1) if result.table else None,
                      "rss_after_imports_mib": round(base, 1), "peak_rss_mib": round(_peak_mib(), 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--table", type=Path, help="a buildings table to replicate (required)")
    ap.add_argument("--cache", type=Path, help="folder for the batches and the exports (required)")
    ap.add_argument("--formats", nargs="+", default=["parquet", "gpkg", "fgb"])
    ap.add_argument("--child", nargs=3, metavar=("FORMAT", "FOLDER", "DEST"))
    ap.add_argument("--name", default="export_formats")
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    if args.table is None or args.cache is None:
        ap.error("--table and --cache are required")
    folder = args.cache / f"n{args.size}"
    uris = prepare(args.table, args.size, folder)
    store = DirStore(folder)
    from urbanfabric.io.job_layout import JobLayout
    from urbanfabric.outputs.job_outputs import write_job_outputs

    layout = JobLayout(JOB)
    store.delete_prefix(f"{layout.outputs}/")
    t0 = time.perf_counter()
    summary = write_job_outputs(store, JOB, uris, [], {}, {"imagery": "bench"})  # type: ignore[arg-type]
    aggregate_s = time.perf_counter() - t0
    store.put_bytes(layout.success, b"")
    store.put_bytes(layout.job_json, json.dumps({"job_id": JOB, "summary": {"buildings": summary.buildings}}).encode())
    rows = []
    for fmt in args.formats:
        dest = args.cache / f"export-{fmt}"
        shutil.rmtree(dest, ignore_errors=True)
        row = run_child(__file__, fmt, str(folder), str(dest))
        row["buildings"] = summary.buildings
        rows.append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(dest, ignore_errors=True)
    from bench._util import save

    print(save(args.name, {"rows": rows, "aggregate_seconds": round(aggregate_s, 1), "table": str(args.table)}))


if __name__ == "__main__":
    main()
