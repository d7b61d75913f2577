"""The learning-curve experiment, shared by every attribute (issue 21, item 5).

For each seed the user "holds" a random share of the pool (:data:`POOL_SHARE`: different users
hold different labels); from it each arm picks ``k`` labels:

* ``uncertainty``: exactly what ``urbanfabric review`` would show first — the review score of
  the parent's predictions (:func:`urbanfabric.outputs.review.score_rows`, with the
  out-of-domain rank where the model has one), spread over the area
  (:func:`urbanfabric.outputs.review.spread_pick`);
* ``random``: ``k`` of the held labels drawn uniformly.

The parent is fine-tuned on the picked rows with the attribute's own ``fine_tune(parent, rows,
seed)`` (the one the ``fine-tune`` flow runs) and scored on the test rows, which are never in the
pool and lie in other places (whole cells, tiles or cities, chosen by each experiment). ``k = 0``
is the parent itself, the same for both arms. Each fine-tune's wall time is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from urbanfabric.outputs.learning import FineTuneCode, LabelledRows, class_scores, numeric_scores
from urbanfabric.outputs.review import review_attribute, score_rows, spread_pick, with_ood_rank

#: Label budgets of the issue.
KS: tuple[int, ...] = (0, 25, 50, 100, 200)
#: Seeds per (arm, k).
SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
#: Share of the pool a user holds in one seed (both arms choose from the same held rows).
POOL_SHARE = 0.8
ARMS = ("uncertainty", "random")


@dataclass
class Experiment:
    """One attribute's learning-curve set-up.

    ``review_table(parent, rows)`` answers, per row, the buildings-table columns the review
    score reads for ``attribute`` (e.g. ``roof_shape_probability``, ``p_roof_shape_<class>``,
    ``roof_shape_ood_score``; ``height_m``, ``height_p05``, ``height_p95``) — the same columns
    the attributes stage writes, so the selection is the review's.
    """

    attribute: str
    code: FineTuneCode
    parent: Any
    pool: LabelledRows
    test: LabelledRows
    review_table: Callable[[Any, LabelledRows], pd.DataFrame]
    #: Where the pool and the test set come from, and how they are separated (for the docs).
    setup: dict[str, Any] = field(default_factory=dict)
    ks: Sequence[int] = KS
    seeds: Sequence[int] = SEEDS
    #: ``score(exp, model)``: the model's scores on the test rows, for an attribute whose labels
    #: are not one value per row (footprints: pixel masks, :data:`PRIMARY` ``iou``); ``None``:
    #: :func:`class_scores` / :func:`numeric_scores` on ``predict``.
    score: Callable[[Experiment, Any], dict[str, float]] | None = None

    @property
    def kind(self) -> str:
        review_kind = review_attribute(self.attribute).kind
        return review_kind if review_kind in ("class", "footprint") else "numeric"


#: Each kind's curve metric and whether higher is better.
PRIMARY: dict[str, tuple[str, bool]] = {"class": ("accuracy", True), "numeric": ("mae", False),
                                        "footprint": ("iou", True)}


def scores(exp: Experiment, model: Any) -> dict[str, float]:
    """The model's scores on the experiment's test rows (accuracy / macro-F1 / NLL, MAE / RMSE /
    bias, or the experiment's own ``score``)."""
    if exp.score is not None:
        return exp.score(exp, model)
    pred = exp.code.predict(model, exp.test.inputs)
    if exp.kind == "class":
        return class_scores(exp.test.labels, pred, exp.code.classes(model))
    return numeric_scores(exp.test.labels, pred)


def review_uncertainty(exp: Experiment, rows: LabelledRows) -> np.ndarray:
    """The review's 0–1 uncertainty of the parent on ``rows`` (out-of-domain rank included)."""
    table = exp.review_table(exp.parent, rows).reset_index(drop=True)
    table["building_id"] = [str(b) for b in rows.building_id]
    scored = with_ood_rank(score_rows(table, review_attribute(exp.attribute)))
    return scored["uncertainty"].to_numpy(dtype=float)


def pick(arm: str, held: LabelledRows, uncertainty: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Positions in ``held`` of the ``k`` rows an arm labels."""
    k = min(k, len(held))
    if arm == "uncertainty":
        return spread_pick(held.x_m, held.y_m, uncertainty, k)
    if arm == "random":
        return np.random.default_rng(10_000 + seed).choice(len(held), size=k, replace=False)
    raise ValueError(f"unknown arm {arm!r}; one of {ARMS}")


def run(exp: Experiment, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Both arms over ``exp.ks`` and ``exp.seeds``: one record per fine-tune, and a summary."""
    t0 = time.perf_counter()
    base = scores(exp, exp.parent)
    pool_u = review_uncertainty(exp, exp.pool)
    records: list[dict[str, Any]] = []
    for seed in exp.seeds:
        rng = np.random.default_rng(seed)
        held_idx = np.sort(rng.choice(len(exp.pool), size=int(round(POOL_SHARE * len(exp.pool))), replace=False))
        held = exp.pool.subset(held_idx)
        for k in exp.ks:
            if k == 0:
                continue
            for arm in ARMS:
                chosen = pick(arm, held, pool_u[held_idx], k, seed)
                rows = held.subset(chosen)
                t = time.perf_counter()
                model, info = exp.code.fine_tune(exp.parent, rows, seed=seed)
                seconds = time.perf_counter() - t
                s = scores(exp, model)
                records.append({"arm": arm, "k": len(rows), "seed": seed, "seconds": round(seconds, 3), **s,
                                "mean_pool_uncertainty": float(pool_u[held_idx][chosen].mean()),
                                "labels": _label_counts(rows.labels, exp.kind)})
                progress(f"{exp.attribute} seed {seed} k {len(rows)} {arm}: "
                         + ", ".join(f"{m} {v:.3f}" for m, v in s.items()) + f" ({seconds:.1f} s)")
    return {"attribute": exp.attribute, "kind": exp.kind, "setup": exp.setup, "pool": len(exp.pool),
            "test": len(exp.test), "parent": base, "records": records, "summary": summarise(exp.kind, base, records),
            "seconds_total": round(time.perf_counter() - t0, 1)}


def _label_counts(labels: np.ndarray, kind: str) -> dict[str, Any]:
    if kind == "class":
        values, counts = np.unique(np.asarray(labels).astype(str), return_counts=True)
        return {str(v): int(c) for v, c in zip(values, counts)}
    if kind == "footprint":  # pixel masks: 1 building, 0 background, anything else unlabelled
        m = np.asarray(labels)
        return {"building_px": int((m == 1).sum()), "background_px": int((m == 0).sum())}
    y = np.asarray(labels, dtype=float)
    return {"mean": float(y.mean()), "p10": float(np.percentile(y, 10)), "p90": float(np.percentile(y, 90))}


def primary_metric(kind: str) -> tuple[str, bool]:
    """The curve's metric and whether higher is better."""
    return PRIMARY.get(kind, PRIMARY["numeric"])


def summarise(kind: str, base: dict[str, float], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per k: each arm's mean ± sd of the primary metric over seeds, the paired difference
    (uncertainty − random, signed so that positive means the uncertainty arm is better) and in
    how many seeds it is better; the mean fine-tune wall time."""
    metric, higher = primary_metric(kind)
    df = pd.DataFrame(records)
    out = [{"k": 0, "uncertainty": {"mean": base[metric], "sd": 0.0}, "random": {"mean": base[metric], "sd": 0.0},
            "gain_over_random": 0.0, "seeds_better": None, "seconds": 0.0}]
    if df.empty:
        return out
    for k, g in df.groupby("k"):
        arms = {a: g[g.arm == a].set_index("seed")[metric] for a in ARMS}
        paired = (arms["uncertainty"] - arms["random"]).dropna()
        sign = 1.0 if higher else -1.0
        out.append({"k": int(k), **{a: {"mean": float(s.mean()), "sd": float(s.std(ddof=1)) if len(s) > 1 else 0.0}
                                    for a, s in arms.items()},
                    "gain_over_random": float(sign * paired.mean()) if len(paired) else float("nan"),
                    "seeds_better": f"{int((sign * paired > 0).sum())}/{len(paired)}",
                    "seconds": float(g.seconds.mean())})
    return out


def labels_for_gain(summary: list[dict[str, Any]], kind: str) -> dict[str, int | None]:
    """Per arm, the smallest k whose mean reaches half of the best gain over the parent that
    either arm reaches (None when it never does): "fewer labels for the same gain"."""
    metric, higher = primary_metric(kind)
    sign = 1.0 if higher else -1.0
    base = summary[0]["uncertainty"]["mean"]
    gains = {a: [(row["k"], sign * (row[a]["mean"] - base)) for row in summary[1:]] for a in ARMS}
    best = max((g for arm in gains.values() for _, g in arm), default=0.0)
    if best <= 0:
        return {a: None for a in ARMS}
    return {a: next((k for k, g in gains[a] if g >= best / 2), None) for a in ARMS}


def markdown(result: dict[str, Any]) -> str:
    """The summary as a Markdown table (for docs/results.md)."""
    metric, higher = primary_metric(result["kind"])
    lines = [f"| k | uncertainty {metric} | random {metric} | uncertainty − random ({'higher' if higher else 'lower'}"
             " is better) | seeds better | s per fine-tune |", "|---|---|---|---|---|---|"]
    for row in result["summary"]:
        u, r = row["uncertainty"], row["random"]
        lines.append(f"| {row['k']} | {u['mean']:.3f} ± {u['sd']:.3f} | {r['mean']:.3f} ± {r['sd']:.3f} | "
                     f"{row['gain_over_random']:+.3f} | {row['seeds_better'] or '–'} | {row['seconds']:.1f} |")
    return "\n".join(lines)
