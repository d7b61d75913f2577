"""Seam checks on footprints across tile borders (urbanfabric.footprints.seams)."""

from __future__ import annotations

import geopandas as gpd
import pytest
from pyproj import Transformer
from shapely import box

from urbanfabric.imagery.tiles import tiles_for_area
from urbanfabric.footprints.seams import internal_borders, seam_defects
from urbanfabric.footprints.seams import merge_seams

# Two neighbouring zoom-16 cells of the Xiamen sample area.
TILES = tiles_for_area((118.0976, 24.4822, 118.1084, 24.4870))
BORDER_X = Transformer.from_crs(TILES[0].crs, "EPSG:4326", always_xy=True).transform(*TILES[0].bounds[2:])[0]
DEG_PER_M = 1 / 101_000  # longitude degrees per metre at 24.5° N (≈ 1/(111.3 km · cos 24.5°))


def _frame(geoms, ids, on_border=None):
    return gpd.GeoDataFrame({"building_id": ids, "footprint_confidence": 0.9,
                             "on_border": on_border if on_border is not None else [True] * len(ids)},
                            geometry=geoms, crs="EPSG:4326")


def _building(x0_m: float, x1_m: float):
    """A 12 m deep building from x0_m to x1_m metres east of the border."""
    return box(BORDER_X + x0_m * DEG_PER_M, 24.4840, BORDER_X + x1_m * DEG_PER_M, 24.4841)


def test_two_cells_share_one_border():
    assert len(TILES) == 2
    lines = internal_borders(t.bounds for t in TILES)
    assert len(lines) == 1 and lines[0].coords[0][0] == pytest.approx(TILES[0].bounds[2])


def test_a_building_left_in_two_pieces_is_reported_and_merging_fixes_it():
    pieces = _frame([_building(-9, 0), _building(0, 11)], ["w", "e"])
    report = seam_defects(pieces, TILES)
    assert report.cut_pairs == [("e", "w")] and not report.ok
    merged = merge_seams(pieces)
    fixed = seam_defects(merged, TILES)
    assert len(merged) == 1 and fixed.ok, fixed.text()


def test_a_lost_half_shows_as_a_flush_edge():
    report = seam_defects(_frame([_building(0, 11)], ["e"]), TILES)
    assert report.flush == ["e"] and report.cut_pairs == []


def test_neighbours_apart_and_buildings_away_from_borders_pass():
    frame = _frame([_building(-20, -5), _building(4, 15), _building(60, 80)], ["a", "b", "c"])
    report = seam_defects(frame, TILES)
    assert report.ok and report.near_border == 0
    assert seam_defects(frame, TILES[:1]).borders == 0


def test_border_agreement_compares_facing_edges_and_skips_nodata():
    import numpy as np

    from urbanfabric.footprints.seams import border_agreement

    a = np.zeros((2, 4, 4), np.uint8)
    b = np.zeros((2, 4, 4), np.uint8)
    a[0, :, -1], a[1, :, -1] = [90, 90, 10, 255], [1, 1, 0, 255]   # east edge of tile (0, 0)
    b[0, :, 0], b[1, :, 0] = [80, 20, 10, 50], [1, 0, 0, 1]         # west edge of tile (1, 0)
    result = border_agreement({(0, 0): a, (1, 0): b})
    assert result.borders == 1 and result.pixels == 3                 # the nodata row is skipped
    assert result.mask_agreement == pytest.approx(2 / 3)
    assert result.mean_abs_diff == pytest.approx((0.1 + 0.7 + 0.0) / 3)
