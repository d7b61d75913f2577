import pytest

from urbanfabric.errors import InvalidInput
from urbanfabric.grid import tiles_for_area


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
    from urbanfabric.demo import SAMPLE_AREA

    tiles = tiles_for_area((SAMPLE_AREA["west"], SAMPLE_AREA["south"], SAMPLE_AREA["east"], SAMPLE_AREA["north"]))
    assert len(tiles) == 4
