"""Acquisition and calibration adapters over real gRPC servers (in-memory object store), and
how a job turns tiles that failed on bad input into report warnings."""

from pathlib import Path

import grpc
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp

from services.acquisition.server import AcquisitionServicer
from services.calibration.server import CalibrationServicer
from tests.fakes import MemoryStore
from urbanfabric.io.source_policy import SourcePolicy
from urbanfabric.runtime import jobs
from urbanfabric.outputs import report, summary
from urbanfabric.runtime.convert import tile_to_proto
from urbanfabric.imagery.tiles import tiles_for_area
from urbanfabric.runtime.auth import authenticated
from urbanfabric.runtime.grpc_service import Registration, serve
from urbanfabric.v1 import (acquisition_pb2, acquisition_pb2_grpc, calibration_pb2, calibration_pb2_grpc,
                            common_pb2, tasks_pb2)

#: Two grid cells (64 px each) over Xiamen, covered by one 10 m UTM 50N scene.
AREA = (118.0976, 24.4772, 118.1085, 24.4800)


def _rgb_cog(path, values, size=200, res=10.0):
    data = np.stack([np.linspace(v, v + 50, size * size).reshape(size, size).astype(np.uint8) for v in values])
    with rasterio.open(path, "w", driver="COG", width=size, height=size, count=3, dtype="uint8", nodata=0,
                       crs="EPSG:32650", transform=Affine(res, 0, 610_500.0, 0, -res, 2_708_800.0)) as ds:
        ds.write(data)
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    return str(path)


#: The local stack's policy (loopback and local files allowed): these tests read temporary files.
LOCAL = SourcePolicy(allow_private=True, local_roots=(Path("/"),))


@pytest.fixture()
def services(request):
    store = MemoryStore()
    policy = getattr(request, "param", LOCAL)
    srv = serve("acquisition", [
        Registration(AcquisitionServicer(store, policy), acquisition_pb2_grpc.add_AcquisitionServiceServicer_to_server,
                     "urbanfabric.v1.AcquisitionService"),
        Registration(CalibrationServicer(store), calibration_pb2_grpc.add_CalibrationServiceServicer_to_server,
                     "urbanfabric.v1.CalibrationService")], port=0, block=False, token_key="k" * 32)
    channel = authenticated(grpc.insecure_channel(f"127.0.0.1:{srv.bound_port}"), "k" * 32)
    yield store, acquisition_pb2_grpc.AcquisitionServiceStub(channel), calibration_pb2_grpc.CalibrationServiceStub(channel)
    channel.close()
    srv.stop(0)


def test_cog_list_source_with_gsd_warning_and_city_calibration(services, tmp_path):
    store, acq, cal = services
    tiles = tiles_for_area(AREA, tile_px=64)
    assert len(tiles) == 2
    source = common_pb2.ImagerySource(cog_uris=[_rgb_cog(tmp_path / "scene.tif", [20, 60, 100])],
                                      expected_gsd_m=0.54, resampling="bilinear")
    job = common_pb2.JobRef(job_id="j1")
    resp = acq.FetchTile(acquisition_pb2.FetchTileRequest(job=job, tile=tile_to_proto(tiles[0]), source=source),
                         timeout=30)
    assert list(resp.scene_ids) == ["scene"] and resp.valid_fraction == 1.0 and resp.width == 64
    assert len(resp.warnings) == 1 and tiles[0].tile_id in resp.warnings[0] and "GSD" in resp.warnings[0]
    stats = acq.AreaStatistics(acquisition_pb2.AreaStatisticsRequest(
        job=job, source=source, tiles=[tile_to_proto(t) for t in tiles]), timeout=30)
    assert stats.tiles_used == 2 and len(stats.bands) == 3 and stats.stats.uri.endswith("area_stats.json")
    assert stats.bands[0].q1 < stats.bands[0].q3 and stats.bands[2].q1 > stats.bands[0].q3  # blue brighter
    # Calibration per city uses the area's quartiles, not the patch's.
    city = cal.Calibrate(calibration_pb2.CalibrateRequest(job=job, tile_id=tiles[0].tile_id, raw=resp.raw,
                                                          area_stats=stats.stats), timeout=30)
    assert [(b.q1, b.q3) for b in city.stats] == [(b.q1, b.q3) for b in stats.bands]
    patch = cal.Calibrate(calibration_pb2.CalibrateRequest(job=job, tile_id=tiles[0].tile_id, raw=resp.raw),
                          timeout=30)
    assert [(b.q1, b.q3) for b in patch.stats] != [(b.q1, b.q3) for b in stats.bands]


def test_scene_without_the_models_bands_is_invalid_input_naming_the_tile(services, tmp_path):
    _, acq, _ = services
    tile = tiles_for_area(AREA, tile_px=64)[0]
    source = common_pb2.ImagerySource(cog_uris=[_rgb_cog(tmp_path / "rgb.tif", [20, 60, 100])], asset="red,nir")
    with pytest.raises(grpc.RpcError) as err:
        acq.FetchTile(acquisition_pb2.FetchTileRequest(job=common_pb2.JobRef(job_id="j"), tile=tile_to_proto(tile),
                                                       source=source), timeout=30)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("bands:") and tile.tile_id in err.value.details()


def _result(tile_id, status, code=common_pb2.ERROR_CODE_UNSPECIFIED, field="", warnings=()):
    r = tasks_pb2.TileResult(status=status, warnings=list(warnings))
    r.tile.tile_id = tile_id
    r.error.code, r.error.field, r.error.message = code, field, "problem" if code else ""
    return r


def test_tiles_failing_on_bad_input_become_report_warnings_and_the_rest_is_mapped():
    ok = _result("A", tasks_pb2.TASK_STATUS_SUCCEEDED, warnings=["tile A: scene s has a 10.00 m GSD"])
    bad = _result("B", tasks_pb2.TASK_STATUS_FAILED, common_pb2.ERROR_CODE_INVALID_ARGUMENT, "crs")
    empty = _result("E", tasks_pb2.TASK_STATUS_EMPTY)
    kept, warnings = jobs.split_tile_results([ok, bad, empty])
    assert [r.tile.tile_id for r in kept] == ["A", "E"]
    assert warnings[:2] == ["tile B skipped: crs: problem", "tile E: no imagery (under 1 % valid pixels), "
                            "nothing mapped there"]
    assert warnings[2:] == ["tile A: scene s has a 10.00 m GSD"]
    with pytest.raises(RuntimeError, match="B: crs"):
        jobs.split_tile_results([bad, empty])  # nothing left to map: the job fails naming the tile
    fault = _result("C", tasks_pb2.TASK_STATUS_FAILED, common_pb2.ERROR_CODE_INTERNAL)
    with pytest.raises(RuntimeError, match="C"):
        jobs.split_tile_results([ok, fault])  # a service fault is not bad input
    job_summary = summary.Summary("j", 0, None, {}, {}, 0.0, warnings=warnings)
    assert "tile B skipped" in job_summary.text()
    md = report.report_md(job_summary, {})
    assert "## Warnings" in md and "- tile B skipped: crs: problem" in md


@pytest.mark.parametrize("services", [SourcePolicy()], indirect=True)
@pytest.mark.parametrize("field,source", [
    ("source.catalog_uri", common_pb2.ImagerySource(catalog_uri="http://169.254.169.254/latest/meta-data/catalog.json")),
    ("source.cog_uris[0]", common_pb2.ImagerySource(cog_uris=["/etc/passwd"])),
    ("source.cog_uris[0]", common_pb2.ImagerySource(cog_uris=["/vsicurl/http://10.0.0.1/a.tif"])),
    ("source.basemap_uri", common_pb2.ImagerySource(cog_uris=["s3://test/a.tif"], basemap_uri="http://127.0.0.1:9000/x.json")),
])
def test_the_strict_policy_refuses_forged_requests_and_the_service_stays_up(services, field, source, tmp_path):
    store, acq, _ = services
    tile = tiles_for_area(AREA, tile_px=64)[0]
    with pytest.raises(grpc.RpcError) as err:
        acq.FetchTile(acquisition_pb2.FetchTileRequest(job=common_pb2.JobRef(job_id="j"), tile=tile_to_proto(tile),
                                                       source=source), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        acq.RegisterSource(acquisition_pb2.RegisterSourceRequest(source_id="s", path="/etc", zoom=18, format=acquisition_pb2.SOURCE_FORMAT_XYZ_TILES), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "local paths" in err.value.details()
    assert not store.list()  # nothing was fetched or written
