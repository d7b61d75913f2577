"""Write a version folder's MODEL_CARD.md section of numbers from its config.json + metrics.json.

Usage::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.classifiers.card models/roof_shape/v1

Prints Markdown (data, command, split use, per-class test metrics, confusion matrix,
calibration); the hand-written parts of the card (intended use, limits) stay in the card.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _per_table(t: dict[str, Any]) -> list[str]:
    per = t.get("per_class") or t.get("per_label") or {}
    multi = "per_label" in t
    lines = ["| class | precision | recall | F1 | support" + (" | threshold | AP |" if multi else " |"),
             "|---|---|---|---|---" + ("|---|---|" if multi else "|")]
    for c, m in per.items():
        row = f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']}"
        if multi:
            row += f" | {m['threshold']:.2f} | {m['average_precision']:.3f} |"
        else:
            row += " |"
        lines.append(row)
    return lines


def headline(t: dict[str, Any]) -> str:
    """One line of the main numbers of a metrics block."""
    if "accuracy" in t:
        return (f"accuracy **{t['accuracy']:.3f}**, balanced accuracy {t['balanced_accuracy']:.3f}, "
                f"macro-F1 {t['macro_f1']:.3f} (n={t['n']})")
    return (f"macro-F1 **{t['macro_f1']:.3f}**, micro-F1 {t['micro_f1']:.3f}, mAP {t['mean_average_precision']:.3f}, "
            f"exact match {t['exact_match']:.3f} (n={t['n']})")


def render(model_dir: str | Path) -> str:
    """Markdown of the measured numbers of one shipped version."""
    d = Path(model_dir)
    cfg = json.loads((d / "config.json").read_text())
    m = json.loads((d / "metrics.json").read_text())
    tr = cfg.get("training", {})
    probe = tr.get("recipe") == "probe"
    init = ("ImageNet init, frozen; linear head" if probe else
            "ImageNet init + linear-probe warm start" if tr.get("pretrained") else "from scratch")
    out = [f"- Architecture: `{cfg['arch']}` ({init}), "
           f"chip {cfg['chip_size']} px, {'multi-label (sigmoid per label)' if cfg['multi_label'] else 'softmax'}, "
           f"temperature {cfg['temperature']:.3f}.",
           f"- Command: `{tr.get('command', '')}`"]
    if probe:
        cv = ", ".join(f"{float(k):g}: {v:.3f}" for k, v in tr["cv_scores"].items())
        vs = m.get("val_split", {})
        out += [f"- Data: `{tr.get('data')}`; split counts (train + val = the head's fit, C by {tr['folds']}-fold "
                f"cross-validation over both, temperature on the out-of-fold logits; test = these numbers only): "
                f"`{json.dumps(tr.get('split_counts'))}`",
                f"- Training: logistic regression on the frozen features of {tr['fit_images']} images × the "
                f"`{cfg.get('tta', 'none')}` views in {tr.get('train_s', 0):.0f} s wall (2-core CPU); CV score "
                f"(mean of accuracy and macro-F1, out of fold) per C: {cv}; chosen C = {tr['chosen_c']:g}"
                + (f"; on the val split's {vs['n']} images the out-of-fold score is {vs['score']:.3f}." if vs else ".")]
    else:
        out += [f"- Data: `{tr.get('data')}`; split counts (train = gradient steps; val = epoch choice, temperature"
                f"{', thresholds' if cfg['multi_label'] else ''}; test = these numbers only): `{json.dumps(tr.get('split_counts'))}`",
                f"- Training: {tr.get('epochs')} epochs in {tr.get('train_s', 0):.0f} s wall on a shared 2-core CPU, "
                f"best val epoch {tr.get('best_epoch')} (0 = the linear probe itself)."]
    choice = cfg.get("tta_choice")
    if choice:
        scores = ", ".join(f"`{k}` {v:.3f}" for k, v in choice["candidates"].items())
        out.append(f"- Test-time augmentation: **`{cfg.get('tta', 'none')}`** (logits averaged over the views, "
                   f"temperature refitted on them), chosen on val (n={choice['val_n']}): {scores}; "
                   f"adopted only beyond one SE ({choice['standard_error']:.3f}) over `none`. "
                   f"Command: `{choice['command']}`")
    out += ["", f"**Test**: {headline(m['test'])}", ""]
    out += _per_table(m["test"])
    cm = m["test"].get("confusion_matrix")
    if cm:
        out += ["", "Confusion matrix (rows true, columns predicted): " + ", ".join(cm["rows_true_cols_pred"]), "", "```"]
        out += [f"{c:>16s} {row}" for c, row in zip(cm["rows_true_cols_pred"], cm["matrix"])] + ["```"]
    for city, t in m.get("test_by_city", {}).items():
        out += ["", f"**Test, {city} only**: {headline(t)}", ""] + _per_table(t)
        nf = t.get("null_filter")
        if nf:
            out += ["", f"Non-building view filter ({city} test): drops {nf['dropped']} of {nf['views']} views; "
                    f"precision of dropping {nf['drop_precision']:.3f}, recall of null views {nf['drop_recall']:.3f} "
                    f"({nf['null_views']} null views); material labels lost with dropped views: {nf['material_labels_lost']}."]
    c = m["calibration"]
    out += ["", "Calibration (temperature fitted on " + ("out-of-fold train+val logits; the val row is those" if probe else "val") + "):", "", "| split | NLL before | NLL after | ECE before | ECE after |",
            "|---|---|---|---|---|"]
    for s in ("val", "test"):
        out.append(f"| {s} | {c[s]['nll_before']:.3f} | {c[s]['nll_after']:.3f} | {c[s]['ece_before']:.3f} | {c[s]['ece_after']:.3f} |")
    tax = cfg.get("taxonomy", {})
    if tax:
        out += ["", f"Taxonomy `{tax.get('name')}`: " + ", ".join(f"{k} → {v if v is not None else 'unknown'}" for k, v in tax.get("codes", {}).items())]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(sys.argv[1]))
