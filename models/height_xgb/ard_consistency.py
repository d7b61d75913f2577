"""Check (reported, not a model): do v4's image inputs and heights change when the chips are
prepared like the pipeline's ARD (per-band IQR scaling per z16 block, 0–1 float, clipped)
instead of the raw uint8 tiles used in training?

    PYTHONPATH=.:services/lib nice -n 10 .venv/bin/python -m models.height_xgb.ard_consistency --n 300

Uses no labels: it compares v4's predictions for the same buildings on both inputs.
"""

from __future__ import annotations

import argparse
import json
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
from urbanfabric.attributes.features import footprint_features
from urbanfabric.attributes.height import HeightModel
from urbanfabric.attributes.image_evidence import CHIP_MARGIN_M, image_evidence_features
from urbanfabric.attributes.measurements import clean_heights, load_footprint_heights
from urbanfabric.imagery.calibration import band_stats, iqr_scale

from models.height_xgb.image_features import xiamen_mosaic
from models.height_xgb.train import DEFAULT_DATA, XIAMEN


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--model", default="models/height_xgb/v4")
    args = ap.parse_args(argv)
    gdf, _ = clean_heights(load_footprint_heights(DEFAULT_DATA / XIAMEN, "H"))
    gdf = gdf.reset_index(drop=True)
    idx = np.sort(np.random.default_rng(0).choice(len(gdf), args.n, replace=False))
    reader = xiamen_mosaic(DEFAULT_DATA)
    geoms = gpd.GeoSeries(gdf.geometry.values, crs=gdf.crs).iloc[idx]
    raw = reader.chips(geoms, CHIP_MARGIN_M)
    # Per-band IQR stats per 1024 px block (a z16 tile of the z18 mosaic), as the tile worker.
    t = reader.transform
    ard = []
    for c in raw:
        assert c is not None
        cx, cy = c.footprint.centroid.x, c.footprint.centroid.y
        col, row = int((cx - t.c) / t.a) // 1024, int((cy - t.f) / t.e) // 1024
        block = reader.data[:, row * 1024:(row + 1) * 1024, col * 1024:(col + 1) * 1024]
        stats = band_stats(block, nodata=0)
        data = np.nan_to_num(c.data, nan=0.0)
        scaled = iqr_scale(data, stats, nodata=0)
        scaled[:, ~np.isfinite(c.data).all(axis=0)] = np.nan
        ard.append(type(c)(scaled, c.transform, c.footprint, c.metres_per_unit))
    fa, _, _ = image_evidence_features(raw, shadow_azimuth_deg=330.0)
    fb, _, _ = image_evidence_features(ard, shadow_azimuth_deg=330.0)
    model = HeightModel.load(args.model)
    morph = footprint_features(gdf).iloc[idx].reset_index(drop=True)
    ha = model.predict(pd.concat([morph, fa], axis=1)[list(model.feature_names)])[0]
    hb = model.predict(pd.concat([morph, fb], axis=1)[list(model.feature_names)])[0]
    d = hb - ha
    out = {
        "n": int(args.n),
        "height_diff_m": {"mean": float(d.mean()), "mean_abs": float(np.abs(d).mean()),
                          "p95_abs": float(np.percentile(np.abs(d), 95))},
        "mean_height_raw_m": float(ha.mean()),
        "feature_corr_raw_vs_ard": {c: round(float(np.corrcoef(fa[c], fb[c])[0, 1]), 3)
                                    for c in fa.columns[:-1]
                                    if np.isfinite(fa[c]).all() and fa[c].std() > 0},
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
