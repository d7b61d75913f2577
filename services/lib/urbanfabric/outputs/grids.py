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


# --- Partitioned jobs (issue 22, item 4) ----------------------------------------------------
#
# Each partition's buildings are rasterized on the job's grid (one CRS, cells aligned to
# multiples of the cell size), so partition grids line up; the job's grid is their cell-wise sum,
# built window by window on disk (a cell on a partition border holds buildings of both).


def grid_crs(bounds: tuple[float, float, float, float]) -> CRS:
    """The job grid's CRS: the UTM zone of the centre of the buildings' lon/lat bounds (as
    ``GeoSeries.estimate_utm_crs`` picks it for the whole table)."""
    from shapely.geometry import box

    return CRS.from_user_input(gpd.GeoSeries([box(*bounds)], crs="EPSG:4326").estimate_utm_crs())


def add_rasters(rasters: Sequence[Raster]) -> Raster:
    """Cell-wise sum of aligned grids (same CRS and cell size), NaN where no grid has a value."""
    first = rasters[0]
    size = first.transform.a
    lefts = [r.transform.c for r in rasters]
    tops = [r.transform.f for r in rasters]
    rights = [r.transform.c + r.data.shape[2] * size for r in rasters]
    bottoms = [r.transform.f - r.data.shape[1] * size for r in rasters]
    left, top = min(lefts), max(tops)
    cols = int(round((max(rights) - left) / size))
    rows = int(round((top - min(bottoms)) / size))
    out = np.full((1, rows, cols), np.nan, dtype=np.float64)
    for r in rasters:
        c0 = int(round((r.transform.c - left) / size))
        r0 = int(round((top - r.transform.f) / size))
        window = out[:, r0:r0 + r.data.shape[1], c0:c0 + r.data.shape[2]]
        both = np.isfinite(window) & np.isfinite(r.data)
        window[:] = np.where(both, window + r.data, np.where(np.isfinite(window), window, r.data))
    return Raster(out.astype(np.float32), Affine(size, 0.0, left, 0.0, -size, top), first.crs, np.nan)


def partition_grid_key(job_id: str, partition: str, layer: str, cell_size: float) -> str:
    """``jobs/<job_id>/outputs/grids/<partition>/<layer>_<size>m.tif`` (``partition``: ``quadkey=…``)."""
    return f"{JobLayout(job_id).outputs}/grids/{partition}/{layer}_{cell_size:g}m.tif"


def grid_tags(job_id: str, name: str, units: dict[str, str], size: float) -> dict[str, str]:
    """The dataset tags of a grid COG."""
    return {"layer": name, "units": "buildings" if name == COUNT_LAYER else units.get(name, ""),
            "cell_size_m": f"{size:g}",
            "aggregation": "sum of buildings whose representative point is in the cell", "job_id": job_id}


def mosaic_sum_cog(paths: Sequence[Path], out: Path, tags: dict[str, str], blocksize: int = 512) -> Path:
    """The cell-wise sum of aligned grid files as one validated COG, in bounded memory.

    The output extent is the union of the inputs'; a tiled, sparse GeoTIFF on disk receives each
    input in turn (read window, add, write back: memory is one input grid), then GDAL's COG driver
    copies it block by block with overviews.

    Raises:
        RuntimeError: the result is not a valid COG.
    """
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window

    metas = []
    for p in paths:
        with rasterio.open(p) as src:
            metas.append((src.transform, src.width, src.height, src.crs))
    size = metas[0][0].a
    left = min(t.c for t, *_ in metas)
    top = max(t.f for t, *_ in metas)
    right = max(t.c + w * size for t, w, _, _ in metas)
    bottom = min(t.f - h * size for t, _, h, _ in metas)
    cols, rows = int(round((right - left) / size)), int(round((top - bottom) / size))
    work = out.with_suffix(".work.tif")
    profile = {"driver": "GTiff", "width": cols, "height": rows, "count": 1, "dtype": "float32",
               "crs": metas[0][3], "transform": Affine(size, 0.0, left, 0.0, -size, top), "nodata": np.nan,
               "tiled": True, "blockxsize": 256, "blockysize": 256, "sparse_ok": True,
               "BIGTIFF": "IF_SAFER"}
    with rasterio.open(work, "w+", **profile) as dst:
        for p, (t, w, h, _) in zip(paths, metas):
            window = Window(int(round((t.c - left) / size)), int(round((top - t.f) / size)), w, h)
            with rasterio.open(p) as src:
                add = src.read(1)
            have = dst.read(1, window=window)
            both = np.isfinite(have) & np.isfinite(add)
            dst.write(np.where(both, have + add, np.where(np.isfinite(have), have, add)).astype(np.float32),
                      1, window=window)
        dst.update_tags(**tags)
        dst.set_band_description(1, tags.get("layer", ""))
    rio_copy(work, out, driver="COG", compress="DEFLATE", predictor=3, blocksize=blocksize,
             overview_resampling="average", BIGTIFF="IF_SAFER")
    work.unlink()
    valid, errors, _ = cog_validate(str(out), quiet=True)
    if not valid:
        raise RuntimeError(f"grid {tags.get('layer')}: not a valid COG: {errors}")
    return out


def district_parts(buildings: gpd.GeoDataFrame, districts: gpd.GeoDataFrame, id_column: str,
                   layers: Sequence[str]) -> pd.DataFrame:
    """One partition's per-district sums (only districts with buildings; NaN-free count)."""
    table = district_table(buildings, districts, id_column, layers)
    return table[table[COUNT_LAYER] > 0]


def merge_district_parts(parts: Sequence[pd.DataFrame], districts: gpd.GeoDataFrame,
                         id_column: str) -> pd.DataFrame:
    """The job's district table from its partitions' (:func:`district_parts`)."""
    if not parts:
        return pd.DataFrame({COUNT_LAYER: 0}, index=pd.Index(districts[id_column], name=id_column))
    joined = pd.concat(parts)
    names = [c for c in joined.columns if c != COUNT_LAYER]
    out = joined.groupby(level=0)[names].sum(min_count=1)
    out.insert(0, COUNT_LAYER, joined.groupby(level=0)[COUNT_LAYER].sum())
    out.index.name = id_column
    return out.reindex(districts[id_column]).fillna({COUNT_LAYER: 0}).astype({COUNT_LAYER: np.int64})
