"""Height training-data loaders (urbanfabric.attributes.measurements)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Polygon, box

from urbanfabric.attributes import measurements as H
from urbanfabric.errors import InvalidInput, NotFound

DATA = Path(__file__).resolve().parents[4] / "shared" / "data"
CITYJSON = DATA / "heights" / "cityjson-samples"
RD = "EPSG:28992"
X0, Y0 = 85000.0, 447000.0  # Delft, RD New


def _box_solid(v0: int, semantics: bool) -> dict:
    """LoD1 box solid on vertices v0..v0+7 (bottom 4, top 4)."""
    b, t = list(range(v0, v0 + 4)), list(range(v0 + 4, v0 + 8))
    faces = [[[b[0], b[3], b[2], b[1]]], [[t[0], t[1], t[2], t[3]]]]
    faces += [[[b[k], b[(k + 1) % 4], t[(k + 1) % 4], t[k]]] for k in range(4)]
    g = {"type": "Solid", "lod": "1.2", "boundaries": [faces]}
    if semantics:
        g["semantics"] = {"surfaces": [{"type": "GroundSurface"}, {"type": "RoofSurface"},
                                       {"type": "WallSurface"}],
                          "values": [[0, 1, 2, 2, 2, 2]]}
    return g


def _box_vertices(x: float, y: float, w: float, d: float, z0: float, z1: float) -> list:
    ring = [(x, y), (x + w, y), (x + w, y + d), (x, y + d)]
    return [[a, b, z0] for a, b in ring] + [[a, b, z1] for a, b in ring]


def _write_cityjson(path: Path, with_crs: bool = True) -> None:
    # Building A: 10 x 20 m, ground 1.0 m, roof 13.5 m, a part 5 x 5 m up to 20 m (integer
    # vertices with a transform, as CityJSON stores them). Building B: no semantics.
    verts = _box_vertices(0, 0, 10, 20, 1.0, 13.5) + _box_vertices(10, 0, 5, 5, 1.0, 20.0)
    verts += _box_vertices(100, 0, 8, 8, 0.5, 6.5)
    scale, trans = 0.001, [X0, Y0, 0.0]
    ints = [[round((a - 0) / scale), round(b / scale), round(c / scale)] for a, b, c in verts]
    doc = {
        "type": "CityJSON", "version": "2.0",
        "transform": {"scale": [scale] * 3, "translate": trans},
        "CityObjects": {
            "A": {"type": "Building", "children": ["A1"],
                  "attributes": {"oorspronkelijk_bouwjaar": 1931, "h_maaiveld": 1.0},
                  "geometry": [_box_solid(0, True)]},
            "A1": {"type": "BuildingPart", "parents": ["A"], "geometry": [_box_solid(8, True)]},
            "B": {"type": "Building", "geometry": [_box_solid(16, False)]},
            "R": {"type": "Road", "geometry": []},
        },
        "vertices": ints,
    }
    if with_crs:
        doc["metadata"] = {"referenceSystem": "https://www.opengis.net/def/crs/EPSG/0/7415"}
    path.write_text(json.dumps(doc))


def test_cityjson_synthetic(tmp_path: Path) -> None:
    p = tmp_path / "a.city.json"
    _write_cityjson(p)
    g = H.load_cityjson(p)
    assert g.crs.to_epsg() == 4326 and list(g["id"]) == ["A", "B"]
    a, b = g.iloc[0], g.iloc[1]
    assert a.height_m == pytest.approx(19.0)  # tallest part 20 m − h_maaiveld 1 m
    assert a.height_source == "cityjson:lod1.2:zmax-attr" and a.year_built == 1931
    assert b.height_m == pytest.approx(6.0) and b.height_source == "cityjson:lod1.2:zmax-zmin"
    assert np.isnan(b.year_built)
    metric = g.to_crs(RD)
    assert metric.area.iloc[0] == pytest.approx(200 + 25, rel=1e-4)  # parts unioned
    assert metric.area.iloc[1] == pytest.approx(64, rel=1e-4)  # bottom face, no semantics
    assert metric.geometry.iloc[1].bounds[0] == pytest.approx(X0 + 100, abs=0.01)


def test_cityjson_needs_a_crs(tmp_path: Path) -> None:
    p = tmp_path / "nocrs.json"
    _write_cityjson(p, with_crs=False)
    with pytest.raises(InvalidInput) as e:
        H.load_cityjson(p)
    assert e.value.field == "crs"
    assert len(H.load_cityjson(p, crs=RD)) == 2
    with pytest.raises(NotFound):
        H.load_cityjson(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text('{"type": "FeatureCollection"}')
    with pytest.raises(InvalidInput):
        H.load_cityjson(tmp_path / "x.json")


@pytest.mark.skipif(not CITYJSON.is_dir(), reason="../shared/data/heights/cityjson-samples absent")
def test_cityjson_samples() -> None:
    delft = H.load_cityjson(CITYJSON / "delft.json")
    assert len(delft) == 160 and delft.height_m.between(0, 60).all()
    bag = H.load_cityjson(CITYJSON / "multi_lod.json", crs=RD)
    assert len(bag) == 10 and bag.year_built.between(1800, 2030).all()
    assert set(bag.lod) == {"2.2"}
    dh = H.load_cityjson(CITYJSON / "DH_01_subs.city.json", crs=RD)
    # Den Haag gives ridge heights per part; ours (roof max − lowest vertex) must agree.
    assert dh.height_m.between(5, 15).all() and dh.height_eaves_m.notna().all()
    zh = H.load_cityjson(CITYJSON / "zurich_subset_lod2.json")
    assert len(zh) == 49 and zh.total_bounds[0] == pytest.approx(8.4, abs=0.3)


def test_osm_loader(tmp_path: Path) -> None:
    feats = gpd.GeoDataFrame(
        {"height": ["12.5 m", None, "40 ft", "tall", None],
         "building:levels": ["2", "4", None, "3", None],
         "start_date": ["1965", "c. 1890", None, "2001-05", None]},
        geometry=[box(24.9, 60.1, 24.9001, 60.1001)] * 5, crs="EPSG:4326")
    p = tmp_path / "osm.geojson"
    feats.to_file(p, driver="GeoJSON")
    g = H.load_osm_buildings(p)
    np.testing.assert_allclose(g.height_m, [12.5, 12.0, 40 * 0.3048, 9.0, np.nan])
    assert list(g.height_source) == ["osm:height", "osm:levels", "osm:height", "osm:levels", ""]
    np.testing.assert_array_equal(g.year_built, [1965, 1890, np.nan, 2001, np.nan])
    assert H.load_osm_buildings(p, storey_height=4.0).height_m.iloc[1] == 16.0
    assert H.parse_osm_height("3,5") == 3.5 and np.isnan(H.parse_osm_height("~10"))
    with pytest.raises(InvalidInput):
        H.load_osm_buildings(p, storey_height=0)


def test_footprint_field_loader(tmp_path: Path) -> None:
    g0 = gpd.GeoDataFrame({"H": [10.0, "x"], "yr": [1990, 2005]},
                          geometry=[box(0, 0, 1e-4, 1e-4)] * 2, crs="EPSG:4326")
    p = tmp_path / "f.geojson"
    g0.to_file(p, driver="GeoJSON")
    g = H.load_footprint_heights(p, year_field="yr")
    assert g.height_m.iloc[0] == 10.0 and np.isnan(g.height_m.iloc[1])
    assert list(g.year_built) == [1990, 2005] and g.height_source.iloc[0] == "field:H"
    with pytest.raises(InvalidInput):
        H.load_footprint_heights(p, height_field="Z")


def _write_tif(path: Path, arr: np.ndarray, transform, crs: str = "EPSG:32633") -> None:
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", height=arr.shape[0], width=arr.shape[1],
                       count=1, dtype="float32", crs=crs, transform=transform,
                       nodata=-9999) as ds:
        ds.write(arr.astype(np.float32), 1)


def test_dsm_minus_dtm(tmp_path: Path) -> None:
    from rasterio.transform import from_origin

    x0, y0 = 500_000.0, 5_000_040.0
    tf = from_origin(x0, y0, 1.0, 1.0)  # 40 x 40 px of 1 m
    rows, cols = np.mgrid[0:40, 0:40]
    dtm = 100.0 + 0.1 * cols + 0.05 * rows  # sloping terrain
    dsm = dtm.copy()
    dsm[5:15, 5:15] += 10.0  # flat 10 m roof on pixels (5..14, 5..14)
    dsm[5, 5] += 40.0  # an antenna: one pixel of 100 must not move p90
    dsm[20:30, 20:30] += np.linspace(3, 9, 10)[None, :]  # a pitched roof, 3..9 m
    dsm[25, 25] = -9999  # nodata inside the second footprint
    _write_tif(tmp_path / "dsm.tif", dsm, tf)
    _write_tif(tmp_path / "dtm.tif", dtm, tf)
    # DTM on a coarser 2 m grid: resampled bilinearly onto the DSM grid (a plane survives).
    coarse = 100.0 + 0.1 * (2 * cols[:20, :20] + 0.5) + 0.05 * (2 * rows[:20, :20] + 0.5)
    _write_tif(tmp_path / "dtm2.tif", coarse, from_origin(x0, y0, 2.0, 2.0))
    fp = gpd.GeoDataFrame(geometry=[
        box(x0 + 5, y0 - 15, x0 + 15, y0 - 5),
        box(x0 + 20, y0 - 30, x0 + 30, y0 - 20),
        box(x0 + 35.1, y0 - 35.9, x0 + 35.4, y0 - 35.6),  # holds no pixel centre
    ], crs="EPSG:32633").to_crs("EPSG:4326")
    g = H.heights_from_dsm_dtm(fp, tmp_path / "dsm.tif", tmp_path / "dtm.tif")
    assert g.crs.to_epsg() == 4326
    assert g.height_m.iloc[0] == pytest.approx(10.0, abs=1e-4)
    assert list(g.n_pixels) == [100, 99, 0] and np.isnan(g.height_m.iloc[2])
    assert g.height_m.iloc[1] == pytest.approx(np.percentile(
        np.delete(np.repeat(np.linspace(3, 9, 10)[None, :], 10, 0).ravel(), 55), 90), abs=1e-3)
    assert g.height_source.iloc[0] == "dsm-dtm:p90"
    top = H.heights_from_dsm_dtm(fp, tmp_path / "dsm.tif", tmp_path / "dtm.tif", 100)
    assert top.height_m.iloc[0] == pytest.approx(50.0, abs=1e-4)
    g2 = H.heights_from_dsm_dtm(fp, tmp_path / "dsm.tif", tmp_path / "dtm2.tif")
    assert g2.height_m.iloc[0] == pytest.approx(10.0, abs=0.2)
    with pytest.raises(InvalidInput):
        H.heights_from_dsm_dtm(fp, tmp_path / "dsm.tif", tmp_path / "dtm.tif", 120)


def test_clean_heights_reports_counts() -> None:
    bowtie = Polygon([(0, 0), (1e-4, 1e-4), (1e-4, 0), (0, 1e-4)])
    sq = box(0, 0, 1e-4, 1e-4)
    g = gpd.GeoDataFrame({"height_m": [10.0, -3.0, 800.0, np.nan, 12.0, 5.0]},
                         geometry=[sq, sq, sq, sq, bowtie, None], crs="EPSG:4326")
    clean, rep = H.clean_heights(g)
    assert list(clean.index) == [0, 4]
    assert rep == {"n_in": 6, "n_out": 2, "repaired": 1, "dropped_geometry": 1,
                   "dropped_missing_height": 1, "dropped_out_of_range": 2}
    assert clean.geometry.iloc[1].is_valid
