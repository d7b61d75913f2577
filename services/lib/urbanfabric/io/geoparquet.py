"""GeoParquet input and output (GeoParquet 1.1: WKB geometry, bbox covering column, ZSTD)."""

from __future__ import annotations

import io

import geopandas as gpd
import pandas as pd

from urbanfabric.errors import InvalidInput

PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"


def geoparquet_bytes(frame: gpd.GeoDataFrame) -> bytes:
    """Encode a GeoDataFrame as GeoParquet 1.1 bytes."""
    buf = io.BytesIO()
    frame.to_parquet(
        buf,
        index=False,
        compression="zstd",
        geometry_encoding="WKB",
        write_covering_bbox=True,
        schema_version="1.1.0",
    )
    return buf.getvalue()


def read_geoparquet(blob: bytes, field: str = "footprints") -> gpd.GeoDataFrame:
    """Decode GeoParquet bytes; a malformed file raises InvalidInput naming ``field``."""
    try:
        frame = gpd.read_parquet(io.BytesIO(blob))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for bad files
        raise InvalidInput(field, f"not a readable GeoParquet file ({exc})") from exc
    if "bbox" in frame.columns:
        frame = frame.drop(columns="bbox")
    return frame


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Encode a plain table as Parquet bytes."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, compression="zstd")
    return buf.getvalue()
