"""Quality checks on a job's footprints: buildings cut at tile borders.

Tiles are segmented one by one (with a halo), so a building that straddles a tile border is
first found as two pieces, one per tile; :func:`merge_seams` joins
them (CMAB "Building rooftop": +1.5 m buffer, merge, −1.5 m). This module checks the result
the way a reviewer would look at the map:

* a **cut pair** — two footprints on opposite sides of an internal tile border, both touching
  it and (almost) touching each other: one building left in two pieces;
* a **flush edge** — a footprint with a long straight stretch of its outline lying on a
  border: the other half of the building was lost (e.g. dropped by the minimum-area filter).

Distances are measured in a local metric CRS (UTM); borders come from the job's grid cells
(:class:`urbanfabric.imagery.tiles.Tile`, bounds in the grid's CRS).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely import LineString
from shapely.geometry.base import BaseGeometry

from urbanfabric.footprints.polygons import building_id
from urbanfabric.footprints.regularise import polygonal
from urbanfabric.imagery.tiles import Tile

#: Buffer that joins border pieces (CMAB "Building rooftop": +1.5 m, merge, −1.5 m).
SEAM_BUFFER_M = 1.5


def valid_lonlat(geom: BaseGeometry) -> BaseGeometry:
    """A joined building as the table holds it (lon/lat), repaired where rounding broke it.

    The −1.5 m shrink can leave a hole a hair wide, which collapses to a line in degrees; the
    polygonal parts of ``make_valid`` keep everything else. ``ownership`` applies the same, so
    the two passes still give the same geometry and ``building_id``.
    """
    return geom if geom.is_valid else polygonal(geom)


def merge_seams(footprints: gpd.GeoDataFrame, buffer_m: float = SEAM_BUFFER_M) -> gpd.GeoDataFrame:
    """Join border pieces of the same building from neighbouring tiles.

    Only rows with ``on_border`` take part: they are buffered by ``buffer_m``, intersecting
    pieces are dissolved, and the union is shrunk back. Interior footprints are untouched, so
    two separate buildings 2 m apart inside a tile stay separate.
    """
    if footprints.empty or not footprints["on_border"].any():
        return footprints.reset_index(drop=True)
    # Tile results arrive in any order; a fixed order makes the merged confidence (a weighted
    # mean, whose float sum depends on order) and the kept row identical run to run.
    keys = [c for c in ("tile_id", "building_id") if c in footprints.columns]
    if keys:
        footprints = footprints.sort_values(keys, kind="stable")
    metric_crs = footprints.estimate_utm_crs()
    border = footprints[footprints["on_border"]].to_crs(metric_crs)
    inner = footprints[~footprints["on_border"]]
    grown = border.geometry.buffer(buffer_m)
    # Connected groups of intersecting grown pieces.
    left, right = grown.sindex.query(grown, predicate="intersects")
    n = len(border)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(left, right):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    groups = np.array([find(i) for i in range(n)])
    border = border.assign(_group=groups, _grown=grown.values)
    merged_rows = []
    for _, g in border.groupby("_group"):
        if len(g) == 1:
            row = g.iloc[0].copy()
        else:
            union = gpd.GeoSeries(g["_grown"].values, crs=metric_crs).union_all().buffer(-buffer_m)
            area = g.geometry.area.to_numpy()
            row = g.iloc[int(area.argmax())].copy()
            row["geometry"] = union
            row["footprint_confidence"] = float(np.average(g["footprint_confidence"], weights=area))
        merged_rows.append(row)
    merged = gpd.GeoDataFrame(merged_rows, geometry="geometry", crs=metric_crs)
    merged = merged.drop(columns=["_group", "_grown"])
    merged = merged[~merged.geometry.is_empty]
    merged["footprint_area_m2"] = merged.geometry.area
    merged = merged.to_crs("EPSG:4326")
    merged["geometry"] = [valid_lonlat(g) for g in merged.geometry]
    pts = merged.geometry.representative_point()
    merged["building_id"] = [building_id(p.x, p.y) for p in pts]
    out = pd.concat([inner, merged], ignore_index=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs="EPSG:4326")


#: A footprint "touches" a border when it comes this close to it (≈ two 0.5 m pixels).
TOUCH_M = 1.0
#: Two pieces this close across a border are one building (below merge_seams' 2 × 1.5 m reach).
GAP_M = 1.5
#: Outline length lying on a border (within ``FLUSH_BAND_M``) that marks a lost half.
FLUSH_LENGTH_M = 6.0
FLUSH_BAND_M = 0.3


@dataclass(frozen=True)
class SeamReport:
    """Result of :func:`seam_defects`.

    Attributes:
        borders: number of internal tile borders checked.
        near_border: footprints within ``TOUCH_M`` of an internal border.
        cut_pairs: ``(building_id, building_id)`` pairs left in two pieces across a border.
        flush: ids of footprints with more than ``FLUSH_LENGTH_M`` of outline on a border.
    """

    borders: int
    near_border: int
    cut_pairs: list[tuple[str, str]]
    flush: list[str]

    @property
    def ok(self) -> bool:
        return not self.cut_pairs and not self.flush

    def text(self) -> str:
        return (f"{self.borders} internal tile borders, {self.near_border} footprints touch one; "
                f"{len(self.cut_pairs)} cut in two, {len(self.flush)} flush with a border")


def internal_borders(bounds: Iterable[Sequence[float]]) -> list[LineString]:
    """Edges shared by two tiles of a grid, as lines in the tiles' CRS.

    Args:
        bounds: ``(west, south, east, north)`` of each tile of one regular grid.
    """
    # Rounded so edges computed from different transforms (float noise) still match.
    rounded = [tuple(round(v, 6) for v in b) for b in bounds]
    edges: dict[tuple, int] = {}
    for w, s, e, n in rounded:
        for edge in (((w, s), (w, n)), ((e, s), (e, n)), ((w, s), (e, s)), ((w, n), (e, n))):
            edges[edge] = edges.get(edge, 0) + 1
    shared = [LineString(edge) for edge, count in edges.items() if count > 1]
    # Collinear shared edges join into long lines (fewer, cleaner geometries to test against).
    if not shared:
        return []
    merged = shapely.line_merge(shapely.union_all(shared))
    return list(getattr(merged, "geoms", [merged]))


def seam_defects(footprints: gpd.GeoDataFrame, tiles: Sequence[Tile]) -> SeamReport:
    """Find buildings cut at internal tile borders.

    Args:
        footprints: footprints with ``building_id`` and polygon geometry (any CRS).
        tiles: the job's grid cells (one grid, one CRS).

    Returns:
        A :class:`SeamReport`; ``ok`` is true when no building is cut.
    """
    lines = internal_borders(t.bounds for t in tiles)
    if footprints.empty or not lines:
        return SeamReport(len(lines), 0, [], [])
    near, cut, flush = scan_borders(footprints, gpd.GeoSeries(lines, crs=tiles[0].crs))
    return SeamReport(len(lines), len(near), sorted(cut), sorted(flush))


def scan_borders(footprints: gpd.GeoDataFrame, borders: gpd.GeoSeries,
                 ) -> tuple[set[str], set[tuple[str, str]], set[str]]:
    """Ids of the footprints near ``borders`` (lines), pairs cut across one, and ids flush
    with one (see :func:`seam_defects`)."""
    metric_crs = footprints.estimate_utm_crs()
    fp = footprints.to_crs(metric_crs).reset_index(drop=True)
    ids = fp["building_id"].astype(str).to_numpy()
    cut: set[tuple[str, str]] = set()
    flush: set[str] = set()
    near_any = np.zeros(len(fp), bool)
    for line in borders.to_crs(metric_crs):
        near = np.flatnonzero(fp.geometry.distance(line).to_numpy() < TOUCH_M)
        near_any[near] = True
        if not len(near):
            continue
        geoms = fp.geometry.iloc[near]
        # Side of the line: sign of the cross product at each footprint's centroid.
        (x0, y0), (x1, y1) = line.coords[0], line.coords[-1]
        c = geoms.centroid
        side = np.sign((x1 - x0) * (c.y.to_numpy() - y0) - (y1 - y0) * (c.x.to_numpy() - x0))
        band = line.buffer(FLUSH_BAND_M)
        on_line = geoms.boundary.intersection(band).length.to_numpy()
        flush.update(ids[near[on_line > FLUSH_LENGTH_M]])
        left, right = geoms.sindex.query(geoms.buffer(GAP_M), predicate="intersects")
        for a, b in zip(left, right):
            if side[a] * side[b] < 0:
                first, second = sorted((ids[near[a]], ids[near[b]]))
                cut.add((first, second))
    return set(ids[near_any]), cut, flush


@dataclass(frozen=True)
class BorderAgreement:
    """How well neighbouring tiles' masks agree on their shared border pixels.

    Attributes:
        borders: shared borders compared.
        pixels: border pixel pairs with data on both sides.
        mean_abs_diff: mean |p_a − p_b| of the building probability (0–1).
        mask_agreement: share of pairs with the same building / background decision.
    """

    borders: int
    pixels: int
    mean_abs_diff: float
    mask_agreement: float

    def text(self) -> str:
        return (f"{self.borders} borders, {self.pixels} pixel pairs: mean |Δp| {self.mean_abs_diff:.3f}, "
                f"mask agreement {self.mask_agreement:.3f}")


def border_agreement(masks: dict[tuple[int, int], np.ndarray], nodata: int = 255) -> BorderAgreement:
    """Compare the last row/column of each tile's mask with the first of its neighbour.

    Args:
        masks: ``(x, y)`` grid index → the segmentation service's ``mask.tif`` bands
            (band 0: probability × 100, band 1: building 0/1; ``nodata`` where no imagery).
        nodata: the masks' nodata value.
    """
    diffs: list[np.ndarray] = []
    agree: list[np.ndarray] = []
    for (x, y), a in masks.items():
        # East neighbour: our last column against its first; south neighbour: rows.
        for key, ours, theirs in (((x + 1, y), np.s_[:, :, -1], np.s_[:, :, 0]),
                                  ((x, y + 1), np.s_[:, -1, :], np.s_[:, 0, :])):
            if key not in masks:
                continue
            pa, pb = a[ours], masks[key][theirs]
            ok = (pa[0] != nodata) & (pb[0] != nodata)
            diffs.append(np.abs(pa[0][ok].astype(np.int16) - pb[0][ok].astype(np.int16)) / 100.0)
            agree.append(pa[1][ok] == pb[1][ok])
    if not diffs:
        return BorderAgreement(0, 0, float("nan"), float("nan"))
    d, g = np.concatenate(diffs), np.concatenate(agree)
    return BorderAgreement(len(diffs), int(d.size), float(d.mean()) if d.size else float("nan"),
                           float(g.mean()) if g.size else float("nan"))


def main(argv: list[str] | None = None) -> int:
    """``python -m urbanfabric.footprints.seams JOB_ID``: seam checks of a finished job on the running stack."""
    import argparse

    from urbanfabric.settings import Settings
    from urbanfabric.io.job_layout import JobLayout
    from urbanfabric.io.rasters import read_raster
    from urbanfabric.io.object_store import ObjectStore

    parser = argparse.ArgumentParser(prog="python -m urbanfabric.footprints.seams", description=main.__doc__)
    parser.add_argument("job_id")
    args = parser.parse_args(argv)
    store = ObjectStore(Settings.load())
    layout = JobLayout(args.job_id)
    masks: dict[tuple[int, int], np.ndarray] = {}
    tiles: list[Tile] = []
    for key in store.list(f"{layout.root}/tiles/"):
        if key.endswith("/mask.tif"):
            tile_id = key.split("/")[-2]
            tms, z, x, y = tile_id.rsplit("-", 3)
            raster = read_raster(store.get_bytes(key))
            masks[int(x), int(y)] = raster.data
            tiles.append(Tile(tms, int(z), int(x), int(y), raster.bounds, str(raster.crs), raster.resolution))
    with tempfile.TemporaryDirectory() as tmp:
        table = gpd.read_parquet(store.get_file(layout.buildings, Path(tmp) / "b.parquet"))
    print("seams:", seam_defects(table, tiles).text())
    print("border agreement:", border_agreement(masks).text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
