"""Imagery that is truncated, corrupt, empty, nodata-only or of the wrong shape.

GeoTIFF bytes go through ``io.rasters.read_raster`` (what the calibration and segmentation
services decode), scene assets through ``imagery.acquisition.load_tile`` (what the acquisition
service reads), arrays through the calibration functions. Each case is ``InvalidInput`` naming
the field, and a good input is read right after.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import from_origin

from urbanfabric.errors import EmptyArea, InvalidInput
from urbanfabric.imagery import acquisition
from urbanfabric.imagery.calibration import area_stats, band_stats, calibrate_tile
from urbanfabric.imagery.tiles import tiles_for_area
from urbanfabric.io.rasters import Raster, cog_bytes, read_raster

from tests.unit.imagery.test_acquisition import _local_items, _xyz_folder

TRANSFORM = from_origin(13144000.0, 2814000.0, 0.6, 0.6)


def _cog(data: np.ndarray, nodata: float | None = 0) -> bytes:
    return cog_bytes(Raster(data, TRANSFORM, "EPSG:3857", nodata))


GOOD = _cog(np.full((3, 64, 64), 100, np.uint8))
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64

BLOBS: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("one-byte", b"I"),
    ("tiff-magic-only", b"II*\x00"),
    ("tiff-garbage", b"II*\x00" + b"garbage" * 100),
    ("big-endian-garbage", b"MM\x00*" + b"\xff" * 200),
    ("truncated-half", GOOD[: len(GOOD) // 2]),
    ("truncated-header", GOOD[:16]),
    ("png", PNG),
    ("jpeg", JPEG),
    ("html-error-page", b"<html><body>502 Bad Gateway</body></html>"),
    ("json", b'{"type": "FeatureCollection"}'),
    ("zeros", b"\x00" * 4096),
]


@pytest.mark.parametrize("blob", [b for _, b in BLOBS], ids=[n for n, _ in BLOBS])
def test_undecodable_image_bytes_are_invalid_input_on_image(blob):
    with pytest.raises(InvalidInput) as err:
        read_raster(blob)
    assert err.value.field == "image", str(err.value)
    assert read_raster(GOOD).data.shape == (3, 64, 64)


ARRAYS: list[tuple[str, np.ndarray, float | None, str]] = [
    ("nodata-only", np.zeros((3, 32, 32), np.uint8), 0, "tile"),
    ("nan-only", np.full((3, 32, 32), np.nan, np.float32), None, "tile"),
    ("two-dimensional", np.ones((32, 32), np.uint8), None, "image"),
    ("four-dimensional", np.ones((1, 3, 32, 32), np.uint8), None, "image"),
    ("no-pixels", np.ones((3, 0, 0), np.uint8), None, "tile"),
    ("one-band-nodata", np.stack([np.zeros((8, 8)), np.ones((8, 8)), np.ones((8, 8))]).astype(np.uint8), 0, "image"),
]


@pytest.mark.parametrize(("image", "nodata", "field"), [a[1:] for a in ARRAYS], ids=[a[0] for a in ARRAYS])
def test_arrays_that_cannot_be_calibrated_name_the_field(image, nodata, field):
    with pytest.raises(InvalidInput) as err:
        calibrate_tile(image, "16-1-1", nodata=nodata)
    assert err.value.field == field, str(err.value)
    ard, _ = calibrate_tile(np.full((3, 8, 8), 50, np.uint8) + np.arange(8, dtype=np.uint8), "16-1-1")
    assert np.isfinite(ard).all()


def test_area_statistics_refuse_mixed_band_counts_and_types():
    with pytest.raises(InvalidInput) as err:
        area_stats([np.ones((3, 8, 8), np.uint8), np.ones((4, 8, 8), np.uint8)])
    assert err.value.field == "image"
    with pytest.raises(InvalidInput) as err:
        area_stats([np.ones((3, 8, 8), np.uint8), np.ones((3, 8, 8), np.uint16)])
    assert err.value.field == "image"
    with pytest.raises(InvalidInput) as err:
        area_stats([])
    assert err.value.field == "area"


def test_band_stats_name_the_empty_band():
    img = np.ones((3, 8, 8), np.float32)
    img[1] = np.nan
    with pytest.raises(InvalidInput, match="band 1"):
        band_stats(img)


def _tile(items):
    return next(t for t in tiles_for_area(tuple(items[0].bbox)) if t.tile_id.endswith("54267-28168"))


ASSETS: list[tuple[str, bytes | None]] = [
    ("asset-garbage", b"II*\x00" + b"garbage" * 100),
    ("asset-empty", b""),
    ("asset-truncated", None),  # the real COG cut in half
    ("asset-html", b"<html>403 Forbidden</html>"),
    ("asset-missing-file", b"__delete__"),
]


@pytest.mark.parametrize("payload", [p for _, p in ASSETS], ids=[n for n, _ in ASSETS])
def test_a_broken_scene_asset_names_the_image_and_the_band(tmp_path, payload):
    items = _local_items(tmp_path, _xyz_folder(tmp_path / "src"))
    path = Path(items[0].assets["green"].href)
    if payload is None:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif payload == b"__delete__":
        path.unlink()
    else:
        path.write_bytes(payload)
    with pytest.raises(InvalidInput) as err:
        acquisition.load_tile(items, _tile(items))
    assert err.value.field == "image" and "green" in str(err.value), str(err.value)


def test_a_scene_without_a_band_names_the_bands(tmp_path):
    items = _local_items(tmp_path, _xyz_folder(tmp_path / "src"))
    del items[0].assets["blue"]
    with pytest.raises(InvalidInput) as err:
        acquisition.load_tile(items, _tile(items))
    assert err.value.field in ("bands", "image"), str(err.value)


def test_a_tile_with_only_nodata_scenes_is_refused_with_the_tile(tmp_path):
    items = _local_items(tmp_path, _xyz_folder(tmp_path / "src"))
    for name in acquisition.BAND_ASSETS:
        p = Path(items[0].assets[name].href)
        r = read_raster(p.read_bytes())
        p.write_bytes(cog_bytes(Raster(np.zeros_like(r.data), r.transform, r.crs, 0)))
    with pytest.raises(InvalidInput) as err:
        acquisition.fetch_tile(items, _tile(items))
    assert err.value.field == "tile" or isinstance(err.value, EmptyArea), str(err.value)
