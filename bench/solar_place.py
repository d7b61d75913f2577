"""Solar from the place (issue 18): the clear-sky-and-climate default against TMY files, and
the demo's rooftop solar before (GBM constant × footprint) and after (PVOUT of the place, roof
planes from shape and main axis).

    PYTHONPATH=$PWD:$PWD/services/lib .venv/bin/python -m bench.solar_place \
        [--before /work/before18/buildings.parquet]

Writes ``bench/results/solar_place.json``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

from bench._util import save


def tmy2_sky(path: Path):
    """A :class:`~urbanfabric.stock.pv_sky.Sky` from a TMY2 file (pvlib indexes hour starts;
    DryBulb and Wspd in tenths)."""
    import pvlib
    from urbanfabric.stock.pv_sky import Sky

    data, meta = pvlib.iotools.read_tmy2(str(path))
    loc = pvlib.location.Location(meta["latitude"], meta["longitude"], altitude=meta["altitude"])
    sun = loc.get_solarposition(data.index + pd.Timedelta(minutes=30))
    sun.index = data.index
    hourly = pd.DataFrame({"ghi": data["GHI"], "dni": data["DNI"], "dhi": data["DHI"],
                           "temp_air": data["DryBulb"] / 10.0, "wind_speed": data["Wspd"] / 10.0,
                           "apparent_zenith": sun["apparent_zenith"], "azimuth": sun["azimuth"],
                           "dni_extra": pvlib.irradiance.get_extra_radiation(data.index)},
                          index=data.index)
    return Sky(float(meta["latitude"]), float(meta["longitude"]), hourly, 0.25, -0.004,
               f"tmy2:{meta['WBAN']}")


def validation() -> list[dict]:
    """PVOUT (optimum fixed tilt, DC) from each TMY vs the default at the same coordinates."""
    import pvlib
    from urbanfabric.io.model_repository import SHARED_DATA
    from urbanfabric.stock.pv_sky import Sky, clear_sky_climate

    bundled = Path(pvlib.__file__).parent / "data"
    sites = [("Greensboro NC (shared data TMY3 723170)", "tmy3", SHARED_DATA / "solar/723170TYA.CSV"),
             ("Sand Point AK (pvlib TMY3 703165)", "tmy3", bundled / "703165TY.csv"),
             ("Miami FL (pvlib TMY2 12839)", "tmy2", bundled / "12839.tm2")]
    rows = []
    for name, kind, path in sites:
        if not path.exists():
            continue
        sky = Sky.from_tmy3(path)[0] if kind == "tmy3" else tmy2_sky(path)
        default = clear_sky_climate(sky.latitude, sky.longitude)
        ghi_tmy = float(sky.hourly["ghi"].sum()) / 1000 / 365
        ghi_cs = float(default.hourly["ghi"].sum()) / 1000 / 365 / default_index()
        rows.append({"site": name, "lat": round(sky.latitude, 3), "lon": round(sky.longitude, 3),
                     "pvout_tmy": round(sky.pvout, 3), "tilt_tmy": sky.best_tilt,
                     "pvout_default": round(default.pvout, 3), "tilt_default": default.best_tilt,
                     "error_pct": round(100 * (default.pvout / sky.pvout - 1), 1),
                     "ghi_tmy_kwh_m2_day": round(ghi_tmy, 3),
                     "clear_sky_index_of_the_tmy": round(ghi_tmy / ghi_cs, 3)})
    return rows


def default_index() -> float:
    from urbanfabric.stock.pv_sky import CLEAR_SKY_INDEX

    return CLEAR_SKY_INDEX


def xiamen() -> dict:
    from urbanfabric.stock.pv_sky import clear_sky_climate

    sky = clear_sky_climate(24.48, 118.10)
    ghi = float(sky.hourly["ghi"].sum()) / 1000 / 365
    return {"lat": 24.48, "lon": 118.10, "pvout_default": round(sky.pvout, 3),
            "tilt_default": sky.best_tilt, "ghi_default_kwh_m2_day": round(ghi, 3),
            "published_pvout_order": "3.3–3.6 kWh/kWp/day (Global Solar Atlas order of magnitude, "
                                     "from the issue; not checkable offline)",
            "yield_ratio_30deg": {d: round(sky.yield_ratio(30.0, a), 3)
                                  for d, a in (("N", 0.0), ("E", 90.0), ("S", 180.0), ("W", 270.0))}}


def demo(before_path: Path) -> dict:
    """Before: the table's solar column (GBM constant 3.5 × footprint). After: the default."""
    import geopandas as gpd
    from urbanfabric.stock.roof_planes import main_axis_deg
    from urbanfabric.stock.solar import SolarOptions, rooftop_potential

    b = gpd.read_parquet(before_path)
    pts = b.geometry.representative_point()
    after = rooftop_potential(b["footprint_area_m2"].to_numpy(), pts.x.to_numpy(), pts.y.to_numpy(),
                              None, None, roof_shape=b["roof_shape"].tolist(),
                              main_axis_deg=main_axis_deg(b.geometry, b.crs))
    before_kwh = b["solar_kwh_per_year"].to_numpy()
    after_kwh = after["solar_kwh_per_year"].to_numpy()
    area = b["footprint_area_m2"].to_numpy()
    q = [0.05, 0.25, 0.5, 0.75, 0.95]

    def dist(x: np.ndarray) -> dict:
        return {f"p{int(p * 100):02d}": round(float(np.nanquantile(x, p)), 1) for p in q}

    ratio = after_kwh / before_kwh
    sensitivity = {}
    for label, opt in (("min_plane_yield_ratio=0.75", SolarOptions(min_plane_yield_ratio=0.75)),
                       ("min_plane_yield_ratio=0.85", SolarOptions(min_plane_yield_ratio=0.85)),
                       ("clear_sky_index=0.60", SolarOptions(clear_sky_index=0.60)),
                       ("pitch_deg=20", SolarOptions(pitch_deg=20.0)),
                       ("pitched_fill=0.5", SolarOptions(pitched_fill=0.5))):
        alt = rooftop_potential(b["footprint_area_m2"].to_numpy(), pts.x.to_numpy(), pts.y.to_numpy(),
                                None, opt, roof_shape=b["roof_shape"].tolist(),
                                main_axis_deg=main_axis_deg(b.geometry, b.crs))
        sensitivity[label] = {"total_gwh": round(float(alt["solar_kwh_per_year"].sum()) / 1e6, 2),
                              "pvout": round(float(alt["pvout_kwh_per_kwp_day"].mean()), 3)}
    by_shape = {}
    for shape, idx in b.groupby(b["roof_shape"].fillna("unknown")).groups.items():
        i = b.index.get_indexer(idx)
        by_shape[str(shape)] = {
            "buildings": len(i),
            "before_mwh": round(float(before_kwh[i].sum()) / 1000, 1),
            "after_mwh": round(float(after_kwh[i].sum()) / 1000, 1),
            "after_kwp": round(float(after["solar_kwp"].to_numpy()[i].sum()), 1),
            "after_kwh_per_m2_footprint_median": round(float(np.median(after_kwh[i] / area[i])), 1)}
    return {
        "buildings": len(b),
        "before": {"pvout": sorted(set(np.round(b["pvout_kwh_per_kwp_day"], 3))),
                   "total_gwh": round(float(before_kwh.sum()) / 1e6, 2),
                   "kwh_per_building": dist(before_kwh),
                   "kwh_per_m2_footprint": dist(before_kwh / area),
                   "fallback": {str(k): int(v) for k, v in b["fallback"].value_counts().items()}},
        "after": {"pvout": sorted(set(np.round(after["pvout_kwh_per_kwp_day"], 3))),
                  "total_gwh": round(float(after_kwh.sum()) / 1e6, 2),
                  "total_kwp": round(float(after["solar_kwp"].sum()), 1),
                  "kwh_per_building": dist(after_kwh),
                  "kwh_per_m2_footprint": dist(after_kwh / area),
                  "solar_source": {str(k): int(v) for k, v in after["solar_source"].value_counts().items()},
                  "solar_fallback": {str(k): int(v) for k, v in after["solar_fallback"].value_counts().items()}},
        "after_over_before": dist(ratio),
        "by_roof_shape": by_shape,
        "sensitivity": sensitivity,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--before", type=Path, default=Path("/work/before18/buildings.parquet"))
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result = {"validation": validation(), "xiamen": xiamen()}
    if args.before.exists():
        result["demo"] = demo(args.before)
    path = save("solar_place", result)
    import json

    print(json.dumps(result, indent=1, ensure_ascii=False))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
