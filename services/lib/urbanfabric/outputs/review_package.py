"""A review package: the least certain buildings of a job, ready to label in QGIS or a spreadsheet.

Files (in a local folder, and under ``jobs/<job>/review/<attribute>/`` in the store)::

    review.gpkg       layer ``review``: building_id, prediction, probability (or p05 / p95),
                      uncertainty, uncertainty_source, ood_score, lon, lat, chip, an empty
                      ``label``; its QGIS style is in the GeoPackage's ``layer_styles`` table
                      (QGIS applies it on opening) — outlines coloured by uncertainty, each
                      building labelled with its prediction and the reviewer's label
    review.qml        the same style as a sidecar file (for GeoParquet or older QGIS)
    review.parquet    the same layer as GeoParquet
    review.csv        no geometry: building_id, lon, lat, prediction, …, label, chip
    chips/<id>.png    the roof chip the classifier saw (when the job has imagery)
    package.json      job, attribute, the classes a label may name, how buildings were chosen

The job's table is read a part file at a time twice (scores, then the chosen rows), so memory
holds one part file plus a few values per building (id, centre, scores), never the whole table.
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from xml.sax.saxutils import escape

import geopandas as gpd
import numpy as np
import pandas as pd

from urbanfabric.errors import InvalidInput
from urbanfabric.footprints.ownership import utm_crs
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.object_store import ObjectStore
from urbanfabric.io.rasters import Raster, read_raster
from urbanfabric.materials.chips import chips_from_rasters
from urbanfabric.outputs.review import (ReviewAttribute, check_selection, class_vocabulary, pick_for_review, score_rows,
                                        with_ood_rank)

#: A job's buildings table, a part file at a time (EPSG:4326).
TableParts = Callable[[], Iterator[gpd.GeoDataFrame]]
LAYER = "review"
CHIP_SIZE = 128


@dataclass
class ReviewSelection:
    """The chosen buildings (package columns, in pick order) and what the job held."""

    buildings: gpd.GeoDataFrame
    attribute: ReviewAttribute
    vocabulary: tuple[str, ...]
    job_buildings: int
    #: Chosen building → its tile (for chips), where the table has ``tile_id``.
    tiles: dict[str, str]
    #: How the buildings were chosen (:data:`urbanfabric.outputs.review.SELECTIONS`) and the seed.
    selection: str = "uncertainty"
    seed: int = 0


def select_for_review(parts: TableParts, attribute: ReviewAttribute, n: int,
                      config: Callable[[str, str], dict], selection: str = "uncertainty",
                      seed: int = 0) -> ReviewSelection:
    """``n`` buildings of a job, spread over its area: the least certain, or with ``selection``
    ``random`` a seeded random sample (:func:`urbanfabric.outputs.review.pick_for_review`).

    Raises:
        InvalidInput: ``n`` < 1 (field ``n``); an unknown ``selection`` (field ``select``); an
            empty job (field ``job``); the job has no such model (field ``model_versions``).
    """
    if n < 1:
        raise InvalidInput("n", f"must be at least 1, got {n}")
    check_selection(selection)  # a typo fails before the table is read
    scored, models = [], set()
    for part in parts():
        if not len(part):
            continue
        s = score_rows(part, attribute)
        centre = part.geometry.representative_point()
        s["lon"], s["lat"] = centre.x.to_numpy(), centre.y.to_numpy()
        scored.append(s.drop(columns=["prediction"]).reset_index(drop=True))
        if "model_versions" in part:
            models.update(part["model_versions"].dropna().astype(str).unique())
    if not scored:
        raise InvalidInput("job", "the job's buildings table has no buildings to review")
    table = with_ood_rank(pd.concat(scored, ignore_index=True))
    vocabulary = class_vocabulary(models, attribute, config)
    lon, lat = table["lon"].to_numpy(), table["lat"].to_numpy()
    metric = gpd.GeoSeries(gpd.points_from_xy(lon, lat), crs="EPSG:4326").to_crs(
        utm_crs((float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max()))))
    picks = pick_for_review(metric.x.to_numpy(), metric.y.to_numpy(), table["uncertainty"].to_numpy(), n,
                            selection, seed)
    chosen = table.iloc[picks].reset_index(drop=True)
    order = {b: i for i, b in enumerate(chosen["building_id"])}
    rows: list[pd.DataFrame] = []
    tiles: dict[str, str] = {}
    for part in parts():
        keep = part[part["building_id"].astype(str).isin(order)]
        if len(keep):
            rows.append(keep[["building_id", attribute.value, "geometry"]
                             if attribute.value in keep else ["building_id", "geometry"]])
            if "tile_id" in keep:
                tiles.update(zip(keep["building_id"].astype(str), keep["tile_id"].astype(str)))
    geoms = pd.concat(rows, ignore_index=True)
    geoms["building_id"] = geoms["building_id"].astype(str)
    geoms = geoms.rename(columns={attribute.value: "prediction"})
    out = chosen.merge(geoms, on="building_id", how="left", validate="one_to_one")
    if attribute.kind == "footprint":  # what segmentation claims of each outline
        out["prediction"] = "building"
    elif "prediction" not in out:  # a table from before the attribute existed: nothing predicted
        out["prediction"] = None
    out["label"] = pd.Series([None] * len(out), dtype=object)
    out["chip"] = pd.Series([None] * len(out), dtype=object)
    front = ["building_id", "prediction"]
    cols = front + [c for c in out.columns if c not in (*front, "geometry")]
    frame = gpd.GeoDataFrame(out[cols], geometry=out["geometry"], crs="EPSG:4326")
    return ReviewSelection(frame, attribute, vocabulary, len(table), tiles, selection, seed)


def review_chips(selection: ReviewSelection, load: Callable[[str], Raster]) -> dict[str, bytes]:
    """PNG roof chips of the chosen buildings, cut from their tiles' ARD images as the roof
    classifier cuts them; buildings without a tile or whose image cannot be read get none."""
    from PIL import Image

    by_tile: dict[str, list[str]] = {}
    for building, tile in selection.tiles.items():
        by_tile.setdefault(tile, []).append(building)
    out: dict[str, bytes] = {}
    frame = selection.buildings
    for tile, ids in sorted(by_tile.items()):
        group = frame[frame["building_id"].isin(ids)][["building_id", "geometry"]]
        chips, reasons = chips_from_rasters(group, [(tile, partial(load, tile))], CHIP_SIZE)
        for building, chip, reason in zip(group["building_id"], chips, reasons):
            if reason:
                continue
            rgb = (np.clip(np.transpose(chip[:3], (1, 2, 0)), 0.0, 1.0) * 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="PNG")
            out[str(building)] = buf.getvalue()
    return out


def style_qml(attribute: ReviewAttribute) -> str:
    """A QGIS style: outlines from green (sure) to red (unsure) by ``uncertainty``, each
    building labelled ``prediction → label``."""
    label = escape("\"prediction\" || ' → ' || coalesce(\"label\", '?')", {'"': "&quot;"})
    ranges = [(0.0, 0.5, "26,150,65"), (0.5, 0.75, "253,174,97"), (0.75, 1.0001, "215,25,28")]
    syms = "".join(
        f'<symbol name="{i}" type="fill" alpha="1"><layer class="SimpleFill">'
        f'<Option type="Map"><Option name="color" type="QString" value="{c},40"/>'
        f'<Option name="outline_color" type="QString" value="{c},255"/>'
        f'<Option name="outline_width" type="QString" value="0.6"/>'
        f'<Option name="style" type="QString" value="solid"/></Option></layer></symbol>'
        for i, (_, _, c) in enumerate(ranges))
    rngs = "".join(f'<range lower="{lo}" upper="{hi}" symbol="{i}" '
                   f'label="uncertainty {lo}–{min(hi, 1.0)}" render="true"/>'
                   for i, (lo, hi, _) in enumerate(ranges))
    return (
        '<!DOCTYPE qgis PUBLIC \'http://mrcc.com/qgis.dtd\' \'SYSTEM\'>\n'
        '<qgis version="3.28.0" styleCategories="Symbology|Labeling">\n'
        f'<renderer-v2 type="graduatedSymbol" attr="uncertainty" graduatedMethod="GraduatedColor">'
        f'<ranges>{rngs}</ranges><symbols>{syms}</symbols></renderer-v2>\n'
        '<labeling type="simple"><settings calloutType="simple">'
        f'<text-style fieldName="{label}" isExpression="1" fontSize="9" textColor="0,0,0,255">'
        '<text-buffer bufferDraw="1" bufferSize="1" bufferColor="255,255,255,255"/></text-style>'
        '<placement placement="1"/></settings></labeling>\n'
        f'<!-- urbanfabric review of {escape(attribute.name)} -->\n</qgis>\n')


def _add_style(gpkg: Path, qml: str, attribute: ReviewAttribute) -> None:
    """The style as the default row of ``layer_styles`` (the table QGIS itself writes)."""
    con = sqlite3.connect(gpkg)
    try:
        con.execute(
            "CREATE TABLE IF NOT EXISTS layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256), "
            "f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT, "
            "useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30), update_time DATETIME "
            "DEFAULT CURRENT_TIMESTAMP)")
        (geom,) = con.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?",
                              (LAYER,)).fetchone()
        con.execute("INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
                    "styleName, styleQML, styleSLD, useAsDefault, description, owner) "
                    "VALUES ('', '', ?, ?, ?, ?, '', 1, ?, 'urbanfabric')",
                    (LAYER, geom, f"review {attribute.name}", qml, f"least certain {attribute.name}"))
        con.execute("INSERT OR REPLACE INTO gpkg_contents (table_name, data_type, identifier, description) "
                    "VALUES ('layer_styles', 'attributes', 'layer_styles', 'QGIS layer styles')")
        con.commit()
    finally:
        con.close()


def write_package(folder: Path, selection: ReviewSelection, job_id: str,
                  chips: dict[str, bytes] | None = None) -> list[Path]:
    """Write the package's files into ``folder`` (module docstring); returns them."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = selection.buildings.copy()
    written: list[Path] = []
    for building, png in sorted((chips or {}).items()):
        path = folder / "chips" / f"{building}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(png)
        written.append(path)
        frame.loc[frame["building_id"] == building, "chip"] = f"chips/{building}.png"
    frame["prediction"] = frame["prediction"].astype(object).where(frame["prediction"].notna(), None)
    if selection.attribute.kind != "numeric":
        frame["prediction"] = frame["prediction"].map(lambda v: None if v is None else str(v))
    gpkg = folder / "review.gpkg"
    gpkg.unlink(missing_ok=True)
    frame.to_file(gpkg, layer=LAYER, driver="GPKG", engine="pyogrio")
    qml = style_qml(selection.attribute)
    _add_style(gpkg, qml, selection.attribute)
    (folder / "review.qml").write_text(qml)
    frame.to_parquet(folder / "review.parquet", index=False)
    csv_cols = ["building_id", "lon", "lat", "prediction"] + [
        c for c in ("probability", "p05", "p95") if c in frame] + ["uncertainty", "label", "chip"]
    frame[csv_cols].to_csv(folder / "review.csv", index=False)
    meta = {"job_id": job_id, "attribute": selection.attribute.name, "kind": selection.attribute.kind,
            "labels": list(selection.vocabulary), "label_range": selection.attribute.label_range,
            "unit": selection.attribute.unit, "buildings": len(frame),
            "job_buildings": selection.job_buildings, "chips": len(chips or {}),
            "selection": ("least certain, spread over the area (urbanfabric.outputs.review)"
                          if selection.selection == "uncertainty" else
                          f"random, stratified over the area, seed {selection.seed} (urbanfabric.outputs.review)"),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (folder / "package.json").write_text(json.dumps(meta, indent=2))
    return [gpkg, folder / "review.qml", folder / "review.parquet", folder / "review.csv", folder / "package.json",
            *written]


# --- Where a job's table and images come from ----------------------------------------------


def folder_parts(folder: Path) -> TableParts:
    """An exported job (``out/<job>/``): its partitioned ``buildings/`` folder, else ``buildings.parquet``.

    Raises:
        InvalidInput: the folder holds neither (field ``job``).
    """
    files = sorted((folder / "buildings").glob("quadkey=*/part-*.parquet"))
    if not files and (folder / "buildings.parquet").exists():
        files = [folder / "buildings.parquet"]
    if not files:
        raise InvalidInput("job", f"{folder} holds no buildings table (buildings.parquet or buildings/); "
                                  "export the job first: urbanfabric export JOB")
    return lambda: (gpd.read_parquet(f) for f in files)


def store_parts(store: ObjectStore, job_id: str) -> TableParts:
    """A job's table in the object store, a partition's part file at a time.

    Raises:
        InvalidInput: the job has no buildings table there (field ``job``).
    """
    layout = JobLayout(job_id)
    keys = sorted(k for k in store.list(f"{layout.outputs}/buildings/") if k.endswith(".parquet"))
    if not keys and store.exists(layout.buildings):
        keys = [layout.buildings]
    if not keys:
        raise InvalidInput("job", f"job {job_id} has no buildings table in the object store "
                                  f"({layout.outputs}/buildings/); has it finished?")
    return lambda: (gpd.read_parquet(io.BytesIO(store.get_bytes(k))) for k in keys)


def store_ard(store: ObjectStore, job_id: str) -> Callable[[str], Raster]:
    """A tile id → the job's ARD image of it (``tiles/<id>/ard.tif``)."""
    layout = JobLayout(job_id)
    return lambda tile: read_raster(store.get_bytes(layout.ard(tile)))


def review_prefix(job_id: str, attribute: str) -> str:
    """Where a job's review package for an attribute lives in the store."""
    return f"{JobLayout(job_id).root}/review/{attribute}"


def publish_package(store: ObjectStore, job_id: str, attribute: str, folder: Path, files: list[Path]) -> list[str]:
    """Upload the package's files under :func:`review_prefix`; returns their keys."""
    prefix = review_prefix(job_id, attribute)
    keys = []
    for path in files:
        key = f"{prefix}/{path.relative_to(folder).as_posix()}"
        store.put_file(key, path)
        keys.append(key)
    return keys


def review_job(store: ObjectStore, job_id: str, attribute: ReviewAttribute, n: int, folder: Path,
               config: Callable[[str, str], dict], selection: str = "uncertainty",
               seed: int = 0) -> tuple[ReviewSelection, list[Path], list[str]]:
    """The whole step for a job in the store: choose (:func:`select_for_review`), cut chips from
    its ARD tiles, write the package into ``folder`` and upload it (:func:`review_prefix`)."""
    selection_ = select_for_review(store_parts(store, job_id), attribute, n, config, selection, seed)
    chips = review_chips(selection_, store_ard(store, job_id))
    files = write_package(folder, selection_, job_id, chips)
    return selection_, files, publish_package(store, job_id, attribute.name, folder, files)
