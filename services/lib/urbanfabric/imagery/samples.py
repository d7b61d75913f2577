"""The sample imagery sources (``imagery: sample:<name>``) and their one-time registration.

A sample source is a folder of slippy-map tiles in the ``../shared/data`` layout; registering it
writes its COGs and STAC catalog to ``sources/<name>/`` in the object store. The flow registers
a source on first use (through the acquisition service); the chart's seed Job registers them at
install, so runs need no sample-data mount afterwards.
"""

from __future__ import annotations

from pathlib import Path

from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.imagery.acquisition import register_xyz_source
from urbanfabric.io.object_store import ObjectStore

#: Sample imagery sources: name → (folder under the shared-data root, zoom).
SAMPLE_SOURCES: dict[str, tuple[str, int]] = {"xiamen-z18": ("footprints/xiamen-z18/tiles", 18)}


def catalog_key(name: str) -> str:
    """Object key of a registered source's STAC catalog."""
    return f"sources/{name}/catalog.json"


def sample_folder(name: str, shared_data: Path) -> tuple[Path, int]:
    """The tile folder and zoom of sample source ``name`` under ``shared_data``.

    Raises:
        InvalidInput: ``name`` is no sample source (the field is named ``sample``).
        NotFound: its folder is missing under ``shared_data``.
    """
    if name not in SAMPLE_SOURCES:
        raise InvalidInput("sample", f"unknown sample source {name!r}; known: {sorted(SAMPLE_SOURCES)}")
    folder, zoom = SAMPLE_SOURCES[name]
    path = Path(shared_data) / folder
    if not path.is_dir():
        raise NotFound(f"sample {name}: folder {path} is missing")
    return path, zoom


def register_sample(store: ObjectStore, name: str, shared_data: Path) -> str | None:
    """Register sample source ``name`` unless its catalog is already in the store.

    The COGs are written before the catalog, so a cut registration leaves no catalog and is
    redone by the next call.
    Returns the catalog URI when this call registered it, None when it was there.
    """
    path, zoom = sample_folder(name, shared_data)
    if store.exists(catalog_key(name)):
        return None
    uri, _, _ = register_xyz_source(store, name, path, zoom)
    return uri
