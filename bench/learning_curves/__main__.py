"""Run learning curves, or draw them (issue 21, item 5).

    python -m bench.learning_curves roof_shape roof_material [--seeds 5] [--ks 0,25,50,100,200]
    python -m bench.learning_curves --figure

Each ATTRIBUTE names a module ``bench.learning_curves.<attribute>`` with
``experiment(ks, seeds) -> core.Experiment`` (imported by name: a new attribute needs only its
module); its result goes to ``bench/results/learning_curves_<attribute>.json`` and its table
is printed. ``--figure`` draws ``docs/img/learning_curves.png`` from every such result file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from bench.learning_curves import core

RESULT_PREFIX = "learning_curves_"
FIGURE = Path(__file__).resolve().parents[2] / "docs" / "img" / "learning_curves.png"
#: How each metric is labelled on the figure's y axis.
METRIC_LABELS = {"accuracy": "test accuracy (share of buildings correct)", "mae": "test MAE",
                 "iou": "test pixel IoU"}
#: Units of a numeric attribute's error, for its axis.
UNITS = {"height": "m", "year_built": "years"}


def attribute_module(attribute: str) -> Any:
    """``bench.learning_curves.<attribute>``, with a clear error when there is none."""
    if not attribute.isidentifier() or attribute.startswith("_") or attribute == "core":
        raise SystemExit(f"attribute: {attribute!r} is not an attribute module name")
    try:
        module = importlib.import_module(f"bench.learning_curves.{attribute}")
    except ModuleNotFoundError as e:
        if e.name != f"bench.learning_curves.{attribute}":
            raise
        raise SystemExit(f"attribute: no experiment bench/learning_curves/{attribute}.py") from None
    if not hasattr(module, "experiment"):
        raise SystemExit(f"attribute: bench/learning_curves/{attribute}.py has no experiment()")
    return module


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ks: {text!r} is not a comma list of label counts") from None
    if not ks or any(k < 0 for k in ks):
        raise argparse.ArgumentTypeError(f"--ks: {text!r}: give label counts ≥ 0")
    return tuple(sorted(set(ks)))


def run_attribute(attribute: str, ks: tuple[int, ...], seeds: int, command: str) -> dict[str, Any]:
    from bench._util import save

    exp = attribute_module(attribute).experiment(ks=ks, seeds=tuple(range(seeds)))
    result = core.run(exp, progress=lambda s: print(s, flush=True))
    result["command"] = command
    result["labels_for_half_the_best_gain"] = core.labels_for_gain(result["summary"], result["kind"])
    save(f"{RESULT_PREFIX}{attribute}", result)
    print(f"\n### {attribute}\n\n{core.markdown(result)}\n", flush=True)
    return result


def results(folder: Path | None = None) -> list[dict[str, Any]]:
    """Every saved learning-curve result, by attribute name: ``learning_curves_<attribute>.json``
    only (variants such as ``…_fold0`` or a recipe search are reported in the docs, not drawn)."""
    from bench._util import RESULTS
    from urbanfabric.outputs.review import ATTRIBUTES

    folder = folder or RESULTS
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"{RESULT_PREFIX}*.json"))
            if p.stem[len(RESULT_PREFIX):] in ATTRIBUTES]


def figure(found: list[dict[str, Any]], path: Path = FIGURE) -> Path:
    """One panel per attribute: the primary metric against k, both arms as mean ± sd bands
    over the seeds, the parent at k = 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not found:
        raise SystemExit(f"--figure: no {RESULT_PREFIX}*.json results to draw")
    cols = min(3, len(found))
    rows = (len(found) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(max(5.2 * cols, 6.0), 4.0 * rows + 0.6), squeeze=False)
    style = {"uncertainty": ("tab:red", "uncertainty-selected (review order)"),
             "random": ("tab:blue", "random-selected")}
    for ax, res in zip(axes.flat, found):
        metric, higher = core.primary_metric(res["kind"])
        summary = res["summary"]
        k = np.array([r["k"] for r in summary])
        for arm, (colour, label) in style.items():
            m = np.array([r[arm]["mean"] for r in summary])
            sd = np.array([r[arm]["sd"] for r in summary])
            ax.plot(k, m, "o-", color=colour, label=label, lw=1.6, ms=4)
            ax.fill_between(k, m - sd, m + sd, color=colour, alpha=0.15, lw=0)
        ax.plot([0], [summary[0]["uncertainty"]["mean"]], "ks", ms=7, label="served parent (k = 0)")
        unit = UNITS.get(res["attribute"], "")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric) + (f" ({unit})" if unit else "")
                      + (" ↑" if higher else " ↓"))
        ax.set_xlabel("labels used to fine-tune (k buildings)")
        seeds = len({r["seed"] for r in res["records"]})
        # A set-up may describe its parent at length ("NYC only: python -m …"): keep its name.
        parent = str(res["setup"].get("parent", ""))
        parent = parent.split(":")[0] if " " in parent else parent
        ax.set_title(f"{res['attribute']} ({parent}; "
                     f"test n={res['test']}, {seeds} seeds)", fontsize=9)
        ax.set_xticks(k)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(found):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8, loc="best")
    fig.suptitle("Learning curves: uncertainty- vs random-selected labels\n(mean ± sd over seeds; ↑ / ↓: higher / lower is better)",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.learning_curves", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("attributes", nargs="*", help="attribute modules to run (roof_shape, roof_material, ...)")
    p.add_argument("--seeds", type=int, default=len(core.SEEDS), help="seeds per (arm, k), 0..N-1")
    p.add_argument("--ks", type=parse_ks, default=core.KS, help="label budgets, comma list")
    p.add_argument("--figure", action="store_true", help=f"draw {FIGURE.relative_to(FIGURE.parents[2])}")
    args = p.parse_args(argv)
    if not args.attributes and not args.figure:
        p.error("name at least one attribute, or --figure")
    if args.seeds < 1:
        p.error("--seeds: at least 1")
    command = "python -m bench.learning_curves " + " ".join(sys.argv[1:] if argv is None else argv)
    for module in args.attributes:
        attribute_module(module)  # every name checked before the first long run
    for attribute in args.attributes:
        run_attribute(attribute, args.ks, args.seeds, command)
    if args.figure:
        print(f"wrote {figure(results())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
