"""The learning-curve runner (python -m bench.learning_curves) and the roof experiments' splits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from bench.learning_curves import __main__ as runner
from bench.learning_curves import _roofs, core, roof_material, roof_shape
from models.classifiers.data import DATA_ROOT

SHAPE_DATA = DATA_ROOT / "roofs" / "roof-shape"


def test_ks_parse_sorted_unique_and_reject_bad_input() -> None:
    assert runner.parse_ks("200,0,25,25") == (0, 25, 200)
    for bad in ("a,b", "", "-5"):
        with pytest.raises(argparse.ArgumentTypeError, match="--ks"):
            runner.parse_ks(bad)


def test_attribute_modules_are_found_by_name_and_unknown_names_fail_clearly() -> None:
    assert runner.attribute_module("roof_shape") is roof_shape
    for bad in ("no_such_attribute", "core", "_roofs", "../x"):
        with pytest.raises(SystemExit, match="attribute"):
            runner.attribute_module(bad)


def test_budgets_stop_where_the_held_labels_end() -> None:
    # 66 in the pool: a user holds 53; 100 and 200 are beyond, 50 is kept.
    assert _roofs.budgets(core.KS, 66) == (0, 25, 50)
    # 248 in the pool: 198 held, within 5 % of 200, so 200 stays (core clamps it to 198).
    assert _roofs.budgets(core.KS, 248) == core.KS
    assert _roofs.budgets(core.KS, 200) == (0, 25, 50, 100)


def test_material_pool_keeps_every_class_on_both_sides_and_is_seeded() -> None:
    labels = np.array(["a"] * 10 + ["b"] * 2 + ["c"] * 5)
    pool = roof_material._pool_by_building(labels, 0.6, seed=0)
    assert (pool == roof_material._pool_by_building(labels, 0.6, seed=0)).all()
    for c in "abc":
        assert 0 < pool[labels == c].sum() < (labels == c).sum()
    assert pool[labels == "a"].sum() == 6


@pytest.mark.skipif(not SHAPE_DATA.is_dir(), reason=f"{SHAPE_DATA} absent (shared sample data)")
def test_roof_shape_positions_keep_scenes_apart_and_tiles_in_place() -> None:
    meta = json.loads((SHAPE_DATA / "crop_metadata.json").read_text())
    names = sorted(json.loads((SHAPE_DATA / "labels.json").read_text()))
    scene, x, y = roof_shape._positions(SHAPE_DATA, names)
    assert set(scene) == {"tile", "tile1", "tile2"}
    for s in set(scene):  # a scene spans at most a few km; scenes are far apart
        assert np.ptp(x[scene == s]) < 10_000 and np.ptp(y[scene == s]) < 10_000
    assert abs(x[scene == "tile1"].min() - x[scene == "tile"].max()) > 100_000
    first = names.index("tile1_0_2000_roof_0.jpg")
    assert x[first] - x[scene == "tile1"].min() <= (2000 + meta[names[first]]["centroid"][0]) * roof_shape.NOMINAL_GSD_M


def _result(attribute: str, kind: str) -> dict:
    summary = [{"k": k, "uncertainty": {"mean": 0.5 + k / 1000, "sd": 0.01}, "random": {"mean": 0.5, "sd": 0.02},
                "gain_over_random": k / 1000, "seeds_better": "2/2", "seconds": 1.0} for k in (0, 25, 50)]
    return {"attribute": attribute, "kind": kind, "setup": {"parent": f"{attribute}:v1"}, "test": 10,
            "records": [{"seed": 0}, {"seed": 1}], "summary": summary}


def test_figure_draws_one_panel_per_saved_result(tmp_path: Path) -> None:
    for attribute, kind in (("roof_shape", "class"), ("height", "numeric")):
        (tmp_path / f"learning_curves_{attribute}.json").write_text(json.dumps(_result(attribute, kind)))
    (tmp_path / "other.json").write_text("{}")
    (tmp_path / "learning_curves_height_fold0.json").write_text(json.dumps(_result("height", "numeric")))
    found = runner.results(tmp_path)
    assert [r["attribute"] for r in found] == ["height", "roof_shape"]
    out = runner.figure(found, tmp_path / "img" / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="no learning_curves"):
        runner.figure([], tmp_path / "none.png")


def test_cli_needs_an_attribute_or_the_figure() -> None:
    with pytest.raises(SystemExit):
        runner.main([])
