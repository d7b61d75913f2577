"""Choosing the least certain buildings, spread over the area, and their review package (issue 21)."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pyogrio
import pytest
from affine import Affine
from pyproj import CRS

from urbanfabric.errors import InvalidInput
from urbanfabric.io.rasters import Raster
from urbanfabric.outputs.review import (pick_for_review, review_attribute, score_rows, spread_pick,
                                        with_ood_rank)
from urbanfabric.outputs.review_package import review_chips, select_for_review, write_package

from tests.unit.outputs.review_table import UTM, classes, parts, table

CORNER = "(row < 4) and (col < 4)"


def test_class_uncertainty_is_one_minus_the_margin():
    rows = pd.DataFrame({"building_id": ["a", "b", "c"], "roof_shape": ["flat", "gable", None],
                         "roof_shape_probability": [0.9, 0.5, None],
                         "p_roof_shape_flat": [0.9, 0.45, None], "p_roof_shape_gable": [0.05, 0.5, None],
                         "p_roof_shape_hip": [0.05, 0.05, None]})
    s = score_rows(rows, review_attribute("roof_shape"))
    assert s["uncertainty"].round(6).tolist() == [0.15, 0.95, 1.0]
    assert s["uncertainty_source"].tolist() == ["margin", "margin", "no_prediction"]
    # Without the class probabilities: the bound from the top one, 2 − 2p (never below 1 − margin).
    top = score_rows(rows[["building_id", "roof_shape", "roof_shape_probability"]], review_attribute("roof_shape"))
    assert top["uncertainty"].round(6).tolist() == [0.2, 1.0, 1.0]
    assert (top["uncertainty"] >= s["uncertainty"]).all()


def test_band_uncertainty_is_the_relative_width():
    rows = pd.DataFrame({"building_id": ["a", "b"], "height_m": [10.0, 40.0],
                         "height_p05": [8.0, 38.0], "height_p95": [12.0, 42.0]})
    s = score_rows(rows, review_attribute("height"))
    # 4 m of 10 m (w = 0.4 → 0.4 / 1.4) is less certain than 4 m of 40 m (w = 0.1 → 0.1 / 1.1).
    assert s["uncertainty"].round(6).tolist() == [round(0.4 / 1.4, 6), round(0.1 / 1.1, 6)]


def test_out_of_domain_rank_is_averaged_in():
    scored = pd.DataFrame({"building_id": list("abcd"), "uncertainty": [0.5, 0.5, 0.5, 0.5],
                           "uncertainty_source": ["margin"] * 4, "ood_score": [1.0, 3.0, 2.0, np.nan]})
    out = with_ood_rank(scored)
    assert out["uncertainty"].tolist() == [0.5 * (0.5 + 1 / 3), 0.5 * (0.5 + 1.0), 0.5 * (0.5 + 2 / 3), 0.5]
    assert out["uncertainty_source"].iloc[1] == "margin+ood_rank"


def test_it_picks_the_least_certain():
    t = table()
    sel = select_for_review(parts(t), review_attribute("height"), 10, classes)
    scores = score_rows(t, review_attribute("height"))["uncertainty"].sort_values(ascending=False)
    # Every pick is among the 3 × 10 least certain, and the least certain of all is picked.
    assert set(sel.buildings["building_id"]) <= set(t.loc[scores.index[:30], "building_id"])
    assert t.loc[scores.index[0], "building_id"] in set(sel.buildings["building_id"])
    assert sel.buildings["uncertainty"].min() >= scores.iloc[29]


def test_it_is_spread_over_the_area():
    t = table()
    corner_ids = set(t.query(CORNER)["building_id"])
    # The 16 least certain roofs are all in the south-west corner: the plain top 10 would be there.
    top10 = score_rows(t, review_attribute("roof_shape")).nlargest(10, "uncertainty")["building_id"]
    assert set(top10) <= corner_ids
    sel = select_for_review(parts(t), review_attribute("roof_shape"), 10, classes)
    picked = t[t["building_id"].isin(sel.buildings["building_id"])]
    assert len(picked) == 10
    assert picked["building_id"].isin(corner_ids).sum() <= 4
    quadrants = {(r >= 5, c >= 5) for r, c in zip(picked["row"], picked["col"])}
    assert quadrants == {(False, False), (False, True), (True, False), (True, True)}


def test_spread_pick_round_robin_gives_every_cell_one_first():
    # A 2 × 2 grid: cells (0, 0) = 0, 1, 2; (1, 0) = 3, 4; (1, 1) = 5.
    x = np.array([0, 1, 2, 150, 151, 200.0])
    y = np.array([0, 0, 0, 0, 0, 200.0])
    u = np.array([0.99, 0.98, 0.97, 0.5, 0.4, 0.3])
    assert sorted(spread_pick(x, y, u, 3).tolist()) == [0, 3, 5]
    assert spread_pick(x, y, u, 0).tolist() == []
    assert sorted(spread_pick(x, y, u, 10).tolist()) == [0, 1, 2, 3, 4, 5]


def test_random_selection_is_seeded_spread_and_ignores_the_scores(tmp_path):
    t = table()
    sel = select_for_review(parts(t), review_attribute("roof_shape"), 10, classes, "random", seed=3)
    again = select_for_review(parts(t), review_attribute("roof_shape"), 10, classes, "random", seed=3)
    other = select_for_review(parts(t), review_attribute("roof_shape"), 10, classes, "random", seed=4)
    ids = list(sel.buildings["building_id"])
    assert ids == list(again.buildings["building_id"]) and ids != list(other.buildings["building_id"])
    assert len(set(ids)) == 10
    # Not the review's order: the least certain roofs (all in the south-west corner) are not
    # favoured, and every quadrant of the area gives buildings.
    picked = t[t["building_id"].isin(ids)]
    assert picked["building_id"].isin(set(t.query(CORNER)["building_id"])).sum() <= 4
    assert {(r >= 5, c >= 5) for r, c in zip(picked["row"], picked["col"])} == {
        (False, False), (False, True), (True, False), (True, True)}
    write_package(tmp_path, sel, "job-1")
    assert "random, stratified over the area, seed 3" in json.loads((tmp_path / "package.json").read_text())["selection"]


def test_random_pick_covers_everything_when_n_is_large():
    x, y = np.arange(6.0), np.zeros(6)
    assert sorted(pick_for_review(x, y, np.zeros(6), 10, "random").tolist()) == [0, 1, 2, 3, 4, 5]


def _ard(t) -> Raster:
    """A 0.3 m RGB image covering the fixture (UTM), brighter to the east."""
    utm = t.to_crs(UTM)
    west, south, east, north = utm.total_bounds
    cols, rows = int((east - west) / 0.3) + 10, int((north - south) / 0.3) + 10
    data = np.broadcast_to(np.linspace(0.1, 0.9, cols, dtype=np.float32), (3, rows, cols)).copy()
    return Raster(data, Affine(0.3, 0, west - 1.5, 0, -0.3, north + 1.5), CRS.from_user_input(UTM))


def test_package_files(tmp_path):
    t = table()
    sel = select_for_review(parts(t), review_attribute("roof_shape"), 12, classes)
    image = _ard(t)
    chips = review_chips(sel, lambda tile: image)
    files = write_package(tmp_path, sel, "job-1", chips)
    assert len(chips) == 12 and all(png.startswith(b"\x89PNG") for png in chips.values())
    assert {p.name for p in files if p.suffix == ".png"} == {f"{b}.png" for b in sel.buildings["building_id"]}
    gpkg = tmp_path / "review.gpkg"
    layers = [str(n) for n in pyogrio.list_layers(gpkg)[:, 0]]
    assert "review" in layers
    frame = pyogrio.read_dataframe(gpkg, layer="review")
    assert len(frame) == 12 and frame.crs.to_epsg() == 4326
    for col in ("building_id", "prediction", "probability", "uncertainty", "ood_score", "label", "chip"):
        assert col in frame.columns
    assert frame["label"].isna().all()
    assert frame["chip"].str.match(r"chips/b\d\d\.png").all()
    with sqlite3.connect(gpkg) as con:
        styles = con.execute("SELECT f_table_name, useAsDefault, styleQML, f_geometry_column "
                             "FROM layer_styles").fetchall()
        geometry = con.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = 'review'").fetchone()
    assert len(styles) == 1 and styles[0][:2] == ("review", 1) and styles[0][3] == geometry[0]
    assert 'attr="uncertainty"' in styles[0][2] and "prediction" in styles[0][2]
    assert (tmp_path / "review.qml").read_text() == styles[0][2]
    csv = pd.read_csv(tmp_path / "review.csv")
    assert csv.columns.tolist() == ["building_id", "lon", "lat", "prediction", "probability", "uncertainty",
                                    "label", "chip"]
    assert csv["lon"].between(12, 13).all() and csv["lat"].between(55, 56).all()
    meta = json.loads((tmp_path / "package.json").read_text())
    assert meta["labels"] == ["flat", "gable", "hip"] and meta["buildings"] == 12 and meta["job_buildings"] == 100


def test_numeric_package_has_the_band(tmp_path):
    sel = select_for_review(parts(table()), review_attribute("year_built"), 5, classes)
    write_package(tmp_path, sel, "job-1")
    csv = pd.read_csv(tmp_path / "review.csv")
    assert csv.columns.tolist() == ["building_id", "lon", "lat", "prediction", "p05", "p95", "uncertainty",
                                    "label", "chip"]
    assert not (tmp_path / "chips").exists()


def test_bad_requests_name_the_field():
    t = table()
    with pytest.raises(InvalidInput) as e:
        review_attribute("colour")
    assert e.value.field == "attribute" and "roof_material" in e.value.message
    with pytest.raises(InvalidInput) as e:
        select_for_review(parts(t), review_attribute("height"), 0, classes)
    assert e.value.field == "n"
    with pytest.raises(InvalidInput) as e:
        select_for_review(parts(t), review_attribute("height"), 5, classes, "least")
    assert e.value.field == "select" and "random" in e.value.message
    with pytest.raises(InvalidInput) as e:
        select_for_review(parts(t), review_attribute("facade_material"), 5, classes)
    assert e.value.field == "model_versions"
    with pytest.raises(InvalidInput) as e:
        select_for_review(parts(t.iloc[:0]), review_attribute("height"), 5, classes)
    assert e.value.field == "job"


def test_footprint_review_asks_whether_it_is_a_building(tmp_path):
    sel = select_for_review(parts(table()), review_attribute("footprint"), 6, classes)
    assert set(sel.buildings["prediction"]) == {"building"}
    assert sel.vocabulary == ("building", "not_building", "wrong_outline")
    assert (sel.buildings["uncertainty_source"] == "footprint_confidence").all()
