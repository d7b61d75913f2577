"""Train the structure-type model (RASMI's C / M / S / T) and evaluate it on held-out regions.

Usage (from the repository root)::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.structure_type.train --out models/structure_type/v1

Labels (read in place from ``../shared/data/intensity``, never copied):

* Heeren & Fishman (2019) material-intensity database, ``buildings.csv``: records with a
  structure code C/M/S/T (673 of 910), their floors, function (RS/RM/RU/NR), construction
  period and RASMI region (R5_32).
* EU-ECB (Röck et al.), building LCAs with ``bldg_struct_type``: massive brick → M, massive or
  frame concrete → C, frame or massive wood → T, frame steel → S (others dropped), floors above
  ground, use type and subtype, completion year, country (→ OECD_EU15 / OECD_EFTA).

Both are samples of *studied* buildings, not of building stocks (material-intensity studies
favour new, residential, European and Chinese buildings): the model says which structure a
building of a given height, use, age and region most likely has among studied buildings, and
its probabilities are checked on regions it never saw.

Model: multinomial logistic regression (L2, strength chosen by grouped cross-validation on the
training regions) on log floors (+ missing flag), function (RS, RM, RES unspecified, NR,
unknown), construction-period bins and the R5 macro-region; then literature caps applied to
every prediction (:data:`urbanfabric.stock.structure.HEIGHT_CAPS`). Evaluation: leave-one-
region-out over R5_32 regions with ≥ 20 records (each region predicted by a model that never
saw it), against (a) the training regions' class shares and (b) the roof lookup it replaces
(without a roof class it is always masonry).

Outputs in ``--out``: ``classifier.json`` (coefficients and feature spec),
``config.json``, ``metrics.json`` and ``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from urbanfabric.io.model_repository import SHARED_DATA
from urbanfabric.stock.structure import (
    STRUCTURE_CLASSES,
    StructureModel,
    design_matrix,
)

DATA = SHARED_DATA / "intensity"
ECB_STRUCTURE = {"massive brick": "M", "massive concrete": "C", "frame concrete": "C",
                 "frame wood": "T", "massive wood": "T", "frame steel": "S"}
ECB_COUNTRY_REGION = {"Switzerland": "OECD_EFTA"}


def heeren_fishman() -> pd.DataFrame:
    h = pd.read_csv(DATA / "heeren-fishman/data/buildings.csv", encoding="latin1")
    h = h[h["structure"].isin(STRUCTURE_CLASSES)]
    start = pd.to_numeric(h["construction_period_start"], errors="coerce")
    end = pd.to_numeric(h["construction_period_end"], errors="coerce")
    function = h["function"].map({"RS": "RS", "RM": "RM", "RU": "RES", "NR": "NR", "IN": "NR"}).fillna("")
    return pd.DataFrame({
        "source": "heeren-fishman", "structure": h["structure"].to_numpy(),
        "floors": pd.to_numeric(h["no_floors"], errors="coerce").to_numpy(),
        "function": function.to_numpy(), "year": np.where(start.notna() & end.notna(), (start + end) / 2,
                                                          start.fillna(end)),
        "region": h["R5_32"].to_numpy(), "study": h["authors"].fillna("?").astype(str).to_numpy()})


def eu_ecb() -> pd.DataFrame:
    e = pd.read_csv(DATA / "eu-ecb/EU-ECB_dataset_feature_engineered.csv", low_memory=False)
    e = e[e["bldg_struct_type"].isin(ECB_STRUCTURE)]
    sub = e["bldg_use_subtype"].fillna("")
    function = np.where(e["bldg_use_type"] == "Non-residential", "NR",
                        np.where(sub.isin(["Single family house", "Row house", "Semi-detached"]), "RS",
                                 np.where(sub == "Multi-family house", "RM", "RES")))
    return pd.DataFrame({
        "source": "eu-ecb", "structure": e["bldg_struct_type"].map(ECB_STRUCTURE).to_numpy(),
        "floors": pd.to_numeric(e["bldg_floors_ag"], errors="coerce").to_numpy(),
        "function": function, "year": pd.to_numeric(e["bldg_year_complete"], errors="coerce").to_numpy(),
        "region": e["site_country"].map(ECB_COUNTRY_REGION).fillna("OECD_EU15").to_numpy(),
        "study": ("eu-ecb " + e["site_country"].fillna("?")).to_numpy()})


def scores(p: np.ndarray, y: np.ndarray, bins: int = 15) -> dict[str, float]:
    """Accuracy, mean log loss and expected calibration error (top-class, ``bins`` bins)."""
    k = np.array([STRUCTURE_CLASSES.index(c) for c in y])
    top = p.argmax(axis=1)
    conf = p.max(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs((top[m] == k[m]).mean() - conf[m].mean())
    return {"n": int(len(y)), "accuracy": float((top == k).mean()),
            "log_loss": float(-np.log(np.clip(p[np.arange(len(k)), k], 1e-6, 1)).mean()), "ece": float(ece)}


def fit(frame: pd.DataFrame, c: float) -> StructureModel:
    X, names = design_matrix(frame["floors"], frame["function"], frame["year"], frame["region"])
    lr = LogisticRegression(C=c, max_iter=5000)
    lr.fit(X, frame["structure"])
    order = [list(lr.classes_).index(s) for s in STRUCTURE_CLASSES]
    return StructureModel(coef=lr.coef_[order], intercept=lr.intercept_[order], features=names)


def choose_c(frame: pd.DataFrame, grid: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0)) -> float:
    """L2 strength by grouped (region) cross-validation on the training rows only."""
    groups = frame["region"].to_numpy()
    folds = GroupKFold(n_splits=min(5, len(set(groups))))
    best = (np.inf, grid[0])
    for c in grid:
        losses = []
        for tr, va in folds.split(frame, groups=groups):
            model = fit(frame.iloc[tr], c)
            v = frame.iloc[va]
            losses.append(scores(model.predict_proba(v["floors"], v["function"], v["year"], v["region"]),
                                 v["structure"].to_numpy())["log_loss"] * len(va))
        best = min(best, (sum(losses) / len(frame), c))
    return best[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--min-region", type=int, default=20, help="regions held out need this many records")
    args = p.parse_args(argv)
    data = pd.concat([heeren_fishman(), eu_ecb()], ignore_index=True)
    held = [r for r, n in data["region"].value_counts().items() if n >= args.min_region]
    rows = {"model": [], "region_shares": [], "roof_lookup": []}
    per_region = {}
    for region in held:
        train, test = data[data["region"] != region], data[data["region"] == region]
        model = fit(train, choose_c(train))
        y = test["structure"].to_numpy()
        pm = model.predict_proba(test["floors"], test["function"], test["year"], test["region"])
        shares = train["structure"].value_counts(normalize=True).reindex(list(STRUCTURE_CLASSES)).fillna(0).to_numpy()
        ps = np.tile(shares, (len(test), 1))
        pl = np.tile(np.array([0.0, 1.0, 0.0, 0.0]) * 0.97 + 0.01, (len(test), 1))  # "M" (softened)
        for key, prob in (("model", pm), ("region_shares", ps), ("roof_lookup", pl)):
            rows[key].append((prob, y))
        per_region[region] = {"n": len(test), "model": scores(pm, y), "region_shares": scores(ps, y)}
    pooled = {k: scores(np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v])) for k, v in rows.items()}
    # New buildings in a region the model knows (the demo's case: Xiamen is ASIA_CHN): whole
    # studies held out (5 folds grouped by study), the regions' own shares as the baseline.
    by_study = {"model": [], "region_shares": [], "roof_lookup": []}
    for tr, te in GroupKFold(n_splits=5).split(data, groups=data["study"]):
        train, test = data.iloc[tr], data.iloc[te]
        model = fit(train, choose_c(train))
        y = test["structure"].to_numpy()
        overall = train["structure"].value_counts(normalize=True).reindex(list(STRUCTURE_CLASSES)).fillna(0)
        shares = train.groupby("region")["structure"].value_counts(normalize=True).unstack().reindex(
            columns=list(STRUCTURE_CLASSES)).fillna(0)
        ps = np.stack([shares.loc[r].to_numpy() if r in shares.index else overall.to_numpy()
                       for r in test["region"]]) * 0.98 + 0.005
        by_study["model"].append((model.predict_proba(test["floors"], test["function"], test["year"], test["region"]), y))
        by_study["region_shares"].append((ps, y))
        by_study["roof_lookup"].append((np.tile([0.01, 0.97, 0.01, 0.01], (len(test), 1)), y))
    studies = {k: scores(np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v])) for k, v in by_study.items()}
    c = choose_c(data)
    final = fit(data, c)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "classifier.json").write_text(json.dumps(final.to_dict(), indent=1) + "\n")
    (args.out / "config.json").write_text(json.dumps({
        "model": "structure-type", "classes": list(STRUCTURE_CLASSES), "l2_c": c,
        "training": {"records": int(len(data)), "by_source": data["source"].value_counts().to_dict(),
                     "by_structure": data["structure"].value_counts().to_dict()}}, indent=1) + "\n")
    metrics = {"held_out_studies": studies, "held_out_regions": held, "pooled": pooled, "per_region": per_region,
               "command": "PYTHONPATH=.:services/lib .venv/bin/python -m models.structure_type.train --out " + str(args.out)}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print("regions held out:", json.dumps(pooled))
    print("studies held out:", json.dumps(studies))
    for r, m in per_region.items():
        print(f"{r:12} n={m['n']:4} model acc {m['model']['accuracy']:.2f} ll {m['model']['log_loss']:.2f}  "
              f"shares acc {m['region_shares']['accuracy']:.2f} ll {m['region_shares']['log_loss']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
