"""Building worker: stock inputs and the assembled buildings table (intensity service in-process)."""

from __future__ import annotations

import io
import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box
from urbanfabric.io.model_repository import model_dir
from urbanfabric.stock.intensity import MaterialIntensityTable
from urbanfabric.outputs.summary import MASS_PREFIX
from urbanfabric.v1 import attributes_pb2, intensity_pb2, materials_pb2, tasks_pb2

from services.intensity.server import IntensityServicer
from services.workers.building_worker import function_prior, stock_inputs
from urbanfabric.outputs.buildings_table import assemble


class _Ctx:
    def time_remaining(self):
        return 10.0

    def abort(self, code, msg):
        raise RuntimeError(f"{code.name}: {msg}")


def _batch():
    lon, lat, d = 118.10, 24.485, 0.0002
    footprints = gpd.GeoDataFrame(
        {"building_id": ["a", "b", "c"], "footprint_source": "segmented"},
        geometry=[box(lon, lat, lon + d, lat + d), box(lon + 2 * d, lat, lon + 3 * d, lat + d),
                  box(lon + 4 * d, lat, lon + 6 * d, lat + 2 * d)], crs="EPSG:4326")
    attrs = [
        attributes_pb2.BuildingAttributes(building_id="a", footprint_area_m2=450.0, height_m=6.2,
                                          height_p05=4.9, height_p95=8.0, floors=2),
        attributes_pb2.BuildingAttributes(building_id="b", footprint_area_m2=120.0, height_m=3.1,
                                          height_p05=2.6, height_p95=4.4, floors=1),
        attributes_pb2.BuildingAttributes(building_id="c", footprint_area_m2=900.0, height_m=31.0,
                                          height_p05=22.0, height_p95=40.0, floors=10),
    ]
    roofs = [materials_pb2.RoofMaterial(building_id="a", material="concrete_cement", probability=0.8,
                                        has_imagery=True),
             materials_pb2.RoofMaterial(building_id="b", material="other", probability=0.4,
                                        has_imagery=True)]
    task = tasks_pb2.BuildingBatch(batch_id="0", region="ASIA_CHN")
    task.job.job_id = "job1"
    task.height_model.name, task.height_model.version = "height-xgb", "v1"
    return footprints, attrs, roofs, task


def test_stock_inputs_carry_heights_location_and_the_function_prior():
    footprints, attrs, roofs, _ = _batch()
    inputs = {i.building_id: i for i in stock_inputs(footprints, attrs, roofs)}
    a = inputs["a"]
    assert (a.height_m, a.height_p05, a.height_p95, a.floors) == (6.2, 4.9, 8.0, 2)
    assert a.roof_material == "concrete_cement" and inputs["c"].roof_material == ""
    assert a.function == function_prior(2, 450.0) == "RM" and inputs["b"].function == "RS"
    assert 118.1 < a.longitude < 118.1002 and 24.485 < a.latitude < 24.4852
    # Footprints in a metric CRS are brought back to WGS84 for the location.
    metric = stock_inputs(footprints.to_crs(32650), attrs, roofs)
    assert metric[0].longitude == pytest.approx(a.longitude, abs=1e-6)
    # Roof shape and the footprint's main axis go along for the solar potential.
    assert a.HasField("main_axis_deg") and 0 <= a.main_axis_deg < 180
    turn = abs(metric[0].main_axis_deg - a.main_axis_deg) % 180.0  # an axis: 0° ≡ 180°
    assert min(turn, 180.0 - turn) < 1.0
    assert a.roof_shape == ""  # the roof answers carry no shape here: unknown


def test_assembled_table_has_point_estimates_ranges_co2e_solar_and_fallbacks():
    footprints, attrs, roofs, task = _batch()
    req = intensity_pb2.EstimateStockRequest(buildings=stock_inputs(footprints, attrs, roofs),
                                             region="ASIA_CHN", job=task.job)
    stock = IntensityServicer().EstimateStock(req, _Ctx()).buildings
    table = assemble(footprints, roofs, attrs, stock, task, task.job.job_id)
    assert len(table) == 3 and table.crs.to_epsg() == 4326
    t = MaterialIntensityTable.load()
    assert len(t.materials) >= 8
    np.testing.assert_allclose(table.gfa_m2, [450.0 * 2, 120.0 * 1, 900.0 * 10])  # area × floors
    for row in table.itertuples():
        mi = t.intensity(row.function, row.structure, "ASIA_CHN")["p50"]
        for m in t.materials:
            mass = getattr(row, f"mass_{m}_kg")
            assert mass == pytest.approx(mi[m] * row.gfa_m2, rel=1e-9)
            assert getattr(row, f"mass_{m}_kg_p05") <= getattr(row, f"mass_{m}_kg_mc_p50") \
                <= getattr(row, f"mass_{m}_kg_p95")
    # The summary's rule for mass columns picks exactly the 8 point estimates.
    mass_cols = [c for c in table.columns
                 if c.startswith(MASS_PREFIX) and c.endswith("_kg") and c != "mass_total_kg"]
    assert len(mass_cols) == len(t.materials)
    np.testing.assert_allclose(table[mass_cols].sum(axis=1), table.mass_total_kg, rtol=1e-9)
    assert (table.embodied_co2e_kg_p05 < table.embodied_co2e_kg_p95).all()
    assert (table.solar_kwh_per_year > 0).all()
    fb = dict(zip(table.building_id, table.fallback))
    assert "structure_default" in fb["b"] and "structure_default" in fb["c"]  # "other", no roof
    assert "structure_default" not in fb["a"]
    # No PVOUT source configured: PVOUT from the place, named; no roof shape: flat assumed.
    assert all("pvout_clear_sky_climate" in f and "roof_shape_unknown_flat" in f for f in fb.values())
    assert (table.solar_source == "clear_sky_climate").all() and (table.solar_kwp > 0).all()


def test_assemble_with_no_buildings_keeps_the_footprints():
    footprints, _, _, task = _batch()
    out = assemble(footprints.iloc[:0], [], [], [], task, task.job.job_id)
    assert len(out) == 0 and "roof_material" in out.columns


def test_the_age_model_the_attributes_service_ran_is_recorded_for_the_fine_tune():
    footprints, attrs, roofs, task = _batch()
    ran = ["height-xgb:v4", "building_function:v2", "building_age:v3"]
    versions = json.loads(assemble(footprints, roofs, attrs, [], task, "j", attribute_models=ran)["model_versions"].iloc[0])
    assert versions["age"] == "building-age:v3"
    assert json.loads(assemble(footprints, roofs, attrs, [], task, "j")["model_versions"].iloc[0])["age"] is None


def test_unknown_roofs_and_facades_keep_their_reasons_and_reach_intensity_as_unknown():
    footprints, attrs, roofs, task = _batch()
    roofs = list(roofs) + [materials_pb2.RoofMaterial(
        building_id="c", material="unknown", unknown_reason="no imagery covers the footprint",
        shape="unknown", shape_unknown_reason="no imagery covers the footprint")]
    roofs[0].shape, roofs[0].shape_probability = "flat", 0.7
    facades = [materials_pb2.FacadeMaterial(building_id="a", material="brick", probability=0.9,
                                            taxonomy_code="1", materials=["brick", "stucco"], views_used=2),
               materials_pb2.FacadeMaterial(building_id="b", material="unknown",
                                            unknown_reason="no street-level view of the building")]
    inputs = {i.building_id: i for i in stock_inputs(footprints, attrs, roofs, facades)}
    assert inputs["c"].roof_material == "" and inputs["b"].facade_material == ""
    assert inputs["a"].facade_material == "brick"
    task.facade_model.name, task.facade_model.version = "facade-material", "v1"
    stock = IntensityServicer().EstimateStock(intensity_pb2.EstimateStockRequest(
        buildings=list(inputs.values()), region="ASIA_CHN", job=task.job), _Ctx()).buildings
    t = assemble(footprints, roofs, attrs, stock, task, task.job.job_id, facades).set_index("building_id")
    assert t.loc["c", "roof_material"] == "unknown" and np.isnan(t.loc["c", "roof_material_probability"])
    assert t.loc["c", "roof_material_unknown_reason"] == "no imagery covers the footprint"
    assert t.loc["a", "roof_shape"] == "flat" and t.loc["a", "roof_shape_probability"] == pytest.approx(0.7)
    assert t.loc["a", "facade_materials"] == "brick,stucco" and t.loc["a", "facade_material_code"] == "1"
    assert t.loc["b", "facade_material_unknown_reason"] == "no street-level view of the building"
    assert t.loc["c", "facade_material"] is None or pd.isna(t.loc["c", "facade_material"])  # not in the answer
    assert '"facade": "facade-material:v1"' in t["model_versions"].iloc[0]


def test_stock_inputs_carry_the_year_and_the_probability_of_housing_for_the_structure_and_the_draws():
    footprints, attrs, roofs, _ = _batch()
    attrs[0].year_built = 1994.0
    attrs[0].function_probabilities.add(label="residential", probability=0.7)
    attrs[0].function_probabilities.add(label="commercial", probability=0.3)
    attrs[1].year_built = float("nan")  # no age model: unknown, not year 0
    inputs = {i.building_id: i for i in stock_inputs(footprints, attrs, roofs)}
    assert inputs["a"].year_built == 1994.0 and inputs["a"].p_residential == pytest.approx(0.7)
    assert inputs["b"].year_built == 0.0 and not inputs["b"].HasField("p_residential")


@pytest.mark.skipif(not all((model_dir(*m) / "meta.json").is_file() for m in (
    ("height_xgb", "v1"), ("building_age", "v2"), ("building_age", "v3"))), reason="shipped attribute models absent")
def test_the_worker_forwards_the_jobs_age_model_and_the_table_records_it(monkeypatch):
    """The flow's template carries the job's age model; the worker asks the attributes service
    (in-process) for it, and an older task without one gets the service's default."""
    from services.attributes.server import AttributesServicer
    from services.workers import building_worker
    from tests.fakes import MemoryStore
    from urbanfabric.io.geoparquet import geoparquet_bytes
    from urbanfabric.io.job_layout import JobLayout
    from urbanfabric.runtime.jobs import batch_template
    from urbanfabric.v1 import common_pb2

    footprints, _, _, _ = _batch()
    store = MemoryStore()
    servicers = {"attributes": AttributesServicer(store), "intensity": IntensityServicer()}
    asked = []

    class _Stub:
        def __init__(self, servicer):
            self.servicer = servicer

        def __getattr__(self, rpc):
            def answer(request, timeout=None):
                asked.append(request)
                return getattr(self.servicer, rpc)(request, _Ctx())
            return answer

    monkeypatch.setattr(building_worker, "ObjectStore", lambda settings: store)
    monkeypatch.setattr(building_worker, "stub", lambda settings, name: _Stub(servicers.get(name)))
    handle = building_worker.make_handler(None)  # type: ignore[arg-type]

    def run(task):
        task.batch_id, task.footprints.uri = "00000", store.put_bytes("f.parquet", geoparquet_bytes(footprints))
        result = handle(task)
        table = gpd.read_parquet(io.BytesIO(store.get_bytes(JobLayout("j").batch_buildings("00000"))))
        return result, json.loads(table["model_versions"].iloc[0])

    job = common_pb2.JobRef(job_id="j")
    named = batch_template(job, common_pb2.ModelRef(), common_pb2.ModelRef(name="height_xgb", version="v1"),
                           "ASIA_CHN", age_model=common_pb2.ModelRef(name="building-age", version="v2"))
    assert (named.age_model.name, named.age_model.version) == ("building-age", "v2")
    result, versions = run(named)
    assert result.status == tasks_pb2.TASK_STATUS_SUCCEEDED
    sent = [r for r in asked if isinstance(r, attributes_pb2.PredictAttributesRequest)]
    assert (sent[-1].age_model.name, sent[-1].age_model.version) == ("building-age", "v2")
    assert versions["age"] == "building-age:v2"
    # A task from before the job spec named an age model: the service's default, as before.
    old = batch_template(job, common_pb2.ModelRef(), common_pb2.ModelRef(name="height_xgb", version="v1"), "ASIA_CHN")
    assert not old.HasField("age_model")
    assert run(old)[1]["age"] == "building-age:v3"
