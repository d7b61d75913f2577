"""Building age: first appearance in a yearly stack (route a) and the feature model (route b)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from rasterio.transform import from_origin
from shapely.geometry import box

from urbanfabric.attributes.age import (
    AGE_CLASS_LABELS,
    AgeModel,
    age_class,
    balanced_weights,
    first_built_year,
)
from urbanfabric.errors import InvalidInput, NotFound

UTM = "EPSG:32633"
X0, Y0 = 500_000.0, 5_000_100.0
SHIPPED = Path(__file__).resolve().parents[3] / "models" / "building_age" / "v1"


def test_age_class_cuts() -> None:
    got = age_class([1950, 1985, 1986, 1990, 1991, 2000, 2010, 2011, 2018, 2024, np.nan])
    assert list(got) == [0, 0, 1, 1, 2, 2, 3, 4, 4, 4, -1]
    assert len(AGE_CLASS_LABELS) == 5


def _stack(tmp_path: Path) -> dict:
    """10 x 10 px of 10 m, years 2000..2004; built areas grow (and one pixel flickers)."""
    tf = from_origin(X0, Y0, 10.0, 10.0)
    stack = {}
    for k, year in enumerate(range(2000, 2005)):
        a = np.zeros((10, 10))
        a[0:3, 0:3] = 1  # built from the start: censored
        if year >= 2002:
            a[5:8, 5:8] = 1  # built in 2002
        if year == 2001:
            a[0:3, 6:9] = 1  # flicker: built in 2001 only, then again from 2004
        if year >= 2004:
            a[0:3, 6:9] = 1
        if year == 2003:
            a[5:8, 0:3] = np.nan  # no data that year
        stack[year] = a
    # One year as a GeoTIFF file, the rest as (array, transform, crs) tuples.
    import rasterio

    p = tmp_path / "2004.tif"
    with rasterio.open(p, "w", driver="GTiff", height=10, width=10, count=1, dtype="float32",
                       crs=UTM, transform=tf, nodata=-1) as ds:
        ds.write(stack[2004].astype(np.float32), 1)
    out = {y: (a, tf, UTM) for y, a in stack.items() if y != 2004}
    out[2004] = p
    return out


def _fps() -> gpd.GeoDataFrame:
    def cell(r0: int, c0: int, size: int = 3) -> box:
        return box(X0 + 10 * c0, Y0 - 10 * (r0 + size), X0 + 10 * (c0 + size), Y0 - 10 * r0)

    return gpd.GeoDataFrame(geometry=[cell(0, 0), cell(5, 5), cell(0, 6), cell(5, 0),
                                      box(X0 + 5000, Y0, X0 + 5010, Y0 + 10)],
                            index=list("abcde"), crs=UTM).to_crs("EPSG:4326")


def test_first_built_year_on_synthetic_stack(tmp_path: Path) -> None:
    rasters = _stack(tmp_path)
    r = first_built_year(_fps(), rasters)
    assert list(r.index) == list("abcde")
    np.testing.assert_array_equal(r.year_first_built, [2000, 2002, 2004, np.nan, np.nan])
    assert list(r.censored) == [True, False, False, False, False]
    assert list(r.n_years_with_data) == [5, 5, 5, 4, 0]  # e is off the rasters
    loose = first_built_year(_fps(), rasters, persistent=False)
    assert loose.year_first_built["c"] == 2001  # the flicker wins without persistence
    share = first_built_year(_fps(), rasters, method="share")
    np.testing.assert_array_equal(share.year_first_built[:3], [2000, 2002, 2004])
    with pytest.raises(InvalidInput):
        first_built_year(_fps(), {})
    with pytest.raises(InvalidInput):
        first_built_year(_fps(), rasters, method="mode")
    with pytest.raises(NotFound):
        first_built_year(_fps(), {2000: tmp_path / "nope.tif"})


def _synthetic(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.uniform(0, 1, n), "b": rng.normal(size=n)})
    y = np.round(1950 + 70 * X.a.to_numpy() + rng.normal(0, 2, n))
    return X, y


def test_age_model_fit_predict_roundtrip(tmp_path: Path) -> None:
    X, y = _synthetic()
    m = AgeModel().fit(X, y, n_models=3, seed=1, num_boost_round=60)
    mean, lo, hi, proba = m.predict(X)
    assert mean.shape == lo.shape == hi.shape == (len(X),) and proba.shape == (len(X), 5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(lo <= mean + 1e-9) and np.all(mean <= hi + 1e-9)
    assert np.mean(np.abs(mean - y)) < 6  # learns the signal (spread of y ≈ 20 years)
    assert np.mean(proba.argmax(axis=1) == age_class(y)) > 0.8
    m.save(tmp_path)
    back = AgeModel.load(tmp_path)
    for got, want in zip(back.predict(X), (mean, lo, hi, proba)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(InvalidInput):
        AgeModel().fit(X, np.r_[y[:-1], np.nan])
    with pytest.raises(NotFound):
        AgeModel().predict(X)


def test_conformal_year_band_covers_held_out_rows_and_survives_save(tmp_path: Path) -> None:
    X, y = _synthetic(1200, seed=3)
    m = AgeModel().fit(X[:400], y[:400], n_models=3, seed=1, num_boost_round=60)
    _, lo0, hi0, _ = m.predict(X[800:])
    spread_cov = np.mean((y[800:] >= lo0) & (y[800:] <= hi0))
    band = m.calibrate_band(X[400:800], y[400:800], coverage=0.9)
    assert band["n_calibration"] == 400 and band["q_lo"] <= 0 <= band["q_hi"]
    mean, lo, hi, _ = m.predict(X[800:])
    cov = np.mean((y[800:] >= lo) & (y[800:] <= hi))
    assert 0.85 <= cov <= 0.95 and cov > spread_cov  # noise σ = 2 y: the spread alone is too narrow
    assert np.all(lo <= lo0 + 1e-9) and np.all(hi >= hi0 - 1e-9)  # never narrower than the spread
    m.save(tmp_path)
    back = AgeModel.load(tmp_path)
    assert back.year_band == band
    np.testing.assert_allclose(back.predict(X[800:])[1], lo, rtol=1e-9)
    with pytest.raises(InvalidInput):
        m.calibrate_band(X[:10], y[:10])
    with pytest.raises(InvalidInput):
        m.calibrate_band(X[400:800], np.r_[y[400:799], np.nan])


def test_shipped_v3_widens_v2_year_band_and_keeps_everything_else() -> None:
    root = SHIPPED.parent
    if not all((root / v / "meta.json").is_file() for v in ("v1", "v2", "v3")):
        pytest.skip("building_age v1/v2/v3 not all present")
    from urbanfabric.attributes.features import footprint_features

    v2, v3 = AgeModel.load(root / "v2"), AgeModel.load(root / "v3")
    assert not v2.year_band and v3.year_band["coverage_target"] == 0.9
    g = gpd.GeoDataFrame(geometry=[box(X0 + 20 * i, Y0, X0 + 20 * i + 12, Y0 + 9) for i in range(5)], crs=UTM)
    f = footprint_features(g)
    a, b = v2.predict(f), v3.predict(f)
    np.testing.assert_allclose(a[0], b[0])  # same year
    np.testing.assert_allclose(a[3], b[3])  # same class probabilities
    assert np.all(b[2] - b[1] >= 30) and np.all(b[2] - b[1] > a[2] - a[1])
    np.testing.assert_allclose(v2.ood_scores(f), v3.ood_scores(f))


def test_balanced_weights() -> None:
    w = balanced_weights(np.array([0, 0, 0, 1]), power=1.0)
    assert w[0] * 3 == pytest.approx(w[3] * 1) and w.mean() == pytest.approx(1.0)
    assert np.all(balanced_weights(np.array([0, 0, 1]), power=0.0) == 1.0)


def test_shipped_age_model_loads() -> None:
    if not (SHIPPED / "meta.json").is_file():
        pytest.skip("models/building_age/v1 not built (python -m models.building_age.train)")
    from urbanfabric.attributes.features import footprint_features

    m = AgeModel.load(SHIPPED)
    g = gpd.GeoDataFrame(geometry=[box(X0, Y0, X0 + 12, Y0 + 9), box(X0 + 20, Y0, X0 + 30,
                                                                      Y0 + 10)], crs=UTM)
    mean, lo, hi, proba = m.predict(footprint_features(g))
    assert np.all((mean > 1800) & (mean < 2030)) and np.all(lo <= hi)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_epoch_raster_to_stack() -> None:
    from urbanfabric.attributes.age import gaia_value_to_year, stack_from_epoch_raster

    np.testing.assert_array_equal(gaia_value_to_year([0, 1, 34, 35]), [np.nan, 2018, 1985,
                                                                      np.nan])
    tf = from_origin(X0, Y0, 10.0, 10.0)
    arr = np.zeros((10, 10))
    arr[0:3, 0:3] = 34  # 1985
    arr[5:8, 5:8] = 17  # 2002
    stack = stack_from_epoch_raster((arr, tf, UTM))
    assert min(stack) == 1985 and max(stack) == 2002 and len(stack) == 18
    r = first_built_year(_fps(), stack)
    np.testing.assert_array_equal(r.year_first_built[:4], [1985, 2002, np.nan, np.nan])
    assert bool(r.censored.iloc[0])
