"""Scene search and choice against a real STAC API process (rustac's in-memory server) and
tiny real-CRS COGs (UTM 50N over Xiamen) written with rasterio."""

import datetime as dt
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from urbanfabric.imagery import acquisition, scenes
from urbanfabric.io import stac
from urbanfabric.errors import EmptyArea, InvalidInput
from urbanfabric.imagery.tiles import tiles_for_area
from urbanfabric.imagery.scenes import SceneFilter

UTM = 32650
#: A 1.2 km square scene in UTM 50N over Xiamen, at 10 m (120 px), centred on grid cell
#: WebMercatorQuad-16-54267-28169 (≈560 m wide), so its western half covers half the cell.
SIZE = 120
ORIGIN = (610_896.0, 2_708_376.0)  # upper-left corner
AREA = (118.1000, 24.4794, 118.1005, 24.4799)  # inside that one cell


def _cog(path: Path, values: list[int], *, epsg: int = UTM, res: float = 10.0, size: int = SIZE,
         dtype: str = "uint8", half: bool = False, colors: bool = False) -> str:
    data = np.stack([np.full((size, size), v, dtype) for v in values])
    if half:  # imagery only in the western half; the rest is nodata
        data[:, :, size // 2:] = 0
    profile = dict(driver="COG", width=size, height=size, count=len(values), dtype=dtype, nodata=0,
                   crs=f"EPSG:{epsg}", transform=Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1]))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        if colors:
            from rasterio.enums import ColorInterp
            ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    return str(path)


def _item(tmp: Path, sid: str, when: str, cloud: float | None, value: int, *, half=False,
          band_names=("red", "green", "blue"), epsg_meta=UTM, file_epsg=UTM, res=10.0,
          dtype="uint8") -> dict:
    assets = {}
    for k, name in enumerate(band_names):
        href = _cog(tmp / f"{sid}-{name}.tif", [value + k], half=half, epsg=file_epsg, res=res, dtype=dtype)
        assets[name] = {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                        "roles": ["data"]}
    size = SIZE
    item = pystac.Item(
        id=sid, geometry=None, bbox=None, datetime=dt.datetime.fromisoformat(when), collection="test",
        properties={"proj:epsg": epsg_meta, "proj:shape": [size, size], "gsd": res,
                    "proj:transform": [res, 0, ORIGIN[0], 0, -res, ORIGIN[1]]})
    from pyproj import Transformer
    from shapely.geometry import box, mapping
    # The footprint is where the scene has data (the western half only for ``half``).
    w, s, e, n = Transformer.from_crs(UTM, 4326, always_xy=True).transform_bounds(
        ORIGIN[0], ORIGIN[1] - size * res, ORIGIN[0] + size * res / (2 if half else 1), ORIGIN[1])
    item.bbox, item.geometry = [w, s, e, n], mapping(box(w, s, e, n))
    if cloud is not None:
        item.properties["eo:cloud_cover"] = cloud
    d = item.to_dict(include_self_link=False)
    d["assets"] = assets
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stac_api(tmp_path_factory):
    """A real STAC API (rustac serve, in-memory backend) on loopback with four scenes."""
    exe = shutil.which("rustac", path=str(Path(sys.executable).parent)) or shutil.which("rustac")
    if not exe:
        pytest.skip("rustac (STAC API server, in requirements.txt) is not installed")
    tmp = tmp_path_factory.mktemp("scenes")
    feats = [
        _item(tmp, "cloudy-2019", "2019-03-01T00:00:00+00:00", 50, 200),
        _item(tmp, "clear-half-2019", "2019-06-01T00:00:00+00:00", 5, 100, half=True),
        _item(tmp, "clear-2019", "2019-09-01T00:00:00+00:00", 8, 120),
        _item(tmp, "clear-2017", "2017-09-01T00:00:00+00:00", 1, 60),
    ]
    path = tmp / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    port = _free_port()
    proc = subprocess.Popen([exe, "serve", str(path), "--addr", f"127.0.0.1:{port}", "--create-collections"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"rustac serve did not start: {proc.stderr.read().decode()[-500:]}")
    yield url, tmp
    proc.terminate()
    proc.wait(timeout=10)


def _tile():
    return tiles_for_area(AREA, zoom=16, tile_px=64)[0]


def test_api_search_filters_by_bbox_and_year(stac_api):
    url, _ = stac_api
    assert stac.source_kind(url) == "api"
    every = stac.search_items(url, bbox=AREA)
    assert {i.id for i in every} == {"cloudy-2019", "clear-half-2019", "clear-2019", "clear-2017"}
    assert {i.id for i in stac.search_items(url, bbox=AREA, datetime="2019")} == \
        {"cloudy-2019", "clear-half-2019", "clear-2019"}
    assert stac.search_items(url, bbox=(10.0, 50.0, 10.1, 50.1)) == []


def test_cloudy_scene_rejected_and_clear_scenes_mosaicked_best_on_top(stac_api):
    url, _ = stac_api
    tile = _tile()
    items = stac.search_items(url, bbox=AREA)
    fetched = acquisition.fetch_tile(items, tile, scene_filter=SceneFilter(year=2019))
    # The 5 % scene covers only the west: the 8 % scene fills the rest; the 50 % one is never used.
    assert fetched.scenes == ["clear-2019", "clear-half-2019"] and fetched.fallback == ""
    red = fetched.raster.data[0]
    assert set(np.unique(red)) == {100, 120}
    assert 200 not in red and (red[:, 0] == 100).all() and (red[:, -1] == 120).all()
    choice = scenes.choose_scenes(items, acquisition.area_wgs84(tile, 0), SceneFilter(year=2019))
    assert "cloud cover 50%" in choice.rejected["cloudy-2019"]


def test_threshold_is_configurable(stac_api):
    url, _ = stac_api
    items = stac.search_items(url, bbox=AREA, datetime="2019")
    fetched = acquisition.fetch_tile(items, _tile(), scene_filter=SceneFilter(max_cloud=0.06))
    assert fetched.scenes == ["clear-half-2019"]  # the 8 % scene is now too cloudy


def test_falls_back_to_an_earlier_year_then_to_the_basemap(stac_api):
    url, tmp = stac_api
    items = stac.search_items(url, bbox=AREA)
    # 2018 has nothing: with one fallback year 2017 is used and the report says so.
    fetched = acquisition.fetch_tile(items, _tile(), scene_filter=SceneFilter(year=2018, fallback_years=1))
    assert fetched.scenes == ["clear-2017"] and fetched.fallback == "year:2017"
    assert any("year:2017" in w and _tile().tile_id in w for w in fetched.warnings)
    basemap = stac.items_from_cogs([_cog(tmp / "basemap.tif", [30, 31, 32], colors=True)])
    fetched = acquisition.fetch_tile(items, _tile(), scene_filter=SceneFilter(year=2022, fallback_years=1),
                                     basemap=basemap)
    assert fetched.fallback == "basemap" and set(np.unique(fetched.raster.data[2])) == {32}
    with pytest.raises(InvalidInput) as err:
        acquisition.fetch_tile(items, _tile(), scene_filter=SceneFilter(year=2022, fallback_years=1))
    assert err.value.field == "max_cloud_cover" and _tile().tile_id in err.value.message


def test_cog_list_and_band_mapping_per_source(tmp_path):
    tile = _tile()
    # A plain RGB COG (no catalog): bands found by colour interpretation, read one by one.
    rgb = stac.items_from_cogs([_cog(tmp_path / "rgb.tif", [11, 22, 33], colors=True)])
    assert rgb[0].properties["start_datetime"] == stac.UNDATED[0]
    raster = acquisition.load_tile(rgb, tile)
    assert [int(np.unique(b)[0]) for b in raster.data] == [11, 22, 33]
    # Explicit mapping: blue/green/red stored as bands 3/2/1 swapped on purpose.
    swapped = acquisition.load_tile(rgb, tile, bands={"red": "data#3", "green": "data#2", "blue": "data#1"})
    assert [int(np.unique(b)[0]) for b in swapped.data] == [33, 22, 11]
    # Sentinel-2 style asset names, uint16 values.
    s2 = pystac.Item.from_dict(_item(tmp_path, "s2", "2020-01-01T00:00:00+00:00", 0, 1000,
                                     band_names=("B04", "B03", "B02"), dtype="uint16"))
    for name in ("B04", "B03", "B02"):
        s2.assets[name].extra_fields["raster:bands"] = [{"data_type": "uint16"}]
    raster = acquisition.load_tile([s2], tile, bands={"red": "B04", "green": "B03", "blue": "B02"})
    assert raster.data.dtype == np.uint16 and [int(b.max()) for b in raster.data] == [1000, 1001, 1002]
    with pytest.raises(InvalidInput) as err:
        acquisition.load_tile([s2], tile)  # no mapping: red/green/blue are nowhere
    assert err.value.field == "bands" and "s2" in err.value.message and tile.tile_id in err.value.message


def test_bad_scenes_are_named_with_their_tile(tmp_path):
    tile = _tile()
    # CRS mismatch: metadata says UTM 50N, the files are in UTM 51N.
    wrong = pystac.Item.from_dict(_item(tmp_path, "wrong-crs", "2020-01-01T00:00:00+00:00", 0, 50,
                                        file_epsg=32651))
    with pytest.raises(InvalidInput) as err:
        acquisition.load_tile([wrong], tile)
    assert err.value.field == "crs" and "wrong-crs" in err.value.message and tile.tile_id in err.value.message
    # Broken asset link.
    broken = pystac.Item.from_dict(_item(tmp_path, "broken", "2020-01-01T00:00:00+00:00", 0, 50))
    broken.assets["green"].href = str(tmp_path / "gone.tif")
    with pytest.raises(InvalidInput) as err:
        acquisition.load_tile([broken], tile)
    assert err.value.field == "image" and tile.tile_id in err.value.message and "gone.tif" in err.value.message
    # All nodata.
    empty = stac.items_from_cogs([_cog(tmp_path / "zeros.tif", [0, 0, 0], colors=True)])
    with pytest.raises(InvalidInput) as err:
        acquisition.fetch_tile(empty, tile)
    assert err.value.field == "tile" and tile.tile_id in err.value.message
    # Resolution far from the model's: a warning, not an error.
    coarse = pystac.Item.from_dict(_item(tmp_path, "coarse", "2020-01-01T00:00:00+00:00", 0, 50))
    fetched = acquisition.fetch_tile([coarse], tile, model_gsd=0.54)
    assert len(fetched.warnings) == 1 and "10.00 m GSD" in fetched.warnings[0] and tile.tile_id in fetched.warnings[0]
    assert acquisition.fetch_tile([coarse], tile, model_gsd=6.0).warnings == []
    with pytest.raises(EmptyArea):
        acquisition.fetch_tile([coarse], tiles_for_area((10.0, 50.0, 10.001, 50.001), tile_px=64)[0])


def test_static_catalog_over_http_with_relative_asset_links(tmp_path):
    """A static catalog (pystac, relative hrefs) served by a real HTTP server: searched by
    date, its COGs read by stackstac over HTTP."""
    root = tmp_path / "site"
    root.mkdir()
    catalog = pystac.Catalog(id="ortho", description="orthophotos")
    for sid, when, value in [("o2018", "2018-04-01T00:00:00+00:00", 70), ("o2021", "2021-04-01T00:00:00+00:00", 90)]:
        item = pystac.Item.from_dict(_item(root, sid, when, None, value))
        for name in ("red", "green", "blue"):
            item.assets[name].href = f"../{sid}-{name}.tif"  # relative to <root>/<id>/<id>.json
        catalog.add_item(item)
    catalog.normalize_hrefs(str(root))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    # A separate process: an in-process Python server stalled while GDAL read COGs from it.
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/catalog.json", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/catalog.json"
        assert stac.source_kind(url) == "static"
        items = stac.search_items(url, bbox=AREA, datetime="2020/2022")
        assert [i.id for i in items] == ["o2021"]
        raster = acquisition.load_tile(items, _tile())
        assert set(np.unique(raster.data[0])) == {90}
    finally:
        server.terminate()
        server.wait(timeout=10)
