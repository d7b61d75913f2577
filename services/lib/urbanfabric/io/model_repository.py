"""Where the repository's own files are (shipped model weights, sample areas)."""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from urbanfabric.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from urbanfabric.io.object_store import ObjectStore


def _find_root() -> Path:
    env = os.environ.get("URBANFABRIC_HOME")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "models").is_dir():
            return parent
    return Path.cwd()


REPO_ROOT = _find_root()
MODELS_DIR = REPO_ROOT / "models"
#: Real sample data lives beside the repository, never inside it.
SHARED_DATA = Path(os.environ.get("URBANFABRIC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


#: Python module (with ``load_model`` / ``predict_proba``) of each known model kind. The model
#: code lives in the repository's ``models/`` package; the core names it here and imports it
#: only through :func:`model_module`, so no core module depends on ``models`` at import time.
MODEL_MODULES: dict[str, str] = {
    "footprint-unet": "models.footprint_unet.net",
    "footprint-deeplab": "models.footprint_unet.net",  # same module; config.json picks DeepLabV3+
    # Every classifier loads through models.classifiers and serves calibrated probabilities.
    "roof-material": "models.classifiers.serving",
    "roof-shape": "models.classifiers.serving",
    "facade-material": "models.classifiers.serving",
}


#: Python module of each model kind's fine-tune (``load`` / ``fine_tune`` / ``predict`` /
#: ``classes`` / ``save``; :class:`urbanfabric.outputs.learning.FineTuneCode`), loaded by name as
#: :data:`MODEL_MODULES` is (issue 21, item 3).
FINE_TUNE_MODULES: dict[str, str] = {
    "roof-material": "models.classifiers.fine_tune",
    "roof-shape": "models.classifiers.fine_tune",
    # Multi-label, street-level: the same head-only recipe with per-label BCE and no rotations.
    "facade-material": "models.classifiers.fine_tune",
    "height-xgb": "models.height_xgb.fine_tune",
    "footprint-unet": "models.footprint_unet.fine_tune",
    "building-age": "models.building_age.fine_tune",
}


def _kind_module(model: str, table: dict[str, str], what: str) -> ModuleType:
    """The module ``table`` names for a model kind (``_`` accepted for ``-``), imported.

    Raises:
        NotFound: the kind is not in ``table`` (field ``model_version``), or its module cannot be
            imported (the ``models`` package is not on the path).
    """
    name = table.get(model.replace("_", "-"))
    if name is None:
        raise NotFound(f"model_version: no {what} for {model!r}; known {sorted(table)}")
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise NotFound(f"model_version: {what} of {model!r} ({name}) cannot be imported: {exc}") from exc


def fine_tune_module(model: str) -> ModuleType:
    """The module that fine-tunes a model kind from corrected labels (:data:`FINE_TUNE_MODULES`)."""
    return _kind_module(model, FINE_TUNE_MODULES, "fine-tune code")


def model_module(model: str) -> ModuleType:
    """The Python module that loads and runs a model kind (``load_model`` / ``predict_proba``;
    :data:`MODEL_MODULES`)."""
    return _kind_module(model, MODEL_MODULES, "model code")


def split_model_ref(ref: str) -> tuple[str, str]:
    """``"footprint-unet:v7"`` → ``("footprint-unet", "v7")`` (the job spec checks the form)."""
    name, _, version = ref.partition(":")
    return name, version


def v2_model_name(model: str, version: str) -> str:
    """The served name of a version: ``("footprint-unet", "v1")`` → ``"footprint-unet-v1"``
    (``_`` accepted for ``-``), as the model server registers it and the clients and the
    chart's gateway address it.

    Raises:
        InvalidInput: an empty model or version (field ``model_version``).
    """
    if not model or not version:
        raise InvalidInput("model_version", "model and version must be non-empty")
    return f"{model.replace('_', '-')}-{version}"


def model_dir(name: str, version: str) -> Path:
    """Folder of a shipped model version: ``models/<name with _>/<version>/``."""
    return MODELS_DIR / name.replace("-", "_") / version


def model_store() -> str:
    """``s3://bucket/prefix`` of the served model versions when this process was given one
    (``URBANFABRIC_MODEL_STORE``, set for every component by the local stack), else ``""``."""
    return os.environ.get("URBANFABRIC_MODEL_STORE", "")


def _store_uri(name: str, version: str, filename: str = "") -> str:
    """``<model store>/<model_dir>/<version>/<filename>``."""
    return f"{model_store().rstrip('/')}/{name.replace('-', '_')}/{version}/{filename}"


def _store() -> ObjectStore:
    # Imported here: reading the repository tree needs no object-store client.
    from urbanfabric.io.object_store import ObjectStore
    from urbanfabric.settings import Settings

    return ObjectStore(Settings.load())


def model_exists(name: str, version: str) -> bool:
    """Whether the version can be used: in the model store when there is one, else in the tree."""
    if model_store():
        store = _store()
        return any(store.exists(_store_uri(name, version, f)) for f in ("config.json", "meta.json"))
    return model_dir(name, version).is_dir()


@lru_cache(maxsize=32)
def version_folder(name: str, version: str) -> Path:
    """A local folder with the version's files: the tree's, or — when this process has a model
    store — a copy of the store's, fetched once per process (the folder does not exist when the
    store has no such version)."""
    if not model_store():
        return model_dir(name, version)
    store = _store()
    prefix = _store_uri(name, version)
    bucket = prefix.removeprefix("s3://").partition("/")[0]
    target = Path(tempfile.gettempdir()) / f"urbanfabric-models-{os.getpid()}" / name.replace("-", "_") / version
    for key in store.list(prefix):
        store.get_file(f"s3://{bucket}/{key}", target / key.rsplit("/", 1)[1])
    return target


@lru_cache(maxsize=16)
def model_config(name: str, version: str) -> dict[str, Any]:
    """The ``config.json`` of a model version (classes, chip size, threshold…), from the model
    store when this process has one (a new version needs no new image), else from the tree.

    Raises:
        NotFound: the version has no config (field ``model_version``).
    """
    if model_store():
        uri = _store_uri(name, version, "config.json")
        try:
            return json.loads(_store().get_bytes(uri))
        except NotFound:
            raise NotFound(f"model_version: no config for {name}:{version} in {model_store()}") from None
    path = model_dir(name, version) / "config.json"
    if not path.exists():
        raise NotFound(f"model_version: no config for {name}:{version}")
    return json.loads(path.read_text())


def model_gsd(name: str, version: str) -> float | None:
    """The ground sampling distance (m) a model version wants its imagery at: ``input.gsd_m``
    of its config (issue 20, item 0: the GSD its training imagery had, recorded per data set
    in ``input.training_gsd_m``), or ``input.gsd_m_approx`` of configs written before that;
    ``None`` when the config says neither."""
    spec = model_config(name, version).get("input", {})
    value = spec.get("gsd_m") or spec.get("gsd_m_approx")
    return float(value) if value else None


def model_gsd_range(name: str, version: str) -> tuple[float, float] | None:
    """``input.gsd_range_m`` of a model version's config: the finest and coarsest GSD it was
    trained at (imagery in between is read at its own GSD), or ``None``."""
    value = model_config(name, version).get("input", {}).get("gsd_range_m")
    return (float(value[0]), float(value[1])) if value else None
