"""``urbanfabric explain``: heatmaps of why a classifier chose a class, written as PNGs.

Two sources:

* ``--image FILE [FILE …]``: image files (a roof crop, a street-level view), explained
  in-process with the shipped model folder — no stack needed::

      urbanfabric explain --image roof.png --model roof-material:v1 --out out/explain

* ``--folder ROOT``: a class-per-folder data set; one panel per image with all three
  methods for the predicted class, plus ``gallery.json`` (how ``docs/img/explain`` is made).

* ``--job JOB_ID``: roof chips of a finished job's buildings, explained by the ``Explain`` RPC
  of the running stack's materials service (it cuts the chip from the job's ARD tiles exactly
  as classification did)::

      urbanfabric explain --job 20261123-… --buildings b12,b40 --method all

Per chip and method it writes ``<name>_<method>.png`` (heatmap over the chip), plus
``<name>_chip.png`` and ``<name>.json`` (class scores, explained class, files). ``--method``
is ``gradcam`` (default), ``guided-backprop``, ``guided-gradcam`` or ``all``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

#: ``urbanfabric.materials.explain.Method`` values (not imported here: the CLI must not load torch to
#: parse its arguments).
METHOD_CHOICES = ["gradcam", "guided-backprop", "guided-gradcam", "all"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def _explainable(model: str) -> Any:
    """The in-process explainable classifier of ``name:version`` (loads torch)."""
    from urbanfabric.io.model_repository import model_dir, split_model_ref
    from urbanfabric.materials import explain

    return explain.load_explainable(model_dir(*split_model_ref(model)))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``explain`` sub-command's options."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", nargs="+", help="image file(s): explained in-process")
    src.add_argument("--job", help="job id: explain its buildings' roof chips through the stack")
    src.add_argument("--folder", help="class-per-folder images (ROOT/<class>/*): one panel per image, "
                                      "chip | Grad-CAM | guided backprop | guided Grad-CAM")
    p.add_argument("--model", default="roof-material:v1", help="NAME:VERSION of a shipped classifier")
    p.add_argument("--method", default="gradcam", choices=METHOD_CHOICES)
    p.add_argument("--target", default="", help="class to explain (default: the top class)")
    p.add_argument("--buildings", default="", help="--job: comma-separated building ids (default: the first --limit)")
    p.add_argument("--limit", type=int, default=5, help="--job: buildings to explain without --buildings")
    p.add_argument("--per-class", type=int, default=2, help="--folder: images per class folder")
    p.add_argument("--scale", type=int, default=1, help="--folder: enlarge panels (nearest)")
    p.add_argument("--labels", default="", help="--folder: labels of a flat folder instead of class sub-folders: "
                                                 "JSON {file: label} or multi-hot CSV (filename, label…)")
    p.add_argument("--only", default="", help="--folder: text file of file names to draw from (e.g. a test split)")
    p.add_argument("--bucket", default="urbanfabric")
    p.add_argument("--out", default="out/explain", help="output folder")


def _methods(choice: str) -> list[Any]:
    from urbanfabric.materials import explain as E

    return list(E.Method) if choice == "all" else [E.Method(choice)]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "chip"


def _write(out: Path, name: str, chip_png: bytes, overlays: dict[str, bytes], summary: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{name}_chip.png"]
    files[0].write_bytes(chip_png)
    for method, png in overlays.items():
        files.append(out / f"{name}_{method}.png")
        files[-1].write_bytes(png)
    summary["files"] = [f.name for f in files]
    files.append(out / f"{name}.json")
    files[-1].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return files


def explain_files(paths: list[str], model: str, methods: list[Any], target: str, out: Path) -> list[Path]:
    """Explain image files in-process with the shipped model ``NAME:VERSION``.

    Raises:
        NotFound: no such shipped model; InvalidInput: unreadable image or unknown class.
    """
    from urbanfabric.materials import explain as E
    from urbanfabric.errors import InvalidInput
    from urbanfabric.materials.chips import image_chip, input_scaling

    ex = _explainable(model)
    if target and target not in ex.classes:
        raise InvalidInput("target", f"{target!r} is not one of {ex.classes}")
    idx = ex.classes.index(target) if target else None
    written: list[Path] = []
    for path in paths:
        chip = image_chip(Path(path).read_bytes(), ex.chip_size, input_scaling(ex.config))
        overlays: dict[str, bytes] = {}
        summary: dict[str, Any] = {"source": str(path), "model": model}
        for m in methods:
            exp = E.explain(ex.model, chip, m, idx, classes=ex.classes,
                            multi_label=ex.multi_label, temperature=ex.temperature)
            overlays[m.value] = E.overlay_png(chip, exp.heatmap)
            summary.update(target_class=exp.target_name,
                           scores={c: round(float(p), 4) for c, p in zip(ex.classes, exp.scores)})
        written += _write(out, _safe(Path(path).stem), E.png_bytes(E.chip_rgb(chip)), overlays, summary)
    return written


def explain_job(job_id: str, building_ids: list[str], limit: int, model: str, methods: list[Any],
                target: str, bucket: str, out: Path) -> list[Path]:
    """Explain roof chips of a job's buildings through the stack's ``Explain`` RPC."""
    from urbanfabric.runtime.connections import call, stub
    from urbanfabric.settings import Settings
    from urbanfabric.errors import NotFound
    from urbanfabric.io.job_layout import JobLayout
    from urbanfabric.io.object_store import ObjectStore
    from urbanfabric.io.geoparquet import read_geoparquet
    from urbanfabric.io.model_repository import split_model_ref
    from urbanfabric.v1 import common_pb2, materials_pb2

    settings = Settings.load()
    store = ObjectStore(settings)
    root = JobLayout(job_id).root
    parts = [k for k in store.list(f"{root}/batches/") if k.endswith("footprints.parquet")]
    ards = [k for k in store.list(f"{root}/tiles/") if k.endswith("/ard.tif")]
    if not parts:
        raise NotFound(f"job_id: job {job_id} has no building batches in the object store")
    images = [common_pb2.ObjectRef(uri=store.s3_uri(k)) for k in ards]
    wanted = [b for b in building_ids if b]
    todo: list[tuple[str, str]] = []  # (building_id, footprints key)
    for key in parts:
        frame = read_geoparquet(store.get_bytes(key))
        ids = [str(b) for b in frame["building_id"]]
        todo += [(b, key) for b in ids if (b in wanted if wanted else True)]
    if wanted:
        missing = sorted(set(wanted) - {b for b, _ in todo})
        if missing:
            raise NotFound(f"buildings: {missing} are not in job {job_id}")
    else:
        todo = todo[:limit]
    name, version = split_model_ref(model)
    mat = stub(settings, "materials")
    written: list[Path] = []
    for bid, key in todo:
        overlays: dict[str, bytes] = {}
        summary: dict[str, Any] = {"job_id": job_id, "building_id": bid, "model": model}
        chip_png = b""
        for m in methods:
            req = materials_pb2.ExplainRequest(
                model=common_pb2.ModelRef(name=name, version=version), target_class=target,
                method=materials_pb2.ExplainMethod.Value("EXPLAIN_METHOD_" + m.name),
                building=materials_pb2.BuildingChip(
                    job=common_pb2.JobRef(job_id=job_id, bucket=bucket),
                    footprints=common_pb2.ObjectRef(uri=store.s3_uri(key)), images=images, building_id=bid),
            )
            try:
                resp = call(mat.Explain, req, 120)
            except Exception as exc:  # noqa: BLE001 - one building without imagery must not stop the rest
                summary["error"] = str(exc)
                break
            overlays[m.value], chip_png = resp.overlay_png, resp.chip_png
            summary.update(target_class=resp.target_class,
                           scores={s.name: round(s.probability, 4) for s in resp.scores})
        if not overlays:
            print(f"{bid}: not explained: {summary.get('error')}")
            continue
        written += _write(out, _safe(bid), chip_png, overlays, summary)
    return written


def read_labels(path: Path) -> dict[str, list[str]]:
    """``{file name: [labels]}`` from a JSON ``{file: label}`` or a multi-hot CSV
    (``filename, label1, label2, …`` with 0/1 cells, e.g. the façade sets' ``_classes.csv``)."""
    import csv

    if path.suffix.lower() == ".json":
        return {k: [v] if isinstance(v, str) else list(v) for k, v in json.loads(path.read_text()).items()}
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    head = [h.strip() for h in rows[0]]
    return {r[0].strip(): [head[i] for i in range(1, len(head)) if r[i].strip() == "1"] for r in rows[1:] if r}


def explain_folder(root: Path, model: str, per_class: int, out: Path, scale: int = 1,
                   labels: Path | None = None, only: Path | None = None) -> list[Path]:
    """Panels for the first ``per_class`` images (sorted by name) of each of the model's
    classes: from ``root/<class>/`` folders, or from a flat ``root`` with a ``labels`` file
    (an image counts for every label it has); ``only`` restricts the candidates to the file
    names it lists (a held-out split). See :func:`explain_samples`."""
    classes = _explainable(model).classes
    allowed = set(only.read_text().split()) if only else None
    mapping = read_labels(labels) if labels else {}
    samples: list[tuple[Path, str]] = []
    for cls in classes:
        if labels:
            files = sorted(root / f for f, labs in mapping.items() if cls in labs)
        else:
            files = sorted(f for f in (root / cls).glob("*") if f.suffix.lower() in IMAGE_SUFFIXES) \
                if (root / cls).is_dir() else []
        files = [f for f in files if allowed is None or f.name in allowed]
        samples += [(f, cls) for f in files[:per_class]]
    return explain_samples(samples, model, out, scale, data=str(root))


def explain_samples(samples: list[tuple[Path, str]], model: str, out: Path, scale: int = 1,
                    data: str = "") -> list[Path]:
    """One panel (chip | Grad-CAM | guided backprop | guided Grad-CAM, all for the predicted
    class) per ``(image file, true label)``, plus ``gallery.json`` (true label, predicted class
    and probability per panel)."""
    from urbanfabric.materials import explain as E
    from urbanfabric.materials.chips import image_chip, input_scaling

    ex = _explainable(model)
    out.mkdir(parents=True, exist_ok=True)
    rows, written = [], []
    for f, true in samples:
        chip = image_chip(Path(f).read_bytes(), ex.chip_size, input_scaling(ex.config))
        exps = [E.explain(ex.model, chip, m, classes=ex.classes, multi_label=ex.multi_label,
                          temperature=ex.temperature) for m in E.Method]
        path = out / f"{_safe(true)}_{_safe(Path(f).stem)[:40]}.png"
        path.write_bytes(E.panel_png(chip, exps, scale=scale))
        written.append(path)
        rows.append({"file": path.name, "source": Path(f).name, "true": true, "predicted": exps[0].target_name,
                     "probability": round(float(exps[0].scores[exps[0].target]), 3),
                     "scores": {c: round(float(p), 3) for c, p in zip(ex.classes, exps[0].scores)},
                     "layer": exps[0].layer})
    index = out / "gallery.json"
    index.write_text(json.dumps({"model": model, "data": data, "panels": rows}, indent=2) + "\n", encoding="utf-8")
    return [*written, index]


def run(args: argparse.Namespace) -> int:
    """Entry point of ``urbanfabric explain``."""
    methods = _methods(args.method)
    out = Path(args.out)
    if args.folder:
        files = explain_folder(Path(args.folder), args.model, args.per_class, out, args.scale,
                               labels=Path(args.labels) if args.labels else None,
                               only=Path(args.only) if args.only else None)
    elif args.image:
        files = explain_files(args.image, args.model, methods, args.target, out)
    else:
        files = explain_job(args.job, args.buildings.split(","), args.limit, args.model, methods,
                            args.target, args.bucket, out)
    print("\n".join(str(f) for f in files))
    return 0 if files else 1


def heatmap_array(resp: Any) -> np.ndarray:
    """The ``(H, W)`` heatmap of an ``ExplainResponse`` as a numpy array."""
    return np.asarray(resp.heatmap.data, dtype=np.float32).reshape(tuple(resp.heatmap.shape))
