"""Window layouts of the segmentation (issue 22, item 6): exact cost, coverage, no seams."""

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage
from urbanfabric.errors import InvalidInput
from urbanfabric.footprints.options import SegmentationOptions
from urbanfabric.footprints.tile_segmentation import segment_tile
from urbanfabric.footprints.tta import with_tta
from urbanfabric.footprints.windows import (
    WindowLayout,
    model_pixels_per_output_pixel,
    plan_windows,
    predict_tiled,
)
from urbanfabric.io.rasters import Raster

CORE = 1024 * 1024
ORIGIN = Affine(0.6, 0, 13146000.0, 0, -0.6, 2813000.0)


def _old_starts(length: int, window: int, stride: int) -> list[int]:
    """The window starts of predict_tiled before issue 22 (copied), to pin the default."""
    if length <= window:
        return [0]
    return [*range(0, length - window, stride), length - window]


@pytest.mark.parametrize("side", [300, 512, 1024, 1088, 1280, 1800, 2304])
def test_fixed_layout_is_the_old_one(side: int) -> None:
    plan = plan_windows(side, side + 37)  # defaults: fixed, 512 px, 128 px overlap
    assert plan.window == 512
    assert list(plan.row_starts) == _old_starts(max(side, 512), 512, 384)
    assert list(plan.col_starts) == _old_starts(max(side + 37, 512), 512, 384)


def test_model_pixels_per_output_pixel_of_a_zoom16_tile() -> None:
    # 1024 px core + 32 px halo: 3 x 3 windows of 512 px = 2.25; one 1088 px window = 1.13.
    assert model_pixels_per_output_pixel(plan_windows(1088, 1088), CORE) == 2.25
    fit = plan_windows(1088, 1088, layout="fit")
    assert (fit.count, fit.window) == (1, 1088)
    assert model_pixels_per_output_pixel(fit, CORE) == pytest.approx(1088**2 / CORE)
    # The default 128 px halo: 2.25 -> 1.5625; d4 multiplies both by 8.
    assert model_pixels_per_output_pixel(plan_windows(1280, 1280), CORE, views=8) == 18.0
    assert model_pixels_per_output_pixel(plan_windows(1280, 1280, layout="fit"), CORE) == 1.5625


@pytest.mark.parametrize("rows,cols", [(1, 1), (31, 700), (1088, 1088), (1537, 1537), (2304, 2304),
                                       (3000, 1200), (4096, 333), (1479, 2149)])
@pytest.mark.parametrize("overlap", [0, 64, 128])
def test_fit_layout_covers_with_the_overlap_and_model_sized_windows(rows: int, cols: int, overlap: int) -> None:
    plan = plan_windows(rows, cols, overlap=overlap, layout=WindowLayout.FIT, max_window=1536)
    side = plan.window
    assert side % 32 == 0 and side <= 1536
    H, W = plan.padded_shape
    assert H == max(rows, side) and W == max(cols, side)
    for starts, length in ((plan.row_starts, H), (plan.col_starts, W)):
        assert starts[0] == 0 and starts[-1] + side == length
        gaps = np.diff(starts)
        assert (side - gaps >= overlap).all()  # neighbours share at least the overlap
    # Never more windows than the fixed 512 px layout needs.
    assert plan.count <= plan_windows(rows, cols, overlap=min(overlap, 128)).count


def test_fit_splits_large_images_into_the_fewest_windows() -> None:
    plan = plan_windows(2304, 2304, layout="fit", max_window=1536)  # a 2 x 2 block with halo
    assert plan.count == 4 and plan.window == 1216
    assert plan.row_starts == (0, 1088)  # 128 px shared
    assert model_pixels_per_output_pixel(plan, 4 * CORE) < 1.42


def test_bad_layouts_name_their_field() -> None:
    with pytest.raises(InvalidInput, match="window_layout"):
        plan_windows(1088, 1088, layout="adaptive")
    with pytest.raises(InvalidInput, match="max_window"):
        plan_windows(1088, 1088, overlap=128, layout="fit", max_window=128)
    with pytest.raises(InvalidInput, match="overlap"):
        plan_windows(1088, 1088, window=512, overlap=512)
    # An image that fits one window never steps, so any overlap is fine (footprint_eval's small scenes).
    assert plan_windows(60, 60, window=64, overlap=64).count == 1
    with pytest.raises(InvalidInput, match="output_pixels"):
        model_pixels_per_output_pixel(plan_windows(10, 10), 0)


def _local_model(batch: np.ndarray) -> np.ndarray:
    """A small fully convolutional stand-in: a 9 x 9 mean of the first band (zero padded)."""
    return ndimage.uniform_filter(batch[:, 0], size=(1, 9, 9), mode="constant").astype(np.float32)


@pytest.mark.parametrize("layout", ["fixed", "fit"])
def test_both_layouts_equal_the_whole_image_model_away_from_window_edges(layout: str) -> None:
    """A local model over a tile with halo: the kept core is what the model gives on the whole
    image, whichever way the windows are cut (the blend and the cut add nothing)."""
    rng = np.random.default_rng(3)
    image = rng.random((3, 1088, 1088), dtype=np.float32)
    whole = _local_model(image[None])[0]
    out = predict_tiled(image, _local_model, layout=layout)
    core = (slice(32, -32), slice(32, -32))
    # fit: exact. fixed: inner window edges fall in the core, and near the halo's corners the
    # blend weight's 1e-3 floor is a few % of the other window's, so edge effects leak (~1e-2).
    atol = 1e-6 if layout == "fit" else 2e-2
    np.testing.assert_allclose(out[core], whole[core], atol=atol)


def test_fit_layout_under_tta_keeps_square_windows() -> None:
    image = np.random.default_rng(4).random((3, 1088, 1100), dtype=np.float32)
    shapes = []

    def model(batch: np.ndarray) -> np.ndarray:
        shapes.append(batch.shape)
        return batch[:, 0]

    out = predict_tiled(image, with_tta(model, "flips"), layout="fit")
    np.testing.assert_allclose(out, image[0], rtol=1e-5, atol=1e-6)
    assert set(shapes) == {(1, 3, 1120, 1120)}  # one window (1100 rounded up to 32), 4 views


def _tile(image: np.ndarray, r: int, c: int, halo: int) -> Raster:
    block = image[:, r - halo : r + 1024 + halo, c - halo : c + 1024 + halo]
    return Raster(block, ORIGIN @ Affine.translation(c - halo, r - halo), CRS.from_epsg(3857), None)


@pytest.mark.parametrize("halo", [32, 128])
def test_no_seam_between_neighbouring_tiles_with_the_fit_layout(halo: int) -> None:
    """Two neighbouring tiles of one scene, each segmented with its halo as one window: the
    pixels along their shared border get the same probability from both (the halo gives the
    model the neighbour's context), and the footprints agree across the border."""
    rng = np.random.default_rng(5)
    image = ndimage.uniform_filter(rng.random((3, 1024 + 2 * halo, 2048 + 2 * halo)).astype(np.float32),
                                   size=(1, 15, 15))
    calls: list[tuple[int, ...]] = []

    def infer(name: str, version: str, batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return _local_model(batch)

    options = SegmentationOptions(threshold=0.5)
    left = segment_tile(_tile(image, halo, halo, halo), "a", options, infer, halo_px=halo, layout="fit")
    right = segment_tile(_tile(image, halo, halo + 1024, halo), "b", options, infer, halo_px=halo, layout="fit")
    side = 1024 + 2 * halo
    assert calls == [(1, 3, side, side)] * 2  # one model call per tile
    # Border columns: left core's last 4 vs the right core's first 4 from the same image.
    whole = _local_model(image[None])[0][halo:-halo, halo:-halo]
    np.testing.assert_allclose(left.probability[:, -4:], whole[:, 1020:1024], atol=1e-6)
    np.testing.assert_allclose(right.probability[:, :4], whole[:, 1024:1028], atol=1e-6)
    assert left.transform.c + 1024 * 0.6 == pytest.approx(right.transform.c)


def test_segment_tile_fixed_default_cuts_nine_512_windows() -> None:
    image = np.random.default_rng(6).random((3, 1088, 1088)).astype(np.float32)
    calls: list[tuple[int, ...]] = []

    def infer(name: str, version: str, batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return batch[:, 0]

    segment_tile(_tile(image, 32, 32, 32), "t", SegmentationOptions(threshold=0.5), infer, halo_px=32)
    assert sum(s[0] for s in calls) == 9 and {s[2:] for s in calls} == {(512, 512)}
