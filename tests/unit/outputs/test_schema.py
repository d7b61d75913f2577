"""The buildings table's one definition (issue 23, item 3): every writer casts to it, no column is
of type ``null``, units and descriptions travel as field metadata, docs/schema.md is generated
from it, an undeclared column is refused, and an empty job still writes the whole schema."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shapely.geometry import box
from urbanfabric.errors import InvalidInput
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.outputs.buildings_table import assemble, batch_parquet_bytes
from urbanfabric.outputs.job_outputs import write_job_outputs
from urbanfabric.outputs.partitions import PartitionOptions
from urbanfabric.outputs.schema import (
    BY_NAME,
    COLUMNS,
    ROUNDED,
    markdown,
    schema_problems,
    typed,
)
from urbanfabric.stock.intensity import MaterialIntensityTable
from urbanfabric.stock.structure import STRUCTURE_CLASSES
from urbanfabric.stock.vocabulary import MATERIALS

from tests.fakes import MemoryStore

JOB = "20261205T000000Z-schema01"
DOC = Path(__file__).resolve().parents[3] / "docs" / "schema.md"
#: Xiamen, across the zoom-10 tile border at lon 118.125 (two partitions).
WEST, SOUTH, EAST, NORTH = 118.09, 24.47, 118.16, 24.50


def _model(name: str = "", version: str = "") -> SimpleNamespace:
    return SimpleNamespace(name=name, version=version)


def _batch(ids: list[str], rng: np.random.Generator) -> gpd.GeoDataFrame:
    """One batch's rows made by the real ``assemble`` from stage answers shaped like the
    services' (no façade model ran: those columns are all missing, the case that wrote ``null``)."""
    n = len(ids)
    x, y = rng.uniform(WEST, EAST, n), rng.uniform(SOUTH, NORTH, n)
    footprints = gpd.GeoDataFrame({
        "building_id": ids, "footprint_confidence": rng.uniform(0.5, 1, n),
        "footprint_area_m2": rng.uniform(40, 900, n), "footprint_source": "segmented",
        "tile_id": "WebMercatorQuad-16-54267-28168", "on_border": rng.random(n) < 0.1,
    }, geometry=[box(a, b, a + 1e-4, b + 1e-4) for a, b in zip(x, y)], crs="EPSG:4326")
    roofs = [SimpleNamespace(building_id=i, material="unknown", probability=float(rng.random()), taxonomy_code="",
                             unknown_reason="out_of_domain: imagery of 0.54 m", shape="flat" if k % 3 else "unknown",
                             shape_probability=float(rng.random()), shape_unknown_reason="" if k % 3 else "no chip",
                             ood_score=float(rng.random()), shape_ood_score=float("nan"))
             for k, i in enumerate(ids)]
    attrs = [SimpleNamespace(building_id=i, height_m=h, height_p05=h * 0.8, height_p95=h * 1.3,
                             floors=max(1, int(h // 3)),
                             function="residential" if k % 2 else "", function_probability=0.7, storey_height_m=3.0,
                             year_built=float(rng.uniform(1950, 2020)), year_built_p05=1940.6, year_built_p95=2021.5,
                             age_class="1980-2000", age_class_probability=0.4, height_source="model",
                             function_unknown_reason="" if k % 2 else "out_of_domain: far", function_ood_score=0.3,
                             age_class_unknown_reason="", age_class_ood_score=0.2)
             for k, (i, h) in enumerate(zip(ids, rng.uniform(3, 60, n)))]
    stock = []
    for i, area in zip(ids, footprints["footprint_area_m2"]):
        gfa = float(area) * 2
        b = SimpleNamespace(building_id=i, function="RM", structure="C", gfa_m2=gfa,
                            masses=[SimpleNamespace(material=m, kg=gfa * 10, kg_p05=gfa * 5, kg_mc_p50=gfa * 9,
                                                    kg_p95=gfa * 20) for m in MATERIALS],
                            solar_kwh_per_year=gfa * 3, pvout_kwh_per_kwp_day=3.9, fallback="",
                            solar_source="clear_sky_climate", solar_kwp=gfa / 20, structure_source="model",
                            structure_probability=0.6, p_structure=[0.6, 0.3, 0.05, 0.05])
        for base in ("mass_total_kg", "embodied_co2e_kg"):
            for suffix in ("", "_p05", "_mc_p50", "_p95"):
                setattr(b, base + suffix, gfa * 80)
        stock.append(b)
    models = SimpleNamespace(roof_model=_model("roof-material", "v2"), roof_shape_model=_model("roof-shape", "v4"),
                             facade_model=_model(), height_model=_model("height-xgb", "v4"),
                             structure_model=_model("structure", "v2"), region="ASIA_CHN")
    return assemble(footprints, roofs, attrs, stock, models, JOB)


def _write_job(store: MemoryStore, batches: list[gpd.GeoDataFrame]) -> list[str]:
    uris = [store.put_bytes(JobLayout(JOB).batch_buildings(f"{i:05d}"), batch_parquet_bytes(b))
            for i, b in enumerate(batches)]
    write_job_outputs(store, JOB, uris, [], {"buildings": 1.0}, {},
                      options=PartitionOptions(row_group_rows=50, max_rows_per_file=120))
    return uris


@pytest.fixture(scope="module")
def job():
    rng = np.random.default_rng(7)
    batches = [_batch([f"b{k:04d}" for k in range(s, s + 60)], rng) for s in range(0, 300, 60)]
    store = MemoryStore("urbanfabric")
    _write_job(store, batches)
    return store, pd.concat(batches, ignore_index=True)


def _files(store: MemoryStore) -> dict[str, pa.Table]:
    """Every buildings file of the job: batches, partition parts and the single-file copy."""
    keys = [k for k in store.list(f"jobs/{JOB}/") if k.endswith(".parquet")
            and ("/buildings/" in k or k.endswith("outputs/buildings.parquet"))]
    return {k: pq.read_table(io.BytesIO(store.get_bytes(k))) for k in keys}


def test_every_column_has_a_real_type_a_description_and_its_unit():
    assert len(BY_NAME) == len(COLUMNS), "a column is declared twice"
    for c in COLUMNS:
        assert not pa.types.is_null(c.type) and c.description, c.name
        if pa.types.is_floating(c.type) or c.name.startswith("year_built"):
            assert c.unit, f"{c.name}: a measure without a unit"
    assert BY_NAME["year_built"].type == pa.int32() and BY_NAME["floors"].type == pa.int32()
    assert BY_NAME["facade_material"].type == pa.string() and BY_NAME["roof_shape_probability"].type == pa.float32()
    assert {f"p_structure_{c}" for c in STRUCTURE_CLASSES} <= set(BY_NAME)


def test_the_declared_materials_are_those_of_the_shipped_intensity_table():
    assert tuple(MaterialIntensityTable.load().materials) == MATERIALS


def test_docs_schema_md_is_generated_from_the_definition():
    assert DOC.read_text() == markdown(), "docs/schema.md is stale: run `make docs-schema`"


def test_every_file_the_writers_make_has_the_declared_schema(job):
    store, _ = job
    files = _files(store)
    kinds = {"batch": 0, "part": 0, "single": 0}
    for key, table in files.items():
        kinds["batch" if "/buildings/batch=" in key else "part" if "/quadkey=" in key else "single"] += 1
        assert schema_problems(table.schema) == [], key
        assert not [f.name for f in table.schema if pa.types.is_null(f.type)], key
        assert table.schema.field("height_m").metadata[b"unit"] == b"m"
        geo = json.loads(table.schema.metadata[b"geo"])
        assert geo["version"] == "1.1.0", key
        assert geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"], key
        if "/quadkey=" in key:  # parts are Hilbert-sorted
            d = gpd.read_parquet(io.BytesIO(store.get_bytes(key))).geometry.hilbert_distance().to_numpy()
            assert (np.diff(d) >= 0).all(), key
    assert kinds["batch"] == 5 and kinds["part"] >= 3 and kinds["single"] == 1, kinds
    # The façade columns were all missing (no façade model ran): strings, not null.
    single = files[JobLayout(JOB).buildings]
    assert single["facade_material"].type == pa.string() and single["facade_material"].null_count == 300


def test_the_values_are_those_assemble_made_only_typed(job):
    store, whole = job
    single = gpd.read_parquet(io.BytesIO(store.get_bytes(JobLayout(JOB).buildings)))
    single = single.set_index("building_id").loc[whole["building_id"]].reset_index()
    assert list(single.columns) == [c.name for c in COLUMNS if c.name != "bbox"]
    assert single.geometry.geom_equals(whole.geometry).all()
    for c in COLUMNS:
        if c.name in ("geometry", "bbox"):
            continue
        got, made = single[c.name], whole[c.name]
        if c.name in ROUNDED:
            made = made.round()
        if pa.types.is_floating(c.type) or pa.types.is_integer(c.type):
            made = made.astype(np.float64)  # NaN where missing; float32 columns lose only precision
            made = made.astype(np.float32).astype(np.float64) if c.type == pa.float32() else made
            np.testing.assert_array_equal(got.to_numpy(np.float64), made.to_numpy(), err_msg=c.name)
        else:
            assert (got.isna() == made.isna()).all() and (got[got.notna()] == made[made.notna()]).all(), c.name
    assert whole["year_built"].sub(whole["year_built"].round()).abs().max() > 0  # rounding was tested


def test_a_column_the_definition_does_not_know_is_refused_naming_it(job):
    _, whole = job
    with pytest.raises(InvalidInput) as err:
        batch_parquet_bytes(whole.assign(roof_colour="red"))
    assert err.value.field == "buildings.roof_colour" and "declare" in err.value.message
    # A batch written before the column was declared: the job's outputs refuse it, writing nothing.
    other = MemoryStore("urbanfabric")
    frame = gpd.GeoDataFrame(whole.head(3).assign(roof_colour="red"), geometry="geometry", crs="EPSG:4326")
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    uri = other.put_bytes(JobLayout(JOB).batch_buildings("00000"), buf.getvalue())
    with pytest.raises(InvalidInput, match="roof_colour"):
        write_job_outputs(other, JOB, [uri], [], {}, {})
    assert not other.list(JobLayout(JOB).outputs + "/")


def test_values_a_type_cannot_hold_are_refused_naming_the_column():
    table = pa.table({"floors": pa.array([2.0, 2.5]), "year_built": pa.array([1987.4, None])})
    with pytest.raises(InvalidInput) as err:
        typed(table)
    assert err.value.field == "buildings.floors"
    out = typed(table.drop_columns("floors"))
    assert out["year_built"].to_pylist() == [1987, None] and out["year_built"].type == pa.int32()


@pytest.mark.parametrize("batches", [0, 1], ids=["no-batch", "empty-batch"])
def test_an_empty_job_writes_a_table_with_the_whole_schema(batches):
    store = MemoryStore("urbanfabric")
    empty = _batch(["x"], np.random.default_rng(0)).iloc[:0]
    _write_job(store, [empty] * batches)
    table = pq.read_table(io.BytesIO(store.get_bytes(JobLayout(JOB).buildings)))
    assert table.num_rows == 0 and schema_problems(table.schema) == []
    assert json.loads(table.schema.metadata[b"geo"])["version"] == "1.1.0"
    assert gpd.read_parquet(io.BytesIO(store.get_bytes(JobLayout(JOB).buildings))).empty


def test_duckdb_and_geopandas_read_the_types_and_units_as_docs_schema_md_says(job, tmp_path):
    store, whole = job
    prefix = JobLayout(JOB).outputs + "/"
    for key in store.list(prefix):
        if key.endswith(".parquet"):
            (tmp_path / key[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / key[len(prefix):]).write_bytes(store.get_bytes(key))
    duckdb = pytest.importorskip("duckdb", reason="duckdb is in requirements.txt")
    con = duckdb.connect()
    glob = str(tmp_path / "buildings" / "*" / "*.parquet")
    types = {name: kind for name, kind, *_ in con.sql(
        f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = true, hive_types = {{'quadkey': VARCHAR}})"
    ).fetchall()}
    assert (types["year_built"], types["floors"], types["facade_material"], types["roof_shape_probability"]) == (
        "INTEGER", "INTEGER", "VARCHAR", "FLOAT") and types["quadkey"] == "VARCHAR"
    units = dict(con.sql(
        "SELECT j.key, j.value ->> 'unit' FROM parquet_kv_metadata(?) kv, json_each(decode(kv.value)::JSON) j "
        "WHERE kv.key = 'urbanfabric:columns'", params=[str(tmp_path / "buildings.parquet")]).fetchall())
    assert units == {c.name: c.unit for c in COLUMNS}
    frame = gpd.read_parquet(tmp_path / "buildings.parquet", to_pandas_kwargs={"types_mapper": pd.ArrowDtype})
    assert str(frame["year_built"].dtype) == "int32[pyarrow]" and len(frame) == len(whole)
