"""The hourly sky over one place for a year, and the PV yield of a plane under it.

Two ways to get the sky:

* a typical-meteorological-year file (measured / modelled hourly GHI, DNI, DHI, air
  temperature, wind): :meth:`Sky.from_tmy3`;
* no weather data at all: :func:`clear_sky_climate` — pvlib's Ineichen–Perez clear sky with
  the Linke turbidity climatology (monthly, 1/12° grid, Remund et al. 2003) and the altitude
  grid that pvlib ships (both read from files bundled with pvlib: no network), scaled by a
  **clear-sky index** for clouds. No cloud climatology ships with pvlib, so the clear-sky index
  is one global number by default: the ratio of the global-mean all-sky to clear-sky downward
  solar radiation at the surface, 185 / 247 W m⁻² ≈ 0.75 (Wild et al. 2013, Clim. Dyn. 40:3107,
  all-sky; Wild et al. 2019, Clim. Dyn. 52:4787, clear-sky). It is a Köppen-free default and is
  stated as such per building (``fallback`` = ``pvout_clear_sky_climate``): cloudy climates
  (monsoon East Asia, maritime high latitudes) get too much, deserts too little. The all-sky
  GHI is split into DNI and DHI with the Erbs et al. (1982) decomposition, so the tilt gain
  shrinks as the sky gets cloudier. Air temperature 20 °C and wind 1 m/s stand in for weather.

Yield of a plane (:meth:`Sky.daily_yield`): Hay–Davies transposition, SAPM cell temperature
(open rack, glass/glass), PVWatts DC with ``gamma_pdc`` per °C — DC yield with temperature
losses only (the Global Solar Atlas PVOUT convention; the other system losses are GBM Eq. 1's
``losses`` term, :mod:`urbanfabric.stock.solar`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

#: Global-mean all-sky / clear-sky surface downward solar radiation (Wild et al. 2013, 2019).
CLEAR_SKY_INDEX = 0.75
#: Stand-in weather for the clear-sky default (°C, m/s).
DEFAULT_TEMP_AIR, DEFAULT_WIND = 20.0, 1.0
#: A non-leap year of hours; the clear-sky climate does not depend on the year's weather.
_YEAR = 2019


@dataclass(eq=False)
class Sky:
    """Hourly irradiance (W/m²), weather and sun position at one place over one year.

    Attributes:
        latitude, longitude: the place (°).
        hourly: columns ``ghi dni dhi temp_air wind_speed apparent_zenith azimuth dni_extra``,
            one row per hour (sun position at the middle of the hour).
        albedo: ground reflectance (a per-hour series or one number).
        gamma_pdc: DC power temperature coefficient (1/°C).
        name: where the sky came from (``tmy:<station>`` or ``clear_sky_climate``).
    """

    latitude: float
    longitude: float
    hourly: pd.DataFrame
    albedo: pd.Series | float = 0.25
    gamma_pdc: float = -0.004
    name: str = "sky"
    _cache: dict[tuple[float, float], float] = field(default_factory=dict, repr=False)

    @property
    def equator_azimuth(self) -> float:
        """Equator-facing: south (180°) in the northern hemisphere, north (0°) in the south."""
        return 180.0 if self.latitude >= 0 else 0.0

    def poa(self, tilt: float, azimuth: float) -> pd.DataFrame:
        """Plane-of-array irradiance (W/m²) per hour, Hay–Davies."""
        import pvlib

        h = self.hourly
        return pvlib.irradiance.get_total_irradiance(
            tilt, azimuth, h["apparent_zenith"], h["azimuth"], h["dni"], h["ghi"], h["dhi"],
            dni_extra=h["dni_extra"], albedo=self.albedo, model="haydavies")

    def daily_yield(self, tilt: float, azimuth: float) -> float:
        """Mean daily DC yield of 1 kWp on the plane (kWh/kWp/day), temperature losses only."""
        key = (round(float(tilt), 1), round(float(azimuth) % 360.0, 1))
        if key not in self._cache:
            import pvlib

            poa = self.poa(*key)["poa_global"].fillna(0.0).clip(lower=0.0)
            params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_glass"]
            temp = pvlib.temperature.sapm_cell(poa, self.hourly["temp_air"],
                                               self.hourly["wind_speed"], **params)
            dc_w = pvlib.pvsystem.pvwatts_dc(poa, temp, pdc0=1000.0, gamma_pdc=self.gamma_pdc)
            self._cache[key] = float(dc_w.clip(lower=0).sum()) / 1000.0 / (len(dc_w) / 24.0)
        return self._cache[key]

    def optimum_tilt(self) -> float:
        """The equator-facing tilt (0–70°, 1° steps) with the most yearly POA irradiance."""

        def total(t: int) -> float:
            return float(self.poa(t, self.equator_azimuth)["poa_global"].fillna(0).sum())

        # Yearly POA is smooth and single-peaked in tilt: 5° steps, then 1° around the best.
        coarse = max(range(0, 71, 5), key=total)
        return float(max(range(max(coarse - 4, 0), min(coarse + 5, 71)), key=total))

    @cached_property
    def best_tilt(self) -> float:
        """:meth:`optimum_tilt`, computed once."""
        return self.optimum_tilt()

    @cached_property
    def pvout(self) -> float:
        """PVOUT (kWh/kWp/day): the yield at the optimum fixed equator-facing tilt (GSA)."""
        return self.daily_yield(self.best_tilt, self.equator_azimuth)

    def yield_ratio(self, tilt: float, azimuth: float) -> float:
        """Yield of a plane relative to PVOUT (1 = as good as the optimum fixed tilt)."""
        return self.daily_yield(tilt, azimuth) / self.pvout if self.pvout > 0 else 0.0

    def yield_ratios(self, tilt: float, azimuth: np.ndarray, step_deg: float = 5.0) -> np.ndarray:
        """:meth:`yield_ratio` for many azimuths at one tilt: computed every ``step_deg`` and
        interpolated (periodic) in between — the yield is smooth in azimuth."""
        grid = np.arange(0.0, 360.0 + step_deg, step_deg)
        curve = np.array([self.yield_ratio(tilt, a % 360.0) for a in grid])
        return np.interp(np.asarray(azimuth, dtype=np.float64) % 360.0, grid, curve)

    @classmethod
    def from_tmy3(cls, path: str | Path, gamma_pdc: float = -0.004) -> tuple[Sky, dict]:
        """The sky of a TMY3 file and its metadata (values are hour-ending: sun at mid-hour).

        Raises whatever pvlib raises for a file it cannot read.
        """
        import pvlib

        data, meta = pvlib.iotools.read_tmy3(str(path), map_variables=True)
        lat, lon = float(meta["latitude"]), float(meta["longitude"])
        loc = pvlib.location.Location(lat, lon, altitude=float(meta.get("altitude", 0.0)))
        sun = loc.get_solarposition(data.index - pd.Timedelta(minutes=30))
        sun.index = data.index
        hourly = pd.DataFrame({
            "ghi": data["ghi"], "dni": data["dni"], "dhi": data["dhi"],
            "temp_air": data["temp_air"], "wind_speed": data["wind_speed"],
            "apparent_zenith": sun["apparent_zenith"], "azimuth": sun["azimuth"],
            "dni_extra": pvlib.irradiance.get_extra_radiation(data.index)}, index=data.index)
        albedo: pd.Series | float = 0.25
        if "albedo" in data:  # TMY3 writes 0 for a missing albedo → 0.25
            a = pd.to_numeric(data["albedo"], errors="coerce")
            albedo = a.where(a > 0, 0.25)
        name = f"tmy:{meta.get('USAF', Path(path).stem)}"
        return cls(lat, lon, hourly, albedo, gamma_pdc, name), meta


def clear_sky_climate(latitude: float, longitude: float, clear_sky_index: float = CLEAR_SKY_INDEX,
                      gamma_pdc: float = -0.004) -> Sky:
    """The clear-sky-and-climate sky at a place (module docstring): Ineichen clear sky with
    pvlib's Linke turbidity climatology × ``clear_sky_index``, Erbs split, 20 °C, 1 m/s."""
    import pvlib

    altitude = float(pvlib.location.lookup_altitude(latitude, longitude))
    loc = pvlib.location.Location(latitude, longitude, altitude=altitude)
    # Hour centres of a UTC year; the sun and the turbidity climatology need nothing else.
    times = pd.date_range(f"{_YEAR}-01-01 00:30", periods=8760, freq="h", tz="UTC")
    sun = loc.get_solarposition(times)
    linke = pvlib.clearsky.lookup_linke_turbidity(times, latitude, longitude)
    clear = loc.get_clearsky(times, model="ineichen", solar_position=sun, linke_turbidity=linke)
    ghi = (clear["ghi"] * clear_sky_index).clip(lower=0.0)
    split = pvlib.irradiance.erbs(ghi, sun["zenith"], times)
    hourly = pd.DataFrame({
        "ghi": ghi, "dni": split["dni"].fillna(0.0), "dhi": split["dhi"].fillna(0.0),
        "temp_air": DEFAULT_TEMP_AIR, "wind_speed": DEFAULT_WIND,
        "apparent_zenith": sun["apparent_zenith"], "azimuth": sun["azimuth"],
        "dni_extra": pvlib.irradiance.get_extra_radiation(times)}, index=times)
    return Sky(latitude, longitude, hourly, 0.25, gamma_pdc, "clear_sky_climate")


class ClearSkyClimate:
    """Clear-sky-and-climate skies on a grid (``grid_deg``), built once per cell and kept for
    the ``max_cells`` most recently used cells (a sky is ≈ 0.6 MB); thread-safe.

    Args:
        clear_sky_index: all-sky / clear-sky ratio (default: the global mean, 0.75).
        grid_deg: cell size (°); every building in a cell shares its centre's sky (the clear
            sky and the turbidity climatology change little over 25 km).
        max_cells: skies kept in memory.
    """

    name = "clear_sky_climate"

    def __init__(self, clear_sky_index: float = CLEAR_SKY_INDEX, grid_deg: float = 0.25,
                 gamma_pdc: float = -0.004, max_cells: int = 256) -> None:
        if not 0 < clear_sky_index <= 1:
            from urbanfabric.errors import InvalidInput

            raise InvalidInput("clear_sky_index", "must be in (0, 1]")
        self.clear_sky_index = clear_sky_index
        self.grid_deg = grid_deg
        self.gamma_pdc = gamma_pdc
        self.max_cells = max_cells
        self._skies: OrderedDict[tuple[int, int], Sky] = OrderedDict()
        self._lock = threading.Lock()

    def sky(self, lon: float, lat: float) -> Sky:
        """The sky of the grid cell around (lon, lat)."""
        key = (int(np.floor(lon / self.grid_deg)), int(np.floor(lat / self.grid_deg)))
        with self._lock:
            if key in self._skies:
                self._skies.move_to_end(key)
                return self._skies[key]
            clon, clat = (key[0] + 0.5) * self.grid_deg, (key[1] + 0.5) * self.grid_deg
            sky = clear_sky_climate(clat, clon, self.clear_sky_index, self.gamma_pdc)
            self._skies[key] = sky
            while len(self._skies) > self.max_cells:
                self._skies.popitem(last=False)
            return sky

    def pvout(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """PVOUT (kWh/kWp/day) per point; NaN where the location is unknown."""
        x, y = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        out = np.full(x.shape, np.nan)
        for i in np.flatnonzero(np.isfinite(x) & np.isfinite(y)):
            out[i] = self.sky(float(x[i]), float(y[i])).pvout
        return out
