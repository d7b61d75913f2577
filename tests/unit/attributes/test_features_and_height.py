"""Footprint features, the bagged XGBoost height model and floors (urbanfabric.attributes.features)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box

import urbanfabric.attributes.features as attributes_module
from urbanfabric.attributes.features import (
    FEATURE_NAMES,
    FEATURES,
    V1_FEATURE_NAMES,
    footprint_features,
)
from urbanfabric.attributes.street_context import POI_CATEGORIES, STREET_FACING_M
from urbanfabric.attributes.height import HeightModel, floors_from_height
from urbanfabric.errors import InvalidInput

UTM = "EPSG:32633"  # a real metric CRS; x0 = 500 km is the zone's central meridian
X0, Y0 = 500_000.0, 5_000_000.0
SHIPPED = Path(__file__).resolve().parents[3] / "models" / "height_xgb" / "v1"


def _gdf(geoms: list, index: list | None = None) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(geometry=geoms, crs=UTM, index=index)


def _box(x: float, y: float, w: float, h: float) -> Polygon:
    return box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + h)


def test_rectangle_10_by_20() -> None:
    f = footprint_features(_gdf([_box(0, 0, 10, 20)])).iloc[0]
    assert f.area_m2 == pytest.approx(200.0, rel=1e-6)
    assert f.perimeter_m == pytest.approx(60.0, rel=1e-6)
    assert f.compactness == pytest.approx(4 * math.pi * 200 / 60**2, rel=1e-6)
    assert f.elongation == pytest.approx(0.5, abs=1e-6)
    assert f.orientation_deg == pytest.approx(90.0, abs=1e-3)  # long side runs north
    assert f.n_vertices == 4
    assert f.convexity == pytest.approx(1.0)
    assert f.rectangularity == pytest.approx(1.0)
    assert f.n_within_200m == 0 and f.area_within_200m_m2 == 0
    assert np.isnan(f.nn_dist_m) and np.isnan(f.mean_neighbour_area_m2)


def test_rotation_changes_only_orientation() -> None:
    rect = _box(0, 0, 20, 10)  # long side east
    rot = affinity.rotate(rect, 30, origin="centroid")
    f = footprint_features(_gdf([rect, affinity.translate(rot, 0, 1000)]))
    assert f.orientation_deg.iloc[0] == pytest.approx(0.0, abs=1e-3)
    assert f.orientation_deg.iloc[1] == pytest.approx(30.0, abs=1e-3)
    for c in ("area_m2", "perimeter_m", "elongation", "rectangularity"):
        assert f[c].iloc[1] == pytest.approx(f[c].iloc[0], rel=1e-6)


def test_l_shape() -> None:
    ell = Polygon([(X0, Y0), (X0 + 20, Y0), (X0 + 20, Y0 + 10), (X0 + 10, Y0 + 10),
                   (X0 + 10, Y0 + 20), (X0, Y0 + 20)])
    f = footprint_features(_gdf([ell])).iloc[0]
    assert f.area_m2 == pytest.approx(300.0)
    assert f.n_vertices == 6
    assert f.convexity == pytest.approx(300 / 350)
    assert f.rectangularity == pytest.approx(300 / 400)


def test_neighbour_counts_and_index() -> None:
    # 10x10 squares; gaps to "a": b 30 m, c 120 m, d 300 m (edge to edge, along x).
    geoms = [_box(0, 0, 10, 10), _box(40, 0, 10, 10), _box(130, 0, 20, 10),
             _box(310, 0, 10, 10)]
    f = footprint_features(_gdf(geoms, index=["a", "b", "c", "d"]))
    assert list(f.index) == ["a", "b", "c", "d"]
    assert list(f.columns) == list(FEATURE_NAMES)
    a = f.loc["a"]
    assert (a.n_within_50m, a.n_within_100m, a.n_within_200m) == (1, 1, 2)
    assert a.area_within_50m_m2 == pytest.approx(100.0)
    assert a.area_within_200m_m2 == pytest.approx(300.0)
    assert a.nn_dist_m == pytest.approx(30.0)
    assert a.mean_neighbour_area_m2 == pytest.approx(100.0)
    assert a.area_rank_50m == pytest.approx(0.0)  # b is not smaller
    c = f.loc["c"]  # 80 m from b, 120 m from a, 160 m from d
    assert (c.n_within_50m, c.n_within_100m, c.n_within_200m) == (0, 1, 3)
    assert c.area_ratio_100m == pytest.approx(2.0)
    assert f.loc["d"].n_within_100m == 0 and np.isnan(f.loc["d"].mean_neighbour_area_m2)


def test_neighbourhood_matches_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    import shapely
    from urbanfabric.attributes import neighbourhood

    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 500, size=(60, 2))
    wh = rng.uniform(5, 30, size=(60, 2))
    geoms = [_box(x, y, w, h) for (x, y), (w, h) in zip(xy, wh)]
    monkeypatch.setattr(neighbourhood, "_CHUNK", 7)  # exercise chunk boundaries
    f = footprint_features(_gdf(geoms))
    arr = np.array(geoms, dtype=object)
    d = shapely.distance(arr[:, None], arr[None, :])
    np.fill_diagonal(d, np.inf)
    area = shapely.area(arr)
    for r in (50, 100, 200):
        np.testing.assert_array_equal(f[f"n_within_{r}m"], (d <= r).sum(axis=1))
        np.testing.assert_allclose(f[f"area_within_{r}m_m2"], (d <= r) @ area)
    np.testing.assert_allclose(f.nn_dist_m, d.min(axis=1))
    np.testing.assert_array_equal(f.n_touching, (d <= 1.0).sum(axis=1))


def test_touching_footprints() -> None:
    f = footprint_features(_gdf([_box(0, 0, 10, 10), _box(10, 0, 10, 10), _box(60, 0, 5, 5)]))
    assert list(f.n_touching) == [1, 1, 0]
    # Perimeter within 1 m of the neighbour: the 10 m shared wall + 1 m of each side wall.
    assert f.shared_perimeter_frac.iloc[0] == pytest.approx(12 / 40, abs=1e-6)
    assert f.shared_perimeter_frac.iloc[2] == 0
    assert f.max_touching_area_m2.iloc[0] == pytest.approx(100.0)
    assert f.nn_dist_m.iloc[0] == 0


def test_geographic_input_is_reprojected() -> None:
    g = _gdf([_box(0, 0, 10, 20), _box(40, 0, 10, 10)])
    f_utm = footprint_features(g)
    f_wgs = footprint_features(g.to_crs("EPSG:4326"))
    assert f_wgs.area_m2.to_numpy() == pytest.approx(f_utm.area_m2.to_numpy(), rel=1e-4)
    assert f_wgs.nn_dist_m.to_numpy() == pytest.approx(f_utm.nn_dist_m.to_numpy(), rel=1e-3)


def test_invalid_polygon_is_repaired() -> None:
    bowtie = Polygon([(X0, Y0), (X0 + 10, Y0 + 10), (X0 + 10, Y0), (X0, Y0 + 10)])
    f = footprint_features(_gdf([bowtie])).iloc[0]
    assert f.area_m2 == pytest.approx(50.0)


def test_bad_inputs_raise_invalid_input() -> None:
    with pytest.raises(InvalidInput) as e:
        footprint_features(gpd.GeoDataFrame(geometry=[_box(0, 0, 1, 1)]))
    assert e.value.field == "footprints"
    with pytest.raises(InvalidInput):
        footprint_features(_gdf([Point(X0, Y0)]))
    with pytest.raises(InvalidInput):
        footprint_features(_gdf([None]))
    empty = footprint_features(_gdf([]))
    assert len(empty) == 0 and list(empty.columns) == list(FEATURE_NAMES)


def _synthetic(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.uniform(0, 10, n), "b": rng.uniform(0, 1, n),
                      "c": rng.normal(size=n)})
    y = 3.0 + 4.0 * X.a.to_numpy() + 5.0 * X.b.to_numpy() + rng.normal(0, 1.0, n)
    return X, y


def test_height_model_fit_predict_roundtrip(tmp_path: Path) -> None:
    X, y = _synthetic()
    m = HeightModel().fit(X, y, n_models=4, seed=1, num_boost_round=60)
    mean, p05, p95 = m.predict(X)
    assert mean.shape == p05.shape == p95.shape == (len(X),)
    assert np.all(p05 <= mean + 1e-9) and np.all(mean <= p95 + 1e-9)
    assert np.any(p95 - p05 > 0)  # members differ: bootstrap samples differ
    assert np.corrcoef(mean, y)[0, 1] > 0.9

    m.save(tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["feature_names"] == ["a", "b", "c"] and len(meta["members"]) == 4
    back = HeightModel.load(tmp_path)
    for got, want in zip(back.predict(X), (mean, p05, p95)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # Columns are matched by name, not position.
    np.testing.assert_allclose(back.predict(X[["c", "b", "a"]])[0], mean, rtol=1e-6)
    with pytest.raises(InvalidInput):
        back.predict(X[["a", "b"]])


def test_height_model_is_seeded() -> None:
    X, y = _synthetic(150)
    a = HeightModel().fit(X, y, n_models=3, seed=7, num_boost_round=30).predict(X)[0]
    b = HeightModel().fit(X, y, n_models=3, seed=7, num_boost_round=30).predict(X)[0]
    np.testing.assert_array_equal(a, b)


def test_shipped_height_model_matches_features() -> None:
    if not (SHIPPED / "meta.json").is_file():
        pytest.skip("models/height_xgb/v1 not built (python -m models.height_xgb.train)")
    model = HeightModel.load(SHIPPED)
    # v1 selects its 21 columns by name; every one must still exist with its old meaning.
    assert model.feature_names == V1_FEATURE_NAMES
    assert set(model.feature_names) <= set(FEATURE_NAMES)
    feats = footprint_features(_gdf([_box(0, 0, 10, 20), _box(15, 0, 30, 30)]))
    mean, p05, p95 = model.predict(feats)
    assert np.all(np.isfinite(mean)) and np.all(mean > 0) and np.all(p05 <= p95)


def test_floors_from_height() -> None:
    got = floors_from_height([0.0, 1.4, 4.4, 4.5, 30.0, 31.0])
    assert got.dtype == np.int64
    assert list(got) == [1, 1, 1, 2, 10, 10]
    assert list(floors_from_height([8.0], storey_height=4.0)) == [2]
    with pytest.raises(InvalidInput):
        floors_from_height([np.nan])
    with pytest.raises(InvalidInput):
        floors_from_height([3.0], storey_height=0)


# ------------------------------------------------------------------------------------------
# v2 features: morphology extras, k-NN, optional layers
# ------------------------------------------------------------------------------------------


def test_feature_table_is_complete() -> None:
    assert len(FEATURE_NAMES) >= 60 and len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    doc = attributes_module.__doc__ or ""
    for name, unit, text in FEATURES:
        if name.startswith("poi_") and name.endswith("_300m") and name[4:-5] in POI_CATEGORIES:
            continue  # documented as one row ("poi_food_300m … poi_transport_300m")
        assert f"``{name}``" in doc, name
        assert unit and text


def test_courtyard_and_mrr_columns() -> None:
    ring = Polygon(_box(0, 0, 30, 20).exterior.coords, [_box(10, 5, 10, 10).exterior.coords])
    f = footprint_features(_gdf([ring])).iloc[0]
    assert f.area_m2 == pytest.approx(500.0)
    assert f.n_holes == 1 and f.n_parts == 1
    assert f.hole_area_frac == pytest.approx(100 / 600)
    assert (f.mrr_long_m, f.mrr_short_m) == (pytest.approx(30.0), pytest.approx(20.0))
    assert f.centroid_offset_rel == pytest.approx(0.0, abs=1e-9)
    assert f.mean_edge_m == pytest.approx(140.0 / 8)
    ell = Polygon([(X0, Y0), (X0 + 20, Y0), (X0 + 20, Y0 + 10), (X0 + 10, Y0 + 10),
                   (X0 + 10, Y0 + 20), (X0, Y0 + 20)])
    assert footprint_features(_gdf([ell])).centroid_offset_rel.iloc[0] > 0.05


def test_knn_matches_brute_force() -> None:
    import shapely

    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 800, size=(40, 2))
    wh = rng.uniform(5, 30, size=(40, 2))
    geoms = np.array([_box(x, y, w, h) for (x, y), (w, h) in zip(xy, wh)], dtype=object)
    f = footprint_features(_gdf(list(geoms)))
    c = shapely.get_coordinates(shapely.centroid(geoms))
    d = np.hypot(c[:, None, 0] - c[None, :, 0], c[:, None, 1] - c[None, :, 1])
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1)
    ds = np.take_along_axis(d, order, axis=1)
    np.testing.assert_allclose(f.knn1_dist_m, ds[:, 0])
    np.testing.assert_allclose(f.knn3_mean_dist_m, ds[:, :3].mean(axis=1))
    np.testing.assert_allclose(f.knn5_mean_dist_m, ds[:, :5].mean(axis=1))
    area = shapely.area(geoms)
    np.testing.assert_allclose(f.nn_area_m2, area[order[:, 0]])
    np.testing.assert_allclose(f.knn5_mean_area_m2, area[order[:, :5]].mean(axis=1))
    np.testing.assert_array_equal(f.n_within_400m, (d <= 400).sum(axis=1))
    assert np.all(f.nn_orientation_diff_deg.between(0, 90))
    # Coverage: own + neighbour area over the Steiner buffer area.
    r = 100.0
    want = (area + f.area_within_100m_m2) / (area + shapely.length(geoms) * r + np.pi * r * r)
    np.testing.assert_allclose(f.coverage_100m, want)


def test_optional_layers_absent_are_nan_present_are_filled() -> None:
    g = _gdf([_box(0, 0, 10, 10), _box(40, 0, 10, 10)])
    f = footprint_features(g)
    for col in ("dist_to_road_m", "block_area_m2", "poi_n_300m", "poi_food_300m",
                "dist_to_centre_m", "city_class", "nb_height_mean_100m"):
        assert f[col].isna().all(), col
    assert np.isfinite(f.dist_to_area_centroid_m).all()
    assert f.dist_to_area_centroid_rel.max() == pytest.approx(1.0)
    centres = gpd.GeoDataFrame(geometry=[Point(X0 + 105, Y0 + 5)], crs=UTM).to_crs("EPSG:4326")
    f2 = footprint_features(g, centres=centres, city_class=2,
                            neighbour_heights=[12.0, np.nan])
    assert f2.dist_to_centre_m.to_numpy() == pytest.approx([100.0, 60.0], abs=0.05)
    assert list(f2.city_class) == [2.0, 2.0]
    # Own height never counts: a knows nothing, b sees a's 12 m.
    assert np.isnan(f2.nb_height_mean_100m.iloc[0]) and f2.nb_height_n_100m.iloc[0] == 0
    assert f2.nb_height_mean_100m.iloc[1] == 12.0
    with pytest.raises(InvalidInput) as e:
        footprint_features(g, neighbour_heights=[1.0])
    assert e.value.field == "neighbour_heights"
    with pytest.raises(InvalidInput) as e:
        footprint_features(g, roads=gpd.GeoDataFrame(geometry=[LineString([(0, 0), (1, 1)])]))
    assert e.value.field == "roads"


def test_street_and_block_features() -> None:
    # A 200 m x 200 m grid cell of roads (a closed block) and a primary road along y = -50.
    lines = [LineString([(X0 - 100, Y0 + y), (X0 + 300, Y0 + y)]) for y in (-50, 150)]
    lines += [LineString([(X0 + x, Y0 - 100), (X0 + x, Y0 + 300)]) for x in (-50, 150)]
    roads = gpd.GeoDataFrame({"highway": ["primary", "residential", "residential",
                                          "residential"]}, geometry=lines, crs=UTM)
    # a: 10 m north of the primary road, long side along it; b: deep inside the block.
    g = _gdf([_box(0, -40, 30, 10), _box(40, 40, 10, 10), _box(1000, 1000, 10, 10)])
    f = footprint_features(g, roads=roads.to_crs("EPSG:4326"))
    a, b, far = f.iloc[0], f.iloc[1], f.iloc[2]
    assert a.dist_to_road_m == pytest.approx(10.0, abs=0.05)
    assert a.street_facing == 1 and b.street_facing == 0
    assert b.dist_to_road_m == pytest.approx(90.0, abs=0.05)
    assert a.dist_to_major_road_m == pytest.approx(10.0, abs=0.05)
    assert b.dist_to_major_road_m == pytest.approx(90.0, abs=0.05)
    assert a.road_orientation_diff_deg == pytest.approx(0.0, abs=0.1)
    # The centroid of a, (15, -35), sees chords of the primary road (15 m off) and of the
    # x = -50 road (65 m off); the disc is a 32-gon, so allow a few per cent.
    chords = 2 * math.sqrt(100**2 - 15**2) + 2 * math.sqrt(100**2 - 65**2)
    assert a.road_length_100m_m == pytest.approx(chords, rel=0.05)
    assert a.n_intersections_200m >= 1
    assert a.block_area_m2 == pytest.approx(200 * 200, rel=1e-6)
    assert a.block_n_buildings == 2 and b.block_n_buildings == 2
    assert a.block_coverage == pytest.approx((300 + 100) / 40000)
    assert np.isnan(far.block_area_m2) and far.dist_to_road_m > 500
    assert STREET_FACING_M > 10
    # No highway column: major-road distance is NaN, the rest still works.
    f2 = footprint_features(g, roads=roads[["geometry"]])
    assert f2.dist_to_major_road_m.isna().all() and f2.dist_to_road_m.iloc[0] == pytest.approx(
        10.0, abs=0.05)


def test_poi_features() -> None:
    g = _gdf([_box(0, 0, 10, 10), _box(1000, 0, 10, 10)])  # centroids (5, 5), (1005, 5)
    pts = [Point(X0 + 5 + d, Y0 + 5) for d in (50, 150, 250, 400)]
    pois = gpd.GeoDataFrame({"category": ["food", "Food", "office", "bar"]}, geometry=pts,
                            crs=UTM)
    f = footprint_features(g, pois=pois)
    a = f.iloc[0]
    assert (a.poi_n_100m, a.poi_n_300m) == (1, 3)
    assert a.poi_nn_dist_m == pytest.approx(50.0)
    assert a.poi_food_300m == 2 and a.poi_office_300m == 1 and a.poi_health_300m == 0
    assert f.iloc[1].poi_n_300m == 0 and f.iloc[1].poi_nn_dist_m == pytest.approx(600.0)
    f2 = footprint_features(g, pois=pois[["geometry"]])
    assert f2.poi_n_300m.iloc[0] == 3 and f2.poi_food_300m.isna().all()


def test_shipped_v2_height_model_uses_all_features() -> None:
    v2 = SHIPPED.parent / "v2"
    if not (v2 / "meta.json").is_file():
        pytest.skip("models/height_xgb/v2 not built (python -m models.height_xgb.train)")
    model = HeightModel.load(v2)
    assert model.feature_names == FEATURE_NAMES
    # Optional layers absent: their columns are NaN and the model still predicts.
    feats = footprint_features(_gdf([_box(0, 0, 10, 20), _box(15, 0, 30, 30)]))
    assert feats.dist_to_road_m.isna().all()
    mean, p05, p95 = model.predict(feats)
    assert np.all(np.isfinite(mean)) and np.all(mean >= 2.5) and np.all(p05 <= p95)


def test_footways_are_not_streets() -> None:
    roads = gpd.GeoDataFrame(
        {"highway": ["footway", "residential"]},
        geometry=[LineString([(X0 - 50, Y0 - 2), (X0 + 50, Y0 - 2)]),
                  LineString([(X0 - 50, Y0 - 30), (X0 + 50, Y0 - 30)])], crs=UTM)
    f = footprint_features(_gdf([_box(0, 0, 10, 10)]), roads=roads)
    assert f.dist_to_road_m.iloc[0] == pytest.approx(30.0)
    assert f.street_facing.iloc[0] == 0


def test_neighbourhood_exact_for_concave_and_multipart_shapes() -> None:
    # Distance bounds (bbox gap, points inside) must not change any count or the minimum.
    import shapely

    rng = np.random.default_rng(11)
    ell = Polygon([(0, 0), (30, 0), (30, 6), (6, 6), (6, 30), (0, 30)])
    geoms = []
    for k in range(50):
        g = affinity.rotate(ell, rng.uniform(0, 360), origin=(0, 0))
        g = affinity.translate(g, X0 + rng.uniform(0, 400), Y0 + rng.uniform(0, 400))
        if k % 7 == 0:  # a two-part building
            g = shapely.MultiPolygon([g, affinity.translate(g, 60, 0)])
        geoms.append(g)
    f = footprint_features(_gdf(geoms))
    arr = np.array(geoms, dtype=object)
    d = shapely.distance(arr[:, None], arr[None, :])
    np.fill_diagonal(d, np.inf)
    for r in (1, 50, 100, 200):
        col = "n_touching" if r == 1 else f"n_within_{r}m"
        np.testing.assert_array_equal(f[col], (d <= r).sum(axis=1))
    np.testing.assert_allclose(f.nn_dist_m, d.min(axis=1))


def test_conformal_band_covers_held_out_scatter_and_survives_save(tmp_path: Path) -> None:
    from urbanfabric.attributes.height import HeightModel

    rng = np.random.default_rng(0)

    def sample(n: int) -> tuple[pd.DataFrame, np.ndarray]:
        x = rng.uniform(0, 1, size=(n, 2))
        # Heights with a 30 % multiplicative scatter the features cannot explain.
        y = (5 + 40 * x[:, 0]) * rng.lognormal(0.0, 0.3, size=n)
        return pd.DataFrame(x, columns=["a", "b"]), y

    X, y = sample(600)
    model = HeightModel({"max_depth": 3}).fit(X, y, n_models=5, num_boost_round=60)
    Xc, yc = sample(400)
    Xe, ye = sample(400)
    _, lo, hi = model.predict(Xe)
    raw = np.mean((ye >= lo) & (ye <= hi))
    band = model.calibrate_band(Xc, yc, coverage=0.9)
    assert band["q_lo"] < 0 < band["q_hi"]
    mean, lo, hi = model.predict(Xe)
    calibrated = np.mean((ye >= lo) & (ye <= hi))
    assert raw < 0.6 and 0.83 <= calibrated <= 0.97, (raw, calibrated)
    assert (lo <= mean).all() and (mean <= hi).all()
    again = HeightModel.load(model.save(tmp_path / "m"))
    np.testing.assert_allclose(again.predict(Xe)[2], hi, rtol=1e-6)
    with pytest.raises(InvalidInput):
        model.calibrate_band(Xc[:5], yc[:5])
