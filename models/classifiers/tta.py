"""Choose a shipped classifier's test-time augmentation (TTA) on val; ship the result as a new version.

Usage (repository root)::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.classifiers.tta \
        --model models/roof_shape/v2 --task roof_shape --out models/roof_shape/v3

``--report-test`` also scores every candidate on test once the choice is made (for the record;
the choice never sees it).

Each candidate view set (:data:`models.classifiers.io.CHIP_TTA`; overhead roofs: ``none``,
``flips``, ``d4``; façade photos: ``none``, ``hflip``) is scored on the **val** split with the
training's selection score (mean of accuracy and macro-F1, or mAP). The best candidate is adopted
only when it beats ``none`` by more than one binomial standard error of that score at the val
size (``sqrt(s(1-s)/n)``): with 40–170 val images, smaller gains are noise, and TTA multiplies
inference time by the number of views. The chosen version is then calibrated again on val under
its TTA (temperature, multi-label thresholds) and scored once on test, exactly as
:func:`models.classifiers.train.assess` does after training. The weights are copied unchanged;
``config.json`` gains ``tta`` (which serving honours) and ``tta_choice`` (the val scores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.classifiers.io import CONFIG_FILE, WEIGHTS_FILE, load_classifier
from models.classifiers.train import TrainConfig, assess, logits_of, prepared_task, summary_line, val_score

#: Candidates per task: rotations and up-down flips only where the image is seen from above.
CANDIDATES = {
    "roof_material": ("none", "flips", "d4"),
    "roof_shape": ("none", "flips", "d4"),
    "facade_nyc": ("none", "hflip"),
    "facade_tokyo": ("none", "hflip"),
    "facade_both": ("none", "hflip"),
}


def train_config(config: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` a shipped version was trained with (unknown keys ignored)."""
    hp = (config.get("training") or {}).get("hyperparameters") or {}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in hp.items() if k in fields})
    # Versions shipped before chip modes existed carry the chip mode only at the top level.
    return dataclasses.replace(cfg, chip_mode=config.get("chip_mode", cfg.chip_mode),
                               chip_size=int(config.get("chip_size", cfg.chip_size)))


def choose(scores: dict[str, float], n_val: int) -> tuple[str, float]:
    """The adopted TTA and the margin it had to beat: the best score, if above ``none`` + 1 SE."""
    base = scores["none"]
    se = math.sqrt(max(base * (1 - base), 1e-12) / max(n_val, 1))
    best = max(scores, key=lambda k: (scores[k], k == "none"))
    return (best if scores[best] - base > se else "none"), se


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="shipped version folder, e.g. models/roof_shape/v2")
    p.add_argument("--task", required=True, choices=sorted(CANDIDATES))
    p.add_argument("--out", type=Path, default=None, help="new version folder (weights copied, config with tta)")
    p.add_argument("--candidates", default="", help="comma list (default: the task's valid views)")
    p.add_argument("--json", type=Path, default=None, help="write the choice and scores here")
    p.add_argument("--report-test", action="store_true",
                   help="after the choice, also score every candidate on test (reported only, never chosen on)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    command = "python -m models.classifiers.tta " + " ".join(sys.argv[1:] if argv is None else argv)

    model, config = load_classifier(args.model)
    cfg = train_config(config)
    ds, _ = prepared_task(args.task, cfg)
    if list(ds.classes) != list(config["classes"]):
        raise SystemExit(f"--task {args.task} has classes {ds.classes}, the model {config['classes']}")
    candidates = [c for c in (args.candidates or ",".join(CANDIDATES[args.task])).split(",") if c]
    if "none" not in candidates:
        candidates.insert(0, "none")
    xva, yva = ds.part("val")
    scores = {c: val_score(ds, logits_of(model, xva, cfg.chip_size, c), yva) for c in candidates}
    chosen, se = choose(scores, len(yva))
    print("val scores: " + ", ".join(f"{c} {s:.3f}" for c, s in scores.items())
          + f"; one SE {se:.3f} → {chosen}")

    cfg = dataclasses.replace(cfg, tta=chosen)
    result = assess(model, ds, cfg)
    choice = {"candidates": scores, "val_n": int(len(yva)), "standard_error": se, "chosen": chosen,
              "rule": "best val score if it beats 'none' by more than one binomial SE, else none",
              "from": str(args.model), "command": command}
    result["tta_choice"] = choice
    if args.report_test:
        xte, yte = ds.part("test")
        result["test_by_candidate"] = {c: val_score(ds, logits_of(model, xte, cfg.chip_size, c), yte)
                                       for c in candidates}
        print("test scores (reported only): " + ", ".join(
            f"{c} {v:.3f}" for c, v in result["test_by_candidate"].items()))
    print(summary_line({**result, "task": args.task, "arch": config["arch"], "multi_label": ds.multi_label}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.model / WEIGHTS_FILE, args.out / WEIGHTS_FILE)
        new = {**config, "tta": chosen, "temperature": float(model.temperature), "tta_choice": choice}
        if ds.multi_label:
            new["thresholds"] = result["thresholds"]
        (args.out / CONFIG_FILE).write_text(json.dumps(new, indent=2, default=float) + "\n", encoding="utf-8")
        old = json.loads((args.model / "metrics.json").read_text()) if (args.model / "metrics.json").exists() else {}
        metrics = {**{k: v for k, v in old.items() if k not in result}, **result}
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
