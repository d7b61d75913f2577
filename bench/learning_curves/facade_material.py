"""Façade material: train on one city, add k labels from the other (issue 21, item 5).

The served ``facade-material`` versions trained on NYC *and* Tokyo photos (60/20/20 per city),
so no served version has a city it did not see. The parent here is therefore trained on NYC
alone with the model's own training code and the served version's settings
(:data:`PARENT_COMMAND`: ``models.classifiers.train --task facade_nyc --cross-city tokyo``,
the project's cross-city set-up, labels ``brick / null / other / stucco`` that both cities
annotate), kept out of the model tree in ``.train/learning_curves/`` (not in git). Its
out-of-domain statistics are made as :mod:`models.classifiers.domain` makes the served ones:
the neighbour distance of the pre-logit features of its NYC training photos, the threshold
keeping 95 % of its NYC val photos (:func:`parent_domain`).

Pool and test are Tokyo photos, which the parent never saw. The photos carry no coordinates;
the only place information is the capture number of the source photo (``m-<id>-L``), and
consecutive numbers are the same street (a look at the images: runs of the same hedges, the
same houses). So Tokyo is cut into runs of :data:`RUN` consecutive capture numbers (Roboflow
copies of one photo share a number, hence a run) and a seeded :data:`TEST_SHARE` of the runs is
the test set; ``x_m`` is the capture number, the only "position" the review's spreading has.

Labels: the served model is multi-label (one sigmoid per label), while a reviewer's label and
the curve's accuracy are one class per building. Only photos with exactly one label are used
(the 22 Tokyo photos with two labels are left out), and only the parent's labels (Tokyo's
``metal`` and ``wood`` photos are left out: the parent has no such output). A photo's call is
the label of highest calibrated probability among all the parent's labels, ``null`` included
(a view of no façade is right when ``null`` is on top).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import _util
from bench.learning_curves import core
from models.classifiers import fine_tune as code
from urbanfabric.errors import InvalidInput
from urbanfabric.outputs.learning import LabelledRows

REPO = Path(__file__).resolve().parents[2]
PARENT_DIR = REPO / ".train" / "learning_curves" / "facade_material_nyc_parent"
PARENT_COMMAND = ("python -m models.classifiers.train --task facade_nyc --cross-city tokyo --arch efficientnet_lite0 "
                  "--minutes 8 --probe-views 2 --lr-pretrained 0.0002 "
                  "--out .train/learning_curves/facade_material_nyc_parent")
TOKYO = REPO.parent / "shared" / "data" / "facades" / "tokyo"
#: Consecutive capture numbers per run (one street's worth of photos).
RUN = 10
#: Share of the runs held out as the test set.
TEST_SHARE = 0.3
#: Seeded draws of test runs tried; the one whose label mix is closest to the whole set's is
#: kept (labels only, never a model's output), so no label is left with a handful of test photos.
SPLIT_DRAWS = 50
#: The out-of-domain threshold keeps this share of the parent's own val photos (as served).
KEEP = 0.95
_CAPTURE = re.compile(r"^m-(\d+)-")


def parent_domain(parent_dir: Path = PARENT_DIR) -> None:
    """Give the parent out-of-domain statistics as the served versions have them: neighbour
    distance on the pre-logit features of its NYC training photos, threshold on its NYC val.
    Written into the parent's folder (``domain.npz`` and the config's ``ood`` block)."""
    import torch

    from models.classifiers.data import SHARED_FACADE_LABELS
    from models.classifiers.domain import DOMAIN_FILE, NEIGHBOUR_K
    from models.classifiers.io import CONFIG_FILE, load_classifier, predict_logits_features
    from models.classifiers.train import eval_view, prepared_task
    from models.classifiers.tta import train_config
    from urbanfabric.uncertainty import NeighbourDistance

    model, config = load_classifier(parent_dir)
    ds, _ = prepared_task("facade_nyc", train_config(config), SHARED_FACADE_LABELS)
    feats = {}
    for split in ("train", "val"):
        x, _ = ds.part(split)
        chips = eval_view(torch.from_numpy(x.astype(np.float32)), int(config["chip_size"])).numpy()
        feats[split] = predict_logits_features(model, chips, tta=str(config.get("tta", "none")))[1]
    density = NeighbourDistance.fit(feats["train"], k=NEIGHBOUR_K)
    threshold = density.choose_threshold(feats["val"], KEEP)
    density.save(parent_dir / DOMAIN_FILE)
    raw = json.loads((parent_dir / CONFIG_FILE).read_text())
    raw["ood"] = {"file": DOMAIN_FILE, "score": "neighbour_distance", "k": NEIGHBOUR_K,
                  "features": "pre-logit pooled features, mean over the tta views, L2-normalised",
                  "threshold": threshold, "keep": KEEP, "fitted_on": "NYC train features; threshold on NYC val"}
    (parent_dir / CONFIG_FILE).write_text(json.dumps(raw, indent=2, default=float) + "\n", encoding="utf-8")


def load_parent(parent_dir: Path = PARENT_DIR) -> Any:
    """The NYC-only parent as the model server loads a version (with its out-of-domain statistics).

    Raises:
        InvalidInput: the parent has not been trained (field ``parent``, with the command).
    """
    if not (parent_dir / "model.pt").is_file():
        raise InvalidInput("parent", f"no NYC-only façade parent in {parent_dir}; train it first (about 8 min "
                                     f"on a CPU): PYTHONPATH=.:services/lib .venv/bin/python -m {PARENT_COMMAND[10:]}")
    if not (parent_dir / "domain.npz").is_file():
        parent_domain(parent_dir)
    return code.load(parent_dir)


def tokyo_rows(config: dict[str, Any], root: Path = TOKYO) -> tuple[LabelledRows, dict[str, Any]]:
    """Tokyo photos with exactly one label, that label one of the model's ``classes``, as the
    served chips of the model ``config``; and what was left out.

    Raises:
        InvalidInput: the Tokyo data is missing (field ``data``).
    """
    from urbanfabric.materials.chips import image_chip, input_scaling

    table = root / "_classes.csv"
    if not table.is_file():
        raise InvalidInput("data", f"{table} is missing (the shared façade data set)")
    classes = list(config["classes"])
    with table.open(newline="") as fh:
        rows = list(csv.reader(fh))
    header = [h.strip() for h in rows[0]]
    names, labels, left_out = [], [], {"two_or_more_labels": 0, "label_not_in_parent": 0}
    for r in sorted(rows[1:], key=lambda r: (_capture(r[0]), r[0])):
        on = [header[i] for i in range(1, len(header)) if r[i].strip() == "1"]
        if len(on) != 1:
            left_out["two_or_more_labels"] += 1
        elif on[0] not in classes:
            left_out["label_not_in_parent"] += 1
        else:
            names.append(r[0].strip())
            labels.append(on[0])
    size, scaling = int(config.get("chip_size", 128)), input_scaling(config)
    chips = np.stack([image_chip((root / n).read_bytes(), size, scaling) for n in names]).astype(np.float32)
    capture = np.array([_capture(n) for n in names], dtype=float)
    return LabelledRows(np.array(names), np.array(labels), chips, capture, np.zeros(len(names))), left_out


def _capture(name: str) -> int:
    m = _CAPTURE.match(name.strip())
    return int(m.group(1)) if m else -1


def capture_runs(capture: np.ndarray, run: int = RUN) -> np.ndarray:
    """Run number of each photo: consecutive capture numbers in runs of about ``run`` photos,
    never cutting between copies of one photo (they share a number)."""
    order = np.argsort(capture, kind="stable")
    out = np.empty(len(capture), dtype=int)
    current, filled, last = 0, 0, None
    for i in order:
        if filled >= run and capture[i] != last:
            current, filled = current + 1, 0
        out[i], filled, last = current, filled + 1, capture[i]
    return out


def split_by_runs(rows: LabelledRows, share: float = TEST_SHARE, draws: int = SPLIT_DRAWS) -> np.ndarray:
    """Test mask: ``share`` of the whole capture runs, the seeded draw (of ``draws``) whose label
    mix is closest (total variation) to that of all the rows."""
    runs = capture_runs(rows.x_m)
    ids = np.unique(runs)
    n_test = max(1, int(round(share * len(ids))))
    classes, y = np.unique(rows.labels, return_inverse=True)
    whole = np.bincount(y, minlength=len(classes)) / len(y)
    best, best_tv = np.zeros(len(rows), dtype=bool), np.inf
    for seed in range(draws):
        mask = np.isin(runs, np.random.default_rng(seed).choice(ids, size=n_test, replace=False))
        tv = 0.5 * float(np.abs(np.bincount(y[mask], minlength=len(classes)) / mask.sum() - whole).sum())
        if tv < best_tv:
            best, best_tv = mask, tv
    return best


def fold_by_runs(rows: LabelledRows, folds: int = 3, draws: int = SPLIT_DRAWS) -> np.ndarray:
    """Fold number of each row: the whole capture runs dealt into ``folds`` folds, the seeded
    deal (of ``draws``) whose worst fold's label mix is closest to that of all the rows. For the
    robustness check: each fold in turn is the test set, the others the pool."""
    runs = capture_runs(rows.x_m)
    ids = np.unique(runs)
    classes, y = np.unique(rows.labels, return_inverse=True)
    whole = np.bincount(y, minlength=len(classes)) / len(y)
    best, best_tv = np.zeros(len(rows), dtype=int), np.inf
    for seed in range(draws):
        deal = np.empty(len(ids), dtype=int)
        deal[np.random.default_rng(seed).permutation(len(ids))] = np.arange(len(ids)) % folds
        fold = deal[np.searchsorted(ids, runs)]
        tv = max(0.5 * float(np.abs(np.bincount(y[fold == f], minlength=len(classes)) / (fold == f).sum()
                                     - whole).sum()) for f in range(folds))
        if tv < best_tv:
            best, best_tv = fold, tv
    return best


def review_table(model: Any, rows: LabelledRows, per_label: bool = True) -> pd.DataFrame:
    """The buildings-table façade columns the review reads, made as the materials stage makes
    them (one view per building): calibrated sigmoids and out-of-domain scores of the view
    (:func:`models.classifiers.serving.predict_proba_ood`), aggregated by
    :func:`urbanfabric.materials.facades.decode_facades` (non-building view filter, views out of
    domain left out), the probability kept by the table's own rule; plus the aggregated
    probability of every material label as ``p_facade_material_<label>`` (``per_label``; a job's
    buildings table keeps only the top one, so its review reads the margin's bound ``2p − 1``)."""
    from models.classifiers.serving import predict_proba_ood
    from urbanfabric.materials.facades import NULL_LABEL, decode_facades
    from urbanfabric.materials.roofs import Taxonomy, out_of_domain_threshold
    from urbanfabric.outputs.buildings_table import _kept_probability

    config = model.config
    labels = list(config["classes"])
    probs, ood = predict_proba_ood(model, rows.inputs)
    ids = [str(b) for b in rows.building_id]
    calls = decode_facades(ids, {b: [p] for b, p in zip(ids, probs)}, labels, Taxonomy.for_model(config),
                           thresholds=[float(config["thresholds"][c]) for c in labels],
                           scores={b: [float(s)] for b, s in zip(ids, ood)},
                           ood_threshold=out_of_domain_threshold(config))
    return pd.DataFrame([
        {"facade_material": c.material,
         "facade_material_probability": _kept_probability(c.material, c.unknown_reason, c.probability),
         "facade_material_ood_score": c.ood_score,
         **{f"p_facade_material_{label}": c.probabilities.get(label, np.nan)
            for label in labels if per_label and label != NULL_LABEL}}
        for c in calls])


def experiment(ks: Sequence[int] = core.KS, seeds: Sequence[int] = core.SEEDS,
               per_label: bool = True, fold: int | None = None, folds: int = 3) -> core.Experiment:
    """The façade learning-curve set-up (module docstring); ``per_label=False`` selects as a
    job's review does, from the top probability alone (:func:`review_table`); ``fold`` makes
    that fold of :func:`fold_by_runs` the test set instead of :func:`split_by_runs`'s runs."""
    parent = load_parent()
    rows, left_out = tokyo_rows(parent.config)
    test_mask = split_by_runs(rows) if fold is None else fold_by_runs(rows, folds) == fold
    pool, test = rows.subset(~test_mask), rows.subset(test_mask)
    held = int(round(core.POOL_SHARE * len(pool)))

    def counts(r: LabelledRows) -> dict[str, int]:
        v, c = np.unique(r.labels, return_counts=True)
        return {str(a): int(b) for a, b in zip(v, c)}

    setup = {
        "parent": f"NYC only: {PARENT_COMMAND} (the served version's settings; served versions trained on both "
                  "cities); out-of-domain statistics from its NYC train photos, threshold keeping 95 % of NYC val",
        "parent_classes": code.classes(parent),
        "data": "Tokyo street-level photos (shared/data/facades/tokyo), one label each, a label the parent has",
        "left_out": left_out,
        "separation": (f"runs of {RUN} consecutive capture numbers (m-<id>); "
                       + (f"{TEST_SHARE:.0%} of the runs are the test set (of {SPLIT_DRAWS} seeded draws, the label "
                          "mix closest to the whole set's)" if fold is None else
                          f"the runs dealt into {folds} folds (of {SPLIT_DRAWS} seeded deals, the label mixes "
                          f"closest to the whole set's); fold {fold} is the test set")
                       + "; x_m = capture number (the photos have no coordinates)"),
        "pool_labels": counts(pool), "test_labels": counts(test),
        "held_per_seed": held,
        "label_to_class": "a photo's call is the top calibrated sigmoid among the parent's labels, null included",
        "review_columns": ("facade_material_probability, p_facade_material_<label>, facade_material_ood_score"
                           if per_label else "facade_material_probability, facade_material_ood_score (as a "
                                             "job's table: no per-label probabilities)"),
    }
    if held < max(ks):
        setup["note"] = (f"the pool holds {len(pool)} photos, {held} per seed after the {core.POOL_SHARE:.0%} "
                         f"share: the curve stops at k = {held}")
    ks = tuple(k for k in ks if k <= held) + ((held,) if held < max(ks) else ())
    table = review_table if per_label else partial(review_table, per_label=False)
    return core.Experiment("facade_material", code, parent, pool, test, table, setup, ks, seeds)


def fold_markdown(folds: int = 3) -> str:
    """The ``--fold`` results side by side: per k, each fold's paired gain of the uncertainty arm
    over random (accuracy; seeds better), and over all fold × seed pairs."""
    results = [json.loads((_util.RESULTS / f"learning_curves_facade_material_fold{f}.json").read_text())
               for f in range(folds)]
    head = "| k | " + " | ".join(f"fold {f} (test {r['test']}, parent {r['parent']['accuracy']:.3f})"
                                  for f, r in enumerate(results)) + " | all folds: mean gain, pairs better |"
    lines = [head, "|" + "---|" * (folds + 2)]
    by_k: dict[int, list[float]] = {}
    rows: dict[int, list[str]] = {}
    for f, r in enumerate(results):
        df = pd.DataFrame(r["records"])
        for k, g in df.groupby("k"):
            arms = {a: g[g.arm == a].set_index("seed")["accuracy"] for a in core.ARMS}
            gain = (arms["uncertainty"] - arms["random"]).dropna()
            by_k.setdefault(int(k), []).extend(gain.tolist())
            rows.setdefault(int(k), ["–"] * folds)[f] = f"{gain.mean():+.3f} ({int((gain > 0).sum())}/{len(gain)})"
    for k in sorted(rows):
        g = np.asarray(by_k[k])
        lines.append(f"| {k} | " + " | ".join(rows[k]) + f" | {g.mean():+.3f}, {int((g > 0).sum())}/{len(g)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--top-probability-only", action="store_true",
                   help="select as a job's review does: no p_facade_material_<label> columns")
    p.add_argument("--fold", type=int, default=None, choices=(0, 1, 2),
                   help="robustness check: this third of the capture runs is the test set, the rest the pool")
    p.add_argument("--summarise-folds", action="store_true", help="print the three --fold results side by side")
    args = p.parse_args(argv)
    if args.summarise_folds:
        print(fold_markdown())
        return 0
    exp = experiment(per_label=not args.top_probability_only, fold=args.fold)
    print(json.dumps(exp.setup, indent=2))
    result = core.run(exp)
    flags = (" --top-probability-only" if args.top_probability_only else "") + (
        f" --fold {args.fold}" if args.fold is not None else "")
    result["command"] = ("PYTHONPATH=.:services/lib OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python -m "
                         "bench.learning_curves.facade_material" + flags)
    result["labels_for_half_the_best_gain"] = core.labels_for_gain(result["summary"], result["kind"])
    suffix = ("_top_probability" if args.top_probability_only else "") + (
        f"_fold{args.fold}" if args.fold is not None else "")
    _util.save("learning_curves_facade_material" + suffix, result)
    print(core.markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
