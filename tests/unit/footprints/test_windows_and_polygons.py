import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from shapely.geometry import box

from urbanfabric.errors import InvalidInput
from urbanfabric.footprints.tta import TTA, with_tta
from urbanfabric.footprints.seams import merge_seams
from urbanfabric.footprints.polygons import polygonize
from urbanfabric.footprints.windows import predict_tiled

# 0.6 m pixels in Web Mercator near Xiamen.
ORIGIN = Affine(0.6, 0, 13146000.0, 0, -0.6, 2813000.0)


def test_tiled_prediction_has_no_seams():
    """A per-pixel model must come out of window blending unchanged (no seams, no drift)."""
    rng = np.random.default_rng(1)
    image = rng.random((3, 700, 900), dtype=np.float32)
    out = predict_tiled(image, lambda b: b[:, 0], window=256, overlap=64, batch_size=3)
    np.testing.assert_allclose(out, image[0], rtol=1e-5, atol=1e-6)


def test_tiled_prediction_keeps_nodata_and_pads_small_images():
    image = np.full((3, 100, 120), 0.5, np.float32)
    image[:, :10, :10] = np.nan
    out = predict_tiled(image, lambda b: b.mean(axis=1), window=128, overlap=32)
    assert out.shape == (100, 120)
    assert np.isnan(out[:10, :10]).all() and np.isfinite(out[10:, 10:]).all()


def test_tiled_prediction_rejects_wrong_model_output():
    with pytest.raises(Exception, match="model"):
        predict_tiled(np.zeros((3, 64, 64), np.float32), lambda b: b[:, 0, :10], window=64, overlap=0)


def test_polygonize_rectangles_with_area_confidence_and_border_flag():
    prob = np.zeros((200, 200), np.float32)
    prob[50:100, 40:80] = 0.9  # 30 m × 24 m in mercator units → ~720 m² × cos²(lat) on the ground
    prob[150:200, 0:20] = 0.7  # touches the bottom/left edge
    prob[10:12, 10:12] = 0.9  # 1.4 m² speck, below the minimum area
    fp = polygonize(prob, ORIGIN, "EPSG:3857", threshold=0.5, min_area_m2=10, tile_id="t1")
    assert len(fp) == 2 and fp.crs.to_epsg() == 4326
    big = fp.loc[fp["footprint_area_m2"].idxmax()]
    lat = 24.5
    expected = 30 * 24 * np.cos(np.radians(lat)) ** 2
    assert big["footprint_area_m2"] == pytest.approx(expected, rel=0.03)
    assert big["footprint_confidence"] == pytest.approx(0.9)
    assert not big["on_border"]
    assert fp["on_border"].sum() == 1
    assert fp["building_id"].is_unique and (fp["tile_id"] == "t1").all()


def test_polygonize_is_deterministic_ids():
    prob = np.zeros((64, 64), np.float32)
    prob[10:30, 10:30] = 1
    a = polygonize(prob, ORIGIN, "EPSG:3857")
    b = polygonize(prob, ORIGIN, "EPSG:3857")
    assert list(a["building_id"]) == list(b["building_id"])


def test_merge_seams_joins_border_pieces_only():
    def frame(geoms, border):
        g = gpd.GeoSeries(geoms, crs="EPSG:32650").to_crs("EPSG:4326")
        return gpd.GeoDataFrame({
            "building_id": [f"b{i}" for i in range(len(geoms))],
            "footprint_confidence": 0.8, "footprint_area_m2": [x.area for x in geoms],
            "footprint_source": "segmented", "tile_id": ["a", "b", "a", "a"][: len(geoms)],
            "on_border": border}, geometry=g)

    x0, y0 = 600000, 2710000
    left = box(x0, y0, x0 + 10, y0 + 10)          # a building split at x0+10 by a tile border
    right = box(x0 + 10.4, y0, x0 + 20, y0 + 10)
    a = box(x0 + 100, y0, x0 + 110, y0 + 10)      # two interior buildings 2 m apart stay apart
    b = box(x0 + 112, y0, x0 + 122, y0 + 10)
    merged = merge_seams(frame([left, right, a, b], [True, True, False, False]))
    assert len(merged) == 3
    joined = merged.to_crs("EPSG:32650").geometry.area.max()
    assert joined == pytest.approx(200, rel=0.05)


def test_merge_seams_does_not_depend_on_tile_arrival_order():
    # Three pieces of one building across three tiles, with confidences whose weighted mean
    # rounds differently when summed in another order.
    x0, y0 = 600000, 2710000
    pieces = [box(x0, y0, x0 + 10, y0 + 10), box(x0 + 10.4, y0, x0 + 17, y0 + 10),
              box(x0 + 17.4, y0, x0 + 30, y0 + 10)]
    g = gpd.GeoSeries(pieces, crs="EPSG:32650").to_crs("EPSG:4326")
    frame = gpd.GeoDataFrame({
        "building_id": ["p0", "p1", "p2"], "footprint_confidence": [0.3, 0.42, 0.03],
        "footprint_area_m2": [p.area for p in pieces], "footprint_source": "segmented",
        "tile_id": ["t0", "t1", "t2"], "on_border": True}, geometry=g)
    results = [merge_seams(frame.iloc[list(order)]) for order in ((0, 1, 2), (2, 1, 0), (1, 2, 0))]
    for other in results[1:]:
        assert other["footprint_confidence"].tolist() == results[0]["footprint_confidence"].tolist()
        assert other["building_id"].tolist() == results[0]["building_id"].tolist()
        assert other.geometry.geom_equals_exact(results[0].geometry, 0).all()


def _skewed_model(batch: np.ndarray) -> np.ndarray:
    """A model with a favourite direction: red plus a ramp along the columns (not symmetric)."""
    ramp = np.linspace(0.0, 1.0, batch.shape[-1], dtype=np.float32)
    return 0.5 * batch[:, 0] + 0.5 * ramp[None, None, :]


def test_tta_of_a_symmetric_model_changes_nothing():
    rng = np.random.default_rng(0)
    batch = rng.random((2, 3, 16, 16), dtype=np.float32)

    def pixelwise(b):
        return b.mean(axis=1)

    for tta in (TTA.NONE, TTA.FLIPS, TTA.D4):
        np.testing.assert_allclose(with_tta(pixelwise, tta)(batch), pixelwise(batch), atol=1e-6)
    # Zooming in and back out is only exact on smooth images (bilinear resampling).
    yy, xx = np.mgrid[0:16, 0:16].astype(np.float32) / 15
    smooth = np.stack([np.stack([yy, xx, 0.5 * (xx + yy)])] * 2)
    np.testing.assert_allclose(with_tta(pixelwise, TTA.D4_ZOOM)(smooth), pixelwise(smooth), atol=0.02)


@pytest.mark.parametrize("tta, transforms", [
    ("flips", [lambda a: a[..., ::-1], lambda a: a[..., ::-1, :]]),
    ("d4", [lambda a: a[..., ::-1], lambda a: a[..., ::-1, :], lambda a: np.swapaxes(a, -1, -2),
            lambda a: np.rot90(a, 1, axes=(-2, -1))]),
    ("d4-zoom", [lambda a: a[..., ::-1], lambda a: np.rot90(a, 1, axes=(-2, -1))]),
])
def test_tta_makes_the_prediction_follow_the_image(tta, transforms):
    """Averaged over a group of views, flipping the input flips the output (equivariance) —
    which the skewed model alone does not do."""
    rng = np.random.default_rng(1)
    batch = rng.random((2, 3, 16, 16), dtype=np.float32)
    model = with_tta(_skewed_model, tta)
    for t in transforms:
        np.testing.assert_allclose(model(np.ascontiguousarray(t(batch))), t(model(batch)), atol=1e-5)
    flipped = np.ascontiguousarray(batch[..., ::-1])
    assert not np.allclose(_skewed_model(flipped), _skewed_model(batch)[..., ::-1], atol=1e-3)


def test_tta_calls_the_model_once_per_view_with_the_same_batch_size():
    calls = []

    def counting(b):
        calls.append(b.shape)
        return b[:, 0]

    with_tta(counting, "d4")(np.zeros((3, 3, 8, 8), np.float32))
    assert calls == [(3, 3, 8, 8)] * TTA.D4.views


def test_zoom_tta_predicts_magnified_windows_and_returns_native_size():
    calls = []

    def counting(b):
        calls.append(b.shape)
        return b[:, 0]

    out = with_tta(counting, "d4-zoom")(np.zeros((2, 3, 32, 32), np.float32))
    assert out.shape == (2, 32, 32) and len(calls) == TTA.D4_ZOOM.views == 16
    assert calls == [(2, 3, 32, 32)] * 8 + [(2, 3, 40, 40)] * 8


def test_zoom_tta_helps_a_model_that_misses_small_buildings():
    # A model that only sees buildings of at least 6 px across (like a net trained at a finer
    # GSD): magnified ×1.25 a 5 px building becomes 6 px and is found in half the views.
    from scipy import ndimage

    def big_only(b):
        m = b[:, 0] > 0.3
        return np.stack([ndimage.binary_opening(x, np.ones((6, 6))) for x in m]).astype(np.float32)

    batch = np.zeros((1, 3, 32, 32), np.float32)
    batch[:, :, 14:19, 14:19] = 1.0  # 5 × 5 px
    assert with_tta(big_only, "d4")(batch).max() == 0.0
    prob = with_tta(big_only, "d4-zoom")(batch)
    assert prob[0, 16, 16] == pytest.approx(0.5, abs=0.1) and prob[0, 2, 2] == 0.0


def test_tta_inside_tiled_prediction_keeps_shape_and_nodata():
    image = np.random.default_rng(2).random((3, 70, 90), dtype=np.float32)
    image[:, :5, :5] = np.nan
    prob = predict_tiled(image, with_tta(_skewed_model, "flips"), window=32, overlap=8)
    assert prob.shape == (70, 90) and np.isnan(prob[:5, :5]).all() and np.isfinite(prob[10:, 10:]).all()


def test_tta_names_the_field_on_bad_input():
    with pytest.raises(InvalidInput, match="tta"):
        TTA.parse("mirror")
    with pytest.raises(InvalidInput, match="square"):
        with_tta(_skewed_model, "d4")(np.zeros((1, 3, 8, 16), np.float32))
    assert TTA.parse("") is TTA.NONE and TTA.parse(" D4 ") is TTA.D4
