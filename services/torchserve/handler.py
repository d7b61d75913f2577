"""TorchServe handler for the project's torch models (packed into every ``.mar``).

One handler serves every model kind: it imports the model's Python module (``load_model`` /
``predict_proba``, the same functions the KServe predictor in :mod:`urbanfabric.runtime.model_runner`
runs) from the code packed into the archive, so the archive is self-contained: model code,
``config.json`` and ``model.pt`` of one version travel together.

The tensor contract is the project's V2 one: one input ``input`` (FP32, ``[N, 3, H, W]``,
IQR-scaled 0..1) and one output ``probability`` (FP32; ``[N, H, W]`` for ``footprint-unet``,
``[N, C]`` for ``roof-material``). It answers in two set-ups:

* **Without a service envelope** (``service_envelope`` unset): the handler reads and writes
  Open Inference Protocol (V2) bodies itself — JSON, and the binary tensor extension
  (``Inference-Header-Content-Length``) that :class:`urbanfabric.runtime.model_client.ModelClient`
  sends — on ``POST /v2/models/<name>/infer`` and through TorchServe's Open Inference gRPC
  service. Outputs keep their name and shape.
* **Under TorchServe's ``kservev2`` envelope** (what KServe's TorchServe runtime configures):
  the envelope hands over the decoded input tensors and flattens whatever the handler
  returns; the output is renamed ``probability`` but its ``shape`` is the flat element count
  (a limitation of the envelope, see docs/deploy.md).

Every inference request must carry the project's service token (``authorization: Bearer
uf1.<expiry>.<mac>``, :mod:`urbanfabric.runtime.tokens`, checked against
``URBANFABRIC_SERVICE_TOKEN`` as the chart gives it to every model pod): without a valid one
the batch is refused with 401 before the model runs. A worker without a key does not load
(unless ``URBANFABRIC_ALLOW_UNAUTHENTICATED=1``), as the project's model server refuses to start.

This file is copied into each archive as ``urbanfabric_handler.py`` (the token check beside it
as ``urbanfabric_tokens.py``); it must stay importable without the repository on ``sys.path``
and define exactly one class (TorchServe picks the handler class by that rule).
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "probability"
#: Written by services.torchserve.package into the archive: model, version, module, name.
SPEC_FILE = "urbanfabric_model.json"
_HEADER_LEN = "inference-header-content-length"
_V2_DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16}


def _prediction_error(message: str, code: int) -> Exception:
    """TorchServe's ``PredictionException`` (its code becomes the HTTP/gRPC status)."""
    from ts.utils.util import PredictionException

    return PredictionException(message, code)


def _header(context: Any, idx: int, key: str) -> str | None:
    """A request header, case-insensitively (clients differ in how they spell them)."""
    headers = context.get_all_request_header(idx) or {}
    for name, value in headers.items():
        if isinstance(name, str) and name.lower() == key and isinstance(value, str):
            return value
    return None


def _tokens() -> Any:
    """The token module: the archive's copy, or the repository's when run from a checkout."""
    try:
        return importlib.import_module("urbanfabric_tokens")
    except ImportError:
        return importlib.import_module("urbanfabric.runtime.tokens")


def _torch_threads(default: int = 2) -> int:
    """``URBANFABRIC_TORCH_THREADS`` (as the project's model server reads it), at least 1."""
    raw = os.environ.get("URBANFABRIC_TORCH_THREADS", "")
    try:
        return max(1, int(raw) if raw else default)
    except ValueError:
        raise ValueError(f"URBANFABRIC_TORCH_THREADS must be an integer, got {raw!r}") from None


def _as_batch(tensor: dict[str, Any], data: Any) -> np.ndarray:
    """Check one V2 input tensor description and return its data as float32 ``[N,3,H,W]``.

    Raises:
        PredictionException: (HTTP 400) wrong name, datatype or shape.
    """
    name, datatype = tensor.get("name"), tensor.get("datatype")
    if name != INPUT_NAME:
        raise _prediction_error(f"expected one input tensor {INPUT_NAME!r}, got {name!r}", 400)
    if datatype != "FP32":
        raise _prediction_error(f"input {INPUT_NAME!r} must be FP32, got {datatype}", 400)
    try:
        shape = [int(s) for s in tensor.get("shape", [])]
    except (TypeError, ValueError):
        raise _prediction_error(f"input {INPUT_NAME!r}: bad shape {tensor.get('shape')!r}", 400)
    if len(shape) != 4 or shape[1] != 3 or min(shape) < 1:
        raise _prediction_error(f"input {INPUT_NAME!r} must have shape [N,3,H,W], got {shape}", 400)
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            x = np.frombuffer(data, dtype="<f4").reshape(shape)
        else:
            x = np.asarray(data, dtype=np.float32).reshape(shape)
    except ValueError as exc:  # element count does not match the declared shape
        raise _prediction_error(f"input {INPUT_NAME!r}: {exc}", 400) from exc
    return np.array(x, dtype=np.float32, order="C")  # writable copy (torch.from_numpy warns)


class UrbanfabricHandler:
    """Serve one project model version: ``input`` FP32 [N,3,H,W] → ``probability`` FP32."""

    def __init__(self) -> None:
        self.initialized = False
        self.name = ""
        self.spec: dict[str, Any] = {}
        self.config: dict[str, Any] = {}
        self.net: Any = None
        self.module: Any = None
        self.tokens: Any = None
        self.key: str | None = None

    # ---- TorchServe entry points ---------------------------------------------------------------
    def initialize(self, context: Any) -> None:
        """Load the model from the extracted archive (``config.json``, ``model.pt``, code)."""
        import torch

        model_dir = Path(context.system_properties["model_dir"])
        if str(model_dir) not in sys.path:
            sys.path.insert(0, str(model_dir))  # the archive's urbanfabric_tokens.py
        self.tokens = _tokens()
        try:
            self.key = self.tokens.server_key()
        except self.tokens.MissingKey as exc:
            log.error("urbanfabric: %s", exc)  # one line naming the variable; the worker stops here
            raise
        self.spec = json.loads((model_dir / SPEC_FILE).read_text(encoding="utf-8"))
        self.config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        self.name = context.manifest["model"]["modelName"]
        # The archive's copy of the model code must win over any other `models` package.
        if str(model_dir) in sys.path:
            sys.path.remove(str(model_dir))
        sys.path.insert(0, str(model_dir))
        self.module = importlib.import_module(self.spec["module"])
        gpu_id = context.system_properties.get("gpu_id")
        device = f"cuda:{gpu_id}" if gpu_id is not None and torch.cuda.is_available() else "cpu"
        torch.set_num_threads(_torch_threads())
        load_model = self.module.load_model
        if "device" in inspect.signature(load_model).parameters:
            net = load_model(model_dir, device=device)
        else:
            net = load_model(model_dir).to(device)
        self.net = net.eval()
        if self.spec["model"] == "roof-material" and not self.config.get("classes"):
            raise ValueError(f"{model_dir}/config.json has no 'classes'")
        log.info("urbanfabric: %s loaded code %s from %s on %s", self.name,
                 self.spec["module"], getattr(self.module, "__file__", "?"), device)
        self.initialized = True

    def handle(self, data: list[Any], context: Any) -> list[Any]:
        """One response per request of the batch (or the envelope's list of outputs)."""
        self._authenticate(len(data), context)
        if data and all(_is_tensor(item) for item in data):
            return self._handle_envelope(data, context)
        return [self._handle_request(i, item, context) for i, item in enumerate(data)]

    def _authenticate(self, requests: int, context: Any) -> None:
        """Refuse the batch (401, nothing run) unless each of its requests carries a valid token.

        TorchServe answers a batch's requests together, so one refusal fails the batch; the
        archives' ``batchSize`` is 1, so in practice it is one request.
        """
        if self.key is None:  # URBANFABRIC_ALLOW_UNAUTHENTICATED=1
            return
        ids = getattr(context, "request_ids", None)
        for idx in (sorted(ids) if isinstance(ids, dict) and ids else range(max(requests, 1))):
            reason = self.tokens.check(self.key, _header(context, idx, self.tokens.HEADER))
            if reason:
                raise _prediction_error(f"unauthenticated: {reason}", 401)

    # ---- model -------------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Probabilities of a checked batch, as the in-process model computes them."""
        self._check_input(x)
        return np.ascontiguousarray(self.module.predict_proba(self.net, x), dtype=np.float32)

    def _check_input(self, x: np.ndarray) -> None:
        size = self.config.get("chip_size")
        if self.spec["model"] == "roof-material" and (
            x.shape[2] != x.shape[3] or (size is not None and x.shape[2] != int(size))
        ):
            raise _prediction_error(
                f"input {INPUT_NAME!r} must be chips [N,3,{size},{size}], got {list(x.shape)}", 400
            )

    # ---- kservev2 envelope -----------------------------------------------------------------
    def _handle_envelope(self, tensors: list[dict[str, Any]], context: Any) -> list[Any]:
        """Under ``service_envelope=kservev2``: decoded tensors in, one array per output out."""
        if len(tensors) != 1:
            names = [t.get("name") for t in tensors]
            raise _prediction_error(f"expected exactly one input tensor {INPUT_NAME!r}, got {names}", 400)
        prob = self.forward(_as_batch(tensors[0], tensors[0].get("data")))
        # The envelope names each output after the input at the same index (context.input_names,
        # set by its parse_input); name ours as the V2 contract says.
        if hasattr(context, "input_names"):
            context.input_names = [OUTPUT_NAME]
        return [prob]

    # ---- Open Inference Protocol (V2), no envelope ---------------------------------------------
    def _handle_request(self, idx: int, row: dict[str, Any], context: Any) -> Any:
        body = row.get("body", row.get("data")) if isinstance(row, dict) else None
        if body is None:
            raise _prediction_error("empty request: expected an Open Inference Protocol body", 400)
        raw: bytes | bytearray | None = None
        if isinstance(body, (bytes, bytearray)):
            header_len = _header(context, idx, _HEADER_LEN)
            n = int(header_len) if header_len else len(body)
            try:
                doc = json.loads(bytes(body[:n]).decode("utf-8"))
            except ValueError as exc:
                raise _prediction_error(f"request header is not JSON: {exc}", 400) from exc
            raw = body[n:]
        elif isinstance(body, dict):
            doc = body
        else:
            raise _prediction_error(f"unsupported request body {type(body).__name__}", 400)
        inputs = doc.get("inputs") or []
        if len(inputs) != 1:
            names = [t.get("name") for t in inputs]
            raise _prediction_error(f"expected exactly one input tensor {INPUT_NAME!r}, got {names}", 400)
        tensor = inputs[0]
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        data = raw[: int(size)] if size is not None and raw is not None else tensor.get("data")
        prob = self.forward(_as_batch(tensor, data))
        response: dict[str, Any] = {
            # TorchServe's gRPC frontend reads all three as strings.
            "id": str(doc.get("id") or context.get_request_id(idx) or ""),
            "model_name": self.name,
            "model_version": str(self.spec.get("version", "")),
        }
        output: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": "FP32", "shape": list(prob.shape)}
        if (doc.get("parameters") or {}).get("binary_data_output"):
            output["parameters"] = {"binary_data_size": prob.nbytes}
            header = json.dumps({**response, "outputs": [output]}).encode("utf-8")
            context.set_response_header(idx, "Inference-Header-Content-Length", str(len(header)))
            context.set_response_content_type(idx, "application/octet-stream")
            return header + prob.astype("<f4").tobytes()
        output["data"] = prob.ravel().tolist()
        context.set_response_content_type(idx, "application/json")
        # Pre-serialised: TorchServe would otherwise indent a multi-megabyte list.
        return json.dumps({**response, "outputs": [output]}, separators=(",", ":"))


def _is_tensor(item: Any) -> bool:
    """True for an input tensor the kservev2 envelope decoded (not a raw request row)."""
    return isinstance(item, dict) and {"name", "datatype", "shape"} <= item.keys() and "body" not in item
