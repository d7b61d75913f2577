"""Intensity service: a thin gRPC adapter over :mod:`urbanfabric.stock.intensity` and
:mod:`urbanfabric.stock.solar`.

Per building: point estimate and Monte-Carlo ranges of material stock and embodied carbon,
the rooftop solar potential, and the fallbacks used. Configuration (environment):

* ``URBANFABRIC_PVOUT``: a PVOUT GeoTIFF (kWh/kWp/day) or a TMY3 CSV used for the solar
  potential when a request gives no PVOUT; without it PVOUT comes from the place (pvlib clear
  sky × a clear-sky index, :mod:`urbanfabric.stock.pv_sky`), recorded per building.
* ``URBANFABRIC_CLEAR_SKY_INDEX``: that clear-sky index (all-sky / clear-sky, in (0, 1];
  default 0.75, the global mean) where a request does not set one.
* ``URBANFABRIC_MI_MAPPING``: a JSON :class:`urbanfabric.stock.derived_intensity.KeyMapping` (roof /
  facade class → structure); the shipped defaults otherwise.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np
from urbanfabric.stock import derived_intensity, intensity, monte_carlo, pv_sky, solar
from urbanfabric.stock.buildings import building_stock
from urbanfabric.errors import InvalidInput
from urbanfabric.io.model_repository import version_folder
from urbanfabric.stock.structure import STRUCTURE_CLASSES, StructureModel
from urbanfabric.runtime.grpc_service import Registration, require, rpc, run_service
from urbanfabric.v1 import common_pb2
from urbanfabric.v1 import intensity_pb2 as pb
from urbanfabric.v1 import intensity_pb2_grpc as pb_grpc

SERVICE = "intensity"
#: Upper bound on Monte-Carlo draws a request may ask for (memory and time per batch).
MAX_DRAWS = 10_000


class IntensityServicer(pb_grpc.IntensityServiceServicer):
    def __init__(
        self,
        table: intensity.MaterialIntensityTable | None = None,
        pvout_source: solar.PvoutSource | None = None,
        mapping: derived_intensity.KeyMapping | None = None,
    ) -> None:
        self.tables: dict[str, intensity.MaterialIntensityTable] = {
            "rasmi": table or intensity.default_table()}
        self._pvout = pvout_source
        self._pvout_path = os.environ.get("URBANFABRIC_PVOUT", "") if pvout_source is None else ""
        path = os.environ.get("URBANFABRIC_MI_MAPPING", "")
        self.mapping = mapping or (derived_intensity.KeyMapping.load(path) if path else derived_intensity.KeyMapping())
        self._lock = threading.Lock()
        self._structure_models: dict[str, StructureModel] = {}
        # Clear-sky-and-climate skies per grid cell at the default index, kept across requests
        # (bounded); a request with its own index builds its own.
        index = os.environ.get("URBANFABRIC_CLEAR_SKY_INDEX", "")
        try:
            self._sky = pv_sky.ClearSkyClimate(float(index) if index else pv_sky.CLEAR_SKY_INDEX)
        except ValueError as exc:
            raise InvalidInput("URBANFABRIC_CLEAR_SKY_INDEX", f"not a number: {index!r}") from exc

    def _default_sky(self, clear_sky_index: float) -> pv_sky.ClearSkyClimate:
        if clear_sky_index == self._sky.clear_sky_index:
            return self._sky
        return pv_sky.ClearSkyClimate(clear_sky_index)

    def _table(self, name: str) -> intensity.MaterialIntensityTable:
        name = name or "rasmi"
        if name not in intensity.SOURCES:
            raise InvalidInput("intensity_source", f"unknown {name!r}; one of {list(intensity.SOURCES)}")
        with self._lock:
            if name not in self.tables:
                self.tables[name] = intensity.default_table(name)
            return self.tables[name]

    def _structure_model(self, ref: common_pb2.ModelRef) -> StructureModel | None:
        """The request's structure-type model (read once per version from the model store)."""
        if not ref.name:
            return None
        key = f"{ref.name}:{ref.version}"
        with self._lock:
            if key not in self._structure_models:
                self._structure_models[key] = StructureModel.load(version_folder(ref.name, ref.version))
            return self._structure_models[key]

    def _source(self) -> solar.PvoutSource | None:
        with self._lock:  # the TMY / raster is read once, on first use
            if self._pvout is None and self._pvout_path:
                self._pvout = solar.open_source(self._pvout_path)
            return self._pvout

    @rpc(SERVICE)
    def EstimateStock(self, request: pb.EstimateStockRequest, context) -> pb.EstimateStockResponse:
        require(request, "job.job_id")
        buildings = list(request.buildings)
        if not buildings:
            return pb.EstimateStockResponse()
        for i, b in enumerate(buildings):
            if not b.building_id:
                raise InvalidInput(f"buildings[{i}].building_id", "is required")
            if not b.function:
                raise InvalidInput(f"buildings[{i}].function", "is required")
        table = self._table(request.intensity_source)
        mc = request.monte_carlo
        if not 0 <= mc.draws <= MAX_DRAWS:
            raise InvalidInput("monte_carlo.draws", f"must be in 0..{MAX_DRAWS} (0 = default)")
        options = monte_carlo.StockOptions(draws=mc.draws or 100, seed=mc.seed,
                                         height_strata=min(10, mc.draws or 100))
        sp = request.solar
        if sp.area_per_kwp_m2 < 0 or sp.losses < 0 or sp.pvout_kwh_per_kwp_day < 0:
            raise InvalidInput("solar", "parameters must be >= 0 (0 = default)")
        if not 0 <= sp.clear_sky_index <= 1:
            raise InvalidInput("solar.clear_sky_index", "must be in (0, 1] (0 = default 0.75)")
        solar_opt = solar.SolarOptions(area_per_kwp_m2=sp.area_per_kwp_m2 or 10.0,
                                       losses=0.0 if sp.no_losses else (sp.losses or 0.10),
                                       clear_sky_index=sp.clear_sky_index or self._sky.clear_sky_index)

        def known(values: list[float]) -> np.ndarray:  # proto3 zero = unknown
            arr = np.array(values, dtype=np.float64)
            return np.where(arr > 0, arr, np.nan)

        lon = np.array([b.longitude for b in buildings], dtype=np.float64)
        lat = np.array([b.latitude for b in buildings], dtype=np.float64)
        nowhere = (lon == 0) & (lat == 0)  # proto3 default: location not given
        lon[nowhere], lat[nowhere] = np.nan, np.nan
        stock = building_stock(
            table, self.mapping, request.region,
            footprint_area_m2=np.array([b.footprint_area_m2 for b in buildings], dtype=np.float64),
            function=[b.function for b in buildings], structure=[b.structure for b in buildings],
            roof_material=[b.roof_material for b in buildings],
            facade_material=[b.facade_material for b in buildings],
            floors=known([b.floors for b in buildings]), height_m=known([b.height_m for b in buildings]),
            height_p05=known([b.height_p05 for b in buildings]), height_p95=known([b.height_p95 for b in buildings]),
            longitude=lon, latitude=lat, options=options, solar_options=solar_opt,
            pvout=solar.ConstantPvout(sp.pvout_kwh_per_kwp_day) if sp.pvout_kwh_per_kwp_day else self._source(),
            roof_shape=[b.roof_shape for b in buildings],
            main_axis_deg=np.array([b.main_axis_deg if b.HasField("main_axis_deg") else np.nan
                                    for b in buildings], dtype=np.float64),
            default_sky=self._default_sky(solar_opt.clear_sky_index),
            structure_model=self._structure_model(request.structure_model),
            year_built=known([b.year_built for b in buildings]),
            residential_p=np.array([b.p_residential if b.HasField("p_residential") else np.nan
                                    for b in buildings], dtype=np.float64))
        materials = table.materials
        cols = {c: stock[c].to_numpy() for c in stock.columns}
        out = []
        for i, b in enumerate(buildings):
            def v(name: str, i: int = i) -> float:
                return float(cols[name][i])

            out.append(pb.BuildingStock(
                building_id=b.building_id,
                gfa_m2=v("gfa_m2"),
                structure=str(cols["structure"][i]),
                function=str(cols["function"][i]),
                floors_used=int(cols["floors_used"][i]),
                masses=[pb.MaterialMass(material=m, kg=v(f"mass_{m}_kg"),
                                        kg_p05=v(f"mass_{m}_kg_p05"),
                                        kg_p95=v(f"mass_{m}_kg_p95"),
                                        kg_mc_p50=v(f"mass_{m}_kg_mc_p50")) for m in materials],
                mass_total_kg=v("mass_total_kg"),
                mass_total_kg_p05=v("mass_total_kg_p05"),
                mass_total_kg_p95=v("mass_total_kg_p95"),
                mass_total_kg_mc_p50=v("mass_total_kg_mc_p50"),
                embodied_co2e_kg=v("embodied_co2e_kg"),
                embodied_co2e_kg_p05=v("embodied_co2e_kg_p05"),
                embodied_co2e_kg_p95=v("embodied_co2e_kg_p95"),
                embodied_co2e_kg_mc_p50=v("embodied_co2e_kg_mc_p50"),
                solar_kwh_per_year=v("solar_kwh_per_year"),
                pvout_kwh_per_kwp_day=v("pvout_kwh_per_kwp_day"),
                fallback=str(cols["fallback"][i]),
                solar_source=str(cols["solar_source"][i]),
                solar_kwp=v("solar_kwp"),
                structure_source=str(cols["structure_source"][i]),
                structure_probability=v("structure_probability"),
                p_structure=[] if math.isnan(v("p_structure_C")) else
                [v(f"p_structure_{c}") for c in STRUCTURE_CLASSES],
                valid=not math.isnan(v("mass_total_kg")),
            ))
        return pb.EstimateStockResponse(buildings=out)


def main() -> None:
    run_service(SERVICE, __doc__, lambda: [Registration(
        IntensityServicer(), pb_grpc.add_IntensityServiceServicer_to_server, "urbanfabric.v1.IntensityService")])


if __name__ == "__main__":
    main()
