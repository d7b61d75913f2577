"""Roof shape (flat / gable / hip): the served parent on aerial scenes it did not train on.

Data: ``roofs/roof-shape`` — 1,161 crops cut from 400-px tiles (``source_image``
``<scene>_<row>_<col>.jpg``) of three large aerial scenes (``tile``, ``tile1``, ``tile2``). The
parent (``roof-shape:v4``: v2's weights) took gradient steps only on its ``train`` tiles
(its card: split by source tile, 70/15/15, seed 0); its ``val`` tiles chose the epoch, the
temperature and the out-of-domain threshold, its ``test`` tiles nothing. Both are "not
trained on" here.

Separation by place: the unseen tiles of scene ``tile`` are the test set (a whole scene the
labels never come from); the unseen tiles of ``tile1`` and ``tile2`` are the pool of the
user's labels. Positions (for the review's spread over the area) are the crops' centroids in
their scene's pixel grid (tile offset + centroid) at a nominal 0.5 m per pixel — the data set
states no ground pixel size; only relative positions matter to the spread — and the scenes
are placed 1,000 km apart, since they are different places.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.learning_curves import _roofs, core
from urbanfabric.outputs.learning import LabelledRows

ATTRIBUTE = "roof_shape"
#: The scene whose unseen tiles are the test set.
TEST_SCENE = "tile"
#: Nominal metres per pixel of the scenes (unstated by the data set; sets only the scale).
NOMINAL_GSD_M = 0.5
SCENE_APART_M = 1_000_000.0
_TILE = re.compile(r"^(?P<scene>.+?)_(?P<row>\d+)_(?P<col>\d+)\.")


def _positions(root: Path, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per crop: its scene, and x / y in metres (scenes far apart)."""
    meta = json.loads((root / "crop_metadata.json").read_text())
    scenes, xs, ys = [], [], []
    for n in names:
        m = meta[n]
        parts = _TILE.match(m["source_image"])
        if parts is None:
            raise ValueError(f"{n}: source_image {m['source_image']!r} is not <scene>_<row>_<col>.<ext>")
        scenes.append(parts["scene"])
        xs.append(int(parts["col"]) + float(m["centroid"][0]))
        ys.append(int(parts["row"]) + float(m["centroid"][1]))
    order = {s: i for i, s in enumerate(sorted(set(scenes)))}
    x = np.array(xs) * NOMINAL_GSD_M + np.array([order[s] for s in scenes]) * SCENE_APART_M
    return np.array(scenes), x, np.array(ys) * NOMINAL_GSD_M


def experiment(ks: Sequence[int] = core.KS, seeds: Sequence[int] = core.SEEDS) -> core.Experiment:
    ref, code, parent = _roofs.served_parent(ATTRIBUTE)
    ds = _roofs.task_images(ATTRIBUTE, parent)
    root = Path(str(ds.meta["data"]))
    scene, x, y = _positions(root, ds.ids)
    unseen = ds.split != "train"
    labels = np.array([ds.classes[v] for v in ds.y])
    inputs = _roofs.chips(ds.images, int(parent.config["chip_size"]))
    rows = LabelledRows(np.array(ds.ids), labels, inputs, x, y)
    test_mask = unseen & (scene == TEST_SCENE)
    pool_mask = unseen & (scene != TEST_SCENE)
    pool, test = rows.subset(pool_mask), rows.subset(test_mask)

    setup = {
        "parent": ref, "data": "roofs/roof-shape (three aerial scenes: tile, tile1, tile2)",
        "parent_trained_on": f"its train tiles ({int((ds.split == 'train').sum())} crops, all three scenes; "
                             "split by 400-px source tile, seed 0); val tiles chose epoch, temperature and the "
                             "out-of-domain threshold",
        "pool": f"the parent's val + test tiles of scenes {sorted(set(scene[pool_mask]))} "
                f"({int(pool_mask.sum())} crops, {len(set(np.array(ds.groups)[pool_mask]))} tiles)",
        "test": f"the parent's val + test tiles of scene {TEST_SCENE!r} ({int(test_mask.sum())} crops, "
                f"{len(set(np.array(ds.groups)[test_mask]))} tiles)",
        "separation": "by scene: no test crop comes from a scene the pool's labels come from, and no pool or "
                      "test crop from a tile the parent trained on",
        "pool_classes": _roofs.class_counts(labels[pool_mask]), "test_classes": _roofs.class_counts(labels[test_mask]),
        "chips": f"{parent.config['chip_size']} px, whole padded crop resized (models.classifiers.train.eval_view), "
                 f"chip mode {parent.config.get('chip_mode', 'context')}, tta {parent.config.get('tta', 'none')}",
    }
    return core.Experiment(ATTRIBUTE, code, parent, pool, test, _roofs.review_table(ATTRIBUTE), setup,
                           ks=_roofs.budgets(ks, len(pool)), seeds=seeds)
