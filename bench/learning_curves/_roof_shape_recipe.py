"""Roof shape: the head-only fine-tune's L2 pull towards the parent, chosen on the pool only.

The learning curve (``python -m bench.learning_curves roof_shape``) found the shipped recipe
(``models.classifiers.fine_tune.ANCHOR`` = 1e-2) worse than the parent on the unseen scene at
every k. This checks stronger pulls on a validation split *of the pool* — labels from scene
``tile1``'s unseen tiles, scored on scene ``tile2``'s — never on the test scene; ``--test``
then runs the learning curve once with the chosen pull (results under a name the figure does
not read: ``bench/results/roof_shape_recipe_anchor.json``).

    python -m bench.learning_curves._roof_shape_recipe [--test ANCHOR --seeds 2 --ks 0,25,50,100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.learning_curves import core, roof_shape
from bench.learning_curves.__main__ import parse_ks
from models.classifiers import fine_tune as ft

ANCHORS = (1e-2, 1e-1, 1.0)
K = 50


def validate(seeds: tuple[int, ...] = (0, 1)) -> dict:
    exp = roof_shape.experiment(ks=(0, K), seeds=(0,))
    scene = np.array([str(b).split("_")[0] for b in exp.pool.building_id])
    labels, val = exp.pool.subset(scene == "tile1"), exp.pool.subset(scene == "tile2")
    out: dict = {"labels": f"{len(labels)} unseen crops of tile1", "validation": f"{len(val)} unseen crops of tile2",
                 "k": K, "parent": core.class_scores(val.labels, ft.predict(exp.parent, val.inputs), ft.classes(exp.parent))}
    print("parent", out["parent"], flush=True)
    for anchor in ANCHORS:
        ft.ANCHOR = anchor
        for seed in seeds:
            rows = labels.subset(np.random.default_rng(10_000 + seed).choice(len(labels), K, replace=False))
            t = time.perf_counter()
            model, _ = ft.fine_tune(exp.parent, rows, seed=seed)
            s = core.class_scores(val.labels, ft.predict(model, val.inputs), ft.classes(model))
            out[f"anchor {anchor} seed {seed}"] = {**s, "seconds": round(time.perf_counter() - t, 1)}
            print(anchor, seed, {k: round(v, 3) for k, v in s.items()}, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from bench._util import save

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--test", type=float, default=None, help="run the curve once with this ANCHOR")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--ks", type=parse_ks, default=(0, 25, 50, 100))
    args = p.parse_args(argv)
    if args.test is None:
        save("roof_shape_recipe_validation", validate())
        return 0
    ft.ANCHOR = args.test
    result = core.run(roof_shape.experiment(ks=args.ks, seeds=tuple(range(args.seeds))))
    result["anchor"] = args.test
    save("roof_shape_recipe_anchor", result)
    print(core.markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
