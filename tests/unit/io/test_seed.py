"""``python -m urbanfabric.cli.seed`` (the chart's post-install seed Job) against an in-memory store."""

from __future__ import annotations

from pathlib import Path

import pytest

import urbanfabric.io.model_repository as model_repository
import urbanfabric.io.object_store as object_store
from tests.fakes import MemoryStore
from urbanfabric.cli import seed
from urbanfabric.io.model_registry import load_registry, unpublished


class BucketStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.buckets: list[str] = []

    def ensure_bucket(self, bucket: str | None = None) -> bool:
        self.buckets.append(bucket or "default")
        return True


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> BucketStore:
    one = BucketStore()
    monkeypatch.setattr(object_store, "ObjectStore", lambda settings=None: one)
    monkeypatch.setenv("URBANFABRIC_MODEL_STORE", "models")
    return one


def test_uploads_every_served_version_once(store: BucketStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert seed.main([]) == 0
    assert store.buckets and unpublished(store, prefix="models") == []
    assert seed.main([]) == 0  # idempotent: the second run uploads nothing
    assert "uploaded nothing" in capsys.readouterr().out


def test_a_tree_without_weights_skips_the_upload(store: BucketStore, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(model_repository, "MODELS_DIR", tmp_path)
    assert seed.main([]) == 0
    assert "model upload skipped" in capsys.readouterr().out
    assert len(unpublished(store, prefix="models")) == len(load_registry().served)  # nothing pretends


def test_unknown_sample_fails_before_writing(store: BucketStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert seed.main(["--samples", "xiamen-z18,atlantis"]) == 2
    err = capsys.readouterr().err
    assert "samples:" in err and "atlantis" in err and "Traceback" not in err
    assert store.list("") == [] and not store.buckets
