"""Calibrate a shipped classifier and give it an out-of-domain score; ship both as a new version.

Usage (repository root)::

    PYTHONPATH=.:services/lib nice -n 10 .venv/bin/python -m models.classifiers.domain \
        --model models/roof_material/v3 --task roof_material --out models/roof_material/v4

What it does (issue 18, item 2), on the splits the model was trained with
(:func:`models.classifiers.train.prepared_task`: roof material by roof id, roof shape by source
tile, façades per city by source photo):

1. **Logits and features** of every train / val / test image under the version's test-time
   augmentation (:func:`models.classifiers.io.predict_logits_features`: the pre-logit pooled
   features, averaged over the views).
2. **Temperature** fitted on val (:func:`urbanfabric.uncertainty.fit_temperature`); ECE (15
   bins) and NLL on test before (T = 1 and the shipped T) and after; a reliability diagram of
   test next to the card (``models/<name>/reliability_<version>.png``).
3. **Out-of-domain score**: :class:`urbanfabric.uncertainty.NeighbourDistance` (cosine distance
   to the 5th nearest training image's features; the one-Gaussian
   :class:`urbanfabric.uncertainty.FeatureDensity` is scored alongside for comparison); its threshold keeps ``--keep`` (95 %) of val; AUROC of test (in domain) against
   the chips of other sensors and cities (:mod:`models.classifiers.foreign`), per source and
   pooled, and the share of each source the threshold flags. For the two-city façade model also
   a cross-city check: the same score fitted on NYC only, NYC test against Tokyo.
4. ``--out``: a version folder that reuses the weights (``weights_from`` in
   ``models/registry.yaml``): the config with the new ``temperature`` and an ``ood`` block
   naming ``domain.npz`` (the statistics and threshold), ``domain.npz``, ``metrics.json``.

Feature and logit arrays are cached under ``--cache`` (default ``/work/cache-calib`` if it
exists, else ``.train/domain``), keyed by model folder and split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.classifiers import foreign
from models.classifiers.io import CONFIG_FILE, load_classifier, predict_logits_features
from models.classifiers.train import eval_view, prepared_task
from models.classifiers.tta import train_config
from urbanfabric.materials.chips import input_scaling
from urbanfabric.uncertainty import (
    ECE_BINS,
    DomainModel,
    FeatureDensity,
    NeighbourDistance,
    auroc,
    binary_calibration_error,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    sigmoid,
    softmax,
)

DOMAIN_FILE = "domain.npz"
#: Foreign sources per task: every overhead source for roof models, all of them for façades.
OVERHEAD = ("xiamen", "crowdai", "dubai", "spacenet_atlanta", "zanzibar_drone")
FOREIGN = {
    "roof_material": (*OVERHEAD, "roof_shape", "facades"),
    "roof_shape": (*OVERHEAD, "caribbean", "facades"),
    "facade_both": (*OVERHEAD, "roof_shape", "caribbean"),
}


def _cache_dir(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    shared = Path("/work/cache-calib")
    return shared if shared.is_dir() else Path(__file__).resolve().parents[2] / ".train" / "domain"


def _features(model: Any, chips: np.ndarray, tta: str, cache: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    path = cache / f"{key}.npz"
    if path.is_file():
        with np.load(path) as f:
            return f["logits"], f["features"]
    logits, feats = predict_logits_features(model, chips, tta=tta)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, logits=logits, features=feats)
    return logits, feats


def _pairs(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label: the annotated (image, label) pairs as ``(M, 1)`` logits and ``(M, 1)`` targets."""
    known = np.isfinite(y)
    return logits[known][:, None].astype(np.float64), y[known][:, None].astype(np.float64)


def calibration(lva: np.ndarray, yva: np.ndarray, lte: np.ndarray, yte: np.ndarray, multi: bool,
                shipped_t: float) -> dict[str, Any]:
    """Temperature on val; NLL and ECE on test at T = 1, the shipped T and the new T."""
    if multi:
        zva, tva = _pairs(lva, yva)
        zte, tte = _pairs(lte, yte)
        t = fit_temperature(zva, tva, multi_label=True)

        def report(temp: float) -> dict[str, float]:
            return {"nll": negative_log_likelihood(zte, tte, temp, True),
                    "ece": binary_calibration_error(sigmoid(zte, temp), tte)}
    else:
        t = fit_temperature(lva, yva)

        def report(temp: float) -> dict[str, float]:
            return {"nll": negative_log_likelihood(lte, yte, temp),
                    "ece": expected_calibration_error(softmax(lte, temp), yte)}
    return {"temperature": t, "shipped_temperature": shipped_t, "bins": ECE_BINS,
            "test_uncalibrated": report(1.0), "test_shipped": report(shipped_t), "test_after": report(t),
            "val_n": int(len(yva)), "test_n": int(len(yte))}


def reliability_png(path: Path, title: str, lte: np.ndarray, yte: np.ndarray, multi: bool,
                    temps: dict[str, float]) -> None:
    """Reliability diagram of the test split under each temperature (accuracy vs confidence)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=110)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
    for (name, temp), marker in zip(temps.items(), ("o", "s", "^")):
        if multi:
            z, t = _pairs(lte, yte)
            conf, hit = sigmoid(z, temp).ravel(), t.ravel()
            ece = binary_calibration_error(sigmoid(z, temp), t)
        else:
            p = softmax(lte, temp)
            conf, hit = p.max(axis=1), (p.argmax(axis=1) == yte).astype(float)
            ece = expected_calibration_error(p, yte)
        mc, acc, n = reliability_bins(conf, hit)
        used = n > 0
        ax.plot(mc[used], acc[used], marker=marker, ms=4, lw=1, label=f"{name} (T={temp:.2f}), ECE {ece:.3f}")
    ax.set_xlabel("confidence" + (" (per label)" if multi else " (top class)"))
    ax.set_ylabel("frequency" if multi else "accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


#: Neighbour of the nearest-neighbour score (fixed before any AUROC was computed; Sun et al. 2022
#: use k = 1–50 with far larger training sets).
NEIGHBOUR_K = 5


def out_of_domain(train_f: np.ndarray, val_f: np.ndarray, test_f: np.ndarray,
                  shifted: dict[str, np.ndarray], keep: float, kind: str = "neighbour_distance"
                  ) -> tuple[DomainModel, dict[str, Any]]:
    """Fit the score on train, threshold on val, AUROC of test against each shifted source.

    ``kind``: ``neighbour_distance`` (shipped) or ``feature_density`` (one Gaussian, compared).
    """
    density: DomainModel = (NeighbourDistance.fit(train_f, k=NEIGHBOUR_K) if kind == "neighbour_distance"
                            else FeatureDensity.fit(train_f, max_components=32))
    thr = density.choose_threshold(val_f, keep)
    s_test = density.score(test_f)
    rows: dict[str, Any] = {}
    for name, feats in shifted.items():
        s = density.score(feats)
        rows[name] = {"n": int(len(s)), "auroc": auroc(s_test, s), "flagged": float(np.mean(s > thr)),
                      "median_score": float(np.median(s))}
    pooled = np.concatenate([density.score(f) for f in shifted.values()]) if shifted else np.zeros(0)
    return density, {
        "kind": kind, "threshold": thr, "keep": keep,
        "val_kept": float(np.mean(density.score(val_f) <= thr)),
        "test_kept": float(np.mean(s_test <= thr)), "test_median_score": float(np.median(s_test)),
        "auroc_pooled": auroc(s_test, pooled), "sources": rows,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="shipped version folder")
    p.add_argument("--task", required=True, choices=sorted(FOREIGN))
    p.add_argument("--out", type=Path, default=None, help="new version folder (config + domain.npz + metrics)")
    p.add_argument("--keep", type=float, default=0.95, help="share of in-domain val the threshold keeps")
    p.add_argument("--cache", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    command = "python -m models.classifiers.domain " + " ".join(sys.argv[1:] if argv is None else argv)
    cache = _cache_dir(args.cache)

    model, config = load_classifier(args.model)
    cfg = train_config(config)
    ds, _ = prepared_task(args.task, cfg)
    if list(ds.classes) != list(config["classes"]):
        raise SystemExit(f"--task {args.task} has classes {ds.classes}, the model {config['classes']}")
    tta, size = str(config.get("tta", "none")), int(config["chip_size"])
    tag = f"{args.model.parent.name}_{args.model.name}_{tta}"
    parts = {}
    for split in ("train", "val", "test"):
        x, y = ds.part(split)
        chips = eval_view(torch.from_numpy(x.astype(np.float32)), size).numpy()
        logits, feats = _features(model, chips, tta, cache, f"{tag}_{split}")
        parts[split] = (logits, feats, y)
        print(f"[{args.task}] {split}: {len(y)} images, features {feats.shape}", flush=True)

    (ltr, ftr, _), (lva, fva, yva), (lte, fte, yte) = parts["train"], parts["val"], parts["test"]
    cal = calibration(lva, yva, lte, yte, ds.multi_label, float(config.get("temperature", 1.0)))
    print(f"[{args.task}] T {cal['temperature']:.3f} (shipped {cal['shipped_temperature']:.3f}); test ECE "
          f"{cal['test_uncalibrated']['ece']:.3f} (T=1) / {cal['test_shipped']['ece']:.3f} (shipped) → "
          f"{cal['test_after']['ece']:.3f}", flush=True)

    scaling = input_scaling(config)
    shifted = {}
    for name in FOREIGN[args.task]:
        chips = foreign.chips_for(foreign.SOURCES[name](), size, scaling)
        shifted[name] = _features(model, chips, tta, cache, f"{tag}_foreign_{name}_{scaling}")[1]
    density, ood = out_of_domain(ftr, fva, fte, shifted, args.keep)
    _, gauss = out_of_domain(ftr, fva, fte, shifted, args.keep, kind="feature_density")
    print(f"[{args.task}] OOD: {ood['kind']}, threshold {ood['threshold']:.3f}, test kept "
          f"{ood['test_kept']:.3f}, AUROC pooled {ood['auroc_pooled']:.3f}; " + ", ".join(
              f"{k} {v['auroc']:.3f} ({v['flagged']:.0%} flagged)" for k, v in ood["sources"].items()), flush=True)

    result: dict[str, Any] = {"task": args.task, "from": str(args.model), "command": command,
                              "calibration": cal, "out_of_domain": ood,
                              "out_of_domain_gaussian_compared": gauss}
    if args.task == "facade_both":
        cities = np.asarray(ds.meta["cities"])
        nyc = {s: cities[ds.split == s] == "nyc" for s in ("train", "val", "test")}
        tokyo_all = np.concatenate([parts[s][1][~nyc[s]] for s in ("train", "val", "test")])
        _, cross = out_of_domain(ftr[nyc["train"]], fva[nyc["val"]], fte[nyc["test"]], {"tokyo": tokyo_all}, args.keep)
        result["cross_city_nyc_vs_tokyo"] = cross
        print(f"[{args.task}] fitted on NYC only: NYC test vs Tokyo AUROC {cross['auroc_pooled']:.3f}, "
              f"Tokyo flagged {cross['sources']['tokyo']['flagged']:.0%}", flush=True)

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        density.save(args.out / DOMAIN_FILE)
        new = {k: v for k, v in config.items() if k != "tta_choice"}
        new["temperature"] = cal["temperature"]
        new["calibration"] = {"fitted_on": "val", "command": command, "ece_bins": ECE_BINS,
                              "test_ece_before": cal["test_uncalibrated"]["ece"],
                              "test_ece_after": cal["test_after"]["ece"]}
        new["ood"] = {"file": DOMAIN_FILE, "score": ood["kind"], "k": NEIGHBOUR_K,
                      "features": "pre-logit pooled features, mean over the tta views, L2-normalised",
                      "threshold": ood["threshold"], "keep": args.keep,
                      "fitted_on": "train features; threshold on val",
                      "auroc_pooled": ood["auroc_pooled"]}
        if "tta_choice" in config:
            new["tta_choice"] = config["tta_choice"]
        (args.out / CONFIG_FILE).write_text(json.dumps(new, indent=2, default=float) + "\n", encoding="utf-8")
        (args.out / "metrics.json").write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
        card_dir = args.out.parent
        reliability_png(card_dir / f"reliability_{args.out.name}.png",
                        f"{args.out.parent.name}/{args.out.name}, test split (n={len(yte)})", lte, yte,
                        ds.multi_label, {"T=1": 1.0, "shipped": cal["shipped_temperature"],
                                         "val-fitted": cal["temperature"]})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
