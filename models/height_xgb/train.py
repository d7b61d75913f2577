"""Train the bootstrap-aggregated XGBoost height model and evaluate it on held-out blocks.

Usage (from the repository root)::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.height_xgb.train \\
        --out models/height_xgb/v2 --n-models 20            # all features (v2)
    ... --out models/height_xgb/v1 --n-models 20 --features v1   # the 21 v1 features

``--extra-cities`` adds the CityJSON samples (Delft, Den Haag, Rotterdam, 3D BAG, Zürich)
and the labelled Helsinki OSM buildings to the *training* set (the Xiamen test blocks stay the
same, so scores stay comparable; Helsinki is then no longer a cross-city test).

Data (read in place from ``../shared/data``, never copied into the repository):

* ``footprints/xiamen-z18/buildings.json`` — 4,562 building polygons of central Xiamen (WGS84)
  with measured height ``H`` (m). Training and spatially held-out test set.
* ``heights/osm-helsinki/helsinki_buildings.geojson`` — OpenStreetMap buildings of central
  Helsinki; those with ``height`` or ``building:levels`` (× 3 m) form a second, *cross-city*
  test set that the model never trains on.

Split: footprints are binned by centroid into square blocks (``--block-m``, 500 m) in the local
UTM CRS; whole blocks, drawn at random, go to the test set until it holds ``--test-frac`` of
the buildings. Features are computed once on all footprints (they use no labels), so a test
building's neighbourhood features see its real neighbours.

The shipped model is the one evaluated: it is fitted on the training blocks only.
Outputs in ``--out``: ``member_XX.json``, ``meta.json``, ``metrics.json``, ``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from urbanfabric.attributes.features import V1_FEATURE_NAMES, footprint_features
from urbanfabric.attributes.height import HeightModel, floors_from_height
from urbanfabric.attributes.measurements import (
    clean_heights,
    load_cityjson,
    load_footprint_heights,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data"
XIAMEN = Path("footprints/xiamen-z18/buildings.json")
HELSINKI = Path("heights/osm-helsinki/helsinki_buildings.geojson")
#: CityJSON samples usable as extra training cities: (file, CRS when the file names none).
CITYJSON = (
    ("heights/cityjson-samples/delft.json", None),
    ("heights/cityjson-samples/DH_01_subs.city.json", "EPSG:28992"),
    ("heights/cityjson-samples/rotterdam_subset.json", "EPSG:28992"),
    ("heights/cityjson-samples/multi_lod.json", "EPSG:28992"),
    ("heights/cityjson-samples/zurich_subset_lod2.json", None),
)
#: Height bins (m) for per-range RMSE, as in CMAB's comparison with GABLE.
BINS = (0.0, 10.0, 30.0, 50.0, np.inf)
STOREY_M = 3.0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def regression_metrics(
    y: np.ndarray, mean: np.ndarray, p05: np.ndarray, p95: np.ndarray
) -> dict[str, Any]:
    """RMSE, MAE, R², band coverage, floors accuracy, and RMSE per height bin."""
    err = mean - y
    ss_res = float(np.sum(err**2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    out: dict[str, Any] = {
        "n": len(y),
        "rmse_m": float(np.sqrt(np.mean(err**2))),
        "mae_m": float(np.mean(np.abs(err))),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "median_abs_err_m": float(np.median(np.abs(err))),
        "bias_m": float(np.mean(err)),
        "band_coverage_p05_p95": float(np.mean((y >= p05) & (y <= p95))),
        "mean_band_width_m": float(np.mean(p95 - p05)),
        "floors_exact": float(
            np.mean(floors_from_height(mean, STOREY_M) == floors_from_height(y, STOREY_M))
        ),
        "floors_within_1": float(
            np.mean(
                np.abs(floors_from_height(mean, STOREY_M) - floors_from_height(y, STOREY_M)) <= 1
            )
        ),
        "by_height_bin": {},
    }
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        m = (y >= lo) & (y < hi)
        key = f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">={lo:g}"
        out["by_height_bin"][key] = {
            "n": int(m.sum()),
            "rmse_m": float(np.sqrt(np.mean(err[m] ** 2))) if m.any() else None,
            "bias_m": float(np.mean(err[m])) if m.any() else None,
        }
    return out


def spatial_block_split(
    gdf: gpd.GeoDataFrame, block_m: float, test_frac: float, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Boolean test mask: whole square blocks (by centroid) drawn until test_frac is reached."""
    metric = gdf.geometry.to_crs(gdf.estimate_utm_crs())
    c = metric.centroid
    bx = np.floor(c.x.to_numpy() / block_m).astype(np.int64)
    by = np.floor(c.y.to_numpy() / block_m).astype(np.int64)
    block = pd.Series(list(zip(bx, by))).astype(str).to_numpy()
    blocks, counts = np.unique(block, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(blocks))
    chosen, total = [], 0
    for i in order:
        if total >= test_frac * len(gdf):
            break
        chosen.append(blocks[i])
        total += counts[i]
    test = np.isin(block, chosen)
    return test, {
        "block_m": block_m,
        "n_blocks": len(blocks),
        "n_test_blocks": len(chosen),
        "test_frac_target": test_frac,
        "seed": seed,
    }


def load_helsinki(path: Path) -> tuple[gpd.GeoDataFrame, np.ndarray, np.ndarray]:
    """Helsinki OSM buildings, heights (m, NaN when unknown) and the label's origin."""
    gdf = gpd.read_file(path)
    h = np.full(len(gdf), np.nan)
    src = np.full(len(gdf), "", dtype=object)
    for i, (height, levels) in enumerate(zip(gdf["height"], gdf["building:levels"])):
        if isinstance(height, str):
            m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(m)?\s*", height)
            if m:
                h[i], src[i] = float(m.group(1)), "height"
                continue
        if isinstance(levels, str):
            try:
                h[i], src[i] = float(levels) * STOREY_M, "levels"
            except ValueError:
                pass
    return gdf, h, src


def _extra_cities(args: argparse.Namespace) -> tuple[pd.DataFrame, np.ndarray, dict[str, int]]:
    """Features and heights of the CityJSON samples and labelled Helsinki OSM buildings.

    Features are computed per file (each is its own neighbourhood); labels pass
    ``clean_heights``.
    """
    xs, ys, info = [], [], {}
    sources = [(p, c) for p, c in CITYJSON]
    for rel, crs in sources:
        path = args.data_root / rel
        if not path.is_file():
            continue
        g, _ = clean_heights(load_cityjson(path, crs=crs))
        if len(g):
            xs.append(footprint_features(g))
            ys.append(g["height_m"].to_numpy(dtype=np.float64))
            info[Path(rel).name] = len(g)
    hel_path = args.data_root / HELSINKI
    if hel_path.is_file():
        hel, hh, _ = load_helsinki(hel_path)
        hx = footprint_features(hel)
        lab = np.isfinite(hh) & (hh >= 2.0) & (hh <= 500.0)
        xs.append(hx[lab])
        ys.append(hh[lab])
        info[HELSINKI.name] = int(lab.sum())
    return pd.concat(xs, ignore_index=True), np.concatenate(ys), info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("models/height_xgb/v1"))
    ap.add_argument("--n-models", type=int, default=20)
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--block-m", type=float, default=500.0)
    ap.add_argument("--test-frac", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nthread", type=int, default=1)
    ap.add_argument("--no-helsinki", action="store_true", help="skip the cross-city test")
    ap.add_argument("--features", choices=("all", "v1"), default="all",
                    help="'v1': the 21 columns of height_xgb v1; 'all': every feature")
    ap.add_argument("--extra-cities", action="store_true",
                    help="also train on the CityJSON samples and labelled Helsinki OSM")
    ap.add_argument("--compare", type=Path, default=Path("models/height_xgb/v1"),
                    help="score this saved model on the same test blocks (skipped if absent)")
    ap.add_argument(
        "--extra-split-seeds", type=int, nargs="*", default=[1, 2],
        help="also refit and score on other random block draws (reported, not shipped)",
    )
    args = ap.parse_args(argv)

    xiamen_path = args.data_root / XIAMEN
    if not xiamen_path.is_file():
        print(f"missing training data: {xiamen_path}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    gdf, clean_report = clean_heights(load_footprint_heights(xiamen_path, "H"))
    gdf = gdf.reset_index(drop=True)
    y = gdf["height_m"].to_numpy(dtype=np.float64)
    X = footprint_features(gdf)
    if args.features == "v1":
        X = X[list(V1_FEATURE_NAMES)]
    t_feat = time.perf_counter() - t0
    test, split = spatial_block_split(gdf, args.block_m, args.test_frac, args.seed)
    extra_X, extra_y, extra_info = _extra_cities(args) if args.extra_cities else (None, None, {})
    if extra_X is not None:
        extra_X = extra_X[list(X.columns)]

    def train_set(mask: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
        if extra_X is None:
            return X[mask], y[mask]
        return pd.concat([X[mask], extra_X], ignore_index=True), np.r_[y[mask], extra_y]

    t1 = time.perf_counter()
    model = HeightModel().fit(
        *train_set(~test), n_models=args.n_models, seed=args.seed, nthread=args.nthread
    )
    t_fit = time.perf_counter() - t1
    mean, p05, p95 = model.predict(X[test])
    yt = y[test]
    baseline = np.full_like(yt, np.median(y[~test]))
    metrics: dict[str, Any] = {
        "model": "height_xgb",
        "version": args.out.name,
        "command": "python -m models.height_xgb.train " + " ".join(argv or sys.argv[1:]),
        "data": {
            "train_test": {
                "path": str(XIAMEN),
                "sha256": _sha256(xiamen_path),
                "n_buildings": len(gdf),
                "n_train": int((~test).sum()),
                "n_test": int(test.sum()),
                "height_min_m": float(y.min()),
                "height_max_m": float(y.max()),
                "n_at_min_height": int(np.sum(y == y.min())),
                "n_at_min_height_plus_0.01": int(np.sum(np.isclose(y, y.min() + 0.01))),
                "clean_heights": clean_report,
            },
            "split": split,
            "extra_training_cities": extra_info,
        },
        "features": list(model.feature_names),
        "n_models": args.n_models,
        "log_target": model.log_target,
        "nthread": args.nthread,
        "trees_per_member": model.info["trees_per_member"],
        "timing_s": {"features": round(t_feat, 2), "fit": round(t_fit, 2)},
        "heldout_xiamen": regression_metrics(yt, mean, p05, p95),
        "heldout_xiamen_baseline_train_median": {
            "rmse_m": float(np.sqrt(np.mean((baseline - yt) ** 2))),
            "mae_m": float(np.mean(np.abs(baseline - yt))),
        },
    }
    # How much the score depends on which blocks were drawn: refit on other draws.
    others = []
    for s_ in args.extra_split_seeds:
        t_other, sp = spatial_block_split(gdf, args.block_m, args.test_frac, s_)
        m_other = HeightModel().fit(
            *train_set(~t_other), n_models=args.n_models, seed=args.seed, nthread=args.nthread
        )
        r = regression_metrics(y[t_other], *m_other.predict(X[t_other]))
        others.append({"split_seed": s_, "n_test": r["n"], **{
            k: r[k] for k in ("rmse_m", "mae_m", "r2", "bias_m", "band_coverage_p05_p95")}})
    metrics["heldout_xiamen_other_splits"] = others
    if args.compare and (args.compare / "meta.json").is_file() and args.compare != args.out:
        # The previous version on exactly these test blocks (it picks its columns by name).
        old = HeightModel.load(args.compare)
        metrics["compare"] = {"model": str(args.compare), **regression_metrics(
            yt, *old.predict(footprint_features(gdf)[test]))}
    hel_path = args.data_root / HELSINKI
    if not args.no_helsinki and hel_path.is_file():
        hel, hh, src = load_helsinki(hel_path)
        # Features on all Helsinki buildings so labelled ones see their unlabelled neighbours.
        hx = footprint_features(hel)[list(model.feature_names)]
        lab = np.isfinite(hh)
        hm, hlo, hhi = model.predict(hx[lab])
        metrics["crosscity_helsinki"] = {
            "path": str(HELSINKI),
            "sha256": _sha256(hel_path),
            "trained_on_it": bool(args.extra_cities),
            "label_origin": {
                "height_tag": int((src[lab] == "height").sum()),
                "levels_x3m": int((src[lab] == "levels").sum()),
            },
            **regression_metrics(hh[lab], hm, hlo, hhi),
        }

    args.out.mkdir(parents=True, exist_ok=True)
    model.info.update({"trained_on": str(XIAMEN), "split": split})
    model.save(args.out)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    size = sum(p.stat().st_size for p in args.out.glob("member_*.json"))
    (args.out / "MODEL_CARD.md").write_text(model_card(metrics, size))
    print(json.dumps({k: metrics[k] for k in metrics if k.startswith(("heldout", "cross"))},
                     indent=2))
    print(f"members: {size / 1e6:.2f} MB in {args.out}")
    return 0


def _fmt(m: dict[str, Any]) -> str:
    rows = [
        f"| buildings | {m['n']} |",
        f"| RMSE (m) | {m['rmse_m']:.2f} |",
        f"| MAE (m) | {m['mae_m']:.2f} |",
        f"| R² | {m['r2']:.3f} |",
        f"| median abs. error (m) | {m['median_abs_err_m']:.2f} |",
        f"| bias, mean(pred − true) (m) | {m['bias_m']:+.2f} |",
        f"| share of true heights in [p05, p95] | {m['band_coverage_p05_p95']:.1%} |",
        f"| mean band width p95 − p05 (m) | {m['mean_band_width_m']:.2f} |",
        f"| floors exact / within ±1 (3 m storeys) | {m['floors_exact']:.1%} / "
        f"{m['floors_within_1']:.1%} |",
    ]
    bins = " ".join(
        f"{k} m: n={v['n']}, RMSE={v['rmse_m']:.1f}, bias={v['bias_m']:+.1f};"
        for k, v in m["by_height_bin"].items() if v["n"]
    )
    return "| metric | value |\n|---|---|\n" + "\n".join(rows) + f"\n\nBy true height: {bins}\n"


def model_card(metrics: dict[str, Any], member_bytes: int) -> str:
    """MODEL_CARD.md text from the measured metrics (written by every training run)."""
    d = metrics["data"]
    s = d["split"]
    hx = metrics["heldout_xiamen"]
    base = metrics["heldout_xiamen_baseline_train_median"]
    cc = metrics.get("crosscity_helsinki")
    other_text = "\n".join(
        f"* split seed {o['split_seed']}: n={o['n_test']}, RMSE {o['rmse_m']:.2f} m, "
        f"MAE {o['mae_m']:.2f} m, R² {o['r2']:.3f}, bias {o['bias_m']:+.2f} m, "
        f"band coverage {o['band_coverage_p05_p95']:.1%}"
        for o in metrics.get("heldout_xiamen_other_splits", [])
    ) or "* none run"
    target = "log height" if metrics["log_target"] else "height in metres, squared error"
    extra_feats = "" if len(metrics["features"]) <= 21 else (
        ", further shape measures, built coverage, centroid nearest-neighbour statistics and\n"
        "location within the input (no road, POI or centre layer exists for Xiamen, so those\n"
        "columns are NaN in training and the model cannot use them)"
    )
    cmp = metrics.get("compare")
    cmp_text = (
        f"\nPrevious model `{cmp['model']}` on the same test blocks: RMSE {cmp['rmse_m']:.2f} m, "
        f"MAE {cmp['mae_m']:.2f} m, R² {cmp['r2']:.3f}, band coverage "
        f"{cmp['band_coverage_p05_p95']:.1%}.\n" if cmp else ""
    )
    extra = d.get("extra_training_cities") or {}
    if extra:
        cmp_text += (
            "\nExtra training cities (not tested): "
            + ", ".join(f"{k}: {v}" for k, v in extra.items()) + ".\n"
        )
    cc_text = (
        ("Helsinki (OpenStreetMap; TRAINED ON — not a test; " if cc.get("trained_on_it")
         else "Cross-city test, central Helsinki (OpenStreetMap; ")
        + f"{cc['label_origin']['height_tag']} `height` tags, "
        f"{cc['label_origin']['levels_x3m']} `building:levels` × 3 m"
        + ("):\n\n" if cc.get("trained_on_it") else "; never trained on):\n\n")
        + _fmt(cc)
        if cc
        else "Cross-city test not run.\n"
    )
    return f"""# height_xgb {metrics['version']} — building height from footprint morphology

Bootstrap-aggregated XGBoost (CMAB, "Building height"): {metrics['n_models']} XGBoost
regressors, each fitted on a bootstrap sample of the training buildings (target:
{target}; early-stopped on its own out-of-bag rows,
{min(metrics['trees_per_member'])}–{max(metrics['trees_per_member'])} trees of depth ≤ 3 each).
Prediction = members' mean; `height_p05` / `height_p95` = members' 5th / 95th percentile.

Inputs: {len(metrics['features'])} features of `urbanfabric.attributes.features.footprint_features`
(listed in `meta.json`; definitions in that module's table) — footprint morphology,
neighbourhood counts and areas at 50/100/200 m, adjacency, relative size{extra_feats} —
computed the same way in training and in the pipeline.
Code: `urbanfabric.attributes.height.HeightModel`. Files: `member_XX.json` (XGBoost JSON,
{member_bytes / 1e6:.2f} MB in all), `meta.json` (feature names, parameters, format version),
`metrics.json` (everything below, machine-readable).

## Data

* Train / test: `{d['train_test']['path']}` under `../shared/data` (sha256
  `{d['train_test']['sha256'][:16]}…`): {d['train_test']['n_buildings']} footprints of central
  Xiamen, China, with height `H` (m), from the geocompass/robosat_buildings_training repository
  (AGPL-3.0). The source of `H` is not documented there.
* Spatial split: centroids binned into {s['block_m']:g} m blocks in the local UTM CRS;
  {s['n_test_blocks']} of {s['n_blocks']} blocks, drawn at random (seed {s['seed']}), held out
  whole: {d['train_test']['n_train']} training / {d['train_test']['n_test']} test buildings.
  The shipped model is the one evaluated (fitted on the training blocks only).

## Command

```
PYTHONPATH=.:services/lib .venv/bin/python -m models.height_xgb.train {metrics['command'].split('train ', 1)[1]}
```

Fit time with {metrics['nthread']} CPU thread(s): {metrics['timing_s']['fit']:.0f} s (features
{metrics['timing_s']['features']:.0f} s) on the shared 2-core development machine.

## Held-out metrics (Xiamen, whole blocks never seen in training)

{_fmt(hx)}
Baseline, training median for every building: RMSE {base['rmse_m']:.2f} m, MAE {base['mae_m']:.2f} m.
{cmp_text}
Other random block draws (same recipe, refitted for the comparison, not shipped):
{other_text}

{cc_text}
## Limitations

* Footprint shape and density explain only part of height (CMAB adds streets, POIs and
  administrative context, which this model does not have): expect errors of several storeys
  for individual buildings, and regression to the mean — tall towers are under-estimated,
  low buildings over-estimated (see the per-bin bias).
* The p05–p95 band is the spread of the bootstrap ensemble (sensitivity to the training
  sample), not a prediction interval for a single building: it contains far fewer than 90 %
  of true heights (measured above). Do not read it as a 90 % interval.
* Trained on one dense Chinese city centre, and it does not transfer: in central Helsinki
  (large perimeter-block footprints, 4–7 storeys) it predicts Xiamen-like towers (bias above).
  Retrain with local heights before using it elsewhere. The Helsinki labels are themselves
  approximate (mostly `building:levels` × 3 m).
* {d['train_test']['n_at_min_height']} of the Xiamen heights are exactly {d['train_test']['height_min_m']:.2f} m, the minimum
  ({d['train_test']['n_at_min_height_plus_0.01']} are 0.01 m above it), which looks like a floor clamp or default in the
  source; they were kept as labels.
* Neighbourhood features are truncated at the edge of the input; the Xiamen extract has no
  margin, so buildings on its border see fewer neighbours than they have. The shared-data
  notes also say a spatial fifth of the area's buildings is missing from `buildings.json`
  and some large buildings are unlabelled, so density features there are biased low.
* Floors derive from height with a fixed storey height (`floors_from_height`, 3 m default).
"""


if __name__ == "__main__":
    raise SystemExit(main())
