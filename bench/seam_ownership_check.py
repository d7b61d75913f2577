"""Tile-owned seams against today's global merge, on a finished job's per-tile footprints.

Reads every tile's footprints of a job from the object store (``footprints/tile=<id>/``; the
segmentation service writes them before any merge), or from a local folder of per-tile
GeoParquet files, and compares

* **global**: :func:`urbanfabric.footprints.seams.merge_seams` over all tiles at once, and
* **per tile**: :func:`urbanfabric.footprints.ownership.tile_buildings` (``resolve_tile_seams``) for
  each tile with only its own footprints and its ≤ 8 neighbours' border pieces (wider rings read
  on demand),

by building count, the set of ``building_id``, and the geometry of every building (symmetric
difference area and Hausdorff distance in metres). It also reports how many buildings were
claimed by no tile or by two (there must be none) and how many views had to grow past the
3 × 3 block (``views_widened``: tiles that read ring 2 or beyond).

    URBANFABRIC_STACK_DIR=/work/main/.stack PYTHONPATH=.:services/lib \\
        .venv/bin/python -m bench.seam_ownership_check <job id> [<job id> …]
    PYTHONPATH=.:services/lib .venv/bin/python -m bench.seam_ownership_check --dir <folder of <tile_id>.parquet>

Without a stack, ``--segment-area W,S,E,N --out DIR`` first makes the per-tile footprints of an
area in this process, the way the stack's tile pipeline does (zoom-16 cells of the Xiamen z18
imagery read with a ``--halo`` px halo from the neighbouring blocks, IQR calibration per city,
footprint-unet blended 512 px windows with 128 px overlap on the embedded model, halo cropped,
polygonized per tile) and writes ``DIR/<tile_id>.parquet``; then ``--dir DIR`` compares. The
city statistics are taken at full resolution (the stack samples 8× coarser), so the footprints
are close to, not identical with, a stack run of the same area.

Exit status 0 when every job agrees exactly (same count and ids; geometry within 1e-6 m² and
1e-6 m), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import geopandas as gpd
import pandas as pd
from urbanfabric.footprints.ownership import neighbour_tile_ids, tile_buildings
from urbanfabric.footprints.seams import merge_seams

AREA_TOL_M2 = 1e-6
DIST_TOL_M = 1e-6


def compare(tiles: dict[str, gpd.GeoDataFrame]) -> dict:
    """Global merge vs per-tile ownership over ``tile_id -> footprints`` (EPSG:4326)."""
    frames = [f for f in tiles.values() if not f.empty]
    everything = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:4326") \
        if frames else gpd.GeoDataFrame(columns=["building_id", "on_border"], geometry=[], crs="EPSG:4326")
    t0 = time.perf_counter()
    merged = merge_seams(everything) if len(everything) else everything
    t_global = time.perf_counter() - t0
    reads: Counter[str] = Counter()     # tile -> footprint files it read (itself + ring 1 = ≤ 9)

    t0 = time.perf_counter()
    owned = []
    for tile_id in sorted(tiles):
        def read(other: str, me: str = tile_id) -> gpd.GeoDataFrame | None:
            reads[me] += 1
            return tiles.get(other)

        owned.append(tile_buildings(tile_id, read))
    t_tiles = time.perf_counter() - t0
    per_tile = [f for f in owned if not f.empty]
    local = gpd.GeoDataFrame(pd.concat(per_tile, ignore_index=True), geometry="geometry", crs="EPSG:4326") \
        if per_tile else merged.iloc[0:0]
    counts = Counter(map(str, local["building_id"]))
    doubled = sorted(b for b, c in counts.items() if c > 1)
    g_ids, l_ids = set(map(str, merged["building_id"])), set(counts)
    both = sorted(g_ids & l_ids)
    metric = merged.estimate_utm_crs() if len(merged) else None
    worst_area = worst_dist = 0.0
    if both:
        a = merged.drop_duplicates("building_id").set_index("building_id").loc[both].to_crs(metric).geometry
        b = local.drop_duplicates("building_id").set_index("building_id").loc[both].to_crs(metric).geometry
        worst_area = float(a.symmetric_difference(b).area.max())
        worst_dist = float(a.hausdorff_distance(b).max())
    return {
        "tiles": len(tiles),
        "footprints": len(everything),
        "border_pieces": int(sum(int(f["on_border"].sum()) for f in tiles.values() if not f.empty)),
        "global_buildings": len(merged),
        "per_tile_buildings": len(local),
        "only_global": sorted(g_ids - l_ids),
        "only_per_tile": sorted(l_ids - g_ids),
        "doubled": doubled,
        "max_symdiff_m2": worst_area,
        "max_hausdorff_m": worst_dist,
        "tile_reads": int(sum(reads.values())),
        "views_widened": sorted(t for t in tiles if reads[t] > 1 + len(neighbour_tile_ids(t))),
        "seconds_global": round(t_global, 3),
        "seconds_per_tile_total": round(t_tiles, 3),
        "same": (len(merged) == len(local) and g_ids == l_ids and not doubled
                 and worst_area <= AREA_TOL_M2 and worst_dist <= DIST_TOL_M),
    }


def job_tiles(job_id: str) -> dict[str, gpd.GeoDataFrame]:
    """Per-tile footprints of a job on the running stack (object store)."""
    from urbanfabric.io.geoparquet import read_geoparquet
    from urbanfabric.io.job_layout import JobLayout
    from urbanfabric.io.object_store import ObjectStore
    from urbanfabric.settings import Settings

    store = ObjectStore(Settings.load())
    root = JobLayout(job_id).root
    out: dict[str, gpd.GeoDataFrame] = {}
    for key in store.list(f"{root}/footprints/"):
        if key.endswith(".parquet") and "/tile=" in key:
            tile_id = key.split("/tile=")[1].split("/")[0]
            out[tile_id] = read_geoparquet(store.get_bytes(key))
    return out


def folder_tiles(folder: Path) -> dict[str, gpd.GeoDataFrame]:
    """Per-tile footprints stored as ``<tile_id>.parquet`` in a folder."""
    return {p.stem: gpd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}


def segment_area(bbox: tuple[float, float, float, float], out: Path, halo_px: int = 128,
                 model: str = "footprint-unet:v1") -> list[str]:
    """Per-tile footprints of an area from the Xiamen z18 imagery, in this process (see module doc)."""
    from urbanfabric.footprints.options import SegmentationOptions
    from urbanfabric.footprints.tile_segmentation import segment_tile
    from urbanfabric.imagery import acquisition, calibration
    from urbanfabric.imagery.tiles import tiles_for_area
    from urbanfabric.io.model_repository import SHARED_DATA
    from urbanfabric.io.rasters import Raster
    from urbanfabric.runtime.model_client import InferenceProtocol, ModelClient

    tiles = tiles_for_area(bbox)
    wanted = {(t.x + dx, t.y + dy) for t in tiles for dx in (-1, 0, 1) for dy in (-1, 0, 1)}
    blocks: dict[tuple[int, int], Raster] = {}
    for block_id, raster in acquisition.mosaic_xyz_blocks(SHARED_DATA / "footprints/xiamen-z18/tiles", 18):
        _, bx, by = map(int, block_id.split("-"))
        if (bx, by) in wanted:
            blocks[bx, by] = raster
    stats = calibration.area_stats((blocks[t.x, t.y].data for t in tiles if (t.x, t.y) in blocks),
                                   nodata=acquisition.RAW_NODATA)
    client = ModelClient(InferenceProtocol.EMBEDDED)
    options = SegmentationOptions(model=model)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for t in tiles:
        if (t.x, t.y) not in blocks:
            continue
        grown = acquisition.block_with_halo(blocks, t.x, t.y, halo_px)
        core = grown.data[:, halo_px:-halo_px, halo_px:-halo_px]
        if (core != acquisition.RAW_NODATA).any(axis=0).mean() < 0.01:  # the stack's EMPTY tile
            continue
        ard, _ = calibration.calibrate_tile(grown.data, t.tile_id, stats, nodata=acquisition.RAW_NODATA)
        seg = segment_tile(Raster(ard, grown.transform, grown.crs, float("nan")), t.tile_id, options,
                           client.infer, halo_px=halo_px, window=512, overlap=128)
        seg.footprints.to_parquet(out / f"{t.tile_id}.parquet")
        written.append(t.tile_id)
        print(f"{t.tile_id}: {len(seg.footprints)} footprints", file=sys.stderr, flush=True)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.seam_ownership_check", description=__doc__.split("\n")[0])
    parser.add_argument("jobs", nargs="*", help="job ids on the running stack")
    parser.add_argument("--dir", type=Path, action="append", default=[], help="folder of <tile_id>.parquet files")
    parser.add_argument("--segment-area", default="", help="W,S,E,N: make per-tile footprints first (needs --out)")
    parser.add_argument("--out", type=Path, help="folder for --segment-area")
    parser.add_argument("--halo", type=int, default=128, help="halo px for --segment-area (the stack's default)")
    args = parser.parse_args(argv)
    if args.segment_area:
        if args.out is None:
            parser.error("--segment-area needs --out")
        w, s, e, n = (float(v) for v in args.segment_area.split(","))
        segment_area((w, s, e, n), args.out, args.halo)
        args.dir.append(args.out)
    ok = True
    sources = [(j, lambda j=j: job_tiles(j)) for j in args.jobs] + [(str(d), lambda d=d: folder_tiles(d)) for d in args.dir]
    if not sources:
        parser.error("give job ids or --dir")
    for name, load in sources:
        tiles = load()
        if not tiles:
            print(json.dumps({"source": name, "error": "no per-tile footprints found"}))
            ok = False
            continue
        result = compare(tiles)
        ok &= bool(result["same"])
        print(json.dumps({"source": name, **result}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
