"""Package model versions as TorchServe ``.mar`` archives plus a ``config.properties``.

Usage::

    python -m services.torchserve.package --model footprint-unet --version v1 --out DIR
    python -m services.torchserve.package --model footprint-unet --version v1 \\
        --model roof-material --version v1 --out DIR --local      # one local server, both

writes::

    DIR/model-store/footprint-unet-v1.mar
    DIR/config/config.properties

the layout KServe's TorchServe runtime reads from an InferenceService's ``storageUri`` (the
chart's ``modelServing.runtime: torchserve`` points it at
``s3://<bucket>/models/<model_dir>/<version>/torchserve``). ``--local`` renders the
configuration for a workstation instead: every address on 127.0.0.1 and ``model_store`` set to
``DIR/model-store``, then::

    torchserve --start --ncs --disable-token-auth --model-store DIR/model-store \\
        --ts-config DIR/config/config.properties

Each archive holds the version's ``model.pt`` and ``config.json``, the model's Python code
(``models/__init__.py``, ``models/common/*.py``, ``models/<model_dir>/*.py``), the handler
(:mod:`services.torchserve.handler`) with the service-token check it imports
(:mod:`urbanfabric.runtime.tokens`, as ``urbanfabric_tokens.py``) and a ``requirements.txt`` of the third-party packages the
code needs beyond torch (installed by TorchServe when ``install_py_dep_per_model=true``, which
the KServe configuration sets because the stock ``pytorch/torchserve-kfs`` image lacks them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from string import Template

from urbanfabric.io.model_repository import v2_model_name
from urbanfabric.runtime.model_client import kserve_import_guard

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Default weights root: the versions shipped in the repository (models/<model_dir>/<version>/).
DEFAULT_WEIGHTS_ROOT = REPO_ROOT / "models"
HERE = Path(__file__).resolve().parent
HANDLER_SOURCE = HERE / "handler.py"
#: The service-token check (standard library only), packed beside the handler under this name.
TOKENS_SOURCE = REPO_ROOT / "services/lib/urbanfabric/runtime/tokens.py"
TOKENS_NAME = "urbanfabric_tokens.py"  # must match services.torchserve.handler's import
CONFIG_TEMPLATE = HERE / "config.properties.in"
#: Name of the handler module inside an archive (unique, so nothing on sys.path shadows it).
HANDLER_NAME = "urbanfabric_handler.py"
SPEC_FILE = "urbanfabric_model.json"  # must match services.torchserve.handler.SPEC_FILE
VERSION_FILES = ("config.json", "model.pt")

#: Third-party distributions each model's code imports beyond torch/numpy (which every
#: TorchServe image has); pinned to the versions installed here, i.e. the versions tested.
EXTRA_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "footprint-unet": ("segmentation-models-pytorch", "timm"),
    "footprint-deeplab": ("segmentation-models-pytorch", "timm"),
    # Classifiers load through models.classifiers (timm for Lite0, torchvision for the others).
    "roof-material": ("timm", "torchvision"),
    "roof-shape": ("timm", "torchvision"),
    "facade-material": ("timm", "torchvision"),
}

#: KServe's TorchServe runtime: TorchServe behind KServe's wrapper, which listens on 8080 and
#: forwards to 8085 (pytorch/serve kubernetes/kserve/README.md); storage mounted at /mnt/models.
KSERVE_PORTS = {"inference_port": 8085, "management_port": 8085, "metrics_port": 8082,
                "grpc_inference_port": 7070, "grpc_management_port": 7071}
KSERVE_MODEL_STORE = "/mnt/models/model-store"
#: Local defaults (TorchServe's own defaults would collide with the project's 8080/8081).
LOCAL_PORTS = {"inference_port": 8085, "management_port": 8086, "metrics_port": 8087,
               "grpc_inference_port": 7070, "grpc_management_port": 7071}
ENVELOPES = ("none", "kservev2")


@dataclass(frozen=True)
class Packaged:
    """One archive that was written.

    Attributes:
        name: TorchServe model name = the V2 name clients call (``footprint-unet-v1``).
        model: model kind (``footprint-unet``).
        version: ``v1``.
        mar: path of the archive.
    """

    name: str
    model: str
    version: str
    mar: Path



def known_modules() -> dict[str, str]:
    """``{model kind: python module}`` exactly as the project's KServe predictor knows them."""
    with kserve_import_guard():
        from urbanfabric.io.model_repository import MODEL_MODULES
    return dict(MODEL_MODULES)


def _code_files(module: str) -> list[Path]:
    """Repository files of the model code: ``models/__init__.py``, shared and own package."""
    parts = module.split(".")
    if parts[0] != "models" or len(parts) < 3:
        raise ValueError(f"model code must live in models/<model_dir>/: {module!r}")
    files = [REPO_ROOT / "models" / "__init__.py"]
    for package in (REPO_ROOT / "models" / "common", REPO_ROOT / "models" / parts[1]):
        files.extend(sorted(package.glob("*.py")))
    return files


def requirements(model: str) -> list[str]:
    """Pinned requirement lines of ``model``'s code (as installed here)."""
    return [f"{dist}=={metadata.version(dist)}" for dist in EXTRA_REQUIREMENTS.get(model, ())]


def package_model(
    model: str,
    version: str,
    out: Path | str,
    weights_root: Path | str | None = None,
) -> Packaged:
    """Write ``<out>/model-store/<model>-<version>.mar``.

    Args:
        model: model kind, ``footprint-unet`` or ``roof-material`` (``_`` accepted).
        version: version directory name, e.g. ``v1``.
        out: output directory (created).
        weights_root: model repository root holding ``<model_dir>/<version>/`` with
            ``config.json`` and ``model.pt`` (default: the repository's ``models/``).

    Raises:
        ValueError: unknown model kind.
        FileNotFoundError: the version has no ``config.json`` / ``model.pt``.
        RuntimeError: torch-model-archiver failed (its output is in the message).
    """
    model = model.replace("_", "-")
    modules = known_modules()
    if model not in modules:
        raise ValueError(f"unknown model {model!r}: known {sorted(modules)}")
    root = Path(weights_root) if weights_root is not None else DEFAULT_WEIGHTS_ROOT
    version_dir = root / model.replace("-", "_") / version
    missing = [f for f in VERSION_FILES if not (version_dir / f).is_file()]
    weights = version_dir / "model.pt"
    if missing == ["model.pt"]:
        # A version that reuses another's weights (models/registry.yaml): package those.
        from urbanfabric.errors import NotFound
        from urbanfabric.io.model_registry import weights_path

        try:
            weights, missing = weights_path(version_dir, "model.pt"), []
        except NotFound as exc:
            raise FileNotFoundError(f"{v2_model_name(model, version)}: {exc}") from exc
    if missing:
        raise FileNotFoundError(f"{v2_model_name(model, version)}: no {', '.join(missing)} in {version_dir}")
    name = v2_model_name(model, version)
    store = Path(out) / "model-store"
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"mar-{name}-") as tmp:
        staging = Path(tmp)
        # torch-model-archiver copies the *contents* of an extra-files directory to the root.
        payload = staging / "payload"
        payload.mkdir()
        shutil.copy2(version_dir / "config.json", payload / "config.json")
        shutil.copy2(TOKENS_SOURCE, payload / TOKENS_NAME)
        spec = {"model": model, "version": version, "name": name, "module": modules[model]}
        (payload / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
        for src in _code_files(modules[model]):
            dst = payload / src.relative_to(REPO_ROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        handler = staging / HANDLER_NAME
        shutil.copy2(HANDLER_SOURCE, handler)
        reqs = staging / "requirements.txt"
        reqs.write_text("".join(f"{line}\n" for line in requirements(model)), encoding="utf-8")
        cmd = [
            sys.executable, "-m", "model_archiver.model_packaging",
            "--model-name", name,
            "--version", version,
            "--serialized-file", str(weights),
            "--handler", str(handler),
            "--extra-files", str(payload),
            "--requirements-file", str(reqs),
            "--export-path", str(store),
            "--force",
        ]
        # The archiver stages in <TMPDIR>/<model name>; a private TMPDIR keeps parallel runs apart.
        env = {**os.environ, "TMPDIR": str(staging)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"torch-model-archiver failed for {name}:\n{proc.stdout}{proc.stderr}")
    mar = store / f"{name}.mar"
    if not mar.is_file():
        raise RuntimeError(f"torch-model-archiver wrote no {mar}")
    return Packaged(name, model, version, mar)


def render_config(
    models: Mapping[str, str],
    model_store: Path | str,
    *,
    host: str = "127.0.0.1",
    ports: dict[str, int] | None = None,
    worker_port: int = 9000,
    envelope: str = "none",
    open_inference: bool = True,
    install_deps: bool = False,
    workers: int = 1,
) -> str:
    """The ``config.properties`` text serving ``models`` (V2 names) from ``model_store``.

    Args:
        models: ``{TorchServe model name: archive version}``; the name is the archive's file
            name without ``.mar`` and the V2 name clients call (``footprint-unet-v1: v1``).
        model_store: directory of the archives as the server sees it.
        host: bind address of all five ports (127.0.0.1 locally, 0.0.0.0 in a pod).
        ports: ``inference_port``, ``management_port``, ``metrics_port``,
            ``grpc_inference_port``, ``grpc_management_port`` (default :data:`LOCAL_PORTS`).
        worker_port: base number of the backend workers' socket names.
        envelope: ``none`` (the handler reads and writes V2 bodies itself: JSON, binary
            extension, OIP gRPC) or ``kservev2`` (TorchServe's envelope decodes the request;
            outputs come back flattened).
        open_inference: serve the Open Inference Protocol (REST health/ready and the
            ``org.pytorch.serve.grpc.openinference.GRPCInferenceService`` gRPC service instead
            of TorchServe's own gRPC inference API).
        install_deps: let TorchServe pip-install each archive's ``requirements.txt``.
        workers: backend workers (processes) per model.

    Raises:
        ValueError: unknown envelope, no models, or a missing port.
    """
    if envelope not in ENVELOPES:
        raise ValueError(f"envelope must be one of {ENVELOPES}, got {envelope!r}")
    if not models:
        raise ValueError("no models to serve")
    ports = {**LOCAL_PORTS, **(ports or {})}
    snapshot = {
        "name": "startup.cfg",
        "modelCount": len(models),
        "models": {
            name: {
                version: {
                    "defaultVersion": True,
                    "marName": f"{name}.mar",
                    "minWorkers": workers,
                    "maxWorkers": workers,
                    "batchSize": 1,
                    "maxBatchDelay": 10,
                    "responseTimeout": 300,
                }
            }
            for name, version in models.items()
        },
    }
    return Template(CONFIG_TEMPLATE.read_text(encoding="utf-8")).substitute(
        model_names=", ".join(models),
        host=host,
        worker_port=worker_port,
        model_store=str(model_store),
        model_snapshot=json.dumps(snapshot, separators=(",", ":")),
        envelope_line=f"service_envelope={envelope}" if envelope != "none" else "# service_envelope unset: the handler speaks V2 itself",
        open_inference=str(open_inference).lower(),
        install_deps=str(install_deps).lower(),
        workers=workers,
        **{k: int(v) for k, v in ports.items()},
    )


def write_config(out: Path | str, text: str) -> Path:
    """Write ``<out>/config/config.properties``."""
    path = Path(out) / "config" / "config.properties"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: package one or more model versions and write their configuration."""
    parser = argparse.ArgumentParser(
        prog="python -m services.torchserve.package",
        description="Package urbanfabric model versions as TorchServe .mar archives.",
    )
    parser.add_argument("--model", action="append", required=True,
                        help="model kind (footprint-unet, roof-material); repeat with --version")
    parser.add_argument("--version", action="append", required=True, help="version, e.g. v1")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--weights-root", type=Path, default=DEFAULT_WEIGHTS_ROOT,
                        help="model repository root (<root>/<model_dir>/<version>/)")
    parser.add_argument("--local", action="store_true",
                        help="configuration for this machine (127.0.0.1, model store in --out) "
                             "instead of KServe's TorchServe runtime")
    parser.add_argument("--envelope", choices=ENVELOPES, default="none",
                        help="TorchServe service envelope (default none: the handler speaks V2)")
    args = parser.parse_args(argv)
    if len(args.model) != len(args.version):
        parser.error("give one --version per --model")
    try:
        packaged = [package_model(m, v, args.out, args.weights_root)
                    for m, v in zip(args.model, args.version)]
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = {p.name: p.version for p in packaged}
    if args.local:
        text = render_config(names, (args.out / "model-store").resolve(), envelope=args.envelope)
    else:
        text = render_config(names, KSERVE_MODEL_STORE, host="0.0.0.0", ports=KSERVE_PORTS,
                             envelope=args.envelope, open_inference=False, install_deps=True)
    config = write_config(args.out, text)
    for p in packaged:
        print(f"{p.name}: {p.mar} ({p.mar.stat().st_size / 1e6:.1f} MB)")
    print(f"config: {config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
