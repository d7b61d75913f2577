"""EU-ECB validation command (models/material_intensity/validate.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from urbanfabric.io.model_repository import SHARED_DATA

from models.material_intensity import validate

ECB = SHARED_DATA / validate.ECB


def test_metrics_by_hand() -> None:
    measured = np.array([100.0, 200.0, 50.0, np.nan, 400.0])
    lo, p50, hi = np.full(5, 80.0), np.full(5, 150.0), np.full(5, 300.0)
    r = validate._metrics(measured, lo, p50, hi)
    assert r["n"] == 4
    assert r["share_inside_p05_p95"] == 0.5 and r["share_below_p05"] == 0.25
    assert r["share_above_p95"] == 0.25
    rel = np.array([0.5, -0.25, 2.0, -0.625])
    assert r["median_rel_error_p50"] == pytest.approx(np.median(rel), abs=1e-3)
    assert r["median_abs_rel_error_p50"] == pytest.approx(np.median(np.abs(rel)), abs=1e-3)
    assert validate._metrics(np.array([np.nan]), lo[:1], p50[:1], hi[:1]) == {"n": 0}


def test_mapping_of_a_synthetic_inventory(tmp_path) -> None:
    cols = {c for cs in validate.MATERIALS.values() for c in cs}
    rows = pd.DataFrame({
        "bldg_area_gfa": [1000.0, 500.0, np.nan],
        "bldg_struct_type": ["frame wood", "No data", "massive brick"],
        "bldg_use_type": ["Residential", "Residential", "Non-residential"],
        "bldg_use_subtype": ["Multi-family house", "Other", "Office"],
        "bldg_floors_ag": [4, 1, 3],
        "site_country_code": ["FI", "XX", "DK"],
        "bldg_roof_type": ["Flat roof", np.nan, "Other"],
        "inv_mat_mass_total": [1.5e6, 4e5, 1e6],
        **{c: [np.nan] * 3 for c in cols},
    })
    rows.loc[0, "mass_concrete_reinforced"] = 3e5
    rows.loc[0, "mass_concrete_wo_reinforcement"] = 2e5
    rows.loc[0, "mass_wood"] = 1e5
    path = tmp_path / "ecb.csv"
    rows.to_csv(path, index=False)
    df = validate.load_buildings(path)
    assert len(df) == 2  # no GFA: dropped
    assert df.structure.tolist() == ["T", ""] and df.function.tolist() == ["RM", "RS"]
    assert df.region.tolist() == ["OECD_EU15", "GLOBAL"]
    assert df.concrete.iloc[0] == 500.0 and df.wood.iloc[0] == 100.0
    assert np.isnan(df.steel.iloc[0]) and df.total_all.tolist() == [1500.0, 800.0]
    fig7 = validate.fig7_check(df)
    assert fig7["inventory_buildings"] == 1
    assert fig7["mi_total_kg_m2"]["Flat roof"]["frame wood"] == 600.0


@pytest.mark.data
@pytest.mark.skipif(not ECB.exists(), reason="needs ../shared/data/intensity/eu-ecb")
def test_command_writes_the_report(tmp_path) -> None:
    out = tmp_path / "v.json"
    assert validate.main(["--out", str(out)]) == 0
    r = json.loads(out.read_text())
    rasmi = r["sources"]["rasmi"]
    assert rasmi["by_material"]["concrete"]["n"] == 72
    assert 0.3 < rasmi["by_material"]["concrete"]["share_inside_p05_p95"] <= 1
    assert r["fig7_eq1_check"]["max_rel_diff_vs_hand_computation"] < 1e-9
