"""The buildings table's one definition: every column's Arrow type, unit and meaning.

Every writer of the table casts through :func:`typed` — the batch files of the building worker
(:func:`urbanfabric.outputs.buildings_table.batch_parquet_bytes`), the partitioned dataset and
the single-file copy (:mod:`urbanfabric.outputs.job_outputs`) — so a column is a string even
when every value is missing, a year is a nullable integer, and each field carries its ``unit``
and ``description`` as Arrow field metadata. A column no definition names is refused (a new
column must be declared here first), and ``docs/schema.md`` is generated from this module::

    PYTHONPATH=services/lib python -m urbanfabric.outputs.schema > docs/schema.md   # make docs-schema
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from urbanfabric.errors import InvalidInput
from urbanfabric.stock.structure import STRUCTURE_CLASSES
from urbanfabric.stock.vocabulary import MATERIALS, STRUCTURES

#: Units (the ``unit`` field metadata). "1" is dimensionless (UCUM's unity): a probability in
#: [0, 1], or an out-of-domain score (a distance on its model's own scale).
M, M2, KG, CO2E, KWH_YEAR, PVOUT, KWP, YEAR, RATIO = (
    "m", "m2", "kg", "kgCO2e", "kWh/year", "kWh/kWp/day", "kWp", "year", "1")
STRING, FLOAT64, PROBABILITY, INT32, BOOL = pa.string(), pa.float64(), pa.float32(), pa.int32(), pa.bool_()
#: The GeoParquet 1.1 covering column of each geometry's box (lon/lat degrees).
BBOX = pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])


@dataclass(frozen=True)
class Column:
    """One column: name, Arrow type, unit ("" for text and codes) and what it holds."""

    name: str
    type: pa.DataType
    unit: str
    description: str
    #: The section of docs/schema.md it is listed under.
    group: str

    def field(self) -> pa.Field:
        meta = {"description": self.description, **({"unit": self.unit} if self.unit else {})}
        return pa.field(self.name, self.type, nullable=True, metadata=meta)


def _group(group: str, *cols: tuple[str, pa.DataType, str, str]) -> list[Column]:
    return [Column(name, kind, unit, text, group) for name, kind, unit, text in cols]


def _quantiles(base: str, unit: str, what: str, group: str) -> list[Column]:
    """A point estimate and its Monte-Carlo p05 / median / p95."""
    return _group(group,
                  (base, FLOAT64, unit, f"{what}: point estimate (median intensity × GFA)"),
                  (f"{base}_p05", FLOAT64, unit, f"{what}: 5th percentile of the Monte-Carlo draws"),
                  (f"{base}_mc_p50", FLOAT64, unit, f"{what}: median of the Monte-Carlo draws"),
                  (f"{base}_p95", FLOAT64, unit, f"{what}: 95th percentile of the Monte-Carlo draws"))


def _abstaining(prefix: str, what: str, group: str) -> list[Column]:
    """A class call with its probability, why it is unknown and its out-of-domain score."""
    return _group(group,
                  (f"{prefix}_probability", PROBABILITY, RATIO,
                   (f"calibrated probability of {prefix}; also kept for an out-of-domain abstention, "
                    "null when no model ran")),
                  (f"{prefix}_unknown_reason", STRING, "",
                   f"why the {what} is unknown (\"out_of_domain: …\", no image, …); null when known"),
                  (f"{prefix}_ood_score", FLOAT64, RATIO,
                   (f"out-of-domain score of the {what} model's input: a distance on the model's own "
                    "scale, above its threshold the call is unknown; null without statistics")))


_OOD = ": a distance on the model's own scale"
FOOTPRINT = "footprint"
ROOF = "roof"
FACADE = "façade"
ATTRIBUTES = "height, function and age"
STOCK = "material stock and embodied carbon"
SOLAR = "rooftop solar"
PROVENANCE = "provenance"

COLUMNS: tuple[Column, ...] = (
    *_group(FOOTPRINT,
            ("building_id", STRING, "", "stable id of the building (hash of a point inside its footprint)"),
            ("footprint_confidence", PROBABILITY, RATIO,
             "segmentation confidence (area-weighted mean probability; 1 for footprints a user brought)"),
            ("footprint_area_m2", FLOAT64, M2, "footprint area in the building's UTM zone"),
            ("footprint_source", STRING, "", "where the footprint comes from: segmented, user or osm"),
            ("tile_id", STRING, "", "processing tile that found it (\"\" for user footprints)"),
            ("on_border", BOOL, "", "the footprint touched its tile's border before seams were merged"),
            ("geometry", pa.binary(), "", "footprint polygon, WKB, lon/lat (EPSG:4326)"),
            ("bbox", BBOX, "", "GeoParquet 1.1 bbox covering of the geometry (lon/lat degrees)")),
    *_group(ROOF,
            ("roof_material", STRING, "", "roof material class, or \"unknown\"; null when no roof model ran"),
            ("roof_material_probability", PROBABILITY, RATIO,
             "calibrated probability of roof_material; also kept for an out-of-domain abstention"),
            ("roof_material_code", STRING, "", "the roof material's code in its taxonomy"),
            ("roof_material_unknown_reason", STRING, "", "why the roof material is unknown; null when known"),
            ("roof_shape", STRING, "", "roof shape class (flat, gable, hip, …), or \"unknown\""),
            ("roof_shape_probability", PROBABILITY, RATIO,
             "calibrated probability of roof_shape; also kept for an out-of-domain abstention"),
            ("roof_shape_unknown_reason", STRING, "", "why the roof shape is unknown; null when known"),
            ("roof_material_ood_score", FLOAT64, RATIO,
             f"out-of-domain score of the roof chip for the material model{_OOD}"),
            ("roof_shape_ood_score", FLOAT64, RATIO,
             f"out-of-domain score of the roof chip for the shape model{_OOD}")),
    *_group(FACADE,
            ("facade_material", STRING, "",
             "main façade material from street views, or \"unknown\"; null when no façade model ran"),
            ("facade_material_probability", PROBABILITY, RATIO, "aggregated calibrated probability of facade_material"),
            ("facade_material_code", STRING, "", "the façade material's code in its taxonomy"),
            ("facade_materials", STRING, "", "every façade material passing its threshold, comma-separated"),
            ("facade_views_used", INT32, "", "street views that went into the call (a count)"),
            ("facade_material_unknown_reason", STRING, "", "why the façade material is unknown; null when known"),
            ("facade_material_ood_score", FLOAT64, RATIO,
             f"out-of-domain score of the views for the façade model{_OOD}")),
    *_group(ATTRIBUTES,
            ("height_m", FLOAT64, M, "building height (model, image evidence or a measured source)"),
            ("height_p05", FLOAT64, M, "lower end of the height band (5th percentile)"),
            ("height_p95", FLOAT64, M, "upper end of the height band (95th percentile)"),
            ("floors", INT32, "", "number of storeys: height over the function's storey height"),
            ("building_function", STRING, "",
             "predicted use (residential, commercial, …); null when unknown or no model ran"),
            ("storey_height_m", FLOAT64, M, "storey height used for floors; null when no function model ran"),
            ("year_built", INT32, YEAR, ("construction year (the age model's mean or a measured year, "
                                         "rounded to the nearest whole year, halves to even)")),
            ("year_built_p05", INT32, YEAR, "lower end of the construction-year band, rounded"),
            ("year_built_p95", INT32, YEAR, "upper end of the construction-year band, rounded"),
            ("age_class", STRING, "", "construction-age class; null when unknown or no age model ran"),
            ("height_source", STRING, "", "where the height comes from (model, model_footprint, measured, …)"),
            ("height_source_reason", STRING, "", "why image evidence was not used for the height")),
    *_abstaining("building_function", "function", ATTRIBUTES),
    *_abstaining("age_class", "age class", ATTRIBUTES),
    *_group(STOCK,
            ("function", STRING, "", "RASMI function key of the intensity: RS, RM or NR"),
            ("structure", STRING, "", "structure class: " + ", ".join(f"{k} {v}" for k, v in STRUCTURES.items())),
            ("gfa_m2", FLOAT64, M2, "gross floor area: footprint area × floors")),
    *[c for m in MATERIALS for c in _quantiles(f"mass_{m}_kg", KG, f"mass of {m}", STOCK)],
    *_quantiles("mass_total_kg", KG, "mass of all materials", STOCK),
    *_quantiles("embodied_co2e_kg", CO2E, "embodied carbon (A1–A3) of the materials", STOCK),
    *_group(STOCK,
            ("structure_source", STRING, "",
             "where the structure comes from (given, model, roof_facade_lookup, default)"),
            ("structure_probability", PROBABILITY, RATIO,
             "probability of the structure class; null where no structure model ran"),
            *[(f"p_structure_{c}", PROBABILITY, RATIO, f"probability of structure {c} ({STRUCTURES[c]})")
              for c in STRUCTURE_CLASSES],
            ("fallback", STRING, "",
             "what was assumed where an input was missing (';'-joined tokens; \"\" when nothing was)")),
    *_group(SOLAR,
            ("solar_kwh_per_year", FLOAT64, KWH_YEAR, "rooftop photovoltaic potential"),
            ("pvout_kwh_per_kwp_day", FLOAT64, PVOUT, "specific PV yield at the building"),
            ("solar_source", STRING, "",
             "where the PV yield comes from (tmy, raster, clear_sky_climate, constant, gbm_constant)"),
            ("solar_kwp", FLOAT64, KWP, "installable peak power on the roof planes")),
    *_group(PROVENANCE,
            ("model_versions", STRING, "", "JSON object: the model name:version behind each column group"),
            ("job_id", STRING, "", "the job that wrote the row")),
)
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
#: Integer columns whose values come from models as real numbers: rounded to the nearest whole
#: number on the way in (any other float going into an integer column must already be whole).
ROUNDED = frozenset({"year_built", "year_built_p05", "year_built_p95"})


#: File-level key holding every column's unit and description as JSON: Parquet readers that do
#: not decode Arrow field metadata (DuckDB's ``parquet_kv_metadata``) read them there.
COLUMNS_KEY = b"urbanfabric:columns"
_COLUMNS_JSON = json.dumps({c.name: {"unit": c.unit, "description": c.description} for c in COLUMNS},
                           ensure_ascii=False).encode()


def buildings_schema(metadata: dict[bytes, bytes] | None = None) -> pa.Schema:
    """The table's Arrow schema, in the definition's order, with ``metadata`` (GeoParquet ``geo``)
    and the columns' units and descriptions (:data:`COLUMNS_KEY`)."""
    return pa.schema([c.field() for c in COLUMNS], metadata={**(metadata or {}), COLUMNS_KEY: _COLUMNS_JSON})


def undeclared(names: list[str]) -> list[str]:
    """Column names the definition does not know."""
    return [n for n in names if n not in BY_NAME]


def _cast(column: pa.ChunkedArray, col: Column) -> pa.ChunkedArray:
    if column.type == col.type:
        return column
    if col.name in ROUNDED and pa.types.is_floating(column.type):
        column = pc.round(column)
    try:
        return column.cast(col.type)  # safe: a fractional count or an overflow fails
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(f"buildings.{col.name}", f"cannot hold {column.type} values as {col.type}: {exc}") from exc


def typed(table: pa.Table, source: str = "the buildings table") -> pa.Table:
    """``table`` with exactly the definition's columns, order, types and field metadata.

    Missing columns are all null of their type; the table's schema metadata (GeoParquet ``geo``)
    is kept. Raises:
        InvalidInput: a column the definition does not declare (field ``buildings.<name>``), or
            values its type cannot hold; nothing is written.
    """
    unknown = undeclared(table.column_names)
    if unknown:
        raise InvalidInput(f"buildings.{unknown[0]}",
                           f"{source} has column(s) {', '.join(unknown)} that urbanfabric/outputs/schema.py "
                           "does not declare; declare each (type, unit, description) before writing it")
    cols = [_cast(table[c.name], c) if c.name in table.column_names else pa.nulls(len(table), c.type)
            for c in COLUMNS]
    # pandas' own metadata would bring back the dtypes the table had before the cast.
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"pandas"}
    return pa.Table.from_arrays(cols, schema=buildings_schema(meta or None))


def schema_problems(schema: pa.Schema) -> list[str]:
    """What a written table's schema lacks against the definition (empty: it conforms)."""
    problems = [f"{n}: not declared" for n in undeclared(schema.names)]
    if (schema.metadata or {}).get(COLUMNS_KEY) != _COLUMNS_JSON:
        problems.append(f"file metadata {COLUMNS_KEY.decode()}: missing or not the definition's")
    for c in COLUMNS:
        if c.name not in schema.names:
            problems.append(f"{c.name}: missing")
            continue
        f = schema.field(c.name)
        meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        if f.type != c.type:
            problems.append(f"{c.name}: type {f.type}, declared {c.type}")
        if meta.get("unit", "") != c.unit or meta.get("description") != c.description:
            problems.append(f"{c.name}: unit/description metadata {meta} differ from the definition")
    return problems


# --- docs/schema.md -----------------------------------------------------------------------

_READING = """\
## Reading it

A job's table is the dataset `jobs/<job>/outputs/buildings/quadkey=<key>/part-*.parquet`
(Hive-partitioned by a zoom-10 quadkey, a digit string: tell readers it is text, or they drop its
leading zeros); small jobs also get the same rows in one file, `outputs/buildings.parquet`, which
`make demo` copies to `out/<job>/buildings.parquet`. Files are GeoParquet 1.1: WKB `geometry`,
a `bbox` covering column, Hilbert-sorted rows, ZSTD. The batches' own files
(`jobs/<job>/buildings/batch=<n>/part-0.parquet`) have the same schema.

DuckDB (its spatial extension is needed only for geometry functions):

```sql
SELECT building_id, height_m, year_built, mass_total_kg
FROM read_parquet('jobs/<job>/outputs/buildings/*/*.parquet', hive_partitioning = true,
                  hive_types = {'quadkey': VARCHAR})
WHERE bbox.xmin > 118.10 AND bbox.xmax < 118.11;   -- row groups outside the box are skipped

-- units and descriptions: DuckDB does not decode Arrow field metadata, so every file also
-- carries them as JSON under the file-level key 'urbanfabric:columns'
SELECT j.key AS column_name, j.value ->> 'unit' AS unit, j.value ->> 'description' AS description
FROM parquet_kv_metadata('out/<job>/buildings.parquet') kv, json_each(decode(kv.value)::JSON) j
WHERE kv.key = 'urbanfabric:columns';
```

GeoPandas / pyarrow:

```python
import geopandas as gpd, pandas as pd, pyarrow.parquet as pq
b = gpd.read_parquet("out/<job>/buildings.parquet")              # or the jobs/<job>/outputs/buildings/ folder
pq.read_schema("out/<job>/buildings.parquet").field("height_m").metadata   # {b'description': …, b'unit': b'm'}
b = gpd.read_parquet("out/<job>/buildings.parquet", to_pandas_kwargs={"types_mapper": pd.ArrowDtype})
```

By default pandas shows the nullable integer columns (`floors`, `year_built`, …) as `float64`
with `NaN` where a value is missing; the last line keeps the declared types (`int32[pyarrow]`,
`string[pyarrow]`, …), as does `pd.read_parquet(path, dtype_backend="numpy_nullable")`.
"""


def type_name(kind: pa.DataType) -> str:
    """A type as docs/schema.md names it: Arrow's name with the width of floats spelled out."""
    names = {pa.float32(): "float32", pa.float64(): "float64", pa.binary(): "binary (WKB)",
             BBOX: "struct<xmin, ymin, xmax, ymax: float64>"}
    return names.get(kind, str(kind))


def markdown() -> str:
    """docs/schema.md: the columns by group, then how to read the table."""
    intro = ("One row per building. Every column has a declared Arrow type (nullable: a value the "
             "stages could not give is null, never a column of type `null`), and its unit and "
             "description are stored as Arrow field metadata (`unit`, `description`) in every file. "
             f"{len(COLUMNS)} columns. Units: `1` is dimensionless (a probability in [0, 1], or an "
             "out-of-domain score: a distance on its model's own scale), `year` a calendar year (CE), "
             "`—` none (text, codes, counts).")
    lines = ["# The buildings table", "",
             "<!-- Generated by `make docs-schema` (python -m urbanfabric.outputs.schema) from",
             "     services/lib/urbanfabric/outputs/schema.py; edit that, not this file. -->", "",
             intro, ""]
    groups: list[str] = []
    for c in COLUMNS:
        if c.group not in groups:
            groups.append(c.group)
    for g in groups:
        lines += [f"## {g[0].upper()}{g[1:]}", "", "| column | type | unit | description |", "|---|---|---|---|"]
        lines += [f"| `{c.name}` | {type_name(c.type)} | {c.unit or '—'} | {c.description} |"
                  for c in COLUMNS if c.group == g]
        lines.append("")
    return "\n".join(lines) + "\n" + _READING


if __name__ == "__main__":
    sys.stdout.write(markdown())
