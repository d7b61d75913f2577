import pytest

from urbanfabric.errors import InvalidInput
from urbanfabric.imagery.tiles import tiles_for_area


def test_tiles_cover_area_with_stable_ids():
    tiles = tiles_for_area((118.0976, 24.4772, 118.1085, 24.4871))
    assert len(tiles) == 4
    assert {t.tile_id for t in tiles} == {f"WebMercatorQuad-16-{x}-{y}" for x in (54267, 54268) for y in (28168, 28169)}
    t = tiles[0]
    assert t.crs == "EPSG:3857" and t.resolution == pytest.approx(0.5972, rel=1e-3)
    assert (t.bounds[2] - t.bounds[0]) / t.resolution == pytest.approx(1024)


@pytest.mark.parametrize("bbox", [(10, 10, 5, 20), (-200, 0, 1, 1), (0, 0, 0, 1)])
def test_bad_area_is_rejected_naming_area(bbox):
    with pytest.raises(InvalidInput) as err:
        tiles_for_area(bbox)
    assert err.value.field == "area"


def test_cells_that_only_touch_the_area_are_left_out():
    from urbanfabric.cli.demo import SAMPLE_AREA

    tiles = tiles_for_area((SAMPLE_AREA["west"], SAMPLE_AREA["south"], SAMPLE_AREA["east"], SAMPLE_AREA["north"]))
    assert len(tiles) == 4


def _four_tiles():
    return tiles_for_area((118.0976, 24.4772, 118.1085, 24.4871))


def test_settlement_polygons_keep_only_the_cells_they_touch(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point

    from urbanfabric.imagery.settlement import SettlementMask, filter_settled

    tiles = _four_tiles()
    # A 30 m settlement around a point inside the first cell, stored as a GeoJSON in UTM 50N.
    first = tiles[0]
    x, y = (first.bounds[0] + first.bounds[2]) / 2, (first.bounds[1] + first.bounds[3]) / 2
    village = gpd.GeoSeries([Point(x, y).buffer(30)], crs=first.crs).to_crs("EPSG:32650")
    path = tmp_path / "guf.geojson"
    gpd.GeoDataFrame(geometry=village).to_file(path)
    kept, skipped = filter_settled(tiles, SettlementMask.from_path(str(path)))
    assert [t.tile_id for t in kept] == [first.tile_id] and skipped == 3
    assert filter_settled(tiles, None) == (tiles, 0)


def test_one_settled_raster_pixel_keeps_the_whole_cell(tmp_path):
    import numpy as np
    import rasterio
    from rasterio.transform import from_bounds

    from urbanfabric.imagery.settlement import SettlementMask, filter_settled

    tiles = _four_tiles()
    # A coarse GUF-like raster (EPSG:4326, 0.001° pixels) over the four cells, built-up = 255.
    w, s, e, n = 118.095, 24.475, 118.111, 24.489
    data = np.zeros((14, 16), np.uint8)
    data[3, 10] = 255  # one pixel at 118.1055 E, 24.4855 N: in the north-east cell
    path = tmp_path / "guf.tif"
    with rasterio.open(path, "w", driver="GTiff", width=16, height=14, count=1, dtype="uint8", nodata=0,
                       crs="EPSG:4326", transform=from_bounds(w, s, e, n, 16, 14)) as ds:
        ds.write(data, 1)
    kept, skipped = filter_settled(tiles, SettlementMask.from_path(str(path)))
    assert [t.tile_id for t in kept] == ["WebMercatorQuad-16-54268-28168"] and skipped == 3
    with pytest.raises(InvalidInput) as err:
        SettlementMask.from_path(str(tmp_path / "missing.tif"))
    assert err.value.field == "settlement_mask"


# --- The grid follows the model's GSD (issue 20, item 0) ------------------------------------

from urbanfabric.imagery.tiles import GRID_GSD_TOLERANCE, grid_gsd, tile_px_for_gsd  # noqa: E402


@pytest.mark.parametrize("lat", [0.0, 24.5, 45.0, 60.0, 70.0])
@pytest.mark.parametrize("gsd", [0.075, 0.3, 0.5, 0.54, 1.0, 2.0])
def test_tile_pixels_reach_the_model_gsd_within_the_tolerance(lat, gsd):
    west, south = 10.0, lat
    (tile, *_) = tiles_for_area((west, south, west + 0.001, south + 0.001), gsd_m=gsd)
    assert abs(tile.ground_resolution_m / gsd - 1) <= GRID_GSD_TOLERANCE
    assert (tile.size_px % 32 == 0 or tile.size_px < 320) and tile.size_px * tile.resolution == pytest.approx(tile.bounds[2] - tile.bounds[0])


def test_the_grid_keeps_tile_ids_and_only_changes_the_pixels():
    area = (118.0976, 24.4772, 118.1085, 24.4871)
    old, fine = tiles_for_area(area), tiles_for_area(area, gsd_m=0.30)
    assert [t.tile_id for t in fine] == [t.tile_id for t in old]
    assert [t.bounds for t in fine] == [t.bounds for t in old]
    # At Xiamen a v1 (0.54 m) grid is the old 1024 px one; a 0.30 m model gets 1856 px.
    assert tiles_for_area(area, gsd_m=0.54)[0].size_px == 1024 == old[0].size_px
    assert fine[0].size_px == 1856 and fine[0].ground_resolution_m == pytest.approx(0.30, rel=0.01)


def test_tiles_far_apart_in_latitude_each_get_their_own_pixels():
    (south,) = tiles_for_area((10.0, 0.0, 10.001, 0.001), gsd_m=0.3)
    (north,) = tiles_for_area((10.0, 60.0, 10.001, 60.001), gsd_m=0.3)
    assert south.size_px == 2048 and north.size_px == 1024  # cos(60°) = 0.5


@pytest.mark.parametrize("gsd", [0.0, -1.0])
def test_a_gsd_that_is_not_positive_is_rejected_naming_it(gsd):
    with pytest.raises(InvalidInput) as err:
        tile_px_for_gsd(611.5, 1.0, gsd)
    assert err.value.field == "gsd_m"


def test_a_gsd_too_coarse_for_the_cell_is_rejected_naming_it():
    with pytest.raises(InvalidInput) as err:
        tile_px_for_gsd(611.5, 1.0, 400.0)  # 1.5 px: 1 or 2 px, both > 5 % off
    assert err.value.field == "gsd_m" and "lower zoom" in str(err.value)


def test_grid_gsd_reads_imagery_inside_the_training_range_at_its_own_gsd():
    v5 = (0.30, (0.30, 0.55))
    assert grid_gsd(0.54, *v5) == 0.54       # Xiamen z18: no resampling
    assert grid_gsd(0.075, *v5) == 0.30      # drone imagery: averaged down to the finest
    assert grid_gsd(2.0, *v5) == 0.55        # coarse satellite: upsampled to the coarsest
    assert grid_gsd(None, *v5) == 0.30       # unknown source GSD: the model's
    assert grid_gsd(0.30, 0.54, None) == 0.54  # one training GSD (v1): always that
