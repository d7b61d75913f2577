"""Function labels from OSM tags, the function classifier, floors per function, bad input."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import LineString, Point, Polygon, box
from urbanfabric.attributes.features import footprint_features, prepare_footprints
from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.attributes.function import (
    FUNCTION_CLASSES,
    FunctionMapping,
    FunctionModel,
    floors_for_function,
    function_labels,
    parse_other_tags,
    rasmi_function,
    read_osm_layers,
)

UTM = "EPSG:32633"
X0, Y0 = 500_000.0, 5_000_000.0
SHIPPED = Path(__file__).resolve().parents[3] / "models" / "building_function" / "v1"
OSM = Path(__file__).resolve().parents[4] / "shared" / "data" / "heights" / "osm-helsinki"


def _box(x: float, y: float, w: float = 10.0, h: float = 10.0) -> Polygon:
    return box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + h)


def test_other_tags_parse_quotes_and_commas():
    tags = parse_other_tags('"shop"=>"bakery","name"=>"A, \\"B\\"","building:levels"=>"4"')
    assert tags == {"shop": "bakery", "name": 'A, "B"', "building:levels": "4"}
    assert parse_other_tags(None) == {}


def test_labels_follow_source_priority():
    b = gpd.GeoDataFrame({
        "building": ["apartments", "yes", "yes", "yes", "yes"],
        "shop": [None, "bakery", None, None, None],
    }, geometry=[_box(0, 0), _box(100, 0), _box(200, 0), _box(300, 0), _box(900, 0)], crs=UTM)
    pois = gpd.GeoDataFrame({"amenity": ["school", "cafe", "school", "library"]},
                            geometry=[Point(X0 + 5, Y0 + 5), Point(X0 + 205, Y0 + 5),
                                      Point(X0 + 206, Y0 + 6), Point(X0 + 207, Y0 + 7)],
                            crs=UTM)
    landuse = gpd.GeoDataFrame({"landuse": ["industrial", "residential"]},
                               geometry=[box(X0 - 50, Y0 - 50, X0 + 400, Y0 + 50),
                                         box(X0 + 250, Y0 - 20, X0 + 350, Y0 + 20)], crs=UTM)
    lab, src = function_labels(b, landuse=landuse, pois=pois)
    # building tag beats the school POI; shop tag; POI majority (school + library vs cafe → public);
    # nested land use: the smaller residential polygon wins; outside everything → unlabelled.
    assert list(lab) == ["residential", "commercial", "public", "residential", ""]
    assert list(src) == ["building", "building_tags", "pois", "landuse", ""]
    only_landuse = FunctionMapping(sources=("landuse",))
    lab2, _ = function_labels(b, landuse=landuse, mapping=only_landuse)
    assert list(lab2) == ["industrial", "industrial", "industrial", "residential", ""]


def test_mapping_rejects_unknown_classes_and_sources(tmp_path):
    with pytest.raises(InvalidInput, match="mapping"):
        FunctionMapping(landuse_classes={"residential": "housing"})
    with pytest.raises(InvalidInput, match="sources"):
        FunctionMapping(sources=("satellite",))
    cfg = tmp_path / "m.json"
    cfg.write_text('{"landuse_classes": {"farmland": "other"}}')
    assert FunctionMapping.load(cfg).landuse_classes == {"farmland": "other"}


def _synthetic(n_side: int = 8, seed: int = 0) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Small houses (residential) on a grid next to big halls (industrial)."""
    rng = np.random.default_rng(seed)
    geoms, labels = [], []
    for i in range(n_side):
        for j in range(n_side):
            geoms.append(_box(i * 25, j * 25, 8 + rng.random() * 3, 9 + rng.random() * 3))
            labels.append("residential")
            geoms.append(_box(1000 + i * 90, j * 90, 60 + rng.random() * 10, 40))
            labels.append("industrial")
    return gpd.GeoDataFrame(geometry=geoms, crs=UTM), np.array(labels, dtype=object)


def test_classifier_learns_separable_classes_and_round_trips(tmp_path):
    gdf, y = _synthetic()
    X = footprint_features(gdf)
    model = FunctionModel().fit(X, y, num_boost_round=40, early_stopping_rounds=10)
    proba = model.predict_proba(X)
    assert proba.shape == (len(gdf), len(FUNCTION_CLASSES))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    names, p = model.predict(X)
    assert np.mean(names == y) > 0.95
    assert (p > 0).all() and (p <= 1).all()
    model.save(tmp_path / "m")
    again = FunctionModel.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict_proba(X), proba, rtol=1e-6)


def test_classifier_rejects_unknown_labels_and_missing_model(tmp_path):
    gdf, y = _synthetic(4)
    X = footprint_features(gdf)
    y[0] = "castle"
    with pytest.raises(InvalidInput, match="castle"):
        FunctionModel().fit(X, y)
    with pytest.raises(NotFound):
        FunctionModel.load(tmp_path / "nothing")


def test_floors_use_storey_height_per_function():
    h = np.array([12.0, 12.0, 10.0, 1.0])
    f = floors_for_function(h, ["residential", "commercial", "industrial", ""])
    assert list(f) == [4, 3, 2, 1]
    f2 = floors_for_function(h, ["residential"] * 4, table={"residential": 2.4})
    assert list(f2) == [5, 5, 4, 1]
    with pytest.raises(InvalidInput, match="storey_height"):
        floors_for_function(h, ["office"] * 4, table={"office": 0.0})
    with pytest.raises(InvalidInput, match="height"):
        floors_for_function([np.nan], ["office"])


def test_rasmi_key_from_function_with_size_fallback():
    key = rasmi_function(["residential", "residential", "office", "", ""],
                         [2, 6, 2, 1, 8], [120.0, 120.0, 100.0, 100.0, 900.0])
    assert list(key) == ["RS", "RM", "NR", "RS", "RM"]


def test_prepare_footprints_repairs_and_counts_bad_rows():
    bowtie = Polygon([(X0, Y0), (X0 + 10, Y0 + 10), (X0 + 10, Y0), (X0, Y0 + 10)])
    flat = Polygon([(X0, Y0), (X0 + 10, Y0), (X0 + 20, Y0)])  # zero area
    gdf = gpd.GeoDataFrame(geometry=[_box(0, 0), bowtie, None, Polygon(),
                                     LineString([(X0, Y0), (X0 + 1, Y0)]), flat], crs=UTM,
                           index=list("abcdef"))
    out, rep = prepare_footprints(gdf)
    assert list(out.index) == ["a", "b"]
    assert rep["repaired"] == 2 and rep["dropped_empty"] == 2
    assert rep["dropped_not_polygonal"] == 1 and rep["dropped_no_area"] == 1
    assert rep["n_in"] == 6 and rep["n_out"] == 2 and rep["dropped_index"] == list("cdef")
    assert out.geometry.is_valid.all() and (out.area > 0).all()
    footprint_features(out)  # the strict feature step accepts the result


def test_prepare_footprints_crs_policy():
    gdf = gpd.GeoDataFrame(geometry=[box(10.0, 50.0, 10.0001, 50.0001)])
    with pytest.raises(InvalidInput, match="CRS"):
        prepare_footprints(gdf)
    out, rep = prepare_footprints(gdf, default_crs="EPSG:4326")
    assert rep["crs_assumed"] == 1 and out.crs.to_epsg() == 4326


def test_features_same_in_other_crs():
    gdf, _ = _synthetic(3)
    a = footprint_features(gdf)
    b = footprint_features(gdf.to_crs(4326))
    pd.testing.assert_series_equal(a["area_m2"], b["area_m2"], rtol=1e-3)


@pytest.mark.skipif(not (OSM / "test.osm.pbf").is_file(), reason="shared OSM extract absent")
def test_read_osm_extract_and_label_it():
    layers = read_osm_layers(OSM / "test.osm.pbf")
    assert len(layers.buildings) > 2000 and layers.report["dropped_invalid_geometry"] >= 0
    b, _ = prepare_footprints(layers.buildings)
    lab, _ = function_labels(b, landuse=layers.landuse, pois=layers.pois)
    assert np.mean(lab == "residential") > 0.5


@pytest.mark.skipif(not (SHIPPED / "meta.json").is_file(), reason="model not shipped")
def test_shipped_model_predicts_probabilities():
    gdf, _ = _synthetic(3)
    proba = FunctionModel.load(SHIPPED).predict_proba(footprint_features(gdf))
    assert proba.shape == (len(gdf), 6) and np.isfinite(proba).all()


def test_height_model_rejects_impossible_labels_and_clean_heights_counts_them():
    from urbanfabric.attributes.height import HeightModel
    from urbanfabric.attributes.measurements import clean_heights

    gdf, _ = _synthetic(3)
    X = footprint_features(gdf)
    y = np.full(len(gdf), 9.0)
    y[0], y[1] = -3.0, 800.0
    with pytest.raises(InvalidInput, match="2 heights"):
        HeightModel().fit(X, np.where(np.arange(len(y)) == 1, 1200.0, y), n_models=1)
    cleaned, rep = clean_heights(gdf.assign(height_m=y))
    assert rep["dropped_out_of_range"] == 2 and len(cleaned) == len(gdf) - 2
    model = HeightModel().fit(X.loc[cleaned.index], cleaned["height_m"], n_models=2,
                              num_boost_round=5)
    mean, lo, hi = model.predict(X)
    assert (lo <= hi).all() and (mean >= 2.5).all()  # a band for every building, no zeros
