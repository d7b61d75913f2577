"""Materials service in-process: unknowns with reasons (never silent), batching, Explain.

The model server is replaced by a fake ``ModelClient`` that records its calls; the object
store by a dict. Explain runs the shipped roof-material v1 for real.
"""

from __future__ import annotations

import io

import affine
import geopandas as gpd
import numpy as np
import pytest
import torch
from PIL import Image
from rasterio.crs import CRS
from shapely.geometry import Polygon, box
from urbanfabric.materials.roofs import UNKNOWN
from urbanfabric.errors import NotFound
from urbanfabric.io.rasters import Raster, cog_bytes
from urbanfabric.io.geoparquet import geoparquet_bytes
from urbanfabric.v1 import common_pb2 as common
from urbanfabric.v1 import materials_pb2 as pb

from services.materials import server

torch.set_num_threads(1)

T = affine.Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 6_200_000.0)  # 0.5 m pixels, 100 x 80
CRS_ = "EPSG:25832"


def world(col: float, row: float) -> tuple[float, float]:
    return T @ (col, row)


class Ctx:
    def time_remaining(self):
        return 10.0

    def abort(self, code, msg):
        raise RuntimeError(f"{code.name}: {msg}")


class Store:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, blob: bytes) -> str:
        self.objects[key] = blob
        return f"s3://b/{key}"

    def get_bytes(self, key: str) -> bytes:
        if key not in self.objects:
            raise NotFound(f"get b/{key}")
        return self.objects[key]


class FakeModels:
    """Class probabilities from chip brightness; one call per batch recorded."""

    def __init__(self, n_classes: int = 5, top: int = 1, ood=None) -> None:
        self.calls: list[tuple[str, str, tuple[int, ...]]] = []
        self.n, self.top = n_classes, top
        self.ood = ood  # chips -> out-of-domain scores, as a model with statistics answers

    def infer_batched_outputs(self, name, version, x, batch_size=64):
        out = {"probability": self.infer_batched(name, version, x, batch_size)}
        if self.ood is not None:
            out["ood_score"] = self.ood(x)
        return out

    def infer_batched(self, name, version, x, batch_size=64):
        self.calls.append((name, version, x.shape))
        p = np.full((len(x), self.n), 0.1 / max(self.n - 1, 1), np.float32)
        p[:, self.top] = 0.9
        return p


def _image() -> bytes:
    img = np.full((3, 80, 100), 0.5, np.float32)
    img[:, :, :25] = np.nan  # left quarter nodata
    return cog_bytes(Raster(img, T, CRS.from_string(CRS_), None))


def _footprints(store: Store) -> str:
    fps = gpd.GeoDataFrame(
        {"building_id": ["in", "outside", "nodata", "empty"]},
        geometry=[box(*world(40, 50), *world(60, 30)), box(*world(150, 50), *world(170, 30)),
                  box(*world(5, 50), *world(15, 30)), Polygon()],
        crs=CRS_,
    )
    return store.put("fp.parquet", geoparquet_bytes(fps))


def _svc(models: FakeModels | None = None) -> tuple[server.MaterialsServicer, Store, FakeModels]:
    store, models = Store(), models or FakeModels()
    return server.MaterialsServicer(store, models), store, models


def _roofs_request(store: Store, images: list[str], **kw) -> pb.ClassifyRoofsRequest:
    req = pb.ClassifyRoofsRequest(footprints=common.ObjectRef(uri=_footprints(store)),
                                  model=common.ModelRef(name="roof-material", version="v1"), **kw)
    req.job.job_id = "j"
    for uri in images:
        req.images.add(uri=uri)
    return req


def test_roofs_unknowns_have_reasons_and_the_batch_goes_on() -> None:
    svc, store, models = _svc()
    corrupt = store.put("bad.tif", b"II*\x00" + b"garbage" * 50)
    good = store.put("ard.tif", _image())
    roofs = svc.ClassifyRoofs(_roofs_request(store, [corrupt, good, "s3://b/missing.tif"]), Ctx()).roofs
    by = {r.building_id: r for r in roofs}
    assert by["in"].material == "healthy_metal" and by["in"].taxonomy_code == "6" and by["in"].has_imagery
    assert by["in"].unknown_reason == "" and len(by["in"].probabilities) == 5
    for bid in ("outside", "nodata", "empty"):
        assert by[bid].material == UNKNOWN and by[bid].unknown_reason and not by[bid].has_imagery
    assert "empty footprint" in by["empty"].unknown_reason
    # The corrupt and the missing image are named for the buildings nothing else covered.
    assert "bad.tif" in by["outside"].unknown_reason and "missing.tif" in by["outside"].unknown_reason
    assert models.calls == [("roof-material", "v1", (1, 3, 128, 128))]  # one batched call
    assert by["in"].shape == UNKNOWN and "no roof-shape model" in by["in"].shape_unknown_reason


def test_roofs_out_of_the_models_domain_are_unknown_with_the_score_and_probability_kept(monkeypatch) -> None:
    cfg = {"classes": ["concrete_cement", "healthy_metal"], "chip_size": 32,
           "ood": {"file": "domain.npz", "threshold": 0.5}}
    monkeypatch.setattr(server, "model_config", lambda name, version: cfg)
    scores = iter([np.array([0.9], np.float32), np.array([0.1], np.float32)])
    svc, store, _ = _svc(FakeModels(2, top=1, ood=lambda x: next(scores)))
    good = store.put("ard.tif", _image())
    first = {r.building_id: r for r in svc.ClassifyRoofs(_roofs_request(store, [good]), Ctx()).roofs}
    far = first["in"]
    assert np.isnan(first["outside"].ood_score)  # no chip, no score
    assert far.material == UNKNOWN and far.unknown_reason.startswith("out_of_domain")
    assert far.probability == pytest.approx(0.9) and far.model_class == "healthy_metal"
    assert far.ood_score == pytest.approx(0.9) and np.isnan(far.shape_ood_score)
    near = {r.building_id: r for r in svc.ClassifyRoofs(_roofs_request(store, [good]), Ctx()).roofs}["in"]
    assert near.material == "healthy_metal" and near.ood_score == pytest.approx(0.1) and not near.unknown_reason


def test_roofs_without_images_are_unknown_not_failed() -> None:
    svc, store, models = _svc()
    roofs = svc.ClassifyRoofs(_roofs_request(store, []), Ctx()).roofs
    assert [r.material for r in roofs] == [UNKNOWN] * 4
    assert all(r.unknown_reason for r in roofs) and models.calls == []


def test_class_outside_the_taxonomy_is_unknown(monkeypatch) -> None:
    cfg = {"classes": ["concrete_cement", "healthy_metal", "tar_paper"], "chip_size": 32}
    monkeypatch.setattr(server, "model_config", lambda name, version: cfg)
    svc, store, _ = _svc(FakeModels(3, top=2))
    good = store.put("ard.tif", _image())
    r = svc.ClassifyRoofs(_roofs_request(store, [good]), Ctx()).roofs[0]
    assert r.material == UNKNOWN and r.model_class == "tar_paper"
    assert "outside the bbr_byg033 taxonomy" in r.unknown_reason and r.taxonomy_code == ""


def test_roof_shape_model_runs_on_the_same_batch(monkeypatch) -> None:
    cfgs = {"roof-material": {"classes": ["concrete_cement", "healthy_metal"], "chip_size": 32},
            "roof-shape": {"classes": ["flat", "gable", "hip"], "chip_size": 48,
                           "taxonomy": {"name": "plain", "codes": {"flat": None, "gable": None, "hip": None}}}}
    monkeypatch.setattr(server, "model_config", lambda name, version: cfgs[name])
    models = FakeModels(2, top=1)
    svc, store, _ = _svc(models)

    def infer(name, version, x, batch_size=64):
        models.calls.append((name, version, x.shape))
        p = np.zeros((len(x), len(cfgs[name]["classes"])), np.float32)
        p[:, -1] = 1.0
        return p

    models.infer_batched = infer
    good = store.put("ard.tif", _image())
    req = _roofs_request(store, [good], shape_model=common.ModelRef(name="roof-shape", version="v1"))
    by = {r.building_id: r for r in svc.ClassifyRoofs(req, Ctx()).roofs}
    assert by["in"].shape == "hip" and by["in"].shape_probability == 1.0 and not by["in"].shape_unknown_reason
    assert by["outside"].shape == UNKNOWN and by["outside"].shape_unknown_reason
    assert [c[0] for c in models.calls] == ["roof-material", "roof-shape"]
    assert models.calls[1][2] == (1, 3, 48, 48)


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 60, 3), value, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_facades_views_filtered_aggregated_and_unknowns(monkeypatch) -> None:
    labels = ["brick", "null", "stucco", "wood"]
    cfg = {"classes": labels, "chip_size": 32, "multi_label": True, "thresholds": [0.5, 0.5, 0.4, 0.5],
           "normalisation": {"input": "RGB / 255, 0-1 float32"},
           "taxonomy": {"name": "bbr_byg032", "codes": {"brick": 1, "null": None, "stucco": None}}}
    monkeypatch.setattr(server, "model_config", lambda name, version: cfg)
    models = FakeModels(4)

    def infer(name, version, x, batch_size=64):
        models.calls.append((name, version, x.shape))
        # bright views: brick; dark views: a non-building view (null); grey: wood (uncoded)
        m = x.mean(axis=(1, 2, 3))
        return np.stack([np.where(m > 0.7, 0.9, 0.1), np.where(m < 0.3, 0.9, 0.1),
                         np.where(m > 0.7, 0.45, 0.1), np.where((m >= 0.3) & (m <= 0.7), 0.9, 0.0)], 1)

    models.infer_batched = infer
    svc, store, _ = _svc(models)
    req = pb.ClassifyFacadesRequest(footprints=common.ObjectRef(uri=_footprints(store)),
                                    model=common.ModelRef(name="facade-material", version="v1"))
    req.job.job_id = "j"
    req.views.add(building_id="in", images=[common.ObjectRef(uri=store.put(k, _jpeg(v)))
                                            for k, v in (("a.jpg", 240), ("b.jpg", 230), ("c.jpg", 10))])
    req.views.add(building_id="nodata", images=[common.ObjectRef(uri=store.put("d.jpg", _jpeg(5)))])
    req.views.add(building_id="outside", images=[common.ObjectRef(uri=store.put("e.jpg", b"not a jpeg"))])
    req.views.add(building_id="empty", images=[common.ObjectRef(uri=store.put("f.jpg", _jpeg(128)))])
    by = {f.building_id: f for f in svc.ClassifyFacades(req, Ctx()).facades}

    a = by["in"]
    assert a.material == "brick" and a.taxonomy_code == "1" and a.views_total == 3 and a.views_used == 2
    assert list(a.materials) == ["brick", "stucco"] and not a.unknown_reason
    assert {p.name for p in a.probabilities} == {"brick", "stucco", "wood"}  # null is the filter, not a material
    assert by["nodata"].material == UNKNOWN and "non-building" in by["nodata"].unknown_reason
    assert by["outside"].material == UNKNOWN and "unreadable" in by["outside"].unknown_reason
    # "wood" is not in the byg032 mapping of this config: outside the taxonomy → unknown.
    assert by["empty"].material == UNKNOWN and "outside the bbr_byg032" in by["empty"].unknown_reason
    assert len(models.calls) == 1 and models.calls[0][2] == (5, 3, 32, 32)  # one batch, unreadable skipped

    none = pb.ClassifyFacadesRequest(footprints=req.footprints, model=req.model, job=req.job)
    # No views and no catalog: the run itself had no street-level imagery, and the reason says so.
    assert all(f.unknown_reason.startswith("no street-level views were given for this run")
               for f in svc.ClassifyFacades(none, Ctx()).facades)


def _png(chip: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.moveaxis(chip, 0, -1) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_explain_image_and_building_sources() -> None:
    svc, store, _ = _svc()
    rng = np.random.default_rng(0)
    req = pb.ExplainRequest(model=common.ModelRef(name="roof-material", version="v1"),
                            image=_png(rng.uniform(size=(3, 90, 70)).astype(np.float32)),
                            method=pb.EXPLAIN_METHOD_GUIDED_GRAD_CAM, target_class="other")
    resp = svc.Explain(req, Ctx())
    assert resp.target_class == "other" and resp.method == pb.EXPLAIN_METHOD_GUIDED_GRAD_CAM
    assert list(resp.heatmap.shape) == [128, 128] and len(resp.heatmap.data) == 128 * 128
    assert Image.open(io.BytesIO(resp.overlay_png)).size == (128, 128)
    assert abs(sum(s.probability for s in resp.scores) - 1) < 1e-5 and resp.layer == "backbone.bn2"

    good = store.put("ard.tif", _image())
    b = pb.BuildingChip(footprints=common.ObjectRef(uri=_footprints(store)), building_id="in",
                        images=[common.ObjectRef(uri=good)])
    resp = svc.Explain(pb.ExplainRequest(model=req.model, building=b), Ctx())
    assert resp.building_id == "in" and resp.method == pb.EXPLAIN_METHOD_GRAD_CAM
    top = max(resp.scores, key=lambda s: s.probability).name
    assert resp.target_class == top

    with pytest.raises(RuntimeError, match="INVALID_ARGUMENT: target_class"):
        svc.Explain(pb.ExplainRequest(model=req.model, image=req.image, target_class="slate"), Ctx())
    with pytest.raises(RuntimeError, match="INVALID_ARGUMENT: image"):
        svc.Explain(pb.ExplainRequest(model=req.model, image=b"not an image"), Ctx())
    b.building_id = "outside"
    with pytest.raises(RuntimeError, match="INVALID_ARGUMENT: building.images.*no imagery"):
        svc.Explain(pb.ExplainRequest(model=req.model, building=b), Ctx())
    b.building_id = "nobody"
    with pytest.raises(RuntimeError, match="NOT_FOUND"):
        svc.Explain(pb.ExplainRequest(model=req.model, building=b), Ctx())
    with pytest.raises(RuntimeError, match="NOT_FOUND"):
        svc.Explain(pb.ExplainRequest(model=common.ModelRef(name="roof-material", version="v9"),
                                      image=req.image), Ctx())


def test_facade_views_come_from_a_street_view_catalog(monkeypatch) -> None:
    import json

    from pyproj import Transformer

    labels = ["brick", "null"]
    cfg = {"classes": labels, "chip_size": 32, "multi_label": True, "thresholds": [0.5, 0.5],
           "normalisation": {"input": "RGB / 255"}, "taxonomy": {"name": "bbr_byg032", "codes": {"brick": 1}}}
    monkeypatch.setattr(server, "model_config", lambda name, version: cfg)
    models = FakeModels(2, top=0)
    svc, store, _ = _svc(models)
    to_wgs = Transformer.from_crs(CRS_, "EPSG:4326", always_xy=True)
    x0, y0 = world(50, 55)  # 2.5 m south of building "in" (rows 30-50)
    lon, lat = to_wgs.transform(x0, y0)
    store.put("views/a.jpg", _jpeg(200))
    cat = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
         "properties": {"id": "v1", "heading": 90.0, "image_uri": "./views/a.jpg"}},  # looks east: building on the left
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
         "properties": {"id": "v2", "heading": 0.0, "image_uri": "s3://b/views/a.jpg"}},  # looks at it head-on: not kept
    ]}
    req = pb.ClassifyFacadesRequest(footprints=common.ObjectRef(uri=_footprints(store)),
                                    model=common.ModelRef(name="facade-material", version="v1"),
                                    street_views=common.ObjectRef(uri=store.put("cat.geojson", json.dumps(cat).encode())))
    req.job.job_id = "j"
    by = {f.building_id: f for f in svc.ClassifyFacades(req, Ctx()).facades}
    assert by["in"].material == "brick" and by["in"].views_total == 1 and by["in"].views_used == 1
    assert by["outside"].unknown_reason == "no street-level view of the building"


@pytest.mark.parametrize("multi_label", [False, True])
def test_model_server_serves_calibrated_probabilities(tmp_path, multi_label: bool) -> None:
    """What ClassifyRoofs/ClassifyFacades decode: softmax or per-label sigmoid of logits / T."""
    from models.classifiers import build_classifier, save_classifier
    from urbanfabric.runtime.model_runner import build_model, parse_specs

    torch.manual_seed(0)
    net = build_classifier("mobilenet_v3_small", 3).eval()
    name = "facade-material" if multi_label else "roof-shape"
    save_classifier(net, {"classes": ["a", "b", "c"], "chip_size": 32, "temperature": 2.0,
                          "multi_label": multi_label}, tmp_path / name.replace("-", "_") / "v1")
    served = build_model(parse_specs(f"{name}:v1")[0], model_dir=tmp_path)
    assert served.load()
    x = np.random.default_rng(0).uniform(size=(4, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        z = served.net(torch.from_numpy(x)).double() / 2.0
    expected = torch.sigmoid(z) if multi_label else torch.softmax(z, dim=1)
    np.testing.assert_allclose(served.forward(x), expected.numpy(), rtol=1e-4, atol=1e-6)
    with pytest.raises(Exception, match="chips"):  # chip size from the config is enforced
        served.check_input(np.zeros((1, 3, 48, 48), np.float32))


def test_cli_explains_a_jobs_buildings_through_the_rpc(monkeypatch, tmp_path) -> None:
    """`urbanfabric explain --job`: batch footprints + ARD tiles of the job → Explain per building."""
    import urbanfabric.runtime.connections
    import urbanfabric.settings
    import urbanfabric.io.object_store
    from urbanfabric.cli.heatmaps import explain_job
    from urbanfabric.io.job_layout import JobLayout

    svc, store, _ = _svc()
    layout = JobLayout("job1")
    store.objects[layout.batch_footprints("00000")] = store.get_bytes(_footprints(store).removeprefix("s3://b/"))
    store.objects[layout.ard("t1")] = _image()
    store.list = lambda prefix: sorted(k for k in store.objects if k.startswith(prefix))
    store.s3_uri = lambda key: f"s3://b/{key}"

    class Stub:
        def Explain(self, request, timeout=None):  # noqa: N802 - gRPC method name
            return svc.Explain(request, Ctx())

    monkeypatch.setattr(urbanfabric.settings.Settings, "load", classmethod(lambda cls: None))
    monkeypatch.setattr(urbanfabric.io.object_store, "ObjectStore", lambda settings: store)
    monkeypatch.setattr(urbanfabric.runtime.connections, "stub", lambda settings, name: Stub())
    monkeypatch.setattr(urbanfabric.runtime.connections, "call", lambda method, req, timeout: method(req, timeout=timeout))
    from urbanfabric.materials import explain as E

    files = explain_job("job1", ["in", "outside"], 5, "roof-material:v1", [E.Method.GRAD_CAM], "", "b", tmp_path)
    assert sorted(f.name for f in files) == ["in.json", "in_chip.png", "in_gradcam.png"]  # "outside": no imagery
    with pytest.raises(NotFound, match="nobody"):
        explain_job("job1", ["nobody"], 5, "roof-material:v1", [E.Method.GRAD_CAM], "", "b", tmp_path)
