"""urbanfabric.imagery.landcover: class schemes and land-cover rasters read onto a tile grid."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from urbanfabric.errors import InvalidInput
from urbanfabric.imagery.landcover import SCHEMES, Grid, check, parse_classes, read_onto
from urbanfabric.footprints.polygons import LANDCOVER_RURAL_EXCLUDE, LANDCOVER_URBAN_EXCLUDE


def test_schemes_speak_the_rule_vocabulary() -> None:
    vocabulary = set(LANDCOVER_URBAN_EXCLUDE) | set(LANDCOVER_RURAL_EXCLUDE) | {"impervious", "wetland", "tundra"}
    for scheme in SCHEMES.values():
        assert set(scheme.values()) <= vocabulary
        assert "impervious" in scheme.values()  # built-up is never vetoed


def test_parse_classes() -> None:
    assert parse_classes("from-glc10")[80] == "impervious"
    assert parse_classes(" 1=cropland, 2=impervious ") == {1: "cropland", 2: "impervious"}
    for bad in ("corine", "1:cropland", "x=grass", ""):
        with pytest.raises(InvalidInput, match="landcover.classes"):
            parse_classes(bad)


def test_read_onto_resamples_reprojects_and_marks_outside(tmp_path) -> None:
    # 10 m UTM land cover: left half cropland (40), right half built-up (50).
    codes = np.full((10, 10), 50, np.uint8)
    codes[:, :5] = 40
    path = tmp_path / "lc.tif"
    with rasterio.open(path, "w", driver="GTiff", width=10, height=10, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 4000000), nodata=0) as dst:
        dst.write(codes, 1)
    # A 1 m grid that starts 20 m west of the raster: its first 20 columns are outside.
    grid = Grid(Affine(1, 0, 499980, 0, -1, 4000000), 100, 50, "EPSG:32633")
    out = read_onto(str(path), grid)
    assert out.shape == (50, 100)
    assert (out[:, :20] == -1).all()
    assert (out[:, 20:70] == 40).all() and (out[:, 70:] == 50).all()
    # Same area in Web Mercator still finds both classes.
    lon_lat = Grid(Affine(1, 0, 1.5e6, 0, -1, 4.5e6), 10, 10, "EPSG:3857")
    assert set(np.unique(read_onto(str(path), lon_lat))) <= {-1, 40, 50}


def test_unreadable_or_crs_less_rasters_are_invalid_input(tmp_path) -> None:
    with pytest.raises(InvalidInput, match="landcover.raster"):
        check(str(tmp_path / "missing.tif"))
    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=2, height=2, count=1, dtype="uint8") as dst:
        dst.write(np.ones((2, 2), np.uint8), 1)
    with pytest.raises(InvalidInput, match="no coordinate reference system"):
        read_onto(str(path), Grid(Affine(1, 0, 0, 0, -1, 2), 2, 2, "EPSG:32633"), "landcover.settlement")
