"""The stock of a batch of buildings: structure, material mass and embodied carbon with their
ranges, rooftop solar potential, and every fallback used, in one table.

What the intensity service runs per request. Unknown inputs are NaN (numbers) or ``""``
(classes): the structure then comes from the roof / façade class (:class:`KeyMapping`), and
whatever is still unknown falls back as :meth:`MaterialIntensityTable.simulate_stock` and
:func:`rooftop_potential` document, each fallback named in the ``fallback`` column.
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
) -> pd.DataFrame:
    """One row per building: the columns of ``simulate_stock`` plus ``solar_kwh_per_year``,
    ``pvout_kwh_per_kwp_day``, ``solar_kwp`` and ``solar_source``, with ``fallback`` joining the
    stock's and the solar fallbacks. ``roof_shape`` (flat/gable/hip, "" = unknown) and
    ``main_axis_deg`` (bearing of the footprint's long axis, NaN = unknown) set the roof planes
    of the solar potential (:func:`urbanfabric.stock.solar.rooftop_potential`)."""
    # Structure: given, else from the façade / roof class; "" = unknown, which the table
    # replaces by its default structure and records.
    mapped = mapping.structure(roof=list(roof_material), facade=list(facade_material))
    structures = [s or m for s, m in zip(structure, mapped)]
    stock = table.simulate_stock(footprint_area_m2, list(function), structures, region, floors=floors,
                                 height_m=height_m, height_p05=height_p05, height_p95=height_p95,
                                 options=options)
    sun = rooftop_potential(footprint_area_m2, longitude, latitude, pvout, solar_options,
                            roof_shape=roof_shape, main_axis_deg=main_axis_deg, default=default_sky)
    out = stock.reset_index(drop=True)
    out["solar_kwh_per_year"] = sun["solar_kwh_per_year"].to_numpy()
    out["pvout_kwh_per_kwp_day"] = sun["pvout_kwh_per_kwp_day"].to_numpy()
    out["solar_kwp"] = sun["solar_kwp"].to_numpy()
    out["solar_source"] = sun["solar_source"].to_numpy()
    out["fallback"] = [";".join(t for t in (a, b) if t)
                       for a, b in zip(stock["fallback"].to_numpy(), sun["solar_fallback"].to_numpy())]
    return out
