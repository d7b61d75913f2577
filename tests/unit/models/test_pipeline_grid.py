"""Scoring through the pipeline's grid (issue 20, item 0): placement, the grid, the way back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.footprint_eval import pipeline_grid as G
from models.footprint_unet import datasets as D
from urbanfabric.io.model_repository import model_gsd, model_gsd_range

ROOT = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "footprints"
needs_data = pytest.mark.skipif(not (ROOT / "xiamen-z18").is_dir() or not (ROOT / "crowdai").is_dir(),
                                reason="sample footprint data (../shared/data/footprints) is absent")


@needs_data
def test_xiamen_tiles_already_lie_on_the_old_grid_and_pass_unchanged():
    (scene, *_) = D.load("xiamen", "val", ROOT)
    for grid in (G.BEFORE, "0.54"):
        gridded, on_grid, raster = G.gridded_scene(scene, ROOT, grid, None)
        assert np.array_equal(gridded.image, scene.image)
        assert on_grid.transform.almost_equals(raster.transform)


@needs_data
def test_a_03m_chip_on_the_old_grid_loses_pixels_and_comes_back_on_its_own():
    (scene, *_) = D.load("crowdai", "val", ROOT)
    old, _, raster = G.gridded_scene(scene, ROOT, G.BEFORE, None)
    now, on_grid, _ = G.gridded_scene(scene, ROOT, G.MODEL, 0.30, (0.30, 0.55))
    # 0.30 m onto the old ≈ 0.54 m pixels: ≈ 0.55 of the side; the model grid keeps ≈ all of it.
    assert old.image.shape[1] == pytest.approx(scene.image.shape[1] * 0.30 / 0.543, abs=2)
    assert now.image.shape[1] == pytest.approx(scene.image.shape[1], abs=2)
    prob = np.zeros(on_grid.data.shape[1:], np.float32)
    prob[:, : prob.shape[1] // 2] = 1.0
    back = G.back_to_scene(prob, on_grid, raster)
    assert back.shape == scene.mask.shape
    assert back[:, :100].mean() > 0.99 and back[:, -100:].max() == 0.0


def test_scenes_without_a_known_gsd_are_refused():
    scene = D.Scene("dubai", "x", "t8", np.zeros((3, 8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    with pytest.raises(SystemExit, match="no known GSD"):
        G.scene_raster(scene, ROOT)


def test_bootstrap_interval_surrounds_the_pooled_iou_and_needs_two_scenes():
    counts = [(80, 10, 10), (50, 25, 25), (90, 5, 5), (30, 40, 30)]
    lo, hi = G.bootstrap_iou(counts)
    pooled = sum(c[0] for c in counts) / sum(sum(c) for c in counts)
    assert lo < pooled < hi and 0 <= lo and hi <= 1
    assert G.bootstrap_iou(counts) == (lo, hi)  # seeded
    assert all(np.isnan(v) for v in G.bootstrap_iou(counts[:1]))


def test_shipped_models_record_their_training_gsd():
    assert model_gsd("footprint-unet", "v1") == 0.54 and model_gsd_range("footprint-unet", "v1") is None
    for version in ("v5", "v6", "v7"):
        assert model_gsd("footprint-unet", version) == 0.30
        assert model_gsd_range("footprint-unet", version) == (0.30, 0.55)
    cfg = json.loads((Path(__file__).resolve().parents[3] / "models/footprint_unet/v5/config.json").read_text())
    assert cfg["input"]["training_gsd_m"] == {"crowdai": 0.30, "dubai": None, "spacenet": 0.50}
    assert "gsd_m_approx" not in cfg["input"]


def test_a_training_run_records_the_gsds_of_its_data_sets():
    assert D.training_gsd(["crowdai", "dubai", "spacenet"]) == {
        "gsd_m": 0.30, "gsd_range_m": [0.30, 0.50],
        "training_gsd_m": {"crowdai": 0.30, "dubai": None, "spacenet": 0.50}}
    assert D.training_gsd(["xiamen"]) == {"gsd_m": 0.54, "training_gsd_m": {"xiamen": 0.54}}
    assert D.training_gsd(["dubai"]) == {"training_gsd_m": {"dubai": None}}
