"""Classification metrics and temperature scaling (single-label softmax and multi-label sigmoid)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def probs_of(logits: np.ndarray, temperature: float, multi_label: bool) -> np.ndarray:
    """Probabilities of logits at a temperature."""
    z = logits.astype(np.float64) / temperature
    return _sigmoid(z) if multi_label else _softmax(z)


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0, multi_label: bool = False) -> float:
    """Mean negative log-likelihood (cross-entropy; mean binary cross-entropy for multi-label)."""
    p = np.clip(probs_of(logits, temperature, multi_label), 1e-12, 1 - 1e-12)
    if multi_label:  # NaN in y = label not annotated for that image: left out
        known = ~np.isnan(y)
        yk = np.nan_to_num(y)
        return float((-(yk * np.log(p) + (1 - yk) * np.log(1 - p)))[known].mean())
    return float(-np.log(p[np.arange(len(y)), y]).mean())


def ece(probs: np.ndarray, y: np.ndarray, multi_label: bool = False, bins: int = 10) -> float:
    """Expected calibration error (equal-width bins).

    Single-label: confidence of the top class vs. whether it is right. Multi-label: every
    (sample, label) probability vs. its 0/1 truth.
    """
    if multi_label:
        known = ~np.isnan(y.astype(np.float64))
        conf, hit = probs[known], y[known].astype(np.float64)
    else:
        conf, hit = probs.max(1), (probs.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(conf[m].mean() - hit[m].mean())
    return float(total)


def fit_temperature(logits: np.ndarray, y: np.ndarray, multi_label: bool = False) -> float:
    """Temperature minimising NLL on (validation) logits; 1.0 when there is nothing to fit.

    Optimises log T with L-BFGS, then clamps T to [0.05, 20] so one odd validation set
    cannot produce a degenerate calibration.
    """
    if len(y) == 0:
        return 1.0
    z = torch.as_tensor(logits, dtype=torch.float64)
    t = torch.as_tensor(y, dtype=torch.float64 if multi_label else torch.long)
    if multi_label:  # only annotated (sample, label) pairs
        known = ~torch.isnan(t)
        z, t = z[known], t[known]
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    loss_fn = torch.nn.BCEWithLogitsLoss() if multi_label else torch.nn.CrossEntropyLoss()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(z / log_t.exp(), t)
        loss.backward()
        return loss

    opt.step(closure)
    return float(np.clip(log_t.exp().item(), 0.05, 20.0))


def calibration_report(logits: np.ndarray, y: np.ndarray, temperature: float, multi_label: bool) -> dict[str, float]:
    """NLL and ECE before (T=1) and after temperature scaling."""
    return {
        "temperature": temperature,
        "nll_before": nll(logits, y, 1.0, multi_label),
        "nll_after": nll(logits, y, temperature, multi_label),
        "ece_before": ece(probs_of(logits, 1.0, multi_label), y, multi_label),
        "ece_after": ece(probs_of(logits, temperature, multi_label), y, multi_label),
    }


def single_label(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, per-class P/R/F1/support, confusion matrix."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    labels = list(range(len(classes)))
    pred = probs.argmax(1)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    return {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if len(set(y.tolist())) > 1 else float("nan"),
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": {"rows_true_cols_pred": classes, "matrix": confusion_matrix(y, pred, labels=labels).tolist()},
    }


def best_thresholds(y: np.ndarray, probs: np.ndarray) -> list[float]:
    """Per-label threshold maximising F1 on (validation) data; 0.5 where a label has no positive."""
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    out = []
    for j in range(y.shape[1]):
        known = ~np.isnan(y[:, j])
        yj, pj = y[known, j] > 0, probs[known, j]
        if yj.sum() == 0:
            out.append(0.5)
            continue
        f1s = []
        for t in grid:
            pred = pj >= t
            tp = float((pred & yj).sum())
            f1s.append(2 * tp / max(pred.sum() + yj.sum(), 1))
        out.append(float(grid[int(np.argmax(f1s))]))
    return out


def multi_label(y: np.ndarray, probs: np.ndarray, classes: list[str], thresholds: list[float]) -> dict[str, Any]:
    """Per-label P/R/F1 and 2×2 confusion at the thresholds, macro/micro-F1, exact match, mAP.

    ``NaN`` in ``y`` marks a label not annotated for an image (façade sets of different
    cities): such pairs are left out; labels without any annotated image are left out of the
    macro averages.
    """
    from sklearn.metrics import average_precision_score

    y = y.astype(np.float64)
    known = ~np.isnan(y)
    yt = np.nan_to_num(y).astype(int)
    pred = (probs >= np.asarray(thresholds)[None, :]).astype(int)
    per = {}
    f1s, aps = [], []
    TP = FP = FN = 0
    for j, c in enumerate(classes):
        k = known[:, j]
        if not k.any():
            continue
        t, pr = yt[k, j], pred[k, j]
        tp = int(((pr == 1) & (t == 1)).sum())
        fp = int(((pr == 1) & (t == 0)).sum())
        fn = int(((pr == 0) & (t == 1)).sum())
        tn = int(k.sum() - tp - fp - fn)
        TP, FP, FN = TP + tp, FP + fp, FN + fn
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        ap = float(average_precision_score(t, probs[k, j])) if 0 < t.sum() < len(t) else float("nan")
        f1s.append(f1)
        aps.append(ap)
        per[c] = {"precision": prec, "recall": rec, "f1": f1, "support": int(t.sum()), "n_annotated": int(k.sum()),
                  "threshold": float(thresholds[j]), "average_precision": ap,
                  "confusion_tn_fp_fn_tp": [tn, fp, fn, tp]}
    rows_ok = [(pred[i][known[i]] == yt[i][known[i]]).all() for i in range(len(y)) if known[i].any()]
    return {
        "n": int(len(y)),
        "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
        "micro_f1": float(2 * TP / (2 * TP + FP + FN)) if TP + FP + FN else 0.0,
        "exact_match": float(np.mean(rows_ok)) if rows_ok else float("nan"),
        "mean_average_precision": float(np.nanmean(aps)) if aps and not np.all(np.isnan(aps)) else float("nan"),
        "per_label": per,
    }
