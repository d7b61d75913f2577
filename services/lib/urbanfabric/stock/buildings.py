"""The stock of a batch of buildings: structure, material mass and embodied carbon with their
ranges, rooftop solar potential, and every fallback used, in one table.

What the intensity service runs per request. Unknown inputs are NaN (numbers) or ``""``
(classes). A structure given per building is used as is; otherwise, with a
:class:`StructureModel`, each building gets P(C, M, S, T) from its floors, function, year,
region and material classes — the most likely class for the point estimate, the whole
distribution for the Monte-Carlo draws — and without one the roof / façade class decides
(:class:`KeyMapping`). Whatever is still unknown falls back as
:meth:`MaterialIntensityTable.simulate_stock` and :func:`rooftop_potential` document, each
fallback named in the ``fallback`` column.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from urbanfabric.stock.derived_intensity import KeyMapping
from urbanfabric.stock.intensity import MaterialIntensityTable
from urbanfabric.stock.monte_carlo import StockOptions
from urbanfabric.stock.pv_sky import ClearSkyClimate
from urbanfabric.stock.solar import PvoutSource, SolarOptions, rooftop_potential
from urbanfabric.stock.structure import STRUCTURE_CLASSES, StructureModel

#: More storeys than any building has (the tallest has 163): a larger count is a bad input.
MAX_FLOORS = 200


def _screen_inputs(floors: np.ndarray, longitude: np.ndarray,
                   latitude: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Impossible floors and places become unknown (NaN), each named per row as a fallback
    (``floors_invalid``, ``location_invalid``), so one bad row neither stops its batch nor
    gets a confident number."""
    fl = np.asarray(floors, dtype=np.float64).copy()
    lon = np.asarray(longitude, dtype=np.float64).copy()
    lat = np.asarray(latitude, dtype=np.float64).copy()
    bad_floors = np.isfinite(fl) & (fl > MAX_FLOORS)
    given = ~(np.isnan(lon) & np.isnan(lat))
    with np.errstate(invalid="ignore"):
        bad_place = given & ~(np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180) & (np.abs(lat) <= 90))
    fl[bad_floors] = np.nan
    lon[bad_place], lat[bad_place] = np.nan, np.nan
    reasons = [";".join(r for r, bad in (("floors_invalid", f), ("location_invalid", p)) if bad)
               for f, p in zip(bad_floors, bad_place)]
    return fl, lon, lat, reasons


def building_stock(
    table: MaterialIntensityTable,
    mapping: KeyMapping,
    region: str,
    *,
    footprint_area_m2: np.ndarray,
    function: Sequence[str],
    structure: Sequence[str],
    roof_material: Sequence[str],
    facade_material: Sequence[str],
    floors: np.ndarray,
    height_m: np.ndarray,
    height_p05: np.ndarray,
    height_p95: np.ndarray,
    longitude: np.ndarray,
    latitude: np.ndarray,
    options: StockOptions,
    solar_options: SolarOptions,
    pvout: PvoutSource | None,
    roof_shape: Sequence[str] | None = None,
    main_axis_deg: np.ndarray | None = None,
    default_sky: ClearSkyClimate | None = None,
    structure_model: StructureModel | None = None,
    year_built: np.ndarray | None = None,
    residential_p: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per building: the columns of ``simulate_stock`` plus ``solar_kwh_per_year``,
    ``pvout_kwh_per_kwp_day``, ``solar_kwp`` and ``solar_source``, with ``fallback`` joining the
    stock's and the solar fallbacks. ``roof_shape`` (flat/gable/hip, "" = unknown) and
    ``main_axis_deg`` (bearing of the footprint's long axis, NaN = unknown) set the roof planes
    of the solar potential (:func:`urbanfabric.stock.solar.rooftop_potential`). Structure
    columns: ``structure_source`` (given / model / roof_facade_lookup / default),
    ``structure_probability`` and ``p_structure_<C|M|S|T>`` (NaN without a model)."""
    n = len(footprint_area_m2)
    floors, longitude, latitude, screened = _screen_inputs(floors, longitude, latitude)
    given = np.array([bool(x) for x in structure], dtype=bool)
    probs = np.full((n, len(STRUCTURE_CLASSES)), np.nan)
    if structure_model is not None:
        h = np.asarray(height_m, dtype=np.float64)
        fl = np.asarray(floors, dtype=np.float64)
        known_h = np.isfinite(h) & (h > 0)
        fl = np.where(np.isfinite(fl) & (fl > 0), fl,
                      np.where(known_h, np.maximum(np.floor(np.where(known_h, h, 0.0) / options.storey_height_m + 0.5), 1.0),
                               np.nan))
        year = np.full(n, np.nan) if year_built is None else np.asarray(year_built, dtype=np.float64)
        probs = structure_model.predict_proba(fl, list(function), year, [region] * n,
                                              roof=list(roof_material), facade=list(facade_material))
        best = np.asarray(STRUCTURE_CLASSES, dtype=object)[probs.argmax(axis=1)]
        structures = [x or str(b) for x, b in zip(structure, best)]
        source = np.where(given, "given", "model")
    else:
        # The roof / façade class decides; "" = unknown, which the table replaces by its
        # default structure and records.
        mapped = mapping.structure(roof=list(roof_material), facade=list(facade_material))
        structures = [x or m for x, m in zip(structure, mapped)]
        source = np.where(given, "given", np.where([bool(m) for m in mapped], "roof_facade_lookup", "default"))
    probs[given] = np.nan  # a given structure is not sampled
    stock = table.simulate_stock(footprint_area_m2, list(function), structures, region, floors=floors,
                                 height_m=height_m, height_p05=height_p05, height_p95=height_p95,
                                 options=options, structure_p=probs if structure_model is not None else None,
                                 residential_p=residential_p)
    sun = rooftop_potential(footprint_area_m2, longitude, latitude, pvout, solar_options,
                            roof_shape=roof_shape, main_axis_deg=main_axis_deg, default=default_sky)
    out = stock.reset_index(drop=True)
    out["structure_source"] = source
    out["structure_probability"] = np.where(given, 1.0, np.nanmax(np.where(np.isnan(probs), -1.0, probs), axis=1))
    out.loc[~given & np.isnan(probs).all(axis=1), "structure_probability"] = np.nan
    for j, code in enumerate(STRUCTURE_CLASSES):
        out[f"p_structure_{code}"] = probs[:, j]
    out["solar_kwh_per_year"] = sun["solar_kwh_per_year"].to_numpy()
    out["pvout_kwh_per_kwp_day"] = sun["pvout_kwh_per_kwp_day"].to_numpy()
    out["solar_kwp"] = sun["solar_kwp"].to_numpy()
    out["solar_source"] = sun["solar_source"].to_numpy()
    out["fallback"] = [";".join(t for t in (c, a, b) if t)
                       for c, a, b in zip(screened, stock["fallback"].to_numpy(), sun["solar_fallback"].to_numpy())]
    return out
