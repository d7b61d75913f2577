"""Sample imagery sources: registered once, named errors for unknown names and missing folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.fakes import MemoryStore
from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.imagery.samples import SAMPLE_SOURCES, catalog_key, register_sample

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def test_unknown_sample_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        register_sample(MemoryStore(), "atlantis", tmp_path)
    assert info.value.field == "sample" and "xiamen-z18" in str(info.value)


def test_missing_folder_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    store = MemoryStore()
    with pytest.raises(NotFound, match="xiamen-z18"):
        register_sample(store, "xiamen-z18", tmp_path)
    assert store.list("") == []


def test_registers_once(tmp_path: Path) -> None:
    folder, zoom = SAMPLE_SOURCES["xiamen-z18"]
    source = SHARED / folder / str(zoom)
    if not source.is_dir():
        pytest.skip(f"{source} is absent (sample data: ../shared/data)")
    # Four neighbouring tiles of the sample keep the COGs small.
    x = sorted(source.iterdir())[0]
    for y in sorted(x.iterdir())[:4]:
        target = tmp_path / folder / str(zoom) / x.name / y.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(y, target)
    store = MemoryStore()
    uri = register_sample(store, "xiamen-z18", tmp_path)
    assert uri == store.s3_uri(catalog_key("xiamen-z18")) and store.exists(catalog_key("xiamen-z18"))
    cogs = [k for k in store.list("sources/xiamen-z18/cogs/")]
    assert cogs
    assert register_sample(store, "xiamen-z18", tmp_path) is None  # already there: nothing redone
    assert [k for k in store.list("sources/xiamen-z18/cogs/")] == cogs
