"""Everything a finished job hands its users, written under ``jobs/<job>/outputs/``.

The buildings table (GeoParquet, Hilbert-sorted), the stock / CO2e / solar grids (COGs), the
per-district totals when districts were given, a map over the calibrated tiles, and the
Markdown report; the :class:`~urbanfabric.outputs.summary.Summary` comes back for ``job.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import geopandas as gpd

from urbanfabric.io.geoparquet import geoparquet_bytes, parquet_bytes, read_geoparquet
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.object_store import ObjectStore, parse_s3_uri
from urbanfabric.io.rasters import read_raster
from urbanfabric.outputs import grids, report
from urbanfabric.outputs.buildings_table import combine_batches
from urbanfabric.outputs.summary import Summary, summarize

#: Pixels across the whole area of the map's basemap (each tile read at a COG overview).
MAP_PX = 2048


def write_job_outputs(store: ObjectStore, job_id: str, part_uris: Sequence[str], ard_uris: Sequence[str],
                      stage_seconds: dict[str, float], parameters: dict[str, Any],
                      districts: gpd.GeoDataFrame | None = None, district_id: str = "",
                      warnings: Sequence[str] | None = None) -> Summary:
    """Write the job's outputs from its batches' table parts and its tiles' ARD COGs."""
    layout = JobLayout(job_id)
    buildings = combine_batches([read_geoparquet(store.get_bytes(parse_s3_uri(u)[1])) for u in part_uris])
    store.put_bytes(layout.buildings, geoparquet_bytes(buildings))
    outputs = {"buildings": store.s3_uri(layout.buildings), "map": store.s3_uri(layout.map_png),
               "report": store.s3_uri(layout.report)}
    if len(buildings):
        # Stock, CO2e and solar per 100 m / 250 m cell, as validated COGs.
        written = grids.write_grids(store, job_id, buildings)
        outputs["grids"] = f"{store.s3_uri(layout.outputs + '/grids/')} ({len(written)} COGs)"
        if districts is not None:
            table = grids.district_table(buildings, districts, district_id).reset_index()
            key = f"{layout.outputs}/districts.parquet"
            store.put_bytes(key, parquet_bytes(table))
            outputs["districts"] = store.s3_uri(key)
    population = parameters.get("population")
    summary = summarize(job_id, buildings, stage_seconds, outputs,
                        float(population) if population else None)
    summary.warnings = list(warnings or [])
    preview_px = max(16, int(MAP_PX / max(1.0, len(ard_uris) ** 0.5)))
    basemap = [read_raster(store.get_bytes(parse_s3_uri(uri)[1]), max_size=preview_px) for uri in ard_uris]
    store.put_bytes(layout.map_png, report.map_png(buildings, f"urbanfabric job {job_id}", basemap))
    store.put_bytes(layout.report, report.report_md(summary, parameters).encode())
    return summary
