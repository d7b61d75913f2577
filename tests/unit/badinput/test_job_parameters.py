"""Job parameters as a user types them: the Prefect form / JSON spec and the CLI flags.

Each case gives ``InvalidInput`` naming the field (the CLI: exit status 2 and one line on
stderr naming it, no traceback).
"""

from __future__ import annotations

import pytest

from urbanfabric.cli.main import main
from urbanfabric.errors import InvalidInput
from urbanfabric.job_spec import JobSpec

AREA = "118.08,24.47,118.09,24.48"

SPECS: list[tuple[str, dict, str]] = [
    ("nothing", {}, "spec"),
    ("area-three-numbers", {"area": "1,2,3"}, "area"),
    ("area-five-numbers", {"area": "1,2,3,4,5"}, "area"),
    ("area-words", {"area": "west,south,east,north"}, "area"),
    ("area-semicolons", {"area": "1;2;3;4"}, "area"),
    ("area-blank", {"area": " , , , "}, "area"),
    ("area-non-ascii", {"area": "ä,ö,ü,ß"}, "area"),
    ("area-nan", {"area": "nan,24.47,118.09,24.48"}, "area.west"),
    ("area-inf", {"area": "118.08,24.47,inf,24.48"}, "area.east"),
    ("area-lon-out-of-range", {"area": "118.08,24.47,190,24.48"}, "area.east"),
    ("area-lat-beyond-mercator", {"area": "0,80,1,89"}, "area.north"),
    ("area-west-equals-east", {"area": "1,1,1,2"}, "area"),
    ("area-south-above-north", {"area": "1,2,2,1"}, "area"),
    ("area-antimeridian", {"area": "179.5,-17,-179.5,-16"}, "area"),
    ("area-whole-world", {"area": "-180,-85,180,85"}, "area"),
    ("area-over-own-limit", {"area": AREA, "max_area_km2": 0.5}, "area"),
    ("area-dict-missing", {"area": {"west": 1}}, "area.south"),
    ("area-list-of-three", {"area": [1, 2, 3]}, "area"),
    ("max-area-negative", {"area": AREA, "max_area_km2": -1}, "max_area_km2"),
    ("unknown-field", {"area": AREA, "colour": "red"}, "colour"),
    ("job-id-traversal", {"area": AREA, "job_id": "../../etc"}, "job_id"),
    ("job-id-slash", {"area": AREA, "job_id": "a/b"}, "job_id"),
    ("job-id-too-long", {"area": AREA, "job_id": "x" * 200}, "job_id"),
    ("job-id-nul", {"area": AREA, "job_id": "a\x00b"}, "job_id"),
    ("job-id-leading-dot", {"area": AREA, "job_id": ".hidden"}, "job_id"),
    ("batch-size-zero", {"area": AREA, "batch_size": 0}, "batch_size"),
    ("batch-size-huge", {"area": AREA, "batch_size": 10**9}, "batch_size"),
    ("batch-size-text", {"area": AREA, "batch_size": "many"}, "batch_size"),
    ("halo-negative", {"area": AREA, "halo_px": -1}, "halo_px"),
    ("tile-timeout-zero", {"area": AREA, "tile_timeout_s": 0}, "tile_timeout_s"),
    ("population-negative", {"area": AREA, "population": -5}, "population"),
    ("height-unit", {"area": AREA, "measured_heights_unit": "storeys"}, "measured_heights_unit"),
    ("region-misspelt", {"area": AREA, "region": "ASIA_CN"}, "region"),
    ("region-lowercase", {"area": AREA, "region": "asia_chn"}, "region"),
    ("tta-unknown", {"area": AREA, "segmentation": {"tta": "d5"}}, "segmentation.tta"),
    ("model-without-version", {"area": AREA, "segmentation": {"model": "unet"}}, "segmentation.model"),
    ("height-model-empty", {"area": AREA, "models": {"height": ""}}, "models.height"),
    ("age-model-empty", {"area": AREA, "models": {"age": " "}}, "models.age"),
    ("age-model-without-version", {"area": AREA, "models": {"age": "building-age"}}, "models.age"),
    ("settlement-without-raster", {"area": AREA, "landcover": {"settlement": "s3://b/wsf.tif"}}, "landcover"),
    ("spec-not-a-dict", "area=1,2,3,4", "spec"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("data", "field"), [c[1:] for c in SPECS], ids=[c[0] for c in SPECS])
def test_a_bad_job_spec_names_the_field(data, field):
    with pytest.raises(InvalidInput) as err:
        JobSpec.parse(data)
    assert err.value.field == field, str(err.value)


FLAGS: list[tuple[str, list[str], str]] = [
    ("bbox-three", ["--bbox", "1,2,3"], "area"),
    ("bbox-antimeridian", ["--bbox", "179.5,-17,-179.5,-16"], "area"),
    ("bbox-world", ["--bbox=-180,-85,180,85"], "max_area_km2"),
    ("batch-size-text", ["--bbox", AREA, "--batch-size", "many"], "batch_size"),
    ("job-id-traversal", ["--bbox", AREA, "--job-id", "../x"], "job_id"),
    ("tta-unknown", ["--bbox", AREA, "--tta", "d5"], "tta"),
]


@pytest.mark.parametrize(("argv", "named"), [c[1:] for c in FLAGS], ids=[c[0] for c in FLAGS])
def test_bad_cli_flags_exit_2_with_one_clear_line(argv, named, capsys):
    with pytest.raises(SystemExit) as stop:
        code = main(["run", *argv])
        raise SystemExit(code)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err, err
