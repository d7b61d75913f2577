"""Conversions between protobuf messages and core types (one place, used by every adapter)."""

from __future__ import annotations

from enum import Enum
from typing import Any

from urbanfabric.footprints.ensemble import EnsembleCombine
from urbanfabric.errors import InvalidInput
from urbanfabric.imagery.tiles import Tile
from urbanfabric.footprints.tta import TTA
from urbanfabric.v1 import common_pb2

class _EnumBridge:
    """A core ``str`` enum and a proto enum whose values are named ``<PREFIX>_<MEMBER NAME>``.

    Built from the names, so a core member the proto lacks fails at import, not in a request;
    the proto's ``…_UNSPECIFIED`` (0, an unset field) reads as ``unspecified``.
    """

    def __init__(self, core: type[Enum], proto_enum: Any, prefix: str, unspecified: Enum, what: str) -> None:
        self.core, self.what = core, what
        self.to = {m: proto_enum.Value(f"{prefix}_{m.name}") for m in core}
        self.back = {v: k for k, v in self.to.items()} | {proto_enum.Value(f"{prefix}_UNSPECIFIED"): unspecified}

    def to_proto(self, value: Any) -> int:
        return self.to[self.core.parse(value)]  # type: ignore[attr-defined]

    def from_proto(self, value: int, field: str) -> Any:
        try:
            return self.back[value]
        except KeyError:
            raise InvalidInput(field, f"unknown {self.what} {value}") from None


_TTA = _EnumBridge(TTA, common_pb2.TestTimeAugmentation, "TEST_TIME_AUGMENTATION", TTA.NONE,
                   "test-time augmentation")
_COMBINE = _EnumBridge(EnsembleCombine, common_pb2.EnsembleCombine, "ENSEMBLE_COMBINE", EnsembleCombine.VOTE,
                       "ensemble combination")


def tta_to_proto(tta: TTA | str) -> int:
    """``TestTimeAugmentation`` enum value of a :class:`TTA` (or its name)."""
    return _TTA.to_proto(tta)


def tta_from_proto(value: int, field: str = "tta") -> TTA:
    """:class:`TTA` of a ``TestTimeAugmentation`` value; unknown numbers name ``field``."""
    return _TTA.from_proto(value, field)


def combine_to_proto(how: EnsembleCombine | str) -> int:
    """``EnsembleCombine`` proto value of an :class:`~urbanfabric.footprints.ensemble.EnsembleCombine` (or its name)."""
    return _COMBINE.to_proto(how)


def combine_from_proto(value: int, field: str = "ensemble_combine") -> EnsembleCombine:
    """:class:`~urbanfabric.footprints.ensemble.EnsembleCombine` of a proto value; unknown numbers name ``field``."""
    return _COMBINE.from_proto(value, field)


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
