"""The MI library builders (models/material_intensity/build.py): Heeren & Fishman records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from urbanfabric.stock.intensity import MaterialIntensityTable
from urbanfabric.io.model_repository import SHARED_DATA

from models.material_intensity import build

HF_CSV = SHARED_DATA / "intensity/heeren-fishman/data/buildings.csv"


def _records(tmp_path):
    rows = []
    # 3 RS/C records in OECD_EU15, 2 in OECD_USA, 1 in ASIA_CHN; one "unspecified" marker.
    for region, conc in [("OECD_EU15", 300), ("OECD_EU15", 500), ("OECD_EU15", 700),
                         ("OECD_USA", 100), ("OECD_USA", 200), ("ASIA_CHN", 1000)]:
        rows.append({"function": "RS", "structure": "C", "R5_32": region, "no_floors": "2",
                     "concrete2": conc, **{m: 1.0 for m in build.HF_MATERIALS if m != "concrete"}})
    rows.append({"function": "RS", "structure": "C", "R5_32": "OECD_EU15", "no_floors": "5 and more",
                 "concrete2": "unspecified", **{m: 1.0 for m in build.HF_MATERIALS if m != "concrete"}})
    path = tmp_path / "buildings.csv"
    pd.DataFrame(rows).to_csv(path, index=False, encoding="latin-1")
    return path


def test_hf_percentiles_pool_up_the_region_hierarchy(tmp_path) -> None:
    path = _records(tmp_path)
    out = build.build_hf_intensity(path, ["OECD_EU15", "OECD_USA", "ASIA_CHN"], ["RS"], ["C"],
                                   min_records=3)
    conc = out[out.material == "concrete"].set_index("region")
    assert conc.loc["OECD_EU15", "pooled_from"] == "region"
    assert conc.loc["OECD_EU15", "p50"] == 500 and conc.loc["OECD_EU15", "n"] == 3
    assert conc.loc["OECD_USA", "pooled_from"] == "R5"  # 2 own records < 3: all OECD
    assert conc.loc["OECD_USA", "n"] == 5 and conc.loc["OECD_USA", "n_raw"] == 2
    assert conc.loc["OECD_USA", "p50"] == np.percentile([300, 500, 700, 100, 200], 50)
    assert conc.loc["ASIA_CHN", "pooled_from"] == "global"  # 1 ASIA record: every region
    assert conc.loc["ASIA_CHN", "p100"] == 1000 and conc.loc["ASIA_CHN", "n"] == 6
    assert (np.diff(out[list(build.PCT)].to_numpy(), axis=1) >= 0).all()


def test_default_floors_need_enough_records(tmp_path) -> None:
    with pytest.raises(SystemExit):
        build.build_default_floors(_records(tmp_path), ["RS"])
    floors = build.build_default_floors(_records(tmp_path), ["RS"], min_records=3)
    assert floors.set_index("R5").loc["*", "p50"] == 2  # "5 and more" is not a number: dropped


@pytest.mark.data
@pytest.mark.skipif(not HF_CSV.exists(), reason="needs ../shared/data/intensity/heeren-fishman")
def test_shipped_hf_table_matches_the_records() -> None:
    rec = build.read_hf(HF_CSV)
    table = pd.read_csv(build.OUT_DIR / "material_intensity_hf.csv")
    own = table[table.pooled_from == "region"]
    assert len(own) > 50
    for row in own.sample(20, random_state=0).itertuples():
        vals = rec[(rec.function == row.function) & (rec.structure == row.structure)
                   & (rec.region == row.region)][row.material].dropna()
        assert len(vals) == row.n
        assert row.p50 == pytest.approx(np.percentile(vals, 50), rel=1e-9)
        assert row.p95 == pytest.approx(np.percentile(vals, 95), rel=1e-9)
    MaterialIntensityTable.load(source="heeren-fishman")  # loads as a full cube
