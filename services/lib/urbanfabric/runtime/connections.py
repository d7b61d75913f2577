"""Clients a worker or service uses to reach other parts: gRPC stubs and the model client.

Every gRPC call made through :func:`call` carries a deadline; there are no deadline-less calls.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import grpc

from urbanfabric.settings import Settings
from urbanfabric.errors import InvalidInput, NotFound, Unavailable
from urbanfabric.runtime import auth
from urbanfabric.runtime.model_client import InferenceProtocol, ModelClient
from urbanfabric.v1 import (
    acquisition_pb2_grpc,
    attributes_pb2_grpc,
    calibration_pb2_grpc,
    intensity_pb2_grpc,
    materials_pb2_grpc,
    segmentation_pb2_grpc,
)

STUBS = {
    "acquisition": acquisition_pb2_grpc.AcquisitionServiceStub,
    "calibration": calibration_pb2_grpc.CalibrationServiceStub,
    "segmentation": segmentation_pb2_grpc.SegmentationServiceStub,
    "materials": materials_pb2_grpc.MaterialsServiceStub,
    "attributes": attributes_pb2_grpc.AttributesServiceStub,
    "intensity": intensity_pb2_grpc.IntensityServiceStub,
}

_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


@lru_cache(maxsize=None)
def _channel(addr: str, token_key: str) -> grpc.Channel:
    return auth.authenticated(grpc.insecure_channel(addr, options=_OPTIONS), token_key)


def stub(settings: Settings, service: str) -> Any:
    """A stub for one of the six services, over a shared channel that signs every call with
    the settings' service token."""
    return STUBS[service](_channel(settings.services[service], settings.service_token))


def call(method: Any, request: Any, timeout_s: float) -> Any:
    """Call an RPC with a deadline, turning gRPC status codes back into the core's errors."""
    try:
        return method(request, timeout=timeout_s)
    except grpc.RpcError as exc:
        code, detail = exc.code(), exc.details() or ""
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            field, _, msg = detail.partition(": ")
            raise InvalidInput(field, msg or detail) from exc
        if code is grpc.StatusCode.NOT_FOUND:
            raise NotFound(detail) from exc
        if code is grpc.StatusCode.UNAUTHENTICATED:
            # A wrong or missing key is a deployment fault: retrying will not fix it.
            raise RuntimeError(f"UNAUTHENTICATED: {detail} (check URBANFABRIC_SERVICE_TOKEN)") from exc
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.RESOURCE_EXHAUSTED):
            raise Unavailable(f"{code.name}: {detail}") from exc
        raise RuntimeError(f"{code.name}: {detail}") from exc


def model_client(settings: Settings, timeout_s: float = 120.0) -> ModelClient:
    """The model-server client of this process; the protocol comes from the environment."""
    protocol = InferenceProtocol[os.environ.get("URBANFABRIC_MODEL_PROTOCOL", "V2_GRPC")]
    return ModelClient(
        protocol,
        rest_url=settings.modelserver_rest,
        grpc_addr=settings.modelserver_grpc,
        timeout_s=timeout_s,
        token_key=settings.service_token,
    )
