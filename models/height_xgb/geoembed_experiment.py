"""Reported comparison only (issue 18, item 1): does a self-supervised *aerial* encoder
(``geoembed`` V3) add to height-xgb v4's morphology + image-evidence inputs? Not wired in.

    # the wheel comes with `make install` (--no-deps, requirements-nodeps.txt: its runtime
    # ``netcl`` needs pyopencl + an OpenCL device; only its bundled V3 weights are used)
    PYTHONPATH=.:services/lib OMP_NUM_THREADS=1 nice -n 10 \\
        .venv/bin/python -m models.height_xgb.geoembed_experiment

The encoder. ``geoembed`` 1.1.2 bundles one set of weights, ``weights/v3.npz`` ("V3", a
CIFAR-style ResNet-18: 3×3 stride-1 stem, no max-pool, base 64 → layer4 512 ch; 4×4 average
pool → flatten 8192 → linear 256 → L2-normalised; ``geoembed/arch.py::TileEncoderV3``). V11/V12
weights are downloaded from GitHub at first use, which this machine cannot do. The package
runs on ``netcl`` (PyOpenCL); :mod:`models.common.geoembed_v3` (imported here as
:class:`GeoEmbedV3`) re-implements the same forward pass in torch (which the model server has)
and loads the ``.npz`` (``allow_pickle=False``): conv weights are
(out, in, kh, kw) as in torch, BatchNorm eps 1e-5 in eval mode (``netcl``'s default), the
linear weight is stored (in, out). Input (``geoembed/preprocess.py``): RGB, ``x/255`` mapped to
[−1, 1] (``(x − 0.5) / 0.5``), nadir ortho. Scale (package README): "calibrated strictly for
z=20 footprints", i.e. one input = one z20 web-mercator tile (38.2 Mercator m a side ≈ 34.8 ground
m at Xiamen's 24.5° N) resized to 128 px; for coarser imagery it slices tiles into z20-sized
sub-crops ("quadtree sub-patching"), which is what the chips below do.

Chips. The Xiamen z18 mosaic (0.597 Mercator m / px, ``image_features.xiamen_mosaic``, the same
reader as v4's features) cut as squares centred on each footprint's centroid:

* ``z20`` — 64 × 64 z18 px = one z20 tile (38.2 Mercator m), fed at 64 px (1:1 with the
  imagery, no up-sampling: the package would resize it to 128 px, which costs 4× the compute on
  this shared CPU for no new detail; the network is fully convolutional up to its 4×4 pool, so
  64 px gives the same 8192-d pooled grid at half the pixel density).
* ``z20native`` — the same window bilinearly up-sampled to 128 px, the package's own input
  (4× the compute; the 64 px and 128 px embeddings of the same chip have cosine 0.5–0.7, so
  the encoder is indeed scale-sensitive).
* ``z19ctx`` — 128 × 128 z18 px (76 m: the building and its shadow/neighbours), average-pooled
  2× to 64 px (a z19 tile at the encoder's pixel count).

Pixels outside the mosaic are set to the chip's valid mean; a chip with < 50 % valid pixels gets
a NaN embedding (the model's morphology path then applies, as for v4's image inputs). 256-d
embeddings are cached under ``--cache``; principal components are fitted on the training
blocks only. Blocks are ``train_v4``'s: test = 12 blocks (seed 0), validation = 7 blocks of the
rest (seed 100), training = the other 38. Candidates are compared on the validation blocks;
``--score-test`` scores the chosen one on the test blocks (only to be used when it beats v4 on
validation by ≥ 0.03 R²).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from urbanfabric.attributes.chip_reader import RasterChipReader
from urbanfabric.attributes.features import V1_FEATURE_NAMES, footprint_features
from urbanfabric.attributes.height import HeightModel
from urbanfabric.attributes.image_evidence import IMAGE_FEATURE_NAMES
from urbanfabric.attributes.measurements import clean_heights, load_footprint_heights

from models.common.geoembed_v3 import AerialResNet as GeoEmbedV3  # noqa: F401 - the V3 network in torch
from models.common.geoembed_v3 import load_v3 as load_geoembed_v3
from models.common.geoembed_v3 import weights_path as geoembed_weights
from models.height_xgb.image_features import xiamen_image_features, xiamen_mosaic
from models.height_xgb.train import (
    DEFAULT_DATA,
    XIAMEN,
    regression_metrics,
    spatial_block_split,
)
from models.height_xgb.train_v4 import _short, _with_dropout

#: Chip scales: name → (window side in z18 pixels, encoder input side in pixels).
SCALES: dict[str, tuple[int, int]] = {"z20": (64, 64), "z19ctx": (128, 64),
                                      "z20native": (64, 128)}
#: Least share of valid (imaged) pixels for a chip to get an embedding.
MIN_VALID = 0.5


def centred_chips(reader: RasterChipReader, centres: np.ndarray, window: int,
                  out_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Square ``window``-pixel chips centred on ``centres`` (mosaic CRS), as encoder input.

    Returns (B, 3, out_px, out_px) float32 in [−1, 1] and each chip's valid share.
    """
    inv = ~reader.transform
    data = reader.data
    valid = reader.valid if reader.valid is not None else np.ones(data.shape[1:], bool)
    h, w = valid.shape
    half = window // 2
    out = np.zeros((len(centres), 3, window, window), np.float32)
    share = np.zeros(len(centres))
    for i, (x, y) in enumerate(centres):
        c, r = inv @ (x, y)
        r0, c0 = math.floor(r) - half, math.floor(c) - half
        rs, cs = slice(max(r0, 0), min(r0 + window, h)), slice(max(c0, 0), min(c0 + window, w))
        if rs.stop <= rs.start or cs.stop <= cs.start:
            continue
        a = data[:, rs, cs].astype(np.float32) / 255.0
        v = valid[rs, cs]
        chip = np.zeros((3, window, window), np.float32)
        ok = np.zeros((window, window), bool)
        chip[:, rs.start - r0:rs.stop - r0, cs.start - c0:cs.stop - c0] = a
        ok[rs.start - r0:rs.stop - r0, cs.start - c0:cs.stop - c0] = v
        share[i] = ok.mean()
        if ok.any():
            fill = chip[:, ok].mean(axis=1)
            chip[:, ~ok] = fill[:, None]
        out[i] = chip
    t = torch.from_numpy(out)
    if out_px < window:
        t = F.avg_pool2d(t, kernel_size=window // out_px)
    elif out_px > window:  # the package's own resize is PIL bilinear
        t = F.interpolate(t, size=(out_px, out_px), mode="bilinear", align_corners=False)
    return ((t - 0.5) / 0.5).numpy(), share


def embeddings(gdf: gpd.GeoDataFrame, cache: Path, scale: str, order: np.ndarray,
               batch: int = 32) -> tuple[np.ndarray, float]:
    """256-d geoembed V3 embedding of the rows in ``order`` (NaN where the chip is < 50 %
    imaged, and for rows not in ``order`` that were never computed), cached.

    Rows are computed in ``order`` (training and validation rows first; the test rows only
    when the test blocks are to be scored) and checkpointed, so an interrupted run resumes.
    Returns the embeddings and the encoder's seconds per building (chip cut + forward pass).
    """
    window, out_px = SCALES[scale]
    f = cache / f"xiamen_geoembed_v3_{scale}.npz"
    emb = np.full((len(gdf), 256), np.nan, np.float32)
    done = np.zeros(len(gdf), bool)
    spent = 0.0
    if f.is_file():
        z = np.load(f)
        emb, done, spent = z["emb"], z["done"], float(z["seconds"])
    if done[order].all():
        return emb, spent / max(int(done.sum()), 1)
    torch.set_num_threads(1)
    reader = xiamen_mosaic(DEFAULT_DATA)
    cen = gdf.geometry.to_crs(reader.crs).centroid
    centres = np.column_stack([cen.x.to_numpy(), cen.y.to_numpy()])
    net = load_geoembed_v3(geoembed_weights()).to(memory_format=torch.channels_last)
    todo = [i for i in order if not done[i]]
    with torch.inference_mode():
        for s in range(0, len(todo), batch):
            idx = np.asarray(todo[s:s + batch])
            t0 = time.perf_counter()
            x, share = centred_chips(reader, centres[idx], window, out_px)
            z_ = net(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).numpy()
            z_[share < MIN_VALID] = np.nan
            emb[idx], done[idx] = z_, True
            spent += time.perf_counter() - t0
            if (s // batch) % 10 == 9 or s + batch >= len(todo):
                np.savez(f, emb=emb, done=done, seconds=spent)
                print(f"{scale}: {int(done.sum())}/{len(gdf)} "
                      f"({spent / max(done.sum(), 1):.3f} s/building)", flush=True)
    return emb, spent / max(int(done.sum()), 1)


def blocks(gdf: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``train_v4``'s masks: (train, validation, test)."""
    test, _ = spatial_block_split(gdf, 500.0, 0.2, 0)
    rest = np.flatnonzero(~test)
    cal_sub, _ = spatial_block_split(gdf.iloc[rest], 500.0, 0.2, 100)
    val = np.zeros(len(gdf), bool)
    val[rest[cal_sub]] = True
    return ~test & ~val, val, test


def load_labels() -> tuple[gpd.GeoDataFrame, np.ndarray, str]:
    """Xiamen footprints with heights (``clean_heights``), heights, label file sha256."""
    path = DEFAULT_DATA / XIAMEN
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    gdf, _ = clean_heights(load_footprint_heights(path, "H"))
    gdf = gdf.reset_index(drop=True)
    return gdf, gdf["height_m"].to_numpy(np.float64), sha


def principal_components(emb: np.ndarray, fit_rows: np.ndarray, k: int,
                         prefix: str) -> pd.DataFrame:
    """``k`` PCs of ``emb`` fitted on ``fit_rows`` (finite rows only); NaN rows stay NaN."""
    ok = fit_rows & np.isfinite(emb).all(axis=1)
    mu = emb[ok].mean(axis=0)
    _, _, vt = np.linalg.svd(emb[ok] - mu, full_matrices=False)
    return pd.DataFrame((emb - mu) @ vt[:k].T, columns=[f"{prefix}{j}" for j in range(k)])


#: v4's shipped member parameters (``train_v4.CANDIDATE_PARAMS``, chosen on validation).
V4_PARAMS: dict[str, Any] = {"max_depth": 5, "eta": 0.05}
#: Shadow-length inputs a taller building can only lengthen (monotone-constraint variant).
SHADOW_MONOTONE = ("img_shadow_len_m", "img_shadow_len_p75_m", "img_shadow_area_len_m",
                   "img_shadow_excess_m")
#: Lowest label value in the Xiamen file: 536 of 4,562 heights are exactly 3.00 m, none lower.
LABEL_FLOOR_M = 3.0


def _aft_bag(X: pd.DataFrame, y: np.ndarray, n_models: int, seed: int, params: dict[str, Any],
             floor_m: float) -> list[Any]:
    """Bagged XGBoost AFT members: a label at ``floor_m`` is right-censored ([floor, ∞)), the
    rest exact — "the building is at least this tall", not "it is 3 m"."""
    import xgboost as xgb

    lo = y.copy()
    hi = np.where(y <= floor_m, np.inf, y)
    rng = np.random.default_rng(seed)
    data = X.to_numpy(np.float32)
    members = []
    p = {"objective": "survival:aft", "eval_metric": "aft-nloglik",
         "aft_loss_distribution": "normal", "aft_loss_distribution_scale": 0.5,
         "min_child_weight": 10.0, "subsample": 0.8, "colsample_bytree": 0.8,
         "tree_method": "hist", "nthread": 1, **params}
    n = len(y)
    for k in range(n_models):
        idx = rng.integers(0, n, size=n)
        oob = np.setdiff1d(np.arange(n), idx)
        dtr = xgb.DMatrix(data[idx])
        dtr.set_float_info("label_lower_bound", lo[idx])
        dtr.set_float_info("label_upper_bound", hi[idx])
        dva = xgb.DMatrix(data[oob])
        dva.set_float_info("label_lower_bound", lo[oob])
        dva.set_float_info("label_upper_bound", hi[oob])
        b = xgb.train({**p, "seed": seed * 1000 + k}, dtr, num_boost_round=400,
                      evals=[(dva, "oob")], early_stopping_rounds=30, verbose_eval=False)
        members.append(b[: b.best_iteration + 1])
    return members


def _aft_predict(members: list[Any], X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    import xgboost as xgb

    dm = xgb.DMatrix(X.to_numpy(np.float32))
    p = np.stack([m.predict(dm) for m in members]).astype(np.float64)
    return p.mean(axis=0), np.percentile(p, 5, axis=0), np.percentile(p, 95, axis=0)


def _metrics(y: np.ndarray, pred: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, Any]:
    m = _short(regression_metrics(y, *pred))
    above = y > LABEL_FLOOR_M
    m["r2_above_floor"] = round(float(regression_metrics(
        y[above], pred[0][above], pred[1][above], pred[2][above])["r2"]), 4)
    return m


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path("/work/cache-heightgeo"))
    ap.add_argument("--image-cache", type=Path, default=Path("/work/cache-height"),
                    help="v4's cached image-evidence features")
    ap.add_argument("--n-models", type=int, default=8, help="members per candidate")
    ap.add_argument("--pcs", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0, help="bootstrap/member seed (noise check)")
    ap.add_argument("--scales", nargs="*", default=["z20", "z19ctx"])
    ap.add_argument("--only", nargs="*", default=None, help="run only these candidates")
    ap.add_argument("--score-test", default=None,
                    help="candidate to score once on the test blocks (after it beat v4 on "
                         "validation by >= 0.03 R²)")
    args = ap.parse_args(argv)
    gdf, y, sha = load_labels()
    train, val, test = blocks(gdf)
    order = np.flatnonzero(train | val)
    if args.score_test:
        order = np.concatenate([order, np.flatnonzero(test)])
    morph = footprint_features(gdf)[list(V1_FEATURE_NAMES)].reset_index(drop=True)
    img, _, _ = xiamen_image_features(gdf, DEFAULT_DATA, sha, args.image_cache)
    base = pd.concat([morph, img[list(IMAGE_FEATURE_NAMES)].reset_index(drop=True)], axis=1)
    geo: dict[str, pd.DataFrame] = {}
    timing: dict[str, float] = {}
    for scale in args.scales:
        emb, sec = embeddings(gdf, args.cache, scale, order)
        timing[scale] = round(sec, 4)
        # "img_" prefix: the dropout copies (morphology path) blank them with the image inputs.
        geo[scale] = principal_components(emb, train, args.pcs, f"img_geo_{scale}_pc")
    mono = {"monotone_constraints": {c: 1 for c in SHADOW_MONOTONE}}
    cands: dict[str, tuple[pd.DataFrame, dict[str, Any], str]] = {
        "v4 inputs (v1 morphology + image evidence)": (base, V4_PARAMS, "sq"),
        "v4 inputs, log target": (base, V4_PARAMS, "log"),
        "v4 inputs, monotone shadow lengths": (base, {**V4_PARAMS, **mono}, "sq"),
        "v4 inputs, 3.00 m labels right-censored (AFT)": (base, V4_PARAMS, "aft"),
    }
    if geo:
        s0, all_s = args.scales[0], "+".join(args.scales)
        g1 = geo[s0]
        g_all = pd.concat(list(geo.values()), axis=1)
        cands.update({
            f"v4 inputs + geoembed {s0} ({args.pcs} PCs)":
                (pd.concat([base, g1], axis=1), V4_PARAMS, "sq"),
            f"v1 morphology + geoembed {s0} ({args.pcs} PCs)":
                (pd.concat([morph, g1], axis=1), V4_PARAMS, "sq"),
        })
        if len(geo) > 1:
            cands[f"v4 inputs + geoembed {all_s} ({args.pcs} PCs each)"] = (
                pd.concat([base, g_all], axis=1), V4_PARAMS, "sq")
    out_f = args.cache / f"geoembed_experiment_{'+'.join(args.scales) or 'none'}.json"
    res: dict[str, Any] = json.loads(out_f.read_text()) if out_f.is_file() else {}
    res.setdefault("validation", {})
    res["seconds_per_building"] = {**res.get("seconds_per_building", {}), **timing}

    def fit_predict(X: pd.DataFrame, params: dict[str, Any], kind: str, rows: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        Xt, yt = _with_dropout(X[train], y[train], 1)
        if kind == "aft":
            return _aft_predict(_aft_bag(Xt, yt, args.n_models, args.seed, params,
                                         LABEL_FLOOR_M),
                                X[rows])
        m = HeightModel(params=params, log_target=kind == "log").fit(
            Xt, yt, n_models=args.n_models, seed=args.seed)
        return m.predict(X[rows])

    for name, (X, params, kind) in cands.items():
        if args.only is not None and not any(o in name for o in args.only):
            continue
        t0 = time.perf_counter()
        if args.seed:
            name = f"{name}, seed {args.seed}"
        res["validation"][name] = {**_metrics(y[val], fit_predict(X, params, kind, val)),
                                   "fit_s": round(time.perf_counter() - t0, 1)}
        print(name, res["validation"][name], flush=True)
        out_f.write_text(json.dumps(res, indent=2))
    if args.score_test:
        X, params, kind = cands[args.score_test]
        res["test"] = {n: _metrics(y[test], fit_predict(Xc, p, k, test)) for n, (Xc, p, k) in
                       (("v4 inputs (v1 morphology + image evidence)",
                         cands["v4 inputs (v1 morphology + image evidence)"]),
                        (args.score_test, (X, params, kind)))}
        print("test", res["test"], flush=True)
    res["command"] = "python -m models.height_xgb.geoembed_experiment " + " ".join(
        argv if argv is not None else sys.argv[1:])
    out_f.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
