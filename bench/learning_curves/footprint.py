"""Footprint learning curve (issue 21, item 5): the job's default segmenter on Dubai.

Parent: ``footprint-unet:v1``, the segmentation model a job runs unless told otherwise
(:class:`urbanfabric.footprints.options.SegmentationOptions`), trained on Xiamen only
(``models/footprint_unet/MODEL_CARD.md``): Dubai is a place it never saw. (The selectable
v5–v7 trained on Dubai's source tiles t1, t3–t7, so they cannot be the parent here.)

Pool: what a review of the parent's footprints would show — every footprint the parent finds
(4-connected components of its probability at its own threshold, ≥ :data:`MIN_PX` pixels) in the
images of source tiles :data:`POOL_TILES`, with ``footprint_confidence`` the mean probability
inside it, as the footprints stage writes it. The reviewer's answer is simulated from the
published mask: the true buildings the footprint touches are its corrected outline (none:
``not_building``); the footprint and those buildings, widened by :data:`MARGIN_PX`, are the
pixels the answer vouches for; the rest of the chip is unlabelled
(:data:`models.footprint_unet.fine_tune.IGNORE`).

Test: :data:`TEST_CHIPS` chips of :data:`TEST_PX` px from source tiles :data:`TEST_TILES` (other
tiles than the pool's: separated by place), scored by pixel IoU at the model's threshold
(summed over chips) and instance F1 at IoU 0.5 (:func:`models.common.metrics.match_instances`).

Coordinates: the images' positions are unpublished, so each image sits on its own 10 km square
and pixels count a nominal :data:`NOMINAL_GSD_M` (the review's spread then never mixes images).
Every image is IQR-scaled as a whole, as :func:`models.footprint_unet.train_multi.scene_probability`
does, before any chip is cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from bench.learning_curves import core
from models.footprint_unet import datasets as D
from models.footprint_unet import fine_tune as code
from urbanfabric.imagery.calibration import iqr_scale
from urbanfabric.io.model_repository import SHARED_DATA, model_dir
from urbanfabric.outputs.learning import LabelledRows

PARENT = ("footprint-unet", "v1")
POOL_TILES = ("t1", "t2", "t3", "t4")
TEST_TILES = ("t7", "t8")
#: Side of a reviewed building's chip, px (Dubai's houses span ≈ 8–40 px).
CHIP_PX = 96
#: Smallest footprint a review shows, px (SpaceNet's 20 px² rule; the pipeline's 10 m²).
MIN_PX = 20
#: How far around the footprint and its buildings the answer vouches for background, px.
MARGIN_PX = 8
#: Most reviewed buildings kept in the pool (a seeded sample; memory on a shared machine).
MAX_POOL = 800
TEST_CHIPS = 48
TEST_PX = 256
NOMINAL_GSD_M = 1.5
SCENE_SPACING_M = 10_000.0


def _scenes(tiles: Sequence[str], root: Path) -> list[D.Scene]:
    scenes = [s for split in D.SPLITS for s in D.load_dubai(root, split) if s.group in tiles]
    return sorted(scenes, key=lambda s: s.name)


def _window(centre: float, size: int, limit: int) -> int:
    """Start of a ``size`` window around ``centre`` kept inside ``[0, limit)``."""
    return int(min(max(round(centre - size / 2), 0), max(limit - size, 0)))


def reviewed_buildings(parent: code.Segmenter, scene: D.Scene, offset: tuple[float, float]
                       ) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[float, float]]]:
    """For each footprint the parent finds in ``scene``: its chip (RGB + the footprint's own
    mask as a fourth channel), the simulated answer (1 / 0 / IGNORE) and its place (m)."""
    from models.footprint_unet.train_multi import scene_probability

    image = iqr_scale(scene.image)
    prob = scene_probability(parent.net, scene)
    found, n = ndimage.label(prob >= parent.threshold)
    truth, _ = ndimage.label(scene.mask > 0)
    h, w = scene.mask.shape
    chips, answers, places = [], [], []
    for i, sl in enumerate(ndimage.find_objects(found), start=1):
        own = found[sl] == i
        if own.sum() < MIN_PX:
            continue
        cy, cx = (sl[0].start + sl[0].stop) / 2, (sl[1].start + sl[1].stop) / 2
        r, c = _window(cy, CHIP_PX, h), _window(cx, CHIP_PX, w)
        win = (slice(r, r + CHIP_PX), slice(c, c + CHIP_PX))
        footprint = found[win] == i
        touched = np.setdiff1d(np.unique(truth[found == i]), [0])
        outline = np.isin(truth[win], touched)
        vouched = ndimage.binary_dilation(footprint | outline, iterations=MARGIN_PX)
        answer = np.full(footprint.shape, code.IGNORE, dtype=np.uint8)
        answer[vouched & (truth[win] == 0)] = 0  # other buildings are nobody's answer: ignored
        answer[outline] = 1
        chips.append(np.concatenate([image[(slice(None), *win)], footprint[None].astype(np.float32)]))
        answers.append(answer)
        places.append((offset[0] + cx * NOMINAL_GSD_M, offset[1] - cy * NOMINAL_GSD_M))
    return chips, answers, places


def pool_rows(parent: code.Segmenter, root: Path, seed: int = 0) -> LabelledRows:
    """Every reviewable footprint of the pool tiles (at most :data:`MAX_POOL`, seeded sample)."""
    chips, answers, places, ids = [], [], [], []
    for j, scene in enumerate(_scenes(POOL_TILES, root)):
        c, a, p = reviewed_buildings(parent, scene, (j * SCENE_SPACING_M, 0.0))
        chips += c
        answers += a
        places += p
        ids += [f"{scene.name}/{n}" for n in range(len(c))]
    keep = np.sort(np.random.default_rng(seed).permutation(len(chips))[:MAX_POOL])
    xy = np.asarray(places, dtype=float)[keep]
    return LabelledRows(np.asarray(ids)[keep], np.stack(answers)[keep], np.stack(chips)[keep].astype(np.float32),
                        xy[:, 0], xy[:, 1], {"found": len(chips)})


def test_rows(root: Path, seed: int = 0) -> LabelledRows:
    """:data:`TEST_CHIPS` random chips of the test tiles, spread evenly over their images."""
    scenes = _scenes(TEST_TILES, root)
    rng = np.random.default_rng(10_000 + seed)
    chips, masks, xy, ids = [], [], [], []
    for n in range(TEST_CHIPS):
        j = n % len(scenes)
        scene = scenes[j]
        h, w = scene.mask.shape
        r, c = int(rng.integers(0, h - TEST_PX + 1)), int(rng.integers(0, w - TEST_PX + 1))
        win = (slice(r, r + TEST_PX), slice(c, c + TEST_PX))
        chips.append(iqr_scale(scene.image)[(slice(None), *win)])
        masks.append(scene.mask[win].astype(np.uint8))
        xy.append(((100 + j) * SCENE_SPACING_M + c * NOMINAL_GSD_M, -r * NOMINAL_GSD_M))
        ids.append(f"{scene.name}@{r},{c}")
    p = np.asarray(xy, dtype=float)
    return LabelledRows(np.asarray(ids), np.stack(masks), np.stack(chips).astype(np.float32), p[:, 0], p[:, 1])


def review_table(parent: code.Segmenter, rows: LabelledRows) -> pd.DataFrame:
    """``footprint_confidence``: the parent's mean probability inside each reviewed footprint
    (the chip's fourth channel), as the footprints stage computes it."""
    prob = code.predict(parent, rows.inputs)
    own = np.asarray(rows.inputs)[:, 3] > 0.5
    conf = (prob * own).sum(axis=(1, 2)) / np.maximum(own.sum(axis=(1, 2)), 1)
    return pd.DataFrame({"footprint_confidence": conf, "footprint_source": "segmented"})


def segmentation_scores(exp: core.Experiment, model: code.Segmenter) -> dict[str, float]:
    """Pixel IoU / F1 / precision / recall (counts summed over the test chips) and instance
    F1 at IoU 0.5 (true and predicted instances: 4-connected components ≥ 20 px)."""
    from models.common.metrics import InstanceScores, mask_instances, match_instances

    prob = code.predict(model, exp.test.inputs)
    pred, truth = prob >= model.threshold, np.asarray(exp.test.labels) > 0
    tp, fp, fn = int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())
    inst = InstanceScores()
    for p, t in zip(pred, truth):
        inst = inst + match_instances(mask_instances(t), mask_instances(p), 0.5, min_area=20)
    return {"iou": tp / max(tp + fp + fn, 1), "f1": 2 * tp / max(2 * tp + fp + fn, 1),
            "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1), "instance_f1": inst.f1}


def experiment(ks: Sequence[int] = core.KS, seeds: Sequence[int] = core.SEEDS,
               root: Path | None = None) -> core.Experiment:
    """The footprint experiment on the shared Dubai set (FileNotFoundError when absent)."""
    root = Path(root or SHARED_DATA / "footprints")
    if not (root / "dubai").is_dir():
        raise FileNotFoundError(f"{root / 'dubai'}: the Dubai footprint set is not there")
    parent = code.load(model_dir(*PARENT))
    pool, test = pool_rows(parent, root), test_rows(root)
    setup: dict[str, Any] = {
        "parent": ":".join(PARENT), "parent_trained_on": "xiamen-z18 only (MODEL_CARD.md)",
        "pool": f"Dubai source tiles {', '.join(POOL_TILES)}: {len(pool)} of the {pool.meta['found']} footprints "
                f"the parent finds (≥ {MIN_PX} px), chips {CHIP_PX} px, answers from the published mask",
        "test": f"{len(test)} chips of {TEST_PX} px from Dubai source tiles {', '.join(TEST_TILES)}",
        "separated_by": "source tile (whole tiles, never rows)",
        "labels": f"1 inside the buildings the footprint touches, 0 within {MARGIN_PX} px of them or the "
                  "footprint elsewhere, unlabelled (no loss) beyond and on buildings nobody labelled",
        "recipe": {"steps": code.STEPS, "batch": code.BATCH, "learning_rate": code.LEARNING_RATE,
                   "anchor": code.ANCHOR, "trainable": "decoder + segmentation head"},
    }
    return core.Experiment("footprint", code, parent, pool, test, review_table, setup, ks=ks, seeds=seeds,
                           score=segmentation_scores)
