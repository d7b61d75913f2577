"""Everything a finished job wrote, copied to a local folder that stands on its own
(``urbanfabric export <job> DIR``; issue 23, item 5).

The folder mirrors ``jobs/<job>/outputs/``: the buildings table, the grids (COGs, per partition
and for the job), the maps (``map.png``, ``map.html``), the report (``report.md`` with its
``report_files/`` charts, ``report.html``), ``districts.parquet`` when there is one, ``job.json``,
and the STAC collection rewritten with relative hrefs so that it validates and resolves in the
folder (:func:`urbanfabric.io.stac.relocate_collection`).

The table's format is the user's choice: ``parquet`` (the partitioned ``buildings/`` dataset
as written, plus the single-file ``buildings.parquet`` when the job made one and a
``buildings.geojson`` beside it), ``gpkg`` (GeoPackage) or ``fgb`` (FlatGeobuf), written through
pyogrio one part file at a time, so memory stays at one part file (≤ 50,000 rows) whatever
the job's size. Files are streamed from the store to disk, never held whole in memory.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pystac

from urbanfabric.errors import InvalidInput
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.object_store import ObjectStore, parse_s3_uri
from urbanfabric.io.stac import relocate_collection

#: ``--format`` → (OGR driver, file name, STAC media type); ``parquet`` copies the files as written.
FORMATS: dict[str, tuple[str, str, str] | None] = {
    "parquet": None,
    "gpkg": ("GPKG", "buildings.gpkg", "application/geopackage+sqlite3"),
    "fgb": ("FlatGeobuf", "buildings.fgb", "application/vnd.flatgeobuf"),
}
#: Output keys (relative to ``outputs/``) that belong to the table, exported only as parquet.
TABLE_PREFIXES = ("buildings/", "buildings.parquet")
#: Above this many buildings no GeoJSON copy is made (it would be larger than the table many
#: times over and slow to open; the same bound as the single-file copy's use).
GEOJSON_MAX_BUILDINGS = 100_000
#: Layer name inside the GeoPackage.
LAYER = "buildings"


@dataclass
class Export:
    """What an export wrote: every file, the table's path and the STAC collection's."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    table: Path | None = None
    stac: Path | None = None
    buildings: int = 0


def check_format(table_format: str) -> tuple[str, str, str] | None:
    """The format's driver spec.

    Raises:
        InvalidInput: not one of :data:`FORMATS` (field ``format``).
    """
    if table_format not in FORMATS:
        raise InvalidInput("format", f"unknown table format {table_format!r}; one of {', '.join(FORMATS)}")
    return FORMATS[table_format]


def _is_table(rel: str) -> bool:
    return rel.startswith(TABLE_PREFIXES)


def _write_ogr(store: ObjectStore, part_keys: list[str], out: Path, driver: str) -> int:
    """The partitioned dataset's part files appended one at a time to one OGR file."""
    import geopandas as gpd
    import pyogrio

    out.unlink(missing_ok=True)
    rows = 0
    with tempfile.TemporaryDirectory(prefix="uf-export-") as tmp:
        for i, key in enumerate(part_keys):
            local = store.get_file(key, Path(tmp) / "part.parquet")
            frame = gpd.read_parquet(local)
            # The GeoParquet bbox covering column is a struct OGR cannot store; the geometry
            # holds the same information.
            frame = frame.drop(columns=[c for c in ("bbox",) if c in frame.columns])
            pyogrio.write_dataframe(frame, out, driver=driver, layer=LAYER, append=i > 0,
                                    promote_to_multi=True)
            rows += len(frame)
            del frame
    return rows


def export_job(store: ObjectStore, job_id: str, dest: Path, table_format: str = "parquet") -> Export:
    """Copy a finished job's outputs to ``dest`` (see the module docstring).

    Raises:
        InvalidInput: ``format`` is unknown, or the job has no complete outputs (no
            ``outputs/_SUCCESS``: an unfinished or failed job is not exported as if complete;
            field ``job_id``).
    """
    spec = check_format(table_format)
    layout = JobLayout(job_id)
    if not store.exists(layout.success):
        raise InvalidInput("job_id", f"job {job_id} has no complete outputs (no {layout.success}): "
                                     "it is still running, failed, or does not exist")
    prefix = layout.outputs + "/"
    keys = [k for k in store.list(prefix) if not k.endswith("/")]
    result = Export(dest)
    dest.mkdir(parents=True, exist_ok=True)
    stac_keys = []
    for key in keys:
        rel = key[len(prefix):]
        if rel == "_SUCCESS":
            continue
        if rel.startswith("stac/"):
            stac_keys.append(key)
            continue
        if _is_table(rel) and spec is not None:
            continue
        result.files.append(store.get_file(key, dest / rel))
    result.files.append(store.get_file(layout.job_json, dest / "job.json"))
    parts = sorted(k for k in keys if k[len(prefix):].startswith("buildings/") and k.endswith(".parquet"))
    if spec is None:
        single = dest / "buildings.parquet"
        result.table = single if single.exists() else dest / "buildings"
        geojson = _geojson(single, dest / "buildings.geojson") if single.exists() else None
        if geojson is not None:
            result.files.append(geojson)
    else:
        driver, name, _ = spec
        result.table = dest / name
        result.buildings = _write_ogr(store, parts, result.table, driver)
        result.files.append(result.table)
    if stac_keys:  # a job from before issue 22 has no collection
        result.stac = _export_stac(store, stac_keys, prefix, dest, result, spec)
        result.files.append(result.stac)
    return result


def _geojson(table: Path, out: Path) -> Path | None:
    """``buildings.geojson`` beside a small single-file table, for a quick look in any viewer."""
    import geopandas as gpd
    import pyarrow.parquet as pq

    if pq.ParquetFile(table).metadata.num_rows > GEOJSON_MAX_BUILDINGS:
        return None
    frame = gpd.read_parquet(table)
    frame.drop(columns=[c for c in ("bbox",) if c in frame.columns]).to_file(out, driver="GeoJSON")
    return out


def _export_stac(store: ObjectStore, stac_keys: list[str], prefix: str, dest: Path, result: Export,
                 spec: tuple[str, str, str] | None) -> Path:
    """The job's collection copied to ``dest/stac/`` and pointed at the copied files."""
    raw = dest / ".stac-source"
    for key in stac_keys:
        store.get_file(key, raw / key[len(prefix) + len("stac/"):])
    collection = pystac.Collection.from_file(str(raw / "collection.json"))
    outputs_uri = store.s3_uri(prefix)

    def local_path(href: str) -> Path | None:
        if href.startswith("s3://") and href.startswith(outputs_uri):
            return dest / href[len(outputs_uri):]
        if href.startswith("s3://"):
            _, key = parse_s3_uri(href)
            return dest / key[len(prefix):] if key.startswith(prefix) else None
        return None

    if spec is not None and result.table is not None:
        _, name, media_type = spec
        report = collection.get_item("report", recursive=True)
        if report is not None:
            report.add_asset(f"buildings_{name.rsplit('.', 1)[1]}", pystac.Asset(
                href=outputs_uri + name, media_type=media_type, roles=["data"],
                title=f"all buildings in one file ({name})"))
    _remove_tree(dest / "stac")  # an earlier export's items must not linger beside this one's
    relocate_collection(collection, dest, local_path)
    _remove_tree(raw)
    return dest / "stac" / "collection.json"


def _remove_tree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
