import math
import re

import pytest
from urbanfabric.stock.intensity import default_table
from urbanfabric.stock.solar import ConstantPvout
from urbanfabric.v1 import intensity_pb2 as pb

from services.intensity.server import IntensityServicer


class _Ctx:
    def time_remaining(self):
        return 10.0

    def abort(self, code, msg):
        raise RuntimeError(f"{code.name}: {msg}")


def _req(**kw):
    r = pb.EstimateStockRequest(region=kw.pop("region", "ASIA_CHN"), buildings=kw.pop("buildings"), **kw)
    r.job.job_id = "j"
    return r


def _one(**kw):
    base = {"building_id": "a", "footprint_area_m2": 100, "floors": 3, "function": "RM",
            "roof_material": "concrete_cement", "height_m": 9.5, "height_p05": 7.0,
            "height_p95": 12.5, "longitude": 118.1, "latitude": 24.48}
    base.update(kw)
    return pb.StockInput(**base)


def test_masses_are_intensity_times_gfa_with_monte_carlo_ranges():
    svc = IntensityServicer()
    b = svc.EstimateStock(_req(buildings=[_one()]), _Ctx()).buildings[0]
    assert b.gfa_m2 == 300 and b.structure == "C" and b.function == "RM" and b.floors_used == 3
    # No PVOUT source configured: PVOUT from the place; no roof shape: flat roof assumed.
    assert b.valid and b.fallback == "pvout_clear_sky_climate;roof_shape_unknown_flat"
    assert b.solar_source == "clear_sky_climate" and b.solar_kwp == pytest.approx(10.0)
    mi = default_table().intensity("RM", "C", "ASIA_CHN")["p50"]
    assert len(b.masses) == 8
    for m in b.masses:
        assert m.kg == pytest.approx(mi[m.material] * 300)
        assert m.kg_p05 <= m.kg_mc_p50 <= m.kg_p95
    assert b.mass_total_kg == pytest.approx(sum(m.kg for m in b.masses))
    assert b.mass_total_kg_p05 < b.mass_total_kg_mc_p50 < b.mass_total_kg_p95
    assert 0 < b.embodied_co2e_kg_p05 < b.embodied_co2e_kg_mc_p50 < b.embodied_co2e_kg_p95
    assert 3.0 < b.pvout_kwh_per_kwp_day < 5.5
    assert b.solar_kwh_per_year == pytest.approx(b.pvout_kwh_per_kwp_day * 365 * 100 / 10 * 0.9)


def test_height_band_draws_and_seed_reach_the_library():
    svc = IntensityServicer()
    narrow = svc.EstimateStock(_req(buildings=[_one(height_p05=9.4, height_p95=9.6)]), _Ctx()).buildings[0]
    wide = svc.EstimateStock(_req(buildings=[_one(height_p05=4.0, height_p95=20.0)]), _Ctx()).buildings[0]
    assert wide.mass_total_kg_p95 > narrow.mass_total_kg_p95
    assert wide.mass_total_kg == narrow.mass_total_kg
    seeded = svc.EstimateStock(_req(buildings=[_one()], monte_carlo=pb.MonteCarloOptions(seed=5, draws=200)),
                               _Ctx()).buildings[0]
    default = svc.EstimateStock(_req(buildings=[_one()]), _Ctx()).buildings[0]
    assert seeded.mass_total_kg_p95 != default.mass_total_kg_p95


def test_calibrated_ranges_by_default_raw_on_request():
    svc = IntensityServicer()
    default = svc.EstimateStock(_req(buildings=[_one()]), _Ctx()).buildings[0]
    raw = svc.EstimateStock(_req(buildings=[_one()], monte_carlo=pb.MonteCarloOptions(raw_intensity_ranges=True)),
                            _Ctx()).buildings[0]
    assert default.mass_total_kg == raw.mass_total_kg  # the point estimate does not move
    assert default.mass_total_kg_p05 < raw.mass_total_kg_p05 and default.mass_total_kg_p95 > raw.mass_total_kg_p95


def test_fallbacks_are_reported_per_building():
    svc = IntensityServicer(pvout_source=ConstantPvout(4.0))
    req = _req(region="MARS", buildings=[
        _one(building_id="neg", footprint_area_m2=-3),
        _one(building_id="noheight", floors=0, height_m=0, height_p05=0, height_p95=0),
        _one(building_id="roof", roof_material="thatch"),
        _one(building_id="nowhere", longitude=0, latitude=0),
    ])
    out = {b.building_id: b for b in svc.EstimateStock(req, _Ctx()).buildings}
    tokens = {k: set(b.fallback.split(";")) for k, b in out.items()}
    assert not out["neg"].valid and math.isnan(out["neg"].mass_total_kg)
    assert {"area_invalid", "region_global", "roof_area_invalid"} <= tokens["neg"]
    assert {"height_missing", "region_global"} <= tokens["noheight"] and out["noheight"].valid
    assert out["noheight"].mass_total_kg > 0
    assert "structure_default" in tokens["roof"] and out["roof"].structure == "M"
    assert "pvout_default" in tokens["nowhere"] and out["nowhere"].pvout_kwh_per_kwp_day == 3.5
    assert out["roof"].pvout_kwh_per_kwp_day == 4.0 and "pvout_default" not in tokens["roof"]


def test_solar_parameters_from_the_request():
    svc = IntensityServicer()
    req = _req(buildings=[_one()], solar=pb.SolarParameters(pvout_kwh_per_kwp_day=5.0,
                                                          area_per_kwp_m2=20, no_losses=True))
    b = svc.EstimateStock(req, _Ctx()).buildings[0]
    assert b.solar_kwh_per_year == pytest.approx(5.0 * 365 * 100 / 20)
    assert b.fallback == "roof_shape_unknown_flat" and b.solar_source == "constant"


def test_roof_shape_and_main_axis_reach_the_solar_potential():
    svc = IntensityServicer(pvout_source=ConstantPvout(4.0))
    req = _req(buildings=[_one(building_id="ns", roof_shape="gable", main_axis_deg=90.0),
                          _one(building_id="ew", roof_shape="gable", main_axis_deg=0.0),
                          _one(building_id="noaxis", roof_shape="gable"),
                          _one(building_id="flat", roof_shape="flat")])
    out = {b.building_id: b for b in svc.EstimateStock(req, _Ctx()).buildings}
    assert out["ew"].solar_kwp == pytest.approx(2 * out["ns"].solar_kwp)  # the north face dropped
    assert out["noaxis"].fallback == "roof_axis_unknown_flat" and out["noaxis"].solar_kwp == 10
    assert out["flat"].fallback == "" and out["flat"].solar_source == "constant"
    plain = IntensityServicer().EstimateStock(_req(buildings=[_one()]), _Ctx()).buildings[0]
    cloudy = IntensityServicer().EstimateStock(
        _req(buildings=[_one()], solar=pb.SolarParameters(clear_sky_index=0.6)), _Ctx()).buildings[0]
    assert cloudy.pvout_kwh_per_kwp_day < 0.85 * plain.pvout_kwh_per_kwp_day
    assert cloudy.solar_source == plain.solar_source == "clear_sky_climate"
    with pytest.raises(Exception, match="clear_sky_index"):
        svc.EstimateStock(_req(buildings=[_one()], solar=pb.SolarParameters(clear_sky_index=1.5)),
                          _Ctx())


@pytest.mark.parametrize("kw,field", [
    ({"buildings": [pb.StockInput(building_id="a", footprint_area_m2=1, floors=1, function="XX")]}, "function"),
    ({"buildings": [pb.StockInput(building_id="a", footprint_area_m2=1, floors=1)]}, "buildings[0].function"),
    ({"buildings": [pb.StockInput(footprint_area_m2=1, floors=1, function="RS")]}, "buildings[0].building_id"),
    ({"buildings": [_one()], "monte_carlo": pb.MonteCarloOptions(draws=10**6)}, "monte_carlo.draws"),
    ({"buildings": [_one()], "intensity_source": "guesswork"}, "intensity_source"),
    ({"buildings": [_one(structure="Q")]}, "structure"),
])
def test_bad_inputs_are_rejected_naming_the_field(kw, field):
    with pytest.raises(RuntimeError, match=f"INVALID_ARGUMENT: {re.escape(field)}"):
        IntensityServicer().EstimateStock(_req(**kw), _Ctx())


def test_heeren_fishman_source():
    b = IntensityServicer().EstimateStock(_req(buildings=[_one()], intensity_source="heeren-fishman"),
                                          _Ctx()).buildings[0]
    from urbanfabric.stock.intensity import MaterialIntensityTable

    mi = MaterialIntensityTable.load(source="heeren-fishman").intensity("RM", "C", "ASIA_CHN")["p50"]
    conc = next(m for m in b.masses if m.material == "concrete")
    assert conc.kg == pytest.approx(mi["concrete"] * 300)


def test_clear_sky_index_from_the_environment(monkeypatch):
    monkeypatch.setenv("URBANFABRIC_CLEAR_SKY_INDEX", "0.6")
    cloudy = IntensityServicer().EstimateStock(_req(buildings=[_one()]), _Ctx()).buildings[0]
    monkeypatch.delenv("URBANFABRIC_CLEAR_SKY_INDEX")
    plain = IntensityServicer().EstimateStock(_req(buildings=[_one()]), _Ctx()).buildings[0]
    assert cloudy.pvout_kwh_per_kwp_day < 0.85 * plain.pvout_kwh_per_kwp_day
    monkeypatch.setenv("URBANFABRIC_CLEAR_SKY_INDEX", "cloudy")
    with pytest.raises(Exception, match="URBANFABRIC_CLEAR_SKY_INDEX"):
        IntensityServicer()


def test_a_structure_model_gives_probabilities_and_a_given_structure_is_kept():
    """structure-type:v1 (from the repository tree here): a 20-storey block is concrete with its
    probability; the same building with the structure given is costed with one class."""
    from urbanfabric.v1 import common_pb2

    svc = IntensityServicer()
    tall = dict(floors=20, height_m=60, height_p05=55, height_p95=65, function="NR", roof_material="")
    model = common_pb2.ModelRef(name="structure-type", version="v1")
    modelled, given = svc.EstimateStock(_req(buildings=[_one(**tall), _one(building_id="b", structure="C", **tall)],
                                             structure_model=model), _Ctx()).buildings
    assert modelled.structure == "C" and modelled.structure_source == "model"
    assert len(modelled.p_structure) == 4 and sum(modelled.p_structure) == pytest.approx(1.0)
    assert modelled.p_structure[1] <= 0.005 + 1e-9 and modelled.structure_probability > 0.8  # no masonry at 20 floors
    assert given.structure_source == "given" and not given.p_structure and given.structure_probability == 1.0
    low = svc.EstimateStock(_req(buildings=[_one(floors=2, height_m=6, height_p05=5, height_p95=7, roof_material="",
                                                 function="RS", p_residential=0.5)],
                                 structure_model=model), _Ctx()).buildings[0]
    assert max(low.p_structure) < 0.9  # a low house: an honest spread, not a certainty
    without = svc.EstimateStock(_req(buildings=[_one(**tall)]), _Ctx()).buildings[0]
    assert without.structure_source == "default" and not without.p_structure


def test_the_default_structure_model_v2_loads_through_weights_from():
    """structure-type:v2 has no classifier.json of its own (weights_from v1): the service still
    loads it and a tall block is concrete, less sure than v1."""
    from urbanfabric.v1 import common_pb2

    svc = IntensityServicer()
    tall = dict(floors=20, height_m=60, height_p05=55, height_p95=65, function="NR", roof_material="")
    p = {v: svc.EstimateStock(_req(buildings=[_one(**tall)],
                                   structure_model=common_pb2.ModelRef(name="structure-type", version=v)),
                              _Ctx()).buildings[0] for v in ("v1", "v2")}
    assert p["v2"].structure == "C" and p["v2"].p_structure[1] <= 0.005 + 1e-9
    assert 0.5 < p["v2"].structure_probability < p["v1"].structure_probability
