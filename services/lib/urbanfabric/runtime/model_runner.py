"""KServe models for the project's torch networks, speaking the Open Inference Protocol (V2).

Every served model has one input tensor ``input`` (FP32, ``[N, 3, H, W]``, IQR-scaled 0..1 as
:func:`urbanfabric.imagery.calibration.iqr_scale` produces it) and one output tensor ``probability``
(FP32): ``[N, H, W]`` building probability for ``footprint-unet``, ``[N, C]`` class
probabilities for ``roof-material``. The V2 model name carries the version
(``footprint-unet-v1``) because KServe's V2 endpoints reject the ``versions/…`` path.

The same classes run inside the model server (``python -m services.modelserver``) and
in-process (:class:`urbanfabric.runtime.model_client.ModelClient` in EMBEDDED mode, through
:func:`infer_inline`), so the local run and the cluster run execute the same stages:
``load`` → ``preprocess`` → ``predict`` → ``postprocess``.

Weights live in a model repository laid out as ``<root>/<model_dir>/<version>/`` with
``config.json`` + ``model.pt`` (``<root>`` defaults to ``<repo>/models``; ``model_dir`` is the
model name with ``_`` for ``-``, e.g. ``footprint_unet``). They can also be fetched from the
project object store (``s3://<bucket>/models/<model_dir>/<version>/``, DESIGN.md §4).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
from kserve import Model
from kserve.model_repository import ModelRepository
from kserve.errors import InvalidInput
from kserve.metrics import POST_HIST_TIME, PRE_HIST_TIME, PREDICT_HIST_TIME, get_labels
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from prometheus_client import Counter, Gauge, Histogram

from urbanfabric.io.model_repository import MODEL_MODULES, MODELS_DIR, v2_model_name

log = logging.getLogger("urbanfabric.modelserver")

#: Default model repository: the weights shipped in the git repository.
DEFAULT_MODEL_DIR = MODELS_DIR

INPUT_NAME = "input"
OUTPUT_NAME = "probability"
#: Classifiers with out-of-domain statistics (config ``ood``) add ``[N]`` FP32 scores: how far
#: each chip's features lie from the training images' (``urbanfabric.uncertainty``).
OOD_OUTPUT_NAME = "ood_score"
#: Files of a shipped version directory (see models/<name>/v1/).
VERSION_FILES = ("config.json", "model.pt")


# KServe already records request_{preprocess,predict,postprocess}_seconds per model; these add
# what it does not: how much work each request carries and whether/when each model loaded.
ITEMS = Counter(
    "urbanfabric_model_items_total", "Images/chips inferred, by model.", ["model_name"]
)
BATCH = Histogram(
    "urbanfabric_model_batch_size",
    "Images/chips per inference request.",
    ["model_name"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
LOADED = Gauge("urbanfabric_model_loaded", "1 when the model version is loaded.", ["model_name"])
LOAD_SECONDS = Gauge(
    "urbanfabric_model_load_seconds", "Time taken to load the weights.", ["model_name"]
)


class WeightsMissing(FileNotFoundError):
    """A model version has no weights in the repository (or the object store)."""


@dataclass(frozen=True)
class ModelSpec:
    """One model version to serve.

    Attributes:
        model: model name as clients call it, e.g. ``footprint-unet``.
        version: e.g. ``v1``.
        module: import path of the module providing ``load_model`` and ``predict_proba``.
    """

    model: str
    version: str
    module: str

    @property
    def name(self) -> str:
        """The V2 model name, ``<model>-<version>``."""
        return v2_model_name(self.model, self.version)

    @property
    def model_dir(self) -> str:
        """Directory of the model inside a model repository (``footprint_unet``)."""
        return self.model.replace("-", "_")


def parse_specs(text: str) -> list[ModelSpec]:
    """Parse ``footprint-unet:v1,roof-material:v1[,name:version=python.module]``.

    A ``=module`` suffix serves any module with the ``load_model`` / ``predict_proba``
    contract (used by tests with a tiny network); without it the model must be a known kind.

    Raises:
        ValueError: malformed entry or unknown model without a module.
    """
    specs: list[ModelSpec] = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        ident, _, module = raw.partition("=")
        model, sep, version = ident.partition(":")
        model = model.strip().replace("_", "-")
        version = version.strip()
        if not sep or not model or not version:
            raise ValueError(f"model spec {raw!r} is not NAME:VERSION[=module]")
        module = module.strip() or MODEL_MODULES.get(model, "")
        if not module:
            raise ValueError(
                f"unknown model {model!r}: known {sorted(MODEL_MODULES)}; give NAME:VERSION=module"
            )
        specs.append(ModelSpec(model, version, module))
    return specs


def _as_float32_batch(payload: InferRequest) -> np.ndarray:
    """The ``input`` tensor of a V2 request as a ``(N, 3, H, W)`` float32 array.

    Raises:
        InvalidInput: (KServe's, → HTTP 400 / gRPC INVALID_ARGUMENT) wrong name, type or shape.
    """
    if not isinstance(payload, InferRequest):
        raise InvalidInput("expected an Open Inference Protocol (V2) request")
    tensor = payload.get_input_by_name(INPUT_NAME)
    if tensor is None or len(payload.inputs) != 1:
        names = [t.name for t in payload.inputs]
        raise InvalidInput(f"expected exactly one input tensor {INPUT_NAME!r}, got {names}")
    if tensor.datatype != "FP32":
        raise InvalidInput(f"input {INPUT_NAME!r} must be FP32, got {tensor.datatype}")
    shape = [int(s) for s in tensor.shape]
    # 3 bands; 4 for roof chips with the footprint as a channel (each model checks its own).
    if len(shape) != 4 or shape[1] not in (3, 4) or min(shape) < 1:
        raise InvalidInput(f"input {INPUT_NAME!r} must have shape [N,3,H,W] (or [N,4,H,W] for context+mask chips), got {shape}")
    try:
        x = tensor.as_numpy()
    except ValueError as exc:  # element count does not match the declared shape
        raise InvalidInput(f"input {INPUT_NAME!r}: {exc}") from exc
    x = np.ascontiguousarray(x, dtype=np.float32)
    # Raw gRPC/REST bytes decode to a read-only view; torch.from_numpy warns on those.
    return x if x.flags.writeable else x.copy()


@dataclass
class _Batch:
    """What flows between the stages: the array plus what postprocess needs of the request."""

    array: np.ndarray
    request_id: str | None
    binary_output: bool
    requested_outputs: Any
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __contains__(self, key: object) -> bool:
        # kserve.Model.validate() probes ``"inputs" in payload`` under some predictor configs.
        return False


class TorchV2Model(Model):
    """A torch model served over V2: ``input`` FP32 [N,3,H,W] → ``probability`` FP32.

    Generic over any module with ``load_model(version_dir[, device])`` and
    ``predict_proba(model, x) -> np.ndarray``; subclasses add checks of their model kind.
    Inference runs on one dedicated thread per model so the event loop stays responsive
    (health checks, metrics) and concurrent requests queue instead of oversubscribing the
    CPU cores torch already uses.
    """

    def __init__(
        self,
        spec: ModelSpec,
        model_dir: Path | str | None = None,
        device: str = "cpu",
        fetch: Callable[[ModelSpec, Path], None] | None = None,
    ) -> None:
        """Create an unloaded model.

        Args:
            spec: which model version and code.
            model_dir: model repository root (default ``<repo>/models``).
            device: torch device string.
            fetch: optional ``fetch(spec, version_dir)`` that downloads the version files
                into ``version_dir`` before loading (object store).
        """
        super().__init__(spec.name)
        self.spec = spec
        self.model_dir = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        self.device = device
        self.fetch = fetch
        self.config: dict[str, Any] = {}
        self.net: Any = None
        self._module: ModuleType | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def version_dir(self) -> Path:
        """``<model_dir>/<model_dir_name>/<version>``."""
        return self.model_dir / self.spec.model_dir / self.spec.version

    # ---- KServe stages -------------------------------------------------------------------
    def load(self) -> bool:
        """Import the model code and load the weights.

        Raises:
            WeightsMissing: the version directory lacks ``model.pt`` / ``config.json``.
            ImportError: the model code is not importable.
        """
        start = time.perf_counter()
        if self.fetch is not None:
            self.fetch(self.spec, self.version_dir)
        missing = [f for f in VERSION_FILES if not (self.version_dir / f).is_file()]
        if missing == ["model.pt"]:
            # A repository version that reuses another's weights (models/registry.yaml): the
            # model code's loader follows the reference (io.model_registry.weights_path).
            from urbanfabric.errors import NotFound
            from urbanfabric.io.model_registry import weights_path

            try:
                weights_path(self.version_dir, "model.pt")
                missing = []
            except NotFound:
                pass
        if missing:
            raise WeightsMissing(f"{self.name}: no {', '.join(missing)} in {self.version_dir}")
        self.config = json.loads((self.version_dir / "config.json").read_text(encoding="utf-8"))
        self._module = importlib.import_module(self.spec.module)
        load_model = self._module.load_model
        if "device" in inspect.signature(load_model).parameters:
            net = load_model(self.version_dir, device=self.device)
        else:
            net = load_model(self.version_dir).to(self.device)
        self.net = net.eval() if hasattr(net, "eval") else net
        self.check_config()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{self.name}")
        LOAD_SECONDS.labels(model_name=self.name).set(time.perf_counter() - start)
        LOADED.labels(model_name=self.name).set(1)
        self.ready = True
        return self.ready

    def stop(self) -> None:
        """Release the inference thread (called by KServe on unload/shutdown)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        self.ready = False
        LOADED.labels(model_name=self.name).set(0)

    def preprocess(self, payload: InferRequest, headers: dict[str, str] | None = None) -> _Batch:
        """Decode and check the ``input`` tensor (cheap, runs on the event loop)."""
        x = _as_float32_batch(payload)
        self.check_input(x)
        binary = bool(payload.parameters and payload.parameters.get("binary_data_output", False))
        return _Batch(x, payload.id, binary, payload.request_outputs)

    async def predict(self, payload: _Batch, headers: dict[str, str] | None = None) -> _Batch:
        """Run the network on the model's inference thread (torch releases the GIL)."""
        if self._executor is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        loop = asyncio.get_running_loop()
        outputs = await loop.run_in_executor(self._executor, self.forward_outputs, payload.array)
        payload.array = outputs.pop(OUTPUT_NAME)
        payload.extra = outputs
        return payload

    def postprocess(
        self, result: _Batch, headers: dict[str, str] | None = None
    ) -> InferResponse:
        """Wrap the probabilities as the V2 ``probability`` output tensor."""
        return _response(self.name, result)

    # ---- model-specific pieces -----------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for a checked batch (synchronous; what both modes run)."""
        assert self._module is not None
        prob = np.ascontiguousarray(self._module.predict_proba(self.net, x), dtype=np.float32)
        ITEMS.labels(model_name=self.name).inc(len(x))
        BATCH.labels(model_name=self.name).observe(len(x))
        return prob

    def forward_outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output tensor for a checked batch: ``probability``, plus ``ood_score`` where
        the model code scores inputs (``predict_proba_ood``) and the version has statistics."""
        assert self._module is not None
        scorer = getattr(self._module, "predict_proba_ood", None)
        if scorer is None or getattr(self.net, "domain", None) is None:
            return {OUTPUT_NAME: self.forward(x)}
        prob, score = scorer(self.net, x)
        ITEMS.labels(model_name=self.name).inc(len(x))
        BATCH.labels(model_name=self.name).observe(len(x))
        return {OUTPUT_NAME: np.ascontiguousarray(prob, dtype=np.float32),
                OOD_OUTPUT_NAME: np.ascontiguousarray(score, dtype=np.float32)}

    def check_config(self) -> None:
        """Hook: validate ``self.config`` after loading (raise ``ValueError``)."""

    def check_input(self, x: np.ndarray) -> None:
        """Model-specific input checks (raise KServe ``InvalidInput``); default: 3 bands."""
        if x.shape[1] != 3:
            raise InvalidInput(f"input {INPUT_NAME!r} must have shape [N,3,H,W], got {list(x.shape)}")

    def get_input_types(self) -> list[dict[str, Any]]:
        """V2 model metadata of the input tensor."""
        return [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 3, -1, -1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        """V2 model metadata of the output tensor."""
        return [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, -1]}]


class FootprintUNetModel(TorchV2Model):
    """Building/background U-Net: ``probability`` is ``[N, H, W]`` (any H, W: padded inside)."""

    def get_output_types(self) -> list[dict[str, Any]]:
        """V2 model metadata of the output tensor."""
        return [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, -1, -1]}]


class RoofMaterialModel(TorchV2Model):
    """Roof-material classifier: chips ``[N,3,S,S]`` (``[N,4,S,S]`` for ``context+mask``) → ``probability`` ``[N, C]``.

    ``S`` and the class order come from the version's ``config.json`` (``chip_size``,
    ``classes``).
    """

    def check_config(self) -> None:
        """The config must name the classes (clients need the column order)."""
        if not self.config.get("classes"):
            raise ValueError(f"{self.version_dir}/config.json has no 'classes'")

    @property
    def classes(self) -> list[str]:
        """Class names in output column order."""
        return list(self.config["classes"])

    def check_input(self, x: np.ndarray) -> None:
        """Chips must be square, of the trained size, with the trained channels.

        ``chip_mode`` ``context+mask`` chips carry the footprint as a fourth channel
        (``urbanfabric.materials.chips.ChipMode``; not imported: the model server image ships
        without the pipeline library).
        """
        size = self.config.get("chip_size")
        channels = self._channels()
        if x.shape[1] != channels or x.shape[2] != x.shape[3] or (size is not None and x.shape[2] != int(size)):
            raise InvalidInput(
                f"input {INPUT_NAME!r} must be chips [N,{channels},{size},{size}], got {list(x.shape)}"
            )

    def get_input_types(self) -> list[dict[str, Any]]:
        """V2 model metadata of the input tensor (channels and chip size from the config)."""
        size = int(self.config.get("chip_size") or -1)
        return [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, self._channels(), size, size]}]

    def _channels(self) -> int:
        return 4 if self.config.get("chip_mode") == "context+mask" else 3

    def get_output_types(self) -> list[dict[str, Any]]:
        """V2 model metadata of the output tensors (``ood_score`` when the version has statistics)."""
        n = len(self.config.get("classes", [])) or -1
        out = [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, n]}]
        if (self.config.get("ood") or {}).get("file"):
            out.append({"name": OOD_OUTPUT_NAME, "datatype": "FP32", "shape": [-1]})
        return out


#: KServe model class per known model kind; anything else is served generically.
MODEL_CLASSES: dict[str, type[TorchV2Model]] = {
    "footprint-unet": FootprintUNetModel,
    "footprint-deeplab": FootprintUNetModel,
    "roof-material": RoofMaterialModel,
    "roof-shape": RoofMaterialModel,  # same chip contract: [N,3,S,S] -> [N, C]
    "facade-material": RoofMaterialModel,  # [N, C] calibrated per-label sigmoids
}


def _response(name: str, batch: _Batch) -> InferResponse:
    prob = batch.array
    outputs = [InferOutput(name=OUTPUT_NAME, shape=list(prob.shape), datatype="FP32", data=prob)]
    for key, value in batch.extra.items():
        outputs.append(InferOutput(name=key, shape=list(value.shape), datatype="FP32", data=value))
    return InferResponse(
        response_id=batch.request_id or "",
        model_name=name,
        infer_outputs=outputs,
        use_binary_outputs=batch.binary_output,
        requested_outputs=batch.requested_outputs,
    )


def build_model(
    spec: ModelSpec,
    model_dir: Path | str | None = None,
    device: str = "cpu",
    fetch: Callable[[ModelSpec, Path], None] | None = None,
) -> TorchV2Model:
    """The (unloaded) KServe model object for ``spec``."""
    cls = MODEL_CLASSES.get(spec.model, TorchV2Model)
    return cls(spec, model_dir=model_dir, device=device, fetch=fetch)


def load_models(
    specs: list[ModelSpec],
    model_dir: Path | str | None = None,
    device: str = "cpu",
    fetch: Callable[[ModelSpec, Path], None] | None = None,
) -> tuple[list[TorchV2Model], dict[str, str]]:
    """Build and load every spec; a model that fails to load is skipped, not fatal.

    Returns:
        ``(loaded models, {v2 name: why it was skipped})``.
    """
    loaded: list[TorchV2Model] = []
    skipped: dict[str, str] = {}
    for spec in specs:
        model = build_model(spec, model_dir=model_dir, device=device, fetch=fetch)
        try:
            model.load()
        except WeightsMissing as exc:
            skipped[spec.name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad model must not stop the others
            log.exception("loading %s failed", spec.name)
            skipped[spec.name] = f"{type(exc).__name__}: {exc}"
        else:
            loaded.append(model)
            log.info("loaded model %s from %s", spec.name, model.version_dir)
            continue
        LOADED.labels(model_name=spec.name).set(0)
        log.error("model %s is NOT registered: %s", spec.name, skipped[spec.name])
    return loaded, skipped


def spec_for_v2_name(name: str, modules: dict[str, str] | None = None) -> ModelSpec:
    """The spec of a served name (``roof-material-v4-ft1`` → ``roof-material:v4-ft1``): the
    longest model kind the name starts with, the rest the version.

    Args:
        modules: kinds besides :data:`MODEL_MODULES` (``--models NAME:VERSION=module``).

    Raises:
        ValueError: no known kind, or no ``v<digit>…`` version after it.
    """
    kinds = {**MODEL_MODULES, **(modules or {})}
    for kind in sorted(kinds, key=len, reverse=True):
        version = name[len(kind) + 1:] if name.startswith(f"{kind}-") else ""
        if version[:1] == "v" and version[1:2].isdigit():
            return ModelSpec(kind, version, kinds[kind])
    raise ValueError(f"{name!r} is not <model>-<version> of a known model ({', '.join(sorted(kinds))})")


class VersionRepository(ModelRepository):
    """KServe's model repository with its load endpoint wired to the model store.

    ``POST /v2/repository/models/<model>-<version>/load`` (the V2 repository extension, with a
    bearer token like every call) fetches and loads that version beside the ones already served
    — a version the learning loop registered is served without a restart or a new image. A
    version that does not load is not registered (KServe answers 503 with the reason) and the
    models already served are untouched.
    """

    def __init__(self, model_dir: Path | str | None = None, device: str = "cpu",
                 fetch: Callable[[ModelSpec, Path], None] | None = None,
                 modules: dict[str, str] | None = None) -> None:
        super().__init__(models_dir=str(model_dir or DEFAULT_MODEL_DIR))
        self.model_dir, self.device, self.fetch, self.modules = model_dir, device, fetch, dict(modules or {})

    def load(self, name: str) -> bool:
        return self.load_model(name)

    def load_model(self, name: str) -> bool:
        if name in self.models and self.models[name].ready:
            return True
        model = build_model(spec_for_v2_name(name, self.modules), model_dir=self.model_dir, device=self.device, fetch=self.fetch)
        model.load()
        self.update(model)
        log.info("loaded model %s on request from %s", name, model.version_dir)
        return model.ready


def object_store_fetcher(uri: str, cache_dir: Path | str) -> Callable[[ModelSpec, Path], None]:
    """A ``fetch`` that downloads version files from the project object store.

    Args:
        uri: ``s3://<bucket>/<prefix>`` (e.g. ``s3://urbanfabric/models``); objects are read
            at ``<prefix>/<model_dir>/<version>/{config.json,model.pt}`` through
            ``urbanfabric.io.object_store.ObjectStore`` (endpoint and credentials from
            ``urbanfabric.settings.Settings.load()``).
        cache_dir: local model repository the files are written to (pass it as ``model_dir``).

    Raises:
        ValueError: ``uri`` is not an ``s3://bucket[/prefix]`` URI.
    """
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ValueError(f"storage URI must be s3://bucket[/prefix], got {uri!r}")
    prefix = prefix.strip("/")
    cache = Path(cache_dir)

    def fetch(spec: ModelSpec, version_dir: Path) -> None:
        # Imported lazily: the object-store client is only needed when serving from S3.
        from urbanfabric.settings import Settings
        from urbanfabric.errors import NotFound
        from urbanfabric.io.object_store import ObjectStore

        store = ObjectStore(Settings.load())
        target = cache / spec.model_dir / spec.version
        for name in VERSION_FILES:
            key = "/".join(p for p in (prefix, spec.model_dir, spec.version, name) if p)
            try:
                store.get_file(f"s3://{bucket}/{key}", target / name)  # full URIs are accepted
            except NotFound as exc:
                raise WeightsMissing(f"{spec.name}: no s3://{bucket}/{key}") from exc
        # Files the config names besides the weights (out-of-domain statistics).
        for name in config_files(target / "config.json"):
            key = "/".join(p for p in (prefix, spec.model_dir, spec.version, name) if p)
            try:
                store.get_file(f"s3://{bucket}/{key}", target / name)
            except NotFound as exc:
                raise WeightsMissing(f"{spec.name}: its config names {name}, but there is no s3://{bucket}/{key}") from exc

    return fetch


def config_files(config_path: Path) -> list[str]:
    """Files a version's ``config.json`` names besides ``config.json`` and ``model.pt``: the
    out-of-domain statistics (``ood.file``). Plain names only (no folders)."""
    try:
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    name = str((config.get("ood") or {}).get("file") or "")
    return [name] if name and "/" not in name and "\\" not in name and name not in VERSION_FILES else []


def infer_inline(model: TorchV2Model, request: InferRequest) -> InferResponse:
    """Run a V2 request through ``model``'s stages in the calling thread (embedded mode).

    Same stages and the same Prometheus stage histograms as the server's
    ``kserve.Model.__call__``; only the network forward runs synchronously instead of on the
    model's inference thread, so it works from any (sync) caller.
    """
    labels = get_labels(model.name)
    with PRE_HIST_TIME.labels(**labels).time():
        batch = model.preprocess(request)
    with PREDICT_HIST_TIME.labels(**labels).time():
        outputs = model.forward_outputs(batch.array)
        batch.array = outputs.pop(OUTPUT_NAME)
        batch.extra = outputs
    with POST_HIST_TIME.labels(**labels).time():
        return model.postprocess(batch)


def torch_threads_from_env(default: int = 2) -> int:
    """``URBANFABRIC_TORCH_THREADS`` (default 2): intra-op threads for inference."""
    raw = os.environ.get("URBANFABRIC_TORCH_THREADS", "")
    try:
        n = int(raw) if raw else default
    except ValueError:
        raise ValueError(f"URBANFABRIC_TORCH_THREADS must be an integer, got {raw!r}") from None
    return max(1, n)
