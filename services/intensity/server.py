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

import os
import threading

from urbanfabric.stock import derived_intensity, intensity, monte_carlo, pv_sky, solar
from urbanfabric.stock.buildings import building_stock
from urbanfabric.errors import InvalidInput
from urbanfabric.io.model_repository import version_folder
from urbanfabric.runtime.stock_messages import stock_arrays, stock_messages
from urbanfabric.stock.structure import StructureModel
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

    def _options(self, request: pb.EstimateStockRequest) -> tuple[monte_carlo.StockOptions, solar.SolarOptions]:
        """The request's Monte-Carlo and solar options (zeros: the defaults), checked."""
        mc, sp = request.monte_carlo, request.solar
        if not 0 <= mc.draws <= MAX_DRAWS:
            raise InvalidInput("monte_carlo.draws", f"must be in 0..{MAX_DRAWS} (0 = default)")
        if sp.area_per_kwp_m2 < 0 or sp.losses < 0 or sp.pvout_kwh_per_kwp_day < 0:
            raise InvalidInput("solar", "parameters must be >= 0 (0 = default)")
        if not 0 <= sp.clear_sky_index <= 1:
            raise InvalidInput("solar.clear_sky_index", "must be in (0, 1] (0 = default 0.75)")
        return (monte_carlo.StockOptions(draws=mc.draws or 100, seed=mc.seed, height_strata=min(10, mc.draws or 100),
                                         calibrated=not mc.raw_intensity_ranges),
                solar.SolarOptions(area_per_kwp_m2=sp.area_per_kwp_m2 or 10.0,
                                   losses=0.0 if sp.no_losses else (sp.losses or 0.10),
                                   clear_sky_index=sp.clear_sky_index or self._sky.clear_sky_index))

    @rpc(SERVICE)
    def EstimateStock(self, request: pb.EstimateStockRequest, context) -> pb.EstimateStockResponse:
        require(request, "job.job_id")
        buildings = list(request.buildings)
        if not buildings:
            return pb.EstimateStockResponse()
        arrays = stock_arrays(buildings)
        table = self._table(request.intensity_source)
        options, solar_opt = self._options(request)
        pvout = request.solar.pvout_kwh_per_kwp_day
        stock = building_stock(
            table, self.mapping, request.region, **arrays, options=options, solar_options=solar_opt,
            pvout=solar.ConstantPvout(pvout) if pvout else self._source(),
            default_sky=self._default_sky(solar_opt.clear_sky_index),
            structure_model=self._structure_model(request.structure_model))
        return pb.EstimateStockResponse(buildings=stock_messages(stock, buildings, table.materials))


def main() -> None:
    run_service(SERVICE, __doc__, lambda: [Registration(
        IntensityServicer(), pb_grpc.add_IntensityServiceServicer_to_server, "urbanfabric.v1.IntensityService")])


if __name__ == "__main__":
    main()
