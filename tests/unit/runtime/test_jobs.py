import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from urbanfabric.runtime import jobs
from urbanfabric.outputs import summary
from urbanfabric.errors import EmptyArea, InvalidInput


def test_parse_model_names_the_parameter():
    ref = jobs.parse_model("footprint-unet:v1", "models.segmentation")
    assert (ref.name, ref.version) == ("footprint-unet", "v1")
    with pytest.raises(InvalidInput) as err:
        jobs.parse_model("footprint-unet", "models.segmentation")
    assert err.value.field == "models.segmentation"


def test_area_outside_imagery_is_named():
    jobs.check_area((1, 1, 2, 2), (0, 0, 3, 3), "sample:x")
    with pytest.raises(EmptyArea) as err:
        jobs.check_area((10, 10, 11, 11), (0, 0, 3, 3), "sample:x")
    assert err.value.field == "area" and "sample:x" in str(err.value)


def test_batches_cover_every_building_once_in_neighbour_order():
    rng = np.random.default_rng(0)
    xs, ys = rng.uniform(0, 0.01, 103), rng.uniform(0, 0.01, 103)
    fp = gpd.GeoDataFrame({"building_id": [f"b{i}" for i in range(103)]},
                          geometry=[box(x, y, x + 1e-4, y + 1e-4) for x, y in zip(xs, ys)], crs="EPSG:4326")
    batches = jobs.make_batches(fp, 25)
    assert [len(b) for b in batches] == [25, 25, 25, 25, 3]
    ids = [i for b in batches for i in b["building_id"]]
    assert sorted(ids) == sorted(fp["building_id"])
    with pytest.raises(InvalidInput):
        jobs.make_batches(fp, 0)


def test_summary_totals():
    fp = gpd.GeoDataFrame({
        "building_id": ["a", "b"], "height_m": [10.0, 20.0], "roof_material": ["concrete_cement", None],
        "mass_concrete_kg": [1000.0, 3000.0], "mass_concrete_kg_p05": [1.0, 1.0], "mass_total_kg": [1.0, 1.0],
        "embodied_co2e_kg": [5.0, 7.0]}, geometry=[box(0, 0, 1, 1), box(2, 2, 3, 3)], crs="EPSG:4326")
    s = summary.summarize("j", fp, {"segmentation": 1.5}, {})
    assert s.buildings == 2 and s.mean_height_m == 15
    assert s.mass_kg == {"concrete": 4000.0}
    assert s.roof_material_mix == {"concrete_cement": 1, "no imagery": 1}
    assert s.embodied_co2e_kg == 12 and "4" in s.text()


def test_tile_tasks_carry_the_segmentation_options_whole():
    from urbanfabric.footprints.options import SegmentationOptions
    from urbanfabric.imagery.tiles import tiles_for_area
    from urbanfabric.v1 import common_pb2

    tiles = tiles_for_area((118.08, 24.47, 118.09, 24.48))
    options = SegmentationOptions(model="footprint-unet:v5", ensemble=["footprint-unet:v6", "footprint-unet:v7"],
                                  min_votes=2, tta="d4", ensemble_combine="mean", threshold=0.4)
    out = jobs.tile_tasks(common_pb2.JobRef(job_id="j"), tiles, common_pb2.ImagerySource(), options, 128, True)
    assert [k for k, _ in out] == [t.tile_id for t in tiles]
    seg = out[0][1].segmentation
    assert (seg.model.name, seg.model.version) == ("footprint-unet", "v5")
    assert [m.version for m in seg.ensemble] == ["v6", "v7"]
    assert (seg.min_votes, seg.tta, seg.ensemble_combine) == (
        2, common_pb2.TEST_TIME_AUGMENTATION_D4, common_pb2.ENSEMBLE_COMBINE_MEAN)
    assert seg.threshold == pytest.approx(0.4)
    plain = jobs.tile_tasks(common_pb2.JobRef(job_id="j"), tiles[:1], common_pb2.ImagerySource(),
                            SegmentationOptions(), 128, True)
    assert plain[0][1].segmentation.threshold == 0.0  # the models' own


def test_the_spec_rejects_a_threshold_outside_0_1_by_name():
    from urbanfabric.job_spec import JobSpec

    spec = JobSpec.parse({"area": "118.08,24.47,118.09,24.48", "segmentation": {"threshold": 0.4}})
    assert spec.segmentation.threshold == 0.4
    with pytest.raises(InvalidInput, match="segmentation.threshold"):
        JobSpec.parse({"area": "118.08,24.47,118.09,24.48", "segmentation": {"threshold": 1.5}})



def test_batch_images_come_in_tile_order_whatever_order_the_results_arrived():
    # A building that two tiles' imagery covers takes its roof chip from the first image:
    # arrival order made that choice (and roof classes) change from run to run.
    import geopandas as gpd
    from shapely.geometry import box

    from tests.fakes import MemoryStore
    from urbanfabric.imagery.tiles import tiles_for_area
    from urbanfabric.runtime.convert import tile_to_proto
    from urbanfabric.v1 import common_pb2, tasks_pb2

    tiles = tiles_for_area((118.08, 24.47, 118.09, 24.48))
    assert len(tiles) >= 2
    results = [tasks_pb2.TileResult(tile=tile_to_proto(t), ard=common_pb2.ObjectRef(uri=f"s3://b/{t.tile_id}.tif"))
               for t in tiles]
    everywhere = gpd.GeoDataFrame({"building_id": ["x"]}, geometry=[box(118.08, 24.47, 118.09, 24.48)],
                                  crs="EPSG:4326")
    orders = []
    for arrived in (results, results[::-1]):
        (_, task), = jobs.batch_tasks(MemoryStore(), common_pb2.JobRef(job_id="j"), [everywhere], arrived,
                                      common_pb2.ModelRef(), common_pb2.ModelRef(), "ASIA_CHN")
        orders.append([i.uri for i in task.images])
    assert orders[0] == orders[1] == sorted(orders[0])
    assert len(orders[0]) == len(tiles)


def test_a_batch_task_carries_its_context_and_the_jobs_area():
    from tests.fakes import MemoryStore
    from urbanfabric.attributes.context import AreaFrame, select_context
    from urbanfabric.io.geoparquet import read_geoparquet
    from urbanfabric.io.object_store import parse_s3_uri
    from urbanfabric.v1 import common_pb2

    fps = gpd.GeoDataFrame({"building_id": [f"b{i}" for i in range(6)]},
                           geometry=[box(118.1 + i * 3e-4, 24.47, 118.1 + i * 3e-4 + 1e-4, 24.4701) for i in range(6)],
                           crs="EPSG:4326")
    store = MemoryStore()
    template = jobs.batch_template(common_pb2.JobRef(job_id="j"), common_pb2.ModelRef(name="r", version="v"),
                                   common_pb2.ModelRef(name="h", version="v"), "ASIA_CHN",
                                   area=AreaFrame.from_bbox(tuple(fps.total_bounds)))
    batch = fps.iloc[:3]
    msg = jobs.batch_task(store, template, "00000", batch, jobs.ImageIndex([]), select_context(batch, fps))
    assert msg.area.radius_m > 0 and msg.area.center_lon == pytest.approx(118.10085)
    ctx = read_geoparquet(store.get_bytes(parse_s3_uri(msg.context_footprints.uri)[1]))
    assert sorted(ctx["building_id"]) == ["b3", "b4", "b5"]
    alone = jobs.batch_task(store, template, "00001", batch, jobs.ImageIndex([]), batch.iloc[:0])
    assert not alone.context_footprints.uri
