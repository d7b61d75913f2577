"""Service tokens and the gRPC server's refusals, against a real gRPC server on loopback."""

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.calibration.server import CalibrationServicer
from tests.fakes import MemoryStore
from urbanfabric.runtime import auth
from urbanfabric.runtime.grpc_service import Registration, serve
from urbanfabric.v1 import calibration_pb2, calibration_pb2_grpc

KEY = "a" * 48


def test_a_minted_token_passes_and_every_forgery_is_refused():
    now = 1_000_000.0
    token = auth.mint(KEY, now)
    assert auth.check(KEY, f"Bearer {token}", now) is None
    assert auth.check(KEY, None, now) == "missing bearer token"
    assert auth.check(KEY, f"Basic {token}", now) == "authorization is not a bearer token"
    assert auth.check("b" * 48, f"Bearer {token}", now) == "bad token signature"
    assert auth.check(KEY, f"Bearer {token}", now + auth.TOKEN_TTL_S + 1) == "token expired"
    assert auth.check(KEY, "Bearer uf1.notanumber.abc", now) == "malformed token"
    # A token for the far future, even correctly signed, is refused: tokens stay short-lived.
    assert auth.check(KEY, f"Bearer {auth.mint(KEY, now, ttl_s=86400)}", now) == "token expiry too far in the future"
    # The key itself is never a valid token.
    assert auth.check(KEY, f"Bearer {KEY}", now) == "malformed token"


def test_a_server_without_a_key_refuses_to_start_unless_told(monkeypatch):
    monkeypatch.delenv(auth.KEY_ENV, raising=False)
    monkeypatch.delenv(auth.INSECURE_ENV, raising=False)
    with pytest.raises(auth.MissingKey, match="URBANFABRIC_SERVICE_TOKEN is not set"):
        auth.server_key()
    monkeypatch.setenv(auth.INSECURE_ENV, "1")
    assert auth.server_key() is None
    monkeypatch.setenv(auth.KEY_ENV, KEY)
    assert auth.server_key() == KEY


@pytest.fixture()
def addr():
    srv = serve("calibration", [Registration(CalibrationServicer(MemoryStore()),
                                             calibration_pb2_grpc.add_CalibrationServiceServicer_to_server,
                                             "urbanfabric.v1.CalibrationService")],
                port=0, block=False, token_key=KEY, max_message_bytes=1 << 20)
    yield f"127.0.0.1:{srv.bound_port}"
    srv.stop(0)


def _calibrate(channel, timeout=5.0, tile_id="t"):
    return calibration_pb2_grpc.CalibrationServiceStub(channel).Calibrate(
        calibration_pb2.CalibrateRequest(tile_id=tile_id), timeout=timeout)


def test_calls_without_a_valid_token_are_refused_before_the_handler_runs(addr):
    with grpc.insecure_channel(addr) as plain:
        with pytest.raises(grpc.RpcError) as err:
            _calibrate(plain)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "missing bearer token" in err.value.details()
        # Probes need no token.
        reply = health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with auth.authenticated(grpc.insecure_channel(addr), "b" * 48) as forged:
        with pytest.raises(grpc.RpcError) as err:
            _calibrate(forged)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED and "bad token signature" in err.value.details()
    with auth.authenticated(grpc.insecure_channel(addr), KEY) as good:
        # Past authentication the handler runs: the empty request is refused naming its field.
        with pytest.raises(grpc.RpcError) as err:
            _calibrate(good)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "job.job_id" in err.value.details()


def test_calls_without_a_bounded_deadline_are_refused(addr):
    with auth.authenticated(grpc.insecure_channel(addr), KEY) as good:
        stub = calibration_pb2_grpc.CalibrationServiceStub(good)
        with pytest.raises(grpc.RpcError) as err:
            stub.Calibrate(calibration_pb2.CalibrateRequest(tile_id="t"))  # no deadline at all
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("deadline")
        with pytest.raises(grpc.RpcError) as err:
            _calibrate(good, timeout=auth.MAX_DEADLINE_S * 2)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("deadline")


def test_oversized_requests_are_refused(addr):
    with auth.authenticated(grpc.insecure_channel(addr), KEY) as good:
        with pytest.raises(grpc.RpcError) as err:
            _calibrate(good, tile_id="x" * (2 << 20))
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_reflection_is_off_unless_asked_for(addr):
    with auth.authenticated(grpc.insecure_channel(addr), KEY) as good:
        refl = reflection_pb2_grpc.ServerReflectionStub(good)
        with pytest.raises(grpc.RpcError) as err:
            next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                           timeout=5))
        assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_settings_keep_secrets_out_of_repr_and_speak_sasl_only_when_told():
    from urbanfabric.settings import Settings

    s = Settings.load(path="/nonexistent", environ={
        "URBANFABRIC_SERVICE_TOKEN": "tok-123456", "URBANFABRIC_S3_SECRET_KEY": "s3-secret-789",
        "PREFECT_API_AUTH_STRING": "u:prefect-pw", "URBANFABRIC_KAFKA_PASSWORD": "kafka-pw"})
    assert s.service_token == "tok-123456"
    for secret in ("tok-123456", "s3-secret-789", "prefect-pw", "kafka-pw"):
        assert secret not in repr(s)
    assert s.kafka_options() == {"bootstrap_servers": s.kafka_bootstrap}  # no user: plaintext
    sasl = s.with_env({"URBANFABRIC_KAFKA_USERNAME": "uf"}).kafka_options()
    assert sasl["security_protocol"] == "SASL_PLAINTEXT" and sasl["sasl_mechanism"] == "SCRAM-SHA-512"
    assert sasl["sasl_plain_username"] == "uf" and sasl["sasl_plain_password"] == "kafka-pw"
    assert s.to_env()["URBANFABRIC_SERVICE_TOKEN"] == "tok-123456"  # children of the stack get it
