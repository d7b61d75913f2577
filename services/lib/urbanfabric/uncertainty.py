"""Calibration and out-of-domain scores shared by every class attribute (issue 18, item 2).

Plain numpy, no model code, so the roof / façade classifiers (model server), the function and
age models (attributes wing) and the training scripts in ``models/`` all use the same maths:

* :func:`expected_calibration_error` (top-label ECE, 15 equal-width bins; Guo et al., "On
  Calibration of Modern Neural Networks", ICML 2017, Eq. 3) and :func:`binary_calibration_error`
  for multi-label sigmoids; :func:`reliability_bins` gives the points of a reliability diagram.
* :func:`fit_temperature`: one scalar ``T`` minimising the negative log-likelihood of
  ``softmax(logits / T)`` (or per-label sigmoids) on a validation split (Guo et al. 2017, §4.2).
  Golden-section search on ``log T``: deterministic, no random start.
* :class:`FeatureDensity`: how far an input lies from the training inputs in a feature space
  (a classifier's frozen / penultimate features, or a tabular model's standardised features):
  a Mahalanobis distance in the principal subspace plus the residual off it (Lee et al., "A
  Simple Unified Framework for Detecting Out-of-Distribution Samples", NeurIPS 2018, with one
  Gaussian instead of one per class: a few hundred labelled roofs do not fit five covariances).
  Its ``threshold`` is chosen on in-domain validation data (:func:`keep_threshold`: the score
  below which a share ``keep`` of validation inputs lies); a score above it is "out of domain".
  Feature ranges of the training data ride along, so a tabular model's reason can name the
  features outside them (trees extrapolate flat beyond the last split).
* :class:`NeighbourDistance`: the image classifiers' score, the cosine distance of an input's
  features to its k-th nearest training image (Sun et al., ICML 2022); :func:`load_domain`
  reads either from a version folder's ``domain.npz``.
* :func:`auroc`: how well a score separates in-domain from shifted inputs (Mann–Whitney U).
* :func:`split_conformal_limits`: the residual quantiles of a split-conformal interval (Vovk et
  al. 2005; Lei et al., "Distribution-Free Predictive Inference for Regression", JASA 2018),
  fitted on calibration rows the model never trained on (issue 18, item 4: year built, stock).

Everything is deterministic: same input, same output.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Bins of every ECE the project reports (Guo et al. 2017 use 15).
ECE_BINS = 15
#: The reason prefix every out-of-domain abstention writes into ``*_unknown_reason``.
OUT_OF_DOMAIN = "out_of_domain"


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (float64, numerically stable)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Element-wise sigmoid of ``logits / temperature`` (float64)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _check_probs(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or y.shape != (len(p),):
        raise ValueError(f"probs must be (N, C) and labels (N,), got {p.shape} and {y.shape}")
    if len(p) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must lie in 0..{p.shape[1] - 1}")
    return p, y.astype(np.int64)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin: mean confidence, accuracy and count (NaN where empty).

    Args:
        confidence: ``(N,)`` predicted probability of the event (top class, or a label).
        correct: ``(N,)`` 1 where the event happened (top class right, label present).
        n_bins: bins over [0, 1]; the last bin includes 1.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if conf.shape != hit.shape or conf.ndim != 1:
        raise ValueError(f"confidence and correct must be equal (N,) arrays, got {conf.shape}, {hit.shape}")
    idx = np.clip((conf * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, minlength=n_bins) / count
        acc = np.bincount(idx, hit, minlength=n_bins) / count
    return mean_conf, acc, count


def _ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    mean_conf, acc, count = reliability_bins(confidence, correct, n_bins)
    if count.sum() == 0:
        return float("nan")
    used = count > 0
    return float(np.sum(count[used] * np.abs(acc[used] - mean_conf[used])) / count.sum())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE: Σ_b |B_b|/N · |acc(B_b) − conf(B_b)| over equal-width confidence bins.

    Args:
        probs: ``(N, C)`` class probabilities.
        labels: ``(N,)`` true class indices.
        n_bins: number of bins (15, as Guo et al. 2017).
    """
    p, y = _check_probs(probs, labels)
    if not len(p):
        return float("nan")
    top = p.argmax(axis=1)
    return _ece(p[np.arange(len(p)), top], (top == y).astype(np.float64), n_bins)


def binary_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE of independent per-label probabilities (multi-label sigmoids): every (item, label)
    pair is one prediction of "label present" with confidence p, binned as in the top-label ECE.

    Args:
        probs: ``(N, L)`` per-label probabilities.
        targets: ``(N, L)`` 0/1 label matrix.
    """
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"probs and targets must have one shape, got {p.shape} and {t.shape}")
    return _ece(p.ravel(), t.ravel(), n_bins)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0,
                            multi_label: bool = False) -> float:
    """Mean NLL of ``softmax(logits / T)`` at the true class (or of per-label sigmoids)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if multi_label:
        t = np.asarray(labels, dtype=np.float64)
        # log(1 + e^z) − t·z, stable for both signs of z.
        return float(np.mean(np.logaddexp(0.0, z) - t * z))
    y = np.asarray(labels, dtype=np.int64)
    lse = np.logaddexp.reduce(z, axis=1)
    return float(np.mean(lse - z[np.arange(len(z)), y]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, multi_label: bool = False,
                    bounds: tuple[float, float] = (0.05, 20.0), tol: float = 1e-5) -> float:
    """The temperature ``T`` minimising the validation NLL of ``logits / T`` (Guo et al. 2017).

    The NLL is unimodal in ``log T`` for a fixed set of logits, so a golden-section search on
    ``log T`` over ``bounds`` finds it without gradients or random starts (deterministic).

    Args:
        logits: ``(N, C)`` validation logits (under the test-time augmentation served).
        labels: ``(N,)`` class indices, or ``(N, C)`` 0/1 targets when ``multi_label``.
        multi_label: per-label sigmoids share one ``T``.
        bounds: search interval of ``T``.
        tol: stop when the ``log T`` bracket is narrower than this.

    Raises:
        ValueError: no validation rows.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or not len(z):
        raise ValueError(f"need (N, C) logits with N > 0, got {z.shape}")
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    golden = (np.sqrt(5.0) - 1.0) / 2.0

    def nll(log_t: float) -> float:
        return negative_log_likelihood(z, labels, float(np.exp(log_t)), multi_label)

    a, b = lo + (1 - golden) * (hi - lo), lo + golden * (hi - lo)
    fa, fb = nll(a), nll(b)
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - golden) * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2.0))


def probability_logits(probs: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """``log p`` of class probabilities: logits whose softmax gives ``probs`` back, so a model
    that returns probabilities (XGBoost ``multi:softprob``) can be temperature-scaled too."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0))


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of class probabilities: ``softmax(log p / T)`` row-wise (what a model
    answering probabilities, e.g. XGBoost ``multi:softprob``, becomes under temperature ``T``)."""
    p = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0 or not p.size:
        return p
    return softmax(probability_logits(p), temperature)


# --------------------------------------------------------------------------------------------
# Out-of-domain scores
# --------------------------------------------------------------------------------------------


def auroc(in_domain: np.ndarray, shifted: np.ndarray) -> float:
    """Area under the ROC curve of a score that should be higher for ``shifted`` inputs:
    P(score of a shifted input > score of an in-domain one), ties counted half (Mann–Whitney)."""
    a = np.asarray(in_domain, dtype=np.float64).ravel()
    b = np.asarray(shifted, dtype=np.float64).ravel()
    if not len(a) or not len(b):
        return float("nan")
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both), dtype=np.float64)
    ranks[order] = np.arange(1, len(both) + 1)
    # Average ranks of ties.
    sorted_vals = both[order]
    start = 0
    for end in range(1, len(both) + 1):
        if end == len(both) or sorted_vals[end] != sorted_vals[start]:
            ranks[order[start:end]] = (start + 1 + end) / 2.0
            start = end
    u = ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2.0
    return float(u / (len(a) * len(b)))


def split_conformal_limits(residuals: np.ndarray, coverage: float = 0.90) -> tuple[float, float]:
    """Lower / upper residual quantiles of a split-conformal interval of nominal ``coverage``.

    With ``n`` calibration residuals ``r = y − ŷ`` (in whatever scale the caller chose: years,
    log ratio, …) of rows the model never saw, the interval ``[ŷ + q_lo, ŷ + q_hi]`` covers a
    new exchangeable row with probability ≥ ``coverage`` when ``q_hi`` is the
    ``⌈(n+1)(1−α)⌉``-th smallest residual and ``q_lo`` the ``⌊(n+1)α⌋``-th, ``α = (1−coverage)/2``
    (equal tails; Lei et al. 2018, §2.2). Too few rows for a finite quantile → the extreme
    residual (the interval cannot be honest then; callers require enough rows).

    Raises:
        ValueError: no finite residual, or ``coverage`` outside (0, 1).
    """
    r = np.sort(np.asarray(residuals, dtype=np.float64).ravel())
    r = r[np.isfinite(r)]
    if not len(r):
        raise ValueError("no finite calibration residuals")
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must lie in (0, 1), got {coverage}")
    n = len(r)
    alpha = (1.0 - coverage) / 2.0
    # 1-based ranks; the 1e-9 keeps 0.1 / 2 · 100 = 4.999… from dropping a rank.
    k_hi = int(np.ceil((n + 1) * (1.0 - alpha) - 1e-9))
    k_lo = int(np.floor((n + 1) * alpha + 1e-9))
    return float(r[max(k_lo, 1) - 1]), float(r[min(k_hi, n) - 1])


def keep_threshold(validation_scores: np.ndarray, keep: float = 0.95) -> float:
    """The score at the ``keep`` quantile of in-domain validation scores: inputs scoring above
    it are out of domain, so a share ``keep`` of in-domain inputs is kept."""
    s = np.asarray(validation_scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if not len(s):
        raise ValueError("no finite validation scores to choose a threshold on")
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must lie in (0, 1], got {keep}")
    return float(np.quantile(s, keep, method="higher"))


@dataclass
class FeatureDensity:
    """One Gaussian over standardised features, scored in its principal subspace and off it.

    ``score(x) = sqrt((Σ_k z_k² / λ_k + r² / ρ) / (K + 1))``, where ``z`` are the coordinates of the
    standardised ``x`` on the ``K`` leading principal axes of the training features (variances
    ``λ``), ``r²`` the squared norm of what those axes leave out and ``ρ`` its training mean.
    A training-like input scores ≈ 1; the score grows with the distance from the training data.

    Attributes:
        center: per-feature centre (mean, or median when ``robust``).
        scale: per-feature spread (std, or IQR / 1.349 when ``robust``); 1 where constant.
        components: ``(K, D)`` principal axes.
        variances: ``(K,)`` variance along each axis.
        residual: mean squared residual ``ρ`` of the training features.
        compress: features pass through ``sign(z)·log1p(|z|)`` after standardising (heavy-tailed
            tabular features: one huge footprint must not dominate the Gaussian).
        low, high: per-feature training range (0.5 and 99.5 percentiles).
        names: feature names (tabular models) for the reasons.
        threshold: out-of-domain cut on the score (``inf`` until chosen).
        keep: the in-domain validation share the threshold keeps.
        offset: mean of the standardised (and compressed) training features.
    """

    center: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual: float
    compress: bool = False
    low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    high: np.ndarray = field(default_factory=lambda: np.zeros(0))
    names: tuple[str, ...] = ()
    threshold: float = float("inf")
    keep: float = float("nan")
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def fit(cls, features: np.ndarray, *, max_components: int = 32, variance: float = 0.95,
            robust: bool = False, compress: bool = False, names: tuple[str, ...] = ()) -> FeatureDensity:
        """Fit on training features ``(N, D)``; NaN (a missing tabular feature) is the centre.

        ``K`` is the fewest leading axes that explain ``variance`` of the total, at most
        ``max_components`` and at most ``N // 4`` (a covariance needs several rows per axis).
        """
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or len(x) < 8:
            raise ValueError(f"need (N >= 8, D) training features, got {x.shape}")
        if robust:
            center = np.nanmedian(x, axis=0)
            q75, q25 = np.nanpercentile(x, [75, 25], axis=0)
            scale = (q75 - q25) / 1.349
            std = np.nanstd(x, axis=0)
            scale = np.where(scale > 0, scale, std)
        else:
            center = np.nanmean(x, axis=0)
            scale = np.nanstd(x, axis=0)
        center = np.nan_to_num(center)
        scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
        low, high = np.nanpercentile(x, [0.5, 99.5], axis=0)
        model = cls(center, scale, np.zeros((0, x.shape[1])), np.zeros(0), 1.0, compress,
                    np.nan_to_num(low), np.nan_to_num(high), tuple(names))
        z = model._standardise(x)
        model.offset = z.mean(axis=0)
        z = z - model.offset
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        var = s**2 / max(len(z) - 1, 1)
        share = np.cumsum(var) / max(var.sum(), 1e-12)
        k = min(int(np.searchsorted(share, variance)) + 1, max_components, max(len(z) // 4, 1), len(var))
        model.components = vt[:k]
        model.variances = np.maximum(var[:k], 1e-9)
        r = z - (z @ model.components.T) @ model.components
        model.residual = float(max(np.mean(np.sum(r**2, axis=1)), 1e-9))
        return model

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.center) / self.scale
        z = np.where(np.isfinite(z), z, 0.0)
        if self.compress:
            z = np.sign(z) * np.log1p(np.abs(z))
        return z

    def score(self, features: np.ndarray) -> np.ndarray:
        """Out-of-domain score per row of ``features`` ``(N, D)`` (higher = further away).

        Raises:
            ValueError: wrong number of features.
        """
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.center):
            raise ValueError(f"expected (N, {len(self.center)}) features, got {x.shape}")
        z = self._standardise(x)
        if len(self.offset):
            z = z - self.offset
        proj = z @ self.components.T
        r2 = np.sum(z**2, axis=1) - np.sum(proj**2, axis=1)
        d2 = np.sum(proj**2 / self.variances, axis=1) + np.maximum(r2, 0.0) / self.residual
        return np.sqrt(d2 / (len(self.variances) + 1))

    def out_of_range(self, features: np.ndarray, margin: float = 0.1) -> list[list[str]]:
        """Per row, the features outside the training range widened by ``margin`` of its width."""
        x = np.asarray(features, dtype=np.float64)
        if not len(self.low):
            return [[] for _ in range(len(x))]
        width = np.maximum(self.high - self.low, 1e-12)
        bad = (x < self.low - margin * width) | (x > self.high + margin * width)
        names = self.names or tuple(f"feature {j}" for j in range(x.shape[1]))
        return [[names[j] for j in np.flatnonzero(row)] for row in bad]

    def out_of_domain(self, scores: np.ndarray) -> np.ndarray:
        """True where a score lies above the chosen threshold."""
        return np.asarray(scores, dtype=np.float64) > self.threshold

    def choose_threshold(self, validation_features: np.ndarray, keep: float = 0.95) -> float:
        """Set ``threshold`` so that a share ``keep`` of in-domain validation rows is kept."""
        self.threshold = keep_threshold(self.score(validation_features), keep)
        self.keep = float(keep)
        return self.threshold

    # ---- storage --------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The statistics as an ``.npz`` (float32 where precision does not matter)."""
        buf = io.BytesIO()
        np.savez_compressed(
            buf, kind=np.array("feature_density"), center=self.center, scale=self.scale, components=self.components.astype(np.float32),
            variances=self.variances, residual=np.float64(self.residual), compress=np.bool_(self.compress),
            low=self.low, high=self.high, names=np.array(self.names, dtype=str),
            threshold=np.float64(self.threshold), keep=np.float64(self.keep), offset=self.offset)
        return buf.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_bytes` to ``path``."""
        path = Path(path)
        path.write_bytes(self.to_bytes())
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureDensity:
        """Read statistics written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as f:
            d: dict[str, Any] = {k: f[k] for k in f.files}
        model = cls(d["center"], d["scale"], d["components"].astype(np.float64), d["variances"],
                    float(d["residual"]), bool(d["compress"]), d["low"], d["high"],
                    tuple(str(n) for n in d["names"]), float(d["threshold"]), float(d["keep"]), d["offset"])
        return model


@dataclass
class NeighbourDistance:
    """Distance to the training set: the ``k``-th nearest training row (deep nearest neighbours,
    Sun et al., "Out-of-Distribution Detection with Deep Nearest Neighbors", ICML 2022).

    Two metrics:

    * image features (no ``standardiser``): one minus the cosine similarity of L2-normalised
      penultimate features, as Sun et al.;
    * tabular features (with a ``standardiser``, a :class:`FeatureDensity` whose robust
      standardisation and ``sign·log1p`` compression are applied first): the Euclidean
      distance, so each footprint feature counts in units of its training spread; the
      standardiser's training ranges name the features outside them.

    With a few hundred training images, or footprints of a few cities, the features are not one
    Gaussian, and :class:`FeatureDensity`'s score separates other sensors and cities far worse
    (docs/results.md), while the neighbour distance assumes no distribution.

    Attributes:
        reference: ``(N, D)`` training rows in the scored space (stored as float16).
        k: which neighbour's distance is the score.
        threshold: out-of-domain cut on the score (``inf`` until chosen).
        keep: the in-domain validation share the threshold keeps.
        standardiser: tabular only: the transform into the scored space.
    """

    reference: np.ndarray
    k: int = 5
    threshold: float = float("inf")
    keep: float = float("nan")
    standardiser: FeatureDensity | None = None

    @staticmethod
    def _normalise(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return np.where(norm > 0, x / np.where(norm > 0, norm, 1.0), 0.0)

    def _space(self, x: np.ndarray) -> np.ndarray:
        if self.standardiser is None:
            return self._normalise(x)
        return self.standardiser._standardise(x) - self.standardiser.offset

    @classmethod
    def fit(cls, features: np.ndarray, k: int = 5, *, tabular: bool = False,
            names: tuple[str, ...] = ()) -> NeighbourDistance:
        """Keep the training rows in the scored space (at least ``k`` rows).

        Args:
            features: ``(N, D)`` training features.
            k: the neighbour whose distance is the score.
            tabular: standardise robustly and compress heavy tails, then use Euclidean distance
                (footprint features); else cosine on L2-normalised features (image features).
            names: feature names (tabular), for :meth:`out_of_range`.
        """
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or len(x) < max(k, 8 if tabular else 1):
            raise ValueError(f"need (N >= {k}, D) training features, got {x.shape}")
        model = cls(np.zeros((0, x.shape[1])), int(k))
        if tabular:
            model.standardiser = FeatureDensity.fit(x, robust=True, compress=True, names=names, max_components=1)
        model.reference = model._space(x).astype(np.float16)
        return model

    def widened(self, features: np.ndarray) -> NeighbourDistance:
        """A copy whose reference also holds ``features`` (in the same space, with the same
        threshold): a model fine-tuned on these rows has seen them, so they are in its domain."""
        added = self._space(np.asarray(features, dtype=np.float64)).astype(np.float16)
        return NeighbourDistance(np.vstack([self.reference, added]), self.k, self.threshold, self.keep,
                                 self.standardiser)

    def score(self, features: np.ndarray, batch: int = 512) -> np.ndarray:
        """Distance to the ``k``-th nearest training row, per row (0 = a training row)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.reference.shape[1]:
            raise ValueError(f"expected (N, {self.reference.shape[1]}) features, got {x.shape}")
        ref = self.reference.astype(np.float64)
        ref_sq = np.sum(ref**2, axis=1)
        out = np.empty(len(x))
        for i in range(0, len(x), batch):
            z = self._space(x[i : i + batch])
            if self.standardiser is None:
                out[i : i + batch] = 1.0 - np.sort(z @ ref.T, axis=1)[:, -self.k]
            else:
                d2 = np.sum(z**2, axis=1)[:, None] + ref_sq[None, :] - 2.0 * (z @ ref.T)
                out[i : i + batch] = np.sqrt(np.maximum(np.sort(d2, axis=1)[:, self.k - 1], 0.0))
        return out

    def out_of_range(self, features: np.ndarray, margin: float = 0.1) -> list[list[str]]:
        """Per row, the features outside the training range (tabular; empty lists otherwise)."""
        if self.standardiser is None:
            return [[] for _ in range(len(np.asarray(features)))]
        return self.standardiser.out_of_range(features, margin)

    def out_of_domain(self, scores: np.ndarray) -> np.ndarray:
        """True where a score lies above the chosen threshold."""
        return np.asarray(scores, dtype=np.float64) > self.threshold

    def choose_threshold(self, validation_features: np.ndarray, keep: float = 0.95) -> float:
        """Set ``threshold`` so that a share ``keep`` of in-domain validation rows is kept."""
        self.threshold = keep_threshold(self.score(validation_features), keep)
        self.keep = float(keep)
        return self.threshold

    def to_bytes(self) -> bytes:
        """The reference rows, ``k``, threshold and (tabular) the standardiser as an ``.npz``."""
        extra: dict[str, Any] = {}
        if self.standardiser is not None:
            st = self.standardiser
            extra = {"std_center": st.center, "std_scale": st.scale, "std_offset": st.offset,
                     "std_low": st.low, "std_high": st.high, "std_names": np.array(st.names, dtype=str)}
        buf = io.BytesIO()
        np.savez_compressed(buf, kind=np.array("neighbour_distance"), reference=self.reference,
                            k=np.int64(self.k), threshold=np.float64(self.threshold), keep=np.float64(self.keep),
                            **extra)
        return buf.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_bytes` to ``path``."""
        path = Path(path)
        path.write_bytes(self.to_bytes())
        return path


#: Either out-of-domain model; both have ``score``, ``threshold``, ``out_of_domain``.
DomainModel = FeatureDensity | NeighbourDistance


def load_domain(path: str | Path) -> DomainModel:
    """Read a ``domain.npz`` written by :meth:`FeatureDensity.save` or :meth:`NeighbourDistance.save`.

    Raises:
        ValueError: the file is not such statistics.
    """
    with np.load(Path(path), allow_pickle=False) as f:
        kind = str(f["kind"]) if "kind" in f.files else "feature_density"
        if kind == "neighbour_distance":
            std = None
            if "std_center" in f.files:
                n = len(f["std_center"])
                std = FeatureDensity(f["std_center"], f["std_scale"], np.zeros((0, n)), np.zeros(0), 1.0, True,
                                     f["std_low"], f["std_high"], tuple(str(v) for v in f["std_names"]),
                                     offset=f["std_offset"])
            return NeighbourDistance(f["reference"], int(f["k"]), float(f["threshold"]), float(f["keep"]), std)
    if kind != "feature_density":
        raise ValueError(f"{path}: unknown out-of-domain statistics {kind!r}")
    return FeatureDensity.load(path)
