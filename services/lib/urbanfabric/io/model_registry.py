"""The model registry: every model version the project ships, its weights' digest, lineage and status.

``models/registry.yaml`` lists, per version: the folder, the SHA-256 of its weight files
(:func:`weights_digest`), the version it was trained or derived from (``parent``), the
configuration it changes against a parent whose weights it shares (``config_overrides``,
``weights_from``), its card and metrics, and whether it is served. It is the one list the model
server defaults, the chart and the job spec's defaults are checked against
(``tests/unit/io/test_model_registry.py``), and the list that says where the weights of
versions no longer in the tree went.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from urbanfabric.errors import InvalidInput, NotFound, from_validation
from urbanfabric.io.model_repository import MODELS_DIR
from urbanfabric.io.object_store import ObjectStore

#: The registry file in the repository.
REGISTRY_PATH = MODELS_DIR / "registry.yaml"
#: Files that hold a version's learned parameters (torch state, XGBoost members, class lists).
WEIGHT_PATTERNS = ("model.pt", "member_*.json", "classifier.json", "year_*.json", "classes.json")


class ModelVersion(BaseModel):
    """One registered version (``name:version``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    version: str = Field(pattern=r"^v[0-9][A-Za-z0-9._-]*$")
    path: str = Field(description="folder under models/ holding config and weights")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                               description="digest of the weight files (None: the weights are not in the tree)")
    parent: str | None = Field(None, description="version this one was trained from or derived from")
    weights_from: str | None = Field(None, description="version whose weights this one uses unchanged")
    config_overrides: list[str] = Field(default_factory=list,
                                        description="config keys this version changes against weights_from")
    card: str | None = None
    metrics: str | None = None
    served: bool = False
    note: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @model_validator(mode="after")
    def _weights(self) -> ModelVersion:
        if self.sha256 is None and not self.note:
            raise ValueError(f"{self.name}:{self.version}: no sha256, so a note must say where the weights are")
        return self


class Registry(BaseModel):
    """All registered versions, validated together (unique, parents and weights_from known)."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelVersion]

    @model_validator(mode="after")
    def _consistent(self) -> Registry:
        refs = [m.ref for m in self.models]
        dupes = sorted({r for r in refs if refs.count(r) > 1})
        if dupes:
            raise ValueError(f"registered twice: {dupes}")
        known = set(refs)
        for m in self.models:
            for field in ("parent", "weights_from"):
                other = getattr(m, field)
                if other and other not in known:
                    raise ValueError(f"{m.ref}: {field} {other!r} is not registered")
                if other == m.ref:
                    raise ValueError(f"{m.ref}: {field} names the version itself")
        return self

    def get(self, ref: str) -> ModelVersion:
        """The entry of ``name:version``.

        Raises:
            NotFound: not registered (field ``model_version``).
        """
        for m in self.models:
            if m.ref == ref:
                return m
        raise NotFound(f"model_version: {ref} is not in the model registry")

    @property
    def served(self) -> list[ModelVersion]:
        return [m for m in self.models if m.served]


def load_registry(path: Path | str = REGISTRY_PATH) -> Registry:
    """Read and validate the registry.

    Raises:
        NotFound: no registry file.
        InvalidInput: the file is not valid YAML or an entry is wrong (field ``registry``, the
            message naming the entry and the problem).
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"registry: no model registry at {path}")
    try:
        return Registry.model_validate(yaml.safe_load(path.read_text()))
    except yaml.YAMLError as exc:
        raise InvalidInput("registry", f"{path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        raise from_validation(exc, prefix=f"registry ({path})") from None


def weights_path(version_dir: Path | str, filename: str = "model.pt") -> Path:
    """Where a version folder's weight file really is, for loaders that only get a folder.

    The folder's own file when it has one (a training output, a folder fetched from the model
    store, a test's tiny model); otherwise, for a folder of the repository's model tree whose
    registry entry has ``weights_from``, that version's file.

    Raises:
        NotFound: neither (field ``model_version``, naming the folder).
    """
    folder = Path(version_dir)
    own = folder / filename
    if own.is_file():
        return own
    try:
        registry = load_registry()
        relative = folder.resolve().relative_to(MODELS_DIR.parent.resolve()).as_posix()
    except (NotFound, ValueError):
        raise NotFound(f"model_version: no {own}") from None
    entry = next((m for m in registry.models if m.path == relative), None)
    if entry is None or not entry.weights_from:
        raise NotFound(f"model_version: no {own}, and the model registry names no weights it reuses")
    source = MODELS_DIR.parent / registry.get(entry.weights_from).path / filename
    if not source.is_file():
        raise NotFound(f"model_version: {entry.ref} reuses {entry.weights_from}'s weights, but {source} is missing")
    return source


def weight_files(folder: Path | str) -> list[Path]:
    """The weight files of a version folder, in name order."""
    folder = Path(folder)
    return sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern) if p.is_file()})


def weights_digest(folder: Path | str) -> str | None:
    """SHA-256 over the version's weight files (names and bytes, in name order); None without any."""
    files = weight_files(folder)
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


#: Files of a version folder that stay in the repository (documentation, not served).
_DOC_FILES = ("MODEL_CARD.md", "metrics.json", "validation.json")
#: Marker written last in a published version folder: the weights' digest it holds.
DIGEST_MARKER = "weights.sha256"


def publish_served(store: ObjectStore, registry: Registry | None = None, prefix: str = "models",
                   root: Path | str = MODELS_DIR.parent) -> list[str]:
    """Upload every served version to ``<prefix>/<model_dir>/<version>/`` in the object store.

    The version's own files (config, weights; not its card or metrics) go up; a version with
    ``weights_from`` gets that version's weight files under its own folder, so a reader never
    follows references. A folder whose digest marker already matches is skipped, so a second
    ``stack up`` uploads nothing. Returns the ``name:version`` of each version uploaded.
    """
    registry = registry or load_registry()
    by_ref = {m.ref: m for m in registry.models}
    uploaded = []
    for m in registry.served:
        if _published(store, m, prefix):
            continue
        folder = Path(root) / m.path
        base = _store_folder(m, prefix)
        files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name not in _DOC_FILES]
        if m.weights_from:
            own = set(weight_files(folder))
            files = [p for p in files if p not in own] + weight_files(Path(root) / by_ref[m.weights_from].path)
        for p in files:
            store.put_file(f"{base}/{p.name}", p)
        store.put_bytes(f"{base}/{DIGEST_MARKER}", (m.sha256 or "").encode())
        uploaded.append(m.ref)
    return uploaded


def unpublished(store: ObjectStore, registry: Registry | None = None, prefix: str = "models") -> list[str]:
    """The served versions the object store lacks or holds with other weights than the registry's.

    Reads only each version's digest marker (written last by :func:`publish_served`), so a
    folder whose upload was cut short counts as missing. Returns ``name:version`` refs.
    """
    registry = registry or load_registry()
    return [m.ref for m in registry.served if not _published(store, m, prefix)]


def _store_folder(m: ModelVersion, prefix: str) -> str:
    """``<prefix>/<model_dir>/<version>``: the layout the model server and the chart read."""
    return f"{prefix}/{Path(m.path).parent.name}/{m.version}"


def _published(store: ObjectStore, m: ModelVersion, prefix: str) -> bool:
    marker = f"{_store_folder(m, prefix)}/{DIGEST_MARKER}"
    return store.exists(marker) and store.get_bytes(marker).decode().strip() == (m.sha256 or "")


def stale_local_weights(registry: Registry | None = None, root: Path | str = MODELS_DIR.parent) -> list[str]:
    """The served versions whose weights in the local ``models/`` tree are missing or differ
    from the registry's digest, as ``name:version``.

    :func:`publish_served` writes the registry's digest as each folder's marker, so it must only
    run where this is empty: a tree without weights (a service image) would otherwise publish
    folders that look complete.
    """
    registry = registry or load_registry()
    stale = []
    for m in registry.served:
        source = registry.get(m.weights_from) if m.weights_from else m
        if weights_digest(Path(root) / source.path) != m.sha256:
            stale.append(m.ref)
    return stale


#: A version made by the learning loop keeps its registry entry beside its files in the store,
#: written last: the store, not the repository's registry.yaml, is where a running system's
#: own versions live (issue 21, item 3); ``urbanfabric models list`` shows both.
LEARNED_ENTRY = "registry.json"


def learned_versions(store: ObjectStore, prefix: str = "models") -> list[ModelVersion]:
    """The versions the learning loop registered in the store (each folder's :data:`LEARNED_ENTRY`)."""
    import json

    keys = sorted(k for k in store.list(f"{prefix.rstrip('/')}/") if k.endswith(f"/{LEARNED_ENTRY}"))
    bucket = prefix.removeprefix("s3://").partition("/")[0] if prefix.startswith("s3://") else ""
    return [ModelVersion.model_validate(json.loads(store.get_bytes(f"s3://{bucket}/{k}" if bucket else k)))
            for k in keys]


def fine_tuned_version(parent: str, taken: list[str]) -> str:
    """The name of the next version fine-tuned from ``parent`` (``roof-material:v4`` →
    ``v4-ft1``, then ``v4-ft2`` …): the parent stays readable in the name, and a name the
    repository ships (``v5``) is never taken by a running system's own version."""
    _, _, version = parent.partition(":")
    n = 1
    while f"{version}-ft{n}" in taken:
        n += 1
    return f"{version}-ft{n}"


def register_learned(store: ObjectStore, entry: ModelVersion, folder: Path, prefix: str = "models") -> list[str]:
    """Upload a learned version's folder (config, weights, card, metrics) to
    ``<prefix>/<model_dir>/<version>/``, then its digest marker, then its registry entry — the
    entry last, so a version whose upload was cut short is not registered. Returns the keys.

    Raises:
        InvalidInput: the version is already registered there (field ``model_version``).
    """
    base = f"{prefix.rstrip('/')}/{entry.name.replace('-', '_')}/{entry.version}"
    if store.exists(f"{base}/{LEARNED_ENTRY}"):
        raise InvalidInput("model_version", f"{entry.ref} is already registered in {prefix}")
    keys = [store.put_file(f"{base}/{p.name}", p) for p in sorted(Path(folder).iterdir()) if p.is_file()]
    keys.append(store.put_bytes(f"{base}/{DIGEST_MARKER}", (entry.sha256 or "").encode()))
    keys.append(store.put_bytes(f"{base}/{LEARNED_ENTRY}", entry.model_dump_json(indent=2).encode()))
    return keys


def newest_descendant(versions: list[ModelVersion], ref: str) -> ModelVersion | None:
    """Of ``versions`` (the learned ones), the newest fine-tuned from ``ref`` directly or through
    other learned versions: the deepest in the lineage, then the highest ``-ft<n>``; None without any."""
    by_ref = {m.ref: m for m in versions}

    def depth(m: ModelVersion) -> int:
        d, seen = 0, set()
        while m.parent != ref:
            if m.parent not in by_ref or m.ref in seen:
                return -1
            seen.add(m.ref)
            m, d = by_ref[m.parent], d + 1
        return d

    def ft(m: ModelVersion) -> int:
        tail = m.version.rpartition("-ft")[2]
        return int(tail) if tail.isdigit() else 0

    line = [m for m in versions if depth(m) >= 0]
    return max(line, key=lambda m: (depth(m), ft(m))) if line else None
