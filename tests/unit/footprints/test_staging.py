"""A bring-your-own footprints file is split into spatial cells by a streaming reader (issue 22,
item 3): never more than one chunk in memory, and the same buildings (ids, count) as reading
the whole file."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyarrow.parquet as pq
import pytest
from shapely.geometry import box

from tests.fakes import MemoryStore
from urbanfabric.errors import InvalidInput
from urbanfabric.footprints.user_footprints import cell_keys, clip_to_area, iter_footprint_chunks, load_footprints
from urbanfabric.footprints.staging import read_cell, stage_footprints
from urbanfabric.io.job_layout import JobLayout


def _buildings(n: int = 300) -> gpd.GeoDataFrame:
    """n 10 m boxes on a grid spanning a few zoom-14 cells near Boulder (UTM 13N), with a
    duplicate and a sliver."""
    geoms = []
    for i in range(n):
        x, y = 476000 + (i % 30) * 150.0, 4428000 + (i // 30) * 300.0
        geoms.append(box(x, y, x + 10, y + 10))
    geoms.append(geoms[5])  # a duplicate polygon (same id), far from the first in file order
    geoms.append(box(476000, 4420000, 476000.1, 4420000.1))  # 0.01 m²: not a building
    return gpd.GeoDataFrame({"name": [f"f{i}" for i in range(len(geoms))]}, geometry=geoms, crs="EPSG:32613")


@pytest.fixture(params=["parquet", "geojson", "fgb"])
def footprint_file(request, tmp_path: Path) -> Path:
    frame = _buildings()
    path = tmp_path / f"buildings.{request.param}"
    if request.param == "parquet":
        frame.to_parquet(path, row_group_size=64)
        assert pq.ParquetFile(path).num_row_groups > 1
    else:
        frame.to_file(path, driver={"geojson": "GeoJSON", "fgb": "FlatGeobuf"}[request.param])
    return path


def test_chunks_are_bounded_and_cover_the_file(footprint_file: Path) -> None:
    chunks = list(iter_footprint_chunks(str(footprint_file), chunk_rows=50))
    assert len(chunks) >= 6 and max(len(c) for c in chunks) <= 50
    assert sum(len(c) for c in chunks) == 302 and all(c.crs is not None for c in chunks)


def test_staged_cells_hold_the_same_buildings_as_the_whole_file(footprint_file: Path) -> None:
    whole = load_footprints(footprint_file.read_bytes(), footprint_file.name)
    store = MemoryStore()
    staged = stage_footprints(store, "j", str(footprint_file), None, zoom=14, chunk_rows=40)
    assert staged.rows_read == 302 and staged.chunks == 8 and len(staged.cells) > 1
    frames = [read_cell(store, "j", c) for c in sorted(staged.cells)]
    ids = [i for f in frames for i in f["building_id"]]
    assert len(ids) == len(set(ids)) == len(whole) == 300  # duplicate and sliver dropped, as before
    assert set(ids) == set(whole["building_id"])
    for cell, f in zip(sorted(staged.cells), frames):
        assert set(cell_keys(f.geometry.representative_point(), 14)) == {cell}
    assert staged.bounds == pytest.approx(tuple(whole.total_bounds))
    # A resumed job reads the manifest instead of the file again.
    footprint_file.unlink()
    assert stage_footprints(store, "j", str(footprint_file), None).cells == staged.cells


def test_staging_clips_to_the_area_like_the_whole_file_did(tmp_path: Path) -> None:
    path = tmp_path / "b.parquet"
    _buildings().to_parquet(path, row_group_size=50)
    whole = load_footprints(path.read_bytes(), path.name)
    w, s, e, n = whole.total_bounds
    area = (w, s, (w + e) / 2, (s + n) / 2)
    store = MemoryStore()
    staged = stage_footprints(store, "j", str(path), area, chunk_rows=64)
    ids = {i for c in staged.cells for i in read_cell(store, "j", c)["building_id"]}
    assert ids == set(clip_to_area(whole, area)["building_id"]) and 0 < len(ids) < 300
    with pytest.raises(InvalidInput, match="footprints: no footprint inside the area"):
        stage_footprints(MemoryStore(), "k", str(path), (0.0, 0.0, 1.0, 1.0))
    assert not MemoryStore().exists(JobLayout("k").input_partitions_done)


def test_bad_files_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "b.geojson"
    bad.write_text("{not json")
    with pytest.raises(InvalidInput, match="footprints: cannot read"):
        list(iter_footprint_chunks(str(bad)))
    with pytest.raises(InvalidInput, match="footprints: unsupported footprint file"):
        list(iter_footprint_chunks(str(tmp_path / "b.csv")))
    plain = tmp_path / "p.parquet"
    _buildings().drop(columns="geometry").to_parquet(plain)
    with pytest.raises(InvalidInput, match="not GeoParquet"):
        list(iter_footprint_chunks(str(plain)))


def test_rows_that_did_not_become_buildings_are_counted_in_a_warning():
    from urbanfabric.footprints.staging import unused_rows_warning

    assert unused_rows_warning(1_000, 1_000) is None
    text = unused_rows_warning(1_000_000, 999_918)
    assert text is not None and text.startswith("82 of the 1,000,000 rows") and "duplicates" in text
