"""Rooftop solar potential per building (GlobalBuildingMap, "Solar Potential Analysis").

GBM Eq. 1 (``global-building-map.txt``): the yearly potential of a roof is::

    E = PVOUT × 365 × (usable roof area / area per kWp) × (1 − losses)        (kWh / year)

* ``PVOUT``: long-term average daily yield of a 1 kWp system at the location
  (kWh/kWp/day). From a raster when given (Global Solar Atlas / Solargis style,
  :class:`RasterPvout`), or computed from a typical-meteorological-year file with pvlib
  (:class:`TmyPvout`). Outside 60°N–50°S — where the Solargis rasters end — GBM uses a
  constant 3.5 kWh/kWp/day; the same constant stands in where no source covers a building,
  and the ``fallback`` tokens say which (:data:`SOLAR_FALLBACKS`).
* area per kWp: 10–30 m² depending on the device (GBM); 10 m² by default — a panel of today
  (≈ 5–6 m²/kWp) plus spacing and set-backs. 30 m² gives a third of the potential.
* losses: dirt and soiling, mismatch, transformer, DC and AC cabling, downtime; 10 %.
* usable roof area: the footprint area times ``usable_roof_fraction`` (1.0 as in GBM, which
  puts panels on every roof; orientation and superstructures would lower it).

PVOUT from a TMY file is the DC yield of a fixed, equator-facing array at its optimum tilt
(the Global Solar Atlas convention) with cell-temperature losses only: the other losses are
the ``losses`` term above and must not be counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from urbanfabric.errors import InvalidInput
from urbanfabric.io.rasters import Raster

#: GBM's PVOUT outside the Solargis coverage (kWh/kWp/day).
DEFAULT_PVOUT = 3.5
#: Latitudes (°) covered by the Solargis / Global Solar Atlas rasters.
LAT_NORTH, LAT_SOUTH = 60.0, -50.0
SOLAR_FALLBACKS: dict[str, str] = {
    "pvout_outside_band": "outside 60°N–50°S: GBM's constant 3.5 kWh/kWp/day",
    "pvout_default": "no PVOUT source covers the building: GBM's constant 3.5 kWh/kWp/day",
    "roof_area_invalid": "footprint area missing or <= 0: no solar potential (NaN)",
}


@dataclass(frozen=True)
class SolarOptions:
    """Parameters of GBM Eq. 1.

    Attributes:
        area_per_kwp_m2: roof area one kWp occupies (GBM: 10–30 m²).
        losses: fraction lost to soiling, mismatch, cabling, transformer, downtime.
        usable_roof_fraction: share of the footprint area panels may cover.
        default_pvout: PVOUT where no source applies (kWh/kWp/day).
    """

    area_per_kwp_m2: float = 10.0
    losses: float = 0.10
    usable_roof_fraction: float = 1.0
    default_pvout: float = DEFAULT_PVOUT

    def __post_init__(self) -> None:
        if not self.area_per_kwp_m2 > 0:
            raise InvalidInput("area_per_kwp_m2", "must be > 0")
        if not 0 <= self.losses < 1:
            raise InvalidInput("losses", "must be in [0, 1)")
        if not 0 < self.usable_roof_fraction <= 1:
            raise InvalidInput("usable_roof_fraction", "must be in (0, 1]")
        if not self.default_pvout > 0:
            raise InvalidInput("default_pvout", "must be > 0")


def yearly_potential_kwh(
    roof_area_m2: np.ndarray | Sequence[float] | float,
    pvout_kwh_per_kwp_day: np.ndarray | Sequence[float] | float,
    options: SolarOptions | None = None,
) -> np.ndarray:
    """GBM Eq. 1: PVOUT × 365 × (usable area / area per kWp) × (1 − losses), kWh per year."""
    opt = options or SolarOptions()
    area = np.asarray(roof_area_m2, dtype=np.float64) * opt.usable_roof_fraction
    pvout = np.asarray(pvout_kwh_per_kwp_day, dtype=np.float64)
    return pvout * 365.0 * (area / opt.area_per_kwp_m2) * (1.0 - opt.losses)


class PvoutSource(Protocol):
    """Gives PVOUT (kWh/kWp/day) at points; NaN where it has no value."""

    name: str

    def pvout(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ConstantPvout:
    """One PVOUT everywhere (e.g. a value the user read off the Global Solar Atlas)."""

    value: float
    name: str = "constant"

    def pvout(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        return np.full(np.shape(lon), float(self.value))


class RasterPvout:
    """PVOUT sampled from a raster (nearest pixel; nodata and outside → NaN).

    Args:
        raster: single-band PVOUT raster, any CRS.
        units: ``"daily"`` (kWh/kWp/day, the Global Solar Atlas ``PVOUT`` layer) or
            ``"yearly"`` (kWh/kWp/year, divided by 365).
    """

    name = "raster"

    def __init__(self, raster: Raster, units: str = "daily") -> None:
        if units not in ("daily", "yearly"):
            raise InvalidInput("units", "daily or yearly")
        self.raster = raster
        self.scale = 1.0 if units == "daily" else 1.0 / 365.0

    @classmethod
    def open(cls, path: str | Path, units: str = "daily") -> RasterPvout:
        """Read a GeoTIFF PVOUT raster."""
        from urbanfabric.io.rasters import read_raster

        return cls(read_raster(Path(path).read_bytes()), units)

    def pvout(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        x, y = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        if self.raster.crs is not None and self.raster.crs.to_epsg() != 4326:
            from pyproj import Transformer

            x, y = Transformer.from_crs("EPSG:4326", self.raster.crs, always_xy=True).transform(x, y)
        cols, rows = ~self.raster.transform @ (x, y)
        rows, cols = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
        band = self.raster.data[0].astype(np.float64)
        inside = (rows >= 0) & (rows < band.shape[0]) & (cols >= 0) & (cols < band.shape[1])
        out = np.full(x.shape, np.nan)
        out[inside] = band[rows[inside], cols[inside]]
        if self.raster.nodata is not None:
            out[out == self.raster.nodata] = np.nan
        out[~np.isfinite(out) | (out < 0)] = np.nan
        return out * self.scale


class TmyPvout:
    """PVOUT of a 1 kWp array from a TMY3 file, with pvlib.

    The array faces the equator at its optimum fixed tilt (the tilt with the most yearly
    plane-of-array irradiance, searched in 1° steps) unless ``tilt`` is given; transposition
    Hay–Davies, cell temperature SAPM (open rack, glass/glass), DC power PVWatts with
    ``gamma_pdc`` per °C. Solar position at the middle of each hour (TMY3 values are
    hour-ending sums). The value applies within ``max_distance_km`` of the station; farther
    buildings get NaN (→ the default, recorded).

    Args:
        path: TMY3 CSV (e.g. ``../shared/data/solar/723170TYA.CSV``).
        tilt: panel tilt (°); None searches the optimum.
        gamma_pdc: DC power temperature coefficient (1/°C).
        max_distance_km: radius around the station where the TMY is taken as valid.
    """

    def __init__(self, path: str | Path, tilt: float | None = None, gamma_pdc: float = -0.004,
                 max_distance_km: float = 100.0) -> None:
        import pvlib

        self.path = Path(path)
        if not self.path.is_file():
            raise InvalidInput("path", f"no TMY file at {self.path}")
        try:
            data, meta = pvlib.iotools.read_tmy3(str(self.path), map_variables=True)
        except Exception as exc:
            raise InvalidInput("path", f"not a TMY3 file ({exc})") from exc
        self.weather = data
        self.latitude, self.longitude = float(meta["latitude"]), float(meta["longitude"])
        self.altitude = float(meta.get("altitude", 0.0))
        self.name = f"tmy:{meta.get('USAF', self.path.stem)}"
        self.gamma_pdc = gamma_pdc
        self.max_distance_km = max_distance_km
        self._tilt = tilt

    @property
    def azimuth(self) -> float:
        """Equator-facing: south (180°) in the northern hemisphere, north (0°) in the south."""
        return 180.0 if self.latitude >= 0 else 0.0

    @cached_property
    def _sun(self) -> pd.DataFrame:
        import pvlib

        loc = pvlib.location.Location(self.latitude, self.longitude, altitude=self.altitude)
        mid = self.weather.index - pd.Timedelta(minutes=30)
        sun = loc.get_solarposition(mid)
        sun.index = self.weather.index
        return sun

    def poa(self, tilt: float) -> pd.DataFrame:
        """Plane-of-array irradiance (W/m²) per hour for a tilt."""
        import pvlib

        w, sun = self.weather, self._sun
        dni_extra = pvlib.irradiance.get_extra_radiation(w.index)
        return pvlib.irradiance.get_total_irradiance(
            tilt, self.azimuth, sun["apparent_zenith"], sun["azimuth"], w["dni"], w["ghi"],
            w["dhi"], dni_extra=dni_extra, albedo=self.albedo, model="haydavies")

    @property
    def albedo(self) -> pd.Series | float:
        """The file's albedo where recorded (> 0); TMY3 writes 0 for missing, → 0.25."""
        if "albedo" not in self.weather:
            return 0.25
        a = pd.to_numeric(self.weather["albedo"], errors="coerce")
        return a.where(a > 0, 0.25)

    @cached_property
    def tilt(self) -> float:
        """The given tilt, or the one with the most yearly POA irradiance (0–70°)."""
        if self._tilt is not None:
            return float(self._tilt)

        def total(t: int) -> float:
            return float(self.poa(t)["poa_global"].fillna(0).sum())

        # Yearly POA is smooth and single-peaked in tilt: 5° steps, then 1° around the best.
        coarse = max(range(0, 71, 5), key=total)
        return float(max(range(max(coarse - 4, 0), min(coarse + 5, 71)), key=total))

    @cached_property
    def daily_kwh_per_kwp(self) -> float:
        """Mean daily DC yield of 1 kWp (kWh/kWp/day) over the TMY year."""
        import pvlib

        poa = self.poa(self.tilt)["poa_global"].fillna(0.0).clip(lower=0.0)
        params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_glass"]
        temp = pvlib.temperature.sapm_cell(poa, self.weather["temp_air"],
                                           self.weather["wind_speed"], **params)
        dc_w = pvlib.pvsystem.pvwatts_dc(poa, temp, pdc0=1000.0, gamma_pdc=self.gamma_pdc)
        hours = len(dc_w)
        return float(dc_w.clip(lower=0).sum()) / 1000.0 / (hours / 24.0)

    def pvout(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        d = haversine_km(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64),
                         self.longitude, self.latitude)
        return np.where(d <= self.max_distance_km, self.daily_kwh_per_kwp, np.nan)


def haversine_km(lon: np.ndarray, lat: np.ndarray, lon0: float, lat0: float) -> np.ndarray:
    """Great-circle distance (km) from each point to (lon0, lat0)."""
    p1, p2 = np.radians(lat), np.radians(lat0)
    dlat, dlon = p2 - p1, np.radians(lon0 - np.asarray(lon))
    a = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return 2 * 6371.0088 * np.arcsin(np.sqrt(a))


def open_source(path: str | Path, units: str = "daily") -> PvoutSource:
    """A PVOUT source from a file: ``.tif`` / ``.tiff`` → raster, ``.csv`` → TMY3."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return RasterPvout.open(p, units)
    if suffix == ".csv":
        return TmyPvout(p)
    raise InvalidInput("path", f"{p.name}: expected a GeoTIFF (.tif) or a TMY3 file (.csv)")


def pvout_at(lon: np.ndarray | Sequence[float], lat: np.ndarray | Sequence[float],
             source: PvoutSource | None = None,
             options: SolarOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
    """PVOUT per point and the fallback token per point (``""`` when the source applied).

    Outside 60°N–50°S the GBM constant is used whatever the source (GBM's rule; the
    rasters end there); inside, the source's value, or the constant where it has none or the
    location is unknown (NaN).
    """
    opt = options or SolarOptions()
    x, y = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    located = np.isfinite(x) & np.isfinite(y)
    inside = located & (y <= LAT_NORTH) & (y >= LAT_SOUTH)
    outside = located & ~inside
    if source is not None and inside.any():
        out[inside] = source.pvout(x[inside], y[inside])
    token = np.full(x.shape, "", dtype=object)
    token[outside] = "pvout_outside_band"
    missing = ~outside & ~np.isfinite(out)  # no location, or no value from the source
    token[missing] = "pvout_default"
    out[outside | missing] = opt.default_pvout
    return out, token


def rooftop_potential(
    footprint_area_m2: np.ndarray | Sequence[float],
    lon: np.ndarray | Sequence[float],
    lat: np.ndarray | Sequence[float],
    source: PvoutSource | None = None,
    options: SolarOptions | None = None,
) -> pd.DataFrame:
    """Per building: ``pvout_kwh_per_kwp_day``, ``solar_kwh_per_year``, ``solar_fallback``.

    Raises:
        InvalidInput: the three arrays differ in length.
    """
    area = np.asarray(footprint_area_m2, dtype=np.float64).ravel()
    x, y = np.asarray(lon, dtype=np.float64).ravel(), np.asarray(lat, dtype=np.float64).ravel()
    if not len(area) == len(x) == len(y):
        raise InvalidInput("lon", f"{len(x)} / {len(y)} coordinates for {len(area)} buildings")
    pvout, token = pvout_at(x, y, source, options)
    bad = ~np.isfinite(area) | (area <= 0)
    kwh = yearly_potential_kwh(np.where(bad, np.nan, area), pvout, options)
    token = np.where(bad, np.where(token == "", "roof_area_invalid",
                                   token + ";roof_area_invalid"), token)
    return pd.DataFrame({"pvout_kwh_per_kwp_day": pvout, "solar_kwh_per_year": kwh,
                         "solar_fallback": token})


def main(argv: list[str] | None = None) -> int:
    """``python -m urbanfabric.stock.solar PVOUT_FILE [--area 100 …]``: PVOUT and GBM Eq. 1."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("source", help="TMY3 CSV or PVOUT GeoTIFF")
    ap.add_argument("--area", type=float, nargs="+", default=[100.0], help="roof areas (m²)")
    ap.add_argument("--area-per-kwp", type=float, default=10.0)
    ap.add_argument("--losses", type=float, default=0.10)
    args = ap.parse_args(argv)
    src = open_source(args.source)
    opt = SolarOptions(area_per_kwp_m2=args.area_per_kwp, losses=args.losses)
    if isinstance(src, TmyPvout):
        print(f"{src.name}: lat {src.latitude}, lon {src.longitude}, tilt {src.tilt:.0f}°, "
              f"azimuth {src.azimuth:.0f}°, PVOUT {src.daily_kwh_per_kwp:.3f} kWh/kWp/day (DC)")
        lon, lat = np.full(len(args.area), src.longitude), np.full(len(args.area), src.latitude)
    else:
        raise SystemExit("give a TMY3 file to compute PVOUT; rasters are sampled per building")
    out = rooftop_potential(args.area, lon, lat, src, opt)
    out.insert(0, "roof_area_m2", args.area)
    print(out.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
