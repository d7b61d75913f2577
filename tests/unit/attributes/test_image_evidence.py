"""Image evidence for height: synthetic chips with a shadow of known length (issue 18)."""

from __future__ import annotations

import math

import affine
import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from urbanfabric.attributes.chip_reader import RasterChipReader, metres_per_unit
from urbanfabric.attributes.image_evidence import (
    IMAGE_FEATURE_NAMES,
    REASON_NO_IMAGERY,
    REASON_NODATA,
    REASON_TOO_SMALL,
    ImageChip,
    SunGeometry,
    estimate_shadow_azimuth,
    image_evidence_features,
)
from urbanfabric.errors import InvalidInput
from pyproj import CRS

PX = 0.5  # metres per pixel
X0, Y0 = 500_000.0, 2_710_000.0  # UTM 50N (Xiamen), metres


def scene(shadow_m: float, shadow_dir: str = "north", size_m: float = 240.0,
          buildings: tuple[tuple[float, float, float], ...] = ((120.0, 120.0, 20.0),),
          seed: int = 0) -> tuple[np.ndarray, affine.Affine]:
    """Grey ground, bright square roofs, and a dark shadow of ``shadow_m`` beyond each roof."""
    n = int(size_m / PX)
    rng = np.random.default_rng(seed)
    img = 0.45 + 0.03 * rng.standard_normal((3, n, n))
    for cx, cy, side in buildings:
        c0, c1 = int((cx - side / 2) / PX), int((cx + side / 2) / PX)
        r0, r1 = int((size_m - cy - side / 2) / PX), int((size_m - cy + side / 2) / PX)
        s = int(shadow_m / PX)
        if shadow_dir == "north":
            img[:, max(r0 - s, 0):r0, c0:c1] = 0.08
        else:  # east
            img[:, r0:r1, c1:c1 + s] = 0.08
        img[:, r0:r1, c0:c1] = 0.85
    return img, affine.Affine(PX, 0, X0, 0, -PX, Y0 + size_m)


def footprint(cx: float = 120.0, cy: float = 120.0, side: float = 20.0):
    return box(X0 + cx - side / 2, Y0 + cy - side / 2, X0 + cx + side / 2, Y0 + cy + side / 2)


@pytest.mark.parametrize("length", [12.0, 30.0, 60.0])
def test_shadow_length_of_a_synthetic_building(length: float) -> None:
    img, t = scene(length)
    chip = ImageChip(img, t, footprint())
    table, reasons, info = image_evidence_features([chip], SunGeometry(180.0, 45.0))
    assert reasons[0] == ""
    assert info["shadow_azimuth_deg"] == 0.0
    assert table.loc[0, "img_shadow_len_m"] == pytest.approx(length, abs=1.5)
    # h ≈ L · tan(elevation): 45° → height equals the shadow length.
    assert table.loc[0, "img_shadow_height_m"] == pytest.approx(length, abs=1.5)
    assert table.loc[0, "img_shadow_excess_m"] == pytest.approx(length, rel=0.15)
    assert table.loc[0, "img_roof_lum_rel"] > 0.0  # roof brighter than its ring


def test_shadow_direction_estimated_without_sun_geometry() -> None:
    blds = ((35.0, 40.0, 14.0), (95.0, 75.0, 12.0), (170.0, 35.0, 16.0), (60.0, 150.0, 10.0),
            (140.0, 130.0, 14.0), (205.0, 95.0, 12.0), (110.0, 205.0, 16.0), (200.0, 190.0, 10.0))
    img, t = scene(18.0, "east", size_m=260.0, buildings=blds)
    chips = [ImageChip(img, t, footprint(x, y, 14.0)) for x, y, _ in blds]
    az, info = estimate_shadow_azimuth(chips)
    assert info["n_used"] == len(chips)
    assert az == pytest.approx(90.0, abs=15.0)
    table, reasons, info = image_evidence_features(chips)
    assert info["shadow_azimuth_source"] == "estimated from imagery"
    assert (reasons == "").all()
    assert np.nanmedian(table["img_shadow_len_m"]) == pytest.approx(18.0, abs=2.0)


def test_unusable_chips_give_nan_and_a_reason() -> None:
    img, t = scene(30.0)
    nodata = np.full_like(img, np.nan)
    four_band = np.concatenate([img, img[:1]])
    chips = [None, ImageChip(nodata, t, footprint()), ImageChip(four_band, t, footprint()),
             ImageChip(img, t, footprint(side=1.5)), ImageChip(np.full_like(img, 0.3), t,
                                                                footprint())]
    table, reasons, _ = image_evidence_features(chips, SunGeometry(180.0))
    assert list(reasons[:2]) == [REASON_NO_IMAGERY, REASON_NODATA]
    assert "4 bands" in reasons[2]
    assert reasons[3] == REASON_TOO_SMALL
    assert reasons[4] == REASON_NODATA  # a constant (blank) chip carries no evidence
    assert table[list(IMAGE_FEATURE_NAMES)].isna().all().all()


def test_raster_reader_pads_the_image_edge_with_nodata() -> None:
    img, t = scene(30.0)
    reader = RasterChipReader(img, t, "EPSG:32650")
    fps = gpd.GeoSeries([footprint(), footprint(cx=5.0), box(0, 0, 1, 1)], crs="EPSG:32650")
    chips = reader.chips(fps, 40.0)
    assert chips[2] is None  # far outside the raster
    assert np.isfinite(chips[0].data).all()
    edge = chips[1].data
    assert np.isnan(edge).any() and np.isfinite(edge).any()
    table, reasons, _ = image_evidence_features(chips, SunGeometry(180.0))
    assert reasons[0] == "" and reasons[2] == REASON_NO_IMAGERY
    assert table.loc[1, "img_coverage"] < table.loc[0, "img_coverage"] == 1.0


def test_web_mercator_units_are_scaled_to_ground_metres() -> None:
    assert metres_per_unit(CRS.from_epsg(3857), 60.0) == pytest.approx(0.5)
    assert metres_per_unit(CRS.from_epsg(32650), 24.5) == 1.0
    with pytest.raises(InvalidInput, match="geographic"):
        metres_per_unit(CRS.from_epsg(4326), 24.5)


def test_rotated_transform_is_rejected() -> None:
    img, _ = scene(30.0)
    bad = affine.Affine(PX, 0.1, X0, 0.1, -PX, Y0)
    with pytest.raises(InvalidInput, match="north-up"):
        image_evidence_features([ImageChip(img, bad, footprint())], SunGeometry(180.0))
    assert math.isfinite(PX)


def test_multi_raster_reader_fills_a_chip_across_tile_edges_and_finds_the_scene_direction() -> None:
    from urbanfabric.attributes.chip_reader import MultiRasterChipReader

    blds = ((35.0, 40.0, 14.0), (95.0, 75.0, 12.0), (170.0, 35.0, 16.0), (60.0, 150.0, 10.0),
            (140.0, 130.0, 14.0), (205.0, 95.0, 12.0), (110.0, 205.0, 16.0), (200.0, 190.0, 10.0))
    img, t = scene(18.0, "east", size_m=260.0, buildings=blds)
    half = img.shape[2] // 2
    west = RasterChipReader(img[:, :, :half], t, "EPSG:32650")
    east = RasterChipReader(img[:, :, half:], t @ affine.Affine.translation(half, 0), "EPSG:32650")
    both = MultiRasterChipReader([west, east])
    fps = gpd.GeoSeries([footprint(120.0, 120.0, 10.0)], crs="EPSG:32650")
    chip = both.chips(fps, 40.0)[0]
    assert chip is not None and np.isfinite(chip.data).all()  # both halves composited
    assert both.scene_shadow_azimuth() == pytest.approx(90.0, abs=15.0)
