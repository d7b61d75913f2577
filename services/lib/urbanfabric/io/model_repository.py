"""Where the repository's own files are (shipped model weights, sample areas)."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from urbanfabric.errors import NotFound


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


def model_dir(name: str, version: str) -> Path:
    """Folder of a shipped model version: ``models/<name with _>/<version>/``."""
    return MODELS_DIR / name.replace("-", "_") / version


@lru_cache(maxsize=16)
def model_config(name: str, version: str) -> dict[str, Any]:
    """The ``config.json`` of a shipped model version (classes, chip size, threshold…).

    Raises:
        NotFound: the version has no config (field ``model_version``).
    """
    path = model_dir(name, version) / "config.json"
    if not path.exists():
        raise NotFound(f"model_version: no config for {name}:{version}")
    return json.loads(path.read_text())
