"""Height with image evidence: the fallback path and the conformal band (issue 18)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from urbanfabric.attributes.batch import (
    HEIGHT_FROM_FOOTPRINT,
    HEIGHT_FROM_IMAGE,
    NO_IMAGE_SOURCE,
    AttributeModels,
    predict_attributes,
)
from urbanfabric.attributes.features import footprint_features
from urbanfabric.attributes.height import HeightModel
from urbanfabric.attributes.image_evidence import (
    IMAGE_FEATURE_NAMES,
    REASON_NO_IMAGERY,
    ImageChip,
    SunGeometry,
)
from urbanfabric.errors import InvalidInput

from tests.unit.attributes.test_image_evidence import X0, Y0, footprint, scene


def _footprints() -> gpd.GeoDataFrame:
    geoms = [footprint(120.0, 120.0, 20.0), box(X0 + 400, Y0 + 400, X0 + 420, Y0 + 420)]
    return gpd.GeoDataFrame({"building_id": ["a", "b"]}, geometry=geoms, crs="EPSG:32650")


def _image_model() -> HeightModel:
    """A tiny model whose image input (shadow length) carries the height."""
    rng = np.random.default_rng(0)
    fp = footprint_features(_footprints())
    n = 300
    X = pd.DataFrame(np.repeat(fp[["area_m2"]].to_numpy()[:1], n, axis=0), columns=["area_m2"])
    shadow = rng.uniform(5, 60, n)
    for c in IMAGE_FEATURE_NAMES:
        X[c] = rng.normal(size=n)
    X["img_shadow_len_m"] = shadow
    y = shadow * 1.0 + rng.normal(0, 1, n)
    X2 = X.assign(**{c: np.nan for c in IMAGE_FEATURE_NAMES})
    model = HeightModel().fit(pd.concat([X, X2], ignore_index=True), np.r_[y, y], n_models=3)
    return model


class FakeReader:
    """Chip for building "a" (a 30 m shadow to the north), none for "b"."""

    def chips(self, footprints: gpd.GeoSeries, margin_m: float) -> list[ImageChip | None]:
        img, t = scene(30.0)
        return [ImageChip(img, t, g) if i == 0 else None for i, g in enumerate(footprints)]


def test_image_model_uses_chips_and_falls_back_with_a_reason() -> None:
    model = _image_model()
    table, report = predict_attributes(_footprints(), AttributeModels(model),
                                       images=FakeReader(), sun=SunGeometry(180.0, 45.0))
    assert list(table["height_source"]) == [HEIGHT_FROM_IMAGE, HEIGHT_FROM_FOOTPRINT]
    assert list(table["height_source_reason"]) == ["", REASON_NO_IMAGERY]
    assert report["image_evidence"]["shadow_azimuth_deg"] == 0.0
    assert table["height_m"].iloc[0] == pytest.approx(30.0, abs=6.0)
    # The fallback is the model's morphology-only path: finite, never a guessed shadow.
    assert np.isfinite(table["height_m"].iloc[1])
    table2, _ = predict_attributes(_footprints(), AttributeModels(model))
    assert set(table2["height_source_reason"]) == {NO_IMAGE_SOURCE}
    assert set(table2["height_source"]) == {HEIGHT_FROM_FOOTPRINT}


def test_footprint_only_model_reports_its_source() -> None:
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"area_m2": rng.uniform(50, 500, 100)})
    model = HeightModel().fit(X, X["area_m2"].to_numpy() / 10 + 3, n_models=2)
    table, _ = predict_attributes(_footprints(), AttributeModels(model), images=FakeReader())
    assert set(table["height_source"]) == {HEIGHT_FROM_FOOTPRINT}


def test_log_conformal_band_covers_held_out_heights() -> None:
    rng = np.random.default_rng(2)
    n = 4000
    x = rng.uniform(0, 1, n)
    y = np.exp(2 + 2 * x + rng.normal(0, 0.4, n))
    X = pd.DataFrame({"x": x})
    tr, cal, te = np.arange(0, 2000), np.arange(2000, 3000), np.arange(3000, n)
    model = HeightModel().fit(X.iloc[tr], y[tr], n_models=3)
    _, lo0, hi0 = model.predict(X.iloc[te])
    raw = np.mean((y[te] >= lo0) & (y[te] <= hi0))
    band = model.calibrate_band(X.iloc[cal], y[cal], coverage=0.9, method="log")
    assert band["q_lo"] < 0 < band["q_hi"]
    _, lo, hi = model.predict(X.iloc[te])
    cov = np.mean((y[te] >= lo) & (y[te] <= hi))
    assert raw < 0.5 and 0.85 <= cov <= 0.95
    with pytest.raises(InvalidInput, match="method"):
        model.calibrate_band(X.iloc[cal], y[cal], method="quantile")


def test_no_image_rows_use_their_own_band() -> None:
    model = _image_model()
    model.band = {"method": "split-conformal log residuals", "q_lo": -0.1, "q_hi": 0.1,
                  "no_image": {"method": "split-conformal log residuals", "q_lo": -1.0,
                               "q_hi": 1.0}}
    X = pd.DataFrame({"area_m2": [400.0, 400.0], **{c: [1.0, np.nan]
                                                    for c in IMAGE_FEATURE_NAMES}})
    mean, lo, hi = model.predict(X)
    assert list(model.rows_without_image(X)) == [False, True]
    assert hi[1] / mean[1] == pytest.approx(np.e, rel=1e-6)
    assert hi[0] / mean[0] < 1.2


def test_measured_heights_override_the_model_with_a_tight_band() -> None:
    from urbanfabric.attributes.batch import HEIGHT_MEASURED

    fps = _footprints()
    # In another CRS (WGS84) and in feet: reprojected and converted.
    measured = gpd.GeoDataFrame({"height_m": [100.0]},
                                geometry=[footprint(121.0, 121.0, 20.0)],
                                crs="EPSG:32650").to_crs(4326)
    model = _image_model()
    table, report = predict_attributes(fps, AttributeModels(model), measured=measured,
                                       measured_unit="ft")
    assert table["height_source"].iloc[0] == HEIGHT_MEASURED
    assert table["height_m"].iloc[0] == pytest.approx(30.48)
    assert table["height_p95"].iloc[0] == pytest.approx(30.48 * 1.05)
    assert table["height_source"].iloc[1] == HEIGHT_FROM_FOOTPRINT
    assert report["measured_heights"]["n_matched"] == 1


def test_bad_measured_height_sources_are_rejected_or_dropped() -> None:
    from urbanfabric.attributes.measured import join_measured_heights

    fps = _footprints()
    src = gpd.GeoDataFrame({"height_m": [30.0, -3.0, 9000.0]},
                           geometry=[footprint(), footprint(), footprint()])
    with pytest.raises(InvalidInput, match="height_source.crs"):
        join_measured_heights(fps, src)
    src = src.set_crs("EPSG:32650")
    with pytest.raises(InvalidInput, match="height_source.unit"):
        join_measured_heights(fps, src, unit="storeys")
    h, rep = join_measured_heights(fps, src)
    assert rep["dropped_out_of_range"] == 2 and h[0] == 30.0 and np.isnan(h[1])
    # A polygon barely touching the footprint lends it nothing.
    edge = gpd.GeoDataFrame({"height_m": [30.0]}, geometry=[footprint(135.0, 120.0, 20.0)],
                            crs="EPSG:32650")
    h, _ = join_measured_heights(fps, edge)
    assert np.isnan(h).all()


def test_height_sources_read_from_cityjson_osm_tags_and_plain_geojson() -> None:
    from pathlib import Path

    from urbanfabric.attributes.measured import read_height_source

    fps = _footprints().to_crs(4326)
    plain = gpd.GeoDataFrame({"height_m": [12.0]}, geometry=[fps.geometry.iloc[0]], crs=4326)
    assert read_height_source(plain.to_json().encode())["height_m"].tolist() == [12.0]
    osm = gpd.GeoDataFrame({"building:levels": ["4"]}, geometry=[fps.geometry.iloc[0]], crs=4326)
    assert read_height_source(osm.to_json().encode())["height_m"].tolist() == [12.0]
    none = gpd.GeoDataFrame({"name": ["x"]}, geometry=[fps.geometry.iloc[0]], crs=4326)
    with pytest.raises(InvalidInput, match="measured_heights"):
        read_height_source(none.to_json().encode())
    with pytest.raises(InvalidInput, match="measured_heights"):
        read_height_source(b"\x00garbage")
    samples = Path(__file__).resolve().parents[3].parent / "shared/data/heights/cityjson-samples"
    if (samples / "delft.json").is_file():
        g = read_height_source((samples / "delft.json").read_bytes())
        assert len(g) and (g["height_m"] > 0).any() and g.crs is not None
    if (samples / "multi_lod.json").is_file():
        # A CityJSON naming no reference system cannot be placed: rejected, not guessed.
        with pytest.raises(InvalidInput, match="crs"):
            read_height_source((samples / "multi_lod.json").read_bytes())
