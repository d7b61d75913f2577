"""The learning loop's step for the running system: fine-tune from corrections, register, serve (issue 21).

One function for the ``fine-tune`` flow and ``urbanfabric learn``: the fine-tune and the decision
are the core's (:func:`urbanfabric.outputs.fine_tune.learn`); this adds what only a running
system has — the object store, the model store, and the model server, asked to load a new image
classifier version at once (the V2 repository extension). Tabular versions (height) need no
loading: the attributes service reads a version from the model store when a job names it
(``models.height`` / ``models.age``, e.g. ``urbanfabric run --job J --refresh year_built``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from urbanfabric.errors import InvalidInput, NotFound, Unavailable
from urbanfabric.io.model_repository import MODEL_MODULES, model_config, split_model_ref, version_folder
from urbanfabric.io.object_store import ObjectStore
from urbanfabric.job_spec import ModelVersions, refresh_model_field
from urbanfabric.outputs.fine_tune import LearnResult, learn, read_table
from urbanfabric.runtime.connections import model_client
from urbanfabric.settings import Settings


def job_model_names() -> set[str]:
    """The model kinds a job spec can name (``models.*``, by their defaults' names)."""
    return {split_model_ref(str(f.default))[0] for f in ModelVersions.model_fields.values() if f.default}


def refresh_command(job_id: str, attribute: str, ref: str) -> str:
    """The command that re-maps ``job_id``'s ``attribute`` with the model version ``ref``."""
    name = refresh_model_field(attribute)
    extra = ModelVersions.model_fields[name].json_schema_extra
    flags = extra.get("flags") if isinstance(extra, dict) else None
    flag = flags[0] if isinstance(flags, list) and flags else f"--{name.replace('_', '-')}"
    return f"urbanfabric run --job {job_id} --refresh {attribute} {flag} {ref}"


def model_prefix(settings: Settings) -> str:
    """Where versions are registered: the model store, else ``s3://<bucket>/models``."""
    return (settings.model_store or f"s3://{settings.bucket}/models").rstrip("/")


def learn_and_serve(settings: Settings, job_id: str, attribute: str, corrections: str, *, seed: int = 0,
                    command: str = "", serve: bool = True) -> tuple[LearnResult, str]:
    """Fine-tune ``attribute``'s model of ``job_id`` on the corrections at ``corrections`` (a local
    file or ``s3://…``), register the new version when it is better, and have it served.

    Returns:
        The result and a line saying how the new version is served (empty when none was registered).

    Raises:
        InvalidInput: bad corrections or too few labels (nothing registered).
    """
    store = ObjectStore(settings)
    with tempfile.TemporaryDirectory(prefix="urbanfabric-learn-") as tmp:
        table = read_table(corrections, store, Path(tmp))
        result = learn(store, job_id, attribute, table, work=Path(tmp), version_folder=version_folder,
                       config=model_config, model_prefix=model_prefix(settings), seed=seed,
                       source=corrections, command=command)
    if not result.registered:
        return result, ""
    name, _ = split_model_ref(result.parent)
    ref = f"{name}:{result.version}"
    if name not in MODEL_MODULES:
        if name not in job_model_names():
            return result, (f"{ref} registered; no job can name a {name} model yet (the attributes service runs its "
                            "default), so it is not served")
        return result, (f"{ref} is read from the model store by the service that runs it, once a job names it: "
                        f"{refresh_command(job_id, attribute, ref)}")
    if not serve:
        return result, f"{ref} registered; load it with POST /v2/repository/models/{name}-{result.version}/load"
    try:
        model_client(settings, timeout_s=120).load(name, str(result.version))
    except (NotFound, Unavailable, InvalidInput) as exc:
        # Registered all the same: a job naming it loads it, a cluster rolls it out as a canary.
        return result, (f"{ref} registered, but the model server did not load it ({exc}); a job that names it "
                        f"asks again, and in a cluster inferenceServices.<key>.canary.version rolls it out")
    return result, f"{ref} loaded by the model server"
