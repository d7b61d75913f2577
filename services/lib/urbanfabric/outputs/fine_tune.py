"""One fine-tune of the learning loop, end to end, for a job in the object store (issue 21, item 3).

corrections (checked against the job) → the labelled buildings' model inputs
(:mod:`urbanfabric.outputs.learning_data`) → the served parent fine-tuned on a spatially separate
part and compared with it on the rest (:mod:`urbanfabric.outputs.learning`) → when better, a new
version with its card registered in the model store (:func:`urbanfabric.io.model_registry.register_learned`);
otherwise nothing registered and the reason reported. The ``fine-tune`` flow and ``urbanfabric
learn`` both call :func:`learn`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.io.model_registry import (ModelVersion, fine_tuned_version, learned_versions, load_registry,
                                           register_learned, weights_digest)
from urbanfabric.io.model_repository import fine_tune_module, split_model_ref
from urbanfabric.io.object_store import ObjectStore
from urbanfabric.outputs.corrections import check_corrections, read_corrections
from urbanfabric.outputs.learning import Comparison, fine_tune_and_compare
from urbanfabric.outputs.learning_data import (chip_rows, feature_rows, job_area_frame, labelled_buildings, learnable,
                                               parent_version)
from urbanfabric.outputs.review import class_vocabulary, review_attribute
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.outputs.review_package import TableParts, store_ard, store_parts

#: Columns of a corrections table that has already been checked (``urbanfabric corrections check``).
CHECKED_COLUMNS = ("building_id", "label", "matched_by")


@dataclass
class LearnResult:
    """What one fine-tune did: the parent, the comparison, and the version registered (or why not)."""

    job_id: str
    attribute: str
    parent: str
    comparison: Comparison
    fine_tune: dict[str, Any]
    version: str | None = None
    keys: list[str] = field(default_factory=list)
    without_inputs: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def registered(self) -> bool:
        return self.version is not None

    def summary(self) -> str:
        c = self.comparison
        head = (f"{self.attribute} of job {self.job_id}: fine-tuned {self.parent} on {c.n_train} labels, "
                f"compared on {c.n_heldout} held out in {c.cell_m:.0f} m cells: {c.reason}")
        tail = (f"registered {self.version} ({len(self.keys)} files in the model store)" if self.registered
                else "nothing registered; the served version stays")
        skipped = (f"\n{len(self.without_inputs)} labelled building(s) had no model input and were left out: "
                   + "; ".join(f"{b} ({why})" for b, why in list(self.without_inputs.items())[:10])
                   if self.without_inputs else "")
        return f"{head}\n{tail}{skipped}"

    def as_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "attribute": self.attribute, "parent": self.parent,
                "registered": self.registered, "version": self.version, "comparison": self.comparison.as_dict(),
                "fine_tune": self.fine_tune, "without_inputs": self.without_inputs, "seconds": self.seconds,
                "keys": self.keys}


def checked_table(corrections: pd.DataFrame, parts: TableParts, attribute: str,
                  config: Callable[[str, str], dict], source: str) -> pd.DataFrame:
    """The corrections as a clean table: as they are when already checked for this attribute,
    else checked now against the job (:func:`check_corrections`).

    Raises:
        InvalidInput: rows the check rejects (field ``corrections``, the report naming each row
            and why), a table checked for another attribute (field ``attribute``), or a problem
            of the whole file (its field).
    """
    if all(c in corrections.columns for c in CHECKED_COLUMNS):
        named = set(corrections["attribute"].dropna().astype(str)) if "attribute" in corrections else set()
        if named and named != {attribute}:
            raise InvalidInput("attribute", f"{source} holds corrections of {', '.join(sorted(named))}, "
                                            f"not {attribute}")
        return corrections
    spec = review_attribute(attribute)
    pieces = [p[[c for c in ("building_id", "model_versions", "geometry") if c in p]] for p in parts()]
    buildings = gpd.GeoDataFrame(pd.concat(pieces, ignore_index=True), geometry="geometry", crs="EPSG:4326")
    vocabulary = class_vocabulary(buildings.get("model_versions", pd.Series(dtype=str)).dropna().astype(str),
                                  spec, config)
    clean, report = check_corrections(corrections, buildings, spec, vocabulary, source=source)
    if report.problems:
        raise InvalidInput("corrections", "rows were rejected; fix them (or remove them) and run again, so that "
                                          "nothing is learned from a file with errors:\n" + report.summary())
    return clean


def _card(result: LearnResult, source: str, command: str, entry: ModelVersion) -> str:
    c = result.comparison
    rows = "\n".join(f"| {k} | {c.parent[k]:.4g} | {c.candidate[k]:.4g} |" for k in c.parent)
    return f"""# {entry.ref} (fine-tuned from {result.parent})

Made by the learning loop (issue 21) on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.

- **Data**: {c.n_train + c.n_heldout} corrected {result.attribute} labels of job `{result.job_id}`
  (`{source}`); {c.n_train} to fine-tune, {c.n_heldout} held out in whole {c.cell_m:.0f} m cells.
- **Command**: `{command}`
- **Recipe**: {result.fine_tune.get('recipe', '')}
- **Decision**: {c.reason}.

Held out ({c.n_heldout} buildings), parent against this version:

| metric | {result.parent} | {entry.ref} |
|---|---|---|
{rows}

The held-out labels are few and come from one job: the numbers say this version is better
*there*, not everywhere.
"""


def learn(store: ObjectStore, job_id: str, attribute: str, corrections: pd.DataFrame, *, work: Path,
          version_folder: Callable[[str, str], Path], config: Callable[[str, str], dict],
          model_prefix: str, seed: int = 0, source: str = "corrections", command: str = "") -> LearnResult:
    """Fine-tune ``attribute``'s model of job ``job_id`` on ``corrections`` (module docstring).

    Args:
        corrections: a checked table (``corrections.parquet``) or a filled package / any table
            :func:`check_corrections` accepts.
        work: an empty local folder for the candidate's files.
        version_folder: ``(name, version)`` → a local folder with that version's files
            (``io.model_repository.version_folder``: the store's copy when there is one).
        config: ``(name, version)`` → its ``config.json`` (``io.model_repository.model_config``).
        model_prefix: ``s3://<bucket>/models``: where versions are registered.

    Raises:
        InvalidInput: bad corrections or too few labels (the field named; nothing registered).
    """
    t0 = time.perf_counter()
    spec = learnable(attribute)
    parts = store_parts(store, job_id)
    clean = checked_table(corrections, parts, attribute, config, source)
    buildings, context = labelled_buildings(parts, clean, context=spec.inputs == "features")
    parent = parent_version(buildings, spec)
    name, version = split_model_ref(parent)
    parent_dir = version_folder(name, version)
    code = fine_tune_module(name)
    without: dict[str, str] = {}
    if spec.inputs == "chips":
        rows, without = chip_rows(buildings, config(name, version), store_ard(store, job_id))
    else:
        try:
            job_doc = json.loads(store.get_bytes(JobLayout(job_id).job_json))
        except NotFound:  # a table without its job record: the footprints' extent frames it
            job_doc = {}
        w, so, e, n = (float(v) for v in (context if context is not None and len(context) else buildings).total_bounds)
        rows = feature_rows(buildings, context, tuple(code.load(parent_dir).feature_names), store_ard(store, job_id),
                            job_area_frame(job_doc.get("parameters") or {}, (w, so, e, n)))
    t1 = time.perf_counter()
    candidate, comparison, info = fine_tune_and_compare(code, parent_dir, rows, spec.kind, seed=seed)
    t2 = time.perf_counter()
    result = LearnResult(job_id, attribute, parent, comparison, info, without_inputs=without,
                         seconds={"inputs": round(t1 - t0, 2), "fine_tune_and_compare": round(t2 - t1, 2)})
    if not comparison.better:
        return result
    try:  # the repository's versions: a name it ships is never reused
        taken = [m.version for m in load_registry().models if m.name == name]
    except NotFound:  # an installed package without the repository's registry
        taken = []
    taken += [m.version for m in learned_versions(store, model_prefix) if m.name == name]
    new = fine_tuned_version(parent, taken)
    folder = Path(work) / new
    training = {"parent": parent, "job_id": job_id, "corrections": source, "command": command, "seed": seed,
                "fine_tune": info, "comparison": comparison.as_dict()}
    code.save(candidate, folder, training)
    entry = ModelVersion(name=name, version=new, path=f"{model_prefix.rstrip('/')}/{name.replace('-', '_')}/{new}",
                         sha256=weights_digest(folder), parent=parent, card="MODEL_CARD.md", metrics="metrics.json",
                         served=True, note=f"fine-tuned on {comparison.n_train} corrections of job {job_id}: "
                                           f"{comparison.reason}")
    (folder / "metrics.json").write_text(json.dumps(training, indent=2, default=str) + "\n")
    result.version = new
    (folder / "MODEL_CARD.md").write_text(_card(result, source, command, entry))
    result.keys = register_learned(store, entry, folder, model_prefix)
    result.seconds["register"] = round(time.perf_counter() - t2, 2)
    return result


def read_table(path: str, store: ObjectStore, work: Path) -> pd.DataFrame:
    """A corrections table from a local path, or from the object store (``s3://…``)."""
    if not path.startswith("s3://"):
        return read_corrections(Path(path))
    local = Path(work) / Path(path).name
    try:
        store.get_file(path, local)
    except Exception as exc:  # noqa: BLE001 - a missing object is the user's path, named
        raise InvalidInput("corrections", f"{path}: cannot be read from the object store ({exc})") from None
    return read_corrections(local)
