"""Conversions between protobuf messages and core types (one place, used by every adapter)."""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from pydantic import BaseModel, ValidationError

from urbanfabric.footprints.ensemble import EnsembleCombine
from urbanfabric.errors import InvalidInput
from urbanfabric.imagery.tiles import Tile
from urbanfabric.io.model_repository import split_model_ref
from urbanfabric.footprints.tta import TTA
from urbanfabric.errors import from_validation
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


# ---- option groups: a pydantic spec <-> a proto message with the same field names -------------

M = TypeVar("M", bound=BaseModel)


def _enum_prefix(enum_descriptor: Any) -> str:
    """``TestTimeAugmentation`` → ``TEST_TIME_AUGMENTATION`` (the prefix of its value names)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum_descriptor.name).upper()


def _is_model_ref(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.full_name == "urbanfabric.v1.ModelRef"


def _model_ref(text: str) -> common_pb2.ModelRef:
    name, version = split_model_ref(text)
    return common_pb2.ModelRef(name=name, version=version)


def options_to_proto(options: BaseModel, message: type[Message]) -> Message:
    """The proto ``message`` holding ``options``, field by field under the same names.

    ``name:version`` strings become ``ModelRef``s (lists of them repeated ``ModelRef``s), core
    ``str`` enums the proto enum value ``<ENUM NAME>_<MEMBER>``, scalars stay as they are. A spec
    field the message lacks raises ``KeyError`` (tests pin that the two keep the same fields).
    """
    msg = message()
    fields = msg.DESCRIPTOR.fields_by_name
    for name in type(options).model_fields:
        value, fd = getattr(options, name), fields[name]
        if _is_model_ref(fd):
            if fd.label == FieldDescriptor.LABEL_REPEATED:
                getattr(msg, name).extend(_model_ref(v) for v in value)
            elif value:
                getattr(msg, name).CopyFrom(_model_ref(value))
        elif fd.enum_type is not None:
            setattr(msg, name, fd.enum_type.values_by_name[f"{_enum_prefix(fd.enum_type)}_{value.name}"].number
                    if isinstance(value, Enum) else value)
        elif fd.label == FieldDescriptor.LABEL_REPEATED:
            getattr(msg, name).extend(value)
        else:
            setattr(msg, name, value)
    return msg


def options_from_proto(msg: Message, model: type[M], field: str) -> M:
    """``model`` from a proto message with the same field names (the inverse of :func:`options_to_proto`).

    Unset enums (``…_UNSPECIFIED``) and unset ``ModelRef`` fields take the spec's default.

    Raises:
        InvalidInput: a value the spec rejects, or an enum number it does not know, on
            ``<field>.<name>``.
    """
    data: dict[str, Any] = {}
    fields = msg.DESCRIPTOR.fields_by_name
    for name in model.model_fields:
        fd = fields[name]
        value = getattr(msg, name)
        if _is_model_ref(fd):
            if fd.label == FieldDescriptor.LABEL_REPEATED:
                data[name] = [f"{r.name}:{r.version}" for r in value]
            elif msg.HasField(name):
                data[name] = f"{value.name}:{value.version}"
        elif fd.enum_type is not None:
            if value == 0:
                continue  # UNSPECIFIED: the spec's default
            member = fd.enum_type.values_by_number.get(value)
            if member is None:
                raise InvalidInput(f"{field}.{name}", f"unknown {fd.enum_type.name} value {value}")
            core_enum = model.model_fields[name].annotation  # the spec's own str enum
            data[name] = core_enum[member.name.removeprefix(_enum_prefix(fd.enum_type) + "_")]  # type: ignore[index]
        elif fd.label == FieldDescriptor.LABEL_REPEATED:
            data[name] = list(value)
        elif fd.has_presence and not msg.HasField(name):
            continue  # an unset `optional` scalar: the spec's default (e.g. regularise on)
        else:
            data[name] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, field) from None
