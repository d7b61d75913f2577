"""Score footprint models — single versions and their ensemble — per data set and split.

Example::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.footprint_eval \
        --models models/footprint_unet/v2 models/footprint_deeplab/v1 \
        --datasets crowdai,dubai,spacenet --splits test --min-votes 2 --out /tmp/eval.json

For every scene of a split (see :mod:`models.footprint_unet.datasets`) each model predicts a
whole-scene probability (IQR scaling per scene, Hann-blended 512 px windows, as in the
pipeline) which is cut at the threshold in the model's ``config.json`` (chosen on validation
data, never on the split being scored). Reported per data set, split and model:

* pixel IoU / F1 / precision / recall, counts summed over the split (micro average);
* instance precision / recall / F1 at IoU ≥ 0.5 (the SpaceNet metric,
  :func:`models.common.metrics.match_instances`): true instances are the 4-connected
  components of the label mask (touching buildings in a label mask become one instance),
  predicted instances those of the predicted mask; instances under ``--min-area-px`` (20 px²,
  as SpaceNet) are ignored on both sides.

``--tta flips|d4`` predicts every window under 4 or 8 flipped/rotated views and averages them
(:func:`urbanfabric.footprints.tta.with_tta`). Because averaging smooths the probability, the
model's stored threshold (chosen without TTA) may no longer be the best cut:
``--threshold-from val`` re-picks each member's threshold on the val splits of the listed data
sets the model was validated on in training (``validation.per_dataset`` of its config; else the
listed data sets), max mean pixel IoU over data sets as training does, under the same TTA, so the split
being scored still never chooses anything.

With two or more ``--models`` their ensemble is scored as ``ensemble`` too, combined by
``--combine`` (:mod:`urbanfabric.footprints.ensemble`): ``vote`` (GBM; building where ≥ ``--min-votes``
members agree, each at its own threshold) or ``mean`` (the members' probabilities averaged, cut
at the mean of their thresholds as the segmentation service does, or with ``--threshold-from val
--ensemble-threshold val`` at a threshold picked for the mean map itself on the same val splits).

``--grid z16-1024|model|<gsd>`` reads every scene through the pipeline's own tile grid and
resampling first (:mod:`models.footprint_eval.pipeline_grid`: before issue 20 item 0, now, or
at a given GSD) and scores the answer on the scene's own pixels; ``native`` (the default)
scores the scenes as published. Each score carries a 95 % bootstrap interval over scenes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dataclasses import dataclass

import numpy as np
import torch

from models.common.metrics import ConfusionAtThresholds, InstanceScores, mask_instances, match_instances
from models.footprint_eval import pipeline_grid as G
from models.footprint_unet import datasets as D
from models.footprint_unet.net import load_model, read_config
from models.footprint_unet.train import THRESHOLDS
from models.footprint_unet.train_multi import pick_threshold, scene_probability
from urbanfabric.footprints.ensemble import EnsembleCombine, combine, mean_probability
from urbanfabric.footprints.tta import TTA

ENSEMBLE = "ensemble"


@dataclass(frozen=True)
class Grid:
    """How scenes reach the model when not ``native``: ``name`` as ``--grid`` says it, the
    GSD the ``model`` grid follows (the first member's ``input.gsd_m``: one raster for every
    member, as the pipeline reads an ensemble), the shared data folder."""

    name: str
    gsd_m: float | None
    root: Path
    range_m: tuple[float, float] | None = None

    @property
    def label(self) -> str:
        return self.name if self.name != G.MODEL else f"model-{self.gsd_m}-{self.range_m}"


def member_name(version_dir: Path) -> str:
    """``footprint_unet/v2`` from a version directory."""
    cfg = read_config(version_dir)
    return f"{cfg.get('name', version_dir.parent.name)}/{cfg.get('version', version_dir.name)}"


def score_mask(
    pred: np.ndarray, truth: np.ndarray, min_area_px: float, truth_instances: list | None = None
) -> tuple[ConfusionAtThresholds, InstanceScores]:
    """Pixel confusion and SpaceNet instance counts of one binary prediction.

    ``truth_instances`` (the label mask's components) can be passed to reuse them across models.
    """
    conf = ConfusionAtThresholds((0.5,))
    conf.update(pred.astype(np.float32), truth)
    if truth_instances is None:
        truth_instances = mask_instances(truth)
    inst = match_instances(truth_instances, mask_instances(pred), iou_threshold=0.5, min_area=min_area_px)
    return conf, inst


def grid_probability(member: dict[str, Any], scene: D.Scene, tta: TTA, grid: Grid | None) -> np.ndarray:
    """A member's probability on the scene's pixels: predicted on the scene itself, or on the
    pipeline's grid and brought back (:mod:`models.footprint_eval.pipeline_grid`)."""
    if grid is None:
        return scene_probability(member["model"], scene, tta)
    gridded, on_grid, raster = G.gridded_scene(scene, grid.root, grid.name, grid.gsd_m, grid.range_m)
    return G.back_to_scene(scene_probability(member["model"], gridded, tta), on_grid, raster)


def cached_probability(member: dict[str, Any], scene: D.Scene, dataset: str, split: str,
                       cache_dir: Path | None, tta: TTA = TTA.NONE, grid: Grid | None = None) -> np.ndarray:
    """A member's scene probability, reused from ``cache_dir`` when the same weights scored it.

    The cache key includes the weights' sha256 (and the TTA and grid), so retrained weights
    never reuse old maps.
    """
    if cache_dir is None:
        return grid_probability(member, scene, tta, grid)
    key = member["sha256"][:16] + ("" if tta is TTA.NONE else f"-tta-{tta.value}") + \
        ("" if grid is None else f"-grid-{grid.label}")
    path = cache_dir / key / dataset / split / (scene.name.replace("/", "_") + ".npy")
    if path.exists():
        return np.load(path).astype(np.float32)
    prob = grid_probability(member, scene, tta, grid)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, prob.astype(np.float16))
    return prob


def val_threshold(members: list[dict[str, Any]], val: dict[str, list[D.Scene]], datasets: list[str],
                  cache_dir: Path | None, tta: TTA, grid: Grid | None = None) -> dict[str, Any]:
    """The threshold re-picked on the val scenes of ``datasets`` (those that have some).

    One member: its own probability. Several: the mean of their probabilities (the ``mean``
    ensemble's map).
    """
    confs = {}
    for ds in datasets:
        scenes = val.get(ds)
        if not scenes:
            continue
        conf = ConfusionAtThresholds(THRESHOLDS)
        for scene in scenes:
            probs = [cached_probability(m, scene, ds, "val", cache_dir, tta, grid) for m in members]
            prob = probs[0] if len(probs) == 1 else mean_probability(probs)
            conf.update(prob, scene.mask)
        confs[ds] = conf
    if not confs:
        raise SystemExit(f"--threshold-from val: none of {datasets} has a val split")
    return pick_threshold(confs)


def record_thresholds(report: dict[str, Any]) -> list[Path]:
    """Write each member's val-picked threshold under the report's TTA into its ``config.json``.

    ``output.threshold_by_tta[<tta>]`` is what the segmentation service cuts at when a job asks
    for that TTA (``urbanfabric.footprints.tile_segmentation.model_threshold``); the command that chose it
    goes along. Only thresholds picked on val (``--threshold-from val``) under a TTA are
    recorded: the plain one is the training run's own.
    """
    if report["tta"] == TTA.NONE.value:
        raise SystemExit("--record-threshold: the plain threshold is the training run's; give --tta")
    written = []
    for m in report["members"]:
        if m["threshold_from"] != "val":
            raise SystemExit("--record-threshold needs --threshold-from val")
        path = Path(m["dir"]) / "config.json"
        cfg = json.loads(path.read_text())
        out = cfg.setdefault("output", {})
        out.setdefault("threshold_by_tta", {})[report["tta"]] = m["threshold"]
        out.setdefault("threshold_by_tta_chosen_on", {})[report["tta"]] = {
            "val_iou": m.get("val_iou"), "rule": "val splits, max mean pixel IoU over data sets",
            "command": report["command"], "at": report["evaluated_at"]}
        path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def evaluate(
    version_dirs: list[Path], datasets: list[str], splits: list[str], root: Path,
    min_votes: int | None = None, min_area_px: float = 20.0, cache_dir: Path | None = None,
    tta: TTA | str = TTA.NONE, threshold_from: str = "config",
    how: EnsembleCombine | str = EnsembleCombine.VOTE, ensemble_threshold: str = "members",
    grid: str = G.NATIVE,
) -> dict[str, Any]:
    """Scores nested as ``[dataset][split][model or "ensemble"]``.

    Args:
        version_dirs: shipped model versions (``config.json`` + ``model.pt``).
        datasets: data set names.
        splits: split names (``test``, ``val``, ``train``).
        root: the shared ``footprints`` folder.
        min_votes: k of the ensemble vote (default: a majority, ``N // 2 + 1``; GBM uses 2 of 4).
        min_area_px: instance area filter in pixels².
        cache_dir: keep each member's probability maps here (fp16) to re-score without inference.
        tta: test-time augmentation of every member (a :class:`~urbanfabric.footprints.tta.TTA` name).
        threshold_from: ``config`` (the model's stored threshold) or ``val`` (re-picked on the
            val splits under ``tta``; for a ``mean`` ensemble, its own threshold too).
        how: how the ensemble combines its members (``vote`` or ``mean``).
        ensemble_threshold: cut of a ``mean`` ensemble: ``members`` (the mean of the members'
            thresholds, what the segmentation service does) or ``val`` (picked for the mean map
            on the val splits; needs ``threshold_from="val"``).
        grid: ``native`` (the scenes as published) or the pipeline's grid the scenes are read
            onto first (:mod:`models.footprint_eval.pipeline_grid`: ``z16-1024``, ``model`` or a GSD).
    """
    tta = TTA.parse(tta)
    how = EnsembleCombine.parse(how)
    members = []
    for vd in version_dirs:
        digest = hashlib.sha256((vd / "model.pt").read_bytes()).hexdigest()
        cfg = read_config(vd)
        name = member_name(vd)
        if any(m["name"] == name for m in members):
            name = f"{name}#{len(members)}"
        members.append({"name": name, "dir": str(vd), "model": load_model(vd),
                        "threshold": float(cfg["output"]["threshold"]), "sha256": digest,
                        "step": cfg.get("training", {}).get("step"), "threshold_from": "config",
                        "val_datasets": sorted((cfg.get("validation") or {}).get("per_dataset", {})),
                        "gsd_m": (cfg.get("input") or {}).get("gsd_m"),
                        "gsd_range_m": (cfg.get("input") or {}).get("gsd_range_m")})
    first = members[0]
    on_grid = None if grid == G.NATIVE else \
        Grid(grid, first["gsd_m"], root, tuple(first["gsd_range_m"]) if first["gsd_range_m"] else None)
    if threshold_from == "val":
        # Val scenes read once for every member (whole dubai images are tens of megapixels).
        wanted = sorted({ds for m in members for ds in (m["val_datasets"] or datasets)})
        val = {ds: D.load(ds, "val", root) for ds in wanted}
        for m in members:
            # The data sets the model was validated on when trained (its config says which), so
            # the re-picked threshold answers the same question as the stored one.
            picked = val_threshold([m], val, m["val_datasets"] or datasets, cache_dir, tta, on_grid)
            m.update(threshold=float(picked["threshold"]), threshold_from="val",
                     val_iou={ds: round(v["iou"], 4) for ds, v in picked["per_dataset"].items()})
    k = min_votes or (len(members) // 2 + 1)
    ensemble: dict[str, Any] = {"combine": how.value} if len(members) > 1 else {}
    if ensemble and how is EnsembleCombine.VOTE:
        ensemble["min_votes"] = k
    elif ensemble:
        ensemble.update(threshold=None, threshold_from="mean of the members' thresholds")
        if threshold_from == "val" and ensemble_threshold == "val":
            union = sorted({ds for m in members for ds in (m["val_datasets"] or datasets)})
            picked = val_threshold(members, val, union, cache_dir, tta, on_grid)
            ensemble.update(threshold=float(picked["threshold"]), threshold_from="val",
                            val_iou={ds: round(v["iou"], 4) for ds, v in picked["per_dataset"].items()})
    out: dict[str, Any] = {}
    for ds in datasets:
        for split in splits:
            scenes = D.load(ds, split, root)
            if not scenes:
                continue
            acc: dict[str, list] = {}
            per_scene: dict[str, list[tuple[int, int, int]]] = {}
            t0 = time.monotonic()
            for scene in scenes:
                probs = [cached_probability(m, scene, ds, split, cache_dir, tta, on_grid) for m in members]
                preds = {m["name"]: np.nan_to_num(p, nan=0.0) >= m["threshold"] for m, p in zip(members, probs)}
                if len(members) > 1:
                    joint, thr = combine(probs, [m["threshold"] for m in members], how, k,
                                         ensemble.get("threshold"))
                    preds[ENSEMBLE] = np.nan_to_num(joint, nan=0.0) >= thr
                truth_instances = mask_instances(scene.mask)
                for name, pred in preds.items():
                    conf, inst = score_mask(pred, scene.mask, min_area_px, truth_instances)
                    per_scene.setdefault(name, []).append((int(conf.tp[0]), int(conf.fp[0]), int(conf.fn[0])))
                    if name in acc:
                        c, i = acc[name]
                        for a in ("tp", "fp", "fn", "tn"):
                            getattr(c, a)[:] += getattr(conf, a)
                        acc[name] = [c, i + inst]
                    else:
                        acc[name] = [conf, inst]
            entry = {"scenes": len(scenes), "pixels": int(sum(s.pixels for s in scenes)),
                     "building_share": float(sum(int(s.mask.sum()) for s in scenes) / sum(s.pixels for s in scenes)),
                     "seconds": round(time.monotonic() - t0, 1), "models": {}}
            for name, (conf, inst) in acc.items():
                px = conf.scores(0)
                entry["models"][name] = {"pixel": {key: px[key] for key in ("iou", "f1", "precision", "recall")},
                                         "iou_ci95_scenes": G.bootstrap_iou(per_scene[name]),
                                         "instance_iou50": inst.as_dict()}
            out.setdefault(ds, {})[split] = entry
    keys = ("name", "dir", "threshold", "threshold_from", "val_datasets", "val_iou", "sha256", "step", "gsd_m", "gsd_range_m")
    return {"members": [{key: m[key] for key in keys if key in m} for m in members], "tta": tta.value,
            "grid": grid if on_grid is None else on_grid.label,
            "min_votes": k if len(members) > 1 and how is EnsembleCombine.VOTE else None,
            "ensemble": ensemble or None, "min_area_px": min_area_px, "results": out}


def table(report: dict[str, Any]) -> str:
    """Markdown table: one row per data set, split and model."""
    lines = [f"grid: {report.get('grid', G.NATIVE)}",
             "| data set | split | scenes (Mpx) | model | pixel IoU (95 % CI over scenes) | F1 | precision | recall | instance F1@0.5 (TP/FP/FN) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for ds, splits in report["results"].items():
        for split, e in splits.items():
            for name, r in e["models"].items():
                px, ins = r["pixel"], r["instance_iou50"]
                lo, hi = r.get("iou_ci95_scenes", (float("nan"), float("nan")))
                lines.append(
                    f"| {ds} | {split} | {e['scenes']} ({e['pixels'] / 1e6:.2f}) | {name} | {px['iou']:.3f} "
                    f"[{lo:.3f}, {hi:.3f}] | "
                    f"{px['f1']:.3f} | {px['precision']:.3f} | {px['recall']:.3f} | "
                    f"{ins['f1']:.3f} ({ins['tp']}/{ins['fp']}/{ins['fn']}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, nargs="+", default=[Path("models/footprint_unet/v1")])
    p.add_argument("--datasets", default="crowdai,dubai,spacenet,xiamen")
    p.add_argument("--splits", default="test")
    p.add_argument("--root", type=Path, default=D.DEFAULT_ROOT)
    p.add_argument("--min-votes", type=int, default=None, help="k of --combine vote (default: a majority)")
    p.add_argument("--combine", choices=[c.value for c in EnsembleCombine], default="vote",
                   help="ensemble of several --models: vote (GBM, k of N) or mean probability")
    p.add_argument("--ensemble-threshold", choices=("members", "val"), default="members",
                   help="cut of a mean ensemble: the mean of the members' thresholds (as the service), "
                        "or picked on val (with --threshold-from val)")
    p.add_argument("--min-area-px", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--cache-dir", type=Path, default=None, help="reuse/keep probability maps (fp16 .npy)")
    p.add_argument("--tta", choices=[t.value for t in TTA], default="none",
                   help="test-time augmentation: " + ", ".join(t.value for t in TTA))
    p.add_argument("--threshold-from", choices=("config", "val"), default="config",
                   help="each member's threshold: its config's, or re-picked on the val splits under --tta")
    p.add_argument("--record-threshold", action="store_true",
                   help="write each member's val-picked threshold under --tta into its config.json "
                        "(output.threshold_by_tta), which the segmentation service uses for that TTA")
    p.add_argument("--grid", default=G.NATIVE,
                   help="score the scenes as published (native) or read through the pipeline's grid first: "
                        "z16-1024 (before issue 20 item 0: 1024 px per zoom-16 tile, nearest), model (the "
                        "first model's input.gsd_m, auto resampling) or a GSD in metres (e.g. 0.4)")
    args = p.parse_args(argv)
    if args.grid not in (G.NATIVE, G.BEFORE, G.MODEL):
        try:
            float(args.grid.split(":")[0])
        except ValueError:
            p.error(f"--grid: native, {G.BEFORE}, {G.MODEL} or a GSD in metres, got {args.grid!r}")
    if args.record_threshold and (args.tta == TTA.NONE.value or args.threshold_from != "val"):
        p.error("--record-threshold needs --tta (not none) and --threshold-from val")
    if args.ensemble_threshold == "val" and (args.combine != "mean" or args.threshold_from != "val"):
        p.error("--ensemble-threshold val needs --combine mean and --threshold-from val")
    torch.set_num_threads(args.threads)
    command = "PYTHONPATH=.:services/lib .venv/bin/python -m models.footprint_eval " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    report = evaluate(args.models, [d for d in args.datasets.split(",") if d],
                      [s for s in args.splits.split(",") if s], args.root, args.min_votes, args.min_area_px,
                      args.cache_dir, args.tta, args.threshold_from, args.combine, args.ensemble_threshold,
                      args.grid)
    report["command"] = command
    report["evaluated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if args.record_threshold:
        for path in record_thresholds(report):
            print(f"recorded the {report['tta']} threshold in {path}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    for m in report["members"]:
        print(f"{m['name']}: threshold {m['threshold']} ({m['threshold_from']}), tta {report['tta']}")
    if report["ensemble"]:
        print(f"ensemble: {report['ensemble']}")
    print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
