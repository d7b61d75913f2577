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


@dataclass
class InstanceScores:
    """SpaceNet-style instance counts at one IoU threshold, summable over images."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    matched_iou: list[float] = field(default_factory=list)

    def __add__(self, other: "InstanceScores") -> "InstanceScores":
        return InstanceScores(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                              self.matched_iou + other.matched_iou)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p * r > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision,
                "recall": self.recall, "f1": self.f1,
                "mean_matched_iou": float(np.mean(self.matched_iou)) if self.matched_iou else 0.0}


def match_instances(
    truth: list, predictions: list, iou_threshold: float = 0.5, min_area: float = 0.0,
    confidences: list[float] | None = None,
) -> InstanceScores:
    """One-to-one greedy matching of predicted and true polygons (the SpaceNet metric).

    Predictions are visited by decreasing confidence (input order when none is given); each
    takes the still-unmatched true polygon with the highest IoU and counts as a true positive
    when that IoU is at least ``iou_threshold`` (the true polygon is then removed), otherwise as
    a false positive. True polygons left unmatched are false negatives. As in the SpaceNet
    scorer, true polygons with area < ``min_area`` and predictions with area ≤ ``min_area`` are
    ignored (SpaceNet uses ``min_area=20`` px²) and empty predictions are false positives.

    Args:
        truth: shapely polygons.
        predictions: shapely polygons in the same coordinates.
        iou_threshold: IoU needed for a match (0.5).
        min_area: area filter (coordinate units²).
        confidences: one per prediction; higher is visited first.
    """
    from shapely import STRtree

    order = list(range(len(predictions)))
    if confidences is not None:
        order.sort(key=lambda i: -float(confidences[i]))  # stable: ties keep input order
    gt = [g for g in truth if g is not None and not g.is_empty and g.area >= min_area]
    gt = [g if g.is_valid else g.buffer(0) for g in gt]
    remaining = set(range(len(gt)))
    tree = STRtree(gt) if gt else None
    scores = InstanceScores()
    for i in order:
        pred = predictions[i]
        if pred is None or pred.area <= min_area:
            continue
        pred = pred if pred.is_valid else pred.buffer(0)
        best_j, best_iou = -1, 0.0
        if tree is not None and pred.area > 0:
            for j in tree.query(pred):
                j = int(j)
                if j not in remaining:
                    continue
                inter = pred.intersection(gt[j]).area
                if inter <= 0:
                    continue
                iou = inter / (pred.area + gt[j].area - inter)
                if iou > best_iou:
                    best_j, best_iou = j, iou
        if best_j >= 0 and best_iou >= iou_threshold:
            scores.tp += 1
            scores.matched_iou.append(best_iou)
            remaining.discard(best_j)
        else:
            scores.fp += 1
    scores.fn = len(remaining)
    return scores


def mask_instances(mask: np.ndarray, min_pixels: int = 1) -> list:
    """Polygons (pixel coordinates) of the 4-connected components of a binary mask."""
    import rasterio.features
    from scipy import ndimage
    from shapely.geometry import shape
    from shapely.ops import unary_union

    labels, n = ndimage.label(np.asarray(mask) > 0)
    if n == 0:
        return []
    parts: dict[int, list] = {}
    for geom, value in rasterio.features.shapes(labels.astype(np.int32), mask=labels > 0, connectivity=4):
        parts.setdefault(int(value), []).append(shape(geom))
    sizes = np.bincount(labels.ravel())
    return [unary_union(p) for v, p in sorted(parts.items()) if sizes[v] >= min_pixels]
