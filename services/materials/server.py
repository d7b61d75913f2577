"""Materials service: a thin gRPC adapter over :mod:`urbanfabric.materials.roofs` and :mod:`urbanfabric.materials.explain`.

* ``ClassifyRoofs``: roof chips are cut here from the calibrated tiles; the roof-material (and
  optionally roof-shape) classifier runs in the KServe V2 model server, one request per
  building batch, and returns calibrated probabilities (temperature from each model's config).
* ``ClassifyFacades``: street-level views per building, classified by the multi-label façade
  model in the model server, filtered (views showing no façade) and aggregated per building.
* ``Explain``: Grad-CAM / guided backpropagation / guided Grad-CAM of one chip. It needs
  gradients, which the model server does not expose, so it runs *in this process* on the
  model loaded from its shipped folder (``models/<name>/<version>/``, the same weights the model
  server loads); models are cached after the first call.

A building that cannot be classified (no imagery, unreadable image, no usable view, a class
outside the taxonomy) gets material ``"unknown"`` with ``unknown_reason``; the batch goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from urbanfabric.imagery import streetview
from urbanfabric.materials import explain, facades, roofs
from urbanfabric.materials import chips as roof_chips
from urbanfabric.runtime.connections import model_client
from urbanfabric.settings import Settings
from urbanfabric.errors import InvalidInput
from urbanfabric.runtime.grpc_service import Registration, require, rpc, run_service
from urbanfabric.runtime.model_client import ModelClient
from urbanfabric.io.model_repository import model_config, version_folder
from urbanfabric.io.rasters import read_raster
from urbanfabric.io.object_store import ObjectStore, parse_s3_uri
from urbanfabric.io.geoparquet import read_geoparquet
from urbanfabric.v1 import materials_pb2 as pb
from urbanfabric.v1 import materials_pb2_grpc as pb_grpc

SERVICE = "materials"
BATCH = 64

_METHODS = {
    pb.EXPLAIN_METHOD_UNSPECIFIED: explain.Method.GRAD_CAM,
    pb.EXPLAIN_METHOD_GRAD_CAM: explain.Method.GRAD_CAM,
    pb.EXPLAIN_METHOD_GUIDED_BACKPROP: explain.Method.GUIDED_BACKPROP,
    pb.EXPLAIN_METHOD_GUIDED_GRAD_CAM: explain.Method.GUIDED_GRAD_CAM,
}


def _probabilities(calls: dict[str, float]) -> list[pb.MaterialProbability]:
    return [pb.MaterialProbability(name=k, probability=v) for k, v in calls.items()]


class MaterialsServicer(pb_grpc.MaterialsServiceServicer):
    def __init__(self, store: ObjectStore, models: ModelClient) -> None:
        self.store = store
        self.models = models
        self.taxonomy = roofs.RoofTaxonomy.load()
        self._explainable: dict[tuple[str, str], explain.Explainable] = {}
        self._lock = threading.Lock()

    # ---- helpers ------------------------------------------------------------------------
    def _rasters(self, refs: Any) -> list[tuple[str, Callable[[], Any]]]:
        """Lazy, cached ARD readers: an image is fetched once even for two chip sizes."""
        cache: dict[str, Any] = {}

        def loader(uri: str) -> Callable[[], Any]:
            def load() -> Any:
                if uri not in cache:
                    cache[uri] = read_raster(self.store.get_bytes(parse_s3_uri(uri)[1]))
                return cache[uri]
            return load

        return [(ref.uri, loader(ref.uri)) for ref in refs]

    def _taxonomy(self, name: str, cfg: dict[str, Any]) -> roofs.Taxonomy:
        default = self.taxonomy if name.replace("_", "-") == "roof-material" else None
        return roofs.Taxonomy.for_model(cfg, default)

    def _classify(self, ref: Any, rasters: list, footprints: Any) -> list[roofs.MaterialCall]:
        cfg = model_config(ref.name, ref.version)
        return roofs.classify_roofs(footprints, rasters, cfg, self._batched(ref.name, ref.version),
                                    self._taxonomy(ref.name, cfg))

    def _batched(self, name: str, version: str) -> Callable[[np.ndarray], Any]:
        """Probabilities, or (probabilities, out-of-domain scores) when the model sends them."""
        def classify(chips: np.ndarray) -> Any:
            out = self.models.infer_batched_outputs(name, version, chips, batch_size=BATCH)
            probs = out["probability"]
            return (probs, out["ood_score"]) if "ood_score" in out else probs
        return classify

    def _read(self, uri: str) -> bytes:
        return self.store.get_bytes(parse_s3_uri(uri)[1])

    def _loaded(self, name: str, version: str) -> explain.Explainable:
        key = (name, version)
        with self._lock:
            if key not in self._explainable:
                self._explainable[key] = explain.load_explainable(version_folder(name, version))
            return self._explainable[key]

    # ---- RPCs ---------------------------------------------------------------------------
    @rpc(SERVICE)
    def ClassifyRoofs(self, request: pb.ClassifyRoofsRequest, context) -> pb.ClassifyRoofsResponse:
        require(request, "job.job_id", "footprints.uri", "model.name", "model.version")
        footprints = read_geoparquet(self.store.get_bytes(parse_s3_uri(request.footprints.uri)[1]))
        rasters = self._rasters(request.images)
        calls = self._classify(request.model, rasters, footprints)
        shapes = None
        if request.shape_model.name:
            require(request, "shape_model.version")
            shapes = self._classify(request.shape_model, rasters, footprints)
        out = []
        for i, r in enumerate(calls):
            msg = pb.RoofMaterial(
                building_id=r.building_id, material=r.material, probability=r.probability,
                taxonomy_code=r.taxonomy_code, has_imagery=bool(r.model_class),
                unknown_reason=r.unknown_reason, model_class=r.model_class,
                probabilities=_probabilities(r.probabilities), ood_score=r.ood_score, shape_ood_score=float("nan"),
            )
            if shapes is not None:
                s = shapes[i]
                msg.shape, msg.shape_probability, msg.shape_unknown_reason = s.material, s.probability, s.unknown_reason
                msg.shape_ood_score = s.ood_score
            else:
                msg.shape, msg.shape_unknown_reason = roofs.UNKNOWN, "no roof-shape model requested"
            out.append(msg)
        return pb.ClassifyRoofsResponse(roofs=out)

    @rpc(SERVICE)
    def ClassifyFacades(self, request: pb.ClassifyFacadesRequest, context) -> pb.ClassifyFacadesResponse:
        require(request, "job.job_id", "footprints.uri", "model.name", "model.version")
        name, version = request.model.name, request.model.version
        cfg = model_config(name, version)
        footprints = read_geoparquet(self._read(request.footprints.uri))
        entries = [(e.building_id, [r.uri for r in e.images]) for e in request.views]
        if not entries and request.street_views.uri:
            entries = streetview.views_from_catalog(footprints, self._read(request.street_views.uri).decode("utf-8"),
                                                    request.street_views.uri, request.max_views or 3)
        no_views = ("no street-level views were given for this run (flow parameter street_views: a view catalog)"
                    if not request.views and not request.street_views.uri else "no street-level view of the building")
        calls = facades.classify_facades([str(b) for b in footprints["building_id"]], entries, self._read, cfg,
                                         self._batched(name, version), self._taxonomy(name, cfg), no_views)
        return pb.ClassifyFacadesResponse(facades=[
            pb.FacadeMaterial(
                building_id=c.building_id, material=c.material, probability=c.probability,
                taxonomy_code=c.taxonomy_code, materials=c.materials,
                probabilities=_probabilities(c.probabilities), views_total=c.views_total,
                views_used=c.views_used, unknown_reason=c.unknown_reason, ood_score=c.ood_score,
            ) for c in calls
        ])

    @rpc(SERVICE)
    def Explain(self, request: pb.ExplainRequest, context) -> pb.ExplainResponse:
        require(request, "model.name", "model.version")
        model = self._loaded(request.model.name, request.model.version)
        method = _METHODS.get(request.method)
        if method is None:
            raise InvalidInput("method", f"unknown method {request.method}")
        source = request.WhichOneof("source")
        if source == "building":
            require(request, "building.footprints.uri", "building.building_id")
            b = request.building
            footprints = read_geoparquet(self.store.get_bytes(parse_s3_uri(b.footprints.uri)[1]))
            chip = roof_chips.building_chip(footprints, b.building_id, self._rasters(b.images), model.chip_size,
                                            mode=roof_chips.ChipMode.of(model.config))
        elif source == "image":
            chip = roof_chips.image_chip(request.image, model.chip_size, roof_chips.input_scaling(model.config))
        else:
            raise InvalidInput("source", "give building or image")
        exp = explain.explain(model.model, chip, method, model.target_index(request.target_class),
                              classes=model.classes, multi_label=model.multi_label, temperature=model.temperature)
        return pb.ExplainResponse(
            building_id=request.building.building_id if source == "building" else "",
            method=request.method or pb.EXPLAIN_METHOD_GRAD_CAM, target_class=exp.target_name,
            overlay_png=explain.overlay_png(chip, exp.heatmap), chip_png=explain.png_bytes(explain.chip_rgb(chip)),
            heatmap=pb.FloatArray(shape=list(exp.heatmap.shape), data=exp.heatmap.ravel().tolist()),
            scores=[pb.MaterialProbability(name=c, probability=float(p))
                    for c, p in zip(model.classes or map(str, range(len(exp.scores))), exp.scores)],
            layer=exp.layer)

def _build() -> list[Registration]:
    settings = Settings.load()
    servicer = MaterialsServicer(ObjectStore(settings), model_client(settings))
    return [Registration(servicer, pb_grpc.add_MaterialsServiceServicer_to_server, "urbanfabric.v1.MaterialsService")]


def main() -> None:
    run_service(SERVICE, __doc__, _build)


if __name__ == "__main__":
    main()
