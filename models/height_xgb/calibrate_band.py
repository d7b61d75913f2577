"""Calibrate a shipped height model's p05–p95 band on held-out Xiamen blocks (split conformal).

The members' spread alone covers about a third of true heights (``validation.json``). This
command takes the model's own held-out test blocks (``train.spatial_block_split``, same seed
and block size as its training), splits them by block into a calibration half and an
evaluation half, fits :meth:`HeightModel.calibrate_band` on the first and reports coverage on
the second — calibration never sees the evaluation buildings, training saw neither.

    PYTHONPATH=.:services/lib .venv/bin/python -m models.height_xgb.calibrate_band \
        --model models/height_xgb/v1

Writes the band into ``<model>/meta.json`` and the numbers into ``<model>/band.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from urbanfabric.attributes.height import HeightModel
from urbanfabric.attributes.features import footprint_features
from urbanfabric.attributes.measurements import clean_heights, load_footprint_heights

from models.height_xgb.train import DEFAULT_DATA, XIAMEN, spatial_block_split


def _coverage(model: HeightModel, X, y: np.ndarray) -> dict[str, float]:
    mean, lo, hi = model.predict(X)
    return {"coverage_p05_p95": float(np.mean((y >= lo) & (y <= hi))),
            "mean_band_width_m": float(np.mean(hi - lo)), "n": int(len(y))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=Path("models/height_xgb/v1"))
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--coverage", type=float, default=0.90)
    ap.add_argument("--block-m", type=float, default=500.0)
    ap.add_argument("--test-frac", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    path = args.data_root / XIAMEN
    if not path.is_file():
        print(f"missing data: {path}", file=sys.stderr)
        return 2
    gdf, _ = clean_heights(load_footprint_heights(path, "H"))
    gdf = gdf.reset_index(drop=True)
    y = gdf["height_m"].to_numpy(dtype=np.float64)
    model = HeightModel.load(args.model)
    X = footprint_features(gdf)[list(model.feature_names)]
    test, split = spatial_block_split(gdf, args.block_m, args.test_frac, args.seed)
    # Halve the held-out blocks: alternate blocks (sorted by id) calibrate / evaluate.
    metric = gdf.geometry.to_crs(gdf.estimate_utm_crs()).centroid
    block = (np.floor(metric.x.to_numpy() / args.block_m).astype(np.int64) * 100003
             + np.floor(metric.y.to_numpy() / args.block_m).astype(np.int64))
    test_blocks = np.unique(block[test])
    calib_blocks = test_blocks[::2]
    calib = test & np.isin(block, calib_blocks)
    evaluate = test & ~calib
    model.band = {}
    before = _coverage(model, X[evaluate], y[evaluate])
    band = model.calibrate_band(X[calib], y[calib], coverage=args.coverage)
    after = _coverage(model, X[evaluate], y[evaluate])
    model.save(args.model)
    report = {
        "command": "python -m models.height_xgb.calibrate_band " + " ".join(argv or sys.argv[1:]),
        "split": split, "calibration_blocks": int(len(calib_blocks)),
        "evaluation_blocks": int(len(test_blocks) - len(calib_blocks)),
        "band": band, "evaluation_before": before, "evaluation_after": after,
    }
    (args.model / "band.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
