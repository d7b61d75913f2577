# syntax=docker/dockerfile:1
# Every project image from one recipe: the gRPC services (acquisition, calibration,
# segmentation, materials, attributes, intensity), the Kafka workers (also the chart's topics
# Job), the Prefect flow runner (flows), the KServe predictor (modelserver) and the install-time
# seed Job (seed: the served model weights, from a second build context). Build from the
# repository root; skaffold.yaml and .github/workflows/release.yml build all ten:
#   docker build --build-arg SERVICE=segmentation -t urbanfabric-segmentation .
# SERVICE picks the pyproject.toml extra the image installs, the ports it exposes and what it
# runs (services/entrypoint.py). The GPU model server (PyPI's torch bundles CUDA 13: NVIDIA
# driver >= 580 on the nodes; weights come from storageUri, never from the image):
#   docker build --build-arg SERVICE=modelserver --build-arg BASE_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://pypi.org/simple -t urbanfabric-modelserver .
# The seed image carries the weights that .dockerignore keeps out of every other image:
#   docker build --build-arg SERVICE=seed --build-context weights=models -t urbanfabric-seed .

# Required: the name of a svc-* stage below.
ARG SERVICE
# python:* images bring Python; on another base (Ubuntu 24.04 for CUDA) it comes from apt.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG SERVICE
# pyproject.toml extras to install, comma-separated: the image's own unless told otherwise.
ARG EXTRAS=${SERVICE}
# Where the extras' torch and torchvision come from (materials, modelserver, flows): CPU wheels unless
# told otherwise (https://pypi.org/simple: CUDA wheels).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN command -v python3 >/dev/null || { apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; }
RUN python3 -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml ./
# The extras' pinned requirements (self-references urbanfabric[...] expanded), in a layer that
# only changes with pyproject.toml: torch* from TORCH_INDEX_URL first, then the rest from PyPI.
RUN python -c "import sys, tomllib; x = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']; f = lambda es: [r for e in es.split(',') for q in x[e] for r in (f(q[12:-1]) if q.startswith('urbanfabric[') else [q])]; print(*sorted(set(f(sys.argv[1]))), sep='\n')" "$EXTRAS" > /tmp/requirements.txt \
    && torch=$(grep '^torch' /tmp/requirements.txt || true) \
    && if [ -n "$torch" ]; then pip install --index-url "$TORCH_INDEX_URL" $torch; fi \
    && pip install -r /tmp/requirements.txt
COPY protos/ protos/
COPY services/ services/
COPY flows/ flows/
COPY models/ models/
# gRPC stubs are generated, never committed (Makefile `protos`): generate them here.
RUN python -m venv /opt/protoc \
    && /opt/protoc/bin/pip install "grpcio-tools==1.81.1" "protobuf==6.33.6" \
    && mkdir -p services/lib/urbanfabric/v1 \
    && /opt/protoc/bin/python -m grpc_tools.protoc -I protos --python_out=services/lib \
         --grpc_python_out=services/lib protos/urbanfabric/v1/*.proto \
    && touch services/lib/urbanfabric/v1/__init__.py \
    && rm -rf protos /opt/protoc
# The project with its extras (installed above, so pip only checks them). Editable: the code
# stays in one place, /app/services/lib, which is also on PYTHONPATH with /app.
RUN pip install -e ".[$EXTRAS]"

FROM ${BASE_IMAGE} AS runtime
RUN { command -v python3 >/dev/null || { apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
      && rm -rf /var/lib/apt/lists/*; }; } \
    && groupadd --system --gid 10001 urbanfabric \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home urbanfabric
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/services/lib \
    URBANFABRIC_HOME=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /app
USER 10001:10001
# gRPC health for the services (the chart's native gRPC probes ask the same), HTTP for the flow
# runner and the model server; commands, ports and checks per image in services/entrypoint.py.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "services.entrypoint", "health"]
ENTRYPOINT ["python", "-m", "services.entrypoint"]

# One stage per image, picked by the last FROM: its ports and its own settings.
FROM runtime AS svc-acquisition
EXPOSE 50051 9090
FROM runtime AS svc-calibration
EXPOSE 50052 9090
FROM runtime AS svc-segmentation
EXPOSE 50053 9090
FROM runtime AS svc-materials
EXPOSE 50054 9090
FROM runtime AS svc-attributes
EXPOSE 50055 9090
FROM runtime AS svc-intensity
EXPOSE 50056 9090

FROM runtime AS svc-workers
# /livez, /readyz and /metrics of the Kafka worker (runtime/worker_health.py).
EXPOSE 9090

FROM runtime AS svc-flows
# `python -m flows.serve` serves the map-area deployment to the Prefect server (PREFECT_API_URL);
# runs started in the Prefect UI execute in this container.
ENV PREFECT_HOME=/tmp/prefect \
    MPLCONFIGDIR=/tmp/matplotlib \
    PREFECT_RUNNER_SERVER_ENABLE=true \
    PREFECT_RUNNER_SERVER_HOST=0.0.0.0 \
    PREFECT_RUNNER_SERVER_PORT=8080
EXPOSE 8080

FROM runtime AS svc-modelserver
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
EXPOSE 8080 8081

# Weights of the seed image: the build context named `weights` (the repository's models/ tree,
# --build-context weights=models) replaces this empty stage; without it the seed image has none
# and its Job refuses to publish (urbanfabric.io.model_registry.stale_local_weights).
FROM scratch AS weights

FROM runtime AS svc-seed
# A one-shot post-install Job (python -m urbanfabric.cli.seed), not a server: no port, no check.
COPY --from=weights / /app/models/
HEALTHCHECK NONE

FROM svc-${SERVICE}
ARG SERVICE
ENV URBANFABRIC_SERVICE=${SERVICE}
