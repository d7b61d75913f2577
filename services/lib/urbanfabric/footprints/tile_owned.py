"""Seams resolved per tile: each tile keeps the buildings it owns (issue 22, items 2 and 3).

A tile's footprints end at its core's edge (:func:`urbanfabric.footprints.polygons.polygonize`
flags the pieces that touch it, ``on_border``). Instead of joining every tile's border pieces
in one global pass (:func:`urbanfabric.footprints.seams.merge_seams` over the whole area), a
tile joins its own border pieces with those of its eight neighbours (the same CMAB +1.5 m /
−1.5 m merge, in the local UTM zone) and keeps the buildings it **owns**: those whose
representative point lies in its core (half-open, so a point on an edge has one owner). A
building whose point falls in a cell the job does not map (no imagery, settlement mask) is
owned by the tile of its largest piece — the row ``merge_seams`` keeps for it — so nothing the
global pass keeps is lost.

Equivalence with the global pass holds for buildings smaller than a tile (≈ 611 m at zoom 16):
their pieces all lie in the 3 × 3 neighbourhood, the pieces are merged in the same order (tile
id, then file order) and the ids come from the same representative points.

TODO(issue 22, item 2): the **seams** helper's core function in
``urbanfabric.footprints.ownership`` (tile-owned seams with the halo's whole polygons and a
local pass for buildings larger than the halo) replaces :func:`resolve_tile_seams`; the router
(:class:`urbanfabric.runtime.tile_router.TileRouter`) only calls this one hook.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import geopandas as gpd
import numpy as np
import pandas as pd

from urbanfabric.footprints.seams import merge_seams
from urbanfabric.footprints.user_footprints import cell_keys


def tile_key(tile_id: str) -> tuple[str, int, int, int]:
    """``(tms, z, x, y)`` of a tile id ``<tms>-<z>-<x>-<y>``."""
    tms, z, x, y = tile_id.rsplit("-", 3)
    return tms, int(z), int(x), int(y)


def neighbour_ids(tile_id: str) -> list[str]:
    """The eight cells around a tile (same grid, same zoom), row by row."""
    tms, z, x, y = tile_key(tile_id)
    return [f"{tms}-{z}-{x + dx}-{y + dy}" for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dx or dy]


def owner_of(footprints: gpd.GeoDataFrame, grid_tile_id: str, job_tiles: Collection[str]) -> np.ndarray:
    """The job tile owning each footprint: the cell its representative point lies in, or, when
    the job does not map that cell, the footprint's own ``tile_id`` (its largest piece's)."""
    tms, z, _, _ = tile_key(grid_tile_id)
    cells = cell_keys(footprints.geometry.representative_point(), z)
    owners = np.array([f"{tms}-{c}" for c in cells], dtype=object)
    outside = np.array([o not in job_tiles for o in owners], dtype=bool)
    owners[outside] = footprints["tile_id"].to_numpy()[outside]
    return owners


def resolve_tile_seams(tile_id: str, own: gpd.GeoDataFrame, neighbours: Mapping[str, gpd.GeoDataFrame],
                       job_tiles: Mapping[str, int]) -> gpd.GeoDataFrame:
    """The buildings tile ``tile_id`` owns, with the pieces that cross its borders joined.

    Args:
        tile_id: the tile (``WebMercatorQuad-<z>-<x>-<y>``; cells of the XYZ grid).
        own: the tile's footprints (EPSG:4326, columns of ``polygonize``).
        neighbours: tile id → footprints of its mapped neighbours (only their ``on_border``
            pieces take part).
        job_tiles: every tile id the job maps → its position in the job's tile order; pieces
            are joined in that order, the order the global pass sees them in.
    """
    pieces = {tile_id: own, **{k: n[n["on_border"].astype(bool)] for k, n in neighbours.items() if len(n)}}
    frames = [pieces[k] for k in sorted(pieces, key=lambda k: (job_tiles.get(k, len(job_tiles)), k))
              if len(pieces[k])]
    if not frames:
        return own.iloc[:0]
    local = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:4326")
    if local.empty:
        return own.iloc[:0]
    merged = merge_seams(local)
    keep = owner_of(merged, tile_id, job_tiles) == tile_id
    return merged[keep].reset_index(drop=True)


__all__ = ["neighbour_ids", "owner_of", "resolve_tile_seams", "tile_key"]
