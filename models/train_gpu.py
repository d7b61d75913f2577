"""One command for a lent GPU: train the shipped footprint members and image classifiers under one
wall-clock budget, then measure GPU inference — so that ten minutes of a GPU go to training, not
to setting up.

    PYTHONPATH=.:services/lib python -m models.train_gpu --minutes 9 --out .train/gpu

For each member of the shipped ensemble (:data:`MEMBERS`: the recipe of ``footprint-unet`` v7,
three seeds of a U-Net on crowdAI + Dubai + SpaceNet initialised from v1) it runs
:mod:`models.footprint_unet.train_multi` on the GPU with mixed precision, large batches and
loader processes that keep the GPU fed, checkpointing (``--resume`` continues a cut-off run),
and exporting each member with its card (``config.json``: data, command, validation, device).
Then each shipped image classifier (:data:`CLASSIFIERS`: roof material, roof shape, façade
material, each with the recipe of the weights it serves) runs :func:`models.classifiers.train.run`
on the same device: mixed precision, large batches, chips augmented by loader processes, a
resumable checkpoint per epoch, the best val epoch calibrated on val, scored on test and
exported with its card (``config.json`` with command, data, device, temperature;
``metrics.json``). The classifiers get ``--classifier-share`` of the training time.
Then it benchmarks inference end to end on a real scene (IQR scaling, Hann-blended windows, the
model, blending) and reports megapixels per second and the share of time inside the model.
Everything lands under ``--out`` with ``summary.json``; nothing is shipped until the exported
members are evaluated on the CPU (``models.footprint_eval``) and validation chooses them.

On a machine without CUDA it runs on the CPU (the suite runs it for two steps of every model as
a smoke test).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.common.device import resolve_device
from models.footprint_unet import datasets as D
from models.footprint_unet import train_multi
from models.footprint_unet.net import load_model, predict_proba

LOG = logging.getLogger("models.train_gpu")

#: The members of the shipped ensemble and how each was trained (seeds of one recipe).
MEMBERS: tuple[dict[str, Any], ...] = tuple(
    {"name": f"unet_seed{seed}", "seed": seed, "datasets": "crowdai,dubai,spacenet", "weights": "1,1,0.3",
     "arch": "Unet", "target": "binary", "init_from": "models/footprint_unet/v1"}
    for seed in (0, 1, 2))

#: The shipped image classifiers, each with the recipe of the weights it serves (the
#: ``training.command`` of roof-material v2, roof-shape v2 and facade-material v1; the later
#: versions reuse those weights with calibration, ``d4`` TTA or out-of-domain scores on top).
CLASSIFIERS: tuple[dict[str, Any], ...] = (
    {"name": "roof_material", "task": "roof_material", "config": {}},
    {"name": "roof_shape", "task": "roof_shape",
     "config": {"probe_views": 1, "lr_pretrained": 2e-4, "chip_mode": "context", "tta": "d4"}},
    {"name": "facade_material", "task": "facade_both", "config": {"probe_views": 2, "lr_pretrained": 2e-4}},
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, required=True, help="wall-clock budget for everything")
    p.add_argument("--out", type=Path, default=Path(".train/gpu"))
    p.add_argument("--members", type=int, default=len(MEMBERS), help="train the first N members")
    p.add_argument("--classifiers", type=int, default=len(CLASSIFIERS), help="train the first N image classifiers")
    p.add_argument("--classifier-share", type=float, default=0.25,
                   help="share of the training time for the classifiers (all of it without members)")
    p.add_argument("--classifier-batch-size", type=int, default=0, help="default: 128 on CUDA, 32 on the CPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=0, help="default: 64 on CUDA, 4 on the CPU")
    p.add_argument("--loader-workers", type=int, default=-1, help="default: 8 on CUDA, 0 on the CPU")
    p.add_argument("--bench-minutes", type=float, default=1.0, help="kept for the inference benchmark")
    p.add_argument("--bench-px", type=int, default=2048, help="side of the benchmark scene crop")
    p.add_argument("--val-limit", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=0, help="steps per member (smoke tests)")
    p.add_argument("--resume", action="store_true")
    return p.parse_args(argv)


def member_argv(member: dict[str, Any], args: argparse.Namespace, minutes: float, device: torch.device) -> list[str]:
    """The train_multi command line of one member."""
    cuda = device.type == "cuda"
    out = args.out / member["name"]
    argv = ["--datasets", member["datasets"], "--weights", member["weights"], "--arch", member["arch"],
            "--target", member["target"], "--init-from", member["init_from"], "--seed", str(member["seed"]),
            "--out", str(out / "export"), "--ckpt-dir", str(out), "--minutes", f"{minutes:.3f}",
            "--ckpt-minutes", f"{max(minutes / 3, 0.5):.3f}", "--device", str(device),
            "--batch-size", str(args.batch_size or (64 if cuda else 4)),
            "--loader-workers", str(args.loader_workers if args.loader_workers >= 0 else (8 if cuda else 0)),
            "--threads", "2"]
    if member.get("encoder"):  # default lite0; lite2 or geoembed-v3 (docs/results.md "Footprint encoders")
        argv += ["--encoder", member["encoder"]]
    if args.val_limit:
        argv += ["--val-limit", str(args.val_limit)]
    if args.max_steps:
        argv += ["--max-steps", str(args.max_steps)]
    if args.resume:
        argv.append("--resume")
    return argv


def train_classifier(spec: dict[str, Any], args: argparse.Namespace, minutes: float,
                     device: torch.device) -> dict[str, Any]:
    """Train, calibrate, score and export one image classifier; its summary entry."""
    from models.classifiers.train import TrainConfig, run, summary_line

    cuda = device.type == "cuda"
    cfg = TrainConfig(**{**spec["config"], "minutes": minutes, "device": str(device), "amp": "auto",
                         "batch_size": args.classifier_batch_size or (128 if cuda else 32),
                         "loader_workers": args.loader_workers if args.loader_workers >= 0 else (8 if cuda else 0),
                         "max_steps": args.max_steps})
    out = args.out / spec["name"]
    command = (f"python -m models.train_gpu (classifier {spec['name']}): python -m models.classifiers.train "
               f"--task {spec['task']} " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in asdict(cfg).items()))
    result = run(spec["task"], cfg, out / "export", command=command, log=LOG.info, ckpt_dir=out, resume=args.resume)
    return {"name": spec["name"], "task": spec["task"], "summary": summary_line(result),
            "best_val_score": result["training"]["best_val_score"], "steps": result["training"]["steps"],
            "export": str(out / "export")}


def bench_inference(version_dir: Path, device: torch.device, side: int) -> dict[str, Any]:
    """Megapixels per second of one exported member over a real scene crop, end to end, and the
    share of that time spent in the model's forward passes."""
    from urbanfabric.footprints.windows import predict_tiled
    from urbanfabric.imagery.calibration import iqr_scale

    scenes = [s for name in ("dubai", "xiamen", "crowdai") for s in D.load(name, "val")]
    if scenes:
        # The largest real scene, repeated to the benchmark's size (real texture, any size).
        big = max(scenes, key=lambda s: s.pixels).image
        reps = (1, -(-side // big.shape[1]), -(-side // big.shape[2]))
        image = np.tile(big, reps)[:, :side, :side]
    else:
        image = np.random.default_rng(0).random((3, side, side)).astype(np.float32)
    model = load_model(version_dir).to(device)
    in_model = [0.0]

    def forward(batch: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = predict_proba(model, batch, batch_size=8)
        if device.type == "cuda":
            torch.cuda.synchronize()
        in_model[0] += time.perf_counter() - t0
        return out

    predict_tiled(iqr_scale(image[:, :512, :512]), forward, window=512, overlap=64, batch_size=8)  # warm-up
    in_model[0] = 0.0
    t0 = time.perf_counter()
    predict_tiled(iqr_scale(image), forward, window=512, overlap=64, batch_size=8)
    wall = time.perf_counter() - t0
    mpx = image.shape[1] * image.shape[2] / 1e6
    return {"version": str(version_dir), "device": str(device), "scene_px": list(image.shape[1:]),
            "seconds": round(wall, 3), "mpx_per_s": round(mpx / wall, 3),
            "share_in_model": round(in_model[0] / wall, 3)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    members = MEMBERS[: args.members]
    classifiers = CLASSIFIERS[: args.classifiers]
    train_minutes = max(args.minutes - args.bench_minutes, 0.1)
    share = (args.classifier_share if members else 1.0) if classifiers else 0.0
    per_member = train_minutes * (1 - share) / max(len(members), 1)
    per_classifier = train_minutes * share / max(len(classifiers), 1)
    summary: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "minutes": args.minutes,
                               "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                               "members": [], "classifiers": [], "inference": []}
    for member in members:
        t0 = time.monotonic()
        margv = member_argv(member, args, per_member, device)
        LOG.info("member %s: python -m models.footprint_unet.train_multi %s", member["name"], " ".join(margv))
        rc = train_multi.main(margv)
        export = args.out / member["name"] / "export"
        summary["members"].append({"name": member["name"], "rc": rc, "minutes": round((time.monotonic() - t0) / 60, 2),
                                   "export": str(export) if (export / "config.json").is_file() else None})
    for spec in classifiers:
        t0 = time.monotonic()
        LOG.info("classifier %s: %.2f min", spec["name"], per_classifier)
        try:
            entry = train_classifier(spec, args, per_classifier, device)
        except Exception as e:  # one failed task must not cost the others their GPU minutes
            LOG.exception("classifier %s failed", spec["name"])
            entry = {"name": spec["name"], "task": spec["task"], "error": f"{type(e).__name__}: {e}", "export": None}
        entry["minutes"] = round((time.monotonic() - t0) / 60, 2)
        summary["classifiers"].append(entry)
    for m in summary["members"]:
        if m["export"]:
            summary["inference"].append(bench_inference(Path(m["export"]), device, args.bench_px))
            break  # the members share one architecture: one benchmark is the cost of each
    summary["wall_minutes"] = round((time.monotonic() - start) / 60, 2)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    LOG.info("summary: %s", json.dumps(summary))
    ok = all(m["rc"] == 0 for m in summary["members"]) and all("error" not in c for c in summary["classifiers"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
