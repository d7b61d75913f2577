"""Material stock and embodied carbon from floor area and material intensity.

Eq. 1 of the materials study (``urban-fabric-decoded-materials.txt``, section 2.4) defines a
material intensity as the mass of a material per unit floor area for a building type::

    MI[material, type] = Σ mass[material, type] / Σ floor_area[type]          (kg / m² GFA)

so a building's stock is ``mass[material] = GFA × MI[material, type]``. The coefficients come
from RASMI (Fishman et al. 2024, version 20230905): for every function × structure × region
× material the 5th, 50th and 95th percentile of reported intensities. ``estimate_stock``
multiplies floor area by the p50 (central estimate) and by p05 / p95 (band). Embodied carbon
(A1–A3, cradle to gate) is ``Σ mass × factor`` with one kgCO2e/kg factor per material
(``data/carbon_factors.csv``, selection documented in ``models/material_intensity/README.md``).

Uncertainty: per material the band is RASMI's p05–p95 range times GFA. The totals' bands
(``mass_total_kg_p05`` …, ``embodied_co2e_kg_p05`` …) add the materials' p05 (p95) masses,
i.e. they assume all materials sit at the same percentile at once (perfectly correlated). That
is the widest band consistent with the per-material ranges — conservative; independent
materials would give a narrower one. Floor-area (height) uncertainty and carbon-factor spread
are not propagated here. The central totals use p50, so they are sums of medians, not medians
of sums.

Codes (RASMI):
    function: ``RS`` residential single-family, ``RM`` residential multi-family,
        ``NR`` non-residential. ``RES`` (residential, type unknown) is accepted when
        ``floors`` is given: ≤ ``single_family_max_floors`` floors → RS, else RM.
    structure: ``C`` reinforced concrete, ``M`` masonry, ``S`` steel frame, ``T`` timber.
    region: the 32 RASMI regions (R5_32 codes, e.g. ``ASIA_CHN``, ``OECD_EU15``,
        ``LAM_LAM-M``); ``MaterialIntensityTable.regions`` lists them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from urbanfabric.errors import InvalidInput

FUNCTIONS: dict[str, str] = {
    "RS": "residential single-family",
    "RM": "residential multi-family",
    "NR": "non-residential",
}
STRUCTURES: dict[str, str] = {
    "C": "reinforced concrete",
    "M": "masonry",
    "S": "steel frame",
    "T": "timber",
}
#: Residential of unknown type: split by floors (see ``estimate_stock``).
RESIDENTIAL_UNKNOWN = "RES"
#: Percentile columns of the shipped table, in output order.
QUANTILES: tuple[str, ...] = ("p05", "p50", "p95")

#: Crude prior from roof material (``roofs/caribbean-material`` classes) to RASMI structure.
#: A roof covering says little about the load-bearing structure below it; these defaults
#: follow the typical construction of the settlements the roof classes come from (Caribbean /
#: Latin-American informal and self-built housing) and should be replaced with local knowledge.
ROOF_TO_STRUCTURE: dict[str, str] = {
    # flat cast slab or cement sheets: reinforced-concrete frame with infill
    "concrete_cement": "C",
    # intact corrugated sheet on concrete-block walls: the common self-built house
    "healthy_metal": "M",
    # rusted or patched sheet: light, often timber-framed, informal dwelling
    "irregular_metal": "T",
    # unfinished roof: building under construction, block masonry most likely
    "incomplete": "M",
}
#: Structure used for classes not in the mapping (including ``other``).
ROOF_FALLBACK_STRUCTURE = "M"


def _data_path(name: str) -> Path:
    return Path(str(resources.files("urbanfabric") / "data" / name))


class MaterialIntensityTable:
    """RASMI intensities (kg/m² GFA) and per-material carbon factors, indexed for lookup.

    Args:
        table: rows of function, structure, region, material, p05, p50, p95.
        carbon: rows of material, kgco2e_per_kg (every material of ``table`` present).

    Raises:
        InvalidInput: ``field="table"`` / ``"carbon"`` when a required column, combination or
            factor is missing.
    """

    def __init__(self, table: pd.DataFrame, carbon: pd.DataFrame) -> None:
        need = {"function", "structure", "region", "material", *QUANTILES}
        if not need <= set(table.columns):
            raise InvalidInput("table", f"missing columns {sorted(need - set(table.columns))}")
        if not {"material", "kgco2e_per_kg"} <= set(carbon.columns):
            raise InvalidInput("carbon", "needs columns material, kgco2e_per_kg")
        self.functions: tuple[str, ...] = tuple(sorted(table.function.unique()))
        self.structures: tuple[str, ...] = tuple(sorted(table.structure.unique()))
        self.regions: tuple[str, ...] = tuple(sorted(table.region.unique()))
        self.materials: tuple[str, ...] = tuple(sorted(table.material.unique()))
        dims = (self.functions, self.structures, self.regions, self.materials)
        shape = tuple(len(d) for d in dims)
        # Dense array [function, structure, region, material, quantile]: lookups for a whole
        # batch of buildings become one fancy-index instead of a per-building join.
        idx = [pd.Index(d).get_indexer(table[c]) for d, c in
               zip(dims, ("function", "structure", "region", "material"))]
        cube = np.full((*shape, len(QUANTILES)), np.nan)
        cube[tuple(idx)] = table[list(QUANTILES)].to_numpy(dtype=np.float64)
        if np.isnan(cube).any():
            raise InvalidInput("table", "not every function×structure×region×material is given")
        self._cube = cube
        factors = carbon.set_index("material")["kgco2e_per_kg"]
        missing = [m for m in self.materials if m not in factors.index]
        if missing:
            raise InvalidInput("carbon", f"no carbon factor for {missing}")
        self.carbon_factors: np.ndarray = factors.loc[list(self.materials)].to_numpy(np.float64)

    @classmethod
    def load(
        cls, path: str | Path | None = None, carbon_path: str | Path | None = None
    ) -> MaterialIntensityTable:
        """Load the shipped tables (``urbanfabric/data``) or the given CSV files."""
        table = pd.read_csv(path or _data_path("material_intensity.csv"))
        carbon = pd.read_csv(carbon_path or _data_path("carbon_factors.csv"))
        return cls(table, carbon)

    def intensity(self, function: str, structure: str, region: str) -> pd.DataFrame:
        """p05/p50/p95 intensity (kg/m² GFA) per material for one building type."""
        f = _codes([function], self.functions, "function")[0]
        s = _codes([structure], self.structures, "structure")[0]
        r = _codes([region], self.regions, "region")[0]
        return pd.DataFrame(self._cube[f, s, r], index=list(self.materials), columns=QUANTILES)

    def estimate_stock(
        self,
        gfa_m2: np.ndarray | Sequence[float] | pd.Series,
        function: str | Sequence[str] | np.ndarray,
        structure: str | Sequence[str] | np.ndarray,
        region: str,
        floors: np.ndarray | Sequence[int] | None = None,
        single_family_max_floors: int = 2,
    ) -> pd.DataFrame:
        """Material masses and embodied carbon per building (Eq. 1 × GFA).

        Args:
            gfa_m2: gross floor area per building (m², >= 0). A Series keeps its index.
            function: RASMI function code per building (or one for all): RS, RM, NR; or RES
                together with ``floors``.
            structure: RASMI structure code per building (or one for all): C, M, S, T.
            region: one RASMI region (R5_32 code) for the whole batch.
            floors: floors per building; only used to resolve ``RES``.
            single_family_max_floors: RES with at most this many floors counts as RS.

        Returns:
            DataFrame, one row per building: for each material ``mass_<m>_kg`` (p50 × GFA),
            ``mass_<m>_kg_p05``, ``mass_<m>_kg_p95``; ``mass_total_kg`` (+ ``_p05``, ``_p95``);
            ``embodied_co2e_kg`` (+ ``_p05``, ``_p95``).

        Raises:
            InvalidInput: ``field`` names the bad input: ``gfa_m2`` (negative / non-finite),
                ``function``, ``structure``, ``region`` (unknown code or wrong length),
                ``floors`` (missing or wrong length where RES needs it).
        """
        index = gfa_m2.index if isinstance(gfa_m2, pd.Series) else None
        gfa = np.asarray(gfa_m2, dtype=np.float64).ravel()
        if not np.isfinite(gfa).all() or (gfa < 0).any():
            raise InvalidInput("gfa_m2", "floor areas must be finite and >= 0")
        n = len(gfa)
        func = _broadcast(function, n, "function")
        if (func == RESIDENTIAL_UNKNOWN).any():
            func = self._resolve_residential(func, floors, single_family_max_floors)
        f = _codes(func, self.functions, "function")
        s = _codes(_broadcast(structure, n, "structure"), self.structures, "structure")
        if not isinstance(region, str):
            raise InvalidInput("region", "one region code (str) per call")
        r = _codes([region], self.regions, "region")[0]
        mi = self._cube[f, s, r]  # (n, material, quantile), kg per m²
        mass = gfa[:, None, None] * mi
        cols: dict[str, np.ndarray] = {}
        for j, m in enumerate(self.materials):
            cols[f"mass_{m}_kg"] = mass[:, j, 1]
            cols[f"mass_{m}_kg_p05"] = mass[:, j, 0]
            cols[f"mass_{m}_kg_p95"] = mass[:, j, 2]
        total = mass.sum(axis=1)  # (n, quantile): comonotonic sum, see module docstring
        co2 = np.einsum("nmq,m->nq", mass, self.carbon_factors)
        cols["mass_total_kg"], cols["mass_total_kg_p05"], cols["mass_total_kg_p95"] = (
            total[:, 1], total[:, 0], total[:, 2])
        cols["embodied_co2e_kg"], cols["embodied_co2e_kg_p05"], cols["embodied_co2e_kg_p95"] = (
            co2[:, 1], co2[:, 0], co2[:, 2])
        return pd.DataFrame(cols, index=index)

    @staticmethod
    def _resolve_residential(
        func: np.ndarray, floors: np.ndarray | Sequence[int] | None, max_sf: int
    ) -> np.ndarray:
        """RES → RS (≤ max_sf floors) or RM: RASMI splits housing by type, not use alone."""
        if floors is None:
            raise InvalidInput("floors", "needed to split function 'RES' into RS / RM")
        fl = np.asarray(floors).ravel()
        if len(fl) != len(func):
            raise InvalidInput("floors", f"{len(fl)} values for {len(func)} buildings")
        res = func == RESIDENTIAL_UNKNOWN
        out = func.copy()
        out[res] = np.where(fl[res] <= max_sf, "RS", "RM")
        return out


def _broadcast(values: str | Sequence[str] | np.ndarray, n: int, field: str) -> np.ndarray:
    """One code per building: a scalar string is repeated, a sequence must have n items."""
    if isinstance(values, str):
        return np.full(n, values, dtype=object)
    arr = np.asarray(values, dtype=object).ravel()
    if len(arr) != n:
        raise InvalidInput(field, f"{len(arr)} values for {n} buildings")
    return arr


def _codes(values: Sequence[str] | np.ndarray, known: tuple[str, ...], field: str) -> np.ndarray:
    """Positions of ``values`` in ``known``; InvalidInput naming the field for unknown codes."""
    pos = pd.Index(known).get_indexer(pd.Index(np.asarray(values, dtype=object)))
    if (pos < 0).any():
        bad = sorted({str(v) for v, p in zip(values, pos) if p < 0})
        raise InvalidInput(field, f"unknown code(s) {bad[:5]}; expected one of {list(known)}")
    return pos


@lru_cache(maxsize=1)
def default_table() -> MaterialIntensityTable:
    """The shipped table, loaded once per process."""
    return MaterialIntensityTable.load()


def estimate_stock(
    gfa_m2: np.ndarray | Sequence[float] | pd.Series,
    function: str | Sequence[str] | np.ndarray,
    structure: str | Sequence[str] | np.ndarray,
    region: str,
    floors: np.ndarray | Sequence[int] | None = None,
) -> pd.DataFrame:
    """:meth:`MaterialIntensityTable.estimate_stock` with the shipped table."""
    return default_table().estimate_stock(gfa_m2, function, structure, region, floors=floors)


def gfa(
    footprint_area_m2: np.ndarray | Sequence[float] | pd.Series,
    floors: np.ndarray | Sequence[int] | pd.Series,
) -> np.ndarray:
    """Gross floor area = footprint area × floors (every floor taken as the full footprint).

    Raises:
        InvalidInput: ``footprint_area_m2`` / ``floors`` negative, non-finite, or of
            different lengths.
    """
    a = np.asarray(footprint_area_m2, dtype=np.float64)
    f = np.asarray(floors, dtype=np.float64)
    if not np.isfinite(a).all() or (a < 0).any():
        raise InvalidInput("footprint_area_m2", "areas must be finite and >= 0")
    if not np.isfinite(f).all() or (f < 0).any():
        raise InvalidInput("floors", "floors must be finite and >= 0")
    try:
        np.broadcast_shapes(a.shape, f.shape)
    except ValueError:
        raise InvalidInput("floors", f"shape {f.shape} does not match areas {a.shape}") from None
    return a * f


def structure_from_roof(
    roof_class: str,
    mapping: Mapping[str, str] | None = None,
    fallback: str = ROOF_FALLBACK_STRUCTURE,
) -> str:
    """RASMI structure code from a roof-material class — a crude prior, not an observation.

    The roof covering seen from above only loosely constrains the structural system, so this
    is a default to be overridden wherever structure is known (cadastre, survey, a facade
    model). Defaults (:data:`ROOF_TO_STRUCTURE`): ``concrete_cement`` → C,
    ``healthy_metal`` → M, ``irregular_metal`` → T, ``incomplete`` → M; anything else
    (e.g. ``other``) → ``fallback`` (M).

    Args:
        roof_class: roof-material class name (case-insensitive).
        mapping: replaces the default mapping (class → structure code).
        fallback: structure for classes missing from the mapping.

    Returns:
        A RASMI structure code: C, M, S or T.

    Raises:
        InvalidInput: ``field="structure"`` when the mapping or fallback yields a code that
            is not a RASMI structure.
    """
    table = {k.strip().lower(): v for k, v in (ROOF_TO_STRUCTURE if mapping is None
                                                 else mapping).items()}
    code = table.get(roof_class.strip().lower(), fallback)
    if code not in STRUCTURES:
        raise InvalidInput("structure", f"{code!r} is not one of {list(STRUCTURES)}")
    return code
