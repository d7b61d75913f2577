"""Learning curve of ``year_built`` (issue 21, item 5): Boulder blocks the served model never saw.

The served age model (``building-age:v3``: v1's trees, v2's temperature and out-of-domain score,
a split-conformal year band) trained on Boulder's 500 m blocks *except* 24 of 110 held out whole
(``models.building_age.train``, seed 0). Those 24 blocks were cut in halves by block
(``models.common.tabular_domain.halves``, seed 0): the *val* half calibrated v2's temperature and
out-of-domain threshold and v3's band (no tree saw it), the *test* half was scored once.

Here the val half (12 blocks) is the user's pool of labels and the test half (12 other blocks)
the test set: separated by whole 500 m blocks, never rows. Features as the model trained on
them: :func:`urbanfabric.attributes.features.footprint_features` over all of Boulder's footprints
(the neighbours are the city's), no image evidence (the age model reads none).

    PYTHONPATH=.:services/lib OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python -m bench.learning_curves.year_built
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from bench.learning_curves import core
from urbanfabric.attributes.age import AgeModel
from urbanfabric.attributes.features import footprint_features
from urbanfabric.io.model_repository import SHARED_DATA, fine_tune_module, model_dir
from urbanfabric.outputs.learning import LabelledRows

PARENT = ("building-age", "v3")
#: v1's split (models.building_age.train defaults) and the halves of its held-out blocks.
BLOCK_M, TEST_FRAC, SPLIT_SEED = 500.0, 0.2, 0


def boulder() -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Boulder's footprints and years, filtered as the training code filters them."""
    from models.building_age.train import BOULDER

    path = SHARED_DATA / BOULDER
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the Boulder age data are not here (see /work/shared/data/README.md)")
    gdf = gpd.read_file(path)
    years = gdf["year_built"].to_numpy(dtype=np.float64)
    ok = np.isfinite(years) & (years >= 1600) & (years <= 2100)
    return gdf[ok].reset_index(drop=True), years[ok]


def review_table(parent: AgeModel, rows: LabelledRows) -> pd.DataFrame:
    """The attributes stage's age columns (``predict_attributes``): the members' mean year, the
    conformal band, and the out-of-domain score on the same features."""
    mean, lo, hi, _ = parent.predict(rows.inputs)
    score = parent.ood_scores(rows.inputs)
    return pd.DataFrame({"year_built": mean, "year_built_p05": lo, "year_built_p95": hi,
                         "age_class_ood_score": np.full(len(rows), np.nan) if score is None else score})


def experiment(ks: Sequence[int] = core.KS, seeds: Sequence[int] = core.SEEDS) -> core.Experiment:
    from models.common.tabular_domain import halves
    from models.height_xgb.train import spatial_block_split

    gdf, years = boulder()
    X = footprint_features(gdf)
    held, split = spatial_block_split(gdf, BLOCK_M, TEST_FRAC, SPLIT_SEED)
    centre = gdf.geometry.to_crs(gdf.estimate_utm_crs()).centroid
    x, y = centre.x.to_numpy(), centre.y.to_numpy()
    blocks = np.array([f"{int(np.floor(a / BLOCK_M))}:{int(np.floor(b / BLOCK_M))}" for a, b in zip(x, y)])
    pool_mask = halves(blocks, held, seed=0)
    test_mask = held & ~pool_mask
    everything = LabelledRows(gdf["building_id"].astype(str).to_numpy() if "building_id" in gdf
                              else np.arange(len(gdf)).astype(str), years, X, x, y)
    code = fine_tune_module(PARENT[0])
    parent = code.load(model_dir(*PARENT))
    setup: dict[str, Any] = {
        "parent": ":".join(PARENT),
        "parent_trained_on": f"Boulder 500 m blocks except v1's {split['n_test_blocks']} held-out of "
                             f"{split['n_blocks']} (seed {SPLIT_SEED}); temperature, OOD threshold and year band "
                             "fitted on the val half of the held-out blocks",
        "pool": f"val half of v1's held-out blocks: {len(np.unique(blocks[pool_mask]))} blocks, "
                f"{int(pool_mask.sum())} buildings",
        "test": f"test half: {len(np.unique(blocks[test_mask]))} other blocks, {int(test_mask.sum())} buildings",
        "separation": f"whole {BLOCK_M:.0f} m blocks (halves by block, seed 0)",
        "features": "footprint_features over all Boulder footprints (the training code's), no imagery",
    }
    return core.Experiment("year_built", code, parent, everything.subset(pool_mask), everything.subset(test_mask),
                           review_table, setup, ks, seeds)


if __name__ == "__main__":
    # The runner's run: the same experiment and defaults, and the command kept in the result.
    from bench.learning_curves.__main__ import main

    raise SystemExit(main(["year_built"]))
