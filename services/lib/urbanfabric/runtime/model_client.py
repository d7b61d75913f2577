"""One client for calling the project's models, over the network or in-process.

Services never talk to the model server directly; they hold a :class:`ModelClient` and call
``infer(model, version, x)``. The protocol is a constructor argument:

* ``V2_GRPC`` — Open Inference Protocol (V2) ``ModelInfer`` over gRPC, tensors as
  ``raw_input_contents`` / ``raw_output_contents`` bytes (the default: fastest, see
  :data:`DEFAULT_PROTOCOL`);
* ``V2_REST`` — V2 ``POST /v2/models/<name>/infer`` with the binary tensor extension
  (JSON header + raw bytes, ``Inference-Header-Content-Length``);
* ``EMBEDDED`` — no server: loads the same ``kserve.Model`` classes the server runs
  (:mod:`urbanfabric.runtime.model_runner`) in this process and runs their
  preprocess → predict → postprocess stages inline.

Model names on the wire are ``<model>-<version>`` (``footprint-unet-v1``): KServe's V2
endpoints do not implement the ``versions/`` path. Inputs are ``(N, 3, H, W)`` float32 in
0..1; the output is the model's ``probability`` tensor (``(N, H, W)`` for ``footprint-unet``,
``(N, C)`` for ``roof-material``).

Errors: an unknown model or version raises :class:`~urbanfabric.errors.NotFound` (message
starts with ``model_version``); a bad tensor :class:`~urbanfabric.errors.InvalidInput`
(field ``x``); connection failures, timeouts and server-side faults
:class:`~urbanfabric.errors.Unavailable` (retryable).
"""

from __future__ import annotations

import enum
import json
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from urbanfabric.errors import InvalidInput, NotFound, Unavailable
from urbanfabric.io.model_repository import v2_model_name
from urbanfabric.runtime import auth

INPUT_NAME = "input"
OUTPUT_NAME = "probability"
#: Second output of classifiers with out-of-domain statistics: ``(N,)`` FP32, higher = further
#: from the training images (``urbanfabric.uncertainty``).
OOD_OUTPUT_NAME = "ood_score"
_HEADER_LEN = "inference-header-content-length"
_GRPC_MAX_BYTES = 256 * 1024 * 1024  # matches the server's default --grpc-max-message-mb
_NP_DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16,
              "INT64": np.int64, "INT32": np.int32, "UINT8": np.uint8, "BOOL": np.bool_}


class InferenceProtocol(enum.Enum):
    """How :class:`ModelClient` reaches the model."""

    V2_REST = "v2-rest"
    V2_GRPC = "v2-grpc"
    EMBEDDED = "embedded"


#: The faster transport for one 1×3×512×512 FP32 tile (one-conv model, loopback, 2 busy CPU
#: cores, medians of 40 interleaved calls, three runs): gRPC 28–49 ms, REST 42–61 ms,
#: embedded 18–28 ms. (For 8-tile batches REST was ≈ 10 % faster; stock KServe REST without
#: the server's RawTensorDataPlane took 0.7–0.9 s per tile.)
DEFAULT_PROTOCOL = InferenceProtocol.V2_GRPC


def _check_input(x: Any) -> np.ndarray:
    """``x`` as a C-contiguous float32 ``(N, 3|4, H, W)`` array, or :class:`InvalidInput`."""
    if not isinstance(x, np.ndarray):
        raise InvalidInput("x", f"must be a numpy array, got {type(x).__name__}")
    # 4 channels: roof chips with the footprint as a channel (ChipMode.CONTEXT_MASK); the
    # model server checks each model's own channel count.
    if x.ndim != 4 or x.shape[1] not in (3, 4) or min(x.shape) < 1:
        raise InvalidInput("x", f"must have shape (N>=1, 3 or 4, H, W), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        # Integer imagery (0..255, raw DN) would be silently mis-scaled: calibrate first.
        raise InvalidInput("x", f"must be float (IQR-scaled 0..1), got {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


@contextmanager
def kserve_import_guard() -> Iterator[None]:
    """Import kserve without it parsing this process's command line.

    ``kserve.model_server`` runs ``argparse.parse_known_args()`` on ``sys.argv`` at import
    time; a host program's own flags (``--protocol rest``) could make it exit.
    """
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


class ModelClient:
    """Call served (or embedded) model versions with numpy tensors.

    Thread-safe: one client can be shared by a service's handler threads.

    Example::

        client = ModelClient(InferenceProtocol.V2_GRPC, grpc_addr="127.0.0.1:8081")
        prob = client.infer("footprint-unet", "v1", tiles)          # (N, H, W)
    """

    def __init__(
        self,
        protocol: InferenceProtocol = DEFAULT_PROTOCOL,
        rest_url: str | None = None,
        grpc_addr: str | None = None,
        timeout_s: float = 30.0,
        *,
        model_dir: Path | str | None = None,
        device: str = "cpu",
        modules: Mapping[str, str] | None = None,
        token_key: str = "",
    ) -> None:
        """Create a client (cheap: network connections and models are opened lazily).

        Args:
            protocol: transport, see :class:`InferenceProtocol`.
            rest_url: base URL of the model server, e.g. ``http://127.0.0.1:8080`` (V2_REST).
            grpc_addr: ``host:port`` of the model server's gRPC port (V2_GRPC).
            timeout_s: per-call deadline in seconds.
            model_dir: EMBEDDED only: model repository root (default ``<repo>/models``).
            device: EMBEDDED only: torch device.
            modules: EMBEDDED only: ``{model name: python module}`` for models that are not
                known kinds (same meaning as the server's ``NAME:VERSION=module``).
            token_key: key signing the bearer token sent with every REST / gRPC call
                (:mod:`urbanfabric.runtime.auth`); empty: none sent.

        Raises:
            InvalidInput: the address for the chosen protocol is missing, or bad timeout.
        """
        if not isinstance(protocol, InferenceProtocol):
            raise InvalidInput("protocol", f"must be an InferenceProtocol, got {protocol!r}")
        if timeout_s <= 0:
            raise InvalidInput("timeout_s", "must be > 0")
        if protocol is InferenceProtocol.V2_REST and not rest_url:
            raise InvalidInput("rest_url", "is required for V2_REST")
        if protocol is InferenceProtocol.V2_GRPC and not grpc_addr:
            raise InvalidInput("grpc_addr", "is required for V2_GRPC")
        self.protocol = protocol
        self.rest_url = rest_url.rstrip("/") if rest_url else None
        self.grpc_addr = grpc_addr
        self.timeout_s = float(timeout_s)
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.device = device
        self.modules = dict(modules or {})
        self.token_key = token_key
        self._tokens = auth.TokenSource(token_key) if token_key else None
        self._lock = threading.Lock()
        self._http: Any = None
        self._channel: Any = None
        self._stub: Any = None
        self._pb: Any = None
        self._embedded: dict[str, Any] = {}

    # ---- public API ----------------------------------------------------------------------
    def infer(self, model: str, version: str, x: np.ndarray) -> np.ndarray:
        """Run one batch through ``model`` ``version``.

        Args:
            model: e.g. ``footprint-unet``.
            version: e.g. ``v1``.
            x: ``(N, 3, H, W)`` float (cast to float32), IQR-scaled 0..1.

        Returns:
            The ``probability`` output tensor (float32).

        Raises:
            NotFound: the model version is not served / has no weights.
            InvalidInput: ``x`` has the wrong type or shape (for this model).
            Unavailable: server unreachable, timed out or failed.
        """
        outputs = self.infer_outputs(model, version, x)
        if OUTPUT_NAME not in outputs:
            raise Unavailable(f"{v2_model_name(model, version)}: response has no {OUTPUT_NAME!r} output")
        return outputs[OUTPUT_NAME]

    def infer_outputs(self, model: str, version: str, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output tensor of one batch, by name: ``probability`` and, for classifiers with
        out-of-domain statistics, ``ood_score`` (``(N,)``; :data:`OOD_OUTPUT_NAME`).

        Arguments and errors as :meth:`infer`.
        """
        name = v2_model_name(model, version)
        x = _check_input(x)
        if self.protocol is InferenceProtocol.V2_GRPC:
            return self._infer_grpc(name, x)
        if self.protocol is InferenceProtocol.V2_REST:
            return self._infer_rest(name, x)
        return self._infer_embedded(name, model, version, x)

    def infer_batched(
        self, model: str, version: str, x: np.ndarray, batch_size: int
    ) -> np.ndarray:
        """:meth:`infer` in chunks of at most ``batch_size`` items, concatenated.

        Keeps each request below the message limit and bounded in server memory.
        """
        if batch_size < 1:
            raise InvalidInput("batch_size", "must be >= 1")
        x = _check_input(x)
        parts = [self.infer(model, version, x[i : i + batch_size])
                 for i in range(0, len(x), batch_size)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def infer_batched_outputs(
        self, model: str, version: str, x: np.ndarray, batch_size: int
    ) -> dict[str, np.ndarray]:
        """:meth:`infer_outputs` in chunks of at most ``batch_size`` items, each output concatenated."""
        if batch_size < 1:
            raise InvalidInput("batch_size", "must be >= 1")
        x = _check_input(x)
        parts = [self.infer_outputs(model, version, x[i : i + batch_size])
                 for i in range(0, len(x), batch_size)]
        if len(parts) == 1:
            return parts[0]
        names = [k for k in parts[0] if all(k in p for p in parts)]
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in names}

    def ready(self, model: str, version: str) -> bool:
        """True when the model version is loaded and can answer.

        False when it is unknown, not loaded, or the server cannot be reached (a readiness
        probe, never raises for those).
        """
        try:
            return self.served(model, version)
        except Unavailable:
            return False

    def served(self, model: str, version: str) -> bool:
        """True when the model version is loaded and can answer; False when the server says
        it is unknown or not loaded.

        Raises:
            Unavailable: the server cannot be reached — a restart, to be retried, which must not
                read as "not served" (the fault test found tiles failed for good that way).
        """
        name = v2_model_name(model, version)
        try:
            if self.protocol is InferenceProtocol.V2_GRPC:
                stub, pb = self._grpc()
                return bool(stub.ModelReady(pb.ModelReadyRequest(name=name),
                                            timeout=self.timeout_s).ready)
            if self.protocol is InferenceProtocol.V2_REST:
                resp = self._client().get(f"{self.rest_url}/v2/models/{name}/ready")
                if resp.status_code >= 500:
                    raise Unavailable(f"model server answered {resp.status_code} asking for {name}")
                return resp.status_code == 200 and bool(resp.json().get("ready"))
            return bool(self._embedded_model(name, model, version).ready)
        except (NotFound, InvalidInput):
            return False
        except Exception as exc:  # noqa: BLE001 - transport errors of either stack
            if not _is_transport_error(exc):
                raise
            mapped = _grpc_error(exc, name, "ModelReady") if hasattr(exc, "code") else \
                Unavailable(f"model server unreachable asking for {name}: {exc}")
            if isinstance(mapped, (NotFound, InvalidInput)):
                return False
            raise mapped from exc

    def load(self, model: str, version: str) -> None:
        """Ask the model server to load a version from its model store (the V2 repository
        extension, :class:`urbanfabric.runtime.model_runner.VersionRepository`); embedded:
        load it in-process. Returns once it answers ready.

        Raises:
            NotFound: the server could not load it (the reason in the message).
            Unavailable: the server cannot be reached.
        """
        name = v2_model_name(model, version)
        if self.protocol is InferenceProtocol.EMBEDDED:
            if not self._embedded_model(name, model, version).ready:
                raise NotFound(f"model_version: {name} did not load")
            return
        import httpx

        if not self.rest_url:
            raise InvalidInput("rest_url", "loading a model needs the model server's REST address")
        try:
            resp = self._client().post(f"{self.rest_url}/v2/repository/models/{name}/load")
        except httpx.TransportError as exc:
            raise Unavailable(f"model server unreachable at {self.rest_url}: {exc}") from exc
        if resp.status_code != 200:
            raise NotFound(f"model_version: the model server did not load {name}: "
                           f"{resp.status_code} {resp.text[:300]}")

    def close(self) -> None:
        """Close network connections and unload embedded models."""
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None
            if self._channel is not None:
                self._channel.close()
                self._channel = self._stub = None
            for m in self._embedded.values():
                m.stop()
            self._embedded.clear()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- V2 REST (binary tensor extension) -----------------------------------------------
    def _client(self) -> Any:
        with self._lock:
            if self._http is None:
                import httpx

                self._http = httpx.Client(timeout=self.timeout_s, auth=self._sign_request)
            return self._http

    def _sign_request(self, request: Any) -> Any:
        """httpx auth hook: a fresh bearer token on every request (when a key is set)."""
        if self._tokens is not None:
            request.headers[auth.HEADER] = self._tokens.header()
        return request

    def _infer_rest(self, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        import httpx

        header = json.dumps({
            "inputs": [{"name": INPUT_NAME, "shape": list(x.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes}}],
            "parameters": {"binary_data_output": True},
        }).encode()
        url = f"{self.rest_url}/v2/models/{name}/infer"
        try:
            resp = self._client().post(
                url,
                content=header + x.tobytes(),
                headers={"content-type": "application/octet-stream", _HEADER_LEN: str(len(header))},
            )
        except httpx.TimeoutException as exc:
            raise Unavailable(f"model server timed out after {self.timeout_s}s: {url}") from exc
        except httpx.TransportError as exc:
            raise Unavailable(f"model server unreachable at {self.rest_url}: {exc}") from exc
        if resp.status_code != 200:
            _raise_rest_error(resp, name, self.rest_url or "")
        return _decode_rest(resp.content, resp.headers.get(_HEADER_LEN))

    # ---- V2 gRPC ---------------------------------------------------------------------------
    def _grpc(self) -> tuple[Any, Any]:
        with self._lock:
            if self._stub is None:
                import grpc

                with kserve_import_guard():
                    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
                    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import (
                        GRPCInferenceServiceStub,
                    )
                self._channel = grpc.insecure_channel(
                    self.grpc_addr,
                    options=[("grpc.max_send_message_length", _GRPC_MAX_BYTES),
                             ("grpc.max_receive_message_length", _GRPC_MAX_BYTES)],
                )
                self._stub = GRPCInferenceServiceStub(auth.authenticated(self._channel, self.token_key))
                self._pb = pb
            return self._stub, self._pb

    def _infer_grpc(self, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        import grpc

        stub, pb = self._grpc()
        request = pb.ModelInferRequest(
            model_name=name,
            inputs=[pb.ModelInferRequest.InferInputTensor(
                name=INPUT_NAME, datatype="FP32", shape=list(x.shape))],
            raw_input_contents=[x.tobytes()],
        )
        try:
            resp = stub.ModelInfer(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _grpc_error(exc, name, self.grpc_addr or "") from exc
        outputs = {}
        for i, out in enumerate(resp.outputs):
            dtype = _dtype(out.datatype)
            if i < len(resp.raw_output_contents):
                arr = np.frombuffer(resp.raw_output_contents[i], dtype=dtype)
            else:  # typed contents (a server that does not answer raw)
                arr = np.asarray(_typed_contents(out), dtype=dtype)
            outputs[out.name] = arr.reshape(tuple(out.shape)).copy()
        if OUTPUT_NAME not in outputs:
            raise Unavailable(f"{name}: response has no {OUTPUT_NAME!r} output")
        return outputs

    # ---- EMBEDDED ----------------------------------------------------------------------------
    def _embedded_model(self, name: str, model: str, version: str) -> Any:
        with self._lock:
            loaded = self._embedded.get(name)
            if loaded is not None:
                return loaded
            with kserve_import_guard():
                from urbanfabric.runtime import model_runner as ms
            key = model.replace("_", "-")
            module = self.modules.get(key) or ms.MODEL_MODULES.get(key)
            if module is None:
                raise NotFound(f"model_version {model}:{version}: unknown model (no module)")
            spec = ms.ModelSpec(key, version, module)
            m = ms.build_model(spec, model_dir=self.model_dir, device=self.device)
            try:
                m.load()
            except ms.WeightsMissing as exc:
                raise NotFound(f"model_version {model}:{version} has no weights: {exc}") from exc
            except ImportError as exc:
                raise NotFound(f"model_version {model}:{version}: no model code: {exc}") from exc
            self._embedded[name] = m
            return m

    def _infer_embedded(self, name: str, model: str, version: str, x: np.ndarray) -> dict[str, np.ndarray]:
        m = self._embedded_model(name, model, version)
        with kserve_import_guard():
            from kserve.errors import InvalidInput as KServeInvalidInput
            from kserve.protocol.infer_type import InferInput, InferRequest

            from urbanfabric.runtime.model_runner import infer_inline
        tensor = InferInput(name=INPUT_NAME, shape=list(x.shape), datatype="FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        try:
            response = infer_inline(m, InferRequest(model_name=name, infer_inputs=[tensor]))
        except KServeInvalidInput as exc:
            raise InvalidInput("x", f"{name}: {exc.reason}") from exc
        if response.get_output_by_name(OUTPUT_NAME) is None:
            raise Unavailable(f"{name}: response has no {OUTPUT_NAME!r} output")
        return {out.name: out.data if isinstance(out.data, np.ndarray) else out.as_numpy()
                for out in response.outputs}


# ---- helpers ---------------------------------------------------------------------------------
def _dtype(datatype: str) -> Any:
    try:
        return _NP_DTYPES[datatype]
    except KeyError:
        raise Unavailable(f"unsupported output datatype {datatype}") from None


def _typed_contents(out: Any) -> list[Any]:
    c = out.contents
    for field in ("fp32_contents", "fp64_contents", "int64_contents", "int_contents",
                  "uint_contents", "bool_contents"):
        values = getattr(c, field)
        if len(values):
            return list(values)
    return []


def _decode_rest(body: bytes, header_len: str | None) -> dict[str, np.ndarray]:
    """The output tensors of a V2 REST response (binary extension or plain JSON), by name;
    ``probability`` must be among them."""
    json_len = int(header_len) if header_len else len(body)
    doc = json.loads(body[:json_len])
    offset = json_len
    outputs = {}
    for out in doc.get("outputs", []):
        size = (out.get("parameters") or {}).get("binary_data_size")
        dtype = _dtype(out["datatype"])
        if size is not None:
            raw, offset = body[offset : offset + size], offset + size
            outputs[out["name"]] = np.frombuffer(raw, dtype=dtype).reshape(out["shape"]).copy()
        else:
            outputs[out["name"]] = np.asarray(out["data"], dtype=dtype).reshape(out["shape"])
    if OUTPUT_NAME not in outputs:
        raise Unavailable(f"response has no {OUTPUT_NAME!r} output")
    return outputs


def _raise_rest_error(resp: Any, name: str, where: str) -> None:
    try:
        detail = resp.json().get("error", resp.text)
    except ValueError:
        detail = resp.text
    code = resp.status_code
    if code == 401:  # a deployment fault, not a passing outage: no retry will fix it
        raise RuntimeError(f"model server {where} refused {name}: 401 {detail} (check URBANFABRIC_SERVICE_TOKEN)")
    if code == 404:
        raise NotFound(f"model_version {name} is not served at {where}: {detail}")
    if code in (400, 422):
        raise InvalidInput("x", f"{name}: {detail}")
    raise Unavailable(f"model server answered {code} for {name}: {detail}")


def _grpc_error(exc: Any, name: str, where: str) -> Exception:
    import grpc

    code = exc.code() if hasattr(exc, "code") else None
    detail = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return RuntimeError(f"model server {where} refused {name}: {detail} (check URBANFABRIC_SERVICE_TOKEN)")
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"model_version {name} is not served at {where}: {detail}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInput("x", f"{name}: {detail}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return InvalidInput("x", f"{name}: message too large, use infer_batched: {detail}")
    status = code.name if code else "?"
    return Unavailable(f"model server {where} failed for {name}: {status} {detail}")


def _is_transport_error(exc: Exception) -> bool:
    try:
        import grpc

        if isinstance(exc, grpc.RpcError):
            return True
    except ImportError:  # pragma: no cover - grpc is a core dependency
        pass
    try:
        import httpx

        return isinstance(exc, httpx.HTTPError)
    except ImportError:  # pragma: no cover
        return False
