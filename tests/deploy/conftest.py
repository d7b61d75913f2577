"""Fixtures of the deployment tests (chart, Dockerfiles, skaffold; see docs/deploy.md)."""

from __future__ import annotations

import importlib
from typing import Any

import deploy_support as ds
import pytest


def _require(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError:
        pytest.skip(f"{module} is not installed (pip install -r requirements-deploy.txt)")


@pytest.fixture(scope="session")
def helm() -> Any:
    """helm_python (helm-python-sdk: Helm v4 in a shared library, no helm binary)."""
    _require("helm_python")
    import helm_python

    return helm_python


@pytest.fixture(scope="session")
def rendered(helm: Any) -> dict[str, list[dict[str, Any]]]:
    """Rendered documents of each profile (values-<profile>.yaml on top of values.yaml)."""
    return {p: ds.documents(ds.render(profile=p)) for p in ds.PROFILES}


@pytest.fixture(scope="session")
def schemas_dir() -> Any:
    """../shared/schemas (KServe CRDs, skaffold schema); the tests that need it skip without."""
    if not ds.SCHEMAS.is_dir():
        pytest.skip(f"{ds.SCHEMAS} is absent: schema validation needs ../shared/schemas")
    return ds.SCHEMAS
