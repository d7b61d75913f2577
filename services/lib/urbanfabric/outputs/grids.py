"""Aggregates of the buildings table: COG grids and per-district tables.

Grids sum per-building quantities (material stock per material, total mass, embodied CO2e,
rooftop solar potential, building count) over square cells of a configurable size (100 m
and 250 m by default) in the local UTM zone of the buildings; a building counts in the cell
holding its representative point. Cells without buildings are nodata (NaN), so "no building
here" differs from "buildings with zero". Only additive columns are gridded: the point
estimates, not the Monte-Carlo percentiles (a sum of per-building p95s is not the p95 of the
sum). Each grid is a validated Cloud-Optimized GeoTIFF at
``jobs/<job_id>/outputs/grids/<layer>_<size>m.tif``; its tags give the layer, unit and cell
size.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rio_cogeo.cogeo import cog_validate

from urbanfabric.errors import InvalidInput
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.rasters import COG_MEDIA_TYPE, Raster

#: Default cell sizes (m).
CELL_SIZES: tuple[int, ...] = (100, 250)
#: Non-mass layers gridded when present, with their units.
EXTRA_LAYERS: dict[str, str] = {"mass_total_kg": "kg", "embodied_co2e_kg": "kgCO2e",
                                "solar_kwh_per_year": "kWh/year"}
#: The building-count layer.
COUNT_LAYER = "buildings"


class _Store(Protocol):
    def put_bytes(self, key: str, data: bytes, content_type: str = ...) -> str: ...


def grid_layers(buildings: gpd.GeoDataFrame) -> dict[str, str]:
    """Additive columns to grid, with units: ``mass_<m>_kg`` point estimates and the extras."""
    cols = {c: "kg" for c in buildings.columns
            if c.startswith("mass_") and c.endswith("_kg") and c != "mass_total_kg"}
    cols.update({c: u for c, u in EXTRA_LAYERS.items() if c in buildings.columns})
    return cols


def rasterize_sums(
    buildings: gpd.GeoDataFrame, cell_size: float, layers: Sequence[str],
    crs: object | None = None,
) -> dict[str, Raster]:
    """Per-cell sums of ``layers`` and the building count, as float32 rasters.

    Args:
        buildings: footprints with the layer columns (any CRS).
        cell_size: cell edge in metres.
        layers: columns to sum; NaN values (e.g. a rejected building) are skipped.
        crs: metric CRS of the grid; default the buildings' UTM zone.

    Returns:
        ``{layer: Raster}`` plus :data:`COUNT_LAYER`, all on one grid aligned to multiples
        of ``cell_size``.

    Raises:
        InvalidInput: no buildings, no CRS, a missing layer or a non-positive cell size.
    """
    if not cell_size > 0:
        raise InvalidInput("cell_size", f"must be > 0, got {cell_size}")
    if buildings.empty:
        raise InvalidInput("buildings", "no buildings to grid")
    if buildings.crs is None:
        raise InvalidInput("buildings", "has no CRS")
    missing = [c for c in layers if c not in buildings.columns]
    if missing:
        raise InvalidInput("layers", f"not in the table: {missing}")
    crs = crs or buildings.estimate_utm_crs()
    pts = buildings.geometry.representative_point().to_crs(crs)
    x, y = pts.x.to_numpy(), pts.y.to_numpy()
    left = np.floor(x.min() / cell_size) * cell_size
    top = (np.floor(y.max() / cell_size) + 1) * cell_size
    cols = int(np.floor((x.max() - left) / cell_size)) + 1
    rows = int(np.floor((top - y.min()) / cell_size)) + 1
    c = np.clip(((x - left) // cell_size).astype(np.int64), 0, cols - 1)
    r = np.clip(((top - y) // cell_size).astype(np.int64), 0, rows - 1)
    cell = r * cols + c
    transform = Affine(cell_size, 0.0, left, 0.0, -cell_size, top)
    count = np.bincount(cell, minlength=rows * cols)
    empty = count == 0
    out: dict[str, Raster] = {}
    for name in [*layers, COUNT_LAYER]:
        if name == COUNT_LAYER:
            sums: np.ndarray = count.astype(np.float64)
        else:
            v = pd.to_numeric(buildings[name], errors="coerce").to_numpy(dtype=np.float64)
            sums = np.bincount(cell, weights=np.nan_to_num(v, nan=0.0), minlength=rows * cols)
        grid = np.where(empty, np.nan, sums).astype(np.float32).reshape(1, rows, cols)
        out[name] = Raster(grid, transform, CRS.from_user_input(crs), np.nan)
    return out


def cog_with_tags(raster: Raster, tags: dict[str, str], blocksize: int = 512) -> bytes:
    """Encode a raster as a COG (DEFLATE, float predictor, overviews) with dataset tags."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grid.tif"
        _, rows, cols = raster.data.shape
        profile = {"driver": "COG", "width": cols, "height": rows, "count": 1,
                   "dtype": raster.data.dtype.name, "crs": raster.crs,
                   "transform": raster.transform, "nodata": raster.nodata,
                   "compress": "DEFLATE", "predictor": 3, "blocksize": blocksize,
                   "overview_resampling": "average", "BIGTIFF": "IF_SAFER"}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(raster.data)
            dst.update_tags(**tags)
            dst.set_band_description(1, tags.get("layer", ""))
        valid, errors, _ = cog_validate(str(path), quiet=True)
        if not valid:  # never publish a file that is not a COG
            raise RuntimeError(f"grid {tags.get('layer')}: not a valid COG: {errors}")
        return path.read_bytes()


def grid_key(job_id: str, layer: str, cell_size: float) -> str:
    """``jobs/<job_id>/outputs/grids/<layer>_<size>m.tif``."""
    return f"{JobLayout(job_id).outputs}/grids/{layer}_{cell_size:g}m.tif"


def write_grids(
    store: _Store,
    job_id: str,
    buildings: gpd.GeoDataFrame,
    cell_sizes: Sequence[float] = CELL_SIZES,
    layers: Sequence[str] | None = None,
) -> dict[str, str]:
    """Write validated COG grids of the buildings' stock, CO2e and solar potential.

    Args:
        store: object store (``put_bytes(key, data, content_type) -> uri``).
        job_id: the job whose ``outputs/grids/`` receive the files.
        buildings: the buildings table (GeoDataFrame with a CRS).
        cell_sizes: cell edges in metres.
        layers: columns to grid; default :func:`grid_layers`.

    Returns:
        ``{"<layer>_<size>m": uri}`` for every layer (plus the building count) and size;
        empty when there are no buildings.

    Raises:
        InvalidInput: bad cell size, missing layer column or CRS.
        RuntimeError: a written grid fails COG validation.
    """
    if buildings.empty:
        return {}
    units = grid_layers(buildings)
    names = list(layers) if layers is not None else list(units)
    written: dict[str, str] = {}
    for size in cell_sizes:
        for name, raster in rasterize_sums(buildings, size, names).items():
            tags = {"layer": name, "units": "buildings" if name == COUNT_LAYER
                    else units.get(name, ""), "cell_size_m": f"{size:g}",
                    "aggregation": "sum of buildings whose representative point is in the cell",
                    "job_id": job_id}
            key = grid_key(job_id, name, size)
            written[f"{name}_{size:g}m"] = store.put_bytes(key, cog_with_tags(raster, tags),
                                                           COG_MEDIA_TYPE)
    return written


def district_table(buildings: gpd.GeoDataFrame, districts: gpd.GeoDataFrame,
                   id_column: str, layers: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-district sums of the additive columns and the building count.

    A building belongs to the district containing its representative point; buildings in
    no district are left out (the ``buildings`` count shows how many were kept).

    Raises:
        InvalidInput: ``id_column`` missing from the districts, or a CRS missing.
    """
    if id_column not in districts.columns:
        raise InvalidInput("id_column", f"{id_column!r} not in the districts")
    if buildings.crs is None or districts.crs is None:
        raise InvalidInput("crs", "buildings and districts need a CRS")
    names = list(layers) if layers is not None else list(grid_layers(buildings))
    pts = gpd.GeoDataFrame(buildings[names].apply(pd.to_numeric, errors="coerce"),
                           geometry=buildings.geometry.representative_point(),
                           crs=buildings.crs).to_crs(districts.crs)
    joined = gpd.sjoin(pts, districts[[id_column, "geometry"]], how="inner",
                       predicate="within")
    out = joined.groupby(id_column)[names].sum(min_count=1)
    out.insert(0, COUNT_LAYER, joined.groupby(id_column).size())
    return out.reindex(districts[id_column]).fillna({COUNT_LAYER: 0}).astype(
        {COUNT_LAYER: np.int64})
