"""Class → taxonomy code mappings stored in each shipped model's ``config.json``.

The mapping files are the reviewed CSVs next to the pipeline's roof mapping
(``services/lib/urbanfabric/data/``; columns ``model_class, bbr_code, bbr_label_en, note``):

- roof material → BBR ``byg033`` (roof covering): ``bbr_roof_map.csv``;
- façade material → BBR ``byg032`` (outer wall): ``bbr_facade_map.csv``. An empty ``bbr_code``
  means *explicitly unknown* (``null`` in JSON): the class has no honest BBR code (stucco is a
  finish over an unknown wall, ``null`` is no façade at all); consumers must report
  "unknown" rather than pick a neighbouring code;
- roof shape → plain labels (BBR has no roof-shape field): every code ``null``.

A class missing from its mapping file is an error, so a retrained model with new classes
cannot ship codes nobody reviewed.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parents[2] / "services" / "lib" / "urbanfabric" / "data"
MAPPINGS = {
    "roof_material": ("bbr_byg033", DATA_DIR / "bbr_roof_map.csv"),
    "facade": ("bbr_byg032", DATA_DIR / "bbr_facade_map.csv"),
}


def read_mapping(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{class: {"code": int | None, "label": str, "note": str}}`` from a mapping CSV.

    Raises:
        ValueError: missing columns, a non-integer code, or a class listed twice.
    """
    path = Path(path)
    out: dict[str, dict[str, Any]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"model_class", "bbr_code", "bbr_label_en", "note"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise ValueError(f"{path} needs columns {sorted(need)}")
        for row in reader:
            name = row["model_class"].strip()
            raw = (row["bbr_code"] or "").strip()
            if name in out:
                raise ValueError(f"{path}: class {name!r} listed twice")
            try:
                code = int(raw) if raw else None
            except ValueError as exc:
                raise ValueError(f"{path}: class {name!r} has non-integer code {raw!r}") from exc
            out[name] = {"code": code, "label": row["bbr_label_en"].strip(), "note": row["note"].strip()}
    return out


def taxonomy_for(task: str, classes: list[str]) -> dict[str, Any]:
    """The ``taxonomy`` block of a model config for a task's classes.

    Raises:
        ValueError: a class is not in the task's mapping file.
    """
    if task == "roof_shape":
        return {"name": "plain", "codes": {c: None for c in classes},
                "note": "roof-shape classes are plain labels; BBR has no roof-shape code"}
    key = "facade" if task.startswith("facade") else "roof_material"
    name, path = MAPPINGS[key]
    mapping = read_mapping(path)
    missing = [c for c in classes if c not in mapping]
    if missing:
        raise ValueError(f"classes {missing} are not in {path}")
    return {
        "name": name,
        "file": str(path.relative_to(DATA_DIR.parents[3])),
        "codes": {c: mapping[c]["code"] for c in classes},
        "labels": {c: mapping[c]["label"] for c in classes},
        "unknown": [c for c in classes if mapping[c]["code"] is None],
    }
