"""Small, documented exceptions shared by the core stages.

Services map them to gRPC status codes in one place (``urbanfabric.runtime.grpc_service``):
``InvalidInput`` → INVALID_ARGUMENT, ``NotFound`` → NOT_FOUND, ``Unavailable`` → UNAVAILABLE.
:func:`from_validation` turns a pydantic error into one ``InvalidInput`` on its field path;
:func:`parse_choice` turns a user's name for a choice into its enum member or an ``InvalidInput``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar


class UrbanfabricError(Exception):
    """Base class of every error the core raises on purpose."""


class InvalidInput(UrbanfabricError, ValueError):
    """An input is malformed. ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(UrbanfabricError, LookupError):
    """A referenced object (image, model version, job) does not exist."""


class Unavailable(UrbanfabricError):
    """A dependency (object store, model server) failed in a way worth retrying."""


class EmptyArea(InvalidInput):
    """The requested area does not intersect any imagery of the source."""


def from_validation(exc: Any, prefix: str = "") -> InvalidInput:
    """The first problem of a pydantic ``ValidationError`` as :class:`InvalidInput` on its field
    path (under ``prefix``), counting the others. (Typed ``Any``: the services that never
    validate a spec do not install pydantic.)"""
    first = exc.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
    # A model-level validator has no location of its own; when it raised InvalidInput, that
    # error names the field.
    raised = (first.get("ctx") or {}).get("error")
    if isinstance(raised, InvalidInput):
        path = ".".join(p for p in (path, raised.field) if p)
    field = ".".join(p for p in (prefix, path) if p) or "spec"
    msg = raised.message if isinstance(raised, InvalidInput) else first["msg"].removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    return InvalidInput(field, msg + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""))


E = TypeVar("E", bound=Enum)


def parse_choice(kind: type[E], value: E | str | None, *, field: str, default: E | None = None) -> E:
    """The member of the string enum ``kind`` named ``value`` (case and surrounding spaces ignored).

    Empty or None gives ``default`` (an error when there is none). Every named choice the user
    makes (TTA, ensemble rule, chip mode) goes through here, so an unknown name is always an
    :class:`InvalidInput` on ``field`` that lists the names there are.
    """
    if isinstance(value, kind):
        return value
    name = str(value or "").strip().lower()
    if not name and default is not None:
        return default
    try:
        return kind(name)
    except ValueError:
        names = ", ".join(str(m.value) for m in kind)
        raise InvalidInput(field, f"unknown {value!r}; one of {names}") from None
