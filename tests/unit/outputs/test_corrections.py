"""Corrections in: labels joined by id or footprint, every bad row named, nothing dropped (issue 21)."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest
import shapely.affinity

from urbanfabric.errors import InvalidInput
from urbanfabric.outputs.corrections import check_corrections, read_corrections
from urbanfabric.outputs.review import review_attribute
from urbanfabric.outputs.review_package import select_for_review, write_package

from tests.unit.outputs.review_table import classes, parts, table

SHAPES = ("flat", "gable", "hip")


def _job():
    t = table()
    return t, t[["building_id", "geometry"]]


def _labels(ids, labels) -> pd.DataFrame:
    return pd.DataFrame({"building_id": ids, "label": labels})


def _check(frame, buildings, attribute="roof_shape", **kw):
    vocab = SHAPES if attribute == "roof_shape" else ()
    return check_corrections(frame, buildings, review_attribute(attribute), vocab, min_labels=kw.pop("min_labels", 2),
                             **kw)


def test_a_filled_package_comes_back_clean(tmp_path):
    t, buildings = _job()
    sel = select_for_review(parts(t), review_attribute("roof_shape"), 12, classes)
    write_package(tmp_path, sel, "job-1")
    for name in ("review.gpkg", "review.parquet", "review.csv"):
        filled = read_corrections(tmp_path / name)
        filled["label"] = ["Flat", "gable", "hip"] * 4  # class names in any case
        filled.loc[0, "label"] = None  # not labelled: counted, not an error
        clean, report = _check(filled, buildings)
        assert report.problems == [] and report.unlabelled == 1 and report.accepted == 11
        assert clean["building_id"].tolist() == sel.buildings["building_id"].tolist()[1:]
        assert set(clean["label"]) == set(SHAPES) and (clean["matched_by"] == "building_id").all()


def test_unknown_class_names_are_listed_with_their_rows():
    _, buildings = _job()
    clean, report = _check(_labels(["b00", "b01", "b02", "b03", "b04"], ["flat", "dome", "hip", "dome", "mansard"]),
                           buildings)
    unknown = [(p["row"], p["message"]) for p in report.problems if p["problem"] == "unknown_class"]
    assert [r for r, _ in unknown] == [2, 4, 5]
    assert "'dome'" in unknown[0][1] and "flat, gable, hip" in unknown[0][1]
    assert "'dome' is not a class of the roof_shape model (classes: flat, gable, hip) (rows 2, 4)" in report.summary()
    assert clean["building_id"].tolist() == ["b00", "b02"]  # only the known labels stay


def test_duplicated_ids_are_named_and_both_rows_set_aside():
    _, buildings = _job()
    clean, report = _check(_labels(["b00", "b01", "b00", "b02", "b03"], ["flat", "hip", "gable", "hip", "flat"]),
                           buildings)
    dups = [p for p in report.problems if p["problem"] == "duplicated_building"]
    assert [(p["row"], p["building_id"]) for p in dups] == [(1, "b00"), (3, "b00")]
    assert "b00" not in set(clean["building_id"]) and report.accepted == 3


def test_labels_for_buildings_that_do_not_exist_are_counted_and_named():
    _, buildings = _job()
    clean, report = _check(_labels(["b00", "x1", "b01", "x2", "b02"], ["flat"] * 5), buildings)
    missing = [p for p in report.problems if p["problem"] == "no_such_building"]
    assert [(p["row"], p["building_id"]) for p in missing] == [(2, "x1"), (4, "x2")]
    assert "no_such_building (2 rows)" in report.summary() and report.as_dict()["rejected"] == 2
    assert report.accepted + report.as_dict()["rejected"] + report.unlabelled == report.rows


def test_footprints_in_another_crs_are_joined_by_overlap():
    t, buildings = _job()
    # A register extract in Web Mercator, no ids; one footprint shifted by 20 m (IoU 0) matches nothing.
    extract = t.iloc[[0, 11, 22, 33]][["geometry"]].to_crs("EPSG:3857").reset_index(drop=True)
    extract["roof"] = ["flat", "gable", "hip", "flat"]
    extract.loc[3, "geometry"] = shapely.affinity.translate(extract.loc[3, "geometry"], xoff=20 / 0.56)
    clean, report = _check(extract, buildings, label_column="roof")
    assert clean["building_id"].tolist() == ["b00", "b11", "b22"]
    assert report.matched_by.startswith("footprint overlap")
    assert [(p["row"], p["problem"]) for p in report.problems] == [(4, "no_such_building")]


def test_a_file_without_crs_is_refused_naming_it():
    t, buildings = _job()
    extract = gpd.GeoDataFrame({"label": ["flat"] * 4}, geometry=list(t.geometry.iloc[:4].to_crs("EPSG:3857")))
    assert extract.crs is None
    with pytest.raises(InvalidInput) as e:
        _check(extract, buildings, source="register.geojson")
    assert e.value.field == "crs" and "register.geojson" in e.value.message


def test_a_file_in_the_wrong_crs_is_refused():
    t, buildings = _job()
    metres = list(t.geometry.iloc[:4].to_crs("EPSG:32633"))
    # Metres declared as degrees.
    wrong = gpd.GeoDataFrame({"label": ["flat"] * 4}, geometry=metres, crs="EPSG:4326")
    with pytest.raises(InvalidInput) as e:
        _check(wrong, buildings)
    assert e.value.field == "crs" and "not degrees" in e.value.message
    # Metres of another zone: valid coordinates, but nowhere near the job.
    elsewhere = gpd.GeoDataFrame({"label": ["flat"] * 4}, geometry=metres, crs="EPSG:32617")
    with pytest.raises(InvalidInput) as e:
        _check(elsewhere, buildings)
    assert e.value.field == "crs" and "EPSG:32617" in e.value.message


def test_too_few_labels_to_hold_any_out():
    _, buildings = _job()
    with pytest.raises(InvalidInput) as e:
        _check(_labels(["b00", "b01", "b02", "x"], ["flat", "hip", "dome", "flat"]), buildings, min_labels=10)
    assert e.value.field == "label"
    assert "2 usable labels (4 given, 2 rejected); at least 10" in e.value.message
    assert "'dome'" in e.value.message and "building x is not in the job" in e.value.message


def test_numeric_labels_must_be_plausible_numbers():
    _, buildings = _job()
    clean, report = _check(_labels(["b00", "b01", "b02", "b03", "b04"], ["12.5", "tall", "2500", "7", "-3"]),
                           buildings, attribute="height")
    assert [(p["row"], p["problem"]) for p in report.problems] == [
        (2, "not_a_number"), (3, "out_of_range"), (5, "out_of_range")]
    assert clean["label"].tolist() == [12.5, 7.0]
    clean, report = _check(_labels(["b00", "b01", "b02"], ["1962", "3025", "1890"]), buildings,
                           attribute="year_built", min_labels=2)
    assert [(p["row"], p["problem"]) for p in report.problems] == [(2, "out_of_range")]


def test_a_missing_label_column_or_join_key_is_named(tmp_path):
    _, buildings = _job()
    with pytest.raises(InvalidInput) as e:
        _check(_labels(["b00"], ["flat"]).rename(columns={"label": "roof"}), buildings)
    assert e.value.field == "label" and "roof" in e.value.message
    with pytest.raises(InvalidInput) as e:
        _check(pd.DataFrame({"label": ["flat"] * 4}), buildings)
    assert e.value.field == "building_id"
    (tmp_path / "x.gpkg").write_text("not a geopackage")
    with pytest.raises(InvalidInput) as e:
        read_corrections(tmp_path / "x.gpkg")
    assert e.value.field == "corrections" and "x.gpkg" in e.value.message
