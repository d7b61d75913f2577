"""Unit tests of urbanfabric.materials.roofs: roof chips, the BBR mapping, decoding."""

from __future__ import annotations

import csv
from pathlib import Path

import affine
import geopandas
import numpy as np
import pytest
import torch
from shapely.geometry import Polygon, box
from urbanfabric.errors import InvalidInput
from urbanfabric.materials.roofs import BBR_OTHER_CODE, RoofPrediction, RoofTaxonomy, decode
from urbanfabric.materials.chips import ChipMode, resize_chip, roof_chips

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[3]
BBR_CODES = REPO.parent / "shared/data/taxonomy/bbr/bbr_byg033_tagdaekningsmateriale.csv"
ROOF_DATA = REPO.parent / "shared/data/roofs/caribbean-material"

# 100 x 80 pixel image, 0.5 m pixels, upper-left corner at (500000, 6200000) (UTM-like).
TRANSFORM = affine.Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 6_200_000.0)


def _image() -> np.ndarray:
    """Three-band ramp image (values in 0..1) with the left quarter set to nodata."""
    rows, cols = 80, 100
    img = np.empty((3, rows, cols), dtype=np.float32)
    img[0] = np.linspace(0, 1, cols)[None, :]
    img[1] = np.linspace(0, 1, rows)[:, None]
    img[2] = 0.5
    img[:, :, :25] = np.nan
    return img


def _world(col: float, row: float) -> tuple[float, float]:
    return TRANSFORM @ (col, row)


def test_roof_chips_shapes_range_and_coverage() -> None:
    inside = box(*_world(40, 50), *_world(60, 30))  # cols 40-60, rows 30-50
    outside = box(*_world(150, 50), *_world(170, 30))  # east of the image
    on_nodata = box(*_world(5, 50), *_world(15, 30))  # only NaN pixels under it
    fps = geopandas.GeoSeries([inside, outside, on_nodata, None], crs="EPSG:25832")

    chips, has = roof_chips(_image(), TRANSFORM, fps, size=32)

    assert chips.shape == (4, 3, 32, 32) and chips.dtype == np.float32
    assert has.dtype == bool and has.tolist() == [True, False, False, False]
    assert np.isfinite(chips).all() and chips.min() >= 0.0 and chips.max() <= 1.0
    assert not chips[1:].any()  # no imagery → all-zero chips
    # The chip is centred on the roof: column ramp (band 0) ≈ col/99 at the centre col 50.
    assert chips[0, 0, 16, 16] == pytest.approx(50 / 99, abs=0.03)
    assert chips[0, 2].mean() == pytest.approx(0.5, abs=1e-5)
    # Band 0 increases eastwards inside the chip (orientation kept).
    assert chips[0, 0, 16, 30] > chips[0, 0, 16, 2]


def test_roof_chips_margin_squares_and_pads_off_image() -> None:
    # A 40 m x 10 m roof at the image's top edge: the square window (side 40 m + margins)
    # reaches above the image, so the top of the chip is zero padding.
    roof = box(*_world(40, 20), *_world(120, 0))  # cols 40-120 (partly off-image), rows 0-20
    chips, has = roof_chips(_image(), TRANSFORM, geopandas.GeoSeries([roof]), size=40, margin=0.25)
    assert has.tolist() == [True]
    assert not chips[0, :, :5].any()  # rows above the image
    assert chips[0, 2, 20, 5] == pytest.approx(0.5, abs=1e-5)  # band 2 is 0.5 where imagery exists


def test_roof_chips_modes() -> None:
    tri = Polygon([_world(40, 50), _world(60, 50), _world(40, 30)])  # lower-left triangle
    fps = geopandas.GeoSeries([tri])
    masked, _ = roof_chips(_image(), TRANSFORM, fps, size=32, margin=0.0, mode="masked")
    plain, _ = roof_chips(_image(), TRANSFORM, fps, size=32, margin=0.0)
    both, _ = roof_chips(_image(), TRANSFORM, fps, size=32, margin=0.0, mode=ChipMode.CONTEXT_MASK)
    assert masked.shape == plain.shape == (1, 3, 32, 32) and both.shape == (1, 4, 32, 32)
    assert masked[0, 2, 28, 3] == pytest.approx(0.5, abs=0.05)  # inside (lower left)
    assert masked[0, 2, 3, 28] == 0.0  # outside (upper right)
    assert plain[0, 2, 3, 28] == pytest.approx(0.5, abs=1e-5)
    # context+mask: the RGB is the plain chip, the fourth channel is the footprint.
    np.testing.assert_array_equal(both[0, :3], plain[0])
    assert both[0, 3, 28, 3] == pytest.approx(1.0, abs=0.05) and both[0, 3, 3, 28] == 0.0
    with pytest.raises(InvalidInput, match="chip_mode"):
        roof_chips(_image(), TRANSFORM, fps, size=32, mode="outline")


def test_roof_chips_empty_and_invalid_input() -> None:
    chips, has = roof_chips(_image(), TRANSFORM, geopandas.GeoSeries([], dtype="geometry"), size=16)
    assert chips.shape == (0, 3, 16, 16) and has.shape == (0,)
    fps = geopandas.GeoSeries([box(*_world(40, 50), *_world(60, 30))], crs="EPSG:25832")
    with pytest.raises(InvalidInput):
        roof_chips(_image()[:2], TRANSFORM, fps)
    with pytest.raises(InvalidInput):
        roof_chips(_image(), affine.Affine(0.5, 0.1, 0, 0, -0.5, 0), fps)
    with pytest.raises(InvalidInput):
        roof_chips(_image(), TRANSFORM, fps, crs="EPSG:4326")


def test_resize_chip_downscale_averages() -> None:
    checker = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)[None].repeat(3, 0)
    out = resize_chip(checker, 8)
    assert out.shape == (3, 8, 8)
    assert np.allclose(out, 0.5, atol=0.05)  # antialiased, not aliased to 0/1


def test_taxonomy_covers_model_classes_explicitly() -> None:
    tax = RoofTaxonomy.load()
    assert tax.name == "bbr_byg033"
    model_classes = ["concrete_cement", "healthy_metal", "incomplete", "irregular_metal", "other"]
    assert sorted(tax.classes) == model_classes
    assert tax.code("healthy_metal") == 6 and tax.code("irregular_metal") == 6
    assert tax.code("other") == BBR_OTHER_CODE and tax.code("incomplete") == BBR_OTHER_CODE
    with pytest.raises(InvalidInput):
        tax.code("thatch_from_a_new_model")  # never silently mapped


@pytest.mark.skipif(not ROOF_DATA.is_dir(), reason=f"{ROOF_DATA} not present")
def test_taxonomy_covers_training_folders() -> None:
    tax = RoofTaxonomy.load()
    folders = sorted(p.name for p in (ROOF_DATA / "train").iterdir() if p.is_dir())
    assert set(folders) <= set(tax.classes)


@pytest.mark.skipif(not BBR_CODES.is_file(), reason=f"{BBR_CODES} not present")
def test_taxonomy_codes_exist_in_bbr_code_list() -> None:
    with BBR_CODES.open(newline="", encoding="utf-8") as fh:
        bbr = {int(r["code"]): r["label_en_informal"] for r in csv.DictReader(fh)}
    tax = RoofTaxonomy.load()
    for cls in tax.classes:
        assert tax.code(cls) in bbr
        assert tax.label(cls) == bbr[tax.code(cls)]


def test_taxonomy_load_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("model_class,bbr_code,bbr_label_en,note\na,6,metal,\na,6,metal,\n")
    with pytest.raises(InvalidInput):
        RoofTaxonomy.load(bad)
    bad.write_text("model_class,code\na,6\n")
    with pytest.raises(InvalidInput):
        RoofTaxonomy.load(bad)
    good = tmp_path / "mine.csv"
    good.write_text("model_class,bbr_code,bbr_label_en,note\nslate,90,other material,custom\n")
    assert RoofTaxonomy.load(good).code("slate") == 90


def test_decode() -> None:
    tax = RoofTaxonomy.load()
    classes = ["concrete_cement", "healthy_metal", "incomplete", "irregular_metal", "other"]
    probs = np.array([[0.1, 0.6, 0.1, 0.1, 0.1], [0.05, 0.05, 0.1, 0.1, 0.7]])
    preds = decode(probs, classes, tax)
    assert preds == [RoofPrediction("healthy_metal", 0.6, 6), RoofPrediction("other", 0.7, 90)]
    assert decode(np.zeros((0, 5)), classes, tax) == []
    with pytest.raises(InvalidInput):
        decode(probs[:, :4], classes, tax)
    with pytest.raises(InvalidInput):
        decode(np.full((1, 5), np.nan), classes, tax)


def test_a_footprint_of_a_few_pixels_gets_a_reason_not_an_upsampled_chip() -> None:
    import geopandas as gpd
    from affine import Affine
    from rasterio.crs import CRS
    from shapely.geometry import box

    from urbanfabric.io.rasters import Raster
    from urbanfabric.materials.chips import MIN_FOOTPRINT_PIXELS, chips_from_rasters

    # 0.5 m pixels in UTM 50N: a 10 m house (400 px) and a 1.5 m × 1.5 m box (9 px).
    image = Raster(np.full((3, 100, 100), 0.5, np.float32), Affine(0.5, 0, 500000, 0, -0.5, 2700050), CRS.from_epsg(32650))
    fps = gpd.GeoDataFrame({"building_id": ["house", "shed"]},
                           geometry=[box(500010, 2700010, 500020, 2700020), box(500030, 2700030, 500031.5, 2700031.5)],
                           crs=32650)
    chips, reasons = chips_from_rasters(fps, [("a.tif", lambda: image)], size=32)
    assert reasons[0] == "" and chips[0].any()
    assert reasons[1].startswith("footprint too small for a chip: 9.0 pixels")
    assert str(MIN_FOOTPRINT_PIXELS) in reasons[1] and not chips[1].any()
    # Seen in a finer image as well, the shed is classified from that one.
    fine = Raster(np.full((3, 400, 400), 0.5, np.float32), Affine(0.125, 0, 500000, 0, -0.125, 2700050), CRS.from_epsg(32650))
    _, reasons = chips_from_rasters(fps, [("a.tif", lambda: image), ("fine.tif", lambda: fine)], size=32)
    assert reasons == ["", ""]


def test_imagery_outside_the_models_domain_gives_an_out_of_domain_reason_not_a_class() -> None:
    import geopandas as gpd
    from affine import Affine
    from rasterio.crs import CRS
    from shapely.geometry import box

    from urbanfabric.io.rasters import Raster
    from urbanfabric.materials.chips import chips_from_rasters, imagery_domain_check

    config = {"imagery_domain": {"gsd_m": [0.02, 0.15], "tolerance": 2.0, "source": "drone"}}
    accept = imagery_domain_check(config)
    fps = gpd.GeoDataFrame({"building_id": ["house"]}, geometry=[box(500010, 2700010, 500030, 2700030)], crs=32650)
    satellite = Raster(np.full((3, 100, 100), 0.5, np.float32), Affine(0.5, 0, 500000, 0, -0.5, 2700050),
                       CRS.from_epsg(32650))
    drone = Raster(np.full((3, 500, 500), 0.5, np.float32), Affine(0.1, 0, 500000, 0, -0.1, 2700050),
                   CRS.from_epsg(32650))
    chips, reasons = chips_from_rasters(fps, [("sat.tif", lambda: satellite)], size=32, accept=accept)
    assert reasons[0].startswith("out_of_domain: imagery of 0.50 m per pixel; the model was trained on 0.02–0.15 m")
    assert not chips[0].any()
    _, reasons = chips_from_rasters(fps, [("sat.tif", lambda: satellite), ("drone.tif", lambda: drone)],
                                    size=32, accept=accept)
    assert reasons == [""]  # a covering image inside the domain is used
    assert imagery_domain_check({}) is None  # no stated domain: no check
