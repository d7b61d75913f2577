"""Combining segmentation members: GBM's k-of-N vote and the mean probability."""

import numpy as np
import pytest

from urbanfabric.footprints.ensemble import (
    EnsembleCombine,
    combine,
    ensemble_mean,
    ensemble_vote,
    mean_probability,
)
from urbanfabric.errors import InvalidInput

A = np.array([[0.9, 0.9, 0.1]], np.float32)
B = np.array([[0.8, 0.2, 0.1]], np.float32)
C = np.array([[0.7, 0.3, np.nan]], np.float32)


def test_ensemble_vote_k_of_n():
    share, thr = ensemble_vote([A, B, C], [0.5, 0.5, 0.5], min_votes=2)
    assert (share[0, :2] >= thr).tolist() == [True, False]
    assert np.isnan(share[0, 2])
    share, thr = ensemble_vote([A, B, C], [0.5, 0.5, 0.5], min_votes=1)
    assert (share[0, :2] >= thr).tolist() == [True, True]
    with pytest.raises(InvalidInput):
        ensemble_vote([A, B], [0.5, 0.5], min_votes=3)


def test_mean_lets_the_confident_member_decide_where_two_disagree():
    # Two members: a vote can only be the union or the intersection; the mean keeps the pixel
    # one member is sure of (0.95) and drops the one the other barely calls (0.55).
    sure = np.array([[0.95, 0.55, 0.05]], np.float32)
    unsure = np.array([[0.40, 0.05, 0.05]], np.float32)
    mean, thr = ensemble_mean([sure, unsure], [0.5, 0.5])
    assert thr == pytest.approx(0.5)
    assert ((mean >= thr)[0]).tolist() == [True, False, False]
    union, t1 = ensemble_vote([sure, unsure], [0.5, 0.5], 1)
    inter, t2 = ensemble_vote([sure, unsure], [0.5, 0.5], 2)
    assert ((union >= t1)[0]).tolist() == [True, True, False]
    assert ((inter >= t2)[0]).tolist() == [False, False, False]


def test_mean_threshold_defaults_to_members_mean_and_nodata_stays():
    mean, thr = ensemble_mean([A, B, C], [0.3, 0.4, 0.5])
    assert thr == pytest.approx(0.4)
    assert mean[0, 0] == pytest.approx(0.8)
    assert np.isnan(mean[0, 2])
    _, thr = ensemble_mean([A, B], [0.3, 0.4], threshold=0.25)
    assert thr == 0.25


@pytest.mark.parametrize(("probs", "thresholds", "kw", "field"), [
    ([], [], {}, "models"),
    ([A, B], [0.5], {}, "thresholds"),
    ([A, np.zeros((2, 2), np.float32)], [0.5, 0.5], {}, "models"),
    ([A, B], [0.5, 0.5], {"threshold": 1.0}, "threshold"),
])
def test_mean_bad_input_names_the_field(probs, thresholds, kw, field):
    with pytest.raises(InvalidInput) as e:
        ensemble_mean(probs, thresholds, **kw)
    assert e.value.field == field


def test_combine_dispatches_on_the_enum():
    share, thr = combine([A, B, C], [0.5] * 3, "vote")  # default k: a majority of 3 = 2
    assert thr == pytest.approx(1.5 / 3)
    mean, thr = combine([A, B, C], [0.5] * 3, EnsembleCombine.MEAN)
    np.testing.assert_allclose(mean[0, :2], [0.8, 1.4 / 3], rtol=1e-6)
    assert EnsembleCombine.parse(None) is EnsembleCombine.VOTE
    with pytest.raises(InvalidInput, match="ensemble_combine"):
        EnsembleCombine.parse("median")


def test_mean_probability_is_the_mean_ensembles_map_with_nodata_kept() -> None:
    a = np.array([[0.2, np.nan], [0.9, 0.4]], np.float32)
    b = np.array([[0.6, 0.5], [0.1, 0.4]], np.float32)
    mean = mean_probability([a, b])
    np.testing.assert_allclose(mean, [[0.4, np.nan], [0.5, 0.4]], rtol=1e-6)
    np.testing.assert_array_equal(mean, ensemble_mean([a, b], [0.3, 0.5])[0])
    with pytest.raises(InvalidInput, match="models"):
        mean_probability([a, b[:1]])
