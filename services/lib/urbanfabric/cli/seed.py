"""``python -m urbanfabric.cli.seed``: fill the object store for a fresh install.

    python -m urbanfabric.cli.seed [--samples NAME[,NAME…]] [--no-models]

Uploads the registry's served model versions from this ``models/`` tree (the chart's ``seed``
image carries their weights) and registers the named sample imagery sources from the
shared-data folder (``URBANFABRIC_SHARED_DATA``; the chart mounts ``sampleData.existingClaim``
there). Idempotent: what the store already holds is skipped, so the chart runs it as a
post-install and post-upgrade hook. A tree with no ``*.pt`` at all (an image built without the
weights, as skaffold builds it) skips the model upload, saying so; one whose weights differ
from the registry publishes nothing. Exit 0: done; 2: bad input, stale weights or a missing
sample folder, named.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="urbanfabric-seed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default="", help="comma-separated sample sources to register (default: none)")
    parser.add_argument("--no-models", dest="models", action="store_false", help="skip the model upload")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from urbanfabric.errors import InvalidInput, NotFound, UrbanfabricError
    from urbanfabric.imagery.samples import SAMPLE_SOURCES, register_sample
    from urbanfabric.io.model_registry import load_registry, publish_served, stale_local_weights
    from urbanfabric.io.model_repository import MODELS_DIR, SHARED_DATA
    from urbanfabric.io.object_store import ObjectStore
    from urbanfabric.settings import Settings

    args = parse_args(argv)
    samples = [s.strip() for s in args.samples.split(",") if s.strip()]
    try:
        unknown = [s for s in samples if s not in SAMPLE_SOURCES]
        if unknown:  # before anything is written
            raise InvalidInput("samples", f"unknown sample sources {unknown}; known: {sorted(SAMPLE_SOURCES)}")
        settings = Settings.load()
        store = ObjectStore(settings)
        store.ensure_bucket()  # a fresh object store (the chart's bundled MinIO) has none yet
        if args.models and not any(MODELS_DIR.rglob("*.pt")):
            # An image built without the weights context (skaffold's): no upload, and the
            # model check that runs next names whatever the store lacks.
            print(f"{MODELS_DIR}: no model weights in this image; model upload skipped")
        elif args.models:
            registry = load_registry()
            stale = stale_local_weights(registry)
            if stale:
                raise NotFound(f"models: weights of {', '.join(stale)} are missing or differ from "
                               "models/registry.yaml here (build the seed image with the weights context)")
            prefix = (settings.model_store or f"s3://{settings.bucket}/models").rstrip("/")
            done = publish_served(store, registry, prefix=prefix)
            print(f"{prefix}: uploaded {', '.join(done) if done else 'nothing (all served versions there)'}")
        for name in samples:
            uri = register_sample(store, name, SHARED_DATA)
            print(f"sample {name}: {'registered at ' + uri if uri else 'already registered'}")
    except UrbanfabricError as exc:
        print(f"urbanfabric seed: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
