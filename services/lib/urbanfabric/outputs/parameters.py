"""A job's parameters as a table a person can read (the report's "Parameters" section).

``job.json`` keeps the spec as JSON (``JobSpec.model_dump(mode="json")``): nested option groups,
``None`` for "the default", empty strings and lists for "none". The report flattens the groups
under human labels (``imagery_options.max_cloud_cover`` → *Imagery › Max cloud cover*), joins
lists and mappings, and says what an empty value means where the spec's own field description
says it (``year: None`` → ``default (any date, most recent first)``); otherwise an empty value
is shown as ``—``. The spec's descriptions are the one source, so a new field needs no entry here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Words that are not written in lower case, and unit suffixes written as "(unit)".
WORDS = {"tta": "TTA", "id": "ID", "gsd": "GSD", "ood": "OOD", "uri": "URI", "osm": "OSM", "stac": "STAC"}
UNITS = {"s": "s", "px": "px", "m": "m", "m2": "m²", "km2": "km²", "kg": "kg", "pct": "%"}
#: Group labels where the field name alone reads badly.
GROUPS = {"imagery_options": "Imagery", "models": "Model versions", "landcover": "Land cover",
          "outputs": "Outputs", "segmentation": "Segmentation"}
#: Label of the top-level scalars.
JOB_GROUP = "Job"
EMPTY = "—"
#: What an empty value means, as the spec's descriptions write it: "(empty = …)", "('' = …)".
_EMPTY_MEANS = re.compile(r"\((?:empty|''|none|None)\s*=\s*([^)]*)\)")
_ZERO_MEANS = re.compile(r"\(0\s*=\s*([^)]*)\)")


@dataclass(frozen=True)
class ParameterRow:
    """One line of the table: its group, its label, the value as text and the spec's key."""

    group: str
    label: str
    value: str
    key: str


def label(name: str) -> str:
    """``tile_timeout_s`` → ``Tile timeout (s)``; ``tta`` → ``TTA``."""
    words = name.split("_")
    unit = UNITS.get(words[-1]) if len(words) > 1 else None
    if unit:
        words = words[:-1]
    text = " ".join(WORDS.get(w, w) for w in words)
    text = text[:1].upper() + text[1:]
    return f"{text} ({unit})" if unit else text


def group_label(name: str) -> str:
    return GROUPS.get(name, label(name))


def _number(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.6g}"


def _empty(description: str) -> str:
    """``default (…)`` when the description says what an empty value means, else ``—``."""
    m = _EMPTY_MEANS.search(description)
    return f"default ({m.group(1).strip()})" if m else EMPTY


def format_value(value: Any, description: str = "") -> str:
    """A parameter value as text: yes/no, numbers with separators, lists and mappings joined,
    empty values explained by ``description`` (the spec field's) where it can."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return _empty(description)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        text = _number(float(value))
        # "(0 = …)" in a description: zero stands for a default chosen elsewhere.
        zero = _ZERO_MEANS.search(description) if value == 0 else None
        return f"default ({zero.group(1).strip()})" if zero else text
    if isinstance(value, Mapping):
        if not value:
            return _empty(description)
        return ", ".join(f"{k} = {format_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if not value:
            return _empty(description)
        return ", ".join(format_value(v) for v in value)
    return str(value)


def _area(value: Any) -> str:
    """The area as west / south / east / north in degrees (the flow stores the bbox list)."""
    if isinstance(value, Mapping):
        value = [value.get(k) for k in ("west", "south", "east", "north")]
    if isinstance(value, (list, tuple)) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value):
        w, s, e, n = (float(v) for v in value)
        return f"W {w:.5f}°, S {s:.5f}°, E {e:.5f}°, N {n:.5f}° (lon/lat, EPSG:4326)"
    return format_value(value)


def parameter_rows(parameters: Mapping[str, Any], descriptions: Mapping[str, str] | None = None) -> list[ParameterRow]:
    """The table's rows: top-level values under *Job* first, then one group per option group.

    Args:
        parameters: the job's parameters (``job.json`` → ``parameters``).
        descriptions: dotted key → the spec field's description (:func:`spec_descriptions`).
    """
    notes = descriptions or {}
    top: list[ParameterRow] = []
    grouped: list[ParameterRow] = []
    for key, value in parameters.items():
        if isinstance(value, Mapping) and key != "area":
            for sub, v in value.items():
                dotted = f"{key}.{sub}"
                grouped.append(ParameterRow(group_label(key), label(sub), format_value(v, notes.get(dotted, "")),
                                            dotted))
            continue
        text = _area(value) if key == "area" else format_value(value, notes.get(key, ""))
        top.append(ParameterRow(JOB_GROUP, label(key), text, key))
    return top + grouped


def spec_descriptions(model: Any = None, prefix: str = "") -> dict[str, str]:
    """Dotted field name → description of every field of the job spec (pydantic), groups included."""
    if model is None:
        from urbanfabric.job_spec import JobSpec

        model = JobSpec
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        out[key] = info.description or ""
        kind = info.annotation
        if isinstance(kind, type) and hasattr(kind, "model_fields"):
            out.update(spec_descriptions(kind, key + "."))
    return out
