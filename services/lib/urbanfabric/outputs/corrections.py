"""Corrections in: a filled review package, or any table of labels, checked and joined to a job (issue 21).

A corrections file is a review package (``review.gpkg`` / ``review.csv``) with its ``label``
column filled, or any table or register extract with building ids or footprints and one
attribute. Rows are joined to the job's buildings by ``building_id`` when the file has that
column, else by footprint overlap (IoU ≥ :data:`MIN_IOU` in the job's UTM zone, after
reprojecting the file from its own CRS).

Nothing is dropped silently: every row ends either in the clean table (``building_id``,
``label``, ``matched_by``, ``row``) or in the report's ``problems`` with its row number (1 =
the first data row) and why. Rows with an empty label are not labels; they are only counted.
Problems of the whole file — no such label column, no CRS where footprints must be matched,
footprints nowhere near the job (a wrong CRS), fewer labels than a hold-out needs — raise
:class:`InvalidInput` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from urbanfabric.errors import InvalidInput
from urbanfabric.footprints.ownership import utm_crs
from urbanfabric.outputs.review import ReviewAttribute

#: Least intersection-over-union of a correction's footprint and a job building to match it.
MIN_IOU = 0.5
#: Fewest valid labels: a fine-tuning run holds out a fifth for validation, at least two.
MIN_LABELS = 10
#: How many ids a message lists before it says "and N more".
LISTED = 10


@dataclass
class CorrectionsReport:
    """What became of every row of a corrections file."""

    source: str
    attribute: str
    rows: int
    unlabelled: int = 0
    accepted: int = 0
    matched_by: str = ""
    problems: list[dict] = field(default_factory=list)

    def add(self, rows: list[int], kind: str, message: str, building_id: str | None = None) -> None:
        for row in rows:
            self.problems.append({"row": row, "problem": kind, "building_id": building_id, "message": message})

    def summary(self) -> str:
        """Lines a person reads: the counts, then one line per kind of problem with its rows."""
        lines = [f"{self.source}: {self.rows} rows, {self.accepted} labels accepted for {self.attribute} "
                 f"(matched by {self.matched_by}), {self.unlabelled} without a label, "
                 f"{len({p['row'] for p in self.problems})} rejected"]
        kinds: dict[str, list[dict]] = {}
        for p in self.problems:
            kinds.setdefault(p["problem"], []).append(p)
        for kind, items in kinds.items():
            by_message: dict[str, list[int]] = {}
            for p in items:
                by_message.setdefault(p["message"], []).append(p["row"])
            shown = [f"{m} (row{'s' * (len(r) > 1)} {_rows(r)})" for m, r in list(by_message.items())[:LISTED]]
            more = f"; and {len(by_message) - LISTED} more" if len(by_message) > LISTED else ""
            lines.append(f"  {kind} ({len(items)} row{'s' * (len(items) > 1)}): " + "; ".join(shown) + more)
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"source": self.source, "attribute": self.attribute, "rows": self.rows,
                "unlabelled": self.unlabelled, "accepted": self.accepted, "matched_by": self.matched_by,
                "rejected": len({p["row"] for p in self.problems}), "problems": self.problems}


def _rows(rows: list[int]) -> str:
    more = f" and {len(rows) - LISTED} more" if len(rows) > LISTED else ""
    return ", ".join(str(r) for r in rows[:LISTED]) + more


def read_corrections(path: Path) -> pd.DataFrame:
    """A corrections file: GeoPackage (its ``review`` layer when there is one, else its first),
    GeoParquet, GeoJSON or CSV (no geometry; a CSV never has a CRS).

    Raises:
        InvalidInput: the file is missing or not readable as one of those (field ``corrections``).
    """
    import pyogrio

    if not path.exists():
        raise InvalidInput("corrections", f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype={"building_id": str, "label": str}, keep_default_na=False,
                               na_values=[""])
        if suffix == ".parquet":
            try:
                return gpd.read_parquet(path)
            except ValueError:  # a plain Parquet table without geometry metadata
                return pd.read_parquet(path)
        layer = None
        if suffix == ".gpkg":
            names = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
            layer = "review" if "review" in names else next((n for n in names if n != "layer_styles"), None)
        return gpd.read_file(path, layer=layer, engine="pyogrio")
    except InvalidInput:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is the user's file, named
        raise InvalidInput("corrections", f"{path}: not a readable {suffix or 'table'} file "
                                          f"({type(exc).__name__}: {exc})") from None


def _label_text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _match_by_overlap(table: gpd.GeoDataFrame, buildings: gpd.GeoDataFrame, source: str) -> pd.Series:
    """Per row of ``table``: the id of the job building with IoU ≥ :data:`MIN_IOU`, else None."""
    if table.crs is None:
        raise InvalidInput("crs", f"{source} has footprints but no CRS: say which it is (e.g. save it "
                                  "as EPSG:4326) so that they can be matched to the job's buildings")
    lon_lat = buildings.to_crs("EPSG:4326")
    west, south, east, north = lon_lat.total_bounds
    metric = utm_crs((float(west), float(south), float(east), float(north)))
    try:
        ours = table.geometry.to_crs(metric)
    except Exception as exc:  # noqa: BLE001 - a CRS pyproj cannot transform is the file's problem
        raise InvalidInput("crs", f"{source}: cannot reproject from {table.crs} ({exc})") from None
    theirs = lon_lat.geometry.to_crs(metric)
    valid = ours.notna() & ~ours.is_empty & np.isfinite(ours.bounds.to_numpy()).all(axis=1)
    x0, y0, x1, y1 = table.total_bounds
    if table.crs.is_geographic and not (-180 <= x0 <= x1 <= 360 and -90 <= y0 <= y1 <= 90):
        raise InvalidInput("crs", f"{source}: coordinates reach ({x0:.6g}, {y0:.6g})–({x1:.6g}, {y1:.6g}), which "
                                  f"are not degrees, yet the file says {table.crs.to_string()}; "
                                  "is the file's CRS right?")
    if not valid.any() or not shapely.box(*theirs.total_bounds).buffer(1000).intersects(
            shapely.box(*ours[valid].total_bounds)):
        raise InvalidInput("crs", f"{source}: none of its footprints lies within 1 km of the job's buildings "
                                  f"when read as {table.crs.to_string()}; is the file's CRS right?")
    tree = shapely.STRtree(theirs.to_numpy())
    pairs = tree.query(ours.to_numpy(), predicate="intersects")
    best: dict[int, tuple[float, int]] = {}
    a, b = ours.to_numpy()[pairs[0]], theirs.to_numpy()[pairs[1]]
    inter = shapely.area(shapely.intersection(a, b))
    iou = inter / np.maximum(shapely.area(shapely.union(a, b)), 1e-12)
    for i, j, v in zip(pairs[0], pairs[1], iou):
        if v >= MIN_IOU and v > best.get(int(i), (0.0, -1))[0]:
            best[int(i)] = (float(v), int(j))
    ids = buildings["building_id"].astype(str).to_numpy()
    return pd.Series([ids[best[i][1]] if i in best else None for i in range(len(table))], index=table.index)


def check_corrections(table: pd.DataFrame, buildings: gpd.GeoDataFrame, attribute: ReviewAttribute,
                      vocabulary: tuple[str, ...], *, label_column: str = "label", source: str = "corrections",
                      min_labels: int = MIN_LABELS) -> tuple[pd.DataFrame, CorrectionsReport]:
    """The clean corrections (``building_id``, ``label``, ``matched_by``, ``row``) and a report of
    every row set aside (module docstring).

    Args:
        table: the corrections as read (:func:`read_corrections`).
        buildings: the job's ``building_id`` + geometry.
        vocabulary: the classes a label may name (empty for a numeric attribute).

    Raises:
        InvalidInput: a problem of the whole file (module docstring), naming its field.
    """
    report = CorrectionsReport(source, attribute.name, len(table))
    if label_column not in table.columns:
        others = [c for c in table.columns if c != "geometry"]
        raise InvalidInput(label_column, f"{source} has no {label_column!r} column (it has: {', '.join(others)}); "
                                         "name the column that holds the labels")
    rows = pd.DataFrame({"row": np.arange(1, len(table) + 1), "label": table[label_column].map(_label_text)},
                        index=table.index)
    labelled = rows["label"].notna()
    report.unlabelled = int((~labelled).sum())
    has_geometry = isinstance(table, gpd.GeoDataFrame) and bool(table.geometry.notna().any())
    rows["building_id"] = table["building_id"].map(_label_text) if "building_id" in table.columns else None
    rows["match"] = None
    by_id = labelled & rows["building_id"].notna()
    if not rows["building_id"].notna().any() and not has_geometry:
        raise InvalidInput("building_id", f"{source} has neither building ids nor footprints: "
                                          "nothing to join its labels to the job's buildings with")
    known = set(buildings["building_id"].astype(str))
    rows.loc[by_id, "match"] = rows.loc[by_id, "building_id"].where(rows.loc[by_id, "building_id"].isin(known))
    # Rows without an id are matched by their footprint, when the file has footprints.
    by_shape = labelled & ~by_id
    if by_shape.any() and has_geometry:
        rows.loc[by_shape, "match"] = _match_by_overlap(table[by_shape], buildings, source)
    elif by_shape.any():
        report.add(rows.loc[by_shape, "row"].tolist(), "no_building_id", "the row has a label but no building_id")
    report.matched_by = " and ".join(m for m, used in (("building_id", by_id.any()),
                                                       (f"footprint overlap (IoU ≥ {MIN_IOU})", by_shape.any()
                                                        and has_geometry)) if used) or "nothing"
    # Labels for buildings the job does not have.
    unmatched = (by_id | (by_shape & has_geometry)) & rows["match"].isna()
    for r, b in zip(rows.loc[unmatched, "row"], rows.loc[unmatched, "building_id"]):
        report.add([int(r)], "no_such_building", f"building {b} is not in the job" if b
                   else f"no building of the job overlaps its footprint with IoU ≥ {MIN_IOU}", b)
    # The same building labelled twice: which label is right is the labeller's call, not ours.
    matched = labelled & rows["match"].notna()
    dup = matched & rows["match"].duplicated(keep=False)
    for building, group in rows[dup].groupby("match"):
        report.add(group["row"].tolist(), "duplicated_building",
                   f"building {building} is labelled more than once", str(building))
    # Labels the model does not know, or numbers out of range.
    ok = matched & ~dup
    if attribute.kind == "numeric":
        value = pd.to_numeric(rows["label"], errors="coerce")
        lo, hi = attribute.label_range or (-np.inf, np.inf)
        bad_number = ok & value.isna()
        for r, lab in zip(rows.loc[bad_number, "row"], rows.loc[bad_number, "label"]):
            unit = f", {attribute.unit}" if attribute.unit else ""
            report.add([int(r)], "not_a_number", f"label {lab!r} is not a number ({attribute.name}{unit})")
        out_of_range = ok & value.notna() & ((value < lo) | (value > hi))
        for r, v in zip(rows.loc[out_of_range, "row"], value[out_of_range]):
            report.add([int(r)], "out_of_range", f"{attribute.name} {v:g} is outside the plausible {lo:g}–{hi:g}")
        ok &= ~bad_number & ~out_of_range
        rows.loc[ok, "label"] = value[ok].astype(float)
    else:
        vocab = {v.lower(): v for v in vocabulary}
        unknown = ok & ~rows["label"].fillna("").str.lower().isin(vocab)
        for r, lab, building in zip(rows.loc[unknown, "row"], rows.loc[unknown, "label"], rows.loc[unknown, "match"]):
            report.add([int(r)], "unknown_class",
                       f"{lab!r} is not a class of the {attribute.name} model (classes: {', '.join(vocabulary)})",
                       str(building))
        ok &= ~unknown
        rows.loc[ok, "label"] = rows.loc[ok, "label"].str.lower().map(vocab)
    report.problems.sort(key=lambda p: p["row"])
    clean = pd.DataFrame({"building_id": rows.loc[ok, "match"].astype(str), "label": rows.loc[ok, "label"],
                          "matched_by": report.matched_by, "row": rows.loc[ok, "row"]}).reset_index(drop=True)
    report.accepted = len(clean)
    if report.accepted < min_labels:
        raise InvalidInput(label_column, f"{source}: {report.accepted} usable labels ({int(labelled.sum())} given, "
                                         f"{len({p['row'] for p in report.problems})} rejected); at least {min_labels} "
                                         "are needed to hold some out for validation\n" + report.summary())
    return clean, report
