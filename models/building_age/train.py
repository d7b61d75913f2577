"""Train the building-age model (route b) on Boulder ``year_built`` and score held-out blocks.

Usage (from the repository root)::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.building_age.train \\
        --out models/building_age/v1

Data (read in place, never copied): ``../shared/data/age/boulder/boulder_buildings.gpkg`` —
12,168 Boulder (CO) footprints with ``year_built`` (a subset of MTBF-33, Uhl & Leyk 2022).

Split: the height model's recipe (``models.height_xgb.train.spatial_block_split``): centroids
binned into ``--block-m`` squares in the local UTM CRS, whole blocks drawn at random until the
test set holds ``--test-frac`` of the buildings. Features (``footprint_features``, no context
layers: none is shipped for Boulder) are computed once on all footprints; they use no labels.

Reported: MAE / RMSE / median absolute error in years, the share inside the p05–p95 band, and
CMAB's five classes (accuracy, macro-F1, per-class F1, confusion matrix) for the class model
and for classes derived from the predicted year, each next to naive baselines.
Outputs in ``--out``: ``year_XX.json``, ``classes.json``, ``meta.json``, ``metrics.json``,
``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
from urbanfabric.attributes.age import AGE_CLASS_LABELS, AgeModel, age_class
from urbanfabric.attributes.features import footprint_features

from models.height_xgb.train import spatial_block_split

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data"
BOULDER = Path("age/boulder/boulder_buildings.gpkg")
K = len(AGE_CLASS_LABELS)


def class_metrics(true: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1 over the classes present in truth or prediction, per-class P/R/F1,
    confusion matrix (rows = true class, columns = predicted)."""
    cm = np.zeros((K, K), dtype=np.int64)
    np.add.at(cm, (true, pred), 1)
    per = {}
    f1s = []
    for k in range(K):
        tp = cm[k, k]
        p_den, r_den = cm[:, k].sum(), cm[k, :].sum()
        prec = tp / p_den if p_den else 0.0
        rec = tp / r_den if r_den else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[AGE_CLASS_LABELS[k]] = {"n_true": int(r_den), "n_pred": int(p_den),
                                    "precision": float(prec), "recall": float(rec),
                                    "f1": float(f1)}
        if r_den or p_den:
            f1s.append(f1)
    return {"n": len(true), "accuracy": float(np.mean(true == pred)),
            "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
            "per_class": per, "confusion_matrix": cm.tolist(),
            "confusion_labels": list(AGE_CLASS_LABELS)}


def year_metrics(y: np.ndarray, mean: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict:
    err = mean - y
    return {"n": len(y), "mae_years": float(np.mean(np.abs(err))),
            "rmse_years": float(np.sqrt(np.mean(err**2))),
            "median_abs_err_years": float(np.median(np.abs(err))),
            "bias_years": float(np.mean(err)),
            "within_5_years": float(np.mean(np.abs(err) <= 5)),
            "band_coverage_p05_p95": float(np.mean((y >= lo) & (y <= hi))),
            "mean_band_width_years": float(np.mean(hi - lo))}


def evaluate(model: AgeModel, X: Any, y: np.ndarray, y_train: np.ndarray) -> dict[str, Any]:
    mean, lo, hi, proba = model.predict(X)
    true_c = age_class(y)
    med = float(np.median(y_train))
    major = int(np.bincount(age_class(y_train), minlength=K).argmax())
    return {
        "years": year_metrics(y, mean, lo, hi),
        "years_baseline_train_median": year_metrics(y, np.full_like(y, med),
                                                    np.full_like(y, med), np.full_like(y, med)),
        "classes_from_classifier": class_metrics(true_c, proba.argmax(axis=1)),
        "classes_from_year": class_metrics(true_c, age_class(mean)),
        "classes_baseline_majority": class_metrics(true_c, np.full_like(true_c, major)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("models/building_age/v1"))
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--n-models", type=int, default=5)
    ap.add_argument("--block-m", type=float, default=500.0)
    ap.add_argument("--test-frac", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nthread", type=int, default=1)
    ap.add_argument("--class-weight-power", type=float, default=0.25)
    ap.add_argument("--extra-split-seeds", type=int, nargs="*", default=[1, 2])
    args = ap.parse_args(argv)

    path = args.data_root / BOULDER
    if not path.is_file():
        print(f"missing training data: {path}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    gdf = gpd.read_file(path)
    y = gdf["year_built"].to_numpy(dtype=np.float64)
    ok = np.isfinite(y) & (y >= 1600) & (y <= 2100)
    n_dropped = int((~ok).sum())
    gdf, y = gdf[ok].reset_index(drop=True), y[ok]
    X = footprint_features(gdf)
    t_feat = time.perf_counter() - t0
    test, split = spatial_block_split(gdf, args.block_m, args.test_frac, args.seed)

    def fit(mask: np.ndarray) -> AgeModel:
        return AgeModel(class_weight_power=args.class_weight_power).fit(
            X[mask], y[mask], n_models=args.n_models, seed=args.seed, nthread=args.nthread)

    t1 = time.perf_counter()
    model = fit(~test)
    t_fit = time.perf_counter() - t1
    metrics: dict[str, Any] = {
        "model": "building_age", "version": args.out.name,
        "command": "python -m models.building_age.train " + " ".join(argv or sys.argv[1:]),
        "data": {"path": str(BOULDER), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                 "n_buildings": len(gdf), "n_dropped_bad_year": n_dropped,
                 "n_train": int((~test).sum()), "n_test": int(test.sum()),
                 "year_min": float(y.min()), "year_max": float(y.max()),
                 "class_counts_all": np.bincount(age_class(y), minlength=K).tolist(),
                 "split": split},
        "n_models": args.n_models, "nthread": args.nthread,
        "class_weight_power": args.class_weight_power,
        "timing_s": {"features": round(t_feat, 2), "fit": round(t_fit, 2)},
        "heldout": evaluate(model, X[test], y[test], y[~test]),
    }
    others = []
    for s in args.extra_split_seeds:
        t_o, _ = spatial_block_split(gdf, args.block_m, args.test_frac, s)
        ev = evaluate(fit(~t_o), X[t_o], y[t_o], y[~t_o])
        others.append({"split_seed": s, "n_test": int(t_o.sum()),
                       "mae_years": ev["years"]["mae_years"],
                       "mae_baseline": ev["years_baseline_train_median"]["mae_years"],
                       "accuracy": ev["classes_from_classifier"]["accuracy"],
                       "macro_f1": ev["classes_from_classifier"]["macro_f1"],
                       "accuracy_baseline": ev["classes_baseline_majority"]["accuracy"],
                       "macro_f1_baseline": ev["classes_baseline_majority"]["macro_f1"]})
    metrics["heldout_other_splits"] = others
    model.info.update({"trained_on": str(BOULDER), "split": split})
    model.save(args.out)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    size = sum(p.stat().st_size for p in args.out.glob("*.json") if p.name != "metrics.json")
    (args.out / "MODEL_CARD.md").write_text(model_card(metrics, size))
    h = metrics["heldout"]
    print(json.dumps({"years": h["years"], "baseline": h["years_baseline_train_median"],
                      "cls": {k: h["classes_from_classifier"][k] for k in
                              ("accuracy", "macro_f1", "confusion_matrix")},
                      "cls_from_year": {k: h["classes_from_year"][k] for k in
                                        ("accuracy", "macro_f1")},
                      "majority": {k: h["classes_baseline_majority"][k] for k in
                                   ("accuracy", "macro_f1")},
                      "others": others}, indent=1))
    print(f"model files: {size / 1e6:.2f} MB in {args.out}")
    return 0


def _cls_table(m: dict[str, Any]) -> str:
    head = "| true \\ predicted | " + " | ".join(AGE_CLASS_LABELS) + " | recall | F1 |"
    sep = "|---" * (K + 3) + "|"
    rows = []
    for k, lab in enumerate(AGE_CLASS_LABELS):
        pc = m["per_class"][lab]
        rows.append(f"| {lab} | " + " | ".join(str(v) for v in m["confusion_matrix"][k])
                    + f" | {pc['recall']:.2f} | {pc['f1']:.2f} |")
    return "\n".join([head, sep, *rows])


def model_card(metrics: dict[str, Any], size: int) -> str:
    """MODEL_CARD.md text from the measured metrics."""
    d, h = metrics["data"], metrics["heldout"]
    s = d["split"]
    yr, yb = h["years"], h["years_baseline_train_median"]
    cc, cy, cb = (h["classes_from_classifier"], h["classes_from_year"],
                  h["classes_baseline_majority"])
    others = "\n".join(
        f"* split seed {o['split_seed']}: n={o['n_test']}, MAE {o['mae_years']:.2f} y "
        f"(baseline {o['mae_baseline']:.2f}), class accuracy {o['accuracy']:.1%} "
        f"(majority {o['accuracy_baseline']:.1%}), macro-F1 {o['macro_f1']:.3f} "
        f"(majority {o['macro_f1_baseline']:.3f})" for o in metrics["heldout_other_splits"]
    ) or "* none run"
    return f"""# building_age {metrics['version']} — construction year from footprint features

Route (b) of issue 5 item 5: XGBoost on the features of
`urbanfabric.attributes.features.footprint_features` (no context layers: morphology, neighbourhood,
nearest neighbours, location within the input). Code: `urbanfabric.attributes.age.AgeModel`.

* **Year**: {metrics['n_models']} bagged XGBoost regressors (absolute-error objective, each on a
  bootstrap sample, early-stopped on its out-of-bag rows); year = members' mean, `year_p05` /
  `year_p95` = members' 5th / 95th percentile (ensemble spread, not a calibrated interval).
* **Class**: one multi-class XGBoost (softprob) over CMAB's five age classes
  ({', '.join(AGE_CLASS_LABELS)}; cut years 1985, 1990, 2000, 2010, 2018 read as inclusive
  upper ends), sample weights (class count)^−{metrics['class_weight_power']:g} so the rare
  recent classes are not ignored.

Files: `year_XX.json`, `classes.json` (XGBoost JSON), `meta.json`; {size / 1e6:.2f} MB in all.

## Data

`{d['path']}` under `../shared/data` (sha256 `{d['sha256'][:16]}…`): {d['n_buildings']}
Boulder (Colorado, USA) footprints with `year_built` {d['year_min']:.0f}–{d['year_max']:.0f}
({d['n_dropped_bad_year']} dropped for a missing or implausible year). Class counts
(all buildings): {dict(zip(AGE_CLASS_LABELS, d['class_counts_all']))} — {d['class_counts_all'][0] / d['n_buildings']:.0%} are
in the first class, and the data hold no building before 1950, so the set says nothing about
pre-1950 stock. Subset of MTBF-33 (Uhl & Leyk 2022), see the data folder's LICENCE.md.

Spatial split: {s['block_m']:g} m blocks; {s['n_test_blocks']} of {s['n_blocks']} drawn at
random (seed {s['seed']}) held out whole: {d['n_train']} training / {d['n_test']} test buildings.
The shipped model is the one evaluated.

## Command

```
PYTHONPATH=.:services/lib .venv/bin/python -m models.building_age.train {metrics['command'].split('train ', 1)[1]}
```

Fit {metrics['timing_s']['fit']:.0f} s with {metrics['nthread']} threads (features
{metrics['timing_s']['features']:.0f} s), shared 2-core machine.

## Held-out metrics (whole blocks never seen in training)

Years:

| metric | model | baseline (training median) |
|---|---|---|
| MAE (years) | {yr['mae_years']:.2f} | {yb['mae_years']:.2f} |
| RMSE (years) | {yr['rmse_years']:.2f} | {yb['rmse_years']:.2f} |
| median abs. error (years) | {yr['median_abs_err_years']:.2f} | {yb['median_abs_err_years']:.2f} |
| within ±5 years | {yr['within_5_years']:.1%} | {yb['within_5_years']:.1%} |
| bias (years) | {yr['bias_years']:+.2f} | {yb['bias_years']:+.2f} |
| share of true years in [p05, p95] | {yr['band_coverage_p05_p95']:.1%} | – |

Five classes (n = {cc['n']}):

| | accuracy | macro-F1 |
|---|---|---|
| class model | {cc['accuracy']:.1%} | {cc['macro_f1']:.3f} |
| classes of the predicted year | {cy['accuracy']:.1%} | {cy['macro_f1']:.3f} |
| majority class ("{AGE_CLASS_LABELS[0]}") | {cb['accuracy']:.1%} | {cb['macro_f1']:.3f} |

Confusion matrix of the class model:

{_cls_table(cc)}

Other random block draws (refitted for the comparison, not shipped):
{others}

## Limitations

* One city, one era: Boulder's labelled stock is {d['class_counts_all'][0] / d['n_buildings']:.0%} pre-1986, so the
  recent classes have few examples and low F1; accuracy is dominated by the first class —
  compare with the majority baseline above, not with CMAB's 82 % (a different method, route a,
  checked on 2,500 hand-labelled buildings in China).
* Footprint features only (no roads, POIs, parcels): the signal is subdivision geometry and
  position in the extract; `dist_to_area_centroid_*` depend on the extent passed in, so
  predict on extracts of similar extent or retrain.
* Trained in the US; it does not transfer to other building traditions without local labels.
* Macro-F1 averages the classes present in truth or prediction of the test set.
"""


if __name__ == "__main__":
    raise SystemExit(main())
