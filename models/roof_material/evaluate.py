"""Evaluate a shipped roof-material model on a held-out split and write metrics.json.

Usage (repository root)::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.roof_material.evaluate \
        --model models/roof_material/v1 --data ../shared/data/roofs/caribbean-material --split val

Images go through the training/pipeline input path (IQR scaling per chip, resize to the
model's chip size) with no test-time augmentation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.roof_material.data import eval_chip, list_samples, load_scaled
from models.roof_material.model import load_config, load_model, predict_proba


def metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, log loss, per-class P/R/F1 and confusion matrix.

    Args:
        y_true: true class indices ``(N,)``.
        probs: predicted probabilities ``(N, C)``.
        classes: class names in column order.
    """
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_recall_fscore_support,
    )

    labels = list(range(len(classes)))
    pred = probs.argmax(axis=1)
    p, r, f, s = precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)),
        "macro_f1": float(f1_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
        "log_loss": float(log_loss(y_true, np.clip(probs, 1e-7, 1.0), labels=labels)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": {
            "rows_true_cols_pred": classes,
            "matrix": confusion_matrix(y_true, pred, labels=labels).tolist(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="version folder (config.json, model.pt)")
    ap.add_argument("--data", required=True, help="folder with <split>/<class>/*.png")
    ap.add_argument("--split", default="val")
    ap.add_argument("--out", default=None, help="metrics file (default: <model>/metrics.json)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    config = load_config(args.model)
    classes: list[str] = config["classes"]
    model = load_model(args.model)
    samples = list_samples(args.data, args.split, classes)
    chips = np.stack([eval_chip(load_scaled(s.path), config["chip_size"]) for s in samples])
    y = np.array([s.label for s in samples], dtype=np.int64)

    t0 = time.perf_counter()
    probs = predict_proba(model, chips)
    infer_s = time.perf_counter() - t0

    result = {
        "model": str(args.model),
        "data": str(args.data),
        "split": args.split,
        **metrics(y, probs, classes),
        "inference_ms_per_chip": 1000 * infer_s / max(len(samples), 1),
        "threads": args.threads,
    }
    out = Path(args.out) if args.out else Path(args.model) / "metrics.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print(f"{args.split}: n={result['n']} accuracy {result['accuracy']:.3f} balanced {result['balanced_accuracy']:.3f} "
          f"macro-F1 {result['macro_f1']:.3f} log-loss {result['log_loss']:.3f}")
    print(f"{'class':18s} {'prec':>6s} {'rec':>6s} {'f1':>6s} {'n':>4s}")
    for c, m in result["per_class"].items():
        print(f"{c:18s} {m['precision']:6.3f} {m['recall']:6.3f} {m['f1']:6.3f} {m['support']:4d}")
    print("confusion (rows true, cols pred):", classes)
    for c, row in zip(classes, result["confusion_matrix"]["matrix"]):
        print(f"{c:18s} {row}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
