"""The structure model and the Monte-Carlo stock that samples its probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from urbanfabric.errors import InvalidInput
from urbanfabric.stock.intensity import default_table
from urbanfabric.stock.monte_carlo import StockOptions
from urbanfabric.stock.structure import HEIGHT_CAPS, STRUCTURE_CLASSES, StructureModel, apply_height_caps

MODEL = Path(__file__).resolve().parents[3] / "models/structure_type/v1"


@pytest.fixture(scope="module")
def model() -> StructureModel:
    return StructureModel.load(MODEL)


def test_probabilities_sum_to_one_and_tall_buildings_are_not_masonry_or_timber(model):
    floors = np.array([1, 3, 6, 9, 14, 30, np.nan])
    p = model.predict_proba(floors, ["NR"] * 7, [np.nan] * 7, ["ASIA_CHN"] * 7)
    assert np.allclose(p.sum(axis=1), 1) and (p > 0).all()
    m, t, c = (STRUCTURE_CLASSES.index(k) for k in "MTC")
    assert (p[3:6, m] <= 0.02 + 1e-9).all() and (p[3:6, t] <= 0.02 + 1e-9).all()
    assert p[5, c] > 0.8  # a 30-storey block is concrete (or steel), whatever else is unknown
    assert p[0, m] > p[5, m]  # more masonry low than high


def test_unknown_inputs_give_the_prior_not_a_certainty(model):
    p = model.predict_proba([np.nan], [""], [np.nan], [""])[0]
    assert p.max() < 0.7


def test_facade_evidence_shifts_odds_but_never_undoes_the_caps(model):
    args = ([3.0, 3.0, 30.0], ["RM"] * 3, [np.nan] * 3, ["OECD_EU15"] * 3)
    plain = model.predict_proba(*args)
    brick = model.predict_proba(*args, facade=["", "brick", "brick"])
    m = STRUCTURE_CLASSES.index("M")
    assert brick[1, m] > plain[1, m]
    assert np.allclose(brick[0], plain[0])
    assert brick[2, m] <= 0.005 + 1e-9  # a brick skin on a 30-storey tower is cladding


def test_caps_move_probability_to_the_other_classes_in_proportion():
    p = np.array([[0.2, 0.6, 0.1, 0.1]])
    capped = apply_height_caps(p, np.array([10.0]))
    above, code, most = HEIGHT_CAPS[0]
    assert capped[0, STRUCTURE_CLASSES.index(code)] == pytest.approx(most)
    assert capped.sum() == pytest.approx(1.0)
    assert capped[0, 0] / capped[0, 2] == pytest.approx(2.0)  # C:S kept at 2:1


def test_a_model_file_for_other_classes_is_refused(tmp_path):
    (tmp_path / "classifier.json").write_text('{"classes": ["A", "B"], "features": [], "coef": [], "intercept": []}')
    with pytest.raises(InvalidInput, match="structure_model"):
        StructureModel.load(tmp_path)


def test_uncertain_structure_widens_the_stock_range_and_certainty_changes_nothing():
    table = default_table()
    n = 3
    area, floors = np.full(n, 400.0), np.full(n, 5.0)
    certain = np.array([[1.0, 0, 0, 0]] * n)
    unsure = np.array([[0.25, 0.25, 0.25, 0.25]] * n)
    raw = StockOptions(calibrated=False)  # the structure's own effect, on the table's raw ranges
    base = table.simulate_stock(area, ["NR"] * n, ["C"] * n, "ASIA_CHN", floors=floors, options=raw)
    same = table.simulate_stock(area, ["NR"] * n, ["C"] * n, "ASIA_CHN", floors=floors, structure_p=certain, options=raw)
    wide = table.simulate_stock(area, ["NR"] * n, ["C"] * n, "ASIA_CHN", floors=floors, structure_p=unsure, options=raw)
    cols = ["mass_total_kg", "mass_total_kg_p05", "mass_total_kg_p95", "embodied_co2e_kg_p95"]
    assert np.allclose(base[cols], same[cols])
    width = lambda t: (t["mass_total_kg_p95"] - t["mass_total_kg_p05"]).to_numpy()  # noqa: E731
    assert (width(wide) > 1.05 * width(base)).all()
    assert np.allclose(wide["mass_total_kg"], base["mass_total_kg"])  # the point estimate keeps the given class


def test_a_buildings_draws_depend_only_on_its_own_inputs():
    """Common random numbers: the same building gives the same range alone or in a batch."""
    table = default_table()
    p = np.array([[0.4, 0.3, 0.1, 0.2], [0.1, 0.1, 0.1, 0.7], [0.4, 0.3, 0.1, 0.2]])
    batch = table.simulate_stock([300.0, 900.0, 300.0], ["NR", "RM", "NR"], ["C", "T", "C"], "ASIA_CHN",
                                 floors=[4, 2, 4], structure_p=p, residential_p=[0.2, np.nan, 0.2])
    alone = table.simulate_stock([300.0], ["NR"], ["C"], "ASIA_CHN", floors=[4], structure_p=p[:1],
                                 residential_p=[0.2])
    assert np.allclose(batch.iloc[[0, 2]]["mass_total_kg_p95"], alone["mass_total_kg_p95"].iloc[0])


def test_a_wrong_probability_shape_names_the_field():
    with pytest.raises(InvalidInput, match="structure_p"):
        default_table().simulate_stock([100.0], ["NR"], ["C"], "ASIA_CHN", floors=[2], structure_p=np.ones((1, 3)))


V2 = MODEL.parent / "v2"


def test_v2_is_v1_with_a_temperature_that_softens_without_changing_the_ranking(model):
    """structure-type:v2 reuses v1's coefficients (weights_from) with T > 1 from its config."""
    v2 = StructureModel.load(V2)
    assert v2.temperature > 1 and model.temperature == 1.0
    assert np.array_equal(v2.coef, model.coef)
    floors = np.array([1, 2, 4, 6, np.nan])
    args = (floors, ["RS", "RM", "NR", "RM", ""], [1930, 1975, 1995, 2010, np.nan], ["OECD_EU15"] * 5)
    p1, p2 = model.predict_proba(*args), StructureModel.load(V2).predict_proba(*args)
    assert np.allclose(p2.sum(axis=1), 1)
    assert (p2.max(axis=1) < p1.max(axis=1)).all()  # less sure
    assert (p2.argmax(axis=1) == p1.argmax(axis=1)).all()  # same most likely class


def test_a_bad_temperature_is_refused_naming_the_field(tmp_path):
    (tmp_path / "classifier.json").write_text((MODEL / "classifier.json").read_text())
    (tmp_path / "config.json").write_text('{"temperature": 0}')
    with pytest.raises(InvalidInput, match="temperature"):
        StructureModel.load(tmp_path)


def test_calibrated_structure_lowers_the_low_tail_of_a_mid_rise_building():
    """A 4-storey NR building in ASIA_CHN: v2's softer P(C, M, S, T) gives a lower p05 of mass
    and CO2e than the structure fixed to C, and the same point estimate (most likely class)."""
    table, v2 = default_table(), StructureModel.load(V2)
    area, floors = np.array([1000.0]), np.array([4.0])
    p = v2.predict_proba(floors, ["NR"], [1978.0], ["ASIA_CHN"])
    raw = StockOptions(calibrated=False)  # the structure's own effect, on the table's raw ranges
    fixed = table.simulate_stock(area, ["NR"], ["C"], "ASIA_CHN", floors=floors, options=raw).iloc[0]
    unsure = table.simulate_stock(area, ["NR"], ["C"], "ASIA_CHN", floors=floors, structure_p=p, options=raw).iloc[0]
    assert p[0].argmax() == STRUCTURE_CLASSES.index("C") and p[0].max() < 0.7
    assert unsure["mass_total_kg"] == pytest.approx(fixed["mass_total_kg"])
    assert unsure["mass_total_kg_p05"] < 0.9 * fixed["mass_total_kg_p05"]
    assert unsure["embodied_co2e_kg_p05"] < 0.9 * fixed["embodied_co2e_kg_p05"]
