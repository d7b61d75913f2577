"""The buildings table as a Hive-partitioned GeoParquet dataset with a STAC collection
(issue 22, item 4): every reader sees the same rows as the single-file copy, the merged summary
and grids equal those of the whole table, and the collection validates offline."""

from __future__ import annotations

import io
import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pystac
import pytest
import rasterio
from shapely.geometry import box
from urbanfabric.errors import InvalidInput
from urbanfabric.io.geoparquet import geoparquet_bytes
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.outputs import grids
from urbanfabric.outputs.job_outputs import write_job_outputs
from urbanfabric.outputs.partitions import (
    PartitionOptions,
    area_quadkeys,
    quadkey_bounds,
    quadkey_codes,
    quadkey_text,
)
from urbanfabric.outputs.schema import COLUMNS
from urbanfabric.outputs.summary import summarize

from tests.fakes import MemoryStore

JOB = "20261205T000000Z-parts001"
#: Xiamen, across the zoom-10 tile border at lon 118.125 (two partitions).
WEST, SOUTH, EAST, NORTH = 118.09, 24.47, 118.16, 24.50


def _batches(n: int = 600, per_batch: int = 50, seed: int = 0) -> list[gpd.GeoDataFrame]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(WEST, EAST, n)
    y = rng.uniform(SOUTH, NORTH, n)
    h = rng.uniform(3, 60, n)
    h[::97] = np.nan
    gfa = rng.uniform(50, 2000, n)
    frame = gpd.GeoDataFrame({
        "building_id": [f"b{i:05d}" for i in range(n)],
        "tile_id": "t", "job_id": JOB, "footprint_area_m2": gfa / 3, "height_m": h,
        "floors": np.maximum(1, np.nan_to_num(h) // 3).astype(int), "gfa_m2": gfa,
        "roof_material": rng.choice(["unknown", "concrete_cement", "metal", None], n),
        "roof_material_unknown_reason": None, "structure": rng.choice(["C", "M", "T"], n),
        "function": rng.choice(["RS", "RM", "NR"], n),
        "mass_concrete_kg": gfa * 800, "mass_steel_kg": gfa * 50, "mass_total_kg": gfa * 850,
        "embodied_co2e_kg": gfa * 300, "solar_kwh_per_year": gfa * 10,
        "solar_source": rng.choice(["tmy", "constant"], n),
    }, geometry=[box(a, b, a + 1e-4, b + 1e-4) for a, b in zip(x, y)], crs="EPSG:4326")
    order = np.argsort(frame.geometry.hilbert_distance().to_numpy(), kind="stable")
    frame = frame.iloc[order].reset_index(drop=True)
    return [frame.iloc[i:i + per_batch] for i in range(0, n, per_batch)]


def _store_batches(store: MemoryStore, batches) -> list[str]:
    uris = []
    for i, b in enumerate(batches):
        uris.append(store.put_bytes(JobLayout(JOB).batch_buildings(f"{i:05d}"), geoparquet_bytes(b)))
    return uris


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    store = MemoryStore("urbanfabric")
    batches = _batches()
    uris = _store_batches(store, batches)
    summary = write_job_outputs(store, JOB, uris, [], {"buildings": 1.0}, {"population": 2000},
                                options=PartitionOptions(row_group_rows=100, max_rows_per_file=200),
                                area=(WEST, SOUTH, EAST, NORTH + 0.5))
    root = tmp_path_factory.mktemp("outputs")
    prefix = JobLayout(JOB).outputs + "/"
    for key, data in store.objects.items():
        if key.startswith(prefix):
            path = root / key[len(prefix):]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    whole = pd.concat(batches, ignore_index=True)
    return store, summary, root, gpd.GeoDataFrame(whole, geometry="geometry", crs="EPSG:4326")


def test_quadkeys_round_trip_and_name_their_place():
    code = quadkey_codes(np.array([118.1]), np.array([24.48]), 10)[0]
    key = quadkey_text(int(code), 10)
    w, s, e, n = quadkey_bounds(key)
    assert len(key) == 10 and set(key) <= set("0123") and w <= 118.1 < e and s <= 24.48 < n
    assert quadkey_text(int(quadkey_codes(np.array([-179.9]), np.array([85.0]), 3)[0]), 3) == "000"
    assert key in area_quadkeys((118.09, 24.47, 118.16, 24.5), 10)


def test_the_dataset_is_hive_partitioned_hilbert_sorted_with_a_bbox_covering(job):
    _, summary, root, whole = job
    parts = sorted((root / "buildings").glob("quadkey=*/part-*.parquet"))
    assert len({p.parent.name for p in parts}) == 2 and len(parts) >= 4  # 200-row files
    for p in parts:
        meta = pq.ParquetFile(p).metadata
        geo = json.loads(meta.metadata[b"geo"])
        assert geo["version"] == "1.1.0"
        assert geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
        assert meta.num_rows <= 200 + 50 and all(meta.row_group(i).num_rows <= 100 for i in range(meta.num_row_groups))
        frame = gpd.read_parquet(p)
        d = frame.geometry.hilbert_distance().to_numpy()
        assert (np.diff(d) >= 0).all()
        assert (root / "buildings" / p.parent.name / "_summary.json").exists()
    assert summary.buildings == len(whole)


def test_duckdb_geopandas_and_pyarrow_read_the_same_rows_as_the_single_file(job):
    _, _, root, whole = job
    single = gpd.read_parquet(root / "buildings.parquet")
    assert len(single) == len(whole) and set(single["building_id"]) == set(whole["building_id"])
    frame = gpd.read_parquet(root / "buildings")  # GeoPandas over the folder
    assert len(frame) == len(single) and frame.crs.to_epsg() == 4326
    table = ds.dataset(root / "buildings", format="parquet",
                      partitioning=ds.partitioning(pa.schema([("quadkey", pa.string())]), flavor="hive")).to_table()
    assert table.num_rows == len(single) and set(table["quadkey"].to_pylist()) == {
        p.name.split("=")[1] for p in (root / "buildings").iterdir()}
    duckdb = pytest.importorskip("duckdb", reason="duckdb is in the dev extra (pip install -e .[dev])")
    con = duckdb.connect()
    glob = str(root / "buildings" / "*" / "*.parquet")
    n, tonnes = con.sql(f"SELECT count(*), sum(mass_total_kg) / 1000 FROM read_parquet('{glob}', "
                        "hive_partitioning = true, hive_types = {'quadkey': VARCHAR})").fetchone()
    assert n == len(single) and tonnes == pytest.approx(whole["mass_total_kg"].sum() / 1000)
    per = dict(con.sql(f"SELECT quadkey, count(*) FROM read_parquet('{glob}', hive_partitioning = true, "
                       "hive_types = {'quadkey': VARCHAR}) GROUP BY ALL").fetchall())
    sums = {p.parent.name.split("=")[1]: json.loads(p.read_text())["buildings"]
            for p in (root / "buildings").glob("*/_summary.json")}
    assert per == sums
    # A bbox filter on the covering column (row-group pruning): the same rows as GeoPandas.
    w, s, e, n_ = 118.10, 24.48, 118.13, 24.49
    hits = con.sql(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true) "
                   f"WHERE bbox.xmin >= {w} AND bbox.xmax <= {e} AND bbox.ymin >= {s} AND bbox.ymax <= {n_}").fetchone()[0]
    assert hits == int(single.geometry.within(box(w, s, e, n_)).sum())


def test_merged_summary_equals_the_summary_of_the_whole_table(job):
    _, summary, _, whole = job
    # The whole table as written: every declared column (outputs/schema.py), empty where the
    # synthetic batches had none.
    whole = whole.reindex(columns=[c.name for c in COLUMNS if c.name != "bbox"])
    plain = summarize(JOB, whole, {"buildings": 1.0}, {}, 2000)
    assert summary.buildings == plain.buildings
    assert summary.mean_height_m == pytest.approx(plain.mean_height_m)
    assert summary.roof_material_mix == plain.roof_material_mix
    assert summary.mass_kg == pytest.approx(plain.mass_kg)
    assert summary.embodied_co2e_kg == pytest.approx(plain.embodied_co2e_kg)
    assert summary.solar_sources == plain.solar_sources
    assert [(w["code"], w["count"]) for w in summary.sanity] == [(w["code"], w["count"]) for w in plain.sanity]
    assert summary.sanity, "the synthetic table should trip some check"
    key = lambda rows: {r["attribute"]: (r["kept"], r["unknown"], r["reasons"]) for r in rows}
    assert key(summary.abstention) == key(plain.abstention)


def test_grids_per_partition_sum_to_the_grids_of_the_whole_table(job):
    _, _, root, whole = job
    old = MemoryStore("urbanfabric")
    grids.write_grids(old, "old", whole)
    for size in grids.CELL_SIZES:
        for layer in ("buildings", "mass_total_kg"):
            with rasterio.open(root / "grids" / f"{layer}_{size}m.tif") as new, \
                    rasterio.open(io.BytesIO(old.get_bytes(grids.grid_key("old", layer, size)))) as ref:
                assert new.transform.almost_equals(ref.transform) and new.shape == ref.shape
                a, b = new.read(1), ref.read(1)
                assert np.array_equal(np.isnan(a), np.isnan(b))
                np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-5)
    assert len(list((root / "grids").glob("quadkey=*/buildings_100m.tif"))) == 2


def test_the_stac_collection_itemises_every_output_and_validates(job):
    store, _, root, _ = job
    collection = pystac.Collection.from_file(str(root / "stac" / "collection.json"))
    items = list(collection.get_items(recursive=True))
    assert sum(i.id.startswith("buildings-quadkey-") for i in items) == 2
    assert any(i.id.startswith("grid-mass_total_kg") for i in items) and any(i.id == "report" for i in items)
    collection.validate()  # STAC 1.1 schemas vendored with pystac: no network
    for item in items:
        item.validate()
        for asset in item.assets.values():
            key = asset.href.removeprefix("s3://urbanfabric/")
            assert store.exists(key), asset.href
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
             and not p.relative_to(root).as_posix().startswith("stac/")}
    hrefs = {a.href.split(JobLayout(JOB).outputs + "/")[1] for i in items for a in i.assets.values()}
    assert files == hrefs, files ^ hrefs


def test_an_empty_partition_is_a_warning_naming_its_place(job):
    _, summary, _, _ = job
    empty = [w for w in summary.warnings if w.startswith("partition quadkey=")]
    assert empty and "lon/lat" in empty[0] and "no buildings" in empty[0]


def test_a_building_in_two_batches_refuses_the_table():
    store = MemoryStore("urbanfabric")
    batches = _batches(100, 50)
    uris = _store_batches(store, [batches[0], batches[1], batches[0].iloc[:3]])
    with pytest.raises(InvalidInput, match="two batches"):
        write_job_outputs(store, JOB, uris, [], {}, {})


def test_the_single_file_copy_can_be_skipped(tmp_path):
    store = MemoryStore("urbanfabric")
    uris = _store_batches(store, _batches(120, 40))
    summary = write_job_outputs(store, JOB, uris, [], {}, {}, options=PartitionOptions(single_file=False))
    assert not store.exists(JobLayout(JOB).buildings) and summary.buildings == 120
    assert store.list(JobLayout(JOB).outputs + "/buildings/quadkey=")


def test_the_web_tiles_can_be_skipped(tmp_path):
    store = MemoryStore("urbanfabric")
    uris = _store_batches(store, _batches(120, 40))
    summary = write_job_outputs(store, JOB, uris, [], {}, {}, options=PartitionOptions(web_tiles=False))
    outputs = JobLayout(JOB).outputs
    assert summary.buildings == 120 and "tiles" not in summary.outputs and "viewer" not in summary.outputs
    assert not store.exists(f"{outputs}/buildings.pmtiles") and not store.exists(f"{outputs}/viewer.html")
    assert store.exists(f"{outputs}/report.html")


def test_the_web_tiles_hold_every_building_and_the_viewer_links_the_job_grids(job):
    """The aggregate step streams the partitions into buildings.pmtiles (issue 23, item 2)."""
    import re

    from urbanfabric.outputs.vector_tiles import (
        archive_metadata,
        archive_tiles,
        read_tile,
    )

    _, summary, root, whole = job
    path = root / "buildings.pmtiles"
    header, meta = archive_metadata(path)
    assert (header["min_zoom"], header["max_zoom"]) == (12, 16)
    ids = {f["properties"]["id"] for (z, x, y), _ in archive_tiles(path) if z == 16
           for f in read_tile(path, z, x, y)["buildings"]["features"]}
    assert ids == set(whole["building_id"])
    assert meta["urbanfabric"]["buildings"] == len(whole) == summary.buildings
    page = (root / "viewer.html").read_text()
    config = json.loads(re.search(r'<script id="uf-config" type="application/json">(.*?)</script>', page, re.DOTALL)
                        .group(1))
    hrefs = [g["href"] for g in config["grids"]]
    assert "grids/mass_total_kg_100m.tif" in hrefs and "grids/buildings_250m.tif" in hrefs
    assert all((root / h).is_file() for h in hrefs)
    assert "urbanfabric job" in config["attribution"]


def test_map_html_reads_only_its_columns_and_draws_the_same_page(job):
    """The aggregate step reads the few columns map.html shows; the page equals one made from
    the whole single-file table (issue 22: a 100,000-building job read every column)."""
    from urbanfabric.outputs.webmap import job_map_html, map_columns

    store, _, root, _ = job
    whole = gpd.read_parquet(root / "buildings.parquet")
    assert set(whole.columns) - map_columns()  # the table has columns the page does not read
    page = job_map_html(whole, JOB, {"population": 2000}, tile_ids=[])
    assert store.get_bytes(JobLayout(JOB).outputs + "/map.html") == page
