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

Solar from the place (issue 18): without a raster or TMY, PVOUT comes from pvlib's clear sky
at the building's latitude/longitude with the Linke turbidity climatology, scaled by a
clear-sky index for clouds (:mod:`urbanfabric.stock.pv_sky`; fallback token
``pvout_clear_sky_climate``). The roof is split into planes by its shape and the footprint's
main axis (:mod:`urbanfabric.stock.roof_planes`): a flat roof is GBM Eq. 1 as is; each
pitched plane gets kWp = flush module area / (module area per kWp) and its own yield relative to
PVOUT (from the TMY where one applies, else the clear-sky-climate sky of the place). Per
building: ``solar_source`` (``tmy``, ``raster``, ``constant``, ``clear_sky_climate``,
``gbm_constant``), ``solar_kwp`` and the fallbacks.
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
from urbanfabric.stock.pv_sky import CLEAR_SKY_INDEX, ClearSkyClimate, Sky
from urbanfabric.stock.roof_planes import ROOF_FALLBACKS, TYPICAL_PITCH_DEG, roof_planes

#: GBM's PVOUT outside the Solargis coverage (kWh/kWp/day).
DEFAULT_PVOUT = 3.5
#: Latitudes (°) covered by the Solargis / Global Solar Atlas rasters.
LAT_NORTH, LAT_SOUTH = 60.0, -50.0
SOLAR_FALLBACKS: dict[str, str] = {
    "pvout_outside_band": "outside 60°N–50°S: GBM's constant 3.5 kWh/kWp/day",
    "pvout_default": "building location unknown: GBM's constant 3.5 kWh/kWp/day",
    "pvout_clear_sky_climate": "no PVOUT raster or TMY covers the building: pvlib clear sky "
                               "(Ineichen, Linke turbidity climatology) × a clear-sky index (0.75 unless set)",
    "roof_area_invalid": "footprint area missing or <= 0: no solar potential (NaN)",
    **ROOF_FALLBACKS,
}


@dataclass(frozen=True)
class SolarOptions:
    """Parameters of GBM Eq. 1.

    Attributes:
        area_per_kwp_m2: roof area one kWp occupies (GBM: 10–30 m²).
        losses: fraction lost to soiling, mismatch, cabling, transformer, downtime.
        usable_roof_fraction: share of the footprint area panels may cover.
        default_pvout: PVOUT where the location is unknown or outside 60°N–50°S (kWh/kWp/day).
        clear_sky_index: all-sky / clear-sky ratio of the clear-sky-climate default.
        pitch_deg: tilt of gable and hip roof planes (typical pitch; an assumption).
        flat_roof_gcr: module area / roof area of tilted rows on a flat roof; with
            ``area_per_kwp_m2`` it gives the module area per kWp (10 m² × 0.5 = 5 m²/kWp).
        pitched_fill: share of a pitched plane that flush modules cover (set-backs aside).
        min_plane_yield_ratio: planes yielding less than this share of PVOUT get no modules
            (Gagnon et al. 2016, NREL/TP-6A20-65298: 80 %).
    """

    area_per_kwp_m2: float = 10.0
    losses: float = 0.10
    usable_roof_fraction: float = 1.0
    default_pvout: float = DEFAULT_PVOUT
    clear_sky_index: float = CLEAR_SKY_INDEX
    pitch_deg: float = TYPICAL_PITCH_DEG
    flat_roof_gcr: float = 0.5
    pitched_fill: float = 0.7
    min_plane_yield_ratio: float = 0.8

    def __post_init__(self) -> None:
        if not self.area_per_kwp_m2 > 0:
            raise InvalidInput("area_per_kwp_m2", "must be > 0")
        if not 0 <= self.losses < 1:
            raise InvalidInput("losses", "must be in [0, 1)")
        if not 0 < self.usable_roof_fraction <= 1:
            raise InvalidInput("usable_roof_fraction", "must be in (0, 1]")
        if not self.default_pvout > 0:
            raise InvalidInput("default_pvout", "must be > 0")
        if not 0 < self.clear_sky_index <= 1:
            raise InvalidInput("clear_sky_index", "must be in (0, 1]")
        if not 0 < self.pitch_deg < 90:
            raise InvalidInput("pitch_deg", "must be in (0, 90)")
        for name in ("flat_roof_gcr", "pitched_fill"):
            if not 0 < getattr(self, name) <= 1:
                raise InvalidInput(name, "must be in (0, 1]")
        if not 0 <= self.min_plane_yield_ratio <= 1:
            raise InvalidInput("min_plane_yield_ratio", "must be in [0, 1]")

    @property
    def module_area_per_kwp_m2(self) -> float:
        """Module area of 1 kWp: GBM's roof area per kWp times the flat-roof coverage ratio."""
        return self.area_per_kwp_m2 * self.flat_roof_gcr


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
    kind = "constant"

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
    kind = "raster"

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
    """PVOUT of a 1 kWp array from a TMY3 file, with pvlib (:class:`urbanfabric.stock.pv_sky.Sky`).

    The array faces the equator at its optimum fixed tilt (the tilt with the most yearly
    plane-of-array irradiance, searched in 1° steps) unless ``tilt`` is given; transposition
    Hay–Davies, cell temperature SAPM (open rack, glass/glass), DC power PVWatts with
    ``gamma_pdc`` per °C. Solar position at the middle of each hour (TMY3 values are
    hour-ending sums). The value applies within ``max_distance_km`` of the station; farther
    buildings get NaN (→ the clear-sky-climate default, recorded).

    Args:
        path: TMY3 CSV (e.g. ``../shared/data/solar/723170TYA.CSV``).
        tilt: panel tilt (°); None searches the optimum.
        gamma_pdc: DC power temperature coefficient (1/°C).
        max_distance_km: radius around the station where the TMY is taken as valid.
    """

    kind = "tmy"

    def __init__(self, path: str | Path, tilt: float | None = None, gamma_pdc: float = -0.004,
                 max_distance_km: float = 100.0) -> None:
        import pvlib

        self.path = Path(path)
        if not self.path.is_file():
            raise InvalidInput("path", f"no TMY file at {self.path}")
        try:
            self.sky, meta = Sky.from_tmy3(self.path, gamma_pdc)
            self.weather, _ = pvlib.iotools.read_tmy3(str(self.path), map_variables=True)
        except Exception as exc:
            raise InvalidInput("path", f"not a TMY3 file ({exc})") from exc
        self.latitude, self.longitude = self.sky.latitude, self.sky.longitude
        self.altitude = float(meta.get("altitude", 0.0))
        self.name = self.sky.name
        self.gamma_pdc = gamma_pdc
        self.max_distance_km = max_distance_km
        self._tilt = tilt

    @property
    def azimuth(self) -> float:
        """Equator-facing: south (180°) in the northern hemisphere, north (0°) in the south."""
        return self.sky.equator_azimuth

    def poa(self, tilt: float) -> pd.DataFrame:
        """Plane-of-array irradiance (W/m²) per hour for a tilt, equator-facing."""
        return self.sky.poa(tilt, self.azimuth)

    @property
    def albedo(self) -> pd.Series | float:
        """The file's albedo where recorded (> 0); TMY3 writes 0 for missing, → 0.25."""
        return self.sky.albedo

    @cached_property
    def tilt(self) -> float:
        """The given tilt, or the one with the most yearly POA irradiance (0–70°)."""
        return float(self._tilt) if self._tilt is not None else self.sky.best_tilt

    @cached_property
    def daily_kwh_per_kwp(self) -> float:
        """Mean daily DC yield of 1 kWp (kWh/kWp/day) over the TMY year."""
        return self.sky.daily_yield(self.tilt, self.azimuth)

    def pvout(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        return np.where(self._near(lon, lat), self.daily_kwh_per_kwp, np.nan)

    def _near(self, lon: np.ndarray | float, lat: np.ndarray | float) -> np.ndarray:
        d = haversine_km(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64),
                         self.longitude, self.latitude)
        return np.asarray(d <= self.max_distance_km)

    def sky_for(self, lon: float, lat: float) -> Sky | None:
        """The TMY's sky for a building within range (for the yield of its roof planes)."""
        return self.sky if bool(self._near(lon, lat)) else None


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
             options: SolarOptions | None = None,
             default: ClearSkyClimate | None = None) -> tuple[np.ndarray, np.ndarray]:
    """PVOUT per point and the fallback token per point (``""`` when the source applied).

    Outside 60°N–50°S the GBM constant is used whatever the source (GBM's rule; the
    rasters end there), and where the location is unknown (NaN); inside, the source's value,
    or the clear-sky-climate default where there is no source or it has no value.
    """
    pv, token, _ = _locate(lon, lat, source, options or SolarOptions(), default)
    return pv, token


def _locate(lon: np.ndarray | Sequence[float], lat: np.ndarray | Sequence[float],
            source: PvoutSource | None, opt: SolarOptions,
            default: ClearSkyClimate | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`pvout_at` plus the ``solar_source`` of each point."""
    x, y = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    located = np.isfinite(x) & np.isfinite(y)
    inside = located & (y <= LAT_NORTH) & (y >= LAT_SOUTH)
    outside = ~inside  # unknown location or beyond the band: GBM's constant
    kind = np.full(x.shape, "gbm_constant", dtype=object)
    if source is not None and inside.any():
        out[inside] = source.pvout(x[inside], y[inside])
        kind[inside & np.isfinite(out)] = getattr(source, "kind", getattr(source, "name", "source"))
    token = np.full(x.shape, "", dtype=object)
    token[located & outside] = "pvout_outside_band"
    token[~located] = "pvout_default"
    out[outside] = opt.default_pvout
    modelled = inside & ~np.isfinite(out)
    if modelled.any():
        sky = default or ClearSkyClimate(opt.clear_sky_index)
        out[modelled] = sky.pvout(x[modelled], y[modelled])
        token[modelled] = "pvout_clear_sky_climate"
        kind[modelled] = sky.name
    return out, token, kind


def _join(*tokens: str) -> str:
    return ";".join(t for t in tokens if t)


def _plane_ratios(x: np.ndarray, y: np.ndarray, tilt: np.ndarray, azimuth: np.ndarray,
                  source: PvoutSource | None, default: ClearSkyClimate) -> np.ndarray:
    """Yield / PVOUT of each plane, from the TMY's sky where it applies, else the
    clear-sky-climate sky of the grid cell (:meth:`Sky.yield_ratios`: pvlib every 5° of
    azimuth per sky and tilt, interpolated)."""
    near = source._near(x, y) if isinstance(source, TmyPvout) else np.zeros(len(x), dtype=bool)
    # Sky key: the TMY (-1, -1) or the default's grid cell; then the tilt.
    cx = np.where(near, -1, np.floor(x / default.grid_deg)).astype(np.int64)
    cy = np.where(near, -1, np.floor(y / default.grid_deg)).astype(np.int64)
    keys = np.stack([cx, cy, np.round(tilt * 10).astype(np.int64)], axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    out = np.empty(len(x))
    for j, key in enumerate(uniq):
        members = np.flatnonzero(inverse == j)
        i = members[0]
        sky = source.sky if near[i] and isinstance(source, TmyPvout) else default.sky(float(x[i]), float(y[i]))
        out[members] = sky.yield_ratios(key[2] / 10.0, azimuth[members])
    return out


def rooftop_potential(
    footprint_area_m2: np.ndarray | Sequence[float],
    lon: np.ndarray | Sequence[float],
    lat: np.ndarray | Sequence[float],
    source: PvoutSource | None = None,
    options: SolarOptions | None = None,
    roof_shape: Sequence[str | None] | None = None,
    main_axis_deg: np.ndarray | Sequence[float] | None = None,
    default: ClearSkyClimate | None = None,
) -> pd.DataFrame:
    """Per building: ``pvout_kwh_per_kwp_day``, ``solar_kwh_per_year``, ``solar_kwp``,
    ``solar_source``, ``solar_fallback``.

    GBM Eq. 1 summed over the roof's planes (module docstring): a flat roof (or the flat-roof
    assumption for an unknown shape, named) is GBM Eq. 1 as is; a pitched plane adds
    PVOUT × (its yield / PVOUT) × 365 × kWp × (1 − losses), or nothing below
    ``min_plane_yield_ratio``.

    Raises:
        InvalidInput: the arrays differ in length.
    """
    opt = options or SolarOptions()
    area = np.asarray(footprint_area_m2, dtype=np.float64).ravel()
    x, y = np.asarray(lon, dtype=np.float64).ravel(), np.asarray(lat, dtype=np.float64).ravel()
    n = len(area)
    if not n == len(x) == len(y):
        raise InvalidInput("lon", f"{len(x)} / {len(y)} coordinates for {n} buildings")
    shapes = list(roof_shape) if roof_shape is not None else [""] * n
    axis = np.asarray(main_axis_deg, dtype=np.float64).ravel() if main_axis_deg is not None \
        else np.full(n, np.nan)
    if len(shapes) != n:
        raise InvalidInput("roof_shape", f"{len(shapes)} roof shapes for {n} buildings")
    if len(axis) != n:
        raise InvalidInput("main_axis_deg", f"{len(axis)} axes for {n} buildings")
    default = default or ClearSkyClimate(opt.clear_sky_index)
    pvout, token, kind = _locate(x, y, source, opt, default)
    located = np.isfinite(x) & np.isfinite(y)
    # No location, no sun to rate a plane's orientation: the flat-roof layout, named.
    planes = roof_planes(area, shapes, np.where(located, axis, np.nan), opt.pitch_deg)
    bad = ~np.isfinite(area) | (area <= 0)
    pb, ptilt, paz, parea = planes.building, planes.tilt, planes.azimuth, planes.area_m2
    flat = ~np.isfinite(ptilt)
    # Flat layout: rows at the optimum tilt, GBM Eq. 1 (ratio 1, GBM's area per kWp).
    p_kwp = np.where(flat, parea * opt.usable_roof_fraction / opt.area_per_kwp_m2,
                     parea * opt.usable_roof_fraction * opt.pitched_fill / opt.module_area_per_kwp_m2)
    ratio = np.ones(len(pb))
    pitched = np.flatnonzero(~flat & ~bad[pb])
    if len(pitched):
        ratio[pitched] = _plane_ratios(x[pb[pitched]], y[pb[pitched]], ptilt[pitched],
                                       paz[pitched], source, default)
    p_kwp = np.where(ratio < opt.min_plane_yield_ratio, 0.0, p_kwp)  # unsuitable planes
    p_kwh = pvout[pb] * ratio * 365.0 * p_kwp * (1.0 - opt.losses)
    kwp = np.bincount(pb, weights=np.nan_to_num(p_kwp), minlength=n)
    kwh = np.bincount(pb, weights=np.nan_to_num(p_kwh), minlength=n)
    kwp[bad], kwh[bad] = np.nan, np.nan
    tokens = [_join(t, r, "roof_area_invalid" if z else "")
              for t, r, z in zip(token, planes.fallback, bad)]
    return pd.DataFrame({"pvout_kwh_per_kwp_day": pvout, "solar_kwh_per_year": kwh,
                         "solar_kwp": kwp, "solar_source": kind, "solar_fallback": tokens})


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
