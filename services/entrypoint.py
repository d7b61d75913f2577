"""The command of every project image: ``python -m services.entrypoint [ARG...]``.

The Dockerfile at the repository root builds one image per component; its build argument
``SERVICE`` becomes ``URBANFABRIC_SERVICE`` in the image, and this starts that component:
``python -m <module>`` with its default arguments, or with the ARGs given instead (as an image's
``CMD`` is replaced: ``docker run urbanfabric-acquisition --port 6000 --workers 8``;
``docker run urbanfabric-workers services.workers.building_worker``). It replaces itself with
that process (``os.execv``), so the component is the container's main process and gets its
signals.

``python -m services.entrypoint health`` is the image's ``HEALTHCHECK``: the gRPC health
service of a gRPC service (asked about its service name, as the chart's gRPC probes ask), or
an HTTP GET of the flow runner's and the model server's health path. Exit status 0: healthy.

The Helm chart does not go through here: it sets each container's command and arguments (the
same as below) and uses Kubernetes' own probes. Standard library only, apart from grpc in the
gRPC health check, so every image can run it.
"""

from __future__ import annotations

import os
import sys

#: URBANFABRIC_SERVICE -> (what always runs, default arguments that ARGs replace).
COMMANDS: dict[str, tuple[list[str], list[str]]] = {
    "acquisition": (["python", "-m", "services.acquisition.server"], ["--host", "0.0.0.0", "--port", "50051", "--metrics-port", "9090"]),
    "calibration": (["python", "-m", "services.calibration.server"], ["--host", "0.0.0.0", "--port", "50052", "--metrics-port", "9090"]),
    "segmentation": (["python", "-m", "services.segmentation.server"], ["--host", "0.0.0.0", "--port", "50053", "--metrics-port", "9090"]),
    "materials": (["python", "-m", "services.materials.server"], ["--host", "0.0.0.0", "--port", "50054", "--metrics-port", "9090"]),
    "attributes": (["python", "-m", "services.attributes.server"], ["--host", "0.0.0.0", "--port", "50055", "--metrics-port", "9090"]),
    "intensity": (["python", "-m", "services.intensity.server"], ["--host", "0.0.0.0", "--port", "50056", "--metrics-port", "9090"]),
    # The chart picks the module (tile_worker or building_worker).
    "workers": (["python", "-m"], ["services.workers.tile_worker", "--host", "0.0.0.0", "--health-port", "9090"]),
    "flows": (["python", "-m", "flows.serve"], []),
    "modelserver": (["python", "-m", "services.modelserver"], ["--host", "0.0.0.0", "--http-port", "8080", "--grpc-port", "8081", "--model-dir", "/mnt/models"]),
    # One-shot: served models and sample imagery into the object store (the chart's seed Job).
    "seed": (["python", "-m", "urbanfabric.cli.seed"], []),
}

#: URBANFABRIC_SERVICE -> (protocol, port, gRPC service name or HTTP path) of its health check
#: (every image but the one-shot seed, whose Dockerfile stage says HEALTHCHECK NONE).
HEALTH: dict[str, tuple[str, int, str]] = {
    "acquisition": ("grpc", 50051, "urbanfabric.v1.AcquisitionService"),
    "calibration": ("grpc", 50052, "urbanfabric.v1.CalibrationService"),
    "segmentation": ("grpc", 50053, "urbanfabric.v1.SegmentationService"),
    "materials": ("grpc", 50054, "urbanfabric.v1.MaterialsService"),
    "attributes": ("grpc", 50055, "urbanfabric.v1.AttributesService"),
    "intensity": ("grpc", 50056, "urbanfabric.v1.IntensityService"),
    # A worker is ready once it polls the broker (runtime/worker_health.py).
    "workers": ("http", 9090, "/readyz"),
    # The Prefect runner's webserver answers /health (unhealthy once it stops polling).
    "flows": ("http", 8080, "/health"),
    "modelserver": ("http", 8080, "/v2/health/ready"),
}


def command(component: str, args: list[str]) -> list[str]:
    """The command line that starts ``component`` with ``args`` (none: its defaults)."""
    if component not in COMMANDS:
        raise SystemExit(f"services.entrypoint: URBANFABRIC_SERVICE={component!r} is none of {', '.join(COMMANDS)}")
    fixed, defaults = COMMANDS[component]
    return [*fixed, *(args or defaults)]


def healthy(component: str, port: int | None = None, timeout_s: float = 3.0) -> bool:
    """Whether ``component``, listening on 127.0.0.1 (on ``port`` instead of its own if given), is healthy."""
    if component not in HEALTH:
        raise SystemExit(f"services.entrypoint: no health check for URBANFABRIC_SERVICE={component!r}")
    protocol, own_port, target = HEALTH[component]
    address = f"127.0.0.1:{port or own_port}"
    if protocol == "grpc":
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=target), timeout=timeout_s)
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{address}{target}", timeout=timeout_s) as reply:
            return reply.status == 200
    except OSError:
        return False


def main(argv: list[str]) -> None:
    component = os.environ.get("URBANFABRIC_SERVICE", "")
    if argv[:1] == ["health"]:
        sys.exit(0 if healthy(component) else 1)
    # Every command starts with "python": this interpreter (the image's virtual environment).
    os.execv(sys.executable, [sys.executable, *command(component, argv)[1:]])


if __name__ == "__main__":
    main(sys.argv[1:])
