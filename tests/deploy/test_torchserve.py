"""The models as TorchServe ``.mar`` archives, served by the real TorchServe (docs/deploy.md).

``python -m services.torchserve.package`` packs both shipped models; two TorchServe 0.12
servers then run from those archives on loopback ports, with their own temp, log and socket
directories and without the repository on ``PYTHONPATH`` (so the code packed in the archive
is what runs):

* ``native`` — no service envelope: the handler speaks V2 itself (JSON, the binary tensor
  extension the project's ``ModelClient`` sends, Open Inference gRPC);
* ``kservev2`` — TorchServe's ``kservev2`` envelope (what KServe's TorchServe runtime sets by
  default), serving footprint-unet only.

Every answer is compared with the in-process model (``load_model`` / ``predict_proba``) on the
same input. Both servers run with a service-token key, as the chart's predictors do: every
request carries a signed token, and calls without a valid one are refused before the model runs. The last test stops both servers with ``torchserve --stop`` and checks that no
Java frontend or Python worker of theirs is left. Needs Java (skips without it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import deploy_support as ds
import numpy as np
import pytest

MODELS = {"footprint-unet": "models.footprint_unet.net", "roof-material": "models.classifiers.serving"}
VERSION = "v1"
READY_TIMEOUT_S = 150  # normally ~25 s for three workers on two busy cores
ATOL = 1e-5
#: The service-token key the servers run with (as the chart gives it from the Secret).
KEY = "k" * 48


def _auth(key: str = KEY) -> dict[str, str]:
    from urbanfabric.runtime import auth

    return {"authorization": f"Bearer {auth.mint(key)}"}


def _require_tools(java: bool = True) -> Path:
    """The torchserve launcher next to this interpreter; skip when something is missing."""
    if java and shutil.which("java") is None:
        pytest.skip("java is not installed: TorchServe's frontend needs a JRE 11+ "
                    "(apt-get install openjdk-17-jre-headless)")
    for module in ("ts", "model_archiver", "psutil"):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{module} is not installed (pip install -r requirements-deploy.txt)")
    launcher = Path(sys.executable).with_name("torchserve")
    if not launcher.is_file():
        pytest.skip(f"no torchserve launcher at {launcher}")
    for model in MODELS:
        weights = ds.ROOT / "models" / model.replace("-", "_") / VERSION / "model.pt"
        if not weights.is_file():
            pytest.skip(f"no shipped weights {weights}")
    return launcher


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _get_json(url: str, timeout: float = 5.0) -> Any:
    import httpx

    return httpx.get(url, timeout=timeout).json()


@dataclass
class Server:
    """One TorchServe instance in its own directory (config, temp/sockets, logs)."""

    label: str
    home: Path
    launcher: Path
    models: dict[str, str]  # TorchServe model name -> archive version
    envelope: str
    ports: dict[str, int] = field(default_factory=dict)
    java_pid: int | None = None
    stopped: bool = False

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.ports['inference_port']}"

    @property
    def management(self) -> str:
        return f"http://127.0.0.1:{self.ports['management_port']}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.ports['grpc_inference_port']}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TS_CONFIG_FILE")}
        run = str(self.home / "run")
        # TMPDIR: the launcher's pid file (so --stop finds this server and no other);
        # TEMP: java.io.tmpdir (worker sockets, extracted archives); logs under home.
        env.update(TMPDIR=run, TEMP=run, LOG_LOCATION=str(self.home / "logs"),
                   METRICS_LOCATION=str(self.home / "logs"), URBANFABRIC_TORCH_THREADS="1",
                   URBANFABRIC_SERVICE_TOKEN=KEY)
        env.pop("URBANFABRIC_ALLOW_UNAUTHENTICATED", None)
        return env

    def start(self, model_store: Path) -> None:
        from services.torchserve.package import render_config, write_config

        (self.home / "run").mkdir(parents=True)
        (self.home / "logs").mkdir()
        names = ["inference_port", "management_port", "metrics_port",
                 "grpc_inference_port", "grpc_management_port"]
        self.ports = dict(zip(names, _free_ports(len(names))))
        config = write_config(self.home, render_config(
            self.models, model_store, ports=self.ports, envelope=self.envelope))
        with open(self.home / "console.log", "wb") as console:
            subprocess.run(
                [str(self.launcher), "--start", "--ncs", "--disable-token-auth",
                 "--model-store", str(model_store), "--ts-config", str(config)],
                cwd=self.home, env=self.env, stdout=console, stderr=subprocess.STDOUT,
                check=True, timeout=60,
            )
        self.java_pid = int((self.home / "run" / ".model_server.pid").read_text().strip())

    def wait_ready(self, deadline: float) -> None:
        import httpx
        import psutil

        pending = set(self.models)
        while pending:
            if not psutil.pid_exists(self.java_pid or -1):
                pytest.fail(f"{self.label}: TorchServe exited\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.label}: {sorted(pending)} not ready in time\n{self.log_tail()}")
            for name in list(pending):
                try:
                    info = _get_json(f"{self.management}/models/{name}")
                except (httpx.HTTPError, ValueError):
                    continue
                workers = info[0].get("workers", []) if isinstance(info, list) and info else []
                if workers and all(w.get("status") == "READY" for w in workers):
                    pending.discard(name)
            time.sleep(0.5)

    def processes(self) -> list[Any]:
        """Live processes belonging to this server (its directory is in their command line)."""
        import psutil

        mine = []
        marker = f"{self.home}{os.sep}"  # java.io.tmpdir, config and worker sockets live there
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info.get("cmdline") or [])
            if marker in cmdline or proc.info["pid"] == self.java_pid:
                mine.append(proc)
        return mine

    def stop(self) -> subprocess.CompletedProcess[str]:
        self.stopped = True
        return subprocess.run([str(self.launcher), "--stop"], cwd=self.home, env=self.env,
                              capture_output=True, text=True, timeout=60, check=False)

    def log_tail(self, n: int = 40) -> str:
        out = []
        for name in ("console.log", "logs/model_log.log", "logs/ts_log.log"):
            path = self.home / name
            if path.is_file():
                lines = path.read_text(errors="replace").splitlines()[-n:]
                out.append(f"--- {name}\n" + "\n".join(lines))
        return "\n".join(out)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of the shipped versions: archives and reference read the same bytes even
    while a training run rewrites models/<model_dir>/v1 (it does, on this machine)."""
    _require_tools(java=False)
    root = tmp_path_factory.mktemp("weights")
    for model in MODELS:
        src = ds.ROOT / "models" / model.replace("-", "_") / VERSION
        dst = root / model.replace("-", "_") / VERSION
        dst.mkdir(parents=True)
        for name in ("config.json", "model.pt"):
            shutil.copy2(src / name, dst / name)
    return root


@pytest.fixture(scope="module")
def packaged(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both models packaged by the command line (KServe layout: model-store/ + config/)."""
    out = tmp_path_factory.mktemp("torchserve-store")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, ds.CODE_PATHS))}
    cmd = [sys.executable, "-m", "services.torchserve.package", "--out", str(out),
           "--weights-root", str(weights)]
    for model in MODELS:
        cmd += ["--model", model, "--version", VERSION]
    proc = subprocess.run(cmd, cwd=ds.ROOT, env=env, capture_output=True, text=True,
                          timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="module")
def servers(packaged: Path, tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> Iterator[dict[str, Server]]:
    """The native and kservev2 servers, both started at once (their workers load in parallel,
    and the in-process reference is computed meanwhile)."""
    launcher = _require_tools()
    names = {f"{m}-{VERSION}": VERSION for m in MODELS}
    started = {
        "native": Server("native", tmp_path_factory.mktemp("ts-native"), launcher, names, "none"),
        "kservev2": Server("kservev2", tmp_path_factory.mktemp("ts-kservev2"), launcher,
                           {f"footprint-unet-{VERSION}": VERSION}, "kservev2"),
    }
    try:
        for server in started.values():
            server.start(packaged / "model-store")
        deadline = time.monotonic() + READY_TIMEOUT_S
        request.getfixturevalue("reference")
        for server in started.values():
            server.wait_ready(deadline)
        yield started
    finally:
        for server in started.values():
            if server.java_pid is not None and not server.stopped:
                server.stop()
        # Only if --stop failed: end what is left of *these* servers (never others).
        time.sleep(1)
        import psutil

        for server in started.values():
            for proc in server.processes():
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass


@pytest.fixture(scope="module")
def reference(weights: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{model: (input, in-process probabilities)}``; footprint tiles are not multiples of 32."""
    import importlib

    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    inputs = {"footprint-unet": rng.random((2, 3, 48, 80), dtype=np.float32),
              "roof-material": rng.random((3, 3, 128, 128), dtype=np.float32)}
    out = {}
    for model, module_name in MODELS.items():
        module = importlib.import_module(module_name)
        net = module.load_model(weights / model.replace("-", "_") / VERSION)
        out[model] = (inputs[model], module.predict_proba(net, inputs[model]))
    return out


def _v2_json(x: np.ndarray, request_id: str) -> dict[str, Any]:
    return {"id": request_id, "inputs": [{"name": "input", "shape": list(x.shape),
                                          "datatype": "FP32", "data": x.ravel().tolist()}]}


def _oip_infer(addr: str, name: str, x: np.ndarray, headers: dict[str, str] | None = None) -> Any:
    """ModelInfer on TorchServe's Open Inference gRPC service (KServe's messages, same wire)."""
    import grpc

    saved, sys.argv = sys.argv, sys.argv[:1]  # importing kserve parses sys.argv
    try:
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    finally:
        sys.argv = saved
    request = pb.ModelInferRequest(
        model_name=name, id="oip-1",
        inputs=[pb.ModelInferRequest.InferInputTensor(
            name="input", datatype="FP32", shape=list(x.shape),
            # TorchServe's OIP service reads typed contents only (not raw_input_contents).
            contents=pb.InferTensorContents(fp32_contents=x.ravel().tolist()))],
    )
    with grpc.insecure_channel(addr) as channel:
        infer = channel.unary_unary(
            "/org.pytorch.serve.grpc.openinference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        return infer(request, timeout=60, metadata=tuple((headers if headers is not None else _auth()).items()))


# -- packaging ------------------------------------------------------------------------------------
def test_package_command_writes_the_kserve_layout(packaged: Path, weights: Path) -> None:
    config = (packaged / "config" / "config.properties").read_text()
    props = dict(line.split("=", 1) for line in config.splitlines() if "=" in line and not line.startswith("#"))
    assert props["inference_address"] == "http://0.0.0.0:8085"  # KServe's wrapper forwards here
    assert props["model_store"] == "/mnt/models/model-store"
    assert props["disable_token_authorization"] == "true"
    assert props["enable_envvars_config"] == "false"  # KServe's TS_SERVICE_ENVELOPE must not apply
    assert "service_envelope" not in props
    snapshot = json.loads(props["model_snapshot"])
    assert sorted(snapshot["models"]) == sorted(f"{m}-{VERSION}" for m in MODELS)
    for model, module in MODELS.items():
        name = f"{model}-{VERSION}"
        with zipfile.ZipFile(packaged / "model-store" / f"{name}.mar") as mar:
            files = set(mar.namelist())
            manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
            spec = json.loads(mar.read("urbanfabric_model.json"))
            reqs = mar.read("requirements.txt").decode().split()
            packed_weights = mar.read("model.pt")
        assert packed_weights == (weights / model.replace("-", "_") / VERSION / "model.pt").read_bytes()
        assert {"model.pt", "config.json", "urbanfabric_handler.py", "models/__init__.py",
                module.replace(".", "/") + ".py", "models/common/imagenet.py"} <= files
        assert manifest["model"]["modelName"] == name and manifest["model"]["handler"] == "urbanfabric_handler.py"
        assert spec == {"model": model, "version": VERSION, "name": name, "module": module}
        assert all("==" in r for r in reqs) and any(r.startswith("timm==") for r in reqs)


def test_chart_torchserve_option_reads_the_packaged_layout(packaged: Path, helm: Any) -> None:
    """storageUri/torchserve holds what the command writes, under the names the gateway routes."""
    import yaml

    # Serve exactly what the fixture packaged: both models at VERSION, the other classifiers off.
    only_packaged = {"modelServing": {"runtime": "torchserve"},
                     "inferenceServices": {"roof-material": {"version": VERSION}, "roof-shape": {"enabled": False},
                                           "facade-material": {"enabled": False}}}
    values = ds.deep_merge(ds.deep_merge(yaml.safe_load((ds.CHART / "values.yaml").read_text()),
                                         ds.profile_values("gpu")), only_packaged)
    docs = ds.documents(ds.render(only_packaged, profile="gpu"))
    snapshot = (packaged / "config" / "config.properties").read_text()
    isvcs = ds.of_kind(docs, "InferenceService")
    assert len(isvcs) == len(MODELS)
    for isvc in isvcs:
        labels = isvc["metadata"]["labels"]
        model, version = labels["urbanfabric.io/model"], labels["urbanfabric.io/model-version"]
        spec = isvc["spec"]["predictor"]["model"]
        bucket, prefix = values["objectStore"]["bucket"], values["modelServing"]["storagePrefix"]
        assert spec["storageUri"] == f"s3://{bucket}/{prefix}/{model.replace('-', '_')}/{version}/torchserve"
        assert spec["runtimeVersion"] == f"{values['modelServing']['torchserveVersion']}-gpu"
        assert {"name": "URBANFABRIC_TORCH_THREADS", "value": str(values["inferenceServices"][
            isvc["metadata"]["name"].removeprefix(f"{ds.RELEASE}-")]["torchThreads"])} in spec["env"]
        assert (packaged / "model-store" / f"{model}-{version}.mar").is_file()
        assert f'"{model}-{version}"' in snapshot


# -- serving --------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", list(MODELS))
def test_v2_rest_json_equals_in_process(servers: dict[str, Server], reference: Any, model: str) -> None:
    import httpx

    x, expected = reference[model]
    name = f"{model}-{VERSION}"
    resp = httpx.post(f"{servers['native'].rest}/v2/models/{name}/infer", json=_v2_json(x, "r-1"), timeout=60,
                      headers=_auth())
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert (doc["id"], doc["model_name"], doc["model_version"]) == ("r-1", name, VERSION)
    (out,) = doc["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("probability", "FP32", list(expected.shape))
    np.testing.assert_allclose(np.asarray(out["data"], np.float32).reshape(out["shape"]), expected, atol=ATOL)


def test_model_client_v2_rest_talks_to_torchserve(servers: dict[str, Server], reference: Any) -> None:
    """The project's client (binary tensor extension) against the handler, no envelope."""
    from urbanfabric.errors import InvalidInput, NotFound
    from urbanfabric.runtime.model_client import InferenceProtocol, ModelClient

    with ModelClient(InferenceProtocol.V2_REST, rest_url=servers["native"].rest, timeout_s=60,
                     token_key=KEY) as client:
        for model, (x, expected) in reference.items():
            got = client.infer(model, VERSION, x)
            assert got.shape == expected.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, expected, atol=ATOL)
        with pytest.raises(InvalidInput, match=r"chips \[N,3,128,128\]"):
            client.infer("roof-material", VERSION, reference["footprint-unet"][0])
        with pytest.raises(NotFound):
            client.infer("footprint-unet", "v9", reference["footprint-unet"][0])


def test_open_inference_grpc_is_refused_even_with_a_token(servers: dict[str, Server], reference: Any) -> None:
    """TorchServe's Open Inference gRPC frontend does not hand call metadata to the handler, so
    the token cannot reach the check and every gRPC inference is refused (fail closed; REST is
    what ModelClient and the chart's gateway use). Should TorchServe start forwarding it, this
    fails: then compare the answer with the in-process model again."""
    import grpc

    x, _ = reference["footprint-unet"]
    with pytest.raises(grpc.RpcError) as err:
        _oip_infer(servers["native"].grpc, f"footprint-unet-{VERSION}", x)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "unauthenticated: missing bearer token" in (err.value.details() or "")


def test_kservev2_envelope_flattens_outputs(servers: dict[str, Server], reference: Any) -> None:
    """Under TorchServe's kservev2 envelope: same values, output shape flattened; ModelClient fails."""
    import httpx
    from urbanfabric.errors import Unavailable
    from urbanfabric.runtime.model_client import InferenceProtocol, ModelClient

    x, expected = reference["footprint-unet"]
    name = f"footprint-unet-{VERSION}"
    server = servers["kservev2"]
    resp = httpx.post(f"{server.rest}/v2/models/{name}/infer", json=_v2_json(x, "e-1"), timeout=60,
                      headers=_auth())
    assert resp.status_code == 200, resp.text
    (out,) = resp.json()["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("probability", "FP32", [expected.size])
    np.testing.assert_allclose(np.asarray(out["data"], np.float32).reshape(expected.shape), expected, atol=ATOL)
    # The envelope json-decodes every body, so the client's binary tensor request cannot pass.
    with (ModelClient(InferenceProtocol.V2_REST, rest_url=server.rest, timeout_s=60, token_key=KEY) as client,
          pytest.raises(Unavailable, match="503")):
        client.infer("footprint-unet", VERSION, x)


def test_calls_without_a_valid_token_are_refused(servers: dict[str, Server], reference: Any) -> None:
    """No token, a token signed with another key, the raw key, an expired token: 401 on REST
    (native and under the envelope), naming why; the project's client with the wrong key fails at
    once on the 401. The liveness probe stays open."""
    import httpx

    from urbanfabric.errors import Unavailable
    from urbanfabric.runtime import auth
    from urbanfabric.runtime.model_client import InferenceProtocol, ModelClient

    x, _ = reference["footprint-unet"]
    name = f"footprint-unet-{VERSION}"
    forgeries = {"no token": {}, "another key": _auth("x" * 48), "the raw key": {"authorization": f"Bearer {KEY}"},
                 "expired": {"authorization": f"Bearer {auth.mint(KEY, time.time() - 3600)}"}}
    for label, server in servers.items():
        for why, headers in forgeries.items():
            resp = httpx.post(f"{server.rest}/v2/models/{name}/infer", json=_v2_json(x, "f-1"), timeout=60,
                              headers=headers)
            assert resp.status_code == 401, (label, why, resp.status_code, resp.text)
            assert "unauthenticated" in resp.text, (label, why, resp.text)
    with (ModelClient(InferenceProtocol.V2_REST, rest_url=servers["native"].rest, timeout_s=60,
                      token_key="x" * 48) as client, pytest.raises((RuntimeError, Unavailable), match="401")):
        client.infer("footprint-unet", VERSION, x)
    # Probes stay open.
    assert httpx.get(f"{servers['native'].rest}/ping", timeout=10).status_code == 200


def test_stop_leaves_no_torchserve_process(servers: dict[str, Server]) -> None:
    import psutil

    for server in servers.values():
        assert server.java_pid is not None and psutil.pid_exists(server.java_pid)
        assert any("org.pytorch.serve.ModelServer" in " ".join(p.cmdline()) for p in server.processes())
        result = server.stop()
        assert result.returncode == 0 and "TorchServe has stopped" in result.stdout, result.stdout + result.stderr
    deadline = time.monotonic() + 30
    left: list[str] = []
    while time.monotonic() < deadline:
        left = []
        for server in servers.values():
            for proc in server.processes():
                try:
                    left.append(f"{server.label}: {proc.pid} {' '.join(proc.cmdline())[:120]}")
                except psutil.NoSuchProcess:
                    continue
        if not left:
            break
        time.sleep(0.5)
    assert not left, "processes left after torchserve --stop:\n" + "\n".join(left)


# -- the handler alone (no server) ---------------------------------------------------------------
class FakeContext:
    """The parts of TorchServe's ``Context`` the handler uses, for a batch of requests."""

    def __init__(self, model_dir: Path, name: str, headers: list[dict[str, str]]) -> None:
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.manifest = {"model": {"modelName": name, "modelVersion": VERSION}}
        self.headers = headers
        self.response_headers: list[dict[str, str]] = [{} for _ in headers]

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self.headers[idx]

    def get_request_id(self, idx: int) -> str:
        return f"req-{idx}"

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.response_headers[idx][key] = value

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)


@contextmanager
def archived_handler(packaged: Path, name: str, where: Path) -> Iterator[Any]:
    """The handler module as TorchServe loads it: from the archive ``name`` extracted into
    ``where`` (with the token check packed beside it), ``sys.path`` restored afterwards."""
    import importlib.util

    with zipfile.ZipFile(packaged / "model-store" / f"{name}.mar") as mar:
        mar.extractall(where)
    assert (where / "urbanfabric_tokens.py").is_file()
    spec = importlib.util.spec_from_file_location(f"urbanfabric_handler_{where.name}", where / "urbanfabric_handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved_path = list(sys.path)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path[:] = saved_path


def test_handler_batch_in_process(packaged: Path, reference: Any, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A TorchServe batch of two requests (JSON and binary) through the archived handler (and
    the token check packed beside it)."""
    from ts.utils.util import PredictionException

    name = f"footprint-unet-{VERSION}"
    monkeypatch.setenv("URBANFABRIC_SERVICE_TOKEN", KEY)
    with archived_handler(packaged, name, tmp_path) as module:
        handler = module.UrbanfabricHandler()
        x, expected = reference["footprint-unet"]
        header = json.dumps({"inputs": [{"name": "input", "shape": list(x[1:].shape), "datatype": "FP32",
                                         "parameters": {"binary_data_size": x[1:].nbytes}}],
                             "parameters": {"binary_data_output": True}}).encode()
        context = FakeContext(tmp_path, name, [_auth(), {"Inference-Header-Content-Length": str(len(header)),
                                                         "Authorization": _auth()["authorization"]}])
        handler.initialize(context)
        first, second = handler.handle([{"body": _v2_json(x[:1], "a")}, {"body": header + x[1:].tobytes()}], context)
        doc = json.loads(first)
        np.testing.assert_allclose(np.asarray(doc["outputs"][0]["data"], np.float32).reshape(doc["outputs"][0]["shape"]),
                                   expected[:1], atol=ATOL)
        n = int(context.response_headers[1]["Inference-Header-Content-Length"])
        (out,) = json.loads(second[:n])["outputs"]
        assert out["shape"] == list(expected[1:].shape) and out["parameters"]["binary_data_size"] == expected[1:].nbytes
        np.testing.assert_allclose(np.frombuffer(second[n:], "<f4").reshape(out["shape"]), expected[1:], atol=ATOL)
        bad = _v2_json(x[:1], "b")
        bad["inputs"][0]["datatype"] = "FP64"
        with pytest.raises(PredictionException, match="must be FP32") as err:
            handler.handle([{"body": bad}], FakeContext(tmp_path, name, [_auth()]))
        assert err.value.error_code == 400
        # Without a valid token the batch is refused before the model runs.
        handler.forward = lambda x: pytest.fail("the model ran for an unauthenticated request")
        for headers in ({}, _auth("x" * 48), {"authorization": f"Bearer {KEY}"}):
            with pytest.raises(PredictionException, match="unauthenticated") as err:
                handler.handle([{"body": _v2_json(x[:1], "c")}], FakeContext(tmp_path, name, [headers]))
            assert err.value.error_code == 401
        with pytest.raises(PredictionException, match="unauthenticated: missing bearer token"):
            handler.handle([{"body": _v2_json(x[:1], "d")}, {"body": _v2_json(x[:1], "e")}],
                           FakeContext(tmp_path, name, [_auth(), {}]))


def test_handler_without_a_key_does_not_load(packaged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the project's model server refuses to start: no key and no explicit opt-out, the
    worker's initialize fails naming the variable; with URBANFABRIC_ALLOW_UNAUTHENTICATED=1 it loads."""
    name = f"roof-material-{VERSION}"
    monkeypatch.delenv("URBANFABRIC_SERVICE_TOKEN", raising=False)
    monkeypatch.delenv("URBANFABRIC_ALLOW_UNAUTHENTICATED", raising=False)
    with archived_handler(packaged, name, tmp_path) as module:
        with pytest.raises(RuntimeError, match="URBANFABRIC_SERVICE_TOKEN is not set"):
            module.UrbanfabricHandler().initialize(FakeContext(tmp_path, name, [{}]))
        monkeypatch.setenv("URBANFABRIC_ALLOW_UNAUTHENTICATED", "1")
        handler = module.UrbanfabricHandler()
        handler.initialize(FakeContext(tmp_path, name, [{}]))
        assert handler.initialized and handler.key is None
