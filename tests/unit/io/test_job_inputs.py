"""The job's own inputs: read, staged under jobs/<job>/inputs/, or rejected naming the field."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import box

from tests.fakes import MemoryStore
from urbanfabric.errors import InvalidInput
from urbanfabric.io.job_inputs import local_copy, read_districts, read_input, stage_input


def test_local_files_are_staged_under_the_job_and_s3_objects_are_checked(tmp_path: Path) -> None:
    store = MemoryStore(bucket="b")
    raster = tmp_path / "lc.tif"
    raster.write_bytes(b"tif")
    uri = stage_input(store, "j1", str(raster), "landcover.raster", "landcover-raster.tif")
    assert uri == "s3://b/jobs/j1/inputs/landcover-raster.tif" and store.get_bytes(uri) == b"tif"
    assert stage_input(store, "j2", uri, "landcover.raster", "x.tif") == uri  # already in the store
    with pytest.raises(InvalidInput, match="landcover.raster: no object at s3://b/missing.tif"):
        stage_input(store, "j1", "s3://b/missing.tif", "landcover.raster", "x.tif")
    with pytest.raises(InvalidInput, match="footprints: .* is not a readable file"):
        read_input(store, str(tmp_path / "nope.geojson"), "footprints")
    assert read_input(store, uri, "footprints") == (b"tif", uri)


def test_local_copy_of_an_s3_object_lives_only_inside_the_block(tmp_path: Path) -> None:
    store = MemoryStore(bucket="b")
    store.put_bytes("masks/settled.tif", b"mask")
    with local_copy(store, "s3://b/masks/settled.tif", "settlement_mask") as path:
        assert Path(path).read_bytes() == b"mask"
    assert not Path(path).exists()
    with local_copy(store, str(tmp_path), "settlement_mask") as path:
        assert path == str(tmp_path)  # local paths pass through
    with pytest.raises(InvalidInput, match="settlement_mask"), local_copy(store, "s3://b/none.tif", "settlement_mask"):
        pass


def test_districts_need_a_crs_and_the_id_column(tmp_path: Path) -> None:
    store = MemoryStore(bucket="b")
    frame = gpd.GeoDataFrame({"name": ["a"]}, geometry=[box(0, 0, 1, 1)], crs=4326)
    frame.to_parquet(tmp_path / "d.parquet")
    assert list(read_districts(store, str(tmp_path / "d.parquet"), "name")["name"]) == ["a"]
    with pytest.raises(InvalidInput, match="district_id: 'code' is not a column"):
        read_districts(store, str(tmp_path / "d.parquet"), "code")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(InvalidInput, match="districts: cannot read"):
        read_districts(store, str(tmp_path / "bad.parquet"), "name")
