"""Conversions between protobuf messages and core types (one place, used by every adapter)."""

from __future__ import annotations

from urbanfabric.ensemble import EnsembleCombine
from urbanfabric.errors import InvalidInput
from urbanfabric.grid import Tile
from urbanfabric.tta import TTA
from urbanfabric.v1 import common_pb2

_TTA_TO_PROTO = {
    TTA.NONE: common_pb2.TEST_TIME_AUGMENTATION_NONE,
    TTA.FLIPS: common_pb2.TEST_TIME_AUGMENTATION_FLIPS,
    TTA.D4: common_pb2.TEST_TIME_AUGMENTATION_D4,
    TTA.D4_ZOOM: common_pb2.TEST_TIME_AUGMENTATION_D4_ZOOM,
}
_TTA_FROM_PROTO = {v: k for k, v in _TTA_TO_PROTO.items()} | {
    common_pb2.TEST_TIME_AUGMENTATION_UNSPECIFIED: TTA.NONE}


def tta_to_proto(tta: TTA | str) -> int:
    """``TestTimeAugmentation`` enum value of a :class:`TTA` (or its name)."""
    return _TTA_TO_PROTO[TTA.parse(tta)]


def tta_from_proto(value: int, field: str = "tta") -> TTA:
    """:class:`TTA` of a ``TestTimeAugmentation`` value; unknown numbers name ``field``."""
    try:
        return _TTA_FROM_PROTO[value]
    except KeyError:
        raise InvalidInput(field, f"unknown test-time augmentation {value}") from None


_COMBINE_TO_PROTO = {
    EnsembleCombine.VOTE: common_pb2.ENSEMBLE_COMBINE_VOTE,
    EnsembleCombine.MEAN: common_pb2.ENSEMBLE_COMBINE_MEAN,
}
_COMBINE_FROM_PROTO = {v: k for k, v in _COMBINE_TO_PROTO.items()} | {
    common_pb2.ENSEMBLE_COMBINE_UNSPECIFIED: EnsembleCombine.VOTE}


def combine_to_proto(how: EnsembleCombine | str) -> int:
    """``EnsembleCombine`` proto value of an :class:`~urbanfabric.ensemble.EnsembleCombine` (or its name)."""
    return _COMBINE_TO_PROTO[EnsembleCombine.parse(how)]


def combine_from_proto(value: int, field: str = "ensemble_combine") -> EnsembleCombine:
    """:class:`~urbanfabric.ensemble.EnsembleCombine` of a proto value; unknown numbers name ``field``."""
    try:
        return _COMBINE_FROM_PROTO[value]
    except KeyError:
        raise InvalidInput(field, f"unknown ensemble combination {value}") from None


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
