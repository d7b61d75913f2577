"""Out-of-domain abstention (issue 18, item 2) and bad imagery, from the core to the table:
roof and façade calls, function and age, the table's columns, a chip of nodata or of another
band count."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import box

from urbanfabric.io.rasters import Raster
from urbanfabric.materials.chips import chips_from_rasters
from urbanfabric.materials.facades import decode_facades
from urbanfabric.materials.roofs import FEATURES_OUT_OF_DOMAIN, UNKNOWN, Taxonomy, classify_roofs, decode_calls

REPO = Path(__file__).resolve().parents[3]
UTM = CRS.from_epsg(32650)
GRID = Affine(0.5, 0, 500000, 0, -0.5, 2700050)


def _house() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"building_id": ["house"]}, geometry=[box(500010, 2700010, 500030, 2700030)], crs=32650)


def test_a_roof_call_out_of_domain_is_unknown_with_its_probability_and_score_kept():
    probs = np.array([[0.2, 0.8], [0.7, 0.3], [0.5, 0.5]])
    calls = decode_calls(["far", "near", "no chip"], probs, ["flat", "hip"], Taxonomy("plain", {}),
                         ["", "", "no imagery covers the footprint"], np.array([0.9, 0.1, np.nan]), 0.5)
    far, near, none = calls
    assert far.material == UNKNOWN and far.unknown_reason == FEATURES_OUT_OF_DOMAIN
    assert far.unknown_reason.startswith("out_of_domain")
    assert far.probability == pytest.approx(0.8) and far.model_class == "hip" and far.probabilities["hip"] == 0.8
    assert far.ood_score == pytest.approx(0.9)
    assert near.material == "flat" and near.unknown_reason == "" and near.ood_score == pytest.approx(0.1)
    assert none.material == UNKNOWN and np.isnan(none.ood_score) and none.probability == 0.0
    # Without statistics (no scores, threshold inf) nothing abstains.
    assert [c.material for c in decode_calls(["a"], probs[:1], ["flat", "hip"], Taxonomy("plain", {}))] == ["hip"]


def test_classify_roofs_takes_scores_from_the_classifier_and_the_threshold_from_the_config():
    image = Raster(np.full((3, 100, 100), 0.5, np.float32), GRID, UTM)
    config = {"classes": ["flat", "hip"], "chip_size": 32, "ood": {"file": "domain.npz", "threshold": 0.3}}

    def classify(chips):
        return np.tile([0.4, 0.6], (len(chips), 1)), np.full(len(chips), 0.31)

    call = classify_roofs(_house(), [("a.tif", lambda: image)], config, classify, Taxonomy("plain", {}))[0]
    assert call.material == UNKNOWN and call.unknown_reason.startswith("out_of_domain")
    assert call.probability == pytest.approx(0.6)
    config["ood"]["threshold"] = 0.5
    assert classify_roofs(_house(), [("a.tif", lambda: image)], config, classify, Taxonomy("plain", {}))[0].material == "hip"


def test_a_chip_of_nodata_or_of_another_band_count_gets_a_reason_not_a_class():
    grey = np.full((1, 100, 100), 0.5, np.float32)
    four = np.full((4, 100, 100), 0.5, np.float32)
    mostly_nodata = np.full((3, 100, 100), 0.5, np.float32)
    mostly_nodata[:, :, :50] = np.nan  # the house's box: 80 % nodata
    mostly_nodata[:, 40:80, 50:56] = 0.5
    for data, needle in ((grey, "has 1 band; the roof models read 3"), (four, "has 4 bands"),
                         (mostly_nodata, "mostly nodata")):
        img = Raster(data, GRID, UTM)
        chips, reasons = chips_from_rasters(_house(), [("x.tif", lambda img=img: img)], size=32)
        assert needle in reasons[0] and not chips[0].any(), reasons
    # The classifier is never called for them.
    called = []
    calls = classify_roofs(_house(), [("x.tif", lambda: Raster(grey, GRID, UTM))], {"classes": ["a"], "chip_size": 32},
                           lambda x: called.append(x) or np.ones((len(x), 1)), Taxonomy("plain", {}))
    assert calls[0].material == UNKNOWN and "band" in calls[0].unknown_reason and not called
    # A good RGB image after the bad one still gives the chip.
    good = Raster(np.full((3, 100, 100), 0.5, np.float32), GRID, UTM)
    _, reasons = chips_from_rasters(_house(), [("grey.tif", lambda: Raster(grey, GRID, UTM)), ("rgb.tif", lambda: good)], 32)
    assert reasons == [""]


def test_facade_views_out_of_domain_are_left_out_and_all_of_them_make_the_building_unknown():
    labels = ["brick", "null", "stucco"]
    views = {"street": [np.array([0.9, 0.1, 0.2]), np.array([0.1, 0.1, 0.8])],  # 2nd view: no façade-like photo
             "aerial": [np.array([0.7, 0.1, 0.3])],
             "none": []}
    scores = {"street": [0.2, 0.9], "aerial": [0.95], "none": []}
    calls = {c.building_id: c for c in decode_facades(list(views), views, labels, Taxonomy("t", {}),
                                                      scores=scores, ood_threshold=0.5)}
    street, aerial = calls["street"], calls["aerial"]
    assert street.material == "brick" and street.views_used == 1 and street.ood_score == pytest.approx(0.2)
    assert aerial.material == UNKNOWN and aerial.unknown_reason == FEATURES_OUT_OF_DOMAIN
    assert aerial.probability == pytest.approx(0.7) and aerial.probabilities["brick"] == pytest.approx(0.7)
    assert aerial.ood_score == pytest.approx(0.95)
    assert calls["none"].material == UNKNOWN and np.isnan(calls["none"].ood_score)


def _attributes_table(function_threshold: float, age_threshold: float):
    from urbanfabric.attributes.age import AgeModel
    from urbanfabric.attributes.batch import AttributeModels, predict_attributes
    from urbanfabric.attributes.function import FunctionModel
    from urbanfabric.attributes.height import HeightModel
    from urbanfabric.io.model_repository import model_dir

    fm = FunctionModel.load(model_dir("building_function", "v2"))
    am = AgeModel.load(model_dir("building_age", "v3"))
    fm.domain.threshold, am.domain.threshold = function_threshold, age_threshold
    hm = HeightModel.load(model_dir("height_xgb", "v1"))
    lon, lat, d = 24.94, 60.17, 0.0002
    fps = gpd.GeoDataFrame({"building_id": [f"b{i}" for i in range(8)]},
                           geometry=[box(lon + i * 2 * d, lat, lon + i * 2 * d + d, lat + d) for i in range(8)],
                           crs="EPSG:4326")
    table, _ = predict_attributes(fps, AttributeModels(hm, fm, am))
    return table


def test_function_and_age_out_of_domain_are_empty_with_a_reason_the_probabilities_kept():
    if not (REPO / "models/building_function/v2/domain.npz").is_file():
        pytest.skip("shipped function/age v2 absent")
    kept = _attributes_table(np.inf, np.inf)
    assert (kept["function"] != "").all() and (kept["function_unknown_reason"] == "").all()
    assert np.isfinite(kept["function_ood_score"].astype(float)).all()
    out = _attributes_table(-1.0, -1.0)  # every footprint above the threshold
    assert (out["function"] == "").all() and (out["age_class"] == "").all()
    assert out["function_unknown_reason"].str.startswith("out_of_domain").all()
    assert out["age_class_unknown_reason"].str.startswith("out_of_domain").all()
    assert (out["rasmi_function"] == "").all()  # the stock falls back to its size rule
    np.testing.assert_allclose(out["function_probability"].astype(float), kept["function_probability"].astype(float))
    np.testing.assert_allclose(out["age_class_ood_score"].astype(float), kept["age_class_ood_score"].astype(float))
    assert np.isfinite(out["p_function_residential"].astype(float)).all()
    # Deterministic: the same footprints give the same scores.
    again = _attributes_table(np.inf, np.inf)
    np.testing.assert_array_equal(again["function_ood_score"].astype(float), kept["function_ood_score"].astype(float))


def test_the_table_carries_scores_reasons_and_kept_probabilities():
    from types import SimpleNamespace as NS

    from urbanfabric.outputs.buildings_table import assemble

    fp = gpd.GeoDataFrame({"building_id": ["a", "b"]}, geometry=[box(0, 0, 1, 1), box(2, 2, 3, 3)], crs=4326)
    roofs = [NS(building_id="a", material=UNKNOWN, probability=0.8, taxonomy_code="", unknown_reason=FEATURES_OUT_OF_DOMAIN,
                shape="hip", shape_probability=0.9, shape_unknown_reason="", ood_score=0.7, shape_ood_score=0.1),
             NS(building_id="b", material=UNKNOWN, probability=0.0, taxonomy_code="", unknown_reason="no imagery",
                shape=UNKNOWN, shape_probability=0.0, shape_unknown_reason="no imagery", ood_score=float("nan"),
                shape_ood_score=float("nan"))]
    attrs = [NS(building_id=b, height_m=9.0, height_p05=8.0, height_p95=10.0, floors=3, function="",
                function_probability=0.6, storey_height_m=3.0, year_built=1990.0, year_built_p05=1980.0,
                year_built_p95=2000.0, age_class="", age_class_probability=0.5, height_source="", height_source_reason="",
                function_unknown_reason="out_of_domain: x" if b == "a" else "", function_ood_score=5.0,
                age_class_unknown_reason="out_of_domain: x" if b == "a" else "", age_class_ood_score=4.0)
             for b in ("a", "b")]
    model = NS(name="", version="")
    task = NS(roof_model=model, roof_shape_model=model, facade_model=model, height_model=NS(name="h", version="v1"),
              structure_model=model, region="ASIA_CHN")
    t = assemble(fp, roofs, attrs, [], task, "j").set_index("building_id")
    assert t.loc["a", "roof_material_probability"] == 0.8 and t.loc["a", "roof_material_ood_score"] == 0.7
    assert t.loc["a", "roof_material_unknown_reason"].startswith("out_of_domain")
    assert t.loc["a", "roof_shape_ood_score"] == 0.1
    assert np.isnan(t.loc["b", "roof_material_probability"]) and np.isnan(t.loc["b", "roof_material_ood_score"])
    assert t.loc["a", "building_function"] is None and t.loc["a", "building_function_probability"] == 0.6
    assert t.loc["a", "building_function_unknown_reason"].startswith("out_of_domain")
    assert t.loc["a", "age_class_unknown_reason"].startswith("out_of_domain") and t.loc["a", "age_class_ood_score"] == 4.0
    assert t.loc["b", "building_function_unknown_reason"] is None and np.isnan(t.loc["b", "building_function_probability"])
    for col in ("roof_material_ood_score", "roof_shape_ood_score", "facade_material_ood_score",
                "building_function_ood_score", "age_class_ood_score", "building_function_unknown_reason",
                "age_class_unknown_reason"):
        assert col in t.columns
