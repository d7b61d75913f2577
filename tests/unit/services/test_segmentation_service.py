"""Segmentation service in-process with a fake model server: single model and vote ensemble."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from urbanfabric.io.rasters import Raster, cog_bytes, read_raster
from urbanfabric.io.geoparquet import read_geoparquet
from urbanfabric.v1 import segmentation_pb2 as pb

from services.segmentation.server import SegmentationServicer
from urbanfabric.footprints.tile_segmentation import model_threshold


class _Ctx:
    def time_remaining(self):
        return 30.0

    def abort(self, code, msg):
        raise RuntimeError(f"{code.name}: {msg}")


class _Store:
    settings = None  # gdal_env(None): default settings; the land-cover rasters here are local files

    def __init__(self, ard: bytes) -> None:
        self.ard = ard
        self.put: dict[str, bytes] = {}

    def get_bytes(self, key: str) -> bytes:
        return self.ard

    def put_bytes(self, key: str, blob: bytes) -> None:
        self.put[key] = blob

    def s3_uri(self, key: str) -> str:
        return f"s3://b/{key}"


class _Models:
    """Three fake members: each 'sees' a different set of the three squares."""

    SEES = {"a": (0, 1), "b": (0, 2), "c": (0,)}

    def __init__(self) -> None:
        self.calls: list[str] = []

    def served(self, name: str, version: str) -> bool:
        return name in self.SEES

    def infer(self, name: str, version: str, batch: np.ndarray) -> np.ndarray:
        self.calls.append(name)
        out = np.zeros((batch.shape[0], batch.shape[2], batch.shape[3]), np.float32)
        for k in self.SEES[name]:
            out[:, 8:24, 8 + 40 * k : 24 + 40 * k] = 0.95  # squares at columns 8, 48, 88
        return out


#: SegmentRequest fields that are not segmentation options.
_REQUEST_FIELDS = {"landcover", "halo_px"}


def _segment(models, **kw):
    """One Segment call; option keywords (model, threshold, tta…) go into ``options``."""
    ard = Raster(np.full((3, 128, 128), 0.5, np.float32), Affine(0.5, 0, 500000, 0, -0.5, 4000000), "EPSG:32633")
    store = _Store(cog_bytes(ard))
    options = {k: v for k, v in kw.items() if k not in _REQUEST_FIELDS}
    req = pb.SegmentRequest(options=options, **{k: v for k, v in kw.items() if k in _REQUEST_FIELDS})
    req.job.job_id, req.ard.uri = "j", "s3://b/ard.tif"
    req.tile.tile_id, req.tile.resolution = "t", 0.5
    b = req.tile.bounds
    b.min_x, b.min_y, b.max_x, b.max_y, b.crs = 500000, 3999936, 500064, 4000000, "EPSG:32633"
    resp = SegmentationServicer(store, models).Segment(req, _Ctx())
    mask = read_raster(store.put[next(k for k in store.put if k.endswith(".tif"))])
    return resp, store, mask


def test_single_model_path_unchanged():
    models = _Models()
    resp, _, _ = _segment(models, model={"name": "a", "version": "v1"}, threshold=0.5, min_area_m2=1)
    assert resp.footprint_count == 2 and set(models.calls) == {"a"}


@pytest.mark.parametrize(("min_votes", "want"), [(0, 1), (1, 3), (2, 1), (3, 1)])
def test_ensemble_vote_counts_buildings(min_votes, want):
    # Square 0 has 3 votes, squares 1 and 2 one each: k=1 keeps all three, k=2 or 3 (and the
    # default majority of 3, which is 2) only square 0.
    models = _Models()
    resp, store, mask = _segment(models, model={"name": "a", "version": "v1"},
                                 ensemble=[{"name": "b", "version": "v1"}, {"name": "c", "version": "v1"}],
                                 min_votes=min_votes, min_area_m2=1)
    assert set(models.calls) == {"a", "b", "c"}
    assert resp.footprint_count == want
    frame = read_geoparquet(store.put[next(k for k in store.put if k.endswith(".parquet"))])
    # Confidence is the members' mean agreement inside the footprint.
    assert frame["footprint_confidence"].max() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(("threshold", "want"), [(0.0, 1), (0.4, 3)])
def test_ensemble_mean_cuts_the_mean_probability(threshold, want):
    # a sees squares 0 and 1, b sees 0 and 2: the mean is 0.95 on square 0 and 0.475 on the
    # others. Cut at the members' mean threshold (0.5, no config) only square 0 is left; the
    # request's own threshold (0.4) keeps all three. A vote of 2 would keep one, of 1 three.
    models = _Models()
    resp, _, mask = _segment(models, model={"name": "a", "version": "v1"}, ensemble=[{"name": "b", "version": "v1"}],
                             ensemble_combine="ENSEMBLE_COMBINE_MEAN", threshold=threshold, min_area_m2=1)
    assert set(models.calls) == {"a", "b"}
    assert resp.footprint_count == want
    assert mask.data[0].max() == 95 and 47 <= mask.data[0, 16, 56] <= 48


def test_every_ensemble_combine_travels_in_the_proto():
    from urbanfabric.runtime.convert import combine_from_proto, combine_to_proto
    from urbanfabric.footprints.ensemble import EnsembleCombine

    for how in EnsembleCombine:
        assert combine_from_proto(combine_to_proto(how)) is how
    assert combine_from_proto(0) is EnsembleCombine.VOTE
    with pytest.raises(Exception, match="ensemble_combine"):
        combine_from_proto(9)


def test_min_confidence_drops_the_less_certain_footprints():
    # a and b agree on square 0 (mean 0.95) and each sees one other square (mean 0.475): cut at
    # 0.4 the mean keeps three footprints; asking for a confidence of 0.9 leaves square 0 alone.
    kw = dict(model={"name": "a", "version": "v1"}, ensemble=[{"name": "b", "version": "v1"}],
              ensemble_combine="ENSEMBLE_COMBINE_MEAN", threshold=0.4, min_area_m2=1)
    assert _segment(_Models(), **kw)[0].footprint_count == 3
    resp, store, mask = _segment(_Models(), **kw, min_confidence=0.9)
    assert resp.footprint_count == 1
    frame = read_geoparquet(store.put[next(k for k in store.put if k.endswith(".parquet"))])
    assert frame["footprint_confidence"].min() >= 0.9
    assert (mask.data[1] == 1).sum() > 0  # the mask still shows every pixel over the cut


def test_ensemble_member_not_served_is_not_found():
    with pytest.raises(RuntimeError, match="NOT_FOUND"):
        _segment(_Models(), model={"name": "a", "version": "v1"}, ensemble=[{"name": "zz", "version": "v1"}])


def test_a_restarting_model_server_is_unavailable_not_a_model_it_does_not_serve():
    """While the model server restarts, Segment answers UNAVAILABLE (the tile worker retries),
    not NOT_FOUND (a tile failed for good: what the fault test found)."""
    from urbanfabric.errors import Unavailable

    class Restarting(_Models):
        def served(self, name: str, version: str) -> bool:
            raise Unavailable("model server unreachable asking for a-v1: connection refused")

    with pytest.raises(RuntimeError, match="UNAVAILABLE"):
        _segment(Restarting(), model={"name": "a", "version": "v1"})


def test_model_client_says_unreachable_apart_from_not_served():
    """ModelClient.served raises Unavailable when nothing listens; ready() stays a quiet False."""
    import socket

    from urbanfabric.errors import Unavailable
    from urbanfabric.runtime.model_client import InferenceProtocol, ModelClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    for protocol in (InferenceProtocol.V2_GRPC, InferenceProtocol.V2_REST):
        client = ModelClient(protocol, rest_url=f"http://127.0.0.1:{port}", grpc_addr=f"127.0.0.1:{port}", timeout_s=2)
        with pytest.raises(Unavailable, match="a-v1"):
            client.served("a", "v1")
        assert client.ready("a", "v1") is False
        client.close()


def test_model_threshold_reads_output_threshold():
    assert model_threshold("footprint-unet", "v1") == pytest.approx(0.25)
    assert model_threshold("no-such-model", "v9") == 0.5


def test_model_threshold_follows_the_tta_it_was_chosen_under(monkeypatch):
    from urbanfabric.footprints.tta import TTA

    import urbanfabric.footprints.tile_segmentation as core

    config = {"output": {"threshold": 0.35, "threshold_by_tta": {"d4-zoom": 0.25}}}
    monkeypatch.setattr(core, "model_config", lambda name, version: config)
    assert model_threshold("m", "v1") == 0.35
    assert model_threshold("m", "v1", TTA.D4) == 0.35  # none recorded for d4: the plain one
    assert model_threshold("m", "v1", TTA.D4_ZOOM) == 0.25


def _landcover_tif(path, classes: np.ndarray) -> str:
    """A 2 m land-cover GeoTIFF over the test tile (EPSG:32633), one code per pixel."""
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", width=classes.shape[1], height=classes.shape[0], count=1,
                       dtype="uint8", crs="EPSG:32633", transform=Affine(2, 0, 500000, 0, -2, 4000000)) as dst:
        dst.write(classes.astype(np.uint8), 1)
    return str(path)


def test_landcover_filter_drops_buildings_on_cropland(tmp_path):
    # Model "a" sees squares 0 and 1 (x 500004–500012 and 500024–500032). WorldCover 40
    # (cropland) under square 1, 50 (built-up) elsewhere: only square 0 survives.
    codes = np.full((32, 32), 50)
    codes[:, 12:16] = 40  # x 500024–500032
    uri = _landcover_tif(tmp_path / "lc.tif", codes)
    plain, _, _ = _segment(_Models(), model={"name": "a", "version": "v1"}, threshold=0.5, min_area_m2=1)
    resp, _, mask = _segment(_Models(), model={"name": "a", "version": "v1"}, threshold=0.5, min_area_m2=1,
                             landcover={"raster": {"uri": uri}, "classes": "esa-worldcover"})
    assert plain.footprint_count == 2 and resp.footprint_count == 1
    assert mask.data[1, 16, 56] == 0 and mask.data[1, 16, 16] == 1  # square 1 vetoed, square 0 kept


def test_landcover_filter_bad_input_names_the_field(tmp_path):
    uri = _landcover_tif(tmp_path / "lc.tif", np.full((32, 32), 50))
    with pytest.raises(Exception, match="landcover.classes"):
        _segment(_Models(), model={"name": "a", "version": "v1"},
                 landcover={"raster": {"uri": uri}, "classes": "corine-2018"})
    with pytest.raises(Exception, match="landcover.raster"):
        _segment(_Models(), model={"name": "a", "version": "v1"},
                 landcover={"raster": {"uri": str(tmp_path / "missing.tif")}})


def test_tta_predicts_each_window_under_every_view():
    plain_models, tta_models = _Models(), _Models()
    plain, _, _ = _segment(plain_models, model={"name": "a", "version": "v1"}, threshold=0.5, min_area_m2=1)
    flips, _, mask = _segment(tta_models, model={"name": "a", "version": "v1"}, threshold=0.5, min_area_m2=1,
                              tta="TEST_TIME_AUGMENTATION_FLIPS")
    assert len(tta_models.calls) == 4 * len(plain_models.calls)
    # The fake answers the same squares whatever it is shown, so the four flipped answers no
    # longer agree: averaged, no square keeps the 0.95 of the plain run.
    assert plain.footprint_count == 2 and flips.footprint_count < plain.footprint_count
    assert mask.data[0].max() < 95


def test_every_tta_choice_travels_in_the_proto():
    from urbanfabric.runtime.convert import tta_from_proto, tta_to_proto
    from urbanfabric.footprints.tta import TTA

    for tta in TTA:
        assert tta_from_proto(tta_to_proto(tta)) is tta
    zoom_models = _Models()
    _segment(zoom_models, model={"name": "a", "version": "v1"}, tta="TEST_TIME_AUGMENTATION_D4_ZOOM")
    assert len(zoom_models.calls) % TTA.D4_ZOOM.views == 0 and zoom_models.calls


def test_unknown_tta_is_invalid_and_names_the_field():
    with pytest.raises(RuntimeError, match="INVALID_ARGUMENT.*options.tta"):
        _segment(_Models(), model={"name": "a", "version": "v1"}, tta=99)
