"""How a job segments its tiles: the model or ensemble, test-time augmentation and the cut.

One validated spec, used whole by every layer: the job spec nests it (``segmentation``), the
command line builds ``--segmentation-*`` flags from it, it travels to the segmentation service as
the ``SegmentationOptions`` message (same field names), and
:func:`urbanfabric.footprints.tile_segmentation.segment_tile` reads it. Adding an option means a
field here, the same field in ``protos/urbanfabric/v1/common.proto``, and its use in the core.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from urbanfabric.footprints.ensemble import EnsembleCombine
from urbanfabric.footprints.tta import TTA

#: ``name:version`` of a served model (``footprint-unet:v7``).
MODEL_REF = re.compile(r"^[a-z][a-z0-9_-]*:[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_model_ref(value: str) -> str:
    """``value`` stripped, when it is ``name:version``; otherwise a ValueError saying so."""
    value = value.strip()
    if not MODEL_REF.match(value):
        raise ValueError(f"expected name:version (e.g. footprint-unet:v7), got {value!r}")
    return value


class SegmentationOptions(BaseModel):
    """Footprint segmentation of every tile (GBM: segmentation, ensemble, test-time augmentation)."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    model: str = Field("footprint-unet:v1", description="segmentation model (name:version)")
    ensemble: list[str] = Field(
        default_factory=list,
        description="further models combined with `model` (name:version,…; empty: `model` alone)",
        json_schema_extra={"flags": ["--ensemble"]},
    )
    ensemble_combine: EnsembleCombine = Field(
        EnsembleCombine.VOTE,
        description="vote: building where `min_votes` members agree, each at its own threshold (GBM); "
                    "mean: the mean probability, cut at `threshold`",
        json_schema_extra={"flags": ["--ensemble-combine"]},
    )
    min_votes: int = Field(0, ge=0, description="vote: members that must agree (0 = a majority; GBM: 2 of 4)",
                           json_schema_extra={"flags": ["--min-votes"]})
    tta: TTA = Field(
        TTA.NONE,
        description="test-time augmentation: flips (4 views) or d4 (8 views) averaged, 4 or 8 times "
                    "the model time; d4-zoom adds the 8 views magnified 1.25x (about 11 times)",
        json_schema_extra={"flags": ["--tta"]},
    )
    threshold: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="probability cut (0 = the model's own, chosen on validation data under the TTA; for a "
                    "mean ensemble the mean of the members' own); a vote ignores it",
    )
    min_area_m2: float = Field(0.0, ge=0.0, description="polygons smaller than this are dropped (0 = 10 m²)")
    simplify_tolerance_m: float = Field(0.0, ge=0.0,
                                        description="Douglas–Peucker tolerance in metres (0 = 0.75 m)")
    regularise: bool = Field(
        True,
        description="regularise footprints: straight, square outlines where the building is rectilinear, "
                    "free where it is not, within `regularise_tolerance_m`; buildings sharing a wall keep "
                    "sharing it (false: Douglas–Peucker at `simplify_tolerance_m` only)",
        json_schema_extra={"flags": ["--regularise"]},
    )
    regularise_tolerance_m: float = Field(
        0.0, ge=0.0, le=10.0,
        description="how far (metres) a regularised outline may move from the traced one (0 = 1.0 m)",
        json_schema_extra={"flags": ["--regularise-tolerance"]},
    )
    split_touching: bool = Field(
        True,
        description="with `regularise`: split buildings merged in the mask where the probability dips "
                    "between them (watershed from their confident cores)",
        json_schema_extra={"flags": ["--split-touching"]},
    )
    min_confidence: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="footprints whose mean building probability (for a vote, the members' mean agreement) "
                    "is below this are dropped (0 = keep every footprint)")

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return check_model_ref(value)

    @field_validator("ensemble", mode="before")
    @classmethod
    def _ensemble(cls, value: Any) -> Any:
        # "a:v1,b:v2" from a command line or a form, or a list.
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return [check_model_ref(str(v)) for v in value]
        return value

    @field_validator("ensemble_combine", "tta", mode="before")
    @classmethod
    def _choice(cls, value: Any) -> Any:
        # Names as typed ("D4 ", "Mean"); the enum check then lists the choices there are.
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _votes(self) -> SegmentationOptions:
        n = len(self.members)
        if self.min_votes > n:
            raise ValueError(f"min_votes must be in 0..{n} for {n} members")
        return self

    @property
    def members(self) -> list[str]:
        """Every model the segmentation runs: ``model`` first, then the ensemble."""
        return [self.model, *self.ensemble]
