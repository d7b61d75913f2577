import datetime as dt

import numpy as np
import pytest
from PIL import Image

from urbanfabric.imagery import acquisition
from pathlib import Path

from urbanfabric.errors import EmptyArea, InvalidInput
from urbanfabric.imagery.tiles import tiles_for_area
from urbanfabric.io.rasters import Raster, cog_bytes


def _xyz_folder(tmp_path, z=18, xs=range(217068, 217072), ys=range(112672, 112676)):
    for x in xs:
        for y in ys:
            d = tmp_path / str(z) / str(x)
            d.mkdir(parents=True, exist_ok=True)
            arr = np.full((256, 256, 3), (x % 7) * 20 + 10, np.uint8)
            Image.fromarray(arr).save(d / f"{y}.png")
    return tmp_path


def _local_items(tmp_path, tile_dir):
    items = []
    for block_id, raster in acquisition.mosaic_xyz_blocks(tile_dir, 18):
        hrefs = {}
        for b, name in enumerate(acquisition.BAND_ASSETS):
            p = tmp_path / f"{block_id}-{name}.tif"
            p.write_bytes(cog_bytes(Raster(raster.data[b : b + 1], raster.transform, raster.crs, 0)))
            hrefs[name] = str(p)
        items.append(acquisition.stac_item(block_id, raster, hrefs, dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)))
    return items


def test_xyz_tiles_mosaic_into_zoom16_blocks(tmp_path):
    blocks = list(acquisition.mosaic_xyz_blocks(_xyz_folder(tmp_path / "src"), 18))
    assert [b for b, _ in blocks] == ["16-54267-28168"]
    raster = blocks[0][1]
    assert raster.data.shape == (3, 1024, 1024) and raster.crs.to_epsg() == 3857
    assert raster.resolution == pytest.approx(0.5972, rel=1e-3)


def test_load_tile_with_stackstac_reprojects_onto_the_grid_with_halo(tmp_path):
    items = _local_items(tmp_path, _xyz_folder(tmp_path / "src"))
    tile = next(t for t in tiles_for_area(tuple(items[0].bbox)) if t.tile_id.endswith("54267-28168"))
    raster = acquisition.load_tile(items, tile, halo_px=32)
    assert raster.data.shape == (3, 1088, 1088) and raster.data.dtype == np.uint8
    core = raster.data[:, 32:-32, 32:-32]
    assert (core != 0).all()                    # the tile itself is covered
    assert (raster.data[:, :32, :] == 0).all()  # the halo beyond the imagery is nodata
    # Pixel values survive the round trip (same grid: no resampling).
    assert set(np.unique(core[0])) <= {(x % 7) * 20 + 10 for x in range(217068, 217072)}


def test_tile_outside_imagery_raises_empty_area(tmp_path):
    items = _local_items(tmp_path, _xyz_folder(tmp_path / "src"))
    far = tiles_for_area((10.0, 50.0, 10.001, 50.001))[0]
    with pytest.raises(EmptyArea):
        acquisition.load_tile(items, far)


def test_sample_imagery_loads(xiamen_dir, tmp_path):
    blocks = acquisition.mosaic_xyz_blocks(xiamen_dir / "tiles", 18)
    block_id, raster = next(iter(blocks))
    assert raster.data.shape == (3, 1024, 1024) and raster.data.any()


def test_corrupt_asset_is_invalid_input_naming_the_image(tmp_path):
    items = _local_items(tmp_path, _xyz_folder(tmp_path / "src"))
    Path(items[0].assets["green"].href).write_bytes(b"II*\x00" + b"garbage" * 100)
    tile = next(t for t in tiles_for_area(tuple(items[0].bbox)) if t.tile_id.endswith("54267-28168"))
    with pytest.raises(InvalidInput) as err:
        acquisition.load_tile(items, tile)
    assert err.value.field == "image" and "green" in str(err.value)


# --- Resampling that suits the direction (issue 20, item 0) ---------------------------------

from urbanfabric.imagery import scenes  # noqa: E402


def _checkerboard_items(tmp_path):
    """One zoom-16 block of 2048 px (≈ 0.27 m at 24.5° N) of 2 × 2 checkers 0 / 200 + 10."""
    (tile,) = [t for t in tiles_for_area((118.0976, 24.4772, 118.1085, 24.4871)) if t.tile_id.endswith("54267-28168")]
    res = tile.resolution / 2
    from affine import Affine
    from rasterio.crs import CRS

    yy, xx = np.mgrid[0:2048, 0:2048]
    band = np.where((yy + xx) % 2 == 0, 10, 210).astype(np.uint8)
    raster = Raster(np.stack([band] * 3), Affine(res, 0, tile.bounds[0], 0, -res, tile.bounds[3]),
                    CRS.from_epsg(3857), 0)
    hrefs = {}
    for b, name in enumerate(acquisition.BAND_ASSETS):
        p = tmp_path / f"{name}.tif"
        p.write_bytes(cog_bytes(Raster(raster.data[b:b + 1], raster.transform, raster.crs, 0)))
        hrefs[name] = str(p)
    return [acquisition.stac_item("fine", raster, hrefs, dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))], tile


def test_auto_resampling_averages_a_finer_source_down(tmp_path):
    items, tile = _checkerboard_items(tmp_path)
    assert scenes.grid_resampling(items, tile.ground_resolution_m) == "average"
    averaged = acquisition.load_tile(items, tile)            # the grid's 1024 px: 2 × 2 → 1
    nearest = acquisition.load_tile(items, tile, resampling="nearest")
    assert averaged.data.shape == (3, 1024, 1024)
    assert np.abs(averaged.data[0, 8:-8, 8:-8].astype(int) - 110).max() <= 1  # the mean of 10 and 210
    assert set(np.unique(nearest.data[0, 8:-8, 8:-8])) <= {10, 210}            # aliased samples


def test_auto_resampling_by_direction_and_gsd_of_web_mercator_scenes(tmp_path):
    items, tile = _checkerboard_items(tmp_path)
    fine = scenes.item_gsd(items[0])
    # Ground metres, not map units: the 3857 pixel × cos(24.5°).
    assert fine == pytest.approx(tile.resolution / 2 * np.cos(np.radians(24.48)), rel=1e-3)
    assert scenes.grid_resampling(items, fine) == "nearest"          # about the same size
    assert scenes.grid_resampling(items, fine * 1.04) == "nearest"   # within the 5 % tolerance
    assert scenes.grid_resampling(items, fine / 2) == "bilinear"     # upsampling
    assert scenes.grid_resampling(items, fine * 2) == "average"      # downsampling
    assert acquisition.source_gsd(items) == pytest.approx(fine)


def test_gsd_warnings_say_what_happens_to_coarse_and_fine_imagery(tmp_path):
    items, tile = _checkerboard_items(tmp_path)
    fine = scenes.item_gsd(items[0])
    (coarse_msg,) = scenes.gsd_warnings(items, fine / 4, "T")
    assert "coarser" in coarse_msg and "upsampled (bilinear)" in coarse_msg and "adds no detail" in coarse_msg
    (fine_msg,) = scenes.gsd_warnings(items, fine * 4, "T")
    assert "finer" in fine_msg and "averaged down" in fine_msg
    assert scenes.gsd_warnings(items, fine * 1.5, "T") == []


def test_unknown_resampling_is_rejected_naming_it_and_listing_auto(tmp_path):
    items, tile = _checkerboard_items(tmp_path)
    with pytest.raises(InvalidInput) as err:
        acquisition.load_tile(items, tile, resampling="bicubic-ish")
    assert err.value.field == "resampling" and "'auto'" in str(err.value)
