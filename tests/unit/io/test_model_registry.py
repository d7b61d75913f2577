"""The model registry against the tree, the model server's defaults, the chart and the job spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.footprints.options import SegmentationOptions
from urbanfabric.io.model_registry import load_registry, weights_digest
from urbanfabric.job_spec import ModelVersions

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def test_every_version_folder_is_registered_with_its_digest(registry):
    folders = {p.relative_to(REPO).as_posix() for p in (REPO / "models").glob("*/v*") if p.is_dir()}
    assert folders == {m.path for m in registry.models}
    for m in registry.models:
        # A version that reuses another's weights holds none itself: its digest is the source's.
        source = registry.get(m.weights_from).path if m.weights_from else m.path
        if m.weights_from:
            assert weights_digest(REPO / m.path) is None, f"{m.ref}: delete the copy, weights_from says whose they are"
            assert m.config_overrides, f"{m.ref}: a version reusing weights must say what it changes"
        assert m.sha256 == weights_digest(REPO / source), f"{m.ref}: put sha256 {weights_digest(REPO / source)}"
        for doc in (m.card, m.metrics):
            assert doc is None or (REPO / doc).is_file(), f"{m.ref}: {doc} is missing"


def test_no_weights_are_committed_twice(registry):
    owners: dict[str, str] = {}
    for m in registry.models:
        if m.weights_from or m.sha256 is None:
            continue
        assert m.sha256 not in owners, f"{m.ref} is a byte copy of {owners[m.sha256]}: use weights_from"
        owners[m.sha256] = m.ref


def test_a_reused_version_loads_its_sources_weights(registry):
    from urbanfabric.io.model_registry import weights_path

    v3 = registry.get("roof-shape:v3")
    assert weights_path(REPO / v3.path) == REPO / registry.get(v3.weights_from).path / "model.pt"
    with pytest.raises(NotFound):
        weights_path(REPO / registry.get("roof-shape:v2").path, "absent.pt")


def test_what_runs_by_default_is_served(registry):
    served = {m.ref for m in registry.served}
    from services.modelserver.__main__ import DEFAULT_MODELS

    assert set(DEFAULT_MODELS.split(",")) <= served
    spec_defaults = {SegmentationOptions().model, *ModelVersions().model_dump().values()}
    assert spec_defaults <= served
    values = yaml.safe_load((REPO / "charts/urbanfabric/values.yaml").read_text())
    enabled = {f"{s['model']}:{s['version']}" for s in values["inferenceServices"].values() if s["enabled"]}
    assert enabled <= served


def test_bad_registries_are_refused_with_the_entry_named(tmp_path):
    entry = {"name": "m", "version": "v1", "path": "models/m/v1", "sha256": "0" * 64}
    cases = [
        ({"models": [entry, entry]}, "registered twice"),
        ({"models": [{**entry, "parent": "m:v9"}]}, "parent 'm:v9' is not registered"),
        ({"models": [{**entry, "sha256": None}]}, "a note must say where the weights are"),
        ({"models": [{**entry, "colour": "red"}]}, "colour"),
    ]
    for doc, needle in cases:
        path = tmp_path / "registry.yaml"
        path.write_text(yaml.safe_dump(doc))
        with pytest.raises(InvalidInput, match=needle):
            load_registry(path)
    with pytest.raises(NotFound):
        load_registry(tmp_path / "missing.yaml")
    assert load_registry().get("roof-shape:v3").weights_from == "roof-shape:v2"


def test_publish_served_uploads_each_served_version_once_with_copies_materialised(tmp_path):
    from tests.fakes import MemoryStore
    from urbanfabric.io.model_registry import DIGEST_MARKER, Registry, publish_served

    for version, blob in (("v1", b"weights-1"), ("v2", None)):
        folder = tmp_path / "models" / "m" / version
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(f'{{"version": "{version}"}}')
        (folder / "MODEL_CARD.md").write_text("card")
        if blob:
            (folder / "model.pt").write_bytes(blob)
    digest = weights_digest(tmp_path / "models/m/v1")
    registry = Registry.model_validate({"models": [
        {"name": "m", "version": "v1", "path": "models/m/v1", "sha256": digest, "served": True},
        {"name": "m", "version": "v2", "path": "models/m/v2", "sha256": digest, "served": True,
         "weights_from": "m:v1", "config_overrides": ["version"]},
        {"name": "m", "version": "v3", "path": "models/m/v3", "sha256": None, "note": "gone"},
    ]})
    store = MemoryStore()
    assert publish_served(store, registry, root=tmp_path) == ["m:v1", "m:v2"]
    assert store.get_bytes("models/m/v2/model.pt") == b"weights-1"  # v1's weights under v2
    assert store.get_bytes("models/m/v2/config.json") == b'{"version": "v2"}'
    assert not store.exists("models/m/v1/MODEL_CARD.md") and not store.exists("models/m/v3/config.json")
    assert store.get_bytes(f"models/m/v1/{DIGEST_MARKER}").decode() == digest
    assert publish_served(store, registry, root=tmp_path) == []  # already there: nothing again


def test_with_a_model_store_configs_and_folders_come_from_it(monkeypatch, tmp_path):
    import json

    import urbanfabric.io.object_store as object_store
    from tests.fakes import MemoryStore
    from urbanfabric.io import model_repository as repo
    from urbanfabric.io.model_registry import publish_served

    store = MemoryStore(bucket="b")
    publish_served(store)
    monkeypatch.setenv("URBANFABRIC_MODEL_STORE", "s3://b/models")
    monkeypatch.setattr(object_store, "ObjectStore", lambda settings: store)
    monkeypatch.setattr(repo.tempfile, "gettempdir", lambda: str(tmp_path))
    for cached in (repo.model_config, repo.version_folder):
        cached.cache_clear()
    try:
        tree = json.loads((REPO / "models/roof_shape/v3/config.json").read_text())
        assert repo.model_config("roof-shape", "v3") == tree
        folder = repo.version_folder("height-xgb", "v1")
        assert folder.is_relative_to(tmp_path) and (folder / "meta.json").is_file()
        assert repo.model_exists("roof-shape", "v3") and not repo.model_exists("footprint-unet", "v8")
        with pytest.raises(NotFound, match="footprint-unet:v8"):
            repo.model_config("footprint-unet", "v8")  # in the tree, but not served
    finally:
        for cached in (repo.model_config, repo.version_folder):
            cached.cache_clear()


def test_unpublished_names_missing_and_stale_versions_and_the_cli_exits_1(tmp_path, monkeypatch, capsys):
    from tests.fakes import MemoryStore
    from urbanfabric.cli import main as cli
    from urbanfabric.io import object_store
    from urbanfabric.io.model_registry import DIGEST_MARKER, load_registry, publish_served, unpublished

    registry = load_registry()
    served = [m.ref for m in registry.served]
    store = MemoryStore(bucket="b")
    assert unpublished(store, registry, prefix="s3://b/models") == served
    publish_served(store, registry, prefix="s3://b/models")
    assert unpublished(store, registry, prefix="s3://b/models") == []
    assert unpublished(store, registry, prefix="s3://b/elsewhere") == served
    stale = registry.get("roof-shape:v3")
    store.put_bytes(f"models/roof_shape/v3/{DIGEST_MARKER}", b"0" * 64)  # other weights than the registry's
    assert unpublished(store, registry, prefix="models") == [stale.ref]

    monkeypatch.setattr(object_store, "ObjectStore", lambda settings: store)
    monkeypatch.setenv("URBANFABRIC_MODEL_STORE", "s3://b/models")
    assert cli.main(["models", "check"]) == 1
    assert "roof-shape:v3" in capsys.readouterr().err
    assert cli.main(["models", "publish"]) == 0
    assert "roof-shape:v3" in capsys.readouterr().out
    assert cli.main(["models", "check"]) == 0


def test_stale_local_weights_names_versions_without_their_weights(tmp_path) -> None:
    import shutil

    from urbanfabric.io.model_registry import REGISTRY_PATH, load_registry, stale_local_weights

    registry = load_registry()
    root = REGISTRY_PATH.parent.parent
    assert stale_local_weights(registry, root) == []
    # The same tree without *.pt files (what .dockerignore gives a service image).
    for m in registry.served:
        for ref in (m.ref, m.weights_from):
            if ref:
                src = root / registry.get(ref).path
                shutil.copytree(src, tmp_path / registry.get(ref).path, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("*.pt"))
    stale = stale_local_weights(registry, tmp_path)
    with_pt = [m.ref for m in registry.served
               if list((root / registry.get(m.weights_from or m.ref).path).glob("*.pt"))]
    assert with_pt and stale == with_pt
