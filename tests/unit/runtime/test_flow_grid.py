"""The flow cuts the tiles' rasters at the segmentation model's GSD (issue 20, item 0)."""

from __future__ import annotations

import pytest

from flows.map_area import tile_gsd
from urbanfabric.v1 import common_pb2


def _refs(version: str) -> dict[str, common_pb2.ModelRef]:
    return {"segmentation": common_pb2.ModelRef(name="footprint-unet", version=version)}


def test_imagery_inside_the_models_training_range_is_read_at_its_own_gsd():
    assert tile_gsd(_refs("v5"), [], 0.543) == (pytest.approx(0.543), [])
    assert tile_gsd(_refs("v5"), ["footprint-unet:v6", "footprint-unet:v7"], 0.30) == (0.30, [])


def test_finer_or_coarser_imagery_goes_to_the_ends_of_the_range_and_v1_keeps_its_gsd():
    assert tile_gsd(_refs("v5"), [], 0.075)[0] == 0.30
    assert tile_gsd(_refs("v5"), [], 2.0)[0] == 0.55
    assert tile_gsd(_refs("v1"), [], 0.30)[0] == 0.54


def test_an_ensemble_member_trained_elsewhere_is_named_in_a_warning():
    gsd, warnings = tile_gsd(_refs("v5"), ["footprint-unet:v1"], 0.30)
    assert gsd == 0.30 and len(warnings) == 1
    assert "footprint-unet:v1" in warnings[0] and "first member's 0.30 m grid" in warnings[0]


def test_no_segmentation_model_means_the_default_grid():
    assert tile_gsd({"segmentation": common_pb2.ModelRef()}, [], 0.3) == (0.0, [])
