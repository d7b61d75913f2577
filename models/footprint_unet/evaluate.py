"""Evaluate a shipped footprint U-Net version on the held-out evaluation split.

Example::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.footprint_unet.evaluate \
        --version-dir models/footprint_unet/v1 --data ../shared/data/footprints/xiamen-z18 --card

The evaluation split is never used for training or for choosing the threshold (that is
chosen on the validation split and read from ``config.json``). Writes
``<version-dir>/metrics.json``, prints a table and, with ``--card``, rewrites the metrics
section of the model card between its ``<!-- metrics:begin -->``/``<!-- metrics:end -->`` markers.
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

import numpy as np
import torch

from models.common.metrics import ConfusionAtThresholds
from models.footprint_unet.data import FootprintTiles
from models.footprint_unet.net import load_model, predict_proba, read_config

CARD = Path(__file__).parent / "MODEL_CARD.md"
BEGIN, END = "<!-- metrics:begin -->", "<!-- metrics:end -->"


def evaluate(version_dir: Path, data_dir: Path, split: str = "evaluation", batch_size: int = 8) -> dict[str, Any]:
    """Pixel IoU, F1, precision and recall of a version on a split at its shipped threshold.

    Also reports the scores at 0.5 and at the split's own best threshold (the latter is
    optimistic, for reference only).
    """
    # Hash and load together at the start: a running training job may export new weights
    # into the same directory while this evaluation runs.
    digest = hashlib.sha256((Path(version_dir) / "model.pt").read_bytes()).hexdigest()
    config = read_config(version_dir)
    threshold = float(config["output"]["threshold"])
    model = load_model(version_dir)
    if config.get("weights", {}).get("sha256") not in (None, digest):
        raise RuntimeError("model.pt and config.json changed during loading (training exported); retry")
    dataset = FootprintTiles(data_dir, split)
    thresholds = sorted({threshold, 0.5, *np.round(np.arange(0.05, 0.96, 0.05), 2)})
    conf = ConfusionAtThresholds(tuple(thresholds))
    per_tile_iou = []
    t0 = time.monotonic()
    for i in range(0, len(dataset), batch_size):
        items = [dataset[j] for j in range(i, min(i + batch_size, len(dataset)))]
        x = np.stack([im.numpy() for im, _ in items])
        y = np.stack([m.numpy()[0] for _, m in items])
        prob = predict_proba(model, x)
        conf.update(prob, y)
        for p, t in zip(prob >= threshold, y > 0.5):
            union = np.count_nonzero(p | t)
            if union:
                per_tile_iou.append(np.count_nonzero(p & t) / union)
    seconds = time.monotonic() - t0
    shipped = conf.scores(conf.thresholds.index(threshold))
    return {
        "model": f"{config['name']}/{config.get('version', Path(version_dir).name)}",
        "weights_sha256": digest,
        "training_step": config.get("training", {}).get("step"),
        "split": split,
        "tiles": len(dataset),
        "data": str(data_dir),
        "threshold": threshold,
        "pixel": shipped,
        "pixel_at_0.5": conf.scores(conf.thresholds.index(0.5)),
        "pixel_at_best_threshold_on_this_split_optimistic": conf.best(),
        "mean_tile_iou": float(np.mean(per_tile_iou)) if per_tile_iou else None,
        "validation_at_export": config.get("validation"),
        "seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def table(metrics: dict[str, Any]) -> str:
    """Markdown table of the headline numbers."""
    val = metrics.get("validation_at_export") or {}
    rows = [
        ("pixel IoU", metrics["pixel"]["iou"], val.get("iou")),
        ("F1", metrics["pixel"]["f1"], val.get("f1")),
        ("precision", metrics["pixel"]["precision"], val.get("precision")),
        ("recall", metrics["pixel"]["recall"], val.get("recall")),
    ]
    lines = [
        f"| metric (threshold {metrics['threshold']:.2f}) | evaluation split ({metrics['tiles']} tiles) | validation split |",
        "|---|---|---|",
    ]
    for name, ev, va in rows:
        lines.append(f"| {name} | {ev:.3f} | {'' if va is None else f'{va:.3f}'} |")
    return "\n".join(lines)


def update_card(metrics: dict[str, Any], command: str, card: Path = CARD) -> None:
    """Replace the text between the card's metrics markers with the measured table."""
    text = card.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{card} lacks {BEGIN} / {END} markers")
    body = (
        f"{table(metrics)}\n\n"
        f"Weights `model.pt` sha256 `{metrics['weights_sha256'][:16]}…`, training step "
        f"{metrics['training_step']}; mean per-tile IoU {metrics['mean_tile_iou']:.3f}; "
        f"IoU at threshold 0.5: {metrics['pixel_at_0.5']['iou']:.3f}. Evaluated "
        f"{metrics['evaluated_at']} with:\n\n```\n{command}\n```"
    )
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    card.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version-dir", type=Path, default=Path("models/footprint_unet/v1"))
    p.add_argument("--data", type=Path, default=Path("../shared/data/footprints/xiamen-z18"))
    p.add_argument("--split", default="evaluation", choices=("evaluation", "validation"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--card", action="store_true", help="write the numbers into MODEL_CARD.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    argv_used = argv if argv is not None else sys.argv[1:]
    command = "PYTHONPATH=.:services/lib .venv/bin/python -m models.footprint_unet.evaluate " + " ".join(
        shlex.quote(a) for a in argv_used
    )
    metrics = evaluate(args.version_dir, args.data, args.split)
    metrics["command"] = command
    name = "metrics.json" if args.split == "evaluation" else f"metrics_{args.split}.json"
    (args.version_dir / name).write_text(json.dumps(metrics, indent=2) + "\n")
    print(table(metrics))
    print(f"wrote {args.version_dir / name} ({metrics['seconds']} s)")
    if args.card:
        if args.split != "evaluation":
            raise SystemExit("--card only with the evaluation split")
        update_card(metrics, command)
        print(f"updated {CARD}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
