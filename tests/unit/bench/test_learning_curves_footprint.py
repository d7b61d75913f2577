"""The footprint curve's simulated review answers (bench/learning_curves/footprint.py) on a
synthetic scene: what is building, background and unlabelled around a reviewed footprint."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("segmentation_models_pytorch")

from bench.learning_curves import footprint as F  # noqa: E402
from models.footprint_unet import train_multi  # noqa: E402
from models.footprint_unet.datasets import Scene  # noqa: E402
from models.footprint_unet.fine_tune import IGNORE, Segmenter  # noqa: E402


def test_answer_marks_the_touched_building_its_neighbourhood_and_leaves_the_rest_unlabelled(monkeypatch) -> None:
    truth = np.zeros((200, 200), dtype=np.uint8)
    truth[50:70, 50:70] = 1    # the building the footprint touches
    truth[50:70, 120:140] = 1  # a building nobody reviewed, inside the chip
    prob = np.zeros((200, 200), dtype=np.float32)
    prob[55:75, 55:75] = 0.8   # the parent's footprint, shifted: a wrong outline
    prob[150:152, 150:152] = 0.9  # 4 px: below MIN_PX, never shown to a reviewer
    monkeypatch.setattr(train_multi, "scene_probability", lambda net, scene: prob)
    scene = Scene("dubai", "x", "t1", np.random.default_rng(0).integers(0, 255, (3, 200, 200), dtype=np.uint8), truth)
    chips, answers, places = F.reviewed_buildings(Segmenter(None, {"output": {"threshold": 0.5}}), scene, (0.0, 0.0))
    assert len(chips) == len(answers) == len(places) == 1
    chip, answer = chips[0], answers[0]
    assert chip.shape == (4, F.CHIP_PX, F.CHIP_PX) and answer.shape == (F.CHIP_PX, F.CHIP_PX)
    r, c = F._window(65, F.CHIP_PX, 200), F._window(65, F.CHIP_PX, 200)
    assert chip[3].sum() == 400  # the reviewed footprint itself, for its confidence
    assert (answer == 1).sum() == 400 and (answer[50 - r:70 - r, 50 - c:70 - c] == 1).all()
    assert answer[72 - r, 72 - c] == 0  # inside the footprint, outside the true outline: background
    assert answer[60 - r, 78 - c] == 0  # within the margin
    assert (answer[50 - r:70 - r, 120 - c:140 - c] == IGNORE).all()  # the unreviewed building
    assert answer[0, 0] == IGNORE  # far from both
    assert places[0] == pytest.approx((65 * F.NOMINAL_GSD_M, -65 * F.NOMINAL_GSD_M))
