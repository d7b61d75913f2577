"""The height and year_built learning-curve set-ups (issue 21, item 5): pool and test apart by place,
the parent's review columns. Needs ../shared/data (skips without it)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.learning_curves import core
from urbanfabric.io.model_repository import SHARED_DATA


def _cells(rows, side: float) -> set[str]:  # noqa: ANN001
    return {f"{int(np.floor(a / side))}:{int(np.floor(b / side))}" for a, b in zip(rows.x_m, rows.y_m)}


@pytest.mark.skipif(not (SHARED_DATA / "age/boulder/boulder_buildings.gpkg").is_file(),
                    reason="no Boulder age data in ../shared/data")
def test_year_built_pool_and_test_are_other_blocks_than_each_other_and_the_parents_training():
    from bench.learning_curves import year_built

    exp = year_built.experiment()
    assert (len(exp.pool), len(exp.test)) == (1066, 1421)  # v3's val / test halves of v1's held-out blocks
    assert not _cells(exp.pool, year_built.BLOCK_M) & _cells(exp.test, year_built.BLOCK_M)
    table = year_built.review_table(exp.parent, exp.test.subset(np.arange(20)))
    assert list(table.columns) == ["year_built", "year_built_p05", "year_built_p95", "age_class_ood_score"]
    assert (table.year_built_p05 <= table.year_built).all() and table.age_class_ood_score.notna().all()
    assert exp.kind == "numeric" and core.scores(exp, exp.parent)["mae"] > 0


@pytest.mark.skipif(not (SHARED_DATA / "heights/osm-helsinki/helsinki_buildings.geojson").is_file(),
                    reason="no European height labels in ../shared/data")
def test_height_pool_and_test_are_other_cells_and_read_without_imagery():
    from bench.learning_curves import height

    exp = height.experiment()
    assert not _cells(exp.pool, height.CELL_M) & _cells(exp.test, height.CELL_M)
    assert not set(exp.pool.building_id) & set(exp.test.building_id)
    assert exp.parent.image_feature_names and exp.test.inputs[list(exp.parent.image_feature_names)].isna().all().all()
    table = height.review_table(exp.parent, exp.test)
    assert (table.height_p05 < table.height_m).all() and (table.height_m < table.height_p95).all()
