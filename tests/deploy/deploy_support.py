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
from functools import lru_cache
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
    """(owner document, pod spec) of every workload the chart renders directly."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield doc, doc["spec"]["template"]["spec"]


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

    def final_stage(self) -> list[Instruction]:
        """Instructions of the last build stage (what the image runs)."""
        starts = [n for n, i in enumerate(self.instructions) if i.keyword == "FROM"]
        return self.instructions[starts[-1]:]

    def pip_requirements(self) -> list[str]:
        """Requirement specifiers of every ``pip install`` in the final image's venv."""
        reqs: list[str] = []
        for ins in self.all("RUN"):
            for command in re.split(r"&&|;", ins.args):
                words = shlex.split(command)
                if len(words) >= 2 and words[0].endswith("pip") and words[1] == "install":
                    if "protoc" in words[0]:
                        continue  # the build-stage venv that only generates gRPC stubs
                    skip = False
                    for word in words[2:]:
                        if skip:
                            skip = False
                            continue
                        if word in ("--index-url", "--extra-index-url", "-i", "-c", "-r"):
                            skip = True
                            continue
                        if word.startswith("-"):
                            continue
                        reqs.append(word)
        return reqs

    def arg_defaults(self) -> dict[str, str]:
        out = {}
        for ins in self.all("ARG"):
            name, _, default = ins.args.partition("=")
            if default:
                out[name.strip()] = default.strip()
        return out


def parse_dockerfile(path: Path) -> Dockerfile:
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


def dockerfiles() -> dict[str, Path]:
    """Image name (as in values.images) -> Dockerfile."""
    found = {p.parent.name: p for p in sorted((ROOT / "services").glob("*/Dockerfile"))}
    found["flows"] = ROOT / "flows" / "Dockerfile"
    return found


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
            for name in _import_names(node, package):
                top = name.split(".")[0]
                if top in LOCAL_PACKAGES:
                    if module_file(name):
                        todo.append(name)
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


def entrypoint_flags(module: str) -> set[str]:
    """Command-line flags ``python -m module`` accepts.

    Services parse through ``urbanfabric.runtime.grpc_service.main_args`` (directly or via
    ``run_service``); others define their own
    parser in the file ``python -m`` runs.
    """
    path = runnable_file(module)
    assert path is not None, module
    flags = argparse_flags(path)
    if "main_args(" in path.read_text() or "run_service(" in path.read_text():
        flags |= argparse_flags(ROOT / "services" / "lib" / "urbanfabric" / "runtime" / "grpc_service.py")
    return flags


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
    services = set(literal_assign(ROOT / "services/lib/urbanfabric/settings.py", "SERVICE_NAMES"))
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
