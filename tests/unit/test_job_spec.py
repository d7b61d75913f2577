"""The job spec: validation with named fields, the flags built from it, and its proto twin."""

from __future__ import annotations

import argparse

import pytest
from urbanfabric.cli.spec_flags import add_spec_arguments, leaf_fields, spec_from_args
from urbanfabric.errors import InvalidInput
from urbanfabric.footprints.ensemble import EnsembleCombine
from urbanfabric.footprints.options import SegmentationOptions
from urbanfabric.footprints.tta import TTA
from urbanfabric.job_spec import JobSpec
from urbanfabric.runtime.convert import options_from_proto, options_to_proto
from urbanfabric.v1 import common_pb2

AREA = "118.08,24.47,118.09,24.48"


def _flags(line: str) -> JobSpec:
    parser = argparse.ArgumentParser()
    add_spec_arguments(parser)
    return spec_from_args(parser.parse_args(line.split()))


@pytest.mark.parametrize(("data", "field"), [
    ({}, "spec"),  # neither area nor footprints
    ({"area": "1,2,3"}, "area"),
    ({"area": "1,2,0,3"}, "area"),  # west >= east
    ({"area": AREA, "segmentation": {"tta": "d5"}}, "segmentation.tta"),
    ({"area": AREA, "segmentation": {"model": "unet"}}, "segmentation.model"),
    ({"area": AREA, "segmentation": {"ensemble": "footprint-unet:v6", "min_votes": 3}}, "segmentation"),
    ({"area": AREA, "models": {"height": ""}}, "models.height"),
    ({"area": AREA, "landcover": {"settlement": "s3://b/wsf.tif"}}, "landcover"),
    ({"area": AREA, "batch_size": 0}, "batch_size"),
    ({"area": AREA, "job_id": "../../x"}, "job_id"),
    ({"area": AREA, "colour": "red"}, "colour"),
    ({"area": AREA, "measured_heights_unit": "storeys"}, "measured_heights_unit"),
])
def test_bad_specs_name_the_field(data, field):
    with pytest.raises(InvalidInput) as err:
        JobSpec.parse(data)
    assert err.value.field == field


def test_defaults_and_text_forms():
    spec = JobSpec.parse({"area": AREA, "imagery_options": {"bands": "red=B04, green=B03"},
                          "segmentation": {"ensemble": "footprint-unet:v6, footprint-unet:v7", "tta": " D4"}})
    assert spec.area is not None and spec.area.bbox() == (118.08, 24.47, 118.09, 24.48)
    assert spec.imagery_options.bands == {"red": "B04", "green": "B03"}
    assert spec.segmentation.members == ["footprint-unet:v1", "footprint-unet:v6", "footprint-unet:v7"]
    assert spec.segmentation.tta is TTA.D4 and spec.segmentation.ensemble_combine is EnsembleCombine.VOTE
    assert spec.segment and spec.models.roof_material == "roof-material:v4"


def test_flags_cover_every_field_and_keep_the_old_spellings():
    paths = {".".join(p) for p, _, _ in leaf_fields()}
    assert {"area", "segmentation.tta", "segmentation.threshold", "models.height",
            "imagery_options.year", "landcover.raster"} <= paths
    spec = _flags(f"--bbox {AREA} --segmentation-model footprint-unet:v5 --ensemble footprint-unet:v6,footprint-unet:v7 "
                  "--ensemble-combine mean --segmentation-threshold 0.40 --tta d4 --max-cloud 0.2 --roof-material-model "
                  "roof-material:v1 --year 2021")
    seg = spec.segmentation
    assert (seg.model, seg.ensemble, seg.ensemble_combine, seg.threshold, seg.tta) == (
        "footprint-unet:v5", ["footprint-unet:v6", "footprint-unet:v7"], EnsembleCombine.MEAN, 0.4, TTA.D4)
    assert spec.imagery_options.max_cloud_cover == 0.2 and spec.imagery_options.year == 2021
    assert spec.models.roof_material == "roof-material:v1"
    # Flags not given leave the spec's defaults.
    assert _flags(f"--bbox {AREA}") == JobSpec.parse({"area": AREA})


def test_a_bad_flag_value_names_the_field():
    with pytest.raises(InvalidInput, match="^segmentation.threshold"):
        _flags(f"--bbox {AREA} --segmentation-threshold 1.5")
    with pytest.raises(InvalidInput, match="^area"):
        _flags("--bbox 1,2,3")


def test_spec_and_proto_segmentation_options_have_the_same_fields():
    # The generic conversion relies on it: a field added on one side only fails here.
    assert set(SegmentationOptions.model_fields) == set(common_pb2.SegmentationOptions.DESCRIPTOR.fields_by_name)


@pytest.mark.parametrize("options", [
    SegmentationOptions(),
    SegmentationOptions(model="footprint-unet:v5", ensemble=["footprint-unet:v6", "footprint-unet:v7"],
                        ensemble_combine="mean", min_votes=2, tta="d4-zoom", threshold=0.4, min_area_m2=5,
                        simplify_tolerance_m=0.5),
    SegmentationOptions(regularise=False, split_touching=False, regularise_tolerance_m=2.5),
])
def test_segmentation_options_round_trip_through_the_proto(options):
    msg = options_to_proto(options, common_pb2.SegmentationOptions)
    assert options_from_proto(msg, SegmentationOptions, "options") == options


def test_proto_values_the_spec_rejects_name_the_field():
    with pytest.raises(InvalidInput, match="options.threshold"):
        options_from_proto(common_pb2.SegmentationOptions(threshold=1.5), SegmentationOptions, "options")
    with pytest.raises(InvalidInput, match="options.tta"):
        options_from_proto(common_pb2.SegmentationOptions(tta=99), SegmentationOptions, "options")
    # Unset enums take the spec's defaults.
    assert options_from_proto(common_pb2.SegmentationOptions(), SegmentationOptions, "o").tta is TTA.NONE


def test_regularisation_is_on_by_default_and_a_flag_turns_it_off():
    spec = _flags(f"--bbox {AREA}")
    assert spec.segmentation.regularise and spec.segmentation.split_touching
    off = _flags(f"--bbox {AREA} --segmentation-regularise false --regularise-tolerance 1.5")
    assert not off.segmentation.regularise and off.segmentation.regularise_tolerance_m == 1.5
    with pytest.raises(InvalidInput, match="^segmentation.regularise_tolerance_m"):
        _flags(f"--bbox {AREA} --segmentation-regularise-tolerance-m -1")
    # A message that never set the optional flags (an older client) keeps them on.
    unset = options_from_proto(common_pb2.SegmentationOptions(), SegmentationOptions, "o")
    assert unset.regularise and unset.split_touching
    explicit_off = options_to_proto(SegmentationOptions(regularise=False), common_pb2.SegmentationOptions)
    assert explicit_off.HasField("regularise") and not options_from_proto(
        explicit_off, SegmentationOptions, "o").regularise


def test_measured_heights_and_the_image_height_model_by_default():
    spec = JobSpec.parse({"area": AREA, "measured_heights": "s3://b/heights.geojson",
                          "measured_heights_unit": "FT"})
    assert spec.measured_heights == "s3://b/heights.geojson" and spec.measured_heights_unit == "ft"
    assert JobSpec.parse({"area": AREA}).models.height == "height-xgb:v4"


def test_the_age_model_is_named_like_the_height_model():
    # The default is the version the attributes service ran before jobs could name one.
    from services.attributes.server import DEFAULT_AGE_MODEL

    assert JobSpec.parse({"area": AREA}).models.age == "building-age:v3"
    assert JobSpec.parse({"area": AREA}).models.age.replace("-", "_") == ":".join(DEFAULT_AGE_MODEL)
    spec = _flags(f"--bbox {AREA} --job j1 --refresh year_built --age-model building-age:v3-ft1")
    assert spec.models.age == "building-age:v3-ft1" and spec.refresh == ["year_built"]
