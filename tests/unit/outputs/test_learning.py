"""The learning loop's core: spatial hold-out, old-vs-new comparison, decision, registration (issue 21)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.fakes import MemoryStore
from tests.unit.outputs import review_table
from urbanfabric.attributes.features import FEATURE_NAMES, footprint_features
from urbanfabric.attributes.height import HeightModel
from urbanfabric.errors import InvalidInput
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.model_registry import fine_tuned_version, learned_versions
from urbanfabric.outputs.fine_tune import learn
from urbanfabric.outputs.learning import (LabelledRows, decide, fine_tune_and_compare, spatial_holdout)
from urbanfabric.outputs.learning_data import labelled_buildings, learnable, parent_version


def _grid(n: int = 10, step: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:n, 0:n]
    return xx.ravel() * step, yy.ravel() * step


def test_holdout_is_whole_cells_about_a_fifth_and_seeded():
    x, y = _grid()
    held, side = spatial_holdout(x, y, seed=3)
    assert 20 <= held.sum() <= 30
    cell = np.floor(x / side).astype(int) * 1000 + np.floor(y / side).astype(int)
    # No cell is split between the two sides: the held-out buildings' neighbours are not trained on.
    assert not set(cell[held]) & set(cell[~held])
    assert (spatial_holdout(x, y, seed=3)[0] == held).all()
    assert not (spatial_holdout(x, y, seed=4)[0] == held).all()


def test_too_few_or_too_clustered_labels_are_refused_naming_the_field():
    with pytest.raises(InvalidInput) as exc:
        spatial_holdout(np.arange(5.0), np.arange(5.0))
    assert exc.value.field == "label" and "too few to hold any out" in str(exc.value)
    with pytest.raises(InvalidInput) as exc:  # all in one place: nothing can be held out whole
        spatial_holdout(np.zeros(20), np.zeros(20))
    assert exc.value.field == "label" and "spread over" in str(exc.value)


def test_decision_keeps_the_parent_unless_the_candidate_is_better():
    a = {"accuracy": 0.6, "macro_f1": 0.5, "nll": 1.0}
    assert decide("class", a, {**a, "accuracy": 0.7})[1]
    assert decide("class", a, {**a, "nll": 0.9})[:2] == ("nll", True)
    assert not decide("class", a, dict(a))[1]  # a tie is not better
    assert not decide("class", a, {**a, "accuracy": 0.5, "nll": 0.1})[1]
    assert decide("numeric", {"mae": 3.0}, {"mae": 2.0})[1]
    assert not decide("numeric", {"mae": 3.0}, {"mae": 3.0})[1]


class _MeanCode:
    """A fake model kind: predicts one number; fine-tuning moves it to the labels' mean (or away)."""

    def __init__(self, towards: bool = True) -> None:
        self.towards = towards

    def load(self, version_dir):  # noqa: ANN001
        return 10.0

    def fine_tune(self, parent, rows, seed=0):  # noqa: ANN001
        m = float(np.mean(rows.labels))
        return (m if self.towards else 2 * parent - m), {"k": len(rows)}

    def predict(self, model, inputs):  # noqa: ANN001
        return np.full(len(inputs), model)

    def classes(self, model):  # noqa: ANN001
        return []


def _rows(labels: np.ndarray) -> LabelledRows:
    x, y = _grid()
    return LabelledRows(np.array([f"b{i}" for i in range(100)]), labels, np.zeros((100, 1)), x, y)


def test_compare_on_the_held_out_side_only_and_decide():
    labels = np.full(100, 20.0)
    _, better, _ = fine_tune_and_compare(_MeanCode(), Path("."), _rows(labels), "numeric")
    assert better.better and better.parent["mae"] == 10.0 and better.candidate["mae"] == 0.0
    assert better.n_train + better.n_heldout == 100 and len(better.heldout_ids) == better.n_heldout
    _, worse, _ = fine_tune_and_compare(_MeanCode(towards=False), Path("."), _rows(labels), "numeric")
    assert not worse.better and "not better than the served version" in worse.reason


def test_labels_of_unknown_classes_are_named():
    class Code(_MeanCode):
        def classes(self, model):  # noqa: ANN001
            return ["flat", "gable"]

    labels = np.array(["flat", "gable", "dome", "cone"] * 25)
    with pytest.raises(InvalidInput) as exc:
        fine_tune_and_compare(Code(), Path("."), _rows(labels), "class")
    assert exc.value.field == "label" and "cone, dome" in str(exc.value)


def test_labelled_buildings_name_missing_and_repeated_ids():
    parts = review_table.parts(review_table.table())
    good = pd.DataFrame({"building_id": ["b00", "b55"], "label": [3.0, 4.0]})
    table, ctx = labelled_buildings(parts, good, context=True)
    # The context is the job's footprints around them, never the labelled buildings themselves.
    assert list(table["building_id"]) == ["b00", "b55"] and len(ctx) == 98
    assert not set(ctx["building_id"]) & {"b00", "b55"}
    assert parent_version(table, learnable("height")) == "height-xgb:v4"
    with pytest.raises(InvalidInput) as exc:
        labelled_buildings(parts, pd.DataFrame({"building_id": ["b00", "nope"], "label": [1, 2]}))
    assert exc.value.field == "building_id" and "nope" in str(exc.value)
    with pytest.raises(InvalidInput) as exc:
        labelled_buildings(parts, pd.DataFrame({"building_id": ["b00", "b00"], "label": [1, 2]}))
    assert exc.value.field == "building_id" and "more than once: b00" in str(exc.value)
    with pytest.raises(InvalidInput) as exc:
        learnable("facade_material")
    assert exc.value.field == "attribute" and "street-level views" in str(exc.value)
    assert learnable("year_built").model_key == "age" and learnable("year_built").inputs == "features"


def test_version_names_keep_the_parent_and_never_take_a_shipped_name():
    assert fine_tuned_version("roof-material:v4", ["v1", "v4", "v5"]) == "v4-ft1"
    assert fine_tuned_version("roof-material:v4", ["v4-ft1"]) == "v4-ft2"


def _job(store: MemoryStore, job: str) -> None:
    buf = io.BytesIO()
    review_table.table().to_parquet(buf)
    store.put_bytes(JobLayout(job).buildings, buf.getvalue())


def _parent(folder: Path) -> Path:
    """A tiny height model fitted to 8–12 m heights of the fixture's buildings."""
    squares = review_table.squares().to_crs("EPSG:4326")
    X = footprint_features(squares[["geometry"]], context=squares[["building_id", "geometry"]])
    y = 10.0 + np.random.default_rng(0).uniform(-2, 2, len(X))
    HeightModel().fit(X[list(FEATURE_NAMES)], y, n_models=3, num_boost_round=20).save(folder)
    return folder


@pytest.mark.parametrize("offset, registered", [(25.0, True), (0.0, False)])
def test_learn_registers_only_a_better_version_with_its_card(tmp_path, offset, registered):
    store = MemoryStore()
    _job(store, "j1")
    parent = _parent(tmp_path / "parent")
    ids = [f"b{r}{c}" for r in range(10) for c in range(10)][::2]
    rng = np.random.default_rng(1)
    # offset 25: the job's buildings are far taller than the parent says; 0: labels are noise around it.
    labels = 10.0 + offset + rng.uniform(-2, 2, len(ids))
    corrections = pd.DataFrame({"building_id": ids, "label": labels, "matched_by": "building_id",
                                "attribute": "height"})
    result = learn(store, "j1", "height", corrections, work=tmp_path / "work", version_folder=lambda n, v: parent,
                   config=review_table.classes, model_prefix="s3://test/models", seed=0, command="pytest")
    assert result.parent == "height-xgb:v4" and result.registered is registered
    versions = learned_versions(store, "s3://test/models")
    if not registered:
        assert versions == [] and "not better" in result.comparison.reason
        return
    assert [v.ref for v in versions] == ["height-xgb:v4-ft1"] and versions[0].parent == "height-xgb:v4"
    base = "models/height_xgb/v4-ft1"
    card = store.get_bytes(f"{base}/MODEL_CARD.md").decode()
    assert "pytest" in card and "height-xgb:v4" in card and "| mae |" in card
    metrics = json.loads(store.get_bytes(f"{base}/metrics.json"))
    assert metrics["comparison"]["candidate"]["mae"] < metrics["comparison"]["parent"]["mae"]
    assert HeightModel.load(tmp_path / "work" / "v4-ft1").predict(
        footprint_features(review_table.squares().to_crs("EPSG:4326")[["geometry"]]))[0].mean() > 15


def test_chip_rows_cut_the_labelled_roofs_and_record_the_imagery():
    from tests.unit.outputs.test_review import _ard
    from urbanfabric.outputs.learning_data import chip_rows

    t = review_table.table()
    image = _ard(t)
    corrections = pd.DataFrame({"building_id": ["b00", "b09", "b99"], "label": ["flat", "hip", "gable"]})
    buildings, _ = labelled_buildings(review_table.parts(t), corrections)
    buildings.loc[buildings["building_id"] == "b99", "tile_id"] = None  # a building without imagery
    rows, without = chip_rows(buildings, {"chip_size": 32}, lambda tile: image)
    assert list(rows.building_id) == ["b00", "b09"] and rows.inputs.shape == (2, 3, 32, 32)
    assert without == {"b99": "no tile"} and list(rows.labels) == ["flat", "hip"]
    assert rows.inputs[1].mean() > rows.inputs[0].mean()  # b09 lies east: the brighter side
    assert rows.meta["gsd_m"] and abs(rows.meta["gsd_m"][0] - 0.3) < 0.05
    assert abs((rows.x_m[1] - rows.x_m[0]) - 9 * review_table.STEP) < 1.0


def test_learn_year_built_fine_tunes_the_age_model_the_job_ran(tmp_path):
    from urbanfabric.attributes.age import AgeModel

    store = MemoryStore()
    table = review_table.table()
    table["model_versions"] = json.dumps({**json.loads(review_table.MODELS), "age": "building-age:v3"})
    buf = io.BytesIO()
    table.to_parquet(buf)
    store.put_bytes(JobLayout("j1").buildings, buf.getvalue())
    squares = review_table.squares().to_crs("EPSG:4326")
    X = footprint_features(squares[["geometry"]], context=squares[["building_id", "geometry"]])
    parent = tmp_path / "parent"
    AgeModel().fit(X[list(FEATURE_NAMES)], 1960.0 + np.random.default_rng(0).uniform(-3, 3, len(X)),
                   n_models=3, num_boost_round=20).save(parent)
    ids = [f"b{r}{c}" for r in range(10) for c in range(10)][::2]
    # The job's buildings are 30 years younger than the parent says.
    years = 1990.0 + np.random.default_rng(1).uniform(-3, 3, len(ids))
    corrections = pd.DataFrame({"building_id": ids, "label": years, "matched_by": "building_id",
                                "attribute": "year_built"})
    result = learn(store, "j1", "year_built", corrections, work=tmp_path / "work", version_folder=lambda n, v: parent,
                   config=review_table.classes, model_prefix="s3://test/models", seed=0, command="pytest")
    assert result.parent == "building-age:v3" and result.registered
    assert [v.ref for v in learned_versions(store, "s3://test/models")] == ["building-age:v3-ft1"]
    assert store.exists("models/building_age/v3-ft1/year_00.json")
    new = AgeModel.load(tmp_path / "work" / "v3-ft1").predict(X[list(FEATURE_NAMES)])[0]
    assert 1960.0 < new.mean() < 1990.0  # moved towards the labels, anchored to the parent
