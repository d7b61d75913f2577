"""``urbanfabric models``: the registry's served versions in the object store.

    urbanfabric models list               the registry: every version, served or not, and the versions
                                          the learning loop registered in the store (urbanfabric learn)
    urbanfabric models publish [--store URI]   upload the served versions (skips what is there)
    urbanfabric models check [--store URI]     exit 1 naming each served version the store lacks

The store defaults to ``URBANFABRIC_MODEL_STORE`` (the chart's ConfigMap sets it), else
``s3://<bucket>/models``. ``publish`` runs from a repository checkout (the weights are in its
``models/`` tree; images carry none); the chart's install hook runs ``check``.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "publish", "check"))
    parser.add_argument("--store", default="", help="s3://bucket/prefix of the model store")


def run(args: argparse.Namespace) -> int:
    from urbanfabric.errors import Unavailable, UrbanfabricError
    from urbanfabric.io.model_registry import learned_versions, load_registry, publish_served, unpublished
    from urbanfabric.io.object_store import ObjectStore
    from urbanfabric.settings import Settings

    try:
        registry = load_registry()
        settings = Settings.load()
        prefix = (args.store or settings.model_store or f"s3://{settings.bucket}/models").rstrip("/")
        store = ObjectStore(settings)
        if args.action == "list":
            for m in registry.models:
                print(f"{m.ref:24} {'served' if m.served else '-':7} {m.path}  {m.note}".rstrip())
            try:  # the versions the learning loop registered in the running system's store
                learned = learned_versions(store, prefix)
            except Unavailable:
                print(f"(no object store reachable: versions learned in {prefix} not listed)")
                return 0
            for m in learned:
                print(f"{m.ref:24} {'learned':7} {m.path}  from {m.parent}: {m.note}".rstrip())
            return 0
        if args.action == "publish":
            done = publish_served(store, registry, prefix=prefix)
            print(f"{prefix}: uploaded {', '.join(done) if done else 'nothing (all served versions there)'}")
            return 0
        missing = unpublished(store, registry, prefix=prefix)
    except UrbanfabricError as exc:
        print(f"urbanfabric models {args.action}: {exc}", file=sys.stderr)
        return 2
    if missing:
        print(f"{prefix} lacks served model versions {', '.join(missing)}: run "
              f"`urbanfabric models publish --store {prefix}` from a repository checkout",
              file=sys.stderr)
        return 1
    print(f"{prefix}: all {len(registry.served)} served model versions present")
    return 0
