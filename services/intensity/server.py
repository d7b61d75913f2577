"""Intensity service: a thin gRPC adapter over :mod:`urbanfabric.intensity`."""

from __future__ import annotations

import numpy as np

from urbanfabric import intensity, logs
from urbanfabric.errors import InvalidInput
from urbanfabric.grpc_service import Registration, main_args, require, rpc, serve
from urbanfabric.v1 import intensity_pb2 as pb
from urbanfabric.v1 import intensity_pb2_grpc as pb_grpc

SERVICE = "intensity"


class IntensityServicer(pb_grpc.IntensityServiceServicer):
    def __init__(self, table: intensity.MaterialIntensityTable | None = None) -> None:
        self.table = table or intensity.default_table()

    @rpc(SERVICE)
    def EstimateStock(self, request: pb.EstimateStockRequest, context) -> pb.EstimateStockResponse:
        require(request, "job.job_id", "region")
        buildings = list(request.buildings)
        if not buildings:
            return pb.EstimateStockResponse()
        for i, b in enumerate(buildings):
            if not b.building_id:
                raise InvalidInput(f"buildings[{i}].building_id", "is required")
            if not b.function:
                raise InvalidInput(f"buildings[{i}].function", "is required")
        # Structure: given, else inferred from the roof material (a documented crude prior).
        structure = [b.structure or intensity.structure_from_roof(b.roof_material or "") for b in buildings]
        area = np.array([b.footprint_area_m2 for b in buildings])
        floors = np.array([b.floors for b in buildings])
        gfa = intensity.gfa(area, floors)
        stock = self.table.estimate_stock(
            gfa, [b.function for b in buildings], structure, request.region, floors=floors
        )
        materials = self.table.materials
        out = []
        for i, b in enumerate(buildings):
            row = stock.iloc[i]
            out.append(pb.BuildingStock(
                building_id=b.building_id,
                gfa_m2=float(gfa[i]),
                structure=structure[i],
                masses=[pb.MaterialMass(material=m, kg=float(row[f"mass_{m}_kg"]),
                                        kg_p05=float(row[f"mass_{m}_kg_p05"]),
                                        kg_p95=float(row[f"mass_{m}_kg_p95"])) for m in materials],
                mass_total_kg=float(row["mass_total_kg"]),
                embodied_co2e_kg=float(row["embodied_co2e_kg"]),
            ))
        return pb.EstimateStockResponse(buildings=out)


def main() -> None:
    args = main_args(__doc__)
    logs.configure(SERVICE)
    serve(
        SERVICE,
        [Registration(IntensityServicer(), pb_grpc.add_IntensityServiceServicer_to_server,
                      "urbanfabric.v1.IntensityService")],
        port=args.port, host=args.host, metrics_port=args.metrics_port, max_workers=args.workers,
    )


if __name__ == "__main__":
    main()
