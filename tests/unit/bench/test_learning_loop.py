"""What the recorded learning-loop run reports of a refresh (bench/learning_loop.py), on small tables."""

from __future__ import annotations

import math

import pandas as pd

from bench.learning_loop import heldout_in_table, table_change


def test_table_change_numeric_counts_changed_buildings_and_the_mean_change():
    before = pd.DataFrame({"building_id": ["a", "b", "c", "d"], "height_m": [10.0, 20.0, None, 5.0]})
    after = pd.DataFrame({"building_id": ["d", "c", "b", "a"], "height_m": [5.0, 7.0, 26.0, 12.0]})
    got = table_change(before, after, "height_m", labelled={"a", "x"})
    assert got["buildings"] == 4 and got["labelled_buildings"] == 1
    assert got["changed"] == 2 and got["became_known"] == 1 and got["became_missing"] == 0
    assert math.isclose(got["mean_change"], (2 + 6 + 0) / 3) and math.isclose(got["mean_abs_change"], 8 / 3)


def test_table_change_classes_lists_transitions():
    before = pd.DataFrame({"building_id": ["a", "b", "c"], "roof_shape": ["flat", "hip", None]})
    after = pd.DataFrame({"building_id": ["a", "b", "c"], "roof_shape": ["gable", "hip", "gable"]})
    got = table_change(before, after, "roof_shape")
    assert got["changed"] == 2 and got["transitions"] == {"flat → gable": 1, "null → gable": 1}
    assert got["counts"][1] == {"gable": 2, "hip": 1}


def test_heldout_in_table_scores_only_the_heldout_buildings():
    corrections = pd.DataFrame({"building_id": ["a", "b", "c"], "label": [10.0, 20.0, 30.0]})
    table = pd.DataFrame({"building_id": ["a", "b", "c"], "height_m": [12.0, 100.0, 27.0]})
    got = heldout_in_table(table, corrections, ["a", "c", "gone"], "height_m")
    assert got["n"] == 2 and math.isclose(got["mae"], 2.5) and math.isclose(got["bias"], -0.5)
    roofs = pd.DataFrame({"building_id": ["a", "b", "c"], "label": ["other"] * 3})
    table = pd.DataFrame({"building_id": ["a", "b", "c"], "roof_material": ["other", "unknown", "metal"]})
    got = heldout_in_table(table, roofs, ["a", "b", "c"], "roof_material")
    assert got["unknown"] == 1 and math.isclose(got["accuracy"], 1 / 3) and got["accuracy_of_known"] == 0.5
