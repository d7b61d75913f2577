"""Everything a finished job hands its users, written under ``jobs/<job>/outputs/``.

* ``buildings/quadkey=<key>/part-*.parquet`` — the buildings table as a Hive-partitioned
  GeoParquet 1.1 dataset (:mod:`urbanfabric.outputs.partitions`), each partition with its
  ``_summary.json`` (counts and sums);
* ``buildings.parquet`` — a single-file convenience copy for small jobs (``outputs.single_file``;
  switch it off for big jobs);
* ``grids/quadkey=<key>/<layer>_<size>m.tif`` per partition and ``grids/<layer>_<size>m.tif``
  for the job (their cell-wise sum, built in bounded memory), all COGs;
* ``districts.parquet`` when districts were given, ``map.png`` (lon/lat ticks, scale bar, north
  arrow, imagery attribution), ``report.md`` with its charts in ``report_files/`` and the
  self-contained ``report.html`` (:mod:`urbanfabric.outputs.report_html`);
* ``buildings.pmtiles`` — the buildings as vector web tiles (z12–z16, urbanfabric.outputs.vector_tiles)
  and ``viewer.html``, the MapLibre page that shows them at any job size (urbanfabric.outputs.viewer);
  ``map.html`` (self-contained, opens offline) only up to :data:`WEBMAP_MAX_BUILDINGS`;
* ``stac/collection.json`` with one item per partition and per grid / report asset.

Memory is bounded by one batch, one part file and the fixed-size map canvas: the batches are
streamed once into a local spill split by partition, then each partition is written, gridded,
summarised, drawn and dropped; the job summary, report, map and grids merge the partitions'
parts. The :class:`~urbanfabric.outputs.summary.Summary` comes back for ``job.json``; the flow
writes ``_SUCCESS`` after this returns.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd

from urbanfabric.io.geoparquet import PARQUET_MEDIA_TYPE, parquet_bytes
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.object_store import ObjectStore, parse_s3_uri
from urbanfabric.io.rasters import COG_MEDIA_TYPE, read_raster
from urbanfabric.io.stac import OutputItem, output_collection, save_collection
from urbanfabric.outputs import grids, report
from urbanfabric.outputs.charts import report_charts
from urbanfabric.outputs.map_figure import attribution_text
from urbanfabric.outputs.report_html import report_html
from urbanfabric.outputs.static_map import MapCanvas, map_png
from urbanfabric.outputs.partitions import (
    FRAME_ROWS,
    PartitionOptions,
    PartitionSpill,
    SingleFileWriter,
    area_quadkeys,
    parquet_file_bytes,
    partition_chunks,
    partition_path,
    quadkey_bounds,
    read_batch_table,
    to_frame,
    with_geo,
)
from urbanfabric.outputs.summary import (
    Summary,
    merge_summary_parts,
    summary_from_parts,
    summary_parts,
)
from urbanfabric.outputs.vector_tiles import PMTILES_MEDIA_TYPE, TileSpill

#: Pixels across the whole area of the map canvas (each panel of the PNG is ≈ 700 px wide).
MAP_PX = 1024
#: Most tiles whose imagery is drawn under the map; above this the map has no basemap (a
#: country-sized job would otherwise read every tile again).
MAP_MAX_BASEMAP_TILES = 256
#: The self-contained report page beside ``report.md``.
REPORT_HTML = "report.html"
#: Empty partitions named one by one in the warnings (the rest are counted).
MAX_NAMED_EMPTY = 10


def _clear(store: Any, prefix: str) -> None:
    """Remove an earlier attempt's outputs, so no stale file looks like part of this one."""
    if hasattr(store, "delete_prefix"):
        store.delete_prefix(prefix)


def empty_partition_warnings(area: tuple[float, float, float, float] | None, written: set[str],
                             zoom: int) -> list[str]:
    """A warning naming each partition of the area (its quadkey and lon/lat box) with no buildings."""
    if area is None:
        return []
    empty = [k for k in area_quadkeys(area, zoom) if k not in written]
    out = [f"partition quadkey={k} (lon/lat {', '.join(f'{v:.4f}' for v in quadkey_bounds(k))}) has no "
           "buildings; nothing written there" for k in empty[:MAX_NAMED_EMPTY]]
    if len(empty) > MAX_NAMED_EMPTY:
        out.append(f"… and {len(empty) - MAX_NAMED_EMPTY} more partitions of the area without buildings")
    return out


#: Above this many buildings no self-contained map.html is written (≈ 47 MB and 5 s to open at
#: 100,000; docs/results.md → Interactive map); the tile viewer (viewer.html) shows any size.
WEBMAP_MAX_BUILDINGS = 100_000


def _write_web_tiles(store: ObjectStore, layout: JobLayout, job_id: str, tiles: TileSpill,
                     grid_cogs: Sequence[tuple[str, Path]], parameters: dict[str, Any], model_versions: Any,
                     tmp: Path, warnings: list[str]) -> dict[str, str]:
    """``outputs/buildings.pmtiles`` and ``outputs/viewer.html``; a failure is a warning, not a
    failed job (the table, grids and report are the results; tiles and page are views of them)."""
    from urbanfabric.outputs.viewer import ARCHIVE_NAME, grid_overlays, viewer_config, viewer_html
    from urbanfabric.outputs.webmap import options_for_job

    try:
        local = tmp / ARCHIVE_NAME
        rows = [model_versions] if model_versions else []  # the attribution names the model versions
        versions = gpd.GeoDataFrame({"model_versions": rows}, geometry=[None] * len(rows), crs=4326)
        attribution = options_for_job(job_id, parameters, versions).attribution
        stats = tiles.write(local, f"urbanfabric job {job_id}", attribution)
        overlays = grid_overlays(grid_cogs)
        page = viewer_html(viewer_config(stats, f"urbanfabric job {job_id}", grids=overlays,
                                         attribution=attribution))
    except Exception as exc:  # noqa: BLE001 - any failure of the view leaves the results intact
        tiles.close()
        warnings.append(f"web tiles not written: {type(exc).__name__}: {exc}")
        return {}
    return {"tiles": store.put_file(f"{layout.outputs}/{ARCHIVE_NAME}", local, PMTILES_MEDIA_TYPE),
            "viewer": store.put_bytes(f"{layout.outputs}/viewer.html", page, "text/html; charset=utf-8")}


def _write_webmap(store: ObjectStore, layout: JobLayout, job_id: str, table_path: Path,
                  parameters: dict[str, Any], ard_uris: Sequence[str], warnings: list[str]) -> dict[str, str]:
    """``outputs/map.html`` from the single-file table; a failure is a warning, not a failed job
    (the table, grids and report are the results; the page is a view of them)."""
    import pyarrow.parquet as pq

    from urbanfabric.outputs.webmap import job_map_html, map_columns

    try:
        tile_ids = [u.rsplit("/", 2)[-2] for u in ard_uris]  # …/tiles/<tile_id>/ard.tif
        wanted = map_columns()
        columns = [c for c in pq.read_schema(table_path).names if c in wanted]
        html = job_map_html(gpd.read_parquet(table_path, columns=columns), job_id, parameters, tile_ids=tile_ids)
    except Exception as exc:  # noqa: BLE001 - any failure of the view leaves the results intact
        warnings.append(f"map.html not written: {type(exc).__name__}: {exc}")
        return {}
    key = f"{layout.outputs}/map.html"
    return {"map_html": store.put_bytes(key, html, "text/html; charset=utf-8")}


def write_job_outputs(store: ObjectStore, job_id: str, part_uris: Sequence[str], ard_uris: Sequence[str],
                      stage_seconds: dict[str, float], parameters: dict[str, Any],
                      districts: gpd.GeoDataFrame | None = None, district_id: str = "",
                      warnings: Sequence[str] | None = None, options: PartitionOptions | None = None,
                      area: tuple[float, float, float, float] | None = None) -> Summary:
    """Write the job's outputs from its batches' table parts and its tiles' ARD COGs.

    Args:
        part_uris: the batches' result files (``s3://``), in batch order.
        ard_uris: the tiles' calibrated imagery (map basemap).
        options: partitioning, row groups, the single-file copy.
        area: the job's lon/lat box: partitions of it without buildings become warnings.

    Raises:
        InvalidInput: a batch file is unreadable or a building appears twice (nothing is marked
            complete: the flow writes ``_SUCCESS`` only after this returns).
    """
    options = options or PartitionOptions()
    layout = JobLayout(job_id)
    started = time.monotonic()
    _clear(store, layout.outputs + "/")
    warnings = list(warnings or [])
    created = dt.datetime.now(dt.UTC)
    dataset = f"{layout.outputs}/buildings"
    report_html_key = f"{layout.outputs}/{REPORT_HTML}"
    outputs = {"buildings": store.s3_uri(dataset + "/"), "map": store.s3_uri(layout.map_png),
               "report": store.s3_uri(layout.report), "report_html": store.s3_uri(report_html_key)}
    items: list[OutputItem] = []
    with tempfile.TemporaryDirectory(prefix="uf-aggregate-") as tmp_name:
        tmp = Path(tmp_name)
        spill = PartitionSpill(tmp / "spill", options.zoom)
        for uri in part_uris:
            spill.add(read_batch_table(store.get_bytes(parse_s3_uri(uri)[1]), uri), uri)
        schema = spill.schema()
        # The declared schema even without a building: an empty job's table still says what it holds.
        single = SingleFileWriter(tmp / "buildings.parquet", schema, spill.geo, options.row_group_rows) \
            if options.single_file else None
        canvas = MapCanvas(spill.bounds, MAP_PX) if spill.bounds else None
        tiles: TileSpill | None = TileSpill(tmp / "tiles.sqlite") if options.web_tiles else None
        model_versions: Any = None  # for the viewer's attribution
        crs = grids.grid_crs(spill.bounds) if spill.bounds else None
        layers: dict[str, str] | None = None
        grid_files: dict[tuple[str, float], list[Path]] = {}
        district_parts: list = []
        parts: list[dict] = []
        for key in spill.partition_keys():
            folder = partition_path(dataset, key)
            pkey = folder.rsplit("/", 1)[1]
            chunk_parts: list[dict] = []
            rasters: dict[tuple[str, float], list] = {}
            assets: dict[str, tuple[str, str, list[str], str]] = {}
            bounds = [180.0, 90.0, -180.0, -90.0]
            for i, table in enumerate(partition_chunks(spill, key, schema, options.max_rows_per_file)):
                table = with_geo(table, spill.geo)
                part_key = f"{folder}/part-{i:05d}.parquet"
                assets[f"part-{i:05d}"] = (store.put_bytes(part_key, parquet_file_bytes(table, options.row_group_rows),
                                                           PARQUET_MEDIA_TYPE),
                                           PARQUET_MEDIA_TYPE, ["data"], f"buildings {pkey}, part {i}")
                if single is not None:
                    single.write(table)
                b = json.loads(table.schema.metadata[b"geo"])["columns"]["geometry"]["bbox"]
                bounds = [min(bounds[0], b[0]), min(bounds[1], b[1]), max(bounds[2], b[2]), max(bounds[3], b[3])]
                for start in range(0, len(table), FRAME_ROWS):  # pandas a slice at a time
                    frame = to_frame(table.slice(start, FRAME_ROWS))
                    chunk_parts.append(summary_parts(frame))
                    layers = layers if layers is not None else grids.grid_layers(frame)
                    for size_m in grids.CELL_SIZES:
                        for name, raster in grids.rasterize_sums(frame, size_m, list(layers), crs).items():
                            rasters.setdefault((name, float(size_m)), []).append(raster)
                    if districts is not None:
                        district_parts.append(grids.district_parts(frame, districts, district_id, list(layers)))
                    if canvas is not None:
                        canvas.add_buildings(frame)
                    if model_versions is None and "model_versions" in frame.columns and frame["model_versions"].notna().any():
                        model_versions = frame["model_versions"].dropna().iloc[0]
                    if tiles is not None:
                        try:
                            tiles.add(frame)
                        except Exception as exc:  # noqa: BLE001 - the tiles are a view; the table stands
                            warnings.append(f"web tiles not written: {type(exc).__name__}: {exc}")
                            tiles.close()
                            tiles = None
                    del frame
                del table
            spill.drop(key)
            part_summary = merge_summary_parts(chunk_parts)
            parts.append(part_summary)
            summary_key = f"{folder}/_summary.json"
            assets["summary"] = (store.put_bytes(summary_key, json.dumps(part_summary).encode(), "application/json"),
                                 "application/json", ["metadata"], f"counts and sums of {pkey}")
            for (name, cell), pieces in rasters.items():
                tags = grids.grid_tags(job_id, name, layers or {}, cell)
                local = tmp / "grids" / pkey / f"{name}_{cell:g}m.tif"
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(grids.cog_with_tags(grids.add_rasters(pieces), tags))
                grid_files.setdefault((name, cell), []).append(local)
                assets[f"{name}_{cell:g}m"] = (
                    store.put_file(grids.partition_grid_key(job_id, pkey, name, cell), local, COG_MEDIA_TYPE),
                    COG_MEDIA_TYPE, ["data"], f"{name} per {cell:g} m cell, {pkey}")
            box4 = (bounds[0], bounds[1], bounds[2], bounds[3])
            items.append(OutputItem(f"buildings-{pkey.replace('=', '-')}", box4, assets,
                                    {"urbanfabric:partition": key, "urbanfabric:buildings": part_summary["buildings"]}))
        warnings.extend(empty_partition_warnings(area, set(spill.partition_keys()), options.zoom))
        if not spill.rows:
            warnings.append("the job produced no buildings: outputs/buildings/ is empty")
        if single is not None:
            single.close()
            outputs["buildings_file"] = store.put_file(layout.buildings, tmp / "buildings.parquet",
                                                       PARQUET_MEDIA_TYPE)
            if 0 < spill.rows <= WEBMAP_MAX_BUILDINGS:
                outputs.update(_write_webmap(store, layout, job_id, tmp / "buildings.parquet", parameters,
                                             ard_uris, warnings))
            elif spill.rows:
                warnings.append(f"no map.html: {spill.rows:,} buildings > {WEBMAP_MAX_BUILDINGS:,} "
                                "(a self-contained page that size is slow to open); viewer.html shows them "
                                "from buildings.pmtiles (urbanfabric open JOB serves it)")
        job_bbox: tuple[float, float, float, float] = spill.bounds or area or (0.0, 0.0, 0.0, 0.0)
        grid_items = []
        for (name, cell), paths in grid_files.items():
            tags = grids.grid_tags(job_id, name, layers or {}, cell)
            out = grids.mosaic_sum_cog(paths, tmp / "grids" / f"{name}_{cell:g}m.tif", tags)
            uri = store.put_file(grids.grid_key(job_id, name, cell), out, COG_MEDIA_TYPE)
            grid_items.append(OutputItem(f"grid-{name}-{cell:g}m", job_bbox,
                                         {"data": (uri, COG_MEDIA_TYPE, ["data"], f"{name} per {cell:g} m cell")},
                                         {"urbanfabric:layer": name, "urbanfabric:cell_size_m": cell}))
        if grid_items:
            outputs["grids"] = f"{store.s3_uri(layout.outputs + '/grids/')} ({len(grid_items)} COGs)"
        if tiles is not None and spill.rows:
            from urbanfabric.outputs.webmap import MAP_GRID_LAYERS

            shown = [(f"grids/{name}_{cell:g}m.tif", tmp / "grids" / f"{name}_{cell:g}m.tif")
                     for (name, cell) in sorted(grid_files) if name in MAP_GRID_LAYERS or name == grids.COUNT_LAYER]
            outputs.update(_write_web_tiles(store, layout, job_id, tiles, shown, parameters, model_versions, tmp,
                                            warnings))
        elif tiles is not None:
            tiles.close()
        if districts is not None and spill.rows:
            key = f"{layout.outputs}/districts.parquet"
            table = grids.merge_district_parts(district_parts, districts, district_id).reset_index()
            store.put_bytes(key, parquet_bytes(table))
            outputs["districts"] = store.s3_uri(key)
        outputs["stac"] = store.s3_uri(f"{layout.outputs}/stac/collection.json")
        population = parameters.get("population")
        summary = summary_from_parts(job_id, parts, stage_seconds, outputs,
                                     float(population) if population else None)
        if canvas is not None and len(ard_uris) <= MAP_MAX_BASEMAP_TILES:
            preview_px = max(16, int(MAP_PX / max(1.0, len(ard_uris) ** 0.5)))
            for uri in ard_uris:  # one tile at a time, at an overview of its share of the canvas
                canvas.add_basemap(read_raster(store.get_bytes(parse_s3_uri(uri)[1]), max_size=preview_px))
        elif ard_uris:
            warnings.append(f"map drawn without imagery: {len(ard_uris)} tiles > {MAP_MAX_BASEMAP_TILES}")
        summary.warnings = warnings
        title = f"urbanfabric job {job_id}"
        credit = attribution_text(parameters)
        png = canvas.png(title, credit) if canvas is not None else map_png(
            gpd.GeoDataFrame(geometry=[], crs="EPSG:4326"), title, [], credit)
        store.put_bytes(layout.map_png, png, "image/png")
        # Everything up to here; writing the report and the STAC collection comes after.
        summary.stage_seconds = {**summary.stage_seconds, "aggregate (wall)": time.monotonic() - started}
        charts = report_charts(summary)  # from the merged summaries: no building is reread
        chart_uris = {name: store.put_bytes(f"{layout.outputs}/{report.chart_path(name)}", data, "image/png")
                      for name, data in charts.items()}
        store.put_bytes(layout.report, report.report_md(summary, parameters, charts).encode(), "text/markdown")
        store.put_bytes(report_html_key, report_html(summary, parameters, charts, png), "text/html; charset=utf-8")
    items.extend(grid_items)
    report_assets = {"report": (store.s3_uri(layout.report), "text/markdown", ["overview"], "job report"),
                     "report_html": (outputs["report_html"], "text/html", ["overview"],
                                     "job report, one self-contained page"),
                     "map": (store.s3_uri(layout.map_png), "image/png", ["overview", "visual"], "map")}
    for name, uri in chart_uris.items():
        report_assets[f"chart_{name}"] = (uri, "image/png", ["visual"], f"report chart: {name}")
    if "buildings_file" in outputs:
        report_assets["buildings"] = (outputs["buildings_file"], PARQUET_MEDIA_TYPE, ["data"],
                                      "all buildings in one file (a convenience copy for small jobs)")
    if "map_html" in outputs:
        report_assets["map_html"] = (outputs["map_html"], "text/html", ["overview", "visual"],
                                     "interactive map (self-contained, opens offline)")
    if "tiles" in outputs:
        report_assets["tiles"] = (outputs["tiles"], PMTILES_MEDIA_TYPE, ["data", "tiles"],
                                  "buildings as vector tiles (PMTiles v3, MVT, z12–z16)")
        report_assets["viewer"] = (outputs["viewer"], "text/html", ["overview", "visual"],
                                   "tile viewer (MapLibre; open over HTTP, see docs/web-map.md)")
    if "districts" in outputs:
        report_assets["districts"] = (outputs["districts"], PARQUET_MEDIA_TYPE, ["data"], "per-district totals")
    items.append(OutputItem("report", job_bbox, report_assets, {"urbanfabric:buildings": summary.buildings}))
    collection = output_collection(job_id, items, job_bbox, created)
    save_collection(collection, store.s3_uri(f"{layout.outputs}/stac"), store)
    return summary
