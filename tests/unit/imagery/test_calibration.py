import numpy as np
import pytest

from urbanfabric.imagery.calibration import band_stats, iqr_scale
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


def test_area_statistics_are_exact_for_8_bit_tiles_and_stream():
    from urbanfabric.imagery.calibration import AreaStats, area_stats

    rng = np.random.default_rng(1)
    tiles = [rng.integers(0, 256, size=(3, 32, 32), dtype=np.uint8) for _ in range(5)]
    tiles[2][:, :10] = 0  # nodata strip
    stats = area_stats(iter(tiles), nodata=0)
    pooled = np.concatenate([t.reshape(3, -1) for t in tiles], axis=1)
    for b in range(3):
        valid = pooled[b][pooled[b] != 0]
        q1, q3 = np.percentile(valid, [25, 75])
        assert stats.q1[b] == pytest.approx(q1) and stats.q3[b] == pytest.approx(q3)
    # Float data: a bounded sample, close to the pooled quartiles.
    acc = AreaStats(sample_per_tile=4000)
    floats = [rng.normal(100 + 10 * i, 5, size=(1, 100, 100)) for i in range(4)]
    for t in floats:
        acc.add(t)
    q1, q3 = np.percentile(np.concatenate([f.ravel() for f in floats]), [25, 75])
    got = acc.stats()
    assert got.q1[0] == pytest.approx(q1, abs=1.0) and got.q3[0] == pytest.approx(q3, abs=1.0)


def test_city_scaling_keeps_tiles_on_one_scale_while_patch_scaling_does_not():
    from urbanfabric.imagery.calibration import BandStats, area_stats, calibrate_tile

    dark = np.full((1, 8, 8), 40, np.uint8)
    dark[0, :4] = 20
    bright = dark * 3
    city = area_stats([dark, bright])
    a, _ = calibrate_tile(dark, "t1", city)
    b, _ = calibrate_tile(bright, "t2", city)
    assert b.mean() > 2 * a.mean()  # the bright tile stays brighter on the city scale
    pa, _ = calibrate_tile(dark, "t1")
    pb, _ = calibrate_tile(bright, "t2")
    assert pa.mean() == pytest.approx(pb.mean(), rel=1e-5)  # per patch both look alike
    assert BandStats.from_json(city.to_json()) == city


def test_all_nodata_tile_is_a_clear_error_naming_the_tile():
    from urbanfabric.imagery.calibration import calibrate_tile

    with pytest.raises(InvalidInput) as err:
        calibrate_tile(np.zeros((3, 16, 16), np.uint8), "WebMercatorQuad-16-1-2", nodata=0)
    assert err.value.field == "tile" and "WebMercatorQuad-16-1-2" in err.value.message
    with pytest.raises(InvalidInput) as err:
        calibrate_tile(np.full((2, 4, 4), np.nan, np.float32), "t9")
    assert "t9" in err.value.message


def test_coregistration_recovers_a_known_shift_on_a_real_tile(xiamen_dir):
    from PIL import Image

    from models.common.coregistration import align_label, estimate_shift

    # A validation tile with clear building edges. The method is not this reliable on every
    # tile: bench/coregistration_check.py measures it over the validation split.
    x, y = 217085, 112672
    image = np.asarray(Image.open(xiamen_dir / f"tiles/18/{x}/{y}.webp").convert("RGB")).transpose(2, 0, 1)
    mask = (np.asarray(Image.open(xiamen_dir / f"masks/18/{x}/{y}.png")) > 0).astype(np.uint8)  # palette 0/1
    assert mask.mean() > 0.05
    baseline = estimate_shift(image, mask)
    # The sample labels are already close to the imagery: the estimate must stay small …
    assert max(abs(v) for v in baseline) <= 3
    for offset in [(5, -7), (-4, 3), (0, 9)]:
        shifted = align_label(mask, offset)
        dy, dx = estimate_shift(image, shifted)
        # … and a label moved by a known offset must be moved back by that offset.
        assert (dy, dx) == (baseline[0] - offset[0], baseline[1] - offset[1])
    flat = np.zeros_like(mask)
    assert estimate_shift(image, flat) == (0, 0)


def test_coregister_keeps_the_label_when_the_peak_is_on_the_search_border():
    from models.common.coregistration import coregister

    rng = np.random.default_rng(3)
    label = np.zeros((64, 64), np.uint8)
    label[20:40, 16:30] = 1
    image = np.stack([np.roll(label, (2, -3), axis=(0, 1)) * 200 + rng.integers(0, 20, (64, 64))] * 3)
    aligned, shift, reliable = coregister(image, label, max_shift=8)
    assert reliable and shift == (2, -3) and (aligned[22:42, 13:27] == 1).all()
    far = np.stack([np.roll(label, (12, 0), axis=(0, 1)) * 200] * 3)
    same, shift, reliable = coregister(far, label, max_shift=4)
    assert not reliable and same is label
