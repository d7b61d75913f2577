"""Topology of a buildings table: invalid geometries, overlapping pairs, vertices per building.

    PYTHONPATH=.:services/lib .venv/bin/python -m bench.footprint_topology out/<job>/buildings.parquet [...]

Validity is checked as the table holds the geometries (EPSG:4326) and once reprojected to the
local UTM zone (rounding can turn a near-touch into a crossing). Overlaps are measured in UTM; a pair counts when the area of its
intersection exceeds 0.01 m² (shared walls have none). Pairs that share an edge (a boundary
intersection at least 1 m long) are counted too: neighbours that kept their common wall.
"""

from __future__ import annotations

import argparse

import geopandas as gpd
import numpy as np
import shapely

OVERLAP_M2 = 0.01
SHARED_EDGE_M = 1.0


def topology(table: gpd.GeoDataFrame) -> dict[str, float | int]:
    """Counts of one table (see the module doc)."""
    metric = table.to_crs(table.estimate_utm_crs())
    geoms = np.asarray(metric.geometry.values, dtype=object)
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    keep = left < right
    a, b = geoms[left[keep]], geoms[right[keep]]
    overlap = shapely.area(shapely.intersection(a, b))
    shared = shapely.length(shapely.intersection(shapely.boundary(a), shapely.boundary(b)))
    vertices = shapely.get_num_coordinates(geoms) - shapely.get_num_geometries(geoms) \
        - shapely.get_num_interior_rings(geoms)
    return {"buildings": len(table), "invalid": int((~table.geometry.is_valid).sum()),
            "invalid_in_utm": int((~shapely.is_valid(geoms)).sum()),
            "overlapping_pairs": int((overlap > OVERLAP_M2).sum()),
            "max_overlap_m2": round(float(overlap.max()) if len(overlap) else 0.0, 4),
            "pairs_sharing_an_edge": int((shared >= SHARED_EDGE_M).sum()),
            "vertices_per_building": round(float(vertices.mean()) if len(vertices) else 0.0, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="+")
    args = parser.parse_args(argv)
    for path in args.tables:
        print(path, topology(gpd.read_parquet(path)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
