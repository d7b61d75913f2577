"""Combining several segmentation models' probability maps into one answer.

Two ways, chosen by :class:`EnsembleCombine`:

* ``vote`` — GBM "Model Ensemble": each member's map is cut at its own validation threshold and
  a pixel is building where at least k of the N members say so. The returned map is the share of
  members voting building, with the threshold on that share equivalent to "≥ k votes".
* ``mean`` — a soft vote: the members' probabilities averaged, cut at the mean of their
  thresholds (or a threshold chosen for the ensemble on validation data). With two members a
  hard vote can only be their union (k = 1) or intersection (k = 2); the mean lets the more
  confident member decide where they disagree.

Either way the result goes to :func:`urbanfabric.footprints.polygons.polygonize` like a single
model's probability. Numpy only: the choice travels in protobuf messages converted by
:mod:`urbanfabric.runtime.convert`, which every service image imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np

from urbanfabric.errors import InvalidInput, parse_choice


class EnsembleCombine(str, Enum):
    """How the members of a segmentation ensemble are combined."""

    VOTE = "vote"  # k of N members agree (GBM)
    MEAN = "mean"  # mean probability (soft vote)

    @classmethod
    def parse(cls, value: str | EnsembleCombine | None) -> EnsembleCombine:
        """``EnsembleCombine`` from a name; empty or None means :attr:`VOTE` (GBM's rule)."""
        return parse_choice(cls, value, field="ensemble_combine", default=cls.VOTE)


def _check_members(probs: Sequence[np.ndarray], thresholds: Sequence[float] | None = None) -> tuple[int, ...]:
    """The common map shape; names the field that is wrong."""
    n = len(probs)
    if n == 0:
        raise InvalidInput("models", "an ensemble needs at least one member")
    if thresholds is not None and len(thresholds) != n:
        raise InvalidInput("thresholds", f"{len(thresholds)} thresholds for {n} members")
    shape0 = np.shape(probs[0])
    for p in probs:
        if np.shape(p) != shape0:
            raise InvalidInput("models", f"member maps differ in shape: {np.shape(p)} vs {shape0}")
    return shape0


def ensemble_vote(
    probs: Sequence[np.ndarray], thresholds: Sequence[float], min_votes: int
) -> tuple[np.ndarray, float]:
    """Vote of N members' probability maps.

    Args:
        probs: one ``(H, W)`` probability map per member (NaN = nodata).
        thresholds: each member's own threshold (chosen on its validation data).
        min_votes: k, the members that must agree for a pixel to be building (1 ≤ k ≤ N).

    Returns:
        ``(share, threshold)``: the share of members voting building per pixel (NaN where any
        member has nodata) and the threshold on that share equivalent to "≥ k votes", to pass
        to :func:`~urbanfabric.footprints.polygons.polygonize` (whose per-footprint confidence then is
        the mean agreement).
    """
    shape0 = _check_members(probs, thresholds)
    n = len(probs)
    if not 1 <= min_votes <= n:
        raise InvalidInput("min_votes", f"must be in 1..{n}, got {min_votes}")
    votes = np.zeros(shape0, np.float32)
    nodata = np.zeros(shape0, bool)
    for p, t in zip(probs, thresholds):
        nodata |= np.isnan(p)
        votes += np.nan_to_num(p, nan=0.0) >= t
    share = votes / n
    share[nodata] = np.nan
    return share, (min_votes - 0.5) / n


def mean_probability(probs: Sequence[np.ndarray]) -> np.ndarray:
    """The members' probability maps averaged, NaN (nodata) where any member has nodata."""
    shape0 = _check_members(probs)
    total = np.zeros(shape0, np.float32)
    nodata = np.zeros(shape0, bool)
    for p in probs:
        nodata |= np.isnan(p)
        total += np.nan_to_num(p, nan=0.0)
    mean = total / len(probs)
    mean[nodata] = np.nan
    return mean


def ensemble_mean(
    probs: Sequence[np.ndarray], thresholds: Sequence[float], threshold: float | None = None
) -> tuple[np.ndarray, float]:
    """Mean of N members' probability maps (a soft vote).

    Args:
        probs: one ``(H, W)`` probability map per member (NaN = nodata).
        thresholds: each member's own threshold; their mean is the ensemble's cut unless
            ``threshold`` is given.
        threshold: a cut chosen for the ensemble itself (on validation data), in (0, 1).

    Returns:
        ``(mean, threshold)``: the mean probability (NaN where any member has nodata) and its cut.
    """
    _check_members(probs, thresholds)
    if threshold is not None and not 0 < threshold < 1:
        raise InvalidInput("threshold", f"must be in (0, 1), got {threshold}")
    mean = mean_probability(probs)
    return mean, float(np.mean(thresholds)) if threshold is None else float(threshold)


def combine(
    probs: Sequence[np.ndarray], thresholds: Sequence[float], how: EnsembleCombine | str = EnsembleCombine.VOTE,
    min_votes: int = 0, threshold: float | None = None,
) -> tuple[np.ndarray, float]:
    """Combine members by ``how``: :func:`ensemble_vote` (``min_votes`` 0 = a majority) or
    :func:`ensemble_mean` (``threshold`` None = the mean of the members' thresholds)."""
    how = EnsembleCombine.parse(how)
    if how is EnsembleCombine.MEAN:
        return ensemble_mean(probs, thresholds, threshold)
    return ensemble_vote(probs, thresholds, min_votes or len(probs) // 2 + 1)
