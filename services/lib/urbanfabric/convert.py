"""Conversions between protobuf messages and core types (one place, used by every adapter)."""

from __future__ import annotations

from urbanfabric.errors import InvalidInput
from urbanfabric.grid import Tile
from urbanfabric.v1 import common_pb2


def tile_from_proto(msg: common_pb2.TileRef) -> Tile:
    """Core :class:`Tile` from a TileRef, validating what the core relies on."""
    b = msg.bounds
    if not msg.tile_id:
        raise InvalidInput("tile.tile_id", "is required")
    if not (b.max_x > b.min_x and b.max_y > b.min_y):
        raise InvalidInput("tile.bounds", f"empty bounds {b.min_x, b.min_y, b.max_x, b.max_y}")
    if not b.crs.upper().startswith("EPSG:"):
        raise InvalidInput("tile.bounds.crs", f"expected 'EPSG:<code>', got {b.crs!r}")
    if msg.resolution <= 0:
        raise InvalidInput("tile.resolution", "must be positive")
    return Tile(
        tms=msg.tile_matrix_set or "custom",
        z=msg.z,
        x=msg.x,
        y=msg.y,
        bounds=(b.min_x, b.min_y, b.max_x, b.max_y),
        crs=b.crs.upper(),
        resolution=msg.resolution,
    )


def tile_to_proto(tile: Tile) -> common_pb2.TileRef:
    left, bottom, right, top = tile.bounds
    return common_pb2.TileRef(
        tile_id=tile.tile_id,
        tile_matrix_set=tile.tms,
        z=tile.z,
        x=tile.x,
        y=tile.y,
        bounds=common_pb2.GeoBounds(min_x=left, min_y=bottom, max_x=right, max_y=top, crs=tile.crs),
        resolution=tile.resolution,
    )
