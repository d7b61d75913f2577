"""Rooftop solar potential (urbanfabric.stock.solar), checked against a direct pvlib computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from affine import Affine
from rasterio.crs import CRS
from urbanfabric.errors import InvalidInput
from urbanfabric.io.model_repository import SHARED_DATA
from urbanfabric.io.rasters import Raster
from urbanfabric.stock.solar import (
    ConstantPvout,
    RasterPvout,
    SolarOptions,
    TmyPvout,
    open_source,
    pvout_at,
    rooftop_potential,
    yearly_potential_kwh,
)

TMY = SHARED_DATA / "solar/723170TYA.CSV"
needs_tmy = pytest.mark.skipif(not TMY.exists(), reason="needs ../shared/data/solar/723170TYA.CSV")


def test_gbm_equation_by_hand() -> None:
    # 100 m² of roof, 10 m²/kWp → 10 kWp; 4 kWh/kWp/day × 365 × 10 × 0.9 = 13,140 kWh.
    assert yearly_potential_kwh(100.0, 4.0) == pytest.approx(13_140.0)
    opt = SolarOptions(area_per_kwp_m2=30.0, losses=0.0, usable_roof_fraction=0.5)
    assert yearly_potential_kwh(120.0, 3.0, opt) == pytest.approx(3.0 * 365 * 2.0)
    for kw in ({"area_per_kwp_m2": 0}, {"losses": 1.0}, {"usable_roof_fraction": 0}):
        with pytest.raises(InvalidInput):
            SolarOptions(**kw)


def test_latitude_band_and_missing_source_use_the_gbm_default() -> None:
    pv, tok = pvout_at([10, 10, 10, 10], [70.0, -55.0, 45.0, 45.0], ConstantPvout(4.2))
    assert pv.tolist() == [3.5, 3.5, 4.2, 4.2]
    assert tok.tolist() == ["pvout_outside_band", "pvout_outside_band", "", ""]
    pv, tok = pvout_at([10.0], [45.0])  # no source at all
    assert pv.tolist() == [3.5] and tok.tolist() == ["pvout_default"]


def test_raster_source_nearest_pixel_nodata_and_outside() -> None:
    data = np.array([[[4.0, 5.0], [-9999.0, 6.0]]], dtype=np.float32)
    r = Raster(data, Affine(1.0, 0, 10.0, 0, -1.0, 50.0), CRS.from_epsg(4326), nodata=-9999.0)
    src = RasterPvout(r)
    got = src.pvout(np.array([10.5, 11.5, 10.5, 11.5, 30.0]), np.array([49.5, 49.5, 48.5, 48.5, 49.5]))
    np.testing.assert_array_equal(got[:2], [4.0, 5.0])
    assert np.isnan(got[2]) and got[3] == 6.0 and np.isnan(got[4])
    yearly = RasterPvout(Raster(data * 365, r.transform, r.crs, nodata=None), units="yearly")
    assert yearly.pvout(np.array([10.5]), np.array([49.5]))[0] == pytest.approx(4.0)
    pv, tok = pvout_at([10.5, 10.5], [48.5, 49.5], src)
    assert pv.tolist() == [3.5, 4.0] and tok.tolist() == ["pvout_default", ""]


def test_rooftop_potential_flags_bad_areas() -> None:
    out = rooftop_potential([100.0, -1.0, np.nan], [0, 0, 0], [45.0, 45.0, 80.0],
                            ConstantPvout(4.0))
    assert out.solar_kwh_per_year.iloc[0] == pytest.approx(13_140.0)
    assert out.solar_kwh_per_year.iloc[1:].isna().all()
    assert out.solar_fallback.tolist() == ["", "roof_area_invalid",
                                           "pvout_outside_band;roof_area_invalid"]
    with pytest.raises(InvalidInput):
        rooftop_potential([1.0], [0, 0], [0, 0])


@needs_tmy
def test_tmy_pvout_matches_a_direct_pvlib_modelchain() -> None:
    import pvlib

    src = TmyPvout(TMY)
    assert 20 <= src.tilt <= 40  # optimum fixed tilt at 36°N
    # Independent computation: pvlib's ModelChain with the same physics, no extra losses.
    weather = src.weather[["ghi", "dni", "dhi", "temp_air", "wind_speed"]].copy()
    weather["albedo"] = src.albedo
    weather.index = weather.index - pd.Timedelta(minutes=30)  # mid-hour sun position
    system = pvlib.pvsystem.PVSystem(
        surface_tilt=src.tilt, surface_azimuth=180.0,
        module_parameters={"pdc0": 1000.0, "gamma_pdc": -0.004},
        inverter_parameters={"pdc0": 1000.0},
        temperature_model_parameters=pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"][
            "open_rack_glass_glass"])
    location = pvlib.location.Location(src.latitude, src.longitude, altitude=src.altitude)
    mc = pvlib.modelchain.ModelChain(system, location, aoi_model="no_loss",
                                     spectral_model="no_loss", transposition_model="haydavies",
                                     dc_model="pvwatts", ac_model="pvwatts", losses_model="no_loss")
    mc.run_model(weather)
    direct = float(mc.results.dc.clip(lower=0).sum()) / 1000.0 / 365.0
    assert src.daily_kwh_per_kwp == pytest.approx(direct, rel=1e-4)
    assert 3.5 < direct < 5.5  # Greensboro NC: ≈ 4.3 kWh/kWp/day on the Global Solar Atlas

    # A sample area of buildings around the station: GBM Eq. 1 on the pvlib PVOUT.
    areas = np.array([85.0, 140.0, 620.0, 2300.0])
    lon = src.longitude + np.array([0.01, -0.02, 0.03, 1.5])  # the last one is ~135 km away
    lat = src.latitude + np.array([0.0, 0.01, -0.02, 0.0])
    out = rooftop_potential(areas, lon, lat, open_source(TMY))
    want = direct * 365 * areas[:3] / 10.0 * 0.9
    np.testing.assert_allclose(out.solar_kwh_per_year.iloc[:3], want, rtol=1e-4)
    assert out.solar_fallback.tolist() == ["", "", "", "pvout_default"]
    assert out.pvout_kwh_per_kwp_day.iloc[3] == 3.5


def test_open_source_rejects_unknown_files(tmp_path) -> None:
    with pytest.raises(InvalidInput):
        open_source(tmp_path / "x.nc")
    bad = tmp_path / "bad.csv"
    bad.write_text("not,a,tmy\n")
    with pytest.raises(InvalidInput):
        TmyPvout(bad)
