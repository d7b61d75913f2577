"""A real gRPC server over the calibration adapter, with an in-memory object store."""

import grpc
import numpy as np
import pytest
from affine import Affine
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from rasterio.crs import CRS

from services.calibration.server import CalibrationServicer
from tests.fakes import MemoryStore
from urbanfabric.runtime.auth import authenticated
from urbanfabric.runtime.grpc_service import DEFAULT_DEADLINES, Registration, batch_deadline, serve
from urbanfabric.io.rasters import Raster, cog_bytes, read_raster
from urbanfabric.v1 import calibration_pb2, calibration_pb2_grpc, common_pb2


@pytest.fixture()
def server():
    store = MemoryStore()
    srv = serve("calibration", [Registration(CalibrationServicer(store),
                                             calibration_pb2_grpc.add_CalibrationServiceServicer_to_server,
                                             "urbanfabric.v1.CalibrationService")], port=0, block=False,
                token_key="k" * 32, reflection_on=True)
    channel = authenticated(grpc.insecure_channel(f"127.0.0.1:{srv.bound_port}"), "k" * 32)
    yield store, channel
    channel.close()
    srv.stop(0)


def _raw(store):
    data = np.random.default_rng(0).integers(1, 255, (3, 64, 64), dtype=np.uint8)
    store.put_bytes("jobs/j/tiles/t/raw.tif", cog_bytes(Raster(data, Affine(0.6, 0, 0, 0, -0.6, 0), CRS.from_epsg(3857), 0)))
    return store.s3_uri("jobs/j/tiles/t/raw.tif")


def test_health_reflection_and_a_real_call(server):
    store, channel = server
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "urbanfabric.v1.CalibrationService"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    assert "urbanfabric.v1.CalibrationService" in {s.name for s in answer.list_services_response.service}

    stub = calibration_pb2_grpc.CalibrationServiceStub(channel)
    req = calibration_pb2.CalibrateRequest(tile_id="t", raw=common_pb2.ObjectRef(uri=_raw(store)))
    req.job.job_id = "j"
    resp = stub.Calibrate(req, timeout=10)
    ard = read_raster(store.get_bytes("jobs/j/tiles/t/ard.tif"))
    assert resp.ard.uri.endswith("ard.tif") and ard.data.dtype == np.float32
    assert np.nanmin(ard.data) >= 0 and np.nanmax(ard.data) <= 1
    assert len(resp.stats) == 3


def test_bad_requests_name_the_field_and_the_service_stays_up(server):
    store, channel = server
    stub = calibration_pb2_grpc.CalibrationServiceStub(channel)
    req = calibration_pb2.CalibrateRequest(tile_id="t")
    req.job.job_id = "j"
    with pytest.raises(grpc.RpcError) as err:
        stub.Calibrate(req, timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "raw.uri" in err.value.details()

    store.put_bytes("corrupt.tif", b"GIF89a not a tiff")
    req.raw.uri = store.s3_uri("corrupt.tif")
    with pytest.raises(grpc.RpcError) as err:
        stub.Calibrate(req, timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("image:")
    assert not store.exists("jobs/j/tiles/t/ard.tif")  # nothing partial written

    req.raw.uri = store.s3_uri("missing.tif")
    with pytest.raises(grpc.RpcError) as err:
        stub.Calibrate(req, timeout=5)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND

    req.raw.uri = _raw(store)
    assert stub.Calibrate(req, timeout=10).ard.uri  # still serving


def test_a_batch_deadline_grows_with_the_batch_but_never_below_the_tile_deadline():
    assert batch_deadline(1) == batch_deadline(250) == DEFAULT_DEADLINES["tile"]
    assert batch_deadline(1_000) == 500.0 and batch_deadline(4_000) == 4 * batch_deadline(1_000)
