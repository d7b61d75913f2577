"""Kept vs abstained on the demo area, before and after the calibrated, out-of-domain-scored
versions (issue 18, item 2) — without the stack.

Usage (repository root)::

    PYTHONPATH=.:services/lib nice -n 10 .venv/bin/python bench/demo_abstention.py \
        out/<demo run>/buildings.parquet [--json bench/results/demo_abstention.json]

Inputs: the demo table's 181 footprints (``building_id`` + geometry; the demo's segmentation
output) and the Xiamen z18 tiles under them (``../shared/data/footprints/xiamen-z18``),
mosaicked in Web Mercator and IQR-scaled over the whole area, as the flow's area-wide
calibration does. The roof models run in-process (the model server's ``Model`` classes,
``ModelClient`` EMBEDDED) through :func:`urbanfabric.materials.roofs.classify_roofs`; function
and age through :func:`urbanfabric.attributes.batch.predict_attributes` on the same footprints
(one batch). Run twice, the script checks that every score and call is identical.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
from PIL import Image
from rasterio.crs import CRS
from affine import Affine

REPO = Path(__file__).resolve().parents[1]
TILES = REPO.parent / "shared" / "data" / "footprints" / "xiamen-z18" / "tiles" / "18"
Z = 18
WORLD = 2 * math.pi * 6378137.0


def _tile_xy(lon: float, lat: float) -> tuple[float, float]:
    n = 2.0**Z
    s = math.sin(math.radians(lat))
    return (lon + 180.0) / 360.0 * n, (0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * n


def mosaic(bounds: tuple[float, float, float, float], pad: int = 1) -> Any:
    """The z18 tiles over ``bounds`` (lon/lat) as one IQR-scaled Raster in EPSG:3857 (NaN where absent)."""
    from urbanfabric.imagery.calibration import iqr_scale
    from urbanfabric.io.rasters import Raster

    x0, y1 = _tile_xy(bounds[0], bounds[1])
    x1, y0 = _tile_xy(bounds[2], bounds[3])
    tx0, tx1, ty0, ty1 = int(x0) - pad, int(x1) + pad, int(y0) - pad, int(y1) + pad
    w, h = (tx1 - tx0 + 1) * 256, (ty1 - ty0 + 1) * 256
    raw = np.full((3, h, w), np.nan, np.float32)
    for tx in range(tx0, tx1 + 1):
        for ty in range(ty0, ty1 + 1):
            path = TILES / str(tx) / f"{ty}.webp"
            if path.is_file():
                with Image.open(path) as img:
                    rgb = np.moveaxis(np.asarray(img.convert("RGB"), np.float32), -1, 0)
                raw[:, (ty - ty0) * 256:(ty - ty0 + 1) * 256, (tx - tx0) * 256:(tx - tx0 + 1) * 256] = rgb
    res = WORLD / (2.0**Z * 256)
    left = -WORLD / 2 + tx0 * 256 * res
    top = WORLD / 2 - ty0 * 256 * res
    valid = np.isfinite(raw).all(axis=0)
    scaled = np.full_like(raw, np.nan)
    flat = iqr_scale(np.where(valid, raw, 0.0)[:, valid][:, :, None])[:, :, 0]
    scaled[:, valid] = flat
    return Raster(scaled, Affine(res, 0, left, 0, -res, top), CRS.from_epsg(3857))


def roof_calls(footprints: gpd.GeoDataFrame, image: Any, client: Any, name: str, version: str,
               drop_imagery_guard: bool = False) -> list[Any]:
    from urbanfabric.io.model_repository import model_config
    from urbanfabric.materials.roofs import RoofTaxonomy, Taxonomy, classify_roofs

    cfg = dict(model_config(name, version))
    if drop_imagery_guard:
        cfg.pop("imagery_domain", None)

    def classify(chips: np.ndarray) -> Any:
        out = client.infer_batched_outputs(name, version, chips, batch_size=64)
        return (out["probability"], out["ood_score"]) if "ood_score" in out else out["probability"]

    default = RoofTaxonomy.load() if name == "roof-material" else None
    return classify_roofs(footprints, [("xiamen-z18 mosaic", lambda: image)], cfg, classify,
                          Taxonomy.for_model(cfg, default))


def summary(values: list[str], reasons: list[str], scores: list[float]) -> dict[str, Any]:
    unknown = [v in ("", "unknown") for v in values]
    return {"kept": int(len(values) - sum(unknown)), "abstained": int(sum(unknown)),
            "classes": dict(Counter(v for v, u in zip(values, unknown) if not u)),
            "reasons": dict(Counter((r.split(":")[0] if r else "") for r, u in zip(reasons, unknown) if u)),
            "median_ood_score": float(np.nanmedian(scores)) if np.isfinite(scores).any() else None}


def attributes(footprints: gpd.GeoDataFrame, version: str) -> Any:
    from urbanfabric.attributes.age import AgeModel
    from urbanfabric.attributes.batch import AttributeModels, predict_attributes
    from urbanfabric.attributes.function import FunctionModel
    from urbanfabric.attributes.height import HeightModel
    from urbanfabric.io.model_repository import model_dir

    models = AttributeModels(HeightModel.load(model_dir("height_xgb", "v1")),
                             FunctionModel.load(model_dir("building_function", version)),
                             AgeModel.load(model_dir("building_age", version)))
    table, _ = predict_attributes(footprints, models)
    return table


def run(table_path: Path) -> dict[str, Any]:
    import torch

    from urbanfabric.runtime.model_client import InferenceProtocol, ModelClient

    torch.set_num_threads(1)
    fps = gpd.read_parquet(table_path)[["building_id", "geometry"]].to_crs(4326)
    image = mosaic(tuple(fps.total_bounds))
    out: dict[str, Any] = {"buildings": len(fps), "table": str(table_path)}
    with ModelClient(InferenceProtocol.EMBEDDED, model_dir=REPO / "models") as client:
        for label, name, version, drop in (
            ("roof material v3 (before)", "roof-material", "v3", False),
            ("roof material v4 (after)", "roof-material", "v4", False),
            ("roof material v4, feature score only (imagery guard off)", "roof-material", "v4", True),
            ("roof shape v3 (before)", "roof-shape", "v3", False),
            ("roof shape v4 (after)", "roof-shape", "v4", False),
        ):
            calls = roof_calls(fps, image, client, name, version, drop)
            out[label] = summary([c.material for c in calls], [c.unknown_reason for c in calls],
                                 [c.ood_score for c in calls])
            out[label]["_scores"] = [None if c.ood_score != c.ood_score else round(float(c.ood_score), 6) for c in calls]
            out[label]["_calls"] = [c.material for c in calls]
    for version, when in (("v1", "before"), ("v2", "after")):
        t = attributes(fps, version)
        out[f"function {version} ({when})"] = summary(
            list(t["function"]), list(t["function_unknown_reason"]), list(t["function_ood_score"].astype(float)))
        out[f"age class {version} ({when})"] = summary(
            list(t["age_class"]), list(t["age_class_unknown_reason"]), list(t["age_class_ood_score"].astype(float)))
        out[f"function {version} ({when})"]["_scores"] = [round(float(s), 6) for s in t["function_ood_score"].astype(float)] \
            if version == "v2" else []
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", type=Path, help="a demo run's buildings.parquet (its footprints are used)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    first, second = run(args.table), run(args.table)
    same = all(first[k] == second[k] for k in first)
    first["two_runs_identical"] = same
    for k, v in first.items():
        if isinstance(v, dict):
            print(f"{k}: kept {v['kept']}, abstained {v['abstained']}, reasons {v['reasons']}, "
                  f"median score {v['median_ood_score']}, classes {v['classes']}")
    print(f"two runs identical: {same}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        slim = {k: ({kk: vv for kk, vv in v.items() if not kk.startswith("_")} if isinstance(v, dict) else v)
                for k, v in first.items()}
        args.json.write_text(json.dumps(slim, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
