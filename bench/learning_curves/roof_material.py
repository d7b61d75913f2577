"""Roof material (five classes): the served parent on Caribbean roofs it did not train on.

Data: ``roofs/caribbean-material`` — 223 drone roof crops, one per building, folder = label
(the published ``train/`` and ``val/`` pooled). The parent (``roof-material:v4``: v2's
weights) took gradient steps only on its ``train`` share of the pooled split (by building id,
stratified by class, 50/20/30, seed 0); its ``val`` share chose the epoch, the temperature and
the out-of-domain threshold, its ``test`` share nothing. Both are "not trained on" here.

Separation: the crops carry no location (8-hex building ids only; the challenge's region and
coordinates are not in the sample), so the unseen roofs are split into pool and test by
*building*, stratified by class, with a fixed seed — one roof per building, so no building is
on both sides, but pool and test are not separated by place. For the same reason the review's
spread over the area has nothing to spread over (every position is 0): the uncertainty arm
takes the least certain roofs in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bench.learning_curves import _roofs, core
from urbanfabric.outputs.learning import LabelledRows

ATTRIBUTE = "roof_material"
#: Share of the unseen roofs that are the pool (the rest: test).
POOL_FRACTION = 0.6
SPLIT_SEED = 0


def _pool_by_building(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean pool mask: ``fraction`` of each class's buildings (at least one on each side of
    a class with two or more)."""
    rng = np.random.default_rng(seed)
    pool = np.zeros(len(labels), dtype=bool)
    for c in sorted(set(labels)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            n = min(max(n, 1), len(idx) - 1)
        pool[idx[:n]] = True
    return pool


def experiment(ks: Sequence[int] = core.KS, seeds: Sequence[int] = core.SEEDS) -> core.Experiment:
    ref, code, parent = _roofs.served_parent(ATTRIBUTE)
    ds = _roofs.task_images(ATTRIBUTE, parent)
    unseen = np.flatnonzero(ds.split != "train")
    labels = np.array([ds.classes[v] for v in ds.y])[unseen]
    inputs = _roofs.chips(ds.images[unseen], int(parent.config["chip_size"]))
    zero = np.zeros(len(unseen))
    rows = LabelledRows(np.array(ds.ids)[unseen], labels, inputs, zero, zero.copy())
    pool_mask = _pool_by_building(labels, POOL_FRACTION, SPLIT_SEED)
    pool, test = rows.subset(pool_mask), rows.subset(~pool_mask)

    setup = {
        "parent": ref, "data": "roofs/caribbean-material (train/ and val/ pooled, one crop per building)",
        "parent_trained_on": f"its train share ({int((ds.split == 'train').sum())} roofs; pooled split by building, "
                             "stratified, 50/20/30, seed 0); its val share chose epoch, temperature and the "
                             "out-of-domain threshold",
        "pool": f"{POOL_FRACTION:.0%} of the parent's val + test roofs per class ({int(pool_mask.sum())} roofs)",
        "test": f"the other {1 - POOL_FRACTION:.0%} ({int((~pool_mask).sum())} roofs)",
        "separation": "by building (the sample has no locations): not by place; no building on both sides",
        "pool_classes": _roofs.class_counts(labels[pool_mask]), "test_classes": _roofs.class_counts(labels[~pool_mask]),
        "chips": f"{parent.config['chip_size']} px, whole crop resized (models.classifiers.train.eval_view), "
                 f"tta {parent.config.get('tta', 'none')}",
    }
    return core.Experiment(ATTRIBUTE, code, parent, pool, test, _roofs.review_table(ATTRIBUTE), setup,
                           ks=_roofs.budgets(ks, len(pool)), seeds=seeds)
