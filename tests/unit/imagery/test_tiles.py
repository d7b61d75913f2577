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
