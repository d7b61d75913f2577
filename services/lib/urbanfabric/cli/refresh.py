"""``urbanfabric run --job JOB --refresh roof_material``: re-map a job with a newer model (issue 21, item 4).

The earlier run's spec (its ``job.json`` parameters) is the base; the flags given override it;
each refreshed attribute whose model flag is not given takes the newest version the learning
loop fine-tuned from the job's (``io.model_registry.newest_descendant``). The flow then redoes
only the building batches (the spec's ``refresh``): tiles and footprints are reused.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.model_registry import learned_versions, newest_descendant
from urbanfabric.io.object_store import ObjectStore
from urbanfabric.job_spec import JobSpec, ModelVersions, refresh_model_field


def _merge(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in given.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def refresh_spec(given: dict[str, Any], store: ObjectStore, model_prefix: str) -> tuple[JobSpec, list[str]]:
    """The spec of a re-map and a line per refreshed attribute saying which version it uses.

    Raises:
        InvalidInput: no ``job_id``, no such job (field ``job_id``), or a spec the merge makes invalid.
    """
    job_id = given.get("job_id")
    if not job_id:
        raise InvalidInput("job_id", "--refresh re-maps an earlier job: name it with --job JOB")
    try:
        doc = json.loads(store.get_bytes(JobLayout(str(job_id)).job_json))
    except NotFound:
        raise InvalidInput("job_id", f"no job {job_id} in the object store to re-map") from None
    base = {k: v for k, v in (doc.get("parameters") or {}).items() if k != "refresh"}
    merged = _merge(base, given)
    wanted = JobSpec.parse(merged).refresh
    learned = learned_versions(store, model_prefix)
    notes = []
    for attribute in wanted:
        field = refresh_model_field(attribute)
        # A job mapped before its spec named this model ran the default.
        current = str((base.get("models") or {}).get(field, ModelVersions.model_fields[field].default))
        if field in (given.get("models") or {}):
            notes.append(f"{attribute}: {current or 'none'} → {given['models'][field]} (as given)")
            continue
        newest = newest_descendant(learned, current) if current else None
        if newest is None:
            notes.append(f"{attribute}: no version fine-tuned from {current or 'its model'}; re-mapped with it")
            continue
        merged.setdefault("models", {})[field] = newest.ref
        notes.append(f"{attribute}: {current} → {newest.ref} (the newest fine-tuned from it)")
    return JobSpec.parse(merged), notes


def given(args: argparse.Namespace) -> dict[str, Any]:
    from urbanfabric.cli.spec_flags import given_fields

    return given_fields(args)
