"""Serve the ``map-area`` deployment: it shows in the Prefect UI and runs from there."""

from __future__ import annotations

from urbanfabric import logs

from flows.map_area import map_area

DEPLOYMENT = "map-area"


def main() -> None:
    logs.configure("flow-runner")
    map_area.serve(
        name=DEPLOYMENT,
        description="Map the buildings of an area: footprints, roof material, height, material stock.",
        tags=["urbanfabric"],
        limit=2,
    )


if __name__ == "__main__":
    main()
