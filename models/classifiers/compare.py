"""Architecture comparison on one task: every arch, same splits, same budget, same recipe.

Usage (repository root)::

    PYTHONPATH=.:services/lib nice -n 10 .venv/bin/python -m models.classifiers.compare \
        --task roof_shape --minutes 2.5

Writes ``models/classifiers/results/<task>.json`` after every arch (a rerun skips archs already
there, so an interrupted comparison resumes), keeps each trained model under
``.train/classifiers/<task>/<arch>/`` and prints a Markdown table (``--table`` prints it from the
JSON without training). The best arch is the one with the best **validation** score (the test
split never takes part in the choice).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from models.classifiers.nets import ARCHS, PRETRAINED_ARCHS
from models.classifiers.train import TrainConfig, run

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_ARCHS = ["efficientnet_lite0", "shufflenet_v2_x1_0", "mobilenet_v3_large", "efficientnet_b0", "densenet121", "resnet50"]


def table(results: dict[str, Any]) -> str:
    """Markdown table of a comparison JSON (one row per arch, best val first)."""
    rows = sorted(results["runs"].values(), key=lambda r: -r["training"]["best_val_score"])
    multi = rows[0]["multi_label"] if rows else False
    head = ("| arch | ImageNet init | epochs (best) | val score | test macro-F1 | test micro-F1 | test mAP | ECE before→after |\n"
            "|---|---|---|---|---|---|---|---|") if multi else (
            "| arch | ImageNet init | epochs (best) | val score | test accuracy | test macro-F1 | test balanced acc. | ECE before→after |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        t, c, tr = r["test"], r["calibration"]["test"], r["training"]
        init = "yes" if tr["pretrained"] else "no (scratch)"
        if multi:
            m = f"{t['macro_f1']:.3f} | {t['micro_f1']:.3f} | {t['mean_average_precision']:.3f}"
        else:
            m = f"{t['accuracy']:.3f} | {t['macro_f1']:.3f} | {t['balanced_accuracy']:.3f}"
        lines.append(f"| {r['arch']} | {init} | {tr['epochs']} ({tr['best_epoch']}) | {tr['best_val_score']:.3f} | {m} | "
                     f"{c['ece_before']:.3f}→{c['ece_after']:.3f} |")
    return "\n".join(lines)


def per_class_table(run_result: dict[str, Any]) -> str:
    """Markdown per-class (or per-label) precision/recall/F1 table of one run's test split."""
    t = run_result["test"]
    per = t.get("per_class") or t.get("per_label")
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for c, m in per.items():
        lines.append(f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True)
    p.add_argument("--archs", default=",".join(DEFAULT_ARCHS), help=f"comma list from {sorted(ARCHS)}")
    p.add_argument("--minutes", type=float, default=2.5, help="training budget per arch")
    p.add_argument("--max-epochs", type=int, default=40)
    p.add_argument("--chip-size", type=int, default=128)
    p.add_argument("--out", default=None, help="JSON path (default results/<task>.json)")
    p.add_argument("--table", action="store_true", help="only print the table of an existing JSON")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else RESULTS / f"{args.task}.json"
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"task": args.task, "runs": {}}
    if args.table:
        print(table(results))
        return 0
    results["budget"] = {"minutes_per_arch": args.minutes, "max_epochs": args.max_epochs, "chip_size": args.chip_size,
                         "threads": 1, "pretrained_archs": sorted(PRETRAINED_ARCHS)}
    for arch in args.archs.split(","):
        if arch in results["runs"]:
            print(f"{arch}: already in {out}, skipped")
            continue
        cfg = TrainConfig(arch=arch, minutes=args.minutes, max_epochs=args.max_epochs, chip_size=args.chip_size)
        r = run(args.task, cfg, out=Path(".train/classifiers") / args.task / arch,
                command=f"python -m models.classifiers.compare --task {args.task} --minutes {args.minutes}")
        r["training"].pop("history", None)
        results["runs"][arch] = r
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=float) + "\n", encoding="utf-8")
    best = max(results["runs"].values(), key=lambda r: r["training"]["best_val_score"])
    results["best_by_val"] = best["arch"]
    out.write_text(json.dumps(results, indent=2, default=float) + "\n", encoding="utf-8")
    print(table(results))
    print(f"best by validation score: {best['arch']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
