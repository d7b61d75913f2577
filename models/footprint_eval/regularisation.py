"""Raw vs regularised footprints on labelled sets: the same probability maps, polygonised both ways.

Example::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.footprint_eval.regularisation \\
        --model models/footprint_unet/v7 --datasets xiamen,crowdai,dubai,spacenet --max-scenes 3 \\
        --cache-dir /tmp/seg_cache --out /tmp/regularisation.json

Each scene's probability (the model at its stored threshold, no TTA; maps reused from
``--cache-dir`` like :mod:`models.footprint_eval`) goes through
:func:`urbanfabric.footprints.polygons.polygonize` three times, on a grid placed in UTM 50N
at the data set's nominal ground sample distance (:data:`GSD_M`, so metre tolerances mean what
they mean in a job): **raw** (Douglas–Peucker 0.75 m, today's output without regularisation),
**regularised** (``--tolerance``, no splitting) and **regularised + split** (merged neighbours
split too, the job default). The polygons are brought back to pixel coordinates and scored
against the label mask, counts summed over the scenes (micro average):

* vertices per building (exterior and holes, closing vertex not counted);
* pixel IoU of the polygons rasterised back onto the scene;
* boundary IoU (Cheng et al. 2021): IoU of the mask pixels within ``--boundary-px`` of each
  mask's contour, prediction against label;
* instance precision / recall / F1 at IoU ≥ 0.5 (:func:`models.common.metrics.match_instances`,
  label instances = the mask's 4-connected components as in :mod:`models.footprint_eval`,
  predicted instances = the polygons; SpaceNet's 20 px² filter). Touching buildings are one
  instance in a mask, which counts a correct split as an error; crowdAI and SpaceNet have their
  label polygons, so ``instance_f1_polygons`` scores against those too (:func:`label_polygons`);
* invalid polygons as the table holds them (EPSG:4326) and after reprojecting them to the metric
  grid (``invalid_metric``: rounding can turn a near-touch into a crossing), and overlapping
  pairs (intersection area above 0.01 m²);
* regularisation time per building (ms, this process's CPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio.features
import shapely
from shapely import affinity
from affine import Affine
from scipy import ndimage

from models.common.metrics import ConfusionAtThresholds, InstanceScores, mask_instances, match_instances
from models.footprint_eval.__main__ import cached_probability
from models.footprint_unet import datasets as D
from models.footprint_unet.net import load_model, read_config
from urbanfabric.footprints.polygons import DEFAULT_MIN_AREA_M2, DEFAULT_SIMPLIFY_M, polygonize

#: Nominal ground sample distance per data set (metres per pixel; see the data README). Dubai's
#: is unpublished (≈ 1.2–2 m judging by villa sizes): 1.5 m.
GSD_M = {"crowdai": 0.3, "spacenet": 0.5, "xiamen": 0.54, "dubai": 1.5}
#: A UTM 50N origin for the scene grids (any metric CRS would do).
CRS = "EPSG:32650"
ORIGIN = (500_000.0, 2_700_000.0)
OVERLAP_M2 = 0.01
VARIANTS = ("raw", "regularised", "regularised+split")


def label_polygons(dataset: str, scene: D.Scene, root: Path) -> list | None:
    """The scene's label polygons in pixel coordinates (crowdAI, SpaceNet), else ``None``."""
    from shapely.geometry import Polygon, box, shape

    if dataset == "crowdai":
        coco = json.loads((root / "crowdai" / "train" / "annotation.json").read_text())
        ids = [i["id"] for i in coco["images"] if Path(i["file_name"]).stem == scene.name]
        out = []
        for ann in coco["annotations"]:
            if ann["image_id"] in ids:
                for ring in ann["segmentation"]:
                    if len(ring) >= 6:
                        out.append(Polygon(list(zip(ring[0::2], ring[1::2]))).buffer(0))
        return out
    if dataset == "spacenet":
        import rasterio

        base = root / "spacenet-atlanta"
        with rasterio.open(base / "sample_geotiff.tif") as src:
            inv = ~src.transform
        c0, c1 = (int(v) for v in scene.name.rsplit("cols", 1)[1].split("-"))
        strip = box(0, 0, c1 - c0, scene.mask.shape[0])
        out = []
        for f in json.loads((base / "geotiff_labels.geojson").read_text())["features"]:
            if f.get("geometry"):
                px = affinity.affine_transform(shape(f["geometry"]), [inv.a, inv.b, inv.d, inv.e, inv.c - c0, inv.f])
                clipped = px.intersection(strip)
                if not clipped.is_empty:
                    out.append(clipped)
        return out
    return None


def boundary_band(mask: np.ndarray, width_px: int) -> np.ndarray:
    """Mask pixels within ``width_px`` of the mask's contour (Boundary IoU's band)."""
    m = mask.astype(bool)
    return m & ~ndimage.binary_erosion(m, iterations=width_px, border_value=0)


def overlapping_pairs(polys: list) -> int:
    """Pairs of polygons whose intersection has more than :data:`OVERLAP_M2` of area."""
    if len(polys) < 2:
        return 0
    arr = np.array(polys, dtype=object)
    left, right = shapely.STRtree(arr).query(arr, predicate="intersects")
    keep = left < right
    areas = shapely.area(shapely.intersection(arr[left[keep]], arr[right[keep]]))
    return int((areas > OVERLAP_M2).sum())


class Tally:
    """Summed counts of one variant over a data set's scenes."""

    def __init__(self) -> None:
        self.pixel = ConfusionAtThresholds((0.5,))
        self.inst = InstanceScores()
        self.inst_polygons: InstanceScores | None = None
        self.b_inter = self.b_union = 0
        self.buildings = self.vertices = self.invalid = self.invalid_metric = self.overlaps = 0
        self.seconds = 0.0

    def add(self, polys_px: list, conf: list[float], polys_m: list, truth: np.ndarray,
            truth_instances: list, boundary_px: int, seconds: float, truth_polygons: list | None = None,
            invalid_table: int = 0) -> None:
        shape = truth.shape
        pred = (rasterio.features.rasterize([(p, 1) for p in polys_px], out_shape=shape, fill=0, dtype="uint8")
                if polys_px else np.zeros(shape, np.uint8))
        self.pixel.update(pred.astype(np.float32), truth)
        self.inst = self.inst + match_instances(truth_instances, polys_px, 0.5, min_area=20, confidences=conf)
        if truth_polygons is not None:
            self.inst_polygons = (self.inst_polygons or InstanceScores()) + match_instances(
                truth_polygons, polys_px, 0.5, min_area=20, confidences=conf)
        bt, bp = boundary_band(truth, boundary_px), boundary_band(pred, boundary_px)
        self.b_inter += int((bt & bp).sum())
        self.b_union += int((bt | bp).sum())
        self.buildings += len(polys_px)
        self.vertices += int(sum(shapely.get_num_coordinates(p) - 1 - len(p.interiors) for p in polys_m))
        self.invalid += invalid_table
        self.invalid_metric += int(sum(not p.is_valid for p in polys_m))
        self.overlaps += overlapping_pairs(polys_m)
        self.seconds += seconds

    def row(self) -> dict[str, Any]:
        s = self.pixel.scores(0)
        return {"buildings": self.buildings,
                "vertices_per_building": round(self.vertices / max(self.buildings, 1), 2),
                "pixel_iou": round(float(s["iou"]), 4),
                "boundary_iou": round(self.b_inter / max(self.b_union, 1), 4),
                "instance_f1": round(self.inst.f1, 4), "instance_precision": round(self.inst.precision, 4),
                "instance_recall": round(self.inst.recall, 4),
                **({"instance_f1_polygons": round(self.inst_polygons.f1, 4)} if self.inst_polygons else {}),
                "invalid": self.invalid, "invalid_metric": self.invalid_metric, "overlapping_pairs": self.overlaps,
                "ms_per_building": round(1000 * self.seconds / max(self.buildings, 1), 2)}


def score_scene(prob: np.ndarray, scene: D.Scene, threshold: float, gsd: float, tolerance_m: float,
                boundary_px: int, tallies: dict[str, Tally], truth_instances: list,
                truth_polygons: list | None = None) -> None:
    """Polygonise one scene's probability each way and add it to ``tallies``."""
    transform = Affine(gsd, 0, ORIGIN[0], 0, -gsd, ORIGIN[1])
    to_px = ~transform
    settings = {"raw": (0.0, False), "regularised": (tolerance_m, False), "regularised+split": (tolerance_m, True)}
    for variant, (tol, split) in settings.items():
        t0 = time.process_time()
        fp = polygonize(prob, transform, CRS, threshold=threshold, min_area_m2=DEFAULT_MIN_AREA_M2,
                        simplify_tolerance_m=DEFAULT_SIMPLIFY_M, regularise_tolerance_m=tol,
                        split_touching_buildings=split)
        seconds = time.process_time() - t0
        polys_m = list(fp.to_crs(CRS).geometry)
        polys_px = [affinity.affine_transform(p, [to_px.a, to_px.b, to_px.d, to_px.e, to_px.c, to_px.f])
                    for p in polys_m]
        tallies[variant].add(polys_px, fp["footprint_confidence"].tolist(), polys_m, scene.mask,
                             truth_instances, boundary_px, seconds, truth_polygons,
                             int((~fp.geometry.is_valid).sum()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.footprint_eval.regularisation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/footprint_unet/v7", help="model version directory")
    parser.add_argument("--datasets", default="xiamen,crowdai,dubai,spacenet")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-scenes", type=int, default=0, help="first N scenes of each data set (0 = all)")
    parser.add_argument("--tolerance", type=float, default=1.0, help="regularisation tolerance (metres)")
    parser.add_argument("--boundary-px", type=int, default=2, help="Boundary IoU band width (pixels)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--data-root", type=Path, default=D.DEFAULT_ROOT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    vd = Path(args.model)
    cfg = read_config(vd)
    member = {"model": load_model(vd), "sha256": hashlib.sha256((vd / "model.pt").read_bytes()).hexdigest()}
    threshold = float(cfg["output"]["threshold"])
    report: dict[str, Any] = {
        "command": "PYTHONPATH=.:services/lib .venv/bin/python -m models.footprint_eval.regularisation "
                   + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "model": str(vd), "threshold": threshold, "tolerance_m": args.tolerance, "split": args.split,
        "boundary_px": args.boundary_px, "datasets": {}}
    for ds in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        scenes = D.load(ds, args.split, args.data_root)
        if args.max_scenes:
            scenes = scenes[:args.max_scenes]
        tallies = {v: Tally() for v in VARIANTS}
        for scene in scenes:
            prob = cached_probability(member, scene, ds, args.split, args.cache_dir)
            score_scene(prob, scene, threshold, GSD_M[ds], args.tolerance, args.boundary_px, tallies,
                        mask_instances(scene.mask), label_polygons(ds, scene, Path(args.data_root)))
        report["datasets"][ds] = {"scenes": len(scenes), "gsd_m": GSD_M[ds],
                                  **{v: t.row() for v, t in tallies.items()}}
        print(json.dumps({ds: report["datasets"][ds]}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
