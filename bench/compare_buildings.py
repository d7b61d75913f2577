"""Compare two buildings tables (``outputs/buildings.parquet``) building by building.

    python bench/compare_buildings.py BEFORE.parquet AFTER.parquet [--rtol 1e-9] [--typed]

Prints the building counts, whether the ids, columns and geometries are the same, and for each
other column the number of buildings whose value differs (``job_id`` is skipped: it names the
run). Exit status 0 when nothing differs, 1 otherwise — a check that a refactoring left the
table as it was, or a way to see what a model change moved. ``--typed`` casts both tables to the
declared schema first (urbanfabric.outputs.schema): a table written before the columns were typed
compares with one written after on values alone.
"""

from __future__ import annotations

import argparse
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq


def compare(before: gpd.GeoDataFrame, after: gpd.GeoDataFrame, rtol: float = 1e-9) -> dict[str, object]:
    """What differs between two tables, keyed by ``building_id``."""
    a = before.set_index("building_id").sort_index()
    b = after.set_index("building_id").sort_index()
    out: dict[str, object] = {"buildings": (len(a), len(b)), "same_ids": list(a.index) == list(b.index),
                              "same_columns": list(a.columns) == list(b.columns)}
    if not out["same_ids"]:
        return out
    out["same_geometry"] = float(a.geometry.geom_equals_exact(b.geometry, tolerance=1e-9).mean())
    differing: dict[str, int] = {}
    for col in a.columns.intersection(b.columns):
        if col in ("geometry", "job_id"):
            continue
        x, y = a[col], b[col]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            same = np.isclose(x.astype(float), y.astype(float), rtol=rtol, atol=0.0, equal_nan=True)
        else:
            same = (x.astype(object).where(x.notna(), "<NA>").astype(str)
                    == y.astype(object).where(y.notna(), "<NA>").astype(str)).to_numpy()
        if not same.all():
            differing[col] = int((~same).sum())
    out["differing_columns"] = differing
    return out


def read_table(path: str, cast: bool) -> gpd.GeoDataFrame:
    """A buildings table as written, or cast to the declared schema (``cast``)."""
    if not cast:
        return gpd.read_parquet(path)
    from urbanfabric.outputs.partitions import to_frame
    from urbanfabric.outputs.schema import typed

    return to_frame(typed(pq.read_table(path), path))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--rtol", type=float, default=1e-9, help="relative tolerance for numbers")
    p.add_argument("--typed", action="store_true", help="cast both tables to the declared schema first")
    args = p.parse_args(argv)
    result = compare(read_table(args.before, args.typed), read_table(args.after, args.typed), args.rtol)
    for key, value in result.items():
        print(f"{key}: {value}")
    same = (result["same_ids"] and result["same_columns"] and result.get("same_geometry") == 1.0
            and not result.get("differing_columns"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
