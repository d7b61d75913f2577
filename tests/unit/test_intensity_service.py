import re

import pytest

from services.intensity.server import IntensityServicer
from urbanfabric.intensity import default_table
from urbanfabric.v1 import intensity_pb2 as pb


class _Ctx:
    def time_remaining(self):
        return 10.0

    def abort(self, code, msg):
        raise RuntimeError(f"{code.name}: {msg}")


def _req(**kw):
    r = pb.EstimateStockRequest(region=kw.pop("region", "ASIA_CHN"), buildings=kw.pop("buildings"))
    r.job.job_id = "j"
    return r


def test_masses_are_intensity_times_gfa():
    svc = IntensityServicer()
    req = _req(buildings=[pb.StockInput(building_id="a", footprint_area_m2=100, floors=3, function="RM",
                                        roof_material="concrete_cement")])
    b = svc.EstimateStock(req, _Ctx()).buildings[0]
    assert b.gfa_m2 == 300 and b.structure == "C"
    mi = default_table().intensity("RM", "C", "ASIA_CHN")["p50"]
    for m in b.masses:
        assert m.kg == pytest.approx(mi[m.material] * 300)
        assert m.kg_p05 <= m.kg <= m.kg_p95
    assert b.mass_total_kg == pytest.approx(sum(m.kg for m in b.masses))
    assert b.embodied_co2e_kg > 0


@pytest.mark.parametrize("kw,field", [
    ({"region": "MARS", "buildings": [pb.StockInput(building_id="a", footprint_area_m2=1, floors=1, function="RS")]}, "region"),
    ({"buildings": [pb.StockInput(building_id="a", footprint_area_m2=1, floors=1, function="XX")]}, "function"),
    ({"buildings": [pb.StockInput(building_id="a", footprint_area_m2=1, floors=1)]}, "buildings[0].function"),
])
def test_bad_inputs_are_rejected_naming_the_field(kw, field):
    with pytest.raises(RuntimeError, match=f"INVALID_ARGUMENT: {re.escape(field)}"):
        IntensityServicer().EstimateStock(_req(**kw), _Ctx())
