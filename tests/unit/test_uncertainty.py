"""Calibration and out-of-domain scores (urbanfabric.uncertainty; issue 18, item 2)."""

from __future__ import annotations

import numpy as np
import pytest

from urbanfabric.uncertainty import (
    FeatureDensity,
    auroc,
    binary_calibration_error,
    expected_calibration_error,
    fit_temperature,
    keep_threshold,
    negative_log_likelihood,
    reliability_bins,
    sigmoid,
    softmax,
)


def _overconfident(n: int = 4000, classes: int = 4, true_t: float = 2.5, seed: int = 0):
    """Logits whose calibrated temperature is ``true_t``: labels drawn from softmax(z / true_t),
    so the raw softmax(z) is over-confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 4.0, size=(n, classes))
    p = softmax(z, true_t)
    y = np.array([rng.choice(classes, p=row) for row in p])
    return z, y


def test_ece_of_a_perfectly_calibrated_and_an_overconfident_model():
    z, y = _overconfident()
    calibrated = expected_calibration_error(softmax(z, 2.5), y)
    raw = expected_calibration_error(softmax(z), y)
    assert calibrated < 0.03
    assert raw > 0.15  # confident logits, labels drawn from a flatter distribution


def test_ece_by_hand():
    # Two bins used: 0.9 confident right twice and wrong once; 0.6 confident right once.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    labels = np.array([0, 0, 1, 1])
    # bin of 0.9: 3 items, accuracy 2/3, conf 0.9 -> |0.667-0.9| * 3/4; bin of 0.6: acc 0, conf 0.6 -> 0.6/4
    # (the third row predicts class 1 with 0.9 and is right: accuracy 3/3 in the 0.9 bin)
    expected = (3 / 4) * abs(1.0 - 0.9) + (1 / 4) * abs(0.0 - 0.6)
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)


def test_fit_temperature_recovers_the_temperature_of_an_overconfident_model():
    z, y = _overconfident()
    t = fit_temperature(z, y)
    assert t == pytest.approx(2.5, rel=0.1)
    assert negative_log_likelihood(z, y, t) < negative_log_likelihood(z, y, 1.0)
    assert expected_calibration_error(softmax(z, t), y) < 0.03
    assert fit_temperature(z, y) == t  # deterministic


def test_fit_temperature_multi_label():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 5.0, size=(3000, 3))
    targets = (rng.random(z.shape) < sigmoid(z, 3.0)).astype(float)
    t = fit_temperature(z, targets, multi_label=True)
    assert t == pytest.approx(3.0, rel=0.12)
    assert binary_calibration_error(sigmoid(z, t), targets) < binary_calibration_error(sigmoid(z), targets)


def test_reliability_bins_count_every_prediction():
    conf = np.array([0.05, 0.5, 0.51, 1.0])
    conf_mean, acc, count = reliability_bins(conf, np.array([0, 1, 1, 1]), 10)
    assert count.sum() == 4 and count[9] == 1 and count[5] == 2
    assert acc[0] == 0 and np.isnan(acc[3])


def test_auroc():
    assert auroc([0, 1, 2], [3, 4]) == 1.0
    assert auroc([3, 4], [0, 1, 2]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5


def test_feature_density_separates_shifted_features_and_keeps_the_validation_share(tmp_path):
    rng = np.random.default_rng(0)
    cov = rng.normal(size=(20, 20))
    train = rng.normal(size=(600, 20)) @ cov
    val = rng.normal(size=(300, 20)) @ cov
    test = rng.normal(size=(300, 20)) @ cov
    shifted = rng.normal(size=(300, 20)) @ cov + 3.0 * np.sign(rng.normal(size=20)) * train.std(0)
    density = FeatureDensity.fit(train, max_components=8)
    thr = density.choose_threshold(val, keep=0.95)
    assert thr == keep_threshold(density.score(val), 0.95)
    assert (density.score(val) <= thr).mean() >= 0.95
    assert 0.85 <= (~density.out_of_domain(density.score(test))).mean() <= 1.0
    assert auroc(density.score(test), density.score(shifted)) > 0.95
    # Off-subspace directions count too: a shift along an axis the 8 kept components leave out.
    axis = np.linalg.svd(train - train.mean(0))[2][10]
    off = test + 6 * (train @ axis).std() * axis
    assert auroc(density.score(test), density.score(off)) > 0.8  # 0.5 without the residual term
    back = FeatureDensity.load(density.save(tmp_path / "domain.npz"))
    np.testing.assert_allclose(back.score(test), density.score(test))
    assert back.threshold == thr


def test_feature_density_for_tabular_features_names_the_features_out_of_range():
    rng = np.random.default_rng(3)
    train = np.column_stack([rng.lognormal(4, 1, 500), rng.normal(0, 1, 500), rng.integers(0, 5, 500)])
    density = FeatureDensity.fit(train, robust=True, compress=True, names=("area_m2", "b", "n"))
    row = np.array([[1e7, 0.0, 2.0], [np.exp(4), np.nan, 2.0]])
    assert density.out_of_range(row)[0] == ["area_m2"] and density.out_of_range(row)[1] == []
    s = density.score(row)
    assert s[0] > 3 * s[1] and np.isfinite(s).all()  # NaN counts as the centre


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError):
        expected_calibration_error(np.ones((3, 2)) / 2, np.array([0, 1]))
    with pytest.raises(ValueError):
        FeatureDensity.fit(np.ones((3, 2)))
    d = FeatureDensity.fit(np.random.default_rng(0).normal(size=(50, 4)))
    with pytest.raises(ValueError):
        d.score(np.ones((2, 5)))
    with pytest.raises(ValueError):
        keep_threshold(np.array([np.nan]))


def test_neighbour_distance_flags_features_away_from_every_training_image(tmp_path):
    from urbanfabric.uncertainty import NeighbourDistance, load_domain

    rng = np.random.default_rng(5)
    centres = rng.normal(size=(4, 64)) * 3  # training images in four clusters (not one Gaussian)
    def draw(n, c):
        return np.abs(c[rng.integers(0, len(c), n)] + rng.normal(size=(n, 64)))
    train, val, test = draw(400, centres), draw(100, centres), draw(200, centres)
    shifted = draw(200, rng.normal(size=(3, 64)) * 3)
    nn = NeighbourDistance.fit(train, k=5)
    thr = nn.choose_threshold(val, 0.95)
    assert (nn.score(val) <= thr).mean() >= 0.95
    assert auroc(nn.score(test), nn.score(shifted)) > 0.95
    assert nn.score(train[:3]).max() < nn.score(shifted).min()
    back = load_domain(nn.save(tmp_path / "domain.npz"))
    assert isinstance(back, NeighbourDistance) and back.threshold == thr and back.k == 5
    np.testing.assert_allclose(back.score(test), nn.score(test))
    np.testing.assert_array_equal(back.score(test), back.score(test.copy()))  # deterministic
    dens = FeatureDensity.fit(train)
    assert isinstance(load_domain(dens.save(tmp_path / "d2.npz")), FeatureDensity)


def test_tabular_neighbour_distance_standardises_and_names_the_features_out_of_range(tmp_path):
    from urbanfabric.uncertainty import NeighbourDistance, load_domain

    rng = np.random.default_rng(7)
    def town(n, scale):  # area (heavy-tailed), a count, a fraction
        return np.column_stack([rng.lognormal(np.log(scale), 0.6, n), rng.poisson(8, n), rng.beta(2, 5, n)])
    train, val, test, other = town(800, 150), town(200, 150), town(200, 150), town(200, 3000)
    nn = NeighbourDistance.fit(train, k=5, tabular=True, names=("area_m2", "n_within_50m", "coverage"))
    nn.choose_threshold(val)
    assert auroc(nn.score(test), nn.score(other)) > 0.95
    assert np.mean(nn.out_of_domain(nn.score(other))) > 0.8
    assert "area_m2" in nn.out_of_range(np.array([[1e6, 8, 0.3]]))[0]
    with_nan = nn.score(np.array([[150.0, np.nan, 0.3]]))
    assert np.isfinite(with_nan).all()  # a missing feature counts as the training centre
    back = load_domain(nn.save(tmp_path / "domain.npz"))
    assert isinstance(back, NeighbourDistance) and back.standardiser is not None
    np.testing.assert_allclose(back.score(test), nn.score(test), rtol=1e-6)
    assert back.out_of_range(np.array([[1e6, 8, 0.3]])) == nn.out_of_range(np.array([[1e6, 8, 0.3]]))


def test_split_conformal_limits_ranks_and_coverage() -> None:
    from urbanfabric.uncertainty import split_conformal_limits

    r = np.arange(1, 20, dtype=float)  # n = 19: ranks ⌊20·0.05⌋ = 1 and ⌈20·0.95⌉ = 19
    assert split_conformal_limits(r, 0.9) == (1.0, 19.0)
    r = np.arange(1, 100, dtype=float)  # n = 99: ranks 5 and 95
    assert split_conformal_limits(r, 0.9) == (5.0, 95.0)
    rng = np.random.default_rng(0)
    cal, new = rng.standard_t(3, 2000), rng.standard_t(3, 20000)
    lo, hi = split_conformal_limits(cal, 0.8)
    assert 0.77 <= np.mean((new >= lo) & (new <= hi)) <= 0.83
    assert split_conformal_limits(np.array([np.nan, 2.0]), 0.9) == (2.0, 2.0)
    with pytest.raises(ValueError):
        split_conformal_limits(np.array([np.nan]), 0.9)
    with pytest.raises(ValueError):
        split_conformal_limits(np.array([1.0, 2.0]), 1.0)
