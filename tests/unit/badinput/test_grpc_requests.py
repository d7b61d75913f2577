"""gRPC requests with missing, NaN, negative, out-of-range or oversized fields.

The intensity servicer runs in-process with the framework's ``rpc`` wrapper (the same code a
gRPC server calls); the acquisition service's source policy is the core check every fetch goes
through. Each case is INVALID_ARGUMENT naming the field, and the servicer answers a good request
right after.
"""

from __future__ import annotations

import math
import re

import pytest

from urbanfabric.errors import InvalidInput
from urbanfabric.io.source_policy import SourcePolicy
from urbanfabric.v1 import intensity_pb2 as pb

from services.intensity.server import IntensityServicer
from tests.unit.services.test_intensity_service import _Ctx, _one, _req

NAN, INF = math.nan, math.inf

#: Request-level problems: the whole request is INVALID_ARGUMENT, naming the field.
STOCK: list[tuple[str, dict, str]] = [
    ("no-job", {"buildings": [_one()], "job": ""}, "job.job_id"),
    ("no-building-id", {"buildings": [pb.StockInput(footprint_area_m2=1, floors=1, function="RS")]},
     "buildings[0].building_id"),
    ("no-function", {"buildings": [pb.StockInput(building_id="a", footprint_area_m2=1, floors=1)]},
     "buildings[0].function"),
    ("unknown-function", {"buildings": [_one(function="XX")]}, "function"),
    ("unknown-structure", {"buildings": [_one(structure="Q")]}, "structure"),
    ("draws-huge", {"buildings": [_one()], "monte_carlo": pb.MonteCarloOptions(draws=10**6)}, "monte_carlo.draws"),
    ("draws-negative", {"buildings": [_one()], "monte_carlo": pb.MonteCarloOptions(draws=-5)}, "monte_carlo.draws"),
    ("unknown-intensity-source", {"buildings": [_one()], "intensity_source": "guesswork"}, "intensity_source"),
]


def _request(kw: dict) -> pb.EstimateStockRequest:
    kw = dict(kw)
    job = kw.pop("job", "j")
    region = kw.pop("region", "ASIA_CHN")
    r = _req(region=region, **kw)
    r.job.job_id = job
    return r


@pytest.mark.parametrize(("kw", "field"), [c[1:] for c in STOCK], ids=[c[0] for c in STOCK])
def test_a_bad_stock_request_is_invalid_argument_naming_the_field(kw, field):
    svc = IntensityServicer()
    with pytest.raises(RuntimeError, match=f"INVALID_ARGUMENT: {re.escape(field)}"):
        svc.EstimateStock(_request(kw), _Ctx())
    good = svc.EstimateStock(_request({"buildings": [_one()]}), _Ctx()).buildings[0]
    assert good.valid and good.mass_total_kg > 0


#: Row-level problems: that building is invalid or falls back, named in ``fallback``; the other
#: buildings of the batch are computed exactly as without it.
ROWS: list[tuple[str, dict, str, bool]] = [
    ("area-nan", {"footprint_area_m2": NAN}, "area_invalid", False),
    ("area-negative", {"footprint_area_m2": -100}, "area_invalid", False),
    ("area-inf", {"footprint_area_m2": INF}, "area_invalid", False),
    ("area-zero", {"footprint_area_m2": 0}, "area_invalid", False),
    ("floors-absurd", {"floors": 10**6}, "floors_invalid", True),
    ("lon-out-of-range", {"longitude": 400}, "location_invalid", True),
    ("lon-inf", {"longitude": INF}, "location_invalid", True),
    ("lat-nan", {"latitude": NAN}, "location_invalid", True),
    ("lat-out-of-range", {"latitude": -95}, "location_invalid", True),
    ("height-nan-and-no-floors", {"height_m": NAN, "floors": 0}, "height_missing", True),
    ("band-inverted", {"height_p05": 20, "height_p95": 5}, "height_band_missing", True),
]


@pytest.mark.parametrize(("bad", "reason", "valid"), [c[1:] for c in ROWS], ids=[c[0] for c in ROWS])
def test_a_bad_building_is_named_per_row_and_its_batch_is_untouched(bad, reason, valid):
    svc = IntensityServicer()
    batch = [_one(building_id="g0"), _one(building_id="x", **bad), _one(building_id="g1", footprint_area_m2=250)]
    out = svc.EstimateStock(_request({"buildings": batch}), _Ctx()).buildings
    assert [b.building_id for b in out] == ["g0", "x", "g1"]
    assert reason in out[1].fallback.split(";"), out[1].fallback
    assert out[1].valid is valid
    if valid:
        assert math.isfinite(out[1].mass_total_kg) and out[1].gfa_m2 < 1e6
    else:
        assert math.isnan(out[1].mass_total_kg)
    alone = svc.EstimateStock(_request({"buildings": [batch[0], batch[2]]}), _Ctx()).buildings
    for got, want in zip((out[0], out[2]), alone):
        assert got.valid and got.mass_total_kg == want.mass_total_kg and got.fallback == want.fallback


SOURCES: list[tuple[str, str]] = [
    ("metadata-service", "http://169.254.169.254/latest/meta-data/"),
    ("loopback", "http://127.0.0.1:9000/catalog.json"),
    ("loopback-name", "http://localhost/catalog.json"),
    ("private-10", "https://10.1.2.3/a.tif"),
    ("private-192", "http://192.168.0.1/a.tif"),
    ("ipv6-loopback", "http://[::1]/a.tif"),
    ("local-path", "/etc/passwd"),
    ("file-scheme", "file:///etc/passwd"),
    ("gdal-vsicurl", "/vsicurl/http://10.0.0.1/a.tif"),
    ("ftp-scheme", "ftp://example.org/a.tif"),
    ("gopher-scheme", "gopher://example.org/_x"),
    ("dotdot-path", "../../secrets/a.tif"),
]


@pytest.mark.parametrize("uri", [u for _, u in SOURCES], ids=[n for n, _ in SOURCES])
def test_the_default_source_policy_refuses_forged_sources_naming_the_field(uri):
    policy = SourcePolicy()
    with pytest.raises(InvalidInput) as err:
        policy.check(uri, "source.catalog_uri")
    assert err.value.field == "source.catalog_uri", str(err.value)
    assert policy.check("s3://urbanfabric/sources/x/catalog.json", "source.catalog_uri")
