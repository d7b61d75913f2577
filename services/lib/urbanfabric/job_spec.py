"""One job spec: what a map-area run is asked to do, validated once.

The ``map-area`` flow takes a :class:`JobSpec` as its one parameter (the Prefect form shows its
fields, typed and documented), ``urbanfabric run`` builds its flags from it
(:mod:`urbanfabric.cli.spec_flags`), and each stage gets its own nested part: segmentation
options travel whole to the segmentation service. A bad value fails before any work starts,
naming the field (``segmentation.threshold``, ``area``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from urbanfabric.errors import InvalidInput, from_validation
from urbanfabric.footprints.options import SegmentationOptions, check_model_ref

def local_or_uri(value: str) -> str:
    """URIs as given; local paths made absolute (the flow runner may run in another folder)."""
    return value if not value or "://" in value or value.startswith("sample:") else str(Path(value).resolve())


class AreaOfInterest(BaseModel):
    """A lon/lat (EPSG:4326) bounding box; ``"west,south,east,north"`` is accepted too."""

    model_config = ConfigDict(extra="forbid")

    west: float = Field(ge=-180, le=180, allow_inf_nan=False)
    south: float = Field(ge=-85.06, le=85.06, allow_inf_nan=False)
    east: float = Field(ge=-180, le=180, allow_inf_nan=False)
    north: float = Field(ge=-85.06, le=85.06, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",")]
            if len(parts) != 4:
                raise ValueError(f"expected west,south,east,north (4 numbers), got {value!r}")
            try:
                w, s, e, n = (float(p) for p in parts)
            except ValueError:
                raise ValueError(f"expected 4 numbers west,south,east,north, got {value!r}") from None
            return {"west": w, "south": s, "east": e, "north": n}
        if isinstance(value, (list, tuple)) and len(value) == 4:
            return dict(zip(("west", "south", "east", "north"), value))
        return value

    @model_validator(mode="after")
    def _ordered(self) -> AreaOfInterest:
        if self.west > self.east:
            # Web-Mercator tiles and one UTM zone per tile cannot wrap; two jobs can.
            raise ValueError(f"west {self.west} > east {self.east}: a box across the antimeridian (180°) "
                             f"is not mapped as one job; split it at 180° into two areas")
        if not (self.west < self.east and self.south < self.north):
            raise ValueError("the box is empty: west < east and south < north are required")
        return self

    def bbox(self) -> tuple[float, float, float, float]:
        return (self.west, self.south, self.east, self.north)

    def area_km2(self) -> float:
        """Surface of the box on a sphere of the Earth's mean radius (6,371 km)."""
        r = 6371.0
        return (r * r * math.radians(self.east - self.west)
                * abs(math.sin(math.radians(self.north)) - math.sin(math.radians(self.south))))


class ModelVersions(BaseModel):
    """Which model versions characterise the buildings (``name:version``; "" skips that attribute)."""

    model_config = ConfigDict(extra="forbid")

    roof_material: str = Field("roof-material:v4", description="roof-material model ('' = none)",
                               json_schema_extra={"flags": ["--roof-material-model"]})
    roof_shape: str = Field("roof-shape:v4", description="roof-shape model ('' = none)",
                            json_schema_extra={"flags": ["--roof-shape-model"]})
    facade_material: str = Field(
        "facade-material:v2", description="façade-material model ('' = none); needs street_views",
        json_schema_extra={"flags": ["--facade-model"]})
    height: str = Field("height-xgb:v4", description="height model (required); v4 uses the imagery "
                        "when the job has it, its morphology-only path otherwise",
                        json_schema_extra={"flags": ["--height-model"]})
    age: str = Field("building-age:v3", description="construction-year (age) model (required); a version the "
                     "learning loop fine-tuned (building-age:v3-ftN) is read from the model store",
                     json_schema_extra={"flags": ["--age-model"]})
    structure: str = Field(
        "structure-type:v2",
        description="structure-type model: P(concrete, masonry, steel, timber) per building, sampled by the "
                    "stock's Monte-Carlo draws ('' = the roof/façade class lookup)",
        json_schema_extra={"flags": ["--structure-model"]})

    @field_validator("roof_material", "roof_shape", "facade_material", "structure")
    @classmethod
    def _optional_ref(cls, value: str) -> str:
        return check_model_ref(value) if value.strip() else ""

    @field_validator("height", "age")
    @classmethod
    def _required_ref(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError(f"{'an' if info.field_name == 'age' else 'a'} {info.field_name} model is required")
        return check_model_ref(value)


#: The ``models`` field of each attribute ``refresh`` accepts whose name differs (the buildings
#: table's ``year_built`` is made by the age model).
REFRESH_MODEL_FIELDS = {"year_built": "age"}


def refresh_model_field(attribute: str) -> str:
    """The :class:`ModelVersions` field that makes ``attribute`` (a ``refresh`` entry)."""
    return REFRESH_MODEL_FIELDS.get(attribute, attribute)


class ImageryOptions(BaseModel):
    """How scenes are searched, chosen and calibrated (GBM acquisition rules by default)."""

    model_config = ConfigDict(extra="forbid")

    bands: dict[str, str] = Field(
        default_factory=dict,
        description="model band → asset key or 'asset#N' of this source (red=B04,green=B03,blue=B02); "
                    "empty = by name/eo:bands")
    collections: list[str] = Field(default_factory=list, description="STAC API collections to search (empty = all)")
    year: int | None = Field(None, description="preferred acquisition year (empty = any date, most recent first)")
    fallback_years: int = Field(1, ge=0, le=20, description="earlier years tried when `year` has no clear scene")
    max_cloud_cover: float = Field(0.10, ge=0.0, le=1.0, description="largest accepted eo:cloud_cover share (GBM: 10 %)",
                                   json_schema_extra={"flags": ["--max-cloud"]})
    basemap: str = Field("", description="catalog / STAC API used when no year has a clear scene ('' = none)")
    resampling: str = Field("auto", description="GDAL resampling when the source grid differs from the tiles' "
                                                "(nearest, bilinear, average, …); 'auto': average when the "
                                                "source is finer than the model's grid, bilinear when coarser, "
                                                "nearest when about the same")
    settlement_mask: str = Field("", description="vector or raster; only grid cells with settlement are mapped")
    calibration: Literal["patch", "city"] = Field(
        "city", description="IQR statistics per patch, or once over the whole area (city: neighbouring tiles "
                            "see the same scaling, which halves the probability jumps at tile borders)")

    @field_validator("bands", mode="before")
    @classmethod
    def _bands(cls, value: Any) -> Any:
        if isinstance(value, str):
            pairs = [p for p in value.split(",") if p.strip()]
            if any("=" not in p for p in pairs):
                raise ValueError(f"expected band=asset pairs (red=B04,green=B03), got {value!r}")
            return dict(p.strip().split("=", 1) for p in pairs)
        return value

    @field_validator("collections", mode="before")
    @classmethod
    def _collections(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("settlement_mask")
    @classmethod
    def _mask_path(cls, value: str) -> str:
        return local_or_uri(value)


class LandCoverOptions(BaseModel):
    """GBM land-cover post-filter of the segmentation; off while ``raster`` is empty."""

    model_config = ConfigDict(extra="forbid")

    raster: str = Field("", description="land-cover raster (any CRS/resolution): a file or an s3:// URI",
                        json_schema_extra={"flags": ["--landcover"]})
    classes: str = Field("esa-worldcover", description="'esa-worldcover', 'from-glc10', or 'code=name,…' pairs "
                                                       "in the rule vocabulary (cropland, forest, grass, …)")
    settlement: str = Field("", description="settlement raster (non-zero = settled, e.g. WSF); '' = all settled")

    @field_validator("raster", "settlement")
    @classmethod
    def _paths(cls, value: str) -> str:
        return local_or_uri(value)

    @model_validator(mode="after")
    def _settlement_needs_raster(self) -> LandCoverOptions:
        if self.settlement and not self.raster:
            raise ValueError("a settlement raster needs landcover.raster")
        return self


class OutputOptions(BaseModel):
    """How the buildings table is written (issue 22, item 4; docs/architecture.md, "Outputs")."""

    model_config = ConfigDict(extra="forbid")

    single_file: bool = Field(
        True, description="also write outputs/buildings.parquet, every building in one file: a convenience "
                          "copy for small jobs (the partitioned outputs/buildings/ is always written); "
                          "switch it off for big jobs")
    web_tiles: bool = Field(
        True, description="also write outputs/buildings.pmtiles and viewer.html, the buildings as vector web "
                          "tiles (≈ 30–70 s per 100,000 buildings); switch it off when only the table is wanted")
    partition_zoom: int = Field(10, ge=4, le=16, description="quadkey zoom of the buildings partitions "
                                                             "(10: ≈ 39 km tiles at the equator)")
    row_group_rows: int = Field(10_000, ge=100, le=1_000_000,
                                description="rows per Parquet row group (smaller: finer bbox range reads)")


class JobSpec(BaseModel):
    """A map-area run: the area, the imagery or footprints, and every option of every stage."""

    model_config = ConfigDict(extra="forbid")

    area: AreaOfInterest | None = Field(
        None, description="lon/lat box to map (west,south,east,north); may be left out with footprints "
                          "(their extent is used)", json_schema_extra={"flags": ["--bbox"]})
    imagery: str | None = Field(
        "sample:xiamen-z18",
        description="'sample:<name>', an s3:// URI of a STAC catalog.json, a STAC API / catalog http(s) URL, "
                    "or 'cogs:<url>,<url>'; empty with footprints only (no roof materials then)")
    footprints: str | None = Field(
        None, description="a GeoJSON / GeoParquet / OSM (.osm.pbf) file or an s3:// URI; given, segmentation "
                          "is skipped and these polygons are used")
    bucket: str = Field("urbanfabric", description="object-store bucket for all outputs")
    segmentation: SegmentationOptions = Field(default_factory=SegmentationOptions,
                                              json_schema_extra={"flag_prefix": "segmentation-"})
    models: ModelVersions = Field(default_factory=ModelVersions, json_schema_extra={"flag_prefix": ""})
    region: str = Field("ASIA_CHN", description="material-intensity region (RASMI R5_32 code, e.g. ASIA_CHN, OECD_EU15)")
    batch_size: int = Field(1_000, ge=1, le=100_000,
                            description="most buildings per BuildingBatch (a speed setting: values do not depend "
                                        "on it; 1,000 maps 1.6× faster than 250 through the stack)")
    halo_px: int = Field(128, ge=0, le=1024,
                         description="context pixels around each tile for seamless segmentation (128 = the "
                                     "blending overlap)")
    job_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="reuse an id to resume a job (finished tasks are not redone); new by default",
        json_schema_extra={"flags": ["--job"]})
    districts: str | None = Field(None, description="polygons (GeoJSON / GeoParquet or s3:// URI) to total stock, "
                                                    "CO2e and solar per district")
    district_id: str = Field("id", description="the districts' id column")
    tile_timeout_s: float = Field(1800, gt=0, description="longest wait for the next tile result while tiles "
                                                          "are in flight (seconds)")
    batch_timeout_s: float = Field(1200, gt=0, description="longest wait for the next building batch result "
                                                           "while batches are in flight (seconds)")
    worker_replicas: int = Field(1, ge=1, le=10_000, description="replicas of each worker (tile, building); the "
                                                                 "flow keeps in_flight_per_worker × this many "
                                                                 "tasks of a stage in flight")
    seams: Literal["global", "tile"] = Field(
        "tile", description="how pieces split by tile borders are joined: 'tile' (each tile joins its border "
                            "pieces with its neighbours' and keeps the buildings whose point lies in its "
                            "core; the flow never gathers the area's footprints) or 'global' (one pass over "
                            "the whole area's footprints, as before session 12; same buildings and values)")
    in_flight_per_worker: int = Field(4, ge=1, le=1_000, description="tasks per worker replica published and not "
                                                                     "yet answered (bounds the flow's memory)")
    imagery_options: ImageryOptions = Field(default_factory=ImageryOptions, json_schema_extra={"flag_prefix": ""})
    street_views: str | None = Field(None, description="s3:// URI of a street-level view catalog (GeoJSON/CSV) for "
                                                       "façade materials")
    measured_heights: str | None = Field(
        None, description="s3:// URI of the user's measured building heights (GeoJSON / GeoParquet "
                          "polygons with a height_m column, any CRS); they replace model heights "
                          "where they cover a footprint")
    measured_heights_unit: str = Field("m", description="unit of measured_heights' height_m: m or ft")
    landcover: LandCoverOptions = Field(default_factory=LandCoverOptions,
                                        json_schema_extra={"flag_prefix": "landcover-"})
    max_area_km2: float = Field(
        1_000_000, gt=0, allow_inf_nan=False,
        description="largest area one job may map (km²), a guard against a mistyped box; "
                    "Denmark is ≈ 43,000 km², France ≈ 550,000 km²")
    outputs: OutputOptions = Field(default_factory=OutputOptions,
                                   description="how the buildings table is written",
                                   json_schema_extra={"flag_prefix": "outputs-"})
    refresh: list[Literal["roof_material", "roof_shape", "facade_material", "height", "year_built",
                          "structure"]] = Field(
        default_factory=list,
        description="re-map an existing job (job_id) for these attributes' models: its building batches are "
                    "redone with the spec's model versions, its tiles and footprints reused; comma list")
    population: float | None = Field(
        None, gt=0, description="inhabitants of the area, when known: enables the per-capita stock "
                                "sanity check of the report (urbanfabric.outputs.sanity)")

    @field_validator("measured_heights_unit")
    @classmethod
    def _height_unit(cls, value: str) -> str:
        if value.lower() not in ("m", "ft"):
            raise ValueError(f"unit must be 'm' or 'ft', got {value!r}")
        return value.lower()

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        # A misspelt code used to fall back to the GLOBAL mixture silently (a reason on every
        # row, but a job that looked fine): only the shipped table's codes or GLOBAL pass.
        from difflib import get_close_matches

        from urbanfabric.stock.intensity import default_table
        from urbanfabric.stock.vocabulary import GLOBAL_REGION

        known = (*default_table().regions, GLOBAL_REGION)
        if value in known:
            return value
        near = get_close_matches(value.upper(), known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise ValueError(f"{value!r} is not a RASMI region; {hint}codes: {', '.join(known)}")

    @field_validator("refresh", mode="before")
    @classmethod
    def _refresh(cls, value: Any) -> Any:
        # "roof_material,height" from a command line or a form, or a list.
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("footprints", "districts")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return local_or_uri(value) if value else value

    @model_validator(mode="after")
    def _area_or_footprints(self) -> JobSpec:
        if self.refresh and not self.job_id:
            raise InvalidInput("refresh", "re-mapping needs the job to re-map: give its job_id")
        if self.area is None and not self.footprints:
            raise ValueError("give an area, footprints, or both")
        if self.area is not None and self.area.area_km2() > self.max_area_km2:
            raise InvalidInput("area", f"the box covers {self.area.area_km2():,.0f} km², over the limit of "
                                       f"{self.max_area_km2:,.0f} km² (max_area_km2); raise the limit for a "
                                       f"national run, or map the area in parts")
        return self

    @property
    def segment(self) -> bool:
        """Whether tiles are segmented (no user footprints)."""
        return not self.footprints

    @classmethod
    def parse(cls, value: Any) -> JobSpec:
        """A spec from a dict (or a spec), or :class:`InvalidInput` naming the first bad field."""
        if isinstance(value, cls):
            return value
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            raise from_validation(exc) from None

