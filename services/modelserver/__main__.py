"""``python -m services.modelserver``: serve the project's models over V2 REST and gRPC.

Example (local stack)::

    PYTHONPATH=.:services/lib .venv/bin/python -m services.modelserver \\
        --http-port 8080 --grpc-port 8081 --models footprint-unet:v1,roof-material:v1

Ready when ``GET http://127.0.0.1:<http-port>/v2/health/ready`` answers 200 (per model:
``/v2/models/<model>-<version>/ready``). Stops on SIGTERM/SIGINT.

Every call but the health probes needs a bearer token signed with ``URBANFABRIC_SERVICE_TOKEN``
(:mod:`urbanfabric.runtime.auth`); without that key the server refuses to start unless
``URBANFABRIC_ALLOW_UNAUTHENTICATED=1``.

Environment: ``URBANFABRIC_TORCH_THREADS`` (torch intra-op threads, default 2),
``URBANFABRIC_LOG_LEVEL`` (default INFO), ``URBANFABRIC_MODELS`` (the ``--models`` list).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

#: Roof-shape and façade models load when shipped (models/<name>/v1/); until then they are
#: skipped with a logged reason and the others are served. footprint-unet:v1 (Xiamen) is the
#: flow's default; v5, v6 and v7 (crowdai + dubai + spacenet, three independent runs) are the best
#: on the other shared sets, alone or as a mean ensemble (docs/footprints.md). ``URBANFABRIC_MODELS``
#: replaces the list (e.g. for ``make up``).
DEFAULT_MODELS = ("footprint-unet:v1,footprint-unet:v5,footprint-unet:v6,footprint-unet:v7,roof-material:v1,"
                  "roof-material:v2,roof-material:v3,roof-material:v4,roof-shape:v2,roof-shape:v3,roof-shape:v4,"
                  "facade-material:v1,facade-material:v2")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m services.modelserver", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="listen address of both servers (0.0.0.0 inside a pod)")
    p.add_argument("--http-port", type=int, default=8080, help="V2 REST + /metrics port")
    p.add_argument("--grpc-port", type=int, default=8081, help="V2 gRPC port")
    p.add_argument("--models", default=os.environ.get("URBANFABRIC_MODELS") or DEFAULT_MODELS,
                   help="comma list of NAME:VERSION[=python.module] (default: $URBANFABRIC_MODELS, "
                        f"else {DEFAULT_MODELS})")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="model repository root holding <model_dir>/<version>/ "
                        "(default: <repo>/models; /mnt/models under KServe's storage initializer)")
    p.add_argument("--storage-uri", default=os.environ.get("URBANFABRIC_MODEL_STORE") or None,
                   help="s3://bucket/prefix: fetch <prefix>/<model_dir>/<version>/ files from the "
                        "project object store into --model-dir (or a temporary directory); default "
                        "URBANFABRIC_MODEL_STORE (the local stack sets it: the registry's served "
                        "versions are uploaded there at stack up)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0)")
    p.add_argument("--serve-as", default="",
                   help="also answer under this V2 name (a KServe canary revision answers under the name of "
                        "the version it may replace; needs exactly one --models entry)")
    p.add_argument("--require-all", action="store_true",
                   help="exit with status 2 when any requested model fails to load "
                        "(default: serve the others and log why)")
    p.add_argument("--grace-period", type=int, default=5,
                   help="seconds in-flight gRPC calls get on shutdown")
    p.add_argument("--grpc-max-message-mb", type=int, default=256)
    p.add_argument("--max-threads", type=int, default=4, help="gRPC handler threads")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Load the models and run the server until signalled."""
    args = parse_args(argv)
    # kserve.model_server parses sys.argv with its own parser at import time; hide ours so
    # that option prefixes (e.g. --model…) are not misread by it.
    sys.argv = sys.argv[:1]

    # kserve 0.21 answers with FastAPI's deprecated ORJSONResponse; one stray non-JSON
    # warning line per process otherwise.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")

    from urbanfabric.runtime.logs import configure

    log = configure("modelserver")
    from urbanfabric.runtime import auth

    try:
        token_key = auth.server_key()
    except auth.MissingKey as exc:
        log.error("%s", exc)
        return 2
    # One line per request from uvicorn/KServe's latency tracer is noise at INFO.
    if logging.getLogger().level > logging.DEBUG:
        for chatty in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(chatty).setLevel(logging.WARNING)

    import torch

    from urbanfabric.runtime.model_runner import (
        load_models,
        VersionRepository,
        object_store_fetcher,
        parse_specs,
        torch_threads_from_env,
    )
    from services.modelserver.server import BoundModelServer

    threads = torch_threads_from_env()
    torch.set_num_threads(threads)
    specs = parse_specs(args.models)

    model_dir = args.model_dir
    fetch = None
    if args.storage_uri:
        if model_dir is None:
            model_dir = Path(tempfile.mkdtemp(prefix="modelserver-"))
        fetch = object_store_fetcher(args.storage_uri, model_dir)
    models, skipped = load_models(specs, model_dir=model_dir, device=args.device, fetch=fetch)
    log.info("torch threads %d; serving %s; not serving %s",
             threads, [m.name for m in models], sorted(skipped) or "none")
    if skipped and args.require_all:
        log.error("--require-all: %d model(s) failed to load", len(skipped))
        return 2
    if not models:
        log.error("no model loaded: the server runs but every inference will answer NOT_FOUND")

    if args.serve_as:
        if len(models) != 1:
            log.error("--serve-as %s needs exactly one loaded model, got %d", args.serve_as, len(models))
            return 2
        log.info("model %s also answers as %s", models[0].name, args.serve_as)
    server = BoundModelServer(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        grpc_max_message_mb=args.grpc_max_message_mb,
        max_threads=args.max_threads,
        grace_period=args.grace_period,
        workers=1,
        token_key=token_key,
        # The V2 repository extension's load endpoint fetches a new version from the store.
        registered_models=VersionRepository(model_dir, args.device, fetch, {s.model: s.module for s in specs}),
    )
    if args.serve_as:
        server.register_model(models[0], name=args.serve_as)
    server.start(models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
