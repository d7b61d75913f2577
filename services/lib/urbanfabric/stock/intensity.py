"""Material stock and embodied carbon from floor area and material intensity, with ranges.

Eq. 1 of the materials study (``urban-fabric-decoded-materials.txt``, section 2.4) defines a
material intensity as the mass of a material per unit floor area for a building type::

    MI[material, type] = Σ mass[material, type] / Σ floor_area[type]          (kg / m² GFA)

so a building's stock is ``mass[material] = GFA × MI[material, type]`` with
``GFA = footprint area × floors``. :func:`derive_intensity` applies Eq. 1 to a user's
inventory (type = roof × wall material, the study's Fig. 7); the shipped tables give MI
*ranges* per RASMI key (function × structure × region × material):

* RASMI (Fishman et al. 2024, version 20230905; ``data/material_intensity.csv``), the default:
  percentiles p0, p5, p25, p50, p75, p95, p100 per key.
* Heeren & Fishman records (2019, v1.2; ``data/material_intensity_hf.csv``): the plain
  empirical percentiles of the records, pooled up the region hierarchy where a key has fewer
  than 5 records (``models/material_intensity/build.py``). ``MaterialIntensityTable.load(
  source="heeren-fishman")``.

Embodied carbon (A1–A3, cradle to gate) is ``Σ mass × factor`` with one kgCO2e/kg factor per
material (``data/carbon_factors.csv``, selection in ``models/material_intensity/README.md``).

Two estimators:

:meth:`MaterialIntensityTable.estimate_stock`
    Deterministic: GFA × the MI percentiles (p05 / p50 / p95), totals comonotonic.
:meth:`MaterialIntensityTable.simulate_stock`
    Per building, the point estimate ``mass_<m>_kg = p50 MI × GFA`` (GFA from the building's
    floors) plus Monte-Carlo percentiles (p05, median, p95) over the MI range and the height
    uncertainty, and a ``fallback`` column saying what was assumed where an input was missing
    or odd (:data:`FALLBACKS`). See :class:`StockOptions` for the sampling design.

Codes (RASMI):
    function: ``RS`` residential single-family, ``RM`` residential multi-family,
        ``NR`` non-residential. ``RES`` (residential, type unknown) is accepted when
        ``floors`` is given: ≤ ``single_family_max_floors`` floors → RS, else RM.
    structure: ``C`` reinforced concrete, ``M`` masonry, ``S`` steel frame, ``T`` timber.
    region: the 32 RASMI regions (R5_32 codes, e.g. ``ASIA_CHN``, ``OECD_EU15``,
        ``LAM_LAM-M``); ``MaterialIntensityTable.regions`` lists them. ``GLOBAL`` is the
        equal-weight mixture of all regions (used for regions the table does not know).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from urbanfabric.errors import InvalidInput
from urbanfabric.stock.vocabulary import FUNCTIONS, GLOBAL_REGION, LEVELS, QUANTILES, RESIDENTIAL_UNKNOWN
from urbanfabric.stock.monte_carlo import (StockOptions, inverse_cdf, mixture_quantiles, sample_classes,
                                           three_point_quantiles, unique_rows)
from urbanfabric.stock.structure import STRUCTURE_CLASSES
from urbanfabric.stock.calibration import StockCalibration, shipped_calibration, stretch


#: Table sources shipped in ``urbanfabric/data``.
SOURCES: dict[str, str] = {"rasmi": "material_intensity.csv",
                           "heeren-fishman": "material_intensity_hf.csv"}

#: Tokens of the ``fallback`` column of :meth:`MaterialIntensityTable.simulate_stock`
#: (joined with ``;``, empty when every input was usable).
FALLBACKS: dict[str, str] = {
    "area_invalid": "footprint area missing, non-finite or <= 0: no stock computed (NaN)",
    "area_absurd": "footprint area above StockOptions.max_area_m2: no stock computed (NaN)",
    "height_missing": "no usable height: floors drawn from the regional default-floors "
                      "distribution (data/default_floors.csv), point estimate its median",
    "height_absurd": "height above StockOptions.max_height_m: treated as missing",
    "height_band_missing": "height without a valid p05 <= height <= p95 band: band set to "
                           "height × StockOptions.height_band",
    "floors_without_height": "floors given, no height: floors taken as exact (only the MI "
                             "range is sampled)",
    "structure_default": "structure unknown (no or unmapped roof/facade class): "
                         "StockOptions.default_structure used",
    "region_global": "region not in the table: GLOBAL mixture of all regions (wider range)",
    "mi_pooled": "the table has no record of this function × structure in this region; its "
                 "range is borrowed from other regions (RASMI pooling)",
}
_FLAG_BITS: dict[str, int] = {name: 1 << i for i, name in enumerate(FALLBACKS)}
#: Series of the Monte-Carlo output besides the materials.
_TOTALS = ("mass_total_kg", "embodied_co2e_kg")


def _data_path(name: str) -> Path:
    return Path(str(resources.files("urbanfabric") / "data" / name))


class MaterialIntensityTable:
    """MI ranges (kg/m² GFA) and per-material carbon factors, indexed for lookup.

    Args:
        table: rows of function, structure, region, material, p05, p50, p95; optionally
            p00, p25, p75, p100 (used by the Monte-Carlo) and n_raw (records of the exact
            key; 0 marks a key whose range was pooled from other regions).
        carbon: rows of material, kgco2e_per_kg (every material of ``table`` present).
        default_floors: rows of R5, function, p05, p50, p95 (floors of buildings without a
            height; ``R5 = "*"`` is the all-region row). Defaults to the shipped table.
        calibration: per-material widening of the MI ranges for the Monte-Carlo
            (:class:`urbanfabric.stock.calibration.StockCalibration`); :meth:`load` attaches
            the shipped one of its source. None = raw percentiles.

    Raises:
        InvalidInput: ``field="table"`` / ``"carbon"`` / ``"default_floors"`` when a required
            column, combination or factor is missing or percentiles are not ordered.
    """

    def __init__(self, table: pd.DataFrame, carbon: pd.DataFrame,
                 default_floors: pd.DataFrame | None = None,
                 calibration: StockCalibration | None = None) -> None:
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
        # Dense arrays [function, structure, region, material, …]: lookups for a whole batch
        # of buildings become one fancy-index instead of a per-building join.
        idx = tuple(pd.Index(d).get_indexer(table[c]) for d, c in
                    zip(dims, ("function", "structure", "region", "material")))
        given = [c for c in LEVELS if c in table.columns]
        cube = np.full((*shape, len(given)), np.nan)
        cube[idx] = table[given].to_numpy(dtype=np.float64)
        if np.isnan(cube).any():
            raise InvalidInput("table", "not every function×structure×region×material is given")
        if (np.diff(cube, axis=-1) < 0).any():
            raise InvalidInput("table", "percentiles are not ordered")
        self._cube = cube[..., [given.index(q) for q in QUANTILES]]
        levels = self._quantile_cube(cube, [LEVELS[c] for c in given])
        # The GLOBAL pseudo-region sits after the real ones in the quantile cube.
        self._qcube = np.concatenate([levels, mixture_quantiles(levels)[:, :, None]], axis=2)
        if "n_raw" in table.columns:
            n_raw = np.zeros(shape)
            n_raw[idx] = table["n_raw"].to_numpy(dtype=np.float64)
            # A key is "pooled" when none of its materials had a record of its own.
            self._pooled = n_raw.sum(axis=-1) == 0
        else:
            self._pooled = np.zeros(shape[:3], dtype=bool)
        factors = carbon.set_index("material")["kgco2e_per_kg"]
        missing = [m for m in self.materials if m not in factors.index]
        if missing:
            raise InvalidInput("carbon", f"no carbon factor for {missing}")
        self.carbon_factors: np.ndarray = factors.loc[list(self.materials)].to_numpy(np.float64)
        self._floors = _DefaultFloors(default_floors if default_floors is not None
                                      else pd.read_csv(_data_path("default_floors.csv")))
        self._draw_cache: dict[tuple, np.ndarray] = {}
        self.calibration: StockCalibration | None = calibration

    def with_calibration(self, calibration: StockCalibration | None) -> MaterialIntensityTable:
        """A copy of this table (sharing its arrays) with another calibration (None: raw)."""
        import copy

        other = copy.copy(self)
        other.calibration = calibration
        other._draw_cache = {}
        return other

    @staticmethod
    def _quantile_cube(cube: np.ndarray, levels: list[float]) -> np.ndarray:
        """All seven :data:`LEVELS` from the given ones (same piecewise-linear distribution).

        Missing inner levels are interpolated linearly between their neighbours; missing ends
        (p00, p100) continue the adjacent segment's slope, p00 clipped at 0.
        """
        target = np.array(list(LEVELS.values()))
        lv = np.array(levels)
        out = np.empty((*cube.shape[:-1], len(target)))
        for j, q in enumerate(target):
            if q in lv:
                out[..., j] = cube[..., int(np.flatnonzero(lv == q)[0])]
                continue
            k = int(np.searchsorted(lv, q))
            k = min(max(k, 1), len(lv) - 1)  # segment [k-1, k]; ends extrapolate
            w = (q - lv[k - 1]) / (lv[k] - lv[k - 1])
            out[..., j] = cube[..., k - 1] + w * (cube[..., k] - cube[..., k - 1])
        return np.maximum(out, 0.0)

    @classmethod
    def load(
        cls, path: str | Path | None = None, carbon_path: str | Path | None = None,
        source: str = "rasmi",
    ) -> MaterialIntensityTable:
        """Load a shipped table (``source``: rasmi, heeren-fishman) or the given CSV files."""
        if path is None and source not in SOURCES:
            raise InvalidInput("source", f"unknown source {source!r}; one of {list(SOURCES)}")
        table = pd.read_csv(path or _data_path(SOURCES[source]))
        carbon = pd.read_csv(carbon_path or _data_path("carbon_factors.csv"))
        # A user's own table file is not the one the shipped factors were fitted for.
        return cls(table, carbon, calibration=None if path is not None else shipped_calibration(source))

    def intensity(self, function: str, structure: str, region: str) -> pd.DataFrame:
        """p05/p50/p95 intensity (kg/m² GFA) per material for one building type.

        ``region`` may be :data:`GLOBAL_REGION` (mixture of all regions).
        """
        f = _codes([function], self.functions, "function")[0]
        s = _codes([structure], self.structures, "structure")[0]
        if region == GLOBAL_REGION:
            levels = list(LEVELS)
            q = self._qcube[f, s, -1][:, [levels.index(c) for c in QUANTILES]]
        else:
            q = self._cube[f, s, _codes([region], self.regions, "region")[0]]
        return pd.DataFrame(q, index=list(self.materials), columns=QUANTILES)

    def percentiles(self, function: str, structure: str, region: str) -> pd.DataFrame:
        """All seven percentiles (p00 … p100, kg/m² GFA) per material for one building type."""
        f = _codes([function], self.functions, "function")[0]
        s = _codes([structure], self.structures, "structure")[0]
        r = len(self.regions) if region == GLOBAL_REGION else \
            _codes([region], self.regions, "region")[0]
        return pd.DataFrame(self._qcube[f, s, r], index=list(self.materials),
                            columns=list(LEVELS))

    def estimate_stock(
        self,
        gfa_m2: np.ndarray | Sequence[float] | pd.Series,
        function: str | Sequence[str] | np.ndarray,
        structure: str | Sequence[str] | np.ndarray,
        region: str,
        floors: np.ndarray | Sequence[int] | None = None,
        single_family_max_floors: int = 2,
    ) -> pd.DataFrame:
        """Deterministic material masses and embodied carbon per building (Eq. 1 × GFA).

        The band is the MI percentiles times GFA: no height uncertainty, and the totals add
        the materials' p05 (p95) masses, i.e. assume all materials sit at the same percentile
        at once (perfectly correlated; the widest band consistent with the per-material
        ranges). :meth:`simulate_stock` samples instead.

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
        total = mass.sum(axis=1)  # (n, quantile): comonotonic sum
        co2 = np.einsum("nmq,m->nq", mass, self.carbon_factors)
        cols["mass_total_kg"], cols["mass_total_kg_p05"], cols["mass_total_kg_p95"] = (
            total[:, 1], total[:, 0], total[:, 2])
        cols["embodied_co2e_kg"], cols["embodied_co2e_kg_p05"], cols["embodied_co2e_kg_p95"] = (
            co2[:, 1], co2[:, 0], co2[:, 2])
        return pd.DataFrame(cols, index=index)

    # ------------------------------------------------------------------ Monte-Carlo

    def draws(self, region_index: int, options: StockOptions) -> np.ndarray:
        """MI draws per type: array (function × structure, materials + 2, draws).

        Series: the materials (kg/m²), then their sum and the CO2e (kgCO2e/m²) of the same
        draw. ``region_index`` indexes :attr:`regions`; ``len(regions)`` is GLOBAL. With
        ``options.calibrated`` and a :attr:`calibration`, each material's draws are stretched
        around the type's median (:func:`urbanfabric.stock.calibration.stretch`). Cached.
        """
        calibrated = options.calibrated and self.calibration is not None
        key = (region_index, options.draws, options.seed, options.material_correlation, calibrated)
        cached = self._draw_cache.get(key)
        if cached is not None:
            return cached
        q = self._qcube[:, :, region_index]  # (F, S, M, 7)
        q = q.reshape(-1, *q.shape[2:])  # (T, M, 7)
        u = options.mi_levels(len(self.materials))  # (M, D)
        mi = inverse_cdf(q, np.array(list(LEVELS.values())), u)  # (T, M, D)
        if calibrated and self.calibration is not None:  # widen around each type's median
            p50 = q[:, :, list(LEVELS).index("p50")][:, :, None]
            mi = stretch(mi, p50, self.calibration.factor_of(self.materials)[None, :, None])
        total = mi.sum(axis=1, keepdims=True)
        co2 = np.einsum("tmd,m->td", mi, self.carbon_factors)[:, None, :]
        out = np.concatenate([mi, total, co2], axis=1)
        out.setflags(write=False)
        if len(self._draw_cache) > 64:
            self._draw_cache.clear()
        self._draw_cache[key] = out
        return out

    def simulate_stock(
        self,
        footprint_area_m2: np.ndarray | Sequence[float] | pd.Series,
        function: str | Sequence[str] | np.ndarray,
        structure: str | Sequence[str | None] | np.ndarray,
        region: str,
        *,
        floors: np.ndarray | Sequence[float] | None = None,
        height_m: np.ndarray | Sequence[float] | None = None,
        height_p05: np.ndarray | Sequence[float] | None = None,
        height_p95: np.ndarray | Sequence[float] | None = None,
        options: StockOptions | None = None,
        structure_p: np.ndarray | None = None,
        residential_p: np.ndarray | Sequence[float] | None = None,
    ) -> pd.DataFrame:
        """Per-building stock: point estimate, Monte-Carlo ranges and the fallback used.

        Vectorised over buildings (no per-building Python). The Monte-Carlo result of a
        building is a function of its (type, floors-per-draw pattern) only, so distinct
        patterns are simulated once and shared — the same numbers a per-building loop over
        the same draws gives (``bench/bench_intensity.py`` checks this), at a fraction of the
        cost when many buildings share a pattern.

        Args:
            footprint_area_m2: footprint area per building (m²). A Series keeps its index.
            function: RASMI function code per building (or one for all); RES is split by
                floors.
            structure: RASMI structure code per building (or one for all); ``""`` / None =
                unknown → ``options.default_structure`` (flagged ``structure_default``).
            region: RASMI region code for the batch; unknown codes use the GLOBAL mixture
                (flagged ``region_global``).
            floors: floors per building (> 0), e.g. from the attributes stage; missing or
                <= 0 → derived from height, else the regional default.
            height_m, height_p05, height_p95: height and its 5–95 % band (m); missing,
                non-finite or <= 0 means unknown.
            options: sampling design and fallback rules.
            structure_p: (n, 4) probabilities of :data:`STRUCTURE_CLASSES` (C, M, S, T) per
                building; rows with NaN (or a given ``structure``) keep their one structure.
                Each Monte-Carlo draw then takes the structure at that draw's shared level
                (:meth:`StockOptions.category_levels`), so the ranges carry the structure's
                uncertainty; the point estimate uses ``structure`` (the caller's argmax).
            residential_p: probability per building that it is residential (NaN: use
                ``function`` only). Each draw is residential (RS/RM as for ``function``'s
                floors) or non-residential (NR) by it.

        Returns:
            DataFrame, one row per building: ``function``, ``structure`` (codes used),
            ``floors_used``, ``gfa_m2``; per material ``mass_<m>_kg`` (p50 MI × GFA, the
            point estimate), ``mass_<m>_kg_p05``, ``mass_<m>_kg_mc_p50``,
            ``mass_<m>_kg_p95`` (Monte-Carlo); the same four for ``mass_total_kg`` and
            ``embodied_co2e_kg``; ``fallback`` (``;``-joined :data:`FALLBACKS` tokens).
            Rows with an invalid area have NaN masses.

        Raises:
            InvalidInput: wrong lengths, unknown function / structure codes, or a non-string
                region.
        """
        opt = options or StockOptions()
        index = footprint_area_m2.index if isinstance(footprint_area_m2, pd.Series) else None
        area = np.asarray(footprint_area_m2, dtype=np.float64).ravel()
        n = len(area)
        flags = np.zeros(n, dtype=np.int64)

        bad_area = ~(area > 0) | ~np.isfinite(area)
        absurd_area = ~bad_area & (area > opt.max_area_m2)
        flags[bad_area] |= _FLAG_BITS["area_invalid"]
        flags[absurd_area] |= _FLAG_BITS["area_absurd"]
        area = np.where(bad_area | absurd_area, np.nan, area)

        h = _optional(height_m, n, "height_m")
        lo = _optional(height_p05, n, "height_p05")
        hi = _optional(height_p95, n, "height_p95")
        fl = _optional(floors, n, "floors")
        absurd_h = h > opt.max_height_m  # NaN compares False
        flags[absurd_h] |= _FLAG_BITS["height_absurd"]
        has_h = (h > 0) & ~absurd_h & np.isfinite(h)
        has_fl = (fl > 0) & np.isfinite(fl)
        band_ok = has_h & (lo > 0) & (lo <= h) & (h <= hi) & np.isfinite(hi)
        flags[has_h & ~band_ok] |= _FLAG_BITS["height_band_missing"]
        flags[~has_h & has_fl] |= _FLAG_BITS["floors_without_height"]
        flags[~has_h & ~has_fl] |= _FLAG_BITS["height_missing"]
        use_default = ~has_h & ~has_fl

        r, region_flag = self._region(region)
        if region_flag:
            flags |= _FLAG_BITS["region_global"]
        storey = opt.storey_height_m
        func_raw = _broadcast(function, n, "function")
        func_codes = (*self.functions, RESIDENTIAL_UNKNOWN)
        f = _codes(func_raw, func_codes, "function")
        default = self._floors.lookup(region, f, func_codes)  # (n, 3): floors p05, p50, p95
        # Point-estimate floors: given, else from height, else the regional default median.
        point_floors = np.where(
            has_fl, np.round(fl),
            np.where(has_h, np.maximum(np.floor(h / storey + 0.5), 1.0),
                     np.maximum(np.round(default[:, 1]), 1.0)))
        res = f == len(self.functions)
        if res.any():  # RES → RS / RM by floors
            rs, rm = self.functions.index("RS"), self.functions.index("RM")
            f = np.where(res, np.where(point_floors <= opt.single_family_max_floors, rs, rm), f)
            default = self._floors.lookup(region, f, func_codes)

        s, unknown_s = _codes_or_unknown(structure, n, self.structures, "structure")
        if unknown_s.any():
            if opt.default_structure not in self.structures:
                raise InvalidInput("default_structure",
                                   f"{opt.default_structure!r} is not in this table")
            s[unknown_s] = self.structures.index(opt.default_structure)
            flags[unknown_s] |= _FLAG_BITS["structure_default"]
        if r < len(self.regions):
            flags[self._pooled[f, s, r]] |= _FLAG_BITS["mi_pooled"]

        # Floors per height stratum (n, strata): from the band, the default, or fixed.
        v = opt.height_levels()
        band_lo = np.where(band_ok, lo, h * opt.height_band[0])
        band_hi = np.where(band_ok, hi, h * opt.height_band[1])
        pattern = np.maximum(np.floor(three_point_quantiles(band_lo, h, band_hi, v) / storey
                                      + 0.5), 1.0)
        pattern[has_fl & ~has_h] = np.round(fl[has_fl & ~has_h])[:, None]
        if use_default.any():
            pattern[use_default] = np.maximum(
                np.round(three_point_quantiles(
                    default[use_default, 0], default[use_default, 1], default[use_default, 2], v)), 1.0)
        pattern = pattern.astype(np.int32)

        t = f * len(self.structures) + s
        t_draw = self._types_per_draw(t, f, s, structure_p, residential_p, point_floors, opt)
        rel, inv = self._simulate_patterns(t_draw, pattern, self.draws(r, opt), opt)  # (3, K, u)

        # Output: one float block (columns × buildings), then the code columns in front.
        # Rows are gathered per type / pattern (take along the building axis): no
        # (buildings × series × quantile) temporaries.
        gfa = area * point_floors
        n_mat = len(self.materials)
        names = [f"mass_{m}_kg" for m in self.materials] + list(_TOTALS)
        block = np.empty((1 + 4 * len(names), n))
        block[0] = gfa
        p50 = self._qcube[:, :, r, :, list(LEVELS).index("p50")].reshape(-1, n_mat)  # (T, M)
        per_m2 = np.concatenate([p50, p50.sum(axis=1, keepdims=True),
                                 (p50 @ self.carbon_factors)[:, None]], axis=1)  # (T, K)
        np.multiply(per_m2.T.take(t, axis=1), gfa, out=block[1::4])
        for j in range(3):  # p05, mc_p50, p95 of every series
            np.multiply(rel[j].take(inv, axis=1), area, out=block[2 + j::4])
        columns = ["gfa_m2"]
        for name in names:
            columns += [name, f"{name}_p05", f"{name}_mc_p50", f"{name}_p95"]
        out = pd.DataFrame(block.T, columns=columns, index=index, copy=False)
        out.insert(0, "floors_used", point_floors.astype(np.int64))
        out.insert(0, "structure", np.asarray(self.structures, dtype=object)[s])
        out.insert(0, "function", np.asarray(self.functions, dtype=object)[f])
        out["fallback"] = fallback_labels(flags)
        return out

    def _types_per_draw(self, t: np.ndarray, f: np.ndarray, s: np.ndarray, structure_p: np.ndarray | None,
                        residential_p: Any, floors: np.ndarray, opt: StockOptions) -> np.ndarray:
        """The (function × structure) type of each building's draws: ``t`` (n,) when every
        building has one type, else (n, draws) sampled from the given probabilities."""
        n = len(t)
        sp = None if structure_p is None else np.asarray(structure_p, dtype=np.float64)
        rp = None if residential_p is None else _optional(residential_p, n, "residential_p")
        if sp is not None and sp.shape != (n, len(STRUCTURE_CLASSES)):
            raise InvalidInput("structure_p", f"expected ({n}, {len(STRUCTURE_CLASSES)}), got {sp.shape}")
        s_rows = np.zeros(n, bool) if sp is None else np.isfinite(sp).all(axis=1) & (sp.sum(axis=1) > 0)
        f_rows = np.zeros(n, bool) if rp is None else np.isfinite(rp) & (rp >= 0) & (rp <= 1)
        if not (s_rows.any() or f_rows.any()):
            return t
        s_draw = np.repeat(s[:, None], opt.draws, axis=1)
        if s_rows.any() and sp is not None:
            order = [STRUCTURE_CLASSES.index(c) for c in self.structures]  # table order
            s_draw[s_rows] = sample_classes(sp[s_rows][:, order], opt.category_levels(1))
        f_draw = np.repeat(f[:, None], opt.draws, axis=1)
        if f_rows.any() and rp is not None:
            rs, rm, nr = (self.functions.index(c) for c in ("RS", "RM", "NR"))
            res = np.where(floors <= opt.single_family_max_floors, rs, rm)[f_rows]
            is_res = opt.category_levels(2)[None, :] < rp[f_rows][:, None]
            f_draw[f_rows] = np.where(is_res, res[:, None], nr)
        return f_draw * len(self.structures) + s_draw

    @staticmethod
    def _simulate_patterns(t: np.ndarray, pattern: np.ndarray, draws: np.ndarray,
                           opt: StockOptions) -> tuple[np.ndarray, np.ndarray]:
        """p05 / median / p95 of floors[stratum(d)] × draws[t, :, d] per distinct building
        (``t`` (n,) one type per building, or (n, draws) a type per draw).

        Returns:
            (quantile, series, distinct (type, pattern)) values and, per building, the index
            of its distinct combination.
        """
        n = len(t)
        if n == 0:
            return np.zeros((3, draws.shape[1], 0)), np.zeros(0, dtype=np.int64)
        keys = np.column_stack([t, pattern])
        rep, inv = unique_rows(keys)
        per_draw = t.ndim == 2
        stratum = opt.stratum_of_draw()
        pos = np.array([0.05, 0.5, 0.95]) * (opt.draws - 1)
        below = np.floor(pos).astype(int)
        above = np.minimum(below + 1, opt.draws - 1)
        frac = pos - below
        # float32: half the memory traffic and a faster sort; its 1e-7 relative rounding is
        # far below the Monte-Carlo error of a percentile from ~100 draws.
        draws32 = draws.astype(np.float32)
        out = np.empty((len(rep), draws.shape[1], 3))
        for start in range(0, len(rep), opt.chunk):  # small chunks stay in cache
            sel = rep[start:start + opt.chunk]
            if per_draw:  # draw d of building i from type t[i, d]
                sample = np.ascontiguousarray(
                    draws32[t[sel], :, np.arange(opt.draws)].transpose(0, 2, 1))  # (u, K, D)
            else:
                sample = draws32[t[sel]]  # (u, K, D), a copy
            sample *= pattern[sel][:, stratum].astype(np.float32)[:, None, :]  # × floors
            sample.sort(axis=-1)
            lo = sample[..., below].astype(np.float64)
            out[start:start + len(sel)] = lo + frac * (sample[..., above] - lo)
        return np.ascontiguousarray(out.transpose(2, 1, 0)), inv

    def _region(self, region: str) -> tuple[int, bool]:
        """Index of the region in the quantile cube and whether the GLOBAL fallback applies."""
        if not isinstance(region, str):
            raise InvalidInput("region", "one region code (str) per call")
        if region == GLOBAL_REGION:
            return len(self.regions), False
        if region in self.regions:
            return self.regions.index(region), False
        return len(self.regions), True

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


class _DefaultFloors:
    """Floors p05 / p50 / p95 by R5 macro region × function (``R5 = "*"``: all regions)."""

    def __init__(self, table: pd.DataFrame) -> None:
        need = {"R5", "function", "p05", "p50", "p95"}
        if not need <= set(table.columns):
            raise InvalidInput("default_floors", f"needs columns {sorted(need)}")
        self._rows = {(str(r.R5), str(r.function)): (float(r.p05), float(r.p50), float(r.p95))
                      for r in table.itertuples()}
        if not all(("*", f) in self._rows for f in FUNCTIONS):
            raise InvalidInput("default_floors", f"needs an R5='*' row for each of {list(FUNCTIONS)}")

    def lookup(self, region: str, codes: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """(n, 3) floors p05 / p50 / p95 for function codes (positions in ``names``)."""
        r5 = region.split("_")[0] if isinstance(region, str) else "*"
        rows = []
        for f in names:
            # RES (not yet split) takes the RM row: the wider of the residential priors.
            key = "RM" if f == RESIDENTIAL_UNKNOWN else str(f)
            rows.append(self._rows.get((r5, key), self._rows.get(("*", key),
                                                                  self._rows[("*", "RM")])))
        return np.asarray(rows, dtype=np.float64)[codes]


def fallback_labels(flags: np.ndarray) -> np.ndarray:
    """``;``-joined :data:`FALLBACKS` tokens per building from bit flags (vectorised)."""
    flags = np.asarray(flags, dtype=np.int64)
    uniq, inv = np.unique(flags, return_inverse=True)
    names = np.array([";".join(n for n, b in _FLAG_BITS.items() if u & b) for u in uniq],
                     dtype=object)
    return names[inv.ravel()] if len(flags) else np.zeros(0, dtype=object)


def _optional(values: np.ndarray | Sequence[float] | None, n: int, field_name: str) -> np.ndarray:
    """Float array of n values; None → all NaN (unknown)."""
    if values is None:
        return np.full(n, np.nan)
    if np.ndim(values) == 0:
        return np.full(n, float(values))  # type: ignore[arg-type]
    arr = np.asarray(values, dtype=np.float64).ravel()
    if len(arr) != n:
        raise InvalidInput(field_name, f"{len(arr)} values for {n} buildings")
    return arr


def _broadcast(values: str | Sequence[str | None] | np.ndarray, n: int, field: str) -> np.ndarray:
    """One code per building: a scalar string is repeated, a sequence must have n items."""
    if isinstance(values, str):
        return np.full(n, values, dtype=object)
    arr = np.asarray(values, dtype=object).ravel()
    if len(arr) != n:
        raise InvalidInput(field, f"{len(arr)} values for {n} buildings")
    return arr


def _codes_or_unknown(values: str | Sequence[str | None] | np.ndarray | None, n: int,
                      known: tuple[str, ...], field: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``known`` and a mask of unknown entries (None, NaN, empty / blank).

    Raises:
        InvalidInput: a non-empty code that is not in ``known``.
    """
    if values is None:
        return np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)
    arr = _broadcast(values, n, field)
    pos = pd.Index(known).get_indexer(pd.Index(arr))
    miss = np.flatnonzero(pos < 0)
    unknown = np.zeros(n, dtype=bool)
    if len(miss):
        blank = pd.Series(arr[miss], dtype=object).fillna("").astype(str).str.strip() == ""
        if not blank.all():
            bad = sorted({str(v) for v in arr[miss][~blank.to_numpy()]})
            raise InvalidInput(field, f"unknown code(s) {bad[:5]}; expected one of {list(known)}")
        unknown[miss] = True
    return np.where(pos < 0, 0, pos), unknown


def _codes(values: Sequence[str] | np.ndarray, known: tuple[str, ...], field: str) -> np.ndarray:
    """Positions of ``values`` in ``known``; InvalidInput naming the field for unknown codes."""
    pos = pd.Index(known).get_indexer(pd.Index(np.asarray(values, dtype=object)))
    if (pos < 0).any():
        bad = sorted({str(v) for v, p in zip(values, pos) if p < 0})
        raise InvalidInput(field, f"unknown code(s) {bad[:5]}; expected one of {list(known)}")
    return pos


@lru_cache(maxsize=4)
def default_table(source: str = "rasmi") -> MaterialIntensityTable:
    """A shipped table, loaded once per process."""
    return MaterialIntensityTable.load(source=source)


def estimate_stock(
    gfa_m2: np.ndarray | Sequence[float] | pd.Series,
    function: str | Sequence[str] | np.ndarray,
    structure: str | Sequence[str] | np.ndarray,
    region: str,
    floors: np.ndarray | Sequence[int] | None = None,
) -> pd.DataFrame:
    """:meth:`MaterialIntensityTable.estimate_stock` with the shipped table."""
    return default_table().estimate_stock(gfa_m2, function, structure, region, floors=floors)


def simulate_stock(footprint_area_m2: np.ndarray | Sequence[float] | pd.Series,
                   function: str | Sequence[str] | np.ndarray,
                   structure: str | Sequence[str | None] | np.ndarray,
                   region: str, **kwargs: object) -> pd.DataFrame:
    """:meth:`MaterialIntensityTable.simulate_stock` with the shipped RASMI table."""
    return default_table().simulate_stock(footprint_area_m2, function, structure, region,
                                          **kwargs)  # type: ignore[arg-type]


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
