"""The learning loop through the real stack (issue 21): review → corrections → the fine-tune flow →
the new version served → ``urbanfabric run --job J --refresh …`` re-maps only the building batches.

The models are the served ones (roof-material v4, height-xgb v4, building-age v3): a head-only fine-tune of the
roof classifier and a few boosted trees per height member take seconds on a CPU, so no stand-in
model is needed. The labels are made to disagree with the models the way a city's corrections
would (every reviewed roof is of the class the model least believes in; every height is 1.6 ×
the model's; every year 30 years earlier), so that the fine-tuned version must be better on the held-out cells and is
registered; a refresh must then carry the new versions' predictions.
"""

from __future__ import annotations

import io
import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from urbanfabric.cli.demo import run_flow, run_map_area
from urbanfabric.cli.main import main as cli
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.model_registry import learned_versions
from urbanfabric.io.object_store import ObjectStore
from urbanfabric.runtime.connections import model_client
from urbanfabric.runtime.jobs import new_job_id

pytestmark = pytest.mark.e2e

#: One zoom-16 tile of the Xiamen sample (as test_map_area.ONE_TILE).
ONE_TILE = {"west": 118.09754, "south": 24.48216, "east": 118.10302, "north": 24.48714}


def _table(store: ObjectStore, job_id: str) -> gpd.GeoDataFrame:
    return gpd.read_parquet(io.BytesIO(store.get_bytes(JobLayout(job_id).buildings)))


def _corrections(tmp_path, job_id: str, attribute: str, label) -> str:  # noqa: ANN001
    """Review the job for ``attribute``, fill the package's CSV with ``label(rows)``, check it."""
    folder = tmp_path / attribute
    assert cli(["review", job_id, "--attribute", attribute, "--n", "60", "--out", str(folder)]) == 0
    rows = pd.read_csv(folder / "review.csv", dtype={"building_id": str})
    rows["label"] = label(rows)
    rows.to_csv(folder / "review.csv", index=False)
    assert cli(["corrections", "check", str(folder / "review.csv"), "--job", job_id]) == 0
    return str(folder / "corrections.parquet")


def test_review_correct_fine_tune_serve_and_refresh(stack, tmp_path, capsys):
    store = ObjectStore(stack)
    job_id = new_job_id()
    _, state = run_map_area(stack, {"spec": {"job_id": job_id, "area": ONE_TILE, "imagery": "sample:xiamen-z18"}},
                            timeout_s=900)
    assert state.is_completed(), state.message
    before = _table(store, job_id)

    # Corrections: all reviewed roofs are of the class the served model predicts least; heights are taller.
    def rarest(rows: pd.DataFrame) -> list[str]:
        classes = ["concrete_cement", "healthy_metal", "incomplete", "irregular_metal", "other"]
        counts = rows["prediction"].value_counts()
        return [min(classes, key=lambda c: counts.get(c, 0))] * len(rows)

    roof = _corrections(tmp_path, job_id, "roof_material", rarest)
    height = _corrections(tmp_path, job_id, "height", lambda rows: (rows["prediction"] * 1.6).round(1))
    year = _corrections(tmp_path, job_id, "year_built", lambda rows: rows["prediction"] - 30)
    label = pd.read_parquet(roof)["label"].iloc[0]

    # Bad input: a class the model does not know, named with its row; nothing registered.
    bad = tmp_path / "bad.csv"
    pd.read_parquet(roof).assign(label=lambda t: ["slate"] + list(t["label"][1:]))[["building_id", "label"]] \
        .to_csv(bad, index=False)
    capsys.readouterr()
    assert cli(["learn", job_id, "--attribute", "roof_material", "--corrections", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown_class" in err and "'slate'" in err and "row 1" in err and "Traceback" not in err
    assert learned_versions(store, stack.model_store) == []

    # The fine-tune flow, through Prefect, on corrections in the object store.
    for attribute, path in (("roof_material", roof), ("height", height), ("year_built", year)):
        key = f"{JobLayout(job_id).root}/review/{attribute}/corrections.parquet"
        store.put_file(key, path)
        _, state = run_flow(stack, "fine-tune/fine-tune", {"job_id": job_id, "attribute": attribute,
                                                           "corrections": f"s3://{stack.bucket}/{key}"}, 900)
        assert state.is_completed(), state.message
    assert sorted(v.ref for v in learned_versions(store, stack.model_store)) == [
        "building-age:v3-ft1", "height-xgb:v4-ft1", "roof-material:v4-ft1"]
    for folder in ("roof_material", "height_xgb"):
        c = json.loads(store.get_bytes(f"{stack.model_store}/{folder}/v4-ft1/metrics.json"))["comparison"]
        assert c["better"] and c["n_heldout"] >= 4 and c["n_train"] + c["n_heldout"] <= 60, (folder, c)
    card = store.get_bytes(f"{stack.model_store}/roof_material/v4-ft1/MODEL_CARD.md").decode()
    assert "roof-material:v4" in card and job_id in card and "| accuracy |" in card
    # Served without a restart: the model server loaded the new classifier version.
    assert model_client(stack, timeout_s=10).ready("roof-material", "v4-ft1")

    # Re-map with the new versions: only the building batches are redone.
    capsys.readouterr()
    assert cli(["run", "--job", job_id, "--refresh", "roof_material,height,year_built"]) == 0
    out = capsys.readouterr().out
    assert "roof-material:v4 → roof-material:v4-ft1" in out and "height-xgb:v4 → height-xgb:v4-ft1" in out
    assert "building-age:v3 → building-age:v3-ft1" in out
    doc = json.loads(store.get_bytes(JobLayout(job_id).job_json))
    assert doc["status"] == "succeeded" and doc["qa"]["tiles"]["published"] == 0
    assert doc["qa"]["tiles"]["resumed"] == doc["qa"]["tiles"]["done"] > 0
    after = _table(store, job_id)
    assert set(after["building_id"]) == set(before["building_id"])
    versions = {json.dumps(sorted(json.loads(m).items())) for m in after["model_versions"]}
    assert len(versions) == 1 and json.loads(after["model_versions"].iloc[0])["roof"] == "roof-material:v4-ft1"
    assert json.loads(after["model_versions"].iloc[0])["height"] == "height-xgb:v4-ft1"
    assert json.loads(after["model_versions"].iloc[0])["age"] == "building-age:v3-ft1"
    assert json.loads(before["model_versions"].iloc[0])["age"] == "building-age:v3"
    labelled = set(pd.read_parquet(roof)["building_id"])
    share = lambda t: float((t[t["building_id"].isin(labelled)]["roof_material"] == label).mean())  # noqa: E731
    assert share(after) > share(before)
    assert np.nanmedian(after["height_m"]) > np.nanmedian(before["height_m"])
    assert np.nanmedian(after["year_built"]) < np.nanmedian(before["year_built"])
