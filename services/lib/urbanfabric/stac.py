"""STAC catalogs stored in the object store.

pystac reads and writes ``s3://`` hrefs through :class:`ObjectStoreStacIO`, so a static catalog
lives next to the COGs it describes and any STAC tool pointed at the bucket can browse it.
"""

from __future__ import annotations

from typing import Any

import pystac
from pystac.stac_io import DefaultStacIO

from urbanfabric.storage import ObjectStore, parse_s3_uri


class ObjectStoreStacIO(DefaultStacIO):
    """pystac I/O that handles ``s3://`` hrefs with the project's object store."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__()
        self.store = store

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        href = str(source)
        if href.startswith("s3://"):
            return self.store.get_bytes(parse_s3_uri(href)[1]).decode("utf-8")
        return super().read_text(source, *args, **kwargs)

    def write_text(self, dest: Any, txt: str, *args: Any, **kwargs: Any) -> None:
        href = str(dest)
        if href.startswith("s3://"):
            self.store.put_bytes(parse_s3_uri(href)[1], txt.encode("utf-8"))
            return
        super().write_text(dest, txt, *args, **kwargs)


def read_catalog(uri: str, store: ObjectStore) -> pystac.Catalog:
    """Open a static catalog (``s3://…/catalog.json`` or a local path)."""
    return pystac.Catalog.from_file(uri, stac_io=ObjectStoreStacIO(store))
