"""Choose a tabular fine-tune's recipe on the pool only (issue 21, item 5): never on the test set.

The experiment's pool is cut by place (whole ``--cell-m`` squares, half of the cells by seed)
into a *tune* part, from which both arms pick ``k`` labels as in the curve, and a *validation*
part that scores each recipe. The recipe is the fine-tune module's constants (``ROUNDS``,
``ETA``, ``MAX_DEPTH``, ``MIN_CHILD_WEIGHT``); the rule: the lowest validation MAE averaged over
both arms, the ``k``\\ s and the seeds. The test set is not read.

    PYTHONPATH=.:services/lib OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python -m bench.learning_curves.recipe_search year_built
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import time
from dataclasses import replace
from typing import Any

import numpy as np

from bench.learning_curves import core

GRID: dict[str, tuple[Any, ...]] = {"ROUNDS": (10, 30, 100), "ETA": (0.02, 0.05, 0.15), "MAX_DEPTH": (1, 2, 3)}


def tune_and_validation(exp: core.Experiment, cell_m: float, seed: int) -> core.Experiment:
    """The experiment with its pool's tune part as the pool and its validation part as the test."""
    from models.common.tabular_domain import halves

    pool = exp.pool
    cells = np.array([f"{int(np.floor(a / cell_m))}:{int(np.floor(b / cell_m))}" for a, b in zip(pool.x_m, pool.y_m)])
    val = halves(cells, np.ones(len(pool), dtype=bool), seed=seed)
    return replace(exp, pool=pool.subset(~val), test=pool.subset(val),
                   setup={"tune": int((~val).sum()), "validation": int(val.sum()),
                          "cells": f"{cell_m:.0f} m, {len(np.unique(cells[val]))} validation cells"})


def search(exp: core.Experiment, ks: tuple[int, ...], seeds: tuple[int, ...], cell_m: float,
           grid: dict[str, tuple[Any, ...]] = GRID, split_seed: int = 1) -> dict[str, Any]:
    """Every recipe of ``grid`` on the pool's validation part; the chosen one (module docstring)."""
    sub = replace(tune_and_validation(exp, cell_m, split_seed), ks=(0, *ks), seeds=seeds)
    module = exp.code
    saved = {name: getattr(module, name) for name in grid}
    rows = []
    try:
        for values in itertools.product(*grid.values()):
            recipe = dict(zip(grid, values))
            for name, value in recipe.items():
                setattr(module, name, value)
            t = time.perf_counter()
            out = core.run(sub, progress=lambda s: None)
            by_arm = {a: float(np.mean([r["mae"] for r in out["records"] if r["arm"] == a])) for a in core.ARMS}
            rows.append({**recipe, "val_mae": float(np.mean(list(by_arm.values()))), **{f"val_mae_{a}": v
                         for a, v in by_arm.items()}, "seconds": round(time.perf_counter() - t, 1)})
            print(rows[-1], flush=True)
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
    parent_mae = core.scores(sub, sub.parent)["mae"]
    best = min(rows, key=lambda r: r["val_mae"])
    return {"attribute": exp.attribute, "split": sub.setup, "ks": list(ks), "seeds": list(seeds),
            "parent_val_mae": parent_mae, "shipped_recipe": saved, "rows": rows, "chosen": best}


def main(argv: list[str] | None = None) -> int:
    from bench._util import save

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("attribute", choices=("height", "year_built"))
    ap.add_argument("--ks", type=int, nargs="+", default=[25, 100])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cell-m", type=float, default=500.0)
    args = ap.parse_args(argv)
    exp = importlib.import_module(f"bench.learning_curves.{args.attribute}").experiment()
    out = search(exp, tuple(args.ks), tuple(args.seeds), args.cell_m)
    print(f"parent {out['parent_val_mae']:.3f}; chosen {out['chosen']}")
    save(f"learning_curves_{args.attribute}_recipe", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
