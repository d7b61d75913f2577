"""Small, documented exceptions shared by the core stages.

Services map them to gRPC status codes in one place (``urbanfabric.grpc_service``):
``InvalidInput`` → INVALID_ARGUMENT, ``NotFound`` → NOT_FOUND, ``Unavailable`` → UNAVAILABLE.
"""


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
