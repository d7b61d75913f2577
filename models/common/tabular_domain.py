"""Calibrate the function or age model and give it an out-of-domain score; ship both as a new version.

Usage (repository root)::

    PYTHONPATH=.:services/lib nice -n 10 .venv/bin/python -m models.common.tabular_domain \
        --model function --out models/building_function/v2
    PYTHONPATH=.:services/lib nice -n 10 .venv/bin/python -m models.common.tabular_domain \
        --model age --out models/building_age/v2

What it does (issue 18, item 2), on the block split the shipped v1 was trained with (so the
held-out buildings are ones v1 never saw):

1. The held-out blocks are cut in two halves **by block** (seed 0): *val* (temperature and
   out-of-domain threshold) and *test* (the numbers below, read once).
2. **Temperature** on val (:func:`urbanfabric.uncertainty.fit_temperature` on ``log p`` of the
   XGBoost class probabilities); ECE (15 bins) and NLL on test before and after.
3. **Out-of-domain score**: :class:`urbanfabric.uncertainty.NeighbourDistance` (tabular): the
   Euclidean distance to the 5th nearest training building in robust-standardised,
   ``sign·log1p``-compressed footprint features, with the training ranges for the reasons (the
   one-Gaussian :class:`urbanfabric.uncertainty.FeatureDensity` is scored alongside); the
   threshold keeps ``--keep`` of val. AUROC of test against the footprints of other cities in
   ``../shared/data``: Boulder or the Helsinki extracts (whichever the model did not train on)
   and Xiamen (``footprints/xiamen-z18/buildings.json``).
4. ``--out``: ``meta.json`` (v1's, with ``temperature``, ``calibration`` and ``ood``),
   ``domain.npz``, ``metrics.json``, a reliability diagram beside the card. The XGBoost trees
   stay in v1 (``weights_from`` in ``models/registry.yaml``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from urbanfabric.attributes.features import feature_matrix, footprint_features, prepare_footprints
from urbanfabric.uncertainty import (
    ECE_BINS,
    FeatureDensity,
    NeighbourDistance,
    auroc,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    probability_logits,
    softmax,
)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
DOMAIN_FILE = "domain.npz"


def halves(blocks: np.ndarray, among: np.ndarray, seed: int = 0) -> np.ndarray:
    """True for the rows of a random half of the blocks of the rows ``among`` (val), by block."""
    ub = np.unique(blocks[among])
    chosen = np.random.default_rng(seed).permutation(ub)[: (len(ub) + 1) // 2]
    return among & np.isin(blocks, chosen)


def features_of(gdf: gpd.GeoDataFrame) -> pd.DataFrame:
    """The pipeline's footprint features of a footprint table (repaired / dropped as the pipeline does)."""
    kept, _ = prepare_footprints(gdf)
    return footprint_features(kept.reset_index(drop=True))


def xiamen() -> pd.DataFrame:
    return features_of(gpd.read_file(DATA / "footprints" / "xiamen-z18" / "buildings.json"))


def boulder() -> pd.DataFrame:
    return features_of(gpd.read_file(DATA / "age" / "boulder" / "boulder_buildings.gpkg"))


def helsinki() -> pd.DataFrame:
    from urbanfabric.attributes.function import read_osm_layers

    frames = [features_of(read_osm_layers(DATA / "heights" / "osm-helsinki" / f).buildings)
              for f in ("Helsinki.osm.pbf", "test.osm.pbf")]
    return pd.concat(frames, ignore_index=True)


def function_split() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Helsinki features, labels (codes, −1 unlabelled), blocks, train mask, held-out mask (v1's split)."""
    from models.building_function.train import draw_test_blocks, load
    from urbanfabric.attributes.function import FUNCTION_CLASSES

    args = argparse.Namespace(data_root=DATA, block_m=250.0)
    df, _ = load(args)
    lab = (df["label"] != "").to_numpy()
    test = np.zeros(len(df), dtype=bool)
    for name in df["extract"].unique():
        m = (df["extract"] == name).to_numpy()
        test[m] = draw_test_blocks(df["block"].to_numpy()[m], lab[m], 0.25, 0)
    codes = np.array([FUNCTION_CLASSES.index(v) if v else -1 for v in df["label"]])
    return df, codes, df["block"].to_numpy(), ~test, test


def age_split() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boulder features, age-class codes, blocks, train mask, held-out mask (v1's split)."""
    from models.building_age.train import BOULDER
    from models.height_xgb.train import spatial_block_split
    from urbanfabric.attributes.age import age_class

    gdf = gpd.read_file(DATA / BOULDER)
    y = gdf["year_built"].to_numpy(dtype=np.float64)
    ok = np.isfinite(y) & (y >= 1600) & (y <= 2100)
    gdf, y = gdf[ok].reset_index(drop=True), y[ok]
    X = footprint_features(gdf)
    test, _ = spatial_block_split(gdf, 500.0, 0.2, 0)
    c = gdf.geometry.to_crs(gdf.estimate_utm_crs()).centroid
    blocks = np.array([f"{int(np.floor(a / 500))}:{int(np.floor(b / 500))}" for a, b in zip(c.x, c.y)])
    return X, age_class(y), blocks, ~test, test


def out_of_domain(model: Any, F_val: np.ndarray, F_test: np.ndarray, shifted: dict[str, np.ndarray],
                  keep: float) -> tuple[Any, dict[str, Any]]:
    """Threshold ``model`` on val; AUROC of test against each shifted city; shares flagged."""
    thr = model.choose_threshold(F_val, keep)
    s_test = model.score(F_test)
    rows: dict[str, Any] = {}
    for name, F in shifted.items():
        s = model.score(F)
        rows[name] = {"n": int(len(s)), "auroc": auroc(s_test, s), "flagged": float(np.mean(s > thr)),
                      "median_score": float(np.median(s)),
                      "share_with_a_feature_out_of_range": float(np.mean([bool(r) for r in model.out_of_range(F)]))}
    pooled = np.concatenate([model.score(F) for F in shifted.values()])
    return model, {"kind": type(model).__name__, "threshold": thr, "keep": keep,
                   "val_kept": float(np.mean(model.score(F_val) <= thr)), "test_kept": float(np.mean(s_test <= thr)),
                   "test_median_score": float(np.median(s_test)), "auroc_pooled": auroc(s_test, pooled),
                   "sources": rows}


def reliability_png(path: Path, title: str, probs: np.ndarray, y: np.ndarray, temps: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from urbanfabric.uncertainty import reliability_bins

    logits = probability_logits(probs)
    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=110)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
    for (name, t), marker in zip(temps.items(), ("o", "^")):
        p = softmax(logits, t)
        mc, acc, n = reliability_bins(p.max(1), (p.argmax(1) == y).astype(float))
        used = n > 0
        ax.plot(mc[used], acc[used], marker=marker, ms=4, lw=1,
                label=f"{name} (T={t:.2f}), ECE {expected_calibration_error(p, y):.3f}")
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("function", "age"), required=True)
    p.add_argument("--source", type=Path, default=None, help="shipped version folder (default: v1)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--keep", type=float, default=0.95)
    args = p.parse_args(argv)
    command = "python -m models.common.tabular_domain " + " ".join(sys.argv[1:] if argv is None else argv)

    if args.model == "function":
        from urbanfabric.attributes.function import FunctionModel

        source = args.source or REPO / "models/building_function/v1"
        model: Any = FunctionModel.load(source)
        X, y, blocks, train, held = function_split()
        shifted = {"boulder": boulder, "xiamen": xiamen}

        def proba(frame: pd.DataFrame) -> np.ndarray:
            return model.predict_proba(frame)
    else:
        from urbanfabric.attributes.age import AgeModel

        source = args.source or REPO / "models/building_age/v1"
        model = AgeModel.load(source)
        X, y, blocks, train, held = age_split()
        shifted = {"helsinki": helsinki, "xiamen": xiamen}

        def proba(frame: pd.DataFrame) -> np.ndarray:
            return model.predict(frame)[3]
    names = list(model.feature_names)
    val = halves(blocks, held)
    test = held & ~val
    labelled = y >= 0
    pva, pte = proba(X[val & labelled]), proba(X[test & labelled])
    yva, yte = y[val & labelled], y[test & labelled]
    t = fit_temperature(probability_logits(pva), yva)
    lte = probability_logits(pte)
    cal = {"temperature": t, "bins": ECE_BINS, "val_n": int(len(yva)), "test_n": int(len(yte)),
           "test_before": {"nll": negative_log_likelihood(lte, yte, 1.0),
                           "ece": expected_calibration_error(softmax(lte, 1.0), yte),
                           "accuracy": float(np.mean(pte.argmax(1) == yte))},
           "test_after": {"nll": negative_log_likelihood(lte, yte, t),
                          "ece": expected_calibration_error(softmax(lte, t), yte)}}
    print(f"[{args.model}] T {t:.3f} on {len(yva)} val; test ECE {cal['test_before']['ece']:.3f} → "
          f"{cal['test_after']['ece']:.3f} (n={len(yte)})", flush=True)

    F_train, F_val, F_test = (feature_matrix(X[m], names) for m in (train, val, test))
    F_shifted = {name: feature_matrix(load(), names) for name, load in shifted.items()}
    density, ood = out_of_domain(NeighbourDistance.fit(F_train, k=5, tabular=True, names=tuple(names)),
                                 F_val, F_test, F_shifted, args.keep)
    _, gauss = out_of_domain(FeatureDensity.fit(F_train, robust=True, compress=True, names=tuple(names)),
                             F_val, F_test, F_shifted, args.keep)
    print(f"[{args.model}] OOD: threshold {ood['threshold']:.3f}, test kept {ood['test_kept']:.3f}; " + ", ".join(
        f"{k} AUROC {v['auroc']:.3f} ({v['flagged']:.0%} flagged)" for k, v in ood["sources"].items())
        + f" (one Gaussian: " + ", ".join(f"{k} {v['auroc']:.3f}" for k, v in gauss["sources"].items()) + ")",
        flush=True)
    result = {"model": args.model, "from": str(source), "command": command, "calibration": cal,
              "out_of_domain": ood, "out_of_domain_gaussian_compared": gauss, "split": {"train": int(train.sum()), "val": int(val.sum()),
                                              "test": int(test.sum()), "by": "block halves of v1's held-out blocks"}}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        density.save(args.out / DOMAIN_FILE)
        meta = json.loads((Path(source) / "meta.json").read_text())
        meta["temperature"] = t
        meta["calibration"] = {"fitted_on": "val half of v1's held-out blocks", "command": command,
                               "test_ece_before": cal["test_before"]["ece"], "test_ece_after": cal["test_after"]["ece"]}
        meta["ood"] = {"file": DOMAIN_FILE, "score": "neighbour_distance", "k": 5, "threshold": ood["threshold"],
                       "keep": args.keep, "space": "robust-standardised, sign*log1p-compressed footprint features",
                       "fitted_on": "training blocks' footprint features; threshold on the val half"}
        (args.out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        (args.out / "metrics.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
        card = Path(source) / "MODEL_CARD.md"
        if card.is_file() and not (args.out / "MODEL_CARD.md").exists():
            shutil.copyfile(card, args.out / "MODEL_CARD.md")
        reliability_png(args.out.parent / f"reliability_{args.out.name}.png",
                        f"{args.out.parent.name}/{args.out.name}, test blocks (n={len(yte)})", pte, yte,
                        {"uncalibrated": 1.0, "val-fitted": t})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
