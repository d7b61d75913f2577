"""What a fine-tune reads: the checked corrections joined to the job's buildings, turned into the
model's own inputs (issue 21, item 3).

The corrections are the clean table of :func:`urbanfabric.outputs.corrections.check_corrections`
(``building_id``, ``label``). Each labelled building gets what the served model read for it in
the job: its roof chip cut from the job's ARD tile exactly as the materials stage cuts it
(:func:`urbanfabric.materials.chips.chips_from_rasters` with the model's chip size and mode), or
its footprint features with the job's buildings as context (height). The parent is the version
that made the job's predictions (the table's ``model_versions``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import geopandas as gpd
import numpy as np
import pandas as pd

from urbanfabric.attributes.batch import image_evidence
from urbanfabric.attributes.chip_reader import ard_chip_reader
from urbanfabric.attributes.context import AreaFrame, select_context
from urbanfabric.attributes.features import footprint_features
from urbanfabric.attributes.image_evidence import IMAGE_FEATURE_NAMES
from urbanfabric.errors import InvalidInput
from urbanfabric.footprints.ownership import utm_crs
from urbanfabric.io.rasters import Raster
from urbanfabric.materials.chips import ChipMode, chips_from_rasters
from urbanfabric.outputs.learning import LabelledRows
from urbanfabric.outputs.review_package import TableParts

@dataclass(frozen=True)
class Learnable:
    """An attribute the loop can fine-tune: its model's key in ``model_versions`` and its inputs."""

    attribute: str
    model_key: str
    kind: str  # "class" or "numeric"
    inputs: str  # "chips" or "features"


LEARNABLE: dict[str, Learnable] = {a.attribute: a for a in (
    Learnable("roof_material", "roof", "class", "chips"),
    Learnable("roof_shape", "roof_shape", "class", "chips"),
    Learnable("height", "height", "numeric", "features"),
    Learnable("year_built", "age", "numeric", "features"),
)}
#: Why the other reviewable attributes cannot be fine-tuned yet (named in the error).
NOT_YET = {
    "facade_material": "the façade model reads street-level views, which the job does not keep per building",
    "footprint": "the segmenter's fine-tune (models/footprint_unet/fine_tune.py) needs each reviewed "
                 "building's image chip and corrected outline, which a job's corrections do not carry yet",
}


def learnable(attribute: str) -> Learnable:
    """The attribute's fine-tune description.

    Raises:
        InvalidInput: an attribute the loop cannot fine-tune (field ``attribute``, saying why).
    """
    if attribute in LEARNABLE:
        return LEARNABLE[attribute]
    why = NOT_YET.get(attribute, "no such attribute")
    raise InvalidInput("attribute", f"{attribute!r} cannot be fine-tuned: {why} "
                                    f"(fine-tunable: {', '.join(LEARNABLE)})")


def labelled_buildings(parts: TableParts, corrections: pd.DataFrame, context: bool = False
                       ) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame | None]:
    """The job's rows of the corrected buildings with their ``label`` (in corrections order), and
    — with ``context`` — the job's footprints around them.

    Raises:
        InvalidInput: the corrections lack ``building_id`` / ``label`` or repeat a building
            (field named), or name buildings the job does not have (field ``building_id``,
            listing them).
    """
    for column in ("building_id", "label"):
        if column not in corrections.columns:
            raise InvalidInput(column, f"the corrections have no {column!r} column; check them first "
                                       "(urbanfabric corrections check FILE --job JOB)")
    ids = corrections["building_id"].astype(str)
    repeated = sorted(set(ids[ids.duplicated()]))
    if repeated:
        raise InvalidInput("building_id", f"{len(repeated)} building(s) labelled more than once: "
                                          f"{', '.join(repeated[:10])}{' …' if len(repeated) > 10 else ''}")
    wanted = set(ids)
    rows, around = [], []
    for part in parts():
        part_ids = part["building_id"].astype(str)
        keep = part[part_ids.isin(wanted)]
        if len(keep):
            rows.append(keep)
        if context:
            around.append(part[["building_id", "geometry"]])
    found = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["building_id", "geometry"])
    found["building_id"] = found["building_id"].astype(str)
    missing = [b for b in ids if b not in set(found["building_id"])]
    if missing:
        raise InvalidInput("building_id", f"{len(missing)} labelled building(s) are not in the job: "
                                          f"{', '.join(missing[:10])}{' …' if len(missing) > 10 else ''}")
    labels = corrections.assign(building_id=ids)[["building_id", "label"]]
    table = gpd.GeoDataFrame(labels.merge(found, on="building_id", how="left", validate="one_to_one"),
                             geometry="geometry", crs="EPSG:4326")
    if not context:
        return table, None
    # As a batch's context in the job: the footprints around, never the labelled buildings
    # themselves (a building its own neighbour at 0 m is not what the served model saw).
    candidates = gpd.GeoDataFrame(pd.concat(around, ignore_index=True), geometry="geometry", crs="EPSG:4326")
    return table, select_context(table, candidates)


def parent_version(buildings: pd.DataFrame, spec: Learnable) -> str:
    """``name:version`` of the model that made the labelled buildings' predictions (the most
    common one among them).

    Raises:
        InvalidInput: no row names such a model (field ``model_versions``).
    """
    refs = [json.loads(m).get(spec.model_key) for m in buildings.get("model_versions", pd.Series(dtype=str))
            .dropna().astype(str) if m]
    refs = [r for r in refs if r]
    if not refs:
        raise InvalidInput("model_versions", f"no labelled building names a {spec.model_key} model in the job's "
                                             f"model_versions: the job made no {spec.attribute} predictions to improve")
    values, counts = np.unique(refs, return_counts=True)
    return str(values[counts.argmax()])


def _metric_points(frame: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray]:
    centre = frame.geometry.representative_point()
    lon, lat = centre.x.to_numpy(), centre.y.to_numpy()
    metric = centre.to_crs(utm_crs((float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max()))))
    return metric.x.to_numpy(), metric.y.to_numpy()


def chip_rows(buildings: gpd.GeoDataFrame, config: dict, load_ard: Callable[[str], Raster]
              ) -> tuple[LabelledRows, dict[str, str]]:
    """The labelled buildings' roof chips as the materials stage cuts them for this model, and
    ``{building_id: why}`` for those without one (no tile, no readable image, too small).

    Raises:
        InvalidInput: the job's table has no ``tile_id`` (field ``tile_id``): no imagery to cut from.
    """
    if "tile_id" not in buildings or buildings["tile_id"].isna().all():
        raise InvalidInput("tile_id", "the job's buildings carry no tile: the job has no imagery to cut roof chips from")
    size, mode = int(config.get("chip_size", 128)), ChipMode.of(config)
    chips = np.zeros((len(buildings), mode.channels, size, size), np.float32)
    ok = np.zeros(len(buildings), dtype=bool)
    dropped: dict[str, str] = {}
    gsd: list[float] = []

    def load(tile: str) -> Raster:
        image = load_ard(tile)
        try:
            gsd.append(float(image.ground_resolution_m()))
        except InvalidInput:  # a geographic raster: no metric pixel size
            pass
        return image

    with_tile = buildings[buildings["tile_id"].notna()]
    for tile, group in with_tile.groupby(with_tile["tile_id"].astype(str)):
        got, reasons = chips_from_rasters(group[["building_id", "geometry"]], [(tile, partial(load, tile))],
                                          size, mode=mode)
        for pos, (i, reason) in enumerate(zip(group.index, reasons)):
            if reason:
                dropped[str(buildings.at[i, "building_id"])] = reason
            else:
                chips[buildings.index.get_loc(i)] = got[pos]
                ok[buildings.index.get_loc(i)] = True
    for i in np.flatnonzero(buildings["tile_id"].isna().to_numpy()):
        dropped[str(buildings["building_id"].iloc[i])] = "no tile"
    x, y = _metric_points(buildings)
    rows = LabelledRows(buildings["building_id"].to_numpy(dtype=str), buildings["label"].astype(str).to_numpy(),
                        chips, x, y, {"gsd_m": sorted(set(gsd))})
    return rows.subset(ok), dropped


def feature_rows(buildings: gpd.GeoDataFrame, context: gpd.GeoDataFrame | None,
                 feature_names: tuple[str, ...], load_ard: Callable[[str], Raster] | None = None,
                 area_frame: AreaFrame | None = None) -> LabelledRows:
    """The labelled buildings' inputs as the attributes service built them in the job: footprint
    features with the job's buildings as context and the job's area frame, and — for a height
    model with image inputs (``img_*``) — image evidence from the job's ARD tiles under the
    buildings, with the shadow direction of those tiles (what the service does without sun
    metadata). A fine-tune on other inputs than the served ones learns a model for a path the
    job never takes (the first end-to-end run showed it: heights labelled taller came out lower).
    """
    X = footprint_features(buildings[["geometry"]], context=context, area_frame=area_frame)
    wants_images = any(name in IMAGE_FEATURE_NAMES for name in feature_names)
    if wants_images and load_ard is not None and "tile_id" in buildings and buildings["tile_id"].notna().any():
        tiles = sorted(buildings["tile_id"].dropna().astype(str).unique())
        images, _ = ard_chip_reader([(tile, load_ard(tile)) for tile in tiles])
        if images is not None:
            table, _, _ = image_evidence(buildings.geometry, images, None, images.scene_shadow_azimuth())
            for name in IMAGE_FEATURE_NAMES:
                X[name] = table[name].to_numpy()
    for name in feature_names:
        if name not in X:
            X[name] = np.nan
    x, y = _metric_points(buildings)
    return LabelledRows(buildings["building_id"].to_numpy(dtype=str),
                        pd.to_numeric(buildings["label"]).to_numpy(dtype=float),
                        X[list(feature_names)].reset_index(drop=True), x, y)


def job_area_frame(parameters: dict, buildings_bounds: tuple[float, float, float, float]) -> AreaFrame:
    """The area frame the job's batches carried: its ``area`` when it had one, else the extent of
    its footprints (the flow uses the footprint file's bounds)."""
    area = parameters.get("area") or {}
    if all(k in area for k in ("west", "south", "east", "north")):
        return AreaFrame.from_bbox((float(area["west"]), float(area["south"]), float(area["east"]),
                                    float(area["north"])))
    return AreaFrame.from_bbox(buildings_bounds)
