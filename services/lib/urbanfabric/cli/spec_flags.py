"""Command-line flags built from the job spec, so the CLI never lists an option by hand.

Every leaf field of :class:`urbanfabric.job_spec.JobSpec` becomes ``--<prefix><name>`` (``_`` as
``-``); a nested group's prefix is its field name unless the spec says otherwise
(``json_schema_extra={"flag_prefix": ""}``), and a field may keep older spellings as aliases
(``json_schema_extra={"flags": ["--tta"]}``). Flags take text; the spec's own validators parse
it (``--bbox 1,2,3,4``, ``--bands red=B04,…``, ``--ensemble a:v1,b:v2``), so a value means the
same on the command line, in the Prefect form and in a JSON file. Only the flags given reach the
spec: its defaults hold for the rest.
"""

from __future__ import annotations

import argparse
from enum import Enum
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from urbanfabric.errors import from_validation
from urbanfabric.job_spec import JobSpec


def _extra(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model of a nested group (``X`` or ``X | None``), else None."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _choices(annotation: Any) -> list[str] | None:
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [m.value for m in annotation]
    if get_origin(annotation) is Literal:
        return [str(a) for a in get_args(annotation)]
    return None


def leaf_fields(model: type[BaseModel] = JobSpec, path: tuple[str, ...] = (),
                prefix: str = "") -> list[tuple[tuple[str, ...], str, FieldInfo]]:
    """``(path in the spec, flag, field)`` for every leaf field, groups flattened."""
    out = []
    for name, info in model.model_fields.items():
        extra = _extra(info)
        sub = _submodel(info.annotation)
        if sub is not None and name != "area":  # the area is one flag: west,south,east,north
            sub_prefix = extra.get("flag_prefix", name.replace("_", "-") + "-")
            out.extend(leaf_fields(sub, (*path, name), prefix + sub_prefix))
        else:
            out.append(((*path, name), f"--{prefix}{name.replace('_', '-')}", info))
    return out


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per spec field (plus its aliases), grouped as the spec groups them."""
    groups: dict[str, Any] = {}
    for path, flag, info in leaf_fields():
        group_name = path[0] if len(path) > 1 else "job"
        group = groups.get(group_name) or groups.setdefault(group_name, parser.add_argument_group(group_name))
        flags = [flag, *(f for f in _extra(info).get("flags", []) if f != flag)]
        default = info.get_default(call_default_factory=True)
        shown = default.value if isinstance(default, Enum) else default
        help_text = (info.description or "").replace("%", "%%")
        choices = _choices(info.annotation)
        if choices:
            help_text += f"; one of {', '.join(choices)}"
        if shown not in (None, "", [], {}):
            help_text += f" (default: {shown})"
        group.add_argument(*flags, dest=".".join(path), default=argparse.SUPPRESS, metavar="VALUE",
                           choices=choices, help=help_text)


def given_fields(args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
    """The spec fields of the flags given (and ``overrides``), nested as the spec nests them."""
    data: dict[str, Any] = {}
    for key, value in {**vars(args), **overrides}.items():
        if key not in _PATHS:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return data


def spec_from_args(args: argparse.Namespace, **overrides: Any) -> JobSpec:
    """The :class:`JobSpec` of the flags given (and ``overrides``), validated.

    Raises:
        InvalidInput: a flag's value the spec rejects, naming the field (``segmentation.tta``).
    """
    data = given_fields(args, **overrides)
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


_PATHS = {".".join(path) for path, _, _ in leaf_fields()}
