"""Material intensity derived from a building register's own records (keys mapped onto the
RASMI function/structure classes), and cross-tables of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from urbanfabric.errors import InvalidInput
from urbanfabric.stock.vocabulary import STRUCTURES
from urbanfabric.stock.structure import FACADE_TO_STRUCTURE, ROOF_TO_STRUCTURE


@dataclass(frozen=True)
class KeyMapping:
    """What the pipeline knows about a building → the MI key (function, structure, region).

    * **structure** from the facade material where it maps (walls carry the load in masonry
      and timber buildings), else from the roof material (:data:`ROOF_TO_STRUCTURE`: a weak
      prior), else unknown → ``StockOptions.default_structure`` with the fallback recorded.
    * **function** from size until a function classifier exists: at most
      ``single_family_max_floors`` floors and less than ``single_family_max_area_m2`` of
      footprint → RS, else RM. NR is never guessed; give it explicitly.
    * **region**: the RASMI R5_32 code of the job (a parameter; unknown codes fall back to
      the GLOBAL mixture). Height enters through floors (GFA and the RS/RM split).
    * **age** is not a RASMI dimension and is not used: RASMI pools all construction
      periods. The Heeren & Fishman records carry construction periods for a user who wants
      to derive an age-specific table with :func:`derive_intensity`.

    Load a configuration with :meth:`load` (JSON with any of the field names below).
    """

    roof_to_structure: Mapping[str, str] = field(default_factory=lambda: dict(ROOF_TO_STRUCTURE))
    facade_to_structure: Mapping[str, str] = field(
        default_factory=lambda: dict(FACADE_TO_STRUCTURE))
    single_family_max_floors: int = 2
    single_family_max_area_m2: float = 250.0

    def __post_init__(self) -> None:
        for name in ("roof_to_structure", "facade_to_structure"):
            bad = {k: v for k, v in getattr(self, name).items() if v not in STRUCTURES}
            if bad:
                raise InvalidInput(name, f"codes {bad} are not RASMI structures {list(STRUCTURES)}")

    @classmethod
    def load(cls, path: str | Path) -> KeyMapping:
        """Read a JSON configuration (unknown keys are an error)."""
        cfg = json.loads(Path(path).read_text())
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInput("mapping", f"unknown keys {sorted(unknown)}")
        return cls(**cfg)

    def structure(self, roof: Sequence[str | None] | np.ndarray | None = None,
                  facade: Sequence[str | None] | np.ndarray | None = None,
                  n: int | None = None) -> np.ndarray:
        """Structure code per building, ``""`` where neither class maps (unknown)."""
        size = n if n is not None else len(roof if roof is not None else facade or [])
        roof_map = {k.strip().lower(): v for k, v in self.roof_to_structure.items()}
        facade_map = {k.strip().lower(): v for k, v in self.facade_to_structure.items()}
        out = np.full(size, "", dtype=object)
        for classes, table in ((roof, roof_map), (facade, facade_map)):  # facade wins
            if classes is None:
                continue
            codes = pd.Series(np.asarray(classes, dtype=object)).fillna("").astype(str)
            mapped = codes.str.strip().str.lower().map(table).fillna("").to_numpy(dtype=object)
            out = np.where(mapped != "", mapped, out)
        return out

    def function(self, floors: np.ndarray | Sequence[float],
                 footprint_area_m2: np.ndarray | Sequence[float]) -> np.ndarray:
        """RS for small low buildings, else RM (see the class docstring)."""
        fl = np.asarray(floors, dtype=np.float64)
        area = np.asarray(footprint_area_m2, dtype=np.float64)
        small = (fl <= self.single_family_max_floors) & (area < self.single_family_max_area_m2)
        return np.where(small, "RS", "RM").astype(object)


def derive_intensity(
    inventory: pd.DataFrame,
    materials: Sequence[str],
    type_columns: Sequence[str] = ("roof", "wall"),
    area_column: str = "gfa_m2",
) -> pd.DataFrame:
    """Eq. (1): MI[material, type] = Σ mass[material] / Σ floor area, per building type.

    Args:
        inventory: one row per building with the type columns (e.g. roof and wall
            material: the study's types), the floor area and one mass column (kg) per
            material. A NaN mass means "not inventoried": that building drops out of the
            material's sums (numerator and denominator); a 0 is a measured zero.
        materials: the mass columns.
        type_columns: columns whose combination is the building type.
        area_column: gross floor area (m², > 0).

    Returns:
        Long table: the type columns, ``material``, ``mi_kg_per_m2``, ``mass_kg`` and
        ``gfa_m2`` (the two sums), ``buildings`` (count behind the ratio).

    Raises:
        InvalidInput: a missing column or a non-positive / non-finite floor area.
    """
    need = [*type_columns, area_column, *materials]
    missing = [c for c in need if c not in inventory.columns]
    if missing:
        raise InvalidInput("inventory", f"missing columns {missing}")
    area = pd.to_numeric(inventory[area_column], errors="coerce")
    if not (np.isfinite(area) & (area > 0)).all():
        raise InvalidInput(area_column, "floor areas must be finite and > 0")
    rows = []
    for material in materials:
        mass = pd.to_numeric(inventory[material], errors="coerce")
        known = mass.notna()
        part = inventory.loc[known, list(type_columns)].assign(mass_kg=mass[known],
                                                               gfa_m2=area[known])
        g = part.groupby(list(type_columns), dropna=False).agg(
            mass_kg=("mass_kg", "sum"), gfa_m2=("gfa_m2", "sum"),
            buildings=("gfa_m2", "size")).reset_index()
        g["material"] = material
        rows.append(g)
    out = pd.concat(rows, ignore_index=True)
    out["mi_kg_per_m2"] = out.mass_kg / out.gfa_m2
    return out[[*type_columns, "material", "mi_kg_per_m2", "mass_kg", "gfa_m2", "buildings"]]


def type_table(mi: pd.DataFrame, rows: str = "roof", cols: str = "wall",
               material: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 7-style heat-map tables from :func:`derive_intensity` output.

    Returns:
        (a) MI per ``rows`` × ``cols`` type (kg/m²): of ``material``, or the total over
        materials (each material's Eq. 1 ratio, summed); (b) the number of materials with a
        non-zero intensity per combination (the study's panel b).
    """
    part = mi if material is None else mi[mi.material == material]
    total = part.pivot_table(index=rows, columns=cols, values="mi_kg_per_m2", aggfunc="sum")
    used = mi[mi.mi_kg_per_m2 > 0].pivot_table(index=rows, columns=cols, values="material",
                                                aggfunc="nunique")
    return total, used
