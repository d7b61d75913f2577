"""Shared helpers of the deployment tests: chart rendering, Dockerfile parsing, code scanning.

Everything here is offline and reads the repository: the chart through helm-python-sdk (Helm
v4 embedded, no binary), Dockerfiles by a small parser, the Python code through ``ast`` (no
imports of heavy modules, so the suite stays fast).
"""

from __future__ import annotations

import ast
import copy
import fnmatch
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "urbanfabric"
SCHEMAS = ROOT.parent / "shared" / "schemas"
PROFILES = ("dev", "gpu")
RELEASE = "urbanfabric"
NAMESPACE = "urbanfabric"
#: Kubernetes version the rendered manifests are validated against.
KUBE_VERSION = "1.31.0"
#: Python paths of the repository (as pyproject.toml's pytest pythonpath).
CODE_PATHS = (ROOT, ROOT / "services" / "lib")
LOCAL_PACKAGES = {"urbanfabric", "services", "flows", "models"}
#: The one image recipe, and the command every image runs (its per-image table).
DOCKERFILE = ROOT / "Dockerfile"
LAUNCHER = ROOT / "services" / "entrypoint.py"


# -- chart ----------------------------------------------------------------------------------------
def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base`` (maps merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def profile_values(profile: str | None) -> dict[str, Any]:
    """The values a user passes for ``profile`` (its values-<profile>.yaml), {} for none."""
    if profile is None:
        return {}
    return yaml.safe_load((CHART / f"values-{profile}.yaml").read_text())


@lru_cache(maxsize=1)
def load_chart() -> Any:
    import helm_python

    return helm_python.Chart.load(str(CHART))


def render(values: dict[str, Any] | None = None, profile: str | None = None) -> dict[str, str]:
    """``helm template`` of the chart: template path -> manifest text.

    Raises:
        helm_python.HelmValuesError: the values break values.schema.json.
        helm_python.HelmRenderError: a template failed (e.g. a ``fail`` in validate.yaml).
    """
    merged = deep_merge(profile_values(profile), values or {})
    return load_chart().render(merged, name=RELEASE, namespace=NAMESPACE)


def documents(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a render."""
    docs = []
    for path, text in rendered.items():
        if path.endswith((".yaml", ".yml")):  # not NOTES.txt
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(owner document, pod spec) of every workload the chart renders directly (the helm test
    hook's bare Pod included)."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield doc, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "Pod":
            yield doc, doc["spec"]


def pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    """Labels of the pods a workload document runs."""
    return doc["metadata"]["labels"] if doc["kind"] == "Pod" else doc["spec"]["template"]["metadata"]["labels"]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(owner document, container) of every container the chart declares, KServe's included."""
    for doc, spec in pod_specs(docs):
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            yield doc, c
    for doc in of_kind(docs, "ServingRuntime"):
        for c in doc["spec"]["containers"]:
            yield doc, c
    for doc in of_kind(docs, "InferenceService"):
        yield doc, doc["spec"]["predictor"]["model"]


BUILTIN_GROUPS = {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1"}


def is_builtin(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"] in BUILTIN_GROUPS


def strict_crd_schema(crd_path: Path) -> dict[str, Any]:
    """The stored version's openAPIV3Schema of a CRD, with ``additionalProperties: false``
    added to every object that lists its properties (so misspelt fields fail)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRD is 2 MB: 1 s in C, 6 s in Python
    crd = yaml.load(crd_path.read_text(), Loader=loader)
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))

    def tighten(node: Any) -> Any:
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node
                    and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                tighten(value)
        elif isinstance(node, list):
            for value in node:
                tighten(value)
        return node

    schema = tighten(version["schema"]["openAPIV3Schema"])
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return schema


# -- Dockerfiles ----------------------------------------------------------------------------------
@dataclass
class Instruction:
    """One Dockerfile instruction (continuation lines joined)."""

    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON-array (exec) form of the arguments, or None for the shell form."""
        import json

        text = self.args
        for flag in re.findall(r"^(--[a-z-]+=\S+\s+)", text):
            text = text[len(flag):]
        text = text.strip()
        if not text.startswith("["):
            return None
        return json.loads(text)


@dataclass
class Dockerfile:
    path: Path
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def global_args(self) -> dict[str, str]:
        """``ARG`` defaults declared before the first ``FROM`` (what ``FROM`` lines may use)."""
        out = {}
        for ins in self.instructions:
            if ins.keyword == "FROM":
                break
            if ins.keyword == "ARG":
                name, _, default = ins.args.partition("=")
                out[name.strip()] = default.strip()
        return out

    def stages(self) -> dict[str, list[Instruction]]:
        """Named stage -> its instructions, its ``FROM`` first; the last (unnamed) stage as ``""``."""
        out: dict[str, list[Instruction]] = {}
        current: list[Instruction] = []
        for ins in self.instructions:
            if ins.keyword == "FROM":
                words = ins.args.split()
                name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
                assert name not in out, f"{self.path}:{ins.line}: stage {name!r} twice"
                current = out.setdefault(name, [])
            if out:
                current.append(ins)
        return out

    def image(self, build_args: dict[str, str]) -> list[Instruction]:
        """What the image built with ``build_args`` is made of, as Docker resolves it: the last
        stage and, before it, the stages it is ``FROM`` (outermost first), down to an image
        from a registry. Its first instruction is that ``FROM``.
        """
        args = {**self.global_args(), **build_args}
        stages = self.stages()
        chain: list[list[Instruction]] = []
        stage = stages[""]
        while True:
            chain.insert(0, stage)
            base = substitute(stage[0].args.split()[0], args)
            if base not in stages:
                return [i for s in chain for i in s]
            assert len(chain) < len(stages), "FROM loop"
            stage = stages[base]


def substitute(text: str, args: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` replaced by their values ("" when unset), as Docker does."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), text)


def last(instructions: list[Instruction], keyword: str) -> Instruction | None:
    found = [i for i in instructions if i.keyword == keyword]
    return found[-1] if found else None


def exposed(instructions: list[Instruction]) -> set[str]:
    """Ports an image exposes (``EXPOSE`` is cumulative over its stages)."""
    return {p for i in instructions if i.keyword == "EXPOSE" for p in i.args.split()}


def env(instructions: list[Instruction], args: dict[str, str]) -> dict[str, str]:
    """The image's ``ENV`` (``key=value`` forms), later values winning, ``ARG`` values substituted."""
    out: dict[str, str] = {}
    values = dict(args)
    for ins in instructions:
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            values.setdefault(name.strip(), substitute(default.strip(), values))
        if ins.keyword == "ENV":
            for word in shlex.split(ins.args):
                key, _, value = word.partition("=")
                out[key] = values[key] = substitute(value, values)
    return out


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    """Parse ``path``: comments dropped, backslash continuations joined."""
    result = Dockerfile(path)
    buffer, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker too
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, args = buffer.partition(" ")
        result.instructions.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = ""
    return result


def images() -> list[str]:
    """Every image the Dockerfile builds (the value of its SERVICE build argument): its
    ``svc-<image>`` stages, which its last stage is ``FROM``."""
    df = parse_dockerfile()
    assert df.stages()[""][0].args == "svc-${SERVICE}", "the last stage is the svc-<SERVICE> one"
    return sorted(name.removeprefix("svc-") for name in df.stages() if name.startswith("svc-"))


# -- pyproject.toml extras (what each image installs) --------------------------------------------
def pyproject_extras() -> dict[str, list[str]]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def extra_requirements(extras: str) -> list[str]:
    """The requirements ``pip install ".[<extras>]"`` asks for (comma-separated extras), with the
    project's references to its own extras (``urbanfabric[a,b]``) followed."""
    from packaging.requirements import Requirement

    declared = pyproject_extras()
    out: list[str] = []
    todo, seen = [e.strip() for e in extras.split(",")], set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        assert extra in declared, f"pyproject.toml has no extra {extra!r}"
        for text in declared[extra]:
            req = Requirement(text)
            if req.name == "urbanfabric":
                assert not req.specifier and req.marker is None, text
                todo.extend(req.extras)
            elif text not in out:
                out.append(text)
    return out


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) for each line of .dockerignore, in order."""
    out = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.strip("/")
        out.append((negate, _glob_regex(pattern)))
    return out


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern rules: Go filepath.Match per segment, ``**`` for any depth."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(f"^{regex}$")


def dockerignored(relpath: str) -> bool:
    """Whether Docker leaves ``relpath`` (relative to the repository root) out of the context.

    As Docker does: the last pattern that matches the path or one of its parent directories
    decides.
    """
    parts = relpath.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in dockerignore_patterns():
        if any(regex.match(c) for c in candidates):
            excluded = not negate
    return excluded


# -- Python code ------------------------------------------------------------------------------------
def module_file(module: str) -> Path | None:
    """Source file of ``module`` under the repository's Python paths (``__main__`` for -m packages)."""
    parts = module.split(".")
    for base in CODE_PATHS:
        path = base.joinpath(*parts)
        if path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
        if (path / "__init__.py").is_file():
            return path / "__init__.py"
    return None


def runnable_file(module: str) -> Path | None:
    """The file ``python -m module`` executes (a module, or a package's ``__main__``)."""
    parts = module.split(".")
    for base in CODE_PATHS:
        path = base.joinpath(*parts)
        if path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
        if (path / "__main__.py").is_file():
            return path / "__main__.py"
    return None


def _import_names(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    return [module] + [f"{module}.{a.name}" for a in node.names]


def import_closure(entries: list[str], skip: tuple[str, ...] = ()) -> tuple[dict[str, set[str]], set[Path]]:
    """Third-party imports of ``entries`` and of the project modules they reach.

    Follows every project import (module level and inside functions) except into the
    packages named in ``skip``.

    Returns:
        ``({top-level third-party module: project modules importing it}, project files)``.
    """
    files: set[Path] = set()
    seen: set[str] = set()
    external: dict[str, set[str]] = {}
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in seen or any(module == p or module.startswith(p + ".") for p in skip):
            continue
        seen.add(module)
        path = module_file(module)
        if path is None:
            continue
        files.add(path)
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = _import_names(node, package)
            for name in names:
                top = name.split(".")[0]
                if top in LOCAL_PACKAGES:
                    if module_file(name):
                        todo.append(name)
                    else:
                        # ``from a.b import c``: c may be a name in a.b; a.b itself must exist.
                        assert name != names[0] and isinstance(node, ast.ImportFrom), (
                            f"{path}:{node.lineno}: imports {name}, which is no module of the project")
                elif top and top not in sys.stdlib_module_names:
                    external.setdefault(top, set()).add(module)
    return external, files


def argparse_flags(path: Path) -> set[str]:
    """Option strings of every ``add_argument`` call in ``path``."""
    flags: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            flags.update(a.value for a in node.args
                         if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("-"))
    return flags


@cache
def entrypoint_flags(module: str) -> frozenset[str]:
    """Command-line flags ``python -m module`` accepts.

    Services parse through ``main_args`` of the project's gRPC service helper (directly or via
    ``run_service``): its flags count too, from whichever project module it imports that
    defines ``main_args`` (found by following the imports, wherever that module lives). Others
    define their own parser in the file ``python -m`` runs.
    """
    path = runnable_file(module)
    assert path is not None, module
    flags = argparse_flags(path)
    if "worker_main(" in path.read_text():
        # Kafka workers parse through urbanfabric.runtime.bus.worker_main.
        flags |= argparse_flags(ROOT / "services/lib/urbanfabric/runtime/bus.py")
    if "main_args(" in path.read_text() or "run_service(" in path.read_text():
        _, files = import_closure([module])
        helpers = [f for f in files if re.search(r"^def main_args\(", f.read_text(), re.MULTILINE)]
        assert len(helpers) == 1, f"{module}: main_args defined in {helpers}"
        flags |= argparse_flags(helpers[0])
    return frozenset(flags)


def literal_assign(path: Path, name: str) -> Any:
    """The literal value assigned to module-level ``name`` in ``path``."""
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name) and t.id == name and node.value is not None:
                return ast.literal_eval(node.value)
    raise KeyError(f"{name} not assigned in {path}")


def python_sources() -> Iterator[Path]:
    """The project's Python source files (what runs in the images)."""
    for base in ("services", "flows", "models"):
        for path in sorted((ROOT / base).rglob("*.py")):
            generated = path.is_relative_to(ROOT / "services" / "lib" / "urbanfabric" / "v1")
            if "__pycache__" in path.parts or generated:
                continue
            yield path


def environ_reads() -> set[str]:
    """Environment variable names the project's code reads literally."""
    names: set[str] = set()
    pattern = re.compile(r"""["']([A-Z][A-Z0-9_]{2,})["']""")
    for path in python_sources():
        text = path.read_text()
        if "environ" not in text and "getenv" not in text and "_env" not in text:
            continue
        names.update(pattern.findall(text))
    return names


def stub_callers() -> dict[str, set[str]]:
    """Service -> modules that build a gRPC stub for it (``stub(settings, "<service>")``)."""
    services = set(literal_assign(module_file("urbanfabric.settings"), "SERVICE_NAMES"))
    out: dict[str, set[str]] = {}
    for path in python_sources():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            calls_stub = any(isinstance(n, ast.Call) and getattr(n.func, "id", "") == "stub" for n in ast.walk(fn))
            if not calls_stub:
                continue
            for n in ast.walk(fn):
                if isinstance(n, ast.Constant) and n.value in services:
                    out.setdefault(n.value, set()).add(path.relative_to(ROOT).as_posix())
    return out


def glob_match(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
