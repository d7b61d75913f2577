"""Security on by default, tried against the running local stack (the e2e session's stack).

Every surface refuses a call that carries no credentials or the wrong ones; the object store
has no way in but authenticated S3 (the filer, master, volume and gRPC bypasses are refused);
the acquisition service refuses hostile imagery sources; and no secret of the stack appears in
any of its logs. docs/reliability.md ("Security") lists these tests against each surface.
Runs after test_map_area.py (file order), so the logs then hold a whole job's worth of lines.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import socket
import stat
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from urbanfabric.imagery.tiles import tiles_for_area
from urbanfabric.io.object_store import ObjectStore
from urbanfabric.runtime import auth
from urbanfabric.runtime.connections import STUBS
from urbanfabric.runtime.convert import tile_to_proto
from urbanfabric.v1 import acquisition_pb2, common_pb2

ONE_TILE = (118.0975342, 24.4771500, 118.1030273, 24.4821494)


def _stack_dir() -> Path:
    return Path(os.environ["URBANFABRIC_STACK_DIR"])


def _http(method: str, url: str, headers: dict | None = None, data: bytes | None = None) -> int:
    """Status of one request without proxies (-1: nothing listens)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, data=data, method=method, headers=headers or {}),
                         timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return -1


def _raw_call(channel: grpc.Channel, method: str, metadata=(), timeout: float | None = 5.0) -> grpc.StatusCode:
    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        call(b"", timeout=timeout, metadata=metadata)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


def _methods(service: str) -> list[str]:
    """Every RPC of one of the six services, as /package.Service/Method."""
    stub = STUBS[service]
    module = __import__(stub.__module__.replace("_grpc", ""), fromlist=["DESCRIPTOR"])
    (svc,) = module.DESCRIPTOR.services_by_name.values()
    return [f"/{svc.full_name}/{m.name}" for m in svc.methods]


def test_secret_files_are_private(stack):
    files = [_stack_dir() / "stack.json",
             _stack_dir() / "objectstore" / "s3.json",
             _stack_dir() / "objectstore" / ".seaweedfs" / "security.toml",
             _stack_dir() / "objectstore" / ".seaweedfs" / "tls" / "key.pem"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    creds = json.loads((_stack_dir() / "stack.json").read_text())["credentials"]
    assert len(creds["service_token"]) >= 32 and creds["prefect_auth"].startswith("urbanfabric:")


def test_grpc_services_refuse_calls_without_a_valid_token(stack):
    forged = (("authorization", f"Bearer {auth.mint('not-the-stack-key')}"),)
    raw_key = (("authorization", f"Bearer {stack.service_token}"),)
    for name, addr in stack.services.items():
        with grpc.insecure_channel(addr) as channel:
            for method in _methods(name):
                for metadata in ((), forged, raw_key):
                    assert _raw_call(channel, method, metadata) is grpc.StatusCode.UNAUTHENTICATED, (method, metadata)
            # Probes stay open: they say "serving" and nothing else.
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_services_serve_no_reflection_and_want_a_bounded_deadline(stack):
    addr = stack.services["acquisition"]
    with auth.authenticated(grpc.insecure_channel(addr), stack.service_token) as channel:
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                           timeout=5))
        assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
        method = "/urbanfabric.v1.AcquisitionService/FetchTile"
        assert _raw_call(channel, method, timeout=None) is grpc.StatusCode.INVALID_ARGUMENT
        assert _raw_call(channel, method, timeout=auth.MAX_DEADLINE_S * 2) is grpc.StatusCode.INVALID_ARGUMENT
        big = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as err:
            big(b"\x0a" + b"\xff" * (65 << 20), timeout=30)  # 65 MiB: over the 64 MiB limit
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("uri,why", [
    ("/etc/passwd", "outside the allowed local folders"),
    ("file:///etc/shadow", "outside the allowed local folders"),
    ("http://169.254.169.254/latest/meta-data/iam/", "link-local address"),
    ("/vsicurl/http://169.254.169.254/x.tif", "virtual file system"),
    ("gopher://example.org/", "scheme 'gopher' is not allowed"),
])
def test_acquisition_refuses_hostile_imagery_sources(stack, uri, why):
    (tile, *_) = tiles_for_area(ONE_TILE)
    request = acquisition_pb2.FetchTileRequest(
        job=common_pb2.JobRef(job_id="ssrf-probe"), tile=tile_to_proto(tile),
        source=common_pb2.ImagerySource(cog_uris=[uri]))
    with auth.authenticated(grpc.insecure_channel(stack.services["acquisition"]), stack.service_token) as channel:
        with pytest.raises(grpc.RpcError) as err:
            STUBS["acquisition"](channel).FetchTile(request, timeout=30)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("source.cog_uris[0]") and why in err.value.details()


def test_the_model_server_refuses_calls_without_a_valid_token(stack):
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    name = "footprint-unet-v1"
    forged = {"authorization": f"Bearer {auth.mint('not-the-stack-key')}"}
    for headers in ({}, forged):
        assert _http("POST", f"{stack.modelserver_rest}/v2/models/{name}/infer", headers, b"{}") == 401
        assert _http("GET", f"{stack.modelserver_rest}/v2/models/{name}", headers) == 401
    assert _http("GET", f"{stack.modelserver_rest}/v2/health/ready") == 200
    good = {"authorization": f"Bearer {auth.mint(stack.service_token)}"}
    assert _http("GET", f"{stack.modelserver_rest}/v2/models/{name}/ready", good) == 200
    with grpc.insecure_channel(stack.modelserver_grpc) as channel:
        stub = GRPCInferenceServiceStub(channel)
        for metadata in ((), tuple(forged.items())):
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(pb.ModelInferRequest(model_name=name), timeout=5, metadata=metadata)
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_the_prefect_api_wants_its_basic_auth(stack):
    api = stack.prefect_api_url
    body = b"{}"
    headers = {"content-type": "application/json"}
    wrong = {**headers, "Authorization": "Basic " + base64.b64encode(b"urbanfabric:guess").decode()}
    right = {**headers, "Authorization": "Basic " + base64.b64encode(stack.prefect_auth.encode()).decode()}
    assert _http("POST", f"{api}/deployments/filter", headers, body) == 401
    assert _http("POST", f"{api}/deployments/filter", wrong, body) == 401
    assert _http("POST", f"{api}/deployments/filter", right, body) == 200
    assert _http("GET", f"{api}/health") == 200  # the probe stays open


def test_the_object_store_is_reachable_only_through_authenticated_s3(stack):
    ports = json.loads((_stack_dir() / "stack.json").read_text())["ports"]["objectstore"]
    s3 = f"http://127.0.0.1:{ports['s3']}"
    # S3 itself: anonymous and wrongly signed requests are refused.
    assert _http("GET", f"{s3}/{stack.bucket}/") == 403
    assert _http("PUT", f"{s3}/{stack.bucket}/anonymous.txt", data=b"x") == 403
    wrong_key = ObjectStore(dataclasses.replace(stack, s3_secret_key="wrong" * 8), timeout_s=5)
    with pytest.raises(Exception) as err:
        wrong_key.get_bytes(".stack/probe")
    assert "SignatureDoesNotMatch" in str(err.value) or "AccessDenied" in str(err.value), err.value
    # The filer bypass: its HTTP API would serve and take every object without the S3 keys.
    filer = f"http://127.0.0.1:{ports['filer']}"
    assert _http("GET", f"{filer}/buckets/{stack.bucket}/.stack/probe") not in range(200, 400)
    assert _http("PUT", f"{filer}/buckets/{stack.bucket}/bypass.txt", data=b"x") not in range(200, 400)
    assert _http("GET", f"{filer}/buckets/{stack.bucket}/") not in range(200, 400)
    # The master would hand out file ids and delete a bucket's collection.
    master = f"http://127.0.0.1:{ports['master']}"
    assert _http("GET", f"{master}/dir/assign") not in range(200, 400)
    assert _http("GET", f"{master}/col/delete?collection={stack.bucket}") not in range(200, 400)
    # Volume servers take writes only with a master-signed JWT.
    volume = f"http://127.0.0.1:{ports['volume']}"
    assert _http("POST", f"{volume}/1,0123456789", data=b"x") == 401
    # The filer's unix socket is the same HTTP API.
    sock = _stack_dir() / "objectstore" / "filer.sock"
    if sock.exists():
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(sock))
            s.sendall(f"GET /buckets/{stack.bucket}/.stack/probe HTTP/1.0\r\n\r\n".encode())
            head = s.recv(200).decode(errors="replace")
        assert " 200 " not in head.split("\r\n")[0], head
    # gRPC ports want a client certificate of the stack CA; with it the port answers.
    tls = _stack_dir() / "objectstore" / ".seaweedfs" / "tls"
    ca, cert, key = ((tls / n).read_bytes() for n in ("ca.pem", "cert.pem", "key.pem"))
    method = "/filer_pb.SeaweedFiler/GetFilerConfiguration"
    for port in ("filer_grpc", "master_grpc", "volume_grpc", "s3_grpc"):
        target = f"127.0.0.1:{ports[port]}"
        with grpc.insecure_channel(target) as plain:
            assert _raw_call(plain, method) is grpc.StatusCode.UNAVAILABLE, port
        with grpc.secure_channel(target, grpc.ssl_channel_credentials(ca)) as no_cert:
            assert _raw_call(no_cert, method) is grpc.StatusCode.UNAVAILABLE, port
    with grpc.secure_channel(f"127.0.0.1:{ports['filer_grpc']}", grpc.ssl_channel_credentials(ca, key, cert)) as ok:
        assert _raw_call(ok, method) is grpc.StatusCode.OK


def test_the_broker_listens_on_loopback_only(stack):
    record = json.loads((_stack_dir() / "stack.json").read_text())["components"]["kafka"]
    proc = psutil.Process(record["pid"])
    conns = getattr(proc, "net_connections", proc.connections)(kind="inet")  # psutil <6 / >=6
    listening = [c.laddr for c in conns if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip in ("127.0.0.1", "::ffff:127.0.0.1") for addr in listening), listening


def _one_signed_call(stack) -> None:
    """One successful signed RPC (a 64-px Calibrate), so the logs hold a served call even when
    this file runs alone."""
    import numpy as np
    from affine import Affine
    from rasterio.crs import CRS

    from urbanfabric.io.rasters import Raster, cog_bytes
    from urbanfabric.runtime.connections import call, stub
    from urbanfabric.v1 import calibration_pb2

    store = ObjectStore(stack)
    data = np.random.default_rng(0).integers(1, 255, (3, 64, 64), dtype=np.uint8)
    key = "jobs/security-log-scan/tiles/t/raw.tif"
    store.put_bytes(key, cog_bytes(Raster(data, Affine(0.6, 0, 0, 0, -0.6, 0), CRS.from_epsg(3857), 0)))
    request = calibration_pb2.CalibrateRequest(tile_id="t", raw=common_pb2.ObjectRef(uri=store.s3_uri(key)))
    request.job.job_id = "security-log-scan"
    assert call(stub(stack, "calibration").Calibrate, request, 60).ard.uri.endswith("ard.tif")


def test_no_secret_appears_in_any_log(stack):
    _one_signed_call(stack)
    creds = json.loads((_stack_dir() / "stack.json").read_text())["credentials"]
    password = creds["prefect_auth"].split(":", 1)[1]
    secrets = {
        "service token": creds["service_token"],
        "S3 secret key": creds["secret_key"],
        "Prefect password": password,
        "Prefect basic auth header": base64.b64encode(creds["prefect_auth"].encode()).decode(),
    }
    security = (_stack_dir() / "objectstore" / ".seaweedfs" / "security.toml").read_text()
    secrets.update({f"SeaweedFS JWT key {i}": line.split('"')[1]
                    for i, line in enumerate(security.splitlines()) if line.startswith("key = ") and "/" not in line})
    logs = [p for p in _stack_dir().rglob("*") if p.is_file() and (p.suffix == ".log" or "logs" in p.parts)]
    assert len(logs) >= 10, logs
    served = sum(p.read_text(errors="replace").count(' ok"') for p in logs)
    assert served > 0, "no RPC was logged: the logs would prove nothing"
    leaks = [(name, str(p)) for p in logs for name, value in secrets.items()
             if value and value in p.read_text(errors="replace")]
    assert not leaks, leaks
