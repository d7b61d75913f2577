"""height-xgb v4: footprint morphology + image evidence, with a split-conformal band
calibrated on spatially held-out blocks (issue 18).

    PYTHONPATH=.:services/lib nice -n 10 .venv/bin/python -m models.height_xgb.train_v4 \\
        --out models/height_xgb/v4 --n-models 20

Protocol (same test blocks as v1, so before/after compare):

* test: ``train.spatial_block_split`` with seed 0 (500 m blocks, 12 of 57 held out whole);
* calibration / validation: whole blocks drawn from the remaining ones (seed 100, 20 %);
  model choice (feature set) is made on these blocks, and the conformal band is fitted on
  them; the test blocks are scored once, at the end;
* training: the rest. Each training row is also added once with its image features set to
  NaN (``--dropout-copies``), so the trees learn a morphology-only path for buildings without
  imagery; that path gets its own conformal band (``band["no_image"]``).

Image features: :mod:`urbanfabric.attributes.image_evidence` on the z18 tiles
(:mod:`models.height_xgb.image_features`). Only Xiamen has imagery: Helsinki and the CityJSON
cities are scored on the morphology-only path (cross-city transfer, never trained on).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from urbanfabric.attributes.features import V1_FEATURE_NAMES, footprint_features
from urbanfabric.attributes.height import HeightModel
from urbanfabric.attributes.image_evidence import IMAGE_FEATURE_NAMES
from urbanfabric.attributes.measurements import clean_heights, load_cityjson, load_footprint_heights

from models.height_xgb.image_features import xiamen_image_features
from models.height_xgb.train import (
    CITYJSON, DEFAULT_DATA, HELSINKI, XIAMEN, load_helsinki, regression_metrics, spatial_block_split)

#: Image inputs without the roof-offset search (the first version compared, "v4a").
SHADOW_TEXTURE = [c for c in IMAGE_FEATURE_NAMES if not c.startswith("img_roof_offset")]
#: Candidates compared on the calibration (validation) blocks: (morphology columns or None
#: for all 69, image columns).
CANDIDATES: dict[str, tuple[list[str] | None, list[str]]] = {
    "v1_morphology": (list(V1_FEATURE_NAMES), []),
    "v1_morphology+shadow_texture": (list(V1_FEATURE_NAMES), SHADOW_TEXTURE),
    "v1_morphology+image": (list(V1_FEATURE_NAMES), list(IMAGE_FEATURE_NAMES)),
    "all_morphology+image": (None, list(IMAGE_FEATURE_NAMES)),
    "v1_morphology+image, depth 5": (list(V1_FEATURE_NAMES), list(IMAGE_FEATURE_NAMES)),
}
#: XGBoost parameters per candidate (over ``height.DEFAULT_PARAMS``).
CANDIDATE_PARAMS: dict[str, dict[str, Any]] = {
    "v1_morphology+image, depth 5": {"max_depth": 5, "eta": 0.05},
}


def _with_dropout(X: pd.DataFrame, y: np.ndarray, copies: int) -> tuple[pd.DataFrame, np.ndarray]:
    img = [c for c in X.columns if c.startswith("img_")]
    if not img or copies < 1:
        return X, y
    parts, ys = [X], [y]
    for _ in range(copies):
        parts.append(X.assign(**{c: np.nan for c in img}))
        ys.append(y)
    return pd.concat(parts, ignore_index=True), np.concatenate(ys)


def _short(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("n", "rmse_m", "mae_m", "r2", "bias_m", "band_coverage_p05_p95",
                              "mean_band_width_m")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("models/height_xgb/v4"))
    ap.add_argument("--n-models", type=int, default=20)
    ap.add_argument("--select-models", type=int, default=8, help="members per candidate")
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--cache", type=Path, default=Path("/work/cache-height"))
    ap.add_argument("--dropout-copies", type=int, default=1)
    ap.add_argument("--nthread", type=int, default=1)
    ap.add_argument("--compare", type=Path, default=Path("models/height_xgb/v1"))
    ap.add_argument("--test-seed", type=int, default=0,
                    help="block draw of the test set (0 = v1's; others: robustness, not shipped)")
    args = ap.parse_args(argv)
    path = args.data_root / XIAMEN
    if not path.is_file():
        print(f"missing data: {path}", file=sys.stderr)
        return 2
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    gdf, clean = clean_heights(load_footprint_heights(path, "H"))
    gdf = gdf.reset_index(drop=True)
    y = gdf["height_m"].to_numpy(np.float64)
    morph = footprint_features(gdf)
    img, reason, img_info = xiamen_image_features(gdf, args.data_root, sha, args.cache)
    img = img[list(IMAGE_FEATURE_NAMES)]
    full = pd.concat([morph.reset_index(drop=True), img.reset_index(drop=True)], axis=1)
    test, split = spatial_block_split(gdf, 500.0, 0.2, args.test_seed)
    rest = np.flatnonzero(~test)
    cal_sub, cal_split = spatial_block_split(gdf.iloc[rest], 500.0, 0.2, 100)
    calib = np.zeros(len(gdf), bool)
    calib[rest[cal_sub]] = True
    train = ~test & ~calib

    def columns(name: str) -> list[str]:
        base, img_cols = CANDIDATES[name]
        return (list(morph.columns) if base is None else base) + img_cols

    def fit(name: str, n_models: int) -> HeightModel:
        cols = columns(name)
        Xt, yt = _with_dropout(full.loc[train, cols], y[train], args.dropout_copies)
        return HeightModel(params=CANDIDATE_PARAMS.get(name)).fit(
            Xt, yt, n_models=n_models, seed=0, nthread=args.nthread)

    selection = {}
    for name in CANDIDATES:
        m = fit(name, args.select_models)
        mean, lo, hi = m.predict(full.loc[calib, columns(name)])
        selection[name] = _short(regression_metrics(y[calib], mean, lo, hi))
        print(name, selection[name], flush=True)
    best = min(selection, key=lambda k: selection[k]["rmse_m"])
    cols = columns(best)
    model = fit(best, args.n_models)
    Xc = full.loc[calib, cols]
    band = model.calibrate_band(Xc, y[calib], method="log")
    no_img = model.calibrate_band(Xc.assign(**{c: np.nan for c in cols if c.startswith("img_")}),
                                  y[calib], method="log") if model.image_feature_names else band
    model.band = {**band, "no_image": no_img}
    Xt = full.loc[test, cols]
    metrics: dict[str, Any] = {
        "model": "height_xgb", "version": args.out.name,
        "command": "python -m models.height_xgb.train_v4 " + " ".join(argv or sys.argv[1:]),
        "data": {"path": str(XIAMEN), "sha256": sha, "n_buildings": len(gdf),
                 "n_train": int(train.sum()), "n_calibration": int(calib.sum()),
                 "n_test": int(test.sum()), "clean_heights": clean,
                 "test_split": split, "calibration_split": cal_split},
        "image_features": {k: v for k, v in img_info.items() if k != "estimate"},
        "selection_on_calibration_blocks": selection, "chosen": best,
        "features": list(model.feature_names), "n_models": args.n_models,
        "dropout_copies": args.dropout_copies, "band": model.band,
        "trees_per_member": model.info["trees_per_member"],
    }
    metrics["test_xiamen"] = regression_metrics(y[test], *model.predict(Xt))
    if model.image_feature_names:
        Xn = Xt.assign(**{c: np.nan for c in model.image_feature_names})
        metrics["test_xiamen_without_imagery"] = regression_metrics(y[test], *model.predict(Xn))
    if (args.compare / "meta.json").is_file():
        old = HeightModel.load(args.compare)
        metrics["test_xiamen_before"] = {"model": str(args.compare), **regression_metrics(
            y[test], *old.predict(morph[test]))}
    # Cross-city transfer, no imagery there: the morphology-only path.
    cross = {}
    hel_path = args.data_root / HELSINKI
    if hel_path.is_file():
        hel, hh, _ = load_helsinki(hel_path)
        hx = footprint_features(hel)
        lab = np.isfinite(hh)
        hx = hx.assign(**{c: np.nan for c in IMAGE_FEATURE_NAMES})
        cross["helsinki_osm"] = {"after": _short(regression_metrics(hh[lab], *model.predict(
            hx.loc[lab, cols]))), "before": _short(regression_metrics(hh[lab], *HeightModel.load(
                args.compare).predict(hx[lab])))}
    for rel, crs in CITYJSON:
        p = args.data_root / rel
        if not p.is_file():
            continue
        g, _ = clean_heights(load_cityjson(p, crs=crs))
        if len(g) < 5:
            continue
        gx = footprint_features(g).assign(**{c: np.nan for c in IMAGE_FEATURE_NAMES})
        gy = g["height_m"].to_numpy(np.float64)
        cross[Path(rel).name] = {
            "after": _short(regression_metrics(gy, *model.predict(gx[cols]))),
            "before": _short(regression_metrics(gy, *HeightModel.load(args.compare).predict(gx)))}
    metrics["crosscity_no_imagery"] = cross
    model.info.update({"trained_on": str(XIAMEN), "split": split, "calibration": cal_split})
    model.save(args.out)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    print(json.dumps({k: metrics[k] for k in metrics if k.startswith(("test", "cross", "chosen"))},
                     indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
