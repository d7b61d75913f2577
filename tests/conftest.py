"""Shared fixtures: real sample data (skipped with a reason when ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from urbanfabric.io.model_repository import SHARED_DATA


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"sample data not available: {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def xiamen_dir() -> Path:
    return _need(SHARED_DATA / "footprints" / "xiamen-z18")


@pytest.fixture(scope="session")
def helsinki_osm() -> Path:
    return _need(SHARED_DATA / "heights" / "osm-helsinki")
