"""Calibrate the structure-type model (temperature scaling) on place-held-out predictions.

Usage (from the repository root)::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.structure_type.calibrate \\
        --weights models/structure_type/v1 --out models/structure_type/v2

structure-type:v1 is over-confident on buildings from places it never saw (ECE 0.16 on
held-out studies, 0.20 on held-out regions). This fits one temperature T (logits ÷ T before
the softmax and the literature caps; Guo et al. 2017, "On calibration of modern neural
networks") and keeps v1's coefficients, so v2 is a config-only version
(``weights_from: structure-type:v1``).

Honest evaluation (nested): for each outer fold — a whole R5_32 region left out (regions with
≥ 20 records), or a fifth of the studies left out — the logistic model is refitted on the
rest (L2 strength by grouped cross-validation, as in ``train.py``) and T is chosen *only on
the rest*, from its own region-grouped out-of-fold predictions; the held-out place is then
scored with T = 1 and with that T. Baselines on the same folds: the rules alone (no labels:
uniform over C/M/S/T with the literature height caps) and the roof lookup it replaced
(always masonry without a roof class). The shipped T is chosen the same way on all records.

Writes ``--out``/``config.json`` (temperature, ``weights_from``), ``metrics.json`` (scores
and reliability tables, top-class confidence in 10 bins) and prints them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from models.structure_type.train import choose_c, eu_ecb, fit, heeren_fishman, scores
from urbanfabric.stock.structure import STRUCTURE_CLASSES, StructureModel, apply_height_caps

#: Temperatures tried (log-spaced, 0.5–6).
GRID = tuple(float(t) for t in np.round(np.exp(np.linspace(np.log(0.5), np.log(6.0), 41)), 4))


def predict(model: StructureModel, frame: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(frame["floors"], frame["function"], frame["year"], frame["region"])


def oof_models(frame: pd.DataFrame, groups: np.ndarray, c: float | None = None) -> list[tuple[StructureModel, np.ndarray]]:
    """(model fitted without fold, fold's row positions) for region-grouped folds of ``frame``."""
    folds = GroupKFold(n_splits=min(5, len(set(groups))))
    out = []
    for tr, va in folds.split(frame, groups=groups):
        train = frame.iloc[tr]
        out.append((fit(train, c if c is not None else choose_c(train)), va))
    return out


def choose_temperature(frame: pd.DataFrame, c: float | None = None) -> float:
    """T minimising the log loss of region-grouped out-of-fold predictions on ``frame`` only."""
    parts = oof_models(frame, frame["region"].to_numpy(), c)
    y = frame["structure"].to_numpy()
    best = (np.inf, 1.0)
    for t in GRID:
        p = np.zeros((len(frame), len(STRUCTURE_CLASSES)))
        for model, va in parts:
            p[va] = predict(replace(model, temperature=t), frame.iloc[va])
        best = min(best, (scores(p, y)["log_loss"], t))
    return best[1]


def rules_only(frame: pd.DataFrame) -> np.ndarray:
    """No labels: uniform over C/M/S/T, then the literature height caps."""
    p = np.full((len(frame), len(STRUCTURE_CLASSES)), 1 / len(STRUCTURE_CLASSES))
    return apply_height_caps(p, frame["floors"].to_numpy(dtype=float))


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Top-class confidence bins: count, mean confidence, accuracy (a reliability diagram)."""
    k = np.array([STRUCTURE_CLASSES.index(c) for c in y])
    conf, hit = p.max(axis=1), p.argmax(axis=1) == k
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            rows.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": int(m.sum()), "confidence": float(conf[m].mean()),
                         "accuracy": float(hit[m].mean())})
    return rows


def evaluate(data: pd.DataFrame, splits: list[tuple[str, np.ndarray, np.ndarray]]) -> dict:
    """Nested evaluation over (name, train rows, test rows) splits; pooled scores per method."""
    kinds = ("calibrated", "uncalibrated", "rules_only", "roof_lookup")
    pooled: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    ys, per_fold = [], {}
    for name, tr, te in splits:
        train, test = data.iloc[tr], data.iloc[te]
        c = choose_c(train)
        model = fit(train, c)
        t = choose_temperature(train, c)
        probs = {"calibrated": predict(replace(model, temperature=t), test), "uncalibrated": predict(model, test),
                 "rules_only": rules_only(test), "roof_lookup": np.tile([0.01, 0.97, 0.01, 0.01], (len(test), 1))}
        y = test["structure"].to_numpy()
        ys.append(y)
        for k in kinds:
            pooled[k].append(probs[k])
        per_fold[name] = {"n": int(len(test)), "temperature": t,
                          **{k: scores(probs[k], y) for k in ("calibrated", "uncalibrated")}}
    y = np.concatenate(ys)
    out = {k: scores(np.concatenate(v), y) for k, v in pooled.items()}
    out["reliability"] = {k: reliability(np.concatenate(pooled[k]), y) for k in ("calibrated", "uncalibrated")}
    out["folds"] = per_fold
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, required=True, help="the version folder whose classifier.json is kept")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--min-region", type=int, default=20)
    args = p.parse_args(argv)
    data = pd.concat([heeren_fishman(), eu_ecb()], ignore_index=True)
    regions = [r for r, n in data["region"].value_counts().items() if n >= args.min_region]
    idx = np.arange(len(data))
    by_region = [(r, idx[data["region"] != r], idx[data["region"] == r]) for r in regions]
    by_study = [(f"studies_{i}", tr, te) for i, (tr, te) in
                enumerate(GroupKFold(n_splits=5).split(data, groups=data["study"]))]
    weights = StructureModel.load(args.weights)
    final_c = json.loads((args.weights / "config.json").read_text())["l2_c"]
    temperature = choose_temperature(data, final_c)
    metrics = {"temperature": temperature, "held_out_regions": evaluate(data, by_region),
               "held_out_studies": evaluate(data, by_study),
               "command": "PYTHONPATH=.:services/lib .venv/bin/python -m models.structure_type.calibrate "
                          f"--weights {args.weights} --out {args.out}"}
    args.out.mkdir(parents=True, exist_ok=True)
    config = json.loads((args.weights / "config.json").read_text())
    config.update({"temperature": temperature, "weights_from": f"structure-type:{args.weights.name}",
                   "calibration": "temperature on region-grouped out-of-fold predictions of all records"})
    (args.out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    assert weights.temperature == 1.0 or args.weights.name != "v1"
    print(f"temperature {temperature}")
    for split in ("held_out_regions", "held_out_studies"):
        m = metrics[split]
        print(split, {k: {s: round(v, 3) for s, v in m[k].items()}
                      for k in ("calibrated", "uncalibrated", "rules_only", "roof_lookup")})
        for k in ("uncalibrated", "calibrated"):
            print("  ", k, [(r["bin"], r["n"], round(r["confidence"], 2), round(r["accuracy"], 2))
                            for r in m["reliability"][k]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
