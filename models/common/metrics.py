"""Pixel-level binary segmentation metrics accumulated over a whole split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ConfusionAtThresholds:
    """Running TP/FP/FN/TN pixel counts at several probability thresholds.

    Counts are summed over all images before ratios are taken (micro averaging), so large
    and small tiles weigh by their pixels, the usual "pixel IoU" of building extraction.
    """

    thresholds: tuple[float, ...] = (0.5,)
    tp: np.ndarray = field(init=False)
    fp: np.ndarray = field(init=False)
    fn: np.ndarray = field(init=False)
    tn: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.thresholds = tuple(float(t) for t in self.thresholds)
        zeros = np.zeros(len(self.thresholds), dtype=np.int64)
        self.tp, self.fp, self.fn, self.tn = zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy()

    def update(self, prob: np.ndarray, target: np.ndarray) -> None:
        """Add a batch of probabilities and 0/1 targets of the same shape."""
        truth = np.asarray(target) > 0.5
        for i, t in enumerate(self.thresholds):
            pred = prob >= t
            self.tp[i] += int(np.count_nonzero(pred & truth))
            self.fp[i] += int(np.count_nonzero(pred & ~truth))
            self.fn[i] += int(np.count_nonzero(~pred & truth))
            self.tn[i] += int(np.count_nonzero(~pred & ~truth))

    def scores(self, index: int) -> dict[str, float | int]:
        """IoU, F1, precision, recall, accuracy and raw counts at ``thresholds[index]``."""
        tp, fp, fn, tn = (int(a[index]) for a in (self.tp, self.fp, self.fn, self.tn))

        def ratio(a: int, b: int) -> float:
            return a / b if b else 0.0

        return {
            "threshold": self.thresholds[index],
            "iou": ratio(tp, tp + fp + fn),
            "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "precision": ratio(tp, tp + fp),
            "recall": ratio(tp, tp + fn),
            "accuracy": ratio(tp + tn, tp + fp + fn + tn),
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
        }

    def best(self) -> dict[str, float | int]:
        """Scores at the threshold with the highest IoU (first one on ties)."""
        ious = [self.scores(i)["iou"] for i in range(len(self.thresholds))]
        return self.scores(int(np.argmax(ious)))
