import numpy as np
import pytest

from urbanfabric.calibration import band_stats, iqr_scale
from urbanfabric.errors import InvalidInput


def test_iqr_scale_clips_only_extremes_and_normalises():
    rng = np.random.default_rng(0)
    band = rng.normal(100, 10, size=(1, 64, 64))
    band[0, 0, 0] = 10_000  # one extreme value
    out = iqr_scale(band)
    assert out.dtype == np.float32
    assert out.min() >= 0 and out.max() == pytest.approx(1.0)
    q1, q3 = np.percentile(band, [25, 75])
    upper = q3 + 1.5 * (q3 - q1)
    # Values inside the fence keep their order and scale linearly.
    assert out[0, 5, 5] == pytest.approx(min(band[0, 5, 5], upper) / upper, rel=1e-5)
    assert out[0, 0, 0] == 1.0


def test_bands_scaled_independently():
    img = np.stack([np.full((8, 8), 10.0), np.linspace(0, 1000, 64).reshape(8, 8)])
    stats = band_stats(img)
    assert stats.q1[0] == 10 and stats.q3[1] > stats.q3[0]


def test_nodata_pixels_become_nan_and_are_ignored():
    img = np.full((3, 4, 4), 50, dtype=np.uint8)
    img[:, 0, 0] = 0
    img[0, 1, 1] = 0  # one band zero is still a valid pixel
    out = iqr_scale(img, nodata=0)
    assert np.isnan(out[:, 0, 0]).all()
    assert np.isfinite(out[:, 1, 1]).all()


def test_bad_shape_names_the_field():
    with pytest.raises(InvalidInput) as err:
        iqr_scale(np.zeros((4, 4)))
    assert err.value.field == "image"
