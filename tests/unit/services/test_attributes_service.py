"""Attributes service end to end in-process: every attribute per building, bad rows reported,
and the building worker's RASMI key from the predicted function."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import LineString, Polygon, box
from urbanfabric.attributes.batch import AttributeModels, predict_attributes
from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.io.model_repository import model_dir
from urbanfabric.io.geoparquet import geoparquet_bytes
from urbanfabric.v1 import attributes_pb2 as pb

from services.attributes.server import AttributesServicer, height_model
from services.workers.building_worker import rasmi_function_of
from urbanfabric.outputs.buildings_table import assemble

SHIPPED = all((model_dir(*m) / "meta.json").is_file() for m in (
    ("height_xgb", "v1"), ("building_function", "v1"), ("building_age", "v1")))
needs_models = pytest.mark.skipif(not SHIPPED, reason="shipped attribute models absent")


class _Ctx:
    def time_remaining(self):
        return 10.0

    def abort(self, code, msg):
        raise RuntimeError(f"{code.name}: {msg}")


class _Store:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def get_bytes(self, key: str) -> bytes:
        return self.blob


def _footprints(n: int = 12) -> gpd.GeoDataFrame:
    lon, lat, d = 24.94, 60.17, 0.0002
    geoms = [box(lon + i * 2 * d, lat + (i % 3) * 2 * d, lon + i * 2 * d + d, lat + (i % 3) * 2 * d + d)
             for i in range(n)]
    return gpd.GeoDataFrame({"building_id": [f"b{i}" for i in range(n)]}, geometry=geoms,
                            crs="EPSG:4326")


def _request(**kw) -> pb.PredictAttributesRequest:
    r = pb.PredictAttributesRequest(**kw)
    r.job.job_id = "j"
    r.footprints.uri = "s3://bucket/f.parquet"
    r.height_model.name, r.height_model.version = "height_xgb", "v1"
    return r


@needs_models
def test_service_returns_every_attribute_with_uncertainty_and_reports_bad_rows():
    fp = _footprints()
    bowtie = Polygon([(24.95, 60.17), (24.9502, 60.1702), (24.9502, 60.17), (24.95, 60.1702)])
    bad = gpd.GeoDataFrame({"building_id": ["bow", "line", "none"]},
                           geometry=[bowtie, LineString([(24.95, 60.17), (24.951, 60.17)]), None],
                           crs="EPSG:4326")
    blob = geoparquet_bytes(gpd.GeoDataFrame(
        gpd.pd.concat([fp, bad], ignore_index=True), crs="EPSG:4326"))
    resp = AttributesServicer(_Store(blob)).PredictAttributes(_request(), _Ctx())
    assert len(resp.buildings) == 13  # 12 + the repaired bow-tie
    rep = resp.report
    assert (rep.n_in, rep.n_out, rep.repaired, rep.dropped_not_polygonal, rep.dropped_empty) == \
        (15, 13, 1, 1, 1)
    assert sorted(rep.dropped_building_ids) == ["line", "none"]
    assert list(rep.models) == ["height_xgb:v1", "building_function:v2", "building_age:v3"]
    for b in resp.buildings:
        # v2 scores every footprint; out of its domain the class is empty, with the reason.
        assert b.function_ood_score == b.function_ood_score and b.age_class_ood_score == b.age_class_ood_score
        if b.function_unknown_reason:
            assert b.function_unknown_reason.startswith("out_of_domain") and b.function == ""
            assert b.rasmi_function == "" and len(b.function_probabilities) == 6
            continue
        assert 0 < b.height_p05 <= b.height_m <= b.height_p95 or b.height_p05 <= b.height_p95
        assert b.height_m >= 2.5 and b.floors >= 1
        assert b.function in ("residential", "commercial", "office", "industrial", "public",
                              "other")
        assert sum(p.probability for p in b.function_probabilities) == pytest.approx(1, abs=1e-4)
        assert b.function_probability == max(p.probability for p in b.function_probabilities)
        assert b.storey_height_m > 0
        assert b.floors == max(1, math.floor(b.height_m / b.storey_height_m + 0.5))
        assert 1900 < b.year_built < 2030 and b.year_built_p05 <= b.year_built_p95
        assert (b.age_class or b.age_class_unknown_reason.startswith("out_of_domain")) \
            and len(b.age_class_probabilities) == 5
        assert b.rasmi_function == ("NR" if b.function != "residential" else
                                    "RS" if b.floors <= 2 and b.footprint_area_m2 < 250 else "RM")


@needs_models
def test_one_storey_height_for_all_overrides_the_function_table():
    blob = geoparquet_bytes(_footprints(6))
    resp = AttributesServicer(_Store(blob)).PredictAttributes(
        _request(storey_height_m=2.0), _Ctx())
    assert {b.storey_height_m for b in resp.buildings} == {2.0}


def test_unknown_function_model_is_named(tmp_path):
    blob = geoparquet_bytes(_footprints(3))
    req = _request()
    req.function_model.name, req.function_model.version = "building_function", "v999"
    with pytest.raises((NotFound, RuntimeError), match="function_model"):
        AttributesServicer(_Store(blob)).PredictAttributes(req, _Ctx())


@needs_models
def test_without_function_and_age_models_columns_are_empty_not_zero():
    fp = _footprints(5)
    table, _ = predict_attributes(fp, AttributeModels(height_model("height_xgb", "v1")))
    assert (table["function"] == "").all() and table["function_probability"].isna().all()
    assert table["year_built"].isna().all() and (table["age_class"] == "").all()
    assert (table["storey_height_m"] == 3.0).all() and (table["height_m"] > 0).all()
    with pytest.raises(InvalidInput, match="storey_height_m"):
        predict_attributes(fp, AttributeModels(height_model("height_xgb", "v1")),
                           storey_height_m=-1)


def test_worker_maps_predicted_function_to_rasmi_with_fallback():
    def a(key: str, floors: int, area: float) -> pb.BuildingAttributes:
        return pb.BuildingAttributes(building_id="x", rasmi_function=key, floors=floors,
                                     footprint_area_m2=area)

    assert rasmi_function_of(a("NR", 1, 100.0)) == "NR"
    assert rasmi_function_of(a("RM", 1, 100.0)) == "RM"
    assert rasmi_function_of(a("", 1, 100.0)) == "RS"  # no function model: size rule
    assert rasmi_function_of(a("", 9, 100.0)) == "RM"  # ... which never guesses NR


def test_worker_table_carries_function_and_age_columns():
    from urbanfabric.v1 import tasks_pb2

    fp = _footprints(2)
    attrs = [pb.BuildingAttributes(building_id="b0", height_m=9.0, height_p05=8.0,
                                   height_p95=10.0, floors=3, function="office",
                                   function_probability=0.7, storey_height_m=3.6,
                                   year_built=1990.0, year_built_p05=1980.0,
                                   year_built_p95=1999.0, age_class="1986-1990",
                                   age_class_probability=0.4),
             pb.BuildingAttributes(building_id="b1", height_m=6.0, height_p05=5.0,
                                   height_p95=7.0, floors=2)]
    task = tasks_pb2.BuildingBatch(batch_id="0", region="ASIA_CHN")
    task.job.job_id = "j"
    t = assemble(fp, [], attrs, [], task, task.job.job_id).set_index("building_id")
    assert t.loc["b0", "building_function"] == "office" and t.loc["b0", "year_built"] == 1990.0
    assert t.loc["b0", "age_class"] == "1986-1990"
    # No function / age model for b1: missing, never a zero year or an empty-string class.
    assert t.loc["b1", "building_function"] is None or np.isnan(t.loc["b1", "year_built"])
    assert np.isnan(t.loc["b1", "year_built"]) and t.loc["b1", "age_class"] is None


class _KeyStore:
    """Object store fake answering per key."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def get_bytes(self, key: str) -> bytes:
        return self.blobs[key]


@needs_models
def test_measured_heights_in_the_request_replace_model_heights():
    fps = _footprints(4)
    measured = gpd.GeoDataFrame({"height_m": [42.0]}, geometry=[fps.geometry.iloc[1]],
                                crs="EPSG:4326").to_crs(3067)
    store = _KeyStore({"f.parquet": geoparquet_bytes(fps),
                       "m.geojson": measured.to_json().encode()})
    req = _request()
    req.measured_heights.uri = "s3://bucket/m.geojson"
    out = AttributesServicer(store).PredictAttributes(req, _Ctx())
    srcs = [b.height_source for b in out.buildings]
    assert srcs == ["model_footprint", "measured", "model_footprint", "model_footprint"]
    assert out.buildings[1].height_m == pytest.approx(42.0)
    assert out.buildings[0].height_source_reason == "height model uses no imagery"
    req.measured_heights_unit = "storeys"
    with pytest.raises(Exception, match="height_source.unit"):
        AttributesServicer(store).PredictAttributes(req, _Ctx())


def test_worker_table_carries_the_height_source():
    from urbanfabric.v1 import tasks_pb2

    fp = _footprints(2)
    attrs = [pb.BuildingAttributes(building_id="b0", height_m=9.0, height_p05=8.0, height_p95=10.0,
                                   floors=3, height_source="model_image"),
             pb.BuildingAttributes(building_id="b1", height_m=6.0, height_p05=2.0, height_p95=19.0,
                                   floors=2, height_source="model_footprint",
                                   height_source_reason="nodata under the footprint")]
    task = tasks_pb2.BuildingBatch(batch_id="0", region="ASIA_CHN")
    task.job.job_id = "j"
    t = assemble(fp, [], attrs, [], task, task.job.job_id).set_index("building_id")
    assert t.loc["b0", "height_source"] == "model_image" and t.loc["b0", "height_source_reason"] is None
    assert t.loc["b1", "height_source_reason"] == "nodata under the footprint"


V4 = (model_dir("height_xgb", "v4") / "meta.json").is_file()


def _geotiff(data: np.ndarray, transform, crs: str) -> bytes:
    from rasterio.io import MemoryFile

    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=data.shape[2], height=data.shape[1], count=3,
                      dtype="float32", crs=crs, transform=transform, nodata=float("nan")) as dst:
            dst.write(data.astype("float32"))
        return mem.read()


@pytest.mark.skipif(not V4, reason="height_xgb v4 not shipped")
def test_image_height_model_reads_the_batch_imagery_and_falls_back_with_reasons():
    from tests.unit.attributes.test_image_evidence import X0, Y0, footprint, scene

    img, t = scene(30.0)
    fps = gpd.GeoDataFrame({"building_id": ["in", "out"]},
                           geometry=[footprint(), box(X0 + 2000, Y0, X0 + 2020, Y0 + 20)],
                           crs="EPSG:32650").to_crs(4326)
    store = _KeyStore({"f.parquet": geoparquet_bytes(fps),
                       "a.tif": _geotiff(img, t, "EPSG:32650")})
    req = _request()
    req.height_model.version = "v4"
    req.images.add(uri="s3://bucket/a.tif")
    req.sun_azimuth_deg = 150.0
    out = AttributesServicer(store).PredictAttributes(req, _Ctx())
    b = {x.building_id: x for x in out.buildings}
    assert b["in"].height_source == "model_image" and b["in"].height_source_reason == ""
    assert b["out"].height_source == "model_footprint"
    assert b["out"].height_source_reason == "no imagery covers the footprint"
    # A geographic raster is not measured in pixels of unknown size: named, fallback.
    store.blobs["a.tif"] = _geotiff(img, t, "EPSG:4326")
    out = AttributesServicer(store).PredictAttributes(req, _Ctx())
    assert {x.height_source for x in out.buildings} == {"model_footprint"}
    assert all("imagery unusable" in x.height_source_reason for x in out.buildings)


@needs_models
def test_a_batch_with_its_context_and_area_gets_the_attributes_of_the_whole_job():
    """Two halves of a job sent as separate batches, each with the other half as context and
    the job's area frame, get the heights and years of one batch of the whole job."""
    job = _footprints(24)
    first, second = job.iloc[:12], job.iloc[12:]
    blobs = {"all.parquet": geoparquet_bytes(job), "a.parquet": geoparquet_bytes(first),
             "b.parquet": geoparquet_bytes(second)}
    w, s, e, n = job.total_bounds
    lon, lat = (w + e) / 2, (s + n) / 2

    def ask(key: str, context: str = "") -> dict:
        req = _request()
        req.footprints.uri = f"s3://bucket/{key}"
        if context:
            req.context_footprints.uri = f"s3://bucket/{context}"
        req.area.center_lon, req.area.center_lat, req.area.radius_m = lon, lat, 500.0
        return {b.building_id: (round(b.height_m, 6), round(b.year_built, 6))
                for b in AttributesServicer(_KeyStore(blobs)).PredictAttributes(req, _Ctx()).buildings}

    whole = ask("all.parquet")
    halves = {**ask("a.parquet", "b.parquet"), **ask("b.parquet", "a.parquet")}
    alone = {**ask("a.parquet"), **ask("b.parquet")}
    assert halves == whole
    assert alone != whole  # the bug: a batch alone is its own neighbourhood
    req = _request()
    req.area.center_lon, req.area.radius_m = 10.0, -5.0
    with pytest.raises(Exception, match="area.radius_m"):
        AttributesServicer(_KeyStore(blobs | {"f.parquet": geoparquet_bytes(first)})).PredictAttributes(req, _Ctx())


@needs_models
def test_a_named_age_version_from_the_model_store_is_the_one_that_runs(tmp_path, monkeypatch):
    """A job naming a learned age version (``building-age:v3-ft1``, registered in the model store by
    ``urbanfabric learn``) gets that version's years, named in the report; an unnamed one the default."""
    from urbanfabric.attributes import features
    from urbanfabric.attributes.age import AgeModel
    from services.attributes import server

    fp = _footprints()
    X = features.footprint_features(fp[["geometry"]], context=fp[["building_id", "geometry"]])
    learned = tmp_path / "building_age" / "v3-ftage1"
    AgeModel().fit(X[list(features.FEATURE_NAMES)], np.full(len(X), 1990.0), n_models=2,
                   num_boost_round=20).save(learned)
    shipped = server.version_folder
    monkeypatch.setattr(server, "version_folder",
                        lambda name, version: learned if version == "v3-ftage1" else shipped(name, version))
    blob = geoparquet_bytes(fp)
    named = _request()
    named.age_model.name, named.age_model.version = "building-age", "v3-ftage1"
    resp = AttributesServicer(_Store(blob)).PredictAttributes(named, _Ctx())
    assert "building-age:v3-ftage1" in resp.report.models and "building_age:v3" not in resp.report.models
    assert all(abs(b.year_built - 1990.0) < 1.0 for b in resp.buildings)
    default = AttributesServicer(_Store(blob)).PredictAttributes(_request(), _Ctx())
    assert "building_age:v3" in default.report.models
    assert any(abs(b.year_built - 1990.0) >= 1.0 for b in default.buildings)
    missing = _request()
    missing.age_model.name, missing.age_model.version = "building-age", "v3-ft99"
    with pytest.raises(RuntimeError, match="NOT_FOUND: age_model: building-age:v3-ft99"):
        AttributesServicer(_Store(blob)).PredictAttributes(missing, _Ctx())
