"""``urbanfabric export <job> DIR`` (issue 23, item 5): every output in a folder that stands on its
own — table, grids, maps, report, job.json — and a STAC collection that validates there with
every href resolving inside it; the table also as GeoPackage or FlatGeobuf."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pyogrio
import pystac
import pytest
import rasterio
from urbanfabric.errors import InvalidInput
from urbanfabric.io.geoparquet import geoparquet_bytes
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.outputs.export import export_job
from urbanfabric.outputs.job_outputs import write_job_outputs
from urbanfabric.outputs.partitions import PartitionOptions

from tests.fakes import MemoryStore
from tests.unit.outputs.test_report import (
    EAST,
    NORTH,
    SOUTH,
    WEST,
    buildings,
    spec_parameters,
)

JOB = "20261205T000000Z-export01"


@pytest.fixture(scope="module")
def store():
    """A finished job over two partitions (lon 118.125 is a zoom-10 border), with small part files."""
    store = MemoryStore("urbanfabric")
    table = buildings(500, seed=3).assign(job_id=JOB)
    layout = JobLayout(JOB)
    uris = [store.put_bytes(layout.batch_buildings(f"{i:05d}"), geoparquet_bytes(table.iloc[i:i + 100]))
            for i in range(0, len(table), 100)]
    summary = write_job_outputs(store, JOB, uris, [], {"segment": 1.0}, spec_parameters(),
                                options=PartitionOptions(max_rows_per_file=120), area=(WEST, SOUTH, EAST, NORTH))
    store.put_bytes(layout.success, b"")
    store.put_bytes(layout.job_json, json.dumps({"job_id": JOB, "status": "succeeded",
                                                 "summary": {"buildings": summary.buildings}}).encode())
    return store


def _hrefs_resolve(collection_path: Path, root: Path) -> int:
    collection = pystac.Collection.from_file(str(collection_path))
    collection.validate()  # STAC 1.1 schemas vendored with pystac: no network
    n = 0
    for item in collection.get_items(recursive=True):
        item.validate()
        for asset in item.assets.values():
            assert not asset.href.startswith(("s3://", "/")), asset.href  # relative in the file
            path = Path(asset.get_absolute_href())
            assert path.is_file() and root.resolve() in path.resolve().parents, asset.href
            n += 1
    return n


def test_export_writes_every_output_and_a_stac_that_validates_in_the_folder(store, tmp_path):
    out = tmp_path / "job"
    result = export_job(store, JOB, out)
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for name in ("buildings.parquet", "buildings.geojson", "map.png", "map.html", "report.md", "report.html",
                 "job.json", "stac/collection.json", "report_files/stock.png"):
        assert name in names, name
    # The grids: the job's COGs and each partition's.
    job_grids = [n for n in names if n.startswith("grids/") and n.count("/") == 1 and n.endswith(".tif")]
    part_grids = [n for n in names if n.startswith("grids/quadkey=") and n.endswith(".tif")]
    assert any("mass_total" in n for n in job_grids) and len(part_grids) >= 2 * len(job_grids)
    with rasterio.open(out / job_grids[0]) as ds:
        assert ds.crs is not None and ds.overviews(1) is not None
    # The partitioned dataset as written, readable as one table.
    assert len(gpd.read_parquet(out / "buildings")) == 500 == len(gpd.read_parquet(out / "buildings.parquet"))
    # Every object of the job's outputs/ is in the folder (under the same name), STAC rewritten.
    prefix = JobLayout(JOB).outputs + "/"
    wanted = {k[len(prefix):] for k in store.list(prefix)} - {"_SUCCESS"}
    assert {w for w in wanted if not w.startswith("stac/")} <= names
    assert result.stac == out / "stac" / "collection.json"
    assets = _hrefs_resolve(result.stac, out)
    assert assets >= len(part_grids) + len(job_grids) + 4
    text = result.stac.read_text() + "".join(p.read_text() for p in (out / "stac").rglob("*.json"))
    assert "s3://" not in text and str(tmp_path) not in text  # moves with the folder
    assert not (out / ".stac-source").exists()


@pytest.mark.parametrize("fmt,name", [("gpkg", "buildings.gpkg"), ("fgb", "buildings.fgb")])
def test_gpkg_and_fgb_round_trip_every_building(store, tmp_path, fmt, name):
    out = tmp_path / fmt
    result = export_job(store, JOB, out, fmt)
    assert result.table == out / name and result.buildings == 500
    frame = pyogrio.read_dataframe(out / name)
    assert len(frame) == 500 and frame["building_id"].is_unique
    assert frame.crs.to_epsg() == 4326
    assert frame["height_m"].notna().sum() == 490  # values survive the format
    assert not (out / "buildings").exists() and not (out / "buildings.parquet").exists()
    assert (out / "report.html").is_file() and (out / "grids").is_dir()
    _hrefs_resolve(result.stac, out)
    report = pystac.Collection.from_file(str(result.stac)).get_item("report", recursive=True)
    assert report is not None and Path(report.assets[f"buildings_{fmt}"].get_absolute_href()) == (out / name).resolve()
    # The partitions' items lost their parquet parts (not exported) but keep their grids.
    collection = pystac.Collection.from_file(str(result.stac))
    assert not any(a.href.endswith(".parquet") and "quadkey=" in a.href
                   for i in collection.get_items(recursive=True) for a in i.assets.values())


def test_bad_format_and_unfinished_jobs_are_refused_naming_the_field(store, tmp_path):
    with pytest.raises(InvalidInput, match="^format: unknown table format 'shp'"):
        export_job(store, JOB, tmp_path / "x", "shp")
    with pytest.raises(InvalidInput, match="^job_id: job 20261205T000000Z-nothere0 has no complete outputs"):
        export_job(store, "20261205T000000Z-nothere0", tmp_path / "y")
    assert not (tmp_path / "y").exists()  # nothing partial that looks like an export
