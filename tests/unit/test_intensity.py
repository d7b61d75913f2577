"""Material stock and embodied carbon (urbanfabric.intensity)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from urbanfabric.errors import InvalidInput
from urbanfabric.intensity import (
    MaterialIntensityTable,
    default_table,
    estimate_stock,
    gfa,
    structure_from_roof,
)


def _tiny() -> MaterialIntensityTable:
    rows = []
    for f in ("RS", "NR"):
        for s in ("C", "T"):
            rows.append((f, s, "X_REG", "concrete", 500.0, 1000.0, 1500.0))
            rows.append((f, s, "X_REG", "steel", 10.0, 50.0, 80.0))
    table = pd.DataFrame(rows, columns=["function", "structure", "region", "material",
                                        "p05", "p50", "p95"])
    carbon = pd.DataFrame({"material": ["concrete", "steel"], "kgco2e_per_kg": [0.1, 2.0]})
    return MaterialIntensityTable(table, carbon)


def test_hand_computed_stock() -> None:
    out = _tiny().estimate_stock([100.0, 0.0], ["RS", "NR"], ["C", "T"], "X_REG")
    assert out.mass_concrete_kg.tolist() == [100_000.0, 0.0]
    assert out.mass_steel_kg_p95.tolist() == [8_000.0, 0.0]
    assert out.mass_total_kg.iloc[0] == pytest.approx(105_000.0)
    assert out.mass_total_kg_p05.iloc[0] == pytest.approx(51_000.0)
    assert out.embodied_co2e_kg.iloc[0] == pytest.approx(100_000 * 0.1 + 5_000 * 2.0)
    assert out.embodied_co2e_kg_p95.iloc[0] == pytest.approx(150_000 * 0.1 + 8_000 * 2.0)


def test_shipped_table_loads() -> None:
    t = MaterialIntensityTable.load()
    assert t.functions == ("NR", "RM", "RS")
    assert t.structures == ("C", "M", "S", "T")
    assert len(t.regions) == 32 and "ASIA_CHN" in t.regions and "OECD_EU15" in t.regions
    assert set(t.materials) == {"aluminum", "brick", "concrete", "copper", "glass",
                                "plastics", "steel", "wood"}
    assert np.all(t.carbon_factors > 0)
    mi = t.intensity("RM", "C", "ASIA_CHN")
    assert (mi.p05 <= mi.p50).all() and (mi.p50 <= mi.p95).all()
    assert 200 < mi.loc["concrete", "p50"] < 3000  # kg per m², a sanity range


def test_masses_are_intensity_times_gfa_exactly() -> None:
    t = default_table()
    area = np.array([120.0, 2_500.0, 37.5])
    funcs, structs = ["RS", "RM", "NR"], ["C", "M", "S"]
    out = t.estimate_stock(area, funcs, structs, "LAM_BRA")
    for i, (f, s) in enumerate(zip(funcs, structs)):
        mi = t.intensity(f, s, "LAM_BRA")
        for m in t.materials:
            assert out[f"mass_{m}_kg"].iloc[i] == area[i] * mi.loc[m, "p50"]
            assert out[f"mass_{m}_kg_p05"].iloc[i] == area[i] * mi.loc[m, "p05"]
            assert out[f"mass_{m}_kg_p95"].iloc[i] == area[i] * mi.loc[m, "p95"]
        masses = np.array([out[f"mass_{m}_kg"].iloc[i] for m in t.materials])
        assert out.mass_total_kg.iloc[i] == pytest.approx(masses.sum())
        assert out.embodied_co2e_kg.iloc[i] == pytest.approx(masses @ t.carbon_factors)
    for base in ("mass_total_kg", "embodied_co2e_kg"):
        assert (out[f"{base}_p05"] <= out[base]).all() and (out[base] <= out[f"{base}_p95"]).all()


def test_scalar_codes_broadcast_and_series_index_kept() -> None:
    area = pd.Series([100.0, 200.0], index=["b1", "b2"])
    out = estimate_stock(area, "NR", "S", "OECD_USA")
    assert list(out.index) == ["b1", "b2"]
    assert out.mass_steel_kg["b2"] == pytest.approx(2 * out.mass_steel_kg["b1"])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"region": "ATLANTIS"}, "region"),
        ({"function": ["XX"]}, "function"),
        ({"structure": ["Q"]}, "structure"),
        ({"gfa_m2": [-1.0]}, "gfa_m2"),
        ({"function": ["RS", "RS"]}, "function"),  # wrong length
        ({"function": ["RES"]}, "floors"),  # RES needs floors
    ],
)
def test_bad_inputs_name_the_field(kwargs: dict, field: str) -> None:
    args = {"gfa_m2": [100.0], "function": ["RS"], "structure": ["C"], "region": "ASIA_CHN",
            **kwargs}
    with pytest.raises(InvalidInput) as e:
        estimate_stock(**args)
    assert e.value.field == field
    assert field in str(e.value)


def test_residential_unknown_split_by_floors() -> None:
    got = estimate_stock([100.0, 100.0], ["RES", "RES"], "M", "ASIA_IND", floors=[2, 5])
    want = estimate_stock([100.0, 100.0], ["RS", "RM"], "M", "ASIA_IND")
    pd.testing.assert_frame_equal(got, want)


def test_gfa() -> None:
    np.testing.assert_array_equal(gfa([100.0, 50.0], [3, 1]), [300.0, 50.0])
    with pytest.raises(InvalidInput) as e:
        gfa([100.0], [-1])
    assert e.value.field == "floors"
    with pytest.raises(InvalidInput):
        gfa([1.0, 2.0, 3.0], [1, 2])


def test_structure_from_roof() -> None:
    assert structure_from_roof("concrete_cement") == "C"
    assert structure_from_roof("Healthy_Metal") == "M"
    assert structure_from_roof("irregular_metal") == "T"
    assert structure_from_roof("other") == "M"  # fallback
    assert structure_from_roof("other", fallback="C") == "C"
    assert structure_from_roof("healthy_metal", mapping={"healthy_metal": "S"}) == "S"
    with pytest.raises(InvalidInput):
        structure_from_roof("healthy_metal", mapping={"healthy_metal": "steel"})
