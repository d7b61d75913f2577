"""ModelClient against the real KServe model server (V2 REST, V2 gRPC) and in-process.

A tiny one-layer torch model is defined here (module-level ``load_model`` /
``predict_proba``, the contract of ``models/<name>``); the server subprocess serves it as
``tiny-seg:v1=tests.integration.test_model_server`` from a temporary model repository.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from torch import nn

from urbanfabric.errors import InvalidInput, NotFound, Unavailable
from urbanfabric.runtime.model_client import InferenceProtocol, ModelClient

REPO = Path(__file__).resolve().parents[2]
THIS_MODULE = "tests.integration.test_model_server"
MODEL, VERSION = "tiny-seg", "v1"
MISSING_VERSION = "v2"  # requested from the server but has no weights
KEY = "test-signing-key-" + "x" * 32  # the server's URBANFABRIC_SERVICE_TOKEN


# ---- the tiny model (the models/<name> contract) ----------------------------------------------
class TinySeg(nn.Module):
    """3×3 conv to one logit channel: enough to tell wrong wiring from right."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def load_model(version_dir: Path, device: str = "cpu") -> nn.Module:
    """Load ``model.pt`` of a version directory."""
    net = TinySeg()
    net.load_state_dict(torch.load(Path(version_dir) / "model.pt", weights_only=True))
    return net.to(device).eval()


def predict_proba(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """``(N, 3, H, W)`` → ``(N, H, W)`` sigmoid probabilities."""
    with torch.inference_mode():
        return torch.sigmoid(model(torch.from_numpy(np.asarray(x, np.float32))))[:, 0].numpy()


# ---- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model_repo")
    version_dir = root / "tiny_seg" / VERSION
    version_dir.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(TinySeg().state_dict(), version_dir / "model.pt")
    (version_dir / "config.json").write_text(json.dumps({"name": MODEL}))
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    http_port, grpc_port = _free_port(), _free_port()
    log_path = tmp_path_factory.mktemp("modelserver") / "server.log"
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'services' / 'lib'}",
           "URBANFABRIC_TORCH_THREADS": "1", "URBANFABRIC_SERVICE_TOKEN": KEY}
    models = f"{MODEL}:{VERSION}={THIS_MODULE},{MODEL}:{MISSING_VERSION}={THIS_MODULE}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.modelserver", "--http-port", str(http_port),
             "--grpc-port", str(grpc_port), "--model-dir", str(model_repo), "--models", models],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    probe = ModelClient(InferenceProtocol.V2_REST, rest_url=f"http://127.0.0.1:{http_port}",
                        timeout_s=2, token_key=KEY)
    deadline = time.monotonic() + 60
    try:
        while not probe.ready(MODEL, VERSION):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"model server did not become ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield {"proc": proc, "http_port": http_port, "grpc_port": grpc_port, "log": log_path}
    finally:
        probe.close()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("model server ignored SIGTERM")
    assert code == 0, f"model server exited {code}:\n{log_path.read_text()[-3000:]}"


@pytest.fixture(scope="module")
def clients(
    server: dict[str, Any], model_repo: Path
) -> Iterator[dict[InferenceProtocol, ModelClient]]:
    torch.set_num_threads(1)
    made = {
        InferenceProtocol.V2_REST: ModelClient(
            InferenceProtocol.V2_REST, rest_url=f"http://127.0.0.1:{server['http_port']}", token_key=KEY),
        InferenceProtocol.V2_GRPC: ModelClient(
            InferenceProtocol.V2_GRPC, grpc_addr=f"127.0.0.1:{server['grpc_port']}", token_key=KEY),
        InferenceProtocol.EMBEDDED: ModelClient(
            InferenceProtocol.EMBEDDED, model_dir=model_repo, modules={MODEL: THIS_MODULE}),
    }
    yield made
    for c in made.values():
        c.close()


def _x(n: int = 3, h: int = 16, w: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, h, w), dtype=np.float32)


# ---- tests -----------------------------------------------------------------------------------
def test_same_output_over_rest_grpc_and_embedded(clients, model_repo: Path) -> None:
    x = _x()
    out = {p: c.infer(MODEL, VERSION, x) for p, c in clients.items()}
    ref = predict_proba(load_model(model_repo / "tiny_seg" / VERSION), x)
    for p, y in out.items():
        assert y.shape == (3, 16, 20) and y.dtype == np.float32, p
        np.testing.assert_array_equal(y, out[InferenceProtocol.V2_GRPC], err_msg=p.name)
    np.testing.assert_allclose(out[InferenceProtocol.V2_GRPC], ref, rtol=0, atol=1e-6)
    assert 0.0 < ref.min() < ref.max() < 1.0  # a real, non-constant map


def test_ready(clients) -> None:
    for p, c in clients.items():
        assert c.ready(MODEL, VERSION) is True, p
        assert c.ready(MODEL, MISSING_VERSION) is False, p
        assert c.ready("no-such-model", VERSION) is False, p


@pytest.mark.parametrize("version", [MISSING_VERSION, "v999"])
def test_unknown_version_raises_not_found(clients, version: str) -> None:
    for p, c in clients.items():
        with pytest.raises(NotFound, match="model_version"):
            c.infer(MODEL, version, _x(1))


def test_bad_input_is_invalid_input(clients) -> None:
    c = clients[InferenceProtocol.V2_GRPC]
    for bad in (_x()[:, :2], _x()[0], (_x() * 255).astype(np.uint8), _x().tolist()):
        with pytest.raises(InvalidInput) as err:
            c.infer(MODEL, VERSION, bad)  # type: ignore[arg-type]
        assert err.value.field == "x"
    # Past the client's own checks, the server (kserve.Model.preprocess) rejects it too.
    four_channels = np.zeros((1, 4, 8, 8), np.float32)
    with pytest.raises(InvalidInput, match=r"\[N,3,H,W\]"):
        clients[InferenceProtocol.V2_REST]._infer_rest(f"{MODEL}-{VERSION}", four_channels)
    with pytest.raises(InvalidInput, match=r"\[N,3,H,W\]"):
        c._infer_grpc(f"{MODEL}-{VERSION}", four_channels)


def test_infer_batched_matches_one_call(clients) -> None:
    x = _x(5, seed=3)
    for p, c in clients.items():
        # Not bit-equal: torch may pick another conv kernel for another batch size.
        np.testing.assert_allclose(
            c.infer_batched(MODEL, VERSION, x, batch_size=2), c.infer(MODEL, VERSION, x),
            rtol=0, atol=1e-6, err_msg=p.name)
    with pytest.raises(InvalidInput):
        clients[InferenceProtocol.V2_GRPC].infer_batched(MODEL, VERSION, x, batch_size=0)


def test_unreachable_server_is_unavailable() -> None:
    port = _free_port()  # nothing listens there
    for c in (
        ModelClient(InferenceProtocol.V2_REST, rest_url=f"http://127.0.0.1:{port}", timeout_s=3),
        ModelClient(InferenceProtocol.V2_GRPC, grpc_addr=f"127.0.0.1:{port}", timeout_s=3),
    ):
        with c:
            with pytest.raises(Unavailable):
                c.infer(MODEL, VERSION, _x(1))
            assert c.ready(MODEL, VERSION) is False


def test_listens_on_loopback_only_and_exposes_stage_metrics(server, clients) -> None:
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process(server["proc"].pid)
    conns = getattr(proc, "net_connections", proc.connections)(kind="inet")  # psutil <6 / >=6
    listening = [c for c in conns if c.status == psutil.CONN_LISTEN]
    ports = {c.laddr.port for c in listening}
    assert {server["http_port"], server["grpc_port"]} <= ports
    assert {c.laddr.ip for c in listening} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}

    clients[InferenceProtocol.V2_GRPC].infer(MODEL, VERSION, _x(1))
    import httpx

    text = httpx.get(f"http://127.0.0.1:{server['http_port']}/metrics").text
    name = f'model_name="{MODEL}-{VERSION}"'
    for metric in ("request_preprocess_seconds_count", "request_predict_seconds_count",
                   "request_postprocess_seconds_count", "urbanfabric_model_items_total"):
        assert f"{metric}{{{name}}}" in text, metric
    assert f"urbanfabric_model_loaded{{{name}}} 1.0" in text
    assert f'urbanfabric_model_loaded{{model_name="{MODEL}-{MISSING_VERSION}"}} 0.0' in text


def test_missing_weights_are_logged_not_fatal(server) -> None:
    log = server["log"].read_text()
    assert f"{MODEL}-{MISSING_VERSION} is NOT registered" in log
    assert server["proc"].poll() is None


def test_parse_specs() -> None:
    from urbanfabric.runtime.model_client import kserve_import_guard

    with kserve_import_guard():  # importing kserve parses sys.argv (pytest's here)
        from urbanfabric.runtime.model_runner import parse_specs

    specs = parse_specs("footprint-unet:v1, roof_material:v2,tiny:v3=pkg.mod")
    assert [(s.name, s.model_dir, s.module) for s in specs] == [
        ("footprint-unet-v1", "footprint_unet", "models.footprint_unet.net"),
        ("roof-material-v2", "roof_material", "models.classifiers.serving"),
        ("tiny-v3", "tiny", "pkg.mod"),
    ]
    for bad in ("footprint-unet", "unknown:v1", ":v1"):
        with pytest.raises(ValueError):
            parse_specs(bad)


def test_weights_fetched_from_object_store(model_repo: Path, tmp_path: Path, monkeypatch) -> None:
    import urbanfabric.io.object_store as storage

    from urbanfabric.runtime.model_client import kserve_import_guard

    with kserve_import_guard():
        from urbanfabric.runtime.model_runner import load_models, object_store_fetcher, parse_specs

    objects = {f"s3://bkt/models/tiny_seg/{VERSION}/{n}": model_repo / "tiny_seg" / VERSION / n
               for n in ("config.json", "model.pt")}
    asked: list[str] = []

    class FakeStore:  # the ObjectStore contract: get_file(key or s3 URI, path)
        def __init__(self, settings: Any = None) -> None:
            pass

        def get_file(self, key: str, path: Path) -> Path:
            asked.append(key)
            if key not in objects:
                raise NotFound(key)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(objects[key], path)
            return Path(path)

    monkeypatch.setattr(storage, "ObjectStore", FakeStore)
    specs = parse_specs(f"{MODEL}:{VERSION}={THIS_MODULE},{MODEL}:{MISSING_VERSION}={THIS_MODULE}")
    loaded, skipped = load_models(
        specs, model_dir=tmp_path, fetch=object_store_fetcher("s3://bkt/models", tmp_path))
    assert [m.name for m in loaded] == [f"{MODEL}-{VERSION}"]
    assert "no s3://bkt/models/tiny_seg/v2/config.json" in skipped[f"{MODEL}-{MISSING_VERSION}"]
    assert (tmp_path / "tiny_seg" / VERSION / "model.pt").is_file()
    x = _x(1)
    ref = predict_proba(load_model(model_repo / "tiny_seg" / VERSION), x)
    np.testing.assert_allclose(loaded[0].forward(x), ref, rtol=0, atol=1e-6)
    loaded[0].stop()


def test_calls_without_a_valid_token_are_refused_and_probes_stay_open(server) -> None:
    import grpc
    import httpx
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    from urbanfabric.runtime import auth

    rest = f"http://127.0.0.1:{server['http_port']}"
    name = f"{MODEL}-{VERSION}"
    forged = {"authorization": f"Bearer {auth.mint('not-the-key')}"}
    with httpx.Client(timeout=5) as http:
        for headers in ({}, forged, {"authorization": f"Bearer {KEY}"}):
            for method, path in (("GET", f"/v2/models/{name}"), ("POST", f"/v2/models/{name}/infer"),
                                 ("GET", "/v2/models"), ("GET", "/v1/models")):
                reply = http.request(method, rest + path, headers=headers, content=b"{}")
                assert reply.status_code == 401, (method, path, headers, reply.text)
                assert "unauthenticated" in reply.json()["error"]
        assert http.get(rest + "/v2/health/ready").status_code == 200
        assert http.get(rest + "/v2/health/live").status_code == 200
        good = {"authorization": f"Bearer {auth.mint(KEY)}"}
        assert http.get(f"{rest}/v2/models/{name}/ready", headers=good).status_code == 200
    with grpc.insecure_channel(f"127.0.0.1:{server['grpc_port']}") as channel:
        stub = GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
        for metadata in ((), tuple(forged.items())):
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=5, metadata=metadata)
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(pb.ModelInferRequest(model_name=name), timeout=5, metadata=metadata)
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # A client holding the wrong key fails loudly, not as a passing outage to retry.
    with ModelClient(InferenceProtocol.V2_REST, rest_url=rest, timeout_s=5, token_key="wrong") as wrong:
        with pytest.raises(RuntimeError, match="401"):
            wrong.infer(MODEL, VERSION, _x(1))


def test_the_model_server_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("URBANFABRIC_SERVICE_TOKEN", "URBANFABRIC_ALLOW_UNAUTHENTICATED")}
    env["PYTHONPATH"] = f"{REPO}:{REPO / 'services' / 'lib'}"
    done = subprocess.run(
        [sys.executable, "-m", "services.modelserver", "--http-port", str(_free_port()),
         "--grpc-port", str(_free_port()), "--model-dir", str(tmp_path), "--models", f"{MODEL}:{VERSION}={THIS_MODULE}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "URBANFABRIC_SERVICE_TOKEN is not set" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_new_version_is_loaded_on_request_without_a_restart(server, clients, model_repo: Path) -> None:
    """The V2 repository extension's load endpoint serves a version written after the start
    (as the learning loop registers one); a version that cannot load changes nothing."""
    rest = clients[InferenceProtocol.V2_REST]
    new = model_repo / "tiny_seg" / "v3-ft1"
    new.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(3)
    torch.save(TinySeg().state_dict(), new / "model.pt")
    (new / "config.json").write_text(json.dumps({"name": MODEL}))
    assert not rest.ready(MODEL, "v3-ft1")
    rest.load(MODEL, "v3-ft1")
    assert rest.ready(MODEL, "v3-ft1")
    x = _x()
    assert np.allclose(rest.infer(MODEL, "v3-ft1", x), predict_proba(load_model(new), x), atol=1e-5)
    with pytest.raises(NotFound, match="did not load tiny-seg-v9"):
        rest.load(MODEL, "v9")
    assert rest.ready(MODEL, VERSION) and server["proc"].poll() is None
    unsigned = ModelClient(InferenceProtocol.V2_REST, rest_url=rest.rest_url, timeout_s=5)
    with pytest.raises(NotFound, match="401"):
        unsigned.load(MODEL, "v3-ft1")
    unsigned.close()
