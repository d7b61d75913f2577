"""``urbanfabric open JOB_ID|FOLDER``: open a job's interactive map.

A folder is an exported job (``out/<job>/`` from ``urbanfabric export`` or ``urbanfabric demo``:
``buildings.parquet`` and ``job.json``). A job id is looked up as ``out/<job>/`` first; otherwise
its outputs are exported from the object store there (the running stack's, see
docs/operations.md).

Which map: ``map.html`` (self-contained, urbanfabric.outputs.webmap) when the job wrote one or
it can be built from the exported table; it opens from disk. A job above
``WEBMAP_MAX_BUILDINGS`` has no ``map.html`` but ``viewer.html`` with ``buildings.pmtiles``
(urbanfabric.outputs.viewer), and so does ``--viewer``: that page reads the archive by HTTP
range requests, so the folder is served on 127.0.0.1 (urbanfabric.cli.serve) until Ctrl-C and
the page opened from there. ``--no-browser`` prints the path or URL instead of opening it.
"""

from __future__ import annotations

import argparse
import json
import sys
import webbrowser
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="a job id, or an exported job folder (out/<job>/)")
    parser.add_argument("--attribute", default="height",
                        choices=["height", "stock_per_m2", "roof_material", "uncertainty"],
                        help="colouring shown first (the page can switch)")
    parser.add_argument("--simplify-m", type=float, default=0.5,
                        help="outline simplification tolerance in metres (0 keeps every vertex; "
                             "1 m makes a 100 k-building map about 18 %% smaller)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild map.html even when it exists")
    parser.add_argument("--no-browser", action="store_true", help="write map.html, print its path, do not open it")
    parser.add_argument("--viewer", action="store_true",
                        help="open the tile viewer (viewer.html + buildings.pmtiles, any job size) even when "
                             "map.html exists; the folder is served on 127.0.0.1 until Ctrl-C")
    parser.add_argument("--port", type=int, default=0, help="port of the loopback server (default: a free one)")


def _buildings_path(folder: Path) -> Path:
    for name in ("buildings.parquet", "buildings"):  # one file, or a partitioned dataset folder
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{folder}: no buildings.parquet (export the job first: urbanfabric export JOB)")


def build_map(folder: Path, attribute: str = "height", rebuild: bool = False, simplify_m: float = 0.5) -> Path:
    """``folder/map.html`` from the exported table and ``job.json`` (kept when present unless ``rebuild``)."""
    import geopandas as gpd

    from urbanfabric.outputs.webmap import job_map_html

    out = folder / "map.html"
    if out.exists() and not rebuild:
        return out
    buildings = gpd.read_parquet(_buildings_path(folder))
    doc = json.loads((folder / "job.json").read_text()) if (folder / "job.json").exists() else {}
    job_id = str(doc.get("job_id") or folder.name)
    out.write_bytes(job_map_html(buildings, job_id, doc.get("parameters"), attribute, simplify_m))
    return out


def has_viewer(folder: Path) -> bool:
    """Whether an exported job carries the tile viewer and its archive."""
    return (folder / "viewer.html").is_file() and (folder / "buildings.pmtiles").is_file()


def serve_viewer(folder: Path, port: int = 0, browser: bool = True) -> int:
    """Serve ``folder`` on 127.0.0.1 and open its ``viewer.html`` until Ctrl-C."""
    from urbanfabric.cli.serve import serve_folder

    try:
        server = serve_folder(folder, port)
    except OSError as exc:
        print(f"urbanfabric open: cannot serve {folder} on 127.0.0.1:{port} ({exc}); try another --port",
              file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{server.server_address[1]}/viewer.html"
    print(f"{url}  (serving {folder} on loopback; Ctrl-C stops)", flush=True)
    if browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def run(args: argparse.Namespace) -> int:
    target = Path(args.job)
    folder = target if target.is_dir() else Path("out") / args.job
    exported = has_viewer(folder) or any((folder / n).exists() for n in ("buildings.parquet", "buildings"))
    if not folder.is_dir() or not exported:
        if target.is_dir() or "/" in args.job:
            print(f"urbanfabric open: {folder} holds no exported job (buildings.parquet)", file=sys.stderr)
            return 2
        from urbanfabric.cli.demo import export
        from urbanfabric.io.object_store import ObjectStore
        from urbanfabric.settings import Settings

        try:
            export(ObjectStore(Settings.load()), args.job, folder)
        except Exception as exc:  # noqa: BLE001 - report, do not trace back, a missing job or stack
            print(f"urbanfabric open: job {args.job} is neither in {folder}/ nor readable from the object "
                  f"store ({type(exc).__name__}: {exc}); is the stack up (urbanfabric stack status)?",
                  file=sys.stderr)
            return 1
    if getattr(args, "viewer", False) or (not (folder / "map.html").exists() and has_viewer(folder)):
        if not has_viewer(folder):
            print(f"urbanfabric open: {folder} has no viewer.html and buildings.pmtiles (jobs write them from "
                  "this version on; re-run the job or open map.html without --viewer)", file=sys.stderr)
            return 2
        return serve_viewer(folder, getattr(args, "port", 0), not args.no_browser)
    path = build_map(folder, args.attribute, args.rebuild or args.attribute != "height" or args.simplify_m != 0.5,
                     args.simplify_m)
    print(path)
    if not args.no_browser:
        webbrowser.open(path.resolve().as_uri())
    return 0
