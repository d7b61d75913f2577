"""Re-mapping a job with a fine-tuned model (issue 21, item 4): the spec, the version chosen, what is redone."""

from __future__ import annotations

import argparse
import json

import pytest

from tests.fakes import MemoryStore
from urbanfabric.cli.refresh import refresh_spec
from urbanfabric.cli.spec_flags import add_spec_arguments, given_fields
from urbanfabric.errors import InvalidInput
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.model_registry import ModelVersion, newest_descendant
from urbanfabric.job_spec import JobSpec
from urbanfabric.runtime.jobs import check_refresh, forget_buildings

PREFIX = "s3://test/models"


def _learned(store: MemoryStore, name: str, version: str, parent: str) -> None:
    entry = ModelVersion(name=name, version=version, path=f"{PREFIX}/{name.replace('-', '_')}/{version}",
                         sha256="0" * 64, parent=parent, served=True)
    store.put_bytes(f"models/{name.replace('-', '_')}/{version}/registry.json", entry.model_dump_json().encode())


def _job(store: MemoryStore, job: str = "j1") -> None:
    params = JobSpec(area=[118.08, 24.47, 118.09, 24.48]).model_dump(mode="json", exclude={"job_id"})
    params["area"] = [118.08, 24.47, 118.09, 24.48]
    store.put_bytes(JobLayout(job).job_json, json.dumps({"job_id": job, "parameters": params}).encode())


def _given(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_spec_arguments(parser)
    return given_fields(parser.parse_args(list(argv)))


def test_refresh_takes_the_earlier_spec_and_the_newest_version_fine_tuned_from_the_jobs():
    store = MemoryStore()
    _job(store)
    _learned(store, "roof-material", "v4-ft1", "roof-material:v4")
    _learned(store, "roof-material", "v4-ft2", "roof-material:v4")
    _learned(store, "roof-material", "v4-ft1-ft1", "roof-material:v4-ft1")  # fine-tuned again: the newest
    _learned(store, "roof-material", "v2-ft1", "roof-material:v2")  # another lineage: never chosen
    spec, notes = refresh_spec(_given("--job", "j1", "--refresh", "roof_material,height"), store, PREFIX)
    assert spec.job_id == "j1" and spec.refresh == ["roof_material", "height"]
    assert spec.models.roof_material == "roof-material:v4-ft1-ft1"
    assert spec.models.height == "height-xgb:v4" and spec.area is not None
    assert "roof_material: roof-material:v4 → roof-material:v4-ft1-ft1" in notes[0]
    assert "no version fine-tuned from height-xgb:v4" in notes[1]
    # A version given on the command line wins.
    spec, _ = refresh_spec(_given("--job", "j1", "--refresh", "roof_material", "--roof-material-model",
                                  "roof-material:v4-ft2"), store, PREFIX)
    assert spec.models.roof_material == "roof-material:v4-ft2"


def test_refresh_needs_a_job_that_exists():
    store = MemoryStore()
    with pytest.raises(InvalidInput) as exc:
        refresh_spec(_given("--refresh", "roof_material"), store, PREFIX)
    assert exc.value.field == "job_id"
    with pytest.raises(InvalidInput) as exc:
        refresh_spec(_given("--job", "nope", "--refresh", "roof_material"), store, PREFIX)
    assert exc.value.field == "job_id" and "nope" in str(exc.value)
    with pytest.raises(InvalidInput) as exc:
        check_refresh(store, "nope")
    assert exc.value.field == "job_id"
    with pytest.raises(InvalidInput) as exc:  # the spec alone says so too (the Prefect form)
        JobSpec.parse({"area": [118.08, 24.47, 118.09, 24.48], "refresh": "roof_material"})
    assert exc.value.field == "refresh"
    with pytest.raises(InvalidInput) as exc:
        JobSpec.parse({"area": [118.08, 24.47, 118.09, 24.48], "job_id": "j1", "refresh": "roof_colour"})
    assert "refresh" in exc.value.field


def test_forget_buildings_keeps_tiles_and_footprints():
    store = MemoryStore()
    _job(store)
    layout = JobLayout("j1")
    kept = [layout.ard("t1"), layout.tile_done("t1"), layout.tile_footprints("t1"), layout.tile_owned("t1")]
    gone = [layout.batch_buildings("00000"), layout.batch_done("00000"), layout.buildings, layout.success,
            f"{layout.outputs}/buildings/quadkey=1/part-0.parquet"]
    for key in kept + gone:
        store.put_bytes(key, b"x")
    assert forget_buildings(store, "j1") == len(gone)
    assert all(store.exists(k) for k in kept) and not any(store.exists(k) for k in gone)


def test_newest_descendant_follows_the_lineage_only():
    v = [ModelVersion(name="m", version=ver, path="p", sha256="0" * 64, parent=parent)
         for ver, parent in (("v1-ft1", "m:v1"), ("v1-ft3", "m:v1"), ("v1-ft2", "m:v1"), ("v2-ft1", "m:v2"))]
    assert newest_descendant(v, "m:v1").version == "v1-ft3"
    assert newest_descendant(v, "m:v9") is None


def test_a_learned_age_or_height_version_is_served_by_naming_it_in_a_refresh():
    from urbanfabric.runtime.learning import job_model_names, refresh_command

    assert {"height-xgb", "building-age"} <= job_model_names()
    assert refresh_command("j1", "year_built", "building-age:v3-ft1") == \
        "urbanfabric run --job j1 --refresh year_built --age-model building-age:v3-ft1"
    assert refresh_command("j1", "height", "height-xgb:v4-ft2") == \
        "urbanfabric run --job j1 --refresh height --height-model height-xgb:v4-ft2"


def test_refresh_year_built_takes_the_newest_age_version_also_for_a_job_mapped_before_jobs_named_one():
    store = MemoryStore()
    _job(store)
    doc = json.loads(store.get_bytes(JobLayout("j1").job_json))
    del doc["parameters"]["models"]["age"]  # a job.json written before models.age existed
    store.put_bytes(JobLayout("j1").job_json, json.dumps(doc).encode())
    _learned(store, "building-age", "v3-ft1", "building-age:v3")
    _learned(store, "building-age", "v3-ft2", "building-age:v3")
    spec, notes = refresh_spec(_given("--job", "j1", "--refresh", "year_built"), store, PREFIX)
    assert spec.refresh == ["year_built"] and spec.models.age == "building-age:v3-ft2"
    assert notes == ["year_built: building-age:v3 → building-age:v3-ft2 (the newest fine-tuned from it)"]
    spec, notes = refresh_spec(_given("--job", "j1", "--refresh", "year_built", "--age-model",
                                      "building-age:v3-ft1"), store, PREFIX)
    assert spec.models.age == "building-age:v3-ft1" and "(as given)" in notes[0]
    assert spec.models.height == "height-xgb:v4"  # the other models stay the job's
