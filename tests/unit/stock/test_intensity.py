"""Material stock and embodied carbon (urbanfabric.stock.intensity)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from urbanfabric.errors import InvalidInput
from urbanfabric.stock.intensity import MaterialIntensityTable, default_table, estimate_stock, gfa
from urbanfabric.stock.structure import structure_from_roof


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


# --------------------------------------------------------------------------- Monte-Carlo

from urbanfabric.stock.intensity import FALLBACKS
from urbanfabric.stock.vocabulary import GLOBAL_REGION, LEVELS
from urbanfabric.stock.derived_intensity import KeyMapping, derive_intensity, type_table
from urbanfabric.stock.monte_carlo import StockOptions


def _naive(t: MaterialIntensityTable, opt: StockOptions, area, func, struct, region, h, lo, hi):
    """Per-building loop over the same draws: the reference the vectorised code must match."""
    draws = t.draws(t.regions.index(region), opt)
    stratum, v = opt.stratum_of_draw(), opt.height_levels()
    out = []
    for b in range(len(area)):
        q = np.interp(v, [0.05, 0.5, 0.95], [lo[b], h[b], hi[b]])
        floors = np.maximum(np.floor(q / opt.storey_height_m + 0.5), 1)[stratum]
        k = t.functions.index(func[b]) * len(t.structures) + t.structures.index(struct[b])
        out.append(np.quantile(area[b] * floors * draws[k], [0.05, 0.5, 0.95], axis=1).T)
    return np.array(out)  # (n, series, 3)


def _inputs(n: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    area = rng.uniform(20, 800, n)
    h = rng.uniform(3, 60, n)
    lo, hi = h * rng.uniform(0.6, 0.95, n), h * rng.uniform(1.05, 1.6, n)
    func = rng.choice(["RS", "RM", "NR"], n)
    struct = rng.choice(["C", "M", "S", "T"], n)
    return area, func, struct, h, lo, hi


def test_simulation_equals_a_per_building_loop() -> None:
    t, opt = default_table(), StockOptions(draws=100, seed=7)
    area, func, struct, h, lo, hi = _inputs(60)
    out = t.simulate_stock(area, func, struct, "OECD_EU15", height_m=h, height_p05=lo,
                           height_p95=hi, options=opt)
    ref = _naive(t, opt, area, func, struct, "OECD_EU15", h, lo, hi)
    series = [f"mass_{m}_kg" for m in t.materials] + ["mass_total_kg", "embodied_co2e_kg"]
    for k, name in enumerate(series):
        got = out[[f"{name}_p05", f"{name}_mc_p50", f"{name}_p95"]].to_numpy()
        np.testing.assert_allclose(got, ref[:, k], rtol=1e-6, atol=1e-6)
    assert set(out.fallback) <= {"", "mi_pooled"}  # steel frames have no EU15 records


def test_point_estimate_is_p50_intensity_times_gfa() -> None:
    t = default_table()
    area, func, struct, h, lo, hi = _inputs(20)
    floors = np.maximum(np.floor(h / 3 + 0.5), 1)
    out = t.simulate_stock(area, func, struct, "ASIA_CHN", floors=floors, height_m=h,
                           height_p05=lo, height_p95=hi)
    np.testing.assert_allclose(out.gfa_m2, area * floors)
    for i in range(len(area)):
        mi = t.intensity(func[i], struct[i], "ASIA_CHN")["p50"]
        for m in t.materials:
            assert out[f"mass_{m}_kg"].iloc[i] == pytest.approx(mi[m] * area[i] * floors[i],
                                                                rel=1e-12)
    masses = out[[f"mass_{m}_kg" for m in t.materials]].sum(axis=1)
    np.testing.assert_allclose(out.mass_total_kg, masses, rtol=1e-12)
    for base in ("mass_total_kg", "embodied_co2e_kg", "mass_concrete_kg"):
        assert (out[f"{base}_p05"] <= out[f"{base}_mc_p50"]).all()
        assert (out[f"{base}_mc_p50"] <= out[f"{base}_p95"]).all()


def test_results_do_not_depend_on_batch_order_but_on_the_seed() -> None:
    t = default_table()
    area, func, struct, h, lo, hi = _inputs(50)
    kw = {"height_m": h, "height_p05": lo, "height_p95": hi}
    a = t.simulate_stock(area, func, struct, "LAM_BRA", **kw)
    perm = np.random.default_rng(0).permutation(50)
    b = t.simulate_stock(area[perm], func[perm], struct[perm], "LAM_BRA",
                         **{k: v[perm] for k, v in kw.items()})
    pd.testing.assert_frame_equal(a.iloc[perm].reset_index(drop=True), b)
    pd.testing.assert_frame_equal(a, t.simulate_stock(area, func, struct, "LAM_BRA", **kw))
    c = t.simulate_stock(area, func, struct, "LAM_BRA", options=StockOptions(seed=1), **kw)
    assert not np.allclose(a.mass_concrete_kg_p95, c.mass_concrete_kg_p95)
    np.testing.assert_array_equal(a.mass_concrete_kg, c.mass_concrete_kg)  # point unchanged


def test_many_draws_recover_the_intensity_percentiles() -> None:
    """Floors fixed: the sampled MI must reproduce the table's percentiles (inverse CDF)."""
    t = default_table()
    opt = StockOptions(draws=4000, height_strata=1, calibrated=False)  # the raw percentiles
    out = t.simulate_stock([100.0], "RM", "C", "ASIA_CHN", floors=[2], options=opt)
    mi = t.intensity("RM", "C", "ASIA_CHN")
    for m in ("concrete", "steel", "brick"):
        assert out[f"mass_{m}_kg_p05"].iloc[0] == pytest.approx(200 * mi.loc[m, "p05"], rel=0.01)
        assert out[f"mass_{m}_kg_p95"].iloc[0] == pytest.approx(200 * mi.loc[m, "p95"], rel=0.01)
        assert out[f"mass_{m}_kg_mc_p50"].iloc[0] == pytest.approx(200 * mi.loc[m, "p50"],
                                                                   rel=0.01)
    assert out.fallback.iloc[0] == "floors_without_height"


def test_comonotonic_materials_add_up_percentiles() -> None:
    t = default_table()
    opt = StockOptions(material_correlation=1.0)
    out = t.simulate_stock([100.0], "RS", "M", "OECD_USA", floors=[1], options=opt)
    mats = [f"mass_{m}_kg_p95" for m in t.materials]
    assert out.mass_total_kg_p95.iloc[0] == pytest.approx(out[mats].sum(axis=1).iloc[0], rel=1e-5)
    indep = t.simulate_stock([100.0], "RS", "M", "OECD_USA", floors=[1])
    assert indep.mass_total_kg_p95.iloc[0] < out.mass_total_kg_p95.iloc[0]


def test_height_uncertainty_widens_the_range() -> None:
    t = default_table()
    fixed = t.simulate_stock([100.0], "RM", "C", "ASIA_CHN", height_m=[15.0],
                             height_p05=[15.0], height_p95=[15.0])
    wide = t.simulate_stock([100.0], "RM", "C", "ASIA_CHN", height_m=[15.0],
                            height_p05=[8.0], height_p95=[30.0])
    assert fixed.fallback.iloc[0] == wide.fallback.iloc[0] == ""
    assert wide.mass_total_kg_p95.iloc[0] > fixed.mass_total_kg_p95.iloc[0]
    assert wide.mass_total_kg_p05.iloc[0] < fixed.mass_total_kg_p05.iloc[0]
    assert fixed.mass_total_kg.iloc[0] == wide.mass_total_kg.iloc[0]  # same point estimate


def test_fallbacks_are_recorded_never_silent_zero() -> None:
    t = default_table()
    out = t.simulate_stock(
        [-5.0, np.nan, 5e6, 100.0, 100.0, 100.0, 100.0, 100.0],
        ["RS", "RS", "RS", "RM", "RM", "RS", "RS", "RS"],
        ["C", "C", "C", "C", "", None, "C", "C"],
        "ASIA_CHN",
        height_m=[6, 6, 6, np.nan, 12, 6, 3000, 6],
        height_p05=[5, 5, 5, 0, 0, 5, 0, 5],
        height_p95=[8, 8, 8, 0, 0, 8, 0, 8],
    )
    fb = out.fallback.tolist()
    assert fb[0] == fb[1] == "area_invalid" and fb[2] == "area_absurd"
    assert out.iloc[:3][["mass_concrete_kg", "mass_total_kg_p95", "gfa_m2"]].isna().all().all()
    assert fb[3] == "height_missing"
    assert set(fb[4].split(";")) == {"height_band_missing", "structure_default"}
    assert fb[5] == "structure_default" and out.structure.iloc[5] == "M"
    assert set(fb[6].split(";")) == {"height_absurd", "height_missing"}
    assert fb[7] == ""
    for i in range(3, 8):  # every building with a usable area gets a positive stock
        assert out.mass_total_kg.iloc[i] > 0 and out.mass_total_kg_p05.iloc[i] > 0
    # No height: regional default floors (ASIA RM: median 5), a wider range than a known height.
    assert out.floors_used.iloc[3] == 5
    known = t.simulate_stock([100.0], "RM", "C", "ASIA_CHN", height_m=[15.0],
                             height_p05=[12.0], height_p95=[18.0])
    ratio = out.mass_total_kg_p95 / out.mass_total_kg_p05
    assert ratio.iloc[3] > (known.mass_total_kg_p95 / known.mass_total_kg_p05).iloc[0]
    for token in {tok for f in fb for tok in f.split(";") if tok}:
        assert token in FALLBACKS


def test_unknown_region_uses_the_global_mixture() -> None:
    t = default_table()
    out = t.simulate_stock([100.0], "RS", "T", "ATLANTIS", floors=[2])
    assert out.fallback.iloc[0] == "region_global;floors_without_height" or set(
        out.fallback.iloc[0].split(";")) == {"region_global", "floors_without_height"}
    g = t.intensity("RS", "T", GLOBAL_REGION)["p50"]
    assert out.mass_wood_kg.iloc[0] == pytest.approx(200 * g["wood"])
    pooled = t.simulate_stock([100.0], "RS", "S", "ASIA_CHN", floors=[2])
    assert "mi_pooled" in pooled.fallback.iloc[0]  # RASMI has no RS/S record for China


def test_global_mixture_quantiles_match_sampling() -> None:
    t = default_table()
    per_region = np.stack([t.percentiles("RM", "M", r).to_numpy() for r in t.regions])
    levels = np.array(list(LEVELS.values()))
    u = (np.arange(20_000) + 0.5) / 20_000
    g = t.percentiles("RM", "M", GLOBAL_REGION)
    for j, m in enumerate(t.materials):
        pooled = np.concatenate([np.interp(u, levels, per_region[r, j])
                                 for r in range(len(t.regions))])
        want = np.quantile(pooled, [0.05, 0.25, 0.5, 0.75, 0.95])
        got = g.loc[m, ["p05", "p25", "p50", "p75", "p95"]].to_numpy()
        np.testing.assert_allclose(got, want, rtol=0.01, atol=0.01)
        assert g.loc[m, "p00"] == pytest.approx(per_region[:, j, 0].min())
        assert g.loc[m, "p100"] == pytest.approx(per_region[:, j, -1].max())


def test_three_percentile_tables_are_extended() -> None:
    t = _tiny()
    q = t.percentiles("RS", "C", "X_REG")
    assert q.loc["concrete", "p25"] == pytest.approx(500 + (0.2 / 0.45) * 500)
    assert q.loc["concrete", "p00"] == pytest.approx(500 - (0.05 / 0.45) * 500)
    assert q.loc["concrete", "p100"] == pytest.approx(1500 + (0.05 / 0.45) * 500)
    out = t.simulate_stock([10.0], "RS", "C", "X_REG", floors=[1])
    assert out.mass_concrete_kg.iloc[0] == 10_000.0
    assert out.embodied_co2e_kg.iloc[0] == pytest.approx(10_000 * 0.1 + 500 * 2.0)


def test_unknown_structure_code_is_an_error_not_a_fallback() -> None:
    with pytest.raises(InvalidInput) as e:
        default_table().simulate_stock([1.0], "RS", ["concrete"], "ASIA_CHN", floors=[1])
    assert e.value.field == "structure"
    with pytest.raises(InvalidInput) as e:
        default_table().simulate_stock([1.0, 2.0], "RS", "C", "ASIA_CHN", height_m=[1.0])
    assert e.value.field == "height_m"


def test_options_are_validated() -> None:
    for kw, fld in [({"draws": 1}, "draws"), ({"height_strata": 0}, "height_strata"),
                    ({"material_correlation": 2.0}, "material_correlation"),
                    ({"height_band": (1.2, 1.4)}, "height_band"),
                    ({"default_structure": "X"}, "default_structure")]:
        with pytest.raises(InvalidInput) as e:
            StockOptions(**kw)
        assert e.value.field == fld


# ---------------------------------------------------------------- MI library and mapping

def test_heeren_fishman_table_loads_with_the_same_keys() -> None:
    hf, rasmi = MaterialIntensityTable.load(source="heeren-fishman"), default_table()
    assert (hf.functions, hf.structures, hf.regions, hf.materials) == (
        rasmi.functions, rasmi.structures, rasmi.regions, rasmi.materials)
    mi = hf.intensity("RM", "C", "OECD_EU15")
    assert 100 < mi.loc["concrete", "p50"] < 3000
    with pytest.raises(InvalidInput):
        MaterialIntensityTable.load(source="nope")


def test_key_mapping(tmp_path) -> None:
    km = KeyMapping()
    got = km.structure(roof=["concrete_cement", "other", None, "healthy_metal"],
                       facade=["wood", None, "stucco", "unknown"])
    assert got.tolist() == ["T", "", "M", "M"]  # facade wins; unmapped → "" (unknown)
    assert km.function([1, 2, 3, 1], [100, 300, 100, 249]).tolist() == ["RS", "RM", "RM", "RS"]
    cfg = tmp_path / "map.json"
    cfg.write_text('{"roof_to_structure": {"healthy_metal": "S"}, "single_family_max_floors": 3}')
    km2 = KeyMapping.load(cfg)
    assert km2.structure(roof=["healthy_metal"]).tolist() == ["S"]
    assert km2.function([3], [100]).tolist() == ["RS"]
    cfg.write_text('{"roof_to_structure": {"healthy_metal": "steel"}}')
    with pytest.raises(InvalidInput):
        KeyMapping.load(cfg)
    cfg.write_text('{"colour": {}}')
    with pytest.raises(InvalidInput):
        KeyMapping.load(cfg)


def test_eq1_derivation_by_hand() -> None:
    inv = pd.DataFrame({
        "roof": ["tile", "tile", "flat", "flat"],
        "wall": ["brick", "brick", "concrete", "concrete"],
        "gfa_m2": [100.0, 300.0, 200.0, 50.0],
        "concrete": [10_000.0, 50_000.0, 200_000.0, np.nan],
        "brick": [40_000.0, 80_000.0, 0.0, 1_000.0],
    })
    mi = derive_intensity(inv, ["concrete", "brick"])
    row = mi.set_index(["roof", "wall", "material"])
    assert row.loc[("tile", "brick", "concrete"), "mi_kg_per_m2"] == pytest.approx(60_000 / 400)
    assert row.loc[("tile", "brick", "brick"), "mi_kg_per_m2"] == pytest.approx(120_000 / 400)
    # NaN concrete: that building is left out of the concrete ratio (numerator and area).
    assert row.loc[("flat", "concrete", "concrete"), "mi_kg_per_m2"] == pytest.approx(1000.0)
    assert row.loc[("flat", "concrete", "concrete"), "buildings"] == 1
    assert row.loc[("flat", "concrete", "brick"), "mi_kg_per_m2"] == pytest.approx(1_000 / 250)
    total, used = type_table(mi)
    assert total.loc["tile", "brick"] == pytest.approx(150 + 300)
    assert used.loc["flat", "concrete"] == 2 and used.loc["tile", "brick"] == 2
    with pytest.raises(InvalidInput):
        derive_intensity(inv.assign(gfa_m2=[0.0, 1, 1, 1]), ["concrete"])
